"""Hand and object meshes from one's own image: no ground truth, only a checkpoint.

`Predictor` owns the step from an arbitrary RGB image (any size, any camera) to meshes and
joints in that image's camera frame:

1. the crop, as training does: a square around the hand box grown like the DexYCB crop
   (`gsdf_data.datasets.dexycb.crop_box`: 10 px margin, squared, ×1.25), or, without a box,
   the centre square of the image (the whole frame of an ObMan-style 256×256 image);
2. the crop's intrinsics K_crop = A·K, A the crop's pixel map. The crop is a scale and shift
   of pixels, not a rotation, so the camera frame does not change and everything the network
   returns is already in the original image's camera frame;
3. the wrist from the network's own root-depth and keypoint prediction (`encode(wrist=None)`),
   which sets the SDF frame;
4. two-pass marching cubes on the decoded SDFs (`gsdf_model.reconstruct.extract_surface`).

Without intrinsics a default field of view is assumed (`default_intrinsics`); a wrong focal
length moves the prediction along the viewing rays (the root depth scales with it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gsdf_model.reconstruct import MeshingConfig, extract_surface
from gsdf_model.runtime import (
    UserError,
    is_video,
    load_checkpoint_file,
    model_from_checkpoint,
    parse_device,
)

# Across the longer image side; a typical phone or webcam main camera is 60-70 degrees.
DEFAULT_FOV_DEG = 60.0

Mesh = tuple[np.ndarray, np.ndarray]  # verts (V, 3) camera frame metres, faces (F, 3)
ImageLike = Any  # path, (H, W, 3) uint8 RGB array, or PIL image


def default_intrinsics(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    """(3, 3) pinhole K with `fov_deg` across the longer side, square pixels, principal point
    at the image centre (pixel centres at integer coordinates)."""
    if not 0.0 < fov_deg < 180.0:
        raise UserError(f"field of view must be in (0, 180) degrees, not {fov_deg:g}")
    f = 0.5 * max(width, height) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array(
        [[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]], np.float64
    )


def read_image(image: ImageLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a path, an array (grey, RGB or RGBA) or a PIL image; a
    UserError naming the file when it cannot be read."""
    if isinstance(image, str | Path):
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(image) as im:
                # phones store portrait shots sideways plus an EXIF turn: boxes and intrinsics
                # refer to the picture as shown, so turn it the same way
                return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise UserError(f"cannot read image {str(image)!r}: {err}") from None
    if hasattr(image, "convert"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise UserError(f"an image must be (H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def crop_square(bbox: Sequence[float] | None, width: int, height: int) -> np.ndarray:
    """The square crop (x0, y0, side, side) in original pixels for a hand box
    (x0, y0, x1, y1), grown as training grows DexYCB's box; the centre square without one.
    A box that is empty or does not overlap the image is a UserError."""
    if bbox is None:
        side = float(min(width, height))
        return np.array([(width - side) / 2.0, (height - side) / 2.0, side, side])
    from gsdf_data.datasets.dexycb import crop_box

    x0, y0, x1, y1 = (float(v) for v in bbox)
    if not all(map(math.isfinite, (x0, y0, x1, y1))) or x1 <= x0 or y1 <= y0:
        raise UserError(f"box {x0:g},{y0:g},{x1:g},{y1:g} is empty (need x0 < x1 and y0 < y1)")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise UserError(f"box {x0:g},{y0:g},{x1:g},{y1:g} lies outside the {width}×{height} image")
    return crop_box(np.array([[x0, y0], [x1, y1]]))


def crop(image: np.ndarray, box: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(size, size, 3) crop of `image` for box (x0, y0, w, h), and A (3, 3) mapping original
    pixels to crop pixels (K_crop = A @ K); outside the image is black, as in training."""
    from gsdf_data.datasets.dexycb import crop_image

    return crop_image(image, box, size)


@dataclass(frozen=True)
class Prediction:
    """What the network sees in one image, in that image's camera frame (OpenCV axes, metres).

    hand, obj: (verts (V, 3), faces (F, 3)) or None where the network put no surface;
    joints (21, 3); obj_center (3,); K (3, 3) the intrinsics used; crop_box (x0, y0, w, h)
    in original pixels; image_size (width, height).
    """

    hand: Mesh | None
    obj: Mesh | None
    joints: np.ndarray
    obj_center: np.ndarray
    K: np.ndarray
    crop_box: np.ndarray
    image_size: tuple[int, int]

    @property
    def wrist(self) -> np.ndarray:
        return self.joints[0]


@dataclass(frozen=True)
class Predictor:
    """A trained network ready for images. `Predictor.load(checkpoint)` builds one;
    `predictor(image, bbox=..., K=...)` returns a `Prediction`.

    meshing: marching-cubes settings (the first pass spans the network's SDF cube around
    the predicted wrist).
    """

    net: torch.nn.Module
    cfg: Any
    device: torch.device
    meshing: MeshingConfig = field(default_factory=MeshingConfig)

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        device: str | torch.device = "cpu",
        resolution: int = 64,
        component: str = "anchored",
        mano: str | Path | None = None,
    ) -> Predictor:
        """A predictor from a training checkpoint (RUN/last.pt or RUN/). resolution: grid
        points per axis in each marching-cubes pass; component: "anchored" (the surface at
        the prediction) or "largest" (the reference's choice); mano: where the MANO file the
        checkpoint was trained with is on this machine (default: the path it recorded)."""
        if resolution < 8:
            raise UserError(f"resolution {resolution} is too small (at least 8)")
        if component not in ("largest", "anchored"):
            raise UserError(f"component must be 'largest' or 'anchored', not {component!r}")
        device = parse_device(device)
        ckpt = load_checkpoint_file(checkpoint)
        try:
            net, cfg = model_from_checkpoint(ckpt, mano_path=mano)
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            # torch lists every mismatched tensor on its own line: the first says enough
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            detail = " ".join(lines[:2]) + (
                f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
            )
            raise UserError(
                f"checkpoint {str(checkpoint)!r} does not fit this version's model: {detail}"
            ) from None
        if int(ckpt.get("stage", 2)) < 2:
            raise UserError(
                f"checkpoint {str(checkpoint)!r} finished only the pose stage; "
                "meshes need the SDF stage (train further)"
            )
        scale = getattr(cfg, "recon_scale", None)
        extent = 2.0 / float(scale) if scale else 0.3
        meshing = MeshingConfig(resolution=int(resolution), extent=extent, component=component)
        return cls(net=net.to(device), cfg=cfg, device=device, meshing=meshing)

    @property
    def n_frames(self) -> int:
        """Frames per prediction: 3 (t−1, t, t+1) for the video presets, else 1."""
        return 3 if is_video(self.cfg) else 1

    def _frames(self, image: Any, bbox: Any) -> tuple[list[np.ndarray], list[Any]]:
        """The frames (t−1, t, t+1 for video presets; frame t alone otherwise) and a box each."""
        many = isinstance(image, list | tuple)
        images = [read_image(im) for im in image] if many else [read_image(image)]
        if len(images) not in (1, self.n_frames):
            raise UserError(f"give 1 or {self.n_frames} frames, not {len(images)}")
        per_frame = bbox is not None and len(bbox) > 0 and not np.isscalar(bbox[0])
        boxes = list(bbox) if per_frame else [bbox] * len(images)
        if len(boxes) != len(images):
            raise UserError(f"{len(boxes)} boxes for {len(images)} frames")
        if len(images) == 1 and self.n_frames == 3:
            # a single frame stands in for its neighbours, as at a sequence's ends in training
            images, boxes = images * 3, boxes * 3
        return images, boxes

    @torch.no_grad()
    def __call__(
        self,
        image: ImageLike | Sequence[ImageLike],
        bbox: Sequence[float] | Sequence[Sequence[float]] | None = None,
        K: np.ndarray | None = None,
    ) -> Prediction:
        """Meshes and joints for one image.

        image: a path, (H, W, 3) uint8 RGB array or PIL image; for the video presets also
        the frames [t−1, t, t+1] (a single frame stands in for its neighbours).
        bbox: the hand (and held object) box x0, y0, x1, y1 in pixels, or one per frame;
        None: the centre square. K: (3, 3) intrinsics of the original image, or None for
        `default_intrinsics` (DEFAULT_FOV_DEG).
        """
        images, boxes = self._frames(image, bbox)
        mid = len(images) // 2
        h, w = images[mid].shape[:2]
        if K is None:
            K = default_intrinsics(w, h)
        K = np.asarray(K, np.float64)
        if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise UserError("K must be a 3×3 intrinsics matrix with positive focal lengths")
        size = int(getattr(self.cfg, "image_size", 256))
        crops, A_mid, box_mid = [], None, None
        for i, (im, b) in enumerate(zip(images, boxes, strict=True)):
            box = crop_square(b, im.shape[1], im.shape[0])
            patch, A = crop(im, box, size)
            crops.append(torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1))
            if i == mid:
                A_mid, box_mid = A, box
        pixels = torch.stack(crops).float().div_(255.0)  # (T, 3, S, S) in [0, 1]
        pixels = pixels[None] if len(crops) > 1 else pixels  # (1, T, 3, S, S) or (1, 3, S, S)
        K_crop = torch.from_numpy((A_mid @ K).astype(np.float32))[None]
        net, dev = self.net, self.device
        state = net.encode(pixels.to(dev), K_crop.to(dev), wrist=None)
        joints = state.joints[0].float().cpu().numpy().astype(np.float64)
        obj_center = state.obj_center[0].float().cpu().numpy().astype(np.float64)
        chunk = self.meshing.chunk

        def sdf_fn(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            hs, os_ = [], []
            for s in range(0, len(points), chunk):
                p = torch.from_numpy(points[s : s + chunk].astype(np.float32))[None].to(dev)
                sh, so = net.query(state, p)
                hs.append(sh[0].float().cpu().numpy())
                os_.append(so[0].float().cpu().numpy())
            return np.concatenate(hs), np.concatenate(os_)

        hand, obj = extract_surface(
            sdf_fn, joints[0], self.meshing, anchors=(joints[0], obj_center)
        )
        return Prediction(
            hand=hand,
            obj=obj,
            joints=joints,
            obj_center=obj_center,
            K=K,
            crop_box=np.asarray(box_mid, np.float64),
            image_size=(int(w), int(h)),
        )
