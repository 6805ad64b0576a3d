"""The shared sentencepiece tokenizer: special ids, training, save/load, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from skdcli.engine.errors import SkdError
from skdcli.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, TextTokenizer, load_tokenizer, train_tokenizer

TEXTS = ["ein kleiner satz", "a small sentence", "noch ein satz", "one more sentence"] * 20


def test_special_ids_and_round_trip(tmp_path: Path) -> None:
    tok = train_tokenizer(TEXTS, tmp_path / "tok", vocab_size=60)
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    ids = tok.encode("ein kleiner satz", add_bos=True, add_eos=True)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID and PAD_ID not in ids and UNK_ID not in ids
    assert tok.decode(ids) == "ein kleiner satz"
    # decode stops at </s> and skips padding
    assert tok.decode(ids + [PAD_ID, PAD_ID]) == "ein kleiner satz"
    assert tok.decode(tok.encode("a small sentence") + [EOS_ID] + tok.encode("satz")) == "a small sentence"
    assert tok.encode_batch(["ein satz", "a sentence"], add_eos=True) == [
        tok.encode("ein satz", add_eos=True),
        tok.encode("a sentence", add_eos=True),
    ]
    # unseen characters become <unk>, decoded as the literal "<unk>"
    assert UNK_ID in tok.encode("xyz")
    assert "<unk>" in tok.decode(tok.encode("ein xyz"))
    loaded = load_tokenizer(tmp_path / "tok")
    assert loaded.vocab_size == tok.vocab_size <= 60
    assert loaded.encode("noch ein satz") == tok.encode("noch ein satz")
    assert loaded.info()["model_type"] == "bpe"


def test_word_model_keeps_words_whole() -> None:
    tok = TextTokenizer.train(TEXTS, vocab_size=100, model_type="word")
    assert tok.pieces("ein kleiner satz") == ["▁ein", "▁kleiner", "▁satz"]


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SkdError, match="too small"):
        TextTokenizer.train(TEXTS, vocab_size=8)
    with pytest.raises(SkdError, match="no sentences"):
        TextTokenizer.train(["", "  "], vocab_size=50)
    with pytest.raises(SkdError, match="unknown tokenizer model type"):
        TextTokenizer.train(TEXTS, vocab_size=50, model_type="wordpiece")
    train_tokenizer(TEXTS, tmp_path / "tok", vocab_size=60)
    model = tmp_path / "tok" / "spm.model"
    model.write_bytes(model.read_bytes() + b"x")
    with pytest.raises(SkdError, match="checksum") as err:
        load_tokenizer(tmp_path / "tok")
    assert str(model) in str(err.value)
    with pytest.raises(SkdError, match="file not found"):
        load_tokenizer(tmp_path / "missing")
