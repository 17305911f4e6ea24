"""Exact nearest neighbours between point sets: the one KD-tree gsdf-eval uses.

pykdtree rather than scipy's cKDTree: the same exact answers, at about 1.5x less time on
30,000 surface samples of a good prediction and 3-5x less on a poor one (a tiny placeholder
sphere scaled up by the alignment, a blobby hand, an object far from its ground truth),
where a query is nearly equidistant from many points and any KD-tree opens most leaves.
(bench/bench_eval.py has the pair timings.) Its queries run on OpenMP threads; score_pair
limits them to one.
"""

from __future__ import annotations

import numpy as np
from pykdtree.kdtree import KDTree


def kd_tree(points: np.ndarray):
    """KD-tree over points (N, 3); `.query(x (M, 3), k)` -> (distances, indices), exact.

    Queries must be float64 and C-contiguous like the tree's points; indices are uint32,
    and k=1 gives (M,) arrays, k>1 (M, k).
    """
    return KDTree(np.ascontiguousarray(points, dtype=np.float64))


def nn_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour distances between point sets a (N, 3) and b (M, 3).

    Returns (d_ab (N,): from each point of a to b, d_ba (M,): from each point of b to a).
    """
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    d_ab, _ = kd_tree(b).query(a)
    d_ba, _ = kd_tree(a).query(b)
    return d_ab, d_ba
