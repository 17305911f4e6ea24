"""Input side of gsdf-eval: loading and validating meshes, annotations and prediction sets.

Everything a user can get wrong (a missing file, an unreadable or empty mesh, NaN vertices, a
prediction without its ground truth) is reported here as an `EvalInputError` whose message is
one line naming the file and the reason; the CLI prints it and exits non-zero.

Set layout (predictions and ground truth alike): `<id>_hand.<ext>`, `<id>_obj.<ext>` and an
optional `<id>.json` with `joints` (21×3, metres) and `obj_center` (3,). Meshes: PLY and OBJ,
read without trimesh (gsdf_eval.mesh: importing trimesh costs more than scoring a pair), or
any other format trimesh reads. Coordinates are metres, or millimetres with units="mm" (then
converted). A hand or object spans about 5-30 cm: an extent over 1 m is taken for
millimetres read as metres and refused, since every metric would silently be 1000x off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsdf_eval.mesh import Mesh, read_mesh

MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl", ".glb", ".gltf")
# unit name -> units per metre; dividing by 1000 (not multiplying by 1e-3, which is inexact)
# turns millimetre values that came from metre values back into exactly those
UNITS = {"m": 1.0, "mm": 1000.0}
MAX_EXTENT_M = 1.0  # larger than any hand or hand-held object
MIN_EXTENT_MM_M = 1e-3  # as millimetres, a whole mesh under 1 mm is a metre file


class EvalInputError(Exception):
    """A user input problem; `str(err)` is a one-line reason that names the file."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or "unknown error"


def _to_metres(path: Path, points: np.ndarray, units: str, what: str) -> np.ndarray:
    """points in `units` -> metres, refusing a size that says the units are wrong."""
    if units not in UNITS:
        raise EvalInputError(f"{path}: unknown units {units!r} (m or mm)")
    points = points / UNITS[units]
    extent = float(np.ptp(points.reshape(-1, 3), axis=0).max()) if points.size > 3 else 0.0
    if extent > MAX_EXTENT_M:
        hint = "even read as millimetres" if units == "mm" else "millimetres? pass --units mm"
        raise EvalInputError(f"{path}: {what} spans {extent:.4g} m, over 1 m ({hint})")
    if units == "mm" and points.size > 3 and extent < MIN_EXTENT_MM_M:
        raise EvalInputError(
            f"{path}: {what} spans {extent * 1e3:.4g} mm read as millimetres (metres? drop --units mm)"
        )
    return points


def load_mesh(path: str | Path, units: str = "m") -> Mesh:
    """Load a triangle mesh and check that it can be scored; coordinates returned in metres.

    Returns a gsdf_eval.mesh.Mesh with vertices (V, 3) float64 and faces (F, 3) int64, read
    without processing (no vertex merging), so what is scored is what was written. PLY and
    OBJ are read by gsdf_eval.mesh, other formats by trimesh. `units`: "m" or "mm"
    (converted). Raises EvalInputError for a missing, unreadable or malformed file, a mesh
    without faces, non-finite vertices, face indices out of range, zero surface area, or an
    extent over 1 m (under 1 mm with units="mm").
    """
    path = Path(path)
    if not path.exists():
        raise EvalInputError(f"{path}: no such file")
    if not path.is_file():
        raise EvalInputError(f"{path}: not a file")
    try:
        loaded = read_mesh(path)
    except OSError as exc:
        raise EvalInputError(f"{path}: cannot read ({exc.strerror or _one_line(exc)})") from None
    except Exception as exc:  # the readers' MeshFormatError; trimesh raises many types
        raise EvalInputError(f"{path}: cannot read mesh ({_one_line(exc)})") from None
    vertices, faces = loaded.vertices, loaded.faces
    if len(vertices) == 0 or len(faces) == 0:
        raise EvalInputError(f"{path}: empty mesh ({len(vertices)} vertices, {len(faces)} faces)")
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise EvalInputError(f"{path}: {bad} vertices are NaN or infinite")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise EvalInputError(f"{path}: face indices out of range")
    mesh = Mesh(_to_metres(path, vertices, units, "the mesh"), faces)
    if not mesh.area > 0:
        raise EvalInputError(f"{path}: mesh has zero surface area")
    return mesh


@dataclass(frozen=True)
class Annotation:
    """Pose annotation of one sample: joints (21, 3) and obj_center (3,), metres, or None."""

    joints: np.ndarray | None
    obj_center: np.ndarray | None


def load_annotation(path: str | Path, units: str = "m") -> Annotation:
    """Read `<id>.json` ({"joints": 21×3, "obj_center": 3}; either key may be absent).

    Returned in metres (`units`: "m" or "mm"). Joints spanning over 1 m, or an object
    centre over 10 m from the camera, mean the units are wrong: EvalInputError.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EvalInputError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise EvalInputError(f"{path}: cannot read JSON ({_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise EvalInputError(f"{path}: expected a JSON object")

    def _array(key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        if data.get(key) is None:
            return None
        try:
            arr = np.asarray(data[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise EvalInputError(f"{path}: '{key}' is not numeric") from None
        if arr.shape != shape:
            raise EvalInputError(f"{path}: '{key}' has shape {arr.shape}, expected {shape}")
        if not np.isfinite(arr).all():
            raise EvalInputError(f"{path}: '{key}' contains NaN or infinite values")
        return arr

    joints, center = _array("joints", (21, 3)), _array("obj_center", (3,))
    if joints is not None:
        joints = _to_metres(path, joints, units, "'joints'")
    if center is not None:
        center = center / UNITS.get(units, 1.0)
        if float(np.linalg.norm(center)) > 10 * MAX_EXTENT_M:
            hint = "even read as millimetres" if units == "mm" else "millimetres? pass --units mm"
            raise EvalInputError(f"{path}: 'obj_center' is over 10 m from the origin ({hint})")
    return Annotation(joints=joints, obj_center=center)


@dataclass(frozen=True)
class SampleFiles:
    """The files of one sample; a field is None where the set does not have it."""

    sample_id: str
    hand_pred: Path | None
    hand_gt: Path | None
    obj_pred: Path | None
    obj_gt: Path | None
    ann_pred: Path | None
    ann_gt: Path | None


def _index(directory: Path) -> dict[str, dict[str, Path]]:
    """Map sample id -> {"hand"|"obj"|"json": path} for one set directory."""
    found: dict[str, dict[str, Path]] = {}
    for p in sorted(directory.iterdir()):
        if not p.is_file():
            continue
        suffix = p.suffix.lower()
        if suffix == ".json":
            found.setdefault(p.stem, {})["json"] = p
            continue
        if suffix not in MESH_SUFFIXES:
            continue
        for role in ("hand", "obj"):
            if p.stem.endswith("_" + role):
                sid = p.stem[: -len(role) - 1]
                if role in found.get(sid, {}):
                    raise EvalInputError(f"{p}: sample '{sid}' has two {role} meshes")
                found.setdefault(sid, {})[role] = p
    return found


def gt_counts(gt_dir: str | Path) -> dict[str, int]:
    """How many GT samples have each part: "hand", "obj", "both" (hand and object), "json";
    "samples": those with any mesh. What a complete prediction set is scored against."""
    found = _index(Path(gt_dir))
    meshed = [g for g in found.values() if "hand" in g or "obj" in g]
    return {
        "samples": len(meshed),
        "hand": sum("hand" in g for g in meshed),
        "obj": sum("obj" in g for g in meshed),
        "both": sum("hand" in g and "obj" in g for g in meshed),
        "json": sum("json" in g for g in meshed),
    }


def discover(pred_dir: str | Path, gt_dir: str | Path) -> tuple[list[SampleFiles], list[str]]:
    """Pair every prediction in `pred_dir` with its ground truth in `gt_dir`.

    Returns (samples sorted by id, ids of GT samples that have no prediction). Raises
    EvalInputError when a directory is missing, when there is no prediction at all, or when a
    predicted mesh has no GT mesh of the same role.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not d.is_dir():
            raise EvalInputError(f"{d}: {what} directory does not exist")
    pred, gt = _index(pred_dir), _index(gt_dir)
    samples = []
    for sid in sorted(pred):
        p, g = pred[sid], gt.get(sid, {})
        if "hand" not in p and "obj" not in p:
            continue  # a lone JSON is not a prediction
        for role in ("hand", "obj"):
            if role in p and role not in g:
                raise EvalInputError(f"{p[role]}: prediction has no ground truth in {gt_dir}")
        samples.append(
            SampleFiles(
                sample_id=sid,
                hand_pred=p.get("hand"),
                hand_gt=g.get("hand"),
                obj_pred=p.get("obj"),
                obj_gt=g.get("obj"),
                ann_pred=p.get("json"),
                ann_gt=g.get("json"),
            )
        )
    if not samples:
        raise EvalInputError(f"{pred_dir}: no predicted meshes (<id>_hand.ply / <id>_obj.ply)")
    scored = {s.sample_id for s in samples}
    missing = sorted(
        sid for sid, g in gt.items() if ("hand" in g or "obj" in g) and sid not in scored
    )
    return samples, missing
