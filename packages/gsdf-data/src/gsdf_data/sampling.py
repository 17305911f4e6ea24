"""SDF point sampling for a hand-object pair (or any set of meshes) in the unit cube.

DeepSDF-style, as the reference preprocessing: most points are surface samples perturbed by
Gaussian noise of two variances (0.005 and 0.0005, unit-cube units), the rest uniform in
[-1, 1]³ (6 %). Every point carries its signed distance to every mesh (negative inside).
Each mesh then gets at least ``min_per_side`` inside and outside points: missing ones are
topped up with points just inside / outside its surface, replacing surplus points, so the
total stays ``n``. Results are deterministic per (sample id, seed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numba as nb
import numpy as np

from gsdf_data.normalize import Normalization, pair_normalization
from gsdf_data.sdf import (
    BACKEND_ALIASES,
    DEFAULT_RAYS,
    MeshSDF,
    backend_name,
    is_similarity,
    mesh_to_sdf_signed_distance,
    morton_order,
)


class SamplingError(ValueError):
    """The sampler could not meet the inside/outside quotas for a mesh."""


@dataclass(frozen=True)
class SamplingConfig:
    """How points are drawn and their SDFs computed.

    n: points per sample. variances: Gaussian noise variances of the near-surface points.
    uniform_fraction: share of points uniform in [-1,1]³. mesh_fractions: share of the
    near-surface points per mesh (hand, object); ``None`` = by surface area (reference).
    min_per_side: required inside and outside points per mesh. backend / sign / n_rays: see
    :mod:`gsdf_data.sdf`; the deprecated backend name ``"open3d"`` is recorded as ``"ours"``.
    """

    n: int = 40_000
    variances: tuple[float, float] = (0.005, 0.0005)
    uniform_fraction: float = 0.06
    mesh_fractions: tuple[float, ...] | None = (0.5, 0.5)
    min_per_side: int = 500
    backend: str = "auto"
    sign: str = "vote"
    n_rays: int = DEFAULT_RAYS
    max_topup_rounds: int = 8

    def __post_init__(self) -> None:
        if self.backend in BACKEND_ALIASES:
            # stack: here, the dataclass's __init__, the caller
            object.__setattr__(self, "backend", backend_name(self.backend, stacklevel=4))


@dataclass
class SDFSamples:
    """points (N,3) float32 in the unit cube; sdf (N,M) float32 per mesh, unit-cube units;
    norm maps unit cube to the input frame; counts (M,2) inside/outside per mesh."""

    points: np.ndarray
    sdf: np.ndarray
    norm: Normalization
    counts: np.ndarray = field(default=None)


def sample_rng(sample_id: str, seed: int) -> np.random.Generator:
    """The generator for one sample: depends only on (sample id, seed), not on run order."""
    h = hashlib.sha256(str(sample_id).encode()).digest()
    words = [int.from_bytes(h[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *words])


@nb.njit(cache=True)
def _surface_points(tri, cdf, u, r1, r2):
    """Points on triangles (F, 9: a, b - a, c - a): triangle ``searchsorted(cdf, u)`` at
    barycentric (r1, r2) (folded into the triangle where r1 + r2 > 1); (N,3) points and (N,)
    triangle indices."""
    n, nf = len(u), len(cdf)
    pts = np.empty((n, 3))
    fid = np.empty(n, np.int64)
    for i in range(n):
        lo, hi = 0, nf  # first index with cdf > u[i] (searchsorted side="right")
        while lo < hi:
            mid = (lo + hi) >> 1
            if cdf[mid] <= u[i]:
                lo = mid + 1
            else:
                hi = mid
        f = min(lo, nf - 1)
        a, b = r1[i], r2[i]
        if a + b > 1.0:
            a, b = 1.0 - a, 1.0 - b
        for k in range(3):
            pts[i, k] = tri[f, k] + a * tri[f, 3 + k] + b * tri[f, 6 + k]
        fid[i] = f
    return pts, fid


def _surface(verts, faces, n, rng, normals: bool = False):
    """n area-weighted surface points (n,3); with ``normals``, also their face normals."""
    tri = verts[faces]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    # cross product by components: np.cross is several times slower on (F,3)
    cross = np.empty_like(e1)
    cross[:, 0] = e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1]
    cross[:, 1] = e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2]
    cross[:, 2] = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    area = 0.5 * np.sqrt(np.einsum("ij,ij->i", cross, cross))
    cdf = np.cumsum(area)
    u = rng.random(n) * cdf[-1]
    r1, r2 = rng.random(n), rng.random(n)
    pts, fid = _surface_points(np.concatenate([tri[:, 0], e1, e2], axis=1), cdf, u, r1, r2)
    if not normals:
        return pts
    return pts, cross[fid] / np.maximum(2.0 * area[fid], 1e-30)[:, None]


def _area(verts, faces) -> float:
    tri = verts[faces]
    return float(
        0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    )


def _in_cube(p, rng, noise_std, base):
    """Redraw noise for points that left [-1,1]³ (a few tries), then clip."""
    for _ in range(4):
        bad = np.any(np.abs(p) > 1.0, axis=1)
        if not bad.any():
            break
        p[bad] = base[bad] + rng.normal(0.0, 1.0, (bad.sum(), 3)) * noise_std[bad]
    return np.clip(p, -1.0, 1.0)


def _split(n, fractions):
    fr = np.asarray(fractions, dtype=np.float64)
    fr = fr / fr.sum()
    counts = np.floor(fr * n).astype(int)
    counts[0] += n - counts.sum()
    return counts


def sample_points(
    meshes: list,
    config: SamplingConfig = SamplingConfig(),
    sample_id: str = "",
    seed: int = 0,
    rng: np.random.Generator | None = None,
    norm: Normalization | None = None,
    frames: list | None = None,
    objects: list | None = None,
) -> SDFSamples:
    """Sample ``config.n`` points around several meshes and their SDF to each.

    Args:
        meshes: M meshes (trimesh or (verts, faces)), all in the same frame.
        config: see :class:`SamplingConfig`.
        sample_id, seed: select the random stream (ignored when ``rng`` is given).
        norm: normalisation to use; default: the union of the meshes (radius × 1.03).
        frames: per mesh, ``None`` or the (4,4) similarity from the mesh's own (model) frame
            to the meshes' frame; our backend then queries in the model frame
            (faster on rotated objects, same values; see :class:`gsdf_data.sdf.MeshSDF`).
        objects: per mesh, ``None`` or its :class:`gsdf_data.object_cache.ObjectModel`
            (``frames`` maps its vertices onto the mesh): the queries then use the model's
            BVH and ray scene, built once per process for all its samples.

    Returns:
        :class:`SDFSamples` with points (N,3) and sdf (N,M) in unit-cube units.

    Raises:
        SamplingError: a mesh still lacks inside or outside points after top-up.
    """
    rng = rng if rng is not None else sample_rng(sample_id, seed)
    arrays = []
    for m in meshes:
        if isinstance(m, tuple | list):
            v, f = m
        else:
            v, f = m.vertices, m.faces
        arrays.append((np.asarray(v, np.float64), np.asarray(f, np.int64)))
    if norm is None:
        norm = pair_normalization(*(v for v, _ in arrays))
    unit = [(norm.to_unit(v), f) for v, f in arrays]
    nm = len(unit)
    n = config.n
    n_uni = round(n * config.uniform_fraction)
    n_near = n - n_uni
    fractions = config.mesh_fractions
    if fractions is None:
        fractions = [_area(v, f) for v, f in unit]
    if len(fractions) < nm:
        raise ValueError(f"mesh_fractions has {len(fractions)} entries for {nm} meshes")
    per_mesh = _split(n_near, list(fractions)[:nm])
    std = np.sqrt(np.asarray(config.variances, dtype=np.float64))
    chunks = []
    for (v, f), k in zip(unit, per_mesh, strict=True):
        base = _surface(v, f, k, rng)
        half = k // 2
        s = np.where(np.arange(k) < half, std[0], std[1])[:, None]
        p = base + rng.normal(0.0, 1.0, (k, 3)) * s
        chunks.append(_in_cube(p, rng, s, base))
    chunks.append(rng.uniform(-1.0, 1.0, (n_uni, 3)))
    points = np.concatenate(chunks)
    points = points[morton_order(points)]  # the SDF queries run faster in this order

    if config.backend == "mesh-to-sdf":

        def sdf_of(p, ordered=False):
            return np.stack([mesh_to_sdf_signed_distance(m, p) for m in unit], axis=1)

    elif config.backend in ("auto", "ours"):
        frames = list(frames) if frames is not None else [None] * nm
        objects = list(objects) if objects is not None else [None] * nm
        opts = {"sign": config.sign, "n_rays": config.n_rays}
        queries = []
        for (v, f), fr, obj in zip(unit, frames, objects, strict=True):
            fr = _unit_frame(fr, norm)
            if fr is not None and obj is not None:
                queries.append(obj.query(**opts).placed(fr))
            else:
                queries.append(MeshSDF(v, f, frame=fr, **opts))

        def sdf_of(p, ordered=False):
            return np.stack([q.signed_distance(p, ordered) for q in queries], axis=1)

    else:
        raise ValueError(f"unknown SDF backend {config.backend!r}")

    sdf = sdf_of(points, ordered=True)
    sdf = _top_up(points, sdf, unit, config, rng, std[1], sdf_of)
    perm = rng.permutation(n)  # no order by origin: any contiguous run is a random subset
    points, sdf = points.astype(np.float32)[perm], sdf.astype(np.float32)[perm]
    inside = sdf < 0
    counts = np.stack([inside.sum(0), (~inside).sum(0)], axis=1)
    return SDFSamples(points, sdf, norm, counts)


def _unit_frame(frame, norm: Normalization) -> np.ndarray | None:
    """A (4,4) map model -> meshes' frame, followed by the normalisation: model -> unit cube.
    None when `frame` is not a similarity (e.g. a sloppy rotation): the queries then run in
    the unit cube itself, which only costs speed."""
    if not is_similarity(frame):
        return None
    f = np.array(frame, dtype=np.float64)
    f[:3, :3] /= norm.scale
    f[:3, 3] = (f[:3, 3] - norm.offset) / norm.scale
    return f


def _top_up(points, sdf, unit, config, rng, std, sdf_of):
    """Replace surplus points by points just inside/outside meshes lacking them (in place)."""
    need = config.min_per_side
    for _ in range(config.max_topup_rounds):
        inside = sdf < 0
        n_in = inside.sum(0)
        n_out = len(sdf) - n_in
        short = [(j, s) for j in range(len(unit)) for s in (0, 1) if (n_in, n_out)[s][j] < need]
        if not short:
            return sdf
        for j, s in short:
            missing = need - (n_in, n_out)[s][j]
            v, f = unit[j]
            k = max(4 * missing, 256)
            base, nrm = _surface(v, f, k, rng, normals=True)
            step = np.abs(rng.normal(0.0, std, (k, 1))) + 1e-4
            cand = np.clip(base + (step if s else -step) * nrm, -1.0, 1.0)
            csdf = sdf_of(cand)
            ok = (csdf[:, j] < 0) if s == 0 else (csdf[:, j] >= 0)
            cand, csdf = cand[ok][:missing], csdf[ok][:missing]
            if len(cand) == 0:
                continue
            # Replace points whose removal keeps every quota: sides with a surplus only.
            inside = sdf < 0
            n_in = inside.sum(0)
            n_out = len(sdf) - n_in
            free = np.ones(len(sdf), dtype=bool)
            for jj in range(len(unit)):
                if n_in[jj] <= need + len(cand):
                    free &= ~inside[:, jj]
                if n_out[jj] <= need + len(cand):
                    free &= inside[:, jj]
            idx = np.nonzero(free)[0]
            if len(idx) < len(cand):
                continue
            idx = rng.choice(idx, size=len(cand), replace=False)
            points[idx] = cand
            sdf[idx] = csdf
    inside = sdf < 0
    n_in = inside.sum(0)
    n_out = len(sdf) - n_in
    for j in range(len(unit)):
        if n_in[j] < need or n_out[j] < need:
            raise SamplingError(
                f"mesh {j}: {n_in[j]} inside / {n_out[j]} outside points, need {need} each"
            )
    return sdf


def sample_sdf_points(
    hand_mesh,
    obj_mesh,
    n: int = 40_000,
    seed: int = 0,
    sample_id: str = "",
    rng: np.random.Generator | None = None,
    config: SamplingConfig | None = None,
) -> dict:
    """The 40,000-point SDF sample of one hand-object pair (meshes in the camera frame).

    Returns a dict: points (n,3) float32 unit cube, sdf_hand (n,), sdf_obj (n,) float32 in
    unit-cube units, norm_offset (3,) float32, norm_scale () float32 (camera = unit ·
    scale + offset).
    """
    cfg = config or SamplingConfig()
    if cfg.n != n:
        cfg = SamplingConfig(**{**cfg.__dict__, "n": n})
    s = sample_points([hand_mesh, obj_mesh], cfg, sample_id=sample_id, seed=seed, rng=rng)
    return {
        "points": s.points,
        "sdf_hand": s.sdf[:, 0].copy(),
        "sdf_obj": s.sdf[:, 1].copy(),
        "norm_offset": s.norm.offset.astype(np.float32),
        "norm_scale": np.float32(s.norm.scale),
    }
