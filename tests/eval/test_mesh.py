"""gsdf_eval.mesh: the PLY and OBJ readers against trimesh and against what was written, the
surface sampling against trimesh's, and one clear error per malformed file."""

from pathlib import Path

import numpy as np
import pytest
import trimesh

from gsdf_eval.align import sample_surface
from gsdf_eval.io import EvalInputError, load_mesh
from gsdf_eval.mesh import MeshFormatError, face_areas, read_mesh, read_obj, read_ply

PLY_CODES = {"char": "i1", "uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4",
             "uint": "u4", "float": "f4", "double": "f8"}  # fmt: skip


def _polygon_mesh() -> tuple[np.ndarray, list[list[int]]]:
    """A bumpy 4x3 grid of quads, one quad split into two triangles, and a pentagon
    (vertices (V, 3) metres, polygons as corner lists)."""
    u, v = np.meshgrid(np.linspace(0, 0.08, 5), np.linspace(0, 0.06, 4), indexing="ij")
    verts = np.stack([u, v, 0.01 * np.sin(40 * u + 30 * v)], -1).reshape(-1, 3)
    at = lambda i, j: i * 4 + j  # noqa: E731
    cells = [(i, j) for i in range(4) for j in range(3)]
    polys = [[at(i, j), at(i + 1, j), at(i + 1, j + 1), at(i, j + 1)] for i, j in cells]
    a, b, c, d = polys.pop(5)
    polys[2:2] = [[a, b, c], [a, c, d]]
    verts = np.vstack([verts, [[0.04, -0.02, 0.0], [0.1, 0.03, 0.01]]])
    polys.append([at(4, 0), len(verts) - 1, at(4, 3), at(4, 2), at(4, 1)])  # pentagon
    return verts, polys


def _fan(polys: list[list[int]]) -> np.ndarray:
    """Fan triangles (first, k, k + 1) of each polygon, polygon after polygon (by hand)."""
    return np.array([[p[0], p[k], p[k + 1]] for p in polys for k in range(1, len(p) - 1)])


def _triangles(faces) -> np.ndarray:
    """Triangles (F, 3) comparable regardless of their order and of which corner comes first
    (each rotated to start at its smallest index, orientation kept), sorted."""
    f = np.asarray(faces)
    f = np.take_along_axis(f, (np.argmin(f, 1)[:, None] + np.arange(3)) % 3, 1)
    return f[np.lexsort(f.T[::-1])]


def _write_ply(path: Path, fmt: str, vertices, polys, types=("float", "uchar", "int")) -> Path:
    """A PLY file written by hand: x, y, z (of type types[0]) among normals and a colour,
    faces with a list of types[1] lengths and types[2] indices and a flags byte, then an
    element the reader must skip."""
    coord, length, index = types
    order = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}[fmt]
    normals = np.tile([0.0, 0.6, 0.8], (len(vertices), 1))
    rgb = np.arange(len(vertices)) % 256
    props = [("nx", "float", normals[:, 0]), ("x", coord, vertices[:, 0]), ("red", "uchar", rgb),
             ("y", coord, vertices[:, 1]), ("z", coord, vertices[:, 2]),
             ("ny", "float", normals[:, 1]), ("nz", "float", normals[:, 2])]  # fmt: skip
    header = ["ply", f"format {fmt} 1.0", "comment by hand", f"element vertex {len(vertices)}"]
    header += [f"property {t} {n}" for n, t, _ in props]
    header += [f"element face {len(polys)}", f"property list {length} {index} vertex_indices",
               "property uchar flags", "element edge 1", "property int vertex1",
               "property int vertex2", "end_header"]  # fmt: skip
    out = ("\n".join(header) + "\n").encode()
    if order is None:
        rows = [" ".join(repr(float(c[i])) if t in ("float", "double") else str(int(c[i]))
                         for _, t, c in props) for i in range(len(vertices))]  # fmt: skip
        rows += [" ".join(map(str, [len(p), *p, 7])) for p in polys]
        out += ("\n".join([*rows, "0 1"]) + "\n").encode()
    else:
        table = np.empty(len(vertices), [(n, order + PLY_CODES[t]) for n, t, _ in props])
        for n, _, c in props:
            table[n] = c
        out += table.tobytes()
        for p in polys:
            out += np.array([len(p)], order + PLY_CODES[length]).tobytes()
            out += np.array(p, order + PLY_CODES[index]).tobytes() + b"\x07"
        out += np.array([0, 1], order + "i4").tobytes()
    path.write_bytes(out)
    return path


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
@pytest.mark.parametrize("types", [("float", "uchar", "int"), ("double", "int", "uint"),
                                   ("float", "ushort", "int")])  # fmt: skip
def test_ply_written_by_hand(tmp_path, fmt, types):
    verts, polys = _polygon_mesh()
    path = _write_ply(tmp_path / "m.ply", fmt, verts, polys, types)
    mesh = read_ply(path)
    # the coordinates as the declared type holds them; every polygon a fan, in file order
    np.testing.assert_array_equal(mesh.vertices, verts.astype(PLY_CODES[types[0]]).astype(float))
    np.testing.assert_array_equal(mesh.faces, _fan(polys))
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
    tri = [p for p in polys if len(p) == 3]
    path = _write_ply(tmp_path / "t.ply", fmt, verts, tri, types)
    mesh, ref = read_ply(path), trimesh.load(path, process=False)
    np.testing.assert_array_equal(mesh.vertices, ref.vertices)
    np.testing.assert_array_equal(mesh.faces, ref.faces)
    # quads only (trimesh cannot read a binary PLY that mixes polygon sizes): the same
    # triangles as trimesh's, which reorders them
    quads = [p for p in polys if len(p) == 4]
    path = _write_ply(tmp_path / "q.ply", fmt, verts, quads, types)
    mesh, ref = read_ply(path), trimesh.load(path, process=False)
    np.testing.assert_array_equal(mesh.vertices, ref.vertices)
    np.testing.assert_array_equal(_triangles(mesh.faces), _triangles(ref.faces))
    np.testing.assert_array_equal(mesh.faces, _fan(quads))


@pytest.mark.parametrize("encoding", ["ascii", "binary"])
def test_ply_written_by_trimesh(tmp_path, hand_mesh, encoding):
    """The bundled hand with vertex normals and colours, as trimesh writes it."""
    mesh = trimesh.Trimesh(hand_mesh.vertices, hand_mesh.faces, process=False)
    mesh.visual.vertex_colors = np.tile([200, 120, 90, 255], (len(mesh.vertices), 1))
    path = tmp_path / "hand.ply"
    path.write_bytes(trimesh.exchange.ply.export_ply(mesh, encoding=encoding, vertex_normal=True))
    header = path.read_bytes()[:500]
    assert b"property float nx" in header and b"property uchar red" in header
    ours, ref = read_mesh(path), trimesh.load(path, process=False)
    np.testing.assert_array_equal(ours.vertices, ref.vertices)
    np.testing.assert_array_equal(ours.faces, ref.faces)


def test_bundled_examples_read_as_trimesh_reads_them(examples_dir):
    for path in sorted(examples_dir.glob("*/*.ply")):
        ours, ref = read_mesh(path), trimesh.load(path, process=False)
        np.testing.assert_array_equal(ours.vertices, ref.vertices)
        np.testing.assert_array_equal(ours.faces, ref.faces)
        np.testing.assert_array_equal(face_areas(ours.vertices, ours.faces), ref.area_faces)


def _obj_text(verts: np.ndarray, polys, negative: bool) -> str:
    """OBJ with texture coordinates and normals, every corner form in turn."""
    lines = ["# written by hand", "o grid", "mtllib none.mtl"]
    lines += ["v " + " ".join(repr(float(c)) for c in v) for v in verts]
    lines += ["vt 0.5 0.5", "vt 0.25 0.75", "vn 0 0 1", "s off", "usemtl none"]
    n = len(verts)
    for k, p in enumerate(polys):
        refs = [str(i - n) if negative else str(i + 1) for i in p]
        form = ("{}", "{}/1", "{}/2/1", "{}//1")[k % 4]
        lines.append("f " + " ".join(form.format(r) for r in refs))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("negative", [False, True])
def test_obj_corner_forms_and_negative_indices(tmp_path, negative):
    verts, polys = _polygon_mesh()
    path = tmp_path / "grid.obj"
    path.write_text(_obj_text(verts, polys, negative))
    mesh, ref = read_obj(path), trimesh.load(path, process=False)
    np.testing.assert_array_equal(mesh.vertices, verts)
    np.testing.assert_array_equal(mesh.faces, _fan(polys))
    # trimesh splits vertices by texture coordinate and reorders the triangles of quads:
    # map its corners back to the written vertices (all distinct) by their coordinates
    index = {tuple(v): i for i, v in enumerate(verts)}
    theirs = [[index[tuple(ref.vertices[i])] for i in f] for f in ref.faces]
    np.testing.assert_array_equal(_triangles(mesh.faces), _triangles(theirs))


def test_obj_triangles_without_texture_read_as_trimesh_reads_them(tmp_path, hand_mesh):
    path = tmp_path / "hand.obj"
    path.write_text(trimesh.exchange.obj.export_obj(hand_mesh, include_normals=True))
    ours, ref = read_mesh(path), trimesh.load(path, process=False)
    np.testing.assert_array_equal(ours.vertices, ref.vertices)
    np.testing.assert_array_equal(ours.faces, ref.faces)


def test_obj_negative_indices_count_back_from_the_vertices_so_far(tmp_path):
    """Per the OBJ format (trimesh counts back from the end of the file instead)."""
    path = tmp_path / "two.obj"
    path.write_text(
        "v 0 0 0\nv 1 0 0\nv 0 1 0\nf -3 -2 -1\nv 0 0 1\nv 1 0 1\nv 0 1 1\nf -3 -2 -1\n"
    )
    np.testing.assert_array_equal(read_obj(path).faces, [[0, 1, 2], [3, 4, 5]])


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_obj_layout_comments_and_line_ends(tmp_path, newline):
    """Indented statements, tabs, comments after a statement, blank lines and each line end;
    `vt`/`vn` lines and commented-out statements are not vertices or faces; errors name the
    file's line."""
    lines = [
        "# v 9 9 9",
        "  v 0 0 0   # the origin",
        "v\t1 0 0",
        "",
        "vt 0 1",
        "vn 0 0 1",
        "v 0 1 0#no space before the comment",
        "\tf 1 2 3 # one triangle",
        "#f 3 2 1",
        "f\t1/1/1\t3/1/1 2/1/1",
    ]
    path = tmp_path / "layout.obj"
    path.write_bytes(newline.join(lines).encode())  # no line end after the last line
    mesh = read_obj(path)
    np.testing.assert_array_equal(mesh.vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 1]])
    path.write_bytes(newline.join([*lines, "", "f 1 2 9"]).encode())
    with pytest.raises(MeshFormatError, match="OBJ line 12: vertex index 9 out of range"):
        read_obj(path)


def test_obj_vertex_with_w_or_colour_keeps_x_y_z(tmp_path):
    path = tmp_path / "wc.obj"
    path.write_text("v 0 0 0 1\nv 0.1 0 0 0.5 0.2 0.3\nv 0 0.1 0\nf 1 2 3\n")
    mesh = read_obj(path)
    np.testing.assert_array_equal(mesh.vertices, [[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0]])
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2]])


@pytest.mark.parametrize("suffix", ["off", "stl"])
def test_other_formats_still_load_through_trimesh(tmp_path, hand_mesh, suffix):
    path = tmp_path / f"hand.{suffix}"
    hand_mesh.export(path)
    ours, ref = load_mesh(path), trimesh.load(path, process=False, force="mesh")
    np.testing.assert_array_equal(ours.vertices, ref.vertices)
    np.testing.assert_array_equal(ours.faces, ref.faces)


def test_sampling_is_trimesh_sampling_bitwise(hand_mesh):
    """The sampler that replaced trimesh.sample.sample_surface draws the same points (in
    another order: grouped by grid cell)."""
    verts, polys = _polygon_mesh()
    grid = trimesh.Trimesh(verts, _fan(polys), process=False)
    for mesh in (hand_mesh, grid):
        np.testing.assert_array_equal(face_areas(mesh.vertices, mesh.faces), mesh.area_faces)
        for seed in range(3):
            ours = sample_surface(mesh, 2000, np.random.default_rng(seed), sets=2)
            points, _ = trimesh.sample.sample_surface(mesh, 4000, seed=np.random.default_rng(seed))
            for a, b in zip(ours, np.split(points, 2), strict=True):
                np.testing.assert_array_equal(a[np.lexsort(a.T)], b[np.lexsort(b.T)])


def _valid_binary(tmp_path) -> bytes:
    verts, polys = _polygon_mesh()
    return _write_ply(tmp_path / "ok.ply", "binary_little_endian", verts, polys).read_bytes()


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("truncated.ply", lambda ok: ok[: len(ok) - 60], "ends inside element 'face'"),
        ("extra.ply", lambda ok: ok + bytes(12), "goes on after its last element (12 bytes"),
        ("noheader.ply", lambda ok: ok.replace(b"end_header", b"end_hedder"), "end_header"),
        ("badtype.ply", lambda ok: ok.replace(b"property float nx", b"property half nx"), "'half'"),
        ("noz.ply", lambda ok: ok.replace(b" z\n", b" w\n"), "no z property"),
        ("words.ply", lambda ok: b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n"
         b"property float y\nproperty float z\nend_header\n0 zero 0\n", "'zero' is not a number"),
        ("line.ply", lambda ok: b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n"
         b"property float y\nproperty float z\nelement face 1\nproperty list uchar int "
         b"vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n2 0 1\n",
         "a face with 2 corners: faces need at least 3"),
        ("text.obj", lambda ok: b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 x\n", "line 4"),
        ("range.obj", lambda ok: b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 -4\n", "index -4 out of range"),
        ("novertex.obj", lambda ok: b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 /3\n", "line 4: cannot read"),
        ("short.obj", lambda ok: b"v 0 0\n", "line 1"),
    ],
)  # fmt: skip
def test_malformed_file_is_one_clear_error_naming_it(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content(_valid_binary(tmp_path)))
    with pytest.raises(EvalInputError) as err:
        load_mesh(path)
    message = str(err.value)
    assert message.startswith(f"{path}: cannot read mesh (") and reason in message, message
    assert "\n" not in message
