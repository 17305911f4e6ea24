"""Kinematics on MANO's tree, checked against a naive NumPy reference, the rest pose, the
tree structure and the IK round trip."""

import itertools

import numpy as np
import pytest
import torch

from gsdf_data.hand import KEYPOINT_NAMES, PARENTS, load_hand
from gsdf_data.hand.kinematics import (
    KEYPOINT_FROM_MANO,
    axis_angle_to_rotmat,
    forward_kinematics,
    from_paper_order,
    kabsch,
    lbs,
    rotmat_to_axis_angle,
    swing_rotation,
    to_paper_order,
)
from gsdf_data.hand.poses import random_rotations

torch.set_default_dtype(torch.float32)


@pytest.fixture(scope="module")
def hand():
    return load_hand(None, dtype=torch.float64)


def descendants(j: int) -> set[int]:
    out = set()
    for k, p in enumerate(PARENTS):
        if p >= 0 and (p == j or p in out):
            out.add(k)
    return out


def naive_fk(R: np.ndarray, J: np.ndarray) -> np.ndarray:
    """One pose, 4x4 products joint by joint: R (16, 3, 3), J (16, 3) -> G (16, 4, 4)."""
    G = np.zeros((16, 4, 4))
    for j in range(16):
        local = np.eye(4)
        local[:3, :3] = R[j]
        local[:3, 3] = J[j] - (J[PARENTS[j]] if PARENTS[j] >= 0 else 0)
        G[j] = local if PARENTS[j] < 0 else G[PARENTS[j]] @ local
    return G


def test_constants():
    assert PARENTS == (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
    assert KEYPOINT_FROM_MANO == (
        0,
        13,
        14,
        15,
        16,
        1,
        2,
        3,
        17,
        4,
        5,
        6,
        18,
        10,
        11,
        12,
        19,
        7,
        8,
        9,
        20,
    )
    assert len(KEYPOINT_NAMES) == 21 and KEYPOINT_NAMES[4] == "thumb_tip"
    assert KEYPOINT_NAMES[12] == "middle_tip" and KEYPOINT_NAMES[20] == "little_tip"
    x = torch.randn(3, 21, 3)
    assert torch.equal(to_paper_order(from_paper_order(x)[:, :16], from_paper_order(x)[:, 16:]), x)


def test_rotation_helpers():
    g = torch.Generator().manual_seed(0)
    aa = torch.randn(500, 3, generator=g, dtype=torch.float64) * 1.2
    R = axis_angle_to_rotmat(aa)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(R @ R.transpose(-1, -2), eye.expand_as(R), atol=1e-12)
    assert torch.allclose(torch.det(R), torch.ones(500, dtype=torch.float64), atol=1e-12)
    # hand-computed: 90 degrees about z takes x to y
    Rz = axis_angle_to_rotmat(torch.tensor([0.0, 0.0, np.pi / 2], dtype=torch.float64))
    assert torch.allclose(Rz @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                          torch.tensor([0.0, 1, 0], dtype=torch.float64), atol=1e-12)  # fmt: skip
    assert torch.allclose(axis_angle_to_rotmat(rotmat_to_axis_angle(R)), R, atol=1e-10)
    a, b = torch.randn(2, 200, 3, generator=g, dtype=torch.float64)
    S = swing_rotation(a, b)
    moved = (S @ a[..., None])[..., 0]
    assert torch.allclose(
        moved / moved.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True), atol=1e-10
    )
    # a swing has no component about a: its axis is perpendicular to a
    axis = rotmat_to_axis_angle(S)
    assert (axis * a).sum(-1).abs().max() < 1e-9
    src = torch.randn(50, 5, 3, generator=g, dtype=torch.float64)
    Rt = axis_angle_to_rotmat(torch.randn(50, 3, generator=g, dtype=torch.float64))
    assert torch.allclose(kabsch(src, src @ Rt.transpose(-1, -2)), Rt, atol=1e-10)


def test_fk_matches_naive_reference(hand):
    rng = np.random.default_rng(1)
    B = 8
    R = axis_angle_to_rotmat(torch.as_tensor(rng.normal(0, 0.6, (B, 16, 3))))
    J = hand.joints_template
    joints, T = forward_kinematics(R, J)
    for b in range(B):
        G = naive_fk(R[b].numpy(), J.numpy())
        np.testing.assert_allclose(T[b].numpy(), G, atol=1e-12)
        np.testing.assert_allclose(joints[b].numpy(), G[:, :3, 3], atol=1e-12)


def test_lbs_matches_naive_reference(hand):
    rng = np.random.default_rng(2)
    R = axis_angle_to_rotmat(torch.as_tensor(rng.normal(0, 0.5, (2, 16, 3))))
    J = hand.joints_template
    _, T = forward_kinematics(R, J)
    v = lbs(hand.v_template, hand.weights, T, J)
    # the per-pose vertex path (shape / pose blend shapes) agrees with the shared one
    v_batched = lbs(hand.v_template.expand(2, -1, -1), hand.weights, T, J.expand(2, -1, -1))
    assert torch.allclose(v, v_batched, atol=1e-12)
    W = hand.weights.numpy()
    for b in range(2):
        G = naive_fk(R[b].numpy(), J.numpy())
        for i in rng.choice(hand.num_vertices, 50, replace=False):
            ref = np.zeros(3)
            for j in np.nonzero(W[i])[0]:
                ref += W[i, j] * (
                    G[j, :3, :3] @ (hand.v_template[i].numpy() - J[j].numpy()) + G[j, :3, 3]
                )
            np.testing.assert_allclose(v[b, i].numpy(), ref, atol=1e-12)


def test_rest_pose_is_the_template(hand):
    out = hand(global_orient=torch.zeros(2, 3), finger_pose=torch.zeros(2, 45))
    assert torch.allclose(out.joints, hand.joints_template.expand(2, 16, 3), atol=1e-12)
    assert torch.allclose(out.vertices, hand.v_template.expand(2, -1, 3), atol=1e-12)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(out.transforms[..., :3, :3], eye.expand(2, 16, 3, 3))
    # LBS with identity pose returns the (shaped) template
    betas = torch.tensor([[1.0, -2.0] + [0.0] * 8], dtype=torch.float64)
    v_shaped, J_shaped, _ = hand.shaped(betas, 1)
    out = hand(betas=betas)
    assert torch.allclose(out.vertices, v_shaped, atol=1e-12)
    assert torch.allclose(out.joints, J_shaped, atol=1e-12)
    assert not torch.allclose(v_shaped, hand.v_template)


@pytest.mark.parametrize("j", [0, 1, 2, 4, 9, 13, 14, 15])
def test_rotating_a_joint_moves_only_its_descendants(hand, j):
    R = torch.eye(3, dtype=torch.float64).repeat(1, 16, 1, 1)
    R[0, j] = axis_angle_to_rotmat(torch.tensor([0.3, -0.5, 0.4], dtype=torch.float64))
    rest = hand.forward_rotmats(torch.eye(3, dtype=torch.float64).repeat(1, 16, 1, 1))
    out = hand.forward_rotmats(R)
    desc = descendants(j)
    moved = (out.joints - rest.joints).norm(dim=-1)[0]
    for k in range(16):
        if k in desc:
            assert moved[k] > 1e-3, (j, k)
        else:
            assert moved[k] < 1e-12, (j, k)
    # skin: vertices with no weight on j or its descendants stay put, the others move
    W = hand.weights
    influence = W[:, [j, *sorted(desc)]].sum(1)
    dv = (out.vertices - rest.vertices).norm(dim=-1)[0]
    if j != 0:  # (everything follows the wrist)
        assert dv[influence == 0].max() < 1e-12
    assert dv[influence > 0.5].mean() > 1e-3


def test_ik_round_trip_1000_plausible_poses(hand):
    """FK -> keypoints -> IK -> FK keypoints agree to 1e-5 m for 1,000 sampled grasp-like
    poses under random global rotations. (Keypoints round-trip for any pose whose bone
    lengths are the model's; the joint *rotations* are only recovered when the generating
    rotations have no twist about the bones, see the next test.) The global rotation is
    recovered exactly."""
    rng = np.random.default_rng(3)
    n = 1000
    go = torch.as_tensor(random_rotations(n, rng), dtype=torch.float64)
    fp = torch.as_tensor(hand.sample_poses(n, rng), dtype=torch.float64)
    transl = torch.as_tensor(rng.normal(0, 0.2, (n, 3)))
    rot = hand.pose_to_rotmats(go, fp)
    out = hand.forward_rotmats(rot, transl=transl, skin=False)
    ik = hand.ik(out.keypoints)
    back = hand.forward_rotmats(ik.local_rotmats, transl=transl, skin=False)
    err = (back.keypoints - out.keypoints).norm(dim=-1)
    assert err.max() < 1e-5, err.max()
    assert (ik.global_rotmats[:, 0] - axis_angle_to_rotmat(go)).abs().max() < 1e-9
    # float32 keypoints still round-trip to 1e-5 m (IK runs in float64 inside)
    ik32 = hand.ik(out.keypoints.float())
    assert ik32.local_rotmats.dtype == torch.float32
    back32 = hand.forward_rotmats(ik32.local_rotmats.double(), transl=transl, skin=False)
    assert (back32.keypoints - out.keypoints).norm(dim=-1).max() < 1e-5


def test_ik_recovers_twist_free_rotations(hand):
    """Each finger joint rotated about an axis perpendicular to its rest bone (a pure swing):
    IK returns exactly those local rotations."""
    rng = np.random.default_rng(4)
    n = 200
    rest = from_paper_order(hand.rest_keypoints()[0]).numpy()
    child = {j: j + 1 for j in range(16)}
    child.update({3: 17, 6: 18, 9: 20, 12: 19, 15: 16})
    aa = np.zeros((n, 16, 3))
    aa[:, 0] = random_rotations(n, rng)
    for j in range(1, 16):
        bone = rest[child[j]] - rest[j]
        axis = np.cross(bone, rng.normal(size=(n, 3)))
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
        aa[:, j] = axis * rng.uniform(-1.0, 1.0, (n, 1))
    R = axis_angle_to_rotmat(torch.as_tensor(aa))
    out = hand.forward_rotmats(R, skin=False)
    ik = hand.ik(out.keypoints)
    assert (ik.local_rotmats - R).abs().max() < 1e-9


def test_ik_is_differentiable(hand):
    rng = np.random.default_rng(5)
    out = hand(global_orient=torch.as_tensor(random_rotations(3, rng), dtype=torch.float64),
               finger_pose=torch.as_tensor(hand.sample_poses(3, rng), dtype=torch.float64))  # fmt: skip
    kp = out.keypoints.clone().requires_grad_(True)
    ik = hand.ik(kp)
    loss = hand.forward_rotmats(ik.local_rotmats).vertices.square().sum()
    (grad,) = torch.autograd.grad(loss, kp)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # agrees with a finite difference along a random direction
    d = torch.as_tensor(rng.normal(size=kp.shape))
    eps = 1e-6

    def f(x):
        return hand.forward_rotmats(hand.ik(x).local_rotmats).vertices.square().sum()

    with torch.no_grad():
        fd = (f(out.keypoints + eps * d) - f(out.keypoints - eps * d)) / (2 * eps)
    assert torch.allclose((grad * d).sum(), fd, rtol=1e-4)


def test_float32_batch_and_device_argument():
    hand = load_hand(None, device="cpu")
    out = hand(global_orient=torch.zeros(4, 3), finger_pose=torch.zeros(4, 45))
    assert out.vertices.dtype == torch.float32 and out.vertices.shape == (4, hand.num_vertices, 3)
    assert out.keypoints.shape == (4, 21, 3) and out.transforms.shape == (4, 16, 4, 4)
    np_out = hand.forward_numpy(global_orient=np.zeros((1, 3)), finger_pose=np.zeros((1, 45)))
    assert isinstance(np_out.vertices, np.ndarray) and np_out.vertices.shape == (
        1,
        hand.num_vertices,
        3,
    )


def test_keypoint_orders_are_derived_and_name_the_right_parents():
    from gsdf_data.hand.kinematics import (
        KEYPOINT_FROM_MANO,
        KEYPOINT_NAMES,
        KEYPOINT_OF_MANO,
        KEYPOINT_PARENTS,
    )

    assert [KEYPOINT_FROM_MANO[KEYPOINT_OF_MANO[m]] for m in range(21)] == list(range(21))
    parent = {KEYPOINT_NAMES[k]: KEYPOINT_NAMES[p] for k, p in enumerate(KEYPOINT_PARENTS)}
    chain = {"thumb": ("cmc", "mcp", "ip", "tip")}
    chain |= {f: ("mcp", "pip", "dip", "tip") for f in ("index", "middle", "ring", "little")}
    assert parent["wrist"] == "wrist"
    for finger, parts in chain.items():
        assert parent[f"{finger}_{parts[0]}"] == "wrist"
        for a, b in itertools.pairwise(parts):
            assert parent[f"{finger}_{b}"] == f"{finger}_{a}"
