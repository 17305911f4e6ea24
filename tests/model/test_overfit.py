"""The tiny preset overfits one batch: stage-2 SDF L1 falls below 10% of its initial value."""

import time

import torch

from gsdf_model.config import get_preset
from gsdf_model.describe import example_batch
from gsdf_model.network import GSDFNet


def sphere_batch(cfg, b=2, n=256, seed=0):
    """Analytic targets: the hand a 3 cm sphere at the wrist, the object a 4 cm sphere at the
    object centre; points near both surfaces (within the clamp band and beyond)."""
    g = torch.Generator().manual_seed(seed)
    batch = example_batch(cfg, b, n)
    wrist, center = batch["joints"][:, 0], batch["obj_center"]
    center = center + torch.tensor([0.03, 0.0, 0.0])
    d = torch.randn(b, n, 3, generator=g)
    d = d / d.norm(dim=-1, keepdim=True)
    r = torch.rand(b, n, 1, generator=g) * 0.06
    half = n // 2
    pts = torch.cat(
        [wrist[:, None] + d[:, :half] * r[:, :half], center[:, None] + d[:, half:] * r[:, half:]], 1
    )
    batch["points"] = pts
    batch["obj_center"] = center
    batch["sdf_hand"] = (pts - wrist[:, None]).norm(dim=-1) - 0.03
    batch["sdf_obj"] = (pts - center[:, None]).norm(dim=-1) - 0.04
    return batch


def test_tiny_overfits_one_batch():
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    net = GSDFNet(cfg)  # the hand module's IK, as in training
    batch = sphere_batch(cfg)
    net.freeze_pose()
    net.train()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)

    def sdf_l1(losses):
        return float((losses["hand_sdf"] + losses["obj_sdf"]).detach())

    t0 = time.perf_counter()
    history = []
    for _ in range(200):
        losses = net.loss(batch, net(batch, stage=2), stage=2)
        history.append(sdf_l1(losses))
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        final = sdf_l1(net.loss(batch, net(batch, stage=2), stage=2))
    elapsed = time.perf_counter() - t0
    print(f"SDF L1 {history[0]:.4f} -> {final:.5f} in {elapsed:.1f} s")
    assert final < 0.1 * history[0], (history[0], history[::50], final)


def test_tiny_pose_stage_overfits_one_batch():
    """Stage 1: joint, object-centre and wrist-depth errors fall below 10% of their start
    (with the object centre in stage 1, an option; the reference's pose stage is hand only)."""
    torch.manual_seed(0)
    cfg = get_preset("tiny", pose_obj_weight=1.0)
    net = GSDFNet(cfg)
    batch = example_batch(cfg, 2, 8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    first = None
    for _ in range(120):
        losses = net.loss(batch, net(batch, stage=1), stage=1)
        first = first or {k: float(v.detach()) for k, v in losses.items()}
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        final = {k: float(v) for k, v in net.loss(batch, net(batch, stage=1), stage=1).items()}
        state = net.encode(batch["image"], batch["K"], wrist=None)  # predicted wrist
    for k in ("joints", "obj_center", "root_depth", "total"):
        assert final[k] < 0.1 * first[k], (k, first[k], final[k])
    assert (state.wrist - batch["joints"][:, 0]).norm(dim=-1).max() < 0.01  # metres
