"""tools/bench.py: a benchmark that cannot run here keeps its last report and fails the
command; one that runs writes its report."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench_tool(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_tool", ROOT / "tools" / "bench.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    bench, results = tmp_path / "bench", tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    monkeypatch.setattr(tool, "BENCH", bench)
    monkeypatch.setattr(tool, "RESULTS", results)
    return tool, bench, results


def test_a_bench_that_cannot_run_keeps_its_report_and_fails(tmp_path, monkeypatch, capsys):
    tool, bench, results = _bench_tool(tmp_path, monkeypatch)
    (bench / "bench_needs.py").write_text("def run():\n    return None\n")
    (bench / "bench_fine.py").write_text(
        "def run():\n    return {'rows': [{'task': 'x', 'seconds': 1.5}], 'notes': ['ok']}\n"
    )
    (results / "needs.md").write_text("the last real report\n")
    assert tool.main([]) == 1
    assert (results / "needs.md").read_text() == "the last real report\n"
    assert not (results / "needs.json").exists()
    assert "| x | 1.5 |" in (results / "fine.md").read_text()
    assert "not run: needs" in capsys.readouterr().err
    assert tool.main(["fine"]) == 0
