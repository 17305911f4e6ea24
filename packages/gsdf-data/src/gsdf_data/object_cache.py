"""One object as one value: :class:`ObjectModel`, and the work done once per object file
instead of once per sample.

ObMan shows ~2,700 ShapeNet meshes in ~87,000 grasps and DexYCB 20 YCB meshes in ~30,000
frames. Parsing an OBJ (~45 ms for 16k faces), the double-sided filter (50-90 ms) and
building the SDF query structures (BVH, ray scene: ~20 ms for 16k faces) would otherwise
run for every sample. A reader loads an :class:`ObjectModel` (the mesh in its own frame and
the filter's verdict on it: the reference filters meshes, not posed pairs) and hands it to
the pipeline with the sample's pose; the model's query structures are built on first use
and kept for the object's next samples in the same process.

:class:`ObjectCache` keeps, per object file, the mesh as arrays and the filter's verdict in
``<root>/<key>.npz``. The key covers the file (path, size, mtime) and the filter
configuration, so a verdict never depends on which worker computed it first. Entries are
written atomically: concurrent workers at worst do the same work twice, and an interrupted
run leaves no half-written entry; a damaged entry is rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsdf_data.files import atomic_write
from gsdf_data.filter import FilterConfig
from gsdf_data.meshes import MeshError


@dataclass(frozen=True, eq=False)
class ObjectModel:
    """An object mesh in its own (model) frame, as every sample of the object shares it.

    key: names the geometry within a process (the file, its size and mtime); two models
    with the same key have the same vertices and faces. verts (V,3) float64, faces (F,3)
    int64. filtered: the double-sided filter configuration the mesh passed (``None``: not
    checked). reject: the filter's reason when the mesh failed it ("" otherwise).
    Pickles to worker processes without its query structures.
    """

    key: str
    verts: np.ndarray
    faces: np.ndarray
    filtered: FilterConfig | None = None
    reject: str = ""

    def query(self, sign: str, n_rays: int):
        """The :class:`gsdf_data.sdf.MeshSDF` of the mesh in its own frame, built on the first
        call in this process and shared by the next samples of the object (place it with
        ``.placed(frame)``)."""
        from gsdf_data.sdf import MeshSDF

        k = (self.key, sign, n_rays)
        sdf = _QUERIES.get(k)
        if sdf is None:
            v = np.ascontiguousarray(self.verts, dtype=np.float64)
            f = np.ascontiguousarray(self.faces, dtype=np.int64)
            sdf = MeshSDF(v, f, local=True, sign=sign, n_rays=n_rays)
            _QUERIES[k] = sdf
            while len(_QUERIES) > QUERIES_KEPT:
                _QUERIES.popitem(last=False)
        _QUERIES.move_to_end(k)
        return sdf


# per process: the query structures of the last few objects, reused by their other samples
# (an ObMan object is grasped ~30 times, a DexYCB one ~1,500 times, ids grouped by object)
QUERIES_KEPT = 8
_QUERIES: OrderedDict[tuple, object] = OrderedDict()


def forget_queries() -> None:
    """Drop this process's query structures of recent objects (benchmarks, memory)."""
    _QUERIES.clear()


def _file_key(path: Path, extra=None) -> str:
    st = path.stat()
    text = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, extra])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _check_exists(path: Path) -> None:
    if not path.is_file():
        # the cause marks the drop as one a rerun may fix (gsdf_data.prepare.drop_kind)
        missing = FileNotFoundError(2, "no such file", str(path))
        raise MeshError(f"{path}: no such file") from missing


def read_object(path: str | Path) -> ObjectModel:
    """The object in ``path``, read now and not filtered. Raises MeshError."""
    from gsdf_data.meshes import load_mesh

    path = Path(path)
    _check_exists(path)
    mesh = load_mesh(path)
    verts, faces = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
    return ObjectModel(_file_key(path), verts, faces)


@dataclass(frozen=True)
class ObjectCache:
    """Object meshes and filter verdicts cached in the folder ``root``.

    filter: the double-sided filter to apply (``None``: none). Pickles to worker processes.
    """

    root: str
    filter: FilterConfig | None = None

    def key(self, path: Path) -> str:
        filt = None if self.filter is None else dataclasses.asdict(self.filter)
        return _file_key(path, filt)

    def load(self, path: str | Path) -> ObjectModel:
        """The object in ``path`` (read and filtered on first use). Raises MeshError."""
        from gsdf_data.filter import double_sided_check
        from gsdf_data.meshes import load_mesh

        path = Path(path)
        _check_exists(path)
        key = self.key(path)
        entry = Path(self.root) / f"{key}.npz"
        try:
            with np.load(entry) as z:
                return self._model(key, z["verts"], z["faces"], str(z["reject"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # no entry yet, or a damaged one (truncated zip...): (re)built below
        mesh = load_mesh(path)
        verts, faces = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
        reject = ""
        if self.filter is not None:
            res = double_sided_check(mesh, self.filter)
            if not res.ok:
                reject = res.reason
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(entry) as tmp:
            np.savez(tmp, verts=verts, faces=faces, reject=np.str_(reject))
        return self._model(key, verts, faces, reject)

    def _model(self, key, verts, faces, reject: str) -> ObjectModel:
        filtered = self.filter if self.filter is not None and not reject else None
        return ObjectModel(key, verts, faces, filtered, reject)
