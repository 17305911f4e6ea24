"""The project's main job on the embedded default (temporary: evaluation of bundled examples).

Scores the bundled example predictions against their ground truth with `gsdf-eval run`, then
prints the paper-style table with `gsdf-eval table`; everything is written under ./demo-out/.
Until the end-to-end pipeline lands, this is what the README's first command runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    out = Path("demo-out")
    examples = ROOT / "examples" / "eval"
    gsdf_eval = [sys.executable, "-m", "gsdf_eval"]
    jobs = str(min(os.cpu_count() or 1, 4))
    steps = [
        [
            *gsdf_eval,
            "run",
            examples / "pred",
            examples / "gt",
            "--out",
            out / "examples",
            "--jobs",
            jobs,
        ],
        [*gsdf_eval, "table", out / "examples", "--plot", out / "examples_cd.png"],
    ]
    for cmd in steps:
        print("$ gsdf-eval " + " ".join(str(c) for c in cmd[3:]), flush=True)
        if subprocess.run([str(c) for c in cmd]).returncode != 0:
            return 1
    print(f"results: {out / 'examples'}/summary.json, per_sample.csv, {out / 'examples_cd.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
