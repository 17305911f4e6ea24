"""HDF5 shards: the schema (versioned), the writer, the reader, the manifest and the checker.

Nobody else opens the files. One shard ``shard-XXXXX.h5`` holds N samples; per sample
everything training and evaluation need (see ``docs/contracts.md``). Layout (schema 1):

=====================  ===================  ==============================================
dataset                shape, dtype         notes
=====================  ===================  ==============================================
sample_id, seq_id      (N,) str
frame_idx              (N,) int64
image                  (N,) vlen uint8      encoded JPEG/PNG bytes, as given or PNG
K                      (N,3,3) float32
joints                 (N,21,3) float32
hand_rotmats           (N,16,3,3) float32   NaN when unknown
obj_center             (N,3) float32
obj_pose               (N,4,4) float32      NaN when unknown
norm_offset            (N,3) float32        camera = unit · norm_scale + norm_offset
norm_scale             (N,) float32
points                 (N,P,3) uint16       fixed point over [-1,1] (``precision="compact"``,
                                            max error 1.5e-5) or float32 (``"full"``)
sdf                    (N,P,2) float16      (hand, object), unit-cube units; float32 in
                                            ``"full"``
counts                 (N,4) int32          points per category, see below
hand_verts, obj_verts  (ΣV,3) float32       camera frame, gzip; rows of sample i:
hand_faces, obj_faces  (ΣF,3) int32         ``*_ptr[i]:*_ptr[i+1]``
=====================  ===================  ==============================================

Points of a sample are stored sorted by category — hand-inside & object-outside,
hand-inside & object-inside, hand-outside & object-inside, hand-outside & object-outside —
so that each of the four sets training draws from (hand in, hand out, object in, object out)
is one cyclic range of rows. ``points`` and ``sdf`` are contiguous and uncompressed, so the
reader maps them straight from the file (``numpy.memmap``) and a balanced draw of 2,000
points costs one gather, not a decompression: measured in ``bench/bench_sdf.py``.

*Pose-only samples* (optional; a shard without them has neither the group nor the attribute,
exactly as before): frames whose image and hand annotation are usable but which have no SDF
points (on ObMan, the pairs the double-sided filter rejects: the reference trains its pose
stage on them, ``train_138k``, and its SDF stage without, ``train_87k``). They live in the
group ``pose_only`` of the same shard file, beside the samples with points, with the file
attribute ``n_pose_only`` = M and, per sample, ``sample_id``, ``seq_id``, ``image``,
``reason`` (why it has no points) and the per-sample fields above (``norm_*`` NaN). The
manifest entry of such a shard carries ``n_pose_only``. A :class:`ShardSet` indexes the
samples with points only (the SDF stage's set; ``n_samples`` keeps that meaning);
:meth:`ShardSet.with_pose_only` is the same set followed by the pose-only samples (the pose
stage's set).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsdf_data.files import TEMP_GLOB, atomic_write, atomic_write_text

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SHARD_GLOB = "shard-*.h5"
PRECISIONS = ("compact", "full")
_Q = 65535.0

FIXED_FIELDS = {
    "K": ((3, 3), np.float32),
    "joints": ((21, 3), np.float32),
    "hand_rotmats": ((16, 3, 3), np.float32),
    "obj_center": ((3,), np.float32),
    "obj_pose": ((4, 4), np.float32),
    "norm_offset": ((3,), np.float32),
    "norm_scale": ((), np.float32),
    "frame_idx": ((), np.int64),
}
NAN_ALLOWED = {"hand_rotmats", "obj_pose"}
POSE_GROUP = "pose_only"
# pose-only samples have no unit cube: their normalisation is NaN
POSE_NAN_ALLOWED = NAN_ALLOWED | {"norm_offset", "norm_scale"}
MESH_FIELDS = (
    ("hand_verts", np.float32),
    ("hand_faces", np.int32),
    ("obj_verts", np.float32),
    ("obj_faces", np.int32),
)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


def quantize_points(points: np.ndarray) -> np.ndarray:
    """Unit-cube points (...,3) in [-1,1] -> uint16 fixed point (step 2/65535)."""
    p = np.clip(np.asarray(points, dtype=np.float64), -1.0, 1.0)
    return np.rint((p + 1.0) * (_Q / 2.0)).astype(np.uint16)


def dequantize_points(q: np.ndarray) -> np.ndarray:
    """uint16 fixed point (...,3) -> float32 unit-cube points."""
    return (q.astype(np.float32) * np.float32(2.0 / _Q) - np.float32(1.0)).astype(np.float32)


def categories(sdf_hand: np.ndarray, sdf_obj: np.ndarray) -> np.ndarray:
    """Category per point, the storage order: 0 hand-in/obj-out, 1 hand-in/obj-in,
    2 hand-out/obj-in, 3 hand-out/obj-out. (N,),(N,) -> (N,) int8."""
    hi = np.asarray(sdf_hand) < 0
    oi = np.asarray(sdf_obj) < 0
    cat = np.full(hi.shape, 3, dtype=np.int8)
    cat[hi & ~oi] = 0
    cat[hi & oi] = 1
    cat[~hi & oi] = 2
    return cat


def encode_image(image, fmt: str = "png") -> bytes:
    """Encoded bytes of an image: bytes pass through; an (H,W,3) uint8 RGB array is encoded."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    import cv2

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be (H,W,3) uint8 RGB or encoded bytes, got {arr.shape}")
    ext = ".jpg" if fmt in ("jpg", "jpeg") else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, arr[:, :, ::-1], params)
    if not ok:
        raise ValueError("could not encode image")
    return buf.tobytes()


def _simplejpeg():
    """The simplejpeg module (libjpeg-turbo, RGB out), or None when it is not installed."""
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def decode_image(data: bytes) -> np.ndarray:
    """Encoded bytes -> (H,W,3) uint8 RGB. JPEG goes through simplejpeg when it is installed
    (decodes straight to RGB, 1.5-2x faster than OpenCV here: bench/bench_train.py), anything
    else and the fallback through OpenCV; both are libjpeg-turbo with the same accurate IDCT,
    so the pixels agree."""
    buf = np.frombuffer(data, dtype=np.uint8)
    sj = _simplejpeg() if buf[:2].tobytes() == b"\xff\xd8" else None
    if sj is not None:
        arr = sj.decode_jpeg(buf, colorspace="RGB")
        if arr.shape[2] == 3:
            return arr
    import cv2

    arr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError("could not decode image bytes")
    return np.ascontiguousarray(arr[:, :, ::-1])


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


_ENCODED = "_encoded_for"


def _fixed_fields(sample: dict, sid: str, nan_allowed, finite: bool = False) -> dict:
    """The FIXED_FIELDS of a sample dict in their stored dtypes and shapes; absent ones NaN
    where `nan_allowed` (frame_idx: -1), else a one-line ValueError. finite: also refuse
    non-finite values in the fields that may not be NaN."""
    out = {}
    for k, (shape, dtype) in FIXED_FIELDS.items():
        v = sample.get(k)
        if v is None:
            if k not in nan_allowed and k != "frame_idx":
                raise ValueError(f"{sid}: missing {k}")
            v = -1 if k == "frame_idx" else np.full(shape, np.nan)
        a = np.asarray(v, dtype=dtype)
        if a.shape != shape:
            raise ValueError(f"{sid}: {k} has shape {a.shape}, expected {shape}")
        if finite and k not in nan_allowed and not np.isfinite(a).all():
            raise ValueError(f"{sid}: non-finite values in {k}")
        out[k] = a
    return out


def encode_sample(
    sample: dict, n_points: int = 40_000, precision: str = "compact", image_format: str = "png"
) -> dict:
    """A sample dict (``docs/contracts.md`` keys) in the form a shard stores it: validated,
    stored dtypes, points and SDFs quantised (``precision``) and grouped by category, image
    encoded. Workers call this so that the process writing shards only writes; it is what
    :meth:`ShardWriter.add` does to a plain sample."""
    s = {
        "sample_id": str(sample["sample_id"]),
        "seq_id": str(sample.get("seq_id", "") or ""),
        _ENCODED: (int(n_points), precision, image_format),
    }
    s.update(_fixed_fields(sample, s["sample_id"], NAN_ALLOWED))
    pts = np.asarray(sample["points"], dtype=np.float32)
    sh = np.asarray(sample["sdf_hand"], dtype=np.float32)
    so = np.asarray(sample["sdf_obj"], dtype=np.float32)
    if pts.shape != (n_points, 3) or sh.shape != (n_points,) or so.shape != sh.shape:
        raise ValueError(
            f"{s['sample_id']}: points {pts.shape}, sdf {sh.shape}/{so.shape}; "
            f"expected ({n_points},3)"
        )
    if precision == "compact":
        pq = quantize_points(pts)
        sdf = np.stack([sh, so], axis=1).astype(np.float16)
    else:
        pq = pts
        sdf = np.stack([sh, so], axis=1)
    cat = categories(sdf[:, 0], sdf[:, 1])
    order = np.argsort(cat, kind="stable")
    s["points"] = pq[order]
    s["sdf"] = sdf[order]
    s["counts"] = np.bincount(cat, minlength=4).astype(np.int32)
    s["image"] = np.frombuffer(encode_image(sample["image"], image_format), np.uint8)
    for k, dtype in MESH_FIELDS:
        a = np.asarray(sample[k], dtype=dtype)
        if a.ndim != 2 or a.shape[1] != 3:
            raise ValueError(f"{s['sample_id']}: {k} has shape {a.shape}, expected (n,3)")
        s[k] = a
    return s


_POSE = "_pose_only_for"


def encode_pose_sample(sample: dict, image_format: str = "png", reason: str = "") -> dict:
    """A pose-only sample (the keys of a sample dict without points, SDFs and meshes;
    ``norm_offset``/``norm_scale`` may be absent) in the form a shard stores it, with
    ``reason``: why it has no SDF points. What :meth:`ShardWriter.add` stores in the shard's
    ``pose_only`` group."""
    s = {
        "sample_id": str(sample["sample_id"]),
        "seq_id": str(sample.get("seq_id", "") or ""),
        "reason": str(reason),
        _POSE: image_format,
    }
    s.update(_fixed_fields(sample, s["sample_id"], POSE_NAN_ALLOWED, finite=True))
    s["image"] = np.frombuffer(encode_image(sample["image"], image_format), np.uint8)
    return s


class ShardWriter:
    """Collects samples and writes one shard atomically on :meth:`close`.

    Samples are dicts with the keys of ``docs/contracts.md`` (``image`` may be encoded bytes
    or an (H,W,3) uint8 array; ``hand_rotmats``/``obj_pose`` may be None). Nothing appears
    under ``path`` until the whole file is written (temporary name, then rename).

    Args:
        path: final file name. n_points: points per sample (P). precision: ``"compact"``
        (uint16 points, float16 SDF) or ``"full"`` (float32). image_format: encoding for
        array images. attrs: extra file attributes (JSON-serialisable).
    """

    def __init__(
        self,
        path: str | Path,
        n_points: int = 40_000,
        precision: str = "compact",
        image_format: str = "png",
        attrs: dict | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.path = Path(path)
        self.n_points = int(n_points)
        self.precision = precision
        self.image_format = image_format
        self.attrs = dict(attrs or {})
        self._samples: list[dict] = []
        self._pose: list[dict] = []

    def __len__(self) -> int:
        """Samples with SDF points buffered (pose-only ones: :attr:`n_pose_only`)."""
        return len(self._samples)

    @property
    def n_pose_only(self) -> int:
        return len(self._pose)

    def add(self, sample: dict) -> None:
        """Validate and buffer one sample (a sample dict, or what :func:`encode_sample` made
        of one with this writer's settings, or a pose-only sample from
        :func:`encode_pose_sample`)."""
        if sample.get(_POSE):
            if sample[_POSE] != self.image_format:
                raise ValueError(f"{sample['sample_id']}: encoded for other shard settings")
            self._pose.append(sample)
            return
        if not sample.get(_ENCODED):
            sample = encode_sample(sample, self.n_points, self.precision, self.image_format)
        elif sample[_ENCODED] != (self.n_points, self.precision, self.image_format):
            raise ValueError(f"{sample['sample_id']}: encoded for other shard settings")
        self._samples.append(sample)

    def close(self) -> dict:
        """Write the shard (temporary name, then rename). Returns its manifest entry."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ss = self._samples
        n = len(ss)
        with atomic_write(self.path) as tmp:
            digest, size = self._write(tmp, ss)
        entry = {"file": self.path.name, "n_samples": n, "sha256": digest, "bytes": size}
        if self._pose:
            entry["n_pose_only"] = len(self._pose)
        self._samples, self._pose = [], []
        return entry

    def _write(self, tmp: Path, ss: list[dict]) -> tuple[str, int]:
        """Write the samples ``ss`` to the file ``tmp``; its (sha256, size)."""
        import h5py

        n = len(ss)
        str_dt = h5py.string_dtype()
        with h5py.File(tmp, "w", libver="latest") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["n_samples"] = n
            f.attrs["n_points"] = self.n_points
            f.attrs["precision"] = self.precision
            f.attrs["attrs_json"] = json.dumps(self.attrs, sort_keys=True)
            f.create_dataset("sample_id", data=[s["sample_id"] for s in ss], dtype=str_dt)
            f.create_dataset("seq_id", data=[s["seq_id"] for s in ss], dtype=str_dt)
            for k, (shape, dtype) in FIXED_FIELDS.items():
                data = np.stack([s[k] for s in ss]) if n else np.zeros((0, *shape), dtype)
                f.create_dataset(k, data=data)
            pdt = np.uint16 if self.precision == "compact" else np.float32
            sdt = np.float16 if self.precision == "compact" else np.float32
            p = f.create_dataset("points", shape=(n, self.n_points, 3), dtype=pdt)
            d = f.create_dataset("sdf", shape=(n, self.n_points, 2), dtype=sdt)
            for i, s in enumerate(ss):  # one sample at a time: no second full copy in memory
                p[i] = s["points"]
                d[i] = s["sdf"]
            f.create_dataset(
                "counts",
                data=np.stack([s["counts"] for s in ss]) if n else np.zeros((0, 4), np.int32),
            )
            img = f.create_dataset("image", shape=(n,), dtype=h5py.vlen_dtype(np.uint8))
            for i, s in enumerate(ss):
                img[i] = s["image"]
            for k, dtype in MESH_FIELDS:
                rows = [s[k] for s in ss]
                ptr = np.zeros(n + 1, dtype=np.int64)
                ptr[1:] = np.cumsum([len(r) for r in rows])
                flat = np.concatenate(rows) if n else np.zeros((0, 3), dtype)
                f.create_dataset(
                    k,
                    data=flat,
                    chunks=(max(1, min(len(flat), 16384)), 3) if len(flat) else None,
                    compression="gzip" if len(flat) else None,
                    compression_opts=1 if len(flat) else None,  # level 4: +50 % time, -5 % size
                    shuffle=bool(len(flat)),
                )
                f.create_dataset(k + "_ptr", data=ptr)
            if self._pose:
                self._write_pose(f, self._pose)
        return file_sha256(tmp), tmp.stat().st_size

    @staticmethod
    def _write_pose(f, ps: list[dict]) -> None:
        """The ``pose_only`` group: the per-sample fields of the pose-only samples ``ps``."""
        import h5py

        str_dt = h5py.string_dtype()
        f.attrs["n_pose_only"] = len(ps)
        g = f.create_group(POSE_GROUP)
        for k in ("sample_id", "seq_id", "reason"):
            g.create_dataset(k, data=[p[k] for p in ps], dtype=str_dt)
        for k in FIXED_FIELDS:
            g.create_dataset(k, data=np.stack([p[k] for p in ps]))
        img = g.create_dataset("image", shape=(len(ps),), dtype=h5py.vlen_dtype(np.uint8))
        for i, p in enumerate(ps):
            img[i] = p["image"]


@dataclass
class _Shard:
    path: Path
    n: int
    h5: object = None
    points: np.ndarray | None = None
    sdf: np.ndarray | None = None
    counts: np.ndarray | None = None
    pid: int = -1
    # per-sample fields read whole on first use (one block read each; a few hundred bytes a
    # sample), and the image dataset handle: a name lookup costs more than the read itself
    fields: dict | None = None
    images: object = None
    n_pose: int = 0  # pose-only samples (group POSE_GROUP)
    pose_fields: dict | None = None
    pose_images: object = None


def _memmap(path: Path, dset) -> np.ndarray | None:
    """Map a contiguous, uncompressed dataset straight from the file; None if impossible."""
    if dset.chunks is not None or dset.compression is not None or dset.size == 0:
        return None
    off = dset.id.get_offset()
    if off is None:
        return None
    # a plain ndarray view: numpy.memmap's subclass overhead dominates small gathers
    return np.memmap(path, dtype=dset.dtype, mode="r", offset=off, shape=dset.shape).view(
        np.ndarray
    )


# what a pose-only sample lacks
_POINT_KEYS = ("points", "sdf_hand", "sdf_obj", *(k for k, _ in MESH_FIELDS))


def _draw(rng: np.random.Generator, length: int, k: int) -> np.ndarray:
    """k indices in [0, length): without replacement when k <= length, else every index
    once plus random extras."""
    if k > length:
        return np.concatenate([rng.permutation(length), rng.integers(0, length, k - length)])
    return rng.choice(length, size=k, replace=False)


class ShardSetError(ValueError):
    """A shard set that cannot be used as asked (missing manifest, missing or extra shards,
    size or checksum mismatch, broken metadata); the message is one line naming the problem."""


VERIFIED = ".verified.json"


def _manifest_entries(root: Path, m: dict) -> list[dict]:
    """The manifest's shard entries, checked for the keys a reader needs."""
    entries = m.get("shards")
    if not isinstance(entries, list):
        raise ShardSetError(f"{root / MANIFEST}: broken (no list of shards)")
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("file"), str):
            raise ShardSetError(f"{root / MANIFEST}: broken shard entry {e!r}")
        if not isinstance(e.get("n_samples"), int) or e["n_samples"] < 0:
            raise ShardSetError(f"{root / MANIFEST}: {e['file']}: broken sample count")
        n_pose = e.get("n_pose_only", 0)
        if not isinstance(n_pose, int) or n_pose < 0:
            raise ShardSetError(f"{root / MANIFEST}: {e['file']}: broken pose-only count")
    return entries


def read_manifest(root: str | Path) -> dict:
    """``manifest.json`` of a shard set as a dict; ShardSetError (one line) when it is missing,
    unreadable or of another schema version."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise ShardSetError(
            f"{root}: no {MANIFEST}, so not a finished shard set (an interrupted or running "
            "prepare?); finish it by rerunning prepare, or pass --allow-partial"
        )
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ShardSetError(f"{path}: unreadable ({e})") from None
    if not isinstance(m, dict):
        raise ShardSetError(f"{path}: broken (not a JSON object)")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ShardSetError(
            f"{path}: schema version {m.get('schema_version')}, this reader reads "
            f"{SCHEMA_VERSION}; prepare the data again with this version"
        )
    return m


def _listing(names: list[str], n: int = 3) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def verify_checksums(root: str | Path, entries: list[dict], progress: bool = False) -> list[str]:
    """Names of the listed shards whose SHA-256 differs from their manifest entry.

    A shard is hashed once: its verified digest is remembered in ``<root>/.verified.json``
    under its size and modification time, and a later call hashes it again only when either
    changed. A read-only folder just means hashing again next time.
    """
    root = Path(root)
    cache_path = root / VERIFIED
    try:
        cache = json.loads(cache_path.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    todo = []
    for e in entries:
        st = (root / e["file"]).stat()
        c = cache.get(e["file"])
        key = [st.st_size, st.st_mtime_ns, e.get("sha256")]
        if c != key:
            todo.append((e, key))
    bad = []
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        total = sum(k[0] for _, k in todo)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="verify shards", leave=False)
    try:
        for e, key in todo:
            if file_sha256(root / e["file"]) == e.get("sha256"):
                cache[e["file"]] = key
            else:
                cache.pop(e["file"], None)
                bad.append(e["file"])
            if bar is not None:
                bar.update(key[0])
    finally:
        if bar is not None:
            bar.close()
    if todo:
        try:
            atomic_write_text(cache_path, json.dumps(cache, sort_keys=True) + "\n")
        except OSError:
            pass  # a read-only shard folder: verified again next time, nothing lost
    return bad


def _fingerprint(items: list[tuple[str, object]]) -> str:
    return hashlib.sha256(json.dumps(sorted(items)).encode()).hexdigest()[:16]


def _open_files(root: Path, allow_partial: bool, verify: bool, progress: bool) -> tuple:
    """([(path, n_samples, n_pose_only)] of the shards a reader may use, in name order, and
    the set's fingerprint); ShardSetError when the set is not what its manifest says (see
    :class:`ShardSet`)."""
    on_disk = sorted(p.name for p in root.glob(SHARD_GLOB))
    if not (root / MANIFEST).is_file() and allow_partial:
        import h5py

        files = []
        for name in on_disk:
            try:
                with h5py.File(root / name, "r") as f:
                    n, n_pose = int(f.attrs["n_samples"]), int(f.attrs.get("n_pose_only", 0))
                    files.append((root / name, n, n_pose))
            except Exception as e:  # a truncated or foreign file fails anywhere inside h5py
                raise ShardSetError(
                    f"{root / name}: unreadable ({type(e).__name__}: {e})"
                ) from None
        for path, n, n_pose in files:
            _check_metadata(path, n, n_pose)
        return files, _fingerprint([(p.name, p.stat().st_size) for p, _, _ in files])
    m = read_manifest(root)
    entries = _manifest_entries(root, m)
    listed = {e["file"] for e in entries}
    missing = [e["file"] for e in entries if not (root / e["file"]).is_file()]
    extra = [n for n in on_disk if n not in listed]
    expected = m.get("expected_shards")
    if not allow_partial:
        if missing:
            raise ShardSetError(
                f"{root}: {len(missing)} of {len(entries)} shards in {MANIFEST} are missing "
                f"({_listing(missing)}); --allow-partial to use the rest"
            )
        if isinstance(expected, int) and expected != len(entries):
            raise ShardSetError(
                f"{root}: incomplete, {len(entries)} of {expected} shards written (an "
                "interrupted or --shard k/n prepare); finish it, or pass --allow-partial"
            )
        if extra:
            raise ShardSetError(
                f"{root}: {len(extra)} shard file(s) not in {MANIFEST} ({_listing(extra)}): "
                "left from another run? remove them, or pass --allow-partial to ignore them"
            )
    use = [e for e in entries if e["file"] not in set(missing)]
    for e in use:
        size = (root / e["file"]).stat().st_size
        if isinstance(e.get("bytes"), int) and size != e["bytes"]:
            raise ShardSetError(
                f"{root / e['file']}: {size} bytes, {MANIFEST} says {e['bytes']} (truncated "
                "or replaced); prepare it again"
            )
    if verify:
        bad = verify_checksums(root, use, progress=progress)
        if bad:
            raise ShardSetError(
                f"{root}: checksum mismatch in {_listing(bad)} (damaged on disk or changed "
                "after prepare); prepare them again"
            )
    files = [
        (root / e["file"], int(e["n_samples"]), int(e.get("n_pose_only", 0)))
        for e in sorted(use, key=lambda e: e["file"])
    ]
    for path, n, n_pose in files:
        _check_metadata(path, n, n_pose)
    return files, _fingerprint([(e["file"], e.get("sha256")) for e in use])


def _check_metadata(path: Path, n: int, n_pose: int = 0) -> None:
    """ShardSetError when a shard's metadata does not hold what a reader needs (found here,
    at open, instead of as a KeyError in a DataLoader worker hours later)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            problems = _check_layout(path.name, f, n, n_pose)
    except Exception as e:  # a corrupt file can fail anywhere inside h5py
        problems = [f"{path.name}: unreadable ({type(e).__name__}: {e})"]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ShardSetError(f"{path.parent}: broken shard: {problems[0]}{more}")


class ShardSet:
    """Read-only view over a shard set (indexes run across shards in name order).

    The set is opened through its manifest: a missing manifest, a shard listed but missing, a
    shard file the manifest does not list, an incomplete set (fewer shards than the prepare
    run expected) or a shard whose size or SHA-256 differs from its entry raises
    :class:`ShardSetError`. ``allow_partial=True`` uses what is there on purpose: the listed
    shards that exist (or, without a manifest, every shard file); sizes and checksums are
    still verified. ``verify=False`` skips the checksums (sizes are always compared);
    verified digests are cached by size and mtime (see :func:`verify_checksums`).
    ``fingerprint``: a short hash of the shards used (their names and checksums), which
    changes when the data does.

    Safe to pass to DataLoader worker processes: files are (re)opened lazily per process, and
    unpickling does not verify again.

    The indexes cover the samples with SDF points. Pose-only samples (see the module
    docstring) are counted in :attr:`n_pose_only`; :meth:`with_pose_only` (or
    ``pose_only=True``) gives the same set followed by them: index i below the number of
    samples with points is the same sample in both.
    """

    def __init__(
        self,
        root: str | Path,
        allow_partial: bool = False,
        verify: bool = True,
        progress: bool = False,
        pose_only: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such directory")
        files, self.fingerprint = _open_files(self.root, allow_partial, verify, progress)
        self._build(files, pose_only)

    def _build(self, files: list[tuple], pose_only: bool) -> None:
        """Index segments: each shard's samples with points, then (``pose_only``) each
        shard's pose-only samples."""
        self._files = [(Path(f[0]), int(f[1]), int(f[2]) if len(f) > 2 else 0) for f in files]
        self.includes_pose_only = bool(pose_only)
        self._shards = [_Shard(p, n, n_pose=m) for p, n, m in self._files if n > 0 or m > 0]
        self._segments = [(s, False, s.n) for s in self._shards if s.n > 0]
        if pose_only:
            self._segments += [(s, True, s.n_pose) for s in self._shards if s.n_pose > 0]
        self._starts = np.cumsum([0] + [n for _, _, n in self._segments])

    def with_pose_only(self) -> ShardSet:
        """This set followed by its pose-only samples (no verification again): the pose
        stage's training set. Unchanged when there are none."""
        out = ShardSet.__new__(ShardSet)
        out.__setstate__({**self.__getstate__(), "pose_only": True})
        return out

    @property
    def n_shards(self) -> int:
        return sum(1 for s in self._shards if s.n > 0)

    @property
    def n_sdf(self) -> int:
        """Samples with SDF points (the set's length without pose-only samples)."""
        return sum(s.n for s in self._shards)

    @property
    def n_pose_only(self) -> int:
        """Pose-only samples in the set (whether or not its indexes include them)."""
        return sum(s.n_pose for s in self._shards)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        more = f" incl. {self.n_pose_only} pose-only" if self.includes_pose_only else ""
        return (
            f"ShardSet({str(self.root)!r}, {len(self)} samples{more}, {len(self._shards)} shards)"
        )

    def __getstate__(self) -> dict:
        return {
            "root": self.root,
            "files": list(self._files),
            "fingerprint": self.fingerprint,
            "pose_only": self.includes_pose_only,
        }

    def __setstate__(self, state: dict) -> None:
        self.root = state["root"]
        self.fingerprint = state.get("fingerprint", "")
        self._build(state["files"], state.get("pose_only", False))

    def is_pose_only(self, i: int) -> bool:
        """Whether sample i has no SDF points (only when the set includes pose-only ones)."""
        return self._segment(i)[1]

    def _segment(self, i: int) -> tuple[_Shard, bool, int]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample index {i} out of range for {n} samples")
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        s, pose, _ = self._segments[k]
        return s, pose, i - int(self._starts[k])

    def _locate(self, i: int) -> tuple[_Shard, int, bool]:
        """(shard, row, pose-only) of sample i, the shard opened in this process."""
        s, pose, j = self._segment(i)
        if s.pid != os.getpid():
            import h5py

            s.h5 = h5py.File(s.path, "r")
            s.points = _memmap(s.path, s.h5["points"])
            s.sdf = _memmap(s.path, s.h5["sdf"])
            s.counts = s.h5["counts"][:]
            s.fields = {}
            s.images = s.h5["image"]
            s.pose_fields = {}
            s.pose_images = s.h5[POSE_GROUP]["image"] if s.n_pose else None
            s.pid = os.getpid()
        return s, j, pose

    def close(self) -> None:
        for s in self._shards:
            if s.h5 is not None and s.pid == os.getpid():
                s.h5.close()
            s.h5, s.points, s.sdf, s.pid = None, None, None, -1
            s.fields, s.images, s.pose_fields, s.pose_images = None, None, None, None

    def __enter__(self) -> ShardSet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def sample_ids(self) -> list[str]:
        """All sample ids in index order."""
        import h5py

        out = []
        for s, pose, _ in self._segments:
            with h5py.File(s.path, "r") as f:
                ids = (f[POSE_GROUP] if pose else f)["sample_id"][:]
                out += [x.decode() if isinstance(x, bytes) else x for x in ids]
        return out

    @staticmethod
    def _encoded_image(s: _Shard, j: int, pose: bool = False) -> np.ndarray:
        """Encoded bytes of image j as a uint8 array: one low-level read (h5py's selection
        machinery costs twice the read itself for one variable-length row)."""
        import h5py

        images = s.pose_images if pose else s.images
        space = images.id.get_space()
        space.select_hyperslab((j,), (1,))
        out = np.empty((1,), dtype=object)
        images.id.read(h5py.h5s.create_simple((1,)), space, out)
        return out[0]

    @staticmethod
    def _field(s: _Shard, k: str, pose: bool = False) -> np.ndarray:
        """The whole per-sample dataset k of shard s (of its pose-only samples when
        ``pose``), read once per process."""
        cache = s.pose_fields if pose else s.fields
        if k not in cache:
            cache[k] = (s.h5[POSE_GROUP] if pose else s.h5)[k][:]
        return cache[k]

    def _point_arrays(self, s: _Shard, j: int) -> tuple[np.ndarray, np.ndarray]:
        pts = s.points[j] if s.points is not None else s.h5["points"][j]
        sdf = s.sdf[j] if s.sdf is not None else s.h5["sdf"][j]
        return pts, sdf

    @staticmethod
    def _decode_points(pts: np.ndarray) -> np.ndarray:
        return dequantize_points(pts) if pts.dtype == np.uint16 else np.asarray(pts, np.float32)

    def __getitem__(self, i: int) -> dict:
        """One sample as the dict of ``docs/contracts.md`` (numpy values)."""
        return self.get(i)

    def get(self, i: int, keys: tuple[str, ...] | None = None) -> dict:
        """Like ``self[i]`` but only ``keys`` (e.g. skip the 40,000 points or the meshes).

        A pose-only sample has no points, SDFs or meshes (asking for them by ``keys`` is a
        KeyError) and NaN ``norm_offset``/``norm_scale``; ``self[i]`` returns the rest."""
        s, j, pose = self._locate(i)
        f = s.h5
        want = (lambda k: True) if keys is None else (lambda k: k in keys)
        out: dict = {}
        for k in ("sample_id", "seq_id"):
            if want(k):
                v = self._field(s, k, pose)[j]
                out[k] = v.decode() if isinstance(v, bytes) else str(v)
        for k in FIXED_FIELDS:
            if want(k):
                out[k] = self._field(s, k, pose)[j].copy()
        if "frame_idx" in out:
            out["frame_idx"] = int(out["frame_idx"])
        if want("image"):
            out["image"] = decode_image(self._encoded_image(s, j, pose))
        if pose:
            missing = [k for k in keys or () if k in _POINT_KEYS]
            if missing:
                raise KeyError(f"sample {i} is pose-only: no {', '.join(missing)}")
            return out
        if want("points") or want("sdf_hand") or want("sdf_obj"):
            pts, sdf = self._point_arrays(s, j)
            out["points"] = self._decode_points(pts)
            out["sdf_hand"] = np.asarray(sdf[:, 0], dtype=np.float32)
            out["sdf_obj"] = np.asarray(sdf[:, 1], dtype=np.float32)
        for k, _ in MESH_FIELDS:
            if want(k):
                ptr = f[k + "_ptr"][j : j + 2]
                out[k] = f[k][int(ptr[0]) : int(ptr[1])]
        return out

    def sample_sdf(
        self,
        i: int,
        n_hand: int = 1000,
        n_obj: int = 1000,
        rng: np.random.Generator | None = None,
        replace: bool = True,
    ) -> dict:
        """A balanced random draw of sample i's points for training.

        Returns points (n_hand+n_obj, 3) float32 (unit cube), sdf_hand and sdf_obj
        (n_hand+n_obj,) float32 (unit-cube units). The first n_hand points are half inside,
        half outside the hand; the rest half inside, half outside the object.
        ``replace=True`` draws each half with replacement, as the reference (DeepSDF's
        ``unpack_sdf_samples``) does and about twice as fast; ``replace=False`` draws
        without replacement where the category has enough points.
        """
        rng = rng if rng is not None else np.random.default_rng()
        s, j, pose = self._locate(i)
        if pose:
            raise ValueError(f"sample {i} is pose-only: it has no SDF points")
        c0, c1, c2, c3 = (int(x) for x in s.counts[j])
        total = c0 + c1 + c2 + c3
        # (start, length) of the four cyclic ranges: hand in, hand out, object in, object out
        starts = (0, c0 + c1, c0, c0 + c1 + c2)
        lengths = (c0 + c1, c2 + c3, c1 + c2, c3 + c0)
        sizes = (n_hand - n_hand // 2, n_hand // 2, n_obj - n_obj // 2, n_obj // 2)
        for length, k in zip(lengths, sizes, strict=True):
            if k and not length:
                raise ValueError(f"sample {i}: a mesh has no points on one side")
        if replace:
            n = sum(sizes)
            st = np.repeat(np.asarray(starts, np.int64), sizes)
            ln = np.repeat(np.asarray(lengths, np.float64), sizes)
            idx = (st + (rng.random(n) * ln).astype(np.int64)) % total
        else:
            idx = np.concatenate(
                [
                    (st + _draw(rng, ln, k)) % total
                    for st, ln, k in zip(starts, lengths, sizes, strict=True)
                    if k
                ]
                or [np.zeros(0, np.int64)]
            )
        if s.points is not None and s.sdf is not None:
            rows = idx + j * s.points.shape[1]
            pts = s.points.reshape(-1, 3).take(rows, axis=0)
            d = s.sdf.reshape(-1, 2).take(rows, axis=0).astype(np.float32)
        else:
            pts, sdf = self._point_arrays(s, j)
            pts, d = np.asarray(pts[idx]), np.asarray(sdf[idx], dtype=np.float32)
        return {
            "points": self._decode_points(pts),
            "sdf_hand": np.ascontiguousarray(d[:, 0]),
            "sdf_obj": np.ascontiguousarray(d[:, 1]),
        }


def write_manifest(root: str | Path, entries: list[dict], extra: dict) -> dict:
    """Write ``manifest.json`` atomically: shard entries, totals, and ``extra`` (config,
    code version, expected shard count, bad sample count)."""
    m = {
        "schema_version": SCHEMA_VERSION,
        "n_samples": int(sum(e["n_samples"] for e in entries)),
        "n_shards": len(entries),
        **extra,
        "shards": sorted(entries, key=lambda e: e["file"]),
    }
    n_pose = int(sum(e.get("n_pose_only", 0) for e in entries))
    if n_pose:  # absent when there are none: such a manifest reads as before
        m["n_pose_only"] = n_pose
    atomic_write_text(Path(root) / MANIFEST, json.dumps(m, indent=1, sort_keys=True) + "\n")
    return m


def check(root: str | Path, min_per_side: int | None = None, deep: bool = True) -> list[str]:
    """Verify a shard set; returns a list of problems (empty when all is well).

    Checks the manifest (present, schema version, complete), each shard's checksum, sample
    count, datasets and shapes, finite values (NaN allowed only where the schema says
    "unknown"), that stored categories agree with the SDF signs, the inside/outside quotas
    per mesh (``min_per_side``, default from the manifest's config), duplicate sample ids
    and left-over temporary files of interrupted runs. Pose-only samples: their count
    against the manifest, their datasets, finite values and ids (unique among all samples).
    """
    import h5py

    root = Path(root)
    problems: list[str] = []
    if not root.is_dir():
        return [f"{root}: no such directory"]
    mpath = root / MANIFEST
    if not mpath.is_file():
        return [f"{root}: no {MANIFEST}"]
    try:
        m = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        return [f"{MANIFEST}: unreadable ({e})"]
    if m.get("schema_version") != SCHEMA_VERSION:
        problems.append(
            f"{MANIFEST}: schema version {m.get('schema_version')}, expected {SCHEMA_VERSION}"
        )
    if not isinstance(m, dict):
        return [f"{MANIFEST}: broken (not a JSON object)"]
    try:
        entries = _manifest_entries(root, m)
    except ShardSetError as e:
        return [*problems, str(e)]
    expected = m.get("expected_shards")
    if expected is not None and expected != len(entries):
        problems.append(f"incomplete: {len(entries)} of {expected} shards written")
    if min_per_side is None:
        try:
            min_per_side = int(m.get("config", {}).get("sampling", {}).get("min_per_side", 0))
        except (AttributeError, TypeError, ValueError):
            problems.append(f"{MANIFEST}: broken config")
            min_per_side = 0
    listed = {e["file"] for e in entries}
    for p in sorted(root.glob(SHARD_GLOB)):
        if p.name not in listed:
            problems.append(f"{p.name}: not in {MANIFEST}")
    for p in sorted(root.glob(TEMP_GLOB)):
        problems.append(f"{p.name}: temporary file of an interrupted run")
    ids: dict[str, str] = {}
    total = total_pose = 0
    for e in entries:
        name = e["file"]
        path = root / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        if file_sha256(path) != e.get("sha256"):
            problems.append(f"{name}: checksum mismatch")
            continue
        try:
            with h5py.File(path, "r") as f:
                problems += _check_shard(name, f, e, min_per_side, ids, deep)
                total += int(f.attrs["n_samples"])
                total_pose += int(f.attrs.get("n_pose_only", 0))
        except Exception as ex:  # a corrupt file can fail anywhere inside h5py
            problems.append(f"{name}: unreadable ({type(ex).__name__}: {ex})")
    if total != m.get("n_samples"):
        problems.append(f"{MANIFEST}: n_samples {m.get('n_samples')}, shards hold {total}")
    elif total_pose != m.get("n_pose_only", 0):
        problems.append(
            f"{MANIFEST}: n_pose_only {m.get('n_pose_only', 0)}, shards hold {total_pose}"
        )
    elif not problems and total == 0:
        # a set with nothing to train on is what a failed prepare leaves, not a result
        problems.append(f"{root}: holds no samples")
    return problems


def _check_layout(name: str, f, n_listed: int, n_pose_listed: int = 0) -> list[str]:
    """Problems with a shard's metadata: schema version, sample counts against its manifest
    entry, the datasets and their shapes (cheap: no data is read)."""
    out = []
    if f.attrs.get("schema_version") != SCHEMA_VERSION:
        out.append(f"{name}: schema version {f.attrs.get('schema_version')}")
    try:
        n, p = int(f.attrs["n_samples"]), int(f.attrs["n_points"])
    except (KeyError, TypeError, ValueError):
        return [*out, f"{name}: broken metadata (no sample or point count)"]
    if n != n_listed:
        out.append(f"{name}: {n} samples, manifest says {n_listed}")
    want = {k: (n, *shape) for k, (shape, _) in FIXED_FIELDS.items()}
    want.update(
        sample_id=(n,), seq_id=(n,), image=(n,), points=(n, p, 3), sdf=(n, p, 2), counts=(n, 4)
    )
    for k, _ in MESH_FIELDS:
        want[k] = None
        want[k + "_ptr"] = (n + 1,)
    for k, shape in want.items():
        if k not in f:
            out.append(f"{name}: dataset {k} missing")
        elif shape is not None and f[k].shape != shape:
            out.append(f"{name}: {k} has shape {f[k].shape}, expected {shape}")
    return out + _check_pose_layout(name, f, n_pose_listed)


def _check_pose_layout(name: str, f, n_listed: int) -> list[str]:
    """Problems with a shard's pose-only group (absent, with no count, when it has none)."""
    try:
        m = int(f.attrs.get("n_pose_only", 0))
    except (TypeError, ValueError):
        return [f"{name}: broken metadata (pose-only count)"]
    if m != n_listed:
        return [f"{name}: {m} pose-only samples, manifest says {n_listed}"]
    if m == 0:
        return [f"{name}: group {POSE_GROUP} without pose-only samples"] if POSE_GROUP in f else []
    if POSE_GROUP not in f:
        return [f"{name}: group {POSE_GROUP} missing"]
    g = f[POSE_GROUP]
    want = {k: (m, *shape) for k, (shape, _) in FIXED_FIELDS.items()}
    want.update(sample_id=(m,), seq_id=(m,), reason=(m,), image=(m,))
    out = []
    for k, shape in want.items():
        if k not in g:
            out.append(f"{name}: dataset {POSE_GROUP}/{k} missing")
        elif g[k].shape != shape:
            out.append(f"{name}: {POSE_GROUP}/{k} has shape {g[k].shape}, expected {shape}")
    return out


def _check_shard(name, f, entry, min_per_side, ids, deep) -> list[str]:
    out = _check_layout(name, f, entry["n_samples"], entry.get("n_pose_only", 0))
    n = int(f.attrs.get("n_samples", 0))
    p = int(f.attrs.get("n_points", 0))
    if out:
        return out
    groups = [("", f, NAN_ALLOWED)]
    if POSE_GROUP in f:
        groups.append((f"{POSE_GROUP}/", f[POSE_GROUP], POSE_NAN_ALLOWED))
    for prefix, g, nan_allowed in groups:
        for sid in g["sample_id"][:]:
            sid = sid.decode() if isinstance(sid, bytes) else str(sid)
            if sid in ids:
                out.append(f"{name}: sample id {sid} also in {ids[sid]}")
            ids[sid] = name
        for k in FIXED_FIELDS:
            a = g[k][:]
            if k not in nan_allowed and not np.isfinite(a).all():
                out.append(f"{name}: non-finite values in {prefix}{k}")
    for k, _ in MESH_FIELDS:
        ptr = f[k + "_ptr"][:]
        if ptr[-1] != len(f[k]) or np.any(np.diff(ptr) <= 0):
            out.append(f"{name}: bad row pointers for {k}")
    if not deep:
        return out
    counts = f["counts"][:]
    for j in range(n):
        sdf = f["sdf"][j].astype(np.float32)
        if not np.isfinite(sdf).all() or not np.isfinite(f["points"][j].astype(np.float32)).all():
            out.append(f"{name}[{j}]: non-finite points or SDF")
            continue
        cat = categories(sdf[:, 0], sdf[:, 1])
        if np.any(np.diff(cat) < 0) or not np.array_equal(np.bincount(cat, minlength=4), counts[j]):
            out.append(f"{name}[{j}]: point categories disagree with SDF signs")
        hi = counts[j, 0] + counts[j, 1]
        oi = counts[j, 1] + counts[j, 2]
        if min(hi, p - hi, oi, p - oi) < min_per_side:
            out.append(
                f"{name}[{j}]: hand in/out {hi}/{p - hi}, object in/out {oi}/{p - oi} "
                f"(need {min_per_side} each)"
            )
        vs = f["obj_verts"]
        ptr = f["obj_verts_ptr"][j : j + 2]
        if not np.isfinite(vs[int(ptr[0]) : int(ptr[1])]).all():
            out.append(f"{name}[{j}]: non-finite object vertices")
    return out
