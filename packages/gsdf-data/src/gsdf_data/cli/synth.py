"""`gsdf-data synth`: the project's own ObMan-style hand-object dataset."""

import click


@click.command("synth")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder.")
@click.option("--samples", default=1000, show_default=True, help="Frames in total.")
@click.option("--seq-len", default=4, show_default=True, help="Frames per sequence.")
@click.option("--seed", default=0, show_default=True)
@click.option("--mano", default=None, type=click.Path(exists=True, dir_okay=False),
              help="MANO_RIGHT.pkl (default: the procedural hand).")  # fmt: skip
@click.option(
    "--objects",
    default="auto",
    show_default=True,
    help="Object sources: procedural, pybullet, all, or auto (pybullet when installed).",
)
@click.option(
    "--test-fraction",
    "--split-test-fraction",
    "test_fraction",
    default=0.2,
    show_default=True,
    help="Share of test sequences.",
)
@click.option(
    "--view-spread",
    type=click.FloatRange(0.0, 180.0),
    default=None,
    help="Keep hands within this many degrees of a canonical view (fingers up, palm turned "
    "45 degrees towards the camera) instead of any orientation: a task small training sets "
    "can learn.  [default: any orientation]",
)
@click.option("--shards", is_flag=True, help="Write HDF5 shards (OUT/shards/{train,test}).")
@click.option("--jobs", default=1, show_default=True, help="Worker processes.")
@click.option("--preview", type=click.Path(dir_okay=False), default=None,
              help="Only tile the first SAMPLES frames with their joints into this PNG.")  # fmt: skip
def synth(
    out, samples, seq_len, seed, mano, objects, test_fraction, view_spread, shards, jobs, preview
):
    """Render hands holding objects, in ObMan's layout (OUT/{train,test}, OUT/shapenet) so that
    `gsdf-data prepare synth --root OUT` reads it, or straight to shards with --shards.

    Deterministic: the same options give identical files.
    """
    import time
    from pathlib import Path

    from gsdf_data.datasets.synth import SynthConfig
    from gsdf_data.datasets.synth_writers import format_summary

    if samples < 1 or seq_len < 1:
        raise click.ClickException("--samples and --seq-len must be at least 1")
    if not 0.0 <= test_fraction < 1.0:
        raise click.ClickException("--test-fraction must be in [0, 1)")
    cfg = SynthConfig(
        samples=samples,
        seq_len=seq_len,
        seed=seed,
        test_fraction=test_fraction,
        mano=str(Path(mano).resolve()) if mano else None,
        objects=objects,
        view_spread_deg=view_spread,
    )
    try:
        from gsdf_data.datasets.objects import ObjectLibrary

        ObjectLibrary.from_option(objects)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    t0 = time.perf_counter()
    if preview:
        from gsdf_data.cli.errors import writable_file

        writable_file(preview, "--preview")
        from gsdf_data.datasets.synth_preview import preview as make_preview

        path = make_preview(SynthConfig(**{**cfg.__dict__, "seq_len": 1}), preview, n=samples)
        click.echo(f"{samples} frames -> {path}")
        return
    if not out:
        raise click.ClickException("give --out (or --preview)")
    from gsdf_data.cli.errors import writable_dir

    writable_dir(out)
    if shards:
        from gsdf_data.datasets.synth import write_shards

        summary = write_shards(cfg, out, jobs=jobs)
    else:
        from gsdf_data.datasets.synth import write_dataset

        summary = write_dataset(cfg, out, jobs=jobs)
    dt = time.perf_counter() - t0
    n = sum(summary["frames"].values())
    click.echo(format_summary(summary))
    click.echo(f"{n} frames in {dt:.1f} s ({n / dt:.2f} frames/s) -> {out}")
