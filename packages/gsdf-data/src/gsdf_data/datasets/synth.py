"""The project's own ObMan-style hand-object dataset, made entirely by code.

A sample is the hand model (the procedural hand by default, or the user's MANO) holding an
object (`gsdf_data.datasets.objects`), rendered headless to a 256×256 RGB image with ObMan's
intrinsics. Samples come in sequences of T frames: one grasp per sequence, moved rigidly and
smoothly through the camera's field of view (rotation by slerp, translation eased), with
random colours, lighting and background per sequence.

This module is the orchestration; the parts live beside it:

- `grasps`: the hand placed around the object in the hand's rest frame (poses, axes and
  forward kinematics from the hand module, `gsdf_data.hand`);
- `synth_render`: a sequence's look and its frames rendered headless;
- `synth_writers`: frames as ObMan-layout files, or as `prepare_pairs` tasks for shards,
  and the dataset summary;
- `synth_preview`: first frames tiled with their joints.

Written in the ObMan layout (`write_dataset`) so `prepare obman` reads it, or straight to
shards through `prepare_pairs` (`write_shards`). Everything is a function of (config,
sequence index): the same seed gives identical files whatever the number of jobs.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsdf_data.datasets.common import HandSpec
from gsdf_data.datasets.grasps import Grasp, GraspBuilder, random_rotation
from gsdf_data.datasets.objects import ObjectInstance, ObjectLibrary
from gsdf_data.datasets.obman import OBMAN_K
from gsdf_data.datasets.synth_render import SIZE, Look, get_renderer, render_frame


@dataclass(frozen=True)
class SynthConfig:
    """What a synthetic dataset is made of (stored in its summary).

    samples: frames in total (rounded up to whole sequences). seq_len: frames per sequence.
    seed: master seed. test_fraction: share of sequences in the test split. mano: path of
    MANO_RIGHT.pkl (None: the procedural hand). objects: object sources ("auto",
    "procedural", "pybullet", "all"). touch_mm: how deep a closing finger may go into the
    object. candidates: grasp candidates tried per sequence. max_rotation_deg: rotation of
    the pair over a sequence. view_spread_deg: None (default) turns each sequence's pair to a
    uniformly random orientation; a number keeps the hand within that many degrees of the
    canonical view (`canonical_view`), a narrower task that small training sets can learn.
    """

    samples: int = 1000
    seq_len: int = 1
    seed: int = 0
    test_fraction: float = 0.2
    mano: str | None = None
    objects: str = "auto"
    touch_mm: float = 1.5
    candidates: int = 6
    max_rotation_deg: float = 30.0
    view_spread_deg: float | None = None

    @property
    def n_sequences(self) -> int:
        return -(-self.samples // self.seq_len)

    @property
    def n_test_sequences(self) -> int:
        if self.n_sequences < 2 or self.test_fraction <= 0:
            return 0
        return min(self.n_sequences - 1, max(1, round(self.n_sequences * self.test_fraction)))

    def split_of(self, seq: int) -> str:
        """Test sequences are the last ones."""
        return "test" if seq >= self.n_sequences - self.n_test_sequences else "train"

    def hand_spec(self) -> HandSpec:
        return HandSpec(mano=self.mano, flat_hand_mean=True, tips="obman")


# ----------------------------------------------------------------------------- sequences


@dataclass
class Frame:
    """One rendered frame, camera frame (OpenCV axes, metres).

    rgb (256,256,3) uint8; depth / hand_depth / obj_depth (256,256) float32 metres (0: none;
    hand_depth and obj_depth are None when the layers were not rendered);
    hand_verts (V,3); keypoints (21,3); rotmats (16,3,3) local; hand_R (3,3) and hand_t (3,)
    the rigid map of the grasp (hand rest frame -> camera); obj_pose (4,4) centred object ->
    camera; obj_verts (V',3).
    """

    rgb: np.ndarray
    depth: np.ndarray
    hand_depth: np.ndarray | None
    obj_depth: np.ndarray | None
    hand_verts: np.ndarray
    keypoints: np.ndarray
    rotmats: np.ndarray
    hand_R: np.ndarray
    hand_t: np.ndarray
    obj_pose: np.ndarray
    obj_verts: np.ndarray


@dataclass
class Sequence:
    """A grasp, its object and its T frames."""

    index: int
    obj: ObjectInstance
    grasp: Grasp
    frames: list[Frame]
    hand_faces: np.ndarray


def make_sequence(
    config: SynthConfig,
    index: int,
    builder: GraspBuilder,
    library,
    renderer,
    layers: bool = True,
) -> Sequence:
    """Sequence `index` of `config`: a grasp, T frames with their renders. Deterministic in
    (config, index). layers: also render the hand and the object alone (ObMan's depth and
    segmentation layers; not needed for shards), else those depths are None."""
    rng = np.random.default_rng([config.seed, index])
    obj = library.sample(rng)
    grasp = builder.grasp(obj, rng, config.touch_mm, config.candidates)
    obj_v = np.asarray(obj.mesh.vertices) @ grasp.obj_R.T + grasp.obj_t
    view = canonical_view(builder.along, builder.normal)
    motion = _motion(np.concatenate([grasp.verts, obj_v]), rng, config, view)
    look = Look.draw(rng)
    local = grasp.local_rotmats()
    obj_faces = np.asarray(obj.mesh.faces)
    frames = []
    for R, t in motion:  # hand frame point x -> R x + t
        hv = grasp.verts @ R.T + t
        ov = obj_v @ R.T + t
        obj_pose = np.eye(4)
        obj_pose[:3, :3] = R @ grasp.obj_R
        obj_pose[:3, 3] = R @ grasp.obj_t + t
        rotmats = local.copy()
        rotmats[0] = R @ rotmats[0]
        rgb, depth, hd, od = render_frame(
            renderer, look, (hv, builder.faces), (ov, obj_faces), OBMAN_K, layers
        )
        kp = grasp.keypoints @ R.T + t
        frames.append(Frame(rgb, depth, hd, od, hv, kp, rotmats, R, t, obj_pose, ov))
    return Sequence(index, obj, grasp, frames, builder.faces)


def canonical_view(along: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """The rotation (3,3) from the hand's rest frame to the camera (OpenCV axes) of the
    canonical view: fingers up in the image (along -> -y) and the palm turned 45 degrees from
    the image's +x towards the camera (normal -> (1, 0, -1)/sqrt 2), so that hand and object
    are both in sight. along, normal: the rest frame's finger direction and palmar normal."""
    a = along / np.linalg.norm(along)
    n = normal - np.dot(normal, a) * a
    n = n / np.linalg.norm(n)
    src = np.stack([a, n, np.cross(a, n)], axis=1)  # columns: rest-frame axes
    ca, cn = np.array([0.0, -1.0, 0.0]), np.array([1.0, 0.0, -1.0]) / np.sqrt(2.0)
    dst = np.stack([ca, cn, np.cross(ca, cn)], axis=1)  # the same axes in the camera
    return dst @ src.T


def _start_rotation(rng: np.random.Generator, config: SynthConfig, view: np.ndarray):
    """A sequence's first orientation (3,3): uniform, or within `view_spread_deg` of `view`
    (a turn about a uniform axis by an angle drawn so turns fill the ball of rotation
    vectors evenly)."""
    if config.view_spread_deg is None:
        return random_rotation(rng)
    from scipy.spatial.transform import Rotation

    axis = rng.normal(size=3)
    angle = np.radians(config.view_spread_deg) * rng.uniform() ** (1.0 / 3.0)
    turn = Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()
    return turn @ view


def _motion(
    points: np.ndarray, rng: np.random.Generator, config: SynthConfig, view: np.ndarray
) -> list:
    """Rigid maps (R (3,3), t (3,)) from the hand frame to the camera, one per frame, for a
    pair with points (N,3) in the hand frame: the pair starts at `_start_rotation` and turns
    by slerp over up to `max_rotation_deg` while its centre moves, eased in and out, between
    two random spots where it stays inside the image. view: the canonical view (3,3)."""
    from scipy.spatial.transform import Rotation, Slerp

    centre = 0.5 * (points.min(0) + points.max(0))  # centre of the pair's bounding box
    _, z, lat = _placement(points - centre, rng, OBMAN_K)
    R0 = _start_rotation(rng, config, view)
    axis = rng.normal(size=3)
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    R1 = Rotation.from_rotvec(axis * np.radians(rng.uniform(0.3, 1.0) * config.max_rotation_deg))
    rots = Slerp(
        [0.0, 1.0],
        Rotation.from_matrix(np.stack([R0, (R1 * Rotation.from_matrix(R0)).as_matrix()])),
    )
    p0 = np.append(rng.uniform(-lat, lat, 2), z)
    p1 = np.append(rng.uniform(-lat, lat, 2), z * rng.uniform(0.97, 1.03))
    T = config.seq_len
    out = []
    for k in range(T):
        s = 0.0 if T == 1 else k / (T - 1)
        e = 0.5 - 0.5 * np.cos(np.pi * s)  # ease in and out
        R = rots([e]).as_matrix()[0]
        p = (1 - e) * p0 + e * p1
        out.append((R, p - R @ centre))  # the pair centre lands at p
    return out


def _placement(points: np.ndarray, rng: np.random.Generator, K: np.ndarray):
    """Depth and image-plane offsets for a pair whose points (N,3) (centred) span a sphere:
    returns (radius, z, max lateral offset in metres) so the sphere stays in the image."""
    radius = float(np.linalg.norm(points, axis=1).max())
    fill = rng.uniform(0.62, 0.85)
    f = float(K[0, 0])
    z = f * radius / (fill * SIZE / 2)
    margin_px = SIZE / 2 * (0.97 - fill)
    return radius, z, margin_px * z / f


# ----------------------------------------------------------------------------- workers


@functools.lru_cache(maxsize=2)
def _builder(spec: HandSpec) -> GraspBuilder:
    return GraspBuilder(spec.load())


@functools.lru_cache(maxsize=2)
def _library(option: str) -> ObjectLibrary:
    return ObjectLibrary.from_option(option)


@functools.lru_cache(maxsize=4)
def cached_sequence(config: SynthConfig, index: int, layers: bool = True) -> Sequence:
    """`make_sequence` with this process's hand model, object library and GL context."""
    return make_sequence(
        config,
        index,
        _builder(config.hand_spec()),
        _library(config.objects),
        get_renderer(),
        layers,
    )


# ----------------------------------------------------------------------------- datasets


def _write_chunk(config: SynthConfig, indices: list[int], out: str) -> list[dict]:
    from gsdf_data.datasets.synth_writers import write_sequence

    return [write_sequence(config, i, Path(out)) for i in indices]


def _chunks(n: int, jobs: int) -> list[list[int]]:
    """Sequence indices cut into contiguous chunks, a few per job (a chunk shares one GL
    context and hand model)."""
    k = max(1, min(n, jobs * 4))
    bounds = np.linspace(0, n, k + 1).astype(int)
    return [list(range(a, b)) for a, b in itertools.pairwise(bounds) if b > a]


def write_dataset(
    config: SynthConfig, out: str | Path, jobs: int = 1, progress: bool = True
) -> dict:
    """Generate the dataset in the ObMan layout under `out` (`train/`, `test/`, `shapenet/`)
    and write `synth_summary.json` beside it. Returns the summary. Re-running with the same
    configuration rewrites identical files."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    from gsdf_data.datasets.synth_writers import dataset_summary

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chunks = _chunks(config.n_sequences, jobs)
    stats: list[dict] = []
    bar = tqdm(total=config.n_sequences * config.seq_len, unit="frame", desc="synth",
               disable=not progress, dynamic_ncols=True)  # fmt: skip
    if jobs == 1:
        results = (_write_chunk(config, c, str(out)) for c in chunks)
    else:
        results = Parallel(n_jobs=jobs, backend="loky", return_as="generator")(
            delayed(_write_chunk)(config, c, str(out)) for c in chunks
        )
    for res in results:
        stats += res
        bar.update(len(res) * config.seq_len)
    bar.close()
    stats.sort(key=lambda s: s["index"])
    summary = dataset_summary(config, stats)
    (out / "synth_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def write_shards(config: SynthConfig, out: str | Path, jobs: int = 1, prepare_config=None) -> dict:
    """Generate the dataset straight into shards, `out/shards/{train,test}`, through
    `prepare_pairs` (rendering, SDF sampling and writing in the same workers), and write
    `out/synth_summary.json`. Returns the summary (as `write_dataset`). The default
    configuration skips the double-sided filter: every synthetic object is a closed mesh by
    construction (checked when it is made)."""
    import shutil

    from gsdf_data.datasets.synth_writers import dataset_summary, synth_tasks
    from gsdf_data.prepare import PrepareConfig, prepare_pairs

    out = Path(out)
    stats_dir = out / ".grasp_stats"
    stats_dir.mkdir(parents=True, exist_ok=True)
    cfg = prepare_config or PrepareConfig(filter=None, image_format="jpg")
    for split, tasks in synth_tasks(config, str(stats_dir)).items():
        if tasks:
            prepare_pairs(tasks, out / "shards" / split, config=cfg, jobs=jobs)
    stats = [json.loads(p.read_text()) for p in sorted(stats_dir.glob("*.json"))]
    summary = dataset_summary(config, sorted(stats, key=lambda s: s["index"]))
    (out / "synth_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    shutil.rmtree(stats_dir, ignore_errors=True)
    return summary
