"""A study anyone can regenerate: does gSDF learn something that transfers, and do the
paper's ablation trends hold? Full gSDF (K3, Ko3, V2) against one-factor ablations (K1, Ko1,
V1) and a sphere baseline, each trained with several seeds, scored on frames whose objects
and grasps never appear in training.

    python tools/experiment.py --scale smoke --out experiment-out     # minutes: the path works
    python tools/experiment.py --scale cpu --out experiment-out       # the study on a CPU
    tools/nox -s experiment -- --scale smoke

Splits are separate synthetic datasets drawn with different seeds (procedural objects: every
object instance and grasp is new), so no test object or grasp is seen in training; settings
are to be chosen on `val`, never on `test`. Every step writes its outputs and is skipped
when they exist: re-running resumes (`--fresh` starts over). The tables go to
OUT/results-val.md and OUT/results-test.md (mean ± sample sd over seeds), timings to
OUT/experiment-summary.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Scale:
    """Frames per split, how the hands are turned (`gsdf-data synth --view-spread`, None: any
    orientation), the tiny-size schedule, and how reconstruction is scored."""

    train: int
    val: int
    test: int
    seq_len: int
    view_spread: float | None
    pose_epochs: int
    epochs: int
    resolution: int
    scored: int


SCALES = {
    # the whole path in a few minutes: numbers mean nothing
    "smoke": Scale(train=16, val=4, test=4, seq_len=4, view_spread=45.0, pose_epochs=2, epochs=2,
                   resolution=24, scored=4),
    # the study: about 35 min on 2 idle CPU cores (4 variants x 2 seeds; docs/results.md)
    "cpu": Scale(train=128, val=12, test=24, seq_len=1, view_spread=45.0, pose_epochs=30,
                 epochs=30, resolution=48, scored=24),
    # the cpu study's data with twice the epochs (a schedule chosen on val)
    "cpu-long": Scale(train=128, val=12, test=24, seq_len=1, view_spread=45.0, pose_epochs=60,
                      epochs=60, resolution=48, scored=24),
}  # fmt: skip
VARIANTS = ("tiny-v2", "tiny-k1", "tiny-ko1", "tiny-v1")  # full gSDF first
SPLIT_SEEDS = {"train": 101, "val": 202, "test": 303}  # disjoint draws: unseen objects, grasps


def _exe(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def run(argv: list, log: Path) -> None:
    """Run one command, its output appended to `log`; a failure stops the study."""
    argv = [_exe(str(argv[0])), *map(str, argv[1:])]
    with log.open("a") as f:
        f.write("$ " + " ".join(argv) + "\n")
        f.flush()
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}; see {log}")


def view(scale: Scale) -> list:
    """`gsdf-data synth` options for the scale's hand orientations."""
    return [] if scale.view_spread is None else ["--view-spread", scale.view_spread]


def figures(out: Path, shards: Path, runs: list, variants: list, seed: int, n: int) -> None:
    """OUT/figure-test.png: input | ground truth | each variant (seed `seed`) on three test
    frames; OUT/metrics-test.png: CDh, CDo and Eh per method, mean and sd over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from gsdf_eval.table import load_run, seed_groups
    from gsdf_model.overlay import compare_folders

    folders = [out / "gt" / "test"] + [out / "pred" / "test" / f"{v}-s{seed}" for v in variants]
    picture = compare_folders(shards, tuple(range(min(3, n))), folders)
    Image.fromarray(picture).save(out / "figure-test.png")
    groups = seed_groups([load_run(out / "eval" / "test" / name) for name, _ in runs])
    keys = (
        ("CDh (cm²)", "hand_cd_cm2"),
        ("CDo (cm²)", "obj_cd_cm2"),
        ("Eh (cm)", "hand_joint_err_cm"),
    )
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, (title, key) in zip(axes, keys, strict=True):
        for i, (name, members) in enumerate(groups):
            values = [m.summary["metrics"][key]["value"] for m in members]
            mean = sum(values) / len(values)
            ax.bar(i, mean, color="0.6" if name == "sphere" else "C0")
            ax.plot([i] * len(values), values, "k.", ms=5)  # one dot per seed
        ax.set_xticks(range(len(groups)), [g for g, _ in groups], rotation=30, ha="right")
        ax.set_title(title)
        if key.endswith("cd_cm2"):
            ax.set_yscale("log")  # a failed object can be 100x the others
    fig.tight_layout()
    fig.savefig(out / "metrics-test.png", dpi=120)
    plt.close(fig)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="experiment-out", help="output folder")
    ap.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), help="model presets")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes for data and scoring")
    ap.add_argument("--fresh", action="store_true", help="delete the output folder first")
    args = ap.parse_args(argv)
    scale = SCALES[args.scale]
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    # resuming reuses every finished step: only with the same data and schedule
    definition = {"scale": args.scale, **asdict(scale), "split_seeds": SPLIT_SEEDS}
    stamp = out / "study.json"
    if stamp.exists() and json.loads(stamp.read_text()) != definition:
        raise SystemExit(f"{out} holds a study with other settings ({stamp}); "
                         "give another --out or --fresh")  # fmt: skip
    stamp.write_text(json.dumps(definition, indent=2) + "\n")
    log = out / "experiment.log"
    t0 = time.perf_counter()
    times: dict[str, float] = {}

    def timed(key: str, argv: list) -> None:
        t = time.perf_counter()
        print(f"[{time.perf_counter() - t0:7.0f} s] {key}", flush=True)
        run(argv, log)
        times[key] = round(time.perf_counter() - t, 1)

    # 1. data: one synthetic dataset per split, each from its own seed
    shards = {}
    for split, seed in SPLIT_SEEDS.items():
        root = out / "data" / split
        shards[split] = root / "shards" / "train"
        if not (shards[split] / "manifest.json").exists():
            timed(f"data {split}", ["gsdf-data", "synth", "--out", root,
                                    "--samples", getattr(scale, split), "--seq-len", scale.seq_len,
                                    "--seed", seed, "--test-fraction", 0, "--objects", "procedural",
                                    "--shards", "--jobs", args.jobs,
                                    *view(scale)])  # fmt: skip
    # 2. ground truth and the sphere baseline of the scored splits
    from gsdf_model.reconstruct import sphere_baseline

    scored = {}
    for split in ("val", "test"):
        gt = out / "gt" / split
        if not (gt / "done").exists():
            timed(f"gt {split}", ["gsdf-train", "export-gt", "--data", shards[split],
                                  "--split", ".", "--out", gt, "--limit", scale.scored])  # fmt: skip
            (gt / "done").write_text("")
        base = out / "pred" / split / "sphere"
        if not (base / "done").exists():
            sphere_baseline(shards["train"], shards[split], base, limit=scale.scored)
            (base / "done").write_text("")
        scored[split] = [("sphere", base)]
    # 3. each variant with each seed: train, reconstruct, score
    for seed in args.seeds:
        for variant in args.variants:
            name = f"{variant}-s{seed}"
            ckpt = out / "runs" / name
            if not (ckpt / "done").exists():
                timed(f"train {name}", ["gsdf-train", "train", "--preset", variant,
                                        "--data", shards["train"], "--out", ckpt,
                                        "--epochs", scale.epochs, "--pose-epochs", scale.pose_epochs,
                                        "--seed", seed])  # fmt: skip
                (ckpt / "done").write_text("")
            for split in ("val", "test"):
                pred = out / "pred" / split / name
                if not (pred / "done").exists():
                    timed(f"reconstruct {split} {name}", [
                        "gsdf-train", "reconstruct", ckpt / "last.pt", "--data", shards[split],
                        "--split", ".", "--out", pred, "--resolution", scale.resolution,
                        "--limit", scale.scored, "--jobs", args.jobs])  # fmt: skip
                    (pred / "done").write_text("")
                scored[split].append((name, pred))
    # 4. scores and the tables (mean ± sd over seeds)
    for split, runs in scored.items():
        evals = []
        for name, pred in runs:
            ev = out / "eval" / split / name
            if not (ev / "summary.json").exists():
                timed(f"score {split} {name}", ["gsdf-eval", "run", pred, out / "gt" / split,
                                                "--out", ev, "--name", name,
                                                "--jobs", args.jobs])  # fmt: skip
            evals.append(ev)
        table = out / f"results-{split}.md"
        with table.open("w") as f:
            argv = [_exe("gsdf-eval"), "table", "--group-seeds", *map(str, evals)]
            subprocess.run(argv, stdout=f, check=True)
        print(f"\n{split} frames ({table}):\n{table.read_text()}", flush=True)
    # 5. figures: a few test frames (input | GT | each variant, first seed), metric bars
    figures(out, shards["test"], scored["test"], args.variants, args.seeds[0], scale.scored)
    total = round(time.perf_counter() - t0, 1)
    record = out / "experiment-summary.json"
    before = json.loads(record.read_text()) if record.exists() else {}
    steps = {**before.get("steps", {}), **times}  # a resumed run adds its steps
    summary = {"scale": args.scale, **asdict(scale), "seeds": args.seeds,
               "variants": args.variants, "split_seeds": SPLIT_SEEDS,
               "seconds": round(before.get("seconds", 0) + total, 1), "steps": steps}  # fmt: skip
    record.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"study finished in {total:.0f} s; everything is under {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
