"""G-XLT / XLT aggregation, `score` on real MLQA files, and the Wilcoxon comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import wilcoxon

from skdcli.engine.errors import SkdError
from skdcli.xqa.evaluation import aggregate, compare_examples, load_cells, score_file

FIX = Path(__file__).parent / "fixtures" / "xqa"
MLQA_DEV = FIX / "mlqa" / "MLQA_V1" / "dev"


def cell(em: float, f1: float) -> dict:
    return {"exact_match": em, "f1": f1, "total": 10}


def test_gxlt_is_the_mean_of_every_cell_and_xlt_of_the_diagonal() -> None:
    scores = {
        ("en", "en"): cell(80, 90),
        ("en", "es"): cell(40, 50),
        ("es", "en"): cell(30, 40),
        ("es", "es"): cell(60, 70),
    }
    agg = aggregate(scores, "mlqa")
    assert agg["gxlt_f1"] == pytest.approx((90 + 50 + 40 + 70) / 4)
    assert agg["gxlt_em"] == pytest.approx((80 + 40 + 30 + 60) / 4)
    assert agg["xlt_f1"] == pytest.approx((90 + 70) / 2) and agg["xlt_languages"] == ["en", "es"]
    # matrix rows are question languages, columns context languages
    assert agg["matrix"]["es"]["en"]["f1"] == 50 and agg["matrix"]["en"]["es"]["f1"] == 40
    assert agg["per_question_language"]["es"]["f1"] == pytest.approx((50 + 70) / 2)
    assert agg["per_context_language"]["es"]["f1"] == pytest.approx((40 + 70) / 2)


def test_xquad_xlt_uses_the_zero_shot_languages_only() -> None:
    scores = {(lang, lang): cell(10 * i, 10 * i) for i, lang in enumerate(["en", "es", "el", "ru", "th", "tr"])}
    agg = aggregate(scores, "xquad")
    assert agg["xlt_languages"] == ["el", "ru", "tr", "th"] and agg["gxlt_f1"] is None
    assert agg["xlt_f1"] == pytest.approx((20 + 30 + 50 + 40) / 4)


def test_raw_suites_read_their_official_layouts() -> None:
    cells, info = load_cells(FIX / "mlqa", "mlqa", "dev")
    assert sorted(cells) == [("en", "ar"), ("en", "de"), ("en", "en"), ("en", "zh")] and not info["prepared"]
    cells, _ = load_cells(FIX / "xquad", "xquad", "test")
    assert ("el", "el") in cells and len(cells[("el", "el")]) == 30
    cells, _ = load_cells(FIX / "tydiqa", "tydiqa", "test")  # GoldP's dev set is its test set
    assert list(cells) == [("ar", "ar")]


def write_preds(path: Path, preds: dict) -> Path:
    path.write_text(json.dumps(preds, ensure_ascii=False), encoding="utf-8")
    return path


def test_score_an_mlqa_file_with_its_context_language(tmp_path: Path) -> None:
    data = MLQA_DEV / "dev-context-en-question-zh.json"  # context English: gold "The Penn"
    qid = "2e62cb1a941e40208fe73d1d11d77611f8fc91af"
    res = score_file(data, write_preds(tmp_path / "p.json", {qid: "the penn."}))
    assert res["language"] == "en" and res["normalization"] == "mlqa"
    assert (res["exact_match"], res["f1"]) == (100.0, 100.0) and res["version_warning"] is None
    res = score_file(data, write_preds(tmp_path / "q.json", {qid: "Penn journal"}))
    assert res["exact_match"] == 0.0 and res["f1"] == pytest.approx(100 * 2 * 0.5 * 1 / 1.5)
    squad = score_file(data, write_preds(tmp_path / "r.json", {qid: "The Penn"}), normalization="squad")
    assert squad["normalization"] == "squad" and squad["language"] is None


def test_score_refuses_unknown_languages_and_mismatched_predictions(tmp_path: Path) -> None:
    data = MLQA_DEV / "dev-context-en-question-de.json"
    preds = write_preds(tmp_path / "p.json", {"some-other-id": "x"})
    with pytest.raises(SkdError, match="none of its 1 ids is a question") as exc:
        score_file(data, preds)
    assert str(preds) in str(exc.value)
    with pytest.raises(SkdError, match="unknown language code 'xx'"):
        score_file(data, preds, lang="xx")
    with pytest.raises(SkdError, match="pass --lang"):
        score_file(FIX / "xquad" / "xquad.en.json", preds, normalization="mlqa")
    with pytest.raises(SkdError, match="JSON object"):
        score_file(data, write_preds(tmp_path / "list.json", ["x"]))


def test_wilcoxon_matches_scipy_on_paired_example_f1() -> None:
    f1_a = [1.0, 0.5, 0.0, 1.0, 0.8, 0.2, 1.0, 0.9, 0.0, 0.6, 1.0, 0.7]
    f1_b = [0.5, 0.5, 0.0, 0.2, 0.3, 0.1, 0.9, 0.2, 0.0, 0.1, 0.4, 0.2]

    def rows(f1s: list[float], cl: str) -> list[dict]:
        return [{"context_language": cl, "question_language": "en", "id": str(i), "f1": f} for i, f in enumerate(f1s)]

    res = compare_examples(rows(f1_a, "en") + rows(f1_b, "es"), rows(f1_b, "en") + rows(f1_a, "es"))
    expected = wilcoxon(f1_a + f1_b, f1_b + f1_a)
    assert res["gxlt"]["p_value"] == pytest.approx(expected.pvalue)
    xlt = wilcoxon(f1_a, f1_b)  # the diagonal: the en-en cell
    assert res["xlt"]["p_value"] == pytest.approx(xlt.pvalue) and res["xlt"]["significant"] == (xlt.pvalue < 0.05)
    same = compare_examples(rows(f1_a, "en"), rows(f1_a, "en"))
    assert same["xlt"]["p_value"] == 1.0 and same["xlt"]["n_nonzero"] == 0
    with pytest.raises(SkdError, match="different examples"):
        compare_examples(rows(f1_a, "en"), rows(f1_a[:5], "en"))
