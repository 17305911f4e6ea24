"""DDP through torchrun on CPU (gloo): two processes train the real tiny network for one
epoch per stage; rank 0 alone writes the checkpoint and the log; the ranks agree."""

import json
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from gsdf_model.train import load_checkpoint_file

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch.distributed as dist
    from gsdf_model.data import InMemoryShards
    from gsdf_model.train import TrainConfig, train

    rng = np.random.default_rng(0)
    K = np.array([[300.0, 0, 127.5], [0, 300.0, 127.5], [0, 0, 1]], np.float32)
    samples = []
    for i in range(8):
        c_h = np.array([0.0, 0.0, 0.5]) + rng.normal(0, 0.02, 3)
        c_o = c_h + np.array([0.06, 0.0, 0.0])
        unit = rng.uniform(-1, 1, (2000, 3))
        cam = unit * 0.12 + (c_h + c_o) / 2
        samples.append({
            "sample_id": f"d{i}", "seq_id": "d", "frame_idx": i,
            "image": rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), "K": K,
            "joints": (c_h + rng.normal(0, 0.03, (21, 3))).astype(np.float32),
            "obj_center": c_o.astype(np.float32),
            "norm_offset": ((c_h + c_o) / 2).astype(np.float32), "norm_scale": np.float32(0.12),
            "points": unit.astype(np.float32),
            "sdf_hand": ((np.linalg.norm(cam - c_h, axis=1) - 0.04) / 0.12).astype(np.float32),
            "sdf_obj": ((np.linalg.norm(cam - c_o, axis=1) - 0.03) / 0.12).astype(np.float32),
        })
    cfg = TrainConfig(pose_epochs=1, sdf_epochs=1, pose_batch_size=4, batch_size=4, lr=1e-3,
                      n_hand=64, n_obj=64,
                      augment=False, num_workers=0, log_every=1)
    s = train("tiny", sys.argv[1], sys.argv[1] + "/run", cfg, progress=False,
              shards=InMemoryShards(samples))
    print("RESULT", s["final_loss"], flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(script),
        str(tmp_path),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    losses = [float(x.split()[1]) for x in res.stdout.splitlines() if x.startswith("RESULT")]
    # both ranks report the same all-reduced epoch loss
    assert len(losses) == 2 and losses[0] == pytest.approx(losses[1])
    ckpt = load_checkpoint_file(tmp_path / "run")
    assert ckpt["epoch"] == 2 and ckpt["stage"] == 2
    assert not any(k.startswith("module.") for k in ckpt["model"])
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in recs if r["kind"] == "epoch"]
    assert epochs == [1, 2]  # written by rank 0 only
    # 8 samples over 2 ranks at batch 2: 2 steps per rank per epoch
    assert [r["step"] for r in recs if r["kind"] == "step"] == [0, 1, 0, 1]
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
