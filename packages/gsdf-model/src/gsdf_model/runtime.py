"""What training, reconstruction and inference share: user errors, devices, mixed precision,
the process group, and checkpoint files (format, atomic writes, reading back a network).

Checkpoints are dicts written with torch.save:

    format        CHECKPOINT_FORMAT
    model         the network's state dict
    model_preset  the preset name; model_config its ModelConfig as a dict
    train_config  the TrainConfig as a dict; epoch (epochs done), stage (1 or 2)
    optimizer, scaler   to resume within a stage
    hand_model    which hand model's rest bones the joint frames used ("procedural" or the
                  MANO file's sha256), so a run never resumes on another hand
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gsdf_data.files import atomic_write

CHECKPOINT_FORMAT = "gsdf-checkpoint/1"


class UserError(Exception):
    """A mistake in what the user asked for (bad path, unknown preset, ...): the CLI prints
    the message on one line and exits non-zero, without a traceback."""


# ---------------------------------------------------------------------------- configs
def model_config_for(preset: str):
    """The network configuration of a named preset (a UserError for an unknown name)."""
    from gsdf_model.config import get_preset

    try:
        return get_preset(preset)
    except (KeyError, ValueError) as err:
        raise UserError(str(err.args[0]) if err.args else f"unknown preset {preset!r}") from None


def train_config_for(preset: str):
    """The training schedule of a named preset (a UserError for an unknown name)."""
    from gsdf_model.config import get_train_preset

    try:
        return get_train_preset(preset)
    except KeyError as err:
        raise UserError(str(err.args[0])) from None


def config_to_dict(model_cfg: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a model configuration (what checkpoints carry)."""
    to_dict = getattr(model_cfg, "to_dict", None)
    return to_dict() if callable(to_dict) else dataclasses.asdict(model_cfg)


def config_from_dict(preset: str, values: dict[str, Any]) -> Any:
    """Inverse of `config_to_dict`, using the preset's class."""
    return type(model_config_for(preset)).from_dict(values)


def is_video(model_cfg: Any) -> bool:
    """Whether the network takes frames t−1, t, t+1 (image (B, T, 3, H, W))."""
    return int(getattr(model_cfg, "n_frames", 1)) > 1


def loader_options(model_cfg: Any) -> dict[str, Any]:
    """Dataset options that follow from the network configuration. Images are not
    normalised: the network applies the ImageNet mean/std itself (ModelConfig.image_mean/std)."""
    return {
        "video": is_video(model_cfg),
        "image_size": int(getattr(model_cfg, "image_size", 256)),
    }


def build_model(model_cfg: Any) -> nn.Module:
    """The gSDF network for a configuration."""
    from gsdf_model.network import GSDFNet

    return GSDFNet(model_cfg)


# ---------------------------------------------------------------------------- devices
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


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for an amp mode on a device (None: full precision)."""
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise UserError(f"unknown amp mode {amp!r} (auto, bf16, fp16, off)")
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


class Dist:
    """Process-group state from torchrun's environment; one process when WORLD_SIZE is unset
    or 1. On CUDA each process takes the GPU of its LOCAL_RANK."""

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

    def per_process(self, global_batch: int) -> int:
        """This process's share of a global batch (a UserError when it does not divide)."""
        if global_batch % self.world:
            raise UserError(f"batch size {global_batch} does not split over {self.world} processes")
        return global_batch // self.world

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Mean over processes of per-process scalars."""
        if self.world == 1 or not values:
            return values
        import torch.distributed as dist

        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist(), strict=True)}

    def wrap(self, net: nn.Module) -> nn.Module:
        """DistributedDataParallel around net when there are several processes, else net."""
        if self.world == 1:
            return net
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            net,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=True,
        )

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


# ---------------------------------------------------------------------------- files
def resolve_split(data: str | Path, split: str) -> Path:
    """The shard directory for a split: DATA/<split> when it exists, else DATA itself."""
    root = Path(data)
    if not root.exists():
        raise UserError(f"data directory {str(root)!r} does not exist")
    sub = root / split
    return sub if sub.is_dir() else root


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary name beside `path`, then rename (never a half-written file)."""
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


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


def hand_of(model_cfg: Any) -> str:
    """The hand model id (kinematics.hand_model_id) a configuration's joint frames use; a
    UserError when its MANO file is missing."""
    from gsdf_model.kinematics import hand_model_id

    path = getattr(model_cfg, "mano_path", None)
    if path is not None and not Path(path).is_file():
        raise UserError(f"no MANO file at {str(path)!r} (pass --mano PATH to MANO_RIGHT.pkl)")
    return hand_model_id(path)


def model_from_checkpoint(
    ckpt: dict[str, Any],
    build: Callable[[Any], nn.Module] | None = None,
    mano_path: str | Path | None = None,
) -> tuple[nn.Module, Any]:
    """(network with the checkpoint's weights, its configuration), on CPU, in eval mode.

    mano_path: where the MANO file the checkpoint was trained with lives on this machine
    (default: the path recorded at training); it must be the same file (same SHA-256).
    """
    cfg = config_from_dict(ckpt["model_preset"], ckpt["model_config"])
    if mano_path is not None:
        cfg = cfg.replace(mano_path=str(mano_path))
    trained_on = ckpt.get("hand_model", "procedural")
    if hand_of(cfg) != trained_on:
        raise UserError(
            f"the checkpoint was trained on hand model {trained_on}, not {hand_of(cfg)}: "
            "pass the same MANO file with --mano"
        )
    net = (build or build_model)(cfg)
    net.load_state_dict(ckpt["model"])
    net.eval()
    return net, cfg
