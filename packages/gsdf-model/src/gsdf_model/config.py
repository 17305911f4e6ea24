"""Model configuration: one frozen dataclass and a registry of named presets.

A variant of the network is a configuration, never a copy of the code. The presets are the
paper's models (`obman`, `dexycb`, `dexycb-video`), the ablations of §4.4 (`k1`…`k3`,
`ko1`…`ko3`, `v1`…`v4`, `single`, `symmetric`, `asymmetric`, all on DexYCB settings with
the paper's ablation baseline K3 / Ko3 / V1 / asymmetric for the parts they do not vary)
and `tiny` (same code paths, narrow widths, fast on a CPU).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

BACKBONE_STRATEGIES = ("single", "symmetric", "asymmetric")
HAND_KINEMATICS = ("k1", "k2", "k3")
OBJ_KINEMATICS = ("ko1", "ko2", "ko3")
VISUAL_VARIANTS = ("v1", "v2", "v3", "v4")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines the network's architecture and its loss.

    Lengths are metres unless noted; "network units" are metres · recon_scale / 2.
    """

    name: str = "obman"
    # input
    image_size: int = 256  # square RGB crop, pixels
    n_frames: int = 1  # 1 for image presets, 3 (t-1, t, t+1) for video presets
    # backbones (ResNet-18; width 64 is torchvision's resnet18)
    backbone: str = "asymmetric"  # single | symmetric | asymmetric (paper Table 4)
    backbone_width: int = 64
    backbone_blocks: tuple[int, int, int, int] = (2, 2, 2, 2)
    # pose stage: volumetric heatmaps, soft-argmax, depth relative to the wrist depth
    heatmap_size: int = 64  # S: heatmaps are S×S×S; S must be 8·2^k for the deconv neck
    pose_neck_width: int = 256
    depth_extent: float = 0.28  # heatmap depth axis spans wrist depth ± depth_extent
    crop_extent: float = 0.25  # assumed metric size of the crop, prior for the wrist depth
    # IK rest bones: the procedural hand (None) or a MANO_RIGHT.pkl path; the joint frames,
    # hence the kinematic features, depend on the template the network was trained with
    mano_path: str | None = None
    n_ordinal_views: int = 20  # virtual views of the ordinal depth loss (plus the camera's)
    ordinal_weight: float = 1.0
    root_depth_weight: float = 1.0
    # kinematic features (paper Tables 1 and 2)
    hand_kinematics: str = "k3"  # k1: x; k2: + x in the wrist frame; k3: + all 16 joint frames
    obj_kinematics: str = "ko3"  # ko1: x; ko2: + x - centre; ko3: + x - 21 joints, wrist frame
    # visual features (paper Table 3)
    visual: str = "v2"  # v1 global, v2 local, v3 local + spatial transformer, v4 + temporal
    visual_dim: int = 256  # d of the 16×16×d SDF feature map
    visual_add_feats: bool = True  # append depth and view direction to sampled features
    transformer_dim: int = 256
    transformer_heads: int = 4
    spatial_layers: int = 8
    temporal_layers: int = 8  # used only by v4
    # SDF decoders (DeepSDF)
    sdf_latent: int = 256  # visual feature after its linear projection
    decoder_width: int = 512
    decoder_layers: int = 5  # linear layers including the output layer
    decoder_skip: tuple[int, ...] = (2,)  # layers whose input is concatenated with the input
    decoder_dropout: float = 0.2
    decoder_weight_norm: bool = True
    # SDF frame and loss
    recon_scale: float = 7.0  # network frame: (x - wrist) · recon_scale / 2
    clamp: float = 0.05  # L1 on SDF clamped to ±clamp, network units
    hand_sdf_weight: float = 0.5
    obj_sdf_weight: float = 0.5
    obj_pose_weight: float = 1.0
    # images: float RGB in [0, 1] (or uint8); the network applies ImageNet mean/std itself
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        checks = [
            (self.backbone in BACKBONE_STRATEGIES, f"backbone {self.backbone!r}"),
            (self.hand_kinematics in HAND_KINEMATICS, f"hand_kinematics {self.hand_kinematics!r}"),
            (self.obj_kinematics in OBJ_KINEMATICS, f"obj_kinematics {self.obj_kinematics!r}"),
            (self.visual in VISUAL_VARIANTS, f"visual {self.visual!r}"),
            (self.n_frames >= 1 and self.n_frames % 2 == 1, f"n_frames {self.n_frames} (odd)"),
            (self.visual != "v4" or self.n_frames > 1, "visual v4 needs n_frames > 1"),
            (self.image_size % 32 == 0, f"image_size {self.image_size} (multiple of 32)"),
            (self._deconvs(self.heatmap_size) >= 0, f"heatmap_size {self.heatmap_size}"),
            (self.transformer_dim % self.transformer_heads == 0, "transformer_dim % heads"),
        ]
        bad = [what for ok, what in checks if not ok]
        if bad:
            raise ValueError("invalid model config: " + ", ".join(bad))

    def _deconvs(self, size: int) -> int:
        """Number of stride-2 deconvolutions from the backbone's /32 map to `size`, or -1."""
        base = self.image_size // 32
        k = 0
        while base << k < size:
            k += 1
        return k if base << k == size else -1

    @property
    def heatmap_deconvs(self) -> int:
        return self._deconvs(self.heatmap_size)

    @property
    def feature_size(self) -> int:
        """Side of the SDF feature map (16 for 256×256 input)."""
        return self.image_size // 16

    @property
    def backbone_channels(self) -> int:
        return self.backbone_width * 8

    @property
    def hand_feature_dim(self) -> int:
        return {"k1": 3, "k2": 6, "k3": 51}[self.hand_kinematics]

    @property
    def obj_feature_dim(self) -> int:
        return {"ko1": 3, "ko2": 6, "ko3": 72}[self.obj_kinematics]

    @property
    def is_video(self) -> bool:
        return self.visual == "v4"

    def replace(self, **changes) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-friendly dict; `ModelConfig.from_dict` inverts it (checkpoints carry this)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown model config fields: {unknown}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


def _presets() -> dict[str, ModelConfig]:
    # The image models use geometry-aligned local features (V2), as the reference's image
    # code does; the video model adds the spatio-temporal transformer (V4).
    obman = ModelConfig(name="obman", recon_scale=7.0, visual="v2")
    dexycb = ModelConfig(name="dexycb", recon_scale=6.2, visual="v2")
    p = {
        "obman": obman,
        "dexycb": dexycb,
        "dexycb-video": dexycb.replace(name="dexycb-video", visual="v4", n_frames=3),
    }
    # Ablations (paper §4.4, on DexYCB): each varies one factor of the paper's ablation
    # baseline K3 + Ko3 + V1 + asymmetric (Tables 1, 2 and 4 use V1; Table 3 varies V).
    base = dexycb.replace(visual="v1")
    for k in HAND_KINEMATICS:
        p[k] = base.replace(name=k, hand_kinematics=k)
    for k in OBJ_KINEMATICS:
        p[k] = base.replace(name=k, obj_kinematics=k)
    for v in VISUAL_VARIANTS:
        p[v] = base.replace(name=v, visual=v, n_frames=3 if v == "v4" else 1)
    for s in BACKBONE_STRATEGIES:
        p[s] = base.replace(name=s, backbone=s)
    p["tiny"] = ModelConfig(
        name="tiny",
        recon_scale=7.0,
        backbone_width=8,
        backbone_blocks=(1, 1, 1, 1),
        heatmap_size=16,
        pose_neck_width=16,
        visual="v3",
        visual_dim=32,
        transformer_dim=32,
        transformer_heads=4,
        spatial_layers=2,
        temporal_layers=2,
        sdf_latent=32,
        decoder_width=128,
        decoder_dropout=0.0,
    )
    return p


PRESETS: dict[str, ModelConfig] = _presets()


def get_preset(name: str, **overrides) -> ModelConfig:
    """The named preset, optionally with some fields replaced."""
    try:
        cfg = PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
    return cfg.replace(**overrides) if overrides else cfg
