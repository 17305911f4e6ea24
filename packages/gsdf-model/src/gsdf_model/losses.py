"""Training losses (paper §3.5) in the reference's forms and units.

Stage 1 (hand pose): per-coordinate mean squared joint error in metres + the ordinal depth
loss (joint pairs and bone pairs, camera axis + n_ordinal_views random views) + our
wrist-depth term (MSE, metres; the reference decodes at the GT wrist and has no such head).
The object centre is learned in stage 2 (the reference's ObMan/DexYCB pose stage is hand
only); `pose_obj_weight` > 0 adds it to stage 1.
Stage 2: 0.5·L_op (per-coordinate MSE of the object centre, metres) + 0.5·L_hsdf + 0.5·L_osdf,
the SDF terms L1 between predictions and ground truth clamped to ±clamp in network units
(see clamped_l1), each decoder on its own mesh's points while `own_points` is given.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gsdf_model.config import ModelConfig
from gsdf_model.pose import ordinal_loss, sample_ordinal_pairs, sample_view_directions


def mse(pred: Tensor, gt: Tensor) -> Tensor:
    """Mean over every coordinate of (pred − gt)², as torch.nn.MSELoss."""
    return (pred.float() - gt.to(pred).float()).pow(2).mean()


def stage1_loss(
    cfg: ModelConfig,
    batch: dict[str, Tensor],
    out: dict[str, Tensor],
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Pose-stage loss terms; 'total' is their weighted sum."""
    joints = mse(out["joints"], batch["joints"])
    obj = mse(out["obj_center"], batch["obj_center"]) if "obj_center" in out else None
    views = sample_view_directions(cfg.n_ordinal_views, out["joints"].device, generator)
    jp, bp = sample_ordinal_pairs(out["joints"].shape[1], generator)
    ordinal = ordinal_loss(out["joints"], batch["joints"].to(out["joints"]), views, jp, bp)
    root = mse(out["root_depth"], batch["joints"][:, 0, 2])
    total = joints + cfg.ordinal_weight * ordinal + cfg.root_depth_weight * root
    terms = {"joints": joints, "ordinal": ordinal, "root_depth": root}
    if cfg.pose_obj_weight > 0:
        total = total + cfg.pose_obj_weight * obj
        terms["obj_center"] = obj
    return {"total": total, **terms}


def clamped_l1(
    pred_net: Tensor, gt_metres: Tensor, cfg: ModelConfig, mask: Tensor | None = None
) -> Tensor:
    """Mean |clamp(pred) − clamp(gt)| in network units over the points where `mask` (B,N)
    holds (all when None); pred_net (B,N) network units, gt (B,N) metres.

    The value is DeepSDF's (and the reference's). Its gradient is not, in one case: a
    prediction beyond the clamp on the wrong side of the surface (sign opposite to the
    target's). There the plain clamp has zero gradient, so a decoder that starts out
    saturated (say every output > +clamp) would never learn its inside points; we pass the
    gradient straight through instead.
    """
    c = cfg.clamp
    gt = (gt_metres.float() * (cfg.recon_scale / 2.0)).clamp(-c, c)
    pred = pred_net.float()
    clamped = pred.clamp(-c, c)
    stuck = (pred.abs() > c) & (pred * gt < 0)
    clamped = torch.where(stuck, clamped + (pred - pred.detach()), clamped)
    err = (clamped - gt).abs()
    return err.mean() if mask is None else (err * mask).sum() / mask.sum().clamp_min(1)


def stage2_loss(
    cfg: ModelConfig,
    batch: dict[str, Tensor],
    out: dict[str, Tensor],
    own_points: int | None = None,
) -> dict[str, Tensor]:
    """Shape-stage loss terms: 0.5·L_op + 0.5·L_hsdf + 0.5·L_osdf (reference weights).

    own_points: when given, the first `own_points` SDF points of each sample were drawn
    around the hand and the rest around the object; the hand decoder's loss then uses only
    the former and the object decoder's only the latter (the reference's first 1201 epochs).
    """
    op = mse(out["obj_center"], batch["obj_center"])
    mask_h = mask_o = None
    if own_points is not None:
        n = out["sdf_hand_net"].shape[1]
        hand = (torch.arange(n, device=out["sdf_hand_net"].device) < own_points).float()
        mask_h, mask_o = (
            hand.expand(out["sdf_hand_net"].shape),
            (1 - hand).expand(out["sdf_obj_net"].shape),
        )
    hsdf = clamped_l1(out["sdf_hand_net"], batch["sdf_hand"], cfg, mask_h)
    osdf = clamped_l1(out["sdf_obj_net"], batch["sdf_obj"], cfg, mask_o)
    total = cfg.obj_pose_weight * op + cfg.hand_sdf_weight * hsdf + cfg.obj_sdf_weight * osdf
    return {"total": total, "obj_pose": op, "hand_sdf": hsdf, "obj_sdf": osdf}
