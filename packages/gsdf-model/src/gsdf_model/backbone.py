"""ResNet-18 image backbone, written here, with torchvision's parameter names.

The module tree (conv1, bn1, layer1…layer4, each block conv1/bn1/conv2/bn2 and
downsample.0/downsample.1) matches `torchvision.models.resnet18`, so a user's ImageNet
state-dict file loads with `load_backbone_weights` (its `fc.*` entries are ignored).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (torchvision's BasicBlock)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet with BasicBlocks and no classifier: image (B,3,H,W) → features (B,8w,H/32,W/32).

    `width=64, blocks=(2,2,2,2)` is ResNet-18 (11.2 M parameters without `fc`).
    """

    def __init__(self, width: int = 64, blocks: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.width = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans = [width, width * 2, width * 4, width * 8]
        in_ch = width
        for i, (ch, n) in enumerate(zip(chans, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(
                *[
                    BasicBlock(in_ch if j == 0 else ch, ch, stride if j == 0 else 1)
                    for j in range(n)
                ]
            )
            setattr(self, f"layer{i + 1}", layer)
            in_ch = ch
        self.out_channels = chans[-1]
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each block: each residual branch starts as identity.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B,3,H,W) normalised image → (B, 8·width, H/32, W/32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def _state_dict_from_file(path: str | Path) -> Mapping[str, Tensor]:
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj


def load_resnet_state_dict(resnet: ResNet, state: Mapping[str, Tensor]) -> None:
    """Copy a torchvision resnet18 state dict into `resnet`; strict except for `fc.*`.

    Raises ValueError naming the missing, unexpected or mis-shaped keys.
    """
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = resnet.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:3]}")
        raise ValueError("backbone weights do not fit a ResNet-18: " + "; ".join(parts))
    resnet.load_state_dict(state, strict=True)


def load_backbone_weights(net: nn.Module, path: str | Path) -> int:
    """Load a torchvision resnet18 state-dict file into every ResNet backbone of `net`.

    `net` is a GSDFNet (its `backbones` ModuleDict) or a single ResNet. Returns how many
    backbones were loaded.
    """
    state = _state_dict_from_file(path)
    targets = [m for m in net.modules() if isinstance(m, ResNet)]
    if not targets:
        raise ValueError("the network has no ResNet backbone")
    for resnet in targets:
        load_resnet_state_dict(resnet, state)
    return len(targets)
