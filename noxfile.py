"""Every developer and CI command. Run through `tools/nox -s NAME` (it sets up .venv first).

Sessions run in the environment nox itself is installed in (the project's .venv), so a
session costs no install time; `tools/bootstrap.sh` owns the environment.
"""

import os
import sys

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests", "lint"]
# The interpreter nox runs in (the project venv): PATH may point at another Python.
PY = sys.executable

ENV = {
    "PATH": os.path.dirname(PY) + os.pathsep + os.environ.get("PATH", ""),
    "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM", "egl"),
    "OMP_NUM_THREADS": "1",
}


def _workers() -> str:
    return os.environ.get("GSDF_TEST_WORKERS", str(min(os.cpu_count() or 1, 4)))


@nox.session
def tests(session: nox.Session) -> None:
    """The default test suite (CPU, under 15 minutes on 2 cores)."""
    args = session.posargs or [
        "-m",
        "not gpu and not bench",
        "-n",
        _workers(),
        "--dist",
        "loadfile",
    ]
    session.run(PY, "-m", "pytest", *args, env=ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.run(PY, "-m", "ruff", "check", ".")
    session.run(PY, "-m", "ruff", "format", "--check", ".")


@nox.session
def gpu(session: nox.Session) -> None:
    """Tests that need a CUDA device (skipped with a reason when there is none)."""
    session.run(PY, "-m", "pytest", "-m", "gpu", *session.posargs, env=ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; writes bench/results/<name>.json and .md. Pick some with `-- eval sdf`."""
    session.run(PY, "tools/bench.py", *session.posargs, env=ENV)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job end to end on the embedded default (see README)."""
    session.run(PY, "tools/demo.py", *session.posargs, env=ENV)


@nox.session
def experiment(session: nox.Session) -> None:
    """The generalisation and ablation study (tools/experiment.py; `-- --scale smoke`)."""
    session.run(PY, "tools/experiment.py", *session.posargs, env=ENV)
