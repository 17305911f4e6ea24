"""Shard schema round trip, balanced subsampling, manifest and check."""

import json

import numpy as np
import pytest

from gsdf_data.shards import (
    ShardSet,
    ShardWriter,
    categories,
    check,
    dequantize_points,
    encode_sample,
    quantize_points,
    write_manifest,
)

P = 3000


def _sample(i, rng, n_points=P):
    pts = rng.uniform(-1, 1, (n_points, 3)).astype(np.float32)
    sh = (np.linalg.norm(pts - np.array([0.3, 0, 0]), axis=1) - 0.4).astype(np.float32)
    so = (np.linalg.norm(pts - np.array([-0.3, 0, 0]), axis=1) - 0.5).astype(np.float32)
    img = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    return {
        "sample_id": f"id{i}",
        "seq_id": f"seq{i // 2}",
        "frame_idx": i,
        "image": img,
        "K": np.eye(3) * (i + 1),
        "joints": rng.normal(size=(21, 3)),
        "hand_rotmats": None if i % 2 else np.tile(np.eye(3), (16, 1, 1)),
        "obj_center": rng.normal(size=3),
        "obj_pose": np.eye(4),
        "norm_offset": rng.normal(size=3),
        "norm_scale": 0.2 + i,
        "points": pts,
        "sdf_hand": sh,
        "sdf_obj": so,
        "hand_verts": rng.normal(size=(10 + i, 3)),
        "hand_faces": rng.integers(0, 10, (7 + i, 3)),
        "obj_verts": rng.normal(size=(5 + 2 * i, 3)),
        "obj_faces": rng.integers(0, 5, (3 + i, 3)),
    }


def _write(tmp_path, samples, precision, per_shard=2):
    entries = []
    for s0 in range(0, len(samples), per_shard):
        w = ShardWriter(
            tmp_path / f"shard-{s0 // per_shard:05d}.h5", n_points=P, precision=precision
        )
        for s in samples[s0 : s0 + per_shard]:
            w.add(s)
        entries.append(w.close())
    write_manifest(tmp_path, entries, {"expected_shards": len(entries), "config": {}})
    return entries


def _stored_order(s):
    cat = categories(s["sdf_hand"], s["sdf_obj"])
    return np.argsort(cat, kind="stable")


def test_full_precision_round_trip_is_identical(tmp_path):
    rng = np.random.default_rng(0)
    samples = [_sample(i, rng) for i in range(5)]
    _write(tmp_path, samples, "full")
    ss = ShardSet(tmp_path)
    assert len(ss) == 5
    for i, s in enumerate(samples):
        got = ss[i]
        o = _stored_order(s)
        np.testing.assert_array_equal(got["points"], s["points"][o])
        np.testing.assert_array_equal(got["sdf_hand"], s["sdf_hand"][o])
        np.testing.assert_array_equal(got["sdf_obj"], s["sdf_obj"][o])
        np.testing.assert_array_equal(got["image"], s["image"])
        for k in ("K", "joints", "obj_center", "obj_pose", "norm_offset"):
            np.testing.assert_array_equal(got[k], np.asarray(s[k], np.float32))
        assert got["norm_scale"] == np.float32(s["norm_scale"])
        if s["hand_rotmats"] is None:
            assert np.isnan(got["hand_rotmats"]).all()
        else:
            np.testing.assert_array_equal(got["hand_rotmats"], s["hand_rotmats"])
        for k in ("hand_verts", "obj_verts"):
            np.testing.assert_array_equal(got[k], np.asarray(s[k], np.float32))
        for k in ("hand_faces", "obj_faces"):
            np.testing.assert_array_equal(got[k], s[k])
            assert got[k].dtype == np.int32
        assert (got["sample_id"], got["seq_id"], got["frame_idx"]) == (
            s["sample_id"],
            s["seq_id"],
            i,
        )
    assert ss.sample_ids() == [s["sample_id"] for s in samples]
    assert check(tmp_path) == []


def test_compact_round_trip_error_bounds_and_idempotence(tmp_path):
    rng = np.random.default_rng(1)
    samples = [_sample(i, rng) for i in range(3)]
    _write(tmp_path / "a", samples, "compact")
    ss = ShardSet(tmp_path / "a")
    back = []
    for i, s in enumerate(samples):
        got = ss[i]
        o = _stored_order(s)
        assert np.abs(got["points"] - s["points"][o]).max() <= 1.0 / 65535 + 1e-7
        err = np.abs(got["sdf_hand"] - s["sdf_hand"][o])
        assert np.all(err <= np.abs(s["sdf_hand"][o]) * 2**-11 + 1e-7)
        assert np.array_equal(got["sdf_hand"] < 0, s["sdf_hand"][o] < 0)
        back.append({**s, **{k: got[k] for k in ("points", "sdf_hand", "sdf_obj")}})
    # writing what was read gives the same stored values
    _write(tmp_path / "b", back, "compact")
    ss2 = ShardSet(tmp_path / "b")
    for i in range(3):
        for k in ("points", "sdf_hand", "sdf_obj"):
            np.testing.assert_array_equal(ss2[i][k], ss[i][k])


def test_quantization_is_exact_on_grid():
    q = np.array([[0, 1, 65535], [32767, 32768, 12345]], dtype=np.uint16)
    np.testing.assert_array_equal(quantize_points(dequantize_points(q)), q)


def test_sample_sdf_is_balanced(tmp_path):
    rng = np.random.default_rng(2)
    _write(tmp_path, [_sample(i, rng) for i in range(2)], "compact")
    ss = ShardSet(tmp_path)
    full = ss[1]
    r = ss.sample_sdf(1, 200, 100, np.random.default_rng(0))
    assert r["points"].shape == (300, 3)
    assert (r["sdf_hand"][:100] < 0).all() and (r["sdf_hand"][100:200] >= 0).all()
    assert (r["sdf_obj"][200:250] < 0).all() and (r["sdf_obj"][250:] >= 0).all()
    # every drawn point is one of the sample's points, with its SDFs
    key = {
        tuple(p): (a, b)
        for p, a, b in zip(
            map(tuple, full["points"]), full["sdf_hand"], full["sdf_obj"], strict=True
        )
    }
    for p, a, b in zip(map(tuple, r["points"]), r["sdf_hand"], r["sdf_obj"], strict=True):
        assert key[p] == (a, b)
    # without replacement inside a category on request
    r3 = ss.sample_sdf(1, 200, 100, np.random.default_rng(1), replace=False)
    assert len({tuple(p) for p in r3["points"][:100]}) == 100
    assert (r3["sdf_hand"][:100] < 0).all() and (r3["sdf_obj"][250:] >= 0).all()
    # with replacement (default), every point of a category can be drawn
    hand_in = {
        tuple(p) for p, a in zip(map(tuple, full["points"]), full["sdf_hand"], strict=True) if a < 0
    }
    seen = set()
    rng = np.random.default_rng(3)
    for _ in range(200):
        seen |= {tuple(p) for p in ss.sample_sdf(1, 200, 0, rng)["points"][:100]}
    assert seen == hand_in
    # deterministic for a given generator
    r2 = ss.sample_sdf(1, 200, 100, np.random.default_rng(0))
    np.testing.assert_array_equal(r["points"], r2["points"])


def test_corrupt_byte_fails_check(tmp_path):
    rng = np.random.default_rng(3)
    entries = _write(tmp_path, [_sample(i, rng) for i in range(4)], "compact")
    assert check(tmp_path) == []
    path = tmp_path / entries[1]["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    problems = check(tmp_path)
    assert any("checksum" in p for p in problems)


def test_check_finds_missing_and_inconsistent(tmp_path):
    rng = np.random.default_rng(4)
    entries = _write(tmp_path, [_sample(i, rng) for i in range(4)], "compact")
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["expected_shards"] = 3
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert any("incomplete" in p for p in check(tmp_path))
    (tmp_path / entries[0]["file"]).unlink()
    assert any("missing" in p for p in check(tmp_path))
    (tmp_path / ".shard-00009.h5.tmp-1.h5").write_bytes(b"x")
    assert any("interrupted" in p for p in check(tmp_path))
    assert check(tmp_path / "nope") != []


def test_check_enforces_sign_quota(tmp_path):
    rng = np.random.default_rng(5)
    _write(tmp_path, [_sample(0, rng)], "compact")
    assert check(tmp_path, min_per_side=10) == []
    assert any("need" in p for p in check(tmp_path, min_per_side=P))


def test_writer_rejects_bad_shapes(tmp_path):
    rng = np.random.default_rng(6)
    s = _sample(0, rng)
    w = ShardWriter(tmp_path / "x.h5", n_points=P + 1)
    with pytest.raises(ValueError, match="points"):
        w.add(s)
    w = ShardWriter(tmp_path / "x.h5", n_points=P)
    with pytest.raises(ValueError, match="joints"):
        w.add({**s, "joints": np.zeros((20, 3))})
    assert not (tmp_path / "x.h5").exists()


def test_shardset_pickles_for_worker_processes(tmp_path):
    import pickle

    rng = np.random.default_rng(7)
    _write(tmp_path, [_sample(i, rng) for i in range(3)], "compact")
    ss = ShardSet(tmp_path)
    a = ss[2]["points"]
    ss2 = pickle.loads(pickle.dumps(ss))
    np.testing.assert_array_equal(ss2[2]["points"], a)
    assert set(ss.get(2, keys=("K",))) == {"K"}


def test_encoded_samples_write_the_same_shard(tmp_path):
    """What workers send (encode_sample) stores exactly what a plain sample stores."""
    rng = np.random.default_rng(5)
    samples = [_sample(i, rng) for i in range(3)]
    sets = []
    for name, items in (("plain", samples), ("enc", [encode_sample(s, P) for s in samples])):
        w = ShardWriter(tmp_path / name / "shard-00000.h5", n_points=P)
        for s in items:
            w.add(s)
        write_manifest(tmp_path / name, [w.close()], {"expected_shards": 1, "config": {}})
        sets.append(ShardSet(tmp_path / name))
    for i in range(3):
        x, y = sets[0][i], sets[1][i]
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)
    w = ShardWriter(tmp_path / "x.h5", n_points=P, precision="full")
    with pytest.raises(ValueError, match="other shard settings"):
        w.add(encode_sample(samples[0], P))  # encoded compact, written full


def test_cached_fields_read_as_the_file_holds_them(tmp_path):
    """get() serves per-sample fields from a per-process cache: the same values as a direct
    h5py read, for every sample of every shard, and a caller's edit does not leak into it."""
    import h5py

    rng = np.random.default_rng(11)
    _write(tmp_path, [_sample(i, rng) for i in range(5)], "compact")
    ss = ShardSet(tmp_path)
    keys = ("sample_id", "K", "joints", "norm_scale", "frame_idx", "image")
    for i in (3, 0, 4, 1, 2):
        got = ss.get(i, keys=keys)
        with h5py.File(tmp_path / f"shard-{i // 2:05d}.h5", "r") as f:
            j = i % 2
            assert got["sample_id"] == f["sample_id"][j].decode()
            assert got["frame_idx"] == int(f["frame_idx"][j])
            for k in ("K", "joints", "norm_scale"):
                np.testing.assert_array_equal(got[k], f[k][j], err_msg=k)
        got["K"][:] = -1.0
        assert ss.get(i, keys=("K",))["K"][0, 0] == np.float32(i + 1)


@pytest.mark.parametrize("quality,sampling", [(95, 0x221111), (75, 0x411111)])
def test_jpeg_decoders_agree_pixel_for_pixel(monkeypatch, quality, sampling):
    """simplejpeg (when installed) and the OpenCV fallback give the same RGB pixels."""
    import cv2

    from gsdf_data import shards

    if shards._simplejpeg() is None:
        pytest.skip("simplejpeg not installed: only the OpenCV path exists")
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8), (5, 5), 2)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling]
    _, buf = cv2.imencode(".jpg", img, params)
    fast = shards.decode_image(buf.tobytes())
    monkeypatch.setattr(shards, "_simplejpeg", lambda: None)
    slow = shards.decode_image(buf.tobytes())
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(slow, cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])
    assert fast.shape == (64, 80, 3) and fast.dtype == np.uint8


def test_pose_only_samples_are_a_second_index_and_checked(tmp_path):
    """Pose-only samples (no points) sit in their shard's own group: the set indexes the
    samples with points as before; `with_pose_only` appends them (a shard may hold nothing
    else); `check` compares their count with the manifest and finds non-finite poses."""
    import h5py
    from support.shard_samples import write_finished_set

    from gsdf_data.shards import encode_pose_sample

    d = tmp_path / "d"
    d.mkdir()
    write_finished_set(d, pose_only=3)
    ss = ShardSet(d)
    assert (len(ss), ss.n_pose_only, ss.n_shards) == (3, 3, 2)
    assert ss.sample_ids() == ["s0", "s1", "s2"]
    pose = ss.with_pose_only()
    assert len(pose) == 6 and pose.sample_ids() == ["s0", "s1", "s2", "p0", "p1", "p2"]
    for i in range(3):
        np.testing.assert_array_equal(pose[i]["points"], ss[i]["points"])
    assert [pose.is_pose_only(i) for i in range(6)] == [False] * 3 + [True] * 3
    p = pose[4]
    assert set(p) == {"sample_id", "seq_id", "image", "frame_idx", *FIXED}
    assert np.isnan(p["norm_offset"]).all() and p["obj_center"].shape == (3,)
    assert check(d) == []
    m = json.loads((d / "manifest.json").read_text())
    assert m["n_samples"] == 3 and m["n_pose_only"] == 3
    with h5py.File(d / "shard-00002.h5", "r") as f:
        assert f.attrs["n_samples"] == 0 and f.attrs["n_pose_only"] == 2
        assert list(f["pose_only/reason"].asstr()[:]) == ["double-sided filter: test"] * 2
    m["shards"][0]["n_pose_only"] = 2
    (d / "manifest.json").write_text(json.dumps(m))
    assert any("pose-only samples, manifest says 2" in x for x in check(d))
    bad = {"sample_id": "x", "image": np.zeros((4, 4, 3), np.uint8), "K": np.eye(3)}
    bad |= {"joints": np.full((21, 3), np.nan), "obj_center": np.zeros(3)}
    with pytest.raises(ValueError, match="non-finite values in joints"):
        encode_pose_sample(bad)


FIXED = (
    "K",
    "joints",
    "hand_rotmats",
    "obj_center",
    "obj_pose",
    "norm_offset",
    "norm_scale",
)
