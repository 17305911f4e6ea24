"""Hand model speed: FK + LBS (the posed mesh) and analytic IK, batch 1,024.

The procedural hand (2,000 vertices) on the CPU, float32, default torch threads; the same on
CUDA when a GPU is present. 15 timed runs after a warm-up: the best run (closest to the
cost on an otherwise idle machine) and the median.
"""

from __future__ import annotations

import os
import time

import numpy as np

BATCH = 1024


def _times(fn, sync=lambda: None, repeat: int = 15) -> tuple[float, float]:
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.min(times)), float(np.median(times))


def _rows(device: str, threads: int | None = None) -> list[dict]:
    import torch

    default_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _measure(device)
    finally:
        torch.set_num_threads(default_threads)


def _measure(device: str) -> list[dict]:
    import torch

    from gsdf_data.hand import load_hand, random_rotations

    hand = load_hand(None, device=device)
    rng = np.random.default_rng(0)
    go = torch.as_tensor(random_rotations(BATCH, rng), device=device)
    fp = torch.as_tensor(hand.sample_poses(BATCH, rng), device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        rot = hand.pose_to_rotmats(go, fp)
        kp = hand.forward_rotmats(rot, skin=False).keypoints
        cases = {
            "FK + LBS (mesh, keypoints)": lambda: hand.forward_rotmats(rot),
            "axis-angle -> FK + LBS": lambda: hand(global_orient=go, finger_pose=fp),
            "FK only (joints, keypoints)": lambda: hand.forward_rotmats(rot, skin=False),
            "IK (keypoints -> rotations)": lambda: hand.ik(kp),
        }
        rows = []
        for name, fn in cases.items():
            t_min, t_med = _times(fn, sync)
            rows.append(
                {
                    "task": name,
                    "device": device,
                    "threads": torch.get_num_threads() if device == "cpu" else "",
                    "batch": BATCH,
                    "vertices": hand.num_vertices,
                    "ms (best)": round(1000 * t_min, 2),
                    "ms (median)": round(1000 * t_med, 2),
                    "poses/s (best)": round(BATCH / t_min),
                }
            )
    return rows


def run() -> dict:
    import torch

    rows = _rows("cpu") + _rows("cpu", threads=1)
    notes = [
        f"CPU: {torch.get_num_threads()} torch threads, {os.cpu_count()} cores; goal for FK + LBS "
        "at batch 1,024: < 50 ms",
        "IK runs in float64 inside (Kabsch by SVD on 5 bones, then 15 swing rotations).",
        "On a busy machine one torch thread is steadier: with two, every small op waits for "
        "the slower thread (torch.set_num_threads(1) in data-loading workers).",
    ]
    if torch.cuda.is_available():
        rows += _rows("cuda")
        notes.append(f"GPU: {torch.cuda.get_device_name(0)}")
    else:
        notes.append("no CUDA device here: GPU rows are missing")
    try:
        notes.append(
            f"load average while measuring: {os.getloadavg()[0]:.1f} (other jobs on the same "
            "cores inflate the medians)"
        )
    except OSError:
        pass
    return {"rows": rows, "notes": notes}
