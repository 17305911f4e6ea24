"""The MANO loader on a stand-in file in the real layout (see mano_fixture.py), whose
geometry is the procedural hand plus known blend shapes, so every output can be checked."""

import pickle

import numpy as np
import pytest
import torch
import trimesh

from gsdf_data.hand import MANOHand, ProceduralHand, load_hand
from gsdf_data.hand.mano import TIP_IDS, MANOFileError, close_wrist, read_mano_pkl


@pytest.fixture(scope="module")
def standin(tmp_path_factory, mano_fixture):
    path = tmp_path_factory.mktemp("mano") / "MANO_RIGHT.pkl"
    arrays = mano_fixture.write_mano_standin(path)
    return path, arrays


@pytest.fixture(scope="module")
def mano(standin):
    path, a = standin
    return MANOHand.from_pkl(path, tips=tuple(a["tip_ids"]), dtype=torch.float64)


@pytest.fixture(scope="module")
def proc():
    return ProceduralHand(dtype=torch.float64)


def test_file_layout_needs_latin1_and_no_chumpy(standin):
    path, a = standin
    with open(path, "rb") as fh, pytest.raises((UnicodeDecodeError, ModuleNotFoundError)):
        pickle.load(fh)
    d = read_mano_pkl(path)
    np.testing.assert_array_equal(d["v_template"], a["v_template"])
    np.testing.assert_array_equal(d["J_regressor"], a["J_regressor"])  # from sparse
    np.testing.assert_array_equal(d["shapedirs"], a["shapedirs"])  # from chumpy Ch
    np.testing.assert_array_equal(d["J"], a["J"])  # from chumpy Select of a Ch
    assert d["J_regressor"].shape == (16, len(a["v_template"]))


def test_rest_pose_and_regressed_joints(mano, standin):
    _, a = standin
    out = mano(finger_pose=torch.zeros(1, 45))
    np.testing.assert_allclose(out.vertices[0].numpy(), a["v_template"], atol=1e-12)
    np.testing.assert_allclose(out.joints[0].numpy(), a["J"], atol=1e-12)
    tips = a["v_template"][a["tip_ids"]]
    np.testing.assert_allclose(out.keypoints[0, [4, 8, 12, 16, 20]].numpy(), tips, atol=1e-12)


def test_poses_like_the_procedural_hand(mano, proc):
    """Same template, weights, joints and tips: without the pose blend shape (index root
    unrotated) both models give the same mesh and keypoints."""
    rng = np.random.default_rng(0)
    fp = torch.as_tensor(proc.sample_poses(5, rng), dtype=torch.float64)
    fp[:, :3] = 0
    go = torch.as_tensor(rng.normal(0, 1, (5, 3)))
    a = mano(global_orient=go, finger_pose=fp)
    b = proc(global_orient=go, finger_pose=fp)
    V0 = proc.num_vertices
    assert torch.allclose(a.vertices[:, :V0], b.vertices, atol=1e-12)
    assert torch.allclose(a.keypoints, b.keypoints, atol=1e-12)
    assert torch.allclose(a.transforms, b.transforms, atol=1e-12)


def test_pose_blend_shape(mano, proc):
    """Rotating the index root by t about z: feature (R_1 - I)[0, 0] = cos t - 1 moves every
    vertex that does not follow the index finger by 0.01 (cos t - 1) along z."""
    t = 0.7
    fp = torch.zeros(1, 45, dtype=torch.float64)
    fp[0, 2] = t
    a = mano(finger_pose=fp).vertices[0, : proc.num_vertices]
    b = proc(finger_pose=fp).vertices[0]
    still = (proc.weights[:, 1:4].sum(1) == 0).numpy()
    assert still.sum() > 100
    expect = np.array([0, 0, 0.01 * (np.cos(t) - 1)])
    np.testing.assert_allclose(
        (a - b)[still].numpy(), np.broadcast_to(expect, (still.sum(), 3)), atol=1e-12
    )


def test_shape_blend_shape(mano, standin):
    _, a = standin
    betas = torch.zeros(1, 10, dtype=torch.float64)
    betas[0, 0] = 1.0
    out = mano(betas=betas)
    np.testing.assert_allclose(out.joints[0].numpy(), 1.1 * a["J"], atol=1e-12)
    np.testing.assert_allclose(out.vertices[0].numpy(), 1.1 * a["v_template"], atol=1e-12)


def test_pca_pose_and_hand_mean(standin):
    path, a = standin
    tips = tuple(a["tip_ids"])
    flat = MANOHand.from_pkl(path, tips=tips, flat_hand_mean=True, ncomps=6, dtype=torch.float64)
    mean = MANOHand.from_pkl(path, tips=tips, flat_hand_mean=False, dtype=torch.float64)
    c = torch.as_tensor(np.random.default_rng(1).normal(0, 0.5, (2, 6)))
    comps = torch.as_tensor(a["hands_components"][:6])
    assert torch.allclose(
        flat(pca_coeffs=c).vertices, flat(finger_pose=c @ comps).vertices, atol=1e-12
    )
    hm = torch.as_tensor(a["hands_mean"])[None]
    # flat_hand_mean=False: the zero pose is the file's mean hand
    assert torch.allclose(
        mean(finger_pose=torch.zeros(1, 45)).vertices, flat(finger_pose=hm).vertices, atol=1e-12
    )
    with pytest.raises(ValueError, match="PCA"):
        flat(pca_coeffs=torch.zeros(1, 7))


def test_named_tip_conventions(standin):
    path, a = standin
    for name, ids in TIP_IDS.items():
        m = MANOHand.from_pkl(path, tips=name, dtype=torch.float64)
        kp = m(finger_pose=torch.zeros(1, 45)).keypoints[0, [4, 8, 12, 16, 20]].numpy()
        np.testing.assert_allclose(kp, a["v_template"][list(ids)], atol=1e-12)
    # ObMan's coords_3d (obman_render's SMPL+H tips through its SMPL+H -> MANO map) and
    # manopth / the reference's MANO layer / the DexYCB toolkit
    assert TIP_IDS["obman"] == (744, 333, 443, 554, 672)
    assert TIP_IDS["manopth"] == TIP_IDS["dexycb"] == (745, 317, 444, 556, 673)


def test_model_ik_fk_use_the_reference_layers_tips(standin):
    """The model's IK/FK run on the reference's MANO layer: manopth's tips set the template's
    last bone of each finger, and so the distal joints' rotations."""
    from gsdf_model.kinematics import HandIK

    path, _ = standin
    ik = HandIK(str(path))
    manopth = MANOHand.from_pkl(path, tips="manopth", dtype=torch.float64)
    obman = MANOHand.from_pkl(path, tips="obman", dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    kp = manopth(finger_pose=0.4 * torch.randn(2, 45, generator=g, dtype=torch.float64))
    kp = kp.keypoints.float()
    R, _ = ik(kp)
    assert tuple(ik._hand.tip_vertex_ids.tolist()) == TIP_IDS["manopth"]
    distal = [3, 6, 9, 12, 15]  # MANO's last joint of each finger: their bone ends at a tip
    for hand, same in ((manopth, True), (obman, False)):
        ref = hand.ik(kp).global_rotmats.float()
        close = torch.allclose(R[:, distal], ref[:, distal], atol=1e-4)
        assert close == same
    with pytest.raises(MANOFileError, match=r"MANO_RIGHT\.pkl.*fingertip ids"):
        MANOHand.from_pkl(path, tips=(1, 2, 3, 4, 10**6))


def test_wrist_closed_watertight(mano, proc):
    mesh = mano.to_trimesh(mano.v_template.numpy())
    assert mesh.is_watertight and mesh.volume > 0
    ref = proc.to_trimesh(proc.v_template.numpy()).volume
    assert abs(mesh.volume - ref) < 0.03 * ref
    assert not trimesh.Trimesh(mesh.vertices, mano.faces_open, process=False).is_watertight
    # the closing never adds vertices (fingertip ids keep their meaning)
    assert close_wrist(mesh.vertices, mano.faces_open).max() < mano.num_vertices


def test_left_hand_by_mirroring(standin, mano):
    path, a = standin
    left = MANOHand.from_pkl(path, tips=tuple(a["tip_ids"]), side="left", dtype=torch.float64)
    assert left.to_trimesh(left.v_template.numpy()).volume > 0
    rng = np.random.default_rng(2)
    go, fp = (
        torch.as_tensor(rng.normal(0, 0.5, (3, 3))),
        torch.as_tensor(rng.normal(0, 0.4, (3, 45))),
    )
    m = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    r = mano(global_orient=go, finger_pose=fp)
    lo = left(global_orient=go * m, finger_pose=fp * m.repeat(15))
    s = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert torch.allclose(lo.vertices, r.vertices * s, atol=1e-12)
    assert torch.allclose(lo.keypoints, r.keypoints * s, atol=1e-12)


def test_clear_errors_name_the_file(tmp_path, standin, mano_fixture):
    path, a = standin
    text = tmp_path / "notes.pkl"
    text.write_text("not a pickle at all")
    with pytest.raises(MANOFileError, match=r"notes\.pkl: not a MANO pickle"):
        MANOHand.from_pkl(text)
    with pytest.raises(MANOFileError, match=r"missing\.pkl: no such file"):
        MANOHand.from_pkl(tmp_path / "missing.pkl")
    partial = tmp_path / "partial.pkl"
    mano_fixture.write_mano_standin(partial, drop=("J_regressor", "hands_mean"))
    with pytest.raises(
        MANOFileError, match=r"partial\.pkl: .*missing keys \['J_regressor', 'hands_mean'\]"
    ):
        MANOHand.from_pkl(partial)
    left_file = tmp_path / "MANO_LEFT.pkl"
    mano_fixture.write_mano_standin(left_file, mirror=True)
    with pytest.raises(MANOFileError, match=r"MANO_LEFT\.pkl: this looks like a left-hand model"):
        MANOHand.from_pkl(left_file, tips=tuple(a["tip_ids"]))
    # the check can be skipped (a mirrored right template is then taken as it is)
    assert MANOHand.from_pkl(left_file, tips=tuple(a["tip_ids"]), check_side=False).side == "right"
    assert isinstance(load_hand(path, tips=tuple(a["tip_ids"])), MANOHand)


def test_handedness_evidence_is_clear(mano, standin):
    from gsdf_data.hand.mano import handedness

    _, a = standin
    J, tips = a["J"], a["v_template"][a["tip_ids"]]
    flip = np.tile([1.0, -1.0, -1.0], 15)
    s = np.array([-1.0, 1.0, 1.0])
    assert handedness(J, tips, a["hands_mean"]) > 0.005
    assert handedness(J * s, tips * s, a["hands_mean"] * flip) < -0.005
    # without a mean pose the thumb decides
    assert handedness(J, tips, np.zeros(45)) > 0.005
    assert handedness(J * s, tips * s, np.zeros(45)) < -0.005
