"""Pose stage: volumetric heatmaps, soft-argmax, decoding to the camera frame, pose losses.

A heatmap head turns backbone features into P volumes of S×S×S logits (P = 21 hand joints,
or 1 object centre). Soft-argmax gives continuous voxel coordinates (u, v, d); u and v are
image pixels at 1/stride resolution, d spans a depth interval of ±depth_extent metres around
a reference depth (the wrist's depth: ground truth when the caller gives a wrist, predicted
by a small root-depth regressor otherwise). The camera intrinsics turn (u, v, z) into
camera-frame metres.

Pixel convention (OpenCV): pixel (i, j) has its centre at integer coordinates, so heatmap
cell k covers image pixels [k·s − 0.5, (k+1)·s − 0.5] and its centre is (k + 0.5)·s − 0.5.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gsdf_data.hand.kinematics import KEYPOINT_PARENTS  # bone k: keypoint k to its parent


def deconv_neck(in_ch: int, width: int, n: int) -> nn.Sequential:
    """n stride-2 4×4 transposed convolutions with BN+ReLU: (B,in,h,w) → (B,width,h·2^n,w·2^n)."""
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [
            nn.ConvTranspose2d(in_ch if i == 0 else width, width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def soft_argmax_3d(logits: Tensor) -> Tensor:
    """Expected voxel coordinates of softmax-normalised volumes.

    logits: (B, P, D, H, W) → (B, P, 3) as (x index along W, y index along H, z index along D),
    continuous, in [0, W-1] × [0, H-1] × [0, D-1].
    """
    b, p, d, h, w = logits.shape
    prob = torch.softmax(logits.reshape(b, p, -1).float(), dim=-1).reshape(b, p, d, h, w)
    xs = torch.arange(w, device=logits.device, dtype=prob.dtype)
    ys = torch.arange(h, device=logits.device, dtype=prob.dtype)
    zs = torch.arange(d, device=logits.device, dtype=prob.dtype)
    x = (prob.sum(dim=(2, 3)) * xs).sum(-1)
    y = (prob.sum(dim=(2, 4)) * ys).sum(-1)
    z = (prob.sum(dim=(3, 4)) * zs).sum(-1)
    return torch.stack([x, y, z], dim=-1)


def voxels_to_camera(
    vox: Tensor,
    K: Tensor,
    ref_depth: Tensor,
    image_size: int,
    heatmap_size: int,
    depth_extent: float,
) -> Tensor:
    """Voxel coordinates → camera-frame metres.

    vox: (B,P,3) (x, y, z indices), K: (B,3,3), ref_depth: (B,) metres → (B,P,3).
    z index 0 is ref_depth − depth_extent, index S−1 is ref_depth + depth_extent.
    """
    stride = image_size / heatmap_size
    u = (vox[..., 0] + 0.5) * stride - 0.5
    v = (vox[..., 1] + 0.5) * stride - 0.5
    z = ref_depth[:, None] + (vox[..., 2] / (heatmap_size - 1) * 2.0 - 1.0) * depth_extent
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    return torch.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], dim=-1)


class HeatmapHead(nn.Module):
    """Backbone features (B,C,h,w) → P heatmap volumes (B,P,S,S,S) → voxel coords (B,P,3)."""

    def __init__(self, in_ch: int, n_points: int, size: int, n_deconv: int, width: int) -> None:
        super().__init__()
        self.n_points, self.size = n_points, size
        self.neck = deconv_neck(in_ch, width, n_deconv)
        self.head = nn.Conv2d(width, n_points * size, 1)

    def forward(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """feats: (B,C,h,w) → (voxel coords (B,P,3), logits (B,P,S,S,S))."""
        x = self.head(self.neck(feats))
        b = x.shape[0]
        logits = x.reshape(b, self.n_points, self.size, self.size, self.size)
        return soft_argmax_3d(logits), logits


class RootDepthHead(nn.Module):
    """Absolute wrist depth from pooled features, around a focal-length prior.

    Prior (RootNet's k): z0 = sqrt(fx·fy) · crop_extent / image_size, the depth at which a
    crop_extent-metre object fills the image; the head predicts log(z / z0).
    """

    def __init__(self, in_ch: int, crop_extent: float, image_size: int) -> None:
        super().__init__()
        self.crop_extent, self.image_size = crop_extent, image_size
        self.mlp = nn.Sequential(nn.Linear(in_ch, 128), nn.ReLU(inplace=True), nn.Linear(128, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, feats: Tensor, K: Tensor) -> Tensor:
        """feats: (B,C,h,w), K: (B,3,3) → depth (B,) metres."""
        prior = torch.sqrt(K[:, 0, 0] * K[:, 1, 1]) * self.crop_extent / self.image_size
        return prior * torch.exp(self.mlp(feats.mean(dim=(2, 3))).squeeze(-1).float())


def sample_view_directions(
    n: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """The camera axis plus n random unit view directions on the front hemisphere: (n+1, 3)."""
    theta = torch.rand(n, generator=generator) * 2.0 * math.pi
    z = torch.rand(n, generator=generator)
    r = torch.sqrt(1.0 - z**2)
    views = torch.stack([r * torch.cos(theta), r * torch.sin(theta), z], dim=-1)
    views = torch.cat([torch.tensor([[0.0, 0.0, 1.0]]), views], dim=0)
    return views.to(device)


def sample_ordinal_pairs(
    n_joints: int = 21, generator: torch.Generator | None = None, fraction: float = 1 / 3
) -> tuple[Tensor, Tensor]:
    """Random subsets of joint pairs (P, 2) and bone pairs (Q, 2), each its own `fraction`
    of all i < j pairs (the reference draws a third of each, anew every step)."""

    def some(n: int) -> Tensor:
        pairs = torch.combinations(torch.arange(n), 2)
        keep = torch.randperm(len(pairs), generator=generator)[: int(len(pairs) * fraction)]
        return pairs[keep]

    return some(n_joints), some(n_joints - 1)


def ordinal_loss(
    pred: Tensor, gt: Tensor, views: Tensor, joint_pairs: Tensor, bone_pairs: Tensor
) -> Tensor:
    """Ordinal depth loss in the reference's form (paper eq. 7 plus its bone-pair term).

    pred, gt: (B,21,3) metres; views: (V,3) unit vectors; joint_pairs (P,2), bone_pairs
    (Q,2) indices (see `sample_ordinal_pairs`). Joint term: for each pair (i, j) and view n,
    log(1 + relu(−sign((g_i − g_j)·n) · (p_i − p_j)·n)), mean over batch, pairs and views.
    Bone term (bones b_k = joint k+1 − its parent): relu(−sign((gb_i × gb_j)·n) ·
    (pb_i × pb_j)·n), same mean, no log. Zero when every order agrees.
    """
    # float32 even under autocast: in bf16 the depth order of joints a few mm apart flips
    with torch.autocast(pred.device.type, enabled=False):
        pred, gt = pred.float(), gt.float()
        views = views.to(pred)
        jp, bp = joint_pairs.to(pred.device), bone_pairs.to(pred.device)

        def joint_term(x: Tensor) -> Tensor:
            return (x[:, jp[:, 0]] - x[:, jp[:, 1]]) @ views.T  # (B, P, V)

        def bone_term(x: Tensor) -> Tensor:
            bones = (x - x[:, list(KEYPOINT_PARENTS)])[:, 1:]
            return torch.cross(bones[:, bp[:, 0]], bones[:, bp[:, 1]], dim=-1) @ views.T

        def mean(x: Tensor) -> Tensor:  # 0 for a term without pairs
            return x.sum() / max(x.numel(), 1)

        joints = mean(torch.log1p(F.relu(-torch.sign(joint_term(gt)) * joint_term(pred))))
        bones = mean(F.relu(-torch.sign(bone_term(gt)) * bone_term(pred)))
        return joints + bones
