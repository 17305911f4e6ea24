"""`gsdf-eval` command line (thin: parse, then call gsdf_eval functions).

Heavy modules (numpy, libigl, joblib, matplotlib) are imported inside the commands so that
`gsdf-eval --help` stays instant, and trimesh (with scipy and networkx, about a second) only
for a mesh format other than PLY and OBJ (tests/eval/test_startup.py keeps it that way).
"""

import click

from gsdf_eval import __version__


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(" ".join(str(exc).split()))


class _OneLineErrors(click.Group):
    """Ends a command on an OSError (an output folder that cannot be made, a file that cannot
    be read) with one line naming the path, never a traceback. gsdf-eval cannot import
    gsdf-data's helper for this: it depends on neither of the other packages."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OSError as err:
            reason = err.strerror or str(err) or type(err).__name__
            raise click.ClickException(
                f"{err.filename}: {reason}" if err.filename else reason
            ) from None


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gsdf-eval")
def main() -> None:
    """Score hand-object reconstructions with the standard metrics.

    Meshes are in metres (PLY, OBJ or any other format trimesh reads); metrics are reported
    in the paper's units: Chamfer in cm², F-score thresholds in mm, errors and depth in cm,
    volume in cm³.
    """


def _protocol_options(fn):
    """--protocol, --units, --seed, --points, --iters: shared by `pair` and `run`."""
    fn = click.option(
        "--units",
        type=click.Choice(["m", "mm"]),
        default="m",
        show_default=True,
        help="Units of every input mesh and pose file (mm: converted to metres). An extent "
        "over 1 m in metres is refused as a unit mistake.",
    )(fn)
    fn = click.option(
        "--protocol",
        type=click.Choice(["gsdf", "converged"]),
        default="gsdf",
        show_default=True,
        help="gsdf: the reference code's protocol (its ICP stopping rule, fresh samples after "
        "alignment, signed-distance contact on its lattice), which made the published numbers. "
        "converged: ICP run to its fixed point, alignment samples reused, winding-number "
        "voxel-centre contact.",
    )(fn)
    fn = click.option(
        "--iters",
        default=100,
        show_default=True,
        type=click.IntRange(min=0),
        help="Maximum ICP solves (per level for --protocol converged).",
    )(fn)
    fn = click.option(
        "--points",
        default=30_000,
        show_default=True,
        type=click.IntRange(min=1),
        help="Surface samples per mesh.",
    )(fn)
    return click.option(
        "--seed", default=0, show_default=True, help="Seed of the surface sampling."
    )(fn)


@main.command()
@click.option(
    "--hand-pred", required=True, type=click.Path(dir_okay=False), help="Predicted hand mesh."
)
@click.option(
    "--hand-gt", required=True, type=click.Path(dir_okay=False), help="Ground-truth hand mesh."
)
@click.option("--obj-pred", type=click.Path(dir_okay=False), help="Predicted object mesh.")
@click.option("--obj-gt", type=click.Path(dir_okay=False), help="Ground-truth object mesh.")
@_protocol_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def pair(hand_pred, hand_gt, obj_pred, obj_gt, protocol, units, seed, points, iters, as_json):
    """Score one prediction against its ground truth.

    The predicted hand is aligned to the GT hand (scale + translation ICP on surface samples,
    by default with the reference code's stopping rule) and the same transform is applied to
    the predicted object. Object keys are null without
    --obj-pred/--obj-gt.
    """
    import json

    from gsdf_eval.io import EvalInputError, load_mesh
    from gsdf_eval.run import PAIR_KEYS, EvalSettings, score_pair

    if (obj_pred is None) != (obj_gt is None):
        raise click.ClickException(
            "--obj-pred and --obj-gt go together (a prediction needs its GT)"
        )
    settings = EvalSettings(
        n_points=points, max_iter=iters, seed=seed, protocol=protocol, units=units
    )
    try:
        meshes = [load_mesh(hand_pred, units), load_mesh(hand_gt, units)]
        if obj_pred is not None:
            meshes += [load_mesh(obj_pred, units), load_mesh(obj_gt, units)]
        result = score_pair(*meshes, settings=settings)
    except EvalInputError as exc:
        raise _fail(exc) from None
    out = {k: result[k] for k in PAIR_KEYS}
    if as_json:
        click.echo(json.dumps(out))
        return
    for k, v in out.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, list):
            v = "[" + ", ".join(f"{x:.4g}" for x in v) + "]"
        click.echo(f"{k:18s} {v}")
    stop = "stopped by its rule" if protocol == "gsdf" else "converged"
    click.echo(
        f"aligned in {result['align_iterations']} ICP solves"
        + (f" ({stop})" if result["align_converged"] else " (iteration cap)")
        + f"; protocol {protocol}"
    )


@main.command()
@click.argument("pred_dir", type=click.Path(file_okay=False))
@click.argument("gt_dir", type=click.Path(file_okay=False))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output directory for per_sample.csv and summary.json [default: runs/<PRED_DIR's name>].",
)
@click.option(
    "--jobs", "-j", default=1, show_default=True, help="Parallel worker processes (-1: all cores)."
)
@_protocol_options
@click.option(
    "--on-error",
    type=click.Choice(["stop", "skip"]),
    default="stop",
    show_default=True,
    help="At a bad sample: stop, or skip it and list it in the summary.",
)
@click.option("--name", help="Run name in tables (default: the output directory's name).")
def run(pred_dir, gt_dir, out_dir, jobs, protocol, units, seed, points, iters, on_error, name):
    """Score a prediction set: PRED_DIR against GT_DIR.

    Both directories hold <id>_hand.ply, <id>_obj.ply and optionally <id>.json with "joints"
    (21x3) and "obj_center" (3), metres. Writes per_sample.csv and summary.json to --out.
    Summary as in the paper: median Chamfer distances; mean F-scores, Eh, Eo, penetration
    depth and intersection volume; contact ratio = % of samples in contact. The summary
    records the protocol and how many GT samples each metric covers.
    """
    from gsdf_eval.io import EvalInputError
    from gsdf_eval.run import EvalSettings, run_set
    from gsdf_eval.table import Run, render

    if jobs == 0:
        raise click.ClickException(
            "--jobs must be a positive number of processes, or -1 for all cores"
        )
    from pathlib import Path

    if out_dir is None:
        out_dir = Path("runs") / Path(pred_dir).resolve().name
    settings = EvalSettings(
        n_points=points, max_iter=iters, seed=seed, protocol=protocol, units=units
    )
    try:
        summary = run_set(
            pred_dir, gt_dir, out_dir, jobs=jobs, settings=settings, on_error=on_error, name=name
        )
    except EvalInputError as exc:
        raise _fail(exc) from None
    click.echo(render([Run(summary["name"], summary, Path(out_dir))], "md"), nl=False)
    for item in summary["skipped"]:
        click.echo(f"skipped {item['id']}: {item['reason']}", err=True)
    if summary["gt_without_prediction"]:
        click.echo(
            f"warning: {len(summary['gt_without_prediction'])} GT samples have no prediction",
            err=True,
        )
    click.echo(
        f"scored {summary['n_scored']} of {summary['n_expected']} GT samples "
        f"({summary['n_predictions']} predictions, protocol {protocol}) "
        f"-> {Path(out_dir) / 'summary.json'}"
    )


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--format", "fmt", type=click.Choice(["md", "latex", "csv"]), default="md", show_default=True
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    help="Also draw per-sample CD distributions to this PNG.",
)
@click.option(
    "--mixed-protocols",
    is_flag=True,
    help="Allow runs scored with different protocols in one table (each is labelled).",
)
@click.option(
    "--group-seeds",
    is_flag=True,
    help="One row per group of runs named NAME-s<seed>: mean ± sd over the seeds (md only).",
)
def table(runs, fmt, plot, mixed_protocols, group_seeds):
    """One table across RUNS (output directories of `gsdf-eval run`, or their summary.json).

    Columns as in the paper: CDh, FSh@1, FSh@5, CDo, FSo@5, FSo@10 (median CD, mean F-score),
    Eh, Eo (cm), then Cr (contact ratio %), Pd (penetration depth cm), Iv (intersection cm³),
    and Eh-rel (wrist-relative joint error, cm). A value marked * covers fewer samples than
    the GT set has (a partial run; the footnote says how many). Runs of different protocols
    are refused unless --mixed-protocols. --group-seeds: runs named NAME-s0, NAME-s1, ...
    become one row of mean ± sample standard deviation over the seeds.
    """
    from gsdf_eval.io import EvalInputError
    from gsdf_eval.table import check_protocols, load_run, plot_cd, render, render_seed_groups

    if group_seeds and fmt != "md":
        raise click.UsageError("--group-seeds writes markdown only (--format md)")
    try:
        loaded = [load_run(r) for r in runs]
        check_protocols(loaded, allow_mixed=mixed_protocols)
        text = render_seed_groups(loaded) if group_seeds else render(loaded, fmt)
        click.echo(text, nl=False)
        if plot:
            plot_cd(loaded, plot)
            click.echo(f"plot -> {plot}", err=True)
    except EvalInputError as exc:
        raise _fail(exc) from None
