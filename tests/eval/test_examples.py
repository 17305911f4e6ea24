"""The bundled example set is exactly what its committed generator writes."""

import subprocess
import sys
from pathlib import Path


def test_examples_are_reproducible(examples_dir, tmp_path):
    repo = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, str(repo / "tools" / "make_eval_examples.py"), str(tmp_path)], check=True
    )
    committed = sorted(p.relative_to(examples_dir) for p in examples_dir.rglob("*") if p.is_file())
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert committed == generated
    for rel in committed:
        assert (examples_dir / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    assert sum((examples_dir / rel).stat().st_size for rel in committed) < 500_000
