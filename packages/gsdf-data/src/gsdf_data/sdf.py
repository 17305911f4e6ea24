"""Signed distance from query points to triangle meshes (negative inside).

Owns the SDF backends:

- ``"ours"`` (the default behind ``"auto"``; called ``"open3d"`` before, a name still
  accepted with a warning): exact unsigned distance from our own BVH closest-point query
  (:mod:`gsdf_data.bvh`, float64; 1.5-2x faster than fcpw and open3d's ``RaycastingScene``
  on the sampler's queries, measured in ``bench/bench_sdf.py``, which holds the open3d
  distance engine it is compared with), and a sign that stays right on open,
  non-watertight meshes. Queries run in Morton (Z-curve) order, where neighbouring queries
  share their closest triangles. Sign methods (``sign=``), measured in
  ``bench/bench_sdf.py``:

  * ``"vote"`` (default): ray-parity inside test (open3d ray casting) over several fixed
    directions, majority vote. A hole only flips the rays that leave through it, so a point
    deep inside an open shell keeps its sign as long as the hole covers less than half of
    its view sphere. Three rays first; the remaining ones only where those three disagree.
    With the BVH engine the closest feature's pseudo-normal (free with the distance query)
    votes too: where that feature is a manifold, consistently oriented part of the mesh and
    its side agrees with the first ray, that answer stands (one ray instead of three; a hole
    or a flipped face makes the two disagree, and the rays decide). On a closed,
    consistently outward-oriented mesh (every edge used once in each direction, positive
    volume: e.g. a MANO hand closed at the wrist) of one part, or of parts with disjoint
    bounding boxes, the pseudo-normal is exact: no ray is cast. Closed parts that touch,
    interpenetrate or nest hide one another from it (a point inside a mug's body is nearest
    to its handle's buried surface); there the sign is the winding number, summed over layers
    of parts that cannot (:func:`sign_layers`), one pseudo-normal query each. A single part
    that intersects itself is not covered: use ``"winding"``.
  * ``"parity"``: one ray; exact on closed meshes, wrong behind every hole of an open one.
  * ``"pseudonormal"``: side of the angle-weighted pseudo-normal of the closest feature
    (face, edge or vertex; Baerentzen & Aanaes 2005); exact on closed manifold meshes, one
    query for distance and sign, but wrong where the closest feature is a hole's border or
    a flipped face.
  * ``"winding"``: generalized winding number (Jacobson et al. 2013), exact O(N·F) sum;
    the reference for open meshes, too slow for 40,000 points on big meshes.

- ``"mesh-to-sdf"``: the ``mesh-to-sdf`` package (renders 100 views per call), for
  comparison only (``pip install gsdf-data[compare]``).

Brute-force references for tests and benchmarks: :func:`brute_force_distance` and
:func:`brute_force_winding_number`.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import numpy as np

from gsdf_data.bvh import BVH, argsort_keys, morton_keys

BACKENDS = ("auto", "ours", "mesh-to-sdf")
# old names, still accepted (with a warning) so that old configurations and commands run
BACKEND_ALIASES = {"open3d": "ours"}
SIGN_METHODS = ("vote", "parity", "pseudonormal", "winding")
DEFAULT_RAYS = 9


def backend_name(name: str, stacklevel: int = 2) -> str:
    """The current name of the SDF backend ``name``: a deprecated alias is mapped to its
    backend, with a one-line FutureWarning (``stacklevel`` as for the caller's own
    ``warnings.warn``). Raises ValueError for an unknown name."""
    if name in BACKEND_ALIASES:
        new = BACKEND_ALIASES[name]
        warnings.warn(
            f"SDF backend {name!r} is a deprecated name of {new!r} (the same code)",
            FutureWarning,
            stacklevel=stacklevel + 1,
        )
        return new
    if name not in BACKENDS:
        raise ValueError(f"unknown SDF backend {name!r}; expected one of {BACKENDS}")
    return name


def _as_arrays(mesh) -> tuple[np.ndarray, np.ndarray]:
    """(V,3) float64 vertices and (F,3) int64 faces from a trimesh or a (verts, faces) pair."""
    if isinstance(mesh, tuple | list):
        verts, faces = mesh
    else:
        verts, faces = mesh.vertices, mesh.faces
    return np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int64)


def morton_order(points: np.ndarray) -> np.ndarray:
    """Permutation that sorts points along a Morton (Z-order) curve of a 1024³ grid over their
    bounding box. Queries in this order reuse the BVH nodes of the previous query."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 2:
        return np.arange(len(p))
    lo, hi = p.min(axis=0), p.max(axis=0)
    return argsort_keys(morton_keys(p, lo, 1023.0 / np.maximum(hi - lo, 1e-12)))


def _similarity(frame) -> tuple[np.ndarray | None, float, np.ndarray | None]:
    """(rotation (3,3), scale, translation (3,)) of a (4,4) similarity; (None, 1, None) for
    None. Raises ValueError when the linear part is not a rotation times a uniform scale."""
    if frame is None:
        return None, 1.0, None
    f = np.asarray(frame, dtype=np.float64)
    if f.shape != (4, 4) or not np.isfinite(f).all():
        raise ValueError(f"frame must be a finite (4,4) matrix, got shape {f.shape}")
    sv = np.linalg.svd(f[:3, :3], compute_uv=False)
    if not sv[-1] > 0 or sv[0] - sv[-1] > 1e-6 * sv[0]:
        raise ValueError(f"frame is not a rotation times a uniform scale (singular values {sv})")
    s = float(sv.mean())
    return f[:3, :3] / s, s, f[:3, 3].copy()


def is_similarity(frame) -> bool:
    """True when ``frame`` is a finite (4,4) rotation (or reflection) times a uniform scale plus
    a translation, as :class:`MeshSDF` accepts."""
    try:
        _similarity(frame)
    except ValueError:
        return False
    return frame is not None


def is_closed(faces: np.ndarray) -> bool:
    """True when every directed edge of the faces (F,3) appears exactly once and its reverse
    too: a closed, consistently oriented surface (by vertex index)."""
    f = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    n = int(f.max()) + 1 if len(f) else 0
    key = e[:, 0] * n + e[:, 1]
    rev = e[:, 1] * n + e[:, 0]
    key.sort()
    rev.sort()
    return bool(len(f)) and bool(np.all(key[1:] != key[:-1])) and np.array_equal(key, rev)


def _volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume enclosed by the faces (positive for a closed, outward mesh)."""
    t = verts[faces]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6.0)


def closed_parts(faces: np.ndarray) -> tuple[np.ndarray, int]:
    """Edge-connected parts of a mesh: (F,) part label of each face and the number of parts.
    Faces sharing an edge (by vertex index) are in the same part; on a closed mesh each part
    is itself a closed surface."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = np.asarray(faces, dtype=np.int64)
    a, b = f, np.roll(f, -1, axis=1)
    n = int(f.max()) + 1
    key = (np.minimum(a, b) * n + np.maximum(a, b)).ravel()
    order = np.argsort(key, kind="stable")
    same = np.nonzero(key[order][1:] == key[order][:-1])[0]
    i, j = order[same] // 3, order[same + 1] // 3
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(len(f), len(f)))
    count, labels = connected_components(graph, directed=False)
    return labels, int(count)


def sign_layers(verts: np.ndarray, faces: np.ndarray, margin: float = 1e-6) -> list | None:
    """How to sign a closed mesh made of several closed parts exactly.

    The closest feature's pseudo-normal gives the side of the part that feature belongs to.
    That is the mesh's side when no part can be nearer to a point than the part containing
    it: true for one part, and for outward parts whose bounding boxes are disjoint (a point
    inside part B is nearer to B's surface than to B's box, hence than to any part outside
    that box). Parts that touch, interpenetrate or nest break it: a point inside the body of
    a mug lies nearer to the handle's buried surface, whose normal points away from the
    handle. So the parts are split into layers of the same orientation with pairwise
    disjoint boxes (greedy, largest box first); within a layer the pseudo-normal is exact,
    and the winding number is the sum over layers of +-1 per layer whose inside holds the
    point. Parts enclosing no volume (back-to-back duplicated faces) add nothing.

    Returns None when one outward layer holds every face (the whole mesh's pseudo-normal is
    exact), else a list of (orientation +1/-1, face indices, part box lows (K,3), part box
    highs (K,3)). margin: boxes closer than this fraction of the mesh's size count as
    overlapping (touching parts share a plane).
    """
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    labels, count = closed_parts(f)
    if count == 1:
        return None
    t = v[f]
    vol = np.bincount(labels, np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])), count)
    lo = np.full((count, 3), np.inf)
    hi = np.full((count, 3), -np.inf)
    for k in range(3):
        np.minimum.at(lo[:, k], labels, t[:, :, k].min(axis=1))
        np.maximum.at(hi[:, k], labels, t[:, :, k].max(axis=1))
    size = float((v.max(axis=0) - v.min(axis=0)).max())
    lo -= margin * size
    hi += margin * size
    # a part's volume below ~1e-9 of the mesh's box encloses nothing: duplicated sheets
    solid = np.abs(vol) / 6.0 > 1e-9 * size**3
    layers: list[tuple[int, list[int]]] = []
    for p in np.argsort(-np.prod(hi - lo, axis=1), kind="stable"):
        if not solid[p]:
            continue
        s = 1 if vol[p] > 0 else -1
        for ls, members in layers:
            m = np.asarray(members)
            if ls == s and not np.any(np.all((lo[m] <= hi[p]) & (lo[p] <= hi[m]), axis=1)):
                members.append(p)
                break
        else:
            layers.append((s, [p]))
    if len(layers) == 1 and layers[0][0] == 1 and solid.all():
        return None
    out = []
    for s, members in layers:
        m = np.asarray(members)
        out.append((s, np.nonzero(np.isin(labels, m))[0], lo[m], hi[m]))
    return out


def _vote_directions(n: int) -> np.ndarray:
    """(n,3) fixed, well spread unit directions (Fibonacci sphere, slightly rotated so that no
    direction is axis-aligned: axis-aligned rays graze the faces of boxes)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    phi = i * np.pi * (3.0 - np.sqrt(5.0)) + 0.1234
    d = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    a, b = 0.3141, 0.2718
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return d @ (ry @ rx).T


@dataclass
class MeshSDF:
    """A mesh prepared for repeated signed-distance queries (BVH built once).

    Args:
        verts: (V,3) vertices. faces: (F,3) vertex indices.
        sign: one of ``SIGN_METHODS``. n_rays: odd number of rays for ``"vote"``.
        nthreads: open3d threads (0 = all cores; use 1 inside worker processes).
        frame: optional (4,4) map from the mesh's own frame to the frame of ``verts``, a
            rotation times a uniform scale plus a translation (e.g. an object's model frame,
            where it is axis-aligned). The BVHs are built in that frame, where their boxes fit
            a model tightly (rotated objects: 1.4-3x faster queries), queries are mapped into it and
            distances scaled back: the answers do not change.
        local: ``verts`` are already in the mesh's own frame (``frame`` places them); see
            :meth:`placed` and :class:`gsdf_data.object_cache.ObjectModel`.
    """

    verts: np.ndarray
    faces: np.ndarray
    sign: str = "vote"
    n_rays: int = DEFAULT_RAYS
    nthreads: int = 1
    frame: np.ndarray | None = None
    local: bool = False
    _scene: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import open3d as o3d

        if self.sign not in SIGN_METHODS:
            raise ValueError(f"unknown sign method {self.sign!r}; expected one of {SIGN_METHODS}")
        if self.n_rays < 1 or self.n_rays % 2 == 0:
            raise ValueError(f"n_rays must be odd and positive, got {self.n_rays}")
        self.verts = np.asarray(self.verts, dtype=np.float64)
        self.faces = np.asarray(self.faces, dtype=np.int64)
        if len(self.faces) == 0:
            raise ValueError("mesh has no faces")
        self._rot, self._scale, self._shift = _similarity(self.frame)
        # the mesh in its own frame: every query below runs there
        self._v = self.verts if self.local else self._local(self.verts)
        self._lo = self._v.min(axis=0)
        self._hi = self._v.max(axis=0)
        # closed and outward: the closest feature's pseudo-normal is the exact sign when the
        # parts cannot hide one another (see sign_layers); else one pseudo-normal BVH per layer
        closed = is_closed(self.faces) and _volume(self._v, self.faces) > 0
        self._layers = None
        if self.sign == "vote" and closed:
            layers = sign_layers(self._v, self.faces)
            if layers is not None:
                self._layers = [
                    (s, BVH.build(self._v, self.faces[f], pseudonormal_sign=True), lo, hi)
                    for s, f, lo, hi in layers
                ]
        self._pn = self.sign == "pseudonormal" or (
            self.sign == "vote" and closed and self._layers is None
        )
        # open: the pseudo-normal still votes, beside the first ray (see _parity_vote)
        self._pn_votes = self.sign == "vote" and not closed
        self._bvh = BVH.build(self._v, self.faces, pseudonormal_sign=self._pn or self._pn_votes)
        self._scene = None
        if not (self._pn or self._layers):
            self._scene = o3d.t.geometry.RaycastingScene()
            self._scene.add_triangles(
                o3d.core.Tensor(self._v.astype(np.float32)),
                o3d.core.Tensor(self.faces.astype(np.uint32)),
            )

    def placed(self, frame) -> MeshSDF:
        """The same mesh placed by another ``frame`` (own frame -> query frame, a similarity):
        shares the BVH and the ray scene, so it costs nothing to make."""
        out = copy.copy(self)
        out.frame = None if frame is None else np.asarray(frame, np.float64)
        out._rot, out._scale, out._shift = _similarity(out.frame)
        return out

    @classmethod
    def from_mesh(cls, mesh, **kwargs) -> MeshSDF:
        verts, faces = _as_arrays(mesh)
        return cls(verts, faces, **kwargs)

    def _t(self, points: np.ndarray):
        import open3d as o3d

        return o3d.core.Tensor(np.ascontiguousarray(points, dtype=np.float32))

    def _local(self, points: np.ndarray) -> np.ndarray:
        """Points (N,3) of the verts' frame -> the mesh's own frame."""
        p = np.asarray(points, dtype=np.float64)
        if self._rot is None:
            return p
        return (p - self._shift) @ self._rot / self._scale

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Exact unsigned distance. points: (N,3) -> (N,) float64.

        Answers in the given order; pass points in :func:`morton_order` for speed."""
        return self._distance(self._local(points)) * self._scale

    def inside(self, points: np.ndarray) -> np.ndarray:
        """Inside test with the configured sign method. points: (N,3) -> (N,) bool."""
        return self._inside(self._local(points))

    def signed_distance(self, points: np.ndarray, ordered: bool = False) -> np.ndarray:
        """Signed distance, negative inside. points: (N,3) -> (N,) float64.

        ordered: the points are already in :func:`morton_order` (skips sorting them)."""
        points = np.asarray(points, dtype=np.float64)
        if ordered:
            q = self._local(points)
            d, pn, sure = self._query(q)
            inside = self._inside(q, pn, sure)
            d = d * self._scale
            return np.where(inside, -d, d)
        order = morton_order(points)
        out = np.empty(len(points))
        out[order] = self.signed_distance(points[order], ordered=True)
        return out

    def _query(self, q: np.ndarray):
        """Distances (N,) of points q (N,3) in the mesh's own frame, with the pseudo-normal
        sides of their closest features and whether each side is sure (see :meth:`_inside`;
        None, None: not computed)."""
        d, _, pn, sure = self._bvh.query(q)
        return d, pn, sure

    def _distance(self, q: np.ndarray) -> np.ndarray:
        if len(q) == 0:
            return np.zeros(0)
        return self._bvh.query(q)[0]

    def _inside(self, points: np.ndarray, pn=None, sure=None) -> np.ndarray:
        """pn, sure: the BVH's pseudo-normal sides of the points and whether each is sure
        (computed here when needed and not given)."""
        if pn is None and (self._pn or self._pn_votes):
            _, _, pn, sure = self._bvh.query(points)
        if self._pn:
            return pn
        if self._layers is not None:
            return self._layer_inside(points)
        if self.sign == "winding":
            return brute_force_winding_number(self._v, self.faces, points) > 0.5
        out = np.zeros(len(points), dtype=bool)
        # Outside the bounding box is outside for every method but the winding number of an
        # open mesh; skipping those points saves most rays for the far, uniform samples.
        box = np.all((points >= self._lo) & (points <= self._hi), axis=1)
        idx = np.nonzero(box)[0]
        if len(idx) == 0:
            return out
        q = points[idx]
        if self.sign == "parity":
            out[idx] = self._parity_vote(q, 1)
        elif self._pn_votes:
            out[idx] = self._parity_vote(q, self.n_rays, pn[idx], sure[idx])
        else:
            out[idx] = self._parity_vote(q, self.n_rays)
        return out

    def _layer_inside(self, points: np.ndarray) -> np.ndarray:
        """Winding number of a closed mesh from its sign layers: each layer's pseudo-normal is
        exact for the points in its parts' boxes (outside them the layer's winding is 0)."""
        wind = np.zeros(len(points), dtype=np.int64)
        for s, bvh, lo, hi in self._layers:
            near = np.zeros(len(points), dtype=bool)
            for k in range(len(lo)):
                near |= np.all((points >= lo[k]) & (points <= hi[k]), axis=1)
            idx = np.nonzero(near)[0]
            if len(idx):
                # the pseudo-normal's "inside" is the side its normals point away from: for an
                # inward layer (a cavity's wall) that is outside the region it encloses
                behind = bvh.query(points[idx])[2]
                wind[idx] += behind if s > 0 else -(~behind).astype(np.int64)
        return wind > 0

    def _odd(self, q: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """(len(q), len(dirs)) parity of the crossings along each ray."""
        rays = np.empty((len(q), len(dirs), 6), dtype=np.float32)
        rays[:, :, :3] = q[:, None, :]
        rays[:, :, 3:] = dirs[None]
        counts = self._scene.count_intersections(
            self._t(rays.reshape(-1, 6)), nthreads=self.nthreads
        ).numpy()
        return (counts.reshape(len(q), len(dirs)) % 2).astype(np.int32)

    def _parity_vote(self, q: np.ndarray, n: int, pn=None, sure=None) -> np.ndarray:
        dirs = _vote_directions(n)
        if n <= 3:
            return self._odd(q, dirs).sum(axis=1) * 2 > n
        # Two stages: 3 rays first; only points without a unanimous answer (near holes,
        # or rays grazing an edge) get the other n - 3. Same answer as n rays wherever the
        # first three agree and the rest cannot outvote them; ~3x fewer rays.
        # With pseudo-normal sides (pn, sure): where the closest feature is a manifold,
        # consistently oriented part of the mesh and its side agrees with the first ray, two
        # independent tests agree and that answer stands (one ray instead of three); a hole
        # or a flipped face makes them disagree, and the full vote decides.
        if pn is not None:
            r1 = self._odd(q, dirs[:1])[:, 0]
            inside = pn.copy()
            rest = np.nonzero(~(sure & (r1 == pn)))[0]
            if len(rest):
                first = r1[rest] + self._odd(q[rest], dirs[1:3]).sum(axis=1)
                inside[rest] = self._second_stage(q[rest], first, dirs, n)
            return inside
        return self._second_stage(q, self._odd(q, dirs[:3]).sum(axis=1), dirs, n)

    def _second_stage(self, q, first, dirs, n):
        """first: (len(q),) odd counts of the first three rays; the other n - 3 where split."""
        inside = first == 3
        split = np.nonzero((first == 1) | (first == 2))[0]
        if len(split):
            rest = self._odd(q[split], dirs[3:]).sum(axis=1)
            inside[split] = (first[split] + rest) * 2 > n
        return inside


def signed_distance(
    mesh,
    points: np.ndarray,
    backend: str = "auto",
    sign: str = "vote",
    n_rays: int = DEFAULT_RAYS,
    nthreads: int = 1,
) -> np.ndarray:
    """Signed distance from points to a mesh, negative inside.

    Args:
        mesh: a ``trimesh.Trimesh`` or a ``(verts (V,3), faces (F,3))`` pair.
        points: (N,3) query points in the mesh's frame.
        backend: ``"auto"`` (= ``"ours"``), ``"ours"`` or ``"mesh-to-sdf"``.
        sign: sign method of our backend, see the module docstring.
        n_rays: rays for ``sign="vote"`` (odd).
        nthreads: open3d threads (0 = all cores).

    Returns:
        (N,) float64 signed distances.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    backend = backend_name(backend, stacklevel=3)
    if backend in ("auto", "ours"):
        return MeshSDF.from_mesh(mesh, sign=sign, n_rays=n_rays, nthreads=nthreads).signed_distance(
            points
        )
    if backend == "mesh-to-sdf":
        return mesh_to_sdf_signed_distance(mesh, points)
    raise ValueError(f"unknown SDF backend {backend!r}; expected one of {BACKENDS}")


def mesh_to_sdf_signed_distance(mesh, points: np.ndarray) -> np.ndarray:
    """The ``mesh-to-sdf`` package's SDF (negative inside). points: (N,3) -> (N,) float64."""
    from gsdf_data.render import headless_platform

    # mesh-to-sdf imports pyrender, which opens a window unless told otherwise
    headless_platform()
    try:
        import mesh_to_sdf
    except ImportError as e:
        if "must be imported before" in str(e):
            raise RuntimeError(
                "the mesh-to-sdf backend must be loaded before anything else in this process "
                "imports pyrender or OpenGL: run it in a fresh process"
            ) from e
        raise RuntimeError("the mesh-to-sdf backend needs `pip install gsdf-data[compare]`") from e
    import trimesh

    verts, faces = _as_arrays(mesh)
    # mesh-to-sdf scans a sphere around the origin: centre and scale the mesh to the unit
    # sphere first (as its own sample_sdf_near_surface does), then scale distances back.
    centre = 0.5 * (verts.min(axis=0) + verts.max(axis=0))
    scale = float(np.linalg.norm(verts - centre, axis=1).max())
    unit = trimesh.Trimesh((verts - centre) / scale, faces, process=False)
    q = (np.asarray(points, dtype=np.float64) - centre) / scale
    sdf = mesh_to_sdf.mesh_to_sdf(unit, q)
    return np.asarray(sdf, dtype=np.float64) * scale


def brute_force_distance(verts, faces, points, chunk: int = 2_000_000) -> np.ndarray:
    """Exact unsigned distance by testing every (point, triangle) pair, float64.

    verts (V,3), faces (F,3), points (N,3) -> (N,). O(N·F); for tests and benchmarks.
    """
    import trimesh

    verts, faces = np.asarray(verts, np.float64), np.asarray(faces, np.int64)
    points = np.asarray(points, np.float64)
    tri = verts[faces]
    nf = len(tri)
    step = max(1, chunk // nf)
    out = np.empty(len(points))
    for s in range(0, len(points), step):
        p = points[s : s + step]
        tt = np.broadcast_to(tri[None], (len(p), nf, 3, 3)).reshape(-1, 3, 3)
        pp = np.repeat(p, nf, axis=0)
        cp = trimesh.triangles.closest_point(tt, pp)
        d = np.linalg.norm(cp - pp, axis=1).reshape(len(p), nf)
        out[s : s + step] = d.min(axis=1)
    return out


def brute_force_winding_number(verts, faces, points, chunk: int = 4_000_000) -> np.ndarray:
    """Generalized winding number (exact sum of solid angles / 4π), float64.

    verts (V,3), faces (F,3), points (N,3) -> (N,): 1 inside and 0 outside a closed,
    outward-oriented mesh; a smooth inside measure on open ones (threshold 0.5).
    """
    verts, faces = np.asarray(verts, np.float64), np.asarray(faces, np.int64)
    points = np.asarray(points, np.float64)
    tri = verts[faces]
    nf = len(tri)
    step = max(1, chunk // nf)
    out = np.empty(len(points))
    for s in range(0, len(points), step):
        p = points[s : s + step]
        a = tri[None, :, 0] - p[:, None]
        b = tri[None, :, 1] - p[:, None]
        c = tri[None, :, 2] - p[:, None]
        la, lb, lc = (np.linalg.norm(x, axis=2) for x in (a, b, c))
        det = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
        den = (
            la * lb * lc
            + np.einsum("pfi,pfi->pf", a, b) * lc
            + np.einsum("pfi,pfi->pf", b, c) * la
            + np.einsum("pfi,pfi->pf", c, a) * lb
        )
        out[s : s + step] = np.arctan2(det, den).sum(axis=1) / (2.0 * np.pi)
    return out
