"""ObMan reader on a fixture written in the real layout: ids, camera conventions (extrinsic
flip, intrinsics, swapped depth range), objects from the ShapeNet tree, double-sided drop."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from gsdf_data.datasets.common import HandSpec, SampleError
from gsdf_data.datasets.obman import (
    OBMAN_K,
    decode_depth,
    encode_depth,
    obman_tasks,
    read_meta,
)
from gsdf_data.hand import load_hand
from gsdf_data.render import project


@pytest.fixture(scope="module")
def obman(tmp_path_factory, fixtures_obman):
    return fixtures_obman.write_obman(tmp_path_factory.mktemp("obman"), load_hand(None))


def test_ids_not_contiguous_and_missing_image(obman):
    tasks, drops = obman_tasks(obman["root"], obman["shapenet"], "train", HandSpec())
    ids = [t.sample_id for t in tasks]
    assert sorted(ids) == ["00000003", "00000017", "00000042", "00001005"]
    assert drops.as_dict() == {"missing rgb image": 1}
    # grouped by object (each object's grasps in one run), ids sorted within an object
    metas = [read_meta(t.meta_path) for t in tasks]
    keys = [(m["class_id"], m["sample_id"], i) for m, i in zip(metas, ids, strict=True)]
    assert keys == sorted(keys) and len({k[:2] for k in keys}) > 1
    assert ids != sorted(ids)  # the fixture's objects are not in id order


def test_camera_conventions_hand_computed(obman):
    tasks, _ = obman_tasks(obman["root"], obman["shapenet"], "train", HandSpec())
    pair = tasks[0].load()
    exp = obman["samples"]["00000003"]
    # stored coords_3d is in the Blender frame: the wrist was written as (0.02, 0.01, -0.5)
    meta = read_meta(Path(tasks[0].meta_path))
    np.testing.assert_allclose(meta["coords_3d"][0], [0.02, 0.01, -0.5], atol=1e-9)
    np.testing.assert_allclose(pair.joints[0], [0.02, -0.01, 0.5], atol=1e-6)
    np.testing.assert_allclose(pair.joints, exp["joints"], atol=1e-6)
    np.testing.assert_allclose(pair.K, [[480, 0, 128], [0, 480, 128], [0, 0, 1]])
    # 2D: u = 480 * 0.02 / 0.5 + 128, v = 480 * -0.01 / 0.5 + 128
    uv = project(np.asarray(pair.joints, np.float64), OBMAN_K)
    np.testing.assert_allclose(uv[0], [147.2, 118.4], atol=1e-3)
    np.testing.assert_allclose(uv, meta["coords_2d"], atol=1e-3)
    np.testing.assert_allclose(pair.hand_mesh.vertices, exp["verts"], atol=1e-6)
    assert pair.hand_mesh.is_watertight
    # object: ShapeNet model with the affine transform (scale included), then the flip
    np.testing.assert_allclose(pair.obj_mesh.vertices, exp["obj_verts"], atol=1e-6)
    np.testing.assert_allclose(pair.obj_center, exp["obj_centre"], atol=1e-6)
    np.testing.assert_allclose(pair.obj_pose[:3, :3], exp["obj_R"], atol=1e-6)  # no scale
    np.testing.assert_allclose(pair.obj_pose[:3, 3], exp["obj_centre"], atol=1e-6)
    assert pair.hand_rotmats.shape == (16, 3, 3) and np.isfinite(pair.hand_rotmats).all()
    img = cv2.imdecode(np.frombuffer(pair.image, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (256, 256, 3)


def test_depth_range_is_swapped(obman):
    meta = read_meta(obman["root"] / "train" / "meta" / "00000003.pkl")
    png = cv2.imread(str(obman["root"] / "train" / "depth" / "00000003.png"))
    z = decode_depth(png, meta)
    assert z[110, 110] == pytest.approx(0.6)  # 255 -> stored depth_min (the far value)
    assert z[130, 110] == pytest.approx(0.4)  # 1 -> stored depth_max (the near value)
    assert z[150, 110] == pytest.approx(0.4 + 127 / 254 * 0.2)
    assert z[0, 0] == 0.0
    depth = np.zeros((8, 8))
    depth[2:5, 2:6] = np.linspace(0.45, 0.7, 12).reshape(3, 4)
    v, dmin, dmax = encode_depth(depth)
    assert dmin == pytest.approx(0.7) and dmax == pytest.approx(0.45)  # swapped on write too
    back = decode_depth(np.repeat(v[..., None], 3, -1), {"depth_min": dmin, "depth_max": dmax})
    np.testing.assert_allclose(back, depth, atol=0.25 / 254)


def test_wrong_hand_model_is_a_reason(obman, tmp_path):
    tasks, _ = obman_tasks(obman["root"], obman["shapenet"], "train", HandSpec())
    meta = read_meta(Path(tasks[0].meta_path))
    meta["verts_3d"] = meta["verts_3d"][:778]
    bad = tmp_path / "00000003.pkl"
    bad.write_bytes(__import__("pickle").dumps(meta, protocol=2))
    task = type(tasks[0])(**{**tasks[0].__dict__, "meta_path": str(bad)})
    with pytest.raises(SampleError, match="hand model mismatch"):
        task.load()


def _prepare(obman, out, *extra):
    from gsdf_data.cli import main

    args = ["prepare", "obman", "--root", str(obman["root"]), "--shapenet", str(obman["shapenet"])]
    args += ["--split", "train", "--out", str(out), "--points", "4000", *extra]
    return CliRunner().invoke(main, args)


def test_prepare_obman_counts_and_reasons(obman, tmp_path):
    from gsdf_data.shards import ShardSet, check

    out = tmp_path / "shards"
    res = _prepare(obman, out)
    assert res.exit_code == 0, res.output
    # the double-sided frame keeps its pose (the reference's pose stage, train_138k)
    assert "obman train: kept 3 of 5 samples, 1 pose-only (no SDF points), dropped 1" in res.output
    assert "double-sided filter" in res.output and "missing rgb image" in res.output
    summary = json.loads((out / "dataset_summary.json").read_text())
    assert summary["kept"] == 3
    assert summary["dropped"] == {"missing rgb image": 1}
    assert summary["pose_only"] == {"double-sided filter": 1}
    ss = ShardSet(out)
    ids = [ss[i]["sample_id"] for i in range(len(ss))]
    assert ids == ["00000003", "00000017", "00001005"]  # the SDF stage's set
    assert ss.n_pose_only == 1 and ss.with_pose_only().sample_ids() == [*ids, "00000042"]
    s = ss[0]
    np.testing.assert_allclose(s["joints"], obman["samples"]["00000003"]["joints"], atol=1e-5)
    np.testing.assert_allclose(s["K"], OBMAN_K, atol=1e-6)
    assert check(out) == []


def test_prepare_obman_without_pose_only_is_as_before(obman, tmp_path):
    """--no-pose-only: the set, its manifest and its shard files are what they were before
    pose-only samples existed (the double-sided frame dropped, no pose-only group)."""
    import h5py

    from gsdf_data.prepare import PrepareConfig, _digest
    from gsdf_data.shards import ShardSet, check

    out = tmp_path / "shards"
    res = _prepare(obman, out, "--no-pose-only")
    assert res.exit_code == 0, res.output
    assert "obman train: kept 3 of 5 samples, dropped 2" in res.output
    assert "pose-only" not in res.output
    summary = json.loads((out / "dataset_summary.json").read_text())
    assert summary["dropped"] == {"double-sided filter": 1, "missing rgb image": 1}
    assert "pose_only" not in summary
    m = json.loads((out / "manifest.json").read_text())
    assert "n_pose_only" not in m and "pose_only_reasons" not in m
    assert all("n_pose_only" not in e for e in m["shards"])
    for e in m["shards"]:
        with h5py.File(out / e["file"], "r") as f:
            assert "pose_only" not in f and "n_pose_only" not in f.attrs
    # sets prepared before the option existed (no such field in their configuration) resume
    config = PrepareConfig.from_dict(m["config"])
    before = config.to_dict()
    del before["pose_only"]
    assert _digest(before) in config.digests()
    ss = ShardSet(out)
    assert ss.n_pose_only == 0 and len(ss.with_pose_only()) == len(ss) == 3
    assert check(out) == []


def test_prepare_obman_keeps_frames_without_sdf_as_pose_only(tmp_path, fixtures_obman):
    """Frames whose SDF points cannot be made (an object the filter rejects, a hand without
    a mesh) are pose-only samples: in the pose stage's set with their annotations, not in
    the SDF stage's; `check` passes; a rerun keeps every shard."""
    from gsdf_data.cli import main
    from gsdf_data.shards import ShardSet, check

    fx = fixtures_obman.write_obman(tmp_path / "fx", load_hand(None), pose_only_frames=True)
    out = tmp_path / "shards"
    res = _prepare(fx, out, "--shard-size", "2")
    assert res.exit_code == 0, res.output
    assert "kept 3 of 6 samples, 2 pose-only (no SDF points), dropped 1" in res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["n_samples"] == 3 and m["n_pose_only"] == 2
    assert m["pose_only_reasons"] == {"double-sided filter": 1, "hand mesh": 1}
    sdf = ShardSet(out)
    pose = sdf.with_pose_only()
    assert len(sdf) == 3 and sdf.n_pose_only == 2 and len(pose) == 5
    assert sorted(sdf.sample_ids()) == ["00000003", "00000017", "00001005"]
    assert pose.sample_ids()[:3] == sdf.sample_ids()  # same indexes, then the pose-only ones
    assert sorted(pose.sample_ids()[3:]) == ["00000042", "00000058"]
    for i in range(5):
        s = pose[i]
        exp = fx["samples"][s["sample_id"]]
        np.testing.assert_allclose(s["joints"], exp["joints"], atol=1e-5)
        np.testing.assert_allclose(s["obj_center"], exp["obj_centre"], atol=1e-5)
        np.testing.assert_allclose(s["K"], OBMAN_K, atol=1e-6)
        assert s["image"].shape == (256, 256, 3)
        assert pose.is_pose_only(i) == (i >= 3)
        assert ("points" in s) == (i < 3) and ("hand_verts" in s) == (i < 3)
        assert np.isfinite(s["hand_rotmats"]).all()  # IK of the sound joints
        assert np.isnan(s["norm_scale"]) == (i >= 3)  # no unit cube without points
    with pytest.raises(KeyError, match="pose-only"):
        pose.get(3, keys=("points",))
    with pytest.raises(ValueError, match="pose-only"):
        pose.sample_sdf(4)
    # picklable (DataLoader workers): the copy indexes the same samples
    import pickle

    assert pickle.loads(pickle.dumps(pose)).sample_ids() == pose.sample_ids()
    assert check(out) == []
    res = CliRunner().invoke(main, ["check", str(out)])
    assert res.exit_code == 0, res.output
    assert "ok: 3 samples + 2 pose-only in 3 shards" in res.output
    # resume: every shard (pose-only samples included) is recognised as done
    res = _prepare(fx, out, "--shard-size", "2")
    assert res.exit_code == 0, res.output
    assert "0 new shards" in res.output and "redone" not in res.output
    assert ShardSet(out).with_pose_only().sample_ids() == pose.sample_ids()


def test_prepare_obman_wrong_hand_model_is_one_line(obman, tmp_path, fixtures_dexycb):
    from gsdf_data.cli import main

    mano = fixtures_dexycb.write_mano_standin(
        tmp_path / "MANO_RIGHT.pkl", drop=1
    )  # another vertex count
    args = ["prepare", "obman", "--root", str(obman["root"]), "--shapenet", str(obman["shapenet"])]
    res = CliRunner().invoke(main, [*args, "--mano", str(mano), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "verts_3d has" in res.output and "--mano" in res.output


def test_prepare_obman_user_errors(tmp_path):
    from gsdf_data.cli import main

    (tmp_path / "sn").mkdir()
    args = ["prepare", "obman", "--root", str(tmp_path), "--shapenet", str(tmp_path / "sn")]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "no such folder" in res.output and "Traceback" not in res.output
