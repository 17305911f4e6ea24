"""Mesh reconstruction: seconds per sample (hand + object), dense against coarse-to-fine.

Uses the demo's checkpoint (`python tools/demo.py` writes demo-out/run/last.pt: the tiny
preset trained on the synthetic set) on its test frames at the reference's 128³ per pass.
Rows, on the same samples and interleaved in one process, so the machine's load hits all
alike; best-of and median over samples x repeats:

- "before": what `reconstruct` did until now: a dense first pass, then a dense pass per
  shape (three 128³ grids), 65,536 points per network call;
- "dense": the reference's two dense passes (the second over one cube around hand ∪
  object), 8,192 points per call;
- "coarse-to-fine": the same two grids decoded only near the surfaces (the default).

The Chamfer distance between the dense and coarse-to-fine meshes (cm², vertices against
vertices) says they are the same meshes. An "obman-size" row times coarse-to-fine with the
paper's full-size network decoding every point too (random weights: its cost, not its
surfaces, which still come from the demo's network), so its seconds bound the paper model's
from above. A last pair of rows runs `gsdf-train reconstruct` with --jobs 1 and --jobs 2.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo-out"
N_SAMPLES = 2
REPEATS = 2
RES = 128


def _chamfer_cm2(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    d_ab = cKDTree(b).query(a)[0]
    d_ba = cKDTree(a).query(b)[0]
    return float(((d_ab * 100) ** 2).mean() + ((d_ba * 100) ** 2).mean())


def _stats(xs: list[float]) -> dict[str, float]:
    return {"best_s": min(xs), "median_s": statistics.median(xs)}


def run() -> dict | None:
    from gsdf_model.config import get_preset
    from gsdf_model.data import GSDFDataset, open_shards, to_device
    from gsdf_model.meshing import MeshingConfig, extract_surface
    from gsdf_model.runtime import (
        build_model,
        load_checkpoint_file,
        loader_options,
        model_from_checkpoint,
    )

    ckpt_path = DEMO / "run" / "last.pt"
    if not ckpt_path.is_file():
        print(
            f"no demo checkpoint: run `python tools/demo.py` first ({ckpt_path})", file=sys.stderr
        )
        return None
    net, cfg = model_from_checkpoint(load_checkpoint_file(ckpt_path))
    big = build_model(get_preset("obman")).eval()
    data = DEMO / "synth" / "shards" / "test"
    ds = GSDFDataset(open_shards(data), n_hand=0, n_obj=0, augment=None, **loader_options(cfg))
    extent = 2.0 / cfg.recon_scale
    cases = {
        "before": MeshingConfig(RES, extent, 65536, box="per-shape", evaluation="dense"),
        "dense": MeshingConfig(RES, extent, 8192, evaluation="dense"),
        "coarse-to-fine": MeshingConfig(RES, extent, 8192),
        "coarse-to-fine, obman-size": MeshingConfig(RES, extent, 8192),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    points: dict[str, list[int]] = {k: [] for k in cases}
    chamfer: list[float] = []
    n = min(N_SAMPLES, len(ds))
    for i in range(n):
        b = to_device({k: v[None] for k, v in ds[i].items() if torch.is_tensor(v)}, "cpu")
        wrist = b["joints"][:, 0]
        centre = wrist[0].double().numpy()
        for rep in range(REPEATS):
            meshes = {}
            for name, mcfg in cases.items():
                if name in ("before", "dense") and rep > 0:
                    continue  # a dense grid takes a minute or more here: one run each
                t0 = time.perf_counter()
                with torch.no_grad():
                    state = net.encode(b["image"], b["K"], wrist=wrist)
                    big_state = (
                        big.encode(b["image"], b["K"], wrist=wrist)
                        if name.endswith("obman-size")
                        else None
                    )

                    def sdf_fn(p, name=name, state=state, big_state=big_state):
                        x = torch.from_numpy(p.astype(np.float32))[None]
                        if name.endswith("obman-size"):
                            big.query(big_state, x)
                        h, o = net.query(state, x)
                        return h[0].numpy(), o[0].numpy()

                    st: dict = {}
                    meshes[name] = extract_surface(sdf_fn, centre, mcfg, stats=st)
                times[name].append(time.perf_counter() - t0)
                points[name].append(st["points"])
            if rep == 0:
                for a, c in zip(meshes["dense"], meshes["coarse-to-fine"], strict=True):
                    if (a is None) != (c is None):
                        chamfer.append(float("inf"))
                    elif a is not None:
                        chamfer.append(_chamfer_cm2(a[0], c[0]))
    rows = []
    for name in cases:
        rows.append(
            {
                "case": name,
                **_stats(times[name]),
                "points_per_sample": int(np.mean(points[name])),
                "runs": len(times[name]),
            }
        )
    rows += _jobs_rows(ckpt_path, data.parent)
    return {
        "rows": rows,
        "chamfer_dense_vs_coarse_to_fine_cm2_max": max(chamfer) if chamfer else None,
        "notes": [
            f"demo checkpoint (tiny preset), {n} test frames, {RES}³ per pass, torch threads "
            f"{torch.get_num_threads()}; seconds per sample for hand + object, encoder "
            "included",
            "Chamfer between the dense and the coarse-to-fine meshes, largest over samples "
            f"and shapes: {max(chamfer) if chamfer else float('nan'):.3g} cm² "
            f"({len(chamfer)} meshes)",
            "obman-size: the paper's network (random weights) decodes every point as well; "
            "the surfaces still come from the demo's network, so this bounds the paper "
            "model's time from above",
            "jobs rows: `gsdf-train reconstruct` on 8 test frames (command start-up and "
            "process spawn included)",
        ],
    }


def _jobs_rows(ckpt: Path, data: Path) -> list[dict]:
    """Wall seconds of the CLI with --jobs 1 and --jobs 2 on the same 8 frames."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # --jobs 1 gets every core, --jobs 2 shares them out
    rows = []
    for jobs in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-c", "from gsdf_model.cli import main; main()", "reconstruct",
                   str(ckpt), "--data", str(data), "--out", tmp, "--limit", "8",
                   "--jobs", str(jobs)]  # fmt: skip
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, capture_output=True)
            rows.append({"case": f"cli --jobs {jobs}, 8 frames", "best_s": time.perf_counter() - t0,
                         "runs": 1})  # fmt: skip
    return rows
