"""The two-stage gSDF trainer (paper §3.5, §4.3).

Stage 1 trains the pose branch (hand joints, object centre); stage 2 freezes the hand pose
predictor and trains everything else on L_op + 0.5·L_hsdf + 0.5·L_osdf. One run directory
holds everything:

    RUN/config.json      model + train configuration (for people; the checkpoint is the truth)
    RUN/last.pt          latest checkpoint (written to a temporary name, then renamed)
    RUN/stage1.pt        the checkpoint at the end of stage 1
    RUN/metrics.jsonl    one JSON object per logged step and per epoch

Re-running the same command resumes from RUN/last.pt. Works on any torch device; on CUDA,
automatic mixed precision (bf16 where supported, else fp16 with loss scaling); under
`torchrun` (WORLD_SIZE > 1), DistributedDataParallel with env:// initialisation and a
DistributedSampler, rank 0 writing checkpoints and logs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gsdf_model.data import AugmentConfig, GSDFDataset, open_shards, to_device

CHECKPOINT_FORMAT = "gsdf-checkpoint/1"


class UserError(Exception):
    """A mistake in what the user asked for (bad path, unknown preset, ...): the CLI prints
    the message on one line and exits non-zero, without a traceback."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the network itself is the model configuration).

    Epoch counts are per stage; `lr` restarts at stage 2 and halves every `lr_halve_every`
    epochs within a stage. n_hand / n_obj: SDF points per sample and mesh (half inside,
    half outside). warmup_steps: linear lr warm-up at the start of each stage (0: none, the
    paper's schedule). amp: "auto" (bf16 if the GPU supports it, else fp16; off on CPU),
    "bf16", "fp16" or "off".
    """

    pose_epochs: int = 400
    sdf_epochs: int = 1600
    batch_size: int = 256
    lr: float = 1e-4
    lr_halve_every: int = 600
    n_hand: int = 1000
    n_obj: int = 1000
    augment: bool = True
    rotation_deg: float = 45.0
    colour_jitter: float = 0.3
    num_workers: int = 8
    amp: str = "auto"
    grad_clip: float = 0.0
    warmup_steps: int = 0
    seed: int = 0
    log_every: int = 50


# The paper trains 1600 epochs at batch 256 with Adam 1e-4 halved every 600 epochs; how long
# the pose stage runs is not stated, 400 epochs is our choice.
_TRAIN_PRESETS: dict[str, TrainConfig] = {
    "obman": TrainConfig(),
    "dexycb": TrainConfig(),
    # Minutes on a laptop CPU, same code paths: for the demo, the tests and smoke runs. Small
    # batches (more steps per epoch) and no rotation augmentation: a few hundred steps are
    # all it gets, and those are spent fitting shapes. The pose stage is short; it needs
    # far longer than this to learn joints (the SDF frame uses the GT wrist by default).
    "tiny": TrainConfig(
        pose_epochs=5,
        sdf_epochs=60,
        batch_size=4,
        lr=1e-3,
        lr_halve_every=40,
        n_hand=512,
        n_obj=512,
        augment=False,
        num_workers=0,
        log_every=10,
    ),
}


def get_train_preset(name: str) -> TrainConfig:
    """The training schedule for a model preset: `tiny`, `obman`, or the DexYCB schedule for
    `dexycb`, `dexycb-video` and the ablation variants (all trained on DexYCB)."""
    if name in _TRAIN_PRESETS:
        return _TRAIN_PRESETS[name]
    return _TRAIN_PRESETS["dexycb"]


def replace_from_dict(template: Any, values: dict[str, Any]) -> Any:
    """Rebuild a (possibly nested) frozen dataclass: `template` with the fields in `values`
    (as written by `dataclasses.asdict`). Unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(template)}
    unknown = set(values) - names
    if unknown:
        raise UserError(f"unknown {type(template).__name__} fields: {sorted(unknown)}")
    changes = {}
    for key, value in values.items():
        current = getattr(template, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = replace_from_dict(current, value)
        elif isinstance(current, tuple) and isinstance(value, list):
            changes[key] = tuple(value)
        else:
            changes[key] = value
    return dataclasses.replace(template, **changes)


def model_config_for(preset: str):
    """The network configuration of a named preset (a UserError for an unknown name)."""
    from gsdf_model.config import get_preset

    try:
        return get_preset(preset)
    except (KeyError, ValueError) as err:
        raise UserError(str(err.args[0]) if err.args else f"unknown preset {preset!r}") from None


def is_video(model_cfg: Any) -> bool:
    """Whether the network takes frames t−1, t, t+1 (image (B, T, 3, H, W))."""
    return int(getattr(model_cfg, "n_frames", 1)) > 1


def loader_options(model_cfg: Any) -> dict[str, Any]:
    """Dataset options that follow from the network configuration. Images stay in [0, 1]:
    the network applies the ImageNet mean/std itself (ModelConfig.image_mean/std)."""
    return {
        "video": is_video(model_cfg),
        "image_size": int(getattr(model_cfg, "image_size", 256)),
        "imagenet_norm": False,
    }


def build_model(model_cfg: Any) -> nn.Module:
    """The gSDF network for a configuration."""
    from gsdf_model.network import GSDFNet

    return GSDFNet(model_cfg)


def parse_device(device: str | torch.device) -> torch.device:
    """A torch device, or a UserError naming what is wrong with it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UserError(f"bad device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but CUDA is not available here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {device!r} asked for, but MPS is not available here")
    return dev


def resolve_split(data: str | Path, split: str) -> Path:
    """The shard directory for a split: DATA/<split> when it exists, else DATA itself."""
    root = Path(data)
    if not root.exists():
        raise UserError(f"data directory {str(root)!r} does not exist")
    sub = root / split
    return sub if sub.is_dir() else root


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary name beside `path`, then rename (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `train` (a UserError if it is missing or not one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise UserError(f"no checkpoint at {str(path)!r}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise UserError(f"cannot read checkpoint {str(path)!r}: {err}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{str(path)!r} is not a gsdf checkpoint")
    return ckpt


def config_to_dict(model_cfg: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a model configuration (what checkpoints carry)."""
    to_dict = getattr(model_cfg, "to_dict", None)
    return to_dict() if callable(to_dict) else dataclasses.asdict(model_cfg)


def config_from_dict(preset: str, values: dict[str, Any]) -> Any:
    """Inverse of `config_to_dict`, using the preset's class (and values as defaults)."""
    template = model_config_for(preset)
    from_dict = getattr(type(template), "from_dict", None)
    if callable(from_dict):
        return from_dict(values)
    return replace_from_dict(template, values)


def model_from_checkpoint(
    ckpt: dict[str, Any], build: Callable[[Any], nn.Module] | None = None
) -> tuple[nn.Module, Any]:
    """(network with the checkpoint's weights, its configuration), on CPU, in eval mode."""
    cfg = config_from_dict(ckpt["model_preset"], ckpt["model_config"])
    net = (build or build_model)(cfg)
    net.load_state_dict(ckpt["model"])
    net.eval()
    return net, cfg


class _Dist:
    """Process-group state; a single process when WORLD_SIZE is unset or 1."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0
        self.device = device
        if self.world > 1:
            import torch.distributed as dist

            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if device.type == "cuda":
                self.device = torch.device("cuda", local_rank)
                torch.cuda.set_device(self.device)
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, init_method="env://")
            self.rank = dist.get_rank()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1 or not values:
            return values
        import torch.distributed as dist

        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist(), strict=True)}

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    if amp in ("fp16", "auto"):
        return torch.float16
    raise UserError(f"unknown amp mode {amp!r} (auto, bf16, fp16, off)")


def _stage_of(epoch: int, cfg: TrainConfig) -> int:
    return 1 if epoch < cfg.pose_epochs else 2


def _lr_at(epoch: int, cfg: TrainConfig) -> float:
    within = epoch if epoch < cfg.pose_epochs else epoch - cfg.pose_epochs
    return cfg.lr * 0.5 ** (within // max(cfg.lr_halve_every, 1))


def _make_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in net.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=cfg.lr)


class _JsonlLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


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

    preset: model preset name (the model configuration when `model_cfg` is None, and the
    name the checkpoint records). data: a shard directory, or a directory with `train/`.
    out: the run directory. resume: continue from out/last.pt when it exists (False starts
    over and overwrites). build / shards: a network factory and a ready dataset object
    instead of GSDFNet and the shards under `data` (used by tests).
    Summary: {"epochs", "final_loss", "first_loss", "checkpoint", "samples_per_s", ...}.
    """
    train_cfg = train_cfg or get_train_preset(preset)
    model_cfg = model_cfg if model_cfg is not None else model_config_for(preset)
    dist = _Dist(parse_device(device))
    device = dist.device
    amp_dtype = _amp_dtype(train_cfg.amp, device)
    out = Path(out)
    ckpt_path = out / "last.pt"
    total_epochs = train_cfg.pose_epochs + train_cfg.sdf_epochs

    if shards is None:
        split_dir = resolve_split(data, "train")
        try:
            shards = open_shards(split_dir)
        except (FileNotFoundError, OSError, ValueError) as err:
            raise UserError(f"cannot open shards in {str(split_dir)!r}: {err}") from None
    if len(shards) == 0:
        raise UserError("the training set is empty")

    augment = (
        AugmentConfig(
            rotation_deg=train_cfg.rotation_deg,
            brightness=train_cfg.colour_jitter,
            contrast=train_cfg.colour_jitter,
            saturation=train_cfg.colour_jitter,
        )
        if train_cfg.augment
        else None
    )
    dataset = GSDFDataset(
        shards,
        n_hand=train_cfg.n_hand,
        n_obj=train_cfg.n_obj,
        augment=augment,
        seed=train_cfg.seed,
        **loader_options(model_cfg),
    )

    torch.manual_seed(train_cfg.seed)
    net = (build or build_model)(model_cfg)
    start_epoch = 0
    ckpt = None
    if resume and ckpt_path.is_file():
        ckpt = load_checkpoint_file(ckpt_path)
        net.load_state_dict(ckpt["model"])
        start_epoch = int(ckpt["epoch"])
    elif backbone_weights is not None:
        from gsdf_model.backbone import load_backbone_weights

        if not Path(backbone_weights).is_file():
            raise UserError(f"no backbone weights file at {str(backbone_weights)!r}")
        try:
            load_backbone_weights(net, backbone_weights)
        except (ValueError, RuntimeError, KeyError) as err:
            raise UserError(
                f"cannot load backbone weights {str(backbone_weights)!r}: {err}"
            ) from None
    net.to(device)

    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(
            json.dumps(
                {
                    "preset": preset,
                    "model": config_to_dict(model_cfg),
                    "train": dataclasses.asdict(train_cfg),
                },
                indent=2,
            )
            + "\n"
        )
    log = _JsonlLog(out / "metrics.jsonl" if dist.main else None)
    if not resume and dist.main and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()

    def checkpoint(epoch: int, stage: int, optimizer, scaler) -> dict[str, Any]:
        module = net.module if hasattr(net, "module") else net
        return {
            "format": CHECKPOINT_FORMAT,
            "model": module.state_dict(),
            "model_preset": preset,
            "model_config": config_to_dict(model_cfg),
            "train_config": dataclasses.asdict(train_cfg),
            "epoch": epoch,
            "stage": stage,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
        }

    summary: dict[str, Any] = {
        "epochs": total_epochs,
        "start_epoch": start_epoch,
        "checkpoint": str(ckpt_path),
        "first_loss": None,
        "final_loss": None,
    }
    stage = None
    model = net
    optimizer = None
    scaler = None
    n_seen, t_train = 0, 0.0
    try:
        for epoch in range(start_epoch, total_epochs):
            if _stage_of(epoch, train_cfg) != stage:
                stage = _stage_of(epoch, train_cfg)
                if stage == 2:
                    net.freeze_pose()
                optimizer = _make_optimizer(net, train_cfg)
                scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
                if ckpt is not None and int(ckpt["stage"]) == stage and epoch == start_epoch:
                    # Resuming inside this stage: the optimizer state belongs to it.
                    optimizer.load_state_dict(ckpt["optimizer"])
                    if scaler is not None and ckpt.get("scaler"):
                        scaler.load_state_dict(ckpt["scaler"])
                if dist.world > 1:
                    from torch.nn.parallel import DistributedDataParallel

                    # Re-wrapped per stage: which parameters train changes at the boundary.
                    model = DistributedDataParallel(
                        net,
                        device_ids=[device.index] if device.type == "cuda" else None,
                        find_unused_parameters=True,
                    )
            lr = _lr_at(epoch, train_cfg)

            dataset.set_epoch(epoch)
            # The pose stage needs no SDF points: skip sampling them.
            dataset.n_hand = 0 if stage == 1 else train_cfg.n_hand
            dataset.n_obj = 0 if stage == 1 else train_cfg.n_obj
            sampler = None
            if dist.world > 1:
                from torch.utils.data.distributed import DistributedSampler

                sampler = DistributedSampler(dataset, shuffle=True, seed=train_cfg.seed)
                sampler.set_epoch(epoch)
            gen = torch.Generator().manual_seed(train_cfg.seed * 100003 + epoch)
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=train_cfg.batch_size,
                shuffle=sampler is None,
                sampler=sampler,
                generator=gen if sampler is None else None,
                num_workers=train_cfg.num_workers,
                pin_memory=device.type == "cuda",
                drop_last=len(dataset) >= 2 * train_cfg.batch_size * dist.world,
                persistent_workers=False,
            )
            # steps already taken in this stage (also right after a resume)
            stage_start = 0 if stage == 1 else train_cfg.pose_epochs
            stage_step = (epoch - stage_start) * len(loader)
            model.train()
            sums: dict[str, float] = {}
            n_batches = 0
            bar = None
            if progress and dist.main:
                from tqdm.auto import tqdm

                bar = tqdm(
                    loader,
                    desc=f"stage {stage} epoch {epoch + 1}/{total_epochs}",
                    leave=False,
                    dynamic_ncols=True,
                    disable=None,  # no bar when stderr is not a terminal (logs, CI)
                )
            t0 = time.perf_counter()
            for step, batch in enumerate(bar if bar is not None else loader):
                batch = to_device(batch, device)
                warm = (
                    min(1.0, (stage_step + 1) / train_cfg.warmup_steps)
                    if train_cfg.warmup_steps
                    else 1.0
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr * warm
                stage_step += 1
                with torch.autocast(
                    device_type=device.type,
                    dtype=amp_dtype or torch.float32,
                    enabled=amp_dtype is not None,
                ):
                    pred = model(batch, stage)
                    losses = net.loss(batch, pred, stage)
                total = losses["total"]
                if not torch.isfinite(total):
                    raise RuntimeError(f"non-finite loss at epoch {epoch + 1}, step {step}")
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(total).backward()
                    scaler.unscale_(optimizer)
                else:
                    total.backward()
                if train_cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(
                        [p for p in net.parameters() if p.requires_grad], train_cfg.grad_clip
                    )
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                values = {k: float(v.detach()) for k, v in losses.items() if torch.is_tensor(v)}
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_batches += 1
                n_seen += batch["image"].shape[0] * dist.world
                if bar is not None:
                    bar.set_postfix(loss=f"{values['total']:.4g}")
                if train_cfg.log_every and step % train_cfg.log_every == 0:
                    log.write(
                        {
                            "kind": "step",
                            "epoch": epoch + 1,
                            "stage": stage,
                            "step": step,
                            "lr": lr * warm,
                        }
                        | values
                    )
            if bar is not None:
                bar.close()
            dt = time.perf_counter() - t0
            t_train += dt
            means = dist.mean({k: v / max(n_batches, 1) for k, v in sums.items()})
            if summary["first_loss"] is None and epoch == start_epoch:
                summary["first_loss"] = means.get("total")
            summary["final_loss"] = means.get("total")
            record = {
                "kind": "epoch",
                "epoch": epoch + 1,
                "stage": stage,
                "lr": lr,
                "seconds": round(dt, 3),
                "samples_per_s": round(n_batches * train_cfg.batch_size * dist.world / dt, 2)
                if dt > 0
                else None,
            } | {f"loss_{k}" if k != "total" else "loss": v for k, v in means.items()}
            log.write(record)
            if dist.main:
                save_atomic(checkpoint(epoch + 1, stage, optimizer, scaler), ckpt_path)
                if epoch + 1 == train_cfg.pose_epochs:
                    save_atomic(checkpoint(epoch + 1, stage, optimizer, scaler), out / "stage1.pt")
                if progress:
                    parts = " ".join(f"{k}={v:.4g}" for k, v in means.items())
                    print(
                        f"stage {stage} epoch {epoch + 1}/{total_epochs}: {parts} ({dt:.1f}s)",
                        flush=True,
                    )
    finally:
        dist.close()
    summary["samples_per_s"] = n_seen / t_train if t_train > 0 else math.nan
    summary["train_seconds"] = t_train
    return summary
