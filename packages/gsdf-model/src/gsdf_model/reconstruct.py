"""Meshes and joints from a trained gSDF network, and the ground truth in the same layout.

`reconstruct` decodes the hand and object SDFs of each image of a split and extracts their
zero level sets (`gsdf_model.meshing`: the reference's two 128³ passes, the second over one
cube around hand ∪ object, the largest component), and writes the joints as the reference
scores them: forward kinematics of the IK rotations on the hand model's rest bones, placed
at the pose net's own predicted wrist. `reconstruct_sample` does one image (for inference
on one's own images). `export_gt` writes a split's ground truth in the layout
`gsdf-eval run PRED GT` reads:

    OUT/<id>_hand.ply   OUT/<id>_obj.ply   camera frame, metres
    OUT/<id>.json       {"sample_id", "joints": 21×3, "obj_center": 3, "run": {...}, ...}
    OUT/run.json        what made the folder: checkpoint sha256 and settings (or the data)

<id> is the sample id with path separators replaced by "_". Both commands skip samples whose
three files exist and whose json records the same run, so re-running resumes; a folder made
by another checkpoint or other settings is refused (or redone with overwrite=True), never
reused. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gsdf_data import config_io
from gsdf_data.files import atomic_write_bytes
from gsdf_model.data import GSDFDataset, fetch_sample, open_shards, to_device
from gsdf_model.kinematics import hand_model_id
from gsdf_model.meshing import (  # noqa: F401  (re-exported: the reconstruction API)
    MeshingConfig,
    anchored_component,
    extract_surface,
    grid_points,
    largest_component,
)
from gsdf_model.runtime import (
    UserError,
    load_checkpoint_file,
    loader_options,
    model_from_checkpoint,
    parse_device,
)

RUN_FILE = "run.json"
# manopth's fingertip vertices (thumb, index, middle, ring, little): the reference's IK
# output, hence its scored joints, uses these (ObMan's own labels use 744, 333, 443, 554, 672).
MANOPTH_TIPS = (745, 317, 444, 556, 673)


def file_stem(sample_id: str) -> str:
    """The file name stem for a sample id (no path separators)."""
    return str(sample_id).replace("/", "_").replace("\\", "_").replace(os.sep, "_")


def write_mesh(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    """Binary PLY of a triangle mesh. verts: (V, 3) float, faces: (F, 3) int."""
    import trimesh

    mesh = trimesh.Trimesh(
        np.asarray(verts, np.float64), np.asarray(faces, np.int64), process=False
    )
    atomic_write_bytes(path, mesh.export(file_type="ply"))


def write_sample(
    out_dir: Path,
    sample_id: str,
    hand: tuple[np.ndarray, np.ndarray],
    obj: tuple[np.ndarray, np.ndarray],
    joints: np.ndarray,
    obj_center: np.ndarray,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write <id>_hand.ply, <id>_obj.ply and <id>.json (the json last: it marks completion)."""
    stem = file_stem(sample_id)
    write_mesh(out_dir / f"{stem}_hand.ply", *hand)
    write_mesh(out_dir / f"{stem}_obj.ply", *obj)
    record = {
        "sample_id": str(sample_id),
        "joints": np.asarray(joints, np.float64).reshape(21, 3).tolist(),
        "obj_center": np.asarray(obj_center, np.float64).reshape(3).tolist(),
    } | (extra or {})
    atomic_write_bytes(out_dir / f"{stem}.json", (json.dumps(record) + "\n").encode())


# ---------------------------------------------------------------------- inputs and records
def _is_shard_dir(path: Path) -> bool:
    return (path / "manifest.json").is_file() or any(path.glob("*.h5"))


def split_directory(data: str | Path, split: str) -> Path:
    """The shard directory of `split` under `data`; split "." means `data` itself.

    A missing split is a UserError naming the splits present, never a fallback to `data`
    (which would score the training samples as test ones, or succeed with none).
    """
    root = Path(data)
    if not root.is_dir():
        raise UserError(f"data directory {str(root)!r} does not exist")
    if split == ".":
        if not _is_shard_dir(root):
            raise UserError(f"{str(root)!r} holds no shards")
        return root
    sub = root / split
    if sub.is_dir() and _is_shard_dir(sub):
        return sub
    present = sorted(p.name for p in root.iterdir() if p.is_dir() and _is_shard_dir(p))
    hint = f"splits present: {', '.join(present)}" if present else "no split folders in it"
    if _is_shard_dir(root):
        hint += f"; {str(root)!r} is itself a shard folder: pass --split . to use it"
    raise UserError(f"no split {split!r} under {str(root)!r} ({hint})")


def _open_split(data: str | Path, split: str) -> tuple[Any, Path]:
    """(the shards of `split` under `data`, their directory), or a one-line UserError."""
    split_dir = split_directory(data, split)
    try:
        return open_shards(split_dir), split_dir
    except (FileNotFoundError, OSError, ValueError, KeyError) as err:
        raise UserError(f"cannot open shards in {str(split_dir)!r}: {err}") from None


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _data_digest(split_dir: Path | None) -> str | None:
    """sha256 of the split's manifest (it lists every shard's checksum), when there is one."""
    if split_dir is None or not (split_dir / "manifest.json").is_file():
        return None
    return file_digest(split_dir / "manifest.json")


def _sample_jsons(out: Path) -> Iterable[Path]:
    return (p for p in out.glob("*.json") if p.name != RUN_FILE)


def _claim_out_dir(out: Path, run: dict[str, Any], overwrite: bool) -> None:
    """Make `out` the folder of `run`: refuse (one line) when it holds another run's
    outputs, unless overwrite (then those are redone). Writes OUT/run.json."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / RUN_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        differ = sorted(k for k in set(old) | set(run) if old.get(k) != run.get(k))
        if differ and not overwrite:
            raise UserError(
                f"{str(out)!r} holds outputs of another run (differs in {', '.join(differ)}); "
                "pass --overwrite to redo them, or another --out"
            )
    elif not overwrite:
        foreign = sum(1 for _ in _sample_jsons(out))
        if foreign:
            raise UserError(
                f"{str(out)!r} holds {foreign} samples that no run record vouches for; "
                "pass --overwrite to redo them, or another --out"
            )
    atomic_write_bytes(path, (json.dumps(run, sort_keys=True, indent=1) + "\n").encode())


def _done(out_dir: Path, sample_id: str, run: dict[str, Any]) -> bool:
    """Three files there and the json made by this very run (checkpoint, settings)."""
    stem = file_stem(sample_id)
    if not all((out_dir / f"{stem}{s}").is_file() for s in ("_hand.ply", "_obj.ply", ".json")):
        return False
    try:
        return json.loads((out_dir / f"{stem}.json").read_text()).get("run") == run
    except (OSError, ValueError):
        return False


def _progress(it: Iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="sample", dynamic_ncols=True)


# ---------------------------------------------------------------------- one sample
def reference_joints(hand: Any, keypoints: np.ndarray) -> np.ndarray:
    """The 21 joints the reference scores (gSDF `inverse_kinematics.py`): the rotations that
    IK finds for `keypoints` (21, 3) paper order (each bone aimed from its FK-placed parent at
    the predicted child, as the reference), posed by forward kinematics on the hand
    model's mean-shape rest bones (fingertips: its tip vertices or points), translated so
    that the wrist sits at keypoints[0]. hand: a `gsdf_data.hand.HandModel`. → (21, 3)."""
    kp = torch.as_tensor(np.asarray(keypoints, np.float64), device=hand.device)[None]
    with torch.no_grad():
        rot = hand.ik(kp, aim="fk").local_rotmats
        fk = hand.forward_rotmats(rot, skin=False).keypoints[0].double()
    return (fk - fk[0] + kp[0, 0]).cpu().numpy()


def load_joint_hand(mano_path: str | None, device: torch.device | str = "cpu") -> Any:
    """The hand model for `reference_joints`: MANO with manopth's fingertips, or the
    procedural hand when mano_path is None."""
    from gsdf_data.hand import load_hand

    if mano_path is None:
        return load_hand(None, device=device)
    try:
        return load_hand(mano_path, device=device, tips=MANOPTH_TIPS)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the MANO model {str(mano_path)!r}: {err}") from None


def _get(state: Any, name: str) -> torch.Tensor:
    return state[name] if isinstance(state, dict) else getattr(state, name)


def _placeholder(center: np.ndarray, radius: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """A 2 mm sphere standing in for a shape the network put nowhere (flagged in the json)."""
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=1, radius=radius)
    return np.asarray(s.vertices) + center, np.asarray(s.faces)


def reconstruct_sample(
    net: torch.nn.Module,
    image: torch.Tensor,
    K: torch.Tensor,
    mcfg: MeshingConfig,
    gt_wrist: torch.Tensor | None = None,
    joint_hand: Any = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Meshes and joints of one image.

    image: (3, H, W) or (T, 3, H, W) as the dataset gives it; K: (3, 3); gt_wrist: (3,)
    camera metres for the SDF frame (the reference protocol), or None for the predicted
    wrist. joint_hand: the hand model for `reference_joints`, or None to keep the pose
    net's keypoints. Returns {"hand", "obj": (verts (V, 3), faces (F, 3)) or None,
    "joints" (21, 3), "keypoints" (21, 3) as predicted, "obj_center" (3,), "points"
    (decoded points)}, camera frame, metres.
    """
    device = torch.device(device)
    image, K = image[None].to(device), K[None].to(device)
    wrist = None if gt_wrist is None else gt_wrist[None].to(device)
    with torch.no_grad():
        state = net.encode(image, K, wrist=wrist)
        keypoints = _get(state, "joints")[0].double().cpu().numpy()
        obj_center = _get(state, "obj_center")[0].double().cpu().numpy()
        centre = keypoints[0] if wrist is None else wrist[0].double().cpu().numpy()

        def sdf_fn(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            p = torch.from_numpy(points.astype(np.float32))[None].to(device)
            h, o = net.query(state, p)
            return h[0].float().cpu().numpy(), o[0].float().cpu().numpy()

        stats: dict[str, Any] = {}
        hand, obj = extract_surface(sdf_fn, centre, mcfg, (centre, obj_center), stats)
    joints = keypoints if joint_hand is None else reference_joints(joint_hand, keypoints)
    return {
        "hand": hand,
        "obj": obj,
        "joints": joints,
        "keypoints": keypoints,
        "obj_center": obj_center,
        "points": stats["points"],
    }


# ---------------------------------------------------------------------- a split
def _run_indices(
    ckpt_path: Path,
    shards: Any,
    out: Path,
    indices: list[int],
    opts: dict[str, Any],
    run: dict[str, Any],
    build: Callable[[Any], torch.nn.Module] | None,
    tick: Callable[[], None],
    net_cfg: tuple[torch.nn.Module, Any] | None = None,
) -> dict[str, int]:
    """Reconstruct `indices` of `shards` into `out` (one process; net_cfg: the loaded
    network and its configuration, else loaded from ckpt_path)."""
    device = parse_device(opts["device"])
    if net_cfg is None:
        net_cfg = model_from_checkpoint(load_checkpoint_file(ckpt_path), build, opts["mano"])
    net, cfg = net_cfg
    net.to(device)
    mcfg = config_io.from_dict(MeshingConfig, opts["meshing"])
    joint_hand = None
    if opts["joints"] == "fk":
        joint_hand = load_joint_hand(cfg.mano_path, device)
    dataset = GSDFDataset(shards, n_hand=0, n_obj=0, augment=None, **loader_options(cfg))
    counts = {"written": 0, "skipped": 0, "empty_hand": 0, "empty_obj": 0}
    for i in indices:
        item = dataset[i]
        if _done(out, item["sample_id"], run):
            counts["skipped"] += 1
            tick()
            continue
        # the loader's last step (uint8 → float image) as training batches get it
        batch = to_device({k: v[None] for k, v in item.items() if torch.is_tensor(v)}, device)
        gt_wrist = batch["joints"][0, 0] if opts["wrist"] == "gt" else None
        r = reconstruct_sample(
            net, batch["image"][0], batch["K"][0], mcfg, gt_wrist, joint_hand, device
        )
        extra = {
            "wrist": opts["wrist"],
            "empty_hand": r["hand"] is None,
            "empty_obj": r["obj"] is None,
            "keypoints": r["keypoints"].tolist(),
            "run": run,
        }
        hand, obj = r["hand"], r["obj"]
        if hand is None:
            counts["empty_hand"] += 1
            hand = _placeholder(r["joints"][0])
        if obj is None:
            counts["empty_obj"] += 1
            obj = _placeholder(r["obj_center"])
        write_sample(out, item["sample_id"], hand, obj, r["joints"], r["obj_center"], extra)
        counts["written"] += 1
        tick()
    return counts


def _worker(args: tuple, queue: Any, threads: int) -> dict[str, int]:
    torch.set_num_threads(threads)
    return _run_indices(*args, tick=lambda: queue.put(1))


def reconstruct(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    resolution: int = 128,
    wrist: str = "gt",
    device: str | torch.device = "cpu",
    extent: float | None = None,
    component: str = "largest",
    split: str = "test",
    limit: int | None = None,
    progress: bool = True,
    build: Callable[[Any], torch.nn.Module] | None = None,
    shards: Any = None,
    box: str = "union",
    evaluation: str = "coarse-to-fine",
    joints: str = "fk",
    mano: str | None = None,
    jobs: int = 1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Reconstruct a split (default: test) of `data` with a checkpoint; returns a summary.

    wrist: "gt" (the reference protocol: GT wrist for the SDF frame) or "pred". extent: half
    side (m) of the first-pass cube; default 2 / recon_scale (the network's SDF cube) when
    the model has one, else 0.3 m. component, box, evaluation: see MeshingConfig. joints:
    "fk" (the reference: `reference_joints` on MANO from `mano` or the checkpoint's
    mano_path, else the procedural hand) or "keypoints" (the pose net's own). split: a
    folder under `data` ("." for `data` itself); limit: only the first `limit` samples;
    jobs: worker processes (each takes every jobs-th sample and an equal share of the
    torch threads). overwrite: redo a folder made by another run instead of refusing.
    Summary: {"written", "skipped", "empty_hand", "empty_obj", "out"}.
    """
    if wrist not in ("gt", "pred"):
        raise UserError(f"wrist must be 'gt' or 'pred', not {wrist!r}")
    if joints not in ("fk", "keypoints"):
        raise UserError(f"joints must be 'fk' or 'keypoints', not {joints!r}")
    if jobs < 1:
        raise UserError(f"jobs must be at least 1, not {jobs}")
    parse_device(device)
    split_dir = None
    if shards is None:
        shards, split_dir = _open_split(data, split)
    ckpt_path = Path(checkpoint)
    ckpt_path = ckpt_path / "last.pt" if ckpt_path.is_dir() else ckpt_path
    # built here once: a checkpoint of another hand model is refused before any work
    net, cfg = model_from_checkpoint(load_checkpoint_file(ckpt_path), build, mano)
    if extent is None:
        scale = getattr(cfg, "recon_scale", None)
        extent = 2.0 / float(scale) if scale else 0.3
    try:
        mcfg = MeshingConfig(
            resolution=int(resolution),
            extent=float(extent),
            # CPU: activations of 8,192 points stay in cache (2-3x faster per point than
            # 65,536, bench/results/reconstruct.md); a GPU wants large launches
            chunk=8192 if parse_device(device).type == "cpu" else 1 << 17,
            component=component,
            box=box,
            evaluation=evaluation,
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    meshing = {k: getattr(mcfg, k) for k in ("resolution", "extent", "component", "box")}
    meshing["evaluation"] = mcfg.evaluation
    # What decides the outputs: a different value means different meshes or joints.
    run = {
        "kind": "reconstruct",
        "checkpoint_sha256": file_digest(ckpt_path),
        "data_sha256": _data_digest(split_dir),
        "wrist": wrist,
        "joints": joints,
        "joint_hand": None if joints == "keypoints" else hand_model_id(cfg.mano_path),
        **meshing,
    }
    out = Path(out)
    _claim_out_dir(out, run, overwrite)
    n = len(shards) if limit is None else min(limit, len(shards))
    opts = {
        "device": str(device),
        "meshing": {**meshing, "chunk": mcfg.chunk},
        "wrist": wrist,
        "joints": joints,
        "mano": None if mano is None else str(mano),
    }
    summary = {"written": 0, "skipped": 0, "empty_hand": 0, "empty_obj": 0, "out": str(out)}
    if n == 0:
        return summary
    jobs = min(jobs, n)
    bar = _progress(None, n, "reconstruct", progress) if progress else None
    tick = bar.update if bar is not None else (lambda *_: None)
    try:
        if jobs == 1:
            parts = [
                _run_indices(
                    ckpt_path, shards, out, list(range(n)), opts, run, build, tick, (net, cfg)
                )
            ]
        else:
            del net  # each worker loads its own
            parts = _run_parallel(ckpt_path, shards, out, n, opts, run, build, jobs, tick)
    finally:
        if bar is not None:
            bar.close()
    for p in parts:
        for k, v in p.items():
            summary[k] += v
    return summary


def _run_parallel(ckpt_path, shards, out, n, opts, run, build, jobs, tick) -> list[dict]:
    """`_run_indices` in `jobs` spawned processes (every jobs-th sample each), each with an
    equal share of this process's torch threads; progress ticks come back on a queue."""
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")  # fork after torch has started threads can hang
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ctx.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        q = manager.Queue()
        futures = [
            pool.submit(
                _worker,
                (ckpt_path, shards, out, list(range(r, n, jobs)), opts, run, build),
                q,
                threads,
            )
            for r in range(jobs)
        ]
        while not all(f.done() for f in futures):
            try:
                q.get(timeout=0.2)
                tick()
            except queue_mod.Empty:
                pass
        while not q.empty():
            q.get()
            tick()
        return [f.result() for f in futures]


_GT_KEYS = (
    "sample_id",
    "joints",
    "obj_center",
    "hand_verts",
    "hand_faces",
    "obj_verts",
    "obj_faces",
)


def export_gt(
    data: str | Path,
    out: str | Path,
    split: str = "test",
    limit: int | None = None,
    progress: bool = True,
    shards: Any = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a split's (default: test) ground truth (meshes, joints, object centre) in the
    layout `reconstruct` writes (split "." is `data` itself; a missing split is an error).
    Summary: {"written", "skipped", "out"}."""
    split_dir = None
    if shards is None:
        shards, split_dir = _open_split(data, split)
    run = {"kind": "ground-truth", "data_sha256": _data_digest(split_dir)}
    if split_dir is not None:
        run["split"] = split_dir.name
    out = Path(out)
    _claim_out_dir(out, run, overwrite)
    n = len(shards) if limit is None else min(limit, len(shards))
    summary = {"written": 0, "skipped": 0, "out": str(out)}
    for i in _progress(range(n), n, "export-gt", progress):
        s = fetch_sample(shards, i, _GT_KEYS)
        if _done(out, s["sample_id"], run):
            summary["skipped"] += 1
            continue
        write_sample(
            out,
            s["sample_id"],
            (s["hand_verts"], s["hand_faces"]),
            (s["obj_verts"], s["obj_faces"]),
            s["joints"],
            s["obj_center"],
            {"run": run},
        )
        summary["written"] += 1
    return summary


def sphere_baseline(
    train: Any,
    test: Any,
    out: str | Path,
    limit: int | None = None,
) -> dict[str, Any]:
    """A trivial baseline in the reconstruction layout, to know what 'better than nothing'
    means: for every test sample, a hand sphere and an object sphere at the training set's
    mean hand centroid and mean object centre, of the mean size (mean distance of mesh
    vertices to their centroid), and the mean joints. train, test: shard sets (or paths).
    Summary: {"written", "hand_radius", "obj_radius"}."""
    import trimesh

    train = open_shards(train) if isinstance(train, str | Path) else train
    test = open_shards(test) if isinstance(test, str | Path) else test
    hand_c, hand_r, obj_c, obj_r, joints = [], [], [], [], []
    for i in range(len(train)):
        s = fetch_sample(train, i, _GT_KEYS)
        hv, ov = np.asarray(s["hand_verts"], np.float64), np.asarray(s["obj_verts"], np.float64)
        hand_c.append(hv.mean(0))
        hand_r.append(np.linalg.norm(hv - hv.mean(0), axis=1).mean())
        obj_c.append(np.asarray(s["obj_center"], np.float64))
        obj_r.append(np.linalg.norm(ov - ov.mean(0), axis=1).mean())
        joints.append(np.asarray(s["joints"], np.float64))
    sphere = trimesh.creation.icosphere(subdivisions=3)
    hand = (np.asarray(sphere.vertices) * np.mean(hand_r) + np.mean(hand_c, 0), sphere.faces)
    obj = (np.asarray(sphere.vertices) * np.mean(obj_r) + np.mean(obj_c, 0), sphere.faces)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = len(test) if limit is None else min(limit, len(test))
    for i in range(n):
        sid = fetch_sample(test, i, ("sample_id",))["sample_id"]
        write_sample(out, sid, hand, obj, np.mean(joints, 0), np.mean(obj_c, 0))
    return {
        "written": n,
        "hand_radius": float(np.mean(hand_r)),
        "obj_radius": float(np.mean(obj_r)),
    }
