"""Every preset builds and produces the documented shapes; presets differ only where the
paper's ablation says; configs round-trip through dicts (checkpoints)."""

import dataclasses

import pytest
import torch

from gsdf_model.config import PRESETS, ModelConfig, get_preset
from gsdf_model.describe import example_batch, parameter_counts
from gsdf_model.network import GSDFNet


def identity_ik(keypoints):
    b = keypoints.shape[0]
    return torch.eye(3).expand(b, 16, 3, 3).clone(), torch.zeros(b, 16, 3)


EXPECTED = {
    "obman",
    "dexycb",
    "dexycb-video",
    "tiny",
    "tiny-v2",
    "tiny-k1",
    "tiny-ko1",
    "tiny-v1",
} | {*"k1 k2 k3 ko1 ko2 ko3 v1 v2 v3 v4 single symmetric asymmetric".split()}


def test_registry():
    assert set(PRESETS) == EXPECTED
    assert get_preset("obman").recon_scale == 7.0
    assert get_preset("dexycb").recon_scale == 6.2
    assert get_preset("obman").clamp == 0.05
    assert get_preset("dexycb-video").n_frames == 3 and get_preset("dexycb-video").visual == "v4"
    with pytest.raises(KeyError, match="unknown preset"):
        get_preset("nope")
    with pytest.raises(ValueError, match="visual v4 needs n_frames"):
        get_preset("tiny", visual="v4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_preset("obman").clamp = 0.1


def _diff(a: ModelConfig, b: ModelConfig) -> set[str]:
    return {f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)}


def test_ablations_change_only_their_factor():
    main = get_preset("dexycb")
    assert (main.hand_kinematics, main.obj_kinematics, main.visual, main.backbone) == (
        "k3",
        "ko3",
        "v2",
        "asymmetric",
    )
    assert _diff(get_preset("obman"), main) == {"name", "recon_scale"}
    # the paper's ablation baseline: K3, Ko3, V1, asymmetric (Tables 1, 2, 4)
    base = main.replace(visual="v1")
    for k in ("k1", "k2", "k3"):
        assert _diff(get_preset(k), base) <= {"name", "hand_kinematics"}
    for k in ("ko1", "ko2", "ko3"):
        assert _diff(get_preset(k), base) <= {"name", "obj_kinematics"}
    for k in ("v1", "v2", "v3"):
        assert _diff(get_preset(k), base) <= {"name", "visual"}
    assert _diff(get_preset("v4"), base) == {"name", "visual", "n_frames"}
    assert _diff(get_preset("dexycb-video"), get_preset("v4")) == {"name"}
    for k in ("single", "symmetric", "asymmetric"):
        assert _diff(get_preset(k), base) <= {"name", "backbone"}
    assert get_preset("k1").hand_kinematics == "k1" and get_preset("ko2").obj_kinematics == "ko2"
    assert get_preset("single").backbone == "single"
    # the tiny-size study: the paper's full model and one factor changed per ablation
    small = get_preset("tiny-v2")
    assert (small.hand_kinematics, small.obj_kinematics, small.visual) == ("k3", "ko3", "v2")
    assert _diff(small, get_preset("tiny")) == {"name", "visual"}
    assert _diff(get_preset("tiny-k1"), small) == {"name", "hand_kinematics"}
    assert _diff(get_preset("tiny-ko1"), small) == {"name", "obj_kinematics"}
    assert _diff(get_preset("tiny-v1"), small) == {"name", "visual"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_round_trip(name):
    cfg = get_preset(name)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shapes(name):
    cfg = get_preset(name)
    torch.manual_seed(0)
    net = GSDFNet(cfg, ik=identity_ik).eval()
    n = 24
    batch = example_batch(cfg, 1, n)
    if cfg.n_frames > 1:
        assert batch["image"].shape == (1, cfg.n_frames, 3, 256, 256)
    with torch.no_grad():
        out = net(batch, stage=2)
    assert out["joints"].shape == (1, 21, 3)
    assert out["obj_center"].shape == (1, 3)
    assert out["sdf_hand"].shape == (1, n) and out["sdf_obj"].shape == (1, n)
    assert torch.isfinite(out["sdf_hand"]).all() and torch.isfinite(out["sdf_obj"]).all()
    # decoder inputs: e_v (sdf_latent) + e_h / e_o of the paper's sizes
    dims = {"k1": 3, "k2": 6, "k3": 51, "ko1": 3, "ko2": 6, "ko3": 72}
    first_h = net.hand_decoder.layers[0]
    first_o = net.obj_decoder.layers[0]
    assert first_h.in_features == cfg.sdf_latent + dims[cfg.hand_kinematics]
    assert first_o.in_features == cfg.sdf_latent + dims[cfg.obj_kinematics]
    # heatmaps 64³ at full size
    if not name.startswith("tiny"):
        assert net.hand_pose.size == 64 and net.hand_pose.n_points == 21
    counts = parameter_counts(net)
    n_backbones = {"single": 1, "symmetric": 2, "asymmetric": 2}[cfg.backbone]
    assert len([k for k in counts if k.startswith("backbone.")]) == n_backbones
    if not name.startswith("tiny"):
        for k, v in counts.items():
            if k.startswith("backbone."):
                assert v == 11_176_512


def test_transformer_sizes():
    """V3: 8 spatial layers; V4 (and dexycb-video): 8 spatial + 8 temporal, 4 heads, width 256."""
    v3 = GSDFNet(get_preset("v3"), ik=identity_ik).visual.transformer
    v4 = GSDFNet(get_preset("dexycb-video"), ik=identity_ik).visual.transformer
    assert len(v3.spatial) == 8 and len(v3.temporal) == 0
    assert len(v4.spatial) + len(v4.temporal) == 16
    assert v4.spatial[0].attn.heads == 4 and v4.norm.normalized_shape == (256,)
    assert GSDFNet(get_preset("v1"), ik=identity_ik).visual.transformer is None
    # reference feed-forward width 1024 in every layer
    assert {layer.mlp[0].out_features for layer in [*v4.spatial, *v4.temporal]} == {1024}


def test_v1_is_the_reference_global_branch():
    """V1: 1x1 conv 512→512 + BN + ReLU on the backbone's 8x8 map, average pooling, Linear to
    256, the same vector for every point; recomputed here from the layers' weights."""
    net = GSDFNet(get_preset("v1"), ik=identity_ik).eval()
    vis = net.visual
    conv, bn = vis.neck[0], vis.neck[1]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (512, 512, (1, 1))
    assert (vis.proj.in_features, vis.proj.out_features) == (512, 256)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 2.0)
        f = torch.randn(2, 1, 512, 8, 8)
        enc = vis.encode(f)
        w = conv.weight[:, :, 0, 0]
        y = torch.einsum("oc,bchw->bohw", w, f[:, 0]) + conv.bias[None, :, None, None]
        y = (y - bn.running_mean[None, :, None, None]) / torch.sqrt(
            bn.running_var[None, :, None, None] + bn.eps
        ) * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
        torch.testing.assert_close(enc, y.clamp_min(0).mean(dim=(2, 3)), atol=1e-5, rtol=1e-4)
        pts = torch.randn(2, 5, 3) + torch.tensor([0, 0, 1.0])
        e = vis.point_features(enc, pts, torch.eye(3).expand(2, 3, 3))
        torch.testing.assert_close(
            e, (enc @ vis.proj.weight.T + vis.proj.bias)[:, None].expand(-1, 5, -1)
        )


def test_describe_counts_flops_of_the_decoders():
    """Per-point FLOPs are the two decoders' and the visual projection's multiply-adds (×2),
    plus the few of the kinematic transforms."""
    from gsdf_model.describe import count_flops

    cfg = get_preset("tiny")
    net = GSDFNet(cfg, ik=identity_ik)
    macs = sum(
        m.in_features * m.out_features
        for mod in (net.hand_decoder, net.obj_decoder, net.visual.proj)
        for m in mod.modules()
        if isinstance(m, torch.nn.Linear)
    )
    flops = count_flops(cfg, n_points=500)
    assert 2 * macs <= flops["per_point"] <= 2 * macs * 1.02
    assert flops["encode"] > 0
    assert flops["forward_500pts"] == pytest.approx(
        flops["encode"] + 500 * flops["per_point"], rel=1e-3
    )


def test_describe_cli():
    from click.testing import CliRunner

    from gsdf_model.cli import main

    res = CliRunner().invoke(main, ["describe", "--preset", "tiny", "--points", "100"])
    assert res.exit_code == 0, res.output
    counts = parameter_counts(GSDFNet(get_preset("tiny"), ik=identity_ik))
    assert f"{counts['total']:,}" in res.output
    assert "FLOPs per sample" in res.output and "visual.transformer" in res.output
    assert "stage 1 pose: 80 epochs" in res.output
    bad = CliRunner().invoke(main, ["describe", "--preset", "nope"])
    assert bad.exit_code == 2 and "unknown preset" in bad.output


def test_describe_prints_the_paper_schedule():
    from gsdf_model.config import get_train_preset
    from gsdf_model.describe import schedule_lines

    text = "\n".join(schedule_lines(get_train_preset("obman"), get_preset("obman")))
    for fact in (
        "stage 1 pose: 100 epochs, batch 192, Adam lr 0.0001 halved at epochs 40, 80; hand only",
        "stage 2 SDF:  1600 epochs, batch 256, Adam lr 0.0001 halved at epochs 600, 1200",
        "0.5 x object centre + 0.5 x L1 hand SDF + 0.5 x L1 object SDF (clamp 0.05)",
        "own mesh's points for the first 1201 epochs",
        "1000 hand + 1000 object",
        "(20 views + camera axis)",
        "rotation N(0, 45°) clipped to ±90° with p 0.6, colour ×U[0.8, 1.2] per channel",
        "stage 1 also on the set's pose-only samples (expected: a warning when it has none)",
    ):
        assert fact in text


def test_decoders_are_the_reference_deepsdf():
    """Reference sdf_head: 5 linear layers x 512, the input concatenated again before layer 2
    (latent_in = [(5 - 1) // 2]), weight norm, dropout 0.2, tanh output in (-1, 1)."""
    from torch.nn.utils import parametrize

    net = GSDFNet(get_preset("obman"), ik=identity_ik)
    for dec, e in ((net.hand_decoder, 51), (net.obj_decoder, 72)):
        d_in = 256 + e
        shapes = [(lin.in_features, lin.out_features) for lin in dec.layers]
        assert shapes == [(d_in, 512), (512, 512 - d_in), (512, 512), (512, 512), (512, 1)]
        assert dec.skip == (2,) and dec.dropout == 0.2
        assert all(parametrize.is_parametrized(lin, "weight") for lin in dec.layers)
        with torch.no_grad():
            dec.layers[-1].bias.fill_(100.0)
            assert dec.eval()(torch.randn(3, d_in)).max() <= 1.0
