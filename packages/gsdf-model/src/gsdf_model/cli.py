"""`gsdf-train` command line (thin: parse, then call gsdf_model functions).

Heavy modules (torch) are imported inside the commands so that `--help` stays instant.
"""

import math

import click

from gsdf_data.cli.errors import OneLineErrors, data_errors
from gsdf_model import __version__


def _model_errors() -> tuple[type[BaseException], ...]:
    from gsdf_model.runtime import UserError

    return (*data_errors(), UserError)


class _PositiveFloat(click.ParamType):
    """A finite float > 0 (click's FloatRange lets NaN through: every comparison is False)."""

    name = "float"

    def convert(self, value, param, ctx):
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x) or x <= 0:
            self.fail(f"{value!r} is not a finite number > 0", param, ctx)
        return x


@click.group(
    cls=OneLineErrors,
    errors=_model_errors,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="gsdf-train")
def main() -> None:
    """Train the gSDF model and reconstruct meshes from a checkpoint."""


@main.command("describe")
@click.option("--preset", "preset", default="obman", show_default=True, help="Model preset.")
@click.option(
    "--points", default=2000, show_default=True, help="Query points per sample for FLOPs."
)
def describe_cmd(preset: str, points: int) -> None:
    """Print a preset's architecture, training schedule, parameter counts per part and FLOPs
    per sample."""
    from gsdf_model.config import PRESETS, get_preset, get_train_preset
    from gsdf_model.describe import describe

    if preset not in PRESETS:
        raise click.BadParameter(
            f"unknown preset; known: {', '.join(PRESETS)}", param_hint="--preset"
        )
    click.echo(describe(get_preset(preset), n_points=points, train=get_train_preset(preset)))


def _user_errors():
    """Exceptions that mean the user asked for something wrong: one line, exit 1."""
    from gsdf_model.runtime import UserError

    return (UserError, FileNotFoundError, NotADirectoryError)


@main.command("train")
@click.option(
    "--preset", required=True, help="Model preset (obman, dexycb, dexycb-video, tiny, k1…)."
)
@click.option(
    "--data", required=True, type=click.Path(), help="Shard directory (or one with train/)."
)
@click.option("--out", required=True, type=click.Path(), help="Run directory (checkpoints, logs).")
@click.option(
    "--epochs",
    type=click.IntRange(min=0),
    help="SDF-stage epochs (the schedule and pose stage scale with it; 0: no SDF stage).",
)
@click.option(
    "--pose-epochs", type=click.IntRange(min=0), help="Pose-stage epochs (default: the preset's)."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Global SDF-stage batch, split over DDP processes.",
)
@click.option("--pose-batch-size", type=click.IntRange(min=1), help="Global pose-stage batch.")
@click.option("--lr", type=_PositiveFloat(), help="Initial learning rate of each stage.")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    help="DataLoader workers per process (default: from the CPU cores).",
)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the network.")
@click.option("--device", default="cpu", show_default=True, help="torch device (cpu, cuda, mps).")
@click.option(
    "--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), help="Mixed precision on CUDA."
)
@click.option("--resume/--restart", default=True, show_default=True, help="Continue RUN/last.pt.")
@click.option(
    "--backbone-weights",
    help="imagenet (torchvision's, fetched once into torch's hub cache), none (random), or a "
    "ResNet-18 state-dict file. Default: the preset's (imagenet for the paper's presets).",
)
@click.option(
    "--init-from",
    type=click.Path(exists=True, dir_okay=False),
    help="Start from a trained gSDF checkpoint, all but its transformer (the reference's V4 "
    "starts from its single-frame model). Its pose net is taken as trained: no pose stage "
    "unless --pose-epochs is given.",
)
@click.option(
    "--mano",
    type=click.Path(exists=True, dir_okay=False),
    help="MANO_RIGHT.pkl: joint frames on MANO's rest bones (ObMan, DexYCB), as the reference. "
    "Default: the procedural hand.",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Train on an incomplete shard set on purpose (an interrupted or --shard k/n prepare).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    help="Seed of the initial weights, the sample order and the augmentation (default 0).",
)
@click.option(
    "--pose-only",
    type=click.Choice(["use", "expect", "require", "ignore"]),
    help="The set's pose-only samples (frames without SDF points) in stage 1: use them, "
    "expect them (a warning when there are none; the obman preset), require them (an error "
    "when none) or ignore them. Default: the preset's.",
)
def train_cmd(
    preset,
    data,
    out,
    epochs,
    pose_epochs,
    batch_size,
    pose_batch_size,
    lr,
    workers,
    compile_,
    device,
    amp,
    resume,
    backbone_weights,
    init_from,
    mano,
    allow_partial,
    seed,
    pose_only,
):
    """Train the two stages (pose, then SDF with the pose frozen); re-running resumes."""
    import dataclasses
    from pathlib import Path

    from gsdf_data.cli.errors import writable_dir
    from gsdf_model.data import open_shards
    from gsdf_model.runtime import model_config_for, resolve_split, train_config_for
    from gsdf_model.train import stage_data, train

    if init_from is not None and pose_epochs is None:
        pose_epochs = 0  # the reference's V4: the single-frame model's pose net, frozen
    try:
        cfg = train_config_for(preset)
        if epochs is not None or pose_epochs is not None:
            cfg = cfg.scaled(cfg.sdf_epochs if epochs is None else epochs, pose_epochs)
        changes = {"batch_size": batch_size, "pose_batch_size": pose_batch_size, "lr": lr}
        changes |= {"num_workers": workers, "amp": amp, "compile": compile_ or None, "seed": seed}
        changes["pose_only"] = pose_only
        changes["init_from"] = None if init_from is None else str(Path(init_from).resolve())
        cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    except ValueError as err:  # a TrainConfig that fails its checks
        raise click.ClickException(str(err)) from None
    except _user_errors() as err:
        raise click.ClickException(str(err)) from None
    if cfg.pose_epochs + cfg.sdf_epochs == 0:
        raise click.UsageError("--epochs 0 (and no --pose-epochs) leaves nothing to train")
    if init_from is not None and cfg.pose_epochs == 0:
        click.echo("--init-from: no pose stage (the checkpoint's pose net, frozen)")
    if cfg.sdf_epochs == 0:
        # a pose-only run makes a model that reconstructs nothing: say so, do not surprise
        click.echo(f"--epochs 0: pose stage only ({cfg.pose_epochs} epochs), no SDF stage")
    try:
        split_dir = resolve_split(data, "train")
        shards = open_shards(split_dir, allow_partial=allow_partial, progress=True)
    except _user_errors() as err:
        raise click.ClickException(str(err)) from None
    writable_dir(out)
    try:
        stages = stage_data(shards, cfg)
    except _user_errors() as err:
        raise click.ClickException(str(err)) from None
    pose = f" + {shards.n_pose_only} pose-only" if shards.n_pose_only else ""
    click.echo(
        f"training on {len(shards)} samples{pose} ({shards.n_shards} shards) from {split_dir}"
    )
    click.echo(stages.describe(cfg))
    if stages.note:
        click.echo(stages.note)
    try:
        model_cfg = model_config_for(preset)
        if mano is not None:
            model_cfg = model_cfg.replace(mano_path=str(Path(mano).resolve()))
        s = train(
            preset,
            data,
            out,
            cfg,
            model_cfg=model_cfg,
            device=device,
            resume=resume,
            backbone_weights=backbone_weights,
            shards=shards,
        )
    except _user_errors() as err:
        raise click.ClickException(str(err)) from None
    if s["start_epoch"] >= s["epochs"]:
        click.echo(f"{s['checkpoint']} is already trained to epoch {s['epochs']}; nothing to do")
        return
    click.echo(
        f"trained {preset}: epochs {s['start_epoch']}→{s['epochs']}, final loss "
        f"{s['final_loss']:.4g}, {s['samples_per_s']:.1f} samples/s; checkpoint {s['checkpoint']}"
    )


@main.command("reconstruct")
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--data", required=True, type=click.Path(), help="Folder with split folders (test/, ...)."
)
@click.option("--out", required=True, type=click.Path(), help="Output directory for meshes + json.")
@click.option(
    "--resolution",
    default=128,
    show_default=True,
    type=click.IntRange(min=8),  # below 8 there is no coarse lattice worth the name
    help="Grid points per axis per pass.",
)
@click.option(
    "--gt-wrist/--pred-wrist", default=True, show_default=True, help="Wrist for the SDF frame."
)
@click.option(
    "--component",
    type=click.Choice(["largest", "anchored"]),
    default="largest",
    show_default=True,
    help="Keep the largest connected component (reference) or the one at the prediction.",
)
@click.option(
    "--box",
    type=click.Choice(["union", "per-shape"]),
    default="union",
    show_default=True,
    help="Second pass over one cube around hand and object (reference), or one per shape.",
)
@click.option(
    "--evaluation",
    type=click.Choice(["coarse-to-fine", "dense"]),
    default="coarse-to-fine",
    show_default=True,
    help="Decode only near the surfaces (same meshes), or every grid point (reference).",
)
@click.option(
    "--joints",
    type=click.Choice(["fk", "keypoints"]),
    default="fk",
    show_default=True,
    help="FK of the IK rotations on the rest bones (reference), or the pose net's keypoints.",
)
@click.option(
    "--mano",
    type=click.Path(exists=True, dir_okay=False),
    help="The MANO_RIGHT.pkl the checkpoint was trained with (default: its recorded path).",
)
@click.option(
    "--split", default="test", show_default=True, help="Split folder under --data ('.': DATA)."
)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N samples.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1), help="Processes.")
@click.option("--overwrite", is_flag=True, help="Redo outputs of another checkpoint or setting.")
@click.option("--device", default="cpu", show_default=True, help="torch device.")
def reconstruct_cmd(
    checkpoint,
    data,
    out,
    resolution,
    gt_wrist,
    component,
    box,
    evaluation,
    joints,
    mano,
    split,
    limit,
    jobs,
    overwrite,
    device,
):
    """Meshes and joints for a split (resumes; skips finished samples of the same run)."""
    from gsdf_data.cli.errors import writable_dir
    from gsdf_model.reconstruct import reconstruct

    writable_dir(out)  # before the network is built and the first grid evaluated

    try:
        s = reconstruct(
            checkpoint,
            data,
            out,
            resolution=resolution,
            wrist="gt" if gt_wrist else "pred",
            device=device,
            component=component,
            box=box,
            evaluation=evaluation,
            joints=joints,
            mano=mano,
            split=split,
            limit=limit,
            jobs=jobs,
            overwrite=overwrite,
        )
    except _user_errors() as err:
        raise click.ClickException(str(err)) from None
    click.echo(
        f"reconstructed {s['written']} samples ({s['skipped']} already there; no hand surface "
        f"in {s['empty_hand']}, no object surface in {s['empty_obj']}) → {s['out']}"
    )


@main.command("export-gt")
@click.option(
    "--data", required=True, type=click.Path(), help="Folder with split folders (test/, ...)."
)
@click.option("--out", required=True, type=click.Path(), help="Output directory.")
@click.option(
    "--split", default="test", show_default=True, help="Split folder under --data ('.': DATA)."
)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N samples.")
@click.option("--overwrite", is_flag=True, help="Redo outputs of other data.")
def export_gt_cmd(data, out, split, limit, overwrite):
    """Write a split's GT meshes, joints and object centres in the layout of
    `reconstruct`, for `gsdf-eval run PRED GT`."""
    from gsdf_data.cli.errors import writable_dir
    from gsdf_model.reconstruct import export_gt

    writable_dir(out)

    try:
        s = export_gt(data, out, split=split, limit=limit, overwrite=overwrite)
    except _user_errors() as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"exported {s['written']} samples ({s['skipped']} already there) → {s['out']}")
