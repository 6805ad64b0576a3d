"""MLQA v1 / SQuAD v1.1 answer normalisation and EM / F1 on hand examples, per language."""

from __future__ import annotations

import pytest

from skdcli.xqa.metrics import (
    mixed_segmentation,
    normalize_mlqa,
    normalize_squad,
    normalizer,
    score_answer,
    score_examples,
)


@pytest.mark.parametrize(
    "lang, text, expected",
    [
        ("en", "The  Eiffel Tower!", "eiffel tower"),
        ("en", "an apple, a pear", "apple pear"),
        ("es", "¿El río Ebro?", "río ebro"),  # Unicode ¿ and the article el
        ("es", "«Los Ángeles»", "ángeles"),  # guillemets are Unicode punctuation; los is an article
        ("es", "las Islas Canarias", "islas canarias"),
        ("de", "Der Rhein und die Donau", "rhein und donau"),
        ("de", "einem Haus", "haus"),
        ("vi", "Thủ đô của Pháp là Paris", "thủ đô pháp paris"),
        ("hi", "भारत की राजधानी।", "भारत की राजधानी"),  # no articles; the danda is punctuation
        ("ar", "الذئب", "ذئب"),  # the article ال removed
        ("ar", "مالك الحزين", "م ك حزين"),  # ... every occurrence, inside words too (the official pattern)
        ("zh", "北京，中国", "北 京 中 国"),  # each CJK character its own token; the full-width comma removed
        ("zh", "Zorvak的首都是Melidon。", "zorvak 的 首 都 是 melidon"),  # mixed segmentation keeps Latin runs whole
    ],
)
def test_mlqa_normalisation_by_language(lang, text, expected) -> None:
    assert normalize_mlqa(text, lang) == expected


def test_articles_are_only_removed_in_their_own_language() -> None:
    assert normalize_mlqa("el lobo", "en") == "el lobo"
    assert normalize_mlqa("the wolf", "es") == "the wolf"
    assert normalize_mlqa("der Wolf", "es") == "der wolf"


def test_squad_v11_normalisation_keeps_unicode_punctuation_and_uses_english_articles() -> None:
    assert normalize_squad("The «Eiffel» tower.") == "«eiffel» tower"
    assert normalize_squad("el río") == "el río"
    assert normalize_mlqa("The «Eiffel» tower.", "en") == "eiffel tower"


def test_mixed_segmentation_splits_cjk_and_punctuation() -> None:
    assert mixed_segmentation("ab 北京,cd") == ["ab", "北", "京", ",", "cd"]


def test_em_and_f1_by_hand() -> None:
    en = normalizer("mlqa", "en")
    assert score_answer("the Eiffel tower", ["Eiffel Tower"], en) == (1.0, 1.0)
    em, f1 = score_answer("Eiffel", ["Eiffel Tower"], en)  # precision 1, recall 1/2 -> F1 2/3
    assert (em, f1) == (0.0, pytest.approx(2 / 3))
    em, f1 = score_answer("Paris", ["Lyon", "in Paris"], en)  # max over golds: 1 / (1 + 2) * 2 ... = 2/3
    assert (em, f1) == (0.0, pytest.approx(2 / 3))
    zh = normalizer("mlqa", "zh")
    em, f1 = score_answer("北京", ["北京市"], zh)  # characters: precision 1, recall 2/3 -> 0.8
    assert (em, f1) == (0.0, pytest.approx(0.8))
    es = normalizer("mlqa", "es")
    assert score_answer("lobo", ["el lobo"], es) == (1.0, 1.0)


def test_missing_predictions_score_zero_and_are_counted() -> None:
    rows = [{"id": "a", "answers": {"text": ["x y"]}}, {"id": "b", "answers": {"text": ["z"]}}]
    scored = score_examples(rows, {"a": "x y"}, "mlqa", "en")
    assert scored["exact_match"] == 50.0 and scored["f1"] == 50.0 and scored["missing"] == 1


def test_unknown_language_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        normalize_mlqa("a", "xx")
    with pytest.raises(ValueError, match="needs the context language"):
        normalizer("mlqa", None)
