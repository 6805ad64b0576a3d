"""Answer scoring exactly as the official evaluation scripts do it.

- ``mlqa``: the MLQA v1 script (facebookresearch/MLQA ``mlqa_evaluation_v1.py``, also the copy in
  the paper's repository ``src/metrics/mlqa_evaluation_v1.py`` at c6b7f10). Normalisation uses the
  *context* (answer) language: lower-case -> drop every Unicode punctuation character (category P*,
  plus Python's ``string.punctuation``) -> drop the language's articles -> re-join the tokens
  (whitespace tokens; Chinese: "mixed segmentation", each CJK character U+4E00-U+9FA5 and each
  punctuation mark its own token). The paper scores MLQA with it.
- ``squad``: the SQuAD v1.1 script (``evaluate-v1.1.py``): lower-case, ASCII punctuation, English
  articles, whitespace. The paper scores XQuAD and TyDiQA-GoldP with it, for every language.

EM and F1 are maximised over the gold answers; a question without a prediction scores 0 (the
official scripts print "Unanswered question ... will receive score 0").
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from collections import Counter
from functools import lru_cache

MLQA_LANGUAGES = ("en", "es", "de", "ar", "hi", "vi", "zh")
NORMALIZATIONS = ("mlqa", "squad")
WHITESPACE_LANGS = ("en", "es", "hi", "vi", "de", "ar")
MIXED_SEGMENTATION_LANGS = ("zh",)

ARTICLES = {  # mlqa_evaluation_v1.py, remove_articles
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    # The official pattern '\sال^|ال': the first alternative can never match ('^' after consumed
    # characters), so every occurrence of ال is replaced by a space, inside words too.
    "ar": re.compile(r"\sال^|ال"),
}
_CJK = re.compile(r"[\u4e00-\u9fa5]")
_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = frozenset(string.punctuation)


@lru_cache(maxsize=1)
def unicode_punctuation() -> frozenset[str]:
    """Every code point of Unicode category P*, plus ``string.punctuation`` (the MLQA script's PUNCT)."""
    return (
        frozenset(chr(i) for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P")) | _ASCII_PUNCT
    )


def check_language(lang: str) -> None:
    if lang not in MLQA_LANGUAGES:
        raise ValueError(f"unknown language '{lang}' for MLQA normalisation; valid: {', '.join(MLQA_LANGUAGES)}")


def mixed_segmentation(text: str) -> list[str]:
    punct = unicode_punctuation()
    out: list[str] = []
    pending = ""
    for ch in text:
        if _CJK.search(ch) or ch in punct:
            if pending:
                out.extend(pending.split())
                pending = ""
            out.append(ch)
        else:
            pending += ch
    if pending:
        out.extend(pending.split())
    return out


def normalize_mlqa(s: str, lang: str) -> str:
    check_language(lang)
    punct = unicode_punctuation()
    text = "".join(ch for ch in s.lower() if ch not in punct)
    if lang in ARTICLES:
        text = ARTICLES[lang].sub(" ", text)
    tokens = text.split() if lang in WHITESPACE_LANGS else mixed_segmentation(text)
    return " ".join(t for t in tokens if t.strip() != "")


def normalize_squad(s: str) -> str:
    text = "".join(ch for ch in s.lower() if ch not in _ASCII_PUNCT)
    return " ".join(_SQUAD_ARTICLES.sub(" ", text).split())


def normalizer(kind: str, lang: str | None):
    """The normalisation function for ``kind`` (mlqa needs the context language)."""
    if kind == "squad":
        return normalize_squad
    if kind != "mlqa":
        raise ValueError(f"unknown normalisation '{kind}'; valid: {', '.join(NORMALIZATIONS)}")
    if lang is None:
        raise ValueError("MLQA normalisation needs the context language")
    check_language(lang)
    return lambda s: normalize_mlqa(s, lang)


def token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def score_answer(prediction: str, golds: list[str], norm) -> tuple[float, float]:
    """(EM, F1) in [0, 1], each maximised over the gold answers."""
    p = norm(prediction)
    p_tokens = p.split()
    em = f1 = 0.0
    for gold in golds:
        g = norm(gold)
        em = max(em, float(p == g))
        f1 = max(f1, token_f1(p_tokens, g.split()))
    return em, f1


def score_examples(examples: list[dict], predictions: dict[str, str], kind: str, lang: str | None) -> dict:
    """Score one cell (one file) with one normalisation. ``examples``: rows with ``id`` and
    ``answers.text``. Returns EM / F1 x100 and per-example scores (missing predictions score 0)."""
    norm = normalizer(kind, lang)
    rows, missing = [], 0
    for ex in examples:
        if ex["id"] not in predictions:
            missing += 1
            rows.append({"id": ex["id"], "em": 0.0, "f1": 0.0, "prediction": None})
            continue
        em, f1 = score_answer(predictions[ex["id"]], list(ex["answers"]["text"]), norm)
        rows.append({"id": ex["id"], "em": em, "f1": f1, "prediction": predictions[ex["id"]]})
    n = max(len(rows), 1)
    return {
        "exact_match": 100.0 * sum(r["em"] for r in rows) / n,
        "f1": 100.0 * sum(r["f1"] for r in rows) / n,
        "total": len(rows),
        "missing": missing,
        "examples": rows,
    }
