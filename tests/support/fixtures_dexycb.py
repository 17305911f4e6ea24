"""A small DexYCB root in the real on-disk layout, written by the tests.

`write_dexycb(tmp)` makes a stand-in `MANO_RIGHT.pkl` (MANO's keys and shapes, geometry from
the procedural hand, a random orthonormal PCA basis and a non-zero hands_mean, so the PCA and
flat_hand_mean=False paths matter) and `tmp/dexycb` with:

- subjects 01 (index 0) and 03 (index 2), five sequences each (the fifth is held out by s0:
  val for subject 01, test for subject 03), one camera, 11 frames at 30 fps (0..10);
- subject 01's second sequence is a left hand (dropped);
- in the test sequence, frame 5 has no hand annotation (joint_3d = -1) and frame 10 has the
  object 20 cm away from the hand (no contact); so has frame 10 of subject 01's first
  (training) sequence, which the reference keeps;
- a white disc drawn in each colour image at the projected wrist, to check the crop.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import trimesh
import yaml

SUBJECTS = ("20200709-subject-01", "20200820-subject-03")
SERIAL = "836212060125"
FX, FY, PPX, PPY = 615.0, 612.0, 318.5, 243.2
K = np.array([[FX, 0.0, PPX], [0.0, FY, PPY], [0.0, 0.0, 1.0]])
N_FRAMES = 11
LEFT = (SUBJECTS[0], 1)
TEST_SEQ = (SUBJECTS[1], 4)
FAR_TRAIN = (SUBJECTS[0], 0)  # its frame 10: hand and object apart, in the training split
YCB_IDS = [2, 5, 14]  # cracker box, mustard bottle, mug
GRASP_IND = 1  # the mustard bottle


def write_mano_standin(path: Path, drop: int = 0) -> Path:
    """A MANO-format pickle (plain NumPy arrays) built from the procedural hand; `drop` > 0
    leaves out its last vertices (a model whose vertex count differs from the procedural
    hand's)."""
    from gsdf_data.hand import PARENTS
    from gsdf_data.hand.procedural import procedural_arrays

    a = procedural_arrays()
    v = np.asarray(a["v_template"], np.float64)
    V = len(v)
    J = np.zeros((16, V))
    for j, p in enumerate(np.asarray(a["joints"])):
        J[j, np.argsort(np.linalg.norm(v - p, axis=1))[:4]] = 0.25
    rng = np.random.default_rng(7)
    comps, _ = np.linalg.qr(rng.normal(size=(45, 45)))
    parents = np.array(PARENTS, dtype=np.int64)
    parents[0] = 4294967295
    d = {
        "v_template": v,
        "f": np.asarray(a["faces_open"], np.int64),
        "J_regressor": J,
        "weights": np.asarray(a["weights"], np.float64),
        "posedirs": np.zeros((V, 3, 135)),
        "shapedirs": np.asarray(a["shapedirs"], np.float64),
        "hands_components": comps,
        "hands_mean": rng.normal(0.0, 0.05, 45),
        "kintree_table": np.stack([parents, np.arange(16)]),
    }
    if drop:
        keep = V - drop
        for k in ("v_template", "weights", "posedirs", "shapedirs"):
            d[k] = d[k][:keep]
        d["J_regressor"] = d["J_regressor"][:, :keep]
        d["f"] = d["f"][(d["f"] < keep).all(axis=1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)
    return path


def _yaml(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))


def write_dexycb(tmp: Path) -> dict:
    """Write the stand-in MANO and the DexYCB fixture under `tmp`; returns paths and the
    per-frame ground truth the tests compare against."""
    from gsdf_data.hand import load_hand

    tmp = Path(tmp)
    mano = write_mano_standin(tmp / "MANO_RIGHT.pkl")
    hand = load_hand(mano, flat_hand_mean=False, tips="dexycb")
    root = tmp / "dexycb"
    calib = root / "calibration"
    _yaml(calib / "intrinsics" / f"{SERIAL}_640x480.yml",
          {"color": {"fx": FX, "fy": FY, "ppx": PPX, "ppy": PPY},
           "depth": {"fx": 1.0, "fy": 1.0, "ppx": 0.0, "ppy": 0.0}})  # fmt: skip
    betas = [0.3, -0.2] + [0.0] * 8
    for s in SUBJECTS:
        _yaml(calib / f"mano_{s}_right" / "mano.yml", {"betas": betas})
    bottle = trimesh.creation.cylinder(radius=0.03, height=0.18, sections=24)
    bottle.apply_translation([0.01, 0.02, 0.09])  # rest frame not centred, as YCB models
    # dense vertices, as scanned models (the contact test is vertex to vertex)
    bottle = trimesh.Trimesh(
        *trimesh.remesh.subdivide_to_size(bottle.vertices, bottle.faces, 0.008)
    )
    names = {2: "003_cracker_box", 5: "006_mustard_bottle", 14: "025_mug"}
    for n in names.values():
        (root / "models" / n).mkdir(parents=True, exist_ok=True)
        bottle.export(root / "models" / n / "textured_simple.obj")
    rest_centre = 0.5 * (bottle.bounds[0] + bottle.bounds[1])
    rng = np.random.default_rng(3)
    truth = {}
    for s in SUBJECTS:
        for q in range(5):
            seq = root / s / f"20200101_1000{q:02d}"
            side = "left" if (s, q) == LEFT else "right"
            _yaml(seq / "meta.yml", {
                "serials": [SERIAL], "num_frames": N_FRAMES, "ycb_ids": YCB_IDS,
                "ycb_grasp_ind": GRASP_IND, "mano_sides": [side],
                "mano_calib": [f"{s}_right"], "extrinsics": "20200101_000000",
            })  # fmt: skip
            d = seq / SERIAL
            d.mkdir(parents=True, exist_ok=True)
            poses = np.zeros((N_FRAMES, 51), np.float32)
            poses[:, :3] = rng.normal(0, 0.3, (N_FRAMES, 3))
            poses[:, 3:48] = rng.normal(0, 0.3, (N_FRAMES, 45))
            poses[:, 48:] = [[0.02 * (f % 3), -0.03, 0.55] for f in range(N_FRAMES)]
            outs = hand.forward_numpy(
                global_orient=poses[:, :3],
                pca_coeffs=poses[:, 3:48],
                betas=np.repeat(np.array([betas]), N_FRAMES, 0),
                transl=poses[:, 48:],
            )
            for f in range(N_FRAMES):
                pose_m = poses[f : f + 1]
                joints = outs.keypoints[f]
                verts = outs.vertices[f]
                uvw = joints @ K.T
                j2d = uvw[:, :2] / uvw[:, 2:3]
                # grasped object centred on the palm (in contact), others elsewhere
                palm = verts.mean(axis=0)
                far = (s, q) in (TEST_SEQ, FAR_TRAIN) and f == 10
                pose_y = np.zeros((3, 3, 4), np.float32)
                for o in range(3):
                    a = rng.normal(size=3)
                    R = cv2.Rodrigues(a)[0]
                    c = palm + (np.array([0.2, 0.0, 0.0]) if far else 0.0)
                    if o != GRASP_IND:
                        c = palm + np.array([0.3, 0.3, 0.2])
                    pose_y[o, :, :3] = R
                    pose_y[o, :, 3] = c - R @ rest_centre
                if (s, q) == TEST_SEQ and f == 5:
                    joints3d, joints2d = -np.ones((21, 3)), -np.ones((21, 2))
                else:
                    joints3d, joints2d = joints, j2d
                np.savez_compressed(
                    d / f"labels_{f:06d}.npz",
                    seg=np.zeros((480, 640), np.uint8),
                    pose_y=pose_y,
                    pose_m=pose_m,
                    joint_3d=joints3d[None].astype(np.float32),
                    joint_2d=joints2d[None].astype(np.float32),
                )
                img = np.zeros((480, 640, 3), np.uint8)
                w = np.round(j2d[0]).astype(int)
                cv2.circle(img, (int(w[0]), int(w[1])), 6, (255, 255, 255), -1)
                cv2.imwrite(str(d / f"color_{f:06d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 100])
                truth[(s, q, f)] = {
                    "joints": joints.astype(np.float32),
                    "joints2d": j2d.astype(np.float32),
                    "verts": verts,
                    "obj_centre": palm + (np.array([0.2, 0.0, 0.0]) if far else 0.0),
                }
    return {"root": root, "mano": mano, "truth": truth}
