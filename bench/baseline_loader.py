"""The training data loader as it was before issue 16 (commit 1ba7aab), frozen here so that
bench_train.py measures the new loader against it in the same run.

Per sample: every field read from the HDF5 file by name (`_BaselineShards.get`, the old
`ShardSet.get`), the image decoded by OpenCV, converted to float, rotated by a float
homography through `grid_sample` and colour-jittered in float (uniform ±45°, brightness /
contrast / saturation ±0.3: the old defaults). Only the bench uses it; do not import it
elsewhere.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _BaselineShards:
    """The old read path over a ShardSet's files: each field looked up by name per sample,
    images decoded by OpenCV; balanced points through the (unchanged) `ShardSet.sample_sdf`."""

    FIELDS = ("K", "joints", "obj_center", "norm_offset", "norm_scale", "frame_idx")

    def __init__(self, shards) -> None:
        self.shards = shards
        self._files = {}

    def __len__(self) -> int:
        return len(self.shards)

    def sample_sdf(self, i, n_hand, n_obj, rng):
        return self.shards.sample_sdf(i, n_hand, n_obj, rng)

    def get(self, i: int, keys: tuple[str, ...]) -> dict:
        import cv2

        s, j, _ = self.shards._locate(i)  # (shard, row, pose-only)
        f = self._files.get(s.path)
        if f is None:
            f = self._files[s.path] = h5py.File(s.path, "r")
        out: dict = {}
        for k in ("sample_id", "seq_id"):
            if k in keys:
                v = f[k][j]
                out[k] = v.decode() if isinstance(v, bytes) else str(v)
        for k in self.FIELDS:
            if k in keys:
                out[k] = f[k][j]
        if "image" in keys:
            data = f["image"][j].tobytes()
            arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
            out["image"] = np.ascontiguousarray(arr[:, :, ::-1])
        return out


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges. rotation_deg: uniform in ±rotation_deg about the optical axis;
    brightness/contrast/saturation: factors uniform in [1 − x, 1 + x]."""

    rotation_deg: float = 45.0
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3


def _rot_z(angle: float) -> np.ndarray:
    """(3, 3) rotation about the camera z axis (the optical axis) by `angle` radians."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def rotate_image(image: torch.Tensor, K: np.ndarray, R: np.ndarray) -> torch.Tensor:
    """Warp an image as if the scene had been rotated by R about the camera centre.

    image: (C, H, W) or (T, C, H, W) float; K: (3, 3); R: (3, 3) rotation of camera-frame
    points (X' = R X). Output pixel u' samples the input at H⁻¹u' with H = K R K⁻¹, so a
    point that projected to u now projects to H u. Pixel centres at integer coordinates;
    outside the input is black.
    """
    squeeze = image.dim() == 3
    img = image[None] if squeeze else image
    _, _, h, w = img.shape
    hinv = K @ R.T @ np.linalg.inv(K)
    v, u = np.meshgrid(
        np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij"
    )
    uv1 = np.stack([u, v, np.ones_like(u)], -1) @ hinv.T  # (H, W, 3)
    src = uv1[..., :2] / uv1[..., 2:3]
    grid = np.empty_like(src)
    grid[..., 0] = (2.0 * src[..., 0] + 1.0) / w - 1.0
    grid[..., 1] = (2.0 * src[..., 1] + 1.0) / h - 1.0
    grid_t = torch.from_numpy(grid.astype(np.float32))[None].expand(img.shape[0], h, w, 2)
    out = F.grid_sample(img, grid_t, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0] if squeeze else out


def colour_jitter(
    image: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig
) -> torch.Tensor:
    """Brightness, contrast and saturation jitter. image: (..., 3, H, W) in [0, 1]; the same
    factors for every frame of a clip."""
    b = rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    s = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    img = image * b
    mean = img.mean(dim=(-3, -2, -1), keepdim=True)
    img = (img - mean) * c + mean
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype).view(3, 1, 1)
    gray = (img * weights).sum(dim=-3, keepdim=True)
    img = (img - gray) * s + gray
    return img.clamp_(0.0, 1.0)


def _image_tensor(image: np.ndarray, K: np.ndarray, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """(H, W, 3) uint8 → (3, size, size) float in [0, 1], and K scaled to match."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    h, w = img.shape[-2:]
    K = K.astype(np.float64).copy()
    if (h, w) != (size, size):
        img = F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        sx, sy = size / w, size / h
        # Pixel centres at integers: u' = (u + 0.5)·s − 0.5.
        K[0] *= sx
        K[1] *= sy
        K[0, 2] += 0.5 * sx - 0.5
        K[1, 2] += 0.5 * sy - 0.5
    return img, K


_ITEM_KEYS = ("sample_id", "image", "K", "joints", "obj_center", "norm_offset", "norm_scale")


def fetch_sample(shards, i: int, keys: tuple[str, ...]) -> dict[str, Any]:
    """Sample i, reading only `keys` when the shard set can (ShardSet.get skips the 40,000
    points and the meshes)."""
    get = getattr(shards, "get", None)
    return get(i, keys=keys) if callable(get) else shards[i]


def _sdf_points(shards, i: int, n_hand: int, n_obj: int, rng) -> tuple[np.ndarray, ...]:
    """Balanced SDF points of sample i: (points (N, 3), sdf_hand (N,), sdf_obj (N,)), unit cube."""
    out = shards.sample_sdf(i, n_hand, n_obj, rng)
    if isinstance(out, dict):
        return out["points"], out["sdf_hand"], out["sdf_obj"]
    return tuple(out)


class GSDFDataset(Dataset):
    """Model samples over a shard set (a `ShardSet` or a path to one).

    Each item is a dict of tensors in the camera frame, metres (docs/contracts.md, "Model
    batch"), without the batch dimension:
      image (3, S, S) float — or (T, 3, S, S) with T = 3 when `video` (frames t−1, t, t+1);
      K (3, 3); joints (21, 3); obj_center (3,); points (N, 3); sdf_hand (N,); sdf_obj (N,)
      with N = n_hand + n_obj (absent when both are 0); plus sample_id (str), index (int).
    Images are in [0, 1] unless `imagenet_norm`, which standardises with ImageNet statistics.
    """

    def __init__(
        self,
        shards: Any,
        n_hand: int = 1000,
        n_obj: int = 1000,
        video: bool = False,
        augment: AugmentConfig | None = None,
        image_size: int = 256,
        imagenet_norm: bool = False,
        seed: int = 0,
    ) -> None:
        self.shards = _BaselineShards(shards)
        self.n_hand, self.n_obj = int(n_hand), int(n_obj)
        self.video = bool(video)
        self.augment = augment
        self.image_size = int(image_size)
        self.imagenet_norm = bool(imagenet_norm)
        self.seed = int(seed)
        self.epoch = 0
        self._neighbours = self._frame_neighbours() if video else None

    def __len__(self) -> int:
        return len(self.shards)

    def set_epoch(self, epoch: int) -> None:
        """Change the random stream (call before each epoch's DataLoader iterator)."""
        self.epoch = int(epoch)

    def _frame_neighbours(self) -> list[tuple[int, int]]:
        """For each sample, the indices of the previous and next frame of its sequence
        (itself at a sequence end)."""
        pairs = []
        for i in range(len(self.shards)):
            s = fetch_sample(self.shards, i, ("seq_id", "frame_idx"))
            pairs.append((str(s["seq_id"]), int(s["frame_idx"])))
        seqs: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, (seq, frame) in enumerate(pairs):
            seqs[str(seq)].append((int(frame), i))
        neighbours = [(i, i) for i in range(len(pairs))]
        for frames in seqs.values():
            frames.sort()
            order = [i for _, i in frames]
            for k, i in enumerate(order):
                neighbours[i] = (order[max(k - 1, 0)], order[min(k + 1, len(order) - 1)])
        return neighbours

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        s = fetch_sample(self.shards, index, _ITEM_KEYS)
        img, K = _image_tensor(s["image"], np.asarray(s["K"]), self.image_size)
        if self.video:
            prev_i, next_i = self._neighbours[index]
            frames = []
            for j in (prev_i, index, next_i):
                if j == index:
                    frames.append(img)
                else:
                    other = fetch_sample(self.shards, j, ("image", "K"))
                    frames.append(
                        _image_tensor(other["image"], np.asarray(other["K"]), self.image_size)[0]
                    )
            img = torch.stack(frames)  # (3, 3, S, S)

        joints = np.asarray(s["joints"], dtype=np.float64)
        obj_center = np.asarray(s["obj_center"], dtype=np.float64)
        item: dict[str, Any] = {}
        points = None
        if self.n_hand + self.n_obj > 0:
            pts, sdf_h, sdf_o = _sdf_points(self.shards, index, self.n_hand, self.n_obj, rng)
            scale = float(s["norm_scale"])
            points = np.asarray(pts, dtype=np.float64) * scale + np.asarray(s["norm_offset"])
            item["sdf_hand"] = torch.from_numpy(np.asarray(sdf_h, dtype=np.float32) * scale)
            item["sdf_obj"] = torch.from_numpy(np.asarray(sdf_o, dtype=np.float32) * scale)

        if self.augment is not None:
            angle = math.radians(rng.uniform(-self.augment.rotation_deg, self.augment.rotation_deg))
            R = _rot_z(angle)
            img = rotate_image(img, K, R)
            joints = joints @ R.T
            obj_center = R @ obj_center
            if points is not None:
                points = points @ R.T
            img = colour_jitter(img, rng, self.augment)

        if self.imagenet_norm:
            mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
            img = (img - mean) / std

        item["image"] = img.contiguous()
        item["K"] = torch.from_numpy(K.astype(np.float32))
        item["joints"] = torch.from_numpy(joints.astype(np.float32))
        item["obj_center"] = torch.from_numpy(obj_center.astype(np.float32))
        if points is not None:
            item["points"] = torch.from_numpy(points.astype(np.float32))
        item["sample_id"] = str(s["sample_id"])
        item["index"] = int(index)
        return item
