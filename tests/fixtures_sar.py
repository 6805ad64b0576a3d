"""Session fixtures of the sar recipe: a tiny synthetic FUSAR-Ship-layout dataset prepared through the
real reader, one finished DRRNet-SKD run (the one the golden trajectory pins) and its export, shared by
the CLI tests (treat as read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import invoke_json, sets

# 32x32 chips, a quarter-width ResNet-10, 8 chips per batch: a step costs a few ms on 2 cores. One
# generation per epoch (5 steps), so the offline teacher exists from step 6 on.
SAR_TINY = [
    "train.batch_size=8",
    "train.warmup_steps=2",
    "train.log_every=1",
    "kd.drrnet.generation_epochs=1",
    "augment.shift=2",
]

# step -> the values the shared tiny run logs (tests/test_golden_trajectories.py). Step 1: nothing seen yet,
# w_on = eps; no teacher exists. From step 2 the last iteration teaches (half of each batch); from step 6
# (after the first generation) the offline snapshot too.
GOLDEN_TRAJECTORY = {
    1: {
        "loss": 1.570268,
        "weight/off": 0.95,
        "weight/on": 0.05,
        "loss/ce": 1.570268,
        "loss/kl_offline": 0,
        "loss/kl_online": 0,
    },
    2: {
        "loss": 1.576906,
        "weight/off": 0.5,
        "weight/on": 0.5,
        "loss/ce": 1.563879,
        "loss/kl_offline": 0,
        "loss/kl_online": 0.02605318,
    },
    3: {
        "loss": 1.618967,
        "weight/off": 0.5125,
        "weight/on": 0.4875,
        "loss/ce": 1.598969,
        "loss/kl_offline": 0,
        "loss/kl_online": 0.04102042,
    },
    4: {
        "loss": 1.766663,
        "weight/off": 0.54875,
        "weight/on": 0.45125,
        "loss/ce": 1.754643,
        "loss/kl_offline": 0,
        "loss/kl_online": 0.02663603,
    },
    5: {
        "loss": 1.607548,
        "weight/off": 0.581375,
        "weight/on": 0.418625,
        "loss/ce": 1.576408,
        "loss/kl_offline": 0,
        "loss/kl_online": 0.07438616,
    },
    6: {
        "loss": 1.580337,
        "weight/off": 0.5857375,
        "weight/on": 0.4142625,
        "loss/ce": 1.533986,
        "loss/kl_offline": 0.04957026,
        "loss/kl_online": 0.04180109,
    },
}


@pytest.fixture(scope="session")
def sar_data(tmp_path_factory) -> Path:
    """60 synthetic chips (12 per class, 5 classes), FUSAR layout, 32x32 after a 64-pixel centre crop."""
    from skdcli.sar.recipe import prep_stage

    out = tmp_path_factory.mktemp("sar") / "data"
    prep_stage("synthetic", None, str(out), size=32, crop=64, per_class=12)
    return out


@pytest.fixture(scope="session")
def sar_run(sar_data, tmp_path_factory) -> Path:
    """A finished 8-step DRRNet-SKD run (offline snapshot teacher + last-iteration online teacher + AWA)."""
    run_dir = tmp_path_factory.mktemp("sar_runs") / "drrnet"
    invoke_json(
        "sar",
        "train",
        "--data",
        sar_data,
        "--run-dir",
        run_dir,
        "--max-steps",
        "8",
        *sets(*SAR_TINY, "train.eval_every=4", "train.checkpoint_every=4"),
    )
    return run_dir


@pytest.fixture(scope="session")
def sar_export(sar_run) -> Path:
    invoke_json("sar", "export", "--run-dir", sar_run)
    return sar_run / "export"
