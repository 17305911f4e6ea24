"""Hand-object interaction metrics: contact, penetration depth, intersection volume.

Inside/outside is decided by the generalised winding number (Jacobson et al. 2013): the
signed solid angle a mesh subtends at a point, over 4π. It is 1 inside and 0 outside a
closed, consistently oriented mesh, and degrades gracefully on open meshes (marching-cubes
output cut at the grid border, ShapeNet objects with holes): a point is inside when its
winding number is above 0.5, so a small hole changes only points right next to it, where ray
parity would flip whole rays. libigl evaluates it (`fast_winding_number`, Barill et al.
2018: a tree of triangles, far nodes through a second-order expansion) and gives exact
point-to-mesh distances (`point_mesh_squared_distance`, an AABB tree).

Definitions (reference code): a hand vertex penetrates when it is inside the object;
penetration depth is the largest exact distance from a penetrating hand vertex to the
object surface (cm, 0 when none); the pair is in contact when some hand vertex penetrates
(the reference's signed distance ≤ 0); intersection volume counts 0.5 cm voxels, tiling the
overlap of the two bounding boxes, whose centres are inside both meshes (cm³).
"""

from __future__ import annotations

import os

import numpy as np

# libigl starts fresh threads on every call; for a pair's few thousand queries one thread is
# faster, and `gsdf-eval run --jobs` parallelises over samples. Read at libigl's first call.
os.environ.setdefault("IGL_NUM_THREADS", "1")


def _mesh(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(vertices, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int64),
    )


def winding_number(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Generalised winding numbers (Q,) of points (Q, 3) w.r.t. a mesh (V, 3), (F, 3)."""
    import igl

    points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        return np.zeros(0)
    return igl.fast_winding_number(*_mesh(vertices, faces), points)


def surface_distance(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Exact unsigned distances (Q,) from points (Q, 3) to a triangle mesh's surface."""
    import igl

    points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        return np.zeros(0)
    sq, _, _ = igl.point_mesh_squared_distance(points, *_mesh(vertices, faces))
    return np.sqrt(sq)


def voxel_centres(lo: np.ndarray, hi: np.ndarray, voxel: float) -> np.ndarray:
    """Centres (N, 3) of cubic voxels of side `voxel` tiling the box [lo, hi] from lo."""
    n = np.maximum(np.ceil((hi - lo) / voxel - 1e-9).astype(int), 0)
    if (n == 0).any():
        return np.zeros((0, 3))
    axes = [lo[d] + (np.arange(n[d]) + 0.5) * voxel for d in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def contact_metrics(hand, obj, voxel: float = 0.005) -> dict:
    """penetration_cm, intersection_cm3 and contact for two trimesh.Trimesh (metres).

    Intersection volume is only computed for pairs in contact (0 otherwise), as in the
    reference code.
    """
    hv, hf = _mesh(hand.vertices, hand.faces)
    ov, of = _mesh(obj.vertices, obj.faces)
    none = {"penetration_cm": 0.0, "intersection_cm3": 0.0, "contact": False}
    lo, hi = ov.min(0), ov.max(0)
    cand = np.flatnonzero(((hv >= lo) & (hv <= hi)).all(axis=1))
    if len(cand) == 0:
        return none
    # one object query for the hand vertices and the voxel centres: libigl builds its tree
    # per call, and that costs as much as the queries
    voxels = voxel_centres(np.maximum(hv.min(0), lo), np.minimum(hv.max(0), hi), voxel)
    w = winding_number(ov, of, np.concatenate([hv[cand], voxels]))
    inside = cand[w[: len(cand)] > 0.5]
    if len(inside) == 0:
        return none
    depth = float(surface_distance(ov, of, hv[inside]).max())
    voxels = voxels[w[len(cand) :] > 0.5]
    voxels = voxels[winding_number(hv, hf, voxels) > 0.5]
    return {
        "penetration_cm": depth * 100.0,
        "intersection_cm3": len(voxels) * voxel**3 * 1e6,
        "contact": True,
    }
