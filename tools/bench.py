"""Run the benchmarks in bench/bench_*.py and write bench/results/<name>.{json,md}.

Each bench module defines `run() -> dict | None` returning a JSON-serialisable report whose
"rows" entry (a list of flat dicts) becomes the markdown table, or None when it cannot run
here (it says why): its last report is then kept and the command exits with 1. A module may also define
`run_gpu() -> dict | None`, written as bench/results/<name>_gpu.{json,md}; it returns None
where there is no GPU, which leaves the last GPU report as it is. Usage:
    python tools/bench.py                  # all
    python tools/bench.py eval sdf         # bench/bench_eval.py and bench/bench_sdf.py
    python tools/bench.py --gpu-only model # only bench_model's GPU report (model_gpu)
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _markdown(name: str, report: dict) -> str:
    lines = [f"# bench: {name}", "", f"machine: {report['machine']}", ""]
    rows = report.get("rows", [])
    if rows:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            cells = [
                f"{v:.4g}" if isinstance(v, float) else str(v) for v in (r.get(c, "") for c in cols)
            ]
            lines.append("| " + " | ".join(cells) + " |")
    for note in report.get("notes", []):
        lines += ["", f"- {note}"]
    return "\n".join(lines) + "\n"


def _write(name: str, report: dict, machine: str, seconds: float) -> None:
    report["machine"] = machine
    report["wall_s"] = round(seconds, 2)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    md = _markdown(name, report)
    (RESULTS / f"{name}.md").write_text(md)
    print(md, flush=True)


def main(argv: list[str]) -> int:
    gpu_only = "--gpu-only" in argv
    wanted = set(argv) - {"--gpu-only"}
    paths = sorted(BENCH.glob("bench_*.py"))
    paths = [p for p in paths if not wanted or p.stem.removeprefix("bench_") in wanted]
    if not paths:
        print(f"no benchmarks match {sorted(wanted)}", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.node() and platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip()
    not_run = []
    for path in paths:
        name = path.stem.removeprefix("bench_")
        mod = _load(path)
        if not gpu_only:
            print(f"== bench {name}", flush=True)
            t0 = time.perf_counter()
            report = mod.run()
            if report is None:
                print(f"{name} not run: its last report kept", file=sys.stderr, flush=True)
                not_run.append(name)
            else:
                _write(name, report, machine, time.perf_counter() - t0)
        if hasattr(mod, "run_gpu"):
            print(f"== bench {name}_gpu", flush=True)
            t0 = time.perf_counter()
            report = mod.run_gpu()
            if report is None:
                print(f"no GPU here: {name}_gpu not run, its last report kept", flush=True)
            else:
                _write(f"{name}_gpu", report, machine, time.perf_counter() - t0)
    if not_run:
        print(f"not run: {', '.join(not_run)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
