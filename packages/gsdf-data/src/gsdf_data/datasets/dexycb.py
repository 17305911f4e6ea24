"""DexYCB reader: right-hand frames of the official s0 split, 30 -> 6 fps, cropped to 256×256
around the hand and the grasped object, as tasks for `gsdf_data.prepare.prepare_pairs`.

On disk (the DexYCB toolkit's layout)::

    <root>/<subject>/<sequence>/meta.yml                  serials, num_frames, ycb_ids,
                                                          ycb_grasp_ind, mano_sides, mano_calib
    <root>/<subject>/<sequence>/<serial>/color_%06d.jpg   640×480
    <root>/<subject>/<sequence>/<serial>/labels_%06d.npz  seg, pose_y (n,3,4), pose_m (1,51),
                                                          joint_3d (1,21,3), joint_2d (1,21,2)
    <root>/calibration/intrinsics/<serial>_640x480.yml    color: {fx, fy, ppx, ppy}
    <root>/calibration/mano_<calib>/mano.yml              betas (10)
    <root>/models/<ycb name>/textured_simple.obj

Labels are already in each camera's frame with OpenCV axes, in metres. The hand mesh comes
from MANO (flat_hand_mean False) with the subject's betas and `pose_m` (48 PCA pose values:
3 global + 45 coefficients, then 3 translation); the joints are the stored `joint_3d`.

Selection, as the reference: right hands only; s0 split (sequence index within the subject
% 5 == 4 is held out: subjects 1-2 -> val, 3-10 -> test); frames with index % 5 == 0
(30 -> 6 fps); frames without a hand annotation are dropped, and on the test split frames
where the closest object vertex is more than `contact_mm` from the nearest MANO vertex (the
reference measures vertex to vertex and filters the test split only); every drop is reported
with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsdf_data.datasets.common import (
    DropCounter,
    HandSpec,
    SampleError,
    hand_faces,
    load_object,
    make_pair,
)
from gsdf_data.object_cache import ObjectCache

SUBJECTS = (
    "20200709-subject-01",
    "20200813-subject-02",
    "20200820-subject-03",
    "20200903-subject-04",
    "20200908-subject-05",
    "20200918-subject-06",
    "20200928-subject-07",
    "20201002-subject-08",
    "20201015-subject-09",
    "20201022-subject-10",
)
YCB_CLASSES = {
    1: "002_master_chef_can",
    2: "003_cracker_box",
    3: "004_sugar_box",
    4: "005_tomato_soup_can",
    5: "006_mustard_bottle",
    6: "007_tuna_fish_can",
    7: "008_pudding_box",
    8: "009_gelatin_box",
    9: "010_potted_meat_can",
    10: "011_banana",
    11: "019_pitcher_base",
    12: "021_bleach_cleanser",
    13: "024_bowl",
    14: "025_mug",
    15: "035_power_drill",
    16: "036_wood_block",
    17: "037_scissors",
    18: "040_large_marker",
    19: "051_large_clamp",
    20: "052_extra_large_clamp",
    21: "061_foam_brick",
}
SPLITS = ("s0-train", "s0-val", "s0-test")
CROP = 256
FPS_STEP = 5  # 30 fps -> 6 fps
# the reference drops frames with the hand and object apart on the test split only
# (cocoify_dexycb.py, mode "test"); dropping them from training shrinks the training set
CONTACT_SPLITS = ("s0-test",)


def s0_split(subject: str, seq_index: int) -> str:
    """Which s0 split a sequence belongs to (its index among the subject's sorted sequences)."""
    if seq_index % 5 != 4:
        return "s0-train"
    return "s0-val" if SUBJECTS.index(subject) < 2 else "s0-test"


def _yaml(path: Path) -> dict:
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def crop_box(points2d: np.ndarray) -> np.ndarray:
    """Square crop box (x0, y0, w, h) around 2D points (N,2): their bounding box grown by 10 px
    on each side, made square about its centre, then scaled by 1.25 (the reference's)."""
    tl = points2d.min(axis=0) - 10.0
    br = points2d.max(axis=0) + 10.0
    c = 0.5 * (tl + br)
    side = float((br - tl).max()) * 1.25
    return np.array([c[0] - side / 2, c[1] - side / 2, side, side])


def crop_affine(box: np.ndarray, size: int = CROP) -> np.ndarray:
    """(3,3) map from original pixels to crop pixels for `box` (x0, y0, w, h): the box centre
    goes to (size/2, size/2) and the box width to `size` pixels."""
    s = size / box[2]
    c = box[:2] + box[2:] / 2.0
    return np.array([[s, 0.0, size / 2 - s * c[0]], [0.0, s, size / 2 - s * c[1]], [0, 0, 1.0]])


def crop_image(img: np.ndarray, box: np.ndarray, size: int = CROP) -> tuple[np.ndarray, np.ndarray]:
    """Crop-and-resize `img` (H,W,C) to (size,size,C). Returns the crop and the updated
    intrinsics map A (3,3): K_crop = A @ K."""
    import cv2

    A = crop_affine(box, size)
    out = cv2.warpAffine(img, A[:2], (size, size), flags=cv2.INTER_LINEAR)
    return out, A


@dataclass(frozen=True)
class DexYCBTask:
    """One DexYCB frame for `prepare_pairs`; `load()` returns its `Pair` or raises
    `SampleError` with the reason."""

    sample_id: str
    frame_dir: str
    frame: int
    K: tuple
    betas: tuple
    obj_file: str
    grasp_ind: int
    seq_id: str
    hand: HandSpec
    contact_mm: float = 5.0
    objects: ObjectCache | None = None

    def load(self):
        import cv2
        import torch

        d = Path(self.frame_dir)
        try:
            label = np.load(d / f"labels_{self.frame:06d}.npz")
            pose_y = np.asarray(label["pose_y"], np.float64)
            pose_m = np.asarray(label["pose_m"], np.float64).reshape(-1)
            joints = np.asarray(label["joint_3d"], np.float64).reshape(21, 3)
            joints2d = np.asarray(label["joint_2d"], np.float64).reshape(21, 2)
        except (OSError, KeyError, ValueError) as e:
            raise SampleError(f"unreadable label file: {d}: {e}") from e
        if np.all(joints == -1) or np.all(joints2d == -1):
            raise SampleError("no hand annotation")
        img = cv2.imread(str(d / f"color_{self.frame:06d}.jpg"), cv2.IMREAD_COLOR)
        if img is None:
            raise SampleError("missing colour image")
        obj = load_object(self.obj_file, self.objects)
        rest = obj.verts
        hand = self.hand.load()
        with torch.no_grad():
            out = hand(
                global_orient=torch.as_tensor(pose_m[None, :3], dtype=torch.float32),
                pca_coeffs=torch.as_tensor(pose_m[None, 3:48], dtype=torch.float32),
                betas=torch.as_tensor(np.asarray(self.betas)[None], dtype=torch.float32),
                transl=torch.as_tensor(pose_m[None, 48:51], dtype=torch.float32),
            )
        hand_verts = out.vertices[0].double().numpy()
        G = out.transforms[0].double().numpy()
        R, t = pose_y[self.grasp_ind, :, :3], pose_y[self.grasp_ind, :, 3]
        obj_verts = rest @ R.T + t
        offset = 0.5 * (rest.min(axis=0) + rest.max(axis=0))
        centre = R @ offset + t
        if self.contact_mm > 0:
            from scipy.spatial import cKDTree

            gap, _ = cKDTree(hand_verts).query(obj_verts, k=1)
            if gap.min() > self.contact_mm / 1000.0:
                raise SampleError(f"hand and object more than {self.contact_mm:g} mm apart")
        K = np.asarray(self.K, np.float64)
        corners = np.array(
            [[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float64
        )
        lo, hi = rest.min(axis=0), rest.max(axis=0)
        corners = (lo + corners * (hi - lo)) @ R.T + t
        c2d = corners @ K.T
        c2d = c2d[:, :2] / c2d[:, 2:3]
        box = crop_box(np.concatenate([joints2d, c2d]))
        crop, A = crop_image(img, box)
        _, enc = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = R, centre
        return make_pair(
            sample_id=self.sample_id,
            hand_verts=hand_verts,
            hand_faces=hand_faces(hand),
            obj_verts=obj_verts,
            obj_faces=obj.faces,
            image=enc.tobytes(),
            K=A @ K,
            joints=joints,
            hand_rotmats=local_rotmats(G),
            obj_center=centre,
            obj_pose=pose,
            seq_id=self.seq_id,
            frame_idx=self.frame,
            obj=obj,
            obj_frame=np.vstack([np.hstack([R, t[:, None]]), [0.0, 0.0, 0.0, 1.0]]),
        )


def local_rotmats(transforms: np.ndarray) -> np.ndarray:
    """Local joint rotations (16,3,3) from global joint transforms (16,4,4) on MANO's tree."""
    from gsdf_data.hand import PARENTS

    R = transforms[:, :3, :3]
    out = np.empty_like(R)
    for j, p in enumerate(PARENTS):
        out[j] = R[j] if p < 0 else R[p].T @ R[j]
    return out.astype(np.float32)


def dexycb_tasks(
    root: str | Path,
    split: str,
    hand: HandSpec,
    contact_mm: float = 5.0,
    step: int = FPS_STEP,
    objects: ObjectCache | None = None,
    contact_splits: tuple[str, ...] = CONTACT_SPLITS,
) -> tuple[list[DexYCBTask], DropCounter, dict[str, int]]:
    """Tasks for every selected frame of `split` ("s0-train", "s0-val" or "s0-test");
    `objects`: cache of the object meshes (and filter verdicts) shared by the tasks.
    contact_mm: frames of a split in `contact_splits` whose closest object vertex is more than
    this far from the nearest MANO vertex are dropped (the reference: the test split only;
    its training frames are those with an SDF file, kept whatever the distance).

    Returns (tasks, drops, skipped): drops counts frames of the split that the reader removed
    (by reason, e.g. left hands); skipped counts frames that are not part of the selection at
    all (other fps), reported separately.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown DexYCB split {split!r}; choose from {SPLITS}")
    root = Path(root)
    calib = root / "calibration"
    if not calib.is_dir():
        raise FileNotFoundError(f"{calib}: no such folder (is --root a DexYCB root?)")
    drops = DropCounter()
    skipped = {"frames not at 6 fps": 0}
    tasks: list[DexYCBTask] = []
    intrinsics: dict[str, tuple] = {}
    for subject in SUBJECTS:
        sdir = root / subject
        if not sdir.is_dir():
            continue
        seqs = sorted(p for p in sdir.iterdir() if (p / "meta.yml").exists())
        for si, seq in enumerate(seqs):
            if s0_split(subject, si) != split:
                continue
            meta = _yaml(seq / "meta.yml")
            serials = [str(s) for s in meta["serials"]]
            n = int(meta["num_frames"])
            frames = [f for f in range(n) if f % step == 0]
            skipped["frames not at 6 fps"] += (n - len(frames)) * len(serials)
            if str(meta["mano_sides"][0]) != "right":
                ids = [f"{subject}_{seq.name}_{c}_{f:06d}" for c in serials for f in frames]
                drops.add("left hand", ids=ids)
                continue
            mano_calib = calib / f"mano_{meta['mano_calib'][0]}" / "mano.yml"
            betas = tuple(float(b) for b in _yaml(mano_calib)["betas"])
            grasp = int(meta["ycb_grasp_ind"])
            ycb = YCB_CLASSES[int(meta["ycb_ids"][grasp])]
            obj_file = root / "models" / ycb / "textured_simple.obj"
            for serial in serials:
                if serial not in intrinsics:
                    c = _yaml(calib / "intrinsics" / f"{serial}_640x480.yml")["color"]
                    intrinsics[serial] = (
                        (float(c["fx"]), 0.0, float(c["ppx"])),
                        (0.0, float(c["fy"]), float(c["ppy"])),
                        (0.0, 0.0, 1.0),
                    )
                seq_id = f"{subject}_{seq.name}_{serial}"
                for f in frames:
                    tasks.append(
                        DexYCBTask(
                            sample_id=f"{seq_id}_{f:06d}",
                            frame_dir=str(seq / serial),
                            frame=f,
                            K=intrinsics[serial],
                            betas=betas,
                            obj_file=str(obj_file),
                            grasp_ind=grasp,
                            seq_id=seq_id,
                            hand=hand,
                            contact_mm=contact_mm if split in contact_splits else 0.0,
                            objects=objects,
                        )
                    )
    return tasks, drops, skipped
