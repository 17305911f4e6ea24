"""Training throughput: the data path (shards → model batches, with the reference
augmentation) against the loader as it was before (bench/baseline_loader.py), interleaved in
one run, and tiny-preset training samples/s per stage on this machine's CPU.

The shard is written here from analytic spheres (40,000 points, 256×256 JPEG images as in
ObMan and the synthetic set), so the bench depends only on the shard format, not on the
synthetic-data generator. Loader rows are one process, one thread: DataLoader workers
multiply them. Each round times one pass over the shard for every variant in turn (the
machine is shared and noisy); the table gives the median and the best round.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

N_SAMPLES = 64
ROUNDS = 7
BATCH = 8
STEPS = 6
DEVICE_BATCH = 32


def _write_shard(root: Path) -> None:
    """One JPEG shard with its manifest."""
    import cv2
    import trimesh

    from gsdf_data.shards import ShardWriter, shard_name, write_manifest

    rng = np.random.default_rng(0)
    K = np.array([[300.0, 0, 127.5], [0, 300.0, 127.5], [0, 0, 1]], np.float32)
    w = ShardWriter(root / shard_name(0), image_format="jpg")
    ico = trimesh.creation.icosphere(subdivisions=2)
    for i in range(N_SAMPLES):
        c_h = np.array([0.0, 0.0, 0.5]) + rng.normal(0, 0.02, 3)
        c_o = c_h + np.array([0.06, 0.0, 0.0])
        unit = rng.uniform(-1, 1, (40_000, 3))
        scale, offset = 0.12, (c_h + c_o) / 2
        cam = unit * scale + offset
        yy, xx = np.mgrid[0:256, 0:256]
        noise = cv2.GaussianBlur(rng.integers(0, 60, (256, 256, 3)).astype(np.uint8), (5, 5), 1.5)
        image = np.stack([xx, yy, (xx + yy) // 2], -1) + noise
        w.add(
            {
                "sample_id": f"b{i:04d}",
                "seq_id": f"b{i // 8}",
                "frame_idx": i % 8,
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
    write_manifest(root, [w.close()], {"expected_shards": 1, "config": {}})


def _baseline_module():
    path = Path(__file__).resolve().parent / "baseline_loader.py"
    spec = importlib.util.spec_from_file_location("baseline_loader", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _pass_items(ds, epoch: int) -> None:
    ds.set_epoch(epoch)
    for i in range(len(ds)):
        ds[i]


def _pass_batches(ds, epoch: int) -> None:
    """Items collated into batches and finished as the training step does (to_device on
    this CPU: uint8 → float, colour factors): the whole data path of one process."""
    from gsdf_model.data import to_device

    ds.set_epoch(epoch)
    collate = torch.utils.data.default_collate
    for s in range(0, len(ds), DEVICE_BATCH):
        batch = collate([ds[i] for i in range(s, min(s + DEVICE_BATCH, len(ds)))])
        to_device(batch, "cpu")


def _loader_variants(shards) -> dict[str, tuple]:
    from gsdf_model.data import AugmentConfig, GSDFDataset

    old = _baseline_module()
    return {
        "before: read + decode + augment (uniform ±45°, float warp, BCS jitter)": (
            _pass_items,
            old.GSDFDataset(shards, 1000, 1000, augment=old.AugmentConfig()),
        ),
        "now: read + decode + augment (reference), batched finish on this CPU": (
            _pass_batches,
            GSDFDataset(shards, 1000, 1000, augment=AugmentConfig()),
        ),
        "now: the worker part alone (batch finish on the training device)": (
            _pass_items,
            GSDFDataset(shards, 1000, 1000, augment=AugmentConfig()),
        ),
        "before: no augmentation": (_pass_items, old.GSDFDataset(shards, 1000, 1000)),
        "now: no augmentation, batched finish on this CPU": (
            _pass_batches,
            GSDFDataset(shards, 1000, 1000),
        ),
        "before: video (3 frames) + augment": (
            _pass_items,
            old.GSDFDataset(shards, 1000, 1000, video=True, augment=old.AugmentConfig()),
        ),
        "now: video (3 frames) + augment, batched finish on this CPU": (
            _pass_batches,
            GSDFDataset(shards, 1000, 1000, video=True, augment=AugmentConfig()),
        ),
    }


def _jpeg_blobs(shards) -> list[bytes]:
    """The shard's encoded images (read once, for the decoder rows)."""
    out = []
    for i in range(len(shards)):
        s, j, _ = shards._locate(i)
        out.append(s.h5["image"][j].tobytes())
    return out


def _decoders(blobs: list[bytes]) -> dict[str, tuple]:
    """JPEG decoding alone, both decoders on the shard's own images."""
    import cv2
    import simplejpeg

    def cv(_ds, _epoch):
        for b in blobs:
            cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy()

    def sj(_ds, _epoch):
        for b in blobs:
            simplejpeg.decode_jpeg(b, colorspace="RGB")

    return {"JPEG decode: OpenCV (before)": (cv, None), "JPEG decode: simplejpeg (now)": (sj, None)}


def _interleaved(variants: dict[str, tuple], n: int) -> dict[str, tuple[list, list]]:
    """Per variant, samples/s of each round by the wall clock and by this process's CPU
    time, the variants timed in turn within each round."""
    for fn, ds in variants.values():  # warm-up: files opened, caches filled, code loaded
        fn(ds, 0)
    rates: dict[str, tuple[list, list]] = {k: ([], []) for k in variants}
    for r in range(ROUNDS):
        for name, (fn, ds) in variants.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn(ds, r + 1)
            rates[name][0].append(n / (time.perf_counter() - t0))
            rates[name][1].append(n / (time.process_time() - c0))
    return rates


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
    import cv2

    from gsdf_data.shards import ShardSet

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rows = []
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        _write_shard(Path(tmp))
        shards = ShardSet(tmp)
        blobs = _jpeg_blobs(shards)
        variants = _loader_variants(shards) | _decoders(blobs)
        for name, (wall, cpu) in _interleaved(variants, len(shards)).items():
            rows.append(
                {
                    "what": name,
                    "device": "cpu (1 process, 1 thread)",
                    "samples_per_s": round(statistics.median(wall), 1),
                    "best_samples_per_s": round(max(wall), 1),
                    "per_cpu_s": round(statistics.median(cpu), 1),
                }
            )
        load.append(os.getloadavg()[0])
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
            f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} cores",
            f"{N_SAMPLES} samples, 1,000 + 1,000 SDF points each, 256×256 JPEG "
            f"(mean {np.mean([len(b) for b in blobs]) / 1024:.0f} KiB); "
            f"{ROUNDS} interleaved rounds: samples_per_s is the median, best_ the best round "
            "(wall clock); per_cpu_s: samples per second of this process's CPU time (median), "
            "what one process does on a core of its own",
            "before: bench/baseline_loader.py (the loader of commit 1ba7aab); now: "
            "gsdf_model.data.GSDFDataset + to_device with a batch of "
            f"{DEVICE_BATCH}",
            f"1-min load average {load[0]:.1f} before the loader rows, {load[1]:.1f} after",
        ],
    }
