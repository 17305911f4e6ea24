"""`gsdf-data hand show`: writes a picture with the hand and its coloured keypoints; a bad
MANO file is a one-line error, not a traceback."""

import cv2
from click.testing import CliRunner

from gsdf_data.cli import main


def test_hand_show_writes_a_picture(tmp_path):
    out = tmp_path / "hand.png"
    res = CliRunner().invoke(
        main, ["hand", "show", "--pose", "fist", "--out", str(out), "--size", "160"]
    )
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "procedural" in res.output
    img = cv2.imread(str(out))[..., ::-1]
    assert img.shape == (160, 320, 3)
    skin, skeleton = img[:, :160].astype(int), img[:, 160:].astype(int)
    # both panels show something about the hand's size, on a white background
    for panel in (skin, skeleton):
        fg = (panel < 245).any(-1).mean()
        assert 0.1 < fg < 0.7
    # skin tone on the left (red > green > blue), saturated keypoint colours on the right
    fg = (skin < 245).any(-1)
    r, g, b = skin[fg].mean(0)
    assert r > g > b
    sat = skeleton.max(-1) - skeleton.min(-1)
    assert (sat > 120).sum() > 30
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_hand_show_bad_mano_file(tmp_path):
    bad = tmp_path / "MANO_RIGHT.pkl"
    bad.write_bytes(b"\x00not a pickle")
    res = CliRunner().invoke(
        main, ["hand", "show", "--mano", str(bad), "--out", str(tmp_path / "x.png")]
    )
    assert res.exit_code != 0
    assert "MANO_RIGHT.pkl: not a MANO pickle" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "x.png").exists()
