"""Loading, validation and light cleanup of triangle meshes given to SDF sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class MeshError(ValueError):
    """A mesh that cannot be used: unreadable, empty, non-finite or degenerate."""


def load_mesh(path: str | Path):
    """Read a mesh file (OBJ, PLY, STL, OFF, GLB...) into one ``trimesh.Trimesh``.

    Multi-part files are concatenated. Vertices are not merged, so that duplicated or flipped
    faces stay visible to :mod:`gsdf_data.filter`. Raises :class:`MeshError`.
    """
    import trimesh

    path = Path(path)
    if not path.is_file():
        # the cause marks the drop as one a rerun may fix (gsdf_data.prepare.drop_kind)
        raise MeshError(f"{path}: no such file") from FileNotFoundError(
            2, "no such file", str(path)
        )
    try:
        mesh = trimesh.load(path, force="mesh", process=False, skip_materials=True)
    except Exception as e:  # trimesh raises many types on a bad file
        raise MeshError(f"{path}: unreadable mesh ({type(e).__name__}: {e})") from e
    if not isinstance(mesh, trimesh.Trimesh):
        raise MeshError(f"{path}: no triangles in file")
    validate_mesh(mesh, name=str(path))
    return mesh


def validate_mesh(mesh, name: str = "mesh") -> None:
    """Raise :class:`MeshError` when a mesh has no faces, non-finite vertices, face indices out
    of range or zero total area."""
    verts = np.asarray(mesh.vertices)
    faces = np.asarray(mesh.faces)
    if len(verts) == 0 or len(faces) == 0:
        raise MeshError(f"{name}: empty mesh")
    if not np.isfinite(verts).all():
        raise MeshError(f"{name}: non-finite vertex coordinates")
    if faces.min() < 0 or faces.max() >= len(verts):
        raise MeshError(f"{name}: face indices out of range")
    # some face with a non-zero area; the first few faces almost always show one
    for lo, hi in ((0, 64), (64, len(faces))):
        tri = verts[faces[lo:hi]]
        if np.any(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])):
            return
    raise MeshError(f"{name}: zero surface area")


def clean_mesh(mesh):
    """Copy with exactly coincident vertices merged and zero-area faces removed.

    Duplicate faces are kept (they matter to the double-sided filter).
    """
    import trimesh

    out = trimesh.Trimesh(
        np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces), process=False
    )
    out.merge_vertices(merge_tex=True, merge_norm=True)
    out.update_faces(out.nondegenerate_faces(height=None))
    out.remove_unreferenced_vertices()
    return out


def mesh_arrays(mesh) -> tuple[np.ndarray, np.ndarray]:
    """(V,3) float32 vertices and (F,3) int32 faces, the form stored in shards."""
    return (
        np.ascontiguousarray(mesh.vertices, dtype=np.float32),
        np.ascontiguousarray(mesh.faces, dtype=np.int32),
    )
