"""Session fixtures of the sleep recipe: tiny synthetic SHHS-like and Sleep-EDF-like recordings
in the real on-disk formats (EDF + NSRR/Profusion XML; EDF + EDF+ hypnograms), prepared through
the real readers, and one tiny trained + exported run shared by the CLI tests (treat as read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import invoke_json, sets

SLEEP_FIXTURES = Path(__file__).parent / "fixtures" / "sleep"

# a model that trains a step in a few ms on 2 cores; 6 steps are enough to exercise every stage
SLEEP_TINY = [
    "model.d_model=16",
    "model.n_heads=2",
    "model.patch_len=100",
    "train.batch_size=10",
    "train.warmup_steps=2",
    "train.log_every=1",
]


GOLDEN_TRAJECTORY = {  # step -> the values the shared tiny run logs (tests/test_golden_trajectories.py)
    1: {"loss": 1.881797, "loss/ce": 1.806071, "loss/kd": 0.07572578, "weight/kd": 1.0},
    2: {"loss": 1.908282, "loss/ce": 1.83645, "loss/kd": 0.07183189, "weight/kd": 1.0},
    3: {"loss": 1.900867, "loss/ce": 1.801354, "loss/kd": 0.09951387, "weight/kd": 1.0},
    4: {"loss": 1.66306, "loss/ce": 1.581582, "loss/kd": 0.0814773, "weight/kd": 1.0},
    5: {"loss": 1.704484, "loss/ce": 1.639935, "loss/kd": 0.0645491, "weight/kd": 1.0},
    6: {"loss": 1.687592, "loss/ce": 1.629966, "loss/kd": 0.05762588, "weight/kd": 1.0},
}


@pytest.fixture(scope="session")
def sleep_raw(tmp_path_factory) -> dict[str, Path]:
    from skdcli.sleep.synth import write_shhs_like, write_sleep_edf_like

    root = tmp_path_factory.mktemp("sleep_raw")
    return {
        "shhs": write_shhs_like(root / "shhs", recordings=4, epochs=50, seed=0),
        "sleep-edf": write_sleep_edf_like(root / "sedf", subjects=2, nights=2, epochs=40, seed=1),
    }


@pytest.fixture(scope="session")
def sleep_shhs(sleep_raw, tmp_path_factory) -> Path:
    from skdcli.sleep.data import prepare_dataset

    out = tmp_path_factory.mktemp("sleep_prep") / "shhs"
    prepare_dataset("shhs", sleep_raw["shhs"], out)
    return out


@pytest.fixture(scope="session")
def sleep_sedf(sleep_raw, tmp_path_factory) -> Path:
    from skdcli.sleep.data import prepare_dataset

    out = tmp_path_factory.mktemp("sleep_prep") / "sedf"
    prepare_dataset("sleep-edf", sleep_raw["sleep-edf"], out)
    return out


@pytest.fixture(scope="session")
def sleep_run(sleep_shhs, tmp_path_factory) -> Path:
    """A finished 6-step SKD + selective-sampling run on the SHHS-like set."""
    run_dir = tmp_path_factory.mktemp("sleep_runs") / "skd"
    invoke_json(
        "sleep",
        "train",
        "--data",
        sleep_shhs,
        "--run-dir",
        run_dir,
        "--max-steps",
        "6",
        *sets(*SLEEP_TINY, "train.eval_every=3", "train.checkpoint_every=3"),
    )
    return run_dir


@pytest.fixture(scope="session")
def sleep_export(sleep_run) -> Path:
    invoke_json("sleep", "export", "--run-dir", sleep_run)
    return sleep_run / "export"
