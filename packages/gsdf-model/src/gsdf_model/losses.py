"""Training losses (paper §3.5), all computed in the network's units.

Lengths are scaled by recon_scale/2 before any loss, so pose and SDF terms share units.
Stage 1: L_hp (mean squared joint error) + L2 on the object centre + ordinal depth loss over
the camera axis and n_ordinal_views random views + L1 on the predicted wrist depth.
Stage 2: L_op + 0.5·L_hsdf + 0.5·L_osdf, SDF terms L1 between predictions and ground truth
clamped to ±clamp (see clamped_l1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gsdf_model.config import ModelConfig
from gsdf_model.pose import ordinal_loss, sample_view_directions


def stage1_loss(
    cfg: ModelConfig,
    batch: dict[str, Tensor],
    out: dict[str, Tensor],
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Pose-stage loss terms; 'total' is their weighted sum."""
    s = cfg.recon_scale / 2.0
    gt_j, pred_j = batch["joints"].to(out["joints"]) * s, out["joints"] * s
    joints = ((pred_j - gt_j) ** 2).sum(-1).mean()
    obj = (
        ((out["obj_center"] - batch["obj_center"].to(out["obj_center"])) * s).pow(2).sum(-1).mean()
    )
    views = sample_view_directions(cfg.n_ordinal_views, pred_j.device, generator)
    ordinal = ordinal_loss(pred_j, gt_j, views)
    root = ((out["root_depth"] - batch["joints"][:, 0, 2].to(out["root_depth"])) * s).abs().mean()
    total = joints + obj + cfg.ordinal_weight * ordinal + cfg.root_depth_weight * root
    return {
        "total": total,
        "joints": joints,
        "obj_center": obj,
        "ordinal": ordinal,
        "root_depth": root,
    }


def clamped_l1(pred_net: Tensor, gt_metres: Tensor, cfg: ModelConfig) -> Tensor:
    """Mean |clamp(pred) − clamp(gt)| in network units; pred_net (B,N) network units, gt metres.

    The value is DeepSDF's. Its gradient is not, in one case: a prediction beyond the clamp
    on the wrong side of the surface (sign opposite to the target's). There the plain clamp
    has zero gradient, so a decoder that starts out saturated (say every output > +clamp)
    would never learn its inside points; we pass the gradient straight through instead.
    """
    c = cfg.clamp
    gt = (gt_metres.float() * (cfg.recon_scale / 2.0)).clamp(-c, c)
    pred = pred_net.float()
    clamped = pred.clamp(-c, c)
    stuck = (pred.abs() > c) & (pred * gt < 0)
    clamped = torch.where(stuck, clamped + (pred - pred.detach()), clamped)
    return (clamped - gt).abs().mean()


def stage2_loss(
    cfg: ModelConfig, batch: dict[str, Tensor], out: dict[str, Tensor]
) -> dict[str, Tensor]:
    """Shape-stage loss terms: L_op + 0.5·L_hsdf + 0.5·L_osdf."""
    s = cfg.recon_scale / 2.0
    op = ((out["obj_center"] - batch["obj_center"].to(out["obj_center"])) * s).pow(2).sum(-1).mean()
    hsdf = clamped_l1(out["sdf_hand_net"], batch["sdf_hand"], cfg)
    osdf = clamped_l1(out["sdf_obj_net"], batch["sdf_obj"], cfg)
    total = cfg.obj_pose_weight * op + cfg.hand_sdf_weight * hsdf + cfg.obj_sdf_weight * osdf
    return {"total": total, "obj_pose": op, "hand_sdf": hsdf, "obj_sdf": osdf}
