"""Rotations, forward kinematics, linear blend skinning and analytic inverse kinematics on
MANO's 16-joint tree. Batched torch, differentiable, device and dtype follow the inputs.

Joint order (MANO): 0 wrist, 1-3 index, 4-6 middle, 7-9 little, 10-12 ring, 13-15 thumb.
Keypoint order (paper): wrist; thumb, index, middle, ring, little, each root to tip; built
from the 16 joints plus 5 fingertips (MANO index 16-20 = thumb, index, middle, ring, little
tips) through `KEYPOINT_FROM_MANO`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
# 16 joints + tips (16 thumb, 17 index, 18 middle, 19 ring, 20 little) -> paper order
KEYPOINT_FROM_MANO: tuple[int, ...] = (
    0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20,
)  # fmt: skip
KEYPOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb_cmc",
    "thumb_mcp",
    "thumb_ip",
    "thumb_tip",
    *tuple(
        f"{finger}_{part}"
        for finger in ("index", "middle", "ring", "little")
        for part in ("mcp", "pip", "dip", "tip")
    ),
)
# Joints whose child is a fingertip, in tip order (thumb, index, middle, ring, little).
TIP_PARENTS: tuple[int, ...] = (15, 3, 6, 12, 9)


def _inverse(order: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(order)
    for k, m in enumerate(order):
        inv[m] = k
    return tuple(inv)


# MANO order (16 joints, then the 5 tips) -> index among the 21 keypoints (paper order).
KEYPOINT_OF_MANO: tuple[int, ...] = _inverse(KEYPOINT_FROM_MANO)
# Parent of each of the 21 keypoints, in paper order (the wrist is its own parent).
KEYPOINT_PARENTS: tuple[int, ...] = tuple(
    0 if m == 0 else KEYPOINT_OF_MANO[PARENTS[m] if m < 16 else TIP_PARENTS[m - 16]]
    for m in KEYPOINT_FROM_MANO
)
# First joint of each finger in tip order; the wrist's children.
FINGER_ROOTS: tuple[int, ...] = (13, 1, 4, 10, 7)
# Joints grouped by depth in the tree, so FK runs 4 batched steps instead of 16.
LEVELS: tuple[tuple[int, ...], ...] = (
    (0,),
    (1, 4, 7, 10, 13),
    (2, 5, 8, 11, 14),
    (3, 6, 9, 12, 15),
)


def _child_of() -> tuple[int, ...]:
    """For each joint 0..15, the index (0..20, MANO order) of the point its bone points to;
    the wrist's entry is the middle finger root (unused by IK, which handles the wrist)."""
    child = [4] * 16
    for j, p in enumerate(PARENTS):
        if p > 0:
            child[p] = j
    for k, j in enumerate(TIP_PARENTS):
        child[j] = 16 + k
    return tuple(child)


CHILD: tuple[int, ...] = _child_of()


def to_paper_order(joints16: torch.Tensor, tips5: torch.Tensor) -> torch.Tensor:
    """joints16 (..., 16, 3), tips5 (..., 5, 3) thumb..little -> keypoints (..., 21, 3)."""
    full = torch.cat([joints16, tips5], dim=-2)
    return full[..., list(KEYPOINT_FROM_MANO), :]


def from_paper_order(keypoints: torch.Tensor) -> torch.Tensor:
    """keypoints (..., 21, 3) paper order -> (..., 21, 3) MANO order (16 joints, 5 tips)."""
    return keypoints[..., list(KEYPOINT_OF_MANO), :]


def skew(v: torch.Tensor) -> torch.Tensor:
    """v (..., 3) -> cross-product matrices (..., 3, 3)."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape, 3)


def axis_angle_to_rotmat(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues: axis-angle (..., 3) -> rotation matrices (..., 3, 3); smooth at zero."""
    theta2 = (aa * aa).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    theta = torch.sqrt(theta2.clamp_min(1e-24))
    small = theta2 < 1e-8
    # sin(t)/t and (1-cos t)/t^2 with Taylor series near 0 for finite gradients
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-24))
    k = skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def rotmat_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi]."""
    # through the quaternion: stable for all angles
    q = rotmat_to_quaternion(R)
    w, xyz = q[..., :1], q[..., 1:]
    n = xyz.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(n, w)
    scale = torch.where(n > 1e-8, angle / n.clamp_min(1e-12), 2 / w.clamp_min(1e-12))
    return xyz * scale


def rotmat_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) as (w, x, y, z), w >= 0."""
    m = R.reshape(*R.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    # 4 q_i^2 for each component; build the quaternion from the largest (best conditioned)
    q_abs = torch.sqrt(
        torch.stack(
            [
                1 + m00 + m11 + m22,
                1 + m00 - m11 - m22,
                1 - m00 + m11 - m22,
                1 - m00 - m11 + m22,
            ],
            dim=-1,
        ).clamp_min(0)
    )
    rows = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], -1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], -1),
        ],
        dim=-2,
    )
    cands = rows / (2 * q_abs[..., None].clamp_min(0.1))
    best = q_abs.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def swing_rotation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The smallest rotation taking direction a (..., 3) to direction b (..., 3): (..., 3, 3).

    No twist about the bone. Undefined for exactly opposite directions (a 180-degree bend),
    which plausible hands never reach.
    """
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(eps)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(eps)
    v = torch.cross(a, b, dim=-1)
    c = (a * b).sum(-1)[..., None, None]
    k = skew(v)
    eye = torch.eye(3, dtype=a.dtype, device=a.device).expand_as(k)
    return eye + k + (k @ k) / (1 + c).clamp_min(eps)


def kabsch(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Rotation R (..., 3, 3) minimising sum |R src_i - dst_i|^2 over vectors src, dst
    (..., N, 3) (no centring: they are bone vectors from a shared origin). det R = +1."""
    H = src.transpose(-1, -2) @ dst  # (..., 3, 3)
    U, _, Vh = torch.linalg.svd(H)
    d = torch.det(Vh.transpose(-1, -2) @ U.transpose(-1, -2))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    return Vh.transpose(-1, -2) @ D @ U.transpose(-1, -2)


def forward_kinematics(
    rotmats: torch.Tensor, joints_rest: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kinematics on MANO's tree.

    rotmats: (B, 16, 3, 3) local rotations (joint 0 = global orientation);
    joints_rest: (B, 16, 3) or (16, 3) rest-pose joint positions.
    Returns posed joints (B, 16, 3) and global transforms (B, 16, 4, 4): rotation = the
    joint's global rotation, translation = its posed position (the wrist stays in place).
    """
    B = rotmats.shape[0]
    J = joints_rest.expand(B, 16, 3) if joints_rest.dim() == 2 else joints_rest
    parents = torch.tensor(PARENTS[1:], device=rotmats.device)
    offsets = J.clone()
    offsets[:, 1:] = J[:, 1:] - J[:, parents]
    Rg = [None] * 16
    tg = [None] * 16
    Rg[0], tg[0] = rotmats[:, 0], J[:, 0]
    for level in LEVELS[1:]:
        idx = list(level)
        par = [PARENTS[j] for j in idx]
        Rp = torch.stack([Rg[p] for p in par], 1)  # (B, L, 3, 3)
        tp = torch.stack([tg[p] for p in par], 1)
        R = Rp @ rotmats[:, idx]
        t = tp + (Rp @ offsets[:, idx, :, None])[..., 0]
        for k, j in enumerate(idx):
            Rg[j], tg[j] = R[:, k], t[:, k]
    Rg_t = torch.stack(Rg, 1)
    tg_t = torch.stack(tg, 1)
    T = torch.zeros(B, 16, 4, 4, dtype=rotmats.dtype, device=rotmats.device)
    T[..., :3, :3] = Rg_t
    T[..., :3, 3] = tg_t
    T[..., 3, 3] = 1
    return tg_t, T


def lbs(
    vertices: torch.Tensor,
    weights: torch.Tensor,
    transforms: torch.Tensor,
    joints_rest: torch.Tensor,
) -> torch.Tensor:
    """Linear blend skinning.

    vertices: (V, 3) shared or (B, V, 3) per-pose rest vertices (shaped, pose-corrected);
    weights: (V, 16); transforms: (B, 16, 4, 4) global joint transforms from
    `forward_kinematics`; joints_rest: (B, 16, 3) or (16, 3). Returns (B, V, 3), for shared
    vertices a non-contiguous view (use .reshape, or .contiguous() before .view).
    """
    B = transforms.shape[0]
    V = weights.shape[0]
    R = transforms[..., :3, :3]
    t = transforms[..., :3, 3] - (R @ joints_rest.expand(B, 16, 3)[..., None])[..., 0]
    A = torch.cat([R, t[..., None]], dim=-1)  # (B, 16, 3, 4): rest -> posed, per joint
    ones = torch.ones(*vertices.shape[:-1], 1, dtype=vertices.dtype, device=vertices.device)
    vh = torch.cat([vertices, ones], dim=-1)  # (V, 4) or (B, V, 4)
    if vh.dim() == 2:
        # out[b,v,c] = sum_(j,k) W[v,j] vh[v,k] A[b,j,c,k]: one GEMM with K = 64 and no
        # (B, V, 12) intermediate. Memory traffic, not arithmetic, bounds this on a CPU, so
        # the result stays the (B, V, 3) view of the GEMM's (V, B, 3) output (not contiguous).
        Q = (weights[:, :, None] * vh[:, None, :]).reshape(V, 64)
        XT = A.permute(1, 3, 0, 2).reshape(64, B * 3)
        return (Q @ XT).view(V, B, 3).transpose(0, 1)
    M = torch.matmul(weights, A.reshape(B, 16, 12)).view(B, V, 3, 4)
    return (M @ vh[..., None])[..., 0]


class IKResult(NamedTuple):
    """local_rotmats (B, 16, 3, 3): joint 0 = global orientation, others relative to the
    parent; global_rotmats (B, 16, 3, 3)."""

    local_rotmats: torch.Tensor
    global_rotmats: torch.Tensor


def inverse_kinematics(
    keypoints: torch.Tensor, template21: torch.Tensor, aim: str = "bone"
) -> IKResult:
    """Analytic IK from 21 keypoints (paper order) to 16 joint rotations (MANO tree).

    keypoints: (B, 21, 3) paper order; template21: (21, 3) or (B, 21, 3) the model's rest
    keypoints in the same order (its bone directions and lengths).
    The global rotation is the Kabsch fit of the 5 template wrist->finger-root bones to the
    target ones; every other joint gets the swing (no twist) that turns its template bone
    (joint -> child) onto the target bone, in the frame of its already-solved parent.
    aim="fk" turns each template bone towards the target child from where forward
    kinematics on the template bones put the joint (gSDF's `inverse_kinematics.py`), rather
    than along the target bone (parent to child): the two agree when the target bones have
    the template's lengths.
    Runs in float64 and returns the input dtype. FK of the result reproduces the keypoints
    exactly when the target bone lengths equal the template's (any pose of the same model);
    rotations equal the generating ones when those had no twist about the bones.
    """
    if aim not in ("bone", "fk"):
        raise ValueError(f"aim must be 'bone' or 'fk', not {aim!r}")
    dtype = keypoints.dtype
    X = from_paper_order(keypoints.double())  # (B, 21, 3) MANO order
    T = from_paper_order(template21.double())
    B = X.shape[0]
    T = T.expand(B, 21, 3)
    roots = list(FINGER_ROOTS)
    R0 = kabsch(T[:, roots] - T[:, :1], X[:, roots] - X[:, :1])
    Rg = [None] * 16
    Rl = [None] * 16
    Rg[0] = Rl[0] = R0
    # FK positions on the template bones, filled level by level (used by aim="fk")
    P = X.clone()
    P[:, roots] = X[:, :1] + ((T[:, roots] - T[:, :1]) @ R0.transpose(-1, -2))
    for level in LEVELS[1:]:
        idx = list(level)
        ch = [CHILD[j] for j in idx]
        Rp = torch.stack([Rg[PARENTS[j]] for j in idx], 1)  # (B, L, 3, 3)
        bone_t = T[:, ch] - T[:, idx]  # template bones, rest frame
        start = P[:, idx] if aim == "fk" else X[:, idx]
        bone_x = X[:, ch] - start  # target directions, world frame
        local_target = (Rp.transpose(-1, -2) @ bone_x[..., None])[..., 0]
        R = swing_rotation(bone_t, local_target)
        G = Rp @ R
        P[:, ch] = P[:, idx] + (G @ bone_t[..., None])[..., 0]
        for k, j in enumerate(idx):
            Rl[j], Rg[j] = R[:, k], G[:, k]
    return IKResult(torch.stack(Rl, 1).to(dtype), torch.stack(Rg, 1).to(dtype))
