"""GSDFNet: the whole gSDF network, assembled from a ModelConfig.

Parts: ResNet backbone(s) shared per the backbone strategy; a hand pose branch (21-joint
volumetric heatmaps + wrist-depth regressor); an object pose branch (object-centre
heatmap); IK to joint rotations; kinematic features; visual features; two SDF decoders.

Stage 1 trains the pose branches. Stage 2 (after `freeze_pose()`) trains everything except
the hand joint predictor. SDF queries live in the network frame, (x − wrist)·recon_scale/2;
inputs and outputs of the public methods are camera-frame metres.

Images: float RGB in [0, 1] (or uint8 0–255), (B,3,H,W) or (B,T,3,H,W) with frame t in the
middle; the network applies ImageNet mean/std itself.

Video training: a clip's labels either belong to frame t only (K (B,3,3), ...) or to every
frame (K (B,T,3,3), joints (B,T,21,3), obj_center (B,T,3), points (B,T,N,3), sdf_* (B,T,N)).
With every frame's labels, stage 2 predicts and supervises every frame of the clip, as the
reference's video model does (each frame through the frozen pose net, its object centre, its
own refined feature map and its own points; each loss term the mean over the frames); the
pose stage takes frame t's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gsdf_model import losses
from gsdf_model.backbone import ResNet
from gsdf_model.config import ModelConfig
from gsdf_model.decoder import SDFDecoder
from gsdf_model.kinematics import HandIK, hand_features, obj_features
from gsdf_model.pose import HeatmapHead, RootDepthHead, voxels_to_camera
from gsdf_model.visual import VisualEncoder

# keypoints (B,21,3) → joint frames: global rotations (B,16,3,3), origins (B,16,3) about the
# wrist (metres); see kinematics.HandIK
IKFn = Callable[[Tensor], tuple[Tensor, Tensor]]

# labels that carry a frame axis (B,T,...) when a video batch has every frame's
FRAME_LABELS = ("K", "joints", "obj_center", "points", "sdf_hand", "sdf_obj")


def has_frame_labels(batch: dict[str, Tensor]) -> bool:
    """Whether the batch holds every frame's labels (K (B,T,3,3)) rather than frame t's."""
    return batch["K"].dim() == 4


def middle_frame_labels(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The batch with every per-frame label replaced by frame t's (the middle one)."""
    t = batch["K"].shape[1]
    return {k: v[:, t // 2] if k in FRAME_LABELS else v for k, v in batch.items()}


def flatten_frame_labels(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-frame labels (B,T,...) → (B·T,...), frames of one clip adjacent (image unchanged)."""
    return {k: v.flatten(0, 1) if k in FRAME_LABELS else v for k, v in batch.items()}


def backbone_roles(strategy: str) -> dict[str, str]:
    """Which backbone serves the hand pose, the object pose and the SDF features."""
    return {
        "single": {"hand": "main", "obj": "main", "sdf": "main"},
        "symmetric": {"hand": "pose", "obj": "pose", "sdf": "sdf"},
        "asymmetric": {"hand": "hand", "obj": "shape", "sdf": "shape"},
    }[strategy]


@dataclass
class EncodedState:
    """Per-image quantities that SDF queries need (all camera frame, metres).

    K (B,3,3); wrist (B,3) origin of the network frame; joints (B,21,3) predicted keypoints;
    obj_center (B,3) predicted; rotmats (B,16,3,3) global joint rotations from IK; origins
    (B,16,3) joint positions of FK on the rest bones, relative to `wrist`; visual: the
    visual encoder's output (global vector or 16×16 map).
    """

    K: Tensor
    wrist: Tensor
    joints: Tensor
    obj_center: Tensor
    rotmats: Tensor
    origins: Tensor
    visual: Tensor


class GSDFNet(nn.Module):
    """The gSDF network. `ik` replaces the hand module's IK (tests, FLOP counting); by
    default IK runs on the hand model named by `cfg.mano_path` (procedural when None)."""

    def __init__(self, cfg: ModelConfig, ik: IKFn | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.ik: IKFn = ik if ik is not None else HandIK(cfg.mano_path)
        self.roles = backbone_roles(cfg.backbone)
        self.backbones = nn.ModuleDict(
            {
                name: ResNet(cfg.backbone_width, cfg.backbone_blocks)
                for name in dict.fromkeys(self.roles.values())
            }
        )
        c = cfg.backbone_channels
        n_dc = cfg.heatmap_deconvs
        self.hand_pose = HeatmapHead(c, 21, cfg.heatmap_size, n_dc, cfg.pose_neck_width)
        self.root_depth = RootDepthHead(c, cfg.crop_extent, cfg.image_size)
        self.obj_pose = HeatmapHead(c, 1, cfg.heatmap_size, n_dc, cfg.pose_neck_width)
        self.visual = VisualEncoder(cfg)
        dec = {
            "width": cfg.decoder_width,
            "n_layers": cfg.decoder_layers,
            "skip": cfg.decoder_skip,
            "dropout": cfg.decoder_dropout,
            "use_weight_norm": cfg.decoder_weight_norm,
        }
        self.hand_decoder = SDFDecoder(cfg.sdf_latent + cfg.hand_feature_dim, **dec)
        self.obj_decoder = SDFDecoder(cfg.sdf_latent + cfg.obj_feature_dim, **dec)
        # (3,1,1), broadcast over (B,T,3,H,W): a 4-D or 5-D buffer would break
        # `net.to(memory_format=torch.channels_last)`, which converts every 4-D and 5-D tensor.
        self.register_buffer("img_mean", torch.tensor(cfg.image_mean).view(3, 1, 1), False)
        self.register_buffer("img_std", torch.tensor(cfg.image_std).view(3, 1, 1), False)
        self.pose_frozen = False

    # ------------------------------------------------------------------ stage handling
    def pose_modules(self) -> dict[str, nn.Module]:
        """The hand joint predictor: frozen in stage 2. Its backbone only when no other branch
        uses it (asymmetric: the hand backbone; symmetric: the pose backbone)."""
        mods: dict[str, nn.Module] = {"hand_pose": self.hand_pose, "root_depth": self.root_depth}
        if self.roles["hand"] != self.roles["sdf"]:
            mods[f"backbones.{self.roles['hand']}"] = self.backbones[self.roles["hand"]]
        return mods

    def freeze_pose(self) -> None:
        """Stage 2: no gradient to the hand pose predictor and its BN statistics fixed. Its
        stage-1 gradients are dropped (a stage-2 optimizer never clears them)."""
        for m in self.pose_modules().values():
            m.requires_grad_(False)
            m.eval()
            for p in m.parameters():
                p.grad = None
        self.pose_frozen = True

    def train(self, mode: bool = True) -> GSDFNet:
        super().train(mode)
        if self.pose_frozen:
            for m in self.pose_modules().values():
                m.eval()
        return self

    # ------------------------------------------------------------------ encoders
    def _frames(self, image: Tensor) -> Tensor:
        """image (B,3,H,W) or (B,T,3,H,W) → normalised (B,T',3,H,W) with T' = n_frames."""
        if image.dim() == 4:
            image = image[:, None]
        if image.dim() != 5 or image.shape[2] != 3:
            raise ValueError(f"image must be (B,3,H,W) or (B,T,3,H,W), got {tuple(image.shape)}")
        t, n = image.shape[1], self.cfg.n_frames
        if t < n:
            raise ValueError(f"preset {self.cfg.name!r} needs {n} frames, got {t}")
        mid = t // 2
        image = image[:, mid - n // 2 : mid + n // 2 + 1]
        if image.dtype == torch.uint8:
            image = image.float() / 255.0
        return (image.float() - self.img_mean) / self.img_std

    def _backbone_features(
        self, frames: Tensor, only: set[str] | None = None, every_frame: bool = False
    ) -> dict[str, Tensor]:
        """frames (B,T,3,H,W) → per backbone (B,T_b,C,h,w); T_b = T where the video visual
        encoder needs every frame or `every_frame`, else 1 (the middle frame). `only`: run
        just these."""
        b, t = frames.shape[:2]
        frozen = (
            {k.removeprefix("backbones.") for k in self.pose_modules()}
            if self.pose_frozen
            else set()
        )
        out = {}
        for name, bb in self.backbones.items():
            if only is not None and name not in only:
                continue
            x = (
                frames
                if every_frame or (name == self.roles["sdf"] and self.cfg.is_video)
                else frames[:, t // 2 : t // 2 + 1]
            )
            with torch.set_grad_enabled(torch.is_grad_enabled() and name not in frozen):
                f = bb(x.flatten(0, 1))
            out[name] = f.reshape(b, x.shape[1], *f.shape[1:])
        return out

    def _mid(self, feats: dict[str, Tensor], role: str) -> Tensor:
        f = feats[self.roles[role]]
        return f[:, f.shape[1] // 2]

    def _pose(
        self, feats: dict[str, Tensor], K: Tensor, ref_depth: Tensor | None
    ) -> dict[str, Tensor]:
        """Hand joints (B,21,3), object centre (B,3), predicted wrist depth (B,), camera metres.

        Heatmap depths are relative to ref_depth (the given wrist's depth), or to the
        predicted wrist depth when ref_depth is None.
        """
        cfg = self.cfg
        hand_f = self._mid(feats, "hand")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.pose_frozen):
            vox_h, _ = self.hand_pose(hand_f)
            root = self.root_depth(hand_f, K)
        ref = root.detach() if ref_depth is None else ref_depth.to(root)
        joints = voxels_to_camera(vox_h, K, ref, cfg.image_size, cfg.heatmap_size, cfg.depth_extent)
        out = {"joints": joints, "root_depth": root}
        if self.roles["obj"] in feats:
            vox_o, _ = self.obj_pose(self._mid(feats, "obj"))
            center = voxels_to_camera(
                vox_o, K, ref.detach(), cfg.image_size, cfg.heatmap_size, cfg.depth_extent
            )
            out["obj_center"] = center[:, 0]
        return out

    def _state(
        self,
        feats: dict[str, Tensor],
        pose: dict[str, Tensor],
        K: Tensor,
        wrist: Tensor | None,
        visual: Tensor | None = None,
    ) -> EncodedState:
        joints = pose["joints"].detach()  # the SDF branch treats the hand pose as an input
        wrist = joints[:, 0] if wrist is None else wrist.to(joints)
        rotmats, origins = self.ik(joints)
        if visual is None:
            visual = self.visual.encode(feats[self.roles["sdf"]])
        return EncodedState(
            K=K,
            wrist=wrist,
            joints=joints,
            obj_center=pose["obj_center"],
            rotmats=rotmats.to(joints),
            origins=origins.to(joints),
            visual=visual,
        )

    def encode(self, image: Tensor, K: Tensor, wrist: Tensor | None = None) -> EncodedState:
        """Everything per image that SDF queries need.

        image: (B,3,H,W) or (B,T,3,H,W); K: (B,3,3); wrist: (B,3) camera metres (e.g. the
        ground truth, as the paper's protocol) or None to use the predicted wrist.
        """
        frames = self._frames(image)
        feats = self._backbone_features(frames)
        ref = None if wrist is None else wrist[:, 2]
        pose = self._pose(feats, K, ref)
        return self._state(feats, pose, K, wrist)

    # ------------------------------------------------------------------ SDF queries
    def query_network(self, state: EncodedState, points: Tensor) -> tuple[Tensor, Tensor]:
        """SDFs in network units (B,N), (B,N) for points (B,N,3) camera metres."""
        s = self.cfg.recon_scale / 2.0
        # Geometry in float32 even under autocast: positions in bf16 would carry ~1 mm errors.
        with torch.autocast(points.device.type, enabled=False):
            w = state.wrist[:, None].float()
            x = (points.float() - w) * s
            joints = (state.joints.float() - w) * s
            center = (state.obj_center.float() - w[:, 0]) * s
            # joint frames rooted at the SDF frame's wrist (the network frame's origin)
            R, t = state.rotmats.float(), state.origins.float() * s
            e_h = hand_features(x, R, t, self.cfg.hand_kinematics)
            e_o = obj_features(x, center, joints, R[:, 0], t[:, 0], self.cfg.obj_kinematics)
        e_v = self.visual.point_features(state.visual, points, state.K)
        sdf_h = self.hand_decoder(torch.cat([e_v, e_h.to(e_v.dtype)], dim=-1)).float()
        sdf_o = self.obj_decoder(torch.cat([e_v, e_o.to(e_v.dtype)], dim=-1)).float()
        return sdf_h, sdf_o

    def query(
        self, state: EncodedState, points: Tensor, chunk: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Signed distances in metres to the hand and the object: points (B,N,3) camera
        metres → (B,N), (B,N). `chunk` bounds the points per decoder call."""
        n = points.shape[1]
        step = n if not chunk else chunk
        hs, os_ = [], []
        for i in range(0, n, max(step, 1)):
            h, o = self.query_network(state, points[:, i : i + step])
            hs.append(h)
            os_.append(o)
        back = 2.0 / self.cfg.recon_scale
        return torch.cat(hs, 1) * back, torch.cat(os_, 1) * back

    # ------------------------------------------------------------------ training
    def forward(
        self, batch: dict[str, Tensor], stage: int = 2, gt_wrist: bool = True
    ) -> dict[str, Tensor]:
        """Training forward pass.

        batch: image, K, joints (GT, for the wrist when gt_wrist), points (stage 2).
        Returns joints (B,21,3), root_depth (B,), obj_center (B,3) (in stage 1 only when its
        loss weight pose_obj_weight > 0 or a backbone serves both), and in stage 2 also
        wrist (B,3), sdf_hand / sdf_obj (B,N) in metres and *_net in network units.
        """
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        if has_frame_labels(batch):
            if stage == 2:
                return self._forward_every_frame(batch, gt_wrist)
            batch = middle_frame_labels(batch)
        K = batch["K"]
        wrist = batch["joints"][:, 0] if gt_wrist else None
        frames = self._frames(batch["image"])
        # A hand-only pose stage (the reference's) leaves the object/SDF backbone untouched,
        # weights and BN statistics alike, until stage 2.
        only = None
        if stage == 1 and self.cfg.pose_obj_weight == 0:
            only = {self.roles["hand"]}
        feats = self._backbone_features(frames, only)
        pose = self._pose(feats, K, None if wrist is None else wrist[:, 2])
        if stage == 1:
            return pose
        state = self._state(feats, pose, K, wrist)
        return self._with_sdf(pose, state, batch["points"])

    def _forward_every_frame(self, batch: dict[str, Tensor], gt_wrist: bool) -> dict[str, Tensor]:
        """Stage 2 on a clip with every frame's labels: the outputs of `forward` for each
        frame, flattened to B·T rows (frames of one clip adjacent)."""
        frames = self._frames(batch["image"])
        t = frames.shape[1]
        if batch["K"].shape[1] != t:
            raise ValueError(f"labels for {batch['K'].shape[1]} frames, images for {t}")
        flat = flatten_frame_labels(batch)
        K = flat["K"]
        wrist = flat["joints"][:, 0] if gt_wrist else None
        feats = self._backbone_features(frames, every_frame=True)
        visual = self.visual.encode(feats[self.roles["sdf"]], every_frame=True).flatten(0, 1)
        # each frame as an image of its own: (B,T,C,h,w) → (B·T,1,C,h,w)
        per_frame = {k: v.flatten(0, 1)[:, None] for k, v in feats.items()}
        pose = self._pose(per_frame, K, None if wrist is None else wrist[:, 2])
        state = self._state(per_frame, pose, K, wrist, visual=visual)
        return self._with_sdf(pose, state, flat["points"])

    def _with_sdf(self, pose: dict[str, Tensor], state, points: Tensor) -> dict[str, Tensor]:
        """Stage 2's outputs: the pose outputs, the wrist, and the SDFs of `points` in network
        units (*_net) and in metres."""
        sdf_h, sdf_o = self.query_network(state, points)
        back = 2.0 / self.cfg.recon_scale
        return {
            **pose,
            "wrist": state.wrist,
            "sdf_hand_net": sdf_h,
            "sdf_obj_net": sdf_o,
            "sdf_hand": sdf_h * back,
            "sdf_obj": sdf_o * back,
        }

    def loss(
        self,
        batch: dict[str, Tensor],
        out: dict[str, Tensor],
        stage: int = 2,
        own_points: int | None = None,
    ) -> dict[str, Tensor]:
        """Loss terms and their weighted 'total' (see gsdf_model.losses). own_points (stage 2):
        how many leading SDF points belong to the hand (each decoder on its own mesh's).
        A batch with every frame's labels: stage 1 on frame t's, stage 2 on every frame's
        (each term the mean over frames of its per-frame mean: every frame has as many
        points)."""
        if has_frame_labels(batch):
            batch = middle_frame_labels(batch) if stage == 1 else flatten_frame_labels(batch)
        if stage == 1:
            return losses.stage1_loss(self.cfg, batch, out)
        return losses.stage2_loss(self.cfg, batch, out, own_points)
