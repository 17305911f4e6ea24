"""Grasp building: a hand model placed around an object, in the hand's rest frame.

1. a grasp-like finger pose P is drawn from the hand module (`sample_poses`, style "curl":
   per-finger curl about each bone's flexion axis, the thumb turned towards the palm), and an
   object with a random orientation;
2. the object is pushed along the palm normal until it touches the open hand's palm
   (conservative steps on the object's signed distance at the hand vertices);
3. each finger closes along α·P, α from 0 to 1, and stops at the last step before its
   vertices go deeper than `touch_mm` into the object (the object's SDF again), so fingers
   rest on the surface instead of passing through it;
4. candidates (object orientation, offsets) are scored by fingers in contact and penetration
   depth; the best one is kept, with its statistics (deepest hand vertex inside the object,
   gap, fingers in contact).

Axes, poses and forward kinematics are the hand module's (`gsdf_data.hand`); this module owns
only where the object goes and how far each finger closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from gsdf_data.datasets.common import hand_faces
from gsdf_data.datasets.objects import ObjectInstance
from gsdf_data.hand.base import HandOutput
from gsdf_data.hand.kinematics import FINGER_ROOTS, PARENTS, from_paper_order
from gsdf_data.hand.poses import joint_axes, palm_frame, sample_poses


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random rotation (3,3)."""
    from scipy.spatial.transform import Rotation

    q = rng.normal(size=4)
    return Rotation.from_quat(q / np.linalg.norm(q)).as_matrix()


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


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

    def local_rotmats(self) -> np.ndarray:
        """Local joint rotations (16,3,3) on MANO's tree, from the global ones."""
        G = self.transforms[:, :3, :3]
        out = np.empty_like(G)
        for j, p in enumerate(PARENTS):
            out[j] = G[j] if p < 0 else G[p].T @ G[j]
        return out


class GraspBuilder:
    """Builds grasps for one hand model; see the module docstring for the procedure.

    Everything it knows about the hand (palm frame, flexion axes, which vertices follow which
    finger) comes from the model's rest pose through the hand module, so it works the same
    for the procedural hand and for MANO.
    """

    ALPHAS = np.linspace(0.0, 1.0, 11)
    # fingers as MANO joint chains, in tip order: thumb, index, middle, ring, little
    CHAINS = tuple((r, r + 1, r + 2) for r in FINGER_ROOTS)

    def __init__(self, hand) -> None:
        self.hand = hand
        self.faces = hand_faces(hand)
        rest = self.fk(np.zeros((1, 45)))
        self.rest_verts = rest.vertices[0]
        self.rest_mano21 = from_paper_order(rest.keypoints[0])
        palm = palm_frame(self.rest_mano21, hand.side)
        self.normal, self.along, self.palm_centre = palm
        # which finger moves each vertex (-1: palm), from closing one finger at a time (any
        # bending axes would do; these curl every joint towards the palm normal)
        flex = joint_axes(self.rest_mano21, hand.side, towards=self.normal)[0]
        probe = np.zeros((5, 45))
        for f, chain in enumerate(self.CHAINS):
            for j in chain:
                probe[f, 3 * (j - 1) : 3 * j] = 1.2 * flex[j]
        moved = np.linalg.norm(self.fk(probe).vertices - self.rest_verts[None], axis=-1)
        self.vertex_finger = np.where(moved.max(0) > 1e-4, moved.argmax(0), -1)
        # every other finger vertex: what the closing search looks at
        self._finger_subset = np.nonzero(self.vertex_finger >= 0)[0][::2]

    def fk(self, finger_pose: np.ndarray):
        """The hand model's forward kinematics in the rest frame: finger_pose (B,45) ->
        `HandOutput` of float64 NumPy arrays (vertices (B,V,3), keypoints (B,21,3),
        transforms (B,16,4,4), joints (B,16,3))."""
        out = self.hand.forward_numpy(
            global_orient=np.zeros((len(finger_pose), 3)), finger_pose=finger_pose
        )
        return HandOutput(*(np.asarray(getattr(out, f.name), np.float64) for f in fields(out)))

    def sample_pose(self, rng: np.random.Generator) -> np.ndarray:
        """A grasp-like finger pose (45,): the hand module's "curl" style, in float64 (the
        closing factors α scale it before the model casts it to its own dtype)."""
        side = self.hand.side
        return sample_poses(
            1, rng, rest_mano21=self.rest_mano21, side=side, style="curl", dtype=np.float64
        )[0]

    def grasp(self, obj: ObjectInstance, rng: np.random.Generator, touch_mm: float, n: int):
        """The best of up to `n` grasp candidates of `obj` (one finger pose, several object
        orientations and offsets; see the module docstring)."""
        from gsdf_data.sdf import MeshSDF

        sdf = MeshSDF.from_mesh(obj.mesh, sign="parity")
        pose = self.sample_pose(rng)
        levels = self.fk(self.ALPHAS[:, None] * pose[None]).vertices  # (n_alpha, V, 3)
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
        out = self.fk(final[None])
        v, kp, tr = out.vertices[0], out.keypoints[0], out.transforms[0]
        R, t = best["R"], best["t"]
        stats = self._stats(sdf, v, R, t, touch)
        return Grasp(final, v, kp, tr, R, t, stats)

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
