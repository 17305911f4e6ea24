"""Architecture summary of a preset: parts, parameter counts, FLOPs per sample.

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode (matmuls and convolutions,
one multiply-add = 2 FLOPs) on a batch of one; IK is not a torch op and is left out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from gsdf_model.config import ModelConfig, TrainConfig
from gsdf_model.network import GSDFNet


def _identity_ik(keypoints: Tensor) -> tuple[Tensor, Tensor]:
    """Joint frames without the hand model: identity rotations, origins at the keypoints."""
    from gsdf_model.kinematics import MANO_TO_KEYPOINT

    eye = torch.eye(3, dtype=keypoints.dtype, device=keypoints.device)
    origins = keypoints[:, list(MANO_TO_KEYPOINT)] - keypoints[:, :1]
    return eye.expand(keypoints.shape[0], 16, 3, 3), origins


def n_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_counts(net: GSDFNet) -> dict[str, int]:
    """Parameters per part (backbones by name, heads, visual encoder, decoders) and total."""
    parts: dict[str, int] = {}
    for name, bb in net.backbones.items():
        roles = "+".join(r for r, b in net.roles.items() if b == name)
        parts[f"backbone.{name} ({roles})"] = n_params(bb)
    parts["hand_pose"] = n_params(net.hand_pose) + n_params(net.root_depth)
    parts["obj_pose"] = n_params(net.obj_pose)
    parts["visual.neck"] = n_params(net.visual.neck)
    if net.visual.transformer is not None:
        parts["visual.transformer"] = n_params(net.visual.transformer)
    parts["visual.proj"] = n_params(net.visual.proj)
    parts["hand_decoder"] = n_params(net.hand_decoder)
    parts["obj_decoder"] = n_params(net.obj_decoder)
    parts["total"] = n_params(net)
    parts["trainable_stage2"] = parts["total"] - sum(
        n_params(m) for m in net.pose_modules().values()
    )
    return parts


def example_batch(
    cfg: ModelConfig,
    batch_size: int = 1,
    n_points: int = 2000,
    device: str | torch.device = "cpu",
    frame_labels: bool = False,
) -> dict[str, Tensor]:
    """A plausible random batch (hand ~0.5 m in front of the camera) for shapes and timing.
    frame_labels (video presets): labels for every frame of the clip, (B,T,...), as the
    trainer's video batches carry them; otherwise frame t's."""
    g = torch.Generator().manual_seed(0)
    b, s = batch_size, cfg.image_size
    shape = (b, cfg.n_frames, 3, s, s) if cfg.n_frames > 1 else (b, 3, s, s)
    lead = (b, cfg.n_frames) if frame_labels and cfg.n_frames > 1 else (b,)
    f = 1.8 * s
    K = torch.tensor([[f, 0.0, s / 2 - 0.5], [0.0, f, s / 2 - 0.5], [0.0, 0.0, 1.0]])
    joints = torch.randn(*lead, 21, 3, generator=g) * 0.03 + torch.tensor([0.0, 0.0, 0.5])
    center = joints[..., 0, :] + torch.randn(*lead, 3, generator=g) * 0.03
    points = joints[..., :1, :] + torch.randn(*lead, n_points, 3, generator=g) * 0.06
    batch = {
        "image": torch.rand(shape, generator=g),
        "K": K.expand(*lead, 3, 3).clone(),
        "joints": joints,
        "obj_center": center,
        "points": points,
        "sdf_hand": torch.randn(*lead, n_points, generator=g) * 0.01,
        "sdf_obj": torch.randn(*lead, n_points, generator=g) * 0.01,
    }
    return {k: v.to(device) for k, v in batch.items()}


def count_flops(cfg: ModelConfig, n_points: int = 2000) -> dict[str, int]:
    """FLOPs per sample: image encoding, one query point, and a stage-2 training forward
    with n_points query points."""
    net = GSDFNet(cfg, ik=_identity_ik).eval()
    batch = example_batch(cfg, 1, n_points)
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            state = net.encode(batch["image"], batch["K"], batch["joints"][:, 0])
        encode = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            net.query_network(state, batch["points"])
        query = fc.get_total_flops()
    return {
        "encode": int(encode),
        "per_point": int(query // n_points),
        f"forward_{n_points}pts": int(encode + query),
    }


def schedule_lines(t: TrainConfig, cfg: ModelConfig) -> list[str]:
    """The training schedule in words, with the numbers it uses."""

    def halvings(every: int, epochs: int) -> str:
        at = list(range(every, epochs, every))
        return f"halved at epochs {', '.join(map(str, at))}" if at else "constant"

    obj = "hand only" if cfg.pose_obj_weight == 0 else f"+ object centre x{cfg.pose_obj_weight}"
    own = min(t.own_points_epochs, t.sdf_epochs)
    from gsdf_model.data import AugmentConfig

    clip = AugmentConfig().rotation_clip_deg
    angle = (
        f"N(0, {t.rotation_deg:g}°) clipped to ±{clip:g}°"
        if t.rotation_dist == "gaussian"
        else f"U(±{t.rotation_deg:g}°)"
    )
    shift = (
        f", crop centre shifted by U[±{t.crop_shift:g}] of its side per axis (virtual camera)"
        if t.crop_shift > 0
        else ""
    )
    aug = (
        f"rotation {angle} with p {t.rotation_prob:g}, "
        f"colour ×U[{1 - t.colour_jitter:g}, {1 + t.colour_jitter:g}] per channel{shift}"
        if t.augment
        else "off"
    )
    frames = ""
    if cfg.n_frames > 1:
        frames = (
            f"; every frame of the {cfg.n_frames}-frame clip supervised (mean over frames)"
            if t.video_frames == "all"
            else "; frame t of each clip supervised"
        )
        frames += (
            "; each epoch one clip per sequence, 3 frames drawn at random"
            if t.video_clips == "random"
            else "; clips of frames t-1, t, t+1 around every sample"
        )
    return [
        "schedule (global batches, split over DDP processes; lr restarts at each stage):",
        f"  stage 1 pose: {t.pose_epochs} epochs, batch {t.pose_batch_size}, Adam lr {t.lr:g} "
        f"{halvings(t.pose_lr_halve_every, t.pose_epochs)}; {obj}: joint MSE (m) + "
        f"{cfg.ordinal_weight:g} x ordinal ({cfg.n_ordinal_views} views + camera axis) + "
        f"{cfg.root_depth_weight:g} x wrist depth",
        f"  stage 2 SDF:  {t.sdf_epochs} epochs, batch {t.batch_size}, Adam lr {t.lr:g} "
        f"{halvings(t.lr_halve_every, t.sdf_epochs)}; {cfg.obj_pose_weight:g} x object centre "
        f"+ {cfg.hand_sdf_weight:g} x L1 hand SDF + {cfg.obj_sdf_weight:g} x L1 object SDF "
        f"(clamp {cfg.clamp:g}), each decoder on its own mesh's points for the first {own} "
        f"epochs{frames}",
        f"  points per sample: {t.n_hand} hand + {t.n_obj} object (half inside, half "
        f"outside); augmentation: {aug}",
        f"  data: stage 2 on the samples with SDF points, stage 1 also on the set's pose-only "
        f"samples ({_POSE_ONLY[t.pose_only]})",
    ]


_POSE_ONLY = {
    "use": "when it has any",
    "expect": "expected: a warning when it has none",
    "require": "required: an error when it has none",
    "ignore": "no: ignored",
}


def describe(cfg: ModelConfig, n_points: int = 2000, train: TrainConfig | None = None) -> str:
    """Human-readable summary: configuration, training schedule (when given), module tree
    (depth 2), parameters, FLOPs."""
    net = GSDFNet(cfg, ik=_identity_ik)
    counts = parameter_counts(net)
    flops = count_flops(cfg, n_points)
    lines = [
        f"preset {cfg.name}: backbone {cfg.backbone} (ResNet w{cfg.backbone_width} "
        f"blocks {list(cfg.backbone_blocks)}), hand {cfg.hand_kinematics} "
        f"(e_h {cfg.hand_feature_dim}), object {cfg.obj_kinematics} (e_o {cfg.obj_feature_dim}), "
        f"visual {cfg.visual}, frames {cfg.n_frames}",
        f"heatmaps {cfg.heatmap_size}^3 × (21 joints + 1 object centre), SDF map "
        f"{cfg.feature_size}×{cfg.feature_size}×{cfg.visual_dim}, decoders {cfg.decoder_layers}"
        f"×{cfg.decoder_width}, recon_scale {cfg.recon_scale}, clamp {cfg.clamp}",
        "",
    ]
    if train is not None:
        lines += [*schedule_lines(train, cfg), ""]
    lines += ["modules:"]
    for name, mod in net.named_children():
        lines.append(f"  {name}: {type(mod).__name__}")
        for sub, child in mod.named_children():
            lines.append(f"    {sub}: {type(child).__name__} ({n_params(child):,} params)")
    lines += ["", "parameters:"]
    lines += [f"  {k:<36} {v:>12,}" for k, v in counts.items()]
    lines += ["", "FLOPs per sample (IK not counted):"]
    lines += [
        f"  {k:<36} {v / 1e6:>12.3f} M" if k == "per_point" else f"  {k:<36} {v / 1e9:>12.3f} G"
        for k, v in flops.items()
    ]
    return "\n".join(lines)
