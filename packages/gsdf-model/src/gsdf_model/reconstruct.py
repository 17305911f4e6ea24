"""Meshes from a trained gSDF network, and the ground truth in the same layout.

`reconstruct` decodes the hand and object SDFs of each test image on a grid in the camera
frame and extracts their zero level sets (paper §4.2; reference: marching cubes in two
passes at 128³ — the whole cube around the wrist, then the region where the surface is —
keeping the largest connected component). `export_gt` writes the shards' ground truth in
the layout `gsdf-eval run PRED GT` reads:

    OUT/<id>_hand.ply   OUT/<id>_obj.ply   camera frame, metres
    OUT/<id>.json       {"sample_id", "joints": 21×3, "obj_center": 3, ...}

<id> is the sample id with path separators replaced by "_". Both commands skip samples whose
three files already exist, so re-running resumes; every file is written to a temporary
name and renamed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gsdf_model.data import GSDFDataset, fetch_sample, open_shards, to_device
from gsdf_model.runtime import (
    UserError,
    load_checkpoint_file,
    loader_options,
    model_from_checkpoint,
    parse_device,
    resolve_split,
)


def file_stem(sample_id: str) -> str:
    """The file name stem for a sample id (no path separators)."""
    return str(sample_id).replace("/", "_").replace("\\", "_").replace(os.sep, "_")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_mesh(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    """Binary PLY of a triangle mesh. verts: (V, 3) float, faces: (F, 3) int."""
    import trimesh

    mesh = trimesh.Trimesh(
        np.asarray(verts, np.float64), np.asarray(faces, np.int64), process=False
    )
    _write_atomic(path, mesh.export(file_type="ply"))


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
    _write_atomic(out_dir / f"{stem}.json", (json.dumps(record) + "\n").encode())


def _done(out_dir: Path, sample_id: str) -> bool:
    stem = file_stem(sample_id)
    return all((out_dir / f"{stem}{s}").is_file() for s in ("_hand.ply", "_obj.ply", ".json"))


def _components(faces: np.ndarray, n_verts: int) -> np.ndarray:
    """Connected-component label of each face (faces sharing a vertex are connected)."""
    import scipy.sparse
    from scipy.sparse.csgraph import connected_components

    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_verts, n_verts))
    _, labels = connected_components(graph, directed=False)
    return labels[faces[:, 0]]


def _keep_faces(verts: np.ndarray, faces: np.ndarray, keep: np.ndarray):
    faces = faces[keep]
    used = np.unique(faces)
    remap = np.full(len(verts), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return verts[used], remap[faces]


def largest_component(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The connected component with the most faces (vertices re-indexed, unused dropped)."""
    if len(faces) == 0:
        return verts, faces
    label = _components(faces, len(verts))
    return _keep_faces(verts, faces, label == np.bincount(label).argmax())


def anchored_component(
    verts: np.ndarray, faces: np.ndarray, anchor: np.ndarray, min_share: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """The component nearest to `anchor` (3,) among those with at least `min_share` of the
    largest one's faces: what the network put at the predicted hand (or object), rather
    than a larger spurious surface elsewhere in the cube."""
    if len(faces) == 0:
        return verts, faces
    label = _components(faces, len(verts))
    sizes = np.bincount(label)
    dist = np.full(len(sizes), np.inf)
    d_vert = np.linalg.norm(verts - np.asarray(anchor), axis=1)
    np.minimum.at(dist, label, d_vert[faces[:, 0]])
    dist[sizes < min_share * sizes.max()] = np.inf
    return _keep_faces(verts, faces, label == int(np.argmin(dist)))


def grid_points(lo: np.ndarray, hi: np.ndarray, res: int) -> np.ndarray:
    """(res³, 3) points of a regular grid spanning the box [lo, hi] (corners included),
    x slowest, z fastest (matches a (res, res, res) reshape indexed [i, j, k])."""
    axes = [np.linspace(lo[d], hi[d], res) for d in range(3)]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    return g.reshape(-1, 3)


@dataclass(frozen=True)
class MeshingConfig:
    """resolution: grid points per axis in each pass; extent: half side (m) of the first
    pass's cube around the wrist; chunk: query points per network call; component: which
    connected component to keep, "largest" (the reference) or "anchored" (the one nearest
    the predicted wrist / object centre, among the sizeable ones)."""

    resolution: int = 128
    extent: float = 0.3
    chunk: int = 65536
    component: str = "largest"


def extract_surface(
    sdf_fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    center: np.ndarray,
    cfg: MeshingConfig,
    anchors: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Zero level sets of two SDFs (hand, object) by two-pass marching cubes.

    sdf_fn: camera-frame points (M, 3) → (sdf_hand (M,), sdf_obj (M,)) in metres.
    center: (3,) centre of the first-pass cube. anchors: (hand, object) points (3,) for
    cfg.component == "anchored" (default: the cube's centre for both). Returns per shape (verts (V, 3) camera
    frame, faces (F, 3)) — the largest connected component — or None without a surface.
    """
    from skimage.measure import marching_cubes

    res = int(cfg.resolution)
    lo = np.asarray(center, np.float64) - cfg.extent
    hi = np.asarray(center, np.float64) + cfg.extent
    coarse = sdf_fn(grid_points(lo, hi, res))
    step = (hi - lo) / (res - 1)
    results: list[tuple[np.ndarray, np.ndarray] | None] = []
    for k in range(2):
        vol = coarse[k].reshape(res, res, res)
        near = np.argwhere(vol < np.linalg.norm(step))
        if len(near) == 0 or vol.min() >= 0:
            results.append(None)
            continue
        lo2 = lo + (near.min(0) - 2) * step
        hi2 = lo + (near.max(0) + 2) * step
        fine = sdf_fn(grid_points(lo2, hi2, res))[k].reshape(res, res, res)
        if fine.min() >= 0 or fine.max() <= 0:
            results.append(None)
            continue
        step2 = (hi2 - lo2) / (res - 1)
        verts, faces, _, _ = marching_cubes(
            fine.astype(np.float32), level=0.0, spacing=tuple(step2)
        )
        verts, faces = verts.astype(np.float64) + lo2, faces.astype(np.int64)
        if cfg.component == "anchored":
            anchor = center if anchors is None else anchors[k]
            verts, faces = anchored_component(verts, faces, anchor)
        else:
            verts, faces = largest_component(verts, faces)
        results.append((verts, faces))
    return results


def _placeholder(center: np.ndarray, radius: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """A 2 mm sphere standing in for a shape the network put nowhere (flagged in the json)."""
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=1, radius=radius)
    return np.asarray(s.vertices) + center, np.asarray(s.faces)


def _get(state: Any, name: str) -> torch.Tensor:
    return state[name] if isinstance(state, dict) else getattr(state, name)


def _open_split(data: str | Path, split: str) -> Any:
    """The shards of `split` under `data`, or a one-line UserError."""
    split_dir = resolve_split(data, split)
    try:
        return open_shards(split_dir)
    except (FileNotFoundError, OSError, ValueError) as err:
        raise UserError(f"cannot open shards in {str(split_dir)!r}: {err}") from None


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
    mano: str | Path | None = None,
) -> dict[str, Any]:
    """Reconstruct the test split of `data` with a checkpoint; returns a summary dict.

    wrist: "gt" (the reference protocol: GT wrist for the SDF frame) or "pred".
    extent: half side (m) of the first-pass cube; default 2 / recon_scale (the network's
    SDF cube) when the model has one, else 0.3 m. component: "largest" (reference) or
    "anchored" (see MeshingConfig). split: which split of `data` (when it has
    train/ and test/ folders). limit: only the first `limit` samples. mano: the MANO file
    the checkpoint was trained with, where it lives here (default: its recorded path).
    Summary: {"written", "skipped", "empty_hand", "empty_obj", "out"}.
    """
    if wrist not in ("gt", "pred"):
        raise UserError(f"wrist must be 'gt' or 'pred', not {wrist!r}")
    if component not in ("largest", "anchored"):
        raise UserError(f"component must be 'largest' or 'anchored', not {component!r}")
    if resolution < 8:
        raise UserError(f"resolution {resolution} is too small (at least 8)")
    device = parse_device(device)
    ckpt = load_checkpoint_file(checkpoint)
    net, cfg = model_from_checkpoint(ckpt, build, mano_path=mano)
    net.to(device)
    if extent is None:
        scale = getattr(cfg, "recon_scale", None)
        extent = 2.0 / float(scale) if scale else 0.3
    mcfg = MeshingConfig(resolution=int(resolution), extent=float(extent), component=component)

    if shards is None:
        shards = _open_split(data, split)
    opts = loader_options(cfg)
    dataset = GSDFDataset(shards, n_hand=0, n_obj=0, augment=None, **opts)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    n = len(dataset) if limit is None else min(limit, len(dataset))
    summary = {"written": 0, "skipped": 0, "empty_hand": 0, "empty_obj": 0, "out": str(out)}
    indices = range(n)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="reconstruct", dynamic_ncols=True, disable=None)
    for i in indices:
        item = dataset[i]
        if _done(out, item["sample_id"]):
            summary["skipped"] += 1
            continue
        batch = to_device(
            {k: v[None] for k, v in item.items() if isinstance(v, torch.Tensor)}, device
        )
        with torch.no_grad():
            gt_wrist = batch["joints"][:, 0] if wrist == "gt" else None
            state = net.encode(batch["image"], batch["K"], wrist=gt_wrist)
            joints = _get(state, "joints")[0].float().cpu().numpy()
            obj_center = _get(state, "obj_center")[0].float().cpu().numpy()
            centre = (gt_wrist[0].cpu().numpy() if gt_wrist is not None else joints[0]).astype(
                np.float64
            )

            def sdf_fn(points: np.ndarray, state=state) -> tuple[np.ndarray, np.ndarray]:
                hs, os_ = [], []
                for s in range(0, len(points), mcfg.chunk):
                    p = torch.from_numpy(points[s : s + mcfg.chunk].astype(np.float32))
                    h, o = net.query(state, p[None].to(device))
                    hs.append(h[0].float().cpu().numpy())
                    os_.append(o[0].float().cpu().numpy())
                return np.concatenate(hs), np.concatenate(os_)

            hand, obj = extract_surface(sdf_fn, centre, mcfg, anchors=(centre, obj_center))
        extra = {"wrist": wrist, "empty_hand": hand is None, "empty_obj": obj is None}
        if hand is None:
            summary["empty_hand"] += 1
            hand = _placeholder(joints[0])
        if obj is None:
            summary["empty_obj"] += 1
            obj = _placeholder(obj_center)
        write_sample(out, item["sample_id"], hand, obj, joints, obj_center, extra)
        summary["written"] += 1
    return summary


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
) -> dict[str, Any]:
    """Write a split's (default: test) ground truth (meshes, joints, object centre) in the layout
    `reconstruct` writes. Summary: {"written", "skipped", "out"}."""
    if shards is None:
        shards = _open_split(data, split)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = len(shards) if limit is None else min(limit, len(shards))
    summary = {"written": 0, "skipped": 0, "out": str(out)}
    indices = range(n)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="export-gt", dynamic_ncols=True, disable=None)
    for i in indices:
        s = fetch_sample(shards, i, _GT_KEYS)
        if _done(out, s["sample_id"]):
            summary["skipped"] += 1
            continue
        write_sample(
            out,
            s["sample_id"],
            (s["hand_verts"], s["hand_faces"]),
            (s["obj_verts"], s["obj_faces"]),
            s["joints"],
            s["obj_center"],
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
