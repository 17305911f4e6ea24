"""A picture of a prediction: meshes rendered headless over the input, and a side view.

Three panels side by side: the input image (scaled so its height is `height`); the same with
the hand (skin) and the object (blue) rendered through the image's own camera, and the 21
predicted joints as dots; a square side view of the same meshes, turned 90° about the vertical axis
through their centre and seen through the crop's camera, so depth errors that the front
view hides (a hand too far, an object behind the palm) show.

`compare_folders` draws, for samples of a shard set, the input beside the meshes of several
reconstruction folders (ground truth, methods) rendered over it: the demo's and the study's
figures.
"""

from __future__ import annotations

import numpy as np

from gsdf_model.predict import Prediction

HAND_RGBA = (0.95, 0.50, 0.30, 1.0)  # saturated: must stand out from skin in the input
OBJ_RGBA = (0.35, 0.55, 0.90, 1.0)
SIDE_BACKGROUND = (0.16, 0.16, 0.18)


def scale_intrinsics(K: np.ndarray, s: float) -> np.ndarray:
    """K for an image resized by factor s (pixel centres at integers: u' = (u + 0.5)·s − 0.5)."""
    out = np.asarray(K, np.float64).copy()
    out[:2] *= s
    out[:2, 2] += 0.5 * s - 0.5
    return out


def _meshes(pred: Prediction, transform: np.ndarray | None = None) -> list:
    import trimesh

    out = []
    for part, rgba in ((pred.hand, HAND_RGBA), (pred.obj, OBJ_RGBA)):
        if part is None:
            continue
        v = np.asarray(part[0], np.float64)
        if transform is not None:
            v = v @ transform[:3, :3].T + transform[:3, 3]
        out.append((trimesh.Trimesh(v, np.asarray(part[1]), process=False), rgba))
    return out


def _side_transform(pred: Prediction) -> np.ndarray:
    """4×4 rigid map: 90° about the camera's vertical (y) axis through the meshes' centre."""
    parts = [np.asarray(p[0]) for p in (pred.hand, pred.obj) if p is not None]
    c = np.concatenate(parts).mean(0) if parts else pred.joints.mean(0)
    R = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, c - R @ c
    return T


def render_overlay(image: np.ndarray, pred: Prediction, height: int = 384) -> np.ndarray:
    """(height, 2·W + height, 3) uint8: the input | the meshes over it | the side view."""
    import cv2

    from gsdf_data.render import Renderer, project

    h, w = image.shape[:2]
    s = height / h
    width = max(1, round(w * s))
    plain = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    K = scale_intrinsics(pred.K, s)
    # the crop's camera, at the panel's size: the side view is framed on the hand
    x0, y0, side = pred.crop_box[0], pred.crop_box[1], pred.crop_box[2]
    A = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    K_side = scale_intrinsics(A @ pred.K, height / side)
    with Renderer(width, height, bg_color=(0.0, 0.0, 0.0)) as r:
        rgb, depth = r.render(_meshes(pred), K)
    mask = (depth > 0)[..., None]
    front = np.where(mask, (0.8 * rgb + 0.2 * plain).astype(np.uint8), plain)
    uv = project(pred.joints, K)
    for u, v in uv[np.isfinite(uv).all(1)]:
        cv2.circle(front, (round(u), round(v)), max(2, height // 128), (255, 220, 0), -1)
    with Renderer(height, height, bg_color=SIDE_BACKGROUND) as r:
        side_rgb, _ = r.render(_meshes(pred, _side_transform(pred)), K_side)
    return np.concatenate([plain, front, side_rgb], axis=1)


def write_overlay(path, image: np.ndarray, pred: Prediction, height: int = 384) -> None:
    """Render the overlay to a PNG at `path` (written to a temporary name, then renamed)."""
    from PIL import Image

    from gsdf_data.files import atomic_write

    with atomic_write(path) as tmp:
        Image.fromarray(render_overlay(image, pred, height)).save(tmp)


def compare_folders(shards, indices, folders) -> np.ndarray:
    """One row per sample index of the shard set `shards`: the input image, then for each
    folder (reconstruct / export-gt layout) its hand (skin) and object (blue) meshes rendered
    through the sample's camera over the dimmed input. Returns the picture (uint8 RGB)."""
    import trimesh

    from gsdf_data.render import Renderer
    from gsdf_data.shards import ShardSet
    from gsdf_model.reconstruct import file_stem

    colours = {"hand": (0.85, 0.65, 0.55, 1.0), "obj": OBJ_RGBA}
    rows = []
    with ShardSet(shards) as ss:
        for i in indices:
            s = ss.get(i, keys=("sample_id", "image", "K"))
            stem = file_stem(s["sample_id"])
            image = np.asarray(s["image"])
            h, w = image.shape[:2]
            panels = [image]
            with Renderer(w, h, bg_color=(0.0, 0.0, 0.0)) as r:
                for folder in folders:
                    meshes = [
                        (trimesh.load(folder / f"{stem}_{part}.ply", force="mesh"), rgba)
                        for part, rgba in colours.items()
                    ]
                    rgb, depth = r.render(meshes, s["K"])
                    mask = (depth > 0)[..., None]
                    panels.append(np.where(mask, rgb, (image * 0.35).astype(np.uint8)))
            rows.append(np.concatenate(panels, axis=1))
    return np.concatenate(rows, axis=0)
