"""Paper-style tables across runs (markdown, LaTeX, CSV) and per-sample CD plots.

A run is an output directory of `gsdf-eval run` (or its summary.json). Columns follow the
paper: CDh, FSh@1, FSh@5, CDo, FSo@5, FSo@10, Eh, Eo (Tables 1-2), then Cr, Pd, Iv
(contact ratio %, penetration depth cm, intersection volume cm³).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from gsdf_eval.io import EvalInputError

# header, summary metric, decimals
COLUMNS = (
    ("CDh", "hand_cd_cm2", 3),
    ("FSh@1", "hand_fscore_1mm", 3),
    ("FSh@5", "hand_fscore_5mm", 3),
    ("CDo", "obj_cd_cm2", 2),
    ("FSo@5", "obj_fscore_5mm", 3),
    ("FSo@10", "obj_fscore_10mm", 3),
    ("Eh", "hand_joint_err_cm", 2),
    ("Eo", "obj_center_err_cm", 2),
    ("Cr", "contact_ratio_pct", 1),
    ("Pd", "penetration_cm", 2),
    ("Iv", "intersection_cm3", 2),
)


@dataclass(frozen=True)
class Run:
    """A loaded run: name, summary dict and the directory holding per_sample.csv."""

    name: str
    summary: dict
    directory: Path


def load_run(path: str | Path) -> Run:
    """Load a run from its output directory or its summary.json."""
    path = Path(path)
    summary_path = path / "summary.json" if path.is_dir() else path
    if not summary_path.is_file():
        raise EvalInputError(f"{path}: not a gsdf-eval run (no summary.json)")
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        summary = None
    if not isinstance(summary, dict) or not isinstance(summary.get("metrics"), dict):
        raise EvalInputError(f"{summary_path}: not a gsdf-eval summary")
    return Run(summary.get("name") or summary_path.parent.name, summary, summary_path.parent)


def _cells(run: Run) -> list[str]:
    cells = []
    for _, key, dec in COLUMNS:
        value = run.summary["metrics"].get(key, {}).get("value")
        cells.append("-" if value is None else f"{value:.{dec}f}")
    return cells


def render(runs: list[Run], fmt: str = "md") -> str:
    """The table as text: fmt "md", "latex" or "csv"."""
    headers = ["Run"] + [h for h, _, _ in COLUMNS]
    rows = [[r.name, *_cells(r)] for r in runs]
    if fmt == "md":
        lines = [
            "| " + " | ".join(headers) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    if fmt == "latex":

        def esc(text: str) -> str:
            return (
                text.replace("\\", r"\textbackslash{}")
                .replace("_", r"\_")
                .replace("%", r"\%")
                .replace("&", r"\&")
            )

        tex_headers = [
            "Run",
            r"CD$_h\downarrow$",
            r"FS$_h$@1$\uparrow$",
            r"FS$_h$@5$\uparrow$",
            r"CD$_o\downarrow$",
            r"FS$_o$@5$\uparrow$",
            r"FS$_o$@10$\uparrow$",
            r"E$_h\downarrow$",
            r"E$_o\downarrow$",
            r"C$_r$",
            r"P$_d\downarrow$",
            r"I$_v\downarrow$",
        ]
        lines = [
            r"\begin{tabular}{l" + "r" * (len(headers) - 1) + "}",
            r"\toprule",
            " & ".join(tex_headers) + r" \\",
            r"\midrule",
        ]
        lines += [" & ".join([esc(row[0]), *row[1:]]) + r" \\" for row in rows]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)
        return buf.getvalue()
    raise ValueError(f"unknown table format {fmt!r}")


def per_sample_values(run: Run, key: str) -> list[float]:
    """Per-sample values of one CSV column (empty cells skipped)."""
    path = run.directory / run.summary.get("per_sample_csv", "per_sample.csv")
    if not path.is_file():
        raise EvalInputError(f"{path}: per-sample results are missing")
    with path.open(newline="") as fh:
        return [float(r[key]) for r in csv.DictReader(fh) if r.get(key) not in (None, "")]


def plot_cd(runs: list[Run], out_png: str | Path) -> None:
    """Per-sample hand and object Chamfer distances (cm², log axis): a box and the samples
    of every run side by side; the orange line is the median the table reports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rng = np.random.default_rng(0)  # horizontal jitter of the sample dots only
    fig, axes = plt.subplots(
        1, 2, figsize=(max(7.0, 2.5 + 1.6 * len(runs)), 4.0), constrained_layout=True
    )
    panels = (("hand_cd_cm2", "hand CD (cm²)"), ("obj_cd_cm2", "object CD (cm²)"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        shown = [(r.name, per_sample_values(r, key)) for r in runs]
        shown = [(name, vals) for name, vals in shown if vals]
        ax.set_title(title)
        if not shown:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.boxplot([v for _, v in shown], showfliers=False)
        for i, (_, vals) in enumerate(shown, start=1):
            ax.scatter(
                i + rng.uniform(-0.12, 0.12, len(vals)), vals, s=8, alpha=0.5, color="tab:blue"
            )
        ax.set_xticks(
            range(1, len(shown) + 1), [name for name, _ in shown], rotation=20, ha="right"
        )
        if min(min(v) for _, v in shown) > 0:
            ax.set_yscale("log")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
