"""Visual features: projection and bilinear sampling against a hand computation; the
spatio-temporal transformer mixes frames only when it has temporal layers."""

import torch

from gsdf_model.config import get_preset
from gsdf_model.visual import SpatioTemporalTransformer, VisualEncoder, project, sample_map


def test_projection_by_hand():
    K = torch.tensor([[[400.0, 0.0, 127.5], [0.0, 420.0, 100.0], [0.0, 0.0, 1.0]]])
    x = torch.tensor([[[0.05, -0.02, 0.5], [0.0, 0.0, 2.0]]])
    uv = project(x, K)
    expected = torch.tensor([[[400 * 0.1 + 127.5, 420 * -0.04 + 100.0], [127.5, 100.0]]])
    torch.testing.assert_close(uv, expected)


def test_bilinear_sampling_by_hand():
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(1, 5, 16, 16, generator=g)
    # image 256 px, stride 16: feature cell k is centred on pixel (k + 0.5)·16 − 0.5
    uv = torch.tensor([[[7.5, 7.5], [100.0, 37.0], [0.0, 255.0]]])
    out = sample_map(fmap, uv, 256)
    assert out.shape == (1, 3, 5)
    # cell (0, 0) centre exactly
    torch.testing.assert_close(out[0, 0], fmap[0, :, 0, 0])
    # general point: feature coords fx = (100 + 0.5)/16 − 0.5 = 5.78125, fy = 1.875
    fx, fy = (100 + 0.5) / 16 - 0.5, (37 + 0.5) / 16 - 0.5
    x0, y0 = int(fx), int(fy)
    ax, ay = fx - x0, fy - y0
    expected = (
        fmap[0, :, y0, x0] * (1 - ax) * (1 - ay)
        + fmap[0, :, y0, x0 + 1] * ax * (1 - ay)
        + fmap[0, :, y0 + 1, x0] * (1 - ax) * ay
        + fmap[0, :, y0 + 1, x0 + 1] * ax * ay
    )
    torch.testing.assert_close(out[0, 1], expected)
    # pixel (0, 255): fx = −0.46875 (half outside, zero padding), fy = 15.46875
    fx, fy = 0.5 / 16 - 0.5, 255.5 / 16 - 0.5
    expected = fmap[0, :, 15, 0] * (1 + fx) * (1 - (fy - 15))  # only the in-map neighbour
    torch.testing.assert_close(out[0, 2], expected)


def test_sampling_a_linear_map_is_exact():
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    fmap = torch.stack([xs, ys])[None]  # channel 0 = column index, 1 = row index
    uv = torch.rand(1, 200, 2) * 224 + 16  # inside the outer half-cells
    out = sample_map(fmap, uv, 256)
    torch.testing.assert_close(out, (uv + 0.5) / 16 - 0.5)


def _tokens(seed=0, t=3):
    return torch.randn(2, t, 8, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_spatial_only_transformer_keeps_frames_apart():
    tr = SpatioTemporalTransformer(
        8, 16, 4, spatial_layers=2, temporal_layers=0, n_frames=3, size=4, ffn=64
    )
    x = _tokens()
    y = tr(x)
    assert y.shape == (2, 3, 16, 4, 4)
    x2 = x.clone()
    x2[:, 0] += 1.0
    y2 = tr(x2)
    torch.testing.assert_close(y2[:, 1:], y[:, 1:])
    assert not torch.allclose(y2[:, 0], y[:, 0])


def test_temporal_transformer_mixes_frames():
    tr = SpatioTemporalTransformer(
        8, 16, 4, spatial_layers=1, temporal_layers=1, n_frames=3, size=4, ffn=64
    )
    x = _tokens()
    x2 = x.clone()
    x2[:, 0] += 1.0  # change frame t−1
    assert (tr(x2)[:, 1] - tr(x)[:, 1]).abs().max() > 1e-4  # frame t's output moves


def test_v1_feature_is_the_same_for_every_point():
    cfg = get_preset("tiny", visual="v1")
    enc = VisualEncoder(cfg)
    feats = torch.randn(2, 1, cfg.backbone_channels, 8, 8)
    state = enc.encode(feats)
    assert state.shape == (2, cfg.backbone_channels)  # the reference keeps the width
    K = torch.tensor([[300.0, 0, 128], [0, 300.0, 128], [0, 0, 1]]).expand(2, 3, 3)
    f = enc.point_features(state, torch.rand(2, 9, 3) + 0.3, K)
    assert f.shape == (2, 9, cfg.sdf_latent)
    torch.testing.assert_close(f, f[:, :1].expand_as(f))


def test_v2_feature_depends_on_the_projection():
    cfg = get_preset("tiny", visual="v2")
    enc = VisualEncoder(cfg).eval()
    feats = torch.randn(1, 1, cfg.backbone_channels, 8, 8)
    state = enc.encode(feats)
    assert state.shape == (1, cfg.visual_dim, 16, 16)
    K = torch.tensor([[[300.0, 0, 128], [0, 300.0, 128], [0, 0, 1]]])
    x = torch.tensor([[[0.0, 0.0, 0.5], [0.0, 0.0, 1.0], [0.1, 0.05, 0.5]]])
    f = enc.point_features(state, x, K)
    # same pixel, different depth: differ only through the depth input
    d = f[0, 1] - f[0, 0]
    w_depth = enc.proj.weight[:, cfg.visual_dim]
    torch.testing.assert_close(d, w_depth * 0.5, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(f[0, 2], f[0, 0])
