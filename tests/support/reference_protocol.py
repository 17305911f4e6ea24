"""An independent, brute-force implementation of the reference evaluation protocol.

Written for the tests from the protocol's description (the gSDF reference code: `icp_ts` in
solver.py, the metrics of eval.py, eval_contact.py), with plain numpy and scipy and no code
shared with gsdf_eval: its own area-weighted sampler, the ICP with an explicit least-squares
design matrix solved by `np.linalg.lstsq`, exact winding numbers (signed solid angles) and
exact point-triangle distances for libigl's default signed distance, and the lattice built
node by node in float32. Slow and simple on purpose; use small meshes.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def sample_area_weighted(vertices, faces, n, rng):
    """n points uniformly distributed over the surface (faces chosen by area)."""
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    cdf = np.cumsum(area)
    face = np.minimum(np.searchsorted(cdf, rng.uniform(0, cdf[-1], n)), len(area) - 1)
    r1, r2 = rng.uniform(size=n), rng.uniform(size=n)
    flip = r1 + r2 > 1
    r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
    return a[face] + r1[:, None] * (b - a)[face] + r2[:, None] * (c - a)[face]


def icp_ts(src, dst, max_iter=100, stop_error=1e-3, stop_improvement=1e-5):
    """The reference's scale + translation ICP of src (prediction) onto dst (GT).

    Returns (scale, translation (3,), solves): x_aligned = scale * x + translation.
    """
    off_s, off_t = src.mean(0), dst.mean(0)
    sc_s = np.sqrt(((src - off_s) ** 2).sum() / len(src))
    sc_t = np.sqrt(((dst - off_t) ** 2).sum() / len(dst))
    p = (src - off_s) / sc_s * sc_t + off_t  # moment-matched source, as the reference keeps it
    tree_t, tree_s = cKDTree(dst), cKDTree(p)
    scale, trans = 1.0, np.zeros(3)
    previous, solves = 1e8, 0
    n_rows = 3 * (len(p) + len(dst))
    unit = np.zeros((n_rows, 3))
    unit[np.arange(n_rows), np.arange(n_rows) % 3] = 1.0  # the t_x, t_y, t_z columns
    for _ in range(max_iter):
        q = p * scale + trans
        closest_t = dst[tree_t.query(q)[1]]
        i_s = tree_s.query((dst - trans) / scale)[1]
        closest_s = p[i_s] * scale + trans
        error = np.sqrt(
            (((q - closest_t) ** 2).sum() + ((dst - closest_s) ** 2).sum()) / (len(p) + len(dst))
        )
        if previous - error < stop_improvement:
            break
        previous = error
        if error < stop_error:
            break
        design = np.hstack([np.concatenate([p.ravel(), p[i_s].ravel()])[:, None], unit])
        rhs = np.concatenate([closest_t.ravel(), dst.ravel()])
        x = np.linalg.lstsq(design, rhs, rcond=None)[0]
        scale, trans = float(x[0]), x[1:]
        solves += 1
    total_scale = sc_t * scale / sc_s
    total_trans = trans + off_t * scale - off_s * total_scale
    return total_scale, total_trans, solves


def chamfer_fscores(pred_pts, gt_pts, thresholds_m):
    """(CD in cm², [F-score at each threshold]) as eval.py: strict <, 2PR/(P + R + 1e-7)."""
    d_gt = cKDTree(pred_pts).query(gt_pts)[0] * 100.0
    d_pred = cKDTree(gt_pts).query(pred_pts)[0] * 100.0
    cd = np.mean(d_gt**2) + np.mean(d_pred**2)
    out = []
    for thr in thresholds_m:
        p1, p2 = np.mean(d_gt < thr * 100.0), np.mean(d_pred < thr * 100.0)
        out.append(2 * p1 * p2 / (p1 + p2 + 1e-7))
    return cd, out


def _chunks(points, size=64):
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    for i in range(0, len(points), size):
        yield points[i : i + size, None, :]  # (chunk, 1, 3), broadcast against (F, 3)


def winding_numbers(vertices, faces, points):
    """Exact generalised winding numbers: Σ signed solid angles / 4π (Van Oosterom &
    Strackee), by brute force over all triangles."""
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    dot = lambda u, v: (u * v).sum(-1)  # noqa: E731
    out = []
    for x in _chunks(points):
        a, b, c = tri[None, :, 0] - x, tri[None, :, 1] - x, tri[None, :, 2] - x
        la, lb, lc = (np.linalg.norm(v, axis=-1) for v in (a, b, c))
        det = dot(a, np.cross(b, c))
        den = la * lb * lc + dot(a, b) * lc + dot(b, c) * la + dot(c, a) * lb
        out.append(np.arctan2(det, den).sum(-1) / (2.0 * np.pi))
    return np.concatenate(out) if out else np.zeros(0)


def point_triangle_distances(vertices, faces, points):
    """Exact distance from each point to the nearest triangle (Ericson's closest point on a
    triangle, region by region), by brute force over all triangles."""
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    a, b, c = tri[None, :, 0], tri[None, :, 1], tri[None, :, 2]
    ab, ac = b - a, c - a
    dot = lambda u, v: (u * v).sum(-1)  # noqa: E731
    out = []
    for x in _chunks(points):
        ap, bp, cp = x - a, x - b, x - c
        d1, d2 = dot(ab, ap), dot(ac, ap)
        d3, d4 = dot(ab, bp), dot(ac, bp)
        d5, d6 = dot(ab, cp), dot(ac, cp)
        va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
        with np.errstate(divide="ignore", invalid="ignore"):
            denom = 1.0 / (va + vb + vc)
            closest = a + ab * (vb * denom)[..., None] + ac * (vc * denom)[..., None]  # face
            t_ab = d1 / (d1 - d3)
            t_ac = d2 / (d2 - d6)
            t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        regions = [  # (condition, closest point); later entries take precedence
            ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), b + (c - b) * t_bc[..., None]),
            ((vb <= 0) & (d2 >= 0) & (d6 <= 0), a + ac * t_ac[..., None]),
            ((d6 >= 0) & (d5 <= d6), c),
            ((vc <= 0) & (d1 >= 0) & (d3 <= 0), a + ab * t_ab[..., None]),
            ((d3 >= 0) & (d4 <= d3), b),
            ((d1 <= 0) & (d2 <= 0), a),
        ]
        for cond, point in regions:
            closest = np.where(cond[..., None], point, closest)
        out.append(np.sqrt(((closest - x) ** 2).sum(-1).min(-1)))
    return np.concatenate(out) if out else np.zeros(0)


def signed_distances(vertices, faces, points):
    """libigl's default signed distance: (1 − 2|w|)·d, negative inside."""
    w = winding_numbers(vertices, faces, points)
    return (1.0 - 2.0 * np.abs(w)) * point_triangle_distances(vertices, faces, points)


def lattice(lo, hi, res=0.005):
    """The reference's uniform_box_sampling: float32 nodes from lo − res to hi + res."""
    x_min, y_min, z_min = lo[0] - res, lo[1] - res, lo[2] - res
    h = int((hi[0] + res - x_min) / res) + 1
    le = int((hi[1] + res - y_min) / res) + 1
    w = int((hi[2] + res - z_min) / res) + 1
    xyz = np.zeros((h, le, w, 3), dtype=np.float32) + np.array(
        [x_min, y_min, z_min], dtype=np.float32
    )
    for i in range(1, h):
        xyz[i, 0, 0] = xyz[i - 1, 0, 0] + np.array([res, 0, 0], dtype=np.float32)
    for i in range(1, le):
        xyz[:, i, 0] = xyz[:, i - 1, 0] + np.array([0, res, 0], dtype=np.float32)
    for i in range(1, w):
        xyz[:, :, i] = xyz[:, :, i - 1] + np.array([0, 0, res], dtype=np.float32)
    return xyz.reshape(-1, 3).astype(np.float64)


def _negative(vertices, faces, points):
    """S < 0 for libigl's default signed distance: |w| > 0.5 and a positive distance (the
    distance, the slow part, only where the winding number already says inside)."""
    inside = np.abs(winding_numbers(vertices, faces, points)) > 0.5
    inside[inside] = point_triangle_distances(vertices, faces, points[inside]) > 0
    return inside


def contact(hand_v, hand_f, obj_v, obj_f, res=0.005):
    """(contact, depth cm, volume cm³) as eval_contact.py, on all hand vertices."""
    s = signed_distances(obj_v, obj_f, hand_v + 1e-10)
    if s.min() > 0:
        return False, 0.0, 0.0
    lo = np.maximum(hand_v.min(0), obj_v.min(0))
    hi = np.minimum(hand_v.max(0), obj_v.max(0))
    if not (hi > lo).all():
        return False, 0.0, 0.0
    nodes = lattice(lo, hi, res)
    # the reference tests the hand first, then the object; the same set either way
    in_obj = nodes[_negative(obj_v, obj_f, nodes)]
    both = int(_negative(hand_v, hand_f, in_obj).sum())
    return True, abs(s.min()) * 100.0, both * res**3 * 1e6


def score_pair(hand_pred, hand_gt, obj_pred, obj_gt, rng, n=30_000):
    """Every metric of the reference protocol for one pair of (vertices, faces) tuples."""
    hp = sample_area_weighted(*hand_pred, n, rng)
    hg = sample_area_weighted(*hand_gt, n, rng)
    scale, trans, solves = icp_ts(hp, hg)
    hand_v = hand_pred[0] * scale + trans
    obj_v = obj_pred[0] * scale + trans
    cd_h, (f1, f5) = chamfer_fscores(
        sample_area_weighted(hand_v, hand_pred[1], n, rng),
        sample_area_weighted(*hand_gt, n, rng),
        (0.001, 0.005),
    )
    cd_o, (fo5, fo10) = chamfer_fscores(
        sample_area_weighted(obj_v, obj_pred[1], n, rng),
        sample_area_weighted(*obj_gt, n, rng),
        (0.005, 0.010),
    )
    in_contact, depth, volume = contact(hand_v, hand_pred[1], obj_v, obj_pred[1])
    return {
        "hand_cd_cm2": cd_h,
        "hand_fscore_1mm": f1,
        "hand_fscore_5mm": f5,
        "obj_cd_cm2": cd_o,
        "obj_fscore_5mm": fo5,
        "obj_fscore_10mm": fo10,
        "penetration_cm": depth,
        "intersection_cm3": volume,
        "contact": in_contact,
        "align_scale": scale,
        "align_solves": solves,
    }
