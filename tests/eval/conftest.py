"""Shared fixtures for the gsdf-eval tests: the bundled example set and its first GT hand."""

from pathlib import Path

import numpy as np
import pytest
import trimesh

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "eval"


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def hand_mesh() -> trimesh.Trimesh:
    """The GT hand of the first bundled example (closed capsules, metres)."""
    return trimesh.load(EXAMPLES / "gt" / "s000_hand.ply", process=False)


@pytest.fixture(scope="session")
def reference():
    """The brute-force reference protocol (tests/support/reference_protocol.py)."""
    from support import reference_protocol

    return reference_protocol


@pytest.fixture(scope="session", params=["origin", "camera"])
def frame(request) -> np.ndarray:
    """Where a test's meshes sit: near the origin, or in the camera frame (a hand about
    0.6 m in front of the camera, off-axis), where alignment bugs that scale with the
    distance from the origin show."""
    return np.zeros(3) if request.param == "origin" else np.array([0.04, -0.03, 0.62])
