"""Objects for the synthetic dataset: procedural shapes and real meshes shipped in PyPI packages.

Two sources, both giving closed (watertight) meshes in metres, centred at their bounding-box
centre, at a size a hand can hold (largest side about 5–20 cm):

- ``"procedural"`` (always available): boxes, cylinders (cans), spheres, bottles (a revolved
  profile) and mugs (a cylinder united with a torus handle through manifold3d, some hollow).
- ``"pybullet"`` (``pip install gsdf-data[objects]``): the modelled and scanned meshes in
  ``pybullet_data`` — the duck, the Stanford bunny, the teddy bear, a torus, a football — and
  its 1,000 procedurally generated "random objects" (only the closed ones are used).

``ObjectLibrary(sources).sample(rng)`` draws one object instance; the same generator state
gives the same instance. ``write_shapenet_model`` writes an instance in the ShapeNetCore.v2
layout (``<class>/<id>/models/model_normalized.obj``: centred, unit bounding-box diagonal) and
returns the scale that the sample's ``affine_transform`` must carry, as ObMan does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gsdf_data.files import atomic_write_text

PROCEDURAL = ("box", "cylinder", "sphere", "bottle", "mug")
PYBULLET_NAMED = {
    "duck": "duck.obj",
    "bunny": "bunny.obj",
    "teddy": "teddy2_VHACD_CHs.obj",
    "torus": "torus/torus_textured.obj",
    "ball": "soccerball.obj",
}
SOURCES = ("procedural", "pybullet")


@dataclass(frozen=True)
class ObjectInstance:
    """One object: ``mesh`` (trimesh.Trimesh, metres, centred at its bounding-box centre,
    closed), its ``category`` (the ShapeNet-like class folder), a stable ``instance_id`` (hex,
    derived from the geometry) and the ``source`` it came from."""

    category: str
    instance_id: str
    source: str
    mesh: object = field(repr=False)


def _centre(mesh):
    mesh.apply_translation(-mesh.bounds.mean(axis=0))
    return mesh


def _instance_id(mesh) -> str:
    h = hashlib.sha1(np.round(np.asarray(mesh.vertices), 6).tobytes())
    h.update(np.asarray(mesh.faces, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def make_procedural(category: str, rng: np.random.Generator):
    """A closed procedural mesh of `category` (one of ``PROCEDURAL``) with random proportions.

    Returns a trimesh.Trimesh in metres, centred at its bounding-box centre, with the long axis
    (for cylinders, bottles, mugs) along z.
    """
    import trimesh

    if category == "box":
        mesh = trimesh.creation.box(extents=rng.uniform([0.03, 0.03, 0.05], [0.07, 0.09, 0.14]))
    elif category == "cylinder":
        r, h = rng.uniform(0.022, 0.042), rng.uniform(0.06, 0.15)
        mesh = trimesh.creation.cylinder(radius=r, height=h, sections=48)
    elif category == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=3, radius=rng.uniform(0.028, 0.05))
    elif category == "bottle":
        r, h = rng.uniform(0.022, 0.036), rng.uniform(0.13, 0.2)
        neck_r = rng.uniform(0.009, 0.014)
        body, shoulder = h * rng.uniform(0.55, 0.65), h * rng.uniform(0.15, 0.2)
        # (radius, z) profile from the bottom centre to the top centre, revolved around z
        profile = np.array(
            [
                [0.0, 0.0],
                [r * 0.96, 0.0],
                [r, 0.004],
                [r, body],
                [neck_r, body + shoulder],
                [neck_r, h - 0.002],
                [neck_r * 0.9, h],
                [0.0, h],
            ]
        )
        mesh = trimesh.creation.revolve(profile, sections=40)
    elif category == "mug":
        r, h = rng.uniform(0.03, 0.045), rng.uniform(0.075, 0.11)
        body = trimesh.creation.cylinder(radius=r, height=h, sections=48)
        major = h * rng.uniform(0.28, 0.36)
        minor = rng.uniform(0.005, 0.008)
        handle = trimesh.creation.torus(
            major_radius=major, minor_radius=minor, major_sections=40, minor_sections=12
        )
        # torus in the x-z plane, its centre just outside the wall so half of it sticks out
        handle.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
        handle.apply_translation([r + major * 0.35, 0.0, 0.0])
        mesh = trimesh.boolean.union([body, handle], engine="manifold")
        if rng.random() < 0.5:
            wall = rng.uniform(0.004, 0.007)
            cavity = trimesh.creation.cylinder(radius=r - wall, height=h, sections=48)
            cavity.apply_translation([0.0, 0.0, wall])
            mesh = trimesh.boolean.difference([mesh, cavity], engine="manifold")
    else:
        raise ValueError(f"unknown procedural object {category!r}; choose from {PROCEDURAL}")
    return _centre(mesh)


def _pybullet_root() -> Path | None:
    try:
        import pybullet_data
    except ImportError:
        return None
    return Path(pybullet_data.getDataPath())


def pybullet_available() -> bool:
    """Whether the ``pybullet`` source can be used (the package is installed)."""
    return _pybullet_root() is not None


def _load_closed(path: Path):
    """Load a mesh file as one closed trimesh (texture seams welded, convex pieces united);
    None when it cannot be made closed."""
    import trimesh

    mesh = trimesh.load(path, force="mesh")
    mesh = trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), process=True)
    mesh.merge_vertices(digits_vertex=6)
    if mesh.body_count > 1:
        try:
            mesh = trimesh.boolean.union(mesh.split(only_watertight=False), engine="manifold")
        except Exception:
            return None
    if not mesh.is_volume or len(mesh.faces) < 8:
        return None
    return mesh


class ObjectLibrary:
    """Draws object instances from the chosen sources.

    sources: subset of ``SOURCES``; ``"pybullet"`` needs the pybullet package (a clear error
    names the extra to install). Real meshes are loaded lazily and cached per library.
    """

    def __init__(self, sources: tuple[str, ...] | list[str] = ("procedural",)) -> None:
        sources = tuple(dict.fromkeys(sources))
        unknown = set(sources) - set(SOURCES)
        if unknown or not sources:
            raise ValueError(f"unknown object source(s) {sorted(unknown)}; choose from {SOURCES}")
        self.sources = sources
        self._real: list[tuple[str, Path]] = []
        self._cache: dict[Path, object] = {}
        if "pybullet" in sources:
            root = _pybullet_root()
            if root is None:
                raise ValueError(
                    "object source 'pybullet' needs the pybullet package: "
                    "pip install 'gsdf-data[objects]'"
                )
            self._real = [(name, root / rel) for name, rel in PYBULLET_NAMED.items()]
            self._real += [("random", p) for p in sorted(root.glob("random_urdfs/*/*.obj"))]

    @classmethod
    def from_option(cls, option: str) -> ObjectLibrary:
        """From a CLI value: ``procedural``, ``pybullet``, ``all`` (both) or ``auto`` (both
        when pybullet is installed, else procedural)."""
        if option == "auto":
            return cls(("procedural", "pybullet") if pybullet_available() else ("procedural",))
        if option == "all":
            return cls(("procedural", "pybullet"))
        return cls(tuple(s.strip() for s in option.split(",") if s.strip()))

    def sample(self, rng: np.random.Generator) -> ObjectInstance:
        """Draw one instance: the source uniformly among the library's sources, then a category
        (procedural) or a mesh (real, the named meshes as likely as all random shapes)."""
        source = self.sources[int(rng.integers(len(self.sources)))]
        if source == "procedural":
            category = PROCEDURAL[int(rng.integers(len(PROCEDURAL)))]
            mesh = make_procedural(category, rng)
            return ObjectInstance(category, _instance_id(mesh), source, mesh)
        n_named = len(PYBULLET_NAMED)
        for _ in range(20):
            if rng.random() < 0.5:
                category, path = self._real[int(rng.integers(n_named))]
            else:
                category, path = self._real[n_named + int(rng.integers(len(self._real) - n_named))]
            if path not in self._cache:
                self._cache[path] = _load_closed(path)
            base = self._cache[path]
            if base is not None:
                break
        else:
            raise RuntimeError("no closed mesh found among the pybullet objects")
        mesh = base.copy()
        mesh.apply_translation(-mesh.bounds.mean(axis=0))
        mesh.apply_scale(rng.uniform(0.07, 0.14) / float(mesh.extents.max()))
        return ObjectInstance(category, _instance_id(mesh), source, mesh)


def write_shapenet_model(instance: ObjectInstance, shapenet_root: Path) -> tuple[Path, float]:
    """Write `instance` as ``<root>/<category>/<instance_id>/models/model_normalized.obj``.

    The file holds the mesh centred with a unit bounding-box diagonal (ShapeNetCore.v2's
    normalisation). Returns (path, scale): metric vertices = scale · file vertices. Skips the
    write when the file already exists (instances are shared between samples).
    """
    path = Path(shapenet_root) / instance.category / instance.instance_id / "models"
    path = path / "model_normalized.obj"
    mesh = instance.mesh
    scale = float(np.linalg.norm(mesh.extents))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        verts = (np.asarray(mesh.vertices) - mesh.bounds.mean(axis=0)) / scale
        atomic_write_text(path, obj_text(verts, np.asarray(mesh.faces)))
    return path, scale


def obj_text(verts: np.ndarray, faces: np.ndarray) -> str:
    """Wavefront OBJ text for verts (V,3) and 0-based faces (F,3)."""
    lines = ["# gsdf synthetic object"]
    lines += [f"v {x:.7f} {y:.7f} {z:.7f}" for x, y, z in verts]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    return "\n".join(lines) + "\n"
