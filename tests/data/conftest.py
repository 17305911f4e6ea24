"""The data tests' fixture writers (datasets and MANO files in their real on-disk layouts,
built in temporary folders), loaded once per session from their files beside the tests."""

import importlib.util
from pathlib import Path

import pytest


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fixtures_obman():
    return _load("fixtures_obman")


@pytest.fixture(scope="session")
def fixtures_dexycb():
    return _load("fixtures_dexycb")


@pytest.fixture(scope="session")
def mano_fixture():
    return _load("mano_fixture")
