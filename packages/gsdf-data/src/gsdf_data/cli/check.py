"""`gsdf-data check`: verify a shard set."""

import click


@click.command("check")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--quick", is_flag=True, help="Skip the per-sample SDF sign statistics.")
@click.option(
    "--min-per-side",
    type=click.IntRange(min=0),
    default=None,
    help="Override the manifest's quota.",
)
def check(directory, quick, min_per_side):
    """Verify the shards in DIRECTORY: manifest, checksums, counts, schema, NaNs, SDF signs.

    Exits non-zero when there is any problem.
    """
    import json
    from pathlib import Path

    from gsdf_data.shards import MANIFEST
    from gsdf_data.shards import check as check_dir

    problems = check_dir(directory, min_per_side=min_per_side, deep=not quick)
    for p in problems:
        click.echo(p, err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in {directory}")
    m = json.loads((Path(directory) / MANIFEST).read_text())
    pose = f" + {m['n_pose_only']} pose-only" if m.get("n_pose_only") else ""
    click.echo(f"ok: {m['n_samples']} samples{pose} in {m['n_shards']} shards ({directory})")
