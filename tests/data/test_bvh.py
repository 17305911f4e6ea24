"""The BVH closest-point query against brute force (distances, closest faces, features) and
its pseudo-normal sign against winding numbers."""

import numpy as np
import pytest
import trimesh

from gsdf_data.bvh import BVH
from gsdf_data.sdf import brute_force_distance, brute_force_winding_number, morton_order


def _points(rng, mesh, n):
    size = float(np.linalg.norm(mesh.extents))
    near = mesh.sample(n, seed=int(rng.integers(1 << 30))) + rng.normal(0.0, 0.01 * size, (n, 3))
    far = rng.uniform(-1.5 * size, 1.5 * size, (n, 3)) + mesh.centroid
    return np.vstack([near, far])


@pytest.mark.parametrize("leaf_size", [1, 4, 9])
@pytest.mark.parametrize("ordered", [True, False])
def test_distances_and_faces_match_brute_force(leaf_size, ordered):
    rng = np.random.default_rng(0)
    mesh = trimesh.creation.torus(0.5, 0.15, major_sections=32, minor_sections=12)
    faces = np.vstack([mesh.faces, [[0, 0, 1], [2, 3, 2], [4, 4, 4]]])  # degenerate faces
    p = _points(rng, mesh, 1500)
    if ordered:
        p = p[morton_order(p)]
    bvh = BVH.build(mesh.vertices, faces, leaf_size=leaf_size)
    d, face, inside, sure = bvh.query(p)
    truth = brute_force_distance(mesh.vertices, faces, p)
    np.testing.assert_allclose(d, truth, rtol=0, atol=1e-12)
    assert inside is None and sure is None
    # the reported face is at that distance
    at_face = [
        brute_force_distance(mesh.vertices, faces[f : f + 1], q[None])[0]
        for f, q in zip(face[:300], p[:300], strict=True)
    ]
    np.testing.assert_allclose(at_face, truth[:300], atol=1e-12)


def test_coincident_and_single_triangles():
    tri = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    p = np.array([[0.2, 0.2, 1.0], [2.0, 0, 0], [-1.0, -1, 0], [0.5, 0.5, 0.0]])
    d = BVH.build(tri, [[0, 1, 2]]).query(p)[0]
    np.testing.assert_allclose(d, [1.0, 1.0, np.sqrt(2.0), 0.0], atol=1e-15)
    # many copies of the same triangle: centroids coincide, the build must still split
    copies = np.tile([0, 1, 2], (50, 1))
    d2 = BVH.build(tri, copies).query(p)[0]
    np.testing.assert_allclose(d2, d, atol=1e-15)
    assert BVH.build(tri, [[0, 1, 2]]).query(np.zeros((0, 3)))[0].shape == (0,)
    with pytest.raises(ValueError, match="faces"):
        BVH.build(tri, np.zeros((0, 3), int))


@pytest.mark.parametrize(
    "mesh",
    [
        trimesh.creation.icosphere(2, radius=0.5),
        trimesh.creation.box((0.6, 0.3, 0.2)),  # sharp edges and corners
        trimesh.creation.torus(0.5, 0.15, major_sections=24, minor_sections=10),
    ],
    ids=["sphere", "box", "torus"],
)
def test_pseudonormal_sign_matches_the_winding_number(mesh):
    rng = np.random.default_rng(2)
    p = _points(rng, mesh, 2000)
    p = np.vstack([p, mesh.vertices * 1.001, mesh.vertices * 0.999])  # at the corners
    d, _, inside, sure = BVH.build(mesh.vertices, mesh.faces, pseudonormal_sign=True).query(p)
    truth = brute_force_winding_number(mesh.vertices, mesh.faces, p) > 0.5
    ok = d > 1e-9  # on the surface either answer is right
    assert np.array_equal(inside[ok], truth[ok])
    assert sure.all()  # closed and consistently oriented everywhere


def test_sure_features_flag_borders_and_flipped_faces():
    from gsdf_data.bvh import EDGE_AB, EDGE_BC, EDGE_CA, FACE, _sure_features

    ball = trimesh.creation.icosphere(2)
    f = np.asarray(ball.faces)
    assert _sure_features(ball.vertices, f).all()
    # a hole: the faces around it lose the edges on its border and those edges' vertices
    opened = _sure_features(ball.vertices, f[1:])
    border = set(map(tuple, np.sort(np.stack([f[0], np.roll(f[0], -1)], axis=1), axis=1)))
    for j, face in enumerate(f[1:]):
        for k, slot in enumerate((EDGE_AB, EDGE_BC, EDGE_CA)):
            e = tuple(sorted((face[k], face[(k + 1) % 3])))
            assert opened[j, slot] == (e not in border)
        for k in range(3):
            assert opened[j, 1 + k] == (face[k] not in f[0])  # VERT_A.. = 1..3
    assert opened[:, FACE].all()
    # a flipped face: its three edges run the same way as their neighbours'
    flipped = f.copy()
    flipped[5] = flipped[5, ::-1]
    sure = _sure_features(ball.vertices, flipped)
    assert not sure[5, [EDGE_AB, EDGE_BC, EDGE_CA]].any() and sure[5, FACE]


def test_pseudonormal_votes_with_the_first_ray_on_open_meshes():
    """An open mesh: the vote with the pseudo-normal beside the first ray answers like the
    ray vote alone (against the closed original's winding number) and casts fewer rays."""
    from gsdf_data.sdf import MeshSDF

    rng = np.random.default_rng(4)
    closed = trimesh.creation.icosphere(3, radius=0.5)
    keep = np.ones(len(closed.faces), bool)
    keep[np.argsort(np.linalg.norm(closed.triangles_center - closed.vertices[0], axis=1))[:12]] = 0
    opened = trimesh.Trimesh(closed.vertices, closed.faces[keep], process=False)
    p = _points(rng, opened, 3000)
    truth = brute_force_winding_number(closed.vertices, closed.faces, p) > 0.5
    counted = []
    with_pn = MeshSDF(opened.vertices, opened.faces)
    rays_only = MeshSDF(opened.vertices, opened.faces)
    rays_only._pn_votes = False  # the rays alone, as the bench compares them
    assert with_pn._pn_votes and not rays_only._pn_votes
    for sdf in (with_pn, rays_only):
        odd = sdf._odd
        sdf._odd = lambda q, dirs, odd=odd: counted.append(len(q) * len(dirs)) or odd(q, dirs)
        ins = sdf.signed_distance(p) < 0
        counted.append(None)
        far = np.abs(np.linalg.norm(p, axis=1) - 0.5) > 0.01  # facets sit inside the sphere
        assert np.mean(ins[far] != truth[far]) < 0.002
    split = counted.index(None)
    assert sum(counted[:split]) < 0.6 * sum(counted[split + 1 : -1])
