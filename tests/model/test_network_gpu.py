"""GSDFNet on a CUDA device: bf16 autocast + channels_last training steps, torch.compile,
encode/query agreement with the CPU. Skipped with a reason where there is no GPU."""

import pytest
import torch

from gsdf_model.config import get_preset
from gsdf_model.describe import example_batch
from gsdf_model.network import GSDFNet

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device; none is available here")
    return torch.device("cuda")


@pytest.mark.parametrize("preset", ["tiny", "dexycb-video"])
def test_bf16_channels_last_training_step(cuda, preset):
    torch.manual_seed(0)
    cfg = get_preset(preset)
    net = GSDFNet(cfg).to(cuda).to(memory_format=torch.channels_last)
    batch = example_batch(cfg, 2, 500, cuda, frame_labels=cfg.is_video)  # video: every frame
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    for stage in (1, 2):
        if stage == 2:
            net.freeze_pose()
            opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
        net.train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = net(batch, stage=stage)
            losses = net.loss(batch, out, stage)
        assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    for m in net.pose_modules().values():
        assert all(p.grad is None for p in m.parameters())


def test_cuda_matches_cpu(cuda, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare in true fp32
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    net = GSDFNet(cfg).eval()
    batch = example_batch(cfg, 2, 200)
    with torch.no_grad():
        ref = net(batch, stage=2)
        net.to(cuda)
        out = net({k: v.to(cuda) for k, v in batch.items()}, stage=2)
    torch.testing.assert_close(out["sdf_hand"].cpu(), ref["sdf_hand"], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(out["joints"].cpu(), ref["joints"], atol=1e-4, rtol=1e-3)


def test_compiled_forward_matches_eager(cuda):
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    net = GSDFNet(cfg).to(cuda).eval()
    batch = example_batch(cfg, 2, 200, cuda)
    compiled = torch.compile(net)
    with torch.no_grad():
        ref = net(batch, stage=2)
        out = compiled(batch, stage=2)
    torch.testing.assert_close(out["sdf_obj"], ref["sdf_obj"], atol=1e-4, rtol=1e-3)
