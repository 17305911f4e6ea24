"""The gsdf-eval command line: JSON keys, set runs, tables, and a clean failure per bad input."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gsdf_eval.cli import main
from gsdf_eval.run import PAIR_KEYS


def _cli(*args: str) -> subprocess.CompletedProcess:
    """Run the installed console script (beside this interpreter), as a user would."""
    exe = Path(sys.executable).parent / "gsdf-eval"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gsdf_eval"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=120)


def _assert_clean_failure(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    # progress-bar updates aside, stderr is one line
    lines = [
        ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("gsdf-eval:")
    ]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ")
    for w in words:
        assert w in lines[0], lines[0]


def _invoke_fails(*args, words=()) -> None:
    """In-process run of a command that must fail: exit 1, one line on stderr, no exception."""
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("gsdf-eval:")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_pair_json_has_exactly_the_keys(examples_dir):
    g, p = examples_dir / "gt", examples_dir / "pred"
    res = CliRunner().invoke(
        main,
        ["pair", "--hand-pred", p / "s000_hand.ply", "--hand-gt", g / "s000_hand.ply",
         "--obj-pred", p / "s000_obj.ply", "--obj-gt", g / "s000_obj.ply", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert list(out) == list(PAIR_KEYS)
    # s000 is the GT scaled by 1.08 and shifted: alignment undoes it
    assert out["align_scale"] == pytest.approx(1 / 1.08, rel=0.01)
    assert out["hand_fscore_5mm"] == pytest.approx(1.0, abs=1e-3)
    assert out["obj_fscore_5mm"] == pytest.approx(1.0, abs=1e-3)
    assert len(out["align_translation"]) == 3
    assert isinstance(out["contact"], bool)


def test_pair_identical_meshes_and_hand_only(examples_dir):
    hand = examples_dir / "gt" / "s001_hand.ply"
    res = CliRunner().invoke(main, ["pair", "--hand-pred", hand, "--hand-gt", hand, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["hand_fscore_5mm"] == pytest.approx(1.0, abs=1e-6)  # 2PR/(P + R + 1e-7)
    # RMS residual under 1 mm after moment matching: the reference protocol never solves,
    # so the scale is the ratio of two samplings' RMS radii
    assert out["align_scale"] == pytest.approx(1.0, abs=5e-3)
    for key in (
        "obj_cd_cm2",
        "obj_fscore_5mm",
        "obj_fscore_10mm",
        "penetration_cm",
        "intersection_cm3",
        "contact",
    ):
        assert out[key] is None


def _write_ply(path: Path, vertices, faces, dtype: str = "float") -> Path:
    lines = ["ply", "format ascii 1.0", f"element vertex {len(vertices)}", f"property {dtype} x",
             f"property {dtype} y", f"property {dtype} z", f"element face {len(faces)}",
             "property list uchar int vertex_indices", "end_header"]  # fmt: skip
    lines += [" ".join(repr(x) if isinstance(x, float) else str(x) for x in v) for v in vertices]
    lines += ["3 " + " ".join(str(i) for i in f) for f in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def bad_meshes(tmp_path):
    tri = [[0, 0, 0], [0.01, 0, 0], [0, 0.01, 0]]
    return {
        "missing": tmp_path / "nope.ply",
        "unreadable": tmp_path / "garbage.ply",
        "empty": _write_ply(tmp_path / "empty.ply", tri, []),
        "nan": _write_ply(
            tmp_path / "nan.ply", [[0, 0, 0], ["nan", 0, 0], [0, 0.01, 0]], [[0, 1, 2]]
        ),
    }


@pytest.mark.parametrize(
    ("kind", "words"),
    [("missing", ["nope.ply", "no such file"]), ("unreadable", ["garbage.ply"]),
     ("empty", ["empty.ply", "empty"]), ("nan", ["nan.ply", "NaN"])],
)  # fmt: skip
def test_pair_bad_mesh_fails_cleanly(bad_meshes, examples_dir, kind, words):
    bad_meshes["unreadable"].write_bytes(b"\x00\x01 definitely not a mesh \xff" * 10)
    gt = str(examples_dir / "gt" / "s000_hand.ply")
    bad = str(bad_meshes[kind])
    for args in (["--hand-pred", bad, "--hand-gt", gt],
                 ["--hand-pred", gt, "--hand-gt", gt, "--obj-pred", gt, "--obj-gt", bad]):  # fmt: skip
        res = CliRunner().invoke(main, ["pair", *args])
        assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
        for w in words:
            assert w in lines[0]


def test_bad_input_through_the_installed_script(tmp_path, examples_dir):
    """The real console script: exit status 1, one line, no traceback."""
    gt = examples_dir / "gt" / "s000_hand.ply"
    _assert_clean_failure(
        _cli("pair", "--hand-pred", tmp_path / "nope.ply", "--hand-gt", gt), "no such file"
    )


def test_pair_prediction_without_gt_fails_cleanly(examples_dir):
    g, p = examples_dir / "gt", examples_dir / "pred"
    _invoke_fails(
        "pair",
        "--hand-pred",
        p / "s000_hand.ply",
        "--hand-gt",
        g / "s000_hand.ply",
        "--obj-pred",
        p / "s000_obj.ply",
        words=("--obj-gt"),
    )


def _copy_set(examples_dir: Path, dst: Path) -> tuple[Path, Path]:
    shutil.copytree(examples_dir / "pred", dst / "pred")
    shutil.copytree(examples_dir / "gt", dst / "gt")
    return dst / "pred", dst / "gt"


def test_run_prediction_without_gt_fails_cleanly(examples_dir, tmp_path):
    pred, gt = _copy_set(examples_dir, tmp_path)
    (gt / "s001_obj.ply").unlink()
    _invoke_fails(
        "run",
        pred,
        gt,
        "--out",
        tmp_path / "out",
        "--points",
        2000,
        words=("s001_obj.ply", "no ground truth"),
    )


def test_run_bad_sample_stops_or_is_skipped(examples_dir, tmp_path):
    pred, gt = _copy_set(examples_dir, tmp_path)
    _write_ply(pred / "s002_hand.ply", [[0, 0, 0], ["nan", 0, 0], [0, 0.01, 0]], [[0, 1, 2]])
    _invoke_fails(
        "run", pred, gt, "--out", tmp_path / "out", "--points", 2000, words=("s002_hand.ply", "NaN")
    )
    res = CliRunner().invoke(main, ["run", str(pred), str(gt), "--out", str(tmp_path / "out"),
                                    "--points", "2000", "--on-error", "skip"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["id"] for s in summary["skipped"]] == ["s002"]
    assert summary["n_scored"] == 3


def test_run_bad_directories_and_json_fail_cleanly(examples_dir, tmp_path):
    _invoke_fails("run", tmp_path / "none", examples_dir / "gt", words=("does not exist"))
    empty = tmp_path / "empty"
    empty.mkdir()
    _invoke_fails("run", empty, examples_dir / "gt", words=("no predicted meshes"))
    pred, gt = _copy_set(examples_dir, tmp_path / "copy")
    (pred / "s000.json").write_text('{"joints": [[0, 0]]}')
    _invoke_fails(
        "run", pred, gt, "--out", tmp_path / "out", "--points", 2000, words=("s000.json", "joints")
    )


def test_table_on_non_run_fails_cleanly(tmp_path):
    _invoke_fails("table", tmp_path, words=("not a gsdf-eval run"))
    (tmp_path / "summary.json").write_text("[]")
    _invoke_fails("table", tmp_path, words=("not a gsdf-eval summary"))


def test_run_then_table(examples_dir, tmp_path):
    out1, out2 = tmp_path / "run1", tmp_path / "run2"
    runner = CliRunner()
    res = runner.invoke(main, ["run", str(examples_dir / "pred"), str(examples_dir / "gt"),
                               "--out", str(out1), "--points", "3000"])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["run", str(examples_dir / "pred"), str(examples_dir / "gt"),
                               "--out", str(out2), "--points", "3000", "--jobs", "2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    # per-sample seeds: the job count does not change any number
    assert (out1 / "per_sample.csv").read_text() == (out2 / "per_sample.csv").read_text()

    rows = list(csv.DictReader((out1 / "per_sample.csv").open()))
    assert [r["id"] for r in rows] == ["s000", "s001", "s002", "s003"]
    summary = json.loads((out1 / "summary.json").read_text())
    m = summary["metrics"]
    hand_cd = [float(r["hand_cd_cm2"]) for r in rows]
    assert m["hand_cd_cm2"]["stat"] == "median"
    assert m["hand_cd_cm2"]["value"] == pytest.approx(np.median(hand_cd))
    fs = [float(r["hand_fscore_1mm"]) for r in rows]
    assert m["hand_fscore_1mm"]["value"] == pytest.approx(np.mean(fs))
    contact = [r["contact"] == "True" for r in rows if r["contact"]]
    assert m["contact_ratio_pct"]["value"] == pytest.approx(100 * np.mean(contact))
    assert m["obj_cd_cm2"]["n"] == 3  # s003 has no object prediction
    # pushed 8 mm into the hand; the open cylinder's depth is libigl's (2|w| − 1)·d, |w| < 1
    assert rows[2]["contact"] == "True" and float(rows[2]["penetration_cm"]) > 0.3
    assert summary["protocol"] == "gsdf" and summary["n_expected"] == 4

    for fmt, marker in (("md", "| CDh |"), ("latex", r"\begin{tabular}"), ("csv", "Run,CDh,")):
        res = runner.invoke(main, ["table", str(out1), str(out2 / "summary.json"), "--format", fmt])
        assert res.exit_code == 0, res.output
        assert marker in res.output
        assert "run1" in res.output and "run2" in res.output
    png = tmp_path / "cd.png"
    res = runner.invoke(main, ["table", str(out1), str(out2), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _run(examples_dir, out, *extra, pred=None, gt=None):
    res = CliRunner().invoke(
        main,
        ["run", str(pred or examples_dir / "pred"), str(gt or examples_dir / "gt"),
         "--out", str(out), "--points", "2000", *map(str, extra)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return json.loads((out / "summary.json").read_text())


def test_table_records_protocols_and_refuses_mixing_them(examples_dir, tmp_path):
    a = _run(examples_dir, tmp_path / "ref")
    b = _run(examples_dir, tmp_path / "conv", "--protocol", "converged")
    assert (a["protocol"], b["protocol"]) == ("gsdf", "converged")
    assert a["settings"]["protocol"] == "gsdf"
    # the default is the reference protocol, and the table says so
    res = CliRunner().invoke(main, ["table", str(tmp_path / "ref")])
    assert res.exit_code == 0 and "Protocol: gsdf." in res.output, res.output
    _invoke_fails(
        "table", tmp_path / "ref", tmp_path / "conv", words=("different protocols", "converged")
    )
    for fmt in ("md", "latex", "csv"):
        res = CliRunner().invoke(
            main,
            ["table", str(tmp_path / "ref"), str(tmp_path / "conv"), "--mixed-protocols",
             "--format", fmt],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        assert "gsdf" in res.output and "converged" in res.output
    # the two protocols do differ (ICP stopping, samples, contact)
    assert a["metrics"]["hand_cd_cm2"]["value"] != b["metrics"]["hand_cd_cm2"]["value"]


def test_partial_run_is_marked(examples_dir, tmp_path):
    pred, gt = _copy_set(examples_dir, tmp_path)
    for f in pred.glob("s001*"):
        f.unlink()
    res = CliRunner().invoke(
        main, ["run", str(pred), str(gt), "--out", str(tmp_path / "out"), "--points", "2000"]
    )
    assert res.exit_code == 0, res.output
    assert "scored 3 of 4 GT samples" in res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_expected"] == 4 and summary["n_scored"] == 3
    assert summary["gt_without_prediction"] == ["s001"]
    res = CliRunner().invoke(main, ["table", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    header, _, row = res.output.splitlines()[:3]
    cells = dict(zip(header.strip("|").split("|"), row.strip("|").split("|"), strict=True))
    cells = {k.strip(): v.strip() for k, v in cells.items()}
    assert cells["CDh"].endswith("*") and cells["CDo"].endswith("*"), cells
    assert "* out: partial" in res.output, res.output
    assert "CDh, FSh@1, FSh@5 over 3 of 4" in res.output, res.output
    assert "CDo, FSo@5, FSo@10, Eh, Eo, Cr, Pd, Iv, Eh-rel over 2 of 4" in res.output
    # a complete run has no mark (the bundled s003 predicts no object or pose: drop their GT)
    pred, gt = _copy_set(examples_dir, tmp_path / "complete")
    (gt / "s003_obj.ply").unlink()
    (gt / "s003.json").unlink()
    full = _run(examples_dir, tmp_path / "full", pred=pred, gt=gt)
    assert full["n_scored"] == full["n_expected"] == 4
    res = CliRunner().invoke(main, ["table", str(tmp_path / "full")])
    assert res.exit_code == 0 and "*" not in res.output, res.output


def test_units_millimetres(examples_dir, tmp_path):
    """Meshes in millimetres are refused as metres, naming the file, and scored with
    --units mm exactly as the metre files are."""
    mm = tmp_path / "mm"
    for sub in ("pred", "gt"):
        (mm / sub).mkdir(parents=True)
        for f in (examples_dir / sub).iterdir():
            if f.suffix == ".ply":
                import trimesh

                # written exactly (doubles): a float32 file would move the vertices by
                # nanometres, enough to flip lattice nodes lying exactly on a box face,
                # which the reference protocol's lattice does for axis-aligned faces
                m = trimesh.load(f, process=False)
                verts = [[float(x) for x in v] for v in np.asarray(m.vertices) * 1000.0]
                _write_ply(mm / sub / f.name, verts, m.faces.tolist(), dtype="double")
            else:
                data = json.loads(f.read_text())
                data = {k: (np.asarray(v) * 1000.0).tolist() for k, v in data.items()}
                (mm / sub / f.name).write_text(json.dumps(data))
    hand_p, hand_g = mm / "pred" / "s000_hand.ply", mm / "gt" / "s000_hand.ply"
    _invoke_fails(
        "pair", "--hand-pred", hand_p, "--hand-gt", hand_g, words=("s000_hand.ply", "--units mm")
    )
    _invoke_fails(
        "run", mm / "pred", mm / "gt", "--out", tmp_path / "x", words=("_hand.ply", "over 1 m")
    )
    _invoke_fails(  # metres declared as millimetres
        "pair", "--hand-pred", examples_dir / "pred" / "s000_hand.ply", "--hand-gt",
        examples_dir / "gt" / "s000_hand.ply", "--units", "mm", words=("s000_hand.ply",),
    )  # fmt: skip
    a = _run(examples_dir, tmp_path / "m")
    b = _run(examples_dir, tmp_path / "mmrun", "--units", "mm", pred=mm / "pred", gt=mm / "gt")
    assert b["settings"]["units"] == "mm"
    for key, entry in a["metrics"].items():
        if entry["value"] is not None:
            assert b["metrics"][key]["value"] == pytest.approx(entry["value"], rel=1e-6), key


def test_run_into_an_output_folder_that_cannot_be_made_fails_in_one_line(examples_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a file where the output folder's parent should be
    _invoke_fails(
        "run",
        examples_dir / "pred",
        examples_dir / "gt",
        "--out",
        blocker / "run",
        words=(str(blocker),),
    )


def _summary(folder, name, cdh, eh, n=4, n_expected=4):
    folder.mkdir(parents=True)
    metrics = {
        "hand_cd_cm2": {"value": cdh, "n": n, "n_expected": n_expected},
        "hand_joint_err_cm": {"value": eh, "n": 4, "n_expected": 4},
    }
    summary = {"name": name, "protocol": "gsdf", "n_expected": 4, "n_scored": n}
    (folder / "summary.json").write_text(json.dumps(summary | {"metrics": metrics}))
    return folder


def test_table_groups_seeds_into_mean_and_sample_sd(tmp_path):
    runs = [
        _summary(tmp_path / "a0", "full-s0", 1.0, 2.0),
        _summary(tmp_path / "b0", "k1-s0", 3.0, 5.0),
        _summary(tmp_path / "a1", "full-s1", 2.0, 4.0),
        _summary(tmp_path / "a2", "full-s2", 4.5, 6.0, n=3),
        _summary(tmp_path / "c", "sphere", 9.0, 9.0),
    ]
    res = CliRunner().invoke(main, ["table", "--group-seeds", *map(str, runs)])
    assert res.exit_code == 0, res.output
    rows = {ln.split("|")[1].strip(): ln.split("|") for ln in res.output.splitlines()[2:5]}
    assert list(rows) == ["full", "k1", "sphere"]  # in order of first appearance
    full = rows["full"]
    # CDh 1, 2, 4.5: mean 2.5, sample sd sqrt(((1.5)^2 + 0.5^2 + 2^2) / 2) = 1.803;
    # one of the three seeds is partial in CDh, so the cell is starred
    assert full[2].strip() == "3" and full[3].strip() == "2.500 ± 1.803*"
    assert full[9].strip() == "4.00 ± 2.00"  # Eh 2, 4, 6
    assert rows["k1"][3].strip() == "3.000" and rows["sphere"][2].strip() == "1"  # one seed
    assert "mean ± sample standard deviation" in res.output
    res = CliRunner().invoke(main, ["table", "--group-seeds", "--format", "csv", str(runs[0])])
    assert res.exit_code == 2 and "markdown only" in res.output
