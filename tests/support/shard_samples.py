"""Small shard sets for the tests of what happens around the data (refusals, checksums,
resume): random fields of the right shapes, P points per sample."""

import numpy as np

from gsdf_data.shards import ShardWriter, encode_pose_sample, write_manifest

P = 600


def tiny_sample(i: int, rng: np.random.Generator) -> dict:
    """Sample `s{i}`: a 16x16 image and P points with sphere SDFs; nothing else is real."""
    pts = rng.uniform(-1, 1, (P, 3)).astype(np.float32)
    return {
        "sample_id": f"s{i}",
        "image": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
        "K": np.eye(3),
        "joints": rng.normal(size=(21, 3)),
        "obj_center": np.zeros(3),
        "norm_offset": np.zeros(3),
        "norm_scale": 0.1,
        "points": pts,
        "sdf_hand": np.linalg.norm(pts, axis=1) - 0.5,
        "sdf_obj": np.linalg.norm(pts - 0.3, axis=1) - 0.4,
        "hand_verts": rng.normal(size=(4, 3)),
        "hand_faces": [[0, 1, 2]],
        "obj_verts": rng.normal(size=(4, 3)),
        "obj_faces": [[0, 1, 2]],
    }


def pose_only_sample(sample: dict, reason: str = "double-sided filter: test") -> dict:
    """`sample` as a pose-only sample (no points, SDFs or meshes), encoded for a shard."""
    keep = {k: v for k, v in sample.items() if k not in ("norm_offset", "norm_scale")}
    return encode_pose_sample(keep, reason=reason)


def write_set(root, groups, n_points: int = P) -> None:
    """A finished set: shard j holds `groups[j]`, a list of sample dicts (plain ones, or
    pose-only ones from `pose_only_sample`)."""
    entries = []
    for j, samples in enumerate(groups):
        w = ShardWriter(root / f"shard-{j:05d}.h5", n_points=n_points)
        for s in samples:
            w.add(s)
        entries.append(w.close())
    write_manifest(root, entries, {"expected_shards": len(groups), "config": {}})


def write_finished_set(root, pose_only: int = 0) -> None:
    """Three samples in two shards with their manifest: what a finished prepare leaves.
    `pose_only`: that many pose-only samples `p0`, `p1`... too, the first in shard 0, the
    others in a third shard that holds nothing else."""
    rng = np.random.default_rng(0)
    groups = [[tiny_sample(i, rng) for i in ids] for ids in ([0, 1], [2])]
    pose = [
        pose_only_sample({**tiny_sample(0, rng), "sample_id": f"p{k}"}) for k in range(pose_only)
    ]
    if pose:
        groups[0].append(pose[0])
    if pose[1:]:
        groups.append(pose[1:])
    write_set(root, groups)
