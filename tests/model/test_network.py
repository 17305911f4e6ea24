"""GSDFNet: stage handling (frozen pose branch), encode/query against forward, video
mixing only in video presets, losses."""

import pytest
import torch

from gsdf_model.config import get_preset
from gsdf_model.describe import example_batch
from gsdf_model.network import GSDFNet


def identity_ik(keypoints):
    b = keypoints.shape[0]
    return torch.eye(3).expand(b, 16, 3, 3).clone(), torch.zeros(b, 16, 3)


def tiny(**kw):
    torch.manual_seed(0)
    return GSDFNet(get_preset("tiny", **kw), ik=identity_ik)


@pytest.mark.parametrize("strategy", ["single", "symmetric", "asymmetric"])
def test_frozen_pose_gets_no_gradient_in_stage2(strategy):
    net = tiny(backbone=strategy)
    batch = example_batch(net.cfg, 2, 64)
    net.train()
    net.freeze_pose()
    net.train()  # must not unfreeze BN
    frozen = net.pose_modules()
    assert ("backbones." + net.roles["hand"] in frozen) == (strategy != "single")
    bn_before = {
        k: v.clone()
        for name, m in frozen.items()
        for k, v in m.state_dict().items()
        if "running" in k
    }
    out = net(batch, stage=2)
    net.loss(batch, out, stage=2)["total"].backward()
    frozen_ids = set()
    for name, m in frozen.items():
        assert not m.training, name
        for pname, p in m.named_parameters():
            frozen_ids.add(id(p))
            assert not p.requires_grad and p.grad is None, f"{name}.{pname}"
    bn_after = {
        k: v for name, m in frozen.items() for k, v in m.state_dict().items() if "running" in k
    }
    for k in bn_before:
        torch.testing.assert_close(bn_after[k], bn_before[k])
    # everything else learns: decoders, visual encoder, object pose, SDF backbone
    for name, p in net.named_parameters():
        if id(p) not in frozen_ids:
            assert p.grad is not None, name
    for mod in (
        net.hand_decoder,
        net.obj_decoder,
        net.visual,
        net.obj_pose,
        net.backbones[net.roles["sdf"]],
    ):
        assert sum(float(p.grad.abs().sum()) for p in mod.parameters()) > 0


def test_stage1_trains_the_pose_branches():
    net = tiny(pose_obj_weight=1.0)  # the object centre in stage 1 too (an option)
    batch = example_batch(net.cfg, 2, 16)
    out = net(batch, stage=1)
    assert out["joints"].shape == (2, 21, 3) and out["obj_center"].shape == (2, 3)
    loss = net.loss(batch, out, stage=1)
    assert set(loss) >= {"total", "joints", "obj_center", "ordinal", "root_depth"}
    loss["total"].backward()
    for mod in (net.hand_pose, net.root_depth, net.obj_pose, net.backbones["hand"]):
        assert all(p.grad is not None for p in mod.parameters())
    assert all(p.grad is None for p in net.hand_decoder.parameters())


def test_heatmap_depth_is_relative_to_the_given_wrist():
    net = tiny().eval()
    batch = example_batch(net.cfg, 1, 16)
    with torch.no_grad():
        a = net(batch, stage=1)
        moved = dict(batch, joints=batch["joints"] + torch.tensor([0.0, 0.0, 0.1]))
        b = net(moved, stage=1)
    torch.testing.assert_close(b["joints"][..., 2], a["joints"][..., 2] + 0.1)


def test_encode_query_match_forward_and_chunking():
    net = tiny().eval()
    batch = example_batch(net.cfg, 2, 100)
    with torch.no_grad():
        out = net(batch, stage=2)
        state = net.encode(batch["image"], batch["K"], wrist=batch["joints"][:, 0])
        h, o = net.query(state, batch["points"])
        hc, oc = net.query(state, batch["points"], chunk=33)
    torch.testing.assert_close(h, out["sdf_hand"])
    torch.testing.assert_close(o, out["sdf_obj"])
    torch.testing.assert_close(hc, h)
    torch.testing.assert_close(oc, o)
    # metres = network units · 2 / recon_scale
    torch.testing.assert_close(out["sdf_hand"], out["sdf_hand_net"] * 2 / net.cfg.recon_scale)


def test_predicted_wrist_path():
    net = tiny().eval()
    batch = example_batch(net.cfg, 2, 10)
    with torch.no_grad():
        state = net.encode(batch["image"], batch["K"], wrist=None)
        out = net(batch, stage=2, gt_wrist=False)
    torch.testing.assert_close(state.wrist, state.joints[:, 0])
    torch.testing.assert_close(out["wrist"], state.wrist)
    # the heatmap depth range sits around the regressed wrist depth
    assert (
        state.joints[..., 2] - out["root_depth"][:, None]
    ).abs().max() <= net.cfg.depth_extent + 1e-5


def test_uint8_and_float_images_agree():
    net = tiny().eval()
    batch = example_batch(net.cfg, 1, 10)
    img8 = (batch["image"] * 255).round().to(torch.uint8)
    with torch.no_grad():
        a = net.encode(img8, batch["K"], batch["joints"][:, 0]).visual
        b = net.encode(img8.float() / 255, batch["K"], batch["joints"][:, 0]).visual
    torch.testing.assert_close(a, b)


def _sdf_after_changing_first_frame(net):
    batch = example_batch(get_preset("tiny", visual="v4", n_frames=3), 1, 50)
    net.eval()
    with torch.no_grad():
        a = net(batch, stage=2)["sdf_obj"]
        clip = batch["image"].clone()
        clip[:, 0] = torch.rand_like(clip[:, 0])  # a different frame t−1
        b = net(dict(batch, image=clip), stage=2)["sdf_obj"]
    return (a - b).abs().max()


def test_video_preset_mixes_frames():
    assert _sdf_after_changing_first_frame(tiny(visual="v4", n_frames=3)) > 1e-6


@pytest.mark.parametrize("visual", ["v1", "v2", "v3"])
def test_image_presets_ignore_other_frames(visual):
    assert _sdf_after_changing_first_frame(tiny(visual=visual)) == 0


def test_video_preset_needs_frames():
    net = tiny(visual="v4", n_frames=3)
    batch = example_batch(get_preset("tiny"), 1, 10)
    with pytest.raises(ValueError, match="needs 3 frames"):
        net(batch, stage=2)


def test_losses_are_zero_for_perfect_predictions():
    cfg = get_preset("tiny")
    net = tiny()
    batch = example_batch(cfg, 2, 20)
    batch["sdf_hand"] = batch["sdf_hand"].clamp(-0.01, 0.01)
    batch["sdf_obj"] = batch["sdf_obj"].clamp(-0.01, 0.01)
    s = cfg.recon_scale / 2
    perfect = {
        "joints": batch["joints"],
        "obj_center": batch["obj_center"],
        "root_depth": batch["joints"][:, 0, 2],
        "sdf_hand_net": batch["sdf_hand"] * s,
        "sdf_obj_net": batch["sdf_obj"] * s,
    }
    for stage in (1, 2):
        for k, v in net.loss(batch, perfect, stage).items():
            assert float(v) == pytest.approx(0.0, abs=1e-7), (stage, k)
    # clamping: a prediction beyond the clamp on the right side costs nothing
    far = dict(perfect, sdf_hand_net=torch.full_like(batch["sdf_hand"], 1.0))
    batch_far = dict(batch, sdf_hand=torch.full_like(batch["sdf_hand"], 0.2))
    assert float(net.loss(batch_far, far, 2)["hand_sdf"]) == pytest.approx(0.0, abs=1e-7)


def test_sdf_loss_pulls_back_a_prediction_saturated_on_the_wrong_side():
    """A decoder that starts with every output beyond +clamp must still learn inside points:
    the loss must give them a gradient pointing inwards (the plain clamp gives none)."""
    from gsdf_model.losses import clamped_l1

    cfg = get_preset("tiny")
    pred = torch.full((1, 4), 0.9, requires_grad=True)  # network units, far beyond +0.05
    gt = torch.tensor([[-0.2, -0.001, 0.001, 0.2]])  # metres: inside, inside, outside, far out
    loss = clamped_l1(pred, gt, cfg)
    loss.backward()
    gt_c = (gt * cfg.recon_scale / 2).clamp(-cfg.clamp, cfg.clamp)
    expected = cfg.clamp - gt_c  # the loss value is DeepSDF's: both sides clamped
    assert float(loss) == pytest.approx(float(expected.mean()), rel=1e-6)
    assert (pred.grad[0, :2] > 0).all()  # descent lowers the two wrong-side predictions
    assert float(pred.grad[0, 2]) == 0.0  # right side, beyond the clamp: as DeepSDF
    assert float(pred.grad[0, 3]) == 0.0


def test_real_ik_drives_the_joint_frames():
    torch.manual_seed(0)
    net = GSDFNet(get_preset("tiny")).eval()  # the hand module's IK
    batch = example_batch(net.cfg, 1, 20)
    with torch.no_grad():
        state = net.encode(batch["image"], batch["K"], batch["joints"][:, 0])
        h, o = net.query(state, batch["points"])
    R = state.rotmats
    torch.testing.assert_close(
        R @ R.transpose(-1, -2), torch.eye(3).expand_as(R), atol=1e-5, rtol=0
    )
    # origins: FK on the procedural hand's rest bones, rooted at the given wrist
    from gsdf_data.hand import PARENTS, load_hand

    rest = load_hand(None).joints_template
    o = state.origins[0]
    assert o[0].abs().max() == 0
    for j in range(1, 16):
        p = PARENTS[j]
        rest_len = (rest[j] - rest[p]).norm()
        assert (o[j] - o[p]).norm().item() == pytest.approx(rest_len.item(), rel=1e-4)
    assert torch.isfinite(h).all() and torch.isfinite(o).all()


def test_bf16_autocast_keeps_geometry_and_losses_in_float32():
    net = tiny(visual="v3").eval()
    batch = example_batch(net.cfg, 2, 50)
    with torch.no_grad():
        ref = net(batch, stage=2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(batch, stage=2)
            losses = net.loss(batch, out, stage=2)
    assert out["sdf_hand"].dtype == torch.float32 and out["joints"].dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in losses.values())
    # bf16 trunk, float32 geometry: SDFs agree to well under a millimetre
    assert (out["sdf_hand"] - ref["sdf_hand"]).abs().max() < 1e-3
    assert (out["sdf_obj"] - ref["sdf_obj"]).abs().max() < 1e-3


def test_bf16_autocast_keeps_the_pose_losses_in_float32():
    """The ordinal depth loss compares depth orders of joints millimetres apart: under bf16
    autocast its projections must stay float32 (bf16 flips those orders)."""
    net = tiny().eval()
    batch = example_batch(net.cfg, 2, 10)
    # a prediction that gets the depth order of close joints wrong by a fraction of a mm
    pred = {"joints": batch["joints"] + 2e-4 * torch.randn(2, 21, 3, generator=gen(1))}
    pred |= {"obj_center": batch["obj_center"], "root_depth": batch["joints"][:, 0, 2]}
    torch.manual_seed(0)
    ref = net.loss(batch, pred, stage=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(0)  # the same random views
        losses = net.loss(batch, pred, stage=1)
    assert all(v.dtype == torch.float32 for v in losses.values())
    assert ref["ordinal"] > 0
    torch.testing.assert_close(losses["ordinal"], ref["ordinal"], rtol=1e-5, atol=0)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_channels_last_network_matches_contiguous():
    """`net.to(memory_format=torch.channels_last)` (the fast layout for convolutions on
    GPUs) converts every 4-D tensor of the network and changes no output."""
    net = tiny(visual="v3").eval()
    batch = example_batch(net.cfg, 2, 50)
    with torch.no_grad():
        ref = net(batch, stage=2)
        net.to(memory_format=torch.channels_last)
        assert net.backbones[net.roles["sdf"]].conv1.weight.is_contiguous(
            memory_format=torch.channels_last
        )
        out = net(batch, stage=2)
    for k in ("joints", "obj_center", "sdf_hand", "sdf_obj"):
        torch.testing.assert_close(out[k], ref[k], atol=1e-5, rtol=1e-4)


def test_freeze_pose_drops_the_stage1_gradients():
    """Stage 2's optimizer holds only trainable parameters and never clears the frozen
    ones: freeze_pose itself drops the gradients they got in stage 1."""
    net = tiny()
    batch = example_batch(net.cfg, 2, 20)
    net.train()
    net.loss(batch, net(batch, stage=1), stage=1)["total"].backward()
    frozen = [p for m in net.pose_modules().values() for p in m.parameters()]
    assert all(p.grad is not None for p in frozen)
    net.freeze_pose()
    assert all(p.grad is None for p in frozen)
    net.loss(batch, net(batch, stage=2), stage=2)["total"].backward()
    assert all(p.grad is None for p in frozen)


def test_decoder_inputs_are_the_kinematic_features_in_the_network_frame():
    """Capture what the decoders see: e_h slot j is R_jᵀ(x − w − o_j)·s/2 with o_j joint j's
    FK origin about the SDF frame's wrist w (not the predicted keypoint); e_o carries x − c,
    x − each predicted joint and x in the wrist frame (origin w), all about w."""
    g = torch.Generator().manual_seed(5)
    rot = torch.linalg.qr(torch.randn(1, 16, 3, 3, generator=g))[0]
    rot = rot * torch.sign(torch.linalg.det(rot))[..., None, None]
    org = torch.randn(1, 16, 3, generator=g) * 0.05
    org[:, 0] = 0
    net = tiny(visual="v2").eval()
    net.ik = lambda kp: (rot.expand(kp.shape[0], -1, -1, -1), org.expand(kp.shape[0], -1, -1))
    batch = example_batch(net.cfg, 1, 7)
    seen = {}
    net.hand_decoder.register_forward_hook(lambda m, i, o: seen.__setitem__("h", i[0]))
    net.obj_decoder.register_forward_hook(lambda m, i, o: seen.__setitem__("o", i[0]))
    with torch.no_grad():
        state = net.encode(batch["image"], batch["K"], wrist=batch["joints"][:, 0])
        net.query(state, batch["points"])
    s, lat = net.cfg.recon_scale / 2, net.cfg.sdf_latent
    x = batch["points"][0]
    wrist = batch["joints"][0, 0]
    e_h, e_o = seen["h"][0, :, lat:], seen["o"][0, :, lat:]
    torch.testing.assert_close(e_h[:, :3], (x - wrist) * s)
    for j in range(16):
        expected = ((x - wrist - org[0, j]) @ rot[0, j]) * s  # rows: (R_jᵀ d)ᵀ = dᵀ R_j
        torch.testing.assert_close(e_h[:, 3 + 3 * j : 6 + 3 * j], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(e_o[:, 3:6], (x - state.obj_center[0]) * s, atol=1e-6, rtol=1e-5)
    for k in range(21):
        got = e_o[:, 6 + 3 * k : 9 + 3 * k]
        torch.testing.assert_close(got, (x - state.joints[0, k]) * s, atol=1e-6, rtol=1e-5)
    xow = ((x - wrist) @ rot[0, 0]) * s
    torch.testing.assert_close(e_o[:, 69:72], xow, atol=1e-5, rtol=1e-4)


def test_hand_only_pose_stage_leaves_the_sdf_backbone_untouched():
    """Reference: the pose stage trains the hand branch only; the SDF/object backbone starts
    stage 2 as initialised (weights and BN statistics)."""
    net = tiny().train()  # asymmetric: hand backbone + shape backbone
    batch = example_batch(net.cfg, 2, 8)
    before = {k: v.clone() for k, v in net.backbones["shape"].state_dict().items()}
    out = net(batch, stage=1)
    assert "obj_center" not in out
    net.loss(batch, out, stage=1)["total"].backward()
    for k, v in net.backbones["shape"].state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in net.backbones["shape"].parameters())
    assert any(p.grad is not None for p in net.backbones["hand"].parameters())


def _video_net_and_clip(n_points=24):
    cfg = get_preset("tiny", visual="v4", n_frames=3)
    net = tiny(visual="v4", n_frames=3).eval()
    batch = example_batch(cfg, 2, n_points, frame_labels=True)
    return net, batch


def test_video_loss_supervises_every_frame():
    """The reference's video model: every frame of the clip through the frozen pose net, its
    own object centre, refined feature map and points; each loss term the mean over the
    frames of that frame's term. A target changed in frame t−1 or t+1 changes the loss."""
    from gsdf_model import losses

    net, batch = _video_net_and_clip()
    net.freeze_pose()
    with torch.no_grad():
        out = net(batch, stage=2)
        assert out["sdf_hand"].shape == (2 * 3, 24) and out["joints"].shape == (6, 21, 3)
        loss = net.loss(batch, out, stage=2, own_points=12)
        # written out per frame: rows b·T + f of the flat outputs are frame f of clip b
        per_frame = []
        for f in range(3):
            rows = [b * 3 + f for b in range(2)]
            out_f = {k: v[rows] for k, v in out.items()}
            batch_f = {k: v[:, f] if k != "image" else v for k, v in batch.items()}
            per_frame.append(losses.stage2_loss(net.cfg, batch_f, out_f, 12))
        for k in ("total", "obj_pose", "hand_sdf", "obj_sdf"):
            torch.testing.assert_close(loss[k], sum(p[k] for p in per_frame) / 3)
        changes = (
            (0, "sdf_hand", "hand_sdf"),
            (2, "sdf_obj", "obj_sdf"),
            (0, "obj_center", "obj_pose"),
        )
        for f, key, term in changes:
            moved = dict(batch, **{key: batch[key].clone()})
            moved[key][:, f] += 0.01
            changed = net.loss(moved, out, stage=2, own_points=12)
            assert not torch.isclose(changed[term], loss[term]), (f, key)


def test_video_every_frame_path_agrees_with_frame_t():
    """Frame t's predictions are those of the frame-t-only path; the pose stage and the
    frame-t-only labels see frame t alone."""
    net, batch = _video_net_and_clip()
    middle = {k: v[:, 1] if k != "image" else v for k, v in batch.items()}
    with torch.no_grad():
        every = net(batch, stage=2)
        mid = net(middle, stage=2)
        for k in ("sdf_hand", "sdf_obj", "joints", "obj_center", "wrist"):
            torch.testing.assert_close(every[k][1::3], mid[k], atol=1e-5, rtol=1e-4)
        s1, s1_mid = net(batch, stage=1), net(middle, stage=1)
        torch.testing.assert_close(s1["joints"], s1_mid["joints"])
        torch.testing.assert_close(
            net.loss(batch, s1, stage=1)["joints"], net.loss(middle, s1_mid, stage=1)["joints"]
        )
    # frame t−1's own camera: a K changed there moves frame t−1's SDFs only
    moved = {k: v.clone() for k, v in batch.items()}
    moved["K"][:, 0, :2, 2] += 20.0
    with torch.no_grad():
        other = net(moved, stage=2)
    assert (other["sdf_obj"][0::3] - every["sdf_obj"][0::3]).abs().max() > 1e-6
    torch.testing.assert_close(other["sdf_obj"][1::3], every["sdf_obj"][1::3])
