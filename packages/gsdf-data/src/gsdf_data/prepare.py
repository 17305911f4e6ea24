"""The generic data-preparation pipeline: hand-object pairs in, verified HDF5 shards out.

Dataset adapters only read their dataset: they hand :func:`prepare_pairs` a sequence of
small picklable *tasks*, each with a ``sample_id`` and a ``load()`` method (or a picklable
callable, or a ready :class:`Pair`) that returns a :class:`Pair`. This module does the rest:
mesh validation, the double-sided filter, normalisation, 40,000-point SDF sampling, shard
writing, the manifest and the bad-sample report.

Work is cut into shards by position in the task sequence (task t goes to shard
``t // shard_size``), so a shard's content does not depend on how many jobs ran it, and:

- ``jobs=N`` runs samples in N joblib (loky) processes; ``backend="dask"`` runs them through
  joblib's Dask backend on the cluster at ``scheduler``;
- ``shard=(k, n)`` keeps shards ``j`` with ``j % n == k``, for independent cluster jobs;
- a shard is written under a temporary name and renamed when complete, then its record
  ``shard-XXXXX.json`` (checksum, ids, bad samples) is written the same way; a re-run skips
  shards whose record exists and matches the configuration (resume);
- bad samples (unreadable or empty mesh, non-finite values, filter rejects, too few inside
  points) are left out and listed with their reason in ``bad_samples.json``;
  ``strict=True`` raises :class:`BadSampleError` at the first one instead;
- with ``PrepareConfig.pose_only``, a sample whose SDF part fails for a reason in its
  content (filter reject, invalid mesh, too few inside points) while its image, camera and
  joints are sound is kept as a *pose-only* sample (no points, no meshes; the reason kept
  with it) in its shard's pose-only group, for the pose stage (see ``gsdf_data.shards``);
- a sample dropped for a reason that can change (a missing file, an I/O error) is marked
  ``"retry": true`` and its shard is redone on the next run; content drops are final;
- a resume trusts a finished shard only when its size and checksum match its record, and
  removes the temporaries that a killed run left for the shards it redoes (every file is
  written through :func:`gsdf_data.files.atomic_write`, one naming scheme);
- the run fails fast (:class:`PrepareError`, before the progress bar) when the first
  samples it tries all fail for one cause outside the data (a wrong object root, an SDF
  backend that cannot run), and fails without writing a manifest when it keeps nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gsdf_data import __version__, config_io
from gsdf_data.filter import FilterConfig
from gsdf_data.object_cache import ObjectModel
from gsdf_data.sampling import SamplingConfig
from gsdf_data.sdf import BACKEND_ALIASES

BAD_REPORT = "bad_samples.json"


@dataclass
class Pair:
    """One hand-object sample as a dataset adapter reads it (camera frame, metres, OpenCV axes).

    Fields:
        sample_id: unique id within the dataset.
        hand_mesh: ``trimesh.Trimesh``, closed at the wrist (used for SDFs, stored as GT).
        obj_mesh: ``trimesh.Trimesh`` (may be open; stored as GT).
        image: encoded JPEG/PNG bytes (stored as is) or (H,W,3) uint8 RGB array.
        K: (3,3) intrinsics of the image.
        joints: (21,3) hand keypoints, paper order.
        hand_rotmats: (16,3,3) local joint rotations, or None (stored as NaN).
        obj_center: (3,) object centre, or None (default: object bounding-box centre).
        obj_pose: (4,4) object→camera, or None (stored as NaN).
        seq_id: sequence id for video ("" when none). frame_idx: frame index (-1 when none).
        obj: the object's :class:`gsdf_data.object_cache.ObjectModel` (its mesh in its own
            frame, the double-sided filter verdict, its SDF query structures), or None.
            ``make_sample`` skips the filter when the mesh already passed the run's
            configuration, and with ``obj_frame`` the sampler queries the model's structures,
            built once per process and shared by the object's other samples.
        obj_frame: (4,4) the pose of the object: its model frame -> the camera frame (rotation
            times uniform scale, translation; maps ``obj.verts`` onto ``obj_mesh``), or None.
            SDF queries then run in the model frame, where models are axis-aligned (faster,
            same values).
    """

    sample_id: str
    hand_mesh: object
    obj_mesh: object
    image: bytes | np.ndarray
    K: np.ndarray
    joints: np.ndarray
    hand_rotmats: np.ndarray | None = None
    obj_center: np.ndarray | None = None
    obj_pose: np.ndarray | None = None
    seq_id: str = ""
    frame_idx: int = -1
    obj: ObjectModel | None = None
    obj_frame: np.ndarray | None = None


@dataclass(frozen=True)
class PrepareConfig:
    """Everything that decides a shard's content (stored in the manifest; a resume with a
    different configuration is refused).

    sampling: points and SDF. filter: the double-sided filter (``None`` = off) applied to the
    object mesh. seed: with the sample id, selects each sample's random stream.
    shard_size: samples per shard. precision: ``"compact"`` or ``"full"`` (see shards).
    image_format: encoding of array images ("png" or "jpg"). pose_only: keep samples whose
    SDF part fails for a content reason as pose-only samples (see the module docstring)
    instead of dropping them.
    """

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    filter: FilterConfig | None = field(default_factory=FilterConfig)
    seed: int = 0
    shard_size: int = 128
    precision: str = "compact"
    image_format: str = "png"
    pose_only: bool = False

    def to_dict(self) -> dict:
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PrepareConfig:
        d = copy.deepcopy(dict(d))
        sampling = d.get("sampling")
        if isinstance(sampling, dict):
            # older manifests: the distance engine, now always our BVH (open3d's engine is a
            # comparison in the bench)
            engine = sampling.pop("distance_engine", "bvh")
            if engine != "bvh":
                raise ValueError(
                    f"distance engine {engine!r} is not part of gsdf-data (see bench/bench_sdf.py)"
                )
        return config_io.from_dict(cls, d)

    def digest(self) -> str:
        return _digest(self.to_dict())

    def digests(self) -> set[str]:
        """The digest, and the digests the same configuration had in older manifests: under a
        deprecated SDF backend name (``"open3d"`` for ``"ours"``) and with the distance
        engine field (always ``"bvh"``) that sampling configurations had. Shard sets made
        then resume; and, without pose-only samples, without the ``pose_only`` field (sets
        made before it existed)."""
        now = self.to_dict()
        backends = [now["sampling"]["backend"]]
        backends += [old for old, new in BACKEND_ALIASES.items() if new == backends[0]]
        out = set()
        for backend in backends:
            for engine in (None, "bvh"):
                d = copy.deepcopy(now)
                d["sampling"]["backend"] = backend
                if engine is not None:
                    d["sampling"]["distance_engine"] = engine
                out.add(_digest(d))
                if not d["pose_only"]:
                    del d["pose_only"]
                    out.add(_digest(d))
        return out


def _digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


class PrepareError(RuntimeError):
    """A run that cannot give the user what they asked for (nothing would be kept, or every
    sample fails for one cause outside the data); the message names the cause."""


class BadSampleError(RuntimeError):
    """A sample that cannot be prepared (raised in strict mode)."""

    def __init__(self, sample_id: str, reason: str) -> None:
        super().__init__(f"{sample_id}: {reason}")
        self.sample_id = sample_id
        self.reason = reason


@dataclass
class PrepareReport:
    """Summary of one :func:`prepare_pairs` run."""

    out_dir: str
    n_tasks: int
    n_shards: int
    shards_written: list[str] = field(default_factory=list)
    shards_skipped: list[str] = field(default_factory=list)
    shards_redone: list[str] = field(default_factory=list)
    n_written: int = 0
    n_pose_only: int = 0
    bad: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        redone = f", {len(self.shards_redone)} redone" if self.shards_redone else ""
        retry = sum(1 for b in self.bad if b.get("retry"))
        again = f"; {retry} may load on a rerun (missing file, I/O error)" if retry else ""
        pose = f" + {self.n_pose_only} pose-only" if self.n_pose_only else ""
        return (
            f"{self.n_written} samples{pose} in {len(self.shards_written)} new shards "
            f"({len(self.shards_skipped)} already done{redone}, {len(self.bad)} bad samples"
            f"{again}) in {self.seconds:.1f} s -> {self.out_dir}"
        )


def _load(task) -> Pair:
    if isinstance(task, Pair):
        return task
    if hasattr(task, "load"):
        return task.load()
    if callable(task):
        return task()
    raise TypeError(f"a task must be a Pair, have a load() method or be callable: {task!r}")


def _task_id(task, index: int) -> str:
    sid = getattr(task, "sample_id", None)
    return str(sid) if sid is not None else f"#{index}"


def _finite(name: str, a, shape: tuple) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"non-finite values in {name}")
    return a


def make_sample(pair: Pair, config: PrepareConfig) -> dict:
    """Turn one :class:`Pair` into a shard sample dict (``docs/contracts.md`` keys).

    Raises ValueError (incl. MeshError, SamplingError) with a one-line reason for a bad
    sample.
    """
    from gsdf_data.filter import double_sided_check
    from gsdf_data.meshes import mesh_arrays, validate_mesh
    from gsdf_data.sampling import sample_points

    validate_mesh(pair.hand_mesh, "hand mesh")
    validate_mesh(pair.obj_mesh, "object mesh")
    K = _finite("K", pair.K, (3, 3))
    joints = _finite("joints", pair.joints, (21, 3))
    if pair.obj is not None and pair.obj.reject:  # the reader's cache already said no
        raise ValueError(f"double-sided filter: {pair.obj.reject}")
    filtered = None if pair.obj is None else pair.obj.filtered
    if config.filter is not None and filtered != config.filter:
        res = double_sided_check(pair.obj_mesh, config.filter)
        if not res.ok:
            raise ValueError(f"double-sided filter: {res.reason}")
    s = sample_points(
        [pair.hand_mesh, pair.obj_mesh],
        config.sampling,
        sample_id=pair.sample_id,
        seed=config.seed,
        frames=[None, pair.obj_frame],
        objects=[None, pair.obj],
    )
    if not (np.isfinite(s.points).all() and np.isfinite(s.sdf).all()):
        raise ValueError("non-finite SDF samples")
    hv, hf = mesh_arrays(pair.hand_mesh)
    ov, of = mesh_arrays(pair.obj_mesh)
    centre = (
        0.5 * (ov.min(0) + ov.max(0))
        if pair.obj_center is None
        else _finite("obj_center", pair.obj_center, (3,))
    )
    return {
        **_pose_fields(pair, K, joints, centre),
        "norm_offset": s.norm.offset,
        "norm_scale": s.norm.scale,
        "points": s.points,
        "sdf_hand": s.sdf[:, 0],
        "sdf_obj": s.sdf[:, 1],
        "hand_verts": hv,
        "hand_faces": hf,
        "obj_verts": ov,
        "obj_faces": of,
    }


def make_pose_sample(pair: Pair) -> dict:
    """The pose-only sample of a :class:`Pair` whose SDF part cannot be made: image, camera,
    joints, rotations, object centre (the adapter's, else the object mesh's bounding-box
    centre) and pose. Raises ValueError (one line) when those are not usable either."""
    K = _finite("K", pair.K, (3, 3))
    joints = _finite("joints", pair.joints, (21, 3))
    if pair.obj_center is not None:
        centre = _finite("obj_center", pair.obj_center, (3,))
    else:
        ov = np.asarray(getattr(pair.obj_mesh, "vertices", np.zeros((0, 3))), np.float64)
        if not (ov.ndim == 2 and len(ov) and np.isfinite(ov).all()):
            raise ValueError("no object centre (none given, no usable object mesh)")
        centre = 0.5 * (ov.min(0) + ov.max(0))
    return _pose_fields(pair, K, joints, centre)


def _pose_fields(pair: Pair, K: np.ndarray, joints: np.ndarray, centre: np.ndarray) -> dict:
    """What every sample holds, pose-only or not: ids, image, camera, joints, rotations and
    the object's centre and pose (K, joints and centre already checked)."""
    return {
        "sample_id": str(pair.sample_id),
        "seq_id": str(pair.seq_id or ""),
        "frame_idx": int(pair.frame_idx),
        "image": pair.image,
        "K": K,
        "joints": joints,
        "hand_rotmats": pair.hand_rotmats,
        "obj_center": centre,
        "obj_pose": pair.obj_pose,
    }


def drop_kind(exc: BaseException) -> str:
    """Why a sample failed, for what to do next: ``"retry"`` when an OSError (a missing file,
    an I/O error) is in its cause chain, so a rerun may succeed; ``"setup"`` when it is not one
    of the content errors (ValueError family) — a backend or environment problem; else
    ``"content"``: the sample itself is bad and stays dropped."""
    e: BaseException | None = exc
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError):
            return "retry"
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return "content" if isinstance(exc, ValueError) else "setup"


def _reason(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _process(task, index: int, config: PrepareConfig) -> tuple:
    """Worker body: ("ok", index, sample), ("pose", index, pose-only sample, reason) or
    ("bad", index, sample_id, reason, kind)."""
    sid = _task_id(task, index)
    try:
        from gsdf_data.shards import encode_pose_sample, encode_sample

        pair = _load(task)
        sid = str(pair.sample_id)
        try:
            sample = make_sample(pair, config)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:
            if not config.pose_only or drop_kind(e) != "content":
                raise
            reason = _reason(e)
            try:
                pose = encode_pose_sample(make_pose_sample(pair), config.image_format, reason)
            except ValueError as e2:
                if _reason(e2) == reason:  # the pose itself is what failed
                    raise e from None
                raise ValueError(f"{reason}; not kept as pose-only: {_reason(e2)}") from e
            return ("pose", index, pose, reason)
        # encoded here, in the worker: the process writing the shards only writes
        enc = encode_sample(sample, config.sampling.n, config.precision, config.image_format)
        return ("ok", index, enc)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # any failure of one sample is that sample's problem
        return ("bad", index, sid, _reason(e), drop_kind(e))


def parse_shard_spec(spec: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """ "k/n" or (k, n) -> (k, n) with 0 <= k < n; None passes through."""
    if spec is None:
        return None
    if isinstance(spec, str):
        try:
            k, n = (int(x) for x in spec.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like k/n (e.g. 0/4), got {spec!r}") from None
    else:
        k, n = spec
    if not (n >= 1 and 0 <= k < n):
        raise ValueError(f"shard k/n needs 0 <= k < n, got {k}/{n}")
    return int(k), int(n)


def _record_path(out: Path, j: int) -> Path:
    return out / f"shard-{j:05d}.json"


def _done(out: Path, j: int, digests: set[str]) -> dict | None:
    """Shard j's record when it was made with a configuration of one of ``digests``."""
    rec = _record_path(out, j)
    if not rec.is_file() or not (out / f"shard-{j:05d}.h5").is_file():
        return None
    try:
        r = json.loads(rec.read_text())
    except ValueError:
        return None
    return r if isinstance(r, dict) and r.get("config_digest") in digests else None


def _shard_ids(tasks: Sequence, j: int, size: int) -> set[str] | None:
    """The sample ids of the tasks that make shard j, or None when some task has no id
    before it is loaded (then the check is skipped)."""
    ids = set()
    for t in range(j * size, min((j + 1) * size, len(tasks))):
        sid = getattr(tasks[t], "sample_id", None)
        if sid is None:
            return None
        ids.add(str(sid))
    return ids


def _redo_reason(out: Path, record: dict, ids: set[str] | None = None) -> str:
    """Why a recorded shard must be prepared again ("" when it can be kept): its file does not
    match the record (truncated, replaced, damaged), it dropped samples that may load now, or
    its samples are not the tasks now at its place (``ids``: the reader's list changed, e.g. a
    missing image restored, so every later shard moved)."""
    from gsdf_data.shards import verify_checksums

    if ids is not None:
        done = set(record.get("sample_ids", [])) | {
            str(b.get("sample_id")) for b in record.get("bad", []) + record.get("pose_only", [])
        }
        if done != ids:
            return "moved"
    path = out / str(record.get("file"))
    if path.stat().st_size != record.get("bytes"):
        return "damaged"
    if verify_checksums(out, [record]):
        return "damaged"
    if any(b.get("retry") for b in record.get("bad", [])):
        return "retry"
    return ""


def _clean_temporaries(out: Path, shards: list[int]) -> None:
    """Remove what a killed run left half-written for ``shards`` (only these: concurrent
    ``--shard k/n`` jobs write the others)."""
    from gsdf_data.files import TEMP_MARK

    for j in shards:  # the shard's .h5 and .json, as gsdf_data.files.temporary_path names them
        for p in out.glob(f".shard-{j:05d}.*{TEMP_MARK}*"):
            p.unlink(missing_ok=True)


def _preflight(tasks: Sequence, indices: list[int], config: PrepareConfig, probes: int = 4):
    """Fail fast, before the progress bar, when the first samples tried (spread over the run)
    all fail the same way for a cause outside the data. One sample when it loads."""
    picks = list(
        dict.fromkeys(indices[q * (len(indices) - 1) // (probes - 1)] for q in range(probes))
    )
    first = None
    for i in picks:
        res = _process(tasks[i], i, config)
        if res[0] != "bad" or res[4] == "content":
            return
        key = res[3].split(":", 1)[0]
        if first is None:
            first = (res, key)
        elif key != first[1]:
            return
    res = first[0]
    raise PrepareError(
        f"every sample tried fails the same way ({len(picks)} of {len(indices)}, spread over "
        f"the run), a setup problem rather than bad data: {res[3]}; nothing was prepared"
    )


def _rebuild_manifest(out: Path, config: PrepareConfig, n_shards: int, n_tasks: int) -> dict:
    """manifest.json and bad_samples.json from the shard records present now."""
    from gsdf_data.files import atomic_write_text
    from gsdf_data.shards import write_manifest

    entries, bad, pose = [], [], []
    for j in range(n_shards):
        r = _done(out, j, config.digests())
        if r is not None:
            keys = ("file", "n_samples", "sha256", "bytes", "n_pose_only")
            entries.append({k: r[k] for k in keys if k in r})
            bad += r["bad"]
            pose += r.get("pose_only", [])
    atomic_write_text(out / BAD_REPORT, json.dumps(bad, indent=1) + "\n")
    extra = {
        "code_version": __version__,
        "config": config.to_dict(),
        "config_digest": config.digest(),
        "expected_shards": n_shards,
        "n_tasks": n_tasks,
        "n_bad": len(bad),
    }
    if pose:  # why the pose-only samples have no SDF points, counted by reason
        reasons: dict[str, int] = {}
        for p in pose:
            key = str(p.get("reason", "")).split(":", 1)[0].strip()
            reasons[key] = reasons.get(key, 0) + 1
        extra["pose_only_reasons"] = dict(sorted(reasons.items()))
    return write_manifest(out, entries, extra)


def prepare_pairs(
    tasks: Iterable,
    out_dir: str | Path,
    config: PrepareConfig | dict | None = None,
    jobs: int = 1,
    shard: str | tuple[int, int] | None = None,
    backend: str = "loky",
    scheduler: str | object | None = None,
    strict: bool = False,
    progress: bool = True,
    on_shard: Callable[[str], None] | None = None,
) -> PrepareReport:
    """Prepare hand-object pairs into a resumable, verifiable shard set.

    Args:
        tasks: sequence of tasks (see the module docstring); the order fixes shard content.
        out_dir: directory for shards, records, ``manifest.json``, ``bad_samples.json``.
        config: :class:`PrepareConfig` (or its dict form); default ``PrepareConfig()``.
        jobs: worker processes (1 = in this process).
        shard: ``"k/n"`` or ``(k, n)``: only shards ``j % n == k``.
        backend: ``"loky"`` (joblib processes) or ``"dask"`` (joblib's Dask backend).
        scheduler: Dask scheduler address or ``distributed.Client`` (backend "dask").
        strict: raise :class:`BadSampleError` at the first bad sample.
        progress: show a tqdm bar and print a summary line.
        on_shard: called with each shard file name once it is complete (tests, logging).

    Returns:
        :class:`PrepareReport`.
    """
    from gsdf_data.files import atomic_write_text
    from gsdf_data.shards import ShardWriter, shard_name

    t0 = time.perf_counter()
    if config is None:
        config = PrepareConfig()
    elif isinstance(config, dict):
        config = PrepareConfig.from_dict(config)
    if backend not in ("loky", "dask"):
        raise ValueError(f"backend must be 'loky' or 'dask', got {backend!r}")
    _check_config(config)
    tasks: Sequence = tasks if isinstance(tasks, Sequence) else list(tasks)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "manifest.json"
    if mpath.is_file():
        old = json.loads(mpath.read_text()).get("config_digest")
        if old is not None and old not in config.digests():
            raise ValueError(
                f"{out} holds shards made with another configuration; use a new directory"
            )
    size = int(config.shard_size)
    n_shards = (len(tasks) + size - 1) // size
    spec = parse_shard_spec(shard)
    mine = [j for j in range(n_shards) if spec is None or j % spec[1] == spec[0]]
    digest = config.digest()
    report = PrepareReport(str(out), len(tasks), n_shards)
    todo = []
    for j in mine:
        record = _done(out, j, config.digests())
        if record is None:
            todo.append(j)
        elif _redo_reason(out, record, _shard_ids(tasks, j, size)):
            todo.append(j)
            report.shards_redone.append(shard_name(j))
        else:
            report.shards_skipped.append(shard_name(j))
    _clean_temporaries(out, todo)
    indices = [t for j in todo for t in range(j * size, min((j + 1) * size, len(tasks)))]
    if indices and not strict:
        _preflight(tasks, indices, config)

    results = _run(tasks, indices, config, jobs, backend, scheduler)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(indices), unit="sample", desc="prepare", dynamic_ncols=True)
    pending: dict[int, list] = {j: [] for j in todo}
    remaining = {j: min((j + 1) * size, len(tasks)) - j * size for j in todo}
    try:
        for res in results:
            idx = res[1]
            j = idx // size
            if res[0] == "bad":
                bad = {"sample_id": res[2], "task_index": idx, "reason": res[3]}
                if res[4] == "retry":
                    bad["retry"] = True
                if strict:
                    raise BadSampleError(res[2], res[3])
                pending[j].append(("bad", idx, bad))
            else:
                pending[j].append((res[0], idx, res[2]))
            remaining[j] -= 1
            if bar is not None:
                bar.update(1)
            if remaining[j] == 0:
                items = sorted(pending.pop(j), key=lambda r: r[1])
                writer = ShardWriter(
                    out / shard_name(j),
                    n_points=config.sampling.n,
                    precision=config.precision,
                    image_format=config.image_format,
                    attrs={"config_digest": digest, "shard_index": j},
                )
                bads = []
                for kind, _, item in items:
                    if kind == "bad":
                        bads.append({**item, "shard": shard_name(j)})
                    else:
                        writer.add(item)
                entry = writer.close()
                record = {
                    **entry,
                    "config_digest": digest,
                    "sample_ids": [it["sample_id"] for k, _, it in items if k == "ok"],
                    "bad": bads,
                }
                if entry.get("n_pose_only"):
                    record["pose_only"] = [
                        {"sample_id": it["sample_id"], "reason": it["reason"]}
                        for k, _, it in items
                        if k == "pose"
                    ]
                atomic_write_text(_record_path(out, j), json.dumps(record) + "\n")
                report.shards_written.append(entry["file"])
                report.n_written += entry["n_samples"]
                report.n_pose_only += entry.get("n_pose_only", 0)
                report.bad += bads
                if on_shard is not None:
                    on_shard(entry["file"])
    finally:
        if bar is not None:
            bar.close()
        close = getattr(results, "close", None)
        if close is not None:
            close()
    _refuse_empty(out, config.digests(), n_shards, len(tasks))
    _rebuild_manifest(out, config, n_shards, len(tasks))
    report.seconds = time.perf_counter() - t0
    if progress:
        print(report.summary(), flush=True)
    return report


def _check_config(config: PrepareConfig) -> None:
    """PrepareError for a configuration that cannot give one usable sample."""
    n, side = int(config.sampling.n), int(config.sampling.min_per_side)
    if n < 1 or n < 2 * side:
        raise PrepareError(
            f"{n} points per pair cannot hold {side} inside and {side} outside points per mesh"
        )
    if int(config.shard_size) < 1:
        raise PrepareError(f"shard size must be at least 1, got {config.shard_size}")


def _refuse_empty(out: Path, digests: set[str], n_shards: int, n_tasks: int) -> None:
    """PrepareError when the set (every shard recorded so far) holds no sample: then there is
    no manifest to mistake for a result, only bad_samples.json to say why."""
    from collections import Counter

    from gsdf_data.files import atomic_write_text

    records = [r for j in range(n_shards) if (r := _done(out, j, digests)) is not None]
    if not records or sum(int(r.get("n_samples", 0)) for r in records):
        return
    bad = [b for r in records for b in r.get("bad", [])]
    pose = [p for r in records for p in r.get("pose_only", [])]
    atomic_write_text(out / BAD_REPORT, json.dumps(bad, indent=1) + "\n")
    (out / "manifest.json").unlink(missing_ok=True)
    top = Counter(str(b.get("reason", "")).split(":", 1)[0] for b in bad + pose).most_common(2)
    why = ", ".join(f"{n} x {r}" for r, n in top)
    if pose:
        raise PrepareError(
            f"kept none of the {len(bad) + len(pose)} samples with SDF points ({why}; "
            f"{len(pose)} only as pose-only samples, listed in the shard records); "
            "no manifest written"
        )
    raise PrepareError(
        f"kept none of the {len(bad)} samples tried ({why}; each in {out / BAD_REPORT}); "
        "no manifest written"
    )


def _run(tasks: Sequence, indices: list[int], config, jobs, backend, scheduler):
    """Results of ``_process`` for ``indices``, in order, from the chosen executor."""
    if not indices:
        return iter(())
    if backend == "loky" and jobs == 1:
        return (_process(tasks[i], i, config) for i in indices)
    from joblib import Parallel, delayed

    calls = (delayed(_process)(tasks[i], i, config) for i in indices)
    if backend == "loky":
        return Parallel(n_jobs=jobs, backend="loky", return_as="generator")(calls)
    return _run_dask(calls, jobs, scheduler)


def _run_dask(calls, jobs, scheduler):
    from distributed import Client
    from joblib import Parallel, parallel_config

    client = scheduler if isinstance(scheduler, Client) else None
    own = None
    if client is None:
        own = Client(scheduler) if scheduler is not None else Client(processes=False)
    try:
        with parallel_config(backend="dask", n_jobs=-1 if jobs in (None, 1) else jobs):
            yield from Parallel(return_as="generator")(calls)
    finally:
        if own is not None:
            own.close()
