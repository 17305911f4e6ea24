"""`HandModel`: the one interface behind MANO and the procedural hand.

A hand model is a skinned template on MANO's 16-joint tree (see `kinematics`): rest vertices,
optional shape and pose blend shapes, skinning weights, rest joints, and 5 fingertips (mesh
vertices for MANO, points rigidly attached to the last finger joint for the procedural hand).
Batched torch; the model is an `nn.Module` whose tensors are non-persistent buffers, so
`.to(device)` moves it and it never lands in a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from gsdf_data.hand.kinematics import (
    TIP_PARENTS,
    IKResult,
    axis_angle_to_rotmat,
    forward_kinematics,
    inverse_kinematics,
    lbs,
    to_paper_order,
)

# The reflection that turns a right hand into a left one (x -> -x, MANO's left/right
# relation), on an axis-angle vector: (x, y, z) -> (x, -y, -z).
MIRROR_AA = np.array([1.0, -1.0, -1.0])


@dataclass
class HandOutput:
    """vertices (B, V, 3) (possibly a non-contiguous view, see `kinematics.lbs`; None with
    skin=False); joints (B, 16, 3) MANO order; transforms (B, 16, 4, 4) global
    joint transforms (rotation = global joint rotation, translation = joint position);
    keypoints (B, 21, 3) paper order. Tensors, or NumPy arrays from `forward_numpy`."""

    vertices: torch.Tensor
    joints: torch.Tensor
    transforms: torch.Tensor
    keypoints: torch.Tensor

    def numpy(self) -> HandOutput:
        def conv(x):
            return None if x is None else x.detach().cpu().numpy()

        return HandOutput(*(conv(getattr(self, f.name)) for f in fields(self)))


class HandModel(torch.nn.Module):
    """Skinned hand on MANO's tree.

    Arrays (NumPy, rest pose, metres): v_template (V, 3); faces (F, 3) closed at the wrist;
    faces_open (F', 3); weights (V, 16); joints (16, 3); shapedirs (V, 3, S) or None;
    joint_shapedirs (16, 3, S) or None; posedirs (P, V*3) or None over the pose feature
    (R_j - I) of joints 1..15 (P = 135); tip_vertex_ids (5,) or tips (5, 3) rest fingertips
    (thumb, index, middle, ring, little) with tip_shapedirs (5, 3, S); hands_components
    (45, 45) and hands_mean (45,) for PCA poses.
    """

    name = "hand"

    def __init__(
        self,
        v_template: np.ndarray,
        faces: np.ndarray,
        faces_open: np.ndarray,
        weights: np.ndarray,
        joints: np.ndarray,
        *,
        shapedirs: np.ndarray | None = None,
        joint_shapedirs: np.ndarray | None = None,
        posedirs: np.ndarray | None = None,
        tip_vertex_ids: np.ndarray | None = None,
        tips: np.ndarray | None = None,
        tip_shapedirs: np.ndarray | None = None,
        hands_components: np.ndarray | None = None,
        hands_mean: np.ndarray | None = None,
        side: str = "right",
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if (tip_vertex_ids is None) == (tips is None):
            raise ValueError("give exactly one of tip_vertex_ids and tips")
        V = len(v_template)
        self.side = side
        self.faces = np.ascontiguousarray(faces, dtype=np.int64)
        self.faces_open = np.ascontiguousarray(faces_open, dtype=np.int64)
        S = 0 if shapedirs is None else shapedirs.shape[-1]
        self.num_betas = S

        def buf(name: str, value, kind=dtype) -> None:
            t = None if value is None else torch.tensor(np.asarray(value), dtype=kind)
            self.register_buffer(name, t if t is None else t.to(device), persistent=False)

        buf("v_template", v_template)
        buf("weights", weights)
        buf("joints_template", joints)
        buf("shapedirs", shapedirs)
        buf("joint_shapedirs", joint_shapedirs)
        buf("posedirs", posedirs)
        buf("tips_template", tips)
        buf("tip_shapedirs", tip_shapedirs)
        buf("hands_components", hands_components)
        buf("hands_mean", np.zeros(45) if hands_mean is None else hands_mean)
        self.tip_vertex_ids = (
            None if tip_vertex_ids is None else np.asarray(tip_vertex_ids, dtype=np.int64)
        )
        if self.tip_vertex_ids is not None and (
            self.tip_vertex_ids.shape != (5,) or self.tip_vertex_ids.max() >= V
        ):
            raise ValueError(
                f"tip vertex ids {self.tip_vertex_ids.tolist()} invalid for {V} vertices"
            )

    # ---------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.v_template.device

    @property
    def dtype(self) -> torch.dtype:
        return self.v_template.dtype

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    # ---------------------------------------------------------------- forward
    def pose_to_rotmats(
        self,
        global_orient: torch.Tensor | None = None,
        finger_pose: torch.Tensor | None = None,
        pca_coeffs: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Axis-angle / PCA pose -> local rotations (B, 16, 3, 3).

        global_orient (B, 3); finger_pose (B, 45) axis-angle of joints 1..15, or pca_coeffs
        (B, n) on the first n rows of hands_components. The model's hands_mean (zero for a
        flat-hand-mean model) is added to the finger pose either way, as smplx and manopth do.
        """
        if finger_pose is not None and pca_coeffs is not None:
            raise ValueError("give finger_pose or pca_coeffs, not both")
        given = [x for x in (global_orient, finger_pose, pca_coeffs) if x is not None]
        B = given[0].shape[0] if given else (batch_size or 1)
        kw = {"dtype": self.dtype, "device": self.device}
        if pca_coeffs is not None:
            if self.hands_components is None:
                raise ValueError(f"{self.name} has no PCA pose space; pass finger_pose")
            pca_coeffs = torch.as_tensor(pca_coeffs, **kw)
            n = pca_coeffs.shape[-1]
            if n > self.hands_components.shape[0]:
                raise ValueError(
                    f"{n} PCA coefficients, the model has {self.hands_components.shape[0]}"
                )
            finger_pose = pca_coeffs @ self.hands_components[:n]
        finger_pose = (
            torch.zeros(B, 45, **kw) if finger_pose is None else torch.as_tensor(finger_pose, **kw)
        )
        finger_pose = finger_pose + self.hands_mean
        go = (
            torch.zeros(B, 3, **kw)
            if global_orient is None
            else torch.as_tensor(global_orient, **kw)
        )
        aa = torch.cat([go[:, None], finger_pose.reshape(B, 15, 3)], dim=1)
        return axis_angle_to_rotmat(aa)

    def forward(
        self,
        global_orient: torch.Tensor | None = None,
        finger_pose: torch.Tensor | None = None,
        pca_coeffs: torch.Tensor | None = None,
        betas: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
    ) -> HandOutput:
        """Pose the hand: see `pose_to_rotmats` for the pose arguments; betas (B, S) or None;
        transl (B, 3) or None, added to everything (the wrist joint sits at transl + its
        rest position)."""
        B = next((x.shape[0] for x in (global_orient, finger_pose, pca_coeffs, betas, transl)
                  if x is not None), 1)  # fmt: skip
        rotmats = self.pose_to_rotmats(global_orient, finger_pose, pca_coeffs, batch_size=B)
        return self.forward_rotmats(rotmats, betas=betas, transl=transl)

    def shaped(self, betas: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, ...]:
        """Rest vertices (B, V, 3), joints (B, 16, 3) and tips (B, 5, 3) or None for betas
        (without betas: the unbatched (V, 3), (16, 3), (5, 3) templates)."""
        v, J, tips = self.v_template, self.joints_template, self.tips_template
        if betas is not None and self.num_betas:
            v = v.expand(batch, -1, -1)
            J = J.expand(batch, -1, -1)
            tips = None if tips is None else tips.expand(batch, -1, -1)
            betas = torch.as_tensor(betas, dtype=self.dtype, device=self.device)
            n = min(betas.shape[-1], self.num_betas)
            b = betas[:, :n]
            v = v + torch.einsum("vcs,bs->bvc", self.shapedirs[..., :n], b)
            J = J + torch.einsum("jcs,bs->bjc", self.joint_shapedirs[..., :n], b)
            if tips is not None:
                tips = tips + torch.einsum("jcs,bs->bjc", self.tip_shapedirs[..., :n], b)
        return v, J, tips

    def forward_rotmats(
        self,
        rotmats: torch.Tensor,
        betas: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
        skin: bool = True,
    ) -> HandOutput:
        """rotmats (B, 16, 3, 3) local rotations (0 = global) -> `HandOutput`.

        skin=False skips the mesh (vertices None; fingertip vertices are still skinned):
        joints, transforms and keypoints only, much cheaper for IK and pose losses.
        """
        rotmats = torch.as_tensor(rotmats, dtype=self.dtype, device=self.device)
        B = rotmats.shape[0]
        v, J, tips = self.shaped(betas, B)
        ids = self.tip_vertex_ids
        if not skin and ids is not None:  # only the fingertip vertices are needed
            v = v[..., ids, :]
        if self.posedirs is not None and (skin or ids is not None):
            eye = torch.eye(3, dtype=self.dtype, device=self.device)
            feature = (rotmats[:, 1:] - eye).reshape(B, -1)
            P = self.posedirs if skin else self.posedirs.view(-1, self.num_vertices, 3)[:, ids]
            v = v + (feature @ P.reshape(P.shape[0], -1)).reshape(B, -1, 3)
        joints, T = forward_kinematics(rotmats, J)
        verts = lbs(v, self.weights, T, J) if skin else None
        if ids is not None:
            tip_pts = verts[:, ids] if skin else lbs(v, self.weights[ids], T, J)
        else:
            Tt = T[:, list(TIP_PARENTS)]
            local = tips - J[..., list(TIP_PARENTS), :]
            tip_pts = (Tt[..., :3, :3] @ local[..., None])[..., 0] + Tt[..., :3, 3]
        keypoints = to_paper_order(joints, tip_pts)
        if transl is not None:
            transl = torch.as_tensor(transl, dtype=self.dtype, device=self.device)[:, None]
            joints, keypoints = joints + transl, keypoints + transl
            verts = None if verts is None else verts + transl
            T = T.clone()
            T[..., :3, 3] = T[..., :3, 3] + transl
        return HandOutput(verts, joints, T, keypoints)

    def forward_numpy(self, **kwargs) -> HandOutput:
        """`forward` for data code: NumPy (or None) arguments, NumPy outputs, no autograd."""
        with torch.no_grad():
            args = {k: None if v is None else torch.as_tensor(np.asarray(v), dtype=self.dtype,
                                                              device=self.device)
                    for k, v in kwargs.items()}  # fmt: skip
            if "rotmats" in args:
                return self.forward_rotmats(**args).numpy()
            return self.forward(**args).numpy()

    # ---------------------------------------------------------------- IK and helpers
    def rest_keypoints(self, betas: torch.Tensor | None = None) -> torch.Tensor:
        """Rest-pose keypoints (B, 21, 3) (B = 1 without betas), paper order."""
        B = 1 if betas is None else betas.shape[0]
        eye = torch.eye(3, dtype=self.dtype, device=self.device).expand(B, 16, 3, 3)
        return self.forward_rotmats(eye, betas=betas, skin=False).keypoints

    def ik(
        self, keypoints: torch.Tensor, betas: torch.Tensor | None = None, aim: str = "bone"
    ) -> IKResult:
        """Analytic IK: keypoints (B, 21, 3) paper order -> `IKResult` of (B, 16, 3, 3)
        local and global rotations, on this model's rest bones (see
        `kinematics.inverse_kinematics`, also for aim). The wrist position is keypoints[:, 0]."""
        template = self.rest_keypoints(betas).to(keypoints.dtype)
        template = template if betas is not None else template[0]
        return inverse_kinematics(keypoints, template, aim=aim)

    def sample_poses(
        self,
        n: int,
        rng: np.random.Generator,
        grasp: float | None = None,
        noise: float = 1.0,
        style: str = "closure",
    ) -> np.ndarray:
        """Plausible grasp-like finger poses (n, 45) for this model's `forward(finger_pose=)`
        (its hands_mean already subtracted); see `poses.sample_poses` (also for style)."""
        from gsdf_data.hand.kinematics import from_paper_order
        from gsdf_data.hand.poses import sample_poses

        with torch.no_grad():
            rest = from_paper_order(self.rest_keypoints()[0]).double().cpu().numpy()
        pose = sample_poses(
            n, rng, grasp=grasp, rest_mano21=rest, side=self.side, noise=noise, style=style
        )
        return pose - self.hands_mean.cpu().numpy().astype(np.float32)

    def to_trimesh(self, vertices: np.ndarray, closed: bool = True):
        """One posed mesh (V, 3) as a trimesh.Trimesh (closed at the wrist by default)."""
        import trimesh

        faces = self.faces if closed else self.faces_open
        return trimesh.Trimesh(np.asarray(vertices), faces, process=False)

    def extra_repr(self) -> str:
        return f"{self.name}, side={self.side}, V={self.num_vertices}, betas={self.num_betas}"


def mirror_arrays(arrays: dict[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
    """Turn a right hand's arrays (HandModel keyword names) into a left hand's: reflect x,
    reverse face winding (so normals stay outward), reflect blend shapes and the PCA pose
    space (axis-angle (x, y, z) -> (x, -y, -z) per joint). A left-hand pose drives the
    result exactly as the mirrored right-hand pose drives the right model."""
    out = dict(arrays)
    s = np.array([-1.0, 1.0, 1.0])
    for k in ("v_template", "joints", "tips"):
        if out.get(k) is not None:
            out[k] = out[k] * s
    for k in ("shapedirs", "joint_shapedirs", "tip_shapedirs"):
        if out.get(k) is not None:
            out[k] = out[k] * s[:, None]
    for k in ("faces", "faces_open"):
        out[k] = out[k][:, ::-1].copy()
    if out.get("posedirs") is not None:
        # feature (R - I)_ab of a mirrored rotation flips sign by s_a s_b; vertex coord c by s_c
        P = out["posedirs"]
        sab = np.tile(np.outer(s, s).reshape(9), P.shape[0] // 9)
        sc = np.tile(s, P.shape[1] // 3)
        out["posedirs"] = P * sab[:, None] * sc[None, :]
    m = np.tile(MIRROR_AA, 15)
    if out.get("hands_components") is not None:
        out["hands_components"] = out["hands_components"] * m
    if out.get("hands_mean") is not None:
        out["hands_mean"] = out["hands_mean"] * m
    return out
