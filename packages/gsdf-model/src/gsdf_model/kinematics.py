"""Kinematic features of query points (paper §3.2): hand K1/K2/K3, object Ko1/Ko2/Ko3.

Joint frames (paper eq. 2, as the reference builds them): inverse kinematics on the 21
predicted keypoints gives each joint i of MANO's 16-joint tree its global rotation R_i;
forward kinematics of those rotations on the hand model's rest bone lengths (MANO's mean
shape with `--mano`, else the procedural hand), rooted at the wrist that anchors the SDF
frame, gives its origin t_i. The predicted bone lengths are not used. G_i = [R_i | t_i] and
a point in joint i's frame is G_i⁻¹·x = R_iᵀ(x − t_i).

Everything here works in the network frame ((x − wrist) · recon_scale / 2): the maps are
rigid, so expressing a scaled point in a joint frame equals scaling the expressed point.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gsdf_data.hand.kinematics import KEYPOINT_OF_MANO, PARENTS

# MANO's 16 joints (index, middle, little, ring, thumb; root→tip) → the 21 keypoints in the
# paper's order (wrist; thumb, index, middle, ring, little; root→tip).
MANO_TO_KEYPOINT = KEYPOINT_OF_MANO[:16]
# MANO's kinematic tree (design.md): parent of each of the 16 joints.
MANO_PARENTS = PARENTS


def hand_model_id(mano_path: str | None) -> str:
    """Which hand model's rest bones the joint frames use: "procedural", or "mano:" and the
    SHA-256 of the MANO file (checkpoints record it; a run never resumes on another hand)."""
    if mano_path is None:
        return "procedural"
    import hashlib
    from pathlib import Path

    return "mano:" + hashlib.sha256(Path(mano_path).read_bytes()).hexdigest()


def fk_origins(global_rotmats: Tensor, rest_joints: Tensor) -> Tensor:
    """Joint origins (B,16,3) of forward kinematics rooted at 0: each joint sits at its
    parent's origin plus the parent's global rotation applied to the rest bone between them.

    global_rotmats: (B,16,3,3); rest_joints: (16,3) rest-pose joint positions (only their
    differences, the bones, matter).
    """
    b = global_rotmats.shape[0]
    origins = [torch.zeros(b, 3, dtype=global_rotmats.dtype, device=global_rotmats.device)]
    for j in range(1, 16):
        p = MANO_PARENTS[j]
        bone = (rest_joints[j] - rest_joints[p]).to(global_rotmats)
        origins.append(origins[p] + global_rotmats[:, p] @ bone)
    return torch.stack(origins, 1)


class HandIK:
    """Keypoints (B,21,3) → joint frames: global rotations (B,16,3,3) from IK, origins
    (B,16,3) from FK of those rotations on the rest bones, relative to the wrist (metres).

    The hand model (procedural by default, or MANO from `mano_path`, mean shape) is loaded
    on first use. No gradient flows through IK: its input is the frozen pose branch's
    prediction. aim: "fk" (the reference: each template bone is aimed from its FK-placed
    parent at the predicted child) or "bone" (along the predicted parent → child bone); the
    two agree when the predicted bones have the template's lengths.
    """

    def __init__(self, mano_path: str | None = None, aim: str = "fk") -> None:
        if aim not in ("fk", "bone"):
            raise ValueError(f"aim must be 'fk' or 'bone', not {aim!r}")
        self.mano_path = mano_path
        self.aim = aim
        self._hand = None

    @torch.compiler.disable  # float64 IK with per-level loops: nothing to gain from compiling
    def __call__(self, keypoints: Tensor) -> tuple[Tensor, Tensor]:
        if self._hand is None:
            from gsdf_data.hand import load_hand

            # the reference's IK and FK run on its MANO layer, whose tips are manopth's
            # vertices (not ObMan's keypoint tips): they set the template's last bones
            self._hand = load_hand(self.mano_path, tips="manopth")
        if self._hand.device != keypoints.device:  # the rest bones live on the hand model
            self._hand = self._hand.to(keypoints.device)
        with torch.no_grad(), torch.autocast(keypoints.device.type, enabled=False):
            rot = self._hand.ik(keypoints.detach().float(), aim=self.aim).global_rotmats
            origins = fk_origins(rot, self._hand.joints_template)
        return rot.to(keypoints), origins.to(keypoints)


def to_frames(x: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """Points in each frame: x (B,N,3), R (B,F,3,3), t (B,F,3) → (B,N,F,3) = R_fᵀ(x − t_f)."""
    d = x[:, :, None, :] - t[:, None, :, :]  # (B,N,F,3)
    # (R^T d)_k = sum_j R_jk d_j
    return torch.einsum("bfjk,bnfj->bnfk", R, d)


def hand_features(x: Tensor, R: Tensor, t: Tensor, variant: str) -> Tensor:
    """Hand kinematic feature e_h.

    x: (B,N,3), R: (B,16,3,3), t: (B,16,3), all in the network frame →
    k1 (B,N,3) = x; k2 (B,N,6) = [x, x in the wrist frame]; k3 (B,N,51) = [x, x in all 16].
    """
    if variant == "k1":
        return x
    if variant == "k2":
        return torch.cat([x, to_frames(x, R[:, :1], t[:, :1])[:, :, 0]], dim=-1)
    if variant == "k3":
        return torch.cat([x, to_frames(x, R, t).flatten(2)], dim=-1)
    raise ValueError(f"unknown hand kinematic feature {variant!r}")


def obj_features(
    x: Tensor, obj_center: Tensor, joints: Tensor, R_wrist: Tensor, t_wrist: Tensor, variant: str
) -> Tensor:
    """Object kinematic feature e_o (paper eq. 5).

    x: (B,N,3); obj_center: (B,3); joints: (B,21,3); R_wrist: (B,3,3); t_wrist: (B,3), network
    frame → ko1 (B,N,3) = x; ko2 (B,N,6) = [x, x − c];
    ko3 (B,N,72) = [x, x − c, x − ψ_1 … x − ψ_21, x in the wrist frame].
    """
    if variant == "ko1":
        return x
    xoc = x - obj_center[:, None]
    if variant == "ko2":
        return torch.cat([x, xoc], dim=-1)
    if variant == "ko3":
        xj = (x[:, :, None] - joints[:, None]).flatten(2)
        xow = to_frames(x, R_wrist[:, None], t_wrist[:, None])[:, :, 0]
        return torch.cat([x, xoc, xj, xow], dim=-1)
    raise ValueError(f"unknown object kinematic feature {variant!r}")
