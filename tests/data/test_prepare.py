"""prepare_pairs: bad samples, strict mode, k/n sharding, processes, Dask, resume after kill."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import trimesh

from gsdf_data.prepare import BadSampleError, Pair, PrepareConfig, prepare_pairs
from gsdf_data.sampling import SamplingConfig
from gsdf_data.shards import ShardSet, check

CFG = PrepareConfig(sampling=SamplingConfig(n=2000, min_per_side=50), shard_size=2)


def make_pair(i: int) -> Pair:
    hand = trimesh.creation.capsule(height=0.08, radius=0.012, count=[12, 12])
    hand.apply_translation([0.0, 0.0, 0.5])
    obj = trimesh.creation.box((0.06, 0.05, 0.04))
    obj.apply_translation([0.03 + 0.002 * i, 0.0, 0.5])
    img = np.full((16, 16, 3), 10 * i, dtype=np.uint8)
    joints = np.linspace([0, 0, 0.45], [0, 0, 0.55], 21)
    return Pair(
        f"p{i}", hand, obj, img, np.diag([500.0, 500.0, 1.0]), joints, seq_id="s", frame_idx=i
    )


def _arrays(d):
    ss = ShardSet(d)
    return [ss[i] for i in range(len(ss))]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], np.ndarray):
                np.testing.assert_array_equal(x[k], y[k], err_msg=k)
            else:
                assert x[k] == y[k], k


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    prepare_pairs([make_pair(i) for i in range(5)], d, CFG, progress=False)
    return d


def test_outputs_manifest_and_check(reference):
    assert check(reference) == []
    m = json.loads((reference / "manifest.json").read_text())
    assert m["n_samples"] == 5 and m["n_shards"] == 3 and m["expected_shards"] == 3
    assert m["config"]["sampling"]["n"] == 2000
    ss = ShardSet(reference)
    assert [ss[i]["sample_id"] for i in range(5)] == [f"p{i}" for i in range(5)]
    s = ss[2]
    # unit-cube points map back to the camera frame, where the SDF is the mesh's
    pair = make_pair(2)
    cam = s["points"].astype(np.float64) * s["norm_scale"] + s["norm_offset"]
    from gsdf_data.sdf import signed_distance

    ref = signed_distance(pair.obj_mesh, cam[:300]) / s["norm_scale"]
    np.testing.assert_allclose(s["sdf_obj"][:300], ref, atol=2e-4, rtol=2e-3)
    hi = (s["sdf_hand"] < 0).sum()
    assert 50 <= hi <= 1950


def test_bad_samples_reported_and_strict(tmp_path):
    good = [make_pair(i) for i in range(3)]
    empty = make_pair(3)
    empty.obj_mesh = trimesh.Trimesh()
    nan = make_pair(4)
    nan.joints = np.full((21, 3), np.nan)
    sheet = make_pair(5)
    s = trimesh.creation.icosphere(2, radius=0.05)
    sheet.obj_mesh = trimesh.Trimesh(s.vertices, s.faces[s.triangles_center[:, 2] < 0])
    tasks = [*good, empty, nan, sheet]
    rep = prepare_pairs(tasks, tmp_path / "a", CFG, progress=False)
    assert rep.n_written == 3
    bad = json.loads((tmp_path / "a" / "bad_samples.json").read_text())
    reasons = {b["sample_id"]: b["reason"] for b in bad}
    assert set(reasons) == {"p3", "p4", "p5"}
    assert "empty" in reasons["p3"]
    assert "non-finite" in reasons["p4"]
    assert "double-sided" in reasons["p5"]
    assert check(tmp_path / "a") == []
    with pytest.raises(BadSampleError, match="p3"):
        prepare_pairs(tasks, tmp_path / "b", CFG, strict=True, progress=False)


def test_pose_only_keeps_a_sound_pose_without_sdf_and_drops_the_rest(tmp_path, reference):
    """pose_only: a pair whose SDF part fails (the double-sided sheet) keeps its pose, with
    the object's box centre; one whose pose is unusable too stays a bad sample, its reasons
    both named; the samples with points are those of a run without the option."""
    good = [make_pair(i) for i in range(3)]
    empty = make_pair(3)
    empty.obj_mesh = trimesh.Trimesh()  # no SDF and no object centre
    nan = make_pair(4)
    nan.joints = np.full((21, 3), np.nan)
    sheet = make_pair(5)
    s = trimesh.creation.icosphere(2, radius=0.05)
    sheet.obj_mesh = trimesh.Trimesh(s.vertices, s.faces[s.triangles_center[:, 2] < 0])
    cfg = dataclasses.replace(CFG, pose_only=True)
    rep = prepare_pairs([*good, empty, nan, sheet], tmp_path / "a", cfg, progress=False)
    assert (rep.n_written, rep.n_pose_only) == (3, 1)
    reasons = {b["sample_id"]: b["reason"] for b in json.loads((tmp_path / "a" / BAD).read_text())}
    assert set(reasons) == {"p3", "p4"}
    assert reasons["p3"].startswith("object mesh: empty mesh; not kept as pose-only: no object")
    assert reasons["p4"] == "non-finite values in joints"  # not repeated
    ss = ShardSet(tmp_path / "a")
    assert ss.sample_ids() == ["p0", "p1", "p2"] and ss.n_pose_only == 1
    p5 = ss.with_pose_only()[3]
    assert p5["sample_id"] == "p5" and p5["frame_idx"] == 5 and p5["seq_id"] == "s"
    v = np.asarray(sheet.obj_mesh.vertices)
    np.testing.assert_allclose(p5["obj_center"], (v.min(0) + v.max(0)) / 2, atol=1e-6)
    np.testing.assert_allclose(p5["joints"], sheet.joints, atol=1e-6)
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["pose_only_reasons"] == {"double-sided filter": 1} and m["n_bad"] == 2
    assert check(tmp_path / "a") == []
    _same(_arrays(tmp_path / "a"), _arrays(reference)[:3])


BAD = "bad_samples.json"


def test_shard_k_of_n_and_processes_match_reference(tmp_path, reference):
    tasks = [make_pair(i) for i in range(5)]
    d = tmp_path / "kn"
    r0 = prepare_pairs(tasks, d, CFG, shard="1/2", progress=False)
    assert r0.shards_written == ["shard-00001.h5"]
    assert check(d) != []  # incomplete until the other job ran
    r1 = prepare_pairs(tasks, d, CFG, shard=(0, 2), jobs=2, progress=False)
    assert r1.shards_written == ["shard-00000.h5", "shard-00002.h5"]
    assert check(d) == []
    _same(_arrays(d), _arrays(reference))


def test_dask_backend_matches_reference(tmp_path, reference):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        tasks = [make_pair(i) for i in range(5)]
        prepare_pairs(
            tasks,
            tmp_path,
            CFG,
            backend="dask",
            scheduler=cluster.scheduler_address,
            progress=False,
        )
    assert check(tmp_path) == []
    _same(_arrays(tmp_path), _arrays(reference))


def test_open3d_is_a_deprecated_name_of_our_backend():
    with pytest.warns(FutureWarning, match="deprecated name of 'ours'"):
        old = SamplingConfig(n=2000, min_per_side=50, backend="open3d")
    assert old == SamplingConfig(n=2000, min_per_side=50, backend="ours")
    assert PrepareConfig(sampling=old).to_dict()["sampling"]["backend"] == "ours"


def test_a_set_made_under_the_old_backend_name_resumes_without_redoing(tmp_path):
    """A shard set written before the rename records backend "open3d" and the distance engine
    "bvh" (a field sampling configurations had then), and digests of that configuration: it
    opens, its configuration reads, and a resume with "ours" keeps its shards."""
    import dataclasses
    import hashlib
    import warnings

    new = dataclasses.replace(CFG, sampling=dataclasses.replace(CFG.sampling, backend="ours"))
    pairs = [make_pair(i) for i in range(5)]
    prepare_pairs(pairs, tmp_path, new, progress=False)
    # rewrite it as the old code wrote it (its digest: sha256 of the sorted-key JSON)
    old = new.to_dict()
    old["sampling"].update(backend="open3d", distance_engine="bvh")
    legacy = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert legacy in new.digests()
    for p in [tmp_path / "manifest.json", *sorted(tmp_path.glob("shard-*.json"))]:
        d = json.loads(p.read_text())
        d["config_digest"] = legacy
        if "config" in d:
            d["config"] = old
        p.write_text(json.dumps(d))
    with pytest.warns(FutureWarning, match="deprecated name"):
        assert PrepareConfig.from_dict(old) == new
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # opening it needs no configuration at all
        assert len(ShardSet(tmp_path)) == 5
    for p in tmp_path.glob("shard-00002.*"):  # as if the old run had stopped before its end
        p.unlink()
    rep = prepare_pairs(pairs, tmp_path, new, progress=False)
    assert rep.shards_skipped == ["shard-00000.h5", "shard-00001.h5"] and not rep.shards_redone
    assert rep.shards_written == ["shard-00002.h5"]
    assert (
        json.loads((tmp_path / "manifest.json").read_text())["config"]["sampling"]["backend"]
        == "ours"
    )
    assert check(tmp_path) == []


def test_other_config_is_refused(tmp_path, reference):
    import shutil

    d = tmp_path / "x"
    shutil.copytree(reference, d)
    with pytest.raises(ValueError, match="another configuration"):
        prepare_pairs([make_pair(i) for i in range(5)], d, PrepareConfig(), progress=False)


SCRIPT = """
import sys, time
sys.setrecursionlimit(10000)
from importlib.machinery import SourceFileLoader
mod = SourceFileLoader("prep_mod", {test_file!r}).load_module()
from gsdf_data.prepare import prepare_pairs

class Slow:
    def __init__(self, i):
        self.sample_id = f"p{{i}}"
        self.i = i
    def load(self):
        time.sleep({delay})
        return mod.make_pair(self.i)

prepare_pairs([Slow(i) for i in range(7)], sys.argv[1], mod.CFG, progress=False)
"""


def _script(tmp_path, delay):
    path = tmp_path / f"run_{delay}.py"
    path.write_text(textwrap.dedent(SCRIPT.format(test_file=__file__, delay=delay)))
    return path


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(_script(tmp_path, 0.4)), str(killed)], env=env)
    try:
        deadline = time.time() + 120
        while not (killed / "shard-00001.json").exists():
            assert proc.poll() is None, "run ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (killed / "shard-00003.h5").exists()
    done_before = {p.name: p.stat().st_mtime_ns for p in killed.glob("shard-*.h5")}
    assert check(killed) != []
    subprocess.run([sys.executable, str(_script(tmp_path, 0.0)), str(killed)], env=env, check=True)
    subprocess.run([sys.executable, str(_script(tmp_path, 0.0)), str(full)], env=env, check=True)
    # finished shards were not redone
    for name, mtime in done_before.items():
        if (killed / name.replace(".h5", ".json")).exists():
            assert (killed / name).stat().st_mtime_ns == mtime
    assert check(killed) == []
    _same(_arrays(killed), _arrays(full))
    mk = json.loads((killed / "manifest.json").read_text())
    mf = json.loads((full / "manifest.json").read_text())
    assert [s["sha256"] for s in mk["shards"]] == [s["sha256"] for s in mf["shards"]]


def test_cli_accepts_the_old_backend_name_with_one_warning_line(tmp_path):
    from click.testing import CliRunner

    from gsdf_data.cli import main

    ball = trimesh.creation.icosphere(2, radius=0.05)
    ball.apply_translation([0.0, 0.0, 0.6])
    ball.export(tmp_path / "ball.obj")
    args = ["sample", str(tmp_path / "ball.obj"), "--points", "1000", "--min-per-side", "50"]
    outs = {}
    for name in ("ours", "open3d"):
        out = tmp_path / f"{name}.npz"
        r = CliRunner().invoke(main, [*args, "--sdf-backend", name, "--out", str(out)])
        assert r.exit_code == 0, r.output
        warned = [x for x in r.stderr.splitlines() if "deprecated" in x]
        assert warned == ([] if name == "ours" else ["warning: --sdf-backend open3d is a "
                                                      "deprecated name of ours (same code)"])  # fmt: skip
        outs[name] = np.load(out)
    np.testing.assert_array_equal(outs["ours"]["sdf"], outs["open3d"]["sdf"])
