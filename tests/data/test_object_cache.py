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
        assert pair.obj.filtered == config.filter  # make_sample skips the filter
        s1 = make_sample(pair, config)
        for k in ("points", "sdf_hand", "sdf_obj", "obj_verts", "obj_faces", "joints"):
            np.testing.assert_array_equal(s0[k], s1[k])


def test_a_pair_carries_one_object_model_whose_queries_are_built_once(tmp_path, monkeypatch):
    import dataclasses

    import gsdf_data.object_cache as oc
    import gsdf_data.sampling
    import gsdf_data.sdf
    from gsdf_data.object_cache import ObjectModel
    from gsdf_data.prepare import Pair

    fields = {f.name for f in dataclasses.fields(Pair)}
    assert {"obj", "obj_frame"} <= fields and not fields & {"obj_model", "obj_filtered"}
    builds = []

    class Counting(gsdf_data.sdf.MeshSDF):
        def __post_init__(self):
            builds.append(self.local)
            super().__post_init__()

    monkeypatch.setattr(gsdf_data.sdf, "MeshSDF", Counting)
    monkeypatch.setattr(gsdf_data.sampling, "MeshSDF", Counting)
    monkeypatch.setattr(oc, "_QUERIES", type(oc._QUERIES)())
    src = _write(tmp_path / "box.obj", trimesh.creation.box((0.05, 0.04, 0.06)))
    config = PrepareConfig(sampling=SamplingConfig(n=1500, min_per_side=50))
    cache = ObjectCache(str(tmp_path / "c"), config.filter)
    hand = trimesh.creation.icosphere(2, radius=0.02)
    hand.apply_translation([0.0, 0.0, 0.5])
    out = []
    for i in range(3):
        obj = cache.load(src)  # a fresh value per sample, as each task loads its own
        assert isinstance(obj, ObjectModel) and obj.filtered == config.filter
        frame = np.eye(4)
        frame[:3, :3] = trimesh.transformations.rotation_matrix(0.3 * i, [0, 1, 1])[:3, :3]
        frame[:3, 3] = [0.035, 0.0, 0.5]
        posed = trimesh.Trimesh(obj.verts @ frame[:3, :3].T + frame[:3, 3], obj.faces)
        pair = Pair(f"p{i}", hand, posed, np.zeros((8, 8, 3), np.uint8), np.eye(3),
                    np.zeros((21, 3)), obj=obj, obj_frame=frame)  # fmt: skip
        out.append(make_sample(pair, config))
    assert builds.count(True) == 1  # the object's structures: once for its three samples
    assert builds.count(False) == 3  # the hand's: once per sample
    # the same values as the camera-frame path, up to float rounding
    plain = make_sample(dataclasses.replace(pair, obj=None, obj_frame=None), config)
    np.testing.assert_allclose(plain["sdf_obj"], out[-1]["sdf_obj"], atol=1e-6)
