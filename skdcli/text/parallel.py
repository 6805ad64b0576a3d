"""Parallel corpora for translation: read real formats, write the synthetic toy pair, prepare a dataset.

Sources (``prepare_parallel(source, raw, out, ...)``):

- ``iwslt14``: a directory in the layout fairseq's ``prepare-iwslt14.sh`` writes
  (``train.de``/``train.en``, ``valid.*``, ``test.*``; one Moses-tokenized, lowercased sentence per
  line, subword-nmt continuation marker ``@@ ``). The language pair is read from the file names
  (or given). By default the ``@@ `` markers are removed (``bpe="remove"``: the text goes back to
  whole Moses tokens and our sentencepiece model does the subword split, so scoring never sees
  a marker); ``bpe="keep"`` trains sentencepiece on the BPE'd text as is, and the markers are
  stripped from hypotheses and references before scoring (``metrics.remove_bpe``).
- ``parallel``: a TSV (``source<TAB>target``; a header row naming the two columns is recognised)
  or JSONL file (``{"de": ..., "en": ...}``, ``{"source": ..., "target": ...}`` or HF's
  ``{"translation": {"de": ..., "en": ...}}``), read with the HF ``datasets`` library from the
  local file (nothing downloaded). ``--raw`` may also be a directory holding
  ``train``/``valid``/``test`` files of one of those kinds; a lone file gives train, and every 23rd
  pair is held out as valid (the IWSLT14 convention) and the next one as test.
- ``synthetic``: ``write_synthetic_pair`` writes a toy language pair in the IWSLT layout first.

Bad input stops with one line naming the file: different line counts (both files and counts),
empty sentences, a sentence longer than ``max_tokens`` pieces (the model's limit), bytes that are
not UTF-8 (line and byte offset), an unknown source name. ``skip_bad=True`` instead drops bad
pairs and lists them in ``skipped.jsonl``.

The prepared dataset (``OUT/``): ``{train,valid,test}.{src,tgt}`` (the cleaned text, one sentence per
line), ``tokenizer/`` (joint sentencepiece model trained on the train side of both languages),
``prep.json`` (source, languages, counts, tokenizer info, limits, fingerprint).
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..engine.errors import SkdError
from ..engine.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_json
from .metrics import BPE_MARKER, remove_bpe
from .tokenizer import TextTokenizer, load_tokenizer

SOURCES = ("iwslt14", "parallel", "synthetic")
SPLITS = ("train", "valid", "test")
PREP_FILE = "prep.json"
HOLDOUT_EVERY = 23  # prepare-iwslt14.sh: every 23rd training line is the valid set


# -- reading text files -------------------------------------------------------------------------------------
def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (no trailing newline); a non-UTF-8 byte stops with line and offset."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SkdError(
            f"not UTF-8: byte 0x{data[exc.start]:02x} at line {line} (byte offset {exc.start})", path
        ) from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]


@dataclass
class Pair:
    src: str
    tgt: str
    src_file: str  # where each side came from, for messages
    tgt_file: str
    line: int

    @property
    def origin(self) -> str:
        return f"{self.src_file}:{self.line}"


def _aligned_files(src_path: Path, tgt_path: Path) -> list[Pair]:
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise SkdError(
            f"misaligned parallel files: {src_path} has {len(src)} lines but {tgt_path} has {len(tgt)} lines", src_path
        )
    return [Pair(s, t, str(src_path), str(tgt_path), i) for i, (s, t) in enumerate(zip(src, tgt), 1)]


def detect_pair(raw: Path, src_lang: str | None, tgt_lang: str | None) -> tuple[str, str]:
    """Language suffixes of ``train.*`` in an IWSLT-layout directory (two of them), or the given ones."""
    if src_lang and tgt_lang:
        return src_lang, tgt_lang
    suffixes = sorted(p.suffix[1:] for p in raw.glob("train.*") if p.suffix[1:] and p.suffix != ".json")
    if len(suffixes) != 2:
        raise SkdError(
            f"expected exactly two files train.<lang> (found {len(suffixes)}: "
            f"{', '.join('train.' + s for s in suffixes) or 'none'}); pass --src-lang/--tgt-lang",
            raw,
        )
    if src_lang or tgt_lang:
        given = src_lang or tgt_lang
        if given not in suffixes:
            raise SkdError(f"no train.{given} here (have {', '.join(suffixes)})", raw)
        other = next(s for s in suffixes if s != given)
        return (given, other) if src_lang else (other, given)
    # IWSLT14 is De->En; otherwise alphabetical order, which the user can override.
    return ("de", "en") if suffixes == ["de", "en"] else (suffixes[0], suffixes[1])


def read_iwslt_layout(raw: Path, src_lang: str, tgt_lang: str, bpe: str) -> dict[str, list[Pair]]:
    if not raw.is_dir():
        raise SkdError("--source iwslt14 needs a directory with train/valid/test.<lang> files", raw)
    splits: dict[str, list[Pair]] = {}
    for split in SPLITS:
        src_path, tgt_path = raw / f"{split}.{src_lang}", raw / f"{split}.{tgt_lang}"
        if not src_path.is_file() and not tgt_path.is_file() and split != "train":
            splits[split] = []
            continue
        for p in (src_path, tgt_path):
            if not p.is_file():
                raise SkdError(
                    f"missing {p.name} (the IWSLT layout needs {split}.{src_lang} and {split}.{tgt_lang})", p
                )
        splits[split] = _aligned_files(src_path, tgt_path)
    if bpe == "remove":
        for pairs in splits.values():
            for pair in pairs:
                pair.src, pair.tgt = remove_bpe(pair.src), remove_bpe(pair.tgt)
    return splits


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".txt"):
        return "tsv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    raise SkdError("unsupported parallel file (expected .tsv or .jsonl)", path)


def _read_table(path: Path, src_lang: str, tgt_lang: str) -> list[Pair]:
    """One TSV / JSONL file through HF datasets (local file, cache in a temp dir)."""
    import datasets

    lines = read_lines(path)  # UTF-8 check with a line number before handing it to datasets
    if not any(ln.strip() for ln in lines):
        raise SkdError("parallel file is empty", path)
    kind = _file_kind(path)
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as cache:
        try:
            if kind == "tsv":
                first = lines[0].split("\t")
                has_header = len(first) == 2 and {c.strip().lower() for c in first} in (
                    {"source", "target"},
                    {"src", "tgt"},
                    {src_lang, tgt_lang},
                )
                for i, ln in enumerate(lines[1 if has_header else 0 :], 2 if has_header else 1):
                    if ln.count("\t") != 1:
                        raise SkdError(f"line {i}: expected 2 tab-separated columns, got {ln.count(chr(9)) + 1}", path)
                features = datasets.Features({"source": datasets.Value("string"), "target": datasets.Value("string")})
                ds = datasets.load_dataset(
                    "csv",
                    data_files=str(path),
                    delimiter="\t",
                    quoting=csv.QUOTE_NONE,
                    column_names=["source", "target"],
                    skiprows=1 if has_header else 0,
                    na_filter=False,
                    features=features,
                    cache_dir=cache,
                    split="train",
                )
                src, tgt = ds["source"], ds["target"]
                offset = 2 if has_header else 1
            else:
                ds = datasets.load_dataset("json", data_files=str(path), cache_dir=cache, split="train")
                cols = set(ds.column_names)
                if "translation" in cols:
                    rows = ds["translation"]
                    if not rows or src_lang not in rows[0] or tgt_lang not in rows[0]:
                        raise SkdError(
                            f"'translation' objects need the keys {src_lang!r} and {tgt_lang!r} "
                            "(set --src-lang/--tgt-lang)",
                            path,
                        )
                    src, tgt = [r[src_lang] for r in rows], [r[tgt_lang] for r in rows]
                elif {src_lang, tgt_lang} <= cols:
                    src, tgt = ds[src_lang], ds[tgt_lang]
                elif {"source", "target"} <= cols:
                    src, tgt = ds["source"], ds["target"]
                else:
                    raise SkdError(
                        f"JSONL rows need the keys {src_lang!r}/{tgt_lang!r}, 'source'/'target' or "
                        f"'translation'; found {', '.join(sorted(cols))}",
                        path,
                    )
                offset = 1
        except SkdError:
            raise
        except Exception as exc:  # datasets' parse errors: one line, the file named
            raise SkdError(
                f"cannot read with HF datasets ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''})",
                path,
            ) from exc
    return [
        Pair("" if s is None else str(s), "" if t is None else str(t), str(path), str(path), i)
        for i, (s, t) in enumerate(zip(src, tgt), offset)
    ]


def read_parallel_table(raw: Path, src_lang: str, tgt_lang: str) -> dict[str, list[Pair]]:
    if raw.is_file():
        pairs = _read_table(raw, src_lang, tgt_lang)
        splits: dict[str, list[Pair]] = {s: [] for s in SPLITS}
        for i, pair in enumerate(pairs):
            k = i % HOLDOUT_EVERY
            splits["valid" if k == 0 else "test" if k == 1 else "train"].append(pair)
        return splits
    if raw.is_dir():
        splits = {}
        for split in SPLITS:
            found = [p for p in sorted(raw.glob(f"{split}.*")) if p.suffix.lower() in (".tsv", ".jsonl", ".json")]
            if len(found) > 1:
                raise SkdError(f"several {split} files ({', '.join(p.name for p in found)}); keep one", raw)
            splits[split] = _read_table(found[0], src_lang, tgt_lang) if found else []
        if not splits["train"]:
            raise SkdError("no train.tsv / train.jsonl here", raw)
        return splits
    raise SkdError("parallel data not found", raw)


# -- the synthetic toy language pair -------------------------------------------------------------------------
_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"


def _words(rng: random.Random, n: int, syllables: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        w = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


@dataclass
class ToyGrammar:
    """A toy De->En-like pair: word classes, a dictionary, two word-order rules, target synonyms.

    Source order: NP_subj [PP] NP_obj VERB  with NP = DET NOUN [ADJ]  (verb-final, adjective after noun)
    Target order: NP_subj VERB NP_obj [PP]  with NP = DET [ADJ] NOUN  (SVO, adjective before noun)
    Every source word has one target word; a third of the target nouns/verbs/adjectives have a
    synonym, used with probability ``synonym_prob`` (so the target distribution is not one-hot at
    those positions: the best achievable token accuracy there is 1 - synonym_prob).
    """

    src: dict[str, list[str]]
    tgt_of: dict[str, str]
    synonyms: dict[str, str]

    @classmethod
    def build(
        cls, seed: int = 1234, nouns: int = 16, verbs: int = 8, adjs: int = 8, dets: int = 3, preps: int = 3
    ) -> ToyGrammar:
        rng = random.Random(seed)
        taken: set[str] = set()
        sizes = {"noun": nouns, "verb": verbs, "adj": adjs, "det": dets, "prep": preps}
        src = {c: _words(rng, n, 2 if c in ("noun", "verb", "adj") else 1, taken) for c, n in sizes.items()}
        tgt_of, synonyms = {}, {}
        for c, words in src.items():
            targets = _words(rng, len(words), 2 if c in ("noun", "verb", "adj") else 1, taken)
            tgt_of.update(zip(words, targets))
            if c in ("noun", "verb", "adj"):
                for t in targets[: len(targets) // 3]:
                    synonyms[t] = _words(rng, 1, 2, taken)[0]
        return cls(src, tgt_of, synonyms)

    def sentence(self, rng: random.Random, synonym_prob: float) -> tuple[str, str]:
        def np_(with_adj: bool) -> tuple[list[str], list[str]]:
            det, noun = rng.choice(self.src["det"]), rng.choice(self.src["noun"])
            adj = [rng.choice(self.src["adj"])] if with_adj else []
            return [det, noun] + adj, [det] + adj + [noun]  # source NP, its target-order words

        subj_s, subj_t = np_(rng.random() < 0.4)
        obj_s, obj_t = np_(rng.random() < 0.4)
        verb = rng.choice(self.src["verb"])
        pp_s: list[str] = []
        pp_t: list[str] = []
        if rng.random() < 0.35:
            prep = rng.choice(self.src["prep"])
            n_s, n_t = np_(False)
            pp_s, pp_t = [prep] + n_s, [prep] + n_t
        source = subj_s + pp_s + obj_s + [verb]
        target_src_words = subj_t + [verb] + obj_t + pp_t

        def translate(w: str) -> str:
            t = self.tgt_of[w]
            return self.synonyms[t] if t in self.synonyms and rng.random() < synonym_prob else t

        return " ".join(source), " ".join(translate(w) for w in target_src_words)


def _fake_bpe(sentence: str) -> str:
    """Split words longer than 3 letters subword-nmt style (``kalu`` -> ``ka@@ lu``), for loader tests."""
    return " ".join(f"{w[:2]}@@ {w[2:]}" if len(w) > 3 else w for w in sentence.split())


def write_synthetic_pair(
    out_dir: str | Path,
    n_train: int = 2000,
    n_valid: int = 200,
    n_test: int = 200,
    seed: int = 0,
    synonym_prob: float = 0.1,
    src_lang: str = "de",
    tgt_lang: str = "en",
    fake_bpe: bool = False,
    grammar_seed: int = 1234,
) -> Path:
    """Write the toy pair in the IWSLT layout (``train.de``/``train.en``, ``valid.*``, ``test.*``).

    The grammar (vocabulary, dictionary) depends on ``grammar_seed`` only; ``seed`` draws the
    sentences. Sentences have 5-12 source words; vocabulary about 2 x 38 words + synonyms.
    """
    out = Path(out_dir)
    grammar = ToyGrammar.build(grammar_seed)
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        pairs = [grammar.sentence(rng, synonym_prob) for _ in range(n)]
        if fake_bpe:
            pairs = [(_fake_bpe(s), _fake_bpe(t)) for s, t in pairs]
        atomic_write_text(out / f"{split}.{src_lang}", "".join(s + "\n" for s, _ in pairs))
        atomic_write_text(out / f"{split}.{tgt_lang}", "".join(t + "\n" for _, t in pairs))
    return out


# -- preparing a dataset ------------------------------------------------------------------------------------------
def _check_pairs(splits: dict[str, list[Pair]], skip_bad: bool) -> tuple[dict[str, list[Pair]], list[dict]]:
    skipped: list[dict] = []
    kept: dict[str, list[Pair]] = {}
    for split, pairs in splits.items():
        kept[split] = []
        for pair in pairs:
            pair.src, pair.tgt = " ".join(pair.src.split()), " ".join(pair.tgt.split())
            side = "source" if not pair.src else "target" if not pair.tgt else None
            if side:
                if not skip_bad:
                    raise SkdError(
                        f"empty {side} sentence at line {pair.line} (pass --skip-bad to drop such pairs)",
                        pair.src_file if side == "source" else pair.tgt_file,
                    )
                skipped.append({"split": split, "where": pair.origin, "reason": f"empty {side} sentence"})
                continue
            kept[split].append(pair)
    return kept, skipped


def _check_lengths(
    splits: dict[str, list[Pair]], tokenizer: TextTokenizer, max_tokens: int, skip_bad: bool, skipped: list[dict]
) -> dict[str, list[Pair]]:
    """Every sentence must fit the model: at most ``max_tokens`` pieces (+ <s>/</s> added later)."""
    kept: dict[str, list[Pair]] = {}
    for split, pairs in splits.items():
        src_ids = tokenizer.encode_batch([p.src for p in pairs])
        tgt_ids = tokenizer.encode_batch([p.tgt for p in pairs])
        kept[split] = []
        for pair, s, t in zip(pairs, src_ids, tgt_ids):
            longest = max(len(s), len(t))
            if longest > max_tokens:
                side = "source" if len(s) >= len(t) else "target"
                msg = f"{side} sentence has {longest} tokens, more than the limit of {max_tokens} (--max-tokens)"
                if not skip_bad:
                    raise SkdError(
                        f"line {pair.line}: {msg}; pass --skip-bad to drop such pairs",
                        pair.src_file if side == "source" else pair.tgt_file,
                    )
                skipped.append({"split": split, "where": pair.origin, "reason": msg})
                continue
            kept[split].append(pair)
    return kept


def prepare_parallel(
    source: str,
    raw: str | Path | None,
    out: str | Path,
    *,
    vocab_size: int = 8000,
    model_type: str = "bpe",
    max_tokens: int = 256,
    src_lang: str | None = None,
    tgt_lang: str | None = None,
    bpe: str = "remove",
    skip_bad: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    synthetic: dict | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Read ``source`` from ``raw`` and write the prepared dataset into ``out`` (module doc)."""
    if source not in SOURCES:
        raise SkdError(f"unknown source '{source}'; choose one of {', '.join(SOURCES)}")
    if bpe not in ("remove", "keep"):
        raise SkdError(f"--bpe must be 'remove' or 'keep', got '{bpe}'")
    out = Path(out)
    if (out / PREP_FILE).is_file() and not overwrite:
        raise SkdError("already holds a prepared dataset; pass --overwrite to replace it", out)
    if source in ("iwslt14", "parallel") and not raw:
        raise SkdError(f"--source {source} needs --raw PATH")
    log = log or (lambda msg: None)
    if source == "synthetic":
        raw = Path(raw) if raw else out / "raw"
        log(f"writing the synthetic toy language pair to {raw}")
        write_synthetic_pair(raw, seed=seed, **(synthetic or {}))
        src_lang, tgt_lang = src_lang or "de", tgt_lang or "en"
    raw = Path(raw)
    if not raw.exists():
        raise SkdError("raw data not found", raw)
    if source in ("iwslt14", "synthetic"):
        src_lang, tgt_lang = detect_pair(raw, src_lang, tgt_lang)
        splits = read_iwslt_layout(raw, src_lang, tgt_lang, bpe)
    else:
        src_lang, tgt_lang = src_lang or "de", tgt_lang or "en"
        splits = read_parallel_table(raw, src_lang, tgt_lang)
    splits, skipped = _check_pairs(splits, skip_bad)
    if not splits["train"]:
        raise SkdError("no training pairs", raw)
    log(f"training a joint sentencepiece {model_type} model (vocab {vocab_size}) on {len(splits['train'])} pairs")
    tokenizer = TextTokenizer.train(
        [p.src for p in splits["train"]] + [p.tgt for p in splits["train"]], vocab_size, model_type
    )
    splits = _check_lengths(splits, tokenizer, max_tokens, skip_bad, skipped)
    # Write everything, prep.json last: its presence marks a complete dataset.
    out.mkdir(parents=True, exist_ok=True)
    if (out / PREP_FILE).is_file():
        (out / PREP_FILE).unlink()
    tokenizer.save(out / "tokenizer")
    digest = hashlib.sha256()
    for split, pairs in splits.items():
        for side, key in (("src", "src"), ("tgt", "tgt")):
            text = "".join(getattr(p, key) + "\n" for p in pairs)
            digest.update(f"{split}.{side}\0{text}".encode())
            atomic_write_text(out / f"{split}.{side}", text)
    if skipped:
        atomic_write_jsonl(out / "skipped.jsonl", skipped)
    elif (out / "skipped.jsonl").exists():
        (out / "skipped.jsonl").unlink()
    info = {
        "source": source,
        "raw": str(raw.resolve()),
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        "bpe": bpe,
        "bpe_marker": BPE_MARKER if bpe == "keep" else "",
        "max_tokens": max_tokens,
        "counts": {s: len(p) for s, p in splits.items()},
        "skipped": len(skipped),
        "tokenizer": tokenizer.info(),
        "fingerprint": digest.hexdigest()[:16],
    }
    atomic_write_json(out / PREP_FILE, info)
    return {"out": str(out), **info}


@dataclass
class PreparedParallel:
    """A prepared dataset read back: the texts per split, the tokenizer, prep.json."""

    root: Path
    info: dict
    tokenizer: TextTokenizer
    splits: dict[str, tuple[list[str], list[str]]]

    @property
    def fingerprint(self) -> str:
        return self.info.get("fingerprint", "")

    def split(self, name: str) -> tuple[list[str], list[str]]:
        return self.splits.get(name, ([], []))


def load_prepared_parallel(data_dir: str | Path) -> PreparedParallel:
    """Read a dataset written by ``prepare_parallel``; errors name the missing or broken file."""
    root = Path(data_dir)
    if not root.is_dir():
        raise SkdError("prepared dataset not found (run `prep` first)", root)
    if not (root / PREP_FILE).is_file():
        raise SkdError("not a prepared parallel dataset (no prep.json; run `prep`)", root)
    info = read_json(root / PREP_FILE)
    tokenizer = load_tokenizer(root / "tokenizer")
    splits = {}
    for split in SPLITS:
        src_path, tgt_path = root / f"{split}.src", root / f"{split}.tgt"
        if not src_path.is_file() or not tgt_path.is_file():
            raise SkdError(f"missing {split}.src / {split}.tgt", root)
        pairs = _aligned_files(src_path, tgt_path)
        splits[split] = ([p.src for p in pairs], [p.tgt for p in pairs])
    return PreparedParallel(root, info, tokenizer, splits)


def jsonl_pairs(pairs: list[tuple[str, str]], src_lang: str = "de", tgt_lang: str = "en") -> str:
    """JSONL text of pairs in the ``{"de": ..., "en": ...}`` form (tests and examples)."""
    return "".join(json.dumps({src_lang: s, tgt_lang: t}, ensure_ascii=False) + "\n" for s, t in pairs)


# -- training examples -----------------------------------------------------------------------------------------
class ParallelDataset:
    """Token ids of sentence pairs, encoded once: item i = {"index", "src", "tgt"} (lists of ids).

    ``src`` is the source pieces + </s> (fairseq's source framing); ``tgt`` the target pieces
    (``collate_parallel`` adds <s> / </s>). Sentences longer than ``max_tokens`` pieces raise
    (prep already enforced the limit; this guards datasets prepared for a bigger model).
    """

    def __init__(
        self, src: list[str], tgt: list[str], tokenizer: TextTokenizer, max_tokens: int, where: str | Path = ""
    ):
        self.src_text, self.tgt_text = src, tgt
        self.src = [ids + [tokenizer.eos_id] for ids in tokenizer.encode_batch(src)]
        self.tgt = tokenizer.encode_batch(tgt)
        for i, (s, t) in enumerate(zip(self.src, self.tgt), 1):
            if len(s) > max_tokens + 1 or len(t) > max_tokens:
                raise SkdError(
                    f"sentence pair {i} has {max(len(s) - 1, len(t))} tokens, more than the model's "
                    f"limit of {max_tokens} (model.max_positions - 2)",
                    where or None,
                )

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "src": self.src[i], "tgt": self.tgt[i]}

    def lengths(self) -> list[int]:
        return [max(len(s), len(t)) for s, t in zip(self.src, self.tgt)]


class ParallelTaskData:
    """The data half of an engine ``Task`` on a prepared parallel dataset (nlg-smooth, nlp-embed
    mode=nmt): each split encoded once, the padding collate, lengths for length-grouped batches.
    Mix it in before ``Task`` and call ``open_parallel`` from ``__init__``."""

    def open_parallel(self, data_dir: str | Path, max_positions: int) -> None:
        self.data: PreparedParallel = load_prepared_parallel(data_dir)
        self.tokenizer = self.data.tokenizer
        self.max_tokens = max_positions - 2  # room for <s> and </s>
        self.tgt_lang: str = self.data.info.get("tgt_lang") or "en"  # the Moses detokenizer's language
        self._datasets: dict[str, ParallelDataset] = {}

    def data_fingerprint(self) -> str | None:
        return self.data.fingerprint

    def dataset(self, split: str) -> ParallelDataset:
        if split not in self._datasets:
            src, tgt = self.data.split(split)
            self._datasets[split] = ParallelDataset(
                src, tgt, self.tokenizer, self.max_tokens, self.data.root / f"{split}.src"
            )
        return self._datasets[split]

    def train_dataset(self) -> ParallelDataset:
        return self.dataset("train")

    def eval_dataset(self) -> ParallelDataset | None:
        valid = self.dataset("valid")
        return valid if len(valid) else None

    def collate(self, items: list) -> dict:
        return collate_parallel(items)

    def example_lengths(self, dataset: ParallelDataset) -> list[int]:
        return dataset.lengths()


def collate_parallel(items: list[dict], pad: int = 0, bos: int = 2, eos: int = 3) -> dict:
    """Pad a batch: ``src`` (B, S), ``tgt_in`` = <s> y (B, T), ``tgt_out`` = y </s> (B, T), ``index`` (B,)."""
    import torch

    def pad_to(rows: list[list[int]]) -> "torch.Tensor":
        width = max(len(r) for r in rows)
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)

    return {
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "src": pad_to([it["src"] for it in items]),
        "tgt_in": pad_to([[bos] + it["tgt"] for it in items]),
        "tgt_out": pad_to([it["tgt"] + [eos] for it in items]),
    }
