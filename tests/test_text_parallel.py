"""Parallel data: the IWSLT layout, TSV/JSONL through HF datasets, the synthetic pair, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skdcli.engine.errors import SkdError
from skdcli.text.parallel import (
    ParallelDataset,
    ToyGrammar,
    collate_parallel,
    load_prepared_parallel,
    prepare_parallel,
    read_lines,
    write_synthetic_pair,
)

DE = ["ein kleiner test .", "das haus ist gro@@ ß .", "wir sehen uns morgen .", "danke sch@@ ön ."]
EN = ["a small test .", "the house is big .", "see you tomorrow .", "thank you very much ."]


def write_iwslt(root: Path, n_rep: int = 6) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, rep in (("train", n_rep), ("valid", 1), ("test", 1)):
        (root / f"{split}.de").write_text("".join(s + "\n" for s in DE * rep), encoding="utf-8")
        (root / f"{split}.en").write_text("".join(s + "\n" for s in EN * rep), encoding="utf-8")
    return root


def test_iwslt_layout_removes_or_keeps_bpe_markers(tmp_path: Path) -> None:
    raw = write_iwslt(tmp_path / "iwslt")
    info = prepare_parallel("iwslt14", raw, tmp_path / "out", vocab_size=60)
    assert info["src_lang"] == "de" and info["tgt_lang"] == "en"
    assert info["counts"] == {"train": 24, "valid": 4, "test": 4}
    data = load_prepared_parallel(tmp_path / "out")
    src, tgt = data.split("train")
    assert src[1] == "das haus ist groß ." and "@@" not in "".join(src)
    assert tgt[:4] == EN
    assert (tmp_path / "out" / "tokenizer" / "spm.model").is_file()
    kept = prepare_parallel("iwslt14", raw, tmp_path / "kept", vocab_size=60, bpe="keep")
    assert kept["bpe_marker"] == "@@ "
    assert load_prepared_parallel(tmp_path / "kept").split("train")[0][1] == "das haus ist gro@@ ß ."
    with pytest.raises(SkdError, match="--overwrite"):
        prepare_parallel("iwslt14", raw, tmp_path / "out", vocab_size=60)


def test_misaligned_files_name_both_files_and_counts(tmp_path: Path) -> None:
    raw = write_iwslt(tmp_path / "iwslt")
    (raw / "train.en").write_text("".join(s + "\n" for s in EN * 5), encoding="utf-8")
    with pytest.raises(SkdError) as err:
        prepare_parallel("iwslt14", raw, tmp_path / "out", vocab_size=60)
    msg = str(err.value)
    assert str(raw / "train.de") in msg and str(raw / "train.en") in msg and "24 lines" in msg and "20 lines" in msg


def test_empty_overlong_and_non_utf8_lines(tmp_path: Path) -> None:
    raw = write_iwslt(tmp_path / "iwslt")
    lines = (raw / "train.en").read_text().splitlines()
    lines[2] = "   "
    (raw / "train.en").write_text("\n".join(lines) + "\n")
    with pytest.raises(SkdError, match="empty target sentence at line 3") as err:
        prepare_parallel("iwslt14", raw, tmp_path / "a", vocab_size=60)
    assert str(raw / "train.en") in str(err.value)
    skipped = prepare_parallel("iwslt14", raw, tmp_path / "b", vocab_size=60, skip_bad=True)
    assert skipped["counts"]["train"] == 23 and skipped["skipped"] == 1
    assert "empty target" in (tmp_path / "b" / "skipped.jsonl").read_text()

    raw = write_iwslt(tmp_path / "iwslt2")
    with pytest.raises(SkdError, match=r"line 1: source sentence has \d+ tokens, more than the limit of 3"):
        prepare_parallel("iwslt14", raw, tmp_path / "c", vocab_size=60, max_tokens=3)

    (raw / "valid.de").write_bytes(b"gut\nkaputt \xff\xfe hier\n")
    (raw / "valid.en").write_text("good\nbroken here\n")
    with pytest.raises(SkdError, match=r"not UTF-8: byte 0xff at line 2") as err:
        prepare_parallel("iwslt14", raw, tmp_path / "d", vocab_size=60)
    assert str(raw / "valid.de") in str(err.value)


def test_unknown_source_and_missing_raw(tmp_path: Path) -> None:
    with pytest.raises(SkdError, match="unknown source 'wmt'; choose one of iwslt14, parallel, synthetic"):
        prepare_parallel("wmt", tmp_path, tmp_path / "o")
    with pytest.raises(SkdError, match="needs --raw"):
        prepare_parallel("iwslt14", None, tmp_path / "o")
    with pytest.raises(SkdError, match="raw data not found"):
        prepare_parallel("iwslt14", tmp_path / "nope", tmp_path / "o")
    (tmp_path / "x").mkdir()
    with pytest.raises(SkdError, match="exactly two files train"):
        prepare_parallel("iwslt14", tmp_path / "x", tmp_path / "o")


def test_tsv_and_jsonl_through_hf_datasets(tmp_path: Path) -> None:
    pairs = list(zip(DE, EN)) * 12  # 48 pairs: every 23rd is valid, the next test
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("de\ten\n" + "".join(f"{s}\t{t}\n" for s, t in pairs) + 'ein "zitat"\ta "quote"\n')
    info = prepare_parallel("parallel", tsv, tmp_path / "tsv", vocab_size=60)
    assert info["counts"] == {"train": 43, "valid": 3, "test": 3}  # rows 0, 23, 46 valid; 1, 24, 47 test
    data = load_prepared_parallel(tmp_path / "tsv")
    all_src = [s for split in ("train", "valid", "test") for s in data.split(split)[0]]
    assert 'ein "zitat"' in all_src  # quotes are text, not CSV quoting
    headerless = tmp_path / "plain.tsv"
    headerless.write_text("".join(f"{s}\t{t}\n" for s, t in pairs))
    assert sum(prepare_parallel("parallel", headerless, tmp_path / "plain", vocab_size=60)["counts"].values()) == 48
    for i, row_of in enumerate(
        [
            lambda s, t: {"de": s, "en": t},
            lambda s, t: {"source": s, "target": t},
            lambda s, t: {"translation": {"de": s, "en": t}},
        ]
    ):
        jl = tmp_path / f"p{i}.jsonl"
        jl.write_text("".join(json.dumps(row_of(s, t)) + "\n" for s, t in pairs))
        info = prepare_parallel("parallel", jl, tmp_path / f"j{i}", vocab_size=60)
        assert info["counts"] == {"train": 42, "valid": 3, "test": 3}
        assert load_prepared_parallel(tmp_path / f"j{i}").split("train")[1][0] == EN[2]
    # a directory of split files
    split_dir = tmp_path / "splits"
    split_dir.mkdir()
    (split_dir / "train.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs))
    (split_dir / "test.jsonl").write_text("".join(json.dumps({"de": s, "en": t}) + "\n" for s, t in pairs[:3]))
    info = prepare_parallel("parallel", split_dir, tmp_path / "sd", vocab_size=60)
    assert info["counts"] == {"train": 48, "valid": 0, "test": 3}


def test_bad_tables(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\nonly one column\n")
    with pytest.raises(SkdError, match="line 2: expected 2 tab-separated columns") as err:
        prepare_parallel("parallel", bad, tmp_path / "o", vocab_size=60)
    assert str(bad) in str(err.value)
    jl = tmp_path / "bad.jsonl"
    jl.write_text(json.dumps({"fr": "x", "it": "y"}) + "\n")
    with pytest.raises(SkdError, match="JSONL rows need the keys"):
        prepare_parallel("parallel", jl, tmp_path / "o", vocab_size=60)
    csv = tmp_path / "p.csv"
    csv.write_text("a,b\n")
    with pytest.raises(SkdError, match="unsupported parallel file"):
        prepare_parallel("parallel", csv, tmp_path / "o", vocab_size=60)


def test_synthetic_pair_is_deterministic_learnable_and_noisy(tmp_path: Path) -> None:
    a = write_synthetic_pair(tmp_path / "a", n_train=300, n_valid=10, n_test=10, seed=3)
    b = write_synthetic_pair(tmp_path / "b", n_train=300, n_valid=10, n_test=10, seed=3)
    for name in ("train.de", "train.en", "valid.de", "valid.en", "test.de", "test.en"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    src, tgt = read_lines(a / "train.de"), read_lines(a / "train.en")
    assert len(src) == len(tgt) == 300
    assert all(5 <= len(s.split()) <= 12 and len(s.split()) == len(t.split()) for s, t in zip(src, tgt))
    g = ToyGrammar.build()
    # reordering: the source verb comes last, the target verb third or fourth
    verbs = set(g.src["verb"])
    assert all(s.split()[-1] in verbs for s in src)
    # synonym noise: some target words appear under two surface forms
    used = {w for t in tgt for w in t.split()}
    assert any(g.synonyms[w] in used for w in g.synonyms if w in used)
    bpe = write_synthetic_pair(tmp_path / "bpe", n_train=5, n_valid=1, n_test=1, fake_bpe=True)
    assert "@@ " in (bpe / "train.de").read_text()


def test_dataset_and_collate(tmp_path: Path) -> None:
    raw = write_iwslt(tmp_path / "iwslt")
    prepare_parallel("iwslt14", raw, tmp_path / "out", vocab_size=60)
    data = load_prepared_parallel(tmp_path / "out")
    src, tgt = data.split("train")
    ds = ParallelDataset(src, tgt, data.tokenizer, max_tokens=64)
    batch = collate_parallel([ds[0], ds[1]])
    assert batch["src"].shape[0] == 2 and batch["index"].tolist() == [0, 1]
    assert batch["tgt_in"][0, 0] == 2 and (batch["tgt_out"][0] == 3).sum() == 1
    assert batch["tgt_in"][:, 1:].tolist()[0][: len(ds[0]["tgt"]) - 1] == ds[0]["tgt"][:-1]
    with pytest.raises(SkdError, match="more than the model's limit of 2"):
        ParallelDataset(src, tgt, data.tokenizer, max_tokens=2, where=tmp_path / "out" / "train.src")
