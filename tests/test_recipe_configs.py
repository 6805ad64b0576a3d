"""The configs under recipes/ load, validate, and mean what their docs say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO, invoke_json, sets
from skdcli.asr_ctc.config import AsrCtcConfig
from skdcli.engine.config import build_config

RECIPE = REPO / "recipes" / "asr_ctc"


def test_real_data_configs_load(tmp_path: Path) -> None:
    ls = build_config(AsrCtcConfig, RECIPE / "librispeech.yaml")
    assert ls.model.num_layers == 12 and ls.kd.method == "skd" and ls.train.max_steps > 10_000
    (tmp_path / "config.json").write_text("{}")
    hubert = build_config(AsrCtcConfig, RECIPE / "hubert_librispeech.yaml", [f"model.pretrained={tmp_path}"])
    assert hubert.model.encoder == "hf" and hubert.data.feature == "waveform" and hubert.model.student_layer == 8


# The documented real-data command lines, shrunk to one step on each recipe's tiny corpus:
# (task, data fixture, config, --set items, entries of the saved config.yaml)
PAPER_CONFIG_STEPS = [
    (
        "asr-ctc",
        "tiny_corpus",
        "asr_ctc/librispeech.yaml",
        ("train.batch_size=4", "train.num_workers=0", "train.warmup_steps=1"),
        {("model", "num_layers"): 12, ("train", "batch_size"): 4},
    ),
    (
        "nlp-embed",
        "nlp_embed_corpus",
        "nlp_embed/ptb.yaml",
        ("train.batch_size=2", "train.warmup_steps=1", "train.eval_every=0"),
        {("model", "d_hidden"): 650, ("train", "batch_size"): 2},
    ),
]


@pytest.mark.parametrize(
    "task, fixture, config, overrides, saved", PAPER_CONFIG_STEPS, ids=[c[2] for c in PAPER_CONFIG_STEPS]
)
def test_paper_config_trains_a_step_on_cpu(
    task: str, fixture: str, config: str, overrides: tuple, saved: dict, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    data = request.getfixturevalue(fixture)
    result = invoke_json(
        task,
        "train",
        "--data",
        data,
        "--run-dir",
        tmp_path / "run",
        "--config",
        REPO / "recipes" / config,
        "--device",
        "cpu",
        "--max-steps",
        "1",
        *sets(*overrides),
    )
    assert result["steps"] == 1 and result["parameters"] > 5_000_000  # the paper-size model, not the tiny one
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert {key: written[key[0]][key[1]] for key in saved} == saved


def test_gradient_accumulation_matches_the_full_batch(tiny_corpus: Path, tmp_path: Path) -> None:
    common = [
        "asr-ctc",
        "train",
        "--data",
        tiny_corpus,
        "--max-steps",
        "3",
        *sets(
            "model.d_model=32",
            "model.num_layers=2",
            "model.student_layer=1",
            "model.num_heads=2",
            "model.ff_dim=64",
            "model.conv_channels=8",
            "train.batch_size=8",
            "train.log_every=1",
            "model.dropout=0.0",
            "model.spec_augment.enabled=false",
            "train.eval_every=0",
        ),
    ]
    invoke_json(*common, "--run-dir", tmp_path / "full")
    invoke_json(*common, "--run-dir", tmp_path / "accum", *sets("train.grad_accum=2"))

    def losses(run: Path) -> list[float]:
        return [
            r["loss"]
            for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["split"] == "train"
        ]

    assert losses(tmp_path / "accum") == pytest.approx(losses(tmp_path / "full"), rel=1e-5)


@pytest.mark.slow
def test_readme_main_command_learns(tmp_path: Path) -> None:
    """`skd asr-ctc run` exactly as the README's first line: synthetic corpus, default config."""
    result = invoke_json("asr-ctc", "run", "--run-dir", tmp_path / "asr")
    assert result["steps"] == 800 and result["split"] == "test"
    assert result["wer"] < 0.5 and result["wer_teacher"] < 0.5  # measured: about 0.27 / 0.28
    assert result["parity_max_abs_diff"] < 1e-4
    assert (tmp_path / "asr" / "data" / "prep.json").is_file()


def test_every_config_states_the_effective_kd_weight_against_the_official_preset() -> None:
    """Issue 14 item 3: each config's kd_weight comment gives the KD term's weight relative to
    the unofficial code's F.kl_div(reduction="mean") (kd.reduction=official, w = 1)."""
    import re

    from skdcli.asr_ctc.config import kd_weight_vs_official
    from skdcli.asr_ctc.tokenizer import CharTokenizer

    for name in ("tiny.yaml", "librispeech.yaml", "hubert_librispeech.yaml"):
        text = (RECIPE / name).read_text()
        extra = [f"model.pretrained={RECIPE}"] if name.startswith("hubert") else []
        cfg = build_config(AsrCtcConfig, RECIPE / name, extra)
        stated = re.search(r"kd_weight:.*EFFECTIVE WEIGHT = ([\d.]+) x the official preset's", text.replace("\n", " "))
        assert stated, name
        assert float(stated.group(1)) == kd_weight_vs_official(cfg.kd, CharTokenizer().vocab_size), name
    official = AsrCtcConfig().kd
    official.reduction = "official"
    assert kd_weight_vs_official(official, 29) == 1.0
