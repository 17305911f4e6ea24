"""gsdf_model.data: shard sample → model batch, checked against analytic spheres, a
hand-computed projection, the same point draws as before, and the reference code's
augmentation distribution (zerchen/gSDF `get_aug_config`)."""

import math
import os

import numpy as np
import pytest
import torch

from gsdf_model.data import (
    AugmentConfig,
    GSDFDataset,
    InMemoryShards,
    default_workers,
    image_warp,
    limit_opencv_threads,
    to_device,
    warp_image,
)

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


def finished(item):
    """The item as the training step sees it: batched, on the device, image finished."""
    return to_device(torch.utils.data.default_collate([item]), "cpu")


def test_points_and_sdf_in_camera_frame_metres():
    rng = np.random.default_rng(0)
    s = sphere_sample(rng)
    ds = GSDFDataset(InMemoryShards([s]), n_hand=200, n_obj=300)
    item = ds[0]
    assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.uint8
    np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), s["image"])
    image = finished(item)["image"]
    assert image.dtype == torch.float32
    torch.testing.assert_close(image[0], item["image"].float() / 255)
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


def _reference_item(shards, seed, epoch, i, n_hand, n_obj):
    """Written out here, independently of the loader: the point draw the loader has always
    made for (seed, epoch, index), then the reference augmentation drawn from the same stream
    (rotate with p = 0.6 by clip(N(0, 1), ±2)·45°, colour ×U[0.8, 1.2] per channel)."""
    rng = np.random.default_rng([seed, epoch, i])
    s = shards[i]
    pts, sdf_h, sdf_o = shards.sample_sdf(i, n_hand, n_obj, rng)
    cam = pts.astype(np.float64) * float(s["norm_scale"]) + s["norm_offset"]
    deg = 0.0
    if rng.random() < 0.6:
        deg = float(np.clip(rng.standard_normal(), -2.0, 2.0) * 45.0)
    colour = rng.uniform(0.8, 1.2, 3)
    c, si = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    R = np.array([[c, -si, 0.0], [si, c, 0.0], [0.0, 0.0, 1.0]])
    return {
        "points": cam @ R.T,
        "sdf_hand": sdf_h * float(s["norm_scale"]),
        "sdf_obj": sdf_o * float(s["norm_scale"]),
        "joints": s["joints"].astype(np.float64) @ R.T,
        "obj_center": R @ s["obj_center"],
        "colour": colour,
    }


def test_same_samples_and_reference_augmentation_per_item():
    rng = np.random.default_rng(6)
    shards = InMemoryShards([sphere_sample(rng, sample_id=f"s{i}") for i in range(4)])
    ds = GSDFDataset(shards, n_hand=64, n_obj=32, augment=AugmentConfig(), seed=9)
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item, ref = ds[i], _reference_item(shards, 9, epoch, i, 64, 32)
            for k in ("points", "sdf_hand", "sdf_obj", "joints", "obj_center", "colour"):
                np.testing.assert_allclose(item[k].numpy(), ref[k], atol=2e-6, err_msg=k)


def test_rotation_keeps_image_points_joints_consistent():
    """After augmentation the dot drawn at joint 5 is where the rotated joint 5 projects, and
    the SDFs are still the analytic SDFs of the rotated spheres."""
    rng = np.random.default_rng(2)
    s = sphere_sample(rng)
    aug = AugmentConfig(rotation_prob=1.0, colour_scale=0.0)
    ds = GSDFDataset(InMemoryShards([s]), n_hand=100, n_obj=100, augment=aug)
    angles = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        item = ds[0]
        j = item["joints"].double().numpy()
        # the joints moved rigidly about the optical axis: depth and distances unchanged
        np.testing.assert_allclose(j[:, 2], s["joints"][:, 2], atol=1e-5)
        np.testing.assert_allclose(
            np.linalg.norm(j[:, :2], axis=1), np.linalg.norm(s["joints"][:, :2], axis=1), atol=1e-5
        )
        angle = math.atan2(j[5, 1], j[5, 0]) - math.atan2(s["joints"][5, 1], s["joints"][5, 0])
        angles.append((angle + math.pi) % (2 * math.pi) - math.pi)
        u, v = (K @ j[5])[:2] / j[5][2]
        gray = finished(item)["image"][0].sum(0).numpy()
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
    assert min(abs(a) for a in angles) > 1e-3  # p = 1: every epoch turned


def _angles_and_colours(aug, n):
    """Rotation angles (degrees, read back from the joints) and colour factors of n items."""
    size = 8
    Ks = np.array([[20.0, 0.0, 3.5], [0.0, 20.0, 3.5], [0.0, 0.0, 1.0]], np.float32)
    s = sphere_sample(np.random.default_rng(8), n=64)
    s["image"], s["K"] = np.full((size, size, 3), 200, np.uint8), Ks
    ds = GSDFDataset(InMemoryShards([s] * n), n_hand=0, n_obj=0, augment=aug, image_size=size)
    j0 = s["joints"][5].astype(np.float64)
    angles, colours = np.empty(n), np.empty((n, 3))
    for i in range(n):
        item = ds[i]
        j = item["joints"][5].double().numpy()
        angles[i] = math.degrees(math.atan2(j[1], j[0]) - math.atan2(j0[1], j0[0]))
        colours[i] = item["colour"].numpy()
    return (angles + 180.0) % 360.0 - 180.0, colours


def test_rotation_angle_distribution_is_the_reference():
    """p = 0.6 of turning; turned angles N(0, 45°) clipped to ±90° (the clipped mass sits at
    ±90°). The same statistics reject the uniform ±45° option, so they can fail."""
    from scipy import stats

    n = 1500
    angles, _ = _angles_and_colours(AugmentConfig(), n)
    turned = angles[np.abs(angles) > 1e-6]
    p = len(turned) / n
    assert abs(p - 0.6) < 4 * math.sqrt(0.6 * 0.4 / n)
    assert np.abs(angles).max() <= 90.0 + 1e-4
    at_clip = np.abs(np.abs(turned) - 90.0) < 1e-4
    q = 2 * stats.norm.sf(2.0)  # 4.6 % beyond 2σ
    assert abs(at_clip.mean() - q) < 4 * math.sqrt(q * (1 - q) / len(turned))
    inner = turned[~at_clip]
    truncated = stats.truncnorm(-2.0, 2.0, scale=45.0)
    assert stats.kstest(inner, truncated.cdf).pvalue > 1e-3
    uniform, _ = _angles_and_colours(AugmentConfig(rotation_dist="uniform", rotation_prob=1.0), n)
    assert np.abs(uniform).max() <= 45.0 + 1e-4
    assert stats.kstest(uniform, truncated.cdf).pvalue < 1e-6


def test_colour_factors_are_the_reference_and_applied_per_channel():
    from scipy import stats

    _, colours = _angles_and_colours(AugmentConfig(), 1000)
    for c in range(3):
        assert stats.kstest(colours[:, c], stats.uniform(0.8, 0.4).cdf).pvalue > 1e-3
    corr = np.corrcoef(colours.T)
    assert np.abs(corr - np.eye(3)).max() < 0.1  # independent channels
    # applied on the device: a flat 240 grey becomes min(240·f / 255, 1) per channel
    s = sphere_sample(np.random.default_rng(9))
    s["image"][:] = 240
    aug = AugmentConfig(rotation_prob=0.0, colour_scale=0.2)
    ds = GSDFDataset(InMemoryShards([s] * 6), n_hand=0, n_obj=0, augment=aug)
    batch = torch.utils.data.default_collate([ds[i] for i in range(6)])
    image = to_device(batch, "cpu")["image"]
    want = np.minimum(240.0 * batch["colour"].numpy() / 255.0, 1.0)
    np.testing.assert_allclose(image.amax(dim=(2, 3)).numpy(), want, atol=1e-6)
    np.testing.assert_allclose(image.amin(dim=(2, 3)).numpy(), want, atol=1e-6)
    assert (batch["colour"] > 1.0).any() and (image.amax(dim=(2, 3)) == 1.0).any()  # clipped
    # float images too, without touching the caller's batch
    as_float = dict(batch, image=batch["image"].float() / 255)
    before = as_float["image"].clone()
    torch.testing.assert_close(to_device(as_float, "cpu")["image"], image)
    assert torch.equal(as_float["image"], before)


def test_warp_identity_and_quarter_turn():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Ks = np.array([[50.0, 0, 15.5], [0, 50.0, 15.5], [0, 0, 1]])
    M, K_out = image_warp(Ks, img.shape[:2], 32, np.eye(3))
    assert M is None and np.array_equal(warp_image(img, M, 32), img)
    np.testing.assert_allclose(K_out, Ks)
    # 90° about z with the principal point at the image centre: a pure pixel rotation
    R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    out = warp_image(img, image_warp(Ks, img.shape[:2], 32, R)[0], 32)
    # X' = R X maps pixel (u, v) about the centre to (c - (v - c), c + (u - c))
    np.testing.assert_array_equal(out, np.rot90(img, k=-1, axes=(0, 1)))


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
        red = [int(item["image"][t, 0, 0, 0]) // 10 for t in range(3)]
        f = s["frame_idx"]
        lo, hi = (0, 2) if s["seq_id"] == "a" else (3, 6)
        assert red == [max(f - 1, lo), f, min(f + 1, hi)]


def test_random_clips_are_three_frames_of_one_sequence_drawn_anew_each_epoch():
    """clips="random" (the reference's training clips): one item per sequence, three
    distinct frames of it (repeats only when it has fewer), redrawn each epoch, the same for
    the same (seed, epoch)."""
    rng = np.random.default_rng(6)
    samples = []
    for seq, n in (("a", 5), ("b", 4), ("c", 2)):
        for f in range(n):
            s = sphere_sample(rng, sample_id=f"{seq}{f}", seq_id=seq, frame_idx=f, n=200)
            s["image"][..., 1] = ord(seq)  # green: the sequence, red: the frame
            samples.append(s)
    ds = GSDFDataset(InMemoryShards(samples), n_hand=0, n_obj=0, video=True, clips="random")
    assert len(ds) == 3
    drawn = {seq: set() for seq in "abc"}
    for epoch in range(6):
        ds.set_epoch(epoch)
        for k, seq in enumerate("abc"):
            item = ds[k]
            green = {int(item["image"][t, 1, 0, 0]) for t in range(3)}
            assert green == {ord(seq)}, "a clip mixes sequences"
            frames = tuple(int(item["image"][t, 0, 0, 0]) // 10 for t in range(3))
            if seq != "c":
                assert len(set(frames)) == 3, frames
            assert item["sample_id"] == f"{seq}{frames[1]}"  # the middle one is frame t
            drawn[seq].add(frames)
            again = ds[k]
            assert torch.equal(again["image"], item["image"])
    assert len(drawn["a"]) > 1 and len(drawn["b"]) > 1  # redrawn across epochs
    with pytest.raises(ValueError, match="clips"):
        GSDFDataset(InMemoryShards(samples), n_hand=0, n_obj=0, video=True, clips="nope")


def test_video_frames_share_one_rotation_and_colour():
    rng = np.random.default_rng(10)
    samples = [sphere_sample(rng, sample_id=f"a{f}", seq_id="a", frame_idx=f) for f in range(3)]
    for s in samples:
        s["image"][..., 1] = 100
    aug = AugmentConfig(rotation_prob=1.0)
    ds = GSDFDataset(InMemoryShards(samples), n_hand=0, n_obj=0, video=True, augment=aug)
    item = ds[1]
    # green 100 everywhere the warp saw the image: the same footprint in all three frames
    inside = item["image"][:, 1] == 100
    assert torch.equal(inside[0], inside[1]) and torch.equal(inside[1], inside[2])
    assert 0.3 < float(inside[1].float().mean()) < 1.0  # turned: black corners
    image = finished(item)["image"][0]  # (T, 3, S, S)
    g = image[:, 1][inside]
    torch.testing.assert_close(g, torch.full_like(g, 100 / 255 * float(item["colour"][1])))


def test_non_256_image_is_resized_and_K_follows():
    rng = np.random.default_rng(4)
    s = sphere_sample(rng, size=128)
    s["image"] = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    s["K"] = (K * np.array([[0.5], [0.5], [1.0]])).astype(np.float32)
    s["K"][0, 2] = s["K"][1, 2] = 63.75  # K for the half-size image, pixel centres at integers
    ds = GSDFDataset(InMemoryShards([s]), n_hand=0, n_obj=0, image_size=256)
    item = ds[0]
    assert item["image"].shape == (3, 256, 256)
    np.testing.assert_allclose(item["K"].numpy(), K, atol=1e-4)
    # bilinear about pixel edges with the edges replicated, as torch interpolates
    src = torch.from_numpy(s["image"]).permute(2, 0, 1)[None].float()
    ref = torch.nn.functional.interpolate(src, size=(256, 256), mode="bilinear")[0]
    assert float((item["image"].float() - ref).abs().max()) <= 1.0


@pytest.mark.parametrize("n_hand,n_obj", [(7, 5), (0, 4)])
def test_odd_point_counts(n_hand, n_obj):
    s = sphere_sample(np.random.default_rng(5))
    item = GSDFDataset(InMemoryShards([s]), n_hand=n_hand, n_obj=n_obj)[0]
    assert item["points"].shape == (n_hand + n_obj, 3)
    assert item["sdf_hand"].shape == item["sdf_obj"].shape == (n_hand + n_obj,)


@pytest.mark.parametrize("cores,local_world,want", [(16, 1, 15), (16, 2, 7), (2, 1, 1), (1, 1, 0)])
def test_default_workers_from_this_machines_cores(monkeypatch, cores, local_world, want):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert default_workers(local_world) == want


def test_dataloader_workers_give_the_items_of_the_main_process(tmp_path):
    """Through a real shard set (JPEG images) and a DataLoader worker process: the same
    samples, augmentation and finished images as items made in this process."""
    from gsdf_data.shards import ShardSet, ShardWriter, write_manifest

    rng = np.random.default_rng(12)
    w = ShardWriter(tmp_path / "shard-00000.h5", n_points=4000, image_format="jpg")
    for i in range(6):
        s = sphere_sample(rng, sample_id=f"s{i}")
        s.pop("_centres")
        s["image"] = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        s.update(hand_verts=np.eye(3), hand_faces=[[0, 1, 2]], obj_verts=np.eye(3))
        s["obj_faces"] = [[0, 1, 2]]
        w.add(s)
    write_manifest(tmp_path, [w.close()], {"expected_shards": 1, "config": {}})
    ds = GSDFDataset(ShardSet(tmp_path), n_hand=20, n_obj=20, augment=AugmentConfig(), seed=4)
    ds.set_epoch(2)
    limit_opencv_threads()  # as the trainer does before its workers fork
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1)
    got = [to_device(b, "cpu") for b in loader]
    for k in range(2):
        want = to_device(
            torch.utils.data.default_collate([ds[i] for i in range(3 * k, 3 * k + 3)]), "cpu"
        )
        assert got[k]["sample_id"] == want["sample_id"]
        for key in ("image", "points", "sdf_hand", "joints", "obj_center", "K"):
            assert torch.equal(got[k][key], want[key]), key
        assert got[k]["image"].dtype == torch.float32 and "colour" not in got[k]


def test_video_frame_labels_are_each_frames_own():
    """With frame_labels every frame of the clip carries its own K, joints, object centre and
    SDF points (turned with the clip's one rotation); frame t's are the frame-t-only item's."""
    rng = np.random.default_rng(11)
    samples = [sphere_sample(rng, sample_id=f"a{f}", seq_id="a", frame_idx=f) for f in range(3)]
    samples[2]["K"] = K * np.array([[1.1], [1.1], [1.0]], np.float32)  # another crop
    aug = AugmentConfig(rotation_prob=1.0, colour_scale=0.0)
    kw = {"n_hand": 40, "n_obj": 30, "video": True, "augment": aug, "seed": 5}
    every = GSDFDataset(InMemoryShards(samples), frame_labels=True, **kw)[1]
    middle = GSDFDataset(InMemoryShards(samples), **kw)[1]
    assert every["K"].shape == (3, 3, 3) and every["joints"].shape == (3, 21, 3)
    assert every["points"].shape == (3, 70, 3) and every["sdf_obj"].shape == (3, 70)
    for k in ("K", "joints", "obj_center", "points", "sdf_hand", "sdf_obj"):
        assert torch.equal(every[k][1], middle[k]), k
    assert torch.equal(every["image"], middle["image"])
    np.testing.assert_allclose(every["K"][2].numpy(), samples[2]["K"], atol=1e-4)
    j = middle["joints"].double().numpy()
    R = np.linalg.lstsq(samples[1]["joints"].astype(np.float64), j, rcond=None)[0].T
    for t, s in enumerate(samples):
        np.testing.assert_allclose(every["joints"][t].numpy(), s["joints"] @ R.T, atol=1e-5)
        c_h, r_h, c_o, r_o = s["_centres"]
        pts = every["points"][t].double().numpy()
        np.testing.assert_allclose(
            every["sdf_hand"][t], np.linalg.norm(pts - R @ c_h, axis=1) - r_h, atol=1e-5
        )
        np.testing.assert_allclose(
            every["sdf_obj"][t], np.linalg.norm(pts - R @ c_o, axis=1) - r_o, atol=1e-5
        )
    assert not torch.equal(every["points"][0], every["points"][1])  # each frame its own draw


# A DexYCB-like crop: the principal point of the original camera lies outside the crop (the
# hand was right of and above the image centre), f of a 640×480 RealSense scaled to the crop.
K_DEX = np.array([[790.0, 0.0, -40.0], [0.0, 790.0, 310.0], [0.0, 0.0, 1.0]])


def dexycb_like_sample(rng):
    """Joints 0.5–0.8 m away, back-projected from whole pixels inside the crop; a red, a green
    and a blue 3×3 dot centred on the projections of joints 3, 9 and 17; spheres about
    joints 0 and 9."""
    uv = rng.integers(60, 196, (21, 2)).astype(np.float64)
    z = rng.uniform(0.5, 0.8, 21)
    joints = (np.linalg.inv(K_DEX) @ np.c_[uv, np.ones(21)].T).T * z[:, None]
    s = sphere_sample(rng)
    image = np.full((256, 256, 3), 40, np.uint8)
    for ch, j in enumerate((3, 9, 17)):
        iu, iv = int(uv[j, 0]), int(uv[j, 1])
        image[iv - 1 : iv + 2, iu - 1 : iu + 2] = 0
        image[iv - 1 : iv + 2, iu - 1 : iu + 2, ch] = 255
    c_h, c_o = joints[0], joints[9]
    r_h, r_o = 0.04, 0.03
    lo, hi = np.minimum(c_h - r_h, c_o - r_o), np.maximum(c_h + r_h, c_o + r_o)
    offset, scale = (lo + hi) / 2, np.linalg.norm(hi - lo) / 2 * 1.03
    cam = s["points"].astype(np.float64) * scale + offset
    s.update(
        image=image,
        K=K_DEX.astype(np.float32),
        joints=joints.astype(np.float32),
        obj_center=c_o.astype(np.float32),
        norm_offset=offset.astype(np.float32),
        norm_scale=np.float32(scale),
        sdf_hand=((np.linalg.norm(cam - c_h, axis=1) - r_h) / scale).astype(np.float32),
        sdf_obj=((np.linalg.norm(cam - c_o, axis=1) - r_o) / scale).astype(np.float32),
        _centres=(c_h, r_h, c_o, r_o),
    )
    return s


def dot_centre(image, ch):
    """Centre (u, v) of the dot of colour channel ch: the centroid of how much that channel
    exceeds the others (0 on the grey background and the black border)."""
    img = image.astype(np.float64)
    w = np.clip(img[..., ch] - np.delete(img, ch, axis=-1).max(-1), 0, None)
    v, u = np.mgrid[: img.shape[0], : img.shape[1]]
    return (w * u).sum() / w.sum(), (w * v).sum() / w.sum()


def reference_virtual_camera(K, centre):
    """The reference's virtual camera (zerchen/gSDF `update_virtual_camera_after_crop`),
    written from its angles: for the ray (x, y, 1) through the new centre, a turn about x by
    θ, sin θ = −y/√(1+x²+y²), then about y by φ, sin φ = x/√(1+x²); R = R_y R_x takes the
    virtual camera's axes into this camera's frame."""
    x, y, _ = np.linalg.inv(K) @ np.array([centre[0], centre[1], 1.0])
    theta = math.atan2(-y, math.sqrt(1 + x * x))
    phi = math.atan2(x, 1.0)
    c, s = math.cos(theta), math.sin(theta)
    R_x = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    c, s = math.cos(phi), math.sin(phi)
    R_y = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return R_y @ R_x


def _reference_shift(seed, epoch, index, aug):
    """The crop shift the loader draws for (seed, epoch, index) without SDF points, written
    out: the rotation draw(s), the three colour factors, then U[±crop_shift] for x and y."""
    rng = np.random.default_rng([seed, epoch, index])
    if rng.random() < aug.rotation_prob:
        rng.standard_normal()
    rng.uniform(0.8, 1.2, 3)
    return rng.uniform(-aug.crop_shift, aug.crop_shift, 2)


def test_crop_shift_turns_a_virtual_camera_to_the_new_centre():
    """DexYCB: the crop centre moves by U[±10 %] of the side; the labels are in the frame of
    the reference's virtual camera looking through the new centre, with the principal point
    at the image centre; the dots of the warped image sit where the new joints project."""
    rng = np.random.default_rng(13)
    s = dexycb_like_sample(rng)
    aug = AugmentConfig(rotation_prob=0.0, colour_scale=0.0, crop_shift=0.1)
    ds = GSDFDataset(InMemoryShards([s]), n_hand=0, n_obj=0, augment=aug, seed=2)
    shifts = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        item = ds[0]
        shift = _reference_shift(2, epoch, 0, aug)
        shifts.append(shift)
        centre = 128.0 + 256.0 * shift
        R = reference_virtual_camera(K_DEX, centre)
        np.testing.assert_allclose(
            item["K"].numpy(), [[790.0, 0, 128.0], [0, 790.0, 128.0], [0, 0, 1]], atol=1e-4
        )
        j = item["joints"].double().numpy()
        np.testing.assert_allclose(j, s["joints"].astype(np.float64) @ R, atol=2e-6)
        # the ray through the new centre is the new optical axis
        ray = np.linalg.inv(K_DEX) @ np.array([*centre, 1.0])
        np.testing.assert_allclose(R.T @ ray / np.linalg.norm(ray), [0, 0, 1], atol=1e-12)
        image = item["image"].permute(1, 2, 0).numpy().astype(np.float64)
        for ch, jj in enumerate((3, 9, 17)):
            u, v = (item["K"].double().numpy() @ j[jj])[:2] / j[jj][2]
            ux, vy = dot_centre(image, ch)
            assert abs(ux - u) <= 0.25 and abs(vy - v) <= 0.25, (epoch, jj, (ux, vy), (u, v))
    assert np.abs(np.array(shifts)).max() > 0.03  # it did move


def test_crop_shift_with_rotation_keeps_image_joints_and_sdf_consistent():
    """Shift and rotation together: the rotation turns about the virtual camera's axis (the
    image centre), the dots follow the joints, the SDF points the spheres, rigidly."""
    rng = np.random.default_rng(14)
    s = dexycb_like_sample(rng)
    aug = AugmentConfig(rotation_prob=1.0, rotation_deg=30.0, colour_scale=0.0, crop_shift=0.1)
    ds = GSDFDataset(InMemoryShards([s]), n_hand=60, n_obj=60, augment=aug, seed=3)
    _, r_h, _, r_o = s["_centres"]
    for epoch in range(4):
        ds.set_epoch(epoch)
        item = ds[0]
        j = item["joints"].double().numpy()
        d_old = np.linalg.norm(s["joints"][:, None] - s["joints"][None], axis=-1)
        np.testing.assert_allclose(np.linalg.norm(j[:, None] - j[None], axis=-1), d_old, atol=1e-5)
        Kn = item["K"].double().numpy()
        image = item["image"].permute(1, 2, 0).numpy().astype(np.float64)
        for ch, jj in enumerate((3, 9, 17)):
            u, v = (Kn @ j[jj])[:2] / j[jj][2]
            ux, vy = dot_centre(image, ch)
            assert abs(ux - u) <= 0.25 and abs(vy - v) <= 0.25, (epoch, jj, (ux, vy), (u, v))
        pts = item["points"].double().numpy()
        np.testing.assert_allclose(
            item["sdf_hand"], np.linalg.norm(pts - j[0], axis=1) - r_h, atol=1e-5
        )
        np.testing.assert_allclose(
            item["sdf_obj"], np.linalg.norm(pts - j[9], axis=1) - r_o, atol=1e-5
        )
        np.testing.assert_allclose(item["obj_center"].numpy(), j[9], atol=1e-6)


def test_crop_shift_distribution_is_the_references():
    """Read back from the labels (the virtual optical axis through the new centre): x and y
    shifts independent, each U[−10 %, 10 %] of the side."""
    from scipy import stats

    s = dexycb_like_sample(np.random.default_rng(15))
    small = 32
    s["image"] = np.zeros((small, small, 3), np.uint8)
    s["K"] = (K_DEX * np.array([[1 / 8], [1 / 8], [1.0]])).astype(np.float32)
    aug = AugmentConfig(rotation_prob=0.0, colour_scale=0.0, crop_shift=0.1)
    n = 400
    ds = GSDFDataset(InMemoryShards([s] * n), n_hand=0, n_obj=0, augment=aug, image_size=small)
    X = s["joints"].astype(np.float64)
    Kc = ds[0]["K"].double().numpy()
    shifts = np.empty((n, 2))
    for i in range(n):
        Vt = np.linalg.lstsq(X, ds[i]["joints"].double().numpy(), rcond=None)[0].T
        axis = Vt[2]  # the virtual z axis in the camera frame of the stored crop
        c = s["K"].astype(np.float64) @ axis  # where the stored crop sees it: the new centre
        shifts[i] = (c[:2] / c[2] - small / 2) / small
    np.testing.assert_allclose(Kc[:2, 2], [small / 2, small / 2])
    for a in range(2):
        assert stats.kstest(shifts[:, a], stats.uniform(-0.1, 0.2).cdf).pvalue > 1e-3
    assert abs(np.corrcoef(shifts.T)[0, 1]) < 0.15


def test_obman_presets_do_not_shift_the_crop_dexycb_presets_do():
    from gsdf_model.config import PRESETS, get_train_preset

    assert get_train_preset("obman").crop_shift == 0.0
    assert get_train_preset("tiny").crop_shift == 0.0
    dexycb = [p for p in PRESETS if p != "obman" and not p.startswith("tiny")]
    assert {"dexycb", "dexycb-video", "k1", "v4", "single"} <= set(dexycb)
    assert all(get_train_preset(p).crop_shift == 0.1 for p in dexycb)
    # without a shift no virtual camera: K, joints and the stream as before (ObMan's K)
    s = sphere_sample(np.random.default_rng(16))
    aug = AugmentConfig(rotation_prob=0.0, colour_scale=0.2)
    item = GSDFDataset(InMemoryShards([s]), n_hand=8, n_obj=8, augment=aug)[0]
    np.testing.assert_array_equal(item["K"].numpy(), K)
    np.testing.assert_array_equal(item["joints"].numpy(), s["joints"])
    np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), s["image"])
