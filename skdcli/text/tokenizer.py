"""Sentencepiece tokenizer for the text recipes: trained on the training side, stored with the data.

Fixed special ids, whatever the corpus (other code may rely on them):

    PAD_ID = 0  <pad>   padding; never produced by ``encode``; losses mask it
    UNK_ID = 1  <unk>   anything the model has no piece for (decoded as the literal "<unk>")
    BOS_ID = 2  <s>     decoder start / LM sequence start
    EOS_ID = 3  </s>    end of sentence

``TextTokenizer.train(texts, vocab_size, model_type)`` trains a joint model (pass source and target
sentences together for translation); ``model_type`` is ``bpe`` | ``unigram`` | ``word`` | ``char``.
``vocab_size`` is an upper bound (``hard_vocab_limit=False``) so a tiny corpus still trains.
Training is deterministic: the whole corpus is read (no sampling), spm's own normalisation is off
(``identity``: the data is already normalised by prep), extra whitespace is collapsed.

On disk a tokenizer is a directory with ``spm.model`` and ``tokenizer.json`` (kind, vocab size,
special ids, sha256 of the model file); ``load_tokenizer(dir)`` reads it back and checks the hash.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm

from ..engine.errors import SkdError
from ..engine.io import atomic_write_bytes, atomic_write_json, file_sha256, read_json

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPM_FILE = "spm.model"
TOKENIZER_FILE = "tokenizer.json"
MODEL_TYPES = ("bpe", "unigram", "word", "char")


class TextTokenizer:
    """A sentencepiece model with the fixed special ids above."""

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, model_proto: bytes, model_type: str = "bpe"):
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except RuntimeError as exc:
            raise SkdError(f"not a sentencepiece model ({exc})") from exc
        expected = {PAD_ID: PAD, UNK_ID: UNK, BOS_ID: BOS, EOS_ID: EOS}
        if any(self._sp.id_to_piece(i) != piece for i, piece in expected.items()):
            raise SkdError("sentencepiece model does not use the ids pad=0, unk=1, bos=2, eos=3")
        self.model_proto = model_proto
        self.model_type = model_type

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, model_type: str = "bpe", num_threads: int | None = None
    ) -> TextTokenizer:
        """Train on ``texts`` (one sentence each; blank ones are skipped)."""
        if model_type not in MODEL_TYPES:
            raise SkdError(f"unknown tokenizer model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
        corpus = [t for t in (" ".join(t.split()) for t in texts) if t]
        if not corpus:
            raise SkdError("no sentences to train the sentencepiece tokenizer on")
        chars = set("".join(corpus)) - {" "}
        if model_type != "word" and vocab_size < len(chars) + 4:
            raise SkdError(
                f"vocab_size {vocab_size} is too small for the {len(chars)} distinct characters of the "
                f"training text; use at least {len(chars) + 4}"
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
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                pad_piece=PAD,
                unk_piece=UNK,
                bos_piece=BOS,
                eos_piece=EOS,
                unk_surface=UNK,
                input_sentence_size=0,
                max_sentence_length=1 << 16,
                num_threads=num_threads or min(8, os.cpu_count() or 1),
                minloglevel=2,
            )
        except RuntimeError as exc:
            raise SkdError(f"sentencepiece training failed: {exc}") from exc
        return cls(model.getvalue(), model_type)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Piece ids of one sentence, optionally framed by <s> / </s>."""
        ids = self._sp.encode(text)
        return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False) -> list[list[int]]:
        return [
            ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else []) for ids in self._sp.encode(list(texts))
        ]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of an id sequence: stops at the first </s>, skips <pad> and <s>."""
        keep: list[int] = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                keep.append(i)
        return self._sp.decode(keep)

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def piece_to_id(self, piece: str) -> int:
        return self._sp.piece_to_id(piece)

    def pieces(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)

    def info(self) -> dict:
        """What ``tokenizer.json`` holds; also copied into the dataset's prep.json."""
        return {
            "kind": "sentencepiece",
            "model": SPM_FILE,
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "pad_id": PAD_ID,
            "unk_id": UNK_ID,
            "bos_id": BOS_ID,
            "eos_id": EOS_ID,
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write ``spm.model`` + ``tokenizer.json`` into ``out_dir`` (atomically); returns the json path."""
        out_dir = Path(out_dir)
        atomic_write_bytes(out_dir / SPM_FILE, self.model_proto)
        return atomic_write_json(out_dir / TOKENIZER_FILE, {**self.info(), "sha256": file_sha256(out_dir / SPM_FILE)})


def train_tokenizer(
    texts: Iterable[str], out_dir: str | Path, vocab_size: int, model_type: str = "bpe"
) -> TextTokenizer:
    """Train a tokenizer on ``texts`` and save it into ``out_dir``."""
    tokenizer = TextTokenizer.train(texts, vocab_size, model_type)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save(out_dir)
    return tokenizer


def load_tokenizer(tokenizer_dir: str | Path) -> TextTokenizer:
    """Read a tokenizer saved by ``save``; errors name the missing, changed or broken file."""
    json_path = Path(tokenizer_dir) / TOKENIZER_FILE
    info = read_json(json_path)
    if not isinstance(info, dict) or info.get("kind") != "sentencepiece":
        raise SkdError("not a skd text tokenizer description (expected kind 'sentencepiece')", json_path)
    model_path = json_path.parent / str(info.get("model", SPM_FILE))
    if not model_path.is_file():
        raise SkdError("sentencepiece model file not found", model_path)
    if "sha256" in info and file_sha256(model_path) != info["sha256"]:
        raise SkdError(f"checksum differs from the one in {TOKENIZER_FILE}; the model file was changed", model_path)
    try:
        return TextTokenizer(model_path.read_bytes(), str(info.get("model_type", "bpe")))
    except SkdError as exc:
        raise SkdError(exc.message, model_path) from exc
