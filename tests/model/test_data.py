"""gsdf_model.data: shard sample → model batch, checked against analytic spheres and a
hand-computed projection."""

import math

import numpy as np
import pytest
import torch

from gsdf_model.data import AugmentConfig, GSDFDataset, InMemoryShards, rotate_image

K = np.array([[300.0, 0.0, 128.0], [0.0, 300.0, 128.0], [0.0, 0.0, 1.0]], dtype=np.float32)


def sphere_sample(rng, sample_id="s0", seq_id="q", frame_idx=0, n=4000, size=256):
    """A sample whose 'hand' and 'object' are spheres (analytic SDF), with a white dot in
    the image at the projection of joint 5."""
    c_h = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), 0.5])
    c_o = c_h + np.array([0.06, 0.0, 0.02])
    r_h, r_o = 0.04, 0.03
    lo = np.minimum(c_h - r_h, c_o - r_o)
    hi = np.maximum(c_h + r_h, c_o + r_o)
    offset = (lo + hi) / 2
    scale = np.linalg.norm(hi - lo) / 2 * 1.03
    unit = rng.uniform(-1, 1, (n, 3))
    cam = unit * scale + offset
    joints = c_h + rng.normal(0, 0.02, (21, 3))
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0] = frame_idx * 10  # the frame index, readable from the red channel
    u, v = (K @ joints[5])[:2] / joints[5][2]
    iu, iv = round(u), round(v)
    image[iv - 1 : iv + 2, iu - 1 : iu + 2] = 255
    return {
        "sample_id": sample_id,
        "image": image,
        "K": K.copy(),
        "joints": joints.astype(np.float32),
        "hand_rotmats": np.full((16, 3, 3), np.nan, np.float32),
        "obj_center": c_o.astype(np.float32),
        "obj_pose": np.full((4, 4), np.nan, np.float32),
        "norm_offset": offset.astype(np.float32),
        "norm_scale": np.float32(scale),
        "points": unit.astype(np.float32),
        "sdf_hand": ((np.linalg.norm(cam - c_h, axis=1) - r_h) / scale).astype(np.float32),
        "sdf_obj": ((np.linalg.norm(cam - c_o, axis=1) - r_o) / scale).astype(np.float32),
        "seq_id": seq_id,
        "frame_idx": frame_idx,
        "_centres": (c_h, r_h, c_o, r_o),
    }


def test_points_and_sdf_in_camera_frame_metres():
    rng = np.random.default_rng(0)
    s = sphere_sample(rng)
    ds = GSDFDataset(InMemoryShards([s]), n_hand=200, n_obj=300)
    item = ds[0]
    assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    pts = item["points"].double().numpy()
    assert pts.shape == (500, 3)
    c_h, r_h, c_o, r_o = s["_centres"]
    np.testing.assert_allclose(item["sdf_hand"], np.linalg.norm(pts - c_h, axis=1) - r_h, atol=1e-5)
    np.testing.assert_allclose(item["sdf_obj"], np.linalg.norm(pts - c_o, axis=1) - r_o, atol=1e-5)
    # balanced: the first 200 points are for the hand, half inside
    assert int((item["sdf_hand"][:200] < 0).sum()) == 100
    assert int((item["sdf_obj"][200:] < 0).sum()) == 150


def test_same_seed_epoch_index_same_item_new_epoch_new_points():
    s = sphere_sample(np.random.default_rng(1))
    ds = GSDFDataset(InMemoryShards([s]), n_hand=50, n_obj=50, augment=AugmentConfig(), seed=3)
    a, b = ds[0], ds[0]
    assert torch.equal(a["points"], b["points"]) and torch.equal(a["image"], b["image"])
    ds.set_epoch(1)
    assert not torch.equal(a["points"], ds[0]["points"])


def test_rotation_keeps_image_points_joints_consistent():
    """After augmentation the dot drawn at joint 5 is where the rotated joint 5 projects, and
    the SDFs are still the analytic SDFs of the rotated spheres."""
    rng = np.random.default_rng(2)
    s = sphere_sample(rng)
    aug = AugmentConfig(rotation_deg=45.0, brightness=0.0, contrast=0.0, saturation=0.0)
    ds = GSDFDataset(InMemoryShards([s]), n_hand=100, n_obj=100, augment=aug)
    for epoch in range(4):
        ds.set_epoch(epoch)
        item = ds[0]
        j = item["joints"].double().numpy()
        # the joints moved rigidly about the optical axis: depth and distances unchanged
        np.testing.assert_allclose(j[:, 2], s["joints"][:, 2], atol=1e-5)
        np.testing.assert_allclose(
            np.linalg.norm(j[:, :2], axis=1), np.linalg.norm(s["joints"][:, :2], axis=1), atol=1e-5
        )
        angle = math.atan2(j[5, 1], j[5, 0]) - math.atan2(s["joints"][5, 1], s["joints"][5, 0])
        angle = (angle + math.pi) % (2 * math.pi) - math.pi
        assert abs(angle) <= math.radians(45.0) + 1e-6
        u, v = (K @ j[5])[:2] / j[5][2]
        gray = item["image"].sum(0).numpy()
        vy, ux = np.unravel_index(np.argmax(gray), gray.shape)
        assert abs(ux - u) <= 1.5 and abs(vy - v) <= 1.5
        # the object centre and the SDF points turned with the image
        _, _, c_o, r_o = s["_centres"]
        R_c_o = item["obj_center"].double().numpy()
        np.testing.assert_allclose(
            np.linalg.norm(R_c_o - j[0]), np.linalg.norm(c_o - s["joints"][0]), atol=1e-5
        )
        pts = item["points"].double().numpy()
        d_o = np.linalg.norm(pts - R_c_o, axis=1) - r_o
        np.testing.assert_allclose(item["sdf_obj"], d_o, atol=1e-5)


def test_rotate_image_identity_and_quarter_turn():
    img = torch.rand(3, 32, 32)
    Ks = np.array([[50.0, 0, 15.5], [0, 50.0, 15.5], [0, 0, 1]])
    same = rotate_image(img, Ks, np.eye(3))
    torch.testing.assert_close(same, img, atol=1e-5, rtol=0)
    # 90° about z with the principal point at the image centre: a pure pixel rotation
    R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    out = rotate_image(img, Ks, R)
    # X' = R X maps pixel (u, v) about the centre to (c - (v - c), c + (u - c))
    torch.testing.assert_close(out, torch.rot90(img, k=-1, dims=(1, 2)), atol=1e-4, rtol=0)


def test_video_frames_by_frame_index_clamped_at_sequence_ends():
    rng = np.random.default_rng(3)
    samples = []
    # two sequences, stored out of order
    for seq, frames in (("a", [2, 0, 1]), ("b", [5, 3, 4, 6])):
        for f in frames:
            samples.append(sphere_sample(rng, sample_id=f"{seq}{f}", seq_id=seq, frame_idx=f))
    ds = GSDFDataset(InMemoryShards(samples), n_hand=0, n_obj=0, video=True)
    for i, s in enumerate(samples):
        item = ds[i]
        assert item["image"].shape == (3, 3, 256, 256)
        assert "points" not in item
        red = [round(float(item["image"][t, 0, 0, 0]) * 255 / 10) for t in range(3)]
        f = s["frame_idx"]
        lo, hi = (0, 2) if s["seq_id"] == "a" else (3, 6)
        assert red == [max(f - 1, lo), f, min(f + 1, hi)]


def test_non_256_image_is_resized_and_K_follows():
    rng = np.random.default_rng(4)
    s = sphere_sample(rng, size=128)
    s["K"] = (K * np.array([[0.5], [0.5], [1.0]])).astype(np.float32)
    s["K"][0, 2] = s["K"][1, 2] = 63.75  # K for the half-size image, pixel centres at integers
    ds = GSDFDataset(InMemoryShards([s]), n_hand=0, n_obj=0, image_size=256)
    item = ds[0]
    assert item["image"].shape == (3, 256, 256)
    np.testing.assert_allclose(item["K"].numpy(), K, atol=1e-4)


@pytest.mark.parametrize("n_hand,n_obj", [(7, 5), (0, 4)])
def test_odd_point_counts(n_hand, n_obj):
    s = sphere_sample(np.random.default_rng(5))
    item = GSDFDataset(InMemoryShards([s]), n_hand=n_hand, n_obj=n_obj)[0]
    assert item["points"].shape == (n_hand + n_obj, 3)
    assert item["sdf_hand"].shape == item["sdf_obj"].shape == (n_hand + n_obj,)
