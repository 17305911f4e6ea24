"""Double-sided triangle filter: rejects meshes whose inside/outside is ill defined.

The reference (DeepSDF's PreprocessMesh as Grasping Field and gSDF use it) renders the mesh
orthographically from 100 directions on a Fibonacci sphere (radius 1.1 of the unit sphere
the mesh is scaled into, 400x400 pixels); each pixel gives a triangle id and that triangle's
normal turned toward the viewer (so the winding plays no part; pixels seen edge-on,
|cos| < 0.001, give nothing). A triangle's first observation fixes its side; an observation
from the other side marks it *bad* and counts as *wrong*, and so does every later
observation of a bad triangle. The mesh is rejected when wrong / observations > 2 % or
bad / triangles > 5 %.

``rule="reference"`` (default) computes exactly that, looking by ray casting (open3d BVH)
instead of rendering: no OpenGL context, and the first hit of a ray is the pixel's
triangle. Since every pixel of one orthographic view sees a triangle from the same side,
the count does not depend on the order of pixels within a view, only on the order of the
views, which are the reference's. ``resolution`` sets the rays per view side; the bench
measures how the verdict depends on it against 400x400 (``bench/bench_sdf.py``).

``rule="winding"`` (our former rule, an option): an observation of a triangle's back side,
by its winding, is wrong; a triangle seen from both sides is bad; faces duplicated with
opposite winding are found topologically and counted as bad (ray casting always reports
the same one of two coincident triangles). It also rejects closed meshes that are wound
inconsistently, which the reference accepts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FilterConfig:
    """n_views: view directions. resolution: rays per view side (orthographic grid over the
    mesh's bounding sphere). max_wrong: largest accepted share of wrong observations.
    max_bad: largest accepted share of bad triangles. rule: "reference" or "winding" (see
    the module docstring)."""

    n_views: int = 100
    # 128 rays a side: the smallest of 32-256 whose verdict agreed with 400x400 on every mesh
    # of the bench's set (32 and 64 pass meshes with 0.5-1 % holes that 400 rejects)
    resolution: int = 128
    max_wrong: float = 0.02
    max_bad: float = 0.05
    rule: str = "reference"


@dataclass(frozen=True)
class FilterResult:
    """ok: the mesh passes. wrong_fraction: back-side observations / observations.
    bad_fraction: bad triangles / triangles. n_flipped_duplicates: faces with a duplicate of
    opposite winding. reason: why it was rejected ("" when ok)."""

    ok: bool
    wrong_fraction: float
    bad_fraction: float
    n_observations: int
    n_flipped_duplicates: int
    reason: str = ""


RULES = ("reference", "winding")


def reference_views(n: int) -> np.ndarray:
    """(n,3) unit view points in the reference's order (DeepSDF ``EquiDistPointsOnSphere``:
    a Fibonacci sphere about the y axis)."""
    i = np.arange(n, dtype=np.float64)
    off = 2.0 / n
    y = i * off - 1.0 + off / 2.0
    r = np.sqrt(np.clip(1.0 - y * y, 0.0, None))
    phi = (i + 1.0) * np.pi * (3.0 - np.sqrt(5.0))
    return np.stack([np.cos(phi) * r, y, np.sin(phi) * r], axis=1)


def reference_counts(view: np.ndarray, tri: np.ndarray, side: np.ndarray, n_tris: int):
    """The reference's wrong observations and bad triangles from observations in view order.

    view (N,) non-decreasing view index, tri (N,) triangle id, side (N,) bool: which side of
    the triangle's plane the viewer is on. A triangle's first view fixes its side; from the
    first view that sees it from the other side on, every observation of it is wrong (all
    pixels of one orthographic view see it from the same side). Returns (wrong count,
    bad (n_tris,) bool)."""
    if len(tri) == 0:
        return 0, np.zeros(n_tris, dtype=bool)
    uniq, first = np.unique(tri, return_index=True)
    first_side = np.zeros(n_tris, dtype=bool)
    first_side[uniq] = side[first]
    other = side != first_side[tri]
    flip_view = np.full(n_tris, np.iinfo(np.int64).max)
    np.minimum.at(flip_view, tri[other], view[other])
    wrong = int((view >= flip_view[tri]).sum())
    return wrong, flip_view < np.iinfo(np.int64).max


def _fibonacci(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    phi = i * np.pi * (3.0 - np.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def flipped_duplicate_faces(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Mask (F,) of faces that have a twin on the same three points with opposite winding.

    Vertices are matched by position (rounded to 1e-9 of the mesh size), so a duplicate
    built on copied vertices is found too.
    """
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    size = float(np.ptp(verts, axis=0).max()) or 1.0
    key = np.ascontiguousarray(np.round(verts / (size * 1e-9)).astype(np.int64))
    _, vid = np.unique(key.view(np.dtype((np.void, 24))).reshape(-1), return_inverse=True)
    f = vid.reshape(-1)[faces]
    s = np.sort(f, axis=1)
    # winding parity: even permutations of the sorted triple keep the orientation
    rot = f[:, 0] == s[:, 0]
    parity = np.where(
        rot,
        f[:, 1] == s[:, 1],
        np.where(f[:, 1] == s[:, 0], f[:, 2] == s[:, 1], f[:, 0] == s[:, 1]),
    )
    nv = np.int64(f.max() + 1)
    _, tri_id = np.unique((s[:, 0] * nv + s[:, 1]) * nv + s[:, 2], return_inverse=True)
    tri_id = tri_id.reshape(-1)
    m = tri_id.max() + 1
    has = np.zeros((m, 2), dtype=bool)
    has[tri_id, parity.astype(int)] = True
    both = has[:, 0] & has[:, 1]
    return both[tri_id]


def _cast(scene, rays: np.ndarray, nf: int) -> tuple[np.ndarray, np.ndarray]:
    """Triangle id (nf for a miss) and distance of each ray's first hit, ~2M rays at a time."""
    import open3d as o3d

    fid = np.empty(len(rays), dtype=np.int64)
    t = np.empty(len(rays), dtype=np.float64)
    for s in range(0, len(rays), 2_000_000):
        hit = scene.cast_rays(o3d.core.Tensor(rays[s : s + 2_000_000]), nthreads=1)
        f = hit["primitive_ids"].numpy().astype(np.int64)
        th = hit["t_hit"].numpy().astype(np.float64)
        f[~np.isfinite(th)] = nf
        fid[s : s + 2_000_000], t[s : s + 2_000_000] = f, th
    return fid, t


def _seal_cracks(scene, rays, fid, t_hit, fn, axes, res, radius, nf) -> np.ndarray:
    """Ray casting in float32 is not watertight: about one ray in a million slips through
    the edge between two triangles and hits the far side of the mesh from within. A
    rasterizer never does, and under the reference's rule one such glimpse marks a large
    triangle bad and makes all its later observations wrong (a 12-triangle box rejected).
    The rays that see a triangle from the side opposite to another observation of it are
    cast again, shifted by 1/1000 of a pixel in two directions; the nearest of the three
    hits is the pixel's, as a depth buffer would keep it, and none when both shifted rays
    miss (a graze along the outline)."""
    valid = fid < nf
    side = np.zeros(len(fid), dtype=np.int8)
    dn = np.einsum("ij,ij->i", fn[np.minimum(fid, nf - 1)], rays[:, 3:].astype(np.float64))
    side[valid] = np.where(dn[valid] < 0.0, 1, 2)
    seen = np.zeros((nf + 1, 3), dtype=bool)
    seen[fid, side] = True
    both = seen[:, 1] & seen[:, 2]
    idx = np.nonzero(valid & both[fid])[0]
    if len(idx) == 0:
        return fid
    view = idx // (res * res)
    step = 2.0 * radius / res * 1e-3
    best_f, best_t = fid[idx].copy(), t_hit[idx].copy()
    misses = np.zeros(len(idx), dtype=np.int64)
    for k in range(2):
        moved = rays[idx].copy()
        moved[:, :3] += (step * axes[view, k]).astype(np.float32)
        f, t = _cast(scene, moved, nf)
        misses += f >= nf
        nearer = t < best_t
        best_f[nearer], best_t[nearer] = f[nearer], t[nearer]
    # both shifted rays miss: the ray grazed the silhouette, hitting the back-facing triangle
    # of an outline edge whose front-facing twin it missed; a pixel centre there is off the
    # mesh for a rasterizer
    best_f[misses == 2] = nf
    out = fid.copy()
    out[idx] = best_f
    return out


def double_sided_check(mesh, config: FilterConfig = FilterConfig()) -> FilterResult:
    """Run the double-sided filter on a mesh (trimesh or (verts (V,3), faces (F,3)))."""
    import open3d as o3d

    if isinstance(mesh, tuple | list):
        verts, faces = mesh
    else:
        verts, faces = mesh.vertices, mesh.faces
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if config.rule not in RULES:
        raise ValueError(f"unknown filter rule {config.rule!r}; expected one of {RULES}")
    reference = config.rule == "reference"
    nf = len(faces)
    flipped = flipped_duplicate_faces(verts, faces)
    # rays are cast in float32: in the mesh's unit sphere, not at its place (a 6 cm box 50 cm
    # away lets rays slip between the triangles of an edge, and the reference rule then
    # counts every later observation of the far triangle they hit as wrong)
    centre = 0.5 * (verts.min(0) + verts.max(0))
    verts = verts - centre
    verts = verts / (float(np.linalg.norm(verts, axis=1).max()) or 1.0)
    centre = np.zeros(3)
    radius = 1.05
    tri = verts[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(verts.astype(np.float32)), o3d.core.Tensor(faces.astype(np.uint32))
    )
    res = config.resolution
    g = (np.arange(res) + 0.5) / res * 2.0 - 1.0
    gu, gv = np.meshgrid(g, g, indexing="ij")
    gu, gv = gu.reshape(-1) * radius, gv.reshape(-1) * radius
    # a view looks from its point toward the centre
    dirs = reference_views(config.n_views) if reference else _fibonacci(config.n_views)
    rays = np.empty((config.n_views, res * res, 6), dtype=np.float32)
    axes = np.empty((config.n_views, 2, 3))
    for k, d in enumerate(dirs):
        a = np.array([0.0, 1.0, 0.0]) if abs(d[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
        u = np.cross(d, a)
        u /= np.linalg.norm(u)
        v = np.cross(d, u)
        axes[k] = u, v
        origin = centre + 2.0 * radius * d
        rays[k, :, :3] = origin + gu[:, None] * u + gv[:, None] * v
        rays[k, :, 3:] = -d
    rays = rays.reshape(-1, 6)
    fid, t_hit = _cast(scene, rays, nf)
    if reference:
        fid = _seal_cracks(scene, rays, fid, t_hit, fn, axes, res, radius, nf)
    valid = fid < nf
    view = np.repeat(np.arange(config.n_views), res * res)[valid]
    fid = fid[valid]
    rdir = rays[valid, 3:].astype(np.float64)
    cos = np.einsum("ij,ij->i", fn[fid], rdir)
    if reference:
        # edge-on pixels give no observation (|cos| < 0.001 of the unit normal)
        seen = np.abs(cos) >= 1e-3 * np.linalg.norm(fn[fid], axis=1)
        view, fid, cos = view[seen], fid[seen], cos[seen]
        n_obs = len(fid)
        n_wrong, bad = reference_counts(view, fid, cos < 0.0, nf)
        wrong = n_wrong / n_obs if n_obs else 1.0
    else:
        back = cos > 0.0
        n_obs = len(fid)
        wrong = float(back.mean()) if n_obs else 1.0
        seen_front = np.zeros(nf, dtype=bool)
        seen_back = np.zeros(nf, dtype=bool)
        seen_front[fid[~back]] = True
        seen_back[fid[back]] = True
        bad = (seen_front & seen_back) | flipped
    bad_fraction = float(bad.sum()) / max(nf, 1)
    reasons = []
    if n_obs == 0:
        reasons.append("no triangle visible")
    if wrong > config.max_wrong:
        what = "wrong-side observations" if reference else "back-side observations"
        reasons.append(f"{wrong:.1%} {what} > {config.max_wrong:.0%}")
    if bad_fraction > config.max_bad:
        reasons.append(f"{bad_fraction:.1%} double-sided triangles > {config.max_bad:.0%}")
    return FilterResult(
        ok=not reasons,
        wrong_fraction=wrong,
        bad_fraction=bad_fraction,
        n_observations=n_obs,
        n_flipped_duplicates=int(flipped.sum()),
        reason="; ".join(reasons),
    )
