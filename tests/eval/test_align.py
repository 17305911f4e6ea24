"""Scale + translation ICP: recovers known transforms, matches a plain ICP, is seeded.

Every alignment test runs with the meshes at the origin and in the camera frame (`frame`):
an error that grows with the distance from the origin shows only there.
"""

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from gsdf_eval.align import _CachedNN, align_scale_translation, sample_surface
from gsdf_eval.metrics import chamfer_cm2
from gsdf_eval.nn import kd_tree, nn_distances
from gsdf_eval.run import EvalSettings, score_pair


def test_cached_neighbours_equal_fresh_queries():
    rng = np.random.default_rng(0)
    data = rng.uniform(size=(2000, 3))
    tree = kd_tree(data)
    x = rng.uniform(size=(500, 3))
    cache = _CachedNN(tree, len(x))
    for step in range(30):
        x = x * (1 + 0.002 * np.sin(step)) + 0.001 * rng.normal(size=3)
        idx = cache.update(x)
        _, fresh = cKDTree(data).query(x)
        np.testing.assert_array_equal(idx, fresh)
    assert cache.requeried < 30 * len(x)  # the cache did skip queries


def _moved(mesh, frame) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices + frame, mesh.faces, process=False)


def test_scaled_translated_copy_is_aligned_back(hand_mesh, frame):
    hand_mesh = _moved(hand_mesh, frame)
    s_true, t_true = 1.15, np.array([0.03, -0.02, 0.05])
    pred = trimesh.Trimesh(hand_mesh.vertices * s_true + t_true, hand_mesh.faces, process=False)
    rng = np.random.default_rng(0)
    src = sample_surface(pred, 30_000, rng)
    dst = sample_surface(hand_mesh, 30_000, rng)
    res = align_scale_translation(src, dst)
    # pred -> GT is x / s_true - t_true / s_true
    assert res.scale == pytest.approx(1 / s_true, rel=0.01)
    np.testing.assert_allclose(
        res.translation, -t_true / s_true, atol=0.01 * np.linalg.norm(t_true)
    )
    assert res.converged and res.iterations <= 100
    # Chamfer at the sampling floor: two independent samplings of the same surface
    floor = chamfer_cm2(*nn_distances(sample_surface(hand_mesh, 30_000, rng), dst))
    assert chamfer_cm2(res.dist_src, res.dist_dst) < 1.3 * floor


def _plain_icp(src, dst, iters=200):
    """Reference: the textbook symmetric ICP, every neighbour queried every iteration."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s = np.sqrt(((dst - mu_d) ** 2).sum(1).mean() / ((src - mu_s) ** 2).sum(1).mean())
    t = mu_d - s * mu_s
    tree = cKDTree(dst)
    for _ in range(iters):
        i_f = tree.query(src * s + t)[1]
        i_b = cKDTree(src * s + t).query(dst)[1]
        u = np.concatenate([src, src[i_b]])
        w = np.concatenate([dst[i_f], dst])
        uc = u - u.mean(0)
        s_new = (uc * (w - w.mean(0))).sum() / (uc * uc).sum()
        t_new = w.mean(0) - s_new * u.mean(0)
        if abs(s_new - s) < 1e-12 and np.abs(t_new - t).max() < 1e-12:
            break
        s, t = s_new, t_new
    return s, t


def _pair_points(hand_mesh, n, seed, frame=np.zeros(3)):
    rng = np.random.default_rng(seed)
    hand_mesh = _moved(hand_mesh, frame)
    pred = trimesh.Trimesh(hand_mesh.vertices * 0.9 + [0.01, 0.0, -0.01], hand_mesh.faces)
    src = sample_surface(pred, n, rng) + rng.normal(0, 0.0005, (n, 3))
    return src, sample_surface(hand_mesh, n, rng)


def test_cached_icp_is_textbook_icp(hand_mesh, frame):
    src, dst = _pair_points(hand_mesh, 1500, 4, frame)
    s_ref, t_ref = _plain_icp(src, dst, iters=300)
    res = align_scale_translation(src, dst, max_iter=300, tol=0.0, accelerate=False)
    assert res.converged
    assert res.scale == pytest.approx(s_ref, rel=1e-9)
    np.testing.assert_allclose(res.translation, t_ref, atol=1e-9)


def _placeholder(center, radius=0.002):
    """What reconstruction writes for an empty surface: a 2 mm, 80-face icosphere."""
    s = trimesh.creation.icosphere(subdivisions=1, radius=radius)
    return trimesh.Trimesh(s.vertices + center, s.faces, process=False)


def test_cached_icp_is_textbook_icp_on_a_placeholder(hand_mesh, frame):
    """A degenerate prediction (equidistant neighbours everywhere) changes nothing."""
    hand_mesh = _moved(hand_mesh, frame)
    rng = np.random.default_rng(3)
    src = sample_surface(_placeholder(hand_mesh.vertices[0]), 1500, rng)
    dst = sample_surface(hand_mesh, 1500, rng)
    s_ref, t_ref = _plain_icp(src, dst, iters=300)
    res = align_scale_translation(src, dst, max_iter=300, tol=0.0, accelerate=False)
    assert res.scale == pytest.approx(s_ref, rel=1e-9)
    np.testing.assert_allclose(res.translation, t_ref, atol=1e-9)
    aligned = res.apply(src)
    ref_src, ref_dst = cKDTree(dst).query(aligned)[0], cKDTree(aligned).query(dst)[0]
    np.testing.assert_allclose(res.dist_src, ref_src, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.dist_dst, ref_dst, rtol=0, atol=1e-12)


def test_accelerated_icp_reaches_the_same_alignment(hand_mesh, frame):
    src, dst = _pair_points(hand_mesh, 6000, 5, frame)
    s_ref, t_ref = _plain_icp(src, dst, iters=300)
    res = align_scale_translation(src, dst)
    assert res.scale == pytest.approx(s_ref, rel=5e-4)
    # where the prediction lands (in the camera frame a translation absorbs the scale
    # difference times the distance from the origin, so compare the aligned points)
    np.testing.assert_allclose(res.apply(src), src * s_ref + t_ref, rtol=0, atol=5e-5)


@pytest.mark.parametrize("protocol", ["gsdf", "converged"])
def test_seed_makes_pair_deterministic(hand_mesh, frame, protocol):
    hand_mesh = _moved(hand_mesh, frame)
    pred = trimesh.Trimesh(hand_mesh.vertices * 1.02 + 0.003, hand_mesh.faces, process=False)
    settings = EvalSettings(n_points=5000, protocol=protocol)
    a = score_pair(pred, hand_mesh, settings=settings, seed=7)
    b = score_pair(pred, hand_mesh, settings=settings, seed=7)
    c = score_pair(pred, hand_mesh, settings=settings, seed=8)
    assert a == b
    assert a["hand_cd_cm2"] != c["hand_cd_cm2"]
    assert a["obj_cd_cm2"] is None and a["contact"] is None


def test_coarse_to_fine_lands_where_full_resolution_icp_lands(hand_mesh, frame):
    """The coarse pass only changes where the full-resolution pass starts from."""
    src, dst = _pair_points(hand_mesh, 8000, 6, frame)
    full = align_scale_translation(src, dst, coarse=0, tol=0.0)
    c2f = align_scale_translation(src, dst, coarse=1000)
    assert c2f.scale == pytest.approx(full.scale, rel=2e-4)
    np.testing.assert_allclose(c2f.apply(src), full.apply(src), rtol=0, atol=1e-4)  # 0.1 mm
    assert abs(c2f.dist_src.mean() - full.dist_src.mean()) < 2e-6


@pytest.mark.parametrize("z", [0.5, 0.6, 0.7, 0.8])
def test_scaled_shifted_hand_in_the_camera_frame_is_aligned_back(hand_mesh, z):
    """Regression: the accelerated jump subtracted the scale change times the source
    centroid k² instead of k times, an error proportional to the distance from the origin;
    a hand 0.5-0.8 m in front of the camera, predicted 1.08x too large about the camera and
    shifted, then ended up to centimetres off (checked on each depth and two shifts)."""
    frame = np.array([0.03, -0.02, z]) - hand_mesh.vertices.mean(0)
    gt = _moved(hand_mesh, frame)
    for shift in ([0.01, -0.005, 0.012], [0.02, 0.01, -0.03]):
        pred = trimesh.Trimesh(gt.vertices * 1.08 + shift, gt.faces, process=False)
        rng = np.random.default_rng(1)
        src, dst = sample_surface(pred, 30_000, rng), sample_surface(gt, 30_000, rng)
        res = align_scale_translation(src, dst)
        assert res.scale == pytest.approx(1 / 1.08, rel=2e-3), (z, shift)
        moved = res.apply(pred.vertices) - gt.vertices  # per-vertex residual displacement
        assert np.abs(moved.mean(0)).max() < 2e-4, (z, shift)  # 0.2 mm
        assert chamfer_cm2(res.dist_src, res.dist_dst) < 0.02, (z, shift)
