"""Shared test configuration: headless rendering, a loud skip for GPU tests without a GPU,
and a small finished shard set (`shard_set`, copied afresh for each test as `data`)."""

import os
import shutil

import pytest

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    """Three samples in two shards with their manifest: what a finished prepare leaves."""
    from support.shard_samples import write_finished_set  # h5py: only where a test asks

    root = tmp_path_factory.mktemp("shards")
    write_finished_set(root)
    return root


@pytest.fixture()
def data(tmp_path, shard_set):
    """A copy of `shard_set` that the test may damage."""
    d = tmp_path / "data"
    shutil.copytree(shard_set, d)
    return d
