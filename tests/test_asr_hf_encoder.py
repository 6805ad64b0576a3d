"""The paper's setup: a HuBERT encoder from a local Hugging Face directory, fed raw waveforms.

The test builds a tiny random HuBERT, saves it in HF format (config.json + model.safetensors),
and runs train -> eval -> export -> transcribe through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import invoke_json, sets

HF_SETS = [
    "model.encoder=hf",
    "data.feature=waveform",
    "model.student_layer=2",
    "train.batch_size=4",
    "train.warmup_steps=1",
    "train.eval_every=0",
    "train.lr=1e-4",
]


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory) -> Path:
    from transformers import HubertConfig, HubertModel

    path = tmp_path_factory.mktemp("hubert")
    config = HubertConfig(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32, 32),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    HubertModel(config).save_pretrained(path)
    assert (path / "model.safetensors").is_file()
    return path


@pytest.mark.slow
def test_hubert_encoder_train_eval_export_transcribe(tiny_hubert: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "hubert-run"
    trained = invoke_json(
        "asr-ctc",
        "train",
        "--data",
        tiny_corpus,
        "--run-dir",
        run_dir,
        "--max-steps",
        "3",
        *sets(*HF_SETS, f"model.pretrained={tiny_hubert}"),
    )
    assert trained["steps"] == 3 and trained["kd_method"] == "skd"
    evaluated = invoke_json("asr-ctc", "eval", "--run-dir", run_dir, "--split", "dev")
    assert "wer_student" in evaluated and "spike_timing" in evaluated
    exported = invoke_json("asr-ctc", "export", "--run-dir", run_dir)
    assert exported["layers"] == 2 and exported["parity_max_abs_diff"] < 1e-4
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["features"]["kind"] == "waveform"
    audio = json.loads((tiny_corpus / "dev.jsonl").read_text().splitlines()[0])["audio"]
    out = invoke_json("asr-ctc", "transcribe", "--model", run_dir / "export", audio)
    assert out["transcripts"][0]["file"] == audio


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_layerdrop_skipped_layers_pass_their_input_through(family: str) -> None:
    """HuBERT Base ships layerdrop=0.1: a skipped layer must not lose the student's tap."""
    import torch
    from transformers import HubertConfig, HubertModel, WavLMConfig, WavLMModel

    from skdcli.asr_ctc.model import HFEncoder

    config_cls, model_cls = (HubertConfig, HubertModel) if family == "hubert" else (WavLMConfig, WavLMModel)
    config = config_cls(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32, 32),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        mask_time_prob=0.0,
        layerdrop=1.0,
    )  # skip every layer
    encoder = HFEncoder(model_cls(config)).train()
    hidden, lengths = encoder(torch.randn(2, 8000), torch.tensor([8000, 6000]), (0, 1, 2, 3))
    assert lengths.tolist() == [799, 599]
    # HuBERT may skip every layer; WavLM never skips its first (it computes the position bias).
    first_kept = 0 if family == "hubert" else 1
    for i in range(first_kept + 1, 4):
        assert torch.equal(hidden[i], hidden[first_kept])
