"""Transcript normalisation and the two CTC tokenizers of the asr-ctc recipe.

Both tokenizers reserve id 0 for the CTC blank, so ``nn.CTCLoss(blank=0)`` and padding targets
with 0 work unchanged whichever tokenizer a dataset was prepared with.

On disk a tokenizer is a directory holding ``tokenizer.json`` (and ``spm.model`` for
sentencepiece); ``load_tokenizer`` reads it back.
"""

from __future__ import annotations

import io
import string
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from ..engine.errors import SkdError
from ..engine.io import atomic_write_bytes, atomic_write_json, file_sha256, read_json

BLANK = "<blank>"
TOKENIZER_FILE = "tokenizer.json"
SPM_FILE = "spm.model"
TOKENIZER_KINDS = ("char", "bpe", "unigram")

# The 29 symbols of huutuongtu/skd-ctc's vocab.json (asr-ctc.md §4): blank/pad, space, a-z, apostrophe.
CHAR_SYMBOLS: tuple[str, ...] = (BLANK, " ", *string.ascii_lowercase, "'")


TEXT_NORMS = ("lower", "strip_punctuation")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def normalize_transcript(text: str, norm: str = "lower") -> str:
    """Lower-case, collapse runs of whitespace to one space, strip the ends.

    ``strip_punctuation`` also drops every character that is neither a letter, a digit, an
    apostrophe nor a space (hyphens and dashes become spaces; typographic apostrophes become
    '), for corpora written as sentences (Common Voice: "Hello, world."). Apostrophes at a
    word's edge are quotes and go too; inside a word ("it's") they stay, as in LibriSpeech."""
    if norm == "strip_punctuation":
        text = text.translate(_APOSTROPHES)
        text = "".join(
            c if c.isalnum() or c == "'" else " " if c.isspace() or c in "-\u2010\u2013\u2014" else "" for c in text
        )
        text = " ".join(word.strip("'") for word in text.split())
    elif norm != "lower":
        raise SkdError(f"unknown text normalisation {norm!r}; choose one of {', '.join(TEXT_NORMS)}")
    return " ".join(text.lower().split())


class CharTokenizer:
    """One id per character; id 0 is the CTC blank and never produced by ``encode``."""

    kind = "char"

    def __init__(self, symbols: Iterable[str] = CHAR_SYMBOLS):
        self.symbols = list(symbols)
        if not self.symbols or self.symbols[0] != BLANK:
            raise SkdError(f"char vocabulary must start with {BLANK!r}")
        if len(set(self.symbols)) != len(self.symbols):
            raise SkdError("char vocabulary has duplicate symbols")
        if any(len(s) != 1 for s in self.symbols[1:]):
            raise SkdError("char vocabulary symbols after the blank must be single characters")
        self._ids = {s: i for i, s in enumerate(self.symbols) if i > 0}

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def invalid_chars(self, text: str) -> set[str]:
        return set(normalize_transcript(text)) - self._ids.keys()

    def is_valid(self, text: str) -> bool:
        normalized = normalize_transcript(text)
        return bool(normalized) and not self.invalid_chars(normalized)

    def encode(self, text: str) -> list[int]:
        normalized = normalize_transcript(text)
        bad = self.invalid_chars(normalized)
        if bad:
            raise SkdError(f"characters outside the vocabulary: {''.join(sorted(bad))!r} in {text!r}")
        return [self._ids[c] for c in normalized]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.symbols[i] for i in ids if i != 0)

    def info(self) -> dict:
        """What ``tokenizer.json`` holds; also copied into prep.json."""
        return {"kind": self.kind, "vocab_size": self.vocab_size, "symbols": self.symbols}

    def save(self, out_dir: str | Path) -> Path:
        return atomic_write_json(Path(out_dir) / TOKENIZER_FILE, self.info())


class SentencePieceTokenizer:
    """A sentencepiece BPE or unigram model whose id 0 is the CTC blank.

    Rather than shifting every spm id by one, spm is trained with its padding piece at id 0
    (named ``<blank>``) and ``<unk>`` at id 1. spm never emits the padding piece when encoding,
    so id 0 is free for the blank and spm ids are used as they are.
    """

    def __init__(self, model_proto: bytes, model_type: str):
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except RuntimeError as exc:
            raise SkdError(f"not a sentencepiece model ({exc})") from exc
        if self._sp.id_to_piece(0) != BLANK or not self._sp.is_control(0):
            raise SkdError(f"sentencepiece model does not reserve id 0 for {BLANK!r}")
        self.model_proto = model_proto
        self.model_type = model_type
        self.unk_id = self._sp.unk_id()
        pieces = (
            self._sp.id_to_piece(i)
            for i in range(self._sp.get_piece_size())
            if not (self._sp.is_control(i) or self._sp.is_unknown(i))
        )
        # "▁" marks a word start inside pieces; in transcripts it is a space, always encodable.
        self._chars = {c for piece in pieces for c in piece} - {"▁"}

    @classmethod
    def train(cls, texts: Iterable[str], model_type: str, vocab_size: int) -> SentencePieceTokenizer:
        """Train on normalised ``texts``.

        ``hard_vocab_limit=False`` makes ``vocab_size`` an upper bound, so a tiny corpus that
        cannot fill it still trains (spm would otherwise abort). Training is deterministic: the
        whole corpus is used (no sentence sampling) on one thread, and spm's own text
        normalisation is off because transcripts are already normalised.
        """
        corpus = [t for t in (normalize_transcript(t) for t in texts) if t]
        if not corpus:
            raise SkdError("no transcripts to train the sentencepiece tokenizer on")
        # spm needs a piece for every character plus its reserved pieces (<blank>, <unk>).
        needed = len(set("".join(corpus)) - {" "}) + 3
        if vocab_size < needed:
            raise SkdError(
                f"vocab_size {vocab_size} is too small for the {needed - 3} distinct characters "
                f"in the training transcripts; use at least {needed}"
            )
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(corpus),
                model_writer=model,
                model_type=model_type,
                vocab_size=vocab_size,
                hard_vocab_limit=False,
                character_coverage=1.0,
                normalization_rule_name="identity",
                pad_id=0,
                pad_piece=BLANK,
                unk_id=1,
                bos_id=-1,
                eos_id=-1,
                input_sentence_size=0,
                num_threads=1,
                minloglevel=2,
            )
        except RuntimeError as exc:
            raise SkdError(f"sentencepiece training failed: {exc}") from exc
        return cls(model.getvalue(), model_type)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def invalid_chars(self, text: str) -> set[str]:
        return set(normalize_transcript(text)) - self._chars - {" "}

    def is_valid(self, text: str) -> bool:
        ids = self.encode(text)
        return bool(ids) and self.unk_id not in ids

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(normalize_transcript(text))

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([i for i in ids if i != 0])

    def info(self) -> dict:
        return {
            "kind": "sentencepiece",
            "model": SPM_FILE,
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "blank_id": 0,
            "unk_id": self.unk_id,
        }

    def save(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        atomic_write_bytes(out_dir / SPM_FILE, self.model_proto)
        info = {**self.info(), "sha256": file_sha256(out_dir / SPM_FILE)}
        return atomic_write_json(out_dir / TOKENIZER_FILE, info)


Tokenizer = CharTokenizer | SentencePieceTokenizer


def train_tokenizer(kind: str, texts: Iterable[str], out_dir: str | Path, vocab_size: int) -> Tokenizer:
    """Build a tokenizer of ``kind`` ("char", "bpe", "unigram") and save it into ``out_dir``.

    The char vocabulary is fixed, so ``texts`` and ``vocab_size`` only matter for sentencepiece.
    """
    if kind not in TOKENIZER_KINDS:
        raise SkdError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)}")
    tokenizer: Tokenizer = CharTokenizer() if kind == "char" else SentencePieceTokenizer.train(texts, kind, vocab_size)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save(out_dir)
    return tokenizer


def load_tokenizer(tokenizer_dir: str | Path) -> Tokenizer:
    """Read a tokenizer saved by ``save``; errors name the missing or broken file."""
    json_path = Path(tokenizer_dir) / TOKENIZER_FILE
    info = read_json(json_path)
    if not isinstance(info, dict):
        raise SkdError("not a tokenizer description (expected a JSON object)", json_path)
    kind = info.get("kind")
    if kind == "char":
        symbols = info.get("symbols")
        if not isinstance(symbols, list):
            raise SkdError("char tokenizer has no 'symbols' list", json_path)
        try:
            return CharTokenizer(symbols)
        except SkdError as exc:
            raise SkdError(exc.message, json_path) from exc
    if kind == "sentencepiece":
        model_path = json_path.parent / str(info.get("model", SPM_FILE))
        if not model_path.is_file():
            raise SkdError("sentencepiece model file not found", model_path)
        if "sha256" in info and file_sha256(model_path) != info["sha256"]:
            raise SkdError(f"checksum differs from the one in {TOKENIZER_FILE}; the model file was changed", model_path)
        try:
            return SentencePieceTokenizer(model_path.read_bytes(), str(info.get("model_type", "bpe")))
        except SkdError as exc:
            raise SkdError(exc.message, model_path) from exc
    raise SkdError(f"unknown tokenizer kind {kind!r} (expected 'char' or 'sentencepiece')", json_path)
