"""The configs under recipes/nlp_embed/ load, validate, and mean what their docs say."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO, invoke_json, sets
from skdcli.engine.config import build_config
from skdcli.nlp_embed.config import NlpEmbedConfig

RECIPE = REPO / "recipes" / "nlp_embed"


def test_tiny_yaml_is_the_embedded_default() -> None:
    assert build_config(NlpEmbedConfig, RECIPE / "tiny.yaml") == NlpEmbedConfig()


@pytest.mark.parametrize("name", ["ptb.yaml", "wikitext2.yaml"])
def test_real_data_configs_load(name: str) -> None:
    cfg = build_config(NlpEmbedConfig, RECIPE / name)
    assert cfg.model.d_embed == 650 and cfg.model.num_layers == 2 and cfg.data.bptt == 35
    assert cfg.kd.method == "skd" and cfg.kd.topk <= 64 and cfg.train.max_steps > 10_000


def test_ptb_config_trains_a_step_on_cpu(nlp_embed_corpus: Path, tmp_path: Path) -> None:
    # The documented real-data command line, shrunk to one step on the tiny corpus.
    result = invoke_json("nlp-embed", "train", "--data", nlp_embed_corpus, "--run-dir", tmp_path / "ptb",
                         "--config", RECIPE / "ptb.yaml", "--device", "cpu", "--max-steps", "1",
                         *sets("train.batch_size=2", "train.warmup_steps=1", "train.eval_every=0"))
    assert result["steps"] == 1 and result["parameters"] > 5_000_000
    saved = yaml.safe_load((tmp_path / "ptb" / "config.yaml").read_text())
    assert saved["model"]["d_hidden"] == 650 and saved["train"]["batch_size"] == 2
