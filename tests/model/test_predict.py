"""gsdf_model.predict / gsdf_model.infer without a trained run: the training-style crop
against hand-computed boxes, the default camera against a hand-computed focal length, and
the frames a video preset sees (t−1, t, t+1, clamped at the ends) through an untrained
tiny video network saved as a checkpoint."""

import json
import math

import numpy as np
import pytest
import torch

from gsdf_model.config import get_preset
from gsdf_model.infer import Intrinsics, infer, list_images, load_boxes
from gsdf_model.network import GSDFNet
from gsdf_model.predict import Predictor, crop_square, default_intrinsics
from gsdf_model.runtime import CHECKPOINT_FORMAT, UserError


def test_box_crop_is_the_training_crop():
    # box 100..200 × 50..130: +10 px → 90..210 × 40..140, square side 120 × 1.25 = 150
    # about the centre (150, 90)
    np.testing.assert_allclose(crop_square((100, 50, 200, 130), 640, 480), [75, 15, 150, 150])
    # no box: the centre square of a landscape image
    np.testing.assert_allclose(crop_square(None, 640, 480), [80, 0, 480, 480])


@pytest.mark.parametrize(
    "box, words",
    [((700, 10, 800, 90), "outside"), ((-90, 10, -1, 90), "outside"), ((5, 5, 5, 9), "empty")],
)
def test_bad_boxes_are_user_errors(box, words):
    with pytest.raises(UserError, match=words):
        crop_square(box, 640, 480)


def test_default_intrinsics_from_the_field_of_view():
    K = default_intrinsics(640, 480, 90.0)  # 90° across 640 px: f = 320 / tan 45° = 320
    np.testing.assert_allclose(K, [[320, 0, 319.5], [0, 320, 239.5], [0, 0, 1]], atol=1e-9)
    K = Intrinsics(fx=500.0, cy=100.0).matrix(640, 480)
    np.testing.assert_allclose(K, [[500, 0, 319.5], [0, 500, 100], [0, 0, 1]])
    assert "60° field of view" in Intrinsics().describe()


def test_folders_in_frame_order_and_boxes_by_name(tmp_path):
    from PIL import Image

    for name in ("f10.png", "f2.png", "f1.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    Image.new("RGB", (8, 8)).save(tmp_path / "f2.png")
    images = list_images([tmp_path])
    assert [p.name for p in images] == ["f1.png", "f2.png", "f10.png"]
    (tmp_path / "b.json").write_text(
        json.dumps({"f1.png": [1, 2, 3, 4], "f2": None, "f10": "5,6,7,8"})
    )
    assert load_boxes(tmp_path / "b.json", images) == [(1, 2, 3, 4), None, (5, 6, 7, 8)]
    (tmp_path / "b.json").write_text(json.dumps({"f1.png": [1, 2, 3, 4]}))
    with pytest.raises(UserError, match=r"no box for 'f2\.png'"):
        load_boxes(tmp_path / "b.json", images)


@pytest.fixture(scope="module")
def video_checkpoint(tmp_path_factory):
    """An untrained tiny network with the video model's temporal context (V4, 3 frames)."""
    cfg = get_preset("tiny").replace(visual="v4", n_frames=3)
    torch.manual_seed(0)
    net = GSDFNet(cfg)
    path = tmp_path_factory.mktemp("video") / "last.pt"
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "model": net.state_dict(),
        "model_preset": "tiny",
        "model_config": cfg.to_dict(),
        "stage": 2,
    }
    torch.save(ckpt, path)
    return path


def test_video_frames_are_neighbours_in_order(video_checkpoint, tmp_path, monkeypatch):
    """Each frame is predicted with its neighbours (its own at the ends); the network sees
    them as one (1, 3, 3, S, S) clip in that order, each cropped with its own box."""
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(3)]
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"frame_{i}.png")
    seen = []
    encode = GSDFNet.encode

    def spy(self, image, K, wrist=None):
        seen.append(image.detach().cpu())
        return encode(self, image, K, wrist)

    monkeypatch.setattr(GSDFNet, "encode", spy)
    s = infer(
        [tmp_path], video_checkpoint, tmp_path / "out", resolution=8, overlay=False, progress=False
    )
    assert s["written"] == 3
    expected = [(0, 0, 1), (0, 1, 2), (1, 2, 2)]
    assert len(seen) == 3
    for clip, order in zip(seen, expected, strict=True):
        assert clip.shape == (1, 3, 3, 256, 256)
        for t, j in enumerate(order):
            ref = torch.from_numpy(frames[j]).permute(2, 0, 1).float() / 255
            torch.testing.assert_close(clip[0, t], ref)


def test_video_predictor_takes_one_frame_or_three(video_checkpoint):
    p = Predictor.load(video_checkpoint, resolution=8)
    assert p.n_frames == 3
    img = np.zeros((64, 80, 3), np.uint8)
    assert p(img).joints.shape == (21, 3)
    with pytest.raises(UserError, match="give 1 or 3 frames"):
        p([img, img])
    np.testing.assert_allclose(p(img).K[0, 0], 40 / math.tan(math.radians(30)))


def test_a_checkpoint_of_another_model_is_one_line(video_checkpoint, tmp_path):
    ckpt = torch.load(video_checkpoint, weights_only=True)
    ckpt["model"] = dict(list(ckpt["model"].items())[3:])  # three tensors missing
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(UserError, match="does not fit this version's model") as err:
        Predictor.load(tmp_path / "other.pt")
    assert "\n" not in str(err.value)


def test_images_are_read_as_shown(tmp_path):
    """A phone's portrait JPEG: landscape pixels plus EXIF orientation 6 (turn 90° clockwise)."""
    from PIL import Image

    from gsdf_model.predict import read_image

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :5] = 255  # a white band on the left edge ends up on the top after the turn
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "p.jpg", exif=exif, quality=100)
    shown = read_image(tmp_path / "p.jpg")
    assert shown.shape == (40, 20, 3)
    assert shown[:5].mean() > 200 and shown[10:].mean() < 30


def test_a_mano_checkpoint_without_its_file_names_the_option(video_checkpoint, tmp_path):
    from click.testing import CliRunner

    from gsdf_model.infer_cli import main

    ckpt = torch.load(video_checkpoint, weights_only=True)
    ckpt["hand_model"] = "mano:0123abcd"  # trained on a MANO file this machine lacks
    torch.save(ckpt, tmp_path / "mano.pt")
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    args = [str(tmp_path / "a.png"), "--checkpoint", str(tmp_path / "mano.pt")]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "--mano" in lines[0], lines


@pytest.mark.gpu
def test_cuda_predicts_what_the_cpu_predicts(video_checkpoint):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device; none is available here")
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    K = default_intrinsics(160, 120)
    cpu = Predictor.load(video_checkpoint, resolution=16)(img, bbox=(30, 20, 110, 100), K=K)
    gpu = Predictor.load(video_checkpoint, device="cuda", resolution=16)
    out = gpu(img, bbox=(30, 20, 110, 100), K=K)
    assert next(gpu.net.parameters()).device.type == "cuda"
    np.testing.assert_allclose(out.joints, cpu.joints, atol=1e-3)  # TF32 convolutions
    np.testing.assert_allclose(out.obj_center, cpu.obj_center, atol=1e-3)
