"""Where the trained layers start (issue 15, item 7): the official parquet / ALBEF route with the
projection weights from a checkpoint file, shape mismatches as errors naming both shapes, and the
record of what was initialised from where; `--restval drop` for imported embeddings (item 11)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from conftest import invoke, invoke_json, sets
from skdcli.engine.errors import SkdError
from skdcli.retrieval.config import RetrievalConfig
from skdcli.retrieval.data import load_prepared
from skdcli.retrieval.init_weights import read_init_file
from skdcli.retrieval.recipe import plan_model, prep_stage
from test_retrieval_data import official_layout

BERT_LIKE_VOCAB = [
    "[PAD]",
    "[unused0]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "photo",
    "of",
    "caption",
    *[str(n) for n in range(60)],
]


def lavis_checkpoint(
    path: Path, text_dim: int = 48, img_dim: int = 48, proj: int = 16, vocab: int = 72, word: int = 24
) -> dict[str, torch.Tensor]:
    """A LAVIS / ALBEF-style retrieval checkpoint: {"model": state_dict, "config": ..., "epoch": ...}."""
    g = torch.Generator().manual_seed(0)
    sd = {
        "text_proj.weight": torch.randn(proj, text_dim, generator=g),
        "text_proj.bias": torch.randn(proj, generator=g),
        "vision_proj.weight": torch.randn(proj, img_dim, generator=g),
        "vision_proj.bias": torch.randn(proj, generator=g),
        "text_proj_m.weight": torch.randn(proj, text_dim, generator=g),  # momentum copies: not used
        "text_encoder.embeddings.word_embeddings.weight": torch.randn(vocab, word, generator=g),
    }
    torch.save({"model": sd, "config": {"queue_size": 57600}, "epoch": 5}, path)
    return sd


def test_official_route_takes_the_projections_and_E_from_a_checkpoint_file(tmp_path: Path) -> None:
    raw = official_layout(tmp_path / "cache", width=48, n_restval=4)
    sd = lavis_checkpoint(tmp_path / "model_base_retrieval_coco.pth")
    (tmp_path / "vocab.txt").write_text("\n".join(BERT_LIKE_VOCAB) + "\n")
    out = tmp_path / "prepared"
    info = invoke_json(
        "retrieval",
        "prep",
        "--source",
        "embeddings",
        "--raw",
        raw,
        "--out",
        out,
        "--restval",
        "drop",
        "--init",
        tmp_path / "model_base_retrieval_coco.pth",
        "--vocab",
        tmp_path / "vocab.txt",
    )
    # restval dropped for imported embeddings too (item 11): 40 train + 10 test, the 4 restval images left out
    assert info["images"] == 50 and info["restval"] == "drop" and info["images_per_split"]["train"] == 40
    assert info["has_word_embeddings"] and info["vocab_size"] == 72 and info["init_file"].endswith(".pth")
    assert info["init_tensors"]["text_proj.weight"] == [16, 48]
    folded = prep_stage(
        "embeddings", str(raw), str(tmp_path / "folded"), init_file=str(tmp_path / "model_base_retrieval_coco.pth")
    )
    assert folded["images"] == 54 and folded["images_per_split"]["train"] == 44

    data = load_prepared(out)
    assert data.vocab[:3] == ["[PAD]", "[unused0]", "[UNK]"] and data.vocab[-1] == "[id71]"  # padded to E's rows
    cfg = RetrievalConfig()
    cfg.model.proj_dim = 16
    plan = plan_model(cfg, data)
    assert torch.equal(plan.init_tensors["text_proj.weight"], sd["text_proj.weight"])
    assert torch.equal(plan.init_tensors["vision_proj.bias"], sd["vision_proj.bias"])
    assert torch.equal(plan.init_tensors["vocab_proj.weight"], sd["text_encoder.embeddings.word_embeddings.weight"])
    rec = plan.record
    assert "model_base_retrieval_coco.pth" in rec["text_proj"]["from"] and rec["text_proj"]["bias"] == "copied"
    assert rec["vocab_proj"]["shape"] == [72, 24] and rec["sparse_proj"]["from"].startswith("random")
    # special tokens from the vocab.txt's WordPiece tokenizer: [PAD] [UNK] [CLS] [SEP] [MASK] (not [unused0])
    assert (
        rec["vocab_mask"]["special_tokens"]["masked"] == 5
        and "[unused0]" not in rec["vocab_mask"]["special_tokens"]["terms"]
    )
    assert plan.keep[[0, 2, 3, 4, 5]].sum() == 0 and plan.keep[1] == 1 and plan.keep[6:].all()

    # the tiny default's proj_dim (32) does not fit the file's 16-d projections: an error naming both shapes
    with pytest.raises(
        SkdError,
        match=r"text_proj: the encoder's weight is \(16, 48\) but the model's is \(32, 48\); "
        r"set model\.proj_dim=16",
    ):
        plan_model(RetrievalConfig(), data)

    # through the CLI: the refusal names both shapes, and a run records where every layer started
    quick = ("train.batch_size=16", "train.warmup_steps=1", "train.eval_every=0")
    refused = invoke(
        "retrieval", "train", "--data", out, "--run-dir", tmp_path / "r", "--max-steps", "2", *sets(*quick)
    )
    assert refused.exit_code == 2 and "(16, 48) but the model's is (32, 48)" in " ".join(refused.stderr.split())
    invoke_json(
        "retrieval",
        "train",
        "--data",
        out,
        "--run-dir",
        tmp_path / "r",
        "--max-steps",
        "2",
        *sets(*quick, "model.proj_dim=16"),
    )
    init = json.loads((tmp_path / "r" / "provenance.json").read_text())["init"]
    assert "model_base_retrieval_coco.pth" in init["vision_proj"]["from"] and init["vocab_proj"]["shape"] == [72, 24]
    assert init["vocab_mask"]["special_tokens"]["masked"] == 5


def test_init_and_vocab_are_for_imported_embeddings_only(tmp_path: Path) -> None:
    raw = official_layout(tmp_path / "cache", width=48)
    with pytest.raises(SkdError, match="not both"):
        prep_stage(
            "embeddings", str(raw), str(tmp_path / "o"), encoder=str(tmp_path), init_file=str(tmp_path / "x.pth")
        )
    with pytest.raises(SkdError, match="--source embeddings"):
        prep_stage("synthetic", None, str(tmp_path / "o"), init_file=str(tmp_path / "x.pth"))


def test_a_checkpoint_that_needs_unpickling_is_refused(tmp_path: Path) -> None:
    torch.save(
        {"model": {"text_proj.weight": torch.zeros(2, 2)}, "args": argparse.Namespace(lr=1.0)}, tmp_path / "unsafe.pth"
    )
    with pytest.raises(
        SkdError, match=r"unsafe\.pth: cannot load as plain tensors with torch\.load\(weights_only=True\)"
    ):
        read_init_file(tmp_path / "unsafe.pth")
    torch.save({"model": {"something.else": torch.zeros(2, 2)}}, tmp_path / "empty.pth")
    with pytest.raises(SkdError, match="text_proj.weight"):
        read_init_file(tmp_path / "empty.pth")
    from safetensors.torch import save_file

    save_file(
        {"text_projection.weight": torch.ones(4, 6), "visual_projection.weight": torch.ones(4, 5)},
        str(tmp_path / "clip.safetensors"),
    )
    got = read_init_file(tmp_path / "clip.safetensors")  # HF CLIP names, no bias, no E
    assert set(got) == {"text_proj.weight", "vision_proj.weight"}


def test_random_init_is_recorded_and_E_mismatch_names_both_shapes(retrieval_data: Path) -> None:
    data = load_prepared(retrieval_data)
    cfg = RetrievalConfig()
    rec = plan_model(cfg, data).record
    assert rec["text_proj"]["from"].startswith("encoder_init.safetensors (from encoder)")
    assert rec["text_proj"]["bias"].startswith("zeros")  # CLIP's projections have no bias
    cfg.model.init_proj_from_encoder = False
    assert plan_model(cfg, data).record["vision_proj"]["from"].startswith("random")
    cfg = RetrievalConfig()
    cfg.model.vocab_size = 50  # E has 29 rows
    with pytest.raises(SkdError, match=r"vocab_proj: E is \(29, 64\) but the model's is \(50, 64\)"):
        plan_model(cfg, data)


def test_training_records_the_init_in_provenance(retrieval_run: Path) -> None:
    prov = json.loads((retrieval_run / "provenance.json").read_text())
    init = prov["init"]
    assert init["text_proj"]["shape"] == [32, 64] and "encoder_init.safetensors" in init["text_proj"]["from"]
    assert (
        init["vocab_proj"]["from"].startswith("encoder_init.safetensors") and init["vocab_mask"]["usable_terms"] == 25
    )
