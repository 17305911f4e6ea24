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


def test_prepare_obman_counts_and_reasons(obman, tmp_path):
    from gsdf_data.cli import main
    from gsdf_data.shards import ShardSet

    out = tmp_path / "shards"
    args = ["prepare", "obman", "--root", str(obman["root"]), "--shapenet", str(obman["shapenet"])]
    args += ["--split", "train", "--out", str(out), "--points", "4000"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "obman train: kept 3 of 5 samples, dropped 2" in res.output
    assert "double-sided filter" in res.output and "missing rgb image" in res.output
    summary = json.loads((out / "dataset_summary.json").read_text())
    assert summary["kept"] == 3
    assert summary["dropped"] == {"double-sided filter": 1, "missing rgb image": 1}
    ss = ShardSet(out)
    ids = [ss[i]["sample_id"] for i in range(len(ss))]
    assert ids == ["00000003", "00000017", "00001005"]
    s = ss[0]
    np.testing.assert_allclose(s["joints"], obman["samples"]["00000003"]["joints"], atol=1e-5)
    np.testing.assert_allclose(s["K"], OBMAN_K, atol=1e-6)


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
