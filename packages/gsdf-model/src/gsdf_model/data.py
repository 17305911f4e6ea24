"""Training and inference samples for the gSDF network, read from shards.

Owns the step from a shard sample (numpy, unit-cube SDF points; see docs/contracts.md) to
the model batch (torch, camera frame, metres): balanced SDF point sampling, unit-cube →
camera conversion, video frame gathering (t−1, t, t+1 of one sequence, clamped at the
sequence ends; for training, every frame's labels), and the reference code's augmentation
(docs/fidelity.md): a rotation about the camera's optical axis, applied consistently to the
image, the points, the joints and the object centre, a colour scale per channel, and on
DexYCB a shifted crop seen by a virtual camera turned towards its centre.

The work is split where it is cheapest. A DataLoader worker decodes the JPEG, turns the
uint8 image with one affine warp (as the reference's `generate_patch_image`; images not of
the input size are resized first; one perspective warp when the crop shifts), rotates the
3D targets and draws the SDF points; the colour scale is
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
    crop shift (the reference's DexYCB `trans_factor` 0.1; ObMan 0, the default): the crop
    centre moves by U[−crop_shift, crop_shift] of the crop's side along each image axis, and
    a virtual camera turned to look through the new centre, with its principal point at the
    image centre, sees the crop (`virtual_camera`); the rotation then turns about its axis.
    """

    rotation_deg: float = 45.0
    rotation_clip_deg: float = 90.0
    rotation_prob: float = 0.6
    rotation_dist: str = "gaussian"
    colour_scale: float = 0.2
    crop_shift: float = 0.0

    def __post_init__(self) -> None:
        if self.rotation_dist not in ("gaussian", "uniform"):
            raise ValueError(
                f"rotation_dist must be 'gaussian' or 'uniform', got {self.rotation_dist!r}"
            )
        if not 0.0 <= self.crop_shift < 0.5:
            raise ValueError(f"crop_shift must be in [0, 0.5), got {self.crop_shift!r}")


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


def draw_crop_shift(rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray | None:
    """(2,) shift of the crop centre along x and y, in crop sides, U[−crop_shift, crop_shift]
    each (the reference's `trans`); None, and nothing drawn, without a crop shift."""
    if cfg.crop_shift <= 0:
        return None
    return rng.uniform(-cfg.crop_shift, cfg.crop_shift, 2)


def virtual_camera(K: np.ndarray, size: int, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's virtual camera (zerchen/gSDF `update_virtual_camera_after_crop`, focal
    lengths kept) for a size × size crop with intrinsics K whose centre (size/2, size/2)
    moves by `shift` (2,) crop sides.

    The virtual camera looks along the ray through the new centre; its x axis stays
    perpendicular to this camera's y axis (the reference turns about x, then about y); its
    principal point is the image centre, its focal lengths K's. Returns (V (3,3), K_v (3,3)):
    V's columns are the virtual camera's axes in this camera's frame, so a point X here is
    Vᵀ X there, and a pixel u here is K_v Vᵀ K⁻¹ u there.
    """
    K = np.asarray(K, dtype=np.float64)
    centre = np.array([size / 2 + shift[0] * size, size / 2 + shift[1] * size, 1.0])
    z = np.linalg.solve(K, centre)
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    V = np.stack([x, np.cross(z, x), z], axis=1)
    K_v = np.array([[K[0, 0], 0.0, size / 2], [0.0, K[1, 1], size / 2], [0.0, 0.0, 1.0]])
    return V, K_v


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


def resized_intrinsics(K: np.ndarray, hw: tuple[int, int], size: int) -> np.ndarray:
    """K (3, 3) of an (H, W) image → K of that image resized to size × size. A resize scales
    about pixel edges (pixel centres at integer coordinates: u' = (u + 0.5)·s − 0.5)."""
    h, w = hw
    K_out = np.asarray(K, dtype=np.float64)
    if (h, w) != (size, size):
        sx, sy = size / w, size / h
        A = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
        K_out = A @ K_out
    return K_out


def image_warp(
    K: np.ndarray,
    hw: tuple[int, int],
    size: int,
    R: np.ndarray,
    K_view: np.ndarray | None = None,
):
    """The pixel map of the (size, size) input image and its intrinsics.

    K: (3, 3) intrinsics of the (H, W) image; R: (3, 3) rotation of camera-frame points
    (X' = R X); K_view: the intrinsics of the camera that sees X' (None: the image's own,
    after the resize). Returns (M, K'): M None when nothing turns, the (2, 3) affine map when
    R turns about the z axis and K_view is None, else the (3, 3) homography, on the
    size × size grid; K' (3, 3) the intrinsics of the output image. The map is
    H = K' R K⁻¹ (K after the resize), so a point that projected to u now projects to H u.
    """
    K_in = resized_intrinsics(K, hw, size)
    if K_view is None:
        if R[0, 1] == 0.0 and R[0, 0] == 1.0:
            return None, K_in
        return (K_in @ R @ np.linalg.inv(K_in))[:2], K_in
    K_view = np.asarray(K_view, dtype=np.float64)
    return K_view @ R @ np.linalg.inv(K_in), K_view


def warp_image(image: np.ndarray, M: np.ndarray | None, size: int) -> np.ndarray:
    """(H, W, 3) uint8 → (size, size, 3) uint8: resized if needed (bilinear, edges
    replicated, as before), then turned by the map M of `image_warp` (bilinear, black
    outside: OpenCV's warpAffine, the reference's warp, or warpPerspective for a (3, 3) M)."""
    if image.shape[:2] != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    if M is None:
        return image
    if M.shape[0] == 3:
        return cv2.warpPerspective(image, M, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
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
    With `video` and `frame_labels`, K, joints, obj_center, points, sdf_hand and sdf_obj are
    those of every frame, with a leading T axis (each frame's own SDF points); otherwise they
    are frame t's. One augmentation draw serves every frame of a clip (as the reference).
    clips (video): "consecutive" — one item per sample, frames t−1, t, t+1 of its sequence
    (clamped at the ends; the test clips); "random" — the reference's training clips: one
    item per sequence, three of its frames drawn anew each epoch without replacement (with,
    when it has fewer than three), in the order drawn; the middle one plays frame t.
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
        frame_labels: bool = False,
        clips: str = "consecutive",
        sequences: list[list[int]] | None = None,
    ) -> None:
        if clips not in ("consecutive", "random"):
            raise ValueError(f"clips must be 'consecutive' or 'random', not {clips!r}")
        self.shards = open_shards(shards) if isinstance(shards, str | Path) else shards
        self.n_hand, self.n_obj = int(n_hand), int(n_obj)
        self.video = bool(video)
        self.frame_labels = bool(frame_labels) and self.video
        self.augment = augment
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.epoch = 0
        # each sequence's sample indices in frame order (`sequences`: another dataset's over
        # the same shard set, to skip reading every sample's ids again)
        self.sequences = (sequences or self._sequences()) if video else None
        self._neighbours = _neighbours(self.sequences, len(self.shards)) if video else None
        self._clip_pool = self.sequences if video and clips == "random" else None

    def __len__(self) -> int:
        return len(self.shards) if self._clip_pool is None else len(self._clip_pool)

    def set_epoch(self, epoch: int) -> None:
        """Change the random stream (call before each epoch's DataLoader iterator)."""
        self.epoch = int(epoch)

    def _sequences(self) -> list[list[int]]:
        """The sample indices of each sequence, in frame order (sequences by first sample)."""
        seqs: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i in range(len(self.shards)):
            s = fetch_sample(self.shards, i, ("seq_id", "frame_idx"))
            seqs[str(s["seq_id"])].append((int(s["frame_idx"]), i))
        return [[i for _, i in sorted(frames)] for frames in seqs.values()]

    def _draw_clip(self, seq: int) -> tuple[int, tuple[int, int]]:
        """Sequence `seq`'s clip of this epoch: (frame t's index, (its two companions))."""
        members = self._clip_pool[seq]
        rng = np.random.default_rng([self.seed, self.epoch, int(seq), 3])
        a, b, c = rng.choice(members, 3, replace=len(members) < 3)
        return int(b), (int(a), int(c))

    def _image(self, image: np.ndarray, K: np.ndarray, R: np.ndarray, shift: np.ndarray | None):
        """The view of one frame: (3, S, S) uint8 tensor (a view of the warped HWC array),
        its K (3, 3), and the rotation (3, 3) that takes this frame's camera-frame points to
        the view's (R, after the virtual camera's turn when the crop shifts)."""
        K_view = None
        if shift is not None:
            K_in = resized_intrinsics(K, image.shape[:2], self.image_size)
            V, K_view = virtual_camera(K_in, self.image_size, shift)
            R = R @ V.T
        M, K_out = image_warp(K, image.shape[:2], self.image_size, R, K_view)
        img = warp_image(image, M, self.image_size)
        return torch.from_numpy(img).permute(2, 0, 1), K_out, R

    def _points(self, s: dict[str, Any], index: int, rng) -> dict[str, np.ndarray]:
        """Balanced SDF points of one sample in its camera frame, metres (none when
        n_hand + n_obj is 0)."""
        if self.n_hand + self.n_obj == 0:
            return {}
        pts, sdf_h, sdf_o = _sdf_points(self.shards, index, self.n_hand, self.n_obj, rng)
        scale = np.float32(s["norm_scale"])
        return {
            "points": np.asarray(pts, np.float32) * scale
            + np.asarray(s["norm_offset"], np.float32),
            "sdf_hand": np.asarray(sdf_h, np.float32) * scale,
            "sdf_obj": np.asarray(sdf_o, np.float32) * scale,
        }

    @staticmethod
    def _labels(s: dict[str, Any], pts: dict[str, np.ndarray], K, R) -> dict[str, torch.Tensor]:
        """One frame's labels, its 3D ones turned by R (X' = R X); SDFs are unchanged."""
        Rf = R.T.astype(np.float32)
        out = {
            "K": torch.from_numpy(np.asarray(K).astype(np.float32)),
            "joints": torch.from_numpy(np.asarray(s["joints"], np.float32) @ Rf),
            "obj_center": torch.from_numpy(np.asarray(s["obj_center"], np.float32) @ Rf),
        }
        if pts:
            out["points"] = torch.from_numpy(pts["points"] @ Rf)
            out["sdf_hand"] = torch.from_numpy(pts["sdf_hand"])
            out["sdf_obj"] = torch.from_numpy(pts["sdf_obj"])
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        companions = None
        if self._clip_pool is not None:  # an item is a sequence: its clip of this epoch
            index, companions = self._draw_clip(index)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        s = fetch_sample(self.shards, index, _ITEM_KEYS)
        item: dict[str, Any] = {}
        # drawn first: the same points for the same (seed, epoch, index) as before
        pts = self._points(s, index, rng)
        R, shift = np.eye(3), None
        if self.augment is not None:
            angle, colour = draw_augmentation(rng, self.augment)
            R = _rot_z(angle)
            item["colour"] = torch.from_numpy(colour)
            shift = draw_crop_shift(rng, self.augment)

        img, K, R_t = self._image(s["image"], np.asarray(s["K"]), R, shift)
        labels = self._labels(s, pts, K, R_t)
        if self.video:
            prev_i, next_i = companions or self._neighbours[index]
            frames, per_frame = [], []
            for j in (prev_i, index, next_i):
                if j == index:
                    frames.append(img)
                    per_frame.append(labels)
                    continue
                keys = _ITEM_KEYS if self.frame_labels else ("image", "K")
                o = fetch_sample(self.shards, j, keys)
                o_img, o_K, o_R = self._image(o["image"], np.asarray(o["K"]), R, shift)
                frames.append(o_img)
                if self.frame_labels:  # each frame its own points, drawn after frame t's
                    per_frame.append(self._labels(o, self._points(o, j, rng), o_K, o_R))
            img = torch.stack(frames)  # (3, 3, S, S)
            if self.frame_labels:
                labels = {k: torch.stack([f[k] for f in per_frame]) for k in labels}

        item["image"] = img
        item.update(labels)
        item["sample_id"] = str(s["sample_id"])
        item["index"] = int(index)
        return item


def _neighbours(sequences: list[list[int]], n: int) -> list[tuple[int, int]]:
    """For each of n samples, the indices of the previous and next frame of its sequence
    (itself at a sequence end)."""
    out = [(i, i) for i in range(n)]
    for order in sequences:
        for k, i in enumerate(order):
            out[i] = (order[max(k - 1, 0)], order[min(k + 1, len(order) - 1)])
    return out


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
