"""Pose stage: soft-argmax, voxel ↔ camera decoding, ordinal depth loss."""

import math

import pytest
import torch

from gsdf_model.pose import (
    HeatmapHead,
    RootDepthHead,
    ordinal_loss,
    sample_ordinal_pairs,
    sample_view_directions,
    soft_argmax_3d,
    voxels_to_camera,
)


def test_soft_argmax_returns_exact_peak_of_delta():
    S = 16
    logits = torch.full((1, 2, S, S, S), -50.0)
    logits[0, 0, 5, 9, 3] = 50.0  # (z, y, x)
    logits[0, 1, 0, 15, 7] = 50.0
    coords = soft_argmax_3d(logits)
    torch.testing.assert_close(coords[0, 0], torch.tensor([3.0, 9.0, 5.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(coords[0, 1], torch.tensor([7.0, 15.0, 0.0]), atol=1e-5, rtol=0)


def test_soft_argmax_returns_centre_of_symmetric_blob():
    S = 32
    z, y, x = torch.meshgrid(torch.arange(S), torch.arange(S), torch.arange(S), indexing="ij")
    peak = torch.tensor([11.0, 20.0, 14.0])  # x, y, z
    d2 = (x - peak[0]) ** 2 + (y - peak[1]) ** 2 + (z - peak[2]) ** 2
    logits = (-d2.float() / (2 * 1.5**2))[None, None]
    torch.testing.assert_close(soft_argmax_3d(logits)[0, 0], peak, atol=1e-4, rtol=0)


def camera_to_voxels(X, K, ref_depth, image_size, heatmap_size, depth_extent):
    """The inverse of `voxels_to_camera`, written out: project, then pixel -> voxel."""
    stride = image_size / heatmap_size
    z = X[..., 2]
    u = K[:, 0, 0, None] * X[..., 0] / z + K[:, 0, 2, None]
    v = K[:, 1, 1, None] * X[..., 1] / z + K[:, 1, 2, None]
    d = ((z - ref_depth[:, None]) / depth_extent + 1.0) / 2.0 * (heatmap_size - 1)
    return torch.stack([(u + 0.5) / stride - 0.5, (v + 0.5) / stride - 0.5, d], dim=-1)


def test_voxels_to_camera_by_hand():
    K = torch.tensor([[[500.0, 0.0, 120.0], [0.0, 480.0, 130.0], [0.0, 0.0, 1.0]]])
    S, size, extent = 64, 256, 0.28
    vox = torch.tensor([[[10.0, 20.0, 63.0]]])  # x index, y index, z index (far end)
    ref = torch.tensor([0.6])
    # stride 4: pixel u = (10 + 0.5)·4 − 0.5 = 41.5, v = 81.5; z = 0.6 + 0.28
    u, v, z = 41.5, 81.5, 0.88
    expected = torch.tensor([(u - 120.0) / 500.0 * z, (v - 130.0) / 480.0 * z, z])
    out = voxels_to_camera(vox, K, ref, size, S, extent)
    torch.testing.assert_close(out[0, 0], expected)
    back = camera_to_voxels(out, K, ref, size, S, extent)
    torch.testing.assert_close(back, vox)


def test_heatmap_head_decodes_to_camera():
    head = HeatmapHead(in_ch=32, n_points=21, size=16, n_deconv=1, width=8)
    coords, logits = head(torch.randn(2, 32, 8, 8))
    assert coords.shape == (2, 21, 3)
    assert logits.shape == (2, 21, 16, 16, 16)
    assert coords.min() >= 0 and coords.max() <= 15


def test_root_depth_starts_at_focal_prior():
    head = RootDepthHead(16, crop_extent=0.25, image_size=256)
    K = torch.tensor([[[512.0, 0, 128], [0, 512.0, 128], [0, 0, 1]]])
    torch.testing.assert_close(head(torch.randn(1, 16, 8, 8), K), torch.tensor([0.5]))


def _hand(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 21, 3, generator=g) * 0.04 + torch.tensor([0.0, 0.0, 0.5])


ALL_JOINT_PAIRS = torch.combinations(torch.arange(21), 2)
ALL_BONE_PAIRS = torch.combinations(torch.arange(20), 2)


def test_ordinal_loss_zero_for_perfect_and_order_preserving_prediction():
    gt = _hand()
    views = sample_view_directions(20, generator=torch.Generator().manual_seed(1))
    assert views.shape == (21, 3)
    torch.testing.assert_close(views.norm(dim=-1), torch.ones(21))
    assert (views[1:, 2] >= 0).all() and views[0].tolist() == [0.0, 0.0, 1.0]
    assert ordinal_loss(gt, gt, views, ALL_JOINT_PAIRS, ALL_BONE_PAIRS) == 0
    # scaling about a point and translating keeps every depth order along every view
    moved = gt * 1.7 + torch.tensor([0.1, -0.2, 0.3])
    assert ordinal_loss(moved, gt, views, ALL_JOINT_PAIRS, ALL_BONE_PAIRS) == 0


def test_ordinal_loss_matches_the_reference_form_by_loops():
    """Joint pairs through log(1 + ·), bone pairs (cross products) without it, each a mean
    over batch x its pairs x views; computed here pair by pair."""
    g = torch.Generator().manual_seed(3)
    gt, pred = _hand(0), _hand(1)
    views = sample_view_directions(4, generator=g)
    jp, bp = sample_ordinal_pairs(21, generator=g)
    assert len(jp) == 210 // 3 and len(bp) == 190 // 3
    assert len(set(map(tuple, jp.tolist()))) == len(jp)
    parents = [0, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19]
    jt, bt = [], []
    for b in range(2):
        bones_p = [pred[b, k] - pred[b, parents[k]] for k in range(1, 21)]
        bones_g = [gt[b, k] - gt[b, parents[k]] for k in range(1, 21)]
        for v in views:
            for i, j in jp.tolist():
                s = torch.sign(torch.dot(gt[b, i] - gt[b, j], v))
                jt.append(math.log(1 + max(0.0, float(-s * torch.dot(pred[b, i] - pred[b, j], v)))))
            for i, j in bp.tolist():
                s = torch.sign(torch.dot(torch.linalg.cross(bones_g[i], bones_g[j]), v))
                d = torch.dot(torch.linalg.cross(bones_p[i], bones_p[j]), v)
                bt.append(max(0.0, float(-s * d)))
    expected = sum(jt) / len(jt) + sum(bt) / len(bt)
    assert ordinal_loss(pred, gt, views, jp, bp).item() == pytest.approx(expected, rel=1e-5)


def test_ordinal_loss_positive_for_depth_order_swap():
    gt = _hand()
    cam = torch.tensor([[0.0, 0.0, 1.0]])
    pred = gt.clone()
    # make joint 3 clearly in front of joint 8 in the prediction, behind it in the GT
    gt[:, 3, 2], gt[:, 8, 2] = 0.55, 0.45
    pred[:, 3, 2], pred[:, 8, 2] = 0.45, 0.55
    no_bones = torch.zeros(0, 2, dtype=torch.long)
    loss = ordinal_loss(pred, gt, cam, ALL_JOINT_PAIRS, no_bones)
    assert loss > 0
    # only pairs whose order flipped contribute: log(1 + |dz|), mean over pairs
    i, j = ALL_JOINT_PAIRS.T
    dp, dg = pred[:, i, 2] - pred[:, j, 2], gt[:, i, 2] - gt[:, j, 2]
    expected = torch.where(dp * dg < 0, torch.log1p(dp.abs()), torch.zeros_like(dp)).mean()
    torch.testing.assert_close(loss, expected)
