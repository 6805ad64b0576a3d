"""Word-level language-modelling corpora: PTB, WikiText-2, plain text, and a synthetic one.

Reading follows the LM convention (pytorch/examples `word_language_model/data.py`): every line is
split on whitespace and gets an ``<eos>`` appended, so an empty line (WikiText-2's ` ` separator
lines) becomes a lone ``<eos>``; that is what the published PTB / WikiText-2 perplexities count.
``empty_lines="skip"`` drops such lines instead. The vocabulary is built from the train split
(``<eos>`` and ``<unk>`` first, then by frequency); valid/test words outside it become ``<unk>``.

Raw layouts (``--raw DIR``):

    ptb        ptb.{train,valid,test}.txt   (Mikolov; also {train,valid,test}.txt)
    wikitext2  wiki.{train,valid,test}.tokens (or .raw), in DIR or DIR/wikitext-2[-raw]/,
               or the pytorch/examples {train,valid,test}.txt
    text       {train,valid,test}.txt or *.{train,valid,test}.txt; test is optional

The prepared dataset (``prep --out DIR``) is ``vocab.txt`` (one word per line, id = line number),
``tokens.safetensors`` (one int32 id stream per split), ``prep.json`` (counts, fingerprint; it is
written last and marks a finished prep) and, for the synthetic corpus, ``classes.json`` (the
ground-truth word classes). The synthetic corpus is a class-based Markov chain written in the PTB
layout: the next class follows a sparse transition matrix, the word is uniform within its class,
so words of one class are interchangeable and an embedding-similarity soft target has a known
right answer (put the mass on the gold word's class mates).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from safetensors.torch import load_file, save_file

from ..engine.errors import SkdError
from ..engine.io import atomic_write, atomic_write_json, atomic_write_text, claim_output_dir, read_json

EOS, UNK = "<eos>", "<unk>"
SPLITS = ("train", "valid", "test")
SOURCES = ("ptb", "wikitext2", "text", "synthetic")
PREP_MARKER = "prep.json"


# -- reading raw files -------------------------------------------------------------------------------
def read_lines(path: Path) -> list[str]:
    """The file's lines as text; a non-UTF-8 byte is an error naming the line and column."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SkdError(f"line {line}, column {column}: not valid UTF-8 (byte 0x{data[exc.start]:02x})", path) from exc


def tokenize_lines(lines: list[str], empty_lines: str = "keep") -> list[list[str]]:
    """Whitespace split + ``<eos>`` per line (the LM convention); see the module doc for empties."""
    out = []
    for line in lines:
        words = line.split()
        if not words and empty_lines == "skip":
            continue
        out.append(words + [EOS])
    return out


def _candidates(source: str, split: str) -> list[str]:
    if source == "ptb":
        return [f"ptb.{split}.txt", f"{split}.txt"]
    if source == "wikitext2":
        names = [f"wiki.{split}.tokens", f"wiki.{split}.raw"]
        return (
            names
            + [f"wikitext-2/{n}" for n in names[:1]]
            + [f"wikitext-2-raw/{n}" for n in names[1:]]
            + [f"{split}.txt"]
        )
    return [f"{split}.txt"]


def find_split_files(source: str, raw: str | Path) -> dict[str, Path]:
    """The split files of a raw layout (module doc); missing required ones are an error."""
    if source not in SOURCES or source == "synthetic":
        raise SkdError(f"unknown LM source '{source}'; valid: {', '.join(SOURCES)}")
    raw = Path(raw)
    if not raw.is_dir():
        raise SkdError("raw corpus directory not found", raw)
    found: dict[str, Path] = {}
    for split in SPLITS:
        for name in _candidates(source, split):
            if (raw / name).is_file():
                found[split] = raw / name
                break
        else:
            if source == "text":
                matches = sorted(raw.glob(f"*.{split}.txt"))
                if len(matches) > 1:
                    raise SkdError(f"several *.{split}.txt files ({', '.join(m.name for m in matches)}); keep one", raw)
                if matches:
                    found[split] = matches[0]
    required = ("train", "valid") if source == "text" else SPLITS
    for split in required:
        if split not in found:
            raise SkdError(f"no {split} split: expected one of {', '.join(_candidates(source, split))}", raw)
    return found


# -- vocabulary and ids ------------------------------------------------------------------------------
def build_vocab(train: list[list[str]], max_size: int = 0) -> list[str]:
    """``<eos>``, ``<unk>``, then train words by frequency (ties alphabetical); ``max_size`` caps it."""
    counts = Counter(w for line in train for w in line if w not in (EOS, UNK))
    words = sorted(counts, key=lambda w: (-counts[w], w))
    vocab = [EOS, UNK] + words
    return vocab[:max_size] if max_size > 0 else vocab


def encode(lines: list[list[str]], index: dict[str, int]) -> tuple[torch.Tensor, int]:
    """One id stream for a split and its count of out-of-vocabulary words (mapped to ``<unk>``)."""
    unk = index[UNK]
    ids = [index.get(w, unk) for line in lines for w in line]
    oov = sum(1 for line in lines for w in line if w not in index)
    return torch.tensor(ids, dtype=torch.int32), oov


# -- the synthetic class-based Markov chain ------------------------------------------------------------
def synthetic_classes(num_classes: int, words_per_class: int) -> dict[str, int]:
    """Word -> class. Names carry no class hint to the model (ids are assigned by frequency)."""
    return {f"w{c:02d}x{i:02d}": c for c in range(num_classes) for i in range(words_per_class)}


def generate_synthetic_corpus(
    out: str | Path,
    num_classes: int = 8,
    words_per_class: int = 12,
    sentences: tuple[int, int, int] = (800, 120, 120),
    min_len: int = 4,
    max_len: int = 14,
    seed: int = 0,
) -> Path:
    """Write ptb.{train,valid,test}.txt (leading space, as in PTB) and classes.json into ``out``.

    Each class has two successor classes (probabilities 0.7 / 0.3) chosen at random, the first
    class is uniform, and each word is drawn uniformly within its class. The best possible
    model therefore spreads next-word mass evenly over a class, which one-hot targets never show.
    """
    rng = random.Random(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = synthetic_classes(num_classes, words_per_class)
    members = [[w for w, c in classes.items() if c == k] for k in range(num_classes)]
    successors = [rng.sample([k for k in range(num_classes) if k != c], 2) for c in range(num_classes)]
    for split, n in zip(SPLITS, sentences):
        lines = []
        for _ in range(n):
            c = rng.randrange(num_classes)
            words = []
            for _ in range(rng.randint(min_len, max_len)):
                words.append(rng.choice(members[c]))
                a, b = successors[c]
                c = a if rng.random() < 0.7 else b
            lines.append(" " + " ".join(words) + " \n")
        atomic_write_text(out / f"ptb.{split}.txt", "".join(lines))
    atomic_write_json(
        out / "classes.json",
        {
            "classes": classes,
            "successors": successors,
            "successor_probs": [0.7, 0.3],
            "min_len": min_len,
            "max_len": max_len,
            "seed": seed,
        },
    )
    return out


def synthetic_oracle_nll(stream: list[str], meta: dict, positions: Iterable[int] | None = None) -> tuple[float, int]:
    """(total NLL, predicted tokens) of a synthetic stream under the chain that generated it: the
    best any model can do (perplexity = exp(total / tokens)), with the same token count as the LM
    eval (every token but the first, ``<eos>`` included; ``positions``: only those stream positions, the
    tokens a stateful eval in several columns predicts). The first word of a sentence is uniform
    over all words; the next word uniform within a successor class (0.7 / 0.3); the sentence ends
    after L words, L uniform in [min_len, max_len], so ``<eos>`` has the hazard P(L = i | L >= i).
    """
    classes, succ, probs = meta["classes"], meta["successors"], meta["successor_probs"]
    lo, hi = meta["min_len"], meta["max_len"]
    per_class = Counter(classes.values())
    n_words = len(classes)

    def stop(i: int) -> float:  # P(sentence ends after word i | it has >= i words)
        return 0.0 if i < lo else 1.0 / (hi - i + 1)

    wanted = set(range(1, len(stream))) if positions is None else set(positions)
    nll, tokens, pos, prev = 0.0, 0, 0, None
    for t, word in enumerate(stream):
        if t in wanted:
            if word == EOS:
                p = stop(pos)
            elif pos == 0:
                p = 1.0 / n_words
            else:
                c = classes[prev]
                p = (
                    (1 - stop(pos))
                    * sum(pr for k, pr in zip(succ[c], probs) if k == classes[word])
                    / per_class[classes[word]]
                )
            nll -= math.log(p) if p > 0 else -math.inf
            tokens += 1
        pos, prev = (0, None) if word == EOS else (pos + 1, word)
    return nll, tokens


# -- prep ---------------------------------------------------------------------------------------------
def prepare_lm_corpus(
    source: str,
    raw: str | Path | None,
    out: str | Path,
    *,
    max_vocab: int = 0,
    empty_lines: str = "keep",
    overwrite: bool = False,
    seed: int = 0,
) -> dict:
    """Read a raw layout (or generate the synthetic corpus) into a prepared dataset; see module doc."""
    if source not in SOURCES:
        raise SkdError(f"unknown LM source '{source}'; valid: {', '.join(SOURCES)}")
    if empty_lines not in ("keep", "skip"):
        raise SkdError(f"--empty-lines: '{empty_lines}' is not one of keep, skip")
    if source != "synthetic" and not raw:
        raise SkdError(f"--source {source} needs --raw DIR")
    out = Path(out)
    claim_output_dir(out, overwrite, PREP_MARKER, "prepared dataset")
    classes = None
    if source == "synthetic":
        raw_dir = generate_synthetic_corpus(out / "raw", seed=seed)
        classes = read_json(raw_dir / "classes.json")
        files = find_split_files("ptb", raw_dir)
    else:
        files = find_split_files(source, raw)
    lines = {split: tokenize_lines(read_lines(path), empty_lines) for split, path in files.items()}
    if not any(len(line) > 1 for line in lines["train"]):
        raise SkdError("the train split has no words", files["train"])
    vocab = build_vocab(lines["train"], max_vocab)
    index = {w: i for i, w in enumerate(vocab)}
    streams, info_splits = {}, {}
    for split, split_lines in lines.items():
        streams[split], oov = encode(split_lines, index)
        info_splits[split] = {
            "file": str(files[split]),
            "lines": len(split_lines),
            "tokens": len(streams[split]),
            "oov_to_unk": oov,
        }
    atomic_write_text(out / "vocab.txt", "".join(w + "\n" for w in vocab))
    atomic_write(out / "tokens.safetensors", lambda p: save_file(streams, str(p)))
    if classes is not None:
        atomic_write_json(out / "classes.json", classes)
    digest = hashlib.sha256()
    for split in sorted(streams):
        digest.update(split.encode() + streams[split].numpy().tobytes())
    info = {
        "source": source,
        "raw": str(raw) if raw else str(out / "raw"),
        "vocab_size": len(vocab),
        "empty_lines": empty_lines,
        "max_vocab": max_vocab,
        "splits": info_splits,
        "fingerprint": digest.hexdigest()[:16],
        "has_classes": classes is not None,
    }
    atomic_write_json(out / PREP_MARKER, info)
    return {"out": str(out), **info}


@dataclass
class LMCorpus:
    """A prepared dataset in memory: vocabulary, id streams per split, and prep.json."""

    path: Path
    vocab: list[str]
    streams: dict[str, torch.Tensor]
    info: dict
    classes: dict[str, int] | None = None
    synthetic: dict | None = None  # the synthetic chain's parameters (classes.json), for the oracle

    @property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}


def load_lm_corpus(path: str | Path) -> LMCorpus:
    path = Path(path)
    if not (path / PREP_MARKER).is_file():
        raise SkdError("not a prepared LM dataset (no prep.json; run `skd nlp-embed prep`)", path)
    vocab = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    streams = {k: v.long() for k, v in load_file(str(path / "tokens.safetensors")).items()}
    bad = [k for k, v in streams.items() if v.numel() and int(v.max()) >= len(vocab)]
    if bad:
        raise SkdError(f"token ids of split(s) {bad} exceed the vocabulary ({len(vocab)} words)", path)
    meta = read_json(path / "classes.json") if (path / "classes.json").is_file() else None
    return LMCorpus(path, vocab, streams, read_json(path / PREP_MARKER), meta["classes"] if meta else None, meta)


def batchify(stream: torch.Tensor, columns: int) -> torch.Tensor:
    """The stream cut into ``columns`` contiguous parallel streams (columns, L), the remainder
    (len % columns tokens) dropped: pytorch/examples ``word_language_model``'s ``batchify``."""
    length = len(stream) // columns
    return stream[: columns * length].reshape(columns, length)


class LMStreamColumns(torch.utils.data.Dataset):
    """Truncated-BPTT training data: the train stream as ``columns`` parallel streams
    (``batchify``), each cut into consecutive windows of ``bptt`` predictions (the last one
    shorter, its padding masked). Item ``c * windows + j`` is window j of column c, with
    ``column`` and ``window`` so the task can carry each column's LSTM state from window j-1.
    ``order()`` lists one epoch: window 0 of every column, then window 1, ... so that one global
    batch of ``columns`` items is one time slice (the engine's ``Task.epoch_order``; DDP ranks
    take interleaved columns, the same ones at every step).
    """

    def __init__(self, stream: torch.Tensor, columns: int, bptt: int, pad_id: int = 0):
        self.data = batchify(stream, columns)
        self.columns, self.bptt, self.pad_id = columns, bptt, pad_id
        length = self.data.shape[1]
        self.windows = (length - 2) // bptt + 1 if length > 1 else 0

    def __len__(self) -> int:
        return self.columns * self.windows

    def __getitem__(self, i: int) -> dict:
        column, window = divmod(i, self.windows)
        chunk = self.data[column, window * self.bptt : window * self.bptt + self.bptt + 1]
        n = len(chunk) - 1
        inputs = torch.full((self.bptt,), self.pad_id, dtype=torch.long)
        targets = torch.full((self.bptt,), self.pad_id, dtype=torch.long)
        inputs[:n], targets[:n] = chunk[:-1], chunk[1:]
        mask = torch.zeros(self.bptt, dtype=torch.bool)
        mask[:n] = True
        return {"inputs": inputs, "targets": targets, "mask": mask, "column": column, "window": window}

    def order(self) -> list[int]:
        return [c * self.windows + j for j in range(self.windows) for c in range(self.columns)]


class LMWindows(torch.utils.data.Dataset):
    """Non-overlapping windows of ``bptt`` next-token predictions over one id stream.

    Item i: inputs = stream[i*bptt : i*bptt + bptt], targets = the same shifted by one, and a mask
    that is False on the padding of the final short window (padding never enters a loss or a
    metric). Every token but the first is predicted exactly once, as perplexity needs. Windows
    are independent (no hidden state carried between them), so the engine can shuffle them.
    """

    def __init__(self, stream: torch.Tensor, bptt: int, pad_id: int = 0):
        self.stream, self.bptt, self.pad_id = stream, bptt, pad_id
        self.n = max(0, (len(stream) - 2) // bptt + 1) if len(stream) > 1 else 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        start = i * self.bptt
        chunk = self.stream[start : start + self.bptt + 1]
        n = len(chunk) - 1
        inputs = torch.full((self.bptt,), self.pad_id, dtype=torch.long)
        targets = torch.full((self.bptt,), self.pad_id, dtype=torch.long)
        inputs[:n], targets[:n] = chunk[:-1], chunk[1:]
        mask = torch.zeros(self.bptt, dtype=torch.bool)
        mask[:n] = True
        return {"inputs": inputs, "targets": targets, "mask": mask}
