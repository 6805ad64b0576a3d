"""The configs under recipes/xqa/ load, validate, and mean what their comments say."""

from __future__ import annotations

from pathlib import Path

import yaml

from conftest import REPO, invoke_json, sets
from skdcli.engine.config import build_config
from skdcli.xqa.config import XqaConfig

RECIPE = REPO / "recipes" / "xqa"


def test_paper_configs_hold_the_paper_s_hyperparameters() -> None:
    stage2 = build_config(XqaConfig, RECIPE / "mbert_xquad.yaml")
    assert (stage2.data.max_seq_length, stage2.data.doc_stride, stage2.data.max_query_length) == (384, 128, 64)
    assert stage2.train.lr == 5e-5 and stage2.train.batch_size == 24 and stage2.train.grad_accum == 4
    assert stage2.epochs == 3 and stage2.kd.temperature == 2.0 and stage2.kd.map_coefficient
    assert stage2.kd.generations and stage2.train.warmup_steps == 0 and stage2.train.weight_decay == 0.0
    stage1 = build_config(XqaConfig, RECIPE / "mbert_squad_stage1.yaml")
    assert stage1.kd.method == "ce" and stage1.epochs == 2 and stage1.train.lr == 3e-5 and stage1.train.batch_size == 6


def test_the_paper_config_trains_a_step_on_the_tiny_corpus(xqa_data: Path, tmp_path: Path) -> None:
    # The documented stage-2 command, shrunk to the tiny model (128 positions) and one optimizer step.
    out = invoke_json(
        "xqa",
        "train",
        "--data",
        xqa_data,
        "--run-dir",
        tmp_path / "r",
        "--config",
        RECIPE / "mbert_xquad.yaml",
        "--init",
        xqa_data / "init",
        "--max-steps",
        "1",
        "--device",
        "cpu",
        *sets("data.max_seq_length=64", "data.doc_stride=24", "data.max_query_length=20", f"data.dev={xqa_data}"),
    )
    assert out["steps"] == 1 and out["method"] == "skd_map"
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["train"]["grad_accum"] == 4 and saved["kd"]["temperature"] == 2.0
