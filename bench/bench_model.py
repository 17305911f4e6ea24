"""GSDFNet training throughput: forward + backward samples/s per preset.

`run` (report `model`): CPU rows (torch threads as the environment sets them) and parameter
counts for every preset. `run_gpu` (report `model_gpu`, only where CUDA is available):
fp32 (TF32 matmuls), bf16 autocast with channels_last, and the latter under torch.compile,
with the peak GPU memory of each. Each sample carries 2000 query points (1000 per mesh, as
the paper trains). Stage 2 runs with the pose branch frozen, as in training.
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
GPU_MODES = ("fp32", "bf16+channels_last")
COMPILED = (*GPU_MODES, "bf16+channels_last+compile")
# (preset, stage, batch, modes). Compilation takes a minute or more per row: only for the
# stage-2 rows that training spends its time in. The last row is the paper's batch of 256.
GPU_CASES = [
    ("tiny", 2, 64, GPU_MODES),
    ("obman", 1, 32, GPU_MODES),
    ("obman", 2, 32, COMPILED),
    ("dexycb-video", 2, 16, COMPILED),
    ("obman", 2, 256, ("bf16+channels_last",)),
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


def _time(step, sync, min_seconds: float, warmup: int, max_iters: int) -> tuple[float, list[float]]:
    """(seconds of the warm-up steps (compilation included), seconds per timed step, one
    entry per timed step (at least 2))."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warm_s = time.perf_counter() - t0
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_iters and (len(times) < 2 or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return warm_s, times


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
        # A fresh start per case, as in a training run: otherwise the next preset recompiles
        # the same forward with dynamic shapes (which torch 2.11's Inductor failed on).
        torch.compiler.reset()
        model = torch.compile(net)
    step = _step_fn(model, batch, stage, opt, amp, device.type)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warm_s, times = _time(
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
        "warmup_s": warm_s,
    }
    if device.type == "cuda":
        row["peak_mem_GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def run() -> dict:
    """CPU rows and parameter counts (the GPU rows are `run_gpu`'s report)."""
    # Threads as the environment sets them (`nox -s bench` sets OMP_NUM_THREADS=1): on a
    # shared machine more threads than free cores is slower, not faster.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows, notes = [], [f"CPU: {torch.get_num_threads()} torch threads, {os.cpu_count()} cores"]
    cpu = torch.device("cpu")
    for preset, stage, bs in CPU_CASES:
        rows.append(_case(preset, stage, bs, cpu, min_seconds=4.0, warmup=1, max_iters=6))
        print(rows[-1], flush=True)
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
    notes.append(_POINTS_NOTE)
    return {"rows": rows, "notes": notes, "params": params}


def run_gpu() -> dict | None:
    """GPU rows (None where CUDA is not available: the last GPU report stays as it is)."""
    if not torch.cuda.is_available():
        return None
    gpu = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    props = torch.cuda.get_device_properties(gpu)
    notes = [
        f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB; torch {torch.__version__}; "
        "fp32 rows use TF32 matmuls and convolutions",
        "peak_mem_GiB: torch.cuda.max_memory_allocated over warm-up and timed steps; "
        "warmup_s: the warm-up steps, torch.compile's compilation included",
    ]
    rows = []
    for preset, stage, bs, modes in GPU_CASES:
        for mode in modes:
            try:
                rows.append(_case(preset, stage, bs, gpu, mode))
                print(rows[-1], flush=True)
            except Exception as exc:  # report, keep benchmarking the rest
                msg = f"{preset} stage {stage} batch {bs} {mode}: failed ({type(exc).__name__}: {exc})"
                notes.append(msg.splitlines()[0])
                print(msg, flush=True)
            torch.cuda.empty_cache()
    notes.append(_POINTS_NOTE)
    return {"rows": rows, "notes": notes}


_POINTS_NOTE = (
    f"{N_POINTS} query points per sample; stage 2 with the hand pose branch frozen; "
    "IK replaced by identity rotations (not a torch op, not what is measured)"
)
