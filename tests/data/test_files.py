"""atomic_write: the one temporary-name scheme, and what check and resume do with it."""

import os

import numpy as np
import pytest

from gsdf_data.files import TEMP_GLOB, atomic_write, is_temporary, temporary_path


def test_success_renames_over_the_target_and_keeps_the_suffix(tmp_path):
    path = tmp_path / "a.npz"
    path.write_bytes(b"old")
    with atomic_write(path, fsync=True) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".npz"
        assert tmp.name == f".a.npz.tmp-{os.getpid()}.npz"
        np.savez(tmp, x=np.arange(3))  # savez would append .npz to any other suffix
        assert path.read_bytes() == b"old"  # nothing under the final name until the end
    with np.load(path) as z:
        np.testing.assert_array_equal(z["x"], np.arange(3))
    assert list(tmp_path.iterdir()) == [path]


def test_an_error_leaves_the_target_as_it_was_and_no_temporary(tmp_path):
    path = tmp_path / "b.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]
    with pytest.raises(RuntimeError):  # a writer that failed before creating the file
        with atomic_write(tmp_path / "c.bin"):
            raise RuntimeError("early")
    assert list(tmp_path.iterdir()) == [path]


def test_the_scheme_is_recognised_by_name_and_glob(tmp_path):
    tmp = temporary_path(tmp_path / "shard-00003.h5")
    assert is_temporary(tmp) and not is_temporary(tmp_path / "shard-00003.h5")
    assert is_temporary(".shard-00003.h5.tmp-12345.h5")  # another process's
    tmp.write_bytes(b"x")
    (tmp_path / "shard-00003.h5").write_bytes(b"y")
    assert list(tmp_path.glob(TEMP_GLOB)) == [tmp]


def test_check_reports_a_temporary_of_the_scheme(tmp_path):
    import trimesh

    from gsdf_data.prepare import Pair, PrepareConfig, prepare_pairs
    from gsdf_data.sampling import SamplingConfig
    from gsdf_data.shards import check

    hand = trimesh.creation.icosphere(2, radius=0.02)
    obj = trimesh.creation.box((0.05, 0.05, 0.05))
    obj.apply_translation([0.03, 0.0, 0.0])
    for m in (hand, obj):
        m.apply_translation([0.0, 0.0, 0.5])
    pair = Pair("p0", hand, obj, np.zeros((8, 8, 3), np.uint8), np.eye(3), np.zeros((21, 3)))
    config = PrepareConfig(sampling=SamplingConfig(n=1000, min_per_side=20))
    prepare_pairs([pair], tmp_path, config, progress=False)
    assert check(tmp_path) == []
    left = temporary_path(tmp_path / "shard-00000.h5")
    left.write_bytes(b"half")
    assert check(tmp_path) == [f"{left.name}: temporary file of an interrupted run"]
