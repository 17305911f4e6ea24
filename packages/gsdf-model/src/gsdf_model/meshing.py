"""Zero level sets of two signed distance functions (hand, object) on regular grids.

Owns the reference's two-pass marching cubes (gSDF `recon.py`): a first grid of
resolution³ points over a cube around the wrist, then a second grid of resolution³ points
over ONE cube around the negative points of hand ∪ object (2-voxel margin, side = the
largest extent), marching cubes at level 0 on that grid for each shape, and the connected
component with the largest area. Everything here is NumPy over a callable

    sdf_fn(points (M, 3) camera metres) -> (sdf_hand (M,), sdf_obj (M,)) metres,

so it serves a network, an analytic shape or a mesh alike.

Grids are evaluated densely (every point, as the reference) or coarse to fine: a lattice
every `coarse_stride` points, then each block is subdivided only where its corners change
sign or come within `margin` block diagonals of the surface; points of the other blocks
take the trilinear value of their block's corners (same sign, far from zero), which
marching cubes never reads (it interpolates only along edges that change sign). A last
sweep evaluates every corner of a sign-changing cell that was filled rather than decoded,
until none is left, so every vertex marching cubes outputs comes from decoded values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import numpy as np

SDFFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Mesh = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class MeshingConfig:
    """resolution: grid points per axis in each pass; extent: half side (m) of the first
    pass's cube; chunk: query points per sdf_fn call; component: "largest" (the reference:
    the component with the largest area) or "anchored" (the sizeable component nearest the
    predicted wrist / object centre); box: "union" (the reference: one second-pass cube
    around hand ∪ object) or "per-shape" (a box around each shape: finer hands, flatters
    CDh); evaluation: "coarse-to-fine" or "dense" (every grid point, as the reference);
    coarse_stride: first lattice spacing in grid steps (a power of two); margin: a block is
    subdivided when a corner's |sdf| is within margin × its diagonal."""

    resolution: int = 128
    extent: float = 0.3
    chunk: int = 8192
    component: str = "largest"
    box: str = "union"
    evaluation: str = "coarse-to-fine"
    coarse_stride: int = 8
    margin: float = 0.5

    def __post_init__(self) -> None:
        if self.component not in ("largest", "anchored"):
            raise ValueError(f"component must be 'largest' or 'anchored', not {self.component!r}")
        if self.box not in ("union", "per-shape"):
            raise ValueError(f"box must be 'union' or 'per-shape', not {self.box!r}")
        if self.evaluation not in ("coarse-to-fine", "dense"):
            raise ValueError(
                f"evaluation must be 'coarse-to-fine' or 'dense', not {self.evaluation!r}"
            )
        s = int(self.coarse_stride)
        if s < 1 or s & (s - 1):
            raise ValueError(f"coarse_stride must be a power of two, not {self.coarse_stride}")
        if self.resolution < 8:
            raise ValueError(f"resolution {self.resolution} is too small (at least 8)")


def grid_points(lo: np.ndarray, hi: np.ndarray, res: int) -> np.ndarray:
    """(res³, 3) points of a regular grid spanning the box [lo, hi] (corners included),
    x slowest, z fastest (matches a (res, res, res) reshape indexed [i, j, k])."""
    axes = [np.linspace(lo[d], hi[d], res) for d in range(3)]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    return g.reshape(-1, 3)


class _Evaluator:
    """sdf_fn in chunks, counting the points it decodes."""

    def __init__(self, sdf_fn: SDFFn, chunk: int) -> None:
        self.sdf_fn, self.chunk, self.points = sdf_fn, max(int(chunk), 1), 0

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        out = np.empty((2, len(pts)), np.float32)
        for s in range(0, len(pts), self.chunk):
            h, o = self.sdf_fn(pts[s : s + self.chunk])
            out[0, s : s + self.chunk] = h
            out[1, s : s + self.chunk] = o
        self.points += len(pts)
        return out


def _dense(ev: _Evaluator, lo: np.ndarray, step: np.ndarray, n: int) -> np.ndarray:
    # lo + index·step, the same arithmetic as the coarse-to-fine points (not linspace)
    axis = np.arange(n, dtype=np.float64)
    idx = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    return ev(lo + idx * step).reshape(2, n, n, n)


def _corners(a: np.ndarray, b: int) -> list[np.ndarray]:
    """The 8 corner values of each of the b³ blocks of a (..., b+1, b+1, b+1) lattice."""
    return [a[..., i : i + b, j : j + b, k : k + b] for i, j, k in product((0, 1), repeat=3)]


def _upsample(v: np.ndarray) -> None:
    """In place: the odd-index entries of v (2, m, m, m) (m odd) from their even neighbours
    (trilinear interpolation at the midpoints), one axis after the other."""
    v[:, 1::2, ::2, ::2] = 0.5 * (v[:, :-1:2, ::2, ::2] + v[:, 2::2, ::2, ::2])
    v[:, :, 1::2, ::2] = 0.5 * (v[:, :, :-1:2, ::2] + v[:, :, 2::2, ::2])
    v[:, :, :, 1::2] = 0.5 * (v[:, :, :, :-1:2] + v[:, :, :, 2::2])


def _neg_box(vals: np.ndarray, known: np.ndarray, union: bool) -> np.ndarray:
    """Per shape, the index box [lo, hi] (2, 2, 3) of the decoded negative points (union:
    the box of both, for both); an empty box (lo > hi) without any."""
    boxes = np.empty((2, 2, 3), np.int64)
    for k in range(2):
        idx = np.argwhere((vals[k] < 0) & known)
        boxes[k] = (idx.min(0), idx.max(0)) if len(idx) else ((1 << 40,) * 3, (-1,) * 3)
    if union:
        boxes[:] = boxes[:, 0].min(0), boxes[:, 1].max(0)
    return boxes


def _coarse_to_fine(
    ev: _Evaluator,
    lo: np.ndarray,
    step: np.ndarray,
    n: int,
    stride: int,
    margin: float,
    box_only: str | None = None,
) -> np.ndarray:
    """The (2, n, n, n) grid lo + index·step, decoded only near the surfaces (module doc).

    box_only ("union" or "per-shape"): the caller needs only the index box of the negative
    points (the first pass), so blocks inside the box the decoded negatives already span
    are not subdivided: they cannot widen it.
    """
    stride = max(1, min(stride, 1 << int(np.log2(max(n - 1, 1)))))
    m = -(-(n - 1) // stride) * stride + 1  # padded so every level's blocks tile the grid
    vals = np.zeros((2, m, m, m), np.float32)
    known = np.zeros((m, m, m), bool)

    def decode(idx: np.ndarray) -> None:
        if len(idx):
            vals[(slice(None), *idx.T)] = ev(lo + idx * step)
            known[tuple(idx.T)] = True

    def inside(s: int, b: int) -> np.ndarray:
        """(2, b, b, b): blocks of size s within the shape's decoded negative box."""
        if box_only is None:
            return np.zeros((2, b, b, b), bool)
        box = _neg_box(vals[:, :n, :n, :n], known[:n, :n, :n], box_only == "union")
        a = np.arange(b) * s
        out = np.empty((2, b, b, b), bool)
        for k in range(2):
            ok = [(a >= box[k, 0, d]) & (a + s <= box[k, 1, d]) for d in range(3)]
            out[k] = ok[0][:, None, None] & ok[1][None, :, None] & ok[2][None, None, :]
        return out

    axis = np.arange(0, m, stride)
    decode(np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3))
    diag = float(np.linalg.norm(step))
    s = stride
    while s > 1:
        h, b = s // 2, (m - 1) // s
        c = _corners(vals[:, ::s, ::s, ::s], b)
        lo_c, hi_c = np.minimum.reduce(c), np.maximum.reduce(c)
        near = np.minimum.reduce([np.abs(x) for x in c]) <= margin * s * diag
        flag = ((((lo_c < 0) & (hi_c >= 0)) | near) & ~inside(s, b)).any(0)  # (b, b, b)
        _upsample(vals[:, ::h, ::h, ::h])
        need = np.zeros((2 * b + 1,) * 3, bool)
        for i, j, k in product(range(3), repeat=3):
            need[i : i + 2 * b : 2, j : j + 2 * b : 2, k : k + 2 * b : 2] |= flag
        need &= ~known[::h, ::h, ::h]
        decode(np.argwhere(need) * h)
        s = h
    vals = np.ascontiguousarray(vals[:, :n, :n, :n])
    known = known[:n, :n, :n]
    # Sign-changing cells with a filled corner: decode their corners until there are none
    # (the surface left the band the blocks predicted; rare, and never silently kept).
    while True:
        neg = vals < 0
        c = _corners(neg, n - 1)
        change = np.logical_or.reduce(c) & ~np.logical_and.reduce(c)
        if box_only is not None:
            change &= ~inside_cells(vals, known, box_only == "union")
        change = change.any(0)
        missing = np.zeros((n, n, n), bool)
        for i, j, k in product((0, 1), repeat=3):
            missing[i : i + n - 1, j : j + n - 1, k : k + n - 1] |= change
        missing &= ~known
        if not missing.any():
            return vals
        idx = np.argwhere(missing)
        vals[(slice(None), *idx.T)] = ev(lo + idx * step)
        known[tuple(idx.T)] = True


def inside_cells(vals: np.ndarray, known: np.ndarray, union: bool) -> np.ndarray:
    """(2, n-1, n-1, n-1): cells within each shape's decoded negative box."""
    n = vals.shape[-1]
    box = _neg_box(vals, known, union)
    a = np.arange(n - 1)
    out = np.empty((2, n - 1, n - 1, n - 1), bool)
    for k in range(2):
        ok = [(a >= box[k, 0, d]) & (a + 1 <= box[k, 1, d]) for d in range(3)]
        out[k] = ok[0][:, None, None] & ok[1][None, :, None] & ok[2][None, None, :]
    return out


def sample_grid(
    sdf_fn: SDFFn | _Evaluator,
    lo: np.ndarray,
    step: np.ndarray,
    n: int,
    cfg: MeshingConfig,
    box_only: str | None = None,
) -> np.ndarray:
    """Both SDFs on the n³ grid lo + (i, j, k)·step: (2, n, n, n) float32 (hand, object),
    decoded densely or coarse to fine per cfg.evaluation. box_only: see `_coarse_to_fine`
    (only the signs that decide the negative points' box are then exact)."""
    ev = sdf_fn if isinstance(sdf_fn, _Evaluator) else _Evaluator(sdf_fn, cfg.chunk)
    lo, step = np.asarray(lo, np.float64), np.asarray(step, np.float64)
    if cfg.evaluation == "dense":
        return _dense(ev, lo, step, n)
    return _coarse_to_fine(ev, lo, step, n, int(cfg.coarse_stride), float(cfg.margin), box_only)


def _face_components(faces: np.ndarray, n_verts: int) -> np.ndarray:
    """Connected-component label of each face (faces sharing a vertex are connected)."""
    import scipy.sparse
    from scipy.sparse.csgraph import connected_components

    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_verts, n_verts))
    _, labels = connected_components(graph, directed=False)
    return labels[faces[:, 0]]


def _keep_faces(verts: np.ndarray, faces: np.ndarray, keep: np.ndarray) -> Mesh:
    faces = faces[keep]
    used = np.unique(faces)
    remap = np.full(len(verts), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return verts[used], remap[faces]


def face_areas(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F,) triangle areas."""
    t = verts[faces]
    return 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)


def largest_component(verts: np.ndarray, faces: np.ndarray) -> Mesh:
    """The connected component with the largest area (the reference's choice; vertices
    re-indexed, unused ones dropped)."""
    if len(faces) == 0:
        return verts, faces
    label = _face_components(faces, len(verts))
    area = np.bincount(label, weights=face_areas(verts, faces))
    return _keep_faces(verts, faces, label == area.argmax())


def anchored_component(
    verts: np.ndarray, faces: np.ndarray, anchor: np.ndarray, min_share: float = 0.1
) -> Mesh:
    """The component nearest to `anchor` (3,) among those with at least `min_share` of the
    largest one's faces: what the network put at the predicted hand (or object), rather
    than a larger spurious surface elsewhere in the cube."""
    if len(faces) == 0:
        return verts, faces
    label = _face_components(faces, len(verts))
    sizes = np.bincount(label)
    dist = np.full(len(sizes), np.inf)
    d_vert = np.linalg.norm(verts - np.asarray(anchor), axis=1)
    np.minimum.at(dist, label, d_vert[faces[:, 0]])
    dist[sizes < min_share * sizes.max()] = np.inf
    return _keep_faces(verts, faces, label == int(np.argmin(dist)))


def union_cube(
    negative: list[np.ndarray], lo: np.ndarray, step: float, res: int
) -> tuple[np.ndarray, float] | None:
    """The reference's second-pass cube: around the index box of the negative points of all
    shapes, 2 voxels of margin, side = the largest extent + 4 voxels. negative: per shape a
    (res, res, res) bool grid; shapes without a negative point take no part (the reference
    counts index (0, 0, 0) for them, a corner of the first cube). Returns (lo (3,), step) of
    the second grid, or None without any negative point."""
    boxes = []
    for neg in negative:
        idx = np.argwhere(neg)
        if len(idx):
            boxes.append((idx.min(0), idx.max(0)))
    if not boxes:
        return None
    i_min = np.min([b[0] for b in boxes], axis=0)
    i_max = np.max([b[1] for b in boxes], axis=0)
    side = (float((i_max - i_min).max()) + 4.0) * step
    return lo + (i_min - 2) * step, side / (res - 1)


def _march(vol: np.ndarray, lo: np.ndarray, step: np.ndarray) -> Mesh | None:
    from skimage.measure import marching_cubes

    if vol.min() >= 0 or vol.max() <= 0:
        return None
    verts, faces, _, _ = marching_cubes(vol, level=0.0, spacing=tuple(float(s) for s in step))
    return verts.astype(np.float64) + lo, faces.astype(np.int64)


def extract_surface(
    sdf_fn: SDFFn,
    center: np.ndarray,
    cfg: MeshingConfig,
    anchors: tuple[np.ndarray, np.ndarray] | None = None,
    stats: dict | None = None,
) -> list[Mesh | None]:
    """Hand and object meshes by two-pass marching cubes (module doc).

    sdf_fn: camera-frame points (M, 3) → (sdf_hand (M,), sdf_obj (M,)) in metres.
    center: (3,) centre of the first-pass cube (half side cfg.extent). anchors: (hand,
    object) points (3,) for cfg.component == "anchored" (default: the cube's centre).
    Returns per shape (verts (V, 3) camera frame, faces (F, 3)), or None without a surface.
    stats, when given, receives "points" (decoded points) and the second-pass boxes.
    """
    res = int(cfg.resolution)
    ev = _Evaluator(sdf_fn, cfg.chunk)
    center = np.asarray(center, np.float64)
    lo = center - cfg.extent
    step = 2.0 * cfg.extent / (res - 1)
    first = sample_grid(ev, lo, np.full(3, step), res, cfg, box_only=cfg.box)
    first_points = ev.points
    neg = [first[k] < 0 for k in range(2)]
    if cfg.box == "union":
        cube = union_cube(neg, lo, step, res)
        boxes = [cube, cube] if cube is not None else [None, None]
    else:
        boxes = [union_cube([neg[k]], lo, step, res) for k in range(2)]
    grids: dict[int, np.ndarray] = {}
    results: list[Mesh | None] = []
    for k in range(2):
        if boxes[k] is None or not neg[k].any():
            results.append(None)
            continue
        lo2, step2 = boxes[k]
        key = id(boxes[k]) if cfg.box == "union" else k
        if key not in grids:
            grids[key] = sample_grid(ev, lo2, np.full(3, step2), res, cfg)
        mesh = _march(grids[key][k], lo2, np.full(3, step2))
        if mesh is not None:
            if cfg.component == "anchored":
                anchor = center if anchors is None else anchors[k]
                mesh = anchored_component(*mesh, anchor)
            else:
                mesh = largest_component(*mesh)
        results.append(mesh)
    if stats is not None:
        stats["points"] = ev.points
        stats["first_pass_points"] = first_points
        stats["boxes"] = [None if b is None else (b[0].tolist(), float(b[1])) for b in boxes]
    return results
