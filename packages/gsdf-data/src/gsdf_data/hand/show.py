"""Pictures of a hand model: the posed mesh with its 21 keypoints and bones, so a person can
check a model (behind `gsdf-data hand show`)."""

from __future__ import annotations

import numpy as np

from gsdf_data.files import atomic_write
from gsdf_data.hand.base import HandModel
from gsdf_data.hand.kinematics import KEYPOINT_PARENTS

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


def _rot(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [k for k in range(3) if k != axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def view_rotation(hand: HandModel, yaw: float = 25.0, pitch: float = -20.0) -> np.ndarray:
    """Model frame -> camera frame (OpenCV): palm towards the camera, fingers up, turned by
    yaw (about the image's vertical) and pitch (about its horizontal), in degrees. Derived
    from the model's rest skeleton, so it works for MANO's frame and for left hands."""
    kp = hand.rest_keypoints()[0].detach().cpu().double().numpy()
    up = kp[9] - kp[0]  # wrist -> middle root: the image's up (-y)
    up /= np.linalg.norm(up)
    across = kp[5] - kp[17]  # little -> index root
    palm = np.cross(across, up) if hand.side == "right" else np.cross(up, across)
    palm /= np.linalg.norm(palm)  # palmar normal, towards the camera (-z)
    x = np.cross(-up, -palm)  # completes a right-handed camera basis (x = y cross z)
    base = np.stack([x, -up, -palm])  # rows: model -> camera
    return _rot(1, yaw) @ _rot(0, pitch) @ base


def _bones(keypoints: np.ndarray) -> list[tuple[int, int]]:
    """(parent, child) pairs in paper order."""
    return [(p, k) for k, p in enumerate(KEYPOINT_PARENTS) if k > 0]


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

    view = view_rotation(hand) if view is None else view
    out = hand.forward_numpy(global_orient=np.zeros((1, 3)), finger_pose=finger_pose)
    verts = out.vertices[0] @ view.T
    kps = out.keypoints[0] @ view.T
    lo, hi = verts.min(0), verts.max(0)
    centre = (lo + hi) / 2
    f = size * 1.6
    # distance at which the hand's larger image extent fills ~85 % of the panel
    extent = max(hi[0] - lo[0], hi[1] - lo[1])
    shift = np.array([0.0, 0.0, f * extent / (0.85 * size) + (hi[2] - lo[2]) / 2]) - centre
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


def save_picture(hand: HandModel, pose: str, out, seed: int = 0, size: int = 480) -> None:
    """Two panels side by side (the skin; the skin see-through with keypoints and bones)
    written as a PNG to out (through a temporary name, so no half-written file remains)."""
    from pathlib import Path

    import cv2

    fp = named_pose(hand, pose, seed)
    img = np.hstack(
        [
            render_hand(hand, fp, size=size, skeleton=False),
            render_hand(hand, fp, size=size, skeleton=True),
        ]
    )
    out = Path(out)
    with atomic_write(out) as tmp:
        if not cv2.imwrite(str(tmp), img[..., ::-1]):
            raise OSError(f"OpenCV could not write {tmp}")
