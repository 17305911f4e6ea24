"""DexYCB reader on a fixture written in the real layout: s0 split, right hands only,
30 -> 6 fps, MANO hand from pose_m (flat_hand_mean False), crop intrinsics by reprojection,
drop reasons and counts."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from gsdf_data.datasets.common import HandSpec, SampleError
from gsdf_data.datasets.dexycb import crop_affine, crop_box, dexycb_tasks, s0_split
from gsdf_data.render import project


@pytest.fixture(scope="module")
def dex(tmp_path_factory, fixtures_dexycb):
    d = fixtures_dexycb.write_dexycb(tmp_path_factory.mktemp("dexycb"))
    d["spec"] = HandSpec(str(d["mano"]), False, "dexycb")
    return d


def test_s0_rule():
    assert s0_split("20200709-subject-01", 3) == "s0-train"
    assert s0_split("20200709-subject-01", 4) == "s0-val"
    assert s0_split("20200813-subject-02", 9) == "s0-val"
    assert s0_split("20200820-subject-03", 4) == "s0-test"
    assert s0_split("20201022-subject-10", 99) == "s0-test"


def test_split_counts_left_hand_and_subsampling(dex):
    tasks, drops, skipped = dexycb_tasks(dex["root"], "s0-train", dex["spec"])
    # 2 subjects x 4 train sequences x 3 frames (0, 5, 10 of 11), one sequence left-handed
    assert len(tasks) == 7 * 3
    assert drops.as_dict() == {"left hand": 3}
    assert skipped == {"frames not at 6 fps": 8 * 8}
    assert {t.frame for t in tasks} == {0, 5, 10}
    assert not any("100001" in t.seq_id and "subject-01" in t.seq_id for t in tasks)
    assert len({t.sample_id for t in tasks}) == len(tasks)
    test, _, _ = dexycb_tasks(dex["root"], "s0-test", dex["spec"])
    val, _, _ = dexycb_tasks(dex["root"], "s0-val", dex["spec"])
    assert [t.frame for t in test] == [0, 5, 10] and all("subject-03" in t.seq_id for t in test)
    assert [t.frame for t in val] == [0, 5, 10] and all("subject-01" in t.seq_id for t in val)
    assert test[0].seq_id == test[2].seq_id  # one sequence id per camera stream (video)


def test_frame_hand_object_and_crop(dex):
    from gsdf_data.hand import load_hand

    tasks, _, _ = dexycb_tasks(dex["root"], "s0-train", dex["spec"])
    task = tasks[4]  # subject 01, sequence 1 is left: this is sequence 2, frame 5
    s, q = "20200709-subject-01", 2
    assert task.seq_id.startswith(f"{s}_20200101_1000{q:02d}") and task.frame == 5
    truth = dex["truth"][(s, q, 5)]
    pair = task.load()
    np.testing.assert_allclose(pair.joints, truth["joints"], atol=1e-5)
    # the hand mesh is MANO with the subject's betas, pose_m and flat_hand_mean False
    np.testing.assert_allclose(pair.hand_mesh.vertices, truth["verts"], atol=1e-5)
    flat = load_hand(dex["mano"], flat_hand_mean=True, tips="dexycb")
    lab = np.load(Path(task.frame_dir) / "labels_000005.npz")
    wrong = flat.forward_numpy(
        global_orient=lab["pose_m"][:, :3],
        pca_coeffs=lab["pose_m"][:, 3:48],
        betas=np.array([task.betas]),
        transl=lab["pose_m"][:, 48:],
    )
    assert np.abs(wrong.vertices[0] - truth["verts"]).max() > 1e-3
    # object: the grasped one, centred at its bounding-box centre
    np.testing.assert_allclose(pair.obj_center, truth["obj_centre"], atol=1e-5)
    R = pair.obj_pose[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)
    # crop intrinsics by reprojection: K_crop projects the 3D joints where the crop map
    # sends the stored 2D joints
    Kc = np.asarray(pair.K, np.float64)
    uv_crop = project(np.asarray(pair.joints, np.float64), Kc)
    j2d = np.hstack([truth["joints2d"], np.ones((21, 1))])
    c2d = (pair_affine(task, dex) @ j2d.T).T[:, :2]
    np.testing.assert_allclose(uv_crop, c2d, atol=1e-3)
    assert (uv_crop > 0).all() and (uv_crop < 256).all()  # joints inside the crop
    # and the image agrees: the white disc drawn at the wrist is where K_crop puts it
    img = cv2.imdecode(np.frombuffer(pair.image, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert img.shape == (256, 256)
    ys, xs = np.nonzero(img > 128)
    assert abs(xs.mean() - uv_crop[0, 0]) < 1.0 and abs(ys.mean() - uv_crop[0, 1]) < 1.0
    assert np.isfinite(pair.hand_rotmats).all()


def pair_affine(task, dex):
    """The crop map recomputed from the stored labels (joints 2D + projected object box)."""
    import trimesh

    lab = np.load(Path(task.frame_dir) / f"labels_{task.frame:06d}.npz")
    obj = trimesh.load(task.obj_file, process=False)
    pose = lab["pose_y"][task.grasp_ind]
    lo, hi = obj.bounds
    corners = np.array(
        [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    cam = corners @ pose[:, :3].T + pose[:, 3]
    pts = np.vstack([lab["joint_2d"][0], project(cam, np.asarray(task.K))])
    return crop_affine(crop_box(pts))


def test_crop_box_square_and_scaled():
    box = crop_box(np.array([[100.0, 50.0], [140.0, 130.0]]))
    # bbox 40x80 grown by 10 px -> 60x100 -> square 100 -> x1.25 = 125, same centre
    np.testing.assert_allclose(box, [120 - 62.5, 90 - 62.5, 125, 125])
    A = crop_affine(box)
    np.testing.assert_allclose(A @ [120, 90, 1], [128, 128, 1])
    np.testing.assert_allclose(A @ [120 + 62.5, 90, 1], [256, 128, 1])


def test_drop_reasons_and_prepare_counts(dex, tmp_path):
    tasks, _, _ = dexycb_tasks(dex["root"], "s0-test", dex["spec"])
    with pytest.raises(SampleError, match="no hand annotation"):
        tasks[1].load()
    with pytest.raises(SampleError, match="more than 5 mm apart"):
        tasks[2].load()
    from gsdf_data.cli import main

    out = tmp_path / "shards"
    args = ["prepare", "dexycb", "--root", str(dex["root"]), "--mano", str(dex["mano"])]
    args += ["--split", "s0-test", "--out", str(out), "--points", "4000"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "dexycb s0-test: kept 1 of 3 samples, dropped 2" in res.output
    summary = json.loads((out / "dataset_summary.json").read_text())
    assert summary["dropped"] == {
        "hand and object more than 5 mm apart": 1,
        "no hand annotation": 1,
    }
    assert summary["skipped"] == {"frames not at 6 fps": 8}


def _closest_vertex_gap(dex, task) -> float:
    """The reference's contact measure, by brute force: the smallest distance between an
    object vertex and a MANO vertex of the frame (metres, camera frame)."""
    import trimesh

    subject, _, seq = task.sample_id.split("_")[:3]
    hand = dex["truth"][(subject, int(seq[-2:]), task.frame)]["verts"]
    label = np.load(Path(task.frame_dir) / f"labels_{task.frame:06d}.npz")
    R, t = label["pose_y"][task.grasp_ind, :, :3], label["pose_y"][task.grasp_ind, :, 3]
    obj = np.asarray(trimesh.load(task.obj_file, process=False).vertices) @ R.T + t
    return float(np.sqrt(((obj[:, None] - hand[None]) ** 2).sum(-1)).min())


def test_contact_filter_on_the_test_split_only_as_the_reference(dex):
    from gsdf_data.datasets.dexycb import SPLITS

    train, _, _ = dexycb_tasks(dex["root"], "s0-train", dex["spec"])
    far = train[2]  # subject 01, first sequence, frame 10: the object 20 cm from the hand
    assert far.frame == 10 and "subject-01" in far.sample_id and "_100000_" in far.sample_id
    assert _closest_vertex_gap(dex, far) > 0.05
    assert _closest_vertex_gap(dex, train[1]) < 0.005  # a frame in contact
    assert far.contact_mm == 0.0
    assert far.load().sample_id == far.sample_id  # kept, as the reference keeps it
    strict, _, _ = dexycb_tasks(dex["root"], "s0-train", dex["spec"], contact_splits=SPLITS)
    with pytest.raises(SampleError, match="more than 5 mm apart"):
        strict[2].load()
    strict[1].load()
    test, _, _ = dexycb_tasks(dex["root"], "s0-test", dex["spec"])
    assert _closest_vertex_gap(dex, test[2]) > 0.05 and test[2].contact_mm == 5.0


def test_every_drop_has_a_line_left_hands_included(dex, tmp_path):
    from gsdf_data.cli import main

    out = tmp_path / "shards"
    args = ["prepare", "dexycb", "--root", str(dex["root"]), "--mano", str(dex["mano"])]
    args += ["--split", "s0-train", "--out", str(out), "--points", "4000", "--limit", "3"]
    args += ["--contact-all-splits"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    bad = json.loads((out / "bad_samples.json").read_text())
    left = sorted(b["sample_id"] for b in bad if b["reason"] == "left hand")
    # subject 01's second sequence is left-handed: its 3 frames at 6 fps, one camera
    seq = "20200709-subject-01_20200101_100001_836212060125"
    assert left == [f"{seq}_{f:06d}" for f in (0, 5, 10)]
    apart = [b["sample_id"] for b in bad if b["reason"].startswith("hand and object more")]
    assert apart == [f"20200709-subject-01_20200101_100000_836212060125_{10:06d}"]
    summary = json.loads((out / "dataset_summary.json").read_text())
    assert summary["dropped"] == {"hand and object more than 5 mm apart": 1, "left hand": 3}
    assert "dexycb s0-train: kept 2 of 6 samples, dropped 4" in res.output  # each once
    # a second run (resumed) lists each drop once
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert len(json.loads((out / "bad_samples.json").read_text())) == 4
    # by default (the reference) the training frame with hand and object apart is kept
    args = [a if a != str(out) else str(tmp_path / "default") for a in args[:-1]]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "dexycb s0-train: kept 3 of 6 samples, dropped 3" in res.output
