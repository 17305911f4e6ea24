"""The procedural hand: a closed, outward, hand-sized mesh in every plausible pose, whose
keypoints sit where MANO's order says (thumb joints in the thumb, and so on)."""

import numpy as np
import pytest
import torch
import trimesh

from gsdf_data.hand import KEYPOINT_NAMES, ProceduralHand, load_hand, random_rotations
from gsdf_data.hand import procedural as P


@pytest.fixture(scope="module")
def hand():
    return load_hand(None)


@pytest.fixture(scope="module")
def posed(hand):
    """20 random plausible poses (grasp closure drawn per sample), random global rotation."""
    rng = np.random.default_rng(0)
    fp = hand.sample_poses(20, rng)
    go = random_rotations(20, rng)
    return hand.forward_numpy(global_orient=go, finger_pose=fp, transl=rng.normal(0, 0.1, (20, 3)))


def test_template_size_and_proportions(hand):
    assert 1000 <= hand.num_vertices <= 3000
    assert hand.faces.dtype == np.int64 and hand.faces.max() < hand.num_vertices
    kp = hand.rest_keypoints()[0].numpy()
    wrist_to_middle_tip = np.linalg.norm(kp[KEYPOINT_NAMES.index("middle_tip")] - kp[0])
    assert 0.18 <= wrist_to_middle_tip <= 0.19
    mesh = hand.to_trimesh(hand.v_template.numpy())
    assert mesh.is_watertight and mesh.volume > 0
    # an adult hand is roughly 300-500 cm^3 (our wrist cap is short)
    assert 2.0e-4 < mesh.volume < 5.0e-4
    v = mesh.vertices
    width = np.ptp(v[:, 1][(np.abs(v[:, 0] - 0.07) < 0.004) & (v[:, 2] > 0)])
    assert 0.07 < width < 0.10  # palm breadth across the back of the knuckles
    # the open variant has a hole at the wrist
    assert not trimesh.Trimesh(mesh.vertices, hand.faces_open, process=False).is_watertight
    assert len(hand.faces) - len(hand.faces_open) > 5


def test_watertight_positive_volume_in_20_random_poses(hand, posed):
    for v in posed.vertices:
        mesh = trimesh.Trimesh(v, hand.faces, process=False)
        assert mesh.is_watertight
        assert mesh.volume > 1.5e-4


def test_keypoints_inside_the_skin_of_their_finger(hand):
    """Joint keypoints lie inside the posed mesh, fingertips on its surface, and the skin
    nearest to each keypoint is driven by that keypoint's finger (so the order is right).
    Half-closed grasps: a full fist can press a fingertip into the palm, and a point inside
    two overlapping volumes counts as outside by ray parity."""
    from gsdf_data.hand.kinematics import KEYPOINT_FROM_MANO

    rng = np.random.default_rng(5)
    posed = hand.forward_numpy(
        global_orient=random_rotations(20, rng), finger_pose=hand.sample_poses(20, rng, grasp=0.5)
    )
    W = hand.weights.numpy()
    finger_of_joint = np.zeros(16, int)
    for f, root in enumerate((13, 1, 4, 10, 7)):  # thumb, index, middle, ring, little
        finger_of_joint[[root, root + 1, root + 2]] = f + 1
    vertex_finger = np.where(W[:, 0] > 0.5, 0, finger_of_joint[W[:, 1:].argmax(1) + 1])
    kp_finger = np.r_[0, np.repeat(np.arange(1, 6), 4)]
    tips = [4, 8, 12, 16, 20]
    for b in range(0, 20, 4):
        mesh = trimesh.Trimesh(posed.vertices[b], hand.faces, process=False)
        kp = posed.keypoints[b]
        inner = [k for k in range(1, 21) if k not in tips]
        assert mesh.contains(kp[inner]).all()
        _, dist, _ = trimesh.proximity.closest_point(mesh, kp[tips])
        assert dist.max() < 0.003
    # at rest (no finger touches another), the skin nearest to every keypoint beyond the
    # finger roots is driven by that keypoint's finger
    rest_kp = hand.rest_keypoints()[0].numpy()
    v0 = hand.v_template.numpy()
    for k in range(1, 21):
        if KEYPOINT_FROM_MANO[k] in (13, 1, 4, 10, 7):
            continue  # finger roots sit where finger and palm meet
        nearest = np.linalg.norm(v0 - rest_kp[k], axis=1).argmin()
        assert vertex_finger[nearest] == kp_finger[k], KEYPOINT_NAMES[k]


def test_rest_keypoint_layout(hand):
    """Right hand, rest frame: +x fingers, +y thumb side, +z back of the hand."""
    kp = hand.rest_keypoints()[0].numpy()
    y_of = {
        f: kp[1 + 4 * i : 5 + 4 * i, 1].mean()
        for i, f in enumerate(("thumb", "index", "middle", "ring", "little"))
    }
    assert y_of["thumb"] > y_of["index"] > y_of["middle"] > y_of["ring"] > y_of["little"]
    # each finger goes away from the wrist root -> tip
    d = np.linalg.norm(kp - kp[0], axis=1)
    for i in range(5):
        assert np.all(np.diff(d[1 + 4 * i : 5 + 4 * i]) > 0)
    # the thumb sits in front of the palm (palmar, -z)
    assert kp[4, 2] < kp[5:, 2].mean() - 0.01


def test_shape_coefficients(hand):
    betas = torch.zeros(2, 10)
    betas[0, 0] = 1.0
    betas[1, 1] = 1.0
    rest = hand.rest_keypoints()[0]
    kp = hand(betas=betas).keypoints
    assert torch.allclose(kp[0], rest * 1.05, atol=1e-6)  # scale about the wrist
    mid = [KEYPOINT_NAMES.index(n) for n in ("middle_mcp", "middle_tip")]
    ratio = (kp[1, mid[1]] - kp[1, mid[0]]).norm() / (rest[mid[1]] - rest[mid[0]]).norm()
    assert abs(ratio - 1.05) < 1e-5
    assert torch.allclose(kp[1, 0], rest[0])  # the palm keeps its size


def test_left_hand_is_the_mirror(hand):
    left = ProceduralHand(side="left")
    mesh = left.to_trimesh(left.v_template.numpy())
    assert mesh.is_watertight and mesh.volume > 0
    rng = np.random.default_rng(1)
    fp = hand.sample_poses(3, rng)
    go = random_rotations(3, rng)
    mirror_aa = np.array([1.0, -1.0, -1.0])
    r = hand.forward_numpy(global_orient=go, finger_pose=fp)
    lo = left.forward_numpy(global_orient=go * mirror_aa, finger_pose=fp * np.tile(mirror_aa, 15))
    s = np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(lo.vertices, r.vertices * s, atol=1e-6)
    np.testing.assert_allclose(lo.keypoints, r.keypoints * s, atol=1e-6)
    # the left sampler curls left fingers towards the left palm as well
    flp = left.sample_poses(1, np.random.default_rng(2), grasp=1.0, noise=0.0)
    frp = hand.sample_poses(1, np.random.default_rng(2), grasp=1.0, noise=0.0)
    np.testing.assert_allclose(flp, frp * np.tile(mirror_aa, 15), atol=1e-6)
    # and so does the "curl" style (the synthetic dataset's grasps)
    flp = left.sample_poses(2, np.random.default_rng(2), style="curl")
    frp = hand.sample_poses(2, np.random.default_rng(2), style="curl")
    np.testing.assert_allclose(flp, frp * np.tile(mirror_aa, 15), atol=1e-6)


def test_pose_sampler_closure_and_determinism(hand):
    a = hand.sample_poses(50, np.random.default_rng(7))
    b = hand.sample_poses(50, np.random.default_rng(7))
    assert np.array_equal(a, b) and a.shape == (50, 45) and a.dtype == np.float32
    assert np.abs(a).max() < 2.0  # inside joint limits

    def tip_to_palm(grasp):
        fp = hand.sample_poses(30, np.random.default_rng(3), grasp=grasp)
        kp = hand.forward_numpy(finger_pose=fp).keypoints
        return np.linalg.norm(kp[:, [8, 12, 16, 20]] - kp[:, :1], axis=-1).mean()

    d = [tip_to_palm(g) for g in (0.0, 0.5, 1.0)]
    assert d[0] > d[1] + 0.01 > d[2] + 0.02, d


def test_generation_reproduces_the_packaged_asset():
    """The shipped template is what the generator makes (regenerate after changing it)."""
    fresh = P.generate()
    cached = P.template()
    assert int(cached["version"]) == P.GEOMETRY_VERSION
    np.testing.assert_allclose(fresh["joints"], cached["joints"])
    assert abs(len(fresh["vertices"]) - len(cached["vertices"])) <= 0.02 * len(cached["vertices"])
    vol = [trimesh.Trimesh(d["vertices"], d["faces"]).volume for d in (fresh, cached)]
    assert abs(vol[0] - vol[1]) < 0.01 * vol[1]


def test_curl_style_curls_every_finger_towards_the_palm(hand):
    """The "curl" style: each finger bent about its flexion axes towards the palm side (tips
    in front of the palm, nearer the wrist than at rest), the thumb across the palm; a
    distribution of its own, not the closure one, and reproducible."""
    from gsdf_data.hand.kinematics import from_paper_order
    from gsdf_data.hand.poses import palm_frame

    a = hand.sample_poses(40, np.random.default_rng(4), style="curl")
    b = hand.sample_poses(40, np.random.default_rng(4), style="curl")
    assert np.array_equal(a, b) and a.shape == (40, 45)
    assert not np.allclose(a, hand.sample_poses(40, np.random.default_rng(4)))
    rest = hand.rest_keypoints()[0].numpy().astype(np.float64)
    palm = palm_frame(from_paper_order(rest))
    kp = hand.forward_numpy(finger_pose=a).keypoints
    tips = kp[:, [8, 12, 16, 20]]
    height = (tips - palm.centre) @ palm.normal  # > 0: in front of the palm
    assert (height > 0.005).all()
    reach = np.linalg.norm(tips - rest[0], axis=-1)
    assert (reach < np.linalg.norm(rest[[8, 12, 16, 20]] - rest[0], axis=-1) - 0.02).all()
    thumb_tip = kp[:, 4]
    assert ((thumb_tip - palm.centre) @ palm.normal > 0).all()
    with pytest.raises(ValueError, match="closure"):
        hand.sample_poses(1, np.random.default_rng(0), grasp=0.5, style="curl")
