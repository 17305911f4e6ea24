"""Pieces shared by the dataset readers: the hand model a worker needs, the reader-side drop
counts, and small geometry helpers.

A task is pickled to worker processes, so it carries a `HandSpec` (a path and flags), not a
hand model; `HandSpec.load()` builds the model once per process.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# ObMan and DexYCB-style cameras: OpenGL/Blender axes (y up, z backward) -> OpenCV axes.
CAM_FLIP = np.diag([1.0, -1.0, -1.0])


class SampleError(ValueError):
    """A sample that a reader cannot turn into a hand-object pair; the message is the reason."""


@dataclass(frozen=True)
class HandSpec:
    """How to build the hand model in a worker: `mano` path (None: the procedural hand),
    MANO's `flat_hand_mean` and fingertip convention `tips` ("obman" or "dexycb")."""

    mano: str | None = None
    flat_hand_mean: bool = True
    tips: str = "obman"

    def load(self):
        """The hand model (cached per process)."""
        return _load_hand(self)


@lru_cache(maxsize=4)
def _load_hand(spec: HandSpec):
    from gsdf_data.hand import load_hand

    if spec.mano is None:
        return load_hand(None)
    return load_hand(spec.mano, flat_hand_mean=spec.flat_hand_mean, tips=spec.tips)


def hand_faces(hand) -> np.ndarray:
    """(F,3) int64 faces closed at the wrist, as numpy."""
    f = hand.faces
    return np.asarray(f.cpu().numpy() if hasattr(f, "cpu") else f, dtype=np.int64)


def ik_rotmats(hand, joints: np.ndarray) -> np.ndarray:
    """Local joint rotations (16,3,3) from the 21 camera-frame keypoints by the hand model's
    analytic IK (what the paper's model does with predicted joints); NaN when the model has
    no IK."""
    import torch

    if not hasattr(hand, "ik"):
        return np.full((16, 3, 3), np.nan, dtype=np.float32)
    with torch.no_grad():
        res = hand.ik(torch.as_tensor(np.asarray(joints, dtype=np.float32))[None])
    rot = res.local_rotmats
    return np.asarray(rot.cpu().numpy() if hasattr(rot, "cpu") else rot, dtype=np.float32)[0]


def polar_rotation(A: np.ndarray) -> np.ndarray:
    """The rotation factor (3,3) of a linear map A (3,3) that may carry a scale."""
    u, _, vt = np.linalg.svd(A)
    R = u @ vt
    if np.linalg.det(R) < 0:
        u[:, -1] *= -1
        R = u @ vt
    return R


class DropCounter:
    """Samples the reader dropped, by reason: counted for the end-of-run summary and listed
    (when their ids are given) for ``bad_samples.json``."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.entries: list[dict] = []

    def add(self, reason: str, n: int = 1, ids: list[str] | None = None) -> None:
        """ids: the dropped samples' ids (n of them when given)."""
        if ids is not None:
            n = len(ids)
            self.entries += [{"sample_id": i, "reason": reason, "stage": "reader"} for i in ids]
        self.counts[reason] += n

    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


def format_summary(
    name: str, kept: int, dropped: dict[str, int], pose_only: dict[str, int] | None = None
) -> str:
    """One summary line plus one line per drop reason, e.g. for `prepare obman`; `pose_only`:
    the samples kept without SDF points, by reason (a line each)."""
    n_pose = sum((pose_only or {}).values())
    total = kept + n_pose + sum(dropped.values())
    pose = f", {n_pose} pose-only (no SDF points)" if n_pose else ""
    lines = [f"{name}: kept {kept} of {total} samples{pose}, dropped {sum(dropped.values())}"]
    lines += [f"  pose-only {n:>5d}  {reason}" for reason, n in sorted((pose_only or {}).items())]
    lines += [f"  dropped {n:>7d}  {reason}" for reason, n in sorted(dropped.items())]
    return "\n".join(lines)


def make_pair(
    *,
    sample_id: str,
    hand_verts: np.ndarray,
    hand_faces: np.ndarray,
    obj_verts: np.ndarray,
    obj_faces: np.ndarray,
    image: bytes,
    K: np.ndarray,
    joints: np.ndarray,
    hand_rotmats: np.ndarray,
    obj_center: np.ndarray,
    obj_pose: np.ndarray,
    seq_id: str,
    frame_idx: int,
    obj=None,
    obj_frame: np.ndarray | None = None,
):
    """The `gsdf_data.prepare.Pair` for one sample; all arrays in the camera frame (OpenCV
    axes, metres): hand (V,3)/(F,3), object (V',3)/(F',3), joints (21,3), hand_rotmats
    (16,3,3), obj_center (3,), obj_pose (4,4); image: encoded JPEG/PNG bytes; K (3,3);
    obj (the `ObjectModel`), obj_frame: see `Pair`."""
    import trimesh

    from gsdf_data.prepare import Pair

    return Pair(
        sample_id=sample_id,
        hand_mesh=trimesh.Trimesh(np.asarray(hand_verts, np.float64), hand_faces, process=False),
        obj_mesh=trimesh.Trimesh(np.asarray(obj_verts, np.float64), obj_faces, process=False),
        image=image,
        K=np.asarray(K, np.float32),
        joints=np.asarray(joints, np.float32),
        hand_rotmats=np.asarray(hand_rotmats, np.float32),
        obj_center=np.asarray(obj_center, np.float32),
        obj_pose=np.asarray(obj_pose, np.float32),
        seq_id=seq_id,
        frame_idx=int(frame_idx),
        obj=obj,
        obj_frame=None if obj_frame is None else np.asarray(obj_frame, np.float64),
    )


def load_object(path: str, objects=None, keep_rejected: bool = False):
    """The `ObjectModel` of the object mesh file `path` (in its own frame), through the
    `ObjectCache` `objects` when given (which also applies its double-sided filter). Raises
    SampleError with the reason (unreadable mesh, filter reject). `keep_rejected`: return a
    model the filter rejects (its `reject` says why; `make_sample` refuses it, and the
    pipeline can keep the frame as a pose-only sample)."""
    from gsdf_data.meshes import MeshError
    from gsdf_data.object_cache import read_object

    try:
        obj = read_object(path) if objects is None else objects.load(path)
    except MeshError as e:
        raise SampleError(f"object mesh: {e}") from e
    if obj.reject and not keep_rejected:
        raise SampleError(f"double-sided filter: {obj.reject}")
    return obj


def reason_key(reason: str) -> str:
    """Group key of a bad-sample reason: the text before its first colon (details such as
    paths and numbers come after it)."""
    return reason.split(":", 1)[0].strip()


def drop_summary(reader_drops: DropCounter, bad: list[dict]) -> dict[str, int]:
    """Reader-side drops merged with `prepare_pairs`' bad samples, counted by reason (the
    reader's listed entries among `bad` are counted once, from the reader)."""
    out = Counter(reader_drops.counts)
    for b in bad:
        if b.get("stage") != "reader":
            out[reason_key(str(b.get("reason", "unknown")))] += 1
    return dict(sorted(out.items()))


def run_prepare(
    name: str,
    tasks: list,
    drops: DropCounter,
    out_dir,
    config=None,
    jobs: int = 1,
    shard: str | None = None,
    backend: str = "loky",
    scheduler: str | None = None,
    strict: bool = False,
    skipped: dict[str, int] | None = None,
) -> tuple[object, str]:
    """Run `prepare_pairs` on a reader's tasks and summarise: returns the `PrepareReport` and
    the summary text (kept samples, then drops by reason: the reader's and the pipeline's).
    The counts also go to `<out>/dataset_summary.json`."""
    import json
    from pathlib import Path

    from gsdf_data.files import atomic_write_text
    from gsdf_data.prepare import prepare_pairs

    report = prepare_pairs(
        tasks,
        out_dir,
        config=config,
        jobs=jobs,
        shard=shard,
        backend=backend,
        scheduler=scheduler,
        strict=strict,
    )
    # counts over every shard of the set (this run's and earlier runs')
    manifest = json.loads((Path(out_dir) / "manifest.json").read_text())
    kept = int(manifest.get("n_samples", 0))
    pose_only = dict(manifest.get("pose_only_reasons", {}))
    # every drop has a line: the reader's (e.g. left hands) beside the pipeline's, which
    # prepare_pairs rewrote from the shard records just now
    bad_path = Path(out_dir) / "bad_samples.json"
    bad = [b for b in json.loads(bad_path.read_text()) if b.get("stage") != "reader"]
    bad += drops.entries
    atomic_write_text(bad_path, json.dumps(bad, indent=1) + "\n")
    dropped = drop_summary(drops, bad)
    text = format_summary(name, kept, dropped, pose_only)
    if skipped:
        text += "\n" + "\n".join(f"  skipped {n:>7d}  {r}" for r, n in skipped.items() if n)
    summary = {"dataset": name, "kept": kept, "dropped": dropped, "skipped": skipped or {}}
    if pose_only:
        summary["pose_only"] = pose_only
    atomic_write_text(Path(out_dir) / "dataset_summary.json", json.dumps(summary, indent=1) + "\n")
    return report, text
