"""`gsdf-data sample`, `check` and `show` through click: outputs, exit codes, one-line errors."""

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner

from gsdf_data.cli import main
from gsdf_data.prepare import Pair, PrepareConfig, prepare_pairs
from gsdf_data.sampling import SamplingConfig


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    hand = trimesh.creation.capsule(height=0.08, radius=0.012, count=[12, 12])
    hand.apply_translation([0.0, 0.0, 0.5])
    obj = trimesh.creation.box((0.06, 0.05, 0.04))
    obj.apply_translation([0.03, 0.0, 0.5])
    img = np.zeros((64, 64, 3), np.uint8)
    K = np.array([[100.0, 0, 32], [0, 100.0, 32], [0, 0, 1]])
    pairs = [Pair(f"p{i}", hand, obj, img, K, np.zeros((21, 3))) for i in range(2)]
    cfg = PrepareConfig(sampling=SamplingConfig(n=1500, min_per_side=50), shard_size=1)
    prepare_pairs(pairs, d, cfg, progress=False)
    return d


def test_check_ok_and_failing(shard_dir, tmp_path):
    r = CliRunner().invoke(main, ["check", str(shard_dir)])
    assert r.exit_code == 0, r.output
    assert "ok: 2 samples in 2 shards" in r.output
    r = CliRunner().invoke(main, ["check", str(tmp_path / "none")])
    assert r.exit_code != 0
    assert "Traceback" not in r.output


def test_show_writes_png(shard_dir, tmp_path):
    out = tmp_path / "x.png"
    r = CliRunner().invoke(main, ["show", str(shard_dir), "--index", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(main, ["show", str(shard_dir), "--index", "9", "--out", str(out)])
    assert r.exit_code != 0 and "out of range" in r.output


def test_sample_single_mesh_in_its_own_frame(tmp_path):
    mesh = trimesh.creation.box((0.2, 0.2, 0.2))
    mesh.apply_translation([1.0, 2.0, 3.0])
    path = tmp_path / "box.obj"
    mesh.export(path)
    out = tmp_path / "s.npz"
    r = CliRunner().invoke(main, ["sample", str(path), "--points", "3000", "--out", str(out)])
    assert r.exit_code == 0, r.output
    z = np.load(out)
    p, sdf = z["points"], z["sdf"]
    assert p.shape == (3000, 3) and sdf.shape == (3000,)
    q = np.abs(p - [1.0, 2.0, 3.0]) - 0.1
    exact = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)
    np.testing.assert_allclose(sdf, exact, atol=1e-5)
    np.testing.assert_allclose(z["points_unit"] * z["norm_scale"] + z["norm_offset"], p, atol=1e-5)


def test_sample_pair_and_user_errors(tmp_path):
    a, b = tmp_path / "a.obj", tmp_path / "b.obj"
    trimesh.creation.icosphere(2, radius=0.1).export(a)
    trimesh.creation.box((0.1, 0.1, 0.1)).export(b)
    out = tmp_path / "p.npz"
    r = CliRunner().invoke(main, ["sample", str(a), str(b), "--points", "3000", "--out", str(out)])
    assert r.exit_code == 0, r.output
    z = np.load(out)
    assert {"sdf_hand", "sdf_obj"} <= set(z.files)
    r = CliRunner().invoke(main, ["sample", str(tmp_path / "no.obj"), "--out", str(out)])
    assert r.exit_code != 0 and "no such file" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["sample", str(a), "--points", "500", "--out", str(out)])
    assert r.exit_code != 0 and "need 500" in r.output
