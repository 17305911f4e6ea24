"""gsdf-data refuses, with one line, what is not what the user meant; and recovers where the
cause is gone. Shard sets are opened through their manifest, checksums are verified once,
`check` does not call an empty set ok, impossible options and unwritable outputs are refused
before any work, and pickles from outside can only hold what such files hold."""

import json
import os
import pickle
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from support.shard_samples import P, tiny_sample

from gsdf_data import shards as shards_module
from gsdf_data.cli import main
from gsdf_data.shards import ShardSet, ShardSetError, ShardWriter, check, write_manifest


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
    w.add(tiny_sample(0, rng))
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


# --- options and outputs -----------------------------------------------------------------


@pytest.mark.parametrize(
    "args, option",
    [
        (["sample", "m.obj", "--out", "x.npz", "--points", "-5"], "--points"),
        (["sample", "m.obj", "--out", "x.npz", "--min-per-side", "-1"], "--min-per-side"),
        (["check", ".", "--min-per-side", "-1"], "--min-per-side"),
        (["prepare", "synth", "--root", ".", "--out", "o", "--shard-size", "0"], "--shard-size"),
        (["prepare", "synth", "--root", ".", "--out", "o", "--points", "0"], "--points"),
        (["prepare", "synth", "--root", ".", "--out", "o", "--jobs", "0"], "--jobs"),
        (["prepare", "synth", "--root", ".", "--out", "o", "--limit", "0"], "--limit"),
    ],
)
def test_impossible_options_are_refused_by_name(args, option):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert option in res.output and "Traceback" not in res.output


def test_sample_checks_its_output_before_computing(tmp_path, monkeypatch):
    import trimesh

    from gsdf_data import sampling

    mesh = tmp_path / "ball.obj"
    trimesh.creation.icosphere(2, radius=0.05).export(mesh)
    monkeypatch.setattr(sampling, "sample_points", lambda *a, **k: pytest.fail("sampled"))
    (tmp_path / "file").write_text("x")
    res = CliRunner().invoke(main, ["sample", str(mesh), "--out", str(tmp_path / "file" / "a.npz")])
    _one_line_error(res, "--out", "cannot write")


@pytest.mark.parametrize(
    "command",
    [
        ["synth", "--samples", "2", "--out", "{blocked}"],
        ["synth", "--samples", "2", "--preview", "{blocked}.png"],
        ["show", "{data}", "--out", "{blocked}.png"],
    ],
)
def test_other_outputs_are_checked_before_work(tmp_path, data, command):
    (tmp_path / "file").write_text("x")
    blocked = str(tmp_path / "file" / "o")
    args = [a.format(blocked=blocked, data=data) for a in command]
    _one_line_error(CliRunner().invoke(main, args), "cannot write")


def test_os_and_package_errors_are_one_line_and_bugs_keep_their_traceback():
    import click

    from gsdf_data.cli.errors import OneLineErrors

    @click.group(cls=OneLineErrors)
    def cli():
        pass

    @cli.command()
    @click.argument("what")
    def fail(what):
        if what == "disk":
            raise OSError(28, "No space left on device", "/data/shard-00001.h5")
        if what == "shards":
            raise ShardSetError("/data: no manifest.json\n(second line)")
        raise ZeroDivisionError("a bug")

    res = CliRunner().invoke(cli, ["fail", "disk"])
    assert res.exit_code == 1
    assert res.output == "Error: /data/shard-00001.h5: No space left on device\n"
    res = CliRunner().invoke(cli, ["fail", "shards"])
    assert res.exit_code == 1
    assert res.output == "Error: /data: no manifest.json (second line)\n"
    res = CliRunner().invoke(cli, ["fail", "bug"])
    assert isinstance(res.exception, ZeroDivisionError)  # a bug is not dressed up as a user error


def test_prepare_checks_its_output_before_reading(tmp_path):
    (tmp_path / "file").write_text("x")
    args = ["prepare", "synth", "--root", str(tmp_path), "--out", str(tmp_path / "file" / "o")]
    _one_line_error(CliRunner().invoke(main, args), "--out", "cannot write")


# --- pickles from outside -----------------------------------------------------------------


class _RunsCode:
    """Pickles as a call of `func(arg)`: what a hostile file does on a plain unpickler."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def _payloads(marker):
    return [
        _RunsCode(exec, f"open({str(marker)!r}, 'w').close()"),
        _RunsCode(os.makedirs, str(marker)),
    ]


@pytest.mark.parametrize("which", [0, 1])
def test_mano_file_cannot_run_code(tmp_path, which, mano_fixture):
    from gsdf_data.hand.mano import MANOFileError, read_mano_pkl

    marker = tmp_path / "ran"
    arrays = mano_fixture.standin_arrays()
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({**arrays, "bad": _payloads(marker)[which]}, protocol=2))
    with pytest.raises(MANOFileError, match="refused to load"):
        read_mano_pkl(path)
    assert not marker.exists()
    res = CliRunner().invoke(main, ["hand", "show", "--mano", str(path), "--out", "h.png"])
    _one_line_error(res, "refused to load")
    assert not marker.exists()


def test_mano_standin_still_loads(tmp_path, mano_fixture):
    from gsdf_data.hand.mano import read_mano_pkl

    path = tmp_path / "MANO_RIGHT.pkl"
    want = mano_fixture.write_mano_standin(path)
    got = read_mano_pkl(path)
    for k in ("v_template", "J_regressor", "J", "shapedirs", "hands_mean"):
        np.testing.assert_allclose(got[k], want[k], err_msg=k)


def test_obman_meta_file_cannot_run_code(tmp_path):
    from gsdf_data.datasets.obman import read_meta

    marker = tmp_path / "ran"
    path = tmp_path / "00000001.pkl"
    path.write_bytes(pickle.dumps({"verts_3d": _payloads(marker)[0]}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"refused to load builtins\.exec"):
        read_meta(path)
    assert not marker.exists()
    good = {"a": np.arange(3.0), "b": "right", "c": 0.5, "d": np.float32(1), "e": [1, (2, 3)]}
    path.write_bytes(pickle.dumps(good, protocol=2))
    back = read_meta(path)
    np.testing.assert_array_equal(back["a"], good["a"])
    assert back["b"] == "right" and back["d"] == np.float32(1) and back["e"] == [1, (2, 3)]


# --- prepare: setup problems fail fast, changeable drops are retried, resume verifies ------


@pytest.fixture(scope="module")
def obman(tmp_path_factory, fixtures_obman):
    from gsdf_data.hand import load_hand

    return fixtures_obman.write_obman(tmp_path_factory.mktemp("obman"), load_hand(None))


def _prepare_obman(root, shapenet, out, *extra):
    args = ["prepare", "obman", "--root", str(root), "--shapenet", str(shapenet)]
    args += ["--out", str(out), "--points", "4000", *extra]
    return CliRunner().invoke(main, args)


def test_wrong_object_root_fails_fast_and_writes_no_manifest(obman, tmp_path):
    (tmp_path / "empty").mkdir()
    res = _prepare_obman(obman["root"], tmp_path / "empty", tmp_path / "o")
    _one_line_error(res, "every sample tried fails the same way", "no such file")
    assert not (tmp_path / "o" / "manifest.json").exists()
    assert not list((tmp_path / "o").glob("shard-*"))


def test_points_too_few_for_the_quota_fail_before_work(obman, tmp_path):
    res = _prepare_obman(obman["root"], obman["shapenet"], tmp_path / "o", "--points", "10")
    _one_line_error(res, "10 points per pair cannot hold 500 inside")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_missing_object_is_retried_after_it_is_restored(obman, tmp_path):
    from gsdf_data.datasets.obman import object_path, read_meta

    root = tmp_path / "obman"
    shutil.copytree(obman["root"], root)
    shapenet = tmp_path / "shapenet"
    shutil.copytree(obman["shapenet"], shapenet)
    obj = object_path(read_meta(root / "train" / "meta" / "00000017.pkl"), shapenet)
    saved = obj.read_bytes()
    obj.unlink()
    res = _prepare_obman(root, shapenet, tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "kept 2 of 5" in res.output and "1 may load on a rerun" in res.output
    bad = json.loads((tmp_path / "o" / "bad_samples.json").read_text())
    assert [b["sample_id"] for b in bad if b.get("retry")] == ["00000017"]
    assert not [b for b in bad if b["sample_id"] == "00000042" and b.get("retry")]
    obj.write_bytes(saved)
    res = _prepare_obman(root, shapenet, tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "kept 3 of 5" in res.output
    assert ShardSet(tmp_path / "o").sample_ids() == ["00000003", "00000017", "00001005"]


def test_unreadable_or_hostile_meta_file_is_one_bad_sample(obman, tmp_path):
    root = tmp_path / "obman"
    shutil.copytree(obman["root"], root)
    marker = tmp_path / "ran"
    meta = root / "train" / "meta"
    (meta / "00000003.pkl").write_bytes(b"\x80\x02}q\x00(X\x01")  # truncated
    (meta / "00000017.pkl").write_bytes(pickle.dumps(_payloads(marker)[0], protocol=2))
    res = _prepare_obman(root, obman["shapenet"], tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "kept 1 of 5" in res.output and "unreadable meta file" in res.output
    assert not marker.exists()
    bad = {b["sample_id"]: b["reason"] for b in json.loads((tmp_path / "o" / BAD).read_text())}
    assert "refused to load builtins.exec" in bad["00000017"]
    assert "unreadable meta file" in bad["00000003"]


BAD = "bad_samples.json"


def test_damaged_object_cache_entry_is_rebuilt(tmp_path):
    import trimesh

    from gsdf_data.object_cache import ObjectCache

    src = tmp_path / "box.obj"
    trimesh.creation.box((0.1, 0.1, 0.1)).export(src)
    cache = ObjectCache(str(tmp_path / "c"))
    want = cache.load(src)
    (entry,) = (tmp_path / "c").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # a cut-off zip
    got = cache.load(src)
    np.testing.assert_array_equal(got.faces, want.faces)
    with np.load(entry) as z:  # the entry itself was rewritten
        np.testing.assert_array_equal(z["faces"], want.faces)


def _pair(i):
    import trimesh

    from gsdf_data.prepare import Pair

    hand = trimesh.creation.capsule(height=0.08, radius=0.012, count=[12, 12])
    hand.apply_translation([0.0, 0.0, 0.5])
    obj = trimesh.creation.box((0.06, 0.05, 0.04))
    obj.apply_translation([0.03 + 0.002 * i, 0.0, 0.5])
    img = np.full((16, 16, 3), 10 * i, dtype=np.uint8)
    joints = np.linspace([0, 0, 0.45], [0, 0, 0.55], 21)
    return Pair(f"p{i}", hand, obj, img, np.diag([500.0, 500.0, 1.0]), joints)


def _config():
    from gsdf_data.prepare import PrepareConfig
    from gsdf_data.sampling import SamplingConfig

    return PrepareConfig(sampling=SamplingConfig(n=1000, min_per_side=50), shard_size=2)


class _NoBackend:
    """A task whose every load fails as an SDF backend without a display does."""

    def __init__(self, i):
        self.sample_id = f"p{i}"

    def load(self):
        raise RuntimeError("EGL: no display (pyrender could not create a context)")


def test_backend_failure_everywhere_fails_fast(tmp_path):
    from gsdf_data.prepare import PrepareError, prepare_pairs

    with pytest.raises(PrepareError, match="every sample tried fails the same way"):
        prepare_pairs([_NoBackend(i) for i in range(6)], tmp_path, _config(), progress=False)
    assert not (tmp_path / "manifest.json").exists()
    assert not list(tmp_path.glob("shard-*"))


def test_keeping_nothing_is_an_error_without_manifest(tmp_path):
    import trimesh

    from gsdf_data.prepare import PrepareError, prepare_pairs

    tasks = [_pair(i) for i in range(3)]
    for t in tasks:
        t.obj_mesh = trimesh.Trimesh()  # content: every sample is bad on its own
    with pytest.raises(PrepareError, match="kept none of the 3 samples"):
        prepare_pairs(tasks, tmp_path, _config(), progress=False)
    assert not (tmp_path / "manifest.json").exists()
    assert len(json.loads((tmp_path / BAD).read_text())) == 3


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from gsdf_data.prepare import prepare_pairs

    d = tmp_path_factory.mktemp("prepared")
    prepare_pairs([_pair(i) for i in range(4)], d, _config(), progress=False)
    return d


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_resume_redoes_a_damaged_shard_and_cleans_temporaries(prepared, tmp_path, damage):
    from gsdf_data.prepare import prepare_pairs

    d = tmp_path / "d"
    shutil.copytree(prepared, d)
    want = (d / "shard-00001.h5").read_bytes()
    path = d / "shard-00001.h5"
    raw = bytearray(want)
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    (d / ".shard-00001.h5.tmp-999999.h5").write_bytes(b"half")
    rep = prepare_pairs([_pair(i) for i in range(4)], d, _config(), progress=False)
    assert rep.shards_redone == ["shard-00001.h5"] and rep.shards_skipped == ["shard-00000.h5"]
    assert path.read_bytes() == want
    assert not (d / ".shard-00001.h5.tmp-999999.h5").exists()
    assert check(d) == []


def test_restored_image_moves_later_shards_and_they_are_redone(obman, tmp_path):
    """A missing image drops the sample in the reader, so every later task moves up one
    place; once the image is back, shards recorded for the old places hold other samples
    and must be redone, not reused."""
    root = tmp_path / "obman"
    shutil.copytree(obman["root"], root)
    img = root / "train" / "rgb" / "00000003.jpg"
    saved = img.read_bytes()
    img.unlink()
    out = tmp_path / "o"
    res = _prepare_obman(root, obman["shapenet"], out, "--shard-size", "2")
    assert res.exit_code == 0, res.output
    img.write_bytes(saved)
    res = _prepare_obman(root, obman["shapenet"], out, "--shard-size", "2")
    assert res.exit_code == 0, res.output
    assert "kept 3 of 5" in res.output
    assert ShardSet(out).sample_ids() == ["00000003", "00000017", "00001005"]
    assert check(out) == []
