"""`gsdf-data prepare obman|dexycb|synth`: a dataset on disk -> verified HDF5 shards.

Each subcommand only picks the reader (`gsdf_data.datasets`); SDF sampling, the double-sided
filter and the shards are `gsdf_data.prepare.prepare_pairs`. The run ends with the number of
kept samples and the dropped ones by reason.
"""

import click

from gsdf_data.cli.options import sdf_backend_option


def _common(f):
    """Options every prepare subcommand shares (applied bottom-up)."""
    options = [
        click.option("--out", required=True, type=click.Path(file_okay=False), help="Shard dir."),
        click.option(
            "--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Processes."
        ),
        click.option("--shard", default=None, help="Only shards j with j % n == k ('k/n')."),
        click.option(
            "--backend", type=click.Choice(["loky", "dask"]), default="loky", show_default=True
        ),
        click.option("--scheduler", default=None, help="Dask scheduler address (--backend dask)."),
        click.option("--strict", is_flag=True, help="Stop at the first bad sample."),
        click.option(
            "--limit", type=click.IntRange(min=1), default=None, help="Only the first N samples."
        ),
        sdf_backend_option(),
        click.option(
            "--filter/--no-filter",
            "use_filter",
            default=None,
            help="Double-sided filter on the objects (default: on for ObMan train/val only, "
            "as the reference).",
        ),
        click.option(
            "--pose-only/--no-pose-only",
            "pose_only",
            default=None,
            help="Keep the frames whose SDF points cannot be made (double-sided filter, too few "
            "inside points) as pose-only samples for the pose stage (default: on for ObMan "
            "train, whose pose stage the reference trains on every frame, train_138k).",
        ),
        click.option("--seed", default=0, show_default=True, help="SDF sampling seed."),
        click.option(
            "--points",
            type=click.IntRange(min=1),
            default=40000,
            show_default=True,
            help="SDF points per pair.",
        ),
        click.option(
            "--shard-size",
            type=click.IntRange(min=1),
            default=128,
            show_default=True,
            help="Samples per shard.",
        ),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _config(sdf_backend, use_filter, seed, shard_size, points, pose_only=False):
    from gsdf_data.filter import FilterConfig
    from gsdf_data.prepare import PrepareConfig
    from gsdf_data.sampling import SamplingConfig

    return PrepareConfig(
        sampling=SamplingConfig(n=points, backend=sdf_backend),
        filter=FilterConfig() if use_filter else None,
        seed=seed,
        shard_size=shard_size,
        image_format="jpg",
        pose_only=pose_only,
    )


def _settings(kw, default_filter=False, default_pose_only=False):
    """The run's PrepareConfig and the object cache (<out>/objects) the readers share; the
    output folder is checked first, before any dataset is read."""
    from pathlib import Path

    from gsdf_data.cli.errors import writable_dir
    from gsdf_data.object_cache import ObjectCache

    writable_dir(kw["out"])

    use_filter = default_filter if kw["use_filter"] is None else kw["use_filter"]
    if kw["sdf_backend"] == "mesh-to-sdf":
        from gsdf_data.render import headless_platform

        try:  # here, once, not as one bad sample per pair in the workers
            headless_platform()
        except RuntimeError as e:
            raise click.ClickException(str(e)) from None
    pose_only = default_pose_only if kw["pose_only"] is None else kw["pose_only"]
    config = _config(
        kw["sdf_backend"], use_filter, kw["seed"], kw["shard_size"], kw["points"], pose_only
    )
    return config, ObjectCache(str(Path(kw["out"]) / "objects"), config.filter)


def _run(name, tasks, drops, kw, config, skipped=None):
    from gsdf_data.datasets.common import run_prepare

    if kw["limit"] is not None:
        tasks = tasks[: kw["limit"]]
    if not tasks:
        raise click.ClickException(f"{name}: no samples to prepare")
    try:
        _, text = run_prepare(
            name,
            tasks,
            drops,
            kw["out"],
            config=config,
            jobs=kw["jobs"],
            shard=kw["shard"],
            backend=kw["backend"],
            scheduler=kw["scheduler"],
            strict=kw["strict"],
            skipped=skipped,
        )
    except Exception as e:  # a user's mistake (paths, strict stop, config) -> one line
        if type(e).__name__ in ("BadSampleError", "ValueError", "FileNotFoundError"):
            raise click.ClickException(str(e)) from None
        raise
    click.echo(text)


@click.group("prepare")
def prepare():
    """Turn a dataset (ObMan, DexYCB or the synthetic one) into HDF5 shards."""


@prepare.command("obman")
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--shapenet", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--mano", default=None, type=click.Path(exists=True, dir_okay=False),
              help="MANO_RIGHT.pkl (needed for the real ObMan: its faces).")  # fmt: skip
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train")
@_common
def obman(root, shapenet, mano, split, **kw):
    """ObMan (ROOT/{train,val,test}/{rgb,meta}) with its ShapeNet objects.

    On the real train split with the reference thresholds, 87,190 samples are kept with SDF
    points, and (by default on train) the frames the filter rejects as pose-only samples.
    """
    from gsdf_data.datasets.common import HandSpec
    from gsdf_data.datasets.obman import check_hand_model, obman_tasks

    # the reference filters the training pairs only; all 6,285 test samples are evaluated.
    # Its pose stage trains on every training frame (train_138k), its SDF stage on the 87k.
    config, objects = _settings(
        kw, default_filter=split != "test", default_pose_only=split == "train"
    )
    try:
        tasks, drops = obman_tasks(
            root, shapenet, split, HandSpec(mano, True, "obman"), objects=objects
        )
        check_hand_model(tasks)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    _run(f"obman {split}", tasks, drops, kw, config)


@prepare.command("dexycb")
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--mano", required=True, type=click.Path(exists=True, dir_okay=False),
              help="MANO_RIGHT.pkl.")  # fmt: skip
@click.option("--split", type=click.Choice(["s0-train", "s0-val", "s0-test"]), default="s0-train")
@click.option("--contact-mm", default=5.0, show_default=True,
              help="Drop test frames whose hand and object vertices are farther apart "
              "(0: keep all).")  # fmt: skip
@click.option("--contact-all-splits", is_flag=True,
              help="Apply --contact-mm to every split (the reference: test split only).")  # fmt: skip
@_common
def dexycb(root, mano, split, contact_mm, contact_all_splits, **kw):
    """DexYCB: right hands, official s0 split, 6 fps, 256×256 crops.

    On the real data: 29,656 train / 5,928 test samples.
    """
    from gsdf_data.datasets.common import HandSpec
    from gsdf_data.datasets.dexycb import CONTACT_SPLITS, SPLITS, dexycb_tasks

    config, objects = _settings(kw)
    try:
        tasks, drops, skipped = dexycb_tasks(
            root,
            split,
            HandSpec(mano, False, "dexycb"),
            contact_mm=contact_mm,
            objects=objects,
            contact_splits=SPLITS if contact_all_splits else CONTACT_SPLITS,
        )
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    _run(f"dexycb {split}", tasks, drops, kw, config, skipped)


@prepare.command("synth")
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--mano", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The MANO_RIGHT.pkl the data was made with (default: procedural hand).")  # fmt: skip
@click.option("--split", type=click.Choice(["train", "test"]), default="train")
@_common
def synth(root, mano, split, **kw):
    """A dataset made by `gsdf-data synth` (ObMan layout, objects in ROOT/shapenet)."""
    from pathlib import Path

    from gsdf_data.datasets.common import HandSpec
    from gsdf_data.datasets.obman import check_hand_model, obman_tasks

    config, objects = _settings(kw)
    try:
        tasks, drops = obman_tasks(
            root, Path(root) / "shapenet", split, HandSpec(mano, True, "obman"), objects=objects
        )
        check_hand_model(tasks)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    _run(f"synth {split}", tasks, drops, kw, config)
