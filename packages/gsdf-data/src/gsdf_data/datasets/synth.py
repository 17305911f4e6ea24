"""The project's own ObMan-style hand-object dataset, made entirely by code.

A sample is the hand model (the procedural hand by default, or the user's MANO) holding an
object (`gsdf_data.datasets.objects`), rendered headless to a 256×256 RGB image with ObMan's
intrinsics. Samples come in sequences of T frames: one grasp per sequence, moved rigidly and
smoothly through the camera's field of view (rotation by slerp, translation eased), with
random colours, lighting and background per sequence.

Grasps are built, not sampled blindly, in the hand's rest frame:

1. a grasp-like finger pose P is drawn (per-finger curl about each bone's flexion axis, the
   thumb turned towards the palm), and an object with a random orientation;
2. the object is pushed along the palm normal until it touches the open hand's palm
   (bisection on the object's signed distance at the hand vertices);
3. each finger closes along α·P, α from 0 to 1, and stops at the last step before its
   vertices go deeper than `touch_mm` into the object (the object's SDF again), so fingers
   rest on the surface instead of passing through it;
4. candidates (object orientation, offsets) are scored by fingers in contact and penetration
   depth; the best one is kept. Its statistics (deepest hand vertex inside the object, gap,
   fingers in contact) go to the dataset summary.

Written in the ObMan layout (`write_dataset`) so `prepare obman` reads it, or straight to
shards through `prepare_pairs` (`synth_tasks`). Everything is a function of (config, sequence
index): the same seed gives identical files whatever the number of jobs.
"""

from __future__ import annotations

import functools
import itertools
import json
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gsdf_data.datasets.common import CAM_FLIP, HandSpec, hand_faces, make_pair
from gsdf_data.datasets.objects import ObjectInstance, ObjectLibrary, write_shapenet_model
from gsdf_data.datasets.obman import OBMAN_K, encode_depth
from gsdf_data.files import atomic_write_bytes

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
# 21 keypoints (paper order): bones to draw, parent -> child
SKELETON = [(0, 1), (1, 2), (2, 3), (3, 4)] + [
    (a, b) for f in range(4) for a, b in ((0, 5 + 4 * f), (5 + 4 * f, 6 + 4 * f),
                                          (6 + 4 * f, 7 + 4 * f), (7 + 4 * f, 8 + 4 * f))
]  # fmt: skip


@dataclass(frozen=True)
class SynthConfig:
    """What a synthetic dataset is made of (stored in its summary).

    samples: frames in total (rounded up to whole sequences). seq_len: frames per sequence.
    seed: master seed. test_fraction: share of sequences in the test split. mano: path of
    MANO_RIGHT.pkl (None: the procedural hand). objects: object sources ("auto",
    "procedural", "pybullet", "all"). touch_mm: how deep a closing finger may go into the
    object. candidates: grasp candidates tried per sequence. max_rotation_deg: rotation of
    the pair over a sequence.
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


# ----------------------------------------------------------------------------- rotations


def rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
    """Axis-angle (...,3) -> rotation matrices (...,3,3)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.asarray(v).reshape(-1, 3)).as_matrix().reshape(*np.shape(v), 3)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random rotation (3,3)."""
    from scipy.spatial.transform import Rotation

    q = rng.normal(size=4)
    return Rotation.from_quat(q / np.linalg.norm(q)).as_matrix()


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- grasps


@dataclass
class Grasp:
    """A hand holding an object, in the hand's rest frame (global rotation 0, no translation).

    finger_pose (45,) axis-angle; verts (V,3); keypoints (21,3); transforms (16,4,4) global
    joint transforms; obj_R (3,3), obj_t (3,): object frame (the centred mesh) -> hand frame;
    stats: penetration_mm (deepest hand vertex inside the object, 0 if none), gap_mm
    (distance from the hand to the object when they do not touch, else 0), fingers_in_contact.
    """

    finger_pose: np.ndarray
    verts: np.ndarray
    keypoints: np.ndarray
    transforms: np.ndarray
    obj_R: np.ndarray
    obj_t: np.ndarray
    stats: dict = field(default_factory=dict)


class GraspBuilder:
    """Builds grasps for one hand model; see the module docstring for the procedure.

    Everything it learns about the hand (palm frame, flexion axes, which vertices follow which
    finger) comes from forward kinematics of the model itself, so it works the same for the
    procedural hand and for MANO.
    """

    ALPHAS = np.linspace(0.0, 1.0, 11)

    def __init__(self, hand) -> None:
        self.hand = hand
        self.faces = hand_faces(hand)
        rest = self.fk(np.zeros((1, 45)))
        self.rest_verts = rest[0][0]
        kp = rest[1][0]
        joints = rest[3][0]
        wrist, index, middle, ring, little = kp[0], kp[5], kp[9], kp[13], kp[17]
        # palm normal pointing to the palm side (right hand: index x little from the wrist)
        self.normal = _unit(np.cross(index - wrist, little - wrist))
        self.along = _unit(middle - wrist - np.dot(middle - wrist, self.normal) * self.normal)
        self.palm_centre = 0.45 * wrist + 0.55 * (index + middle + ring + little) / 4.0
        # bone directions at rest, MANO joint order; the child of a last joint is its tip
        from gsdf_data.hand import PARENTS

        child = {p: j for j, p in enumerate(PARENTS) if p > 0}
        tips = {15: kp[4], 3: kp[8], 6: kp[12], 12: kp[16], 9: kp[20]}
        bones = np.tile(self.along, (16, 1))
        for j in range(1, 16):
            end = joints[child[j]] if j in child else tips[j]
            bones[j] = _unit(end - joints[j])
        self.flex_axes = _unit(np.cross(bones, self.normal[None]))
        self.flex_axes[0] = 0.0
        target = self.palm_centre + 0.06 * self.normal
        self.thumb_axis = _unit(np.cross(bones[13], _unit(target - joints[13])))
        # which finger moves each vertex (-1: palm), from closing one finger at a time
        probe = np.zeros((5, 45))
        for f, chain in enumerate(self.CHAINS):
            for j in chain:
                probe[f, 3 * (j - 1) : 3 * j] = 1.2 * self.flex_axes[j]
        moved = np.linalg.norm(self.fk(probe)[0] - self.rest_verts[None], axis=-1)
        self.vertex_finger = np.where(moved.max(0) > 1e-4, moved.argmax(0), -1)
        # every other finger vertex: what the closing search looks at
        self._finger_subset = np.nonzero(self.vertex_finger >= 0)[0][::2]

    # fingers as MANO joint chains, in tip order: thumb, index, middle, ring, little
    CHAINS = ((13, 14, 15), (1, 2, 3), (4, 5, 6), (10, 11, 12), (7, 8, 9))

    def fk(self, finger_pose: np.ndarray):
        """finger_pose (B,45) -> vertices (B,V,3), keypoints (B,21,3), transforms (B,16,4,4),
        joints (B,16,3), numpy float64, rest frame."""
        import torch

        fp = torch.as_tensor(np.asarray(finger_pose), dtype=torch.float32)
        with torch.no_grad():
            out = self.hand(global_orient=torch.zeros(len(fp), 3), finger_pose=fp)

        def np_(x):
            return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, np.float64)

        return np_(out.vertices), np_(out.keypoints), np_(out.transforms), np_(out.joints)

    def sample_pose(self, rng: np.random.Generator) -> np.ndarray:
        """A grasp-like finger pose (45,): each finger curled (MCP, PIP, DIP about their
        flexion axes, a little spread), the thumb turned towards the palm."""
        pose = np.zeros((16, 3))
        for f, (a, b, c) in enumerate(self.CHAINS):
            if f == 0:
                pose[a] = self.thumb_axis * rng.uniform(0.5, 0.9)
                pose[b] = self.flex_axes[b] * rng.uniform(0.2, 0.6)
                pose[c] = self.flex_axes[c] * rng.uniform(0.3, 0.8)
                continue
            curl = rng.uniform(0.75, 1.05)
            pose[a] = self.flex_axes[a] * curl * rng.uniform(1.1, 1.4)
            pose[a] += self.normal * rng.uniform(-0.08, 0.08)
            pose[b] = self.flex_axes[b] * curl * rng.uniform(1.4, 1.7)
            pose[c] = self.flex_axes[c] * curl * rng.uniform(0.8, 1.1)
        return pose[1:].reshape(45)

    def grasp(self, obj: ObjectInstance, rng: np.random.Generator, touch_mm: float, n: int):
        """The best of up to `n` grasp candidates of `obj` (one finger pose, several object
        orientations and offsets; see the module docstring)."""
        from gsdf_data.sdf import MeshSDF

        sdf = MeshSDF.from_mesh(obj.mesh, sign="parity")
        pose = self.sample_pose(rng)
        levels = self.fk(self.ALPHAS[:, None] * pose[None])[0]  # (n_alpha, V, 3)
        touch = touch_mm / 1000.0
        best, best_score = None, -np.inf
        for _ in range(n):
            R = random_rotation(rng)
            lateral = self.along * rng.uniform(0.0, 0.035)
            lateral += _unit(np.cross(self.normal, self.along)) * rng.uniform(-0.012, 0.012)
            t = self._touch_palm(sdf, R, self.palm_centre + lateral)
            cand = self._close(sdf, levels, R, t, touch)
            s = cand["stats"]
            score = s["fingers_in_contact"] - 0.5 * s["penetration_mm"] - 0.5 * s["gap_mm"]
            if score > best_score:
                best, best_score = cand, score
            if s["fingers_in_contact"] >= 3 and s["penetration_mm"] <= touch_mm + 0.5:
                break  # good enough: most candidates are
        final = pose.reshape(15, 3).copy()
        for f, chain in enumerate(self.CHAINS):
            for j in chain:
                final[j - 1] *= best["alpha"][f]
        final = final.reshape(45)
        v, kp, tr, _ = self.fk(final[None])
        R, t = best["R"], best["t"]
        stats = self._stats(sdf, v[0], R, t, touch)
        return Grasp(final, v[0], kp[0], tr[0], R, t, stats)

    def _touch_palm(self, sdf, R: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Object translation t (3,): the object (rotation R) moved from `start` along the palm
        normal until the open hand's vertices are 0.5 mm outside its surface."""
        v = self.rest_verts[::3]  # a third of the vertices: enough to find the surface
        # conservative advance (the SDF is 1-Lipschitz): moving by the missing clearance
        # never overshoots, and converges in a few steps
        d = 0.0
        for _ in range(30):
            t = start + d * self.normal
            step = 0.0005 - float(sdf.signed_distance((v - t) @ R).min())
            if step <= 1e-5:
                break
            d += step + 1e-5
        return start + d * self.normal

    def _close(self, sdf, levels: np.ndarray, R: np.ndarray, t: np.ndarray, touch: float) -> dict:
        """Close every finger along α·pose (levels: (n_alpha, V, 3) vertices per α) until it
        touches the object; fingers are independent chains, so each picks its own α."""
        A = self.ALPHAS
        idx = self._finger_subset
        d = sdf.signed_distance(((levels[:, idx] - t) @ R).reshape(-1, 3)).reshape(len(A), -1)
        k_of = np.zeros(5, int)
        for f in range(5):
            depth = -d[:, self.vertex_finger[idx] == f].min(axis=1)  # deepest vertex per α
            over = np.nonzero(depth > touch)[0]
            k_of[f] = len(A) - 1 if len(over) == 0 else max(int(over[0]) - 1, 0)
        level = np.where(self.vertex_finger >= 0, k_of[np.maximum(self.vertex_finger, 0)], 0)
        verts = levels[level, np.arange(levels.shape[1])]
        return {"alpha": A[k_of], "R": R, "t": t, "stats": self._stats(sdf, verts, R, t, touch)}

    def _stats(self, sdf, verts: np.ndarray, R: np.ndarray, t: np.ndarray, touch: float) -> dict:
        """Penetration depth and gap (mm) of hand vertices (V,3) against the object placed
        by (R, t), and the number of fingers within `touch` of its surface."""
        dist = sdf.signed_distance((verts - t) @ R)
        fingers = sum(
            bool(dist[self.vertex_finger == f].min() < touch)
            for f in range(5)
            if (self.vertex_finger == f).any()
        )
        return {
            "penetration_mm": float(max(0.0, -dist.min()) * 1000.0),
            "gap_mm": float(max(0.0, dist.min()) * 1000.0),
            "fingers_in_contact": int(fingers),
        }


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


def _background(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
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


def _render_mesh(verts: np.ndarray, faces: np.ndarray, smooth_angle: float | None = None):
    import trimesh

    mesh = trimesh.Trimesh(verts, faces, process=False)
    if smooth_angle is not None:
        mesh = trimesh.graph.smooth_shade(mesh, angle=np.radians(smooth_angle))
    return mesh


def _placement(points: np.ndarray, rng: np.random.Generator, K: np.ndarray):
    """Depth and image-plane offsets for a pair whose points (N,3) (centred) span a sphere:
    returns (radius, z, max lateral offset in metres) so the sphere stays in the image."""
    radius = float(np.linalg.norm(points, axis=1).max())
    fill = rng.uniform(0.62, 0.85)
    f = float(K[0, 0])
    z = f * radius / (fill * SIZE / 2)
    margin_px = SIZE / 2 * (0.97 - fill)
    return radius, z, margin_px * z / f


def make_sequence(
    config: SynthConfig,
    index: int,
    builder: GraspBuilder,
    library,
    renderer,
    layers: bool = True,
):
    """Sequence `index` of `config`: a grasp, T frames with their renders. Deterministic in
    (config, index). layers: also render the hand and the object alone (ObMan's depth and
    segmentation layers; not needed for shards), else those depths are None."""
    from scipy.spatial.transform import Rotation, Slerp

    rng = np.random.default_rng([config.seed, index])
    obj = library.sample(rng)
    grasp = builder.grasp(obj, rng, config.touch_mm, config.candidates)
    T = config.seq_len
    K = OBMAN_K
    # pair centre in the hand frame: centre of the union of hand and object vertices
    obj_v = np.asarray(obj.mesh.vertices) @ grasp.obj_R.T + grasp.obj_t
    allv = np.concatenate([grasp.verts, obj_v])
    centre = 0.5 * (allv.min(0) + allv.max(0))
    _, z, lat = _placement(allv - centre, rng, K)
    R0 = random_rotation(rng)
    axis = _unit(rng.normal(size=3))
    R1 = Rotation.from_rotvec(axis * np.radians(rng.uniform(0.3, 1.0) * config.max_rotation_deg))
    rots = Slerp(
        [0.0, 1.0],
        Rotation.from_matrix(np.stack([R0, (R1 * Rotation.from_matrix(R0)).as_matrix()])),
    )
    p0 = np.append(rng.uniform(-lat, lat, 2), z)
    p1 = np.append(rng.uniform(-lat, lat, 2), z * rng.uniform(0.97, 1.03))
    skin = np.clip(SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1), 0, 1)
    obj_rgb = rng.uniform(0.05, 0.95, 3)
    light = rng.uniform(1.5, 4.5)
    ambient = rng.uniform(0.15, 0.45)
    bg = _background(rng)
    faces = builder.faces
    obj_faces = np.asarray(obj.mesh.faces)
    frames = []
    for k in range(T):
        s = 0.0 if T == 1 else k / (T - 1)
        e = 0.5 - 0.5 * np.cos(np.pi * s)  # ease in and out
        R = rots([e]).as_matrix()[0]
        p = (1 - e) * p0 + e * p1
        t = p - R @ centre  # hand frame point x -> R x + t; the pair centre lands at p
        hv = grasp.verts @ R.T + t
        kp = grasp.keypoints @ R.T + t
        ov = obj_v @ R.T + t
        obj_pose = np.eye(4)
        obj_pose[:3, :3] = R @ grasp.obj_R
        obj_pose[:3, 3] = R @ grasp.obj_t + t
        rot_global = grasp.transforms[:, :3, :3]
        rotmats = _local_from_global(rot_global)
        rotmats[0] = R @ rotmats[0]
        renderer.light_intensity, renderer.ambient = light, ambient
        hand_m = _render_mesh(hv, faces)
        obj_m = _render_mesh(ov, obj_faces, smooth_angle=30.0)
        rgb, depth = renderer.render([(hand_m, (*skin, 1.0)), (obj_m, (*obj_rgb, 1.0))], K)
        hd = od = None
        if layers:
            _, hd = renderer.render([(hand_m, (*skin, 1.0))], K)
            _, od = renderer.render([(obj_m, (*obj_rgb, 1.0))], K)
        fg = depth > 0
        rgb = np.where(fg[..., None], rgb, bg)
        frames.append(Frame(rgb, depth, hd, od, hv, kp, rotmats, R, t, obj_pose, ov))
    return Sequence(index, obj, grasp, frames, faces)


def _local_from_global(G: np.ndarray) -> np.ndarray:
    """Local rotations (16,3,3) from global joint rotations (16,3,3) on MANO's tree."""
    from gsdf_data.hand import PARENTS

    out = np.empty_like(G)
    for j, p in enumerate(PARENTS):
        out[j] = G[j] if p < 0 else G[p].T @ G[j]
    return out


# ----------------------------------------------------------------------------- workers


@functools.lru_cache(maxsize=2)
def _builder(spec: HandSpec) -> GraspBuilder:
    return GraspBuilder(spec.load())


@functools.lru_cache(maxsize=2)
def _library(option: str) -> ObjectLibrary:
    return ObjectLibrary.from_option(option)


@functools.lru_cache(maxsize=1)
def _renderer():
    from gsdf_data.render import Renderer

    return Renderer(SIZE, SIZE, bg_color=(0.0, 0.0, 0.0))


@functools.lru_cache(maxsize=4)
def cached_sequence(config: SynthConfig, index: int, layers: bool = True) -> Sequence:
    """`make_sequence` with this process's hand model, object library and GL context."""
    return make_sequence(
        config, index, _builder(config.hand_spec()), _library(config.objects), _renderer(), layers
    )


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    import cv2

    ok, buf = cv2.imencode(
        ".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def sample_name(config: SynthConfig, seq: int, frame: int) -> str:
    """ObMan-style file name of a frame: 8 digits, numbered across both splits (so each
    split's ids are not contiguous, as in ObMan)."""
    return f"{seq * config.seq_len + frame:08d}"


def write_sequence(config: SynthConfig, index: int, out: Path) -> dict:
    """Render sequence `index` and write its frames in the ObMan layout under `out`
    (`<split>/{rgb,depth,segm,meta}`, objects under `shapenet/`). Returns its statistics."""
    import cv2

    seq = cached_sequence(config, index)
    split = config.split_of(index)
    base = out / split
    for d in ("rgb", "depth", "segm", "meta"):
        (base / d).mkdir(parents=True, exist_ok=True)
    obj_file, scale = write_shapenet_model(seq.obj, out / "shapenet")
    flip4 = np.eye(4)
    flip4[:3, :3] = CAM_FLIP
    for k, fr in enumerate(seq.frames):
        name = sample_name(config, index, k)
        atomic_write_bytes(base / "rgb" / f"{name}.jpg", encode_jpeg(fr.rgb))
        layers = [encode_depth(d) for d in (fr.depth, fr.hand_depth, fr.obj_depth)]
        png = np.stack([lay[0] for lay in layers], axis=-1)
        atomic_write_bytes(base / "depth" / f"{name}.png", cv2.imencode(".png", png)[1].tobytes())
        # segmentation as ObMan: 22 right hand, 100 object, on the visible surface
        vis_hand = (fr.hand_depth > 0) & (np.abs(fr.hand_depth - fr.depth) < 1e-4)
        vis_obj = (fr.obj_depth > 0) & (np.abs(fr.obj_depth - fr.depth) < 1e-4) & ~vis_hand
        seg = np.zeros(fr.depth.shape, np.uint8)
        seg[vis_hand], seg[vis_obj] = 22, 100
        segm = np.stack(
            [seg, np.where(fr.hand_depth > 0, 22, 0), np.where(fr.obj_depth > 0, 100, 0)], -1
        )
        atomic_write_bytes(
            base / "segm" / f"{name}.png", cv2.imencode(".png", segm.astype(np.uint8))[1].tobytes()
        )
        affine = np.eye(4)
        affine[:3, :3] = fr.obj_pose[:3, :3] * scale
        affine[:3, 3] = fr.obj_pose[:3, 3]
        kp2d = fr.keypoints @ OBMAN_K.T
        global_rot = CAM_FLIP @ fr.rotmats[0]
        from scipy.spatial.transform import Rotation

        hand_pose = np.concatenate(
            [Rotation.from_matrix(global_rot).as_rotvec(), seq.grasp.finger_pose]
        )
        meta = {
            "coords_3d": (fr.keypoints @ CAM_FLIP.T).astype(np.float32),
            "coords_2d": (kp2d[:, :2] / kp2d[:, 2:3]).astype(np.float32),
            "verts_3d": (fr.hand_verts @ CAM_FLIP.T).astype(np.float32),
            "hand_pose": hand_pose.astype(np.float32),
            "pca_pose": seq.grasp.finger_pose.astype(np.float32),
            "shape": np.zeros(10, np.float32),
            "trans": (CAM_FLIP @ fr.hand_t).astype(np.float32),
            "side": "right",
            "affine_transform": (flip4 @ affine).astype(np.float32),
            "obj_path": "/data/ShapeNetCore.v2/" + str(obj_file.relative_to(out / "shapenet")),
            "class_id": seq.obj.category,
            "sample_id": seq.obj.instance_id,
            "obj_scale": np.float32(scale),
            "depth_min": layers[0][1],
            "depth_max": layers[0][2],
            "hand_depth_min": layers[1][1],
            "hand_depth_max": layers[1][2],
            "obj_depth_min": layers[2][1],
            "obj_depth_max": layers[2][2],
            "seq_id": f"synth{index:06d}",
            "frame_idx": k,
            "hand_model": "mano" if config.mano else "procedural",
            **{f"grasp_{key}": val for key, val in seq.grasp.stats.items()},
        }
        atomic_write_bytes(base / "meta" / f"{name}.pkl", pickle.dumps(meta, protocol=2))
    return {
        "index": index,
        "split": split,
        "category": seq.obj.category,
        "source": seq.obj.source,
        **seq.grasp.stats,
    }


# ----------------------------------------------------------------------------- datasets


def _write_chunk(config: SynthConfig, indices: list[int], out: str) -> list[dict]:
    return [write_sequence(config, i, Path(out)) for i in indices]


def _chunks(n: int, jobs: int) -> list[list[int]]:
    """Sequence indices cut into contiguous chunks, a few per job (a chunk shares one GL
    context and hand model)."""
    k = max(1, min(n, jobs * 4))
    bounds = np.linspace(0, n, k + 1).astype(int)
    return [list(range(a, b)) for a, b in itertools.pairwise(bounds) if b > a]


def penetration_summary(stats: list[dict], touch_mm: float) -> dict:
    """Grasp statistics over sequences: penetration depth (deepest hand vertex inside the
    object) and hand-object gap in mm, fingers in contact, share of grasps in contact."""
    if not stats:
        return {"grasps": 0}
    pen = np.array([s["penetration_mm"] for s in stats])
    gap = np.array([s["gap_mm"] for s in stats])
    fingers = np.array([s["fingers_in_contact"] for s in stats])
    return {
        "grasps": len(stats),
        "penetration_mm": {
            "mean": round(float(pen.mean()), 3),
            "median": round(float(np.median(pen)), 3),
            "p95": round(float(np.percentile(pen, 95)), 3),
            "max": round(float(pen.max()), 3),
        },
        "gap_mm": {"mean": round(float(gap.mean()), 3), "max": round(float(gap.max()), 3)},
        "in_contact_fraction": round(float(np.mean(gap <= touch_mm)), 4),
        "fingers_in_contact_mean": round(float(fingers.mean()), 3),
    }


def write_dataset(
    config: SynthConfig, out: str | Path, jobs: int = 1, progress: bool = True
) -> dict:
    """Generate the dataset in the ObMan layout under `out` (`train/`, `test/`, `shapenet/`)
    and write `synth_summary.json` beside it. Returns the summary. Re-running with the same
    configuration rewrites identical files."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

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


def dataset_summary(config: SynthConfig, stats: list[dict]) -> dict:
    """The JSON summary of a synthetic dataset (no timings, so equal seeds give equal files)."""
    from collections import Counter

    splits = Counter(s["split"] for s in stats)
    return {
        "config": asdict(config),
        "frames": {k: v * config.seq_len for k, v in sorted(splits.items())},
        "sequences": dict(sorted(splits.items())),
        "seq_len": config.seq_len,
        "objects": dict(sorted(Counter(f"{s['source']}/{s['category']}" for s in stats).items())),
        "grasp": penetration_summary(stats, config.touch_mm),
    }


def format_summary(summary: dict) -> str:
    """Human-readable lines of `dataset_summary`."""
    g = summary["grasp"]
    frames = ", ".join(f"{k} {v}" for k, v in summary["frames"].items())
    text = (
        f"frames: {frames} (sequences of {summary['seq_len']})\n"
        f"objects: {', '.join(f'{k} {v}' for k, v in summary['objects'].items())}"
    )
    if not g["grasps"]:
        return text
    p = g["penetration_mm"]
    return text + (
        f"\ngrasps: {g['grasps']}, in contact {100 * g['in_contact_fraction']:.1f} %, "
        f"fingers touching {g['fingers_in_contact_mean']:.2f} on average; penetration depth "
        f"mean {p['mean']:.2f} mm, median {p['median']:.2f}, p95 {p['p95']:.2f}, max {p['max']:.2f}"
    )


@dataclass(frozen=True)
class SynthTask:
    """Frame `frame` of sequence `seq` as a `prepare_pairs` task (straight to shards)."""

    sample_id: str
    config: SynthConfig
    seq: int
    frame: int
    stats_dir: str | None = None

    def load(self):
        s = cached_sequence(self.config, self.seq, False)
        fr = s.frames[self.frame]
        if self.stats_dir is not None and self.frame == 0:
            stats = {"index": self.seq, "split": self.config.split_of(self.seq),
                     "category": s.obj.category, "source": s.obj.source, **s.grasp.stats}  # fmt: skip
            atomic_write_bytes(
                Path(self.stats_dir) / f"{self.seq:06d}.json", json.dumps(stats).encode()
            )
        return make_pair(
            sample_id=self.sample_id,
            hand_verts=fr.hand_verts,
            hand_faces=s.hand_faces,
            obj_verts=fr.obj_verts,
            obj_faces=np.asarray(s.obj.mesh.faces),
            image=encode_jpeg(fr.rgb),
            K=OBMAN_K,
            joints=fr.keypoints,
            hand_rotmats=fr.rotmats,
            obj_center=fr.obj_pose[:3, 3],
            obj_pose=fr.obj_pose,
            seq_id=f"synth{self.seq:06d}",
            frame_idx=self.frame,
            obj_frame=fr.obj_pose,
        )


def synth_tasks(config: SynthConfig, stats_dir: str | None = None) -> dict[str, list[SynthTask]]:
    """`prepare_pairs` tasks per split ("train", "test"), frames of a sequence in order (so a
    worker renders each sequence once). With `stats_dir`, each sequence's grasp statistics
    are written there as JSON when its first frame is loaded."""
    out: dict[str, list[SynthTask]] = {"train": [], "test": []}
    for i in range(config.n_sequences):
        for k in range(config.seq_len):
            task = SynthTask(sample_name(config, i, k), config, i, k, stats_dir)
            out[config.split_of(i)].append(task)
    return out


def write_shards(config: SynthConfig, out: str | Path, jobs: int = 1, prepare_config=None) -> dict:
    """Generate the dataset straight into shards, `out/shards/{train,test}`, through
    `prepare_pairs` (rendering, SDF sampling and writing in the same workers), and write
    `out/synth_summary.json`. Returns the summary (as `write_dataset`). The default
    configuration skips the double-sided filter: every synthetic object is a closed mesh by
    construction (checked when it is made)."""
    import shutil

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


def preview(config: SynthConfig, path: str | Path, n: int = 8, cols: int | None = None) -> Path:
    """Tile the first `n` frames (one per sequence) with their projected joints into a PNG
    (`cols` tiles per row; default 4, or 3 when that fills the rows)."""
    import cv2

    if cols is None:
        cols = 3 if n % 4 and n % 3 == 0 else 4
    tiles = []
    for i in range(n):
        s = cached_sequence(config, i, False)
        fr = s.frames[0]
        img = np.ascontiguousarray(fr.rgb[..., ::-1])
        uv = fr.keypoints @ OBMAN_K.T
        pix = [tuple(int(c) for c in p) for p in np.rint(uv[:, :2] / uv[:, 2:3])]
        colours = [(0, 0, 255), (0, 165, 255), (0, 255, 0), (255, 128, 0), (255, 0, 255)]
        for a, b in SKELETON:
            col = colours[(b - 1) // 4]
            cv2.line(img, tuple(pix[a]), tuple(pix[b]), col, 1, cv2.LINE_AA)
        for j in range(21):
            col = (255, 255, 255) if j == 0 else colours[(j - 1) // 4]
            cv2.circle(img, tuple(pix[j]), 2, col, -1, cv2.LINE_AA)
        tiles.append(img)
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r : r + cols], axis=1) for r in range(0, len(tiles), cols)]
    grid = np.concatenate(rows, axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), grid, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path
