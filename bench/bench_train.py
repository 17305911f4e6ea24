"""Training throughput: data loading samples/s (shards → model batches) and tiny-preset
training samples/s per stage, on this machine's CPU (and CUDA when there is one).

The shard is written here from analytic spheres (40,000 points, 256×256 PNG images), so the
bench depends only on the shard format, not on the synthetic-data generator.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

N_SAMPLES = 32
BATCH = 8
STEPS = 6


def _write_shard(root: Path) -> None:
    from gsdf_data.shards import ShardWriter, shard_name

    rng = np.random.default_rng(0)
    K = np.array([[300.0, 0, 127.5], [0, 300.0, 127.5], [0, 0, 1]], np.float32)
    w = ShardWriter(root / shard_name(0))
    for i in range(N_SAMPLES):
        c_h = np.array([0.0, 0.0, 0.5]) + rng.normal(0, 0.02, 3)
        c_o = c_h + np.array([0.06, 0.0, 0.0])
        unit = rng.uniform(-1, 1, (40_000, 3))
        scale, offset = 0.12, (c_h + c_o) / 2
        cam = unit * scale + offset
        yy, xx = np.mgrid[0:256, 0:256]
        image = np.stack([xx, yy, (xx + yy) // 2], -1) + rng.integers(0, 40, (256, 256, 3))
        ico = __import__("trimesh").creation.icosphere(subdivisions=2)
        w.add(
            {
                "sample_id": f"b{i:04d}",
                "seq_id": "b",
                "frame_idx": i,
                "image": np.clip(image, 0, 255).astype(np.uint8),
                "K": K,
                "joints": c_h + rng.normal(0, 0.03, (21, 3)),
                "hand_rotmats": None,
                "obj_center": c_o,
                "obj_pose": None,
                "norm_offset": offset,
                "norm_scale": scale,
                "points": unit,
                "sdf_hand": (np.linalg.norm(cam - c_h, axis=1) - 0.04) / scale,
                "sdf_obj": (np.linalg.norm(cam - c_o, axis=1) - 0.03) / scale,
                "hand_verts": ico.vertices * 0.04 + c_h,
                "hand_faces": ico.faces,
                "obj_verts": ico.vertices * 0.03 + c_o,
                "obj_faces": ico.faces,
            }
        )
    w.close()


def _loading(shards, augment, video: bool) -> float:
    from gsdf_model.data import AugmentConfig, GSDFDataset

    ds = GSDFDataset(shards, 1000, 1000, video=video, augment=AugmentConfig() if augment else None)
    ds[0]
    t0 = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    return len(ds) / (time.perf_counter() - t0)


def _training(shards, device: torch.device) -> dict[str, float]:
    from gsdf_model.config import get_preset
    from gsdf_model.data import GSDFDataset, to_device
    from gsdf_model.network import GSDFNet

    torch.manual_seed(0)
    net = GSDFNet(get_preset("tiny")).to(device)
    ds = GSDFDataset(shards, 256, 256)
    batch = torch.utils.data.default_collate([ds[i] for i in range(BATCH)])
    batch = to_device(batch, device)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    out = {}
    for stage in (1, 2):
        if stage == 2:
            net.freeze_pose()
            opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], 1e-3)
        for i in range(STEPS + 1):
            if i == 1:  # the first step warms up allocators and caches
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            loss = net.loss(batch, net(batch, stage), stage)["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out[f"stage{stage}"] = STEPS * BATCH / (time.perf_counter() - t0)
    return out


def run() -> dict:
    from gsdf_data.shards import ShardSet

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        _write_shard(Path(tmp))
        shards = ShardSet(tmp)
        for augment in (False, True):
            rows.append(
                {
                    "what": "data loading" + (" + augmentation" if augment else ""),
                    "device": "cpu (1 process)",
                    "samples_per_s": round(_loading(shards, augment, False), 1),
                }
            )
        rows.append(
            {
                "what": "data loading, video (3 frames)",
                "device": "cpu (1 process)",
                "samples_per_s": round(_loading(shards, False, True), 1),
            }
        )
        devices = [torch.device("cpu")]
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        for dev in devices:
            for stage, sps in _training(shards, dev).items():
                rows.append(
                    {
                        "what": f"train tiny {stage} (batch {BATCH}, 256+256 points)",
                        "device": dev.type,
                        "samples_per_s": round(sps, 1),
                    }
                )
        shards.close()
    return {
        "rows": rows,
        "notes": [
            f"torch {torch.__version__}, {torch.get_num_threads()} threads",
            "data loading: one process; DataLoader workers multiply it",
        ],
    }
