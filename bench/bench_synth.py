"""Synthetic dataset speed: samples per second for render + SDF + write on this machine.

Rows: the ObMan-layout writer (grasp + render + files) and the straight-to-shards path
(grasp + render + 40,000-point SDF sampling + shard write; synthetic objects are closed, so
no double-sided filter), both with
2 worker processes, plus a one-process breakdown. The 1,000-sample figure is a linear
extrapolation of the measured wall time (start-up included, so it is pessimistic).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

N_LAYOUT = 48
N_SHARDS = 32
SEQ_LEN = 4
JOBS = 2


def _breakdown() -> dict:
    from gsdf_data.datasets.synth import SynthConfig, cached_sequence
    from gsdf_data.datasets.synth_writers import synth_tasks
    from gsdf_data.prepare import PrepareConfig, make_sample

    cfg = SynthConfig(samples=4 * SEQ_LEN, seq_len=SEQ_LEN, seed=123)
    t = time.perf_counter()
    cached_sequence(cfg, 0)
    startup = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(1, 4):
        cached_sequence(cfg, i, False)  # as the shard path: no extra depth layers
    per_seq = (time.perf_counter() - t) / 3
    tasks = synth_tasks(cfg)["train"][SEQ_LEN : 3 * SEQ_LEN]
    pairs = [task.load() for task in tasks]
    t = time.perf_counter()
    for p in pairs:
        make_sample(p, PrepareConfig(filter=None))  # as write_shards
    per_sdf = (time.perf_counter() - t) / len(pairs)
    per_sample = per_seq / SEQ_LEN + per_sdf
    return {
        "path": "breakdown, 1 process (shard path)",
        "first_sequence_s (imports, hand, GL)": round(startup, 2),
        "grasp_and_render_per_sequence_s": round(per_seq, 3),
        "per_frame_s": round(per_seq / SEQ_LEN, 3),
        "sdf_per_sample_s": round(per_sdf, 3),
        "samples_per_s": round(JOBS / per_sample, 2),
        "extrapolated_1000_s": round(startup + 1000 * per_sample / JOBS, 0),
    }


def run() -> dict:
    from gsdf_data.datasets.synth import SynthConfig, write_dataset, write_shards

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = (
            ("ObMan layout (render + write)", N_LAYOUT, 1,
             lambda cfg: write_dataset(cfg, Path(tmp) / "layout", jobs=JOBS, progress=False)),
            ("shards (render + SDF 40k + write)", N_SHARDS, 2,
             lambda cfg: write_shards(cfg, Path(tmp) / "shards", jobs=JOBS)),
        )  # fmt: skip
        for label, n, seed, write in runs:
            cfg = SynthConfig(samples=n, seq_len=SEQ_LEN, seed=seed)
            t = time.perf_counter()
            write(cfg)
            dt = time.perf_counter() - t
            rows.append(
                {
                    "path": f"{label}, {JOBS} jobs",
                    "samples": n,
                    "wall_s": round(dt, 1),
                    "samples_per_s": round(n / dt, 2),
                    "extrapolated_1000_s": round(1000 * dt / n, 0),
                }
            )
    rows.append(_breakdown())
    load = os.getloadavg()[0]
    return {
        "rows": rows,
        "notes": [
            f"sequences of {SEQ_LEN} frames (one grasp per sequence), objects 'auto'",
            "extrapolated_1000_s = measured wall time scaled linearly to 1,000 samples "
            "(start-up of the worker processes included); for the breakdown row: start-up + "
            f"1,000 x (per-frame + per-sample SDF time) / {JOBS} jobs",
            f"load average when finished: {load:.1f} on {os.cpu_count()} cores "
            "(other work on the machine slows every row)",
        ],
    }
