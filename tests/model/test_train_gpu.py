"""The trainer on CUDA: mixed precision (bf16, and fp16 with loss scaling) and a short
two-stage run of the real tiny network. Skipped with a reason when there is no GPU."""

import dataclasses

import numpy as np
import pytest
import torch

from gsdf_model.data import InMemoryShards
from gsdf_model.train import TrainConfig, load_checkpoint_file, model_from_checkpoint, train

pytestmark = pytest.mark.gpu


def spheres(n_samples=16, seed=0):
    rng = np.random.default_rng(seed)
    K = np.array([[300.0, 0, 127.5], [0, 300.0, 127.5], [0, 0, 1]], np.float32)
    out = []
    for i in range(n_samples):
        c_h = np.array([0.0, 0.0, 0.5]) + rng.normal(0, 0.02, 3)
        c_o = c_h + np.array([0.06, 0.0, 0.0])
        unit = rng.uniform(-1, 1, (4000, 3))
        scale, offset = 0.12, (c_h + c_o) / 2
        cam = unit * scale + offset
        out.append(
            {
                "sample_id": f"g{i}",
                "image": rng.integers(0, 255, (256, 256, 3), dtype=np.uint8),
                "K": K,
                "joints": (c_h + rng.normal(0, 0.03, (21, 3))).astype(np.float32),
                "obj_center": c_o.astype(np.float32),
                "norm_offset": offset.astype(np.float32),
                "norm_scale": np.float32(scale),
                "points": unit.astype(np.float32),
                "sdf_hand": ((np.linalg.norm(cam - c_h, axis=1) - 0.04) / scale).astype(np.float32),
                "sdf_obj": ((np.linalg.norm(cam - c_o, axis=1) - 0.03) / scale).astype(np.float32),
                "seq_id": "g",
                "frame_idx": i,
            }
        )
    return InMemoryShards(out)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_short_amp_training_on_cuda(tmp_path, amp):
    cfg = TrainConfig(
        pose_epochs=2,
        sdf_epochs=3,
        batch_size=8,
        lr=1e-3,
        lr_halve_every=100,
        n_hand=256,
        n_obj=256,
        num_workers=0,
        amp=amp,
        log_every=1,
    )
    summary = train(
        "tiny", tmp_path, tmp_path / "run", cfg, device="cuda", progress=False, shards=spheres()
    )
    assert np.isfinite(summary["final_loss"])
    ckpt = load_checkpoint_file(tmp_path / "run")
    assert ckpt["epoch"] == 5 and ckpt["train_config"]["amp"] == amp
    assert (ckpt["scaler"] is not None) == (amp == "fp16")
    net, _ = model_from_checkpoint(ckpt)
    assert all(v.device.type == "cpu" for v in net.state_dict().values())
    # resume on CUDA after a longer schedule continues from epoch 5
    more = dataclasses.replace(cfg, sdf_epochs=4)
    s2 = train(
        "tiny", tmp_path, tmp_path / "run", more, device="cuda", progress=False, shards=spheres()
    )
    assert s2["start_epoch"] == 5 and load_checkpoint_file(tmp_path / "run")["epoch"] == 6


def test_autocast_runs_the_network_in_bf16():
    from gsdf_model.config import get_preset
    from gsdf_model.network import GSDFNet

    net = GSDFNet(get_preset("tiny")).to("cuda")
    x = torch.rand(2, 3, 256, 256, device="cuda")
    K = torch.tensor([[300.0, 0, 127.5], [0, 300.0, 127.5], [0, 0, 1]], device="cuda").expand(
        2, 3, 3
    )
    with torch.autocast("cuda", dtype=torch.bfloat16):
        feats = net.backbones[next(iter(net.backbones))](x)
    assert feats.dtype == torch.bfloat16
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        state = net.encode(x, K)
        h, o = net.query(state, torch.rand(2, 100, 3, device="cuda") * 0.1 + 0.45)
    assert torch.isfinite(h.float()).all() and torch.isfinite(o.float()).all()
