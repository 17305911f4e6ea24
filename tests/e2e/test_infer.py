"""`gsdf-infer` and `Predictor` on the shared tiny run: synthetic frames with a known camera,
placed in a larger image, give the same network outputs as the frames themselves, in the
larger image's camera frame; the default field of view moves the prediction along the
viewing rays; user mistakes are one-line errors.

References are computed here: the network called directly on the shard image with the shard
camera, hand-shifted principal points, the focal length of a 60° field of view.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import trimesh
from click.testing import CliRunner
from PIL import Image

from gsdf_data.render import project
from gsdf_data.shards import ShardSet
from gsdf_model import Predictor
from gsdf_model.infer_cli import main as infer_main

pytestmark = pytest.mark.slow

RES = 24  # marching cubes per pass: enough for a centroid, cheap on CPU
CANVAS = (640, 480)  # width, height of the larger image the frames are placed in
OFFSET = (360, 40)  # where the 256×256 frame goes: far from the canvas centre (320, 240)
# The box whose training-style crop (10 px margin, ×1.25) is exactly the frame: side 256/1.25 − 20.
HALF = (256 / 1.25 - 20) / 2


@pytest.fixture(scope="module")
def frames(tiny_run):
    """Two training frames: image (256, 256, 3), K, GT joints and hand vertices."""
    keys = ("image", "K", "joints", "hand_verts", "obj_verts")
    with ShardSet(tiny_run["data"] / "train") as ss:
        return [ss.get(i, keys=keys) for i in (0, 5)]


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return Predictor.load(tiny_run["run"] / "last.pt", resolution=RES)


def embed(image: np.ndarray) -> np.ndarray:
    canvas = np.zeros((CANVAS[1], CANVAS[0], 3), np.uint8)
    canvas[OFFSET[1] : OFFSET[1] + 256, OFFSET[0] : OFFSET[0] + 256] = image
    return canvas


def frame_box() -> tuple[float, float, float, float]:
    cx, cy = OFFSET[0] + 128, OFFSET[1] + 128
    return (cx - HALF, cy - HALF, cx + HALF, cy + HALF)


def shifted(K: np.ndarray) -> np.ndarray:
    K = np.asarray(K, np.float64).copy()
    K[0, 2] += OFFSET[0]
    K[1, 2] += OFFSET[1]
    return K


def direct(predictor, image: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Joints from the network called on the frame and its own camera, no cropping."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        s = predictor.net.encode(x, torch.from_numpy(np.asarray(K, np.float32))[None])
    return s.joints[0].double().numpy()


def inside(uv: np.ndarray, box) -> bool:
    x0, y0, x1, y1 = box
    return bool(((uv[:, 0] >= x0) & (uv[:, 0] <= x1) & (uv[:, 1] >= y0) & (uv[:, 1] <= y1)).all())


def test_a_frame_in_a_larger_image_keeps_its_camera_frame(predictor, frames, tiny_run):
    """The canvas's box crops back exactly the frame: the joints equal the network's on the
    frame itself, they project into the box through the canvas camera, and the meshes sit in
    the canvas camera frame where the ground truth is (their centre projects into the box)."""
    box = frame_box()
    for f in frames:
        K, K_canvas = np.asarray(f["K"], np.float64), shifted(f["K"])
        pred = predictor(embed(np.asarray(f["image"])), bbox=box, K=K_canvas)
        np.testing.assert_allclose(pred.crop_box, [OFFSET[0], OFFSET[1], 256, 256], atol=1e-9)
        ref = direct(predictor, np.asarray(f["image"]), K)
        np.testing.assert_allclose(pred.joints, ref, atol=1e-5)
        uv = project(pred.joints, K_canvas)
        np.testing.assert_allclose(uv, project(ref, K) + OFFSET, atol=1e-3)
        assert inside(uv, box)
        # the frame on its own (centre square = the whole frame) gives the same prediction
        alone = predictor(np.asarray(f["image"]), K=K)
        np.testing.assert_allclose(alone.joints, pred.joints, atol=1e-5)
        for mesh, gt in ((pred.hand, f["hand_verts"]), (pred.obj, f["obj_verts"])):
            assert mesh is not None
            centre = np.asarray(mesh[0]).mean(0)
            assert inside(project(centre[None], K_canvas), box)
            # depth: where the ground truth is, within the 2/recon_scale SDF cube's reach
            gt_z = np.asarray(gt, np.float64)[:, 2].mean()
            assert abs(centre[2] - gt_z) < 0.05, (centre[2], gt_z)


def test_default_fov_moves_the_prediction_along_the_viewing_rays(predictor, frames):
    """Without K a 60° field of view across the 256 px side: f' = 128 / tan 30° ≈ 221.7 px
    instead of the true f = 480. The image is the same, so every joint projects to the same
    pixel through its own camera, and the root depth r scales by f'/f: each point slides
    along its pixel's ray by the same depth change (f'/f − 1)·r."""
    f = frames[0]
    K_true = np.asarray(f["K"], np.float64)
    true = predictor(np.asarray(f["image"]), K=K_true)
    guess = predictor(np.asarray(f["image"]))
    f_default = 128 / math.tan(math.radians(30))
    np.testing.assert_allclose(guess.K[0, 0], f_default, rtol=1e-9)
    np.testing.assert_allclose(guess.K[:2, 2], [127.5, 127.5])
    np.testing.assert_allclose(
        project(guess.joints, guess.K), project(true.joints, K_true), atol=1e-2
    )
    points = np.vstack([true.joints, true.obj_center])
    moved = np.vstack([guess.joints, guess.obj_center])
    dz = moved[:, 2] - points[:, 2]
    np.testing.assert_allclose(dz, dz[0], atol=1e-5)
    root = dz[0] / (f_default / 480.0 - 1.0)
    # the root depth is the heatmaps' reference: the wrist lies within their depth span of it
    assert abs(true.wrist[2] - root) < predictor.cfg.depth_extent
    assert guess.wrist[2] < 0.7 * true.wrist[2]


def test_cli_writes_meshes_joints_and_overlays(tiny_run, frames, tmp_path):
    """A folder of two frames in larger images, boxes from a JSON, the canvas camera."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(embed(np.asarray(f["image"]))).save(folder / f"frame_{i}.png")
    (tmp_path / "boxes.json").write_text(
        json.dumps({"frame_0.png": list(frame_box()), "frame_1": list(frame_box())})
    )
    K = shifted(frames[0]["K"])
    out = tmp_path / "out"
    args = [str(folder), "--checkpoint", str(tiny_run["run"] / "last.pt"), "--out", str(out)]
    args += ["--boxes", str(tmp_path / "boxes.json"), "--resolution", str(RES)]
    args += ["--fx", "480", "--cx", str(K[0, 2]), "--cy", str(K[1, 2])]
    res = CliRunner().invoke(infer_main, args)
    assert res.exit_code == 0, res.output
    assert "2 image(s)" in res.output and "s per image on cpu" in res.output
    for i, f in enumerate(frames):
        rec = json.loads((out / f"frame_{i}.json").read_text())
        np.testing.assert_allclose(rec["K"], K)
        assert rec["wrist"] == "predicted" and rec["image_size"] == list(CANVAS)
        joints = np.asarray(rec["joints"])
        assert joints.shape == (21, 3)
        assert inside(project(joints, K), frame_box())
        hand = trimesh.load(out / f"frame_{i}_hand.ply", force="mesh")
        gt_z = np.asarray(f["hand_verts"])[:, 2].mean()
        assert abs(hand.vertices[:, 2].mean() - gt_z) < 0.05
        overlay = Image.open(out / f"frame_{i}_overlay.png")
        assert overlay.size == (2 * (384 * 640 // 480) + 384, 384)


def test_cli_states_the_assumed_field_of_view(tiny_run, frames, tmp_path):
    Image.fromarray(np.asarray(frames[0]["image"])).save(tmp_path / "a.jpg")
    args = [str(tmp_path / "a.jpg"), "--checkpoint", str(tiny_run["run"]), "--out"]
    args += [str(tmp_path / "out"), "--resolution", "8", "--no-overlay", "--fov", "50"]
    res = CliRunner().invoke(infer_main, args)
    assert res.exit_code == 0, res.output
    assert "assumed a 50° field of view" in res.output
    rec = json.loads((tmp_path / "out" / "a.json").read_text())
    assert "50° field of view" in rec["intrinsics"]
    np.testing.assert_allclose(rec["K"][0][0], 128 / math.tan(math.radians(25)))
    assert not (tmp_path / "out" / "a_overlay.png").exists()


@pytest.mark.parametrize("case", ["box outside", "empty box", "unreadable", "foreign checkpoint"])
def test_user_mistakes_are_one_line_errors(tiny_run, frames, tmp_path, case):
    image = tmp_path / "a.jpg"
    Image.fromarray(np.asarray(frames[0]["image"])).save(image)
    ckpt = tiny_run["run"] / "last.pt"
    extra = []
    if case == "box outside":
        extra = ["--bbox", "300,20,400,90"]  # right of the 256-pixel-wide image
        expected = "lies outside the 256×256 image"
    elif case == "empty box":
        extra = ["--bbox", "50,50,40,90"]
        expected = "is empty"
    elif case == "unreadable":
        image.write_text("not an image")
        expected = "cannot read image"
    else:
        ckpt = tmp_path / "other.pt"
        torch.save({"state_dict": {}}, ckpt)
        expected = "is not a gsdf checkpoint"
    args = [str(image), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), *extra]
    res = CliRunner().invoke(infer_main, args)
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], lines
    assert not list((tmp_path / "o").glob("*.ply")) if (tmp_path / "o").exists() else True


def test_help_is_instant_and_lazy():
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from click.testing import CliRunner\n"
        "from gsdf_model.infer_cli import main\n"
        "r = CliRunner().invoke(main, ['--help'])\n"
        "assert r.exit_code == 0 and '--checkpoint' in r.output, r.output\n"
        "assert 'torch' not in sys.modules, 'gsdf-infer --help imported torch'\n"
        "assert time.perf_counter() - t < 1.5\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
