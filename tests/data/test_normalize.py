"""Unit-cube normalisation of a hand-object pair."""

import numpy as np
import pytest

from gsdf_data.normalize import PAD, pair_normalization


def test_union_bbox_centre_and_padded_radius():
    a = np.array([[0.0, 0.0, 0.5], [0.1, 0.0, 0.5]])
    b = np.array([[0.0, 0.2, 0.7], [-0.1, 0.0, 0.6]])
    n = pair_normalization(a, b)
    np.testing.assert_allclose(n.offset, [0.0, 0.1, 0.6])
    radius = np.linalg.norm(np.concatenate([a, b]) - n.offset, axis=1).max()
    assert n.scale == pytest.approx(radius * PAD)
    u = n.to_unit(np.concatenate([a, b]))
    assert np.abs(u).max() <= 1.0 / PAD + 1e-12
    assert np.linalg.norm(u, axis=1).max() == pytest.approx(1.0 / PAD)
    np.testing.assert_allclose(n.to_camera(u), np.concatenate([a, b]), atol=1e-12)
    assert n.sdf_to_camera(n.sdf_to_unit(0.01)) == pytest.approx(0.01)


def test_degenerate_input_is_refused():
    with pytest.raises(ValueError):
        pair_normalization(np.zeros((3, 3)))
    with pytest.raises(ValueError):
        pair_normalization(np.array([[np.nan, 0, 0], [1, 1, 1]]))
