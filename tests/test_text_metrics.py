"""BLEU in both conventions, chrF, token-level ECE/MCE, NLL/perplexity, the reliability diagram."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from skdcli.text.metrics import (
    TokenCalibration,
    bleu_sacre,
    bleu_tokenized,
    calibration_from_bins,
    chrf,
    detokenize,
    expected_calibration_error,
    perplexity,
    reliability_diagram,
    remove_bpe,
    translation_scores,
)


def test_bleu_identical_is_100_in_both_conventions() -> None:
    refs = ["the cat sat on the mat .", "it &apos;s a small world , isn &apos;t it ?"]
    scores = translation_scores(refs, refs)
    assert scores["bleu_tokenized"] == pytest.approx(100.0)
    assert scores["bleu_sacre"] == pytest.approx(100.0)
    assert scores["chrf"] == pytest.approx(100.0)


def test_tokenized_bleu_is_case_insensitive_and_sacre_is_not() -> None:
    hyp, ref = ["The Cat sat on the mat today"], ["the cat sat on the mat today"]
    assert bleu_tokenized(hyp, ref)["bleu"] == pytest.approx(100.0)
    assert bleu_sacre(hyp, ref)["bleu"] < 100.0
    assert "tok:none" in bleu_tokenized(hyp, ref)["signature"]
    assert "tok:13a" in bleu_sacre(hyp, ref)["signature"]


def test_tokenized_bleu_hand_value() -> None:
    hyp, ref = ["a b c d e"], ["a b c d f"]
    # p1 = 4/5, p2 = 3/4, p3 = 2/3, p4 = 1/2, equal lengths -> BP = 1
    expected = 100 * math.exp((math.log(4 / 5) + math.log(3 / 4) + math.log(2 / 3) + math.log(1 / 2)) / 4)
    assert bleu_tokenized(hyp, ref)["bleu"] == pytest.approx(expected, rel=1e-9)


def test_bpe_removal_and_detokenize() -> None:
    assert remove_bpe("hel@@ lo wor@@ ld") == "hello world"
    assert remove_bpe("ends with@@") == "ends with"  # fairseq: (s + " ").replace("@@ ", "").rstrip()
    assert (
        detokenize("it &apos;s a ( test ) , isn &apos;t it ? well @-@ known") == "it's a (test), isn't it? well-known"
    )
    assert chrf(["x"], ["y"])["chrf"] == pytest.approx(0.0)


def test_detokenize_is_the_moses_detokenizer() -> None:
    # quotes and currency are re-attached the way Moses' detokenizer.perl does (the old rule set left
    # '" hello "' and '$ 5' apart), and the target language matters (French elision)
    assert (
        detokenize("he said &quot; hello &quot; and paid $ 5 &amp; 20 % more .")
        == 'he said "hello" and paid $5 & 20% more.'
    )
    assert detokenize("l&apos; homme , c&apos; est ça .", "fr") == "l'homme, c'est ça."
    assert detokenize("l&apos; homme", "en") == "l' homme"


def test_sacrebleu_signatures_go_with_the_scores() -> None:
    scores = translation_scores(["he said &quot; hi &quot; ."], ["he said &quot; hi &quot; ."], lang="en")
    assert scores["bleu_sacre_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert "tok:none" in scores["bleu_tokenized_signature"] and "case:lc" in scores["bleu_tokenized_signature"]
    assert scores["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0")


def test_ece_mce_hand_computed() -> None:
    # 4 tokens, 2 bins: conf .2 (wrong), .4 (right) -> bin 0: acc .5 conf .3 ; .9 (right), .7 (wrong) -> bin 1: acc .5 conf .8
    out = expected_calibration_error(torch.tensor([0.2, 0.4, 0.9, 0.7]), torch.tensor([0, 1, 1, 0]), num_bins=2)
    assert out["ece"] == pytest.approx(0.5 * 0.2 + 0.5 * 0.3)
    assert out["mce"] == pytest.approx(0.3)
    assert [b["count"] for b in out["bins"]] == [2, 2]
    # bin edges are (lo, hi]: 0.5 goes to the first of 2 bins, 0 to the first, 1 to the last
    edges = expected_calibration_error(torch.tensor([0.5, 0.0, 1.0]), torch.tensor([1, 1, 1]), num_bins=2)
    assert [b["count"] for b in edges["bins"]] == [2, 1]
    # empty bins are ignored by MCE
    assert calibration_from_bins([0, 2], [0.0, 1.0], [0.0, 2.0])["mce"] == pytest.approx(0.5)


def test_ece_of_a_perfectly_calibrated_predictor_is_about_zero() -> None:
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(200_000, generator=g)
    correct = (torch.rand(200_000, generator=g) < conf).long()
    assert expected_calibration_error(conf, correct, num_bins=10)["ece"] < 0.005
    # an always-right predictor that says 0.55 is off by 0.45
    assert expected_calibration_error(torch.full((10,), 0.55), torch.ones(10), 10)["ece"] == pytest.approx(0.45)


def test_token_calibration_matches_the_flat_computation_and_masks_padding() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 7, generator=g)
    targets = torch.randint(1, 7, (3, 5), generator=g)
    targets[0, 3:] = 0  # padding
    targets[2, 1:] = 0
    calib = TokenCalibration(num_bins=5, pad_id=0)
    calib.update(logits[:2], targets[:2])
    calib.update(logits[2:], targets[2:])
    res = calib.result()
    mask = targets != 0
    log_p = torch.log_softmax(logits, -1)[mask]
    gold = targets[mask]
    nll = float(-log_p.gather(1, gold[:, None]).mean())
    conf, pred = log_p.exp().max(-1)
    flat = expected_calibration_error(conf, (pred == gold).long(), num_bins=5)
    assert res["tokens"] == int(mask.sum()) == 9
    assert res["nll"] == pytest.approx(nll)
    assert res["ppl"] == pytest.approx(math.exp(nll))
    assert res["ece"] == pytest.approx(flat["ece"]) and res["mce"] == pytest.approx(flat["mce"])
    assert res["accuracy"] == pytest.approx(float((pred == gold).float().mean()))


def test_perplexity_and_reliability_png(tmp_path: Path) -> None:
    assert perplexity(2 * math.log(3), 2) == pytest.approx(3.0)
    assert math.isnan(perplexity(1.0, 0))
    calib = expected_calibration_error(torch.tensor([0.2, 0.4, 0.9, 0.7]), torch.tensor([0, 1, 1, 0]), 4)
    png = reliability_diagram(calib, tmp_path / "plots" / "rel.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
