"""Plausible hand poses: grasp-like finger flexion inside joint limits, for any model.

Flexion axes come from the model's own rest skeleton (bone directions and the palm normal),
so the same sampler drives the procedural hand and MANO, right or left. Every finger joint
turns about axes perpendicular to its rest bone (flexion, plus abduction at the roots), so the
poses are what analytic IK can represent up to the small twist that composing the two root
axes adds.

Two pose distributions share the axes: "closure" (a hand closure drawn per sample, fingers
following it inside joint limits; the default) and "curl" (each finger curled on its own
around an object, the thumb turned towards the palm: the synthetic dataset's grasps).
"""

from __future__ import annotations

from typing import NamedTuple

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


class PalmFrame(NamedTuple):
    """The palm of a rest hand: normal (3,) pointing to the palm side, along (3,) from the
    wrist towards the middle finger in the palm plane, centre (3,) the palm's centre."""

    normal: np.ndarray
    along: np.ndarray
    centre: np.ndarray


def palm_frame(rest_mano21: np.ndarray, side: str = "right") -> PalmFrame:
    """The palm frame of rest points (21, 3) in MANO order (a right hand's palmar normal is
    index root x little root, from the wrist)."""
    J = rest_mano21
    chirality = -1.0 if side == "left" else 1.0
    wrist, index, middle, ring, little = J[0], J[1], J[4], J[10], J[7]
    normal = chirality * _unit(np.cross(index - wrist, little - wrist))
    along = _unit(middle - wrist - np.dot(middle - wrist, normal) * normal)
    centre = 0.45 * wrist + 0.55 * (index + middle + ring + little) / 4.0
    return PalmFrame(normal, along, centre)


def joint_axes(
    rest_mano21: np.ndarray, side: str = "right", towards: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Flexion and abduction axes (16, 3) each (row 0 unused) from rest points (21, 3) in
    MANO order (16 joints, then tips thumb..little). Positive flexion curls towards the palm:
    a joint's flexion axis is its rest bone x the direction it curls towards.

    towards: that direction, (3,) for every joint or (16, 3) per joint; default the palmar
    normal of the index and ring roots for the fingers, and across the palm towards the little
    finger for the thumb.
    """
    J = rest_mano21
    # axes are pseudovectors: mirrored hands need the chirality sign to mirror them right
    chirality = -1.0 if side == "left" else 1.0
    palm = chirality * _unit(np.cross(J[1] - J[0], J[10] - J[0]))  # palmar normal
    if towards is not None:
        towards = np.broadcast_to(np.asarray(towards, dtype=np.float64), (16, 3))
    child = {j: j + 1 for j in range(16)}
    for f, root in enumerate(FINGER_ROOTS):
        child[root + 2] = 16 + f
    flex = np.zeros((16, 3))
    abd = np.zeros((16, 3))
    for f, root in enumerate(FINGER_ROOTS):
        to = palm
        if f == 0:  # the thumb curls across the palm, towards the little finger
            to = _unit(palm + 0.8 * _unit(J[7] - J[13]))
        for j in (root, root + 1, root + 2):
            d = _unit(J[child[j]] - J[j])
            flex[j] = _unit(np.cross(d, to if towards is None else towards[j]))
            abd[j] = chirality * _unit(np.cross(flex[j], d))
    return flex, abd


def sample_poses(
    n: int,
    rng: np.random.Generator,
    grasp: float | None = None,
    rest_mano21: np.ndarray | None = None,
    side: str = "right",
    noise: float = 1.0,
    style: str = "closure",
    dtype: type = np.float32,
) -> np.ndarray:
    """Grasp-like finger poses: (n, 45) axis-angle of joints 1..15 (MANO order, a model
    without hands_mean, i.e. flat hand at zero), as `dtype`.

    style "closure": grasp is the mean hand closure in [0, 1] (0 open, 1 fist); None draws it
    per sample. Fingers close together with some spread, the little and ring fingers a bit
    more, the thumb opposes; noise scales the per-finger randomness (0: every finger follows
    `grasp` exactly). style "curl": see `curl_poses` (grasp and noise do not apply).
    rest_mano21: the model's rest points (21, 3) MANO order (default: the procedural hand);
    side flips the curl direction for left hands.
    """
    from gsdf_data.hand.kinematics import from_paper_order

    if style not in ("closure", "curl"):
        raise ValueError(f"style must be 'closure' or 'curl', not {style!r}")
    if rest_mano21 is None:
        import torch

        from gsdf_data.hand.models import ProceduralHand

        rest = ProceduralHand(side=side, dtype=torch.float64).rest_keypoints()[0]
        rest_mano21 = from_paper_order(rest).numpy()
    rest_mano21 = np.asarray(rest_mano21, dtype=np.float64)
    if style == "curl":
        if grasp is not None:
            raise ValueError("grasp is a closure of the 'closure' style")
        aa = curl_poses(n, rng, rest_mano21, side)
    else:
        aa = _closure_poses(n, rng, rest_mano21, side, grasp, noise)
    return aa[:, 1:].reshape(n, 45).astype(dtype)


def _closure_poses(
    n: int, rng: np.random.Generator, rest_mano21: np.ndarray, side: str, grasp, noise: float
) -> np.ndarray:
    """Style "closure" of `sample_poses`: axis-angle (n, 16, 3), row 0 zero."""
    flex_ax, abd_ax = joint_axes(rest_mano21, side)
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
    return aa


def curl_axes(rest_mano21: np.ndarray, side: str = "right") -> np.ndarray:
    """Flexion axes (16, 3) of the "curl" style: every joint curls towards the palm normal
    (`palm_frame`), except the thumb's root, which turns towards a point 6 cm in front of
    the palm centre (so the thumb comes across to oppose the fingers)."""
    palm = palm_frame(rest_mano21, side)
    towards = np.tile(palm.normal, (16, 1))
    thumb = FINGER_ROOTS[0]
    towards[thumb] = _unit(palm.centre + 0.06 * palm.normal - rest_mano21[thumb])
    return joint_axes(rest_mano21, side, towards=towards)[0]


def curl_poses(
    n: int, rng: np.random.Generator, rest_mano21: np.ndarray, side: str = "right"
) -> np.ndarray:
    """Style "curl" of `sample_poses`, axis-angle (n, 16, 3) (row 0 zero): each finger
    curled on its own (MCP, PIP, DIP about their `curl_axes`, a little spread about the palm
    normal), the thumb turned towards the palm. The synthetic dataset closes these onto an
    object, finger by finger, so they are drawn more closed than a hand holding it."""
    flex = curl_axes(rest_mano21, side)
    # the spread turns about the palm normal; as an axis-angle vector (a pseudovector) it
    # takes the chirality sign, so a left hand spreads as the mirror of a right one
    spread_axis = (-1.0 if side == "left" else 1.0) * palm_frame(rest_mano21, side).normal
    aa = np.zeros((n, 16, 3))
    for f, root in enumerate(FINGER_ROOTS):
        a, b, c = root, root + 1, root + 2
        if f == 0:
            aa[:, a] = flex[a] * rng.uniform(0.5, 0.9, n)[:, None]
            aa[:, b] = flex[b] * rng.uniform(0.2, 0.6, n)[:, None]
            aa[:, c] = flex[c] * rng.uniform(0.3, 0.8, n)[:, None]
            continue
        curl = rng.uniform(0.75, 1.05, n)[:, None]
        aa[:, a] = flex[a] * curl * rng.uniform(1.1, 1.4, n)[:, None]
        aa[:, a] += spread_axis * rng.uniform(-0.08, 0.08, n)[:, None]
        aa[:, b] = flex[b] * curl * rng.uniform(1.4, 1.7, n)[:, None]
        aa[:, c] = flex[c] * curl * rng.uniform(0.8, 1.1, n)[:, None]
    return aa


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform random rotations as axis-angle (n, 3)."""
    q = _unit(rng.normal(size=(n, 4)))
    q[q[:, 0] < 0] *= -1
    angle = 2 * np.arccos(np.clip(q[:, 0], -1, 1))
    axis = _unit(q[:, 1:] + 1e-12)
    return (axis * angle[:, None]).astype(np.float32)
