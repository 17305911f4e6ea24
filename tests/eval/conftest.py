"""Shared fixtures for the gsdf-eval tests: the bundled example set and its first GT hand."""

from pathlib import Path

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
