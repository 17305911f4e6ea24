"""A small ObMan root in the real on-disk layout, written by the tests.

`write_obman(tmp, hand)` makes `tmp/obman/train/{rgb,depth,meta}` with non-contiguous ids
3, 17, 42, 1005 (+ 2000, a meta file without its image) and `tmp/ShapeNetCore.v2/<class>/<id>/
models/model_normalized.obj`. Annotations are in ObMan's Blender camera frame (OpenGL axes);
the object of sample 42 is an open box whose every face is duplicated with the opposite
winding (double-sided: the filter must drop it from the SDF samples; its image and hand
pose are sound, so prepare keeps it as a pose-only sample unless told not to).
`pose_only_frames=True` adds frame 58 (`NO_HAND_MESH`), whose hand vertices all coincide
(no mesh, so no SDF points: the other way a frame keeps only its pose). Returns what the
tests compare against.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import trimesh

FLIP = np.diag([1.0, -1.0, -1.0])
K = np.array([[480.0, 0.0, 128.0], [0.0, 480.0, 128.0], [0.0, 0.0, 1.0]])
IDS = (3, 17, 42, 1005)
DOUBLE_SIDED = 42
NO_HAND_MESH = 58
NO_IMAGE = 2000
# OpenCV-frame wrist of sample 3 (hand-computed checks in the tests)
WRIST_CV = np.array([0.02, -0.01, 0.5])
OBJ_CENTRE_CV = np.array([0.05, 0.0, 0.52])
OBJ_SCALE = 0.12


def _rot_z(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _write_obj(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"v {x:.8f} {y:.8f} {z:.8f}" for x, y, z in verts]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")


def write_obman(tmp: Path, hand, pose_only_frames: bool = False) -> dict:
    """Write the fixture under `tmp`; `hand` is the HandModel that makes `verts_3d`;
    `pose_only_frames`: also frame `NO_HAND_MESH` (see the module docstring)."""
    root, shapenet = Path(tmp) / "obman", Path(tmp) / "ShapeNetCore.v2"
    split = root / "train"
    for d in ("rgb", "depth", "meta"):
        (split / d).mkdir(parents=True, exist_ok=True)
    box = trimesh.creation.box(extents=(0.5, 0.3, 0.8))
    box_v = np.asarray(box.vertices) / np.linalg.norm(box.extents)  # ShapeNet: unit diagonal
    box_f = np.asarray(box.faces)
    expected = {}
    rng = np.random.default_rng(0)
    extra = (NO_HAND_MESH,) if pose_only_frames else ()
    for n, i in enumerate((*IDS, NO_IMAGE, *extra)):
        out = hand.forward_numpy(
            global_orient=np.array([[0.3, -0.4, 0.2 * n]]),
            finger_pose=rng.normal(0.0, 0.15, (1, 45)),
        )
        shift = WRIST_CV + np.array([0.004 * n, 0.0, 0.0]) - out.keypoints[0, 0]
        verts_cv = out.vertices[0] + shift
        joints_cv = out.keypoints[0] + shift
        if i == NO_HAND_MESH:  # every vertex at the wrist: a hand mesh of zero area
            verts_cv = np.repeat(joints_cv[:1], len(verts_cv), axis=0)
        if i == DOUBLE_SIDED:
            cls, oid = "03797390", "doublesided0"
            # an open box modelled double-sided, as ShapeNet's thin containers often are:
            # its inside is seen through the open top from both sides
            top = box_v[box_f].mean(axis=1)[:, 2] >= box_v[:, 2].max() - 1e-9
            faces = np.vstack([box_f[~top], box_f[~top][:, ::-1]])
        else:
            cls, oid = "02876657", f"bottle{i:04d}"
            faces = box_f
        _write_obj(shapenet / cls / oid / "models" / "model_normalized.obj", box_v, faces)
        R_cv = _rot_z(30.0 + 10 * n)
        centre_cv = OBJ_CENTRE_CV + np.array([0.0, 0.003 * n, 0.0])
        to_cv = np.eye(4)
        to_cv[:3, :3], to_cv[:3, 3] = OBJ_SCALE * R_cv, centre_cv
        flip4 = np.eye(4)
        flip4[:3, :3] = FLIP
        affine = flip4 @ to_cv  # ShapeNet model -> ObMan (Blender) camera
        uvw = joints_cv @ K.T
        meta = {
            "coords_3d": joints_cv @ FLIP.T,
            "coords_2d": uvw[:, :2] / uvw[:, 2:3],
            "verts_3d": verts_cv @ FLIP.T,
            "hand_pose": np.zeros(48),
            "pca_pose": np.zeros(45),
            "shape": np.zeros(10),
            "trans": np.zeros(3),
            "side": "right",
            "affine_transform": affine,
            "obj_path": f"/sequoia/data2/dataset/shapenet/ShapeNetCore.v2/{cls}/{oid}/models/"
            "model_normalized.obj",
            "class_id": cls,
            "sample_id": oid,
            "obj_scale": OBJ_SCALE,
            # swapped, as in the release: depth_min holds the far value
            "depth_min": 0.6,
            "depth_max": 0.4,
            "hand_depth_min": 0.6,
            "hand_depth_max": 0.4,
            "obj_depth_min": 0.6,
            "obj_depth_max": 0.4,
        }
        name = f"{i:08d}"
        with open(split / "meta" / f"{name}.pkl", "wb") as f:
            pickle.dump(meta, f, protocol=2)
        if i != NO_IMAGE:
            img = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
            cv2.imwrite(str(split / "rgb" / f"{name}.jpg"), img)
            depth = np.zeros((256, 256, 3), np.uint8)
            depth[100:120, 100:120] = 255  # far
            depth[120:140, 100:120] = 1  # near
            depth[140:160, 100:120] = 128
            cv2.imwrite(str(split / "depth" / f"{name}.png"), depth)
        expected[name] = {
            "joints": joints_cv,
            "verts": verts_cv,
            "obj_verts": box_v @ (OBJ_SCALE * R_cv).T + centre_cv,
            "obj_R": R_cv,
            "obj_centre": centre_cv,
            "coords_2d": meta["coords_2d"],
        }
    return {"root": root, "shapenet": shapenet, "samples": expected}
