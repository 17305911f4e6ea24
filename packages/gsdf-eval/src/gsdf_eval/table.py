"""Paper-style tables across runs (markdown, LaTeX, CSV) and per-sample CD plots.

A run is an output directory of `gsdf-eval run` (or its summary.json). Columns follow the
paper: CDh, FSh@1, FSh@5, CDo, FSo@5, FSo@10, Eh, Eo (Tables 1-2), then Cr, Pd, Iv
(contact ratio %, penetration depth cm, intersection volume cm³) and Eh-rel (the
wrist-relative joint error; Eh is the reference's camera-frame error).

Every table says which protocol scored its runs, and refuses runs of different protocols
unless asked (their numbers are not comparable). A value computed on fewer samples than the
GT set holds (predictions missing, samples skipped) is marked * and footnoted with the
counts: a partial run never passes for a whole one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
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
    ("Eh-rel", "hand_joint_err_rel_cm", 2),
)
UNKNOWN_PROTOCOL = "unrecorded"  # summaries written before protocols were recorded


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


def protocol_of(run: Run) -> str:
    return str(run.summary.get("protocol") or UNKNOWN_PROTOCOL)


def check_protocols(runs: list[Run], allow_mixed: bool = False) -> None:
    """EvalInputError when runs were scored with different protocols and not allow_mixed."""
    protocols = {protocol_of(r) for r in runs}
    if len(protocols) > 1 and not allow_mixed:
        which = ", ".join(f"{r.name}: {protocol_of(r)}" for r in runs)
        raise EvalInputError(
            f"runs were scored with different protocols ({which}); their numbers are not "
            "comparable (pass --mixed-protocols to tabulate them anyway)"
        )


def _expected(run: Run) -> int | None:
    n = run.summary.get("n_expected")
    return n if isinstance(n, int) else None


def _counts(run: Run, key: str) -> tuple[int | None, int | None]:
    """(samples the metric was computed on, GT samples that have what it needs)."""
    entry = run.summary["metrics"].get(key, {})
    return entry.get("n"), entry.get("n_expected", _expected(run))


def _partial(run: Run, key: str) -> bool:
    """True when the metric covers some but not all of the GT samples it applies to."""
    n, expected = _counts(run, key)
    return bool(expected and n and n < expected)


def _cells(run: Run, star: str = "*") -> list[str]:
    cells = []
    for _, key, dec in COLUMNS:
        value = run.summary["metrics"].get(key, {}).get("value")
        text = "-" if value is None else f"{value:.{dec}f}"
        cells.append(text + (star if value is not None and _partial(run, key) else ""))
    return cells


def footnotes(runs: list[Run]) -> list[str]:
    """The lines under a table: the protocol(s), then one line per partial run."""
    protocols = [protocol_of(r) for r in runs]
    if len(set(protocols)) == 1:
        lines = [f"Protocol: {protocols[0]}."]
    else:
        lines = [
            "Protocols: "
            + "; ".join(f"{r.name}: {p}" for r, p in zip(runs, protocols, strict=True))
        ]
    for r in runs:
        groups: dict[tuple[int, int], list[str]] = {}
        for h, key, _ in COLUMNS:
            if _partial(r, key):
                groups.setdefault(_counts(r, key), []).append(h)
        if groups:
            parts = "; ".join(f"{', '.join(hs)} over {n} of {e}" for (n, e), hs in groups.items())
            lines.append(
                f"* {r.name}: partial, fewer samples than the GT has ({parts} GT samples; "
                f"{r.summary.get('n_scored')} of {_expected(r)} samples scored, "
                f"{len(r.summary.get('gt_without_prediction') or [])} without a prediction, "
                f"{len(r.summary.get('skipped') or [])} skipped)."
            )
    return lines


def render(runs: list[Run], fmt: str = "md") -> str:
    """The table as text: fmt "md", "latex" or "csv"."""
    headers = ["Run"] + [h for h, _, _ in COLUMNS]
    rows = [[r.name, *_cells(r)] for r in runs]
    notes = footnotes(runs)
    if fmt == "md":
        lines = [
            "| " + " | ".join(headers) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines += ["", *notes]
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
            r"E$_h^{\mathrm{rel}}\downarrow$",
        ]
        lines = [
            r"\begin{tabular}{l" + "r" * (len(headers) - 1) + "}",
            r"\toprule",
            " & ".join(tex_headers) + r" \\",
            r"\midrule",
        ]
        rows = [[r.name, *_cells(r, star="$^*$")] for r in runs]
        lines += [" & ".join([esc(row[0]), *row[1:]]) + r" \\" for row in rows]
        lines += [r"\bottomrule"]
        lines += [
            rf"\multicolumn{{{len(headers)}}}{{l}}{{\footnotesize "
            + esc(note).replace("* ", "$^*$ ", 1)
            + r"} \\"
            for note in notes
        ]
        lines += [r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        # plain numbers for spreadsheets; the protocol and the counts as columns
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([*headers, "protocol", "n_scored", "n_expected"])
        for r in runs:
            cells = [c.rstrip("*") for c in _cells(r)]
            writer.writerow(
                [r.name, *cells, protocol_of(r), r.summary.get("n_scored"), _expected(r)]
            )
        return buf.getvalue()
    raise ValueError(f"unknown table format {fmt!r}")


SEED_SUFFIX = re.compile(r"-s(\d+)$")


def seed_groups(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    """Runs named `<name>-s<seed>` grouped by <name>, in order of first appearance (a run
    without the suffix is a group of its own)."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(SEED_SUFFIX.sub("", r.name), []).append(r)
    return list(groups.items())


def _mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def render_seed_groups(runs: list[Run]) -> str:
    """A markdown table with one row per group of seeds: each cell `mean ± sd` of the runs'
    values (sample standard deviation over seeds; the value alone for one seed), * when any
    run of the group is partial."""
    headers = ["Run", "seeds"] + [h for h, _, _ in COLUMNS]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---", "---:"] + ["---:"] * len(COLUMNS)) + "|",
    ]
    for name, members in seed_groups(runs):
        cells = [name, str(len(members))]
        for _, key, dec in COLUMNS:
            values = [m.summary["metrics"].get(key, {}).get("value") for m in members]
            if any(v is None for v in values):
                cells.append("-")
                continue
            mean, sd = _mean_sd([float(v) for v in values])
            star = "*" if any(_partial(m, key) for m in members) else ""
            spread = f" ± {sd:.{dec}f}" if len(values) > 1 else ""  # one seed: no spread
            cells.append(f"{mean:.{dec}f}{spread}{star}")
        lines.append("| " + " | ".join(cells) + " |")
    notes = footnotes(runs)
    notes.insert(1, "Each cell: mean ± sample standard deviation over the seeds of a row.")
    return "\n".join([*lines, "", *notes]) + "\n"


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
