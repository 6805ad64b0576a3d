"""The configs under recipes/nlp_embed/ load, validate, and mean what their docs say."""

from __future__ import annotations

import pytest

from conftest import REPO
from skdcli.engine.config import build_config
from skdcli.nlp_embed.config import NlpEmbedConfig

RECIPE = REPO / "recipes" / "nlp_embed"


@pytest.mark.parametrize("name", ["ptb.yaml", "wikitext2.yaml"])
def test_real_data_configs_load(name: str) -> None:
    cfg = build_config(NlpEmbedConfig, RECIPE / name)
    assert cfg.model.d_embed == 650 and cfg.model.num_layers == 2 and cfg.data.bptt == 35
    assert cfg.kd.method == "skd" and cfg.kd.topk <= 64 and cfg.train.max_steps > 10_000
