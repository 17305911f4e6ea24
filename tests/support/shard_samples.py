"""Small shard sets for the tests of what happens around the data (refusals, checksums,
resume): random fields of the right shapes, P points per sample."""

import numpy as np

from gsdf_data.shards import ShardWriter, write_manifest

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


def write_finished_set(root) -> None:
    """Three samples in two shards with their manifest: what a finished prepare leaves."""
    rng = np.random.default_rng(0)
    entries = []
    for j, ids in enumerate(([0, 1], [2])):
        w = ShardWriter(root / f"shard-{j:05d}.h5", n_points=P)
        for i in ids:
            w.add(tiny_sample(i, rng))
        entries.append(w.close())
    write_manifest(root, entries, {"expected_shards": 2, "config": {}})
