"""Inside test, distances, penetration depth and intersection volume against exact references."""

import numpy as np
import pytest
import trimesh

from gsdf_eval import contact
from gsdf_eval.contact import (
    contact_metrics,
    fast_winding_number,
    point_triangle_sq_distance,
    surface_distance,
    voxel_centres,
)


def winding_number_exact(vertices, faces, points):
    """Reference: the exact generalised winding number, Σ signed solid angles / 4π (Van
    Oosterom & Strackee), O(points × faces)."""
    tri = np.asarray(vertices, dtype=np.float64)[faces]
    out = np.empty(len(points))
    for i, p in enumerate(points):
        a, b, c = (tri[:, k] - p for k in range(3))
        la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
        det = np.einsum("ij,ij->i", a, np.cross(b, c))
        dot = lambda x, y: np.einsum("ij,ij->i", x, y)  # noqa: E731
        den = la * lb * lc + dot(a, b) * lc + dot(b, c) * la + dot(c, a) * lb
        out[i] = 2.0 * np.arctan2(det, den).sum() / (4.0 * np.pi)
    return out


def sphere(radius, center=(0.0, 0.0, 0.0), subdivisions=4):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    mesh.apply_translation(np.asarray(center, dtype=float))
    return mesh


def box(extents, center=(0.0, 0.0, 0.0)):
    mesh = trimesh.creation.box(extents=extents)
    mesh.apply_translation(np.asarray(center, dtype=float))
    return mesh


def _open_sphere(radius=0.04):
    """A sphere with a cap cut off above z = 0.8 r (not watertight)."""
    m = sphere(radius)
    keep = m.triangles_center[:, 2] < 0.8 * radius
    return trimesh.Trimesh(m.vertices, m.faces[keep], process=False)


@pytest.mark.parametrize("make", [lambda: sphere(0.04, subdivisions=3), _open_sphere])
def test_fast_winding_number_matches_exact(make):
    mesh = make()
    points = np.random.default_rng(0).uniform(-0.06, 0.06, (400, 3))
    exact = winding_number_exact(mesh.vertices, mesh.faces, points)
    fast = fast_winding_number(mesh.vertices, mesh.faces, points)
    assert np.abs(fast - exact).max() < 0.08  # second-order far field
    clear = np.abs(exact - 0.5) > 0.05
    np.testing.assert_array_equal((fast > 0.5)[clear], (exact > 0.5)[clear])


def test_inside_closed_and_open_sphere():
    r = 0.04
    points = np.random.default_rng(1).uniform(-0.06, 0.06, (4000, 3))
    dist = np.linalg.norm(points, axis=1)
    truth = dist < r
    clear = np.abs(dist - r) > 0.001  # facets of the icosphere are within 0.1 mm of the sphere
    closed = fast_winding_number(sphere(r).vertices, sphere(r).faces, points) > 0.5
    np.testing.assert_array_equal(closed[clear], truth[clear])
    # open mesh: away from the hole (z < 0.5 r) inside/outside is still right
    m = _open_sphere(r)
    opened = fast_winding_number(m.vertices, m.faces, points) > 0.5
    ok = clear & (points[:, 2] < 0.5 * r)
    np.testing.assert_array_equal(opened[ok], truth[ok])
    assert not m.is_watertight


def test_surface_distance_matches_trimesh():
    mesh = sphere(0.03, subdivisions=2)
    points = np.random.default_rng(2).uniform(-0.05, 0.05, (200, 3))
    _, ref, _ = trimesh.proximity.closest_point(mesh, points)
    np.testing.assert_allclose(surface_distance(mesh.vertices, mesh.faces, points), ref, atol=1e-9)


def test_surface_distance_exact_in_camera_frame(monkeypatch):
    """Points in, on and around a 20k-face sphere at z = 0.6 m, from the surface to 3 cm deep:
    the near-face answer where it is proven, libigl's where not; libigl's exact values either
    way (trimesh.proximity.closest_point is up to 9 µm too far on some of these points)."""
    import igl

    mesh = sphere(0.034, subdivisions=5)
    mesh.apply_translation([0.02, -0.01, 0.6])
    rng = np.random.default_rng(5)
    direction = rng.normal(size=(400, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radius = 0.034 + np.concatenate([rng.uniform(-0.03, 0.0, 300), rng.uniform(0.0, 0.01, 100)])
    points = mesh.centroid + direction * radius[:, None]
    points[:5] = mesh.vertices[:5]  # exactly on the surface
    fallback = []
    real = contact._libigl_distance
    monkeypatch.setattr(
        contact, "_libigl_distance", lambda v, f, q: fallback.append(len(q)) or real(v, f, q)
    )
    ours = surface_distance(mesh.vertices, mesh.faces, points)
    fallback_points = sum(fallback)
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces, dtype=np.int64)
    ref = np.sqrt(igl.point_mesh_squared_distance(points, v, f)[0])
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-15)
    assert (ours[:5] == 0).all()
    assert 0 < fallback_points < 200  # both paths ran: deep points need libigl's tree


def test_point_triangle_distance_brute_force():
    """Against the nearest of a dense barycentric grid on each triangle (degenerate ones too:
    collinear corners, a repeated corner, a single point)."""
    rng = np.random.default_rng(6)
    tri = rng.normal(size=(60, 3, 3)) * 0.01 + [0.0, 0.0, 0.6]
    tri[0, 2] = 0.3 * tri[0, 0] + 0.7 * tri[0, 1]  # collinear
    tri[1, 2] = tri[1, 1]  # a repeated corner
    tri[2, 1:] = tri[2, 0]  # a point
    points = tri.mean(axis=1) + rng.normal(size=(60, 3)) * 0.01
    m = 301
    i, j = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    keep = i + j < m
    w1, w2 = i[keep] / (m - 1), j[keep] / (m - 1)
    grid = (
        tri[:, None, 0] * (1 - w1 - w2)[None, :, None]
        + tri[:, None, 1] * w1[None, :, None]
        + tri[:, None, 2] * w2[None, :, None]
    )
    brute = np.linalg.norm(grid - points[:, None], axis=2).min(axis=1)
    ours = np.sqrt(point_triangle_sq_distance(points, tri[:, 0], tri[:, 1], tri[:, 2]))
    step = np.linalg.norm(tri - tri[:, [1, 2, 0]], axis=2).max(axis=1) / (m - 1)
    assert (ours <= brute + 1e-12).all()  # never above a point of the triangle
    assert (brute - ours <= step).all()  # and within the grid's spacing of the nearest one
    # closed forms: straight above the interior, and beyond a corner
    a, b, c = np.array([[0.0, 0, 0.6]]), np.array([[0.01, 0, 0.6]]), np.array([[0.0, 0.01, 0.6]])
    above = np.array([[0.002, 0.003, 0.6 + 0.004]])
    assert np.sqrt(point_triangle_sq_distance(above, a, b, c))[0] == pytest.approx(0.004, abs=1e-15)
    beyond = np.array([[0.013, -0.004, 0.6]])
    assert np.sqrt(point_triangle_sq_distance(beyond, a, b, c))[0] == pytest.approx(
        0.005, abs=1e-15
    )


@pytest.mark.parametrize("depth", [0.002, 0.007, 0.015])
@pytest.mark.parametrize("open_box", [False, True])
def test_sphere_pushed_into_box_gives_depth(depth, open_box):
    r = 0.02
    obj = box([0.1, 0.1, 0.1])  # top face at z = 0.05
    if open_box:  # remove the bottom face: the object is no longer watertight
        keep = obj.triangles_center[:, 2] > -0.049
        obj = trimesh.Trimesh(obj.vertices, obj.faces[keep], process=False)
    hand = sphere(r, center=(0.0, 0.0, 0.05 + r - depth), subdivisions=4)
    # rotate so a vertex sits at the sphere's lowest point
    lowest = hand.vertices[np.argmin(hand.vertices[:, 2])]
    assert lowest[2] == pytest.approx(0.05 - depth, abs=2e-4)
    res = contact_metrics(hand, obj)
    assert res["contact"] is True
    assert res["penetration_cm"] == pytest.approx(depth * 100, abs=0.05)  # ±0.5 mm


def test_no_contact_gives_zeros():
    res = contact_metrics(sphere(0.02, center=(0, 0, 0.08)), box([0.1, 0.1, 0.1]))
    assert res == {"penetration_cm": 0.0, "intersection_cm3": 0.0, "contact": False}


def test_intersection_volume_of_boxes_is_exact():
    # overlap 2 x 3 x 1 cm = 6 cm³, a whole number of 0.5 cm voxels
    a = box([0.04, 0.05, 0.03], center=(0.0, 0.0, 0.0))
    b = box([0.04, 0.05, 0.03], center=(0.02, 0.02, 0.02))
    res = contact_metrics(a, b)
    assert res["contact"] is True
    assert res["intersection_cm3"] == pytest.approx(6.0, abs=1e-6)


def test_intersection_volume_of_spheres_matches_closed_form():
    r, d = 0.03, 0.035  # equal spheres, centres d apart: lens volume π(4r + d)(2r − d)² / 12
    a = sphere(r, subdivisions=5)
    b = sphere(r, center=(d, 0.0, 0.0), subdivisions=5)
    res = contact_metrics(a, b)
    closed_form = np.pi * (4 * r + d) * (2 * r - d) ** 2 / 12 * 1e6  # cm³
    # the same voxels, counted analytically: the discretisation alone
    lo = np.array([d - r, -r, -r])
    hi = np.array([r, r, r])
    c = voxel_centres(lo, hi, 0.005)
    inside = (np.linalg.norm(c, axis=1) < r) & (np.linalg.norm(c - [d, 0, 0], axis=1) < r)
    analytic_voxels = inside.sum() * 0.125
    assert res["intersection_cm3"] == pytest.approx(analytic_voxels, abs=2 * 0.125)
    assert res["intersection_cm3"] == pytest.approx(closed_form, rel=0.15)
