"""Session fixtures of the dataset-distill recipe: scikit-learn's real 8x8 digits prepared through
`prep --source digits`, a 4-step stage-1 (cgan) run and a 4-step stage-2 (match, with the self-KD
term) run from it, on models small enough that a step takes milliseconds. Shared by the CLI tests
(treat as read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import invoke_json, sets

# generator / critic / classifiers a few thousand parameters big; evaluation cells of a few steps
DD_TINY = [
    "generator.channels=8",
    "discriminator.channels=8",
    "classifier.convnet_width=4",
    "classifier.convnet_depth=2",
    "classifier.resnet_width=2",
    "select.steps=3",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.batch_size=32",
    "match.online_batches=2",
    "eval.epochs=2",
    "eval.full_real_steps=3",
    "eval.repeats=2",
]

GOLDEN_TRAJECTORY = {  # step -> the values the shared tiny match run logs (tests/test_golden_trajectories.py)
    1: {
        "loss": 14.51481,
        "loss/g_adversarial": 0.4481777,
        "loss/g_class": 2.593706,
        "loss/match_skd": 0.5464622,
        "weight/mse": 0,
        "weight/skd": 1,
        "loss/d_wasserstein": 0.2990475,
        "loss/d_class": 5.07357,
        "loss/d_gp": 0.5553849,
        "loss/generator": 3.588346,
        "loss/critic": 10.92647,
    },
    2: {
        "loss": 13.26024,
        "loss/g_adversarial": 0.4393511,
        "loss/g_class": 2.650951,
        "loss/match_skd": 0.4652343,
        "weight/mse": 0,
        "weight/skd": 1,
        "loss/d_wasserstein": 0.284525,
        "loss/d_class": 5.240332,
        "loss/d_gp": 0.4179852,
        "loss/generator": 3.555537,
        "loss/critic": 9.704708,
    },
    3: {
        "loss": 14.40141,
        "loss/g_adversarial": 0.4492821,
        "loss/g_class": 2.580791,
        "loss/match_skd": 0.4427966,
        "weight/mse": 0,
        "weight/skd": 1,
        "loss/d_wasserstein": 0.2656491,
        "loss/d_class": 5.411776,
        "loss/d_gp": 0.5251113,
        "loss/generator": 3.47287,
        "loss/critic": 10.92854,
    },
    4: {
        "loss": 17.51308,
        "loss/g_adversarial": 0.481472,
        "loss/g_class": 2.782521,
        "loss/match_skd": 0.527635,
        "weight/mse": 0,
        "weight/skd": 1,
        "loss/d_wasserstein": 0.2236552,
        "loss/d_class": 5.307754,
        "loss/d_gp": 0.8190047,
        "loss/generator": 3.791628,
        "loss/critic": 13.72146,
    },
}


@pytest.fixture(scope="session")
def dataset_distill_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dd_data") / "digits"
    invoke_json("dataset-distill", "prep", "--source", "digits", "--out", out)
    return out


@pytest.fixture(scope="session")
def dataset_distill_cgan(dataset_distill_data, tmp_path_factory) -> Path:
    """A finished 4-step stage-1 run."""
    run_dir = tmp_path_factory.mktemp("dd_runs") / "cgan"
    invoke_json(
        "dataset-distill",
        "train",
        "--stage",
        "cgan",
        "--data",
        dataset_distill_data,
        "--run-dir",
        run_dir,
        "--max-steps",
        "4",
        *sets(*DD_TINY),
    )
    return run_dir


@pytest.fixture(scope="session")
def dataset_distill_run(dataset_distill_data, dataset_distill_cgan, tmp_path_factory) -> Path:
    """A finished 4-step stage-2 run (pool matching + self-KD) from the stage-1 run, exported."""
    run_dir = tmp_path_factory.mktemp("dd_runs") / "skd"
    invoke_json(
        "dataset-distill",
        "train",
        "--stage",
        "match",
        "--init",
        dataset_distill_cgan,
        "--data",
        dataset_distill_data,
        "--run-dir",
        run_dir,
        "--max-steps",
        "4",
        *sets(*DD_TINY, "match.redraw_every_steps=2"),
    )
    invoke_json("dataset-distill", "export", "--run-dir", run_dir)
    return run_dir
