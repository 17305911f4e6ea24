"""Pictures of a hand model: the posed mesh with its 21 keypoints and bones, so a person can
check a model (behind `gsdf-data hand show`)."""

from __future__ import annotations

import numpy as np

from gsdf_data.hand.base import HandModel
from gsdf_data.hand.kinematics import KEYPOINT_FROM_MANO, PARENTS

POSES = ("flat", "fist", "random")
# keypoint colours per finger (paper order: wrist, thumb, index, middle, ring, little)
_FINGER_RGB = np.array(
    [
        [0.3, 0.3, 0.3],
        [0.9, 0.2, 0.2],
        [0.95, 0.6, 0.1],
        [0.2, 0.7, 0.2],
        [0.1, 0.5, 0.9],
        [0.6, 0.3, 0.8],
    ]
)
SKIN = (0.86, 0.66, 0.55, 1.0)


def named_pose(hand: HandModel, pose: str, seed: int = 0) -> np.ndarray:
    """Finger pose (1, 45) for the model: "flat", "fist" or "random" (grasp-like, seeded)."""
    if pose == "flat":
        return -hand.hands_mean.cpu().numpy()[None].astype(np.float32)
    if pose == "fist":
        return hand.sample_poses(1, np.random.default_rng(0), grasp=0.9, noise=0.0)
    if pose == "random":
        return hand.sample_poses(1, np.random.default_rng(seed))
    raise ValueError(f"pose must be one of {POSES}, not {pose!r}")


def _view_rotation(side: str) -> np.ndarray:
    """Model frame -> camera frame: palm towards the camera, fingers up. Built from the
    procedural hand's axes (x fingers, y thumb side, z back of the hand)."""
    R = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return R if side == "right" else R @ np.diag([-1.0, 1.0, 1.0]) @ np.diag([-1.0, 1.0, 1.0])


def _bones(keypoints: np.ndarray) -> list[tuple[int, int]]:
    """(parent, child) pairs in paper order."""
    mano_to_paper = {m: k for k, m in enumerate(KEYPOINT_FROM_MANO)}
    pairs = [(mano_to_paper[p], mano_to_paper[j]) for j, p in enumerate(PARENTS) if p >= 0]
    for tip, last in zip(range(16, 21), (15, 3, 6, 12, 9), strict=True):
        pairs.append((mano_to_paper[last], mano_to_paper[tip]))
    return pairs


def render_hand(
    hand: HandModel,
    finger_pose: np.ndarray,
    size: int = 400,
    view: np.ndarray | None = None,
    skeleton: bool = True,
) -> np.ndarray:
    """Render the posed hand: the skin (translucent when the skeleton is drawn) plus keypoint
    spheres and bone cylinders coloured per finger. finger_pose (1, 45); view (3, 3) model
    -> camera rotation (default: palm to the camera, fingers up). Returns (size, size, 3)."""
    import trimesh

    from gsdf_data.render import render

    view = _view_rotation(hand.side) if view is None else view
    out = hand.forward_numpy(global_orient=np.zeros((1, 3)), finger_pose=finger_pose)
    verts = out.vertices[0] @ view.T
    kps = out.keypoints[0] @ view.T
    lo, hi = verts.min(0), verts.max(0)
    centre = (lo + hi) / 2
    radius = np.linalg.norm(hi - lo) / 2
    f = size * 1.6
    # far enough that the bounding sphere fills ~85 % of the image
    shift = np.array([0.0, 0.0, 1.1 * radius * f / (0.5 * size * 0.85)]) - centre
    K = np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1.0]])
    meshes = []
    skin = trimesh.Trimesh(verts + shift, hand.faces, process=False)
    meshes.append((skin, SKIN if not skeleton else (*SKIN[:3], 0.55)))
    if skeleton:
        finger = np.r_[0, np.repeat(np.arange(1, 6), 4)]
        for k, p in enumerate(kps + shift):
            s = trimesh.creation.icosphere(subdivisions=2, radius=0.0042)
            s.apply_translation(p)
            meshes.append((s, (*_FINGER_RGB[finger[k]], 1.0)))
        for a, b in _bones(kps):
            pa, pb = kps[a] + shift, kps[b] + shift
            if np.linalg.norm(pb - pa) < 1e-6:
                continue
            c = trimesh.creation.cylinder(radius=0.0016, segment=np.stack([pa, pb]), sections=8)
            meshes.append((c, (*_FINGER_RGB[finger[b]], 1.0)))
    rgb, _ = render(meshes, K, size, size, light_intensity=3.5, ambient=0.35)
    return rgb
