"""The data tests' fixture writers (datasets and MANO files in their real on-disk layouts,
built in temporary folders), as fixtures."""

import pytest
from support import fixtures_dexycb as _dexycb
from support import fixtures_obman as _obman
from support import mano_fixture as _mano


@pytest.fixture(scope="session")
def fixtures_obman():
    return _obman


@pytest.fixture(scope="session")
def fixtures_dexycb():
    return _dexycb


@pytest.fixture(scope="session")
def mano_fixture():
    return _mano
