"""gsdf_model.train: stages, frozen pose, lr halving, checkpoints (atomic, round trip),
resume — with a small stand-in network of the GSDFNet API so these run in seconds."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from support.train_helpers import CFG, K, StandInNet, sample

from gsdf_model.data import InMemoryShards
from gsdf_model.train import (
    UserError,
    get_train_preset,
    load_checkpoint_file,
    lr_at,
    model_from_checkpoint,
    train,
)


@pytest.fixture(scope="module")
def shards():
    rng = np.random.default_rng(0)
    return InMemoryShards([sample(rng, i) for i in range(16)])


def run(tmp_path, shards, cfg=CFG, resume=True, out="run", build=StandInNet):
    return train(
        "tiny",
        data=tmp_path,
        out=tmp_path / out,
        train_cfg=cfg,
        device="cpu",
        resume=resume,
        progress=False,
        build=build,
        shards=shards,
    )


def epochs(path):
    return [json.loads(x) for x in path.read_text().splitlines() if '"kind": "epoch"' in x]


def test_two_stages_freeze_pose_and_halve_lr(tmp_path, shards):
    summary = run(tmp_path, shards)
    assert summary["epochs"] == 5
    recs = epochs(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in recs] == [1, 2, 3, 4, 5]
    assert [r["stage"] for r in recs] == [1, 1, 2, 2, 2]
    # lr restarts at stage 2 and halves every 1 (stage 1) / 2 (stage 2) epochs of its stage
    assert [r["lr"] for r in recs] == pytest.approx([3e-3, 1.5e-3, 3e-3, 3e-3, 1.5e-3])
    s1 = load_checkpoint_file(tmp_path / "run" / "stage1.pt")
    last = load_checkpoint_file(tmp_path / "run")
    assert s1["epoch"] == 2 and s1["stage"] == 1 and last["epoch"] == 5 and last["stage"] == 2
    for k in ("pose.weight", "pose.bias"):
        torch.testing.assert_close(s1["model"][k], last["model"][k], rtol=0, atol=0)
    assert not torch.equal(s1["model"]["hand.0.weight"], last["model"]["hand.0.weight"])
    # no temporary files left behind
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "config.json",
        "last.pt",
        "metrics.jsonl",
        "stage1.pt",
    ]


def test_losses_fall(tmp_path, shards):
    cfg = dataclasses.replace(
        CFG, pose_epochs=6, sdf_epochs=6, pose_lr_halve_every=100, lr_halve_every=100
    )
    run(tmp_path, shards, cfg)
    recs = epochs(tmp_path / "run" / "metrics.jsonl")
    s1 = [r["loss"] for r in recs if r["stage"] == 1]
    s2 = [r["loss_sdf_hand"] for r in recs if r["stage"] == 2]
    assert s1[-1] < 0.5 * s1[0]
    assert s2[-1] < 0.8 * s2[0]


def test_checkpoint_round_trip(tmp_path, shards):
    run(tmp_path, shards)
    ckpt = load_checkpoint_file(tmp_path / "run" / "last.pt")
    assert ckpt["model_preset"] == "tiny"
    assert ckpt["train_config"] == dataclasses.asdict(CFG)
    assert ckpt["model_config"]["name"] == "tiny"
    net, cfg = model_from_checkpoint(ckpt, build=StandInNet)
    assert cfg.name == "tiny" and not net.training
    ref = StandInNet(cfg)
    ref.load_state_dict(torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"])
    x = torch.rand(2, 3, 64, 64)
    Ks = torch.from_numpy(K)[None].expand(2, 3, 3)
    a, b = net.encode(x, Ks), ref.encode(x, Ks)
    torch.testing.assert_close(a["joints"], b["joints"])


def test_resume_continues_from_saved_epoch(tmp_path, shards):
    short = dataclasses.replace(CFG, sdf_epochs=1)
    run(tmp_path, shards, short)
    assert load_checkpoint_file(tmp_path / "run")["epoch"] == 3
    summary = run(tmp_path, shards, CFG)
    assert summary["start_epoch"] == 3
    recs = epochs(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in recs] == [1, 2, 3, 4, 5]
    # the resumed run equals an uninterrupted one (same data stream, same optimizer state)
    run(tmp_path, shards, CFG, out="straight")
    a = load_checkpoint_file(tmp_path / "run")["model"]
    b = load_checkpoint_file(tmp_path / "straight")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # re-running a finished run trains nothing
    assert run(tmp_path, shards, CFG)["start_epoch"] == 5


def test_no_resume_starts_over(tmp_path, shards):
    run(tmp_path, shards, dataclasses.replace(CFG, sdf_epochs=1))
    summary = run(
        tmp_path, shards, dataclasses.replace(CFG, pose_epochs=1, sdf_epochs=0), resume=False
    )
    assert summary["start_epoch"] == 0
    assert [r["epoch"] for r in epochs(tmp_path / "run" / "metrics.jsonl")] == [1]


def test_user_errors(tmp_path, shards):
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoint_file(tmp_path / "nothing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load_checkpoint_file(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="does not exist"):
        train("tiny", tmp_path / "missing", tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="unknown preset"):
        train("nope", tmp_path, tmp_path / "out", progress=False, shards=shards)


def test_presets_hold_the_reference_schedules():
    tiny = get_train_preset("tiny")
    assert tiny.pose_epochs + tiny.sdf_epochs <= 150 and tiny.num_workers == 0
    paper = get_train_preset("obman")
    # reference pose_kpt: 100 epochs, halved at 40 and 80, b192; SDF stage: 1600 epochs,
    # 64 x 4 GPUs, halved at 600 and 1200, own points through epoch 1200 (0-based)
    assert (paper.pose_epochs, paper.pose_batch_size, paper.pose_lr_halve_every) == (100, 192, 40)
    assert (paper.sdf_epochs, paper.batch_size, paper.lr, paper.lr_halve_every) == (
        1600,
        256,
        1e-4,
        600,
    )
    assert paper.own_points_epochs == 1201
    halvings = [e for e in range(1, 1600) if lr_at(paper, 2, e) < lr_at(paper, 2, e - 1)]
    assert halvings == [600, 1200]
    assert [e for e in range(1, 100) if lr_at(paper, 1, e) < lr_at(paper, 1, e - 1)] == [40, 80]
    # ObMan's pose stage also trains on the frames without SDF points (train_138k): its
    # schedule expects pose-only samples; DexYCB's crops shift by up to 10 % per axis
    # (ObMan's not); otherwise the schedules are one
    assert paper.pose_only == "expect" and get_train_preset("dexycb").pose_only == "use"
    assert paper.crop_shift == 0.0
    assert get_train_preset("k1") == get_train_preset("dexycb")
    assert get_train_preset("dexycb") == paper.replace(pose_only="use", crop_shift=0.1)
    assert get_train_preset("dexycb-video").batch_size == 64  # 16 clips x 4 GPUs
    with pytest.raises(KeyError, match="unknown preset"):
        get_train_preset("nope")  # never another preset's schedule


def test_scaled_schedule_keeps_its_proportions():
    short = get_train_preset("obman").scaled(160)
    assert (short.sdf_epochs, short.pose_epochs) == (160, 10)
    assert (short.lr_halve_every, short.own_points_epochs, short.pose_lr_halve_every) == (
        60,
        120,
        4,
    )
    assert get_train_preset("obman").scaled(160, pose_epochs=50).pose_lr_halve_every == 20


def test_own_points_until_the_reference_epoch(tmp_path, shards):
    seen = []

    class Recording(StandInNet):
        def loss(self, batch, out, stage, own_points=None):
            seen.append((stage, own_points))
            return super().loss(batch, out, stage)

    cfg = dataclasses.replace(CFG, own_points_epochs=2)
    train("tiny", tmp_path, tmp_path / "run", cfg, progress=False, build=Recording, shards=shards)
    per_epoch = [seen[i] for i in range(0, len(seen), 4)]  # 4 steps per epoch
    assert per_epoch == [(1, None), (1, None), (2, 64), (2, 64), (2, None)]


def test_warmup_ramps_lr_at_the_start_of_each_stage(tmp_path, shards):
    cfg = dataclasses.replace(
        CFG, pose_epochs=2, sdf_epochs=2, warmup_steps=6, pose_lr_halve_every=9
    )
    run(tmp_path, shards, cfg)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    steps = [r for r in map(json.loads, lines) if r["kind"] == "step"]
    for stage in (1, 2):
        lrs = [r["lr"] for r in steps if r["stage"] == stage]
        # 16 samples / batch 4 = 4 steps per epoch, 8 per stage
        assert lrs == pytest.approx([3e-3 * min(1.0, k / 6) for k in range(1, 9)])


def test_backbone_weights_load_into_the_real_network(tmp_path, shards):
    from gsdf_model.backbone import ResNet
    from gsdf_model.config import get_preset

    cfg = get_preset("tiny")
    torch.manual_seed(123)
    donor = ResNet(cfg.backbone_width, cfg.backbone_blocks)
    torch.save(donor.state_dict(), tmp_path / "resnet.pth")
    one = dataclasses.replace(CFG, pose_epochs=1, sdf_epochs=0, lr=0.0)
    train("tiny", tmp_path, tmp_path / "run", one, progress=False, shards=shards,
          backbone_weights=tmp_path / "resnet.pth")  # fmt: skip
    state = load_checkpoint_file(tmp_path / "run")["model"]
    convs = [k for k in state if k.startswith("backbones.") and k.endswith("conv1.weight")]
    assert convs
    for k in convs:  # lr 0: the loaded weights are what the checkpoint holds
        name = k.split(".", 2)[2]
        torch.testing.assert_close(state[k], donor.state_dict()[name], rtol=0, atol=0)
    with pytest.raises(UserError, match="no backbone weights"):
        train("tiny", tmp_path, tmp_path / "r2", one, progress=False, shards=shards,
              backbone_weights=tmp_path / "missing.pth")  # fmt: skip
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="cannot load backbone weights"):
        train("tiny", tmp_path, tmp_path / "r3", one, progress=False, shards=shards,
              backbone_weights=tmp_path / "bad.pth")  # fmt: skip


def test_checkpoint_records_its_hand_model_and_refuses_another(tmp_path, shards):
    from gsdf_model.config import get_preset

    one = dataclasses.replace(CFG, pose_epochs=1, sdf_epochs=0)
    run(tmp_path, shards, one)
    ckpt = load_checkpoint_file(tmp_path / "run")
    assert ckpt["hand_model"] == "procedural"
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(b"stand-in for a MANO file")
    mano_cfg = get_preset("tiny", mano_path=str(tmp_path / "MANO_RIGHT.pkl"))
    longer = dataclasses.replace(one, pose_epochs=2)
    with pytest.raises(UserError, match="trained on hand model procedural"):
        train("tiny", tmp_path, tmp_path / "run", longer, model_cfg=mano_cfg, progress=False,
              build=StandInNet, shards=shards)  # fmt: skip
    with pytest.raises(UserError, match="pass the same MANO file"):
        model_from_checkpoint(ckpt, build=StandInNet, mano_path=tmp_path / "MANO_RIGHT.pkl")
    with pytest.raises(UserError, match="no MANO file"):
        train("tiny", tmp_path, tmp_path / "r2", one, model_cfg=get_preset("tiny", mano_path="x"),
              progress=False, build=StandInNet, shards=shards)  # fmt: skip


def test_init_from_a_single_frame_checkpoint_takes_all_but_the_transformer(tmp_path):
    from gsdf_model.config import get_preset
    from gsdf_model.network import GSDFNet
    from gsdf_model.runtime import CHECKPOINT_FORMAT, save_atomic
    from gsdf_model.train import init_from_checkpoint

    def ik(kp):
        return torch.eye(3).expand(kp.shape[0], 16, 3, 3), torch.zeros(kp.shape[0], 16, 3)

    torch.manual_seed(1)
    single = GSDFNet(get_preset("tiny", visual="v3"), ik=ik).state_dict()
    ckpt = {"format": CHECKPOINT_FORMAT, "model": single, "hand_model": "procedural"}
    save_atomic(ckpt, tmp_path / "single.pt")
    torch.manual_seed(2)
    video = GSDFNet(get_preset("tiny", visual="v4", n_frames=3), ik=ik)
    before = {k: v.clone() for k, v in video.state_dict().items()}
    n = init_from_checkpoint(video, tmp_path / "single.pt", "procedural")
    after = video.state_dict()
    transformer = [k for k in after if k.startswith("visual.transformer.")]
    assert transformer and n == len(after) - len(transformer)
    for k, v in after.items():
        expected = before[k] if k in transformer else single[k]
        torch.testing.assert_close(v, expected, rtol=0, atol=0)
    with pytest.raises(UserError, match="another hand model"):
        init_from_checkpoint(video, tmp_path / "single.pt", "mano:abc")


@pytest.mark.parametrize("frames", ["all", "middle"])
def test_video_training_sees_every_frames_labels_and_the_shifted_crop(tmp_path, frames):
    """The trainer's video batches: every frame's labels in stage 2 by default (frame t's
    with video_frames="middle"), the crop shifted with the virtual camera (K's principal
    point at the image centre; the samples' own is not)."""
    from gsdf_model.config import get_preset
    from gsdf_model.network import GSDFNet

    seen = []

    class Recording(GSDFNet):
        def loss(self, batch, out, stage=2, own_points=None):
            seen.append((stage, tuple(batch["K"].shape), batch["K"][..., :2, 2].clone()))
            return super().loss(batch, out, stage, own_points)

    def ik(kp):
        return torch.eye(3).expand(kp.shape[0], 16, 3, 3), torch.zeros(kp.shape[0], 16, 3)

    rng = np.random.default_rng(3)
    shards = InMemoryShards([sample(rng, i) for i in range(8)])  # one sequence, frames 0..7
    cfg = dataclasses.replace(
        CFG, pose_epochs=1, sdf_epochs=1, n_hand=8, n_obj=8, augment=True,
        rotation_prob=0.0, crop_shift=0.1, video_frames=frames, video_clips="consecutive",
    )  # fmt: skip
    train(
        "tiny", data=tmp_path, out=tmp_path / "run", train_cfg=cfg,
        model_cfg=get_preset("tiny", visual="v4", n_frames=3), device="cpu", progress=False,
        build=lambda c: Recording(c, ik=ik), shards=shards,
    )  # fmt: skip
    own_pp = (sample(np.random.default_rng(0), 0)["K"][0, 2] + 0.5) * 4 - 0.5  # resized 64→256
    assert own_pp != 128.0
    stage2 = [(shape, pp) for stage, shape, pp in seen if stage == 2]
    assert stage2 and all(
        shape == ((4, 3, 3, 3) if frames == "all" else (4, 3, 3)) for shape, _ in stage2
    )
    assert all(torch.allclose(pp, torch.tensor(128.0)) for _, _, pp in seen)


def test_video_stage2_draws_one_random_clip_per_sequence_stage1_every_frame(tmp_path):
    """The reference's video training: each epoch one clip per sequence (three of its frames
    drawn at random), while the pose stage still sees every frame."""
    from gsdf_model.config import get_preset
    from gsdf_model.network import GSDFNet

    seen = {1: [], 2: []}

    class Recording(GSDFNet):
        def loss(self, batch, out, stage=2, own_points=None):
            seen[stage].append(batch["image"].shape[0])
            return super().loss(batch, out, stage, own_points)

    def ik(kp):
        return torch.eye(3).expand(kp.shape[0], 16, 3, 3), torch.zeros(kp.shape[0], 16, 3)

    rng = np.random.default_rng(5)
    samples = [sample(rng, i) for i in range(12)]
    for i, s in enumerate(samples):  # four sequences of three frames (batches of 4)
        s["seq_id"], s["frame_idx"] = f"q{i // 3}", i % 3
    cfg = dataclasses.replace(CFG, pose_epochs=1, sdf_epochs=2, n_hand=8, n_obj=8)
    assert cfg.video_clips == "random"  # the default
    train(
        "tiny", data=tmp_path, out=tmp_path / "run", train_cfg=cfg,
        model_cfg=get_preset("tiny", visual="v4", n_frames=3), device="cpu", progress=False,
        build=lambda c: Recording(c, ik=ik), shards=InMemoryShards(samples),
    )  # fmt: skip
    assert sum(seen[1]) == 12  # one pose epoch: every frame
    assert sum(seen[2]) == 2 * 4  # two SDF epochs: one clip per sequence each


FORKED_WORKERS = """
import dataclasses, sys
import cv2, numpy as np
from gsdf_model.data import InMemoryShards
from support.train_helpers import CFG, sample

# OpenCV's pool starts its threads in this process before the loader forks its worker.
img = np.zeros((2048, 2048, 3), np.uint8)
for _ in range(3):
    cv2.warpAffine(img, np.float32([[1, 0.1, 3], [0.1, 1, 2]]), (2048, 2048))
from gsdf_model.train import train
cfg = dataclasses.replace(CFG, pose_epochs=1, sdf_epochs=1, num_workers=1, augment=True)
rng = np.random.default_rng(0)
train("tiny", data=sys.argv[1], out=sys.argv[1] + "/run", train_cfg=cfg, device="cpu",
      progress=False, shards=InMemoryShards([sample(rng, i) for i in range(8)]))
print("RESULT", flush=True)
"""


def test_loader_workers_start_after_opencv_has_started_threads(tmp_path):
    """Regression: a forked loader worker that set OpenCV's thread count waited forever once
    the parent's OpenCV pool had threads. Run in its own process group, killed on timeout."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    tests = str(Path(__file__).parents[1])  # where `support` lives
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-c", FORKED_WORKERS, str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("training with a forked loader worker hung")
    assert proc.returncode == 0, err[-2000:]
    assert "RESULT" in out


SEEN: dict[int, list[str]] = {1: [], 2: []}


class _Recording(StandInNet):
    """The stand-in network, noting in SEEN which samples each stage's steps see."""

    def forward(self, batch, stage):
        SEEN[stage].extend(batch["sample_id"])
        return super().forward(batch, stage)


def test_stage1_trains_on_pose_only_samples_and_stage2_does_not(tmp_path):
    """A shard set with 8 samples with points and 4 pose-only ones: each stage-1 epoch sees
    all 12, each stage-2 epoch the 8 with points; a set without pose-only samples trains
    both stages on the same samples, as before."""
    from support.shard_samples import pose_only_sample, write_set

    from gsdf_data.shards import ShardSet

    rng = np.random.default_rng(0)
    mesh = {"hand_verts": np.eye(3), "hand_faces": [[0, 1, 2]]}
    mesh |= {"obj_verts": np.eye(3), "obj_faces": [[0, 1, 2]]}
    samples = [sample(rng, i) | mesh for i in range(12)]
    pose = [pose_only_sample({**s, "sample_id": f"p{i}"}) for i, s in enumerate(samples[8:])]
    root = tmp_path / "shards"
    root.mkdir()
    write_set(root, [samples[:4] + pose[:2], samples[4:8], pose[2:]], n_points=2000)
    SEEN.update({1: [], 2: []})
    summary = run(tmp_path, ShardSet(root), build=_Recording)
    ids = [f"s{i:03d}" for i in range(8)]
    assert summary["stage_samples"] == {"stage1": 12, "pose_only": 4, "stage2": 8, "note": None}
    assert sorted(SEEN[1]) == sorted((ids + [f"p{i}" for i in range(4)]) * 2)
    assert sorted(SEEN[2]) == sorted(ids * 3)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["stage1"] == 12
    # ignored on request: stage 1 on the samples with points only
    SEEN.update({1: [], 2: []})
    cfg = dataclasses.replace(CFG, pose_only="ignore")
    summary = run(tmp_path, ShardSet(root), cfg=cfg, out="ignore", build=_Recording)
    assert summary["stage_samples"]["stage1"] == 8
    assert sorted(SEEN[1]) == sorted(ids * 2)
