"""Generate the bundled evaluation examples in examples/eval/{gt,pred}/ (deterministic).

Procedural geometry only: a "hand" made of capsules (palm, five three-segment fingers, 21
keypoints at the segment ends) grasping a sphere, a box or a cylinder, and predictions that
are scaled, shifted, perturbed or penetrating copies of the ground truth. Run from the
repository root: `python tools/make_eval_examples.py [OUT_DIR]` (default examples/eval).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import trimesh

COUNT = [8, 8]  # capsule tessellation: small files, still smooth enough for the metrics


def capsule(a: np.ndarray, b: np.ndarray, radius: float, count=COUNT) -> trimesh.Trimesh:
    """Closed capsule from point a to point b (3,)."""
    axis = b - a
    length = float(np.linalg.norm(axis))
    cap = trimesh.creation.capsule(height=length, radius=radius, count=count)
    # trimesh's capsule runs along +z from z=0 to z=height
    z = np.array([0.0, 0.0, 1.0])
    d = axis / length
    v = np.cross(z, d)
    s, c = np.linalg.norm(v), float(z @ d)
    if s < 1e-12:
        rot = np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    else:
        k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]]) / s
        ang = np.arctan2(s, c)
        rot = np.eye(3) + np.sin(ang) * k + (1 - np.cos(ang)) * k @ k
    verts = cap.vertices @ rot.T + a
    return trimesh.Trimesh(verts, cap.faces, process=False)


def make_hand(curl: float, count=COUNT) -> tuple[trimesh.Trimesh, np.ndarray]:
    """Capsule hand (metres) and its 21 keypoints (wrist; thumb, index, middle, ring, little).

    count: capsule tessellation [around, along]; [32, 32] gives about 18k vertices, the size
    of a marching-cubes hand at 128³.
    """
    parts, joints = [], [np.zeros(3)]
    for x in (-0.022, 0.0, 0.022):  # palm: three side-by-side capsules
        parts.append(
            capsule(np.array([x * 0.6, 0.0, 0.0]), np.array([x, 0.075, 0.0]), 0.013, count)
        )
    bases = {
        "thumb": (
            np.array([0.03, 0.02, 0.005]),
            np.array([0.7, 0.5, 0.5]),
            (0.035, 0.03, 0.025),
            0.010,
        ),
        "index": (
            np.array([0.027, 0.085, 0.0]),
            np.array([0.1, 1.0, 0.0]),
            (0.04, 0.025, 0.02),
            0.0085,
        ),
        "middle": (
            np.array([0.009, 0.09, 0.0]),
            np.array([0.0, 1.0, 0.0]),
            (0.045, 0.028, 0.022),
            0.0085,
        ),
        "ring": (
            np.array([-0.009, 0.087, 0.0]),
            np.array([-0.05, 1.0, 0.0]),
            (0.042, 0.026, 0.02),
            0.008,
        ),
        "little": (
            np.array([-0.027, 0.08, 0.0]),
            np.array([-0.12, 1.0, 0.0]),
            (0.032, 0.02, 0.018),
            0.007,
        ),
    }
    for base, direction, lengths, radius in bases.values():
        d = direction / np.linalg.norm(direction)
        p = base.copy()
        joints.append(p.copy())
        bend = np.array([0.0, 0.0, 1.0])  # fingers curl towards +z, where the object is
        for i, length in enumerate(lengths):
            ang = curl * (i + 1)
            seg = np.cos(ang) * d + np.sin(ang) * bend
            q = p + length * seg / np.linalg.norm(seg)
            parts.append(capsule(p, q, radius, count))
            joints.append(q.copy())
            p = q
    return trimesh.util.concatenate(parts), np.asarray(joints)


def write(mesh: trimesh.Trimesh, path: Path) -> None:
    mesh = trimesh.Trimesh(np.round(mesh.vertices, 6), mesh.faces, process=False)
    path.write_bytes(trimesh.exchange.ply.export_ply(mesh, encoding="binary"))


def write_json(path: Path, joints: np.ndarray | None, center: np.ndarray | None) -> None:
    data = {}
    if joints is not None:
        data["joints"] = np.round(joints, 6).tolist()
    if center is not None:
        data["obj_center"] = np.round(center, 6).tolist()
    path.write_text(json.dumps(data) + "\n")


def smooth_bump(v: np.ndarray, amplitude: float) -> np.ndarray:
    """A smooth, deterministic displacement field (N, 3) of the given amplitude (m)."""
    return amplitude * np.stack(
        [np.sin(90 * v[:, 1]), np.sin(70 * v[:, 2] + 1), np.cos(80 * v[:, 0])], axis=1
    )


def open_cylinder(radius: float, height: float) -> trimesh.Trimesh:
    """A cylinder without its caps (not watertight), axis along x."""
    cyl = trimesh.creation.cylinder(radius=radius, height=height, sections=24)
    normals = cyl.face_normals
    side = np.abs(normals[:, 2]) < 0.5
    mesh = trimesh.Trimesh(cyl.vertices, cyl.faces[side], process=False)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
    return mesh


def main(out: Path) -> None:
    gt_dir, pred_dir = out / "gt", out / "pred"
    gt_dir.mkdir(parents=True, exist_ok=True)
    pred_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2023)

    # s000: a sphere in the palm; prediction = GT scaled by 1.08 and shifted (alignment undoes it)
    hand, joints = make_hand(curl=0.45)
    center = np.array([0.0, 0.075, 0.046])
    obj = trimesh.creation.icosphere(subdivisions=2, radius=0.034)
    obj.apply_translation(center)
    s, t = 1.08, np.array([0.01, -0.005, 0.02])
    write(hand, gt_dir / "s000_hand.ply")
    write(obj, gt_dir / "s000_obj.ply")
    write_json(gt_dir / "s000.json", joints, center)
    write(
        trimesh.Trimesh(hand.vertices * s + t, hand.faces, process=False),
        pred_dir / "s000_hand.ply",
    )
    write(
        trimesh.Trimesh(obj.vertices * s + t, obj.faces, process=False), pred_dir / "s000_obj.ply"
    )
    write_json(
        pred_dir / "s000.json",
        joints + rng.normal(0, 0.004, joints.shape),
        center + np.array([0.003, 0, 0]),
    )

    # s001: a box; the predicted hand is smoothly perturbed, the object too large and offset
    hand, joints = make_hand(curl=0.35)
    center = np.array([0.0, 0.07, 0.04])
    obj = trimesh.creation.box(extents=[0.05, 0.06, 0.055])
    obj.apply_translation(center)
    write(hand, gt_dir / "s001_hand.ply")
    write(obj, gt_dir / "s001_obj.ply")
    write_json(gt_dir / "s001.json", joints, center)
    hand_p = trimesh.Trimesh(
        hand.vertices + smooth_bump(hand.vertices, 0.002), hand.faces, process=False
    )
    obj_p = trimesh.Trimesh(
        (obj.vertices - center) * 1.1 + center + [0.005, 0.0, 0.003], obj.faces, process=False
    )
    write(hand_p, pred_dir / "s001_hand.ply")
    write(obj_p, pred_dir / "s001_obj.ply")
    write_json(
        pred_dir / "s001.json",
        joints + rng.normal(0, 0.008, joints.shape),
        center + np.array([0.005, 0, 0.003]),
    )

    # s002: an open cylinder (no caps) pushed 8 mm into the hand: penetration and intersection
    hand, joints = make_hand(curl=0.5)
    center = np.array([0.0, 0.07, 0.035])
    obj = open_cylinder(radius=0.03, height=0.12)
    obj.apply_translation(center)
    write(hand, gt_dir / "s002_hand.ply")
    write(obj, gt_dir / "s002_obj.ply")
    write_json(gt_dir / "s002.json", joints, center)
    hand_p, joints_p = make_hand(curl=0.55)
    obj_p = obj.copy()
    obj_p.apply_translation([0.0, 0.0, -0.008])
    write(hand_p, pred_dir / "s002_hand.ply")
    write(obj_p, pred_dir / "s002_obj.ply")
    write_json(pred_dir / "s002.json", joints_p, center + np.array([0, 0, -0.008]))

    # s003: a hand-only prediction without pose file (object metrics and Eh/Eo left empty)
    hand, joints = make_hand(curl=0.3)
    obj = trimesh.creation.icosphere(subdivisions=2, radius=0.03)
    obj.apply_translation([0.0, 0.07, 0.043])
    write(hand, gt_dir / "s003_hand.ply")
    write(obj, gt_dir / "s003_obj.ply")
    write_json(gt_dir / "s003.json", joints, np.array([0.0, 0.07, 0.043]))
    hand_p, _ = make_hand(curl=0.38)
    write(hand_p, pred_dir / "s003_hand.ply")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("examples/eval"))
