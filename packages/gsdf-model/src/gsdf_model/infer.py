"""`gsdf-infer`: meshes, joints and an overlay for each of a user's images.

For every input image (files, or folders of images taken in name order, e.g. video frames)
it writes, in the layout `gsdf-train reconstruct` writes (so `gsdf-eval run` reads it too):

    OUT/<stem>_hand.ply  OUT/<stem>_obj.ply   meshes in the original image's camera frame, m
    OUT/<stem>.json                           joints (21×3), obj_center, intrinsics used and
                                              where they came from, crop box, image path
    OUT/<stem>_overlay.png                    meshes over the input | side view

For the video presets the images are one sequence in the given order: frame t is predicted
with frames t−1 and t+1 (its own at the sequence's ends, as in training).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gsdf_model.predict import DEFAULT_FOV_DEG, Predictor, default_intrinsics, read_image
from gsdf_model.reconstruct import write_sample
from gsdf_model.runtime import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Intrinsics:
    """What the user said about the camera: focal lengths and principal point in pixels of
    the original image; unset values come from the image size (principal point at the
    centre, fy = fx) or, without fx, from `fov_deg` across the longer side."""

    fx: float | None = None
    fy: float | None = None
    cx: float | None = None
    cy: float | None = None
    fov_deg: float = DEFAULT_FOV_DEG

    def matrix(self, width: int, height: int) -> np.ndarray:
        if self.fx is None:
            if self.fy is not None:
                raise UserError("--fy needs --fx")
            K = default_intrinsics(width, height, self.fov_deg)
        else:
            fy = self.fx if self.fy is None else self.fy
            if self.fx <= 0 or fy <= 0:
                raise UserError(f"focal lengths must be positive (fx {self.fx:g}, fy {fy:g})")
            K = np.array([[self.fx, 0.0, 0.0], [0.0, fy, 0.0], [0.0, 0.0, 1.0]])
            K[0, 2], K[1, 2] = (width - 1) / 2.0, (height - 1) / 2.0
        if self.cx is not None:
            K[0, 2] = self.cx
        if self.cy is not None:
            K[1, 2] = self.cy
        return K

    def describe(self) -> str:
        """One line for the user: where the focal length came from."""
        if self.fx is None:
            return (
                f"no --fx given: assumed a {self.fov_deg:g}° field of view across the longer "
                "side (meshes scale along the viewing rays with the true focal length)"
            )
        return "intrinsics as given"


def _natural_key(path: Path) -> list[Any]:
    """frame_2 before frame_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files named, folders expanded to their images in name order."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(
                (f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()),
                key=_natural_key,
            )
            if not files:
                raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {str(p)!r}")
            found += files
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"no such image or folder: {str(p)!r}")
    if not found:
        raise UserError("no input images given")
    return found


def parse_box(text: str) -> tuple[float, float, float, float]:
    """'x0,y0,x1,y1' → four floats (a UserError otherwise)."""
    try:
        vals = [float(v) for v in str(text).replace(" ", "").split(",")]
    except ValueError:
        vals = []
    if len(vals) != 4:
        raise UserError(f"a box is x0,y0,x1,y1 in pixels, not {text!r}")
    return tuple(vals)


def load_boxes(path: str | Path, images: Sequence[Path]) -> list[tuple[float, ...] | None]:
    """Boxes from a JSON file: a list (one box per image, in order) or an object keyed by
    file name or path (a missing image is an error; null means the centre square)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read boxes from {str(path)!r}: {err}") from None

    def one(v: Any) -> tuple[float, ...] | None:
        if v is None:
            return None
        if isinstance(v, str):
            return parse_box(v)
        return parse_box(",".join(map(str, v))) if isinstance(v, list) else parse_box(repr(v))

    if isinstance(data, list):
        if len(data) != len(images):
            raise UserError(f"{str(path)!r} has {len(data)} boxes for {len(images)} images")
        return [one(v) for v in data]
    if not isinstance(data, dict):
        raise UserError(f"{str(path)!r} must hold a list of boxes or an object of them")
    boxes = []
    for img in images:
        for key in (str(img), img.name, img.stem):
            if key in data:
                boxes.append(one(data[key]))
                break
        else:
            raise UserError(f"{str(path)!r} has no box for {img.name!r}")
    return boxes


def _stems(images: Sequence[Path]) -> list[str]:
    """Output stems: the file stems, with the parent folder prepended where two collide."""
    stems = [p.stem for p in images]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{p.parent.name}_{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in images]


def infer(
    inputs: Sequence[str | Path],
    checkpoint: str | Path,
    out: str | Path,
    boxes: Sequence[Sequence[float] | None] | None = None,
    intrinsics: Intrinsics = Intrinsics(),
    device: str = "cpu",
    resolution: int = 64,
    mano: str | Path | None = None,
    overlay: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every image of `inputs` (see the module docstring); returns a summary dict
    {"written", "out", "intrinsics", "seconds_per_image", "empty_hand", "empty_obj"}.

    boxes: one box (x0, y0, x1, y1) per image (None: the centre square), or one for all.
    mano: the MANO file the checkpoint was trained with (see `Predictor.load`).
    """
    images = list_images(inputs)
    if boxes is None:
        boxes = [None] * len(images)
    boxes = list(boxes)
    if len(boxes) == 1 and len(images) > 1:
        boxes = boxes * len(images)
    if len(boxes) != len(images):
        raise UserError(f"{len(boxes)} boxes for {len(images)} images (give one, or one each)")
    predictor = Predictor.load(checkpoint, device=device, resolution=resolution, mano=mano)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stems = _stems(images)
    summary = {"written": 0, "out": str(out), "intrinsics": intrinsics.describe()}
    summary |= {"empty_hand": 0, "empty_obj": 0, "seconds_per_image": 0.0}
    video = predictor.n_frames == 3
    order = range(len(images))
    if progress:
        from tqdm.auto import tqdm

        order = tqdm(order, desc="infer", unit="image", dynamic_ncols=True, disable=None)
    cache: dict[int, np.ndarray] = {}

    def pixels(i: int) -> np.ndarray:
        # a video frame is read once for its three predictions, and only three are held
        if i not in cache:
            if len(cache) >= 3:
                cache.pop(min(cache))
            cache[i] = read_image(images[i])
        return cache[i]

    spent, start = 0.0, time.perf_counter()
    for i in order:
        image = pixels(i)
        h, w = image.shape[:2]
        K = intrinsics.matrix(w, h)
        if video:
            idx = [max(i - 1, 0), i, min(i + 1, len(images) - 1)]
            frames, frame_boxes = [pixels(j) for j in idx], [boxes[j] for j in idx]
            if any(f.shape != image.shape for f in frames):
                raise UserError(f"frames around {images[i].name!r} differ in size")
            t0 = time.perf_counter()
            pred = predictor(frames, bbox=frame_boxes, K=K)
        else:
            t0 = time.perf_counter()
            pred = predictor(image, bbox=boxes[i], K=K)
        spent += time.perf_counter() - t0
        extra = {
            "image": str(images[i]),
            "image_size": list(pred.image_size),
            "K": pred.K.tolist(),
            "intrinsics": intrinsics.describe(),
            "crop_box": pred.crop_box.tolist(),
            "wrist": "predicted",
            "empty_hand": pred.hand is None,
            "empty_obj": pred.obj is None,
        }
        hand, obj = pred.hand, pred.obj
        # no surface: an empty mesh keeps the layout, and the json says so
        empty = (np.zeros((0, 3)), np.zeros((0, 3), np.int64))
        summary["empty_hand"] += hand is None
        summary["empty_obj"] += obj is None
        if overlay:
            from gsdf_model.overlay import write_overlay

            write_overlay(out / f"{stems[i]}_overlay.png", image, pred)
        write_sample(
            out, stems[i], hand or empty, obj or empty, pred.joints, pred.obj_center, extra
        )
        summary["written"] += 1
    summary["seconds_per_image"] = spent / len(images)
    summary["seconds_per_image_with_output"] = (time.perf_counter() - start) / len(images)
    summary["device"] = str(predictor.device)
    return summary
