"""Text metrics shared by the text recipes: BLEU in both conventions, chrF, token-level calibration
(ECE / MCE, reliability diagram), NLL and perplexity.

BLEU (text-common.md §2). Two numbers, always labelled:

- ``bleu_tokenized`` — the IWSLT/fairseq convention: hypotheses and references are already
  tokenized (Moses) and BPE-free; both are lowercased and scored with sacrebleu's
  ``tokenize='none'`` (whitespace split), i.e. case-insensitive tokenized BLEU as fairseq's
  ``--scoring bleu`` / ``multi-bleu.perl`` compute it on lowercased text.
- ``bleu_sacre`` — detokenized sacreBLEU, ``tokenize='13a'``, case-sensitive (sacrebleu's
  default). Tokenized input is first detokenized with the Moses detokenizer (``sacremoses``, the
  Python port of ``detokenizer.perl``: XML escapes undone, punctuation, quotes and ``@-@``
  re-attached, per target language), so the figure is only comparable to published sacreBLEU when
  the references were not lowercased. sacreBLEU's signature string goes with every score.

Calibration (text-common.md §3): token level with teacher forcing on references. Each target
token's confidence is the max probability of the model's distribution, correct means argmax ==
gold. M equal-width bins over [0, 1], a confidence c falls in bin ceil(c·M) - 1 (intervals
(lo, hi], Guo et al. 2017; c = 0 goes to the first bin).

    ECE = sum_m |B_m|/n · |acc(B_m) - conf(B_m)|        MCE = max over non-empty m of |acc - conf|

``TokenCalibration`` accumulates per-bin sums batch by batch (exact, no per-token storage) together
with the NLL, so one pass over an eval set gives ECE, MCE, NLL, perplexity and accuracy.
Perplexity = exp(total NLL / total tokens) over every non-padding target token (</s> included).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import sacrebleu
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from ..engine.io import atomic_write

BPE_MARKER = "@@ "


# -- text normalisation ----------------------------------------------------------------------------
def remove_bpe(text: str, marker: str = BPE_MARKER) -> str:
    """Undo subword-nmt BPE (``"hel@@ lo"`` -> ``"hello"``), as fairseq's ``--remove-bpe``."""
    return (text + " ").replace(marker, "").rstrip() if marker else text


@functools.lru_cache(maxsize=8)
def _moses_detokenizer(lang: str):
    from sacremoses import MosesDetokenizer

    return MosesDetokenizer(lang=lang)


def detokenize(text: str, lang: str = "en") -> str:
    """Moses detokenization of Moses-tokenized text (sacremoses' port of ``detokenizer.perl``):
    XML escapes undone (``&apos;`` -> ``'``), punctuation, quotes and ``@-@`` re-attached."""
    return _moses_detokenizer(lang or "en").detokenize(text.split())


# -- BLEU / chrF -------------------------------------------------------------------------------------
def _check_pairs(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")


def _bleu_result(score, metric) -> dict:
    """What every BLEU figure here reports: the score, its n-gram precisions, brevity penalty, lengths and
    sacreBLEU's signature (to print next to the score)."""
    return {
        "bleu": score.score,
        "precisions": list(score.precisions),
        "bp": score.bp,
        "sys_len": score.sys_len,
        "ref_len": score.ref_len,
        "signature": str(metric.get_signature()),
    }


def bleu_tokenized(hyps: Sequence[str], refs: Sequence[str]) -> dict:
    """Case-insensitive tokenized BLEU (fairseq / IWSLT convention) of already tokenized text.

    Returns ``{"bleu", "precisions", "bp", "sys_len", "ref_len", "signature"}``; bleu in [0, 100].
    """
    _check_pairs(hyps, refs)
    metric = sacrebleu.BLEU(tokenize="none", lowercase=True, force=True)
    score = metric.corpus_score([h.lower() for h in hyps], [[r.lower() for r in refs]])
    return _bleu_result(score, metric)


def bleu_sacre(hyps: Sequence[str], refs: Sequence[str], detok: bool = True, lang: str = "en") -> dict:
    """Detokenized sacreBLEU (13a, case-sensitive); ``detok`` first runs the Moses detokenizer of
    ``lang`` (the target language) on both sides. ``signature`` is sacreBLEU's, to report with the score."""
    _check_pairs(hyps, refs)
    if detok:
        hyps, refs = [detokenize(h, lang) for h in hyps], [detokenize(r, lang) for r in refs]
    metric = sacrebleu.BLEU(tokenize="13a")
    score = metric.corpus_score(list(hyps), [list(refs)])
    return _bleu_result(score, metric)


def chrf(hyps: Sequence[str], refs: Sequence[str], detok: bool = True, lang: str = "en") -> dict:
    """sacrebleu chrF (character n-grams, beta 2) on Moses-detokenized text: ``{"chrf", "signature"}``."""
    _check_pairs(hyps, refs)
    if detok:
        hyps, refs = [detokenize(h, lang) for h in hyps], [detokenize(r, lang) for r in refs]
    metric = sacrebleu.CHRF()
    return {"chrf": metric.corpus_score(list(hyps), [list(refs)]).score, "signature": str(metric.get_signature())}


def translation_scores(hyps: Sequence[str], refs: Sequence[str], lang: str = "en") -> dict:
    """The headline figures ``bleu_tokenized``, ``bleu_sacre``, ``chrf`` (floats) and the sacreBLEU
    signature of each (``*_signature``); ``lang`` = the target language (for the detokenizer)."""
    tok, sacre, ch = bleu_tokenized(hyps, refs), bleu_sacre(hyps, refs, lang=lang), chrf(hyps, refs, lang=lang)
    return {
        "bleu_tokenized": tok["bleu"],
        "bleu_sacre": sacre["bleu"],
        "chrf": ch["chrf"],
        "bleu_tokenized_signature": tok["signature"],
        "bleu_sacre_signature": sacre["signature"],
        "chrf_signature": ch["signature"],
    }


# -- calibration ----------------------------------------------------------------------------------------
def bin_index(confidence: Tensor, num_bins: int) -> Tensor:
    """Bin of each confidence in [0, 1]: ceil(c·M) - 1, clamped to [0, M-1] (intervals (lo, hi])."""
    return (torch.ceil(confidence.double() * num_bins).long() - 1).clamp(0, num_bins - 1)


def calibration_from_bins(count: np.ndarray, conf_sum: np.ndarray, correct_sum: np.ndarray) -> dict:
    """ECE / MCE and the per-bin table from per-bin sums (count, sum of confidences, sum of correct)."""
    count = np.asarray(count, dtype=np.float64)
    n = count.sum()
    num_bins = len(count)
    nonempty = count > 0
    acc = np.divide(correct_sum, count, out=np.zeros(num_bins), where=nonempty)
    conf = np.divide(conf_sum, count, out=np.zeros(num_bins), where=nonempty)
    gap = np.abs(acc - conf)
    ece = float((count / n * gap).sum()) if n else float("nan")
    mce = float(gap[nonempty].max()) if nonempty.any() else float("nan")
    bins = [
        {
            "lo": i / num_bins,
            "hi": (i + 1) / num_bins,
            "count": int(count[i]),
            "accuracy": float(acc[i]),
            "confidence": float(conf[i]),
        }
        for i in range(num_bins)
    ]
    return {"ece": ece, "mce": mce, "num_bins": num_bins, "bins": bins}


def expected_calibration_error(confidence: Tensor, correct: Tensor, num_bins: int = 10) -> dict:
    """ECE / MCE of flat tensors of confidences in [0, 1] and 0/1 correctness."""
    confidence, correct = confidence.reshape(-1).detach().cpu(), correct.reshape(-1).detach().cpu().double()
    idx = bin_index(confidence, num_bins)
    count = torch.bincount(idx, minlength=num_bins).double()
    conf_sum = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, idx, confidence.double())
    correct_sum = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, idx, correct)
    return calibration_from_bins(count.numpy(), conf_sum.numpy(), correct_sum.numpy())


class TokenCalibration:
    """Streaming token-level NLL / accuracy / ECE / MCE over teacher-forced batches.

        calib = TokenCalibration(num_bins=10)
        for batch in loader:
            calib.update(logits, targets, mask)     # (B, T, V), (B, T), (B, T) bool
        calib.result()  # {"nll", "ppl", "accuracy", "tokens", "ece", "mce", "num_bins", "bins"}

    ``mask`` defaults to ``targets != pad_id``. Sums are kept in float64 on the CPU.
    """

    def __init__(self, num_bins: int = 10, pad_id: int = 0):
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        self.num_bins, self.pad_id = num_bins, pad_id
        self.count = torch.zeros(num_bins, dtype=torch.float64)
        self.conf_sum = torch.zeros(num_bins, dtype=torch.float64)
        self.correct_sum = torch.zeros(num_bins, dtype=torch.float64)
        self.nll_sum = 0.0
        self.tokens = 0

    @torch.no_grad()
    def update(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> None:
        if mask is None:
            mask = targets != self.pad_id
        log_probs = F.log_softmax(logits.float(), dim=-1)[mask]
        gold = targets[mask]
        self.nll_sum += float(-log_probs.gather(-1, gold.unsqueeze(-1)).sum())
        self.tokens += int(gold.numel())
        conf, pred = log_probs.exp().max(dim=-1)
        conf, correct = conf.double().cpu(), (pred == gold).double().cpu()
        idx = bin_index(conf, self.num_bins)
        self.count += torch.bincount(idx, minlength=self.num_bins).double()
        self.conf_sum.index_add_(0, idx, conf)
        self.correct_sum.index_add_(0, idx, correct)

    def result(self) -> dict:
        nll = self.nll_sum / self.tokens if self.tokens else float("nan")
        out = calibration_from_bins(self.count.numpy(), self.conf_sum.numpy(), self.correct_sum.numpy())
        accuracy = float(self.correct_sum.sum() / self.tokens) if self.tokens else float("nan")
        return {
            "nll": nll,
            "ppl": perplexity(self.nll_sum, self.tokens),
            "accuracy": accuracy,
            "tokens": self.tokens,
            **out,
        }


def perplexity(nll_sum: float, tokens: int) -> float:
    """exp(total NLL / tokens); inf when it overflows, nan with no tokens."""
    if tokens <= 0:
        return float("nan")
    mean = nll_sum / tokens
    return math.exp(mean) if mean < 700 else float("inf")


def reliability_diagram(calibration: dict, path: str | Path, title: str = "") -> Path:
    """Accuracy per confidence bin against the diagonal, bin counts below (PNG, written atomically).

    ``calibration`` is what ``TokenCalibration.result()`` / ``expected_calibration_error`` return.
    """
    bins = calibration["bins"]
    width = 1.0 / len(bins)
    centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
    fig = Figure(figsize=(4.8, 5.6))
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    acc = [b["accuracy"] if b["count"] else 0.0 for b in bins]
    conf = [b["confidence"] if b["count"] else 0.0 for b in bins]
    top.bar(centers, acc, width=width * 0.95, color="#4c72b0", edgecolor="black", label="accuracy")
    top.bar(
        centers,
        [c - a for a, c in zip(acc, conf)],
        bottom=acc,
        width=width * 0.95,
        color="#dd8452",
        alpha=0.5,
        edgecolor="#dd8452",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title or f"ECE {100 * calibration['ece']:.2f}%  MCE {100 * calibration['mce']:.2f}%", fontsize=9)
    bottom.bar(centers, [b["count"] for b in bins], width=width * 0.95, color="grey")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (max probability)")
    bottom.set_ylabel("tokens")
    fig.tight_layout()
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
