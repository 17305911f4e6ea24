"""Chamfer, F-score, Eh (camera frame and wrist-relative) and Eo against brute force and
hand-computed values."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from gsdf_eval.metrics import (
    center_error_cm,
    chamfer_cm2,
    fscore,
    joint_error_cm,
    joint_error_rel_cm,
)
from gsdf_eval.nn import nn_distances


def test_nn_distances_match_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 3)), rng.normal(size=(200, 3)) + 0.1
    d_ab, d_ba = nn_distances(a, b)
    full = cdist(a, b)
    np.testing.assert_allclose(d_ab, full.min(axis=1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(d_ba, full.min(axis=0), rtol=0, atol=1e-12)


def test_nn_distances_of_a_degenerate_prediction_match_brute_force():
    """A tiny placeholder sphere against a large one: every query has many near-ties."""
    rng = np.random.default_rng(4)
    big = rng.normal(size=(2000, 3))
    big /= np.linalg.norm(big, axis=1, keepdims=True) / 0.04
    tiny = rng.normal(size=(1500, 3))
    tiny /= np.linalg.norm(tiny, axis=1, keepdims=True) / 0.002
    d_ab, d_ba = nn_distances(tiny, big)
    full = cdist(tiny, big)
    np.testing.assert_allclose(d_ab, full.min(axis=1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(d_ba, full.min(axis=0), rtol=0, atol=1e-12)


def test_chamfer_units_and_value():
    # one point each, 1 cm apart: 1 cm² in each direction
    d_ab, d_ba = nn_distances(np.zeros((1, 3)), np.array([[0.01, 0.0, 0.0]]))
    assert chamfer_cm2(d_ab, d_ba) == pytest.approx(2.0)
    # brute force on random sets, metres -> cm²
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 0.1, (150, 3)), rng.uniform(0, 0.1, (170, 3))
    full = cdist(a, b) * 100
    expected = (full.min(axis=1) ** 2).mean() + (full.min(axis=0) ** 2).mean()
    assert chamfer_cm2(*nn_distances(a, b)) == pytest.approx(expected, rel=1e-12)


def test_fscore_identical_sets_is_one():
    pts = np.random.default_rng(2).normal(size=(500, 3))
    d_ab, d_ba = nn_distances(pts, pts)
    assert fscore(d_ab, d_ba, 0.001) == 1.0


def test_fscore_hand_computed():
    d_pred = np.array([0.0005, 0.002])  # precision at 1 mm: 1/2
    d_gt = np.array([0.0005, 0.0009, 0.003, 0.004])  # recall at 1 mm: 2/4
    assert fscore(d_pred, d_gt, 0.001) == pytest.approx(0.5)
    assert fscore(np.array([0.0]), d_gt, 0.001) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert fscore(d_pred, d_gt, 0.0001) == 0.0


@pytest.mark.parametrize("offset", [(0.0, 0.0, 0.0), (0.05, -0.02, 0.65)])
def test_joint_errors_camera_frame_and_wrist_relative(offset):
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(21, 3)) * 0.05 + np.asarray(offset)
    shift = np.array([0.03, -0.01, 0.02])  # 3.74 cm: the whole hand misplaced
    # the reference's Eh: camera frame, no alignment, so a misplaced hand is charged
    assert joint_error_cm(gt + shift, gt) == pytest.approx(np.linalg.norm(shift) * 100)
    # the wrist-relative error ignores where the hand is
    assert joint_error_rel_cm(gt + shift, gt) == pytest.approx(0.0, abs=1e-12)
    pred = gt.copy()
    pred[5] += [0.021, 0.0, 0.0]  # one joint 2.1 cm off: mean over 21 joints = 0.1 cm
    assert joint_error_cm(pred, gt) == pytest.approx(0.1)
    assert joint_error_rel_cm(pred, gt) == pytest.approx(0.1)
    pred = gt.copy()
    pred[0] += [0.0, 0.021, 0.0]  # the wrist 2.1 cm off: every relative joint moves
    assert joint_error_cm(pred, gt) == pytest.approx(0.1)
    assert joint_error_rel_cm(pred, gt) == pytest.approx(2.0)


def test_fscore_reference_denominator():
    d = np.array([0.0005, 0.002])
    # the reference's 2PR / (P + R + 1e-7); P = R = 0 gives 0 either way
    assert fscore(d, d, 0.001, eps=1e-7) == pytest.approx(0.5 * 1.0 / (1.0 + 1e-7), rel=1e-12)
    assert fscore(d, d, 0.0001, eps=1e-7) == 0.0
    # strict <: a distance equal to the threshold does not count
    assert fscore(np.array([0.001]), np.array([0.001]), 0.001) == 0.0


def test_center_error_cm():
    assert center_error_cm([0.0, 0.03, 0.04], [0.0, 0.0, 0.0]) == pytest.approx(5.0)
