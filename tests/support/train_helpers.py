"""The trainer's stand-ins: a tiny network with GSDFNet's API and sphere samples whose SDFs
are exact, so that training runs in seconds (tests/model/test_train.py and the reliability
tests)."""

import numpy as np
import torch
from torch import nn

from gsdf_model.train import TrainConfig

K = np.array([[300.0, 0.0, 128.0], [0.0, 300.0, 128.0], [0.0, 0.0, 1.0]], dtype=np.float32)


class StandInNet(nn.Module):
    """The GSDFNet API (forward(batch, stage), loss, freeze_pose, encode, query) on a
    tiny pooled-image encoder: pose head → 21 joints + object centre, MLP SDF decoders."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.enc = nn.Sequential(
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 32), nn.ReLU()
        )
        self.pose = nn.Linear(32, 66)
        self.hand = nn.Sequential(nn.Linear(35, 32), nn.ReLU(), nn.Linear(32, 1))
        self.obj = nn.Sequential(nn.Linear(38, 32), nn.ReLU(), nn.Linear(32, 1))
        with torch.no_grad():
            self.pose.bias.copy_(torch.tensor([0.0, 0.0, 0.5] * 22))

    def freeze_pose(self) -> None:
        for p in self.pose.parameters():
            p.requires_grad_(False)

    def encode(self, image, K, wrist=None):
        z = self.enc(image)
        pose = self.pose(z).view(-1, 22, 3)
        joints, centre = pose[:, :21], pose[:, 21]
        w = joints[:, 0] if wrist is None else wrist
        return {"z": z, "joints": joints, "obj_center": centre, "wrist": w}

    def query(self, state, points):
        rel = points - state["wrist"][:, None]
        z = state["z"][:, None].expand(-1, points.shape[1], -1)
        h = self.hand(torch.cat([rel, z], -1))[..., 0]
        o = self.obj(torch.cat([rel, points - state["obj_center"][:, None], z], -1))[..., 0]
        return h, o

    def forward(self, batch, stage):
        state = self.encode(batch["image"], batch["K"], batch["joints"][:, 0])
        out = {"joints": state["joints"], "obj_center": state["obj_center"]}
        if stage == 2:
            out["sdf_hand"], out["sdf_obj"] = self.query(state, batch["points"])
        return out

    def loss(self, batch, out, stage, own_points=None):
        lj = ((out["joints"] - batch["joints"]) ** 2).sum(-1).mean()
        lo = ((out["obj_center"] - batch["obj_center"]) ** 2).sum(-1).mean()
        if stage == 1:
            return {"total": lj + lo, "joints": lj, "obj_center": lo}
        c = 0.05
        lh = (out["sdf_hand"].clamp(-c, c) - batch["sdf_hand"].clamp(-c, c)).abs().mean()
        ls = (out["sdf_obj"].clamp(-c, c) - batch["sdf_obj"].clamp(-c, c)).abs().mean()
        return {"total": lo + 0.5 * lh + 0.5 * ls, "sdf_hand": lh, "sdf_obj": ls}


def sample(rng, i):
    """A sphere 'hand' and 'object' at a random place; the image's colour encodes depth."""
    c_h = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), rng.uniform(0.4, 0.6)])
    c_o = c_h + np.array([0.06, 0.0, 0.0])
    n = 2000
    unit = rng.uniform(-1, 1, (n, 3))
    scale, offset = 0.12, (c_h + c_o) / 2
    cam = unit * scale + offset
    image = np.zeros((64, 64, 3), np.uint8)
    image[..., 0] = int((c_h[2] - 0.4) / 0.2 * 255)
    image[..., 1] = int((c_h[0] + 0.05) / 0.1 * 255)
    image[..., 2] = int((c_h[1] + 0.05) / 0.1 * 255)
    return {
        "sample_id": f"s{i:03d}",
        "image": image,
        "K": (K * np.array([[0.25], [0.25], [1.0]])).astype(np.float32),
        "joints": (c_h + np.zeros((21, 3))).astype(np.float32),
        "obj_center": c_o.astype(np.float32),
        "norm_offset": offset.astype(np.float32),
        "norm_scale": np.float32(scale),
        "points": unit.astype(np.float32),
        "sdf_hand": ((np.linalg.norm(cam - c_h, axis=1) - 0.04) / scale).astype(np.float32),
        "sdf_obj": ((np.linalg.norm(cam - c_o, axis=1) - 0.03) / scale).astype(np.float32),
        "seq_id": "q",
        "frame_idx": i,
    }


CFG = TrainConfig(
    pose_epochs=2,
    sdf_epochs=3,
    pose_batch_size=4,
    batch_size=4,
    lr=3e-3,
    pose_lr_halve_every=1,
    lr_halve_every=2,
    n_hand=64,
    n_obj=64,
    num_workers=0,
    log_every=1,
    augment=False,
)
