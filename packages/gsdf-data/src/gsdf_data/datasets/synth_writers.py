"""Writers of the synthetic dataset: a sequence's frames as ObMan-layout files
(`write_sequence`), or as `prepare_pairs` tasks that go straight to shards (`SynthTask`,
`synth_tasks`), and the dataset summary (`dataset_summary`) both write beside the data."""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gsdf_data.datasets.common import CAM_FLIP, make_pair
from gsdf_data.datasets.objects import write_shapenet_model
from gsdf_data.datasets.obman import OBMAN_K, encode_depth
from gsdf_data.datasets.synth import Sequence, SynthConfig, cached_sequence
from gsdf_data.files import atomic_write_bytes

# ----------------------------------------------------------------------------- files


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    import cv2

    ok, buf = cv2.imencode(
        ".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def sample_name(config: SynthConfig, seq: int, frame: int) -> str:
    """ObMan-style file name of a frame: 8 digits, numbered across both splits (so each
    split's ids are not contiguous, as in ObMan)."""
    return f"{seq * config.seq_len + frame:08d}"


def write_sequence(config: SynthConfig, index: int, out: Path) -> dict:
    """Render sequence `index` and write its frames in the ObMan layout under `out`
    (`<split>/{rgb,depth,segm,meta}`, objects under `shapenet/`). Returns its statistics."""
    import cv2
    from scipy.spatial.transform import Rotation

    seq = cached_sequence(config, index)
    split = config.split_of(index)
    base = out / split
    for d in ("rgb", "depth", "segm", "meta"):
        (base / d).mkdir(parents=True, exist_ok=True)
    obj_file, scale = write_shapenet_model(seq.obj, out / "shapenet")
    flip4 = np.eye(4)
    flip4[:3, :3] = CAM_FLIP
    for k, fr in enumerate(seq.frames):
        name = sample_name(config, index, k)
        atomic_write_bytes(base / "rgb" / f"{name}.jpg", encode_jpeg(fr.rgb))
        layers = [encode_depth(d) for d in (fr.depth, fr.hand_depth, fr.obj_depth)]
        png = np.stack([lay[0] for lay in layers], axis=-1)
        atomic_write_bytes(base / "depth" / f"{name}.png", cv2.imencode(".png", png)[1].tobytes())
        # segmentation as ObMan: 22 right hand, 100 object, on the visible surface
        vis_hand = (fr.hand_depth > 0) & (np.abs(fr.hand_depth - fr.depth) < 1e-4)
        vis_obj = (fr.obj_depth > 0) & (np.abs(fr.obj_depth - fr.depth) < 1e-4) & ~vis_hand
        seg = np.zeros(fr.depth.shape, np.uint8)
        seg[vis_hand], seg[vis_obj] = 22, 100
        segm = np.stack(
            [seg, np.where(fr.hand_depth > 0, 22, 0), np.where(fr.obj_depth > 0, 100, 0)], -1
        )
        atomic_write_bytes(
            base / "segm" / f"{name}.png", cv2.imencode(".png", segm.astype(np.uint8))[1].tobytes()
        )
        affine = np.eye(4)
        affine[:3, :3] = fr.obj_pose[:3, :3] * scale
        affine[:3, 3] = fr.obj_pose[:3, 3]
        kp2d = fr.keypoints @ OBMAN_K.T
        global_rot = CAM_FLIP @ fr.rotmats[0]
        hand_pose = np.concatenate(
            [Rotation.from_matrix(global_rot).as_rotvec(), seq.grasp.finger_pose]
        )
        meta = {
            "coords_3d": (fr.keypoints @ CAM_FLIP.T).astype(np.float32),
            "coords_2d": (kp2d[:, :2] / kp2d[:, 2:3]).astype(np.float32),
            "verts_3d": (fr.hand_verts @ CAM_FLIP.T).astype(np.float32),
            "hand_pose": hand_pose.astype(np.float32),
            "pca_pose": seq.grasp.finger_pose.astype(np.float32),
            "shape": np.zeros(10, np.float32),
            "trans": (CAM_FLIP @ fr.hand_t).astype(np.float32),
            "side": "right",
            "affine_transform": (flip4 @ affine).astype(np.float32),
            "obj_path": "/data/ShapeNetCore.v2/" + str(obj_file.relative_to(out / "shapenet")),
            "class_id": seq.obj.category,
            "sample_id": seq.obj.instance_id,
            "obj_scale": np.float32(scale),
            "depth_min": layers[0][1],
            "depth_max": layers[0][2],
            "hand_depth_min": layers[1][1],
            "hand_depth_max": layers[1][2],
            "obj_depth_min": layers[2][1],
            "obj_depth_max": layers[2][2],
            "seq_id": f"synth{index:06d}",
            "frame_idx": k,
            "hand_model": "mano" if config.mano else "procedural",
            **{f"grasp_{key}": val for key, val in seq.grasp.stats.items()},
        }
        atomic_write_bytes(base / "meta" / f"{name}.pkl", pickle.dumps(meta, protocol=2))
    return sequence_stats(config, seq)


def sequence_stats(config: SynthConfig, seq: Sequence) -> dict:
    """What the dataset summary needs of a sequence: split, object, grasp statistics."""
    return {
        "index": seq.index,
        "split": config.split_of(seq.index),
        "category": seq.obj.category,
        "source": seq.obj.source,
        **seq.grasp.stats,
    }


# ----------------------------------------------------------------------------- shards


@dataclass(frozen=True)
class SynthTask:
    """Frame `frame` of sequence `seq` as a `prepare_pairs` task (straight to shards)."""

    sample_id: str
    config: SynthConfig
    seq: int
    frame: int
    stats_dir: str | None = None

    def load(self):
        s = cached_sequence(self.config, self.seq, False)
        fr = s.frames[self.frame]
        if self.stats_dir is not None and self.frame == 0:
            stats = sequence_stats(self.config, s)
            atomic_write_bytes(
                Path(self.stats_dir) / f"{self.seq:06d}.json", json.dumps(stats).encode()
            )
        return make_pair(
            sample_id=self.sample_id,
            hand_verts=fr.hand_verts,
            hand_faces=s.hand_faces,
            obj_verts=fr.obj_verts,
            obj_faces=np.asarray(s.obj.mesh.faces),
            image=encode_jpeg(fr.rgb),
            K=OBMAN_K,
            joints=fr.keypoints,
            hand_rotmats=fr.rotmats,
            obj_center=fr.obj_pose[:3, 3],
            obj_pose=fr.obj_pose,
            seq_id=f"synth{self.seq:06d}",
            frame_idx=self.frame,
            obj_frame=fr.obj_pose,
        )


def synth_tasks(config: SynthConfig, stats_dir: str | None = None) -> dict[str, list[SynthTask]]:
    """`prepare_pairs` tasks per split ("train", "test"), frames of a sequence in order (so a
    worker renders each sequence once). With `stats_dir`, each sequence's grasp statistics
    are written there as JSON when its first frame is loaded."""
    out: dict[str, list[SynthTask]] = {"train": [], "test": []}
    for i in range(config.n_sequences):
        for k in range(config.seq_len):
            task = SynthTask(sample_name(config, i, k), config, i, k, stats_dir)
            out[config.split_of(i)].append(task)
    return out


# ----------------------------------------------------------------------------- summary


def penetration_summary(stats: list[dict], touch_mm: float) -> dict:
    """Grasp statistics over sequences: penetration depth (deepest hand vertex inside the
    object) and hand-object gap in mm, fingers in contact, share of grasps in contact."""
    if not stats:
        return {"grasps": 0}
    pen = np.array([s["penetration_mm"] for s in stats])
    gap = np.array([s["gap_mm"] for s in stats])
    fingers = np.array([s["fingers_in_contact"] for s in stats])
    return {
        "grasps": len(stats),
        "penetration_mm": {
            "mean": round(float(pen.mean()), 3),
            "median": round(float(np.median(pen)), 3),
            "p95": round(float(np.percentile(pen, 95)), 3),
            "max": round(float(pen.max()), 3),
        },
        "gap_mm": {"mean": round(float(gap.mean()), 3), "max": round(float(gap.max()), 3)},
        "in_contact_fraction": round(float(np.mean(gap <= touch_mm)), 4),
        "fingers_in_contact_mean": round(float(fingers.mean()), 3),
    }


def dataset_summary(config: SynthConfig, stats: list[dict]) -> dict:
    """The JSON summary of a synthetic dataset (no timings, so equal seeds give equal files)."""
    from collections import Counter

    splits = Counter(s["split"] for s in stats)
    return {
        "config": asdict(config),
        "frames": {k: v * config.seq_len for k, v in sorted(splits.items())},
        "sequences": dict(sorted(splits.items())),
        "seq_len": config.seq_len,
        "objects": dict(sorted(Counter(f"{s['source']}/{s['category']}" for s in stats).items())),
        "grasp": penetration_summary(stats, config.touch_mm),
    }


def format_summary(summary: dict) -> str:
    """Human-readable lines of `dataset_summary`."""
    g = summary["grasp"]
    frames = ", ".join(f"{k} {v}" for k, v in summary["frames"].items())
    text = (
        f"frames: {frames} (sequences of {summary['seq_len']})\n"
        f"objects: {', '.join(f'{k} {v}' for k, v in summary['objects'].items())}"
    )
    if not g["grasps"]:
        return text
    p = g["penetration_mm"]
    return text + (
        f"\ngrasps: {g['grasps']}, in contact {100 * g['in_contact_fraction']:.1f} %, "
        f"fingers touching {g['fingers_in_contact_mean']:.2f} on average; penetration depth "
        f"mean {p['mean']:.2f} mm, median {p['median']:.2f}, p95 {p['p95']:.2f}, max {p['max']:.2f}"
    )
