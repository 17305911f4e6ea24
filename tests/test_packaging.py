"""The console scripts exist, answer --help fast and the package boundaries hold."""

import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.parametrize("script", ["gsdf-data", "gsdf-train", "gsdf-eval"])
def test_help_is_fast(script):
    exe = Path(sys.executable).parent / script  # the venv's scripts, whatever PATH says
    assert exe.exists(), f"{script} is not installed beside {sys.executable}"
    t0 = time.perf_counter()
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - t0
    assert "Usage:" in out.stdout
    assert elapsed < 1.5, f"{script} --help took {elapsed:.2f}s"


def test_eval_does_not_import_torch():
    code = (
        "import sys, gsdf_eval, gsdf_eval.cli\n"
        "import importlib, pkgutil\n"
        "for m in pkgutil.walk_packages(gsdf_eval.__path__, 'gsdf_eval.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert 'torch' not in sys.modules, 'gsdf_eval imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
