"""Per-object work done once per object file instead of once per sample.

ObMan shows ~2,700 ShapeNet meshes in ~87,000 grasps and DexYCB 20 YCB meshes in ~30,000
frames. Parsing an OBJ (~45 ms for 16k faces) and the double-sided filter (50-90 ms) would
otherwise run for every sample. :class:`ObjectCache` keeps, per object file, the mesh as
arrays and the filter's verdict on the mesh in its own frame (the reference filters meshes,
not posed pairs) in ``<root>/<key>.npz``. The key covers the file (path, size, mtime) and the
filter configuration, so a verdict never depends on which worker computed it first. Entries
are written atomically: concurrent workers at worst do the same work twice, and an
interrupted run leaves no half-written entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsdf_data.filter import FilterConfig
from gsdf_data.meshes import MeshError


@dataclass(frozen=True)
class CachedObject:
    """verts (V,3) float64 and faces (F,3) int64 in the file's frame; reject: the double-sided
    filter's reason when the mesh fails it ("" when it passes or no filter is configured)."""

    verts: np.ndarray
    faces: np.ndarray
    reject: str = ""


@dataclass(frozen=True)
class ObjectCache:
    """Object meshes and filter verdicts cached in the folder ``root``.

    filter: the double-sided filter to apply (``None``: none). Pickles to worker processes.
    """

    root: str
    filter: FilterConfig | None = None

    def key(self, path: Path) -> str:
        st = path.stat()
        filt = None if self.filter is None else dataclasses.asdict(self.filter)
        text = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, filt])
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def load(self, path: str | Path) -> CachedObject:
        """The object in ``path`` (read and filtered on first use). Raises MeshError."""
        from gsdf_data.filter import double_sided_check
        from gsdf_data.meshes import load_mesh

        path = Path(path)
        if not path.is_file():
            # the cause marks the drop as one a rerun may fix (gsdf_data.prepare.drop_kind)
            missing = FileNotFoundError(2, "no such file", str(path))
            raise MeshError(f"{path}: no such file") from missing
        entry = Path(self.root) / f"{self.key(path)}.npz"
        try:
            with np.load(entry) as z:
                return CachedObject(z["verts"], z["faces"], str(z["reject"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # no entry yet, or a damaged one (truncated zip...): (re)built below
        mesh = load_mesh(path)
        obj = CachedObject(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64))
        if self.filter is not None:
            res = double_sided_check(mesh, self.filter)
            if not res.ok:
                obj = dataclasses.replace(obj, reject=res.reason)
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f"{entry.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, verts=obj.verts, faces=obj.faces, reject=np.str_(obj.reject))
        os.replace(tmp, entry)
        return obj
