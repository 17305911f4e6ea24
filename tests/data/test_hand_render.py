"""gsdf_data.render against a hand-computed projection: a sphere placed in the camera frame
must appear where `project` says, with the depth of its nearest point."""

import numpy as np
import trimesh

from gsdf_data.render import Renderer, project, render

K = np.array([[200.0, 0.0, 70.0], [0.0, 220.0, 50.0], [0.0, 0.0, 1.0]])


def test_project_hand_computed():
    pts = np.array([[0.1, -0.2, 2.0], [0.0, 0.0, 1.0]])
    uv = project(pts, K)
    np.testing.assert_allclose(uv, [[70 + 200 * 0.05, 50 - 220 * 0.1], [70, 50]])


def test_sphere_lands_where_projected():
    center = np.array([0.05, 0.03, 0.6])
    radius = 0.02
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    sphere.apply_translation(center)
    rgb, depth = render([(sphere, (1.0, 0.0, 0.0, 1.0))], K, 160, 120, bg_color=(0, 0, 0))
    assert rgb.shape == (120, 160, 3) and rgb.dtype == np.uint8
    assert depth.shape == (120, 160) and depth.dtype == np.float32
    mask = depth > 0
    # antialiased colour bleeds into edge pixels whose depth sample missed the sphere
    assert mask.sum() <= (rgb.sum(-1) > 0).sum() <= 1.3 * mask.sum()
    ys, xs = np.nonzero(mask)
    u, v = project(center[None], K)[0]
    # pixel (x, y) covers [x - 0.5, x + 0.5]: the blob centroid is the projected centre
    # (depth comes from one MSAA sample: up to ~0.4 px off the pixel centre)
    assert abs(xs.mean() - u) < 0.5 and abs(ys.mean() - v) < 0.5
    # nearest depth ≈ z - r at the centre pixel
    assert abs(depth[round(v), round(u)] - (center[2] - radius)) < 1e-3
    # the sphere's image radius (area of the disc) matches f·r/z
    r_px = np.sqrt(mask.sum() / np.pi)
    assert abs(r_px - np.sqrt(200 * 220) * radius / center[2]) < 0.5
    # red, lit (not black) and nothing green/blue
    assert rgb[mask][:, 0].mean() > 100 and rgb[mask][:, 1:].max() < 60


def test_renderer_reuse_and_behind_camera():
    sphere = trimesh.creation.icosphere(radius=0.05)
    behind = sphere.copy()
    behind.apply_translation([0, 0, -0.5])
    front = sphere.copy()
    front.apply_translation([0, 0, 0.5])
    with Renderer(64, 48) as r:
        _, d0 = r.render([(behind, (0, 1, 0, 1))], K)
        _, d1 = r.render([(front, (0, 1, 0, 1))], K)
    assert (d0 > 0).sum() == 0
    assert (d1 > 0).sum() > 0
