"""Mesh loading and validation: one-line reasons for bad files."""

import numpy as np
import pytest
import trimesh

from gsdf_data.meshes import MeshError, clean_mesh, load_mesh, mesh_arrays, validate_mesh


def test_load_round_trip(tmp_path):
    mesh = trimesh.creation.box()
    path = tmp_path / "box.obj"
    mesh.export(path)
    loaded = load_mesh(path)
    assert len(loaded.faces) == 12
    v, f = mesh_arrays(loaded)
    assert v.dtype == np.float32 and f.dtype == np.int32


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "no such file"),
        (b"", "no triangles|unreadable|empty"),
        (b"v 0 0 0\n", "no triangles|empty"),
    ],
)
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.obj"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MeshError, match=match):
        load_mesh(path)


def test_validate_rejects_nan_and_degenerate():
    good = trimesh.creation.box()
    validate_mesh(good)
    v = good.vertices.copy()
    v[0, 0] = np.nan
    with pytest.raises(MeshError, match="non-finite"):
        validate_mesh(trimesh.Trimesh(v, good.faces, process=False))
    flat = trimesh.Trimesh(np.zeros((3, 3)), [[0, 1, 2]], process=False)
    with pytest.raises(MeshError, match="area"):
        validate_mesh(flat)
    # many zero-area faces: rejected; one real face among them, even the last one: kept
    v = np.vstack([np.zeros((3, 3)), np.eye(3)])
    many = np.tile([0, 1, 2], (100, 1))
    with pytest.raises(MeshError, match="area"):
        validate_mesh(trimesh.Trimesh(v, many, process=False))
    validate_mesh(trimesh.Trimesh(v, np.vstack([many, [3, 4, 5]]), process=False))


def test_clean_keeps_flipped_duplicates_but_merges_vertices():
    m = trimesh.creation.box()
    soup = trimesh.Trimesh(m.triangles.reshape(-1, 3), np.arange(36).reshape(-1, 3), process=False)
    soup = trimesh.Trimesh(
        soup.vertices, np.concatenate([soup.faces, soup.faces[:, ::-1]]), process=False
    )
    c = clean_mesh(soup)
    assert len(c.vertices) == 8
    assert len(c.faces) == 24
