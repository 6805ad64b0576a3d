"""LM corpora (skdcli/text/lm_corpus.py): real WikiText-2 lines, PTB layout, synthetic chain, bad input."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from fixtures_nlp_embed import NLP_EMBED_WIKITEXT
from skdcli.engine.errors import SkdError
from skdcli.text.lm_corpus import (
    EOS,
    UNK,
    LMWindows,
    build_vocab,
    find_split_files,
    generate_synthetic_corpus,
    load_lm_corpus,
    prepare_lm_corpus,
    read_lines,
    tokenize_lines,
)


def test_wikitext2_real_lines_follow_the_lm_convention(tmp_path: Path) -> None:
    info = prepare_lm_corpus("wikitext2", NLP_EMBED_WIKITEXT, tmp_path / "wt2")
    corpus = load_lm_corpus(tmp_path / "wt2")
    for split in ("train", "valid", "test"):
        lines = (NLP_EMBED_WIKITEXT / f"wiki.{split}.tokens").read_text(encoding="utf-8").splitlines()
        # whitespace words + one <eos> per line, blank ' ' lines included (pytorch/examples data.py)
        expected = sum(len(line.split()) + 1 for line in lines)
        assert info["splits"][split]["tokens"] == expected == len(corpus.streams[split])
        assert info["splits"][split]["lines"] == len(lines)
    # the ' ' separator lines really are there and became lone <eos>
    train = (NLP_EMBED_WIKITEXT / "wiki.train.tokens").read_text(encoding="utf-8").splitlines()
    assert "" in [line.strip() for line in train]
    assert corpus.vocab[:2] == [EOS, UNK] and "@-@" in corpus.vocab and "Homarus" in corpus.vocab
    # valid/test words never seen in train are <unk>, and counted
    train_words = {w for line in train for w in line.split()}
    valid_words = (NLP_EMBED_WIKITEXT / "wiki.valid.tokens").read_text(encoding="utf-8").split()
    assert info["splits"]["valid"]["oov_to_unk"] == sum(w not in train_words and w != UNK for w in valid_words)
    ids = corpus.streams["train"][: len(train[0].split())].tolist()
    assert [corpus.vocab[i] for i in ids] == train[0].split()


def test_empty_lines_skip_and_vocab_cap(tmp_path: Path) -> None:
    keep = prepare_lm_corpus("wikitext2", NLP_EMBED_WIKITEXT, tmp_path / "keep")
    skip = prepare_lm_corpus("wikitext2", NLP_EMBED_WIKITEXT, tmp_path / "skip", empty_lines="skip", max_vocab=50)
    blank = sum(1 for line in (NLP_EMBED_WIKITEXT / "wiki.train.tokens").read_text().splitlines() if not line.strip())
    assert skip["splits"]["train"]["tokens"] == keep["splits"]["train"]["tokens"] - blank
    assert skip["vocab_size"] == 50 and load_lm_corpus(tmp_path / "skip").streams["train"].max() < 50
    assert tokenize_lines(["a b", "", "  "], "keep") == [["a", "b", EOS], [EOS], [EOS]]
    assert tokenize_lines(["a b", "", "  "], "skip") == [["a", "b", EOS]]


def test_vocab_order_is_frequency_then_alphabetical() -> None:
    assert build_vocab([["b", "a", "c", "a", EOS], ["c", EOS]]) == [EOS, UNK, "a", "c", "b"]


def test_ptb_layout_and_leading_space(tmp_path: Path) -> None:
    raw = tmp_path / "ptb"
    raw.mkdir()
    for split, text in (("train", " the cat sat \n the N dogs \n"), ("valid", " the cat \n"), ("test", " a dog \n")):
        (raw / f"ptb.{split}.txt").write_text(text)
    info = prepare_lm_corpus("ptb", raw, tmp_path / "out")
    corpus = load_lm_corpus(tmp_path / "out")
    assert info["splits"]["train"]["tokens"] == 8 and info["splits"]["test"]["oov_to_unk"] == 2
    assert [corpus.vocab[i] for i in corpus.streams["test"].tolist()] == [UNK, UNK, EOS]


def test_text_source_finds_prefixed_files_and_allows_no_test(tmp_path: Path) -> None:
    (tmp_path / "my.train.txt").write_text("a b\n")
    (tmp_path / "my.valid.txt").write_text("a\n")
    files = find_split_files("text", tmp_path)
    assert files == {"train": tmp_path / "my.train.txt", "valid": tmp_path / "my.valid.txt"}


def test_synthetic_corpus_is_a_class_markov_chain(tmp_path: Path) -> None:
    raw = generate_synthetic_corpus(tmp_path / "raw", num_classes=4, words_per_class=5, sentences=(300, 10, 10), seed=3)
    meta = json.loads((raw / "classes.json").read_text())
    classes, successors = meta["classes"], meta["successors"]
    lines = (raw / "ptb.train.txt").read_text().splitlines()
    assert all(line.startswith(" ") for line in lines)  # PTB's leading space
    pairs = Counter()
    for line in lines:
        words = line.split()
        for a, b in zip(words, words[1:]):
            assert classes[b] in successors[classes[a]]  # only the two successor classes follow
            pairs[(classes[a], classes[b])] += 1
    c0 = successors[0]
    share = pairs[(0, c0[0])] / (pairs[(0, c0[0])] + pairs[(0, c0[1])])
    assert 0.55 < share < 0.85  # 0.7 by construction
    # the same seed writes the same corpus
    again = generate_synthetic_corpus(
        tmp_path / "again", num_classes=4, words_per_class=5, sentences=(300, 10, 10), seed=3
    )
    assert (again / "ptb.train.txt").read_bytes() == (raw / "ptb.train.txt").read_bytes()


def test_windows_predict_every_token_once_and_mask_padding() -> None:
    stream = torch.arange(11)
    ds = LMWindows(stream, bptt=4)
    items = [ds[i] for i in range(len(ds))]
    assert len(ds) == 3
    targets = torch.cat([it["targets"][it["mask"]] for it in items])
    assert targets.tolist() == list(range(1, 11))
    assert items[-1]["mask"].tolist() == [True, True, False, False]
    assert torch.equal(items[0]["inputs"], torch.tensor([0, 1, 2, 3]))
    assert len(LMWindows(torch.arange(1), 4)) == 0 and len(LMWindows(torch.arange(5), 4)) == 1


# -- bad input ------------------------------------------------------------------------------------------
def test_non_utf8_names_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "ptb.train.txt"
    bad.write_bytes(b" fine line\n ok \xff here\n")
    with pytest.raises(SkdError) as err:
        read_lines(bad)
    assert str(bad) in str(err.value) and "line 2, column 5" in str(err.value) and "0xff" in str(err.value)


def test_missing_split_unknown_source_empty_train(tmp_path: Path) -> None:
    (tmp_path / "ptb.train.txt").write_text(" a b \n")
    (tmp_path / "ptb.valid.txt").write_text(" a \n")
    with pytest.raises(SkdError, match="no test split: expected one of ptb.test.txt, test.txt"):
        prepare_lm_corpus("ptb", tmp_path, tmp_path / "out")
    with pytest.raises(SkdError, match="unknown LM source 'penn'"):
        prepare_lm_corpus("penn", tmp_path, tmp_path / "out2")
    (tmp_path / "ptb.test.txt").write_text("\n")
    (tmp_path / "ptb.train.txt").write_text("\n\n")
    with pytest.raises(SkdError, match="the train split has no words"):
        prepare_lm_corpus("ptb", tmp_path, tmp_path / "out3")
    with pytest.raises(SkdError, match="raw corpus directory not found"):
        prepare_lm_corpus("ptb", tmp_path / "nope", tmp_path / "out4")


def test_prepared_dataset_is_not_overwritten(tmp_path: Path) -> None:
    prepare_lm_corpus("wikitext2", NLP_EMBED_WIKITEXT, tmp_path / "wt2")
    with pytest.raises(SkdError, match="already holds a prepared dataset"):
        prepare_lm_corpus("wikitext2", NLP_EMBED_WIKITEXT, tmp_path / "wt2")
    prepare_lm_corpus("wikitext2", NLP_EMBED_WIKITEXT, tmp_path / "wt2", overwrite=True, empty_lines="skip")
    assert load_lm_corpus(tmp_path / "wt2").info["empty_lines"] == "skip"
    with pytest.raises(SkdError, match="not a prepared LM dataset"):
        load_lm_corpus(tmp_path)


def test_synthetic_oracle_by_hand() -> None:
    from skdcli.text.lm_corpus import synthetic_oracle_nll

    meta = {
        "classes": {"a": 0, "b": 0, "c": 1},
        "successors": [[1, 0], [0, 1]],
        "successor_probs": [0.7, 0.3],
        "min_len": 1,
        "max_len": 2,
    }
    # <eos> a c <eos> c <eos>: a first word (1/3); c after a: continue (1 - 1/2) * 0.7 / 1; <eos> after 2 words:
    # hazard 1/(2-2+1) = 1; c first (1/3); <eos> after 1 word: 1/(2-1+1) = 1/2
    nll, n = synthetic_oracle_nll([EOS, "a", "c", EOS, "c", EOS], meta)
    assert n == 5
    assert nll == pytest.approx(
        -(math.log(1 / 3) + math.log(0.5 * 0.7) + math.log(1.0) + math.log(1 / 3) + math.log(0.5))
    )
