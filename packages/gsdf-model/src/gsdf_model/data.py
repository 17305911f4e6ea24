"""Training and inference samples for the gSDF network, read from shards.

Owns the step from a shard sample (numpy, unit-cube SDF points; see docs/contracts.md) to
the model batch (torch, camera frame, metres): balanced SDF point sampling, unit-cube →
camera conversion, video frame gathering (t−1, t, t+1 of one sequence, clamped at the
sequence ends), and the reference code's augmentation (docs/fidelity.md): a rotation about
the camera's optical axis, applied consistently to the image, the points, the joints and the
object centre, and a colour scale per channel.

The work is split where it is cheapest. A DataLoader worker decodes the JPEG, turns the
uint8 image with one affine warp (as the reference's `generate_patch_image`; images not of
the input size are resized first), rotates the 3D targets and draws the SDF points; the colour scale is
applied in `to_device`, batched, on the training device, where the uint8 image becomes float
(4x fewer bytes through the workers' shared memory and the host-to-device copy).

Every random choice comes from a generator seeded by (seed, epoch, index), so a sample is
the same whatever DataLoader worker draws it, and a resumed run sees the same stream.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation; the defaults are the reference code's (zerchen/gSDF `get_aug_config`).

    rotation: with probability `rotation_prob` the sample turns about the optical axis by an
    angle ~ N(0, rotation_deg²) clipped to ±rotation_clip_deg ("gaussian"), or uniform in
    ±rotation_deg ("uniform", the paper's "±45°"); otherwise not at all.
    colour: each RGB channel × U[1 − colour_scale, 1 + colour_scale], then clipped.
    """

    rotation_deg: float = 45.0
    rotation_clip_deg: float = 90.0
    rotation_prob: float = 0.6
    rotation_dist: str = "gaussian"
    colour_scale: float = 0.2

    def __post_init__(self) -> None:
        if self.rotation_dist not in ("gaussian", "uniform"):
            raise ValueError(
                f"rotation_dist must be 'gaussian' or 'uniform', got {self.rotation_dist!r}"
            )


def draw_augmentation(rng: np.random.Generator, cfg: AugmentConfig) -> tuple[float, np.ndarray]:
    """(rotation angle in radians, colour factors (3,)) for one sample."""
    angle = 0.0
    if rng.random() < cfg.rotation_prob:
        if cfg.rotation_dist == "gaussian":
            deg = float(
                np.clip(
                    rng.standard_normal() * cfg.rotation_deg,
                    -cfg.rotation_clip_deg,
                    cfg.rotation_clip_deg,
                )
            )
        else:
            deg = float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
        angle = math.radians(deg)
    colour = rng.uniform(1.0 - cfg.colour_scale, 1.0 + cfg.colour_scale, 3)
    return angle, colour.astype(np.float32)


def limit_opencv_threads() -> None:
    """One OpenCV thread in this process, and so in the DataLoader workers forked from it
    (torch already runs one per worker: the workers are the parallelism).

    Call it in the parent before the workers start, never in a forked worker: once the
    parent's OpenCV pool has started threads, `cv2.setNumThreads` in a forked child waits
    forever for threads the fork did not copy (tested).
    """
    cv2.setNumThreads(1)


def default_workers(local_world_size: int = 1) -> int:
    """DataLoader workers for one training process: the cores this process may run on, shared
    among the processes of this machine, less one for the process itself."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(0, cores // max(1, int(local_world_size)) - 1)


def open_shards(path: str | Path, allow_partial: bool = False, progress: bool = False):
    """A `gsdf_data.shards.ShardSet` for `path`, opened through its manifest (imported lazily:
    h5py is only needed here). `allow_partial`: use an incomplete set on purpose."""
    from gsdf_data.shards import ShardSet

    return ShardSet(Path(path), allow_partial=allow_partial, progress=progress)


def _rot_z(angle: float) -> np.ndarray:
    """(3, 3) rotation about the camera z axis (the optical axis) by `angle` radians."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def image_warp(K: np.ndarray, hw: tuple[int, int], size: int, R: np.ndarray):
    """The rotation of the (size, size) input image and its intrinsics.

    K: (3, 3) intrinsics of the (H, W) image; R: (3, 3) rotation about the optical axis of
    camera-frame points (X' = R X). Returns (M (2, 3) pixel map on the size × size grid, None
    when R is the identity; K' (3, 3) of the size × size image). A resize scales about pixel
    edges (pixel centres at integer coordinates: u' = (u + 0.5)·s − 0.5); the rotation is
    H = K' R K'⁻¹, so a point that projected to u' now projects to H u'. H is affine because R
    turns about the z axis.
    """
    h, w = hw
    K_out = np.asarray(K, dtype=np.float64)
    if (h, w) != (size, size):
        sx, sy = size / w, size / h
        A = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
        K_out = A @ K_out
    if R[0, 1] == 0.0 and R[0, 0] == 1.0:
        return None, K_out
    return (K_out @ R @ np.linalg.inv(K_out))[:2], K_out


def warp_image(image: np.ndarray, M: np.ndarray | None, size: int) -> np.ndarray:
    """(H, W, 3) uint8 → (size, size, 3) uint8: resized if needed (bilinear, edges
    replicated, as before), then turned by the map M of `image_warp` (bilinear, black
    outside: OpenCV's warpAffine, the reference's warp)."""
    if image.shape[:2] != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    if M is None:
        return image
    return cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def apply_colour(image: torch.Tensor, colour: torch.Tensor | None) -> torch.Tensor:
    """Float image in [0, 1]: image (B, 3, H, W) or (B, T, 3, H, W), uint8 0–255 or float
    0–1; colour (B, 3) per-channel factors (one set for all frames of a clip, all >= 0) or
    None. Clipped at 1 as the reference clips at 255; one pass for the scale and the /255."""
    # a new tensor either way: the caller's batch is not changed in place
    img = image.float() if image.dtype == torch.uint8 else image.to(torch.float32, copy=True)
    unit = 1.0 / 255.0 if image.dtype == torch.uint8 else 1.0
    if colour is None:
        return img.mul_(unit) if unit != 1.0 else img
    shape = (img.shape[0],) + (1,) * (img.dim() - 4) + (3, 1, 1)
    return img.mul_(colour.to(img.dtype).view(shape) * unit).clamp_max_(1.0)


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


class InMemoryShards:
    """A shard set held in memory: a list of sample dicts with the keys of
    `ShardSet[i]` (docs/contracts.md). For custom data, inference on one's own images and
    tests; `sample_sdf` draws balanced points like `ShardSet.sample_sdf`."""

    def __init__(self, samples: list[dict[str, Any]]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.samples[i]

    def sample_sdf(
        self, i: int, n_hand: int = 1000, n_obj: int = 1000, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(points (n_hand + n_obj, 3), sdf_hand, sdf_obj): for each mesh half of its points
        inside (sdf < 0) and half outside, drawn with replacement when there are too few."""
        rng = rng if rng is not None else np.random.default_rng()
        s = self.samples[i]
        chosen = []
        for key, n in (("sdf_hand", n_hand), ("sdf_obj", n_obj)):
            sdf = np.asarray(s[key])
            for mask, m in ((sdf < 0, n // 2), (sdf >= 0, n - n // 2)):
                idx = np.flatnonzero(mask)
                if m == 0:
                    continue
                if len(idx) == 0:
                    idx = np.arange(len(sdf))
                chosen.append(rng.choice(idx, size=m, replace=len(idx) < m))
        sel = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
        return s["points"][sel], s["sdf_hand"][sel], s["sdf_obj"][sel]


class GSDFDataset(Dataset):
    """Model samples over a shard set (a `ShardSet` or a path to one).

    Each item is a dict of tensors in the camera frame, metres (docs/contracts.md, "Model
    batch"), without the batch dimension:
      image (3, S, S) uint8 — or (T, 3, S, S) with T = 3 when `video` (frames t−1, t, t+1);
      K (3, 3); joints (21, 3); obj_center (3,); points (N, 3); sdf_hand (N,); sdf_obj (N,)
      with N = n_hand + n_obj (absent when both are 0); colour (3,) per-channel factors when
      augmenting (`to_device` applies them); plus sample_id (str), index (int).
    """

    def __init__(
        self,
        shards: Any,
        n_hand: int = 1000,
        n_obj: int = 1000,
        video: bool = False,
        augment: AugmentConfig | None = None,
        image_size: int = 256,
        seed: int = 0,
    ) -> None:
        self.shards = open_shards(shards) if isinstance(shards, str | Path) else shards
        self.n_hand, self.n_obj = int(n_hand), int(n_obj)
        self.video = bool(video)
        self.augment = augment
        self.image_size = int(image_size)
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

    def _image(self, image: np.ndarray, K: np.ndarray, R: np.ndarray):
        """(3, S, S) uint8 tensor (a view of the warped HWC array) and its K (3, 3)."""
        M, K_out = image_warp(K, image.shape[:2], self.image_size, R)
        img = warp_image(image, M, self.image_size)
        return torch.from_numpy(img).permute(2, 0, 1), K_out

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        s = fetch_sample(self.shards, index, _ITEM_KEYS)
        item: dict[str, Any] = {}
        points = None
        if self.n_hand + self.n_obj > 0:
            # drawn first: the same points for the same (seed, epoch, index) as before
            pts, sdf_h, sdf_o = _sdf_points(self.shards, index, self.n_hand, self.n_obj, rng)
            scale = np.float32(s["norm_scale"])
            points = np.asarray(pts, np.float32) * scale + np.asarray(s["norm_offset"], np.float32)
            item["sdf_hand"] = torch.from_numpy(np.asarray(sdf_h, np.float32) * scale)
            item["sdf_obj"] = torch.from_numpy(np.asarray(sdf_o, np.float32) * scale)
        R = np.eye(3)
        if self.augment is not None:
            angle, colour = draw_augmentation(rng, self.augment)
            R = _rot_z(angle)
            item["colour"] = torch.from_numpy(colour)

        img, K = self._image(s["image"], np.asarray(s["K"]), R)
        if self.video:
            prev_i, next_i = self._neighbours[index]
            frames = []
            for j in (prev_i, index, next_i):
                if j == index:
                    frames.append(img)
                else:
                    o = fetch_sample(self.shards, j, ("image", "K"))
                    frames.append(self._image(o["image"], np.asarray(o["K"]), R)[0])
            img = torch.stack(frames)  # (3, 3, S, S)

        Rf = R.T.astype(np.float32)
        item["image"] = img
        item["K"] = torch.from_numpy(K.astype(np.float32))
        item["joints"] = torch.from_numpy(np.asarray(s["joints"], np.float32) @ Rf)
        item["obj_center"] = torch.from_numpy(np.asarray(s["obj_center"], np.float32) @ Rf)
        if points is not None:
            item["points"] = torch.from_numpy(points @ Rf)
        item["sample_id"] = str(s["sample_id"])
        item["index"] = int(index)
        return item


def to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Move the tensors of a collated batch to `device` (other values unchanged; copies do
    not block, so a pinned batch overlaps the running step) and finish its images there:
    uint8 → float in [0, 1] with the batch's colour factors applied (`apply_colour`)."""
    out = {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }
    colour = out.pop("colour", None)
    if "image" in out and (colour is not None or out["image"].dtype == torch.uint8):
        out["image"] = apply_colour(out["image"], colour)
    return out
