"""ObMan reader: `{split}/meta/%08d.pkl` + `{split}/rgb/%08d.jpg` + ShapeNet objects -> tasks for
`gsdf_data.prepare.prepare_pairs`.

ObMan's conventions, converted once here:

- 3D annotations (`coords_3d` (21,3), `verts_3d` (778,3), the object's `affine_transform`
  (4,4, with scale)) live in the Blender camera frame (OpenGL axes: y up, looking down -z);
  the camera extrinsic diag(1,-1,-1) takes them to OpenCV axes.
- Intrinsics are fixed: [[480,0,128],[0,480,128],[0,0,1]] for the 256×256 images; the stored
  `coords_2d` are the OpenCV-frame joints projected with them.
- Depth PNGs hold 1..255 (0: background) in channels all/hand/object; the stored
  `depth_min`/`depth_max` are swapped, so z = (v - 1)/254 · (depth_min - depth_max) + depth_max.
- `side` "left" (if any): `verts_3d` is already a left hand, so the right model's faces are
  used with the opposite winding; the joint rotations are then unknown (NaN).
- Objects are ShapeNetCore.v2 `<class_id>/<sample_id>/models/model_normalized.obj` (not
  watertight); the object pose is the rotation part of `affine_transform` (scale removed) and
  the object centre its translation, both in the OpenCV frame.

The synthetic dataset (`gsdf_data.datasets.synth`) writes exactly this layout, plus the
optional keys `seq_id` and `frame_idx` for its sequences.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsdf_data.datasets.common import (
    CAM_FLIP,
    DropCounter,
    HandSpec,
    SampleError,
    hand_faces,
    ik_rotmats,
    load_object,
    make_pair,
    polar_rotation,
)
from gsdf_data.object_cache import ObjectCache

OBMAN_K = np.array([[480.0, 0.0, 128.0], [0.0, 480.0, 128.0], [0.0, 0.0, 1.0]])
SPLITS = ("train", "val", "test")
# Prefix of `obj_path` in the released meta files; replaced by the user's --shapenet.
SHAPENET_PREFIX = "ShapeNetCore.v2"


def read_meta(path: str | Path) -> dict:
    """One ObMan meta pickle (a Python 2 pickle of numpy arrays) as a dict. Only arrays and
    plain values are built (`gsdf_data.safe_pickle`): a meta file cannot run code."""
    from gsdf_data import safe_pickle

    meta = safe_pickle.load(path)
    if not isinstance(meta, dict):
        raise pickle.UnpicklingError(f"holds a {type(meta).__name__}, not a dict")
    return meta


def list_ids(root: str | Path, split: str) -> list[int]:
    """Sorted sample ids of a split (they are not contiguous), from its meta folder."""
    meta = Path(root) / split / "meta"
    if not meta.is_dir():
        raise FileNotFoundError(f"{meta}: no such folder (is --root an ObMan root?)")
    return sorted(int(p.stem) for p in meta.glob("*.pkl") if p.stem.isdigit())


def to_camera(points: np.ndarray) -> np.ndarray:
    """ObMan camera-frame points (N,3) (OpenGL axes) -> OpenCV camera frame (N,3)."""
    return np.asarray(points, dtype=np.float64) @ CAM_FLIP.T


def object_path(meta: dict, shapenet_root: str | Path) -> Path:
    """The ShapeNet model of a sample under the user's ShapeNet root: built from `class_id` and
    `sample_id`; when that file is missing, from the tail of the stored `obj_path`."""
    root = Path(shapenet_root)
    path = root / str(meta["class_id"]) / str(meta["sample_id"]) / "models"
    path = path / "model_normalized.obj"
    if not path.exists() and "obj_path" in meta:
        parts = Path(str(meta["obj_path"])).parts
        if SHAPENET_PREFIX in parts:
            parts = parts[parts.index(SHAPENET_PREFIX) + 1 :]
        else:
            parts = parts[-4:]
        alt = root.joinpath(*parts)
        if alt.exists():
            return alt
    return path


def object_transform(meta: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From `affine_transform` (ShapeNet model -> ObMan camera, with scale): the full map to the
    OpenCV camera (4,4), the object pose without scale (4,4) and the object centre (3,)."""
    A = np.asarray(meta["affine_transform"], dtype=np.float64)
    flip4 = np.eye(4)
    flip4[:3, :3] = CAM_FLIP
    full = flip4 @ A
    pose = np.eye(4)
    pose[:3, :3] = polar_rotation(full[:3, :3])
    pose[:3, 3] = full[:3, 3]
    return full, pose, full[:3, 3].copy()


def decode_depth(png: np.ndarray, meta: dict, layer: str = "all") -> np.ndarray:
    """Metric depth (H,W) from an ObMan depth PNG read by OpenCV (H,W,3 BGR uint8).

    layer: "all" (channel 0), "hand" (1) or "obj" (2), with the matching stored range. The
    stored min and max are swapped: value 1 maps to `depth_max`, 255 to `depth_min`.
    Background (0) gives 0.
    """
    ch, prefix = {"all": (0, ""), "hand": (1, "hand_"), "obj": (2, "obj_")}[layer]
    v = png[..., ch].astype(np.float64)
    dmin, dmax = float(meta[prefix + "depth_min"]), float(meta[prefix + "depth_max"])
    z = (v - 1.0) / 254.0 * (dmin - dmax) + dmax
    return np.where(v > 0, z, 0.0)


def encode_depth(z: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Inverse of `decode_depth` for one layer: depth (H,W) metres, 0 = empty -> uint8 (H,W)
    and the (depth_min, depth_max) to store, swapped as in ObMan (depth_min holds the far
    value)."""
    fg = z > 0
    if not fg.any():
        return np.zeros(z.shape, np.uint8), 0.0, 0.0
    near, far = float(z[fg].min()), float(z[fg].max())
    v = np.zeros(z.shape, np.float64)
    v[fg] = 1.0 + 254.0 * (z[fg] - near) / max(far - near, 1e-9)
    return np.clip(np.round(v), 0, 255).astype(np.uint8), far, near


@dataclass(frozen=True)
class ObManTask:
    """One ObMan sample for `prepare_pairs`; `load()` returns its `Pair` or raises
    `SampleError` with the reason."""

    sample_id: str
    meta_path: str
    rgb_path: str
    shapenet_root: str
    hand: HandSpec
    objects: ObjectCache | None = None

    def load(self):
        try:
            meta = read_meta(self.meta_path)
        except (OSError, pickle.UnpicklingError, EOFError) as e:
            raise SampleError(f"unreadable meta file: {self.meta_path}: {e}") from e
        left = str(meta.get("side", "right")) == "left"
        hand = self.hand.load()
        faces = hand_faces(hand)
        if left:  # stored vertices are already mirrored: only the winding flips
            faces = faces[:, ::-1].copy()
        verts = to_camera(meta["verts_3d"])
        if int(faces.max()) >= len(verts):
            raise SampleError(
                f"hand model mismatch: verts_3d has {len(verts)} vertices, the hand model {int(faces.max()) + 1}; pass the "
                "hand model the data was made with (--mano)"
            )
        joints = to_camera(meta["coords_3d"])
        # a filter reject still loads: the frame can be a pose-only sample (the reference's
        # pose stage trains on them, train_138k); make_sample gives the reject as its reason
        obj = load_object(object_path(meta, self.shapenet_root), self.objects, keep_rejected=True)
        full, pose, centre = object_transform(meta)
        obj_verts = obj.verts @ full[:3, :3].T + full[:3, 3]
        try:
            image = Path(self.rgb_path).read_bytes()
        except OSError as e:
            raise SampleError(f"missing image: {self.rgb_path}") from e
        seq_id = str(meta.get("seq_id", self.sample_id))
        return make_pair(
            sample_id=self.sample_id,
            hand_verts=verts,
            hand_faces=faces,
            obj_verts=obj_verts,
            obj_faces=obj.faces,
            image=image,
            K=OBMAN_K,
            joints=joints,
            hand_rotmats=np.full((16, 3, 3), np.nan) if left else ik_rotmats(hand, joints),
            obj_center=centre,
            obj_pose=pose,
            seq_id=seq_id,
            frame_idx=int(meta.get("frame_idx", 0)),
            obj=obj,
            obj_frame=full,
        )


def check_hand_model(tasks: list[ObManTask], tries: int = 20) -> None:
    """Raise ValueError (one line) when the first readable sample's `verts_3d` does not fit
    the hand model of the tasks (e.g. the real ObMan read without --mano). Unreadable meta
    files are skipped here (up to `tries`): each is one bad sample, reported by its worker."""
    for task in tasks[:tries]:
        try:
            n = len(read_meta(task.meta_path)["verts_3d"])
        except Exception:  # a damaged sample is that sample's problem, not the run's
            continue
        hand = task.hand.load()
        if n != int(hand.num_vertices):
            what = "the procedural hand" if task.hand.mano is None else "the given MANO"
            raise ValueError(
                f"{task.meta_path}: verts_3d has {n} vertices, {what} has "
                f"{int(hand.num_vertices)}; pass the hand model the data was made with (--mano)"
            )
        return


def obman_tasks(
    root: str | Path,
    shapenet_root: str | Path,
    split: str,
    hand: HandSpec | None = None,
    limit: int | None = None,
    objects: ObjectCache | None = None,
) -> tuple[list[ObManTask], DropCounter]:
    """Tasks for every sample of `split` (`limit` keeps the first ids), grouped by object
    (ShapeNet model; ids sorted within one): ObMan's ids visit its ~2,700 objects in random
    order, and a worker builds an object's SDF query structures once per run of its grasps
    (~30 ms for a 16k-face model) instead of once per sample. Grouping reads every meta file
    once here. `objects`: cache of object meshes and double-sided filter verdicts shared by
    the tasks.

    Samples whose image is missing are dropped here (counted by reason); everything else that
    can go wrong is found when a worker loads the sample and reported by `prepare_pairs`.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown ObMan split {split!r}; choose from {SPLITS}")
    if not Path(shapenet_root).is_dir():
        raise FileNotFoundError(f"{shapenet_root}: no such folder (--shapenet)")
    hand = hand or HandSpec(tips="obman")
    base = Path(root) / split
    drops = DropCounter()
    tasks = []
    ids = list_ids(root, split)
    if limit is not None:
        ids = ids[:limit]
    for i in ids:
        name = f"{i:08d}"
        rgb = base / "rgb" / f"{name}.jpg"
        if not rgb.exists():
            drops.add("missing rgb image", ids=[name])
            continue
        tasks.append(
            ObManTask(
                name,
                str(base / "meta" / f"{name}.pkl"),
                str(rgb),
                str(shapenet_root),
                hand,
                objects,
            )
        )
    return sorted(tasks, key=_object_key), drops


def _object_key(task: ObManTask) -> tuple[str, str, str]:
    """(class id, model id, sample id) of a task; an unreadable meta sorts first (its worker
    reports it)."""
    try:
        meta = read_meta(task.meta_path)
        return (str(meta.get("class_id", "")), str(meta.get("sample_id", "")), task.sample_id)
    except Exception:
        return ("", "", task.sample_id)
