"""Headless rendering: the one module that talks to pyrender and OpenGL.

Everything here uses the library's camera convention: the camera sits at the origin and looks
down +z, OpenCV axes (x right, y down, z forward), metres, pinhole intrinsics `K` (3, 3).
pyrender uses OpenGL axes (y up, looking down -z); the conversion happens once, inside
`Renderer`, through the camera pose diag(1, -1, -1).

The OpenGL platform is picked before OpenGL is first imported: `PYOPENGL_PLATFORM` when the
user set it, otherwise EGL when libEGL can be found, otherwise OSMesa.

    rgb, depth = render([(mesh, (0.8, 0.6, 0.5, 1.0))], K, 256, 256)
    with Renderer(256, 256) as r:          # reuse one GL context for many frames
        for ...: rgb, depth = r.render(meshes, K)
"""

from __future__ import annotations

import ctypes.util
import os
from collections.abc import Sequence

import numpy as np

# (mesh, rgba) pairs; rgba None keeps the mesh's own colours (vertex or texture visuals).
MeshList = Sequence[tuple["object", "Sequence[float] | None"]]

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def select_platform() -> str:
    """Choose the headless OpenGL platform and export it as `PYOPENGL_PLATFORM`.

    Must run before anything imports OpenGL (pyrender does on import). Returns the platform.
    """
    chosen = os.environ.get("PYOPENGL_PLATFORM")
    if not chosen:
        chosen = "egl" if ctypes.util.find_library("EGL") else "osmesa"
        os.environ["PYOPENGL_PLATFORM"] = chosen
    return chosen


_PROBE = "import pyrender; r = pyrender.OffscreenRenderer(8, 8); r.delete()"


def headless_platform(candidates: Sequence[str] = ("egl", "osmesa")) -> str | None:
    """For code that imports pyrender on its own (the mesh-to-sdf package): export the first
    OpenGL platform of `candidates` that can render here, before OpenGL is imported.

    PyOpenGL binds its platform once, at import, so each candidate is tried in a child
    process. Nothing is chosen when the user set `PYOPENGL_PLATFORM`, when a display is
    available (pyrender then uses it), or when OpenGL is already imported (too late to
    choose). Returns the platform exported, or None. Raises RuntimeError when none works.
    """
    import subprocess
    import sys

    if os.environ.get("PYOPENGL_PLATFORM"):
        return None
    if "OpenGL" in sys.modules or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    for name in candidates:
        env = {**os.environ, "PYOPENGL_PLATFORM": name}
        try:
            ok = subprocess.run(
                [sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=120
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if ok.returncode == 0:
            os.environ["PYOPENGL_PLATFORM"] = name
            return name
    raise RuntimeError(
        "no display and no headless OpenGL platform works here (tried "
        f"{', '.join(candidates)}): install EGL (libegl1, libegl-mesa0) or OSMesa "
        "(libosmesa6), or set PYOPENGL_PLATFORM"
    )


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-frame points.

    points: (N, 3) camera frame (OpenCV axes), K: (3, 3). Returns pixel coordinates (N, 2),
    x to the right and y down, pixel centres at integer coordinates (OpenCV convention).
    Works for torch tensors too (any array type with `@` and slicing).
    """
    uvw = points @ K.T
    return uvw[..., :2] / uvw[..., 2:3]


class Renderer:
    """An offscreen pyrender renderer of a fixed image size, reusable across frames.

    One live instance per process (EGL contexts do not nest well): `delete()` it, or use it
    as a context manager, before making another.

    light_intensity: directional light (at the camera, pointing along +z) in pyrender units;
    ambient: ambient light level in [0, 1]; bg_color: RGB(A) background in [0, 1].
    """

    def __init__(
        self,
        width: int,
        height: int,
        light_intensity: float = 3.0,
        ambient: float = 0.3,
        bg_color: Sequence[float] = (1.0, 1.0, 1.0),
        znear: float = 0.01,
        zfar: float = 100.0,
    ) -> None:
        select_platform()
        import pyrender

        self._pyrender = pyrender
        self.width, self.height = int(width), int(height)
        self.light_intensity = float(light_intensity)
        self.ambient = float(ambient)
        bg = list(bg_color) + [1.0] * (4 - len(bg_color))
        self.bg_color = np.asarray(bg[:4], dtype=np.float32)
        self.znear, self.zfar = float(znear), float(zfar)
        self._renderer = pyrender.OffscreenRenderer(self.width, self.height)

    def render(
        self, meshes: MeshList, K: np.ndarray, smooth: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Render meshes given in the camera frame.

        meshes: list of (trimesh.Trimesh, rgba or None) in camera coordinates (OpenCV axes).
        K: (3, 3) intrinsics for this image size. Returns rgb (H, W, 3) uint8 and depth
        (H, W) float32: the camera-frame z of the visible surface in metres, 0 where empty.
        Colour is 4x multisampled; depth is one of those samples (GL's MSAA resolve), so a
        depth mask's edge can sit up to ~0.4 px from where the pixel centre would put it.
        """
        pr = self._pyrender
        K = np.asarray(K, dtype=np.float64)
        scene = pr.Scene(
            bg_color=self.bg_color, ambient_light=np.full(3, self.ambient, dtype=np.float32)
        )
        for mesh, rgba in meshes:
            material = None
            if rgba is not None:
                # floats: pyrender reads integer colours as 0-255
                c = [float(x) for x in rgba] + [1.0] * (4 - len(rgba))
                material = pr.MetallicRoughnessMaterial(
                    baseColorFactor=c[:4],
                    metallicFactor=0.0,
                    roughnessFactor=0.7,
                    alphaMode="BLEND" if c[3] < 1.0 else "OPAQUE",
                )
            scene.add(pr.Mesh.from_trimesh(mesh, material=material, smooth=smooth))
        # pyrender puts cx at a pixel edge; OpenCV puts pixel centres at integer coordinates
        camera = pr.IntrinsicsCamera(
            fx=K[0, 0],
            fy=K[1, 1],
            cx=K[0, 2] + 0.5,
            cy=K[1, 2] + 0.5,
            znear=self.znear,
            zfar=self.zfar,
        )
        scene.add(camera, pose=_GL_TO_CV)
        if self.light_intensity > 0:
            scene.add(
                pr.DirectionalLight(color=np.ones(3), intensity=self.light_intensity),
                pose=_GL_TO_CV,
            )
        color, depth = self._renderer.render(scene)
        return np.ascontiguousarray(color[..., :3], dtype=np.uint8), depth.astype(np.float32)

    def delete(self) -> None:
        """Free the GL context (also done by the context manager)."""
        if self._renderer is not None:
            self._renderer.delete()
            self._renderer = None

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc) -> None:
        self.delete()


def render(
    meshes: MeshList,
    K: np.ndarray,
    width: int,
    height: int,
    light_intensity: float = 3.0,
    bg_color: Sequence[float] = (1.0, 1.0, 1.0),
    ambient: float = 0.3,
    smooth: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one image (a fresh GL context; use `Renderer` to render many).

    meshes: list of (trimesh.Trimesh, rgba or None) in the camera frame (OpenCV axes, metres);
    K: (3, 3). Returns rgb (height, width, 3) uint8 and depth (height, width) float32
    (camera z in metres, 0 where nothing was hit).
    """
    with Renderer(
        width, height, light_intensity=light_intensity, ambient=ambient, bg_color=bg_color
    ) as r:
        return r.render(meshes, K, smooth=smooth)
