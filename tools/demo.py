"""The main job end to end on the embedded default, on a CPU, in minutes.

    synthetic data → train the tiny preset (pose stage, then SDF stage) → reconstruct →
    score against the ground truth and a trivial baseline (mean-sized spheres at the
    training set's mean places) → print the table → render input | GT | reconstruction to
    demo-out/reconstruction.png (training frames) and reconstruction-test.png

Every step is a command a user can type (printed before it runs). Everything is written
under ./demo-out/ and every step resumes, so re-running the demo skips what is done
(`--fresh` starts over). The tiny preset trains for a few hundred steps on a couple of dozen
images: enough to fit the training shapes (the "train" rows beat the baseline), not to
generalise (the "test" rows); the paper's presets and schedules are for real data and GPUs.

    python tools/demo.py [--out DIR] [--samples N] [--epochs E] [--resolution R]
                         [--scored N] [--device DEV] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _exe(name: str) -> str:
    """A console script of this environment (the venv the demo runs in), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def step(title: str, argv: list[str], times: dict[str, float]) -> None:
    """Run one command, echoing it; stop the demo with its exit code when it fails."""
    shown = " ".join(shlex.quote(str(a)) for a in argv)
    print(f"\n== {title}\n$ {shown}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call([_exe(argv[0]), *map(str, argv[1:])])
    if rc != 0:
        print(f"demo: step '{title}' failed (exit {rc})", file=sys.stderr)
        raise SystemExit(rc)
    times[title] = round(time.perf_counter() - t0, 1)
    print(f"   ({times[title]:.1f} s)", flush=True)


def _up_to_date(result: Path, inputs: Path) -> bool:
    """Whether `result` exists and is newer than every file in the folder `inputs`."""
    if not result.exists():
        return False
    newest = max((f.stat().st_mtime for f in inputs.iterdir()), default=0.0)
    return result.stat().st_mtime > newest


def render_reconstruction(
    shards: Path, pred: Path, gt: Path, png: Path, indices: tuple[int, ...] = (0,)
) -> Path:
    """One row per sample: input image | ground truth | reconstruction. Written to `png`."""
    from PIL import Image

    from gsdf_model.overlay import compare_folders

    Image.fromarray(compare_folders(shards, indices, [gt, pred])).save(png)
    return png


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="demo-out", help="output directory (default: ./demo-out)")
    ap.add_argument("--samples", type=int, default=32, help="synthetic frames (train + test)")
    ap.add_argument("--epochs", type=int, default=60, help="SDF-stage epochs of the tiny preset")
    ap.add_argument("--pose-epochs", type=int, default=80, help="pose-stage epochs")
    ap.add_argument("--resolution", type=int, default=48, help="marching-cubes grid per pass")
    ap.add_argument(
        "--scored", type=int, default=4, help="frames reconstructed and scored per split"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fresh", action="store_true", help="delete the output directory first")
    args = ap.parse_args(argv)

    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    synth, run = out / "synth", out / "run"
    data = synth / "shards"
    t0 = time.perf_counter()
    times: dict[str, float] = {}

    if not (data / "test" / "manifest.json").exists():
        step(
            "1/5 synthetic hand-object data: rendered images, 40,000 SDF points each, shards",
            ["gsdf-data", "synth", "--out", synth, "--samples", args.samples, "--seq-len", 4,
             "--test-fraction", 0.25, "--shards", "--jobs", 2],
            times,
        )  # fmt: skip
    step(
        "2/5 train the tiny preset: pose stage, then SDF stage with the pose frozen",
        ["gsdf-train", "train", "--preset", "tiny", "--data", data, "--out", run,
         "--epochs", args.epochs, "--pose-epochs", args.pose_epochs, "--device", args.device],
        times,
    )  # fmt: skip

    runs = []
    for split in ("train", "test"):
        limit = args.scored
        pred, gt, base = out / f"pred-{split}", out / f"gt-{split}", out / f"baseline-{split}"
        lim = ["--limit", limit] if limit else []
        step(
            f"3/5 reconstruct {split} frames (two-pass marching cubes on the decoded SDFs)",
            ["gsdf-train", "reconstruct", run / "last.pt", "--data", data, "--out", pred,
             "--split", split, "--resolution", args.resolution, "--component", "anchored",
             "--device", args.device, *lim],
            times,
        )  # fmt: skip
        step(
            f"3/5 ground truth of the {split} frames in the same layout",
            ["gsdf-train", "export-gt", "--data", data, "--out", gt, "--split", split, *lim],
            times,
        )  # fmt: skip
        if not (base / "done").exists():
            from gsdf_model.reconstruct import sphere_baseline

            sphere_baseline(data / "train", data / split, base, limit=limit)
            (base / "done").write_text("")
        for name, folder in ((f"gsdf-tiny-{split}", pred), (f"sphere-baseline-{split}", base)):
            runs.append(out / f"eval-{name}")
            if _up_to_date(out / f"eval-{name}" / "summary.json", folder):
                continue
            step(
                f"4/5 score {name}",
                ["gsdf-eval", "run", folder, gt, "--out", out / f"eval-{name}", "--name", name,
                 "--points", 5000, "--jobs", 2],
                times,
            )  # fmt: skip
    step("5/5 the table (CD cm², F-scores, Eh/Eo cm)", ["gsdf-eval", "table", *runs], times)

    png = render_reconstruction(
        data / "train", out / "pred-train", out / "gt-train", out / "reconstruction.png", (0, 1)
    )
    test_png = render_reconstruction(
        data / "test", out / "pred-test", out / "gt-test", out / "reconstruction-test.png", (0,)
    )
    total = time.perf_counter() - t0
    (out / "demo-summary.json").write_text(
        json.dumps({"seconds": round(total, 1), "steps": times}, indent=2) + "\n"
    )
    print(f"\ninput | ground truth | reconstruction: {png} (train frames), {test_png} (test)")
    print(f"demo finished in {total:.0f} s; everything is under {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
