"""GSDFNet training throughput: forward + backward samples/s per preset.

CPU rows always (all cores); GPU rows when CUDA is available: fp32, bf16 autocast with
channels_last, and the latter under torch.compile. Each sample carries 2000 query points
(1000 per mesh, as the paper trains). Stage 2 runs with the pose branch frozen, as in
training. Also reports parameter counts for every preset.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time

import torch

from gsdf_model.config import PRESETS, get_preset
from gsdf_model.describe import _identity_ik, example_batch, parameter_counts
from gsdf_model.network import GSDFNet

N_POINTS = 2000
CPU_CASES = [
    ("tiny", 1, 4),
    ("tiny", 2, 4),
    ("obman", 1, 2),
    ("obman", 2, 2),
    ("dexycb-video", 2, 2),
]
GPU_CASES = [
    ("tiny", 2, 64),
    ("obman", 1, 32),
    ("obman", 2, 32),
    ("v3", 2, 32),
    ("dexycb-video", 2, 16),
]


def _step_fn(net, batch, stage, opt, amp_dtype, device_type):
    def step():
        ctx = (
            torch.autocast(device_type, dtype=amp_dtype)
            if amp_dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            out = net(batch, stage=stage)
            loss = net.loss(batch, out, stage)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _time(step, sync, min_seconds: float, warmup: int, max_iters: int) -> list[float]:
    """Seconds per step, one entry per timed step (at least 2)."""
    for _ in range(warmup):
        step()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_iters and (len(times) < 2 or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def _case(
    preset: str,
    stage: int,
    batch_size: int,
    device: torch.device,
    mode: str = "fp32",
    min_seconds: float = 3.0,
    warmup: int = 2,
    max_iters: int = 20,
) -> dict:
    torch.manual_seed(0)
    cfg = get_preset(preset)
    net = GSDFNet(cfg, ik=_identity_ik).to(device)
    if stage == 2:
        net.freeze_pose()
    net.train()
    batch = example_batch(cfg, batch_size, N_POINTS, device)
    amp = None
    if mode.startswith("bf16"):
        amp = torch.bfloat16
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    model = net
    if mode.endswith("compile"):
        compiled = torch.compile(net)
        model = compiled
    step = _step_fn(model, batch, stage, opt, amp, device.type)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = _time(
        step, sync, min_seconds, warmup + (3 if mode.endswith("compile") else 0), max_iters
    )
    sec, best = statistics.median(times), min(times)
    row = {
        "device": "cuda" if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "preset": preset,
        "stage": stage,
        "mode": mode,
        "batch": batch_size,
        "samples_per_s": batch_size / sec,
        "best_samples_per_s": batch_size / best,
        "ms_per_step": 1000 * sec,
        "iters": len(times),
    }
    if device.type == "cuda":
        row["peak_mem_GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def run() -> dict:
    # Threads as the environment sets them (`nox -s bench` sets OMP_NUM_THREADS=1): on a
    # shared machine more threads than free cores is slower, not faster.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows, notes = [], [f"CPU: {torch.get_num_threads()} torch threads, {os.cpu_count()} cores"]
    cpu = torch.device("cpu")
    for preset, stage, bs in CPU_CASES:
        rows.append(_case(preset, stage, bs, cpu, min_seconds=4.0, warmup=1, max_iters=6))
        print(rows[-1], flush=True)
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        notes.append(f"GPU: {torch.cuda.get_device_name(gpu)} (fp32 rows use TF32 matmuls)")
        for preset, stage, bs in GPU_CASES:
            for mode in ("fp32", "bf16+channels_last", "bf16+channels_last+compile"):
                try:
                    rows.append(_case(preset, stage, bs, gpu, mode))
                except Exception as exc:  # report, keep benchmarking the rest
                    notes.append(
                        f"{preset} stage {stage} {mode}: failed ({type(exc).__name__}: {exc})"
                    )
                print(rows[-1], flush=True)
                torch.cuda.empty_cache()
    else:
        notes.append("no CUDA device here: CPU rows only")
    if hasattr(os, "getloadavg"):
        notes.append(
            f"1-min load average {load:.1f} before the CPU rows, {os.getloadavg()[0]:.1f} after: "
            "on a shared machine the median (samples_per_s) varies run to run, the best step less"
        )
    params = {}
    for name in PRESETS:
        counts = parameter_counts(GSDFNet(get_preset(name), ik=_identity_ik))
        params[name] = counts
        notes.append(
            f"params {name}: {counts['total'] / 1e6:.2f} M total, "
            f"{counts['trainable_stage2'] / 1e6:.2f} M trainable in stage 2"
        )
    notes.append(
        f"{N_POINTS} query points per sample; stage 2 with the hand pose branch frozen; "
        "IK replaced by identity rotations (not a torch op, not what is measured)"
    )
    return {"rows": rows, "notes": notes, "params": params}
