"""The benchmarks and tools import what the packages still have.

They import most of the project inside functions, so a renamed or removed name surfaces only
when that function runs, minutes into a benchmark. Every `from gsdf_... import name` in
bench/ and tools/ is checked here against the installed packages without running anything.
"""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("bench/*.py"), *ROOT.glob("tools/*.py")])


def _project_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of every `from gsdf_<package>... import name` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gsdf_"):
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_project_name_imported_exists(path):
    missing = []
    for line, module, name in _project_imports(path):
        mod = importlib.import_module(module)
        if not hasattr(mod, name):
            try:  # a submodule imported by name
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"line {line}: {module}.{name}")
    assert not missing, f"{path.name} imports names that no longer exist: {missing}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    script = tmp_path / "b.py"
    script.write_text("def f():\n    from gsdf_data.sampling import _PLACED\n")
    assert _project_imports(script) == [(2, "gsdf_data.sampling", "_PLACED")]
    assert not hasattr(importlib.import_module("gsdf_data.sampling"), "_PLACED")
