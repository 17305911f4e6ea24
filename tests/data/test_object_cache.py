"""Object cache: one read and one filter verdict per object file, shared by every sample."""

from pathlib import Path

import numpy as np
import pytest
import trimesh

import gsdf_data.meshes
from gsdf_data.datasets.common import HandSpec
from gsdf_data.datasets.obman import obman_tasks
from gsdf_data.filter import FilterConfig
from gsdf_data.hand import load_hand
from gsdf_data.meshes import MeshError, load_mesh
from gsdf_data.object_cache import ObjectCache
from gsdf_data.prepare import PrepareConfig, make_sample
from gsdf_data.sampling import SamplingConfig


def _write(path: Path, mesh) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(path)
    return path


def _double_sided():
    s = trimesh.creation.icosphere(2)
    bowl = s.faces[s.triangles_center[:, 2] < 0]  # an open sheet, modelled double-sided
    return trimesh.Trimesh(s.vertices, np.vstack([bowl, bowl[:, ::-1]]), process=False)


def test_first_load_reads_the_file_later_loads_do_not(tmp_path, monkeypatch):
    src = _write(tmp_path / "m" / "box.obj", trimesh.creation.box((0.1, 0.2, 0.3)))
    cache = ObjectCache(str(tmp_path / "cache"), FilterConfig())
    a = cache.load(src)
    ref = load_mesh(src)
    np.testing.assert_array_equal(a.verts, ref.vertices)
    np.testing.assert_array_equal(a.faces, ref.faces)
    assert a.reject == "" and len(list((tmp_path / "cache").glob("*.npz"))) == 1

    def no_reads(*_, **__):
        raise AssertionError("the cached object was read again")

    monkeypatch.setattr(gsdf_data.meshes, "load_mesh", no_reads)
    b = cache.load(src)
    np.testing.assert_array_equal(b.verts, a.verts)
    np.testing.assert_array_equal(b.faces, a.faces)


def test_verdict_depends_on_the_filter_configuration_and_the_file(tmp_path):
    src = _write(tmp_path / "twin.obj", _double_sided())
    rejected = ObjectCache(str(tmp_path / "c"), FilterConfig()).load(src)
    assert rejected.reject  # the filter's reason
    assert ObjectCache(str(tmp_path / "c"), None).load(src).reject == ""
    # a changed file is a new entry, not the stale verdict
    _write(src, trimesh.creation.icosphere(2))
    assert ObjectCache(str(tmp_path / "c"), FilterConfig()).load(src).reject == ""


def test_damaged_entry_is_rebuilt_and_missing_file_is_a_mesh_error(tmp_path):
    src = _write(tmp_path / "ball.ply", trimesh.creation.icosphere(1))
    cache = ObjectCache(str(tmp_path / "c"))
    cache.load(src)
    (entry,) = (tmp_path / "c").glob("*.npz")
    entry.write_bytes(b"not an npz")
    assert len(cache.load(src).faces) == 80
    with pytest.raises(MeshError, match="no such file"):
        cache.load(tmp_path / "gone.obj")


def test_obman_samples_are_identical_with_and_without_the_cache(tmp_path, fixtures_obman):
    fx = fixtures_obman.write_obman(tmp_path / "obman", load_hand(None))
    config = PrepareConfig(sampling=SamplingConfig(n=3000, min_per_side=100))
    cache = ObjectCache(str(tmp_path / "objects"), config.filter)
    plain, _ = obman_tasks(fx["root"], fx["shapenet"], "train", HandSpec())
    cached, _ = obman_tasks(fx["root"], fx["shapenet"], "train", HandSpec(), objects=cache)
    for t0, t1 in zip(plain, cached, strict=True):
        try:
            s0 = make_sample(t0.load(), config)
        except ValueError as e:  # the double-sided object: same reason both ways
            with pytest.raises(ValueError, match="double-sided filter"):
                make_sample(t1.load(), config)
            assert "double-sided filter" in str(e)
            continue
        pair = t1.load()
        assert pair.obj_filtered == config.filter  # make_sample skips the filter
        s1 = make_sample(pair, config)
        for k in ("points", "sdf_hand", "sdf_obj", "obj_verts", "obj_faces", "joints"):
            np.testing.assert_array_equal(s0[k], s1[k])
