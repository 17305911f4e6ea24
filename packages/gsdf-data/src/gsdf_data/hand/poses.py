"""Plausible hand poses: grasp-like finger flexion inside joint limits, for any model.

Flexion axes come from the model's own rest skeleton (bone directions and the palm normal),
so the same sampler drives the procedural hand and MANO, right or left. Every finger joint
turns about axes perpendicular to its rest bone (flexion, plus abduction at the roots), so the
poses are what analytic IK can represent up to the small twist that composing the two root
axes adds.
"""

from __future__ import annotations

import numpy as np

from gsdf_data.hand.kinematics import FINGER_ROOTS

# Joint limits (radians) of the flexion angle, per finger joint in root->tip order.
FLEX_LIMITS = {
    "finger": ((-0.2, 1.55), (0.0, 1.75), (0.0, 1.35)),
    "thumb": ((-0.3, 0.9), (-0.1, 1.0), (-0.3, 1.4)),
}
ABDUCTION_LIMIT = {"finger": 0.3, "thumb": 0.5}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def joint_axes(rest_mano21: np.ndarray, side: str = "right") -> tuple[np.ndarray, np.ndarray]:
    """Flexion and abduction axes (16, 3) each (row 0 unused) from rest points (21, 3) in
    MANO order (16 joints, then tips thumb..little). Positive flexion curls towards the palm."""
    J = rest_mano21
    # axes are pseudovectors: mirrored hands need the chirality sign to mirror them right
    chirality = -1.0 if side == "left" else 1.0
    palm = chirality * _unit(np.cross(J[1] - J[0], J[10] - J[0]))  # palmar normal
    child = {j: j + 1 for j in range(16)}
    for f, root in enumerate(FINGER_ROOTS):
        child[root + 2] = 16 + f
    flex = np.zeros((16, 3))
    abd = np.zeros((16, 3))
    for f, root in enumerate(FINGER_ROOTS):
        towards = palm
        if f == 0:  # the thumb curls across the palm, towards the little finger
            towards = _unit(palm + 0.8 * _unit(J[7] - J[13]))
        for j in (root, root + 1, root + 2):
            d = _unit(J[child[j]] - J[j])
            flex[j] = _unit(np.cross(d, towards))
            abd[j] = chirality * _unit(np.cross(flex[j], d))
    return flex, abd


def sample_poses(
    n: int,
    rng: np.random.Generator,
    grasp: float | None = None,
    rest_mano21: np.ndarray | None = None,
    side: str = "right",
    noise: float = 1.0,
) -> np.ndarray:
    """Grasp-like finger poses: (n, 45) axis-angle of joints 1..15 (MANO order, a model
    without hands_mean, i.e. flat hand at zero).

    grasp: mean hand closure in [0, 1] (0 open, 1 fist); None draws it per sample. Fingers
    close together with some spread, the little and ring fingers a bit more, the thumb
    opposes. rest_mano21: the model's rest points (21, 3) MANO order (default: the
    procedural hand); side flips the curl direction for left hands; noise scales the
    per-finger randomness (0: every finger follows `grasp` exactly).
    """
    from gsdf_data.hand.kinematics import from_paper_order

    if rest_mano21 is None:
        import torch

        from gsdf_data.hand.models import ProceduralHand

        rest = ProceduralHand(side=side, dtype=torch.float64).rest_keypoints()[0]
        rest_mano21 = from_paper_order(rest).numpy()
    flex_ax, abd_ax = joint_axes(np.asarray(rest_mano21, dtype=np.float64), side)
    closure = rng.uniform(0, 1, n) if grasp is None else np.full(n, float(grasp))
    aa = np.zeros((n, 16, 3))
    for f, root in enumerate(FINGER_ROOTS):
        kind = "thumb" if f == 0 else "finger"
        bias = (0.0, -0.05, 0.0, 0.05, 0.1)[f]
        c = np.clip(closure + bias + noise * rng.normal(0, 0.12, n), -0.05, 1.0)
        shares = (0.6, 0.72, 0.55) if kind == "finger" else (0.5, 0.5, 0.5)
        spread = noise * rng.normal(0, 0.35, n) * (1 - 0.6 * np.clip(c, 0, 1))
        for k, j in enumerate((root, root + 1, root + 2)):
            lo, hi = FLEX_LIMITS[kind][k]
            angle = np.clip(c * shares[k] * hi + noise * rng.normal(0, 0.06, n), lo, hi)
            aa[:, j] = angle[:, None] * flex_ax[j]
            if k == 0:
                lim = ABDUCTION_LIMIT[kind]
                ab = np.clip(spread * lim, -lim, lim)
                if kind == "thumb":  # opposition: swing the thumb in front of the palm
                    ab = ab + 0.3 * np.clip(c, 0, 1)
                aa[:, j] += ab[:, None] * abd_ax[j]
    return aa[:, 1:].reshape(n, 45).astype(np.float32)


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform random rotations as axis-angle (n, 3)."""
    q = _unit(rng.normal(size=(n, 4)))
    q[q[:, 0] < 0] *= -1
    angle = 2 * np.arccos(np.clip(q[:, 0], -1, 1))
    axis = _unit(q[:, 1:] + 1e-12)
    return (axis * angle[:, None]).astype(np.float32)
