"""The vocabulary mask of the sparse head (issue 15, item 9) and fp32 sparse logits under autocast
(item 11): special tokens masked by default, the optional stop-list and document-frequency cap,
and the share of the sparse score each set of terms carries."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skdcli.engine.errors import SkdError
from skdcli.retrieval.config import ModelConfig
from skdcli.retrieval.encoder import build_word_tokenizer
from skdcli.retrieval.loss import score_matrices
from skdcli.retrieval.model import SparseDenseRetriever
from skdcli.retrieval.terms import term_mass, term_statistics, vocab_keep

CAPTIONS = ["a red circle", "a red square and a blue circle", "the circle", "red"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer([w for c in CAPTIONS for w in c.split()], 16)


def test_caption_document_frequency_and_special_flags_by_hand(tokenizer) -> None:
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    stats = term_statistics(tokenizer, CAPTIONS, len(vocab))
    df = dict(zip(vocab, stats["train_caption_df"].tolist()))
    # "a" appears twice in caption 2 but counts once per caption
    assert (df["a"], df["red"], df["circle"], df["square"], df["the"]) == (2, 3, 3, 1, 1)
    assert df["[PAD]"] == df["[SOS]"] == 0  # special tokens are not counted (add_special_tokens=False)
    assert [vocab[i] for i in torch.nonzero(stats["special"]).flatten().tolist()] == [
        "[PAD]",
        "[UNK]",
        "[SOS]",
        "[EOS]",
    ]


def test_the_mask_special_tokens_stoplist_and_df_cap(tokenizer, tmp_path: Path) -> None:
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    stats = (term_statistics(tokenizer, CAPTIONS, len(vocab)), {"train_captions": str(len(CAPTIONS))})
    masked = lambda keep: sorted(vocab[i] for i in torch.nonzero(keep == 0).flatten().tolist())
    keep, rec = vocab_keep(ModelConfig(), vocab, len(vocab), stats, tmp_path)
    assert masked(keep) == ["[EOS]", "[PAD]", "[SOS]", "[UNK]"] and rec["usable_terms"] == len(vocab) - 4
    keep, _ = vocab_keep(ModelConfig(mask_special_tokens=False), vocab, len(vocab), stats, tmp_path)
    assert keep.all()
    keep, rec = vocab_keep(ModelConfig(stopwords="english"), vocab, len(vocab), stats, tmp_path)
    assert masked(keep) == ["[EOS]", "[PAD]", "[SOS]", "[UNK]", "a", "and", "the"] and rec["stopwords"]["masked"] == 3
    (tmp_path / "stop.txt").write_text("# colours\nRED\nblue\n")
    keep, _ = vocab_keep(
        ModelConfig(mask_special_tokens=False, stopwords=str(tmp_path / "stop.txt")), vocab, len(vocab), stats, tmp_path
    )
    assert masked(keep) == ["blue", "red"]
    # DF over the 4 captions: red 3/4, circle 3/4, a 2/4; a cap of 0.5 masks the terms in more than half
    keep, rec = vocab_keep(ModelConfig(mask_special_tokens=False, max_df=0.5), vocab, len(vocab), stats, tmp_path)
    assert masked(keep) == ["circle", "red"] and rec["max_df"]["masked"] == 2
    with pytest.raises(SkdError, match="term_stats"):
        vocab_keep(ModelConfig(max_df=0.5), vocab, len(vocab), None, tmp_path)
    with pytest.raises(SkdError, match="no such file"):
        vocab_keep(ModelConfig(stopwords=str(tmp_path / "none.txt")), vocab, len(vocab), stats, tmp_path)
    # a dataset prepared before term_stats: special tokens recognised by their spelling in vocab.txt
    keep, rec = vocab_keep(ModelConfig(), ["[PAD]", "[unused3]", "<s>", "red", "[", "a]"], 6, None, tmp_path)
    assert keep.tolist() == [0, 0, 0, 1, 1, 1] and "spelled" in rec["special_tokens"]["found_by"]


def test_masked_terms_have_zero_weight_and_no_gradient() -> None:
    torch.manual_seed(0)
    keep = torch.tensor([0, 1, 1, 0, 1, 1], dtype=torch.float)
    model = SparseDenseRetriever(8, 8, 4, 6, 5, vocab_keep=keep)
    with torch.no_grad():
        model.vocab_proj.weight.abs_()  # every logit positive: every unmasked term non-zero
        model.sparse_norm.bias.fill_(1.0)
    _, z = model.encode_text(torch.randn(3, 8))
    assert (z[:, [0, 3]] == 0).all() and (z[:, [1, 2, 4, 5]] > 0).all()
    z.sum().backward()
    grad = model.vocab_proj.weight.grad
    assert (grad[[0, 3]] == 0).all() and (grad[[1, 2, 4, 5]].abs().sum(1) > 0).all()
    assert "vocab_keep" not in model.state_dict()  # derived from config + data, not saved with the weights


def test_term_mass_by_hand() -> None:
    # 2 queries, 2 images, 3 terms; gold: query 0 -> image 1, query 1 -> image 0
    z_q = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]])
    z_d = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    gold = torch.tensor([1, 0])
    # all pairs: column sums q (1, 3, 3), d (3, 1, 1): per term 3, 3, 3 -> term 0 has 1/3
    # positives: q0.d1 = (1, 2, 0), q1.d0 = (0, 0, 3): per term 1, 2, 3 -> term 0 has 1/6
    got = term_mass(z_q, z_d, gold, [0])
    assert got["all_pairs"] == pytest.approx(1 / 3) and got["positives"] == pytest.approx(1 / 6)
    assert term_mass(z_q, z_d, gold, [])["positives"] == 0.0


def test_sparse_logits_and_scores_stay_fp32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = SparseDenseRetriever(16, 16, 8, 300, 64)
    with torch.no_grad():
        model.vocab_proj.weight.mul_(8)  # large logits: where bf16 loses most
    text, img = torch.randn(32, 16), torch.randn(32, 16)
    ref = model(text, img)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(text, img)
        dense, sparse, _ = score_matrices(out, 0.1, 0.2)
    assert out["z_t"].dtype == torch.float32 and sparse.dtype == torch.float32
    assert out["u_t"].dtype == torch.bfloat16  # the dense branch follows the autocast dtype
    # the sparse head reads bf16-rounded u, so z differs from the fp32 model by that rounding only
    with torch.autocast("cpu", dtype=torch.bfloat16):
        u_t = model.encode_text(text)[0]
    z_from_u = model.sparse(u_t.float())
    assert torch.allclose(out["z_t"], z_from_u, atol=1e-6)
    bf16_scores = (ref["z_i"].bfloat16() @ ref["z_t"].bfloat16().t()).float()
    fp32_scores = ref["z_i"] @ ref["z_t"].t()
    assert (bf16_scores - fp32_scores).abs().max() > 0.05  # what bf16 would cost (issue: up to ~0.1 logit)
    assert torch.allclose(sparse, out["z_i"] @ out["z_t"].t(), rtol=1e-6, atol=1e-5)  # S_s computed in fp32


def test_a_run_from_before_the_mask_is_loaded_and_resumed_unmasked(retrieval_run: Path, tmp_path: Path) -> None:
    import json
    import shutil

    import yaml

    from conftest import invoke, invoke_json

    old = tmp_path / "old"
    shutil.copytree(retrieval_run, old)
    saved = yaml.safe_load((old / "config.yaml").read_text())
    del saved["model"]["mask_special_tokens"]  # as written before the key existed
    (old / "config.yaml").write_text(yaml.safe_dump(saved))
    human = invoke("retrieval", "eval", "--run-dir", old)
    assert human.exit_code == 0 and "predates model.mask_special_tokens" in " ".join(human.stderr.split())
    unmasked = json.loads((old / "eval.json").read_text())
    masked = invoke_json("retrieval", "eval", "--run-dir", retrieval_run)
    # same weights, same logits: unmasking can only add terms, and the dense branch does not see the mask
    assert unmasked["sparsity"]["text_mean_nnz"] > masked["sparsity"]["text_mean_nnz"]
    special = [r["sparse_mass"]["special_tokens"]["all_pairs"] for r in (unmasked, masked)]
    assert special[0] > 0 == special[1]
    assert unmasked["t2i"]["dense"] == masked["t2i"]["dense"]
    invoke_json("retrieval", "train", "--run-dir", old, "--resume", "--max-steps", "82")
    assert yaml.safe_load((old / "config.yaml").read_text())["model"]["mask_special_tokens"] is False
