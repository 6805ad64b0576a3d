"""Evaluation suites, G-XLT / XLT aggregation, the `score` command and the Wilcoxon comparison.

Suites (official ``eval_qa.sh`` / ``src/evaluation/scores.py`` at c6b7f10):

    mlqa     every (context, question) cell of MLQA dev or test; MLQA v1 normalisation with the
             cell's context language. G-XLT = mean over all cells, diagonal included; XLT = mean
             over the diagonal.
    xquad    monolingual cells, SQuAD v1.1 normalisation; XLT over the zero-shot languages
             (el ru tr th: the training languages are XQuAD's own).
    tydiqa   monolingual cells per language (from the ids), SQuAD v1.1 normalisation; XLT over
             bn fi id ko ru sw te (English and Arabic excluded).

Cells are never mixed: each is scored on its own, with its own context language.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..engine.errors import SkdError
from ..engine.io import read_json
from .data import (
    MLQA_NAME,
    TYDIQA_LANGUAGES,
    PreparedData,
    ReadReport,
    find_mlqa_files,
    find_tydiqa_files,
    find_xquad_files,
    load_json_file,
    load_rows,
    read_squad_file,
)
from .metrics import MLQA_LANGUAGES, score_examples

SUITE_NORMALIZATION = {"mlqa": "mlqa", "xquad": "squad", "tydiqa": "squad"}
ZERO_SHOT = {"xquad": ("el", "ru", "tr", "th"), "tydiqa": ("bn", "fi", "id", "ko", "ru", "sw", "te")}

Cells = dict[tuple[str, str], list[dict]]  # (context language, question language) -> rows


def load_cells(data: str | Path, suite: str, split: str) -> tuple[Cells, dict]:
    """The cells of ``split`` from a prepared dataset (prep.json) or straight from the suite's
    official layout (MLQA_V1/, an XQuAD folder, TyDiQA-GoldP files). Returns (cells, source info)."""
    data = Path(data)
    if (data / "prep.json").is_file():
        prepared = PreparedData.open(data)
        files = prepared.cells(split)
        if not files:
            have = prepared.splits()
            raise SkdError(
                f"the prepared dataset has no '{split}' evaluation cells"
                f"{' (it has: ' + ', '.join(have) + ')' if have else ''}",
                data,
            )
        cells: Cells = {key: [] for key in files}
        for row in load_rows(list(files.values())):  # one read for every cell; rows carry their languages
            cells[(row["lang_c"], row["lang_q"])].append(dict(row))
        return cells, {"data": str(data), "prepared": True, "fingerprint": prepared.fingerprint}
    if not data.exists():
        raise SkdError("not found", data)
    report = ReadReport()
    cells = {}
    if suite == "mlqa":
        for (_, cl, ql), path in find_mlqa_files(data, [split]).items():
            cells[(cl, ql)] = read_squad_file(path, report, lang_c=cl, lang_q=ql, skip_mismatched=False)
    elif suite == "xquad":
        for lang, path in find_xquad_files(data).items():
            cells[(lang, lang)] = read_squad_file(path, report, lang_c=lang, lang_q=lang, skip_mismatched=False)
    else:
        for sp, path, lang in find_tydiqa_files(data):
            if sp != split and not (split == "test" and sp == "dev"):  # GoldP's dev set is its test set
                continue
            for r in read_squad_file(
                path,
                report,
                lang_c=lang,
                lang_q=lang,
                skip_mismatched=False,
                lang_from_id=None if lang else TYDIQA_LANGUAGES,
            ):
                cells.setdefault((r["lang_c"], r["lang_q"]), []).append(r)
    if not cells:
        raise SkdError(f"no '{split}' cells for suite {suite} here", data)
    return cells, {"data": str(data), "prepared": False, "files": report.files, "skipped": report.skipped_counts()}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def aggregate(cell_scores: dict[tuple[str, str], dict], suite: str) -> dict:
    """G-XLT, XLT, the question x context matrix and per-language means from per-cell EM/F1."""
    diag = {cl: s for (cl, ql), s in cell_scores.items() if cl == ql}
    q_langs = sorted({ql for _, ql in cell_scores})
    c_langs = sorted({cl for cl, _ in cell_scores})
    matrix = {
        ql: {
            cl: {k: cell_scores[(cl, ql)][k] for k in ("exact_match", "f1", "total")}
            for cl in c_langs
            if (cl, ql) in cell_scores
        }
        for ql in q_langs
    }
    out: dict = {
        "suite": suite,
        "cells": len(cell_scores),
        "question_languages": q_langs,
        "context_languages": c_langs,
        "matrix": matrix,
    }
    if suite == "mlqa":
        out["gxlt_em"] = _mean([s["exact_match"] for s in cell_scores.values()])
        out["gxlt_f1"] = _mean([s["f1"] for s in cell_scores.values()])
        xlt_langs = sorted(diag)
    else:
        wanted = [lang for lang in ZERO_SHOT[suite] if lang in diag]
        # a set without the paper's zero-shot languages (a partial download, the synthetic corpus): all of it
        xlt_langs = wanted or sorted(diag)
        out["gxlt_em"] = out["gxlt_f1"] = None
    out["xlt_languages"] = xlt_langs
    out["xlt_em"] = _mean([diag[lang]["exact_match"] for lang in xlt_langs])
    out["xlt_f1"] = _mean([diag[lang]["f1"] for lang in xlt_langs])
    out["per_question_language"] = {
        ql: {
            "exact_match": _mean([v["exact_match"] for v in row.values()]),
            "f1": _mean([v["f1"] for v in row.values()]),
        }
        for ql, row in matrix.items()
    }
    out["per_context_language"] = {
        cl: {
            "exact_match": _mean([matrix[ql][cl]["exact_match"] for ql in q_langs if cl in matrix[ql]]),
            "f1": _mean([matrix[ql][cl]["f1"] for ql in q_langs if cl in matrix[ql]]),
        }
        for cl in c_langs
    }
    return out


def normalization_for(suite: str, override: str = "") -> str:
    return override or SUITE_NORMALIZATION[suite]


def score_cells(
    cells: Cells, predictions: dict[tuple[str, str], dict[str, str]], suite: str, normalization: str = ""
) -> tuple[dict, list[dict]]:
    """Score every cell with its own context language; returns (aggregate, per-example rows)."""
    kind = normalization_for(suite, normalization)
    per_cell, examples = {}, []
    for (cl, ql), rows in sorted(cells.items()):
        lang = cl if kind == "mlqa" else None
        if kind == "mlqa" and cl not in MLQA_LANGUAGES:
            raise SkdError(
                f"MLQA normalisation has no rules for context language '{cl}' "
                f"(valid: {', '.join(MLQA_LANGUAGES)}); use eval.normalization=squad"
            )
        scored = score_examples(rows, predictions[(cl, ql)], kind, lang)
        per_cell[(cl, ql)] = scored
        examples += [{"context_language": cl, "question_language": ql, **r} for r in scored["examples"]]
    return aggregate(per_cell, suite), examples


# -- `skd xqa score` ---------------------------------------------------------------------------------------------
def score_file(data: str | Path, predictions: str | Path, lang: str | None = None, normalization: str = "") -> dict:
    """Score one SQuAD-format file against ``{id: answer}`` predictions, as the official MLQA /
    SQuAD v1.1 scripts do. The language: ``lang``, else an MLQA file name's context language; an
    XQuAD or TyDiQA file (no language rule in its script) is scored with SQuAD v1.1."""
    data, predictions = Path(data), Path(predictions)
    m = MLQA_NAME.match(data.name)
    if lang is None and m:
        lang = m.group(2)
    kind = normalization or ("mlqa" if lang is not None else "squad")
    if kind not in SUITE_NORMALIZATION.values():
        raise SkdError(f"--normalization must be mlqa or squad, got '{kind}'")
    if kind == "mlqa":
        if lang is None:
            raise SkdError("cannot tell the context language from the file name: pass --lang", data)
        if lang not in MLQA_LANGUAGES:
            raise SkdError(
                f"unknown language code '{lang}'; MLQA normalisation knows {', '.join(MLQA_LANGUAGES)} "
                "(XQuAD / TyDiQA use --normalization squad)"
            )
    rows = read_squad_file(data, ReadReport(), lang_c=lang, lang_q=lang, skip_mismatched=False, keep_impossible=True)
    preds = load_json_file(predictions)
    if not isinstance(preds, dict) or not all(isinstance(v, str) for v in preds.values()):
        raise SkdError("predictions must be a JSON object {question id: answer string}", predictions)
    ids = {r["id"] for r in rows}
    matched = ids & set(preds)
    if not matched:
        sample = ", ".join(sorted(preds)[:3]) or "none"
        raise SkdError(f"none of its {len(preds)} ids is a question of {data.name} (e.g. {sample})", predictions)
    scored = score_examples(rows, preds, kind, lang if kind == "mlqa" else None)
    version = load_json_file(data).get("version") if kind == "mlqa" else None
    return {
        "data": str(data),
        "predictions": str(predictions),
        "normalization": kind,
        "language": lang if kind == "mlqa" else None,
        "exact_match": scored["exact_match"],
        "f1": scored["f1"],
        "total": scored["total"],
        "unanswered": scored["missing"],
        "extra_predictions": len(set(preds) - ids),
        "version_warning": (
            f"MLQA evaluation expects version 1.0, the file has {version}"
            if kind == "mlqa" and version is not None and str(version) != "1.0"
            else None
        ),
        "examples": scored["examples"],
    }


# -- `eval --compare`: Wilcoxon signed-rank on example-level F1 ------------------------------------------------------
def _wilcoxon(a: list[float], b: list[float]) -> dict:
    from scipy.stats import wilcoxon

    diffs = [x - y for x, y in zip(a, b)]
    n_nonzero = sum(1 for d in diffs if d != 0)
    out = {
        "n": len(a),
        "n_nonzero": n_nonzero,
        "f1_a": 100 * sum(a) / max(len(a), 1),
        "f1_b": 100 * sum(b) / max(len(b), 1),
    }
    if n_nonzero == 0:  # identical scores: scipy refuses (all differences zero); no evidence of a difference
        return {**out, "statistic": 0.0, "p_value": 1.0}
    res = wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    return {**out, "statistic": float(res.statistic), "p_value": float(res.pvalue)}


def compare_examples(rows_a: list[dict], rows_b: list[dict], alpha: float = 0.05) -> dict:
    """Paired Wilcoxon signed-rank tests (scipy, two-sided) of example-level F1: over all cells
    (G-XLT), the diagonal (XLT) and each diagonal language. Pairs are matched by (cell, id)."""

    def key(r: dict) -> tuple[str, str, str]:
        return r["context_language"], r["question_language"], r["id"]

    a = {key(r): r["f1"] for r in rows_a}
    b = {key(r): r["f1"] for r in rows_b}
    if set(a) != set(b):
        raise SkdError(
            f"the two runs were evaluated on different examples ({len(set(a) ^ set(b))} differ): "
            "evaluate both on the same --suite / --data / --split"
        )
    keys = sorted(a)

    def test(selected: list[tuple]) -> dict:
        res = _wilcoxon([a[k] for k in selected], [b[k] for k in selected])
        res["significant"] = bool(res["p_value"] < alpha) and not math.isnan(res["p_value"])
        return res

    diag = [k for k in keys if k[0] == k[1]]
    out = {
        "alpha": alpha,
        "test": "scipy.stats.wilcoxon, zero_method=wilcox, two-sided, example-level F1",
        "gxlt": test(keys) if len(diag) < len(keys) else None,
        "xlt": test(diag) if diag else None,
        "per_language": {lang: test([k for k in diag if k[0] == lang]) for lang in sorted({k[0] for k in diag})},
    }
    return out


def read_examples(path: Path) -> list[dict]:
    from ..engine.io import read_jsonl

    return read_jsonl(path)


def eval_record_dir(run_path: Path, suite: str, split: str) -> Path:
    return Path(run_path) / "evals" / f"{suite}-{split}"


def recorded_eval(run_path: Path, suite: str, split: str) -> tuple[dict, list[dict]]:
    folder = eval_record_dir(run_path, suite, split)
    if not (folder / "result.json").is_file():
        raise SkdError(
            f"no {suite}/{split} evaluation recorded; run `skd xqa eval --run-dir {run_path} "
            f"--suite {suite} --split {split}` first",
            run_path,
        )
    return read_json(folder / "result.json"), read_examples(folder / "examples.jsonl")
