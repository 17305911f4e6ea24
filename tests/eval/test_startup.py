"""gsdf-eval's start-up cannot regress silently: importing its CLI, and scoring PLY files with
`pair` and `run`, load no trimesh, networkx or scipy (together about a second of imports,
more than scoring a pair), except the part of scipy that libigl itself imports when the
contact metrics need libigl, and `run` with one job loads no joblib (0.3 s more). Checked in
fresh interpreters, where nothing was imported yet."""

import json
import subprocess
import sys

import pytest

REPORT = (
    "\nimport json, sys\n"
    "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in"
    " ('trimesh', 'networkx', 'scipy', 'joblib'))))\n"
)


def _loaded_after(code: str) -> set[str]:
    """Modules of trimesh, networkx, scipy and joblib loaded after running `code` in a fresh
    interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", code + REPORT], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _cli(*args) -> str:
    return (
        f"from gsdf_eval.cli import main\nmain({[str(a) for a in args]!r}, standalone_mode=False)\n"
    )


def test_importing_the_cli_loads_none():
    assert _loaded_after("import gsdf_eval.cli") == set()


def test_pair_of_hands_loads_none(examples_dir):
    hand_pred, hand_gt = (
        examples_dir / "pred" / "s002_hand.ply",
        examples_dir / "gt" / "s002_hand.ply",
    )
    code = _cli("pair", "--hand-pred", hand_pred, "--hand-gt", hand_gt, "--points", 2000)
    assert _loaded_after(code) == set()


@pytest.fixture(scope="module")
def scipy_of_libigl() -> set[str]:
    """What `import igl` loads of scipy (its compiled module imports scipy.sparse)."""
    loaded = _loaded_after("import igl")
    assert loaded and not any(m.split(".")[0] in ("trimesh", "networkx") for m in loaded)
    return loaded


def test_pair_and_run_with_objects_load_only_what_libigl_loads(
    examples_dir, tmp_path, scipy_of_libigl
):
    p, g = examples_dir / "pred", examples_dir / "gt"
    pair = _cli("pair", "--hand-pred", p / "s002_hand.ply", "--hand-gt", g / "s002_hand.ply",
                "--obj-pred", p / "s002_obj.ply", "--obj-gt", g / "s002_obj.ply",
                "--points", 2000)  # fmt: skip
    run = _cli("run", p, g, "--out", tmp_path / "run", "--points", 2000)
    for code in (pair, run):
        loaded = _loaded_after(code)
        assert loaded, "s002 is in contact: libigl (and with it scipy.sparse) should load"
        assert loaded <= scipy_of_libigl, sorted(loaded - scipy_of_libigl)
