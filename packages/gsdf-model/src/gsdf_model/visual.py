"""Visual features of query points (paper §3.3, Table 3).

V1 global (reference `hsdf_osdf_2net`): a 1×1 conv + BN + ReLU on the backbone's /32 map,
    averaged over space, one vector for every point.
V2 local: project x with the camera and bilinearly sample the 16×16×d map there.
V3: V2 on the map refined by a spatial transformer over its 16×16 tokens.
V4: V3 with temporal context: frames t−1, t, t+1 give 3×16×16 tokens (factorised
    spatial then temporal attention); the refined map of frame t is sampled.

Sampling convention: image pixel centres at integer coordinates (OpenCV); feature cell k
covers pixels [k·s − 0.5, (k+1)·s − 0.5] with s = image_size / map_size, so bilinear
sampling uses `align_corners=False` with normalised coordinate g = (u + 0.5)/W·2 − 1.
Points projecting outside the image get zero features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gsdf_model.config import ModelConfig
from gsdf_model.pose import deconv_neck


def project(x: Tensor, K: Tensor, eps: float = 1e-4) -> Tensor:
    """Pinhole projection: x (B,N,3) camera metres, K (B,3,3) → pixel coords (B,N,2)."""
    z = x[..., 2:3].clamp_min(eps)
    xy = x[..., :2] / z
    return xy * torch.stack([K[:, 0, 0], K[:, 1, 1]], -1)[:, None] + K[:, None, :2, 2]


def sample_map(fmap: Tensor, uv: Tensor, image_size: int) -> Tensor:
    """Bilinear sample of fmap (B,C,h,w) at image pixels uv (B,N,2) → (B,N,C)."""
    g = (uv.float() + 0.5) / image_size * 2.0 - 1.0
    # float32 even under autocast: bf16 grid coordinates would be off by ~1/30 of a cell
    out = F.grid_sample(
        fmap.float(), g[:, :, None, :], mode="bilinear", align_corners=False
    )  # (B,C,N,1)
    return out[..., 0].transpose(1, 2)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, c))


class TransformerLayer(nn.Module):
    """Pre-norm self-attention + GELU MLP of width `ffn`, both residual: (B,n,dim) → (B,n,dim)."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SpatioTemporalTransformer(nn.Module):
    """Factorised transformer over T×h×w tokens: spatial layers within each frame, then
    temporal layers across frames at each location (none when temporal_layers is 0).

    (B,T,C,h,w) → (B,T,dim,h,w).
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        heads: int,
        spatial_layers: int,
        temporal_layers: int,
        n_frames: int,
        size: int,
        ffn: int,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.pos = nn.Parameter(torch.randn(1, 1, size * size, dim) * 0.02)
        self.spatial = nn.ModuleList(
            TransformerLayer(dim, heads, ffn) for _ in range(spatial_layers)
        )
        self.temporal = nn.ModuleList(
            TransformerLayer(dim, heads, ffn) for _ in range(temporal_layers)
        )
        self.time = (
            nn.Parameter(torch.randn(1, n_frames, 1, dim) * 0.02) if temporal_layers else None
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, maps: Tensor) -> Tensor:
        b, t, _, h, w = maps.shape
        x = self.embed(maps.flatten(3).transpose(2, 3)) + self.pos  # (B,T,hw,dim)
        d = x.shape[-1]
        x = x.reshape(b * t, h * w, d)
        for layer in self.spatial:
            x = layer(x)
        if len(self.temporal):
            x = x.reshape(b, t, h * w, d) + self.time[:, :t]
            x = x.transpose(1, 2).reshape(b * h * w, t, d)
            for layer in self.temporal:
                x = layer(x)
            x = x.reshape(b, h * w, t, d).transpose(1, 2)
        x = self.norm(x).reshape(b, t, h, w, d)
        return x.permute(0, 1, 4, 2, 3)


class VisualEncoder(nn.Module):
    """Backbone features → per-point visual features e_v (B,N,sdf_latent).

    `encode` runs once per image (or clip), `point_features` once per chunk of query points.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.variant = cfg.visual
        self.image_size = cfg.image_size
        self.add_feats = cfg.visual_add_feats and cfg.visual != "v1"
        c = cfg.backbone_channels
        if cfg.visual == "v1":  # the reference's global branch: on the /32 map, width kept
            self.neck = nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
            dim = c
        else:  # /32 → /16: one deconv, the SDF feature map is 16×16 for 256×256 images
            self.neck = deconv_neck(c, cfg.visual_dim, 1)
            dim = cfg.visual_dim
        self.transformer: SpatioTemporalTransformer | None = None
        if cfg.visual in ("v3", "v4"):
            self.transformer = SpatioTemporalTransformer(
                cfg.visual_dim,
                cfg.transformer_dim,
                cfg.transformer_heads,
                cfg.spatial_layers,
                cfg.temporal_layers if cfg.visual == "v4" else 0,
                cfg.n_frames,
                cfg.feature_size,
                cfg.transformer_ffn,
            )
            dim = cfg.transformer_dim
        self.proj = nn.Linear(dim + (4 if self.add_feats else 0), cfg.sdf_latent)

    def encode(self, feats: Tensor, every_frame: bool = False) -> Tensor:
        """feats: (B,T,C,h,w) backbone maps of the clip (T=1 for images) → for v1 the global
        vector (B,C), otherwise the map of the middle frame (B,d',16,16); with `every_frame`
        (v4) the refined map of every frame (B,T,d',16,16)."""
        b, t = feats.shape[:2]
        if every_frame and self.variant != "v4":
            raise ValueError(f"every frame's map needs the video variant v4, not {self.variant}")
        if self.variant != "v4":  # single-frame variants only ever see frame t
            feats = feats[:, t // 2 : t // 2 + 1]
            t = 1
        maps = self.neck(feats.flatten(0, 1))
        maps = maps.reshape(b, t, *maps.shape[1:])
        if self.variant == "v1":
            return maps[:, 0].mean(dim=(2, 3))
        if self.transformer is not None:
            maps = self.transformer(maps)
        return maps if every_frame else maps[:, t // 2]

    def point_features(self, enc: Tensor, x_cam: Tensor, K: Tensor) -> Tensor:
        """enc from `encode`; x_cam: (B,N,3) camera metres; K: (B,3,3) → (B,N,sdf_latent)."""
        if self.variant == "v1":
            return self.proj(enc)[:, None].expand(-1, x_cam.shape[1], -1)
        f = sample_map(enc, project(x_cam, K), self.image_size)
        if self.add_feats:
            view = F.normalize(x_cam, dim=-1)
            f = torch.cat([f, x_cam[..., 2:3].to(f.dtype), view.to(f.dtype)], dim=-1)
        return self.proj(f)
