"""gsdf_model.reconstruct: two-pass marching cubes against analytic spheres, the largest
component, the output layout, resume, and export_gt."""

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
    kw = dict(resolution=40, extent=0.12, progress=False, build=SphereNet, shards=shards)
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
