"""Rendering of the synthetic dataset: a sequence's look (skin tone, object colour, lighting,
background) and its frames rendered headless (`gsdf_data.render`) to SIZE×SIZE RGB and
depth, with the hand and the object alone as extra depth layers when asked."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SIZE = 256
SKIN_TONES = np.array(
    [
        [0.96, 0.80, 0.69],
        [0.92, 0.73, 0.60],
        [0.80, 0.60, 0.46],
        [0.63, 0.45, 0.33],
        [0.45, 0.31, 0.22],
        [0.98, 0.86, 0.77],
    ]
)


@dataclass(frozen=True)
class Look:
    """What a sequence looks like: skin (3,) and obj_rgb (3,) colours in [0, 1], light
    intensity, ambient share, bg (SIZE,SIZE,3) uint8 background."""

    skin: np.ndarray
    obj_rgb: np.ndarray
    light: float
    ambient: float
    bg: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Look:
        skin = np.clip(SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1), 0, 1)
        obj_rgb = rng.uniform(0.05, 0.95, 3)
        light = rng.uniform(1.5, 4.5)
        ambient = rng.uniform(0.15, 0.45)
        return cls(skin, obj_rgb, light, ambient, background(rng))


def background(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A random smooth background (size,size,3) uint8: a two-colour gradient with
    low-frequency colour noise and, sometimes, stripes."""
    import cv2

    grey = rng.uniform(0.2, 0.8)
    c0 = 0.5 * grey + 0.5 * rng.uniform(0, 1, 3)  # muted colours
    c1 = 0.5 * grey + 0.5 * rng.uniform(0, 1, 3)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    w = np.clip(0.5 + (xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang), 0, 1)[..., None]
    img = (1 - w) * c0 + w * c1
    noise = rng.uniform(-0.15, 0.15, (int(rng.integers(3, 9)),) * 2 + (3,))
    img = img + cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.3:
        period = rng.uniform(8, 40)
        img = (
            img
            + 0.12
            * np.sign(np.sin((xx * np.cos(ang) - yy * np.sin(ang)) * size / period))[..., None]
        )
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def get_renderer():
    """This process's renderer (one GL context per process)."""
    from gsdf_data.render import Renderer

    return Renderer(SIZE, SIZE, bg_color=(0.0, 0.0, 0.0))


def _mesh(verts: np.ndarray, faces: np.ndarray, smooth_angle: float | None = None):
    import trimesh

    mesh = trimesh.Trimesh(verts, faces, process=False)
    if smooth_angle is not None:
        mesh = trimesh.graph.smooth_shade(mesh, angle=np.radians(smooth_angle))
    return mesh


def render_frame(
    renderer,
    look: Look,
    hand: tuple[np.ndarray, np.ndarray],
    obj: tuple[np.ndarray, np.ndarray],
    K: np.ndarray,
    layers: bool = True,
):
    """Render the hand and the object, each (verts (V,3), faces (F,3)) in the camera frame,
    with intrinsics K (3,3). Returns rgb (SIZE,SIZE,3) uint8 over the look's background,
    depth, hand_depth, obj_depth (SIZE,SIZE) float32 metres (0: nothing; the last two None
    without `layers`)."""
    renderer.light_intensity, renderer.ambient = look.light, look.ambient
    hand_m = _mesh(*hand)
    obj_m = _mesh(*obj, smooth_angle=30.0)
    skin, obj_rgb = (*look.skin, 1.0), (*look.obj_rgb, 1.0)
    rgb, depth = renderer.render([(hand_m, skin), (obj_m, obj_rgb)], K)
    hd = od = None
    if layers:
        _, hd = renderer.render([(hand_m, skin)], K)
        _, od = renderer.render([(obj_m, obj_rgb)], K)
    rgb = np.where((depth > 0)[..., None], rgb, look.bg)
    return rgb, depth, hd, od
