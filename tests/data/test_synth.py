"""The synthetic dataset: ObMan layout and conventions, joints on the hand inside the image,
hand and object touching without deep penetration (checked with the object's SDF), the same
seed giving identical files, and the shard path agreeing with the ObMan path."""

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh
from click.testing import CliRunner

from gsdf_data.datasets.obman import OBMAN_K, decode_depth, object_path, object_transform
from gsdf_data.datasets.synth import SynthConfig, cached_sequence, write_dataset, write_shards

FLIP = np.diag([1.0, -1.0, -1.0])
CFG = SynthConfig(samples=6, seq_len=3, seed=11, objects="procedural", test_fraction=0.5)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = write_dataset(CFG, out, jobs=1, progress=False)
    return out, summary


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _metas(out: Path):
    for p in sorted(out.glob("*/meta/*.pkl")):
        with open(p, "rb") as f:
            yield p, pickle.load(f, encoding="latin1")


def test_layout_splits_and_sequences(synth):
    out, summary = synth
    assert summary["frames"] == {"test": 3, "train": 3}
    for split in ("train", "test"):
        for d in ("rgb", "depth", "segm", "meta"):
            assert len(list((out / split / d).iterdir())) == 3
    assert (out / "synth_summary.json").is_file()
    seqs = {}
    for p, meta in _metas(out):
        assert {"coords_3d", "coords_2d", "verts_3d", "hand_pose", "pca_pose", "affine_transform",
                "class_id", "sample_id", "obj_scale", "side", "depth_min", "depth_max"} <= set(meta)  # fmt: skip
        seqs.setdefault(meta["seq_id"], []).append((int(p.stem), meta["frame_idx"]))
        img = cv2.imread(str(p.parent.parent / "rgb" / f"{p.stem}.jpg"))
        assert img.shape == (256, 256, 3)
    assert len(seqs) == 2
    for frames in seqs.values():
        assert [f for _, f in sorted(frames)] == [0, 1, 2]


def test_joints_project_inside_image_onto_the_hand(synth):
    out, _ = synth
    for p, meta in _metas(out):
        joints = np.asarray(meta["coords_3d"], np.float64) @ FLIP.T  # ObMan frame -> OpenCV
        assert (joints[:, 2] > 0.1).all()
        uvw = joints @ OBMAN_K.T
        uv = uvw[:, :2] / uvw[:, 2:3]
        np.testing.assert_allclose(uv, meta["coords_2d"], atol=1e-3)
        assert (uv >= 0).all() and (uv < 256).all(), f"{p.name}: a joint outside the image"
        depth = cv2.imread(str(p.parent.parent / "depth" / f"{p.stem}.png"))
        hand = decode_depth(depth, meta, "hand") > 0
        hand = cv2.dilate(hand.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        px = np.clip(np.rint(uv).astype(int), 0, 255)
        on_hand = hand[px[:, 1], px[:, 0]]
        assert on_hand.all(), f"{p.name}: joints {np.nonzero(~on_hand)[0]} off the hand"
        # the visible depth is the nearer of hand and object, in the swapped ObMan encoding
        z = decode_depth(depth, meta, "all")
        assert 0.1 < z[z > 0].min() < z[z > 0].max() < 3.0


def test_hand_and_object_touch_without_deep_penetration(synth):
    from gsdf_data.sdf import MeshSDF

    out, summary = synth
    for _, meta in _metas(out):
        obj = trimesh.load(object_path(meta, out / "shapenet"), process=False)
        full, _, _ = object_transform(meta)
        obj.apply_transform(full)
        hand = np.asarray(meta["verts_3d"], np.float64) @ FLIP.T
        d = MeshSDF.from_mesh(obj, sign="winding").signed_distance(hand)
        assert d.min() < 0.002, "hand and object do not touch"
        assert d.min() > -0.006, f"penetration {-1000 * d.min():.1f} mm"
        assert (d < 0.002).sum() >= 20  # a contact patch, not a single vertex
        assert meta["grasp_fingers_in_contact"] >= 2
    g = summary["grasp"]
    assert g["grasps"] == 2 and g["in_contact_fraction"] == 1.0
    assert g["penetration_mm"]["max"] < 6.0


def test_same_seed_identical_files_any_jobs(synth, tmp_path):
    out, _ = synth
    cached_sequence.cache_clear()
    write_dataset(CFG, tmp_path / "again", jobs=2, progress=False)
    a, b = _files(out), _files(tmp_path / "again")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    cached_sequence.cache_clear()
    other = SynthConfig(**{**CFG.__dict__, "seed": 12, "samples": 3})
    write_dataset(other, tmp_path / "other", jobs=1, progress=False)
    c = _files(tmp_path / "other")
    assert c["train/rgb/00000000.jpg"] != a["train/rgb/00000000.jpg"]


def test_prepare_synth_and_shards_agree(synth, tmp_path):
    from gsdf_data.cli import main
    from gsdf_data.prepare import PrepareConfig
    from gsdf_data.sampling import SamplingConfig
    from gsdf_data.shards import ShardSet

    out, _ = synth
    args = ["prepare", "synth", "--root", str(out), "--split", "test"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a"), "--points", "4000"])
    assert res.exit_code == 0, res.output
    assert "synth test: kept 3 of 3 samples, dropped 0" in res.output
    a = ShardSet(tmp_path / "a")
    cfg = PrepareConfig(sampling=SamplingConfig(n=4000), image_format="jpg")
    summary = write_shards(CFG, tmp_path / "b", prepare_config=cfg)
    assert summary["grasp"]["grasps"] == 2
    b = ShardSet(tmp_path / "b" / "shards" / "test")
    assert len(a) == len(b) == 3
    for i in range(3):
        sa, sb = a[i], b[i]
        assert sa["sample_id"] == sb["sample_id"] and sa["seq_id"] == sb["seq_id"]
        assert sa["frame_idx"] == sb["frame_idx"] == i
        np.testing.assert_allclose(sa["joints"], sb["joints"], atol=1e-5)
        np.testing.assert_allclose(sa["obj_center"], sb["obj_center"], atol=1e-5)
        np.testing.assert_allclose(sa["obj_pose"], sb["obj_pose"], atol=1e-5)
        assert np.array_equal(sa["image"], sb["image"])
    # the exact local rotations of the shard path drive the hand model to the same joints
    from gsdf_data.hand import load_hand

    fk = load_hand(None).forward_numpy(rotmats=b[0]["hand_rotmats"][None])
    kp = fk.keypoints[0]
    np.testing.assert_allclose(kp - kp[0], b[0]["joints"] - b[0]["joints"][0], atol=1e-4)


def test_preview_cli(tmp_path):
    from gsdf_data.cli import main

    png = tmp_path / "p.png"
    args = ["synth", "--preview", str(png), "--samples", "2", "--objects", "procedural"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    img = cv2.imread(str(png))
    assert img.shape == (256, 1024, 3)
    res = CliRunner().invoke(main, ["synth", "--samples", "2", "--objects", "shapenet"])
    assert res.exit_code != 0 and "unknown object source" in res.output


def test_synth_with_a_mano_file_and_prepare_needs_it(tmp_path, fixtures_dexycb):
    """The MANO code path (a stand-in file in MANO's layout): grasps touch, and `prepare
    synth` reads the data with the same --mano and refuses it without."""
    from gsdf_data.cli import main

    mano = fixtures_dexycb.write_mano_standin(
        tmp_path / "MANO_RIGHT.pkl", drop=1
    )  # not 2,800 vertices
    cfg = SynthConfig(samples=2, seq_len=1, seed=3, mano=str(mano), objects="procedural",
                      test_fraction=0.0)  # fmt: skip
    summary = write_dataset(cfg, tmp_path / "d", progress=False)
    assert summary["grasp"]["in_contact_fraction"] == 1.0
    # keypoints as ObMan's coords_3d: fingertips at ObMan's MANO vertices, not manopth's
    from gsdf_data.datasets.obman import read_meta
    from gsdf_data.hand.mano import MANOPTH_TIPS, OBMAN_TIPS

    meta = read_meta(next((tmp_path / "d" / "train" / "meta").glob("*.pkl")))
    tips = np.asarray(meta["coords_3d"])[[4, 8, 12, 16, 20]]
    np.testing.assert_allclose(tips, np.asarray(meta["verts_3d"])[list(OBMAN_TIPS)], atol=1e-6)
    assert np.abs(tips - np.asarray(meta["verts_3d"])[list(MANOPTH_TIPS)]).max() > 1e-3
    assert summary["grasp"]["penetration_mm"]["max"] < 6.0
    args = ["prepare", "synth", "--root", str(tmp_path / "d"), "--points", "4000"]
    res = CliRunner().invoke(main, [*args, "--mano", str(mano), "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "kept 2 of 2" in res.output
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b")])  # procedural hand
    assert res.exit_code != 0 and "--mano" in res.output and "Traceback" not in res.output


def test_grasp_poses_come_from_the_hand_module():
    """One grasp-pose source: the finger pose a sequence holds is the hand module's "curl"
    pose (drawn right after the object, from the sequence's generator), each finger closed
    by one factor α onto the object; its joints and vertices are the hand model's forward
    kinematics of that pose, moved rigidly per frame."""
    from gsdf_data.datasets.grasps import GraspBuilder
    from gsdf_data.datasets.objects import ObjectLibrary
    from gsdf_data.hand import load_hand
    from gsdf_data.hand.kinematics import FINGER_ROOTS

    cfg = SynthConfig(samples=2, seq_len=2, seed=5, objects="procedural", test_fraction=0.0)
    hand = load_hand(None)
    for index in range(cfg.n_sequences):
        seq = cached_sequence(cfg, index, False)
        rng = np.random.default_rng([cfg.seed, index])
        ObjectLibrary.from_option(cfg.objects).sample(rng)
        drawn = hand.sample_poses(1, rng, style="curl")[0].reshape(15, 3)
        held = seq.grasp.finger_pose.reshape(15, 3)
        for root in FINGER_ROOTS:
            rows = [root - 1, root, root + 1]
            alpha = np.abs(held[rows]).sum() / np.abs(drawn[rows]).sum()
            assert np.isclose(alpha, GraspBuilder.ALPHAS).any(), alpha
            np.testing.assert_allclose(held[rows], alpha * drawn[rows], atol=1e-6)
        fk = hand.forward_numpy(finger_pose=seq.grasp.finger_pose[None])
        np.testing.assert_allclose(seq.grasp.keypoints, fk.keypoints[0], atol=1e-6)
        np.testing.assert_allclose(seq.grasp.verts, fk.vertices[0], atol=1e-6)
        for fr in seq.frames:
            np.testing.assert_allclose(fr.keypoints, fk.keypoints[0] @ fr.hand_R.T + fr.hand_t,
                                       atol=1e-6)  # fmt: skip
            posed = hand.forward_numpy(rotmats=fr.rotmats[None])
            kp = posed.keypoints[0] - posed.keypoints[0, :1] + fr.keypoints[:1]
            np.testing.assert_allclose(kp, fr.keypoints, atol=1e-5)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two rotations (3,3), or two vectors (3,), in degrees."""
    if a.ndim == 1:
        c = np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
        return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))
    c = (np.trace(a.T @ b) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def test_canonical_view_puts_fingers_up_and_the_palm_half_towards_the_camera():
    from gsdf_data.datasets.synth import canonical_view

    rng = np.random.default_rng(0)
    for _ in range(5):
        along = rng.normal(size=3)
        normal = rng.normal(size=3)
        R = canonical_view(along, normal)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(R), 1.0)
        np.testing.assert_allclose(R @ (along / np.linalg.norm(along)), [0, -1, 0], atol=1e-12)
        n = normal - np.dot(normal, along) / np.dot(along, along) * along
        np.testing.assert_allclose(R @ (n / np.linalg.norm(n)), [0.5**0.5, 0, -(0.5**0.5)],
                                   atol=1e-12)  # fmt: skip


def test_view_spread_keeps_hands_near_the_canonical_view():
    """--view-spread S: each sequence starts within S degrees of the canonical view and turns
    at most `max_rotation_deg` more; in the image, wrist -> middle knuckle points up. The
    default (None) draws any orientation: hands point down as often as up."""
    from gsdf_data.datasets.synth import _builder, canonical_view

    spread = 30.0
    cfg = SynthConfig(samples=6, seq_len=2, seed=3, objects="procedural", test_fraction=0.0,
                      view_spread_deg=spread)  # fmt: skip
    builder = _builder(cfg.hand_spec())
    view = canonical_view(builder.along, builder.normal)
    up = []
    for index in range(cfg.n_sequences):
        seq = cached_sequence(cfg, index, False)
        first, last = seq.frames[0], seq.frames[-1]
        assert _angle_deg(first.hand_R, view) <= spread + 1e-6
        assert _angle_deg(last.hand_R, view) <= spread + cfg.max_rotation_deg + 1e-6
        for fr in seq.frames:
            knuckle = fr.keypoints[9] - fr.keypoints[0]  # wrist -> middle MCP, camera frame
            up.append(_angle_deg(knuckle, np.array([0.0, -1.0, 0.0])))
    # the knuckle direction is `along` up to the palm's curvature (a few degrees)
    assert max(up) < spread + cfg.max_rotation_deg + 15.0, up
    anywhere = SynthConfig(samples=8, seq_len=1, seed=3, objects="procedural", test_fraction=0.0)
    angles = [_angle_deg(cached_sequence(anywhere, i, False).frames[0].hand_R, view)
              for i in range(anywhere.n_sequences)]  # fmt: skip
    assert max(angles) > spread + cfg.max_rotation_deg, angles
