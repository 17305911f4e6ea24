"""The two-stage gSDF trainer (paper §3.5, §4.3), read top to bottom:

    train()        set up the run, then run stage 1 and stage 2
    train_stage()  optimizer and (under DDP) the wrapped model for one stage; its epochs
    train_epoch()  one pass over the data loader; checkpoint and log at its end
    train_step()   forward, loss, backward, optimizer step; no host sync

Stage 1 trains the pose branch; stage 2 freezes the hand pose predictor and trains the rest
on L_op + 0.5·L_hsdf + 0.5·L_osdf. Stage 1 also trains on the shard set's pose-only samples
(frames without SDF points, `stage_data`), as the reference's ObMan pose stage does.
One run directory holds everything:

    RUN/config.json      model + train configuration (for people; the checkpoint is the truth)
    RUN/last.pt          latest checkpoint (written to a temporary name, then renamed)
    RUN/stage1.pt        the checkpoint at the end of stage 1
    RUN/metrics.jsonl    one JSON object per logged step and per epoch

Re-running the same command resumes from RUN/last.pt. Works on any torch device; on CUDA,
automatic mixed precision (bf16 where supported, else fp16 with loss scaling); under
`torchrun` (WORLD_SIZE > 1), DistributedDataParallel with the global batch split over the
processes, rank 0 writing checkpoints and logs. Devices, the process group and checkpoint
files are `gsdf_model.runtime`'s.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gsdf_model.config import TrainConfig, get_train_preset
from gsdf_model.data import (
    AugmentConfig,
    GSDFDataset,
    default_workers,
    limit_opencv_threads,
    open_shards,
    to_device,
)
from gsdf_model.resume import check_resume, load_weights
from gsdf_model.runtime import (
    CHECKPOINT_FORMAT,
    Dist,
    UserError,
    amp_dtype,
    build_model,
    config_to_dict,
    hand_of,
    load_checkpoint_file,
    loader_options,
    model_config_for,
    model_from_checkpoint,
    parse_device,
    resolve_split,
    save_atomic,
    train_config_for,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainConfig",
    "UserError",
    "get_train_preset",
    "load_checkpoint_file",
    "model_from_checkpoint",
    "stage_data",
    "train",
]


@dataclass(frozen=True)
class StageData:
    """What each stage trains on. pose: stage 1's samples (the SDF stage's, then the
    pose-only ones when they are used); sdf: stage 2's (the samples with SDF points);
    n_pose_only: the pose-only samples among `pose`; n_ignored: those left out
    (`pose_only="ignore"`); note: one line for the user when the set lacks what the schedule
    expects, else None."""

    pose: Any
    sdf: Any
    n_pose_only: int
    n_ignored: int = 0
    note: str | None = None

    def describe(self, cfg: TrainConfig) -> str:
        """One line: how many samples each stage trains on."""
        ignored = f", {self.n_ignored} pose-only ignored" if self.n_ignored else ""
        return (
            f"stage 1 (pose, {cfg.pose_epochs} epochs): {len(self.pose)} samples incl. "
            f"{self.n_pose_only} pose-only{ignored}; stage 2 (SDF, {cfg.sdf_epochs} epochs): "
            f"{len(self.sdf)} samples with SDF points"
        )


def stage_data(shards: Any, cfg: TrainConfig) -> StageData:
    """Each stage's samples from one shard set (`gsdf_data.shards.ShardSet`, or any dataset
    object: those without pose-only samples train both stages on the same samples).
    `cfg.pose_only` decides about the set's pose-only samples; "require" with none is a
    UserError, "expect" with none gives the `note`."""
    n_pose = int(getattr(shards, "n_pose_only", 0) or 0)
    with_pose = getattr(shards, "with_pose_only", None)
    if n_pose and cfg.pose_only == "ignore":
        return StageData(shards, shards, 0, n_ignored=n_pose)
    if n_pose and callable(with_pose):
        return StageData(with_pose(), shards, n_pose)
    note = None
    if cfg.pose_only in ("expect", "require"):
        msg = (
            f"the shard set has no pose-only samples, so stage 1 trains on the {len(shards)} "
            "samples with SDF points only, not on every training frame as the reference's "
            "ObMan pose stage (train_138k) does; prepare the data with --pose-only to keep "
            "the others"
        )
        if cfg.pose_only == "require":
            raise UserError(msg + " (or train with --pose-only use)")
        note = f"warning: {msg} (--pose-only use: no warning)"
    return StageData(shards, shards, 0, note=note)


@dataclass
class Run:
    """Everything one training run holds while it runs."""

    preset: str
    cfg: TrainConfig
    model_cfg: Any
    net: nn.Module
    dataset: GSDFDataset  # stage 2's (and stage 1's unless pose_dataset is set)
    dist: Dist
    amp: torch.dtype | None
    scaler: torch.amp.GradScaler
    out: Path
    progress: bool
    resume_from: dict[str, Any] | None
    start_epoch: int
    hand_model: str
    summary: dict[str, Any] = field(default_factory=dict)
    samples: int = 0
    seconds: float = 0.0
    pose_dataset: GSDFDataset | None = None  # stage 1's: pose-only samples, or random clips

    @property
    def device(self) -> torch.device:
        return self.dist.device

    def stage_epochs(self, stage: int) -> range:
        """Global epoch indices (0-based) of a stage."""
        if stage == 1:
            return range(0, self.cfg.pose_epochs)
        return range(self.cfg.pose_epochs, self.cfg.pose_epochs + self.cfg.sdf_epochs)

    def log(self, record: dict[str, Any]) -> None:
        if self.dist.main:
            with (self.out / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")

    def checkpoint(self, epoch: int, stage: int, optimizer: torch.optim.Optimizer) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.net.state_dict(),
            "model_preset": self.preset,
            "model_config": config_to_dict(self.model_cfg),
            "train_config": dataclasses.asdict(self.cfg),
            "epoch": epoch,
            "stage": stage,
            "data_fingerprint": getattr(self.dataset.shards, "fingerprint", None),
            "optimizer": optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "hand_model": self.hand_model,
        }


def train(
    preset: str,
    data: str | Path,
    out: str | Path,
    train_cfg: TrainConfig | None = None,
    model_cfg: Any = None,
    device: str | torch.device = "cpu",
    resume: bool = True,
    backbone_weights: str | Path | None = None,
    progress: bool = True,
    build: Callable[[Any], nn.Module] | None = None,
    shards: Any = None,
) -> dict[str, Any]:
    """Train (or resume training) a gSDF model; returns a summary dict.

    preset: the registry entry (its network when `model_cfg` is None, its schedule when
    `train_cfg` is None, and the name the checkpoint records). data: a shard directory, or a
    directory with `train/`. out: the run directory. resume: continue from out/last.pt when
    it exists (False starts over and overwrites). backbone_weights: how a fresh run's
    backbones start, overriding the schedule's `backbone_init`: "imagenet", "none" or a
    torchvision ResNet-18 state-dict file. build / shards: a network factory and
    a ready dataset object instead of GSDFNet and the shards under `data` (used by tests).
    Summary: {"epochs", "start_epoch", "first_loss", "final_loss", "checkpoint",
    "samples_per_s", "train_seconds", "stage_samples"}; stage_samples: {"stage1",
    "pose_only", "stage2", "note"} (see `stage_data`).
    """
    cfg = train_cfg if train_cfg is not None else train_config_for(preset)
    model_cfg = model_cfg if model_cfg is not None else model_config_for(preset)
    dist = Dist(parse_device(device))
    try:
        run = setup_run(
            preset, data, out, cfg, model_cfg, dist, resume, backbone_weights, progress, build,
            shards,
        )  # fmt: skip
        for stage in (1, 2):
            train_stage(run, stage)
    finally:
        dist.close()
    s = run.summary
    s["samples_per_s"] = run.samples / run.seconds if run.seconds > 0 else math.nan
    s["train_seconds"] = run.seconds
    return s


def setup_run(
    preset, data, out, cfg, model_cfg, dist, resume, backbone_weights, progress, build, shards
) -> Run:
    """The dataset, the network (fresh, from backbone weights, or resumed) and the run dir."""
    if shards is None:
        split_dir = resolve_split(data, "train")
        try:
            shards = open_shards(split_dir)
        except (FileNotFoundError, OSError, ValueError) as err:
            raise UserError(f"cannot open shards in {str(split_dir)!r}: {err}") from None
    if len(shards) == 0:
        raise UserError("the training set is empty")
    data_for = stage_data(shards, cfg)
    stage_samples = _stage_samples(data_for)
    augment = None
    if cfg.augment:
        augment = AugmentConfig(
            rotation_deg=cfg.rotation_deg,
            rotation_dist=cfg.rotation_dist,
            rotation_prob=cfg.rotation_prob,
            colour_scale=cfg.colour_jitter,
            crop_shift=cfg.crop_shift,
        )
    options = loader_options(model_cfg)
    clips = cfg.video_clips if options["video"] else "consecutive"
    dataset = GSDFDataset(
        shards,
        cfg.n_hand,
        cfg.n_obj,
        augment=augment,
        seed=cfg.seed,
        frame_labels=cfg.video_frames == "all",
        clips=clips,
        **options,
    )
    pose_dataset = None
    # stage 1 also on the pose-only samples, and on every frame (not a clip per sequence)
    if data_for.pose is not shards or clips == "random":
        same = data_for.pose is shards  # then the sequence scan is the stage-2 dataset's
        pose_dataset = GSDFDataset(
            data_for.pose, 0, 0, augment=augment, seed=cfg.seed,
            sequences=dataset.sequences if same else None, **options,
        )  # fmt: skip

    out = Path(out)
    hand = hand_of(model_cfg)
    torch.manual_seed(cfg.seed)
    net = (build or build_model)(model_cfg)
    ckpt = load_checkpoint_file(out / "last.pt") if resume and (out / "last.pt").is_file() else None
    if ckpt is not None:
        if ckpt.get("hand_model", "procedural") != hand:
            raise UserError(
                f"{str(out / 'last.pt')!r} was trained on hand model "
                f"{ckpt.get('hand_model', 'procedural')}, this run asks for {hand}: pass the "
                "same --mano file, or --restart"
            )
        # same preset, network and data, or one line saying which differs (--restart)
        check_resume(ckpt, out / "last.pt", preset, model_cfg, getattr(shards, "fingerprint", None))
        load_weights(net, ckpt, out / "last.pt")
    else:
        _load_backbones(net, cfg.backbone_init if backbone_weights is None else backbone_weights)
        if cfg.init_from is not None:
            init_from_checkpoint(net, cfg.init_from, hand)
    net.to(dist.device)
    if cfg.channels_last and dist.device.type == "cuda":
        net.to(memory_format=torch.channels_last)

    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        if ckpt is None and (out / "metrics.jsonl").exists():
            (out / "metrics.jsonl").unlink()
        record = {
            "preset": preset,
            "model": config_to_dict(model_cfg),
            "train": dataclasses.asdict(cfg),
            "data": stage_samples,
        }
        (out / "config.json").write_text(json.dumps(record, indent=2) + "\n")
    amp = amp_dtype(cfg.amp, dist.device)
    start = int(ckpt["epoch"]) if ckpt is not None else 0
    run = Run(
        preset=preset,
        cfg=cfg,
        model_cfg=model_cfg,
        net=net,
        dataset=dataset,
        dist=dist,
        amp=amp,
        # One scaler for the run; a no-op unless fp16 needs loss scaling.
        scaler=torch.amp.GradScaler(dist.device.type, enabled=amp == torch.float16),
        out=out,
        progress=progress,
        resume_from=ckpt,
        start_epoch=start,
        hand_model=hand,
        pose_dataset=pose_dataset,
    )
    if ckpt is not None and ckpt.get("scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(ckpt["scaler"])
    run.summary = {
        "epochs": cfg.pose_epochs + cfg.sdf_epochs,
        "start_epoch": start,
        "checkpoint": str(out / "last.pt"),
        "first_loss": None,
        "final_loss": None,
        "stage_samples": stage_samples,
    }
    return run


def _stage_samples(d: StageData) -> dict[str, Any]:
    return {
        "stage1": len(d.pose),
        "pose_only": d.n_pose_only,
        "stage2": len(d.sdf),
        "note": d.note,
    }


def _load_backbones(net: nn.Module, spec: str | Path) -> None:
    """Every backbone from "imagenet", "none" or a state-dict file (see gsdf_model.pretrained)."""
    from gsdf_model.backbone import load_backbone_weights
    from gsdf_model.pretrained import WeightsError, resolve_backbone_weights

    try:
        path = resolve_backbone_weights(spec)
    except WeightsError as err:
        raise UserError(str(err)) from None
    if path is None:
        return
    try:
        load_backbone_weights(net, path)
    except (ValueError, RuntimeError, KeyError) as err:
        raise UserError(f"cannot load backbone weights {str(path)!r}: {err}") from None


def init_from_checkpoint(net: nn.Module, path: str | Path, hand: str) -> int:
    """Start from a trained gSDF checkpoint (the reference's video model starts from its
    single-frame one): every weight whose name and shape match, except the spatio-temporal
    transformer's. Returns how many tensors were taken."""
    ckpt = load_checkpoint_file(path)
    if ckpt.get("hand_model", "procedural") != hand:
        raise UserError(f"{str(path)!r} was trained on another hand model than this run's")
    own = net.state_dict()
    take = {
        k: v
        for k, v in ckpt["model"].items()
        if k in own and own[k].shape == v.shape and not k.startswith("visual.transformer.")
    }
    if not take:
        raise UserError(f"{str(path)!r} has no weights that fit this network")
    net.load_state_dict(take, strict=False)
    return len(take)


def lr_at(cfg: TrainConfig, stage: int, epoch_in_stage: int) -> float:
    """The stage's lr: `cfg.lr`, halved every (pose_)lr_halve_every epochs of the stage."""
    every = cfg.pose_lr_halve_every if stage == 1 else cfg.lr_halve_every
    return cfg.lr * 0.5 ** (epoch_in_stage // every)


def train_stage(run: Run, stage: int) -> None:
    """All remaining epochs of one stage, with a fresh optimizer over what trains in it."""
    epochs = [e for e in run.stage_epochs(stage) if e >= run.start_epoch]
    if not epochs:
        return
    if stage == 2:
        run.net.freeze_pose()
    params = [p for p in run.net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=run.cfg.lr)
    ckpt = run.resume_from
    if ckpt is not None and int(ckpt["stage"]) == stage and epochs[0] == run.start_epoch:
        optimizer.load_state_dict(ckpt["optimizer"])  # resuming inside this stage
    # Wrapped per stage: which parameters train changes at the boundary.
    model = run.dist.wrap(run.net)
    if run.cfg.compile:
        model = torch.compile(model)
    for epoch in epochs:
        train_epoch(run, stage, epoch, model, optimizer)


def _loader(run: Run, stage: int, epoch: int) -> torch.utils.data.DataLoader:
    cfg, dist, dataset = run.cfg, run.dist, run.dataset
    if stage == 1 and run.pose_dataset is not None:
        dataset = run.pose_dataset
    batch = dist.per_process(cfg.pose_batch_size if stage == 1 else cfg.batch_size)
    dataset.set_epoch(epoch)
    # The pose stage needs no SDF points: skip sampling them.
    dataset.n_hand = 0 if stage == 1 else cfg.n_hand
    dataset.n_obj = 0 if stage == 1 else cfg.n_obj
    sampler = None
    if dist.world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(epoch)
    workers = cfg.num_workers
    if workers is None:
        workers = default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if workers:
        limit_opencv_threads()  # before the workers fork
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=sampler is None,
        sampler=sampler,
        generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        if sampler is None
        else None,
        num_workers=workers,
        pin_memory=run.device.type == "cuda",
        drop_last=len(dataset) >= 2 * batch * dist.world,
    )


def train_epoch(
    run: Run, stage: int, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """One pass over the data; loss sums stay on the device until the epoch ends (or a
    logging step reads them), then the epoch's means, a log record and a checkpoint."""
    cfg, dist = run.cfg, run.dist
    first = run.stage_epochs(stage).start
    lr = lr_at(cfg, stage, epoch - first)
    # Reference: each decoder learns from its own mesh's points first, then from all of them.
    own = cfg.n_hand if stage == 2 and epoch - first < cfg.own_points_epochs else None
    loader = _loader(run, stage, epoch)
    stage_step = (epoch - first) * len(loader)  # steps already taken in this stage
    total_epochs = cfg.pose_epochs + cfg.sdf_epochs
    bar = None
    if run.progress and dist.main:
        from tqdm.auto import tqdm

        desc = f"stage {stage} epoch {epoch + 1}/{total_epochs}"
        # no bar when stderr is not a terminal (logs, CI)
        bar = tqdm(total=len(loader), desc=desc, leave=False, dynamic_ncols=True, disable=None)
    model.train()
    sums: dict[str, torch.Tensor] = {}
    n_batches = n_samples = 0
    t0 = time.perf_counter()
    for step, batch in enumerate(loader):
        warm = min(1.0, (stage_step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        stage_step += 1
        for group in optimizer.param_groups:
            group["lr"] = lr * warm
        losses = train_step(run, model, optimizer, to_device(batch, run.device), stage, own)
        for k, v in losses.items():
            sums[k] = sums[k] + v if k in sums else v
        n_batches += 1
        n_samples += batch["image"].shape[0]
        if bar is not None:
            bar.update()
        if cfg.log_every and step % cfg.log_every == 0:
            values = _host(losses, epoch, step)
            if bar is not None:
                bar.set_postfix(loss=f"{values['total']:.4g}")
            run.log({"kind": "step", "epoch": epoch + 1, "stage": stage, "step": step}
                    | {"lr": lr * warm} | values)  # fmt: skip
    if bar is not None:
        bar.close()
    dt = time.perf_counter() - t0
    means = dist.mean({k: v / max(n_batches, 1) for k, v in _host(sums, epoch, None).items()})
    run.seconds += dt
    run.samples += n_samples * dist.world
    if run.summary["first_loss"] is None:
        run.summary["first_loss"] = means.get("total")
    run.summary["final_loss"] = means.get("total")
    rate = round(n_samples * dist.world / dt, 2) if dt > 0 else None
    run.log(
        {"kind": "epoch", "epoch": epoch + 1, "stage": stage, "lr": lr, "seconds": round(dt, 3)}
        | {"samples_per_s": rate}
        | {f"loss_{k}" if k != "total" else "loss": v for k, v in means.items()}
    )
    if dist.main:
        save_atomic(run.checkpoint(epoch + 1, stage, optimizer), run.out / "last.pt")
        if epoch + 1 == cfg.pose_epochs:
            save_atomic(run.checkpoint(epoch + 1, stage, optimizer), run.out / "stage1.pt")
        if run.progress:
            parts = " ".join(f"{k}={v:.4g}" for k, v in means.items())
            print(
                f"stage {stage} epoch {epoch + 1}/{total_epochs}: {parts} ({dt:.1f}s)", flush=True
            )


def _host(losses: dict[str, torch.Tensor], epoch: int, step: int | None) -> dict[str, float]:
    """Loss tensors read back to the host (one sync), refusing non-finite values."""
    keys = list(losses)
    values = torch.stack([losses[k].float() for k in keys]).tolist() if keys else []
    out = dict(zip(keys, values, strict=True))
    if not all(math.isfinite(v) for v in values):
        where = f"epoch {epoch + 1}" + ("" if step is None else f", step {step}")
        raise RuntimeError(f"non-finite loss at {where}: {out}")
    return out


def train_step(
    run: Run,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Any],
    stage: int,
    own_points: int | None,
) -> dict[str, torch.Tensor]:
    """One optimizer step; returns the detached loss terms (still on the device)."""
    with torch.autocast(
        run.device.type, dtype=run.amp or torch.float32, enabled=run.amp is not None
    ):
        pred = model(batch, stage)
        losses = run.net.loss(batch, pred, stage, own_points=own_points)
    optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(losses["total"]).backward()
    if run.cfg.grad_clip > 0:
        run.scaler.unscale_(optimizer)
        params = [p for p in run.net.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(params, run.cfg.grad_clip)
    run.scaler.step(optimizer)
    run.scaler.update()
    return {k: v.detach() for k, v in losses.items() if torch.is_tensor(v)}
