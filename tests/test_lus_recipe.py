"""lus Tasks: the DINO step's mechanics (EMA teacher, centre, frozen last layer, weight-decay schedule),
the feature cache (video training never re-runs the ViT), and bit-exact resume after kill -9 in
pretraining and in video training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from skdcli.engine.config import merge_into, parse_set_overrides, validate_config
from skdcli.engine.rundir import RunDir
from skdcli.engine.schedules import Progress
from skdcli.engine.trainer import Trainer
from skdcli.lus.config import LusConfig, PretrainConfig
from skdcli.lus.data import prepare_dataset
from skdcli.lus.model import VisionTransformer
from skdcli.lus.recipe import DinoTask, VideoTask

REPO = Path(__file__).resolve().parent.parent
TINY_DINO = [
    "model.embed_dim=24",
    "model.depth=1",
    "model.num_heads=2",
    "dino.out_dim=32",
    "dino.hidden_dim=32",
    "dino.bottleneck_dim=16",
    "aug.local_crops_number=2",
    "train.batch_size=8",
    "dino.epoch_steps=3",
    "dino.teacher_temp=0.06",
    "train.log_every=1",
    "train.warmup_steps=2",
]


@pytest.fixture(scope="session")
def lus_small_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lus_small")
    prepare_dataset("synthetic", root / "raw", root / "prep", size=16)
    return root / "prep"


def _cfg(cls, sets):
    cfg = cls()
    merge_into(cfg, parse_set_overrides(sets))
    validate_config(cfg)
    return cfg


def test_dino_step_mechanics(lus_small_data):
    cfg = _cfg(
        PretrainConfig,
        TINY_DINO + ["model.img_size=16", "aug.local_size=8", "model.patch_size=4", "dino.momentum_teacher=0.9"],
    )
    task = DinoTask(cfg, lus_small_data)
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]},
            {"params": [p for p in model.parameters() if p.requires_grad and p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=1e-2,
        weight_decay=0.1,
    )
    order = task.epoch_order(task.train_dataset(), 0, 1, 8)
    assert len(order) == len(task.train_set) // 8 * 8 and len(set(order)) > 8
    last_layer0 = model.head.last_layer.weight_v.detach().clone()
    for step in range(4):
        progress = Progress(step, 20, 1, 1)
        teachers = task.teachers()
        teacher_before = {k: v.clone() for k, v in teachers["ema"].model.state_dict().items()}
        loss, logs = task.compute_loss(model, task.collate(order[step * 8 : (step + 1) * 8]), progress)
        opt.zero_grad()
        loss.backward()
        task.before_optimizer_step(model, opt, progress)
        assert opt.param_groups[0]["weight_decay"] == pytest.approx(logs["weight/weight_decay"])
        frozen = step < cfg.dino.epoch_steps  # freeze_last_layer_epochs = 1
        assert (model.head.last_layer.weight_v.grad is None) == frozen
        opt.step()
        assert torch.equal(model.head.last_layer.weight_v, last_layer0) == frozen
        d = teachers["ema"].current_decay()
        for t in teachers.values():
            t.on_step_end(model, step + 1)
        student = model.state_dict()
        for k, v in teachers["ema"].model.state_dict().items():  # theta_t <- d theta_t + (1 - d) theta_s
            assert torch.allclose(v, d * teacher_before[k] + (1 - d) * student[k], atol=1e-6)
        assert logs["weight/teacher_temp"] == pytest.approx(
            0.04 if step < 3 else 0.06
        )  # linspace(0.04, 0.06, 2) per epoch
    assert teachers["center"].center.abs().sum() > 0


def test_video_training_never_reruns_the_vit(lus_small_data, monkeypatch, tmp_path):
    cfg = _cfg(
        LusConfig,
        [
            "model.img_size=16",
            "model.patch_size=4",
            "model.embed_dim=16",
            "model.depth=1",
            "model.num_heads=2",
            "video.seq_len=4",
            "train.max_steps=3",
            "train.batch_size=4",
        ],
    )
    first = VideoTask(cfg, lus_small_data)
    assert not first.features.from_cache and first.features.cache_file.is_file()

    def no_vit(*args, **kwargs):
        raise AssertionError("the ViT ran during video training")

    monkeypatch.setattr(VisionTransformer, "forward", no_vit)
    again = VideoTask(cfg, lus_small_data)
    assert again.features.from_cache
    assert torch.equal(again.features.clips, first.features.clips)
    (tmp_path / "v").mkdir()
    result = Trainer(again, cfg.train, RunDir(tmp_path / "v"), torch.device("cpu"), show_progress=False).fit()
    assert result.steps == 3


SLOW_STAGE = """
import sys, time, json
from skdcli.engine.contract import StageOptions
from skdcli.lus import recipe
cls = getattr(recipe, sys.argv[1])
original = cls.compute_loss
def slow(self, *a):
    time.sleep(float(sys.argv[2]))
    return original(self, *a)
cls.compute_loss = slow
kind, data, run_dir = sys.argv[3], sys.argv[4], sys.argv[5]
opts = StageOptions(run_dir=run_dir, data=data, sets=json.loads(sys.argv[6]), device="cpu", checkpoint_every=2)
hooks = recipe.LusHooks()
(hooks.pretrain if kind == "pretrain" else hooks.train)(opts, show_progress=False)
"""


def _start_slow(cls: str, delay: float, kind: str, data: Path, run_dir: Path, sets: list[str]) -> subprocess.Popen:
    """The run to kill: a subprocess whose every step sleeps ``delay`` s, so it can be killed mid-run."""
    import json

    args = [sys.executable, "-c", SLOW_STAGE, cls, str(delay), kind, str(data), str(run_dir), json.dumps(sets)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _train_here(kind: str, data: Path, run_dir: Path, resume: bool, sets: list[str]) -> None:
    """The uninterrupted run and the resumed one, in this process (only the killed run needs its own)."""
    from skdcli.engine.contract import StageOptions
    from skdcli.lus.recipe import LusHooks

    opts = StageOptions(
        run_dir=str(run_dir),
        data=str(data),
        sets=[] if resume else sets,
        resume=resume,
        device="cpu",
        checkpoint_every=None if resume else 2,
    )
    hooks = LusHooks()
    (hooks.pretrain if kind == "pretrain" else hooks.train)(opts, show_progress=False)


def _kill_after_checkpoint(proc, run_dir: Path, step: int) -> None:
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / f"step_{step:08d}").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "train_summary.json").exists()


def _final_state(run_dir: Path, steps: int):
    ckpt = run_dir / "checkpoints" / f"step_{steps:08d}"
    return load_file(ckpt / "model.safetensors"), RunDir.load_state(ckpt)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pretrain", "video"])
def test_kill9_then_resume_is_bit_exact(kind, lus_small_data, tmp_path):
    if kind == "pretrain":
        cls, steps = "DinoTask", 8
        sets = TINY_DINO + [
            "model.img_size=16",
            "aug.local_size=8",
            "model.patch_size=4",
            f"train.max_steps={steps}",
            "train.keep_checkpoints=20",
            "dino.center_mode=per_position",
        ]
    else:
        cls, steps = "VideoTask", 8
        sets = [
            "model.img_size=16",
            "model.patch_size=4",
            "model.embed_dim=16",
            "model.depth=1",
            "model.num_heads=2",
            "video.seq_len=4",
            f"train.max_steps={steps}",
            "train.batch_size=4",
            "train.keep_checkpoints=20",
        ]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed subprocess (OMP_NUM_THREADS=1): the same float reductions
    try:
        _train_here(kind, lus_small_data, straight, False, sets)
        proc = _start_slow(cls, 0.15, kind, lus_small_data, killed, sets)
        _kill_after_checkpoint(proc, killed, 4)
        _train_here(kind, lus_small_data, killed, True, sets)
    finally:
        torch.set_num_threads(threads)
    w1, s1 = _final_state(straight, steps)
    w2, s2 = _final_state(killed, steps)
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    if kind == "pretrain":  # the EMA teacher, its update count and the centre resume exactly too
        t1, t2 = s1["teachers"]["ema"], s2["teachers"]["ema"]
        assert t1["num_updates"] == t2["num_updates"] == steps
        assert all(torch.equal(t1["model"][k], t2["model"][k]) for k in t1["model"])
        assert torch.equal(s1["teachers"]["center"]["center"], s2["teachers"]["center"]["center"])
        assert s1["optimizer"]["param_groups"][0]["weight_decay"] == s2["optimizer"]["param_groups"][0]["weight_decay"]
    import json

    losses = [
        [
            (r["step"], r["loss"])
            for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
            if r["split"] == "train"
        ]
        for d in (straight, killed)
    ]
    assert losses[0] == losses[1]


def test_random_init_baseline_is_the_pretraining_starting_point(lus_small_data):
    """`--baseline` / backbone.path="" builds the ViT DINO starts from (same architecture and seed): the grid's
    'random init' rows measure what DINO adds to its own initialisation."""
    from skdcli.lus.features import load_backbone

    vit = ["model.img_size=16", "model.patch_size=4", "model.embed_dim=16", "model.depth=1", "model.num_heads=2"]
    pre = _cfg(PretrainConfig, [*vit, "train.seed=3", "model.drop_path_rate=0.1"])
    torch.manual_seed(pre.train.seed)  # what the Trainer does before build_model
    student = DinoTask(pre, lus_small_data).build_model().backbone.state_dict()
    random = load_backbone(_cfg(LusConfig, [*vit, "train.seed=3"])).model.state_dict()
    assert student.keys() == random.keys() and all(torch.equal(student[k], random[k]) for k in student)
