"""Where backbone weights come from: torchvision's published ImageNet ResNet-18 (the
reference's initialisation), a user's file, or none.

The ImageNet file is fetched once into torch's hub cache (`torch.hub.get_dir()/checkpoints`,
the same place torchvision keeps it, so an existing copy is reused) with torch alone, and is
checked against the SHA-256 prefix in its published name, cached or not. Offline without a
cached copy: one error that says where to put the file and how to train from scratch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# torchvision's ResNet18_Weights.IMAGENET1K_V1; the name carries its SHA-256 prefix
RESNET18_IMAGENET_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


class WeightsError(Exception):
    """Backbone weights cannot be had (a user-facing, one-line reason)."""


def hub_cache_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _hash_prefix(url: str) -> str:
    stem = url.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return stem.rsplit("-", 1)[-1]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_imagenet(url: str = RESNET18_IMAGENET_URL, cache_dir: Path | None = None) -> Path:
    """The cached ImageNet weights file, downloaded on first use; hash-checked."""
    import torch

    cache_dir = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    name = url.rsplit("/", 1)[-1]
    path = cache_dir / name
    prefix = _hash_prefix(url)
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            # writes to a temporary name, checks the hash prefix, then renames
            torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=True)
        except (OSError, ValueError, RuntimeError) as err:
            raise WeightsError(
                f"cannot fetch the ImageNet ResNet-18 weights ({url}: {err}); put {name} in "
                f"{cache_dir}, or pass --backbone-weights PATH, or --backbone-weights none to "
                "train from scratch"
            ) from None
    if not sha256_of(path).startswith(prefix):
        raise WeightsError(
            f"{path} does not match its published hash ({prefix}…): delete it to fetch it again"
        )
    return path


def resolve_backbone_weights(spec: str | Path | None) -> Path | None:
    """ "imagenet" → the cached torchvision file (fetched once); "none" or None → None (random
    init); anything else is a path to a torchvision-style state-dict file."""
    if spec is None or str(spec).lower() == "none":
        return None
    if str(spec).lower() == "imagenet":
        return fetch_imagenet()
    path = Path(spec)
    if not path.is_file():
        raise WeightsError(f"no backbone weights file at {str(path)!r}")
    return path
