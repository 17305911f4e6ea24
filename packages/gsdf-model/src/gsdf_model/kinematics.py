"""Kinematic features of query points (paper §3.2): hand K1/K2/K3, object Ko1/Ko2/Ko3.

Joint frames come from inverse kinematics on the 21 predicted keypoints (the hand module's
IK, `gsdf_data.hand`): joint i of MANO's 16-joint tree has the global rotation R_i from IK
and its origin t_i at the keypoint that sits on that joint, so G_i = [R_i | t_i] and a point
in joint i's frame is G_i⁻¹·x = R_iᵀ(x − t_i) (paper eq. 2).

Everything here works in the network frame ((x − wrist) · recon_scale / 2): the maps are
rigid, so expressing a scaled point in a joint frame equals scaling the expressed point.
"""

from __future__ import annotations

import torch
from torch import Tensor

# MANO's 16 joints (index, middle, little, ring, thumb; root→tip) → the 21 keypoints in the
# paper's order (wrist; thumb, index, middle, ring, little; root→tip).
MANO_TO_KEYPOINT = (0, 5, 6, 7, 9, 10, 11, 17, 18, 19, 13, 14, 15, 1, 2, 3)


class HandIK:
    """Keypoints (B,21,3) → global joint rotations (B,16,3,3), through `gsdf_data.hand`.

    The hand model (procedural by default, or MANO from `mano_path`) is loaded on first use.
    No gradient flows through IK: its input is the frozen pose branch's prediction.
    """

    def __init__(self, mano_path: str | None = None) -> None:
        self.mano_path = mano_path
        self._hand = None

    @torch.compiler.disable  # float64 IK with per-level loops: nothing to gain from compiling
    def __call__(self, keypoints: Tensor) -> Tensor:
        if self._hand is None:
            from gsdf_data.hand import load_hand

            self._hand = load_hand(self.mano_path)
        if self._hand.device != keypoints.device:  # the rest bones live on the hand model
            self._hand = self._hand.to(keypoints.device)
        with torch.no_grad(), torch.autocast(keypoints.device.type, enabled=False):
            rot = self._hand.ik(keypoints.detach().float()).global_rotmats
        return rot.to(keypoints)


def joint_frames(keypoints: Tensor, global_rotmats: Tensor) -> tuple[Tensor, Tensor]:
    """Rotations (B,16,3,3) and origins (B,16,3) of MANO's joint frames."""
    return global_rotmats, keypoints[:, list(MANO_TO_KEYPOINT)]


def to_frames(x: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """Points in each frame: x (B,N,3), R (B,F,3,3), t (B,F,3) → (B,N,F,3) = R_fᵀ(x − t_f)."""
    d = x[:, :, None, :] - t[:, None, :, :]  # (B,N,F,3)
    # (R^T d)_k = sum_j R_jk d_j
    return torch.einsum("bfjk,bnfj->bnfk", R, d)


def from_frames(local: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """Inverse of `to_frames`: local (B,N,F,3) → world points (B,N,F,3) = R_f·l + t_f."""
    return torch.einsum("bfkj,bnfj->bnfk", R, local) + t[:, None]


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
