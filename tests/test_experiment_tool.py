"""tools/experiment.py: a resumed study reuses finished steps only when it was defined the
same way (scale, split seeds); otherwise it stops before doing anything."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "experiment.py"


@pytest.fixture
def tool(monkeypatch):
    spec = importlib.util.spec_from_file_location("experiment_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_study_with_other_settings_is_not_resumed(tool, tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"scale": "cpu", "train": 64}))
    with pytest.raises(SystemExit, match="other settings"):
        tool.main(["--out", str(tmp_path), "--scale", "smoke"])
    assert not (tmp_path / "data").exists()


def test_every_scale_turns_hands_the_way_synth_accepts(tool):
    for scale in tool.SCALES.values():
        argv = tool.view(scale)
        assert argv == [] or (argv[0] == "--view-spread" and 0 <= argv[1] <= 180)
