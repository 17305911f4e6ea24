"""Kinematic features: points expressed in joint frames invert back; feature layouts; the
hand module's IK gives frames in which each bone is rigid."""

import math

import torch

from gsdf_data.hand import KEYPOINT_FROM_MANO, load_hand
from gsdf_data.hand import PARENTS as HAND_PARENTS
from gsdf_model.kinematics import (
    MANO_TO_KEYPOINT,
    HandIK,
    fk_origins,
    hand_features,
    hand_model_id,
    obj_features,
    to_frames,
)

PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)  # design.md


def random_rotations(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    d = torch.sign(torch.linalg.det(q))
    return q * d[:, None, None]  # proper rotations


def frames(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    R = random_rotations(b * 16, seed).reshape(b, 16, 3, 3)
    t = torch.randn(b, 16, 3, generator=g, dtype=torch.float64)
    return R, t


def test_point_in_joint_frame_inverts_back():
    R, t = frames()
    x = torch.randn(2, 50, 3, dtype=torch.float64)
    local = to_frames(x, R, t)
    assert local.shape == (2, 50, 16, 3)
    world = torch.einsum("bfkj,bnfj->bnfk", R, local) + t[:, None]  # R_f l + t_f
    torch.testing.assert_close(world, x[:, :, None].expand(-1, -1, 16, -1))
    # distances to the joint are kept (rigid map), the joint itself maps to the origin
    torch.testing.assert_close(local.norm(dim=-1), (x[:, :, None] - t[:, None]).norm(dim=-1))
    torch.testing.assert_close(
        to_frames(t, R, t).diagonal(dim1=1, dim2=2).transpose(1, 2),
        torch.zeros(2, 16, 3, dtype=torch.float64),
    )


def test_to_frames_by_hand():
    # joint frame rotated 90° about z, origin (1, 2, 3): world (1, 3, 3) is local +x
    c, s = math.cos(math.pi / 2), math.sin(math.pi / 2)
    R = torch.tensor([[[[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]]])
    t = torch.tensor([[[1.0, 2.0, 3.0]]])
    x = torch.tensor([[[1.0, 3.0, 3.0], [0.0, 2.0, 5.0]]])
    local = to_frames(x, R, t)[:, :, 0]
    torch.testing.assert_close(
        local, torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 2.0]]]), atol=1e-6, rtol=0
    )


def test_hand_feature_layouts():
    R, t = frames()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    assert hand_features(x, R, t, "k1").shape == (2, 7, 3)
    k2 = hand_features(x, R, t, "k2")
    k3 = hand_features(x, R, t, "k3")
    assert k2.shape == (2, 7, 6) and k3.shape == (2, 7, 51)
    torch.testing.assert_close(k2[..., :3], x)
    torch.testing.assert_close(k3[..., :6], k2)  # wrist frame first
    # joint 9's slot holds x in joint 9's frame; map it back
    local9 = k3[..., 3 + 9 * 3 : 3 + 10 * 3]
    back = (R[:, None, 9] @ local9[..., None])[..., 0] + t[:, None, 9]
    torch.testing.assert_close(back, x)


def test_object_feature_layouts():
    R, t = frames()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    c = torch.randn(2, 3, dtype=torch.float64)
    j = torch.randn(2, 21, 3, dtype=torch.float64)
    assert obj_features(x, c, j, R[:, 0], t[:, 0], "ko1").shape == (2, 5, 3)
    ko2 = obj_features(x, c, j, R[:, 0], t[:, 0], "ko2")
    torch.testing.assert_close(ko2, torch.cat([x, x - c[:, None]], -1))
    ko3 = obj_features(x, c, j, R[:, 0], t[:, 0], "ko3")
    assert ko3.shape == (2, 5, 72)
    torch.testing.assert_close(ko3[..., :6], ko2)
    torch.testing.assert_close(ko3[..., 6 + 3 * 20 : 6 + 3 * 21], x - j[:, None, 20])
    wrist = ko3[..., 69:]
    torch.testing.assert_close((R[:, None, 0] @ wrist[..., None])[..., 0] + t[:, None, 0], x)


def test_keypoint_map_follows_the_tree():
    # paper order: wrist 0; thumb 1-4, index 5-8, middle 9-12, ring 13-16, little 17-20
    assert MANO_TO_KEYPOINT[0] == 0
    for j, p in enumerate(PARENTS):
        if p > 0:  # a joint's keypoint is the next one along its parent's finger
            assert MANO_TO_KEYPOINT[j] == MANO_TO_KEYPOINT[p] + 1
        elif p == 0:  # finger roots: index, middle, little, ring, thumb (MANO order)
            assert MANO_TO_KEYPOINT[j] in (1, 5, 9, 13, 17)
    assert sorted(MANO_TO_KEYPOINT[j] for j in (1, 4, 7, 10, 13)) == [1, 5, 9, 13, 17]
    assert [MANO_TO_KEYPOINT[j] for j in (1, 4, 7, 10, 13)] == [5, 9, 17, 13, 1]


def test_keypoint_map_matches_hand_module():
    assert tuple(KEYPOINT_FROM_MANO.index(m) for m in range(16)) == MANO_TO_KEYPOINT
    assert tuple(HAND_PARENTS) == PARENTS


def test_bones_are_rigid_in_ik_joint_frames():
    """Pose the hand, run the network's IK on its keypoints: in each joint's frame the bone to
    its child is the template bone, whatever the pose (rigidity through IK + frames)."""
    hand = load_hand(None)
    g = torch.Generator().manual_seed(3)
    b = 3
    rest = hand(global_orient=torch.zeros(1, 3), finger_pose=torch.zeros(1, 45)).keypoints
    out = hand(
        global_orient=torch.randn(b, 3, generator=g),
        finger_pose=torch.randn(b, 45, generator=g) * 0.3,
        transl=torch.randn(b, 3, generator=g) * 0.1,
    )
    kp = out.keypoints
    R, origins = HandIK()(kp)
    assert R.shape == (b, 16, 3, 3)
    # a pose of the model itself: FK on the rest bones lands on its joints (about the wrist)
    torch.testing.assert_close(origins, out.joints - out.joints[:, :1], atol=1e-5, rtol=0)
    t = kp[:, list(MANO_TO_KEYPOINT)]
    torch.testing.assert_close(t, out.joints, atol=1e-5, rtol=0)
    for j in range(16):
        children = [c for c, p in enumerate(PARENTS) if p == j]
        ends = [MANO_TO_KEYPOINT[c] for c in children] or [MANO_TO_KEYPOINT[j] + 1]  # tips
        for k in ends:
            local = to_frames(kp[:, k : k + 1], R[:, j : j + 1], t[:, j : j + 1])[:, 0, 0]
            bone_rest = rest[0, k] - rest[0, MANO_TO_KEYPOINT[j]]
            if j == 0:  # the wrist frame is a least-squares fit: allow a little slack
                torch.testing.assert_close(local, bone_rest.expand(b, 3), atol=2e-3, rtol=0)
            else:
                torch.testing.assert_close(local, bone_rest.expand(b, 3), atol=1e-4, rtol=0)


def test_frames_use_rest_bones_not_predicted_ones():
    """Stretch the keypoints about the wrist (bones 30 % too long): the IK rotations stay, the
    FK origins keep the rest bone lengths (reference: predicted bone lengths unused)."""
    hand = load_hand(None)
    g = torch.Generator().manual_seed(4)
    out = hand(global_orient=torch.randn(2, 3, generator=g),
               finger_pose=torch.randn(2, 45, generator=g) * 0.3)  # fmt: skip
    kp = out.keypoints
    # aim="bone" turns each bone along the predicted one, so a uniform stretch keeps every
    # rotation; the reference's aim="fk" does not (next test)
    R, o = HandIK(aim="bone")(kp)
    R2, o2 = HandIK(aim="bone")(kp[:, :1] + 1.3 * (kp - kp[:, :1]))
    torch.testing.assert_close(R2, R, atol=1e-5, rtol=0)
    torch.testing.assert_close(o2, o, atol=1e-5, rtol=0)
    # FK by hand along one chain: index MCP (1) → PIP (2) → DIP (3)
    J = hand.joints_template
    e = o[:, 1] + (R[:, 1] @ (J[2] - J[1]))
    torch.testing.assert_close(o[:, 2], e, atol=1e-6, rtol=0)
    torch.testing.assert_close(o[:, 3], e + R[:, 2] @ (J[3] - J[2]), atol=1e-6, rtol=0)


def test_frames_aim_each_bone_from_its_fk_parent_by_default():
    """The reference's swing target: with bones of the wrong length, each FK-placed child lies
    on the ray from its FK-placed parent towards the predicted child (checked by cross
    products, not through the IK code), for every joint below the MCPs."""
    hand = load_hand(None)
    g = torch.Generator().manual_seed(5)
    out = hand(global_orient=torch.randn(2, 3, generator=g),
               finger_pose=torch.randn(2, 45, generator=g) * 0.3)  # fmt: skip
    kp = out.keypoints
    kp = kp[:, :1] + 1.3 * (kp - kp[:, :1])  # predicted bones 30 % too long
    _, o = HandIK()(kp)
    target = (kp - kp[:, :1])[:, list(MANO_TO_KEYPOINT)]  # predicted joints about the wrist
    checked = 0
    for c, j in enumerate(PARENTS):
        if j <= 0:
            continue
        fk_dir = o[:, c] - o[:, j]
        want = target[:, c] - o[:, j]
        cross = torch.linalg.cross(fk_dir, want).norm(dim=-1)
        assert (cross / (fk_dir.norm(dim=-1) * want.norm(dim=-1)) < 1e-5).all(), (j, c)
        assert ((fk_dir * want).sum(-1) > 0).all()
        checked += 1
    assert checked == 10
    # and that is not what aiming along the predicted bone gives
    _, o_bone = HandIK(aim="bone")(kp)
    assert (o_bone - o).abs().max() > 1e-3


def test_fk_origins_by_hand():
    # one joint turned 90° about z: its child's bone (+x) now points along +y
    J = torch.zeros(16, 3)
    J[1], J[2] = torch.tensor([1.0, 0, 0]), torch.tensor([2.0, 0, 0])
    R = torch.eye(3).repeat(1, 16, 1, 1)
    R[0, 1] = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    o = fk_origins(R, J)
    torch.testing.assert_close(o[0, 1], torch.tensor([1.0, 0, 0]))
    torch.testing.assert_close(o[0, 2], torch.tensor([1.0, 1, 0]))


def test_hand_model_id(tmp_path):
    assert hand_model_id(None) == "procedural"
    (tmp_path / "a.pkl").write_bytes(b"one")
    (tmp_path / "b.pkl").write_bytes(b"two")
    assert hand_model_id(tmp_path / "a.pkl").startswith("mano:")
    assert hand_model_id(tmp_path / "a.pkl") != hand_model_id(tmp_path / "b.pkl")
