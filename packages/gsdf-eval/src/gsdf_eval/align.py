"""Scale + translation alignment of a predicted hand onto the ground-truth hand (ICP).

Two protocols share the machinery here (nearest neighbours from prediction to GT and from
GT to prediction, one least-squares scale + translation over both correspondence sets per
step, started by matching centroids and RMS radii); they differ in when they stop.

`align_reference` (protocol "gsdf", the default) is the reference code's `icp_ts`, which
decided the published numbers: before each solve it computes the RMS residual over both
correspondence sets and stops when that improved by less than 10 µm since the previous
check (a solve that made it worse is kept) or is below 1 mm, so a near-perfect prediction is
not moved at all; at most 100 solves. It does not run to convergence, so its iterates are
reproduced one by one: full 30,000-point sets, no extrapolation.

`align_scale_translation` (protocol "converged") runs ICP to its fixed point instead.
Speed: coarse to fine (3,000, 15,000, then all 30,000 points), and as in Besl & McKay's
accelerated ICP two successive steps that point the same way trigger a jump ahead along
the geometric series they imply. It stops when an update moves the source by less than
1 µm or at an exact fixed point (no correspondence changed), else after max_iter steps.

Both build each KD-tree (nn.py) once: the GT tree in the world frame, the prediction tree
in the prediction's own frame, queried with inverse-transformed GT points (a similarity
transform keeps nearest neighbours). Nearest neighbours are cached with the gap to the
second neighbour: a point that moved less than half that gap since it was last queried
provably keeps its neighbour, so late iterations re-query only a few points; the result is
the same as querying everything every iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gsdf_eval.mesh import triangle_areas
from gsdf_eval.nn import kd_tree


@dataclass(frozen=True)
class AlignResult:
    """x_aligned = scale · x + translation (metres).

    iterations: ICP solves run (≤ max_iter, all levels together for "converged");
    converged: stopped by the protocol's rule (tolerance, fixed point, or the reference's
    RMS rule) rather than by max_iter.
    dist_src (N,) / dist_dst (M,): final nearest-neighbour distances (metres) from each
    aligned source sample to the target samples and from each target sample to the aligned
    source samples — what Chamfer distance and F-score are computed from.
    """

    scale: float
    translation: np.ndarray
    iterations: int
    converged: bool
    dist_src: np.ndarray
    dist_dst: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        """points (..., 3) -> aligned points (..., 3)."""
        return points * self.scale + self.translation


def grid_cells(points: np.ndarray, cells: int = 64) -> np.ndarray:
    """Cell index (N,) of each point (N, 3) in a cells³ grid over the points' bounds, cells
    numbered in row-major order (gsdf-data's SDF queries use a Morton order instead)."""
    p = np.ascontiguousarray(np.asarray(points, dtype=np.float64).T)  # per axis: fast reductions
    lo = p.min(axis=1)
    span = (p.max(axis=1) - lo).max()
    scale = (cells - 1e-9) / (span if span > 0 else 1.0)
    i, j, k = (((p[d] - lo[d]) * scale).astype(np.int64) for d in range(3))
    return (i * cells + j) * cells + k


def sample_surface(mesh, n: int, rng: np.random.Generator, sets: int = 1):
    """n points (n, 3) uniformly distributed on the surface of a mesh (`vertices` (V, 3),
    `faces` (F, 3): a gsdf_eval.mesh.Mesh or a trimesh.Trimesh).

    A face is drawn with probability proportional to its area, then a point uniformly on it
    (two uniform numbers, reflected into the triangle when their sum exceeds 1). The draws
    from `rng` and the arithmetic are those of trimesh.sample.sample_surface, which this
    replaces without importing trimesh: the points are bitwise the same, in another order
    (tests/eval/test_mesh.py). They are returned grouped by the grid cell of their face: the
    order of a point set changes no metric, and spatially coherent queries make KD-tree
    searches about twice as fast. `sets` > 1 returns a list of that many independent n-point
    sets, drawn in one pass over the mesh (cheaper than separate calls).
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    count = n * sets
    # 1. per face: its corners, its area, and its cell of a grid over the mesh
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    cumulative = np.cumsum(triangle_areas(a, b, c))
    origin_edges = np.concatenate([a, b - a, c - a], axis=1)  # (F, 9): v0, v1 − v0, v2 − v0
    cell = grid_cells(a)
    # 2. the draws, in trimesh's order: a face per sample (searched in sorted order, which
    # is faster and finds the same faces), then two numbers per sample
    target = rng.random(count) * cumulative[-1]
    by_value = np.argsort(target)
    face = np.empty(count, dtype=np.int64)
    face[by_value] = np.searchsorted(cumulative, target[by_value])
    u = rng.random((count, 2))
    # the draws are independent, so consecutive blocks are independent sets
    out = []
    for block in range(sets):
        f, w = face[block * n : (block + 1) * n], u[block * n : (block + 1) * n]
        # 3. grouped by cell (a unique key per sample, so any sort gives this order)
        order = np.argsort(cell[f] * n + np.arange(n))
        oe, w = origin_edges[f[order]], w[order]
        # 4. a pair outside the triangle (sum > 1) is reflected back into it: u -> |u − 1|
        w = np.where((w[:, 0] + w[:, 1] > 1.0)[:, None], 1.0 - w, w)
        out.append((oe[:, 3:6] * w[:, :1] + oe[:, 6:9] * w[:, 1:]) + oe[:, 0:3])
    return out[0] if sets == 1 else out


class _CachedNN:
    """Exact nearest neighbours of moving query points in a fixed KD-tree.

    Keeps, per query point, its neighbour index, the distances to its first and second
    neighbour and where it was when queried. A point that has moved by less than
    (d2 - d1) / 2 since then still has the same nearest neighbour (triangle inequality).
    """

    def __init__(self, tree, n: int):
        self.tree = tree
        self.idx = np.zeros(n, dtype=np.int64)
        self.slack_sq = np.full(n, -1.0)  # ((d2 - d1) / 2)²; negative: never queried
        self.at = np.zeros((n, 3))
        self.requeried = 0

    def update(self, x: np.ndarray) -> np.ndarray:
        """x (n, 3): current query positions -> nearest neighbour indices (n,)."""
        diff = x - self.at
        moved_sq = np.einsum("ij,ij->i", diff, diff)  # faster than a sum over the last axis
        stale = np.flatnonzero(moved_sq >= self.slack_sq)
        if len(stale):
            k = 2 if self.tree.n > 1 else 1
            d, i = self.tree.query(x[stale], k=k)
            if k == 2:
                self.idx[stale] = i[:, 0]
                self.slack_sq[stale] = (0.5 * (d[:, 1] - d[:, 0])) ** 2
            else:
                self.idx[stale] = i
                self.slack_sq[stale] = np.inf
            self.at[stale] = x[stale]
            self.requeried += len(stale)
        return self.idx


class _Solver:
    """Closed-form scale + translation for the symmetric correspondences of one ICP step.

    Minimises Σ_i |s·src_i + t − dst_f(i)|² + Σ_j |s·src_b(j) + t − dst_j|² from running
    sums; both sets are centred once so the sums do not cancel catastrophically.
    """

    def __init__(self, src: np.ndarray, dst: np.ndarray):
        self.cs, self.cd = src.mean(axis=0), dst.mean(axis=0)
        self.src, self.dst = src - self.cs, dst - self.cd
        self.k = len(src) + len(dst)
        self.src_sq = float((self.src**2).sum())

    def __call__(self, i_fwd: np.ndarray, i_bwd: np.ndarray) -> tuple[float, np.ndarray]:
        d_f, s_b = self.dst[i_fwd], self.src[i_bwd]
        su = s_b.sum(axis=0)  # Σ src over all of src is 0 after centring
        sw = d_f.sum(axis=0)  # likewise Σ dst
        suw = float(np.einsum("ij,ij->", self.src, d_f) + np.einsum("ij,ij->", s_b, self.dst))
        suu = self.src_sq + float(np.einsum("ij,ij->", s_b, s_b))
        denom = suu - float(su @ su) / self.k
        s = (suw - float(su @ sw) / self.k) / denom if denom > 0 else 1.0
        t_centred = (sw - s * su) / self.k
        return s, t_centred + self.cd - s * self.cs


def _icp(src, dst, src_tree, dst_tree, s, t, max_iter, tol, accelerate=True):
    """Symmetric ICP iterations from (s, t); returns (s, t, iterations, converged, fwd, bwd)."""
    reach = np.sqrt(((src - src.mean(axis=0)) ** 2).sum(axis=1)).max()
    fwd = _CachedNN(dst_tree, len(src))  # aligned src -> dst, world frame
    bwd = _CachedNN(src_tree, len(dst))  # dst -> src, in src's own frame
    solve = _Solver(src, dst)
    prev, last_step = None, None
    iterations, converged = 0, False
    for _ in range(max_iter):
        i_fwd = fwd.update(src * s + t)
        i_bwd = bwd.update((dst - t) / s)
        if prev is not None and np.array_equal(prev[0], i_fwd) and np.array_equal(prev[1], i_bwd):
            converged = True  # same correspondences: every further iteration is a no-op
            break
        prev = (i_fwd.copy(), i_bwd.copy())
        s_new, t_new = solve(i_fwd, i_bwd)
        if not s_new > 0:  # degenerate correspondences; keep the last valid transform
            break
        iterations += 1
        # the update as a displacement (m): scale acts over the source's radius
        step = np.concatenate([[(s_new - s) * reach], (t_new - t) + (s_new - s) * src.mean(axis=0)])
        s, t = s_new, t_new
        size = float(np.linalg.norm(step))
        if size < tol:
            converged = True
            break
        if accelerate and last_step is not None:
            # Besl & McKay's accelerated ICP: when two successive updates point the same way
            # and shrink by a ratio r, jump ahead by the remaining geometric series r/(1-r),
            # at most 3 steps' worth: longer jumps invalidate more cached neighbours than
            # they save iterations (measured on 30k-sample hands).
            prev_size = float(np.linalg.norm(last_step))
            r = size / prev_size if prev_size > 0 else 1.0
            if r < 1 and step @ last_step > np.cos(np.radians(10)) * size * prev_size:
                k = min(r / (1 - r), 3.0)
                # step[1:] moves the centroid: Δt + Δs·μ; the jump is k·Δs and k·Δt
                ds = k * step[0] / reach
                s, t = s + ds, t + k * step[1:] - ds * src.mean(axis=0)
                last_step = None
                continue
        last_step = step
    return s, t, iterations, converged, fwd, bwd


def align_scale_translation(
    src: np.ndarray,
    dst: np.ndarray,
    max_iter: int = 100,
    tol: float = 1e-6,
    accelerate: bool = True,
    dst_tree=None,
    coarse: int = 3000,
    fine_tol: float = 1e-5,
) -> AlignResult:
    """Align point set src (N, 3) onto dst (M, 3) with a scale and a translation.

    Protocol "converged": symmetric ICP run to its fixed point (the reference protocol is
    `align_reference`). Initialise by matching centroids and RMS radii, then iterate
    nearest neighbours in both directions and the closed-form update, at most `max_iter`
    times, stopping early when an update moves the source by less than
    `tol` metres or no correspondence changes. `accelerate` enables the Besl & McKay jumps;
    without them the iterates are exactly those of textbook ICP.
    `dst_tree` may pass a prebuilt `kd_tree(dst)`. `coarse`: when both sets have more than
    twice this many points, ICP first converges on subsets of about this size, then on
    subsets 4x larger and so on, then refines on all points (each level at most `max_iter`
    iterations); every level after the first stops when an update moves the source by less
    than `fine_tol` (10 µm: 1 % of the finest F-score threshold; each full-size step costs a
    KD-tree query of most points); 0 disables it. `iterations` counts all levels.
    """
    src = np.ascontiguousarray(src, dtype=np.float64)
    dst = np.ascontiguousarray(dst, dtype=np.float64)

    s, t = moment_init(src, dst)
    iterations = 0
    # Coarse to fine: converge on evenly spread subsets first (the points come spatially
    # ordered, so a stride spreads them), then on all points. Far from the optimum every
    # step re-queries every point, and on a poor prediction (a placeholder sphere, a blob)
    # each query visits much of the tree; a level with a quarter of the points costs about
    # a sixteenth per step and leaves the next level a few steps from its own fixed point.
    # For 30,000 samples the levels are 3,000, 15,000 and 30,000 points.
    stride = min(len(src), len(dst)) // coarse if coarse else 0
    final_tol = max(tol, fine_tol) if stride >= 2 else tol
    while stride >= 2:
        a = np.ascontiguousarray(src[::stride])
        b = np.ascontiguousarray(dst[::stride])
        s, t, done, _, _, _ = _icp(a, b, kd_tree(a), kd_tree(b), s, t, max_iter, tol, accelerate)
        iterations += done
        stride //= 4
    if dst_tree is None:
        dst_tree = kd_tree(dst)
    s, t, fine_iterations, converged, fwd, bwd = _icp(
        src, dst, kd_tree(src), dst_tree, s, t, max_iter, final_tol, accelerate
    )
    iterations += fine_iterations

    i_fwd = fwd.update(src * s + t)
    i_bwd = bwd.update((dst - t) / s)
    e_src = src * s + t - dst[i_fwd]
    e_dst = src[i_bwd] * s + t - dst
    dist_src = np.sqrt(np.einsum("ij,ij->i", e_src, e_src))
    dist_dst = np.sqrt(np.einsum("ij,ij->i", e_dst, e_dst))
    return AlignResult(
        scale=float(s),
        translation=np.asarray(t, dtype=np.float64),
        iterations=iterations,
        converged=converged,
        dist_src=dist_src,
        dist_dst=dist_dst,
    )


def moment_init(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray]:
    """(s, t) mapping src's centroid and RMS radius onto dst's: the ICP starting point."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    rms_s = np.sqrt(((src - mu_s) ** 2).sum(axis=1).mean())
    rms_d = np.sqrt(((dst - mu_d) ** 2).sum(axis=1).mean())
    s = float(rms_d / rms_s) if rms_s > 0 else 1.0
    return s, mu_d - s * mu_s


def align_reference(
    src: np.ndarray,
    dst: np.ndarray,
    max_iter: int = 100,
    stop_error: float = 1e-3,
    stop_improvement: float = 1e-5,
) -> AlignResult:
    """The reference code's `icp_ts` on point sets src (N, 3) (prediction) and dst (M, 3).

    From the moment-matching start, each iteration finds the neighbours both ways and the
    RMS residual e over both sets (metres); it stops when the previous e minus e is below
    `stop_improvement` (so also when e grew; that last solve is kept) or when e is below
    `stop_error`, and otherwise solves scale + translation by least squares; at most
    `max_iter` solves. `iterations` counts the solves; `converged` is False only when the
    cap ended the loop.
    """
    src = np.ascontiguousarray(src, dtype=np.float64)
    dst = np.ascontiguousarray(dst, dtype=np.float64)
    s, t = moment_init(src, dst)
    fwd = _CachedNN(kd_tree(dst), len(src))
    bwd = _CachedNN(kd_tree(src), len(dst))
    solve = _Solver(src, dst)
    n_all = len(src) + len(dst)
    previous = 1e8  # the reference's initial "previous error"
    solves, stopped = 0, False
    for _ in range(max_iter):
        i_fwd = fwd.update(src * s + t)
        i_bwd = bwd.update((dst - t) / s)
        e_src = src * s + t - dst[i_fwd]
        e_dst = src[i_bwd] * s + t - dst
        error = np.sqrt(
            (np.einsum("ij,ij->", e_src, e_src) + np.einsum("ij,ij->", e_dst, e_dst)) / n_all
        )
        if previous - error < stop_improvement or error < stop_error:
            stopped = True
            break
        previous = error
        s_new, t_new = solve(i_fwd, i_bwd)
        if not s_new > 0:  # degenerate correspondences; keep the last valid transform
            stopped = True
            break
        s, t = s_new, t_new
        solves += 1
    if not stopped:  # the cap ended the loop after a solve: residuals at the final transform
        i_fwd = fwd.update(src * s + t)
        i_bwd = bwd.update((dst - t) / s)
        e_src = src * s + t - dst[i_fwd]
        e_dst = src[i_bwd] * s + t - dst
    return AlignResult(
        scale=float(s),
        translation=np.asarray(t, dtype=np.float64),
        iterations=solves,
        converged=stopped,
        dist_src=np.sqrt(np.einsum("ij,ij->i", e_src, e_src)),
        dist_dst=np.sqrt(np.einsum("ij,ij->i", e_dst, e_dst)),
    )
