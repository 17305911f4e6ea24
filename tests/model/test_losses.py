"""gsdf_model.losses against hand-computed values: the reference's per-coordinate MSE in
metres, its stage weights, and each decoder's loss on its own mesh's points."""

import pytest
import torch

from gsdf_model.config import get_preset
from gsdf_model.losses import stage1_loss, stage2_loss

CFG = get_preset("obman")


def _batch(b=2, n=6):
    g = torch.Generator().manual_seed(0)
    joints = torch.randn(b, 21, 3, generator=g) * 0.03 + torch.tensor([0.0, 0.0, 0.5])
    return {
        "joints": joints,
        "obj_center": joints[:, 0] + 0.05,
        "sdf_hand": torch.full((b, n), 0.001),
        "sdf_obj": torch.full((b, n), -0.001),
    }


def test_stage1_is_hand_only_with_per_coordinate_mse_in_metres():
    batch = _batch()
    out = {
        "joints": batch["joints"] + torch.tensor([0.01, 0.0, 0.0]),  # 1 cm off in x
        "obj_center": batch["obj_center"] + 1.0,  # ignored by the reference's pose stage
        "root_depth": batch["joints"][:, 0, 2] + 0.02,
    }
    terms = stage1_loss(CFG, batch, out)
    assert terms["joints"].item() == pytest.approx(0.01**2 / 3)
    assert terms["root_depth"].item() == pytest.approx(0.02**2)
    assert "obj_center" not in terms
    with_obj = stage1_loss(CFG.replace(pose_obj_weight=2.0), batch, out)
    assert with_obj["obj_center"].item() == pytest.approx(1.0)
    assert with_obj["total"].item() == pytest.approx(0.01**2 / 3 + 0.02**2 + 2.0)
    # a pure translation keeps every depth order: the ordinal term is 0
    assert terms["ordinal"].item() == 0
    assert terms["total"].item() == pytest.approx(0.01**2 / 3 + 0.02**2)


def test_stage2_weights_and_own_points_masks():
    batch = _batch()
    s = CFG.recon_scale / 2
    c = CFG.clamp
    # hand decoder: right on its own 3 points, off by 0.01 on the object's; object decoder
    # the other way round
    h = torch.tensor([0.001 * s] * 3 + [0.001 * s + 0.01] * 3).expand(2, 6)
    o = torch.tensor([-0.001 * s - 0.02] * 3 + [-0.001 * s] * 3).expand(2, 6)
    out = {"obj_center": batch["obj_center"] + 0.02, "sdf_hand_net": h, "sdf_obj_net": o}
    own = stage2_loss(CFG, batch, out, own_points=3)
    assert own["hand_sdf"].item() == pytest.approx(0.0, abs=1e-7)
    assert own["obj_sdf"].item() == pytest.approx(0.0, abs=1e-7)
    assert own["obj_pose"].item() == pytest.approx(0.02**2)
    assert own["total"].item() == pytest.approx(0.5 * 0.02**2, rel=1e-5)
    every = stage2_loss(CFG, batch, out)
    assert every["hand_sdf"].item() == pytest.approx(0.01 / 2, rel=1e-5)
    assert every["obj_sdf"].item() == pytest.approx(0.02 / 2, rel=1e-5)
    assert every["total"].item() == pytest.approx(0.5 * (0.02**2 + 0.005 + 0.01), rel=1e-5)
    # beyond the clamp on the target's side, nothing to learn
    far = {**out, "sdf_hand_net": torch.full((2, 6), 10 * c)}
    assert stage2_loss(CFG, batch, far)["hand_sdf"].item() == pytest.approx(c - 0.001 * s, rel=1e-5)
