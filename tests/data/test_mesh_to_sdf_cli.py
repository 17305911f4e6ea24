"""`gsdf-data sample --sdf-backend mesh-to-sdf` on a machine without a display: the comparison
backend picks a headless OpenGL platform itself, or says in one line that none works."""

import os
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from gsdf_data.render import headless_platform
from gsdf_data.sdf import brute_force_distance, brute_force_winding_number

pytest.importorskip("mesh_to_sdf")

CLI = "import sys; from gsdf_data.cli import main; sys.argv[0] = 'gsdf-data'; main()"


def _no_display_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("PYOPENGL_PLATFORM", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


@pytest.mark.slow  # mesh-to-sdf renders 100 views of 400x400 per call (~15-30 CPU s)
def test_sample_with_mesh_to_sdf_runs_headless(tmp_path):
    ball = trimesh.creation.icosphere(2, radius=0.05)
    ball.apply_translation([0.02, -0.01, 0.6])  # a 5 cm ball 60 cm in front of the camera
    ball.export(tmp_path / "ball.obj")
    out = tmp_path / "s.npz"
    args = ["sample", str(tmp_path / "ball.obj"), "--sdf-backend", "mesh-to-sdf"]
    args += ["--points", "2000", "--min-per-side", "100", "--out", str(out)]
    r = subprocess.run(
        [sys.executable, "-c", CLI, *args],
        env=_no_display_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    z = np.load(out)
    p, sd = z["points"].astype(np.float64), z["sdf"].astype(np.float64)
    # against brute force: exact distance and the winding number's side
    d = brute_force_distance(ball.vertices, ball.faces, p)
    inside = brute_force_winding_number(ball.vertices, ball.faces, p) > 0.5
    far = d > 0.002
    assert far.sum() > 300
    assert np.array_equal((sd < 0)[far], inside[far])
    assert np.median(np.abs(np.abs(sd) - d)) < 5e-4
    np.testing.assert_allclose(
        p, z["points_unit"] * z["norm_scale"] + z["norm_offset"], rtol=0, atol=1e-6
    )


def test_no_working_platform_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delitem(sys.modules, "OpenGL", raising=False)
    with pytest.raises(RuntimeError, match="no headless OpenGL platform works here"):
        headless_platform(("no-such-platform",))
    assert "PYOPENGL_PLATFORM" not in os.environ
    # a user's choice is left alone
    monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa")
    assert headless_platform(("no-such-platform",)) is None
