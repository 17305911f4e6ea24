"""Double-sided filter: the reference's rule (closed meshes pass whatever their winding, open
sheets are rejected) against its per-pixel loop, and the former winding rule."""

import numpy as np
import pytest
import trimesh

from gsdf_data.filter import (
    FilterConfig,
    double_sided_check,
    flipped_duplicate_faces,
    reference_counts,
    reference_views,
)


def test_closed_meshes_pass():
    for mesh in (
        trimesh.creation.icosphere(3),
        trimesh.creation.box(),
        trimesh.creation.torus(0.5, 0.2),
    ):
        r = double_sided_check(mesh)
        assert r.ok, r.reason
        assert r.wrong_fraction == 0.0
        assert r.bad_fraction == 0.0
        assert r.n_flipped_duplicates == 0


def test_flipped_duplicates_pass_the_reference_rule_and_fail_the_winding_rule():
    # seen from outside only, each of two coincident faces shows its viewer-facing normal
    # from one side: the reference keeps the mesh; the former rule counts them as bad
    mesh = trimesh.creation.icosphere(3)
    doubled = trimesh.Trimesh(
        mesh.vertices, np.concatenate([mesh.faces, mesh.faces[:, ::-1]]), process=False
    )
    assert double_sided_check(doubled).ok
    r = double_sided_check(doubled, FilterConfig(rule="winding"))
    assert not r.ok
    assert r.n_flipped_duplicates == 2 * len(mesh.faces)
    assert "double-sided" in r.reason


def test_flipped_duplicates_on_copied_vertices_are_found():
    mesh = trimesh.creation.box()
    n = len(mesh.vertices)
    # the flipped copy of two faces uses its own copy of the vertices, with rotated winding
    verts = np.concatenate([mesh.vertices, mesh.vertices])
    extra = mesh.faces[:2][:, [2, 1, 0]][:, [1, 2, 0]] + n
    faces = np.concatenate([mesh.faces, extra])
    mask = flipped_duplicate_faces(verts, faces)
    assert mask.sum() == 4
    assert mask[:2].all() and mask[-2:].all()
    # same winding duplicates are not flipped duplicates
    same = np.concatenate([mesh.faces, mesh.faces[:2][:, [1, 2, 0]]])
    assert flipped_duplicate_faces(mesh.vertices, same).sum() == 0


def test_open_sheet_is_rejected_and_thresholds_apply():
    sphere = trimesh.creation.icosphere(3)
    bowl = trimesh.Trimesh(sphere.vertices, sphere.faces[sphere.triangles_center[:, 2] < 0.0])
    r = double_sided_check(bowl)
    assert not r.ok and r.wrong_fraction > 0.2
    loose = double_sided_check(bowl, FilterConfig(max_wrong=1.0, max_bad=1.0))
    assert loose.ok


def test_few_flipped_triangles_stay_under_threshold():
    mesh = trimesh.creation.icosphere(3)
    faces = mesh.faces.copy()
    faces[:5] = faces[:5, ::-1]  # 5 of 1280 triangles wound the wrong way
    m = trimesh.Trimesh(mesh.vertices, faces, process=False)
    r = double_sided_check(m, FilterConfig(rule="winding"))
    assert 0 < r.wrong_fraction < 0.02
    assert r.ok
    assert double_sided_check(m).wrong_fraction == 0.0  # the reference ignores the winding


def _reference_loop(view, tri, side, n_tris):
    """The reference's per-pixel loop (DeepSDF ValidPointsAndTrisFromIm), written out."""
    state = [0] * n_tris  # 0 unseen, +1/-1 first side seen, "bad"
    first = [None] * n_tris
    wrong = 0
    for t, s in zip(tri, side, strict=True):
        if state[t] == 0:
            state[t], first[t] = 1, s
        elif state[t] == 1:
            if s != first[t]:
                state[t] = "bad"
                wrong += 1
        else:
            wrong += 1
    return wrong, np.array([x == "bad" for x in state])


def test_reference_counts_match_the_per_pixel_loop():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n_tris, n_views = 30, 12
        view, tri, side = [], [], []
        for v in range(n_views):
            seen = rng.choice(n_tris, rng.integers(1, 15), replace=False)
            flip = rng.random(n_tris) < 0.15  # the viewer's side of each triangle, this view
            for t in seen:
                k = rng.integers(1, 4)  # pixels of this triangle in this view
                view += [v] * k
                tri += [t] * k
                side += [bool(flip[t])] * k
        order = rng.permutation(len(tri))  # pixels of a view in any order, views in order
        order = order[np.argsort(np.asarray(view)[order], kind="stable")]
        v, t, sd = (np.asarray(x)[order] for x in (view, tri, side))
        wrong, bad = reference_counts(v, t, sd, n_tris)
        ref_wrong, ref_bad = _reference_loop(v, t, sd, n_tris)
        assert wrong == ref_wrong
        assert np.array_equal(bad, ref_bad)


def test_reference_views_are_deepsdf_fibonacci_points():
    v = reference_views(100)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    y0 = -1 + 0.01
    phi0 = np.pi * (3 - np.sqrt(5))
    r0 = np.sqrt(1 - y0**2)
    np.testing.assert_allclose(v[0], [np.cos(phi0) * r0, y0, np.sin(phi0) * r0])
    assert np.all(np.diff(v[:, 1]) > 0)


def test_reference_rule_ignores_winding_and_is_placement_free():
    fast = FilterConfig(resolution=48)  # the properties hold at any resolution
    rng = np.random.default_rng(1)
    mesh = trimesh.creation.icosphere(3)
    faces = mesh.faces.copy()
    pick = rng.choice(len(faces), len(faces) // 5, replace=False)
    faces[pick] = faces[pick, ::-1]  # closed, 20 % wound the other way
    for scale, shift in ((1.0, (0, 0, 0)), (0.075, (0.02, -0.03, 0.6))):  # origin, camera
        m = trimesh.Trimesh(mesh.vertices * scale + shift, faces, process=False)
        r = double_sided_check(m, fast)
        assert r.ok and r.wrong_fraction == 0.0 and r.bad_fraction == 0.0
        assert not double_sided_check(m, FilterConfig(resolution=48, rule="winding")).ok
    # an open sheet: every visible triangle is seen from both sides, at either placement
    bowl = mesh.faces[mesh.triangles_center[:, 2] < 0.0]
    for scale, shift in ((1.0, (0, 0, 0)), (0.075, (0.02, -0.03, 0.6))):
        r = double_sided_check((mesh.vertices * scale + shift, bowl), fast)
        assert not r.ok and r.bad_fraction > 0.9 and r.wrong_fraction > 0.2


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="filter rule"):
        double_sided_check(trimesh.creation.box(), FilterConfig(rule="nope"))


def test_low_poly_closed_meshes_in_the_camera_frame_pass():
    # 12 large triangles: one ray slipping through an edge would mark a triangle bad and make
    # its later observations wrong (8 % bad); a rasterizer never slips
    rng = np.random.default_rng(0)
    for k in range(4):
        box = trimesh.creation.box(rng.uniform(0.02, 0.1, 3))
        if k % 2:
            box.apply_transform(trimesh.transformations.random_rotation_matrix(rng.random(3)))
        box.apply_translation(np.array([0.0, 0.0, 0.5]) + rng.uniform(-0.1, 0.1, 3))
        r = double_sided_check(box)
        assert r.ok and r.wrong_fraction == 0.0 and r.bad_fraction == 0.0, (k, r)
