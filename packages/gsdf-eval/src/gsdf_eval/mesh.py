"""Triangle meshes for scoring without trimesh: a plain `Mesh`, PLY and OBJ readers, face areas.

Why not trimesh here: `import trimesh` loads scipy and networkx and costs about a second,
more than scoring a pair, and scoring only needs vertices and faces. PLY and OBJ, the formats
reconstructions are written in, are read with numpy alone; any other format goes through
trimesh, imported only then. On triangle meshes the readers give exactly the vertices and
faces trimesh gives (tests/eval/test_mesh.py), so such a mesh scores exactly as it did when
trimesh read it.

PLY: ascii, binary_little_endian and binary_big_endian; vertex x, y, z of any numeric type
among any other properties (normals, colours, ...), which are skipped; faces as a list
property (`vertex_indices` or `vertex_index`, or the face element's only list) with any
integer length and index types; other elements are skipped. OBJ: `v` lines and `f` lines
with `v`, `v/vt`, `v/vt/vn` or `v//vn` corners, 1-based or negative (counted back from the
last vertex so far); other statements are ignored, and every `v` line is a vertex whether a
face uses it or not. Polygons become fans of triangles from their first corner, in the file's
order. (trimesh gives the same triangles for quads and larger polygons but reorders them,
cannot read a binary PLY that mixes polygon sizes, and resolves negative OBJ indices from the
end of the file.)
"""

from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class MeshFormatError(ValueError):
    """A mesh file that cannot be parsed; `str(err)` is the reason (without the path)."""


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh: vertices (V, 3) float64 and faces (F, 3) int64 indexing them.

    What gsdf-eval scores; any object with `vertices` and `faces` (a trimesh.Trimesh) is
    scored the same way.
    """

    vertices: np.ndarray
    faces: np.ndarray

    @property
    def area(self) -> float:
        """Total surface area."""
        return float(face_areas(self.vertices, self.faces).sum())


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Areas (F,) of the triangles faces (F, 3) of vertices (V, 3)."""
    v, f = np.asarray(vertices, dtype=np.float64), np.asarray(faces)
    return triangle_areas(v[f[:, 0]], v[f[:, 1]], v[f[:, 2]])


def triangle_areas(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Areas (F,) of the triangles with corners a, b, c (F, 3 each).

    Computed from the edges b − a and c − b, with the cross product and the sum of its
    squares in the order trimesh uses: the areas decide which face each surface sample falls
    on, and these are bitwise trimesh's, so the samples are too.
    """
    e, g = b - a, c - b
    x = e[:, 1] * g[:, 2] - e[:, 2] * g[:, 1]
    y = e[:, 2] * g[:, 0] - e[:, 0] * g[:, 2]
    z = e[:, 0] * g[:, 1] - e[:, 1] * g[:, 0]
    return np.sqrt(x * x + y * y + z * z) / 2.0


def read_mesh(path: str | Path) -> Mesh:
    """Read a triangle mesh: PLY and OBJ here, any other format through trimesh.

    No processing: vertices are not merged or reordered, so what is scored is what was
    written. Raises MeshFormatError (PLY, OBJ) with the reason for a malformed file; for other
    formats trimesh's own exceptions pass through.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return read_ply(path)
    if suffix == ".obj":
        return read_obj(path)
    import trimesh  # only for the formats read nowhere else: it costs about a second

    loaded = trimesh.load(str(path), force="mesh", process=False)
    if not isinstance(loaded, trimesh.Trimesh):
        raise MeshFormatError("no triangle mesh in the file")
    return Mesh(
        np.asarray(loaded.vertices, dtype=np.float64), np.asarray(loaded.faces, dtype=np.int64)
    )


# ---------------------------------------------------------------------------------------- PLY

_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_PLY_FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}
# (kind, size) of an integer type -> its struct code, for list lengths read one at a time
_STRUCT_INTS = {
    ("i", 1): "b",
    ("u", 1): "B",
    ("i", 2): "h",
    ("u", 2): "H",
    ("i", 4): "i",
    ("u", 4): "I",
}


@dataclass(frozen=True)
class _Property:
    name: str
    dtype: np.dtype  # of the value, or of a list's items
    count_dtype: np.dtype | None = None  # of a list's length; None for a scalar property


@dataclass(frozen=True)
class _Element:
    name: str
    count: int
    properties: tuple[_Property, ...]


def _ply_type(name: str, order: str) -> np.dtype:
    if name not in _PLY_TYPES:
        raise MeshFormatError(f"PLY header: unknown property type {name!r}")
    return np.dtype(order + _PLY_TYPES[name])


def _ply_header(data: bytes) -> tuple[str, list[_Element], int]:
    """(byte-order prefix, or "" for ascii; elements; offset of the body)."""
    if not (data.startswith(b"ply\n") or data.startswith(b"ply\r\n")):
        raise MeshFormatError("not a PLY file (it does not start with 'ply')")
    end = data.find(b"\nend_header") + 1
    if end == 0:
        raise MeshFormatError("PLY header has no end_header line")
    body = data.find(b"\n", end)
    body = len(data) if body < 0 else body + 1
    order, elements, props = None, [], None
    for raw in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            if words[1] not in _PLY_FORMATS:
                raise MeshFormatError(f"PLY header: unknown format {words[1]!r}")
            order = _PLY_FORMATS[words[1]]
        elif words[0] == "element" and len(words) == 3:
            try:
                count = int(words[2])
            except ValueError:
                count = -1
            if count < 0:
                raise MeshFormatError(f"PLY header: bad element count in {raw.strip()!r}")
            props = []
            elements.append((words[1], count, props))
        elif words[0] == "property" and props is not None:
            if len(words) == 5 and words[1] == "list":
                item, length = _ply_type(words[3], order or ""), _ply_type(words[2], order or "")
                if length.kind not in "iu":
                    raise MeshFormatError(f"PLY header: list length of type {words[2]!r}")
                props.append(_Property(words[4], item, length))
            elif len(words) == 3:
                props.append(_Property(words[2], _ply_type(words[1], order or "")))
            else:
                raise MeshFormatError(f"PLY header: cannot read {raw.strip()!r}")
        else:
            raise MeshFormatError(f"PLY header: cannot read {raw.strip()!r}")
    if order is None:
        raise MeshFormatError("PLY header has no format line")
    return order, [_Element(n, c, tuple(p)) for n, c, p in elements], body


# A parsed element: property name -> values (count,) for a scalar, or for a list
# (lengths (count,), items (sum of lengths,)).
_Columns = dict[str, "np.ndarray | tuple[np.ndarray, np.ndarray]"]


def _binary_element(el: _Element, data: bytes, offset: int, order: str) -> tuple[_Columns, int]:
    """Parse one element of a binary body starting at `offset`; (columns, next offset)."""

    def short() -> MeshFormatError:
        return MeshFormatError(f"PLY data ends inside element {el.name!r}")

    # Fast path: every list as long as in the first record (all triangles, say), so the
    # element is one fixed-size record type.
    fields, at = [], offset
    for i, p in enumerate(el.properties):
        if p.count_dtype is None:
            fields.append((f"f{i}", p.dtype))
            at += p.dtype.itemsize
            continue
        n = 0
        if el.count:
            if at + p.count_dtype.itemsize > len(data):
                raise short()
            n = int(np.frombuffer(data, p.count_dtype, 1, at)[0])
        fields += [(f"n{i}", p.count_dtype), (f"f{i}", p.dtype, (n,))]
        at += p.count_dtype.itemsize + n * p.dtype.itemsize
    record = np.dtype(fields)
    end = offset + el.count * record.itemsize
    if end <= len(data):
        rec = np.frombuffer(data, record, el.count, offset)
        cols: _Columns = {}
        for i, p in enumerate(el.properties):
            if p.count_dtype is None:
                cols[p.name] = rec[f"f{i}"]
                continue
            n = record[f"f{i}"].shape[0]
            if not (rec[f"n{i}"] == n).all():
                break
            cols[p.name] = (np.full(el.count, n, np.int64), rec[f"f{i}"].reshape(-1))
        else:
            return cols, end
    elif all(p.count_dtype is None for p in el.properties):
        raise short()

    # Lists of varying length (triangles and quads, say): walk the records one by one.
    chunks: dict[str, list[bytes]] = {p.name: [] for p in el.properties}
    lengths: dict[str, list[int]] = {p.name: [] for p in el.properties if p.count_dtype}
    read_length = {
        p.name: struct.Struct(order + _STRUCT_INTS[p.count_dtype.kind, p.count_dtype.itemsize])
        for p in el.properties
        if p.count_dtype is not None
    }
    at = offset
    for _ in range(el.count):
        for p in el.properties:
            if p.count_dtype is None:
                size = p.dtype.itemsize
            else:
                if at + p.count_dtype.itemsize > len(data):
                    raise short()
                (n,) = read_length[p.name].unpack_from(data, at)
                lengths[p.name].append(n)
                at += p.count_dtype.itemsize
                size = n * p.dtype.itemsize
            if at + size > len(data):
                raise short()
            chunks[p.name].append(data[at : at + size])
            at += size
    cols = {}
    for p in el.properties:
        values = np.frombuffer(b"".join(chunks[p.name]), p.dtype)
        cols[p.name] = (
            values if p.count_dtype is None else (np.asarray(lengths[p.name], np.int64), values)
        )
    return cols, at


def _ascii_element(el: _Element, tokens: np.ndarray, pos: int) -> tuple[_Columns, int]:
    """Parse one element of an ascii body (all its numbers, float64) from token `pos`."""

    def short() -> MeshFormatError:
        return MeshFormatError(f"PLY data ends inside element {el.name!r}")

    def integers(values: np.ndarray, what: str) -> np.ndarray:
        if not (values == np.round(values)).all():
            raise MeshFormatError(f"PLY element {el.name!r}: {what} that is not an integer")
        return values.astype(np.int64)

    # Fast path as in the binary case: fixed-length records.
    layout, width = [], 0  # (column of the value or of a list's first item, list length)
    for p in el.properties:
        if p.count_dtype is None:
            layout.append((width, None))
            width += 1
            continue
        if el.count == 0:
            n = 0
        elif pos + width >= len(tokens):
            raise short()
        else:
            n = int(integers(tokens[pos + width : pos + width + 1], "a list length")[0])
        layout.append((width + 1, n))
        width += 1 + n
    if pos + el.count * width <= len(tokens):
        rows = tokens[pos : pos + el.count * width].reshape(el.count, width)
        if all(n is None or (rows[:, col - 1] == n).all() for col, n in layout):
            cols: _Columns = {}
            for p, (col, n) in zip(el.properties, layout, strict=True):
                if n is None:
                    cols[p.name] = rows[:, col]
                else:
                    items = rows[:, col : col + n].reshape(-1)
                    cols[p.name] = (np.full(el.count, n, np.int64), items)
            return cols, pos + el.count * width
    elif not any(n is not None for _, n in layout):
        raise short()

    # Lists of varying length: walk the records.
    starts: dict[str, list[int]] = {p.name: [] for p in el.properties}
    lengths: dict[str, list[int]] = {p.name: [] for p in el.properties if p.count_dtype}
    for _ in range(el.count):
        for p in el.properties:
            if p.count_dtype is None:
                starts[p.name].append(pos)
                pos += 1
            else:
                if pos >= len(tokens):
                    raise short()
                n = int(tokens[pos])
                if n != tokens[pos] or n < 0:
                    raise MeshFormatError(f"PLY element {el.name!r}: bad list length {tokens[pos]}")
                lengths[p.name].append(n)
                starts[p.name].append(pos + 1)
                pos += 1 + n
    if pos > len(tokens):
        raise short()
    cols = {}
    for p in el.properties:
        s = np.asarray(starts[p.name], np.int64)
        if p.count_dtype is None:
            cols[p.name] = tokens[s]
        else:
            n = np.asarray(lengths[p.name], np.int64)
            cols[p.name] = (n, tokens[_ragged_index(s, n)])
    return cols, pos


def _ragged_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices of the items of consecutive runs: starts[i] + 0..lengths[i]-1, run after run."""
    total = int(lengths.sum())
    first = np.cumsum(lengths) - lengths  # where each run begins in the output
    return np.repeat(starts - first, lengths) + np.arange(total)


def read_ply(path: str | Path) -> Mesh:
    """Read a PLY file (ascii or binary, either byte order); see the module docstring."""
    data = Path(path).read_bytes()
    order, elements, body = _ply_header(data)
    parsed: dict[str, _Columns] = {}
    if order:
        offset = body
        for el in elements:
            parsed[el.name], offset = _binary_element(el, data, offset, order)
        left = len(data) - offset
    else:
        text = data[body:].decode("ascii", errors="replace")
        tokens = _numbers(text, np.float64)
        if tokens is None:
            bad = next(t for t in text.split() if not _is_number(t))
            raise MeshFormatError(f"PLY data: {bad!r} is not a number")
        pos = 0
        for el in elements:
            cols, pos = _ascii_element(el, tokens, pos)
            # the values as the declared types would hold them (a float property is float32)
            for p in el.properties:
                c = cols[p.name]
                if p.count_dtype is None:
                    cols[p.name] = _cast(c, p.dtype, el.name, p.name)
                else:
                    cols[p.name] = (c[0], _cast(c[1], p.dtype, el.name, p.name))
            parsed[el.name] = cols
        left = len(tokens) - pos
    if left:
        # more data than the header announces: a count is wrong, and what is read is not
        # the whole mesh
        unit = "bytes" if order else "values"
        raise MeshFormatError(f"PLY data goes on after its last element ({left} {unit} more)")

    if "vertex" not in parsed:
        raise MeshFormatError("PLY file has no vertex element")
    vertex = parsed["vertex"]
    missing = [k for k in "xyz" if not isinstance(vertex.get(k), np.ndarray)]
    if missing:
        raise MeshFormatError(f"PLY vertex element has no {', '.join(missing)} property")
    vertices = np.stack([vertex[k] for k in "xyz"], axis=1).astype(np.float64)
    faces = np.zeros((0, 3), np.int64)
    face = parsed.get("face")
    if face:
        lists = [k for k, v in face.items() if isinstance(v, tuple)]
        named = [k for k in ("vertex_indices", "vertex_index") if k in lists]
        if not named and len(lists) != 1:
            raise MeshFormatError("PLY face element has no vertex_indices list")
        lengths, items = face[(named or lists)[0]]
        if items.dtype.kind not in "iu":
            raise MeshFormatError("PLY face indices are not integers")
        faces = triangulate(lengths, items.astype(np.int64))
    return Mesh(vertices, faces)


def _numbers(text: str, dtype) -> np.ndarray | None:
    """The whitespace-separated numbers in text (parsed in C: ten times faster than
    float() on each), or None when one of them is not a number of that dtype."""
    with warnings.catch_warnings():
        # numpy < 2.3 warns and stops at the first bad number; later versions raise
        warnings.simplefilter("error", DeprecationWarning)
        try:
            return np.fromstring(text, dtype=dtype, sep=" ")
        except (ValueError, DeprecationWarning):
            return None


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _cast(values: np.ndarray, dtype: np.dtype, element: str, name: str) -> np.ndarray:
    if dtype.kind in "iu":
        if not (values == np.round(values)).all():
            raise MeshFormatError(f"PLY element {element!r}: {name} is not an integer")
        return values.astype(np.int64)
    return values.astype(dtype)


def triangulate(lengths: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Triangles (T, 3) of polygons: lengths (P,) and their corners (sum of lengths,) run
    after run. Each polygon becomes a fan from its first corner, in the polygons' order (a
    triangle stays as it is). A polygon of fewer than 3 corners is an error."""
    lengths = np.asarray(lengths, np.int64)
    if (lengths < 3).any():
        n = int(lengths[lengths < 3][0])
        raise MeshFormatError(f"a face with {n} corner{'s' * (n != 1)}: faces need at least 3")
    if (lengths == 3).all():
        return np.asarray(corners, np.int64).reshape(-1, 3)
    return _fans(np.cumsum(lengths) - lengths, lengths, corners)


def _fans(starts: np.ndarray, lengths: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Fan triangles (first, k, k + 1) of each polygon (corners from starts, lengths)."""
    per = lengths - 2
    origin = np.repeat(starts, per)
    k = _ragged_index(starts + 1, per)
    return np.stack([items[origin], items[k], items[k + 1]], axis=1).reshape(-1, 3)


# ---------------------------------------------------------------------------------------- OBJ


_OBJ_AFTER_SLASH = re.compile(r"/\S*")  # a corner's /vt/vn
# a vertex or a face statement (after a newline): its text up to the line's end or a comment
_OBJ_VERTEX = re.compile(r"\n[ \t]*v[ \t]([^\r\n#]*)")
_OBJ_FACE = re.compile(r"\n[ \t]*f[ \t]([^\r\n#]*)")


def _tokens_per_line(lines: list[str]) -> np.ndarray:
    """How many whitespace-separated tokens each of lines holds (a vectorised str.split)."""
    b = np.frombuffer(("\n".join(lines) + "\n").encode(), dtype=np.uint8)
    space = (b == 32) | (b == 9) | (b == 10) | (b == 13)
    start = ~space & np.concatenate([[True], space[:-1]])
    newline = b == 10
    line = np.cumsum(newline) - newline
    return np.bincount(line[start], minlength=len(lines)).astype(np.int64)


def read_obj(path: str | Path) -> Mesh:
    """Read the vertices and faces of an OBJ file; see the module docstring."""
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    if "\n" not in text:  # old Mac line ends, or one line
        text = text.replace("\r", "\n")
    text = "\n" + text  # every statement follows a newline
    vertex_lines, face_lines = _OBJ_VERTEX.findall(text), _OBJ_FACE.findall(text)

    def starts(statement: re.Pattern) -> np.ndarray:  # where each statement begins
        return np.array([m.start() for m in statement.finditer(text)], dtype=np.int64)

    def line_of(statement: re.Pattern, k: int) -> int:  # 1-based line of the k-th statement
        return text.count("\n", 0, int(starts(statement)[k]) + 1)

    xyz = _numbers(" ".join(vertex_lines), np.float64)
    if xyz is not None and len(xyz) == 3 * len(vertex_lines):  # the usual "v x y z"
        vertices = xyz.reshape(-1, 3)
    else:  # a w or a colour after x y z, or something that is not a vertex
        rows = []
        for k, line in enumerate(vertex_lines):
            values = _numbers(line, np.float64)
            if values is None or len(values) < 3:
                raise MeshFormatError(
                    f"OBJ line {line_of(_OBJ_VERTEX, k)}: a vertex needs x, y and z"
                )
            rows.append(values[:3])
        vertices = np.array(rows, dtype=np.float64).reshape(-1, 3)

    # corners are "v", "v/vt", "v/vt/vn" or "v//vn": the vertex is the number before a slash
    lengths = _tokens_per_line(face_lines)
    refs = _numbers(_OBJ_AFTER_SLASH.sub("", " ".join(face_lines)), np.int64)
    if refs is None or len(refs) != lengths.sum():
        for k, f in enumerate(face_lines):
            numbers = _numbers(_OBJ_AFTER_SLASH.sub("", f), np.int64)
            if numbers is None or len(numbers) != lengths[k]:  # a bad number, or "/vt" alone
                raise MeshFormatError(f"OBJ line {line_of(_OBJ_FACE, k)}: cannot read face 'f {f}'")
    if (lengths < 3).any():
        raise MeshFormatError(
            f"OBJ line {line_of(_OBJ_FACE, int(np.argmax(lengths < 3)))}: a face needs 3 corners"
        )
    # 1-based, or negative: counted back from the last vertex defined before the face
    corners = refs - 1
    if (refs < 0).any():
        before = np.repeat(np.searchsorted(starts(_OBJ_VERTEX), starts(_OBJ_FACE)), lengths)
        corners = np.where(refs > 0, refs - 1, before + refs)
    bad = np.flatnonzero((refs == 0) | (corners < 0) | (corners >= len(vertices)))
    if len(bad):
        face = int(np.searchsorted(np.cumsum(lengths), bad[0], side="right"))
        raise MeshFormatError(
            f"OBJ line {line_of(_OBJ_FACE, face)}: vertex index {refs[bad[0]]} out of range"
        )
    return Mesh(vertices, triangulate(lengths, corners))
