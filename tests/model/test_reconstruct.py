"""gsdf_model.reconstruct and gsdf_model.meshing: two-pass marching cubes against analytic
spheres, coarse-to-fine against dense decoding (analytic shapes and a small fitted network),
the reference's second-pass cube, the largest component by area, the reference's joints, the
output layout, resume, run records, splits, progress and worker processes."""

import json

import numpy as np
import pytest
import torch
import trimesh
from torch import nn

from gsdf_model.data import InMemoryShards
from gsdf_model.reconstruct import (
    MeshingConfig,
    anchored_component,
    export_gt,
    extract_surface,
    file_digest,
    file_stem,
    largest_component,
    reconstruct,
)
from gsdf_model.train import CHECKPOINT_FORMAT, UserError

K = np.array([[300.0, 0.0, 128.0], [0.0, 300.0, 128.0], [0.0, 0.0, 1.0]], dtype=np.float32)


def spheres(c_h, r_h, c_o, r_o):
    def fn(p):
        return np.linalg.norm(p - c_h, axis=1) - r_h, np.linalg.norm(p - c_o, axis=1) - r_o

    return fn


def test_two_pass_marching_cubes_recovers_spheres():
    c_h, c_o = np.array([0.01, -0.02, 0.5]), np.array([0.08, 0.0, 0.52])
    cfg = MeshingConfig(resolution=48, extent=0.15)
    hand, obj = extract_surface(spheres(c_h, 0.04, c_o, 0.03), c_h, cfg)
    for (v, f), c, r in ((hand, c_h, 0.04), (obj, c_o, 0.03)):
        # the second pass zooms on the shape: far finer than the first pass's 6 mm voxels
        assert np.abs(np.linalg.norm(v - c, axis=1) - r).max() < 5e-4
        mesh = trimesh.Trimesh(v, f)
        assert mesh.is_watertight
        # outward normals (positive volume), close to the sphere's volume
        assert mesh.volume == pytest.approx(4 / 3 * np.pi * r**3, rel=0.03)


def test_no_surface_gives_none():
    c = np.array([0.0, 0.0, 0.5])
    far = spheres(c + 5.0, 0.04, c, 0.03)  # the 'hand' is outside the cube
    hand, obj = extract_surface(far, c, MeshingConfig(resolution=24, extent=0.1))
    assert hand is None and obj is not None


def test_largest_component_keeps_the_big_sphere():
    a = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    b = trimesh.creation.icosphere(subdivisions=1, radius=0.1)
    b.apply_translation([3.0, 0, 0])
    both = trimesh.util.concatenate([b, a])
    v, f = largest_component(np.asarray(both.vertices), np.asarray(both.faces))
    assert len(v) == len(a.vertices) and len(f) == len(a.faces)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)


def test_anchored_component_keeps_the_one_at_the_anchor():
    big = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    near = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    near.apply_translation([5.0, 0, 0])
    speck = trimesh.creation.icosphere(subdivisions=0, radius=0.01)
    speck.apply_translation([5.6, 0, 0])
    both = trimesh.util.concatenate([big, near, speck])
    v, f = anchored_component(
        np.asarray(both.vertices), np.asarray(both.faces), np.array([5.6, 0, 0])
    )
    # the speck is nearest but too small; the sizeable sphere at the anchor wins over the largest
    assert len(f) == len(near.faces)
    np.testing.assert_allclose(np.linalg.norm(v - [5.0, 0, 0], axis=1), 0.5, atol=1e-6)


class SphereNet(nn.Module):
    """A 'network' whose encode predicts the GT spheres' centres from the image's first
    pixel and whose query is their analytic SDF (tests reconstruction, not learning)."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode(self, image, K, wrist=None):
        c_h = image[:, :, 0, 0] * 0.1 + torch.tensor([0.0, 0.0, 0.45])  # (B, 3)
        joints = c_h[:, None].expand(-1, 21, 3).clone()
        return {"joints": joints, "obj_center": c_h + torch.tensor([0.07, 0.0, 0.0])}

    def query(self, state, points):
        c_h, c_o = state["joints"][:, :1], state["obj_center"][:, None]
        return (points - c_h).norm(dim=-1) - 0.04, (points - c_o).norm(dim=-1) - 0.03


def fake_sample(i):
    rgb = np.array([10 * i, 20, 30 * i], np.uint8)
    image = np.broadcast_to(rgb, (64, 64, 3)).copy()
    c_h = rgb / 255.0 * 0.1 + np.array([0.0, 0.0, 0.45])
    hand = trimesh.creation.icosphere(subdivisions=3, radius=0.04)
    obj = trimesh.creation.icosphere(subdivisions=3, radius=0.03)
    return {
        "sample_id": f"seq/{i:04d}",
        "image": image,
        "K": K,
        "joints": np.repeat(c_h[None], 21, 0).astype(np.float32),
        "obj_center": (c_h + np.array([0.07, 0, 0])).astype(np.float32),
        "hand_verts": (hand.vertices + c_h).astype(np.float32),
        "hand_faces": hand.faces.astype(np.int32),
        "obj_verts": (obj.vertices + c_h + np.array([0.07, 0, 0])).astype(np.float32),
        "obj_faces": obj.faces.astype(np.int32),
    }


@pytest.fixture()
def setup(tmp_path):
    from gsdf_model.config import get_preset

    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "model": SphereNet(None).state_dict(),
        "model_preset": "tiny",
        "model_config": get_preset("tiny").to_dict(),
        "epoch": 1,
        "stage": 2,
    }
    torch.save(ckpt, tmp_path / "last.pt")
    return tmp_path, InMemoryShards([fake_sample(i) for i in range(3)])


def test_reconstruct_writes_layout_and_resumes(setup):
    tmp_path, shards = setup
    out = tmp_path / "pred"
    kw = dict(
        resolution=40,
        extent=0.12,
        progress=False,
        build=SphereNet,
        shards=shards,
        joints="keypoints",
    )
    s = reconstruct(tmp_path / "last.pt", tmp_path, out, wrist="pred", **kw)
    assert s["written"] == 3 and s["empty_hand"] == s["empty_obj"] == 0
    gt = export_gt(tmp_path, tmp_path / "gt", progress=False, shards=shards)
    assert gt["written"] == 3
    for i in range(3):
        stem = file_stem(f"seq/{i:04d}")
        assert stem == f"seq_{i:04d}"
        rec = json.loads((out / f"{stem}.json").read_text())
        ref = json.loads((tmp_path / "gt" / f"{stem}.json").read_text())
        assert np.asarray(rec["joints"]).shape == (21, 3)
        np.testing.assert_allclose(rec["joints"], ref["joints"], atol=1e-5)
        np.testing.assert_allclose(rec["obj_center"], ref["obj_center"], atol=1e-5)
        for part, r in (("hand", 0.04), ("obj", 0.03)):
            pred = trimesh.load(out / f"{stem}_{part}.ply")
            true = trimesh.load(tmp_path / "gt" / f"{stem}_{part}.ply")
            centre = true.vertices.mean(0)
            assert np.abs(np.linalg.norm(pred.vertices - centre, axis=1) - r).max() < 1.5e-3
    assert not list(out.glob(".*tmp*"))
    again = reconstruct(tmp_path / "last.pt", tmp_path, out, wrist="pred", **kw)
    assert again["written"] == 0 and again["skipped"] == 3


def test_reconstruct_user_errors(setup):
    tmp_path, shards = setup
    with pytest.raises(UserError, match="wrist"):
        reconstruct(tmp_path / "last.pt", tmp_path, tmp_path / "p", wrist="left", shards=shards)
    with pytest.raises(UserError, match="no checkpoint"):
        reconstruct(tmp_path / "none.pt", tmp_path, tmp_path / "p", shards=shards)


# ---------------------------------------------------------------- coarse to fine vs dense
def blobs(p):
    """A 'hand' (a palm capsule and a thin finger) and an 'object' (a torus), camera frame."""

    def capsule(p, a, b, r):
        a, b = np.asarray(a), np.asarray(b)
        t = np.clip(((p - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
        return np.linalg.norm(p - (a + t[:, None] * (b - a)), axis=1) - r

    palm = capsule(p, [0.0, 0.0, 0.6], [0.04, 0.01, 0.6], 0.025)
    finger = capsule(p, [0.04, 0.01, 0.6], [0.09, -0.02, 0.62], 0.006)
    q = p - np.array([0.07, 0.05, 0.63])
    torus = np.hypot(np.hypot(q[:, 0], q[:, 1]) - 0.035, q[:, 2]) - 0.012
    return np.minimum(palm, finger), torus


def chamfer_cm2(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric mean squared nearest-vertex distance (cm²), brute force through a KD-tree."""
    from scipy.spatial import cKDTree

    d_ab = cKDTree(b).query(a)[0]
    d_ba = cKDTree(a).query(b)[0]
    return float(((d_ab * 100) ** 2).mean() + ((d_ba * 100) ** 2).mean())


def both(sdf_fn, cfg, centre):
    from gsdf_model.meshing import extract_surface

    out = {}
    for ev in ("dense", "coarse-to-fine"):
        st = {}
        c = MeshingConfig(**{**cfg.__dict__, "evaluation": ev})
        out[ev] = (extract_surface(sdf_fn, centre, c, stats=st), st)
    return out


def test_coarse_to_fine_gives_the_dense_meshes_on_analytic_shapes():
    centre = np.array([0.0, 0.0, 0.6])
    res = both(blobs, MeshingConfig(resolution=64, extent=0.15), centre)
    (dense, st_d), (fine, st_f) = res["dense"], res["coarse-to-fine"]
    assert st_d["points"] == 2 * 64**3
    assert st_f["points"] < st_d["points"] / 3  # decoded only near the surfaces
    for a, b in zip(dense, fine, strict=True):
        assert a is not None and b is not None
        assert a[0].shape == b[0].shape and np.array_equal(a[1], b[1])
        assert np.abs(a[0] - b[0]).max() < 1e-9


def test_coarse_to_fine_gives_the_dense_meshes_on_a_fitted_network():
    """A small MLP fitted to the analytic shapes: a network's SDF, not an exact distance."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    centre = np.array([0.0, 0.0, 0.6])
    pts = centre + rng.uniform(-0.15, 0.15, (3000, 3))
    near = centre + np.array([0.04, 0.02, 0.02]) + rng.normal(0, 0.03, (5000, 3))
    x = np.concatenate([pts, near])
    h, o = blobs(x)
    target = torch.tensor(np.stack([h, o], 1), dtype=torch.float32).clamp(-0.05, 0.05)
    xin = torch.tensor((x - centre) * 10, dtype=torch.float32)
    mlp = nn.Sequential(nn.Linear(3, 32), nn.Softplus(beta=50), nn.Linear(32, 32))
    mlp.append(nn.Softplus(beta=50)).append(nn.Linear(32, 2))
    opt = torch.optim.Adam(mlp.parameters(), 3e-3)
    for _ in range(200):
        opt.zero_grad()
        loss = (mlp(xin) - target).abs().mean()
        loss.backward()
        opt.step()

    def net_fn(p):
        with torch.no_grad():
            v = mlp(torch.tensor((p - centre) * 10, dtype=torch.float32)).numpy()
        return v[:, 0], v[:, 1]

    res = both(net_fn, MeshingConfig(resolution=48, extent=0.15), centre)
    (dense, st_d), (fine, st_f) = res["dense"], res["coarse-to-fine"]
    assert st_f["points"] < st_d["points"] / 2
    for a, b in zip(dense, fine, strict=True):
        assert a is not None and b is not None and len(a[1]) > 100
        assert chamfer_cm2(a[0], b[0]) < 1e-6


def test_second_pass_is_one_cube_around_hand_and_object():
    """The reference's cube (recon.py): index box of the negative first-pass points of both
    shapes, 2 voxels of margin, side = largest extent + 4 voxels; brute force here."""
    from gsdf_model.meshing import extract_surface, grid_points

    res, ext = 40, 0.15
    centre = np.array([0.0, 0.0, 0.6])
    lo = centre - ext
    step = 2 * ext / (res - 1)
    h, o = blobs(grid_points(lo, centre + ext, res))
    idx = np.argwhere((np.minimum(h, o) < 0).reshape(res, res, res))
    i_min, i_max = idx.min(0), idx.max(0)
    want_lo = lo + (i_min - 2) * step
    want_step = (float((i_max - i_min).max()) + 4) * step / (res - 1)
    for ev in ("dense", "coarse-to-fine"):
        st = {}
        cfg = MeshingConfig(resolution=res, extent=ext, evaluation=ev)
        extract_surface(blobs, centre, cfg, stats=st)
        (lo_h, step_h), (lo_o, step_o) = st["boxes"]
        np.testing.assert_allclose(lo_h, want_lo, atol=1e-12)
        np.testing.assert_allclose(lo_o, want_lo, atol=1e-12)
        assert step_h == step_o == pytest.approx(want_step, rel=1e-12)
    # the option: a cube per shape, each smaller than the shared one
    st = {}
    extract_surface(blobs, centre, MeshingConfig(resolution=res, extent=ext, box="per-shape"),
                    stats=st)  # fmt: skip
    (_, step_h), (_, step_o) = st["boxes"]
    assert step_h < want_step and step_o < want_step


def test_largest_component_is_by_area():
    """The reference keeps the component with the largest area, not the most faces."""
    coarse_big = trimesh.creation.icosphere(subdivisions=1, radius=1.0)  # 80 faces
    fine_small = trimesh.creation.icosphere(subdivisions=3, radius=0.2)  # 1280 faces
    fine_small.apply_translation([5.0, 0, 0])
    both_ = trimesh.util.concatenate([fine_small, coarse_big])
    v, f = largest_component(np.asarray(both_.vertices), np.asarray(both_.faces))
    assert len(f) == len(coarse_big.faces)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)


# ---------------------------------------------------------------- joints as the reference scores
def posed_hand():
    from gsdf_data.hand import load_hand

    hand = load_hand(None)
    rng = np.random.default_rng(3)
    pose = torch.tensor(hand.sample_poses(1, rng), dtype=torch.float32)
    orient = torch.tensor([[0.3, -1.2, 0.4]])
    with torch.no_grad():
        kp = hand(global_orient=orient, finger_pose=pose).keypoints[0].double().numpy()
    return hand, kp + np.array([0.02, -0.03, 0.62]) - kp[0]


def test_reference_joints_round_trip_rest_bones_and_predicted_wrist():
    from gsdf_model.reconstruct import reference_joints

    hand, kp = posed_hand()
    # the model's own pose comes back unchanged
    np.testing.assert_allclose(reference_joints(hand, kp), kp, atol=2e-6)
    # predicted bones 20 % too long, wrist elsewhere: rest bones, at the predicted wrist, each
    # finger bone aimed from where FK put its parent at the predicted child (the reference)
    wrist = np.array([0.05, 0.01, 0.7])
    pred = wrist + 1.2 * (kp - kp[0])
    out = reference_joints(hand, pred)
    np.testing.assert_allclose(out[0], wrist, atol=1e-9)
    rest = hand.rest_keypoints()[0].double().numpy()
    for a in (1, 5, 9, 13, 17):  # finger roots, paper order
        for p, c in ((a, a + 1), (a + 1, a + 2), (a + 2, a + 3)):
            bone, aim = out[c] - out[p], pred[c] - out[p]
            assert np.linalg.norm(bone) == pytest.approx(np.linalg.norm(rest[c] - rest[p]), 1e-5)
            assert np.linalg.norm(np.cross(bone / np.linalg.norm(bone), aim)) < 1e-6
            assert bone @ aim > 0
    # not the bone-direction variant (each bone along the predicted parent → child)
    assert np.abs(out - (kp - kp[0] + wrist)).max() > 1e-3


class PoseNet(SphereNet):
    """SphereNet whose pose net predicts a real hand pose with 10 % too long bones."""

    keypoints = None

    def encode(self, image, K, wrist=None):
        state = super().encode(image, K, wrist)
        kp = torch.as_tensor(self.keypoints, dtype=torch.float32)
        w = state["joints"][:, 0]
        state["joints"] = w[:, None] + 1.1 * (kp - kp[0])[None]
        return state


def test_reconstruct_writes_fk_joints_at_the_predicted_wrist(setup):
    tmp_path, shards = setup
    from gsdf_model.reconstruct import reference_joints

    hand, kp = posed_hand()
    PoseNet.keypoints = kp
    out = tmp_path / "pred"
    reconstruct(tmp_path / "last.pt", tmp_path, out, resolution=24, extent=0.12, wrist="pred",
                progress=False, build=PoseNet, shards=shards)  # fmt: skip
    for i in range(3):
        rec = json.loads((out / f"seq_{i:04d}.json").read_text())
        pred = np.asarray(rec["keypoints"])
        np.testing.assert_allclose(pred, pred[0] + 1.1 * (kp - kp[0]), atol=1e-6)
        np.testing.assert_allclose(rec["joints"], reference_joints(hand, pred), atol=1e-9)
        np.testing.assert_allclose(np.asarray(rec["joints"])[0], pred[0], atol=1e-9)


# ---------------------------------------------------------------- splits, records, progress, jobs
def make_splits(root, names):
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "manifest.json").write_text("{}")


def test_missing_split_is_an_error_listing_the_splits(tmp_path, setup):
    ckpt = setup[0] / "last.pt"
    make_splits(tmp_path / "data", ["train", "val"])
    for call in (
        lambda d, s: reconstruct(ckpt, d, tmp_path / "p", split=s, progress=False),
        lambda d, s: export_gt(d, tmp_path / "g", split=s, progress=False),
    ):
        with pytest.raises(UserError, match=r"no split 'test'.*splits present: train, val"):
            call(tmp_path / "data", "test")
        with pytest.raises(UserError, match="no split 'tset'"):
            call(tmp_path / "data", "tset")
        # DATA/train with the default split: never the training samples in place of the test
        with pytest.raises(UserError, match=r"itself a shard folder: pass --split \."):
            call(tmp_path / "data" / "train", "test")
    assert not (tmp_path / "p").exists() and not (tmp_path / "g").exists()


def test_outputs_of_another_checkpoint_or_setting_are_refused_or_redone(setup):
    tmp_path, shards = setup
    out = tmp_path / "pred"
    kw = dict(resolution=24, extent=0.12, progress=False, build=SphereNet, shards=shards,
              joints="keypoints", wrist="pred")  # fmt: skip
    assert reconstruct(tmp_path / "last.pt", tmp_path, out, **kw)["written"] == 3
    other = torch.load(tmp_path / "last.pt", weights_only=True)
    other["epoch"] = 2
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(UserError, match=r"another run.*checkpoint_sha256"):
        reconstruct(tmp_path / "other.pt", tmp_path, out, **kw)
    with pytest.raises(UserError, match=r"another run.*resolution"):
        reconstruct(tmp_path / "last.pt", tmp_path, out, **{**kw, "resolution": 32})
    s = reconstruct(tmp_path / "other.pt", tmp_path, out, overwrite=True, **kw)
    assert s["written"] == 3 and s["skipped"] == 0
    rec = json.loads((out / "seq_0000.json").read_text())["run"]
    assert rec["checkpoint_sha256"] == file_digest(tmp_path / "other.pt")
    # a folder of meshes nobody vouches for (e.g. the ground truth) is not taken over either
    export_gt(tmp_path, tmp_path / "gt", progress=False, shards=shards)
    with pytest.raises(UserError, match="another run"):
        reconstruct(tmp_path / "last.pt", tmp_path, tmp_path / "gt", **kw)


def test_reconstruct_and_export_gt_show_progress(setup, capsys):
    tmp_path, shards = setup
    kw = dict(resolution=16, extent=0.12, build=SphereNet, shards=shards, joints="keypoints")
    reconstruct(tmp_path / "last.pt", tmp_path, tmp_path / "p", **kw)
    export_gt(tmp_path, tmp_path / "g", shards=shards)
    err = capsys.readouterr().err
    assert "reconstruct" in err and "export-gt" in err and "3/3" in err


@pytest.mark.slow  # two spawned processes import torch
def test_jobs_split_the_work_and_give_the_same_files(tmp_path):
    """Two worker processes write byte-identical outputs to one process's (real network),
    that process running with a worker's share of threads (torch's sums depend on its
    thread count: 2 threads against 1 move a vertex in the last bit)."""
    import os

    from gsdf_model.config import get_preset
    from gsdf_model.train import build_model

    cfg = get_preset("tiny")
    torch.manual_seed(0)
    net = build_model(cfg)
    for p in net.obj_decoder.parameters():  # an object surface near the wrist
        p.data.mul_(0.3)
    ckpt = {"format": CHECKPOINT_FORMAT, "model": net.state_dict(), "model_preset": "tiny",
            "model_config": cfg.to_dict(), "epoch": 1, "stage": 2}  # fmt: skip
    torch.save(ckpt, tmp_path / "last.pt")
    shards = InMemoryShards([fake_sample(i) for i in range(3)])
    kw = dict(resolution=16, progress=False, shards=shards)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # as each of the 2 workers
    try:
        one = reconstruct(tmp_path / "last.pt", tmp_path, tmp_path / "one", jobs=1, **kw)
    finally:
        torch.set_num_threads(threads)
    two = reconstruct(tmp_path / "last.pt", tmp_path, tmp_path / "two", jobs=2, **kw)
    assert one == {**two, "out": one["out"]} and one["written"] == 3
    for f in sorted((tmp_path / "one").iterdir()):
        assert f.read_bytes() == (tmp_path / "two" / f.name).read_bytes(), f.name


def test_cli_missing_split_is_one_line_and_exit_1(tmp_path):
    from click.testing import CliRunner

    from gsdf_model.cli import main

    make_splits(tmp_path / "data", ["train"])
    for args in (
        ["reconstruct", str(tmp_path / "ck.pt"), "--data", str(tmp_path / "data")],
        ["export-gt", "--data", str(tmp_path / "data" / "train")],
    ):
        r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o")])
        assert r.exit_code == 1, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and "no split 'test'" in lines[0], r.output
