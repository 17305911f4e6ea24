"""Model configuration: one frozen dataclass and a registry of named presets.

A variant of the network is a configuration, never a copy of the code. The presets are the
paper's models (`obman`, `dexycb`, `dexycb-video`), the ablations of §4.4 (`k1`…`k3`,
`ko1`…`ko3`, `v1`…`v4`, `single`, `symmetric`, `asymmetric`, all on DexYCB settings with
the paper's ablation baseline K3 / Ko3 / V1 / asymmetric for the parts they do not vary)
and `tiny` (same code paths, narrow widths, fast on a CPU).

One registry entry (`Preset`) holds a network and the schedule it is trained on; asking for
an unknown name is an error, never another preset's schedule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gsdf_data import config_io

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
    root_depth_weight: float = 1.0  # our wrist-depth head (the reference decodes at the GT wrist)
    pose_obj_weight: float = 0.0  # object centre in stage 1 (reference: hand only, 0)
    # kinematic features (paper Tables 1 and 2)
    hand_kinematics: str = "k3"  # k1: x; k2: + x in the wrist frame; k3: + all 16 joint frames
    obj_kinematics: str = "ko3"  # ko1: x; ko2: + x - centre; ko3: + x - 21 joints, wrist frame
    # visual features (paper Table 3)
    visual: str = "v2"  # v1 global, v2 local, v3 local + spatial transformer, v4 + temporal
    visual_dim: int = 256  # d of the 16×16×d SDF feature map
    visual_add_feats: bool = True  # append depth and view direction to sampled features
    transformer_dim: int = 256
    transformer_heads: int = 4
    transformer_ffn: int = 1024  # feed-forward width of each layer (reference: 1024)
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
    obj_pose_weight: float = 0.5  # stage-2 object centre (reference volume_weight)
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
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return config_io.from_dict(cls, d)


POSE_ONLY_MODES = ("use", "expect", "require", "ignore")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the network itself is the model configuration).

    Two stages: the pose stage (stage 1) and the SDF stage (stage 2, hand pose frozen).
    Batch sizes are global: under DDP each of the W processes takes batch / W samples.
    `lr` restarts at each stage and halves every `pose_lr_halve_every` / `lr_halve_every`
    epochs within it. `own_points_epochs`: for that many stage-2 epochs each SDF decoder's
    loss sees only the points sampled around its own mesh, then all points. n_hand / n_obj:
    SDF points per sample and mesh (half inside, half outside). warmup_steps: linear lr
    warm-up at the start of each stage (0: none). amp: "auto" (bf16 if the GPU supports it,
    else fp16; off on CPU), "bf16", "fp16" or "off". backbone_init: how a fresh run's ResNets
    start: "imagenet" (torchvision's weights, the paper presets), "none" (random) or a
    state-dict file. Augmentation (`data.AugmentConfig`, the reference code's by default):
    rotation_deg is the angle's σ ("gaussian", clipped to ±90°) or half-range ("uniform"),
    applied with probability rotation_prob; colour_jitter: each channel × U[1 − x, 1 + x];
    crop_shift: the crop centre moves by U[−x, x] of the crop's side per axis, seen by a
    virtual camera turned towards it (the reference's DexYCB 0.1; ObMan 0: none).
    video_frames (video presets, stage 2): "all" supervises every frame of the clip (the
    reference's), "middle" frame t only (a third of the decoder work and SDF points).
    video_clips (video presets, stage 2): "random" — the reference's: each epoch, one clip
    per sequence of three of its frames drawn at random; "consecutive" — frames t−1, t, t+1
    around every sample, one clip per sample (as many clips per epoch as frames). Stage 1
    trains on every frame either way.
    num_workers: DataLoader workers per process; None: from this machine's cores
    (`data.default_workers`). channels_last applies on CUDA only; compile wraps the forward
    in torch.compile (minutes of compilation, then faster steps). pose_only: what stage 1 does
    with the shard set's pose-only samples (frames without SDF points; the reference's ObMan
    pose stage trains on all 138k training frames, its SDF stage on the 87k with points):
    "use" them when there are any, "expect" them (use; one warning line when the set has
    none: the obman preset), "require" them (an error when none) or "ignore" them (stage 1
    on the samples with SDF points only).
    """

    pose_epochs: int = 100
    sdf_epochs: int = 1600
    pose_batch_size: int = 192
    batch_size: int = 256
    lr: float = 1e-4
    pose_lr_halve_every: int = 40
    lr_halve_every: int = 600
    own_points_epochs: int = 1201
    n_hand: int = 1000
    n_obj: int = 1000
    augment: bool = True
    rotation_deg: float = 45.0
    rotation_dist: str = "gaussian"
    rotation_prob: float = 0.6
    colour_jitter: float = 0.2
    crop_shift: float = 0.0
    video_frames: str = "all"
    video_clips: str = "random"
    num_workers: int | None = None
    amp: str = "auto"
    grad_clip: float = 0.0
    warmup_steps: int = 0
    seed: int = 0
    log_every: int = 50
    backbone_init: str = "none"
    channels_last: bool = True  # on CUDA: NHWC convolutions (tensor cores)
    compile: bool = False  # torch.compile the network's forward
    init_from: str | None = None  # a trained gSDF checkpoint to start from (not its transformer)
    pose_only: str = "use"

    def __post_init__(self) -> None:
        checks = [
            (self.pose_epochs >= 0 and self.sdf_epochs >= 0, "epochs must be >= 0"),
            (self.pose_batch_size >= 1 and self.batch_size >= 1, "batch sizes must be >= 1"),
            (self.pose_lr_halve_every >= 1 and self.lr_halve_every >= 1, "halve_every >= 1"),
            (self.amp in ("auto", "bf16", "fp16", "off"), f"amp {self.amp!r}"),
            (
                self.rotation_dist in ("gaussian", "uniform"),
                f"rotation_dist {self.rotation_dist!r}",
            ),
            (0.0 <= self.rotation_prob <= 1.0, "rotation_prob in [0, 1]"),
            (0.0 <= self.colour_jitter < 1.0, "colour_jitter in [0, 1)"),
            (0.0 <= self.crop_shift < 0.5, "crop_shift in [0, 0.5)"),
            (self.video_frames in ("all", "middle"), f"video_frames {self.video_frames!r}"),
            (self.video_clips in ("random", "consecutive"), f"video_clips {self.video_clips!r}"),
            (self.num_workers is None or self.num_workers >= 0, "num_workers >= 0"),
            (self.pose_only in POSE_ONLY_MODES, f"pose_only {self.pose_only!r}"),
        ]
        bad = [what for ok, what in checks if not ok]
        if bad:
            raise ValueError("invalid train config: " + ", ".join(bad))

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def scaled(self, sdf_epochs: int, pose_epochs: int | None = None) -> TrainConfig:
        """The same schedule stretched to other stage lengths: lr halvings and the epoch where
        the decoders start to see all points keep their place relative to the stage's length;
        the pose stage keeps its ratio to the SDF stage unless `pose_epochs` is given."""
        r = sdf_epochs / max(self.sdf_epochs, 1)
        if pose_epochs is None:  # at least one pose epoch, unless there is no SDF stage
            pose_epochs = round(self.pose_epochs * r)
            if sdf_epochs and self.pose_epochs:
                pose_epochs = max(1, pose_epochs)
        rp = pose_epochs / max(self.pose_epochs, 1)
        return self.replace(
            sdf_epochs=sdf_epochs,
            pose_epochs=pose_epochs,
            lr_halve_every=max(1, round(self.lr_halve_every * r)),
            pose_lr_halve_every=max(1, round(self.pose_lr_halve_every * rp)),
            own_points_epochs=round(self.own_points_epochs * r),
        )


@dataclass(frozen=True)
class Preset:
    """A registry entry: the network and the schedule that trains it."""

    name: str
    model: ModelConfig
    train: TrainConfig


# The reference's schedules (zerchen/gSDF). Pose stage (`pose_kpt`, hand only): 100 epochs,
# Adam 1e-4 halved at epochs 40 and 80, 32 images per GPU; its stage-2 configs load a
# checkpoint named `..._b192`, i.e. 192 images per step, which we take. SDF stage: 1600
# epochs, 64 per GPU x 4 GPUs = 256, halved at 600 and 1200, each decoder on its own
# mesh's points through epoch 1200 (0-based). Video: 16 clips per GPU x 4 = 64. DexYCB
# crops shift by up to 10 % of their side per axis (`get_aug_config`), ObMan's do not.
PAPER_SCHEDULE = TrainConfig(backbone_init="imagenet")
# ObMan: the reference's pose stage trains on every training frame (train_138k), its SDF
# stage on the frames with SDF points (train_87k); a set without pose-only samples is
# worth one warning line.
OBMAN_SCHEDULE = PAPER_SCHEDULE.replace(pose_only="expect")
DEXYCB_SCHEDULE = PAPER_SCHEDULE.replace(crop_shift=0.1)
VIDEO_SCHEDULE = DEXYCB_SCHEDULE.replace(batch_size=64)
# Minutes on a laptop CPU, same code paths: for the demo, the tests and smoke runs. Small
# batches (more steps per epoch) and no rotation augmentation: a few hundred steps are all it
# gets. 80 pose epochs fit the joints of a few dozen training frames.
TINY_SCHEDULE = TrainConfig(
    pose_epochs=80,
    sdf_epochs=60,
    pose_batch_size=4,
    batch_size=4,
    lr=1e-3,
    pose_lr_halve_every=40,
    lr_halve_every=40,
    own_points_epochs=0,
    n_hand=512,
    n_obj=512,
    augment=False,
    num_workers=0,
    log_every=10,
)


def _presets() -> dict[str, Preset]:
    # The image models use geometry-aligned local features (V2), as the reference's image
    # code does; the video model adds the spatio-temporal transformer (V4).
    obman = ModelConfig(name="obman", recon_scale=7.0, visual="v2")
    dexycb = ModelConfig(name="dexycb", recon_scale=6.2, visual="v2")
    models = {
        "obman": obman,
        "dexycb": dexycb,
        "dexycb-video": dexycb.replace(name="dexycb-video", visual="v4", n_frames=3),
    }
    # Ablations (paper §4.4, on DexYCB): each varies one factor of the paper's ablation
    # baseline K3 + Ko3 + V1 + asymmetric (Tables 1, 2 and 4 use V1; Table 3 varies V).
    base = dexycb.replace(visual="v1")
    for k in HAND_KINEMATICS:
        models[k] = base.replace(name=k, hand_kinematics=k)
    for k in OBJ_KINEMATICS:
        models[k] = base.replace(name=k, obj_kinematics=k)
    for v in VISUAL_VARIANTS:
        models[v] = base.replace(name=v, visual=v, n_frames=3 if v == "v4" else 1)
    for s in BACKBONE_STRATEGIES:
        models[s] = base.replace(name=s, backbone=s)
    models["tiny"] = ModelConfig(
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
        transformer_ffn=128,
        spatial_layers=2,
        temporal_layers=2,
        sdf_latent=32,
        decoder_width=128,
        decoder_dropout=0.0,
        # With a few hundred steps, the full-weight ordinal term holds the joints back (its
        # gradient dwarfs the joint MSE's while orders are wrong); a tenth lets them fit.
        ordinal_weight=0.1,
    )
    # The paper's full model (K3, Ko3, V2) and its main ablations at the tiny size, for
    # studies on a CPU (tools/experiment.py): each varies one factor of tiny-v2.
    small_full = models["tiny"].replace(name="tiny-v2", visual="v2")
    models["tiny-v2"] = small_full
    models["tiny-k1"] = small_full.replace(name="tiny-k1", hand_kinematics="k1")
    models["tiny-ko1"] = small_full.replace(name="tiny-ko1", obj_kinematics="ko1")
    models["tiny-v1"] = small_full.replace(name="tiny-v1", visual="v1")

    def schedule(m: ModelConfig) -> TrainConfig:
        if m.name.startswith("tiny"):
            return TINY_SCHEDULE
        if m.is_video:
            return VIDEO_SCHEDULE
        return OBMAN_SCHEDULE if m.name == "obman" else DEXYCB_SCHEDULE  # the rest: DexYCB

    return {name: Preset(name, m, schedule(m)) for name, m in models.items()}


PRESETS: dict[str, Preset] = _presets()


def _entry(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def get_preset(name: str, **overrides) -> ModelConfig:
    """The named preset's network, optionally with some fields replaced."""
    cfg = _entry(name).model
    return cfg.replace(**overrides) if overrides else cfg


def get_train_preset(name: str) -> TrainConfig:
    """The named preset's training schedule (a KeyError for an unknown name)."""
    return _entry(name).train
