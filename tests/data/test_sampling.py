"""40k-point SDF sampling: distribution, quotas and top-up, exact SDFs, determinism."""

import numpy as np
import pytest
import trimesh

from gsdf_data.sampling import SamplingConfig, SamplingError, sample_points, sample_sdf_points
from gsdf_data.sdf import brute_force_distance, brute_force_winding_number


def _pair(obj_size=0.08):
    hand = trimesh.creation.capsule(height=0.08, radius=0.012, count=[12, 12])
    hand.apply_translation([0.0, 0.0, 0.5])
    obj = trimesh.creation.icosphere(2, radius=obj_size)
    obj.apply_translation([0.05, 0.0, 0.5])
    return hand, obj


def test_full_size_sample_quotas_and_layout():
    hand, obj = _pair()
    s = sample_sdf_points(hand, obj, n=40000, sample_id="a", seed=0)
    assert s["points"].shape == (40000, 3) and s["points"].dtype == np.float32
    assert np.abs(s["points"]).max() <= 1.0
    for k in ("sdf_hand", "sdf_obj"):
        assert s[k].shape == (40000,)
        assert (s[k] < 0).sum() >= 500 and (s[k] >= 0).sum() >= 500
    # most points are near a surface: the two noise scales of the reference
    near = np.minimum(np.abs(s["sdf_hand"]), np.abs(s["sdf_obj"]))
    assert np.mean(near < 0.05) > 0.6
    # normalisation: union of both meshes inside radius 1/1.03
    verts = np.concatenate([hand.vertices, obj.vertices])
    u = (verts - s["norm_offset"]) / s["norm_scale"]
    assert np.linalg.norm(u, axis=1).max() == pytest.approx(1 / 1.03, rel=1e-5)


def test_sdf_values_are_exact_and_signed():
    hand, obj = _pair()
    s = sample_points([hand, obj], SamplingConfig(n=3000), sample_id="b")
    p = s.norm.to_camera(s.points[::10])
    for j, mesh in enumerate((hand, obj)):
        d = brute_force_distance(mesh.vertices, mesh.faces, p) / s.norm.scale
        np.testing.assert_allclose(np.abs(s.sdf[::10, j]), d, atol=2e-5)
        inside = brute_force_winding_number(mesh.vertices, mesh.faces, p) > 0.5
        assert np.array_equal(s.sdf[::10, j] < 0, inside)


def test_object_model_frame_gives_the_same_samples():
    """An object posed by a known similarity: querying in its model frame changes nothing."""
    hand, _ = _pair()
    model = trimesh.creation.box((1.0, 0.5, 0.3))
    frame = trimesh.transformations.rotation_matrix(0.7, [1.0, 1.0, 0.2])
    frame[:3, :3] *= 0.1
    frame[:3, 3] = [0.05, 0.0, 0.5]
    obj = model.copy().apply_transform(frame)
    a = sample_points([hand, obj], SamplingConfig(n=3000), sample_id="f")
    b = sample_points([hand, obj], SamplingConfig(n=3000), sample_id="f", frames=[None, frame])
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_allclose(a.sdf, b.sdf, atol=1e-6)
    assert np.array_equal(a.sdf < 0, b.sdf < 0)
    # a frame that is not a similarity (a sheared "rotation") is ignored, not an error
    sheared = frame.copy()
    sheared[0, 1] += 0.01
    c = sample_points([hand, obj], SamplingConfig(n=3000), sample_id="f", frames=[None, sheared])
    np.testing.assert_array_equal(a.sdf, c.sdf)


def test_deterministic_per_id_and_seed():
    hand, obj = _pair()
    cfg = SamplingConfig(n=2000, min_per_side=50)
    a = sample_points([hand, obj], cfg, sample_id="x", seed=1)
    b = sample_points([hand, obj], cfg, sample_id="x", seed=1)
    c = sample_points([hand, obj], cfg, sample_id="y", seed=1)
    d = sample_points([hand, obj], cfg, sample_id="x", seed=2)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.sdf, b.sdf)
    assert not np.array_equal(a.points, c.points)
    assert not np.array_equal(a.points, d.points)


def test_top_up_gives_a_tiny_mesh_its_inside_points():
    hand, obj = _pair(obj_size=0.3)  # hand tiny next to the object
    cfg = SamplingConfig(n=4000, min_per_side=500, mesh_fractions=None)  # area-weighted
    s = sample_points([hand, obj], cfg, sample_id="t")
    assert len(s.points) == 4000
    assert (s.sdf[:, 0] < 0).sum() >= 500
    assert (s.sdf[:, 1] >= 0).sum() >= 500
    # the topped-up points carry correct SDFs too
    p = s.norm.to_camera(s.points[s.sdf[:, 0] < 0][:200])
    assert (brute_force_winding_number(hand.vertices, hand.faces, p) > 0.5).all()


def test_impossible_quota_raises():
    hand, obj = _pair()
    with pytest.raises(SamplingError, match="need"):
        sample_points([hand, obj], SamplingConfig(n=1000, min_per_side=600), sample_id="z")
