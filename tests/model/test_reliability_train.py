"""`gsdf-train train` refuses what is not what the user meant, with one line: incomplete or
damaged shard sets, impossible options, an output folder it cannot write; and it says how
many samples it trains on. The training itself is replaced by a stand-in that records what
it was given: these cases are about what happens before any step is taken."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from gsdf_model.cli import main


@pytest.fixture()
def trained(monkeypatch):
    """Replace the training loop; record the dataset and configuration it was handed."""
    import gsdf_model.train as train_module

    calls = []

    def fake_train(preset, data, out, cfg, **kw):
        calls.append({"cfg": cfg, "shards": kw.get("shards")})
        return {
            "start_epoch": 0,
            "epochs": cfg.pose_epochs + cfg.sdf_epochs,
            "final_loss": 1.0,
            "samples_per_s": 1.0,
            "checkpoint": str(out),
        }

    monkeypatch.setattr(train_module, "train", fake_train)
    return calls


def _train(data, out, *extra):
    args = ["train", "--preset", "tiny", "--data", str(data), "--out", str(out), *extra]
    return CliRunner().invoke(main, args)


def _one_line_error(res, *words):
    assert res.exit_code != 0, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    lines = [x for x in res.output.splitlines() if x.startswith("Error")]
    assert len(lines) == 1, res.output
    for w in words:
        assert w in lines[0], res.output


def test_complete_set_trains_and_says_on_how_many_samples(data, tmp_path, trained):
    res = _train(data, tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "training on 3 samples (2 shards)" in res.output
    assert len(trained[0]["shards"]) == 3


def test_says_how_many_samples_each_stage_trains_on(tmp_path, trained):
    """Stage 1 also trains on the set's pose-only samples (frames without SDF points, as the
    reference's ObMan pose stage), stage 2 on the samples with points; both counts printed."""
    from support.shard_samples import write_finished_set

    data = tmp_path / "pose"
    data.mkdir()
    write_finished_set(data, pose_only=2)
    res = _train(data, tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "training on 3 samples + 2 pose-only (2 shards)" in res.output
    assert "5 samples incl. 2 pose-only; stage 2 (SDF, 60 epochs): 3 samples" in res.output
    assert len(trained[0]["shards"]) == 3  # train() gets the set; stage 1 adds them itself
    res = _train(data, tmp_path / "run2", "--pose-only", "ignore")
    assert "3 samples incl. 0 pose-only, 2 pose-only ignored" in res.output


def test_a_set_without_the_expected_pose_only_samples_is_said(data, tmp_path, trained):
    """The obman preset expects pose-only samples (its stage 1 on all training frames): one
    warning line when the set has none, an error with --pose-only require."""
    args = ["train", "--preset", "obman", "--data", str(data), "--backbone-weights", "none"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "3 samples incl. 0 pose-only" in res.output
    warn = [x for x in res.output.splitlines() if x.startswith("warning")]
    assert len(warn) == 1 and "no pose-only samples" in warn[0] and "--pose-only" in warn[0]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b"), "--pose-only", "require"])
    _one_line_error(res, "no pose-only samples")
    assert len(trained) == 1
    # the tiny preset does not expect them: no warning, exactly as before
    res = _train(data, tmp_path / "c")
    assert res.exit_code == 0 and "warning" not in res.output


def test_init_from_skips_the_pose_stage_unless_asked(data, tmp_path, trained):
    """The reference's V4 starts from a trained single-frame model and trains no pose stage
    (its pose net comes from the checkpoint, frozen); --pose-epochs N still trains one."""
    ckpt = tmp_path / "single.pt"
    ckpt.write_bytes(b"")  # the stand-in trainer never opens it
    res = _train(data, tmp_path / "a", "--init-from", str(ckpt))
    assert res.exit_code == 0, res.output
    assert "no pose stage" in res.output
    assert trained[-1]["cfg"].pose_epochs == 0 and trained[-1]["cfg"].sdf_epochs > 0
    res = _train(data, tmp_path / "b", "--init-from", str(ckpt), "--pose-epochs", "3")
    assert res.exit_code == 0 and "no pose stage" not in res.output
    assert trained[-1]["cfg"].pose_epochs == 3
    assert _train(data, tmp_path / "c").exit_code == 0
    assert trained[-1]["cfg"].pose_epochs > 0  # without --init-from: the preset's


def test_seed_reaches_the_training_configuration(data, tmp_path, trained):
    assert _train(data, tmp_path / "a").exit_code == 0
    assert _train(data, tmp_path / "b", "--seed", "7").exit_code == 0
    assert [c["cfg"].seed for c in trained] == [0, 7]


def test_missing_manifest_is_refused_unless_partial_is_allowed(data, tmp_path, trained):
    (data / "manifest.json").unlink()
    _one_line_error(_train(data, tmp_path / "run"), "no manifest.json", "--allow-partial")
    assert trained == []
    res = _train(data, tmp_path / "run", "--allow-partial")
    assert res.exit_code == 0, res.output
    assert "training on 3 samples" in res.output


def test_interrupted_prepare_is_refused(data, tmp_path, trained):
    """A killed or `--shard k/n` prepare: the manifest lists fewer shards than the run makes."""
    m = json.loads((data / "manifest.json").read_text())
    m["expected_shards"] = 5
    (data / "manifest.json").write_text(json.dumps(m))
    _one_line_error(_train(data, tmp_path / "run"), "2 of 5 shards")
    assert trained == []
    res = _train(data, tmp_path / "run", "--allow-partial")
    assert res.exit_code == 0 and "training on 3 samples" in res.output


def test_missing_shard_is_refused(data, tmp_path, trained):
    (data / "shard-00001.h5").unlink()
    _one_line_error(_train(data, tmp_path / "run"), "shard-00001.h5", "missing")
    res = _train(data, tmp_path / "run", "--allow-partial")
    assert res.exit_code == 0 and "training on 2 samples (1 shards)" in res.output


def test_extra_shard_is_refused(data, tmp_path, trained):
    shutil.copy(data / "shard-00000.h5", data / "shard-00007.h5")
    _one_line_error(_train(data, tmp_path / "run"), "shard-00007.h5", "not in manifest.json")
    assert trained == []


def test_truncated_shard_is_refused_even_when_partial(data, tmp_path, trained):
    path = data / "shard-00000.h5"
    path.write_bytes(path.read_bytes()[:-100])
    for extra in ((), ("--allow-partial",)):
        _one_line_error(_train(data, tmp_path / "run", *extra), "shard-00000.h5", "bytes")
    assert trained == []


def test_flipped_byte_is_refused(data, tmp_path, trained):
    path = data / "shard-00001.h5"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    _one_line_error(_train(data, tmp_path / "run"), "checksum mismatch", "shard-00001.h5")
    assert trained == []


@pytest.mark.parametrize(
    "option, value",
    [
        ("--batch-size", "0"),
        ("--lr", "nan"),
        ("--lr", "-1"),
        ("--epochs", "-2"),
        ("--workers", "-1"),
    ],
)
def test_impossible_options_are_refused_by_name(data, tmp_path, trained, option, value):
    res = _train(data, tmp_path / "run", option, value)
    assert res.exit_code == 2, res.output
    assert option in res.output and "Traceback" not in res.output
    assert trained == []


def test_epochs_zero_says_what_it_means(data, tmp_path, trained):
    res = _train(data, tmp_path / "run", "--epochs", "0")
    assert res.exit_code == 2 and "nothing to train" in res.output
    res = _train(data, tmp_path / "run", "--epochs", "0", "--pose-epochs", "2")
    assert res.exit_code == 0, res.output
    assert "pose stage only (2 epochs), no SDF stage" in res.output
    cfg = trained[-1]["cfg"]
    assert (cfg.pose_epochs, cfg.sdf_epochs) == (2, 0)


def test_output_folder_that_cannot_be_made_is_refused_before_work(data, tmp_path, trained):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_error(_train(data, blocker / "run"), "--out", "cannot write")
    assert trained == []


def test_broken_manifest_is_one_line(data, tmp_path, trained):
    (data / "manifest.json").write_text('{"schema_version": 1, "shards": [{"file": 3}]}')
    _one_line_error(_train(data, tmp_path / "run"), "manifest.json")
    (data / "manifest.json").write_text("{not json")
    _one_line_error(_train(data, tmp_path / "run"), "manifest.json", "unreadable")


# --- resume: same preset, same network, same data, or one line (--restart) ---------------


@pytest.fixture(scope="module")
def helpers():
    from support import train_helpers

    return train_helpers


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, helpers):
    """A run directory trained (1 + 1 epochs) with preset tiny on data 'A'."""
    from gsdf_model.data import InMemoryShards
    from gsdf_model.train import train

    rng = np.random.default_rng(0)
    shards = InMemoryShards([helpers.sample(rng, i) for i in range(8)])
    shards.fingerprint = "A"
    out = tmp_path_factory.mktemp("run")
    cfg = _cfg(helpers)
    train("tiny", out, out, cfg, progress=False, build=helpers.StandInNet, shards=shards)
    return out, shards


def _cfg(helpers, **changes):
    import dataclasses

    return dataclasses.replace(helpers.CFG, **{"pose_epochs": 1, "sdf_epochs": 1, **changes})


def _resume(helpers, run_dir, tmp_path, shards, preset="tiny", model_cfg=None, resume=True):
    from gsdf_model.train import train

    out = tmp_path / "run"
    shutil.copytree(run_dir, out, dirs_exist_ok=True)
    return train(
        preset,
        out,
        out,
        _cfg(helpers, sdf_epochs=2),
        model_cfg=model_cfg,
        resume=resume,
        progress=False,
        build=helpers.StandInNet,
        shards=shards,
    )


def test_resume_with_the_same_everything_continues(finished_run, helpers, tmp_path):
    run_dir, shards = finished_run
    s = _resume(helpers, run_dir, tmp_path, shards)
    assert (s["start_epoch"], s["epochs"]) == (2, 3)


def test_resume_with_another_preset_is_one_line(finished_run, helpers, tmp_path):
    from gsdf_model.runtime import UserError

    run_dir, shards = finished_run
    with pytest.raises(UserError, match="trained with preset 'tiny', not 'k1'; --restart") as e:
        _resume(helpers, run_dir, tmp_path, shards, preset="k1")
    assert "\n" not in str(e.value)
    s = _resume(helpers, run_dir, tmp_path, shards, preset="k1", resume=False)
    assert s["start_epoch"] == 0  # --restart: started over on purpose


def test_resume_with_another_model_configuration_is_one_line(finished_run, helpers, tmp_path):
    from gsdf_model.config import get_preset
    from gsdf_model.runtime import UserError

    run_dir, shards = finished_run
    cfg = get_preset("tiny")
    other = cfg.replace(decoder_width=2 * cfg.decoder_width)
    with pytest.raises(UserError, match=r"another model configuration \(decoder_width\)"):
        _resume(helpers, run_dir, tmp_path, shards, model_cfg=other)


def test_resume_on_other_data_is_one_line(finished_run, helpers, tmp_path):
    from gsdf_model.data import InMemoryShards
    from gsdf_model.runtime import UserError

    run_dir, _ = finished_run
    rng = np.random.default_rng(1)
    other = InMemoryShards([helpers.sample(rng, i) for i in range(8)])
    other.fingerprint = "B"
    with pytest.raises(UserError, match="trained on other data \\(shard set A, now B\\)"):
        _resume(helpers, run_dir, tmp_path, other)


def test_weights_that_do_not_fit_are_one_line(finished_run, helpers, tmp_path):
    """A checkpoint whose recorded configuration matches but whose tensors do not (edited or
    written by other code): the first line of the reason, not torch's dump."""
    import torch

    from gsdf_model.runtime import UserError

    run_dir, shards = finished_run
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ckpt["model"] = {k: torch.zeros(3) for k in ckpt["model"]}
    torch.save(ckpt, out / "last.pt")
    with pytest.raises(UserError, match="weights do not fit this network") as e:
        _resume(helpers, out, tmp_path / "x", shards)
    assert "\n" not in str(e.value)


def test_broken_shard_metadata_is_refused_at_open(data, tmp_path, trained):
    """A shard as a buggy writer could leave it (a dataset missing) with a manifest that
    vouches for it: refused when the set is opened, not a KeyError in a loader worker."""
    import h5py

    from gsdf_data.shards import file_sha256

    path = data / "shard-00001.h5"
    with h5py.File(path, "a") as f:
        del f["counts"]
    m = json.loads((data / "manifest.json").read_text())
    entry = next(e for e in m["shards"] if e["file"] == path.name)
    entry.update(sha256=file_sha256(path), bytes=path.stat().st_size)
    (data / "manifest.json").write_text(json.dumps(m))
    _one_line_error(_train(data, tmp_path / "run"), "broken shard", "counts missing")
    assert trained == []


# --- reconstruct / export-gt: options and outputs checked before any work -----------------


@pytest.mark.parametrize(
    "args, option",
    [
        (
            ["reconstruct", "ck.pt", "--data", ".", "--out", "o", "--resolution", "0"],
            "--resolution",
        ),
        (["reconstruct", "ck.pt", "--data", ".", "--out", "o", "--limit", "0"], "--limit"),
        (["export-gt", "--data", ".", "--out", "o", "--limit", "-1"], "--limit"),
    ],
)
def test_reconstruct_options_are_refused_by_name(args, option):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert option in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("command", ["reconstruct", "export-gt"])
def test_reconstruct_output_is_checked_before_work(tmp_path, monkeypatch, command):
    import gsdf_model.reconstruct as rec

    called = []
    monkeypatch.setattr(rec, "reconstruct", lambda *a, **k: called.append(a))
    monkeypatch.setattr(rec, "export_gt", lambda *a, **k: called.append(a))
    (tmp_path / "file").write_text("x")
    out = str(tmp_path / "file" / "o")
    args = ["reconstruct", "ck.pt"] if command == "reconstruct" else ["export-gt"]
    res = CliRunner().invoke(main, [*args, "--data", str(tmp_path), "--out", out])
    _one_line_error(res, "--out", "cannot write")
    assert called == []


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    """Checkpoints load with weights_only: a pickled call is refused, not run."""
    import torch

    from gsdf_model.runtime import UserError
    from gsdf_model.train import load_checkpoint_file

    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    torch.save({"format": "gsdf-checkpoint/1", "model": RunsCode()}, tmp_path / "last.pt")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint_file(tmp_path / "last.pt")
    assert not marker.exists()
