"""Double-sided filter: closed meshes pass; flipped duplicates and open sheets are rejected."""

import numpy as np
import trimesh

from gsdf_data.filter import FilterConfig, double_sided_check, flipped_duplicate_faces


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


def test_duplicated_flipped_faces_are_rejected():
    mesh = trimesh.creation.icosphere(3)
    doubled = trimesh.Trimesh(
        mesh.vertices, np.concatenate([mesh.faces, mesh.faces[:, ::-1]]), process=False
    )
    r = double_sided_check(doubled)
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
    r = double_sided_check(trimesh.Trimesh(mesh.vertices, faces, process=False))
    assert 0 < r.wrong_fraction < 0.02
    assert r.ok
