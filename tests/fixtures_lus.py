"""Session fixtures of the lus recipe: synthetic B-mode clips in the official MeDiVLAD layout (16 px), prepared
through the real reader by `skd lus prep`; one tiny DINO pretraining run (`skd lus pretrain`) and one tiny video
dual-VLAD run on its teacher (`skd lus train`), shared by the CLI tests (treat as read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import invoke_json, sets

# a ViT that takes a few ms per DINO step on 2 cores: 16 px frames, 4 px patches (16 tokens), width 16, one block
LUS_TINY_VIT = ["model.img_size=16", "model.patch_size=4", "model.embed_dim=16", "model.depth=1", "model.num_heads=2"]
LUS_TINY_DINO = [
    *LUS_TINY_VIT,
    "dino.out_dim=32",
    "dino.hidden_dim=32",
    "dino.bottleneck_dim=16",
    "aug.local_crops_number=2",
    "aug.local_size=8",
    "train.batch_size=8",
    "dino.epoch_steps=2",
    "dino.teacher_temp=0.06",  # the official final temperature, so the 0.04 -> 0.06 warm-up runs
    "train.warmup_steps=1",
    "train.log_every=1",
]
LUS_TINY_VIDEO = [
    *LUS_TINY_VIT,
    "video.seq_len=4",
    "train.batch_size=4",
    "train.warmup_steps=1",
    "train.log_every=1",
    "features.batch_size=512",
]

GOLDEN_TRAJECTORY = {  # step -> the values the shared tiny video run logs (tests/test_golden_trajectories.py)
    1: {"loss": 1.145075, "loss/ce": 1.145075},
    2: {"loss": 1.119096, "loss/ce": 1.119096},
    3: {"loss": 1.071317, "loss/ce": 1.071317},
    4: {"loss": 1.087928, "loss/ce": 1.087928},
    5: {"loss": 1.100643, "loss/ce": 1.100643},
    6: {"loss": 1.064844, "loss/ce": 1.064844},
}

# the DINO pretraining run under it (tests/test_lus_cli.py::test_pretrain_golden_trajectory): the loss and every
# schedule (teacher temperature 0.04 -> 0.06 per 2-step epoch, EMA momentum cosine 0.98 -> 1, weight decay 0.1 -> 0.5)
PRETRAIN_GOLDEN = {
    1: {
        "loss": 2.590169,
        "loss/dino": 2.590169,
        "weight/teacher_temp": 0.04,
        "weight/teacher_momentum": 0.98,
        "weight/weight_decay": 0.1,
    },
    2: {
        "loss": 2.443233,
        "loss/dino": 2.443233,
        "weight/teacher_temp": 0.04,
        "weight/teacher_momentum": 0.98134,
        "weight/weight_decay": 0.126795,
    },
    3: {
        "loss": 3.494583,
        "loss/dino": 3.494583,
        "weight/teacher_temp": 0.06,
        "weight/teacher_momentum": 0.985,
        "weight/weight_decay": 0.2,
    },
    4: {
        "loss": 2.243091,
        "loss/dino": 2.243091,
        "weight/teacher_temp": 0.06,
        "weight/teacher_momentum": 0.99,
        "weight/weight_decay": 0.3,
    },
    5: {
        "loss": 1.824279,
        "loss/dino": 1.824279,
        "weight/teacher_temp": 0.06,
        "weight/teacher_momentum": 0.995,
        "weight/weight_decay": 0.4,
    },
    6: {
        "loss": 2.135306,
        "loss/dino": 2.135306,
        "weight/teacher_temp": 0.06,
        "weight/teacher_momentum": 0.99866,
        "weight/weight_decay": 0.473205,
    },
}


@pytest.fixture(scope="session")
def lus_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lus_data") / "prepared"
    invoke_json("lus", "prep", "--source", "synthetic", "--out", out, "--size", "16")
    return out


@pytest.fixture(scope="session")
def lus_pretrain(lus_data, tmp_path_factory) -> Path:
    """A finished 6-step DINO run (EMA teacher, centre, schedules) on the tiny frames."""
    run_dir = tmp_path_factory.mktemp("lus_runs") / "pretrain"
    invoke_json(
        "lus",
        "pretrain",
        "--data",
        lus_data,
        "--run-dir",
        run_dir,
        "--max-steps",
        "6",
        *sets(*LUS_TINY_DINO, "train.checkpoint_every=3", "train.eval_every=3"),
    )
    return run_dir


@pytest.fixture(scope="session")
def lus_run(lus_data, lus_pretrain, tmp_path_factory) -> Path:
    """A finished 6-step video dual-VLAD run (fold 1) on the pretraining run's teacher."""
    run_dir = tmp_path_factory.mktemp("lus_runs") / "video"
    invoke_json(
        "lus",
        "train",
        "--data",
        lus_data,
        "--run-dir",
        run_dir,
        "--level",
        "video",
        "--fold",
        "1",
        "--aggregator",
        "dual_vlad",
        "--backbone",
        lus_pretrain,
        "--max-steps",
        "6",
        *sets(*LUS_TINY_VIDEO, "train.checkpoint_every=3"),
    )
    return run_dir


@pytest.fixture(scope="session")
def lus_export(lus_run) -> Path:
    invoke_json("lus", "export", "--run-dir", lus_run)
    return lus_run / "export"
