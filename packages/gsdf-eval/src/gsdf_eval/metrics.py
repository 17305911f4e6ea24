"""Point-set and pose metrics in the paper's units: Chamfer (cm²), F-score, Eh and Eo (cm).

Distances come in metres (nearest-neighbour distances between 30,000 surface samples, see
align.py and nn.py); the functions here only reduce them.
"""

from __future__ import annotations

import numpy as np

M_TO_CM = 100.0


def chamfer_cm2(d_pred: np.ndarray, d_gt: np.ndarray) -> float:
    """Chamfer distance (cm²): mean squared NN distance pred→GT plus GT→pred.

    d_pred (N,): distances (m) from predicted samples to GT; d_gt (M,): GT to predicted.
    """
    return float(np.mean((d_pred * M_TO_CM) ** 2) + np.mean((d_gt * M_TO_CM) ** 2))


def fscore(d_pred: np.ndarray, d_gt: np.ndarray, threshold_m: float, eps: float = 0.0) -> float:
    """F-score at a distance threshold (m): harmonic mean of precision and recall.

    precision: fraction of predicted samples strictly within the threshold of GT (d_pred
    (N,)); recall: likewise for GT samples (d_gt (M,)). 2PR / (P + R + eps): the reference
    code adds eps = 1e-7 to the denominator; with eps = 0, P = R = 0 gives 0.
    """
    precision = float(np.mean(d_pred < threshold_m))
    recall = float(np.mean(d_gt < threshold_m))
    if precision + recall + eps == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall + eps)


def joint_error_cm(pred: np.ndarray, gt: np.ndarray) -> float:
    """Eh as the reference scores it: mean joint position error (cm) over joints (21, 3),
    in the frame both sets are given in (the camera frame), without any alignment."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(gt, dtype=np.float64)
    return float(np.linalg.norm(diff, axis=1).mean() * M_TO_CM)


def joint_error_rel_cm(pred: np.ndarray, gt: np.ndarray) -> float:
    """Eh as the paper's text words it: mean wrist-relative joint error (cm), wrist first."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    rel = (pred - pred[0]) - (gt - gt[0])
    return float(np.linalg.norm(rel, axis=1).mean() * M_TO_CM)


def center_error_cm(pred: np.ndarray, gt: np.ndarray) -> float:
    """Eo: distance (cm) between predicted and GT object centres (3,), camera frame."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(gt, dtype=np.float64)
    return float(np.linalg.norm(diff) * M_TO_CM)
