"""Run the benchmarks in bench/bench_*.py and write bench/results/<name>.{json,md}.

Each bench module defines `run() -> dict` returning a JSON-serialisable report whose
"rows" entry (a list of flat dicts) becomes the markdown table. Usage:
    python tools/bench.py            # all
    python tools/bench.py eval sdf   # bench/bench_eval.py and bench/bench_sdf.py
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


def main(argv: list[str]) -> int:
    wanted = set(argv)
    paths = sorted(BENCH.glob("bench_*.py"))
    paths = [p for p in paths if not wanted or p.stem.removeprefix("bench_") in wanted]
    if not paths:
        print(f"no benchmarks match {sorted(wanted)}", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.node() and platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip()
    for path in paths:
        name = path.stem.removeprefix("bench_")
        print(f"== bench {name}", flush=True)
        t0 = time.perf_counter()
        report = _load(path).run()
        report["machine"] = machine
        report["wall_s"] = round(time.perf_counter() - t0, 2)
        (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        md = _markdown(name, report)
        (RESULTS / f"{name}.md").write_text(md)
        print(md, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
