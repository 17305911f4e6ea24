"""gsdf-data refuses, with one line, what is not what the user meant; and recovers where the
cause is gone. Shard sets are opened through their manifest, checksums are verified once,
`check` does not call an empty set ok, impossible options and unwritable outputs are refused
before any work, and pickles from outside can only hold what such files hold."""

import json
import pickle
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from gsdf_data import shards as shards_module
from gsdf_data.cli import main
from gsdf_data.shards import ShardSet, ShardSetError, ShardWriter, check, write_manifest

P = 600


def _sample(i, rng):
    pts = rng.uniform(-1, 1, (P, 3)).astype(np.float32)
    return {
        "sample_id": f"s{i}",
        "image": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
        "K": np.eye(3),
        "joints": rng.normal(size=(21, 3)),
        "obj_center": np.zeros(3),
        "norm_offset": np.zeros(3),
        "norm_scale": 0.1,
        "points": pts,
        "sdf_hand": np.linalg.norm(pts, axis=1) - 0.5,
        "sdf_obj": np.linalg.norm(pts - 0.3, axis=1) - 0.4,
        "hand_verts": rng.normal(size=(4, 3)),
        "hand_faces": [[0, 1, 2]],
        "obj_verts": rng.normal(size=(4, 3)),
        "obj_faces": [[0, 1, 2]],
    }


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    """Three samples in two shards with their manifest: a finished prepare."""
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    entries = []
    for j, ids in enumerate(([0, 1], [2])):
        w = ShardWriter(root / f"shard-{j:05d}.h5", n_points=P)
        for i in ids:
            w.add(_sample(i, rng))
        entries.append(w.close())
    write_manifest(root, entries, {"expected_shards": 2, "config": {}})
    return root


@pytest.fixture()
def data(tmp_path, shard_set):
    d = tmp_path / "data"
    shutil.copytree(shard_set, d)
    return d


def _one_line_error(res, *words):
    assert res.exit_code != 0, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    lines = [x for x in res.output.splitlines() if x.startswith("Error")]
    assert len(lines) == 1, res.output
    for w in words:
        assert w in lines[0], res.output


# --- shard sets through their manifest ---------------------------------------------------


def test_shardset_refuses_a_set_without_manifest(data):
    (data / "manifest.json").unlink()
    with pytest.raises(ShardSetError, match=r"no manifest\.json"):
        ShardSet(data)
    assert len(ShardSet(data, allow_partial=True)) == 3


def test_shardset_refuses_missing_extra_and_incomplete(data):
    m = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps({**m, "expected_shards": 4}))
    with pytest.raises(ShardSetError, match="2 of 4 shards"):
        ShardSet(data)
    (data / "manifest.json").write_text(json.dumps(m))
    shutil.copy(data / "shard-00001.h5", data / "shard-00002.h5")
    with pytest.raises(ShardSetError, match=r"shard-00002\.h5"):
        ShardSet(data)
    assert len(ShardSet(data, allow_partial=True)) == 3  # the unlisted file is not used
    (data / "shard-00000.h5").unlink()
    with pytest.raises(ShardSetError, match="missing"):
        ShardSet(data)
    assert len(ShardSet(data, allow_partial=True)) == 1


def test_checksums_are_verified_once_and_again_when_the_file_changes(data, monkeypatch):
    hashed = []
    real = shards_module.file_sha256
    monkeypatch.setattr(shards_module, "file_sha256", lambda p: hashed.append(p) or real(p))
    ShardSet(data)
    assert len(hashed) == 2
    ShardSet(data)
    assert len(hashed) == 2  # cached by size and mtime: no second read of the data
    path = data / "shard-00001.h5"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))  # same size, new mtime
    with pytest.raises(ShardSetError, match=r"checksum mismatch in shard-00001\.h5"):
        ShardSet(data)
    assert len(hashed) == 3
    # the damaged shard stays refused (no cached "verified" for it)
    with pytest.raises(ShardSetError, match="checksum"):
        ShardSet(data)


def test_fingerprint_follows_the_data(data, tmp_path):
    a = ShardSet(data)
    assert pickle.loads(pickle.dumps(a)).fingerprint == a.fingerprint
    other = tmp_path / "other"
    rng = np.random.default_rng(9)
    w = ShardWriter(other / "shard-00000.h5", n_points=P)
    w.add(_sample(0, rng))
    write_manifest(other, [w.close()], {"expected_shards": 1, "config": {}})
    assert ShardSet(other).fingerprint != a.fingerprint


def test_check_does_not_call_an_empty_set_ok(tmp_path):
    w = ShardWriter(tmp_path / "shard-00000.h5", n_points=P)
    write_manifest(tmp_path, [w.close()], {"expected_shards": 1, "config": {}})
    assert any("no samples" in p for p in check(tmp_path))
    res = CliRunner().invoke(main, ["check", str(tmp_path)])
    assert res.exit_code == 1 and "ok:" not in res.output


def test_check_reports_broken_manifest_entries_in_one_line(data):
    m = json.loads((data / "manifest.json").read_text())
    m["shards"][0].pop("file")
    (data / "manifest.json").write_text(json.dumps(m))
    res = CliRunner().invoke(main, ["check", str(data)])
    _one_line_error(res, "problem")
    assert "broken shard entry" in res.output


def test_show_refuses_an_incomplete_set(data, tmp_path):
    (data / "shard-00001.h5").unlink()
    res = CliRunner().invoke(main, ["show", str(data), "--out", str(tmp_path / "x.png")])
    _one_line_error(res, "missing")
