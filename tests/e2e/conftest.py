"""One small trained tiny-preset run for every end-to-end test module.

`gsdf-data synth --shards` then both training stages, built once per test run: under xdist
the workers share one copy (a file lock around the build), so modules on different workers
do not each pay for it.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from gsdf_model.train import get_train_preset, train

# Eight training frames (two sequences of four) and four test frames.
N_SAMPLES, SEQ_LEN, TEST_FRACTION = 12, 4, 0.34
CFG = dataclasses.replace(get_train_preset("tiny"), pose_epochs=6, sdf_epochs=70, lr_halve_every=50)


def cli(name: str) -> str:
    """A console script of the interpreter's environment, else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def _build(root: Path) -> dict:
    synth = root / "synth"
    subprocess.run(
        [
            cli("gsdf-data"),
            "synth",
            "--out",
            str(synth),
            "--samples",
            str(N_SAMPLES),
            "--seq-len",
            str(SEQ_LEN),
            "--test-fraction",
            str(TEST_FRACTION),
            "--shards",
            "--jobs",
            "2",
        ],
        check=True,
        capture_output=True,
    )
    torch.manual_seed(0)
    return train("tiny", synth / "shards", root / "run", CFG, progress=False)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict:
    """{"root", "data" (shards with train/ and test/), "run" (checkpoints), "cfg", "summary"}."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the workers of this run
    root = base / "e2e-tiny"
    with FileLock(str(base / "e2e-tiny.lock")):
        done = root / "summary.json"
        if not done.exists():
            root.mkdir(exist_ok=True)
            summary = _build(root)
            done.write_text(json.dumps(summary, default=str))
    return {
        "root": root,
        "data": root / "synth" / "shards",
        "run": root / "run",
        "cfg": CFG,
        "summary": json.loads(done.read_text()),
    }
