"""Readers of the real QA formats, the cross-lingual sampler, and `prep`.

Every dataset is SQuAD v1.1 JSON (``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id",
"question", "answers": [{"text", "answer_start"}]}]}]}], "version"}``); ``version`` may be a string
(XQuAD "1.1"), a number (MLQA 1.0) or absent (TyDiQA-GoldP). What differs is where the languages
come from:

    xquad    FOLDER/xquad.{lang}.json, parallel files with shared ids (the paper's training source)
    mlqa     MLQA_V1/{dev,test}/{split}-context-{cl}-question-{ql}.json (context in cl, question in ql)
    tydiqa   tydiqa-goldp-v1.1-{train,dev}.json (language = the id's prefix, e.g. ``arabic-...``)
             or the per-language dev files tydiqa-goldp-dev-{language}.json
    squad    one SQuAD v1.1 or v2.0 file (English); v2's unanswerable questions are skipped and
             counted, or kept with ``keep_impossible`` (their target is the [CLS] position)

A prepared dataset directory:

    prep.json                                       written last: what was read, counts, what was skipped
    train.jsonl                                     training examples (flattened SQuAD rows), if any
    eval/{split}/context-{cl}-question-{ql}.jsonl   evaluation cells: one per (context, question) language
    skipped.jsonl                                   every question left out, and why
    init/  raw/                                     (synthetic only) the tiny model + tokenizer, the corpus

Rows are the HF ``squad`` schema plus the two languages: ``id, title, context, question,
answers {text: [..], answer_start: [..]}, lang_q, lang_c``; prepared files are read back through
HF ``datasets`` (``load_prepared``).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.errors import SkdError
from ..engine.io import atomic_write_json, atomic_write_text, claim_output_dir, read_json
from .metrics import MLQA_LANGUAGES

SOURCES = ("xquad", "mlqa", "tydiqa", "squad", "synthetic")
# The paper trains on the seven MLQA languages of XQuAD; en is always one of the sampled languages.
PAPER_LANGUAGES = ("en", "es", "de", "ar", "vi", "hi", "zh")
PIVOT = "en"
XQUAD_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
TYDIQA_LANGUAGES = {
    "arabic": "ar",
    "bengali": "bn",
    "english": "en",
    "finnish": "fi",
    "indonesian": "id",
    "korean": "ko",
    "russian": "ru",
    "swahili": "sw",
    "telugu": "te",
}
KNOWN_LANGUAGES = tuple(sorted(set(XQUAD_LANGUAGES) | set(MLQA_LANGUAGES) | set(TYDIQA_LANGUAGES.values())))
SPLITS = ("train", "dev", "test")
MLQA_NAME = re.compile(r"^(dev|test)-context-([a-z]{2})-question-([a-z]{2})\.json$")
XQUAD_NAME = re.compile(r"^xquad\.([a-z]{2})\.json$")
TYDIQA_NAME = re.compile(r"^tydiqa-goldp-v1\.1-(train|dev)\.json$")
TYDIQA_DEV_LANG = re.compile(r"^tydiqa-goldp-dev-([a-z]+)\.json$")
CELL_NAME = re.compile(r"^context-([a-z]{2})-question-([a-z]{2})\.jsonl$")


def check_languages(langs: Iterable[str], where: str = "--languages") -> list[str]:
    out = []
    for lang in langs:
        lang = lang.strip()
        if not lang:
            continue
        if lang not in KNOWN_LANGUAGES:
            raise SkdError(f"{where}: unknown language code '{lang}'; known: {', '.join(KNOWN_LANGUAGES)}")
        if lang not in out:
            out.append(lang)
    return out


# -- reading one SQuAD-format file -------------------------------------------------------------------------
@dataclass
class ReadReport:
    """What reading one or more files found: questions kept, and what was skipped or flagged, by reason."""

    files: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {file, id, reason, detail}
    flagged: Counter = field(default_factory=Counter)  # kept, but worth reporting (e.g. answer_mismatch in eval)

    def skip(self, path: Path, qid: str, reason: str, detail: str = "") -> None:
        self.skipped.append({"file": str(path), "id": qid, "reason": reason, "detail": detail})

    def skipped_counts(self) -> dict[str, int]:
        return dict(Counter(s["reason"] for s in self.skipped))


def load_json_file(path: Path) -> Any:
    """JSON with an error that names the file and the position (line, column, character offset)."""
    path = Path(path)
    if not path.is_file():
        raise SkdError("file not found", path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SkdError(f"not UTF-8 text (byte {exc.start})", path) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SkdError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})", path
        ) from exc


def _expect(cond: bool, path: Path, where: str, what: str) -> None:
    if not cond:
        raise SkdError(f"not SQuAD format: {where} {what}", path)


def read_squad_file(
    path: str | Path,
    report: ReadReport,
    *,
    lang_c: str | None,
    lang_q: str | None,
    keep_impossible: bool = False,
    skip_mismatched: bool = True,
    lang_from_id: dict[str, str] | None = None,
) -> list[dict]:
    """Flatten one SQuAD v1.1 / v2.0 file into rows.

    - an empty context: every question of that paragraph is skipped (reason ``empty_context``);
    - an answer whose ``answer_start`` does not point at its text: skipped (``answer_mismatch``) when
      ``skip_mismatched`` (training data), else kept and counted (evaluation scores text, not offsets);
      never shifted to where the text happens to occur;
    - SQuAD v2 unanswerable questions (``is_impossible`` or no answers): skipped (``impossible``) or,
      with ``keep_impossible``, kept with empty answers;
    - ``lang_from_id`` (TyDiQA): the id's prefix names the language; an unknown prefix is an error.
    """
    path = Path(path)
    doc = load_json_file(path)
    _expect(isinstance(doc, dict) and isinstance(doc.get("data"), list), path, "top level", "needs a 'data' list")
    rows: list[dict] = []
    n_questions = 0
    for a, article in enumerate(doc["data"]):
        _expect(
            isinstance(article, dict) and isinstance(article.get("paragraphs"), list),
            path,
            f"data[{a}]",
            "needs a 'paragraphs' list",
        )
        title = str(article.get("title", ""))
        for p, para in enumerate(article["paragraphs"]):
            where = f"data[{a}].paragraphs[{p}]"
            _expect(
                isinstance(para, dict) and isinstance(para.get("context"), str), path, where, "needs a 'context' string"
            )
            _expect(isinstance(para.get("qas"), list), path, where, "needs a 'qas' list")
            context = para["context"]
            for q, qa in enumerate(para["qas"]):
                qwhere = f"{where}.qas[{q}]"
                _expect(
                    isinstance(qa, dict)
                    and isinstance(qa.get("id"), (str, int))
                    and isinstance(qa.get("question"), str),
                    path,
                    qwhere,
                    "needs 'id' and 'question'",
                )
                qid = str(qa["id"])
                n_questions += 1
                answers = qa.get("answers", [])
                _expect(isinstance(answers, list), path, qwhere, "'answers' must be a list")
                for ans in answers:
                    _expect(
                        isinstance(ans, dict)
                        and isinstance(ans.get("text"), str)
                        and isinstance(ans.get("answer_start"), int)
                        and not isinstance(ans["answer_start"], bool),
                        path,
                        qwhere,
                        "answers need 'text' (string) and 'answer_start' (integer)",
                    )
                lq, lc = lang_q, lang_c
                if lang_from_id is not None:
                    prefix = qid.split("-", 1)[0]
                    if prefix not in lang_from_id:
                        raise SkdError(
                            f"question id '{qid}': unknown language prefix '{prefix}'; known: "
                            f"{', '.join(lang_from_id)}",
                            path,
                        )
                    lq = lc = lang_from_id[prefix]
                if not context.strip():
                    report.skip(path, qid, "empty_context", qwhere)
                    continue
                if not qa["question"].strip():
                    report.skip(path, qid, "empty_question", qwhere)
                    continue
                if qa.get("is_impossible") or not answers:
                    if not keep_impossible:
                        report.skip(path, qid, "impossible" if qa.get("is_impossible") else "no_answer", qwhere)
                        continue
                    answers = []
                bad = [
                    ans
                    for ans in answers
                    if context[ans["answer_start"] : ans["answer_start"] + len(ans["text"])] != ans["text"]
                ]
                if bad:
                    detail = f"{qwhere}: answer {bad[0]['text']!r} is not at character {bad[0]['answer_start']}"
                    if skip_mismatched:
                        report.skip(path, qid, "answer_mismatch", detail)
                        continue
                    report.flagged["answer_mismatch"] += 1
                rows.append(
                    {
                        "id": qid,
                        "title": title,
                        "context": context,
                        "question": qa["question"],
                        "answers": {
                            "text": [x["text"] for x in answers],
                            "answer_start": [x["answer_start"] for x in answers],
                        },
                        "lang_q": lq,
                        "lang_c": lc,
                    }
                )
    report.files.append(
        {
            "path": str(path),
            "version": doc.get("version"),
            "questions": n_questions,
            "kept": len(rows),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    )
    return rows


# -- dataset layouts ------------------------------------------------------------------------------------------
def find_xquad_files(raw: Path) -> dict[str, Path]:
    raw = Path(raw)
    if raw.is_file():
        m = XQUAD_NAME.match(raw.name)
        if not m:
            raise SkdError("an XQuAD file is named xquad.<lang>.json; or give the folder", raw)
        return {m.group(1): raw}
    if not raw.is_dir():
        raise SkdError("not found", raw)
    files = {m.group(1): p for p in sorted(raw.glob("xquad.*.json")) if (m := XQUAD_NAME.match(p.name))}
    if not files:
        raise SkdError("no xquad.<lang>.json files here", raw)
    return files


def find_mlqa_files(raw: Path, splits: Iterable[str] = ("dev", "test")) -> dict[tuple[str, str, str], Path]:
    """(split, context language, question language) -> file, from MLQA_V1/, MLQA_V1/{dev,test}/ or one file."""
    raw = Path(raw)
    if raw.is_file():
        candidates = [raw]
    elif raw.is_dir():
        candidates = sorted(list(raw.glob("*.json")) + list(raw.glob("*/*.json")) + list(raw.glob("*/*/*.json")))
    else:
        raise SkdError("not found", raw)
    files = {}
    for p in candidates:
        m = MLQA_NAME.match(p.name)
        if m and m.group(1) in splits:
            files[(m.group(1), m.group(2), m.group(3))] = p
    if not files:
        raise SkdError("no MLQA files ({dev,test}-context-<cl>-question-<ql>.json) here", raw)
    for _, cl, ql in files:
        check_languages([cl, ql], "MLQA file name")
    return files


def find_tydiqa_files(raw: Path) -> list[tuple[str, Path, str | None]]:
    """(split, file, language or None when the ids say it) for TyDiQA-GoldP."""
    raw = Path(raw)
    candidates = [raw] if raw.is_file() else sorted(raw.rglob("*.json")) if raw.is_dir() else None
    if candidates is None:
        raise SkdError("not found", raw)
    out = []
    for p in candidates:
        if m := TYDIQA_NAME.match(p.name):
            out.append((m.group(1), p, None))
        elif m := TYDIQA_DEV_LANG.match(p.name):
            if m.group(1) not in TYDIQA_LANGUAGES:
                raise SkdError(f"unknown TyDiQA language '{m.group(1)}'; known: {', '.join(TYDIQA_LANGUAGES)}", p)
            out.append(("dev", p, TYDIQA_LANGUAGES[m.group(1)]))
    if not out:
        raise SkdError(
            "no TyDiQA-GoldP files (tydiqa-goldp-v1.1-{train,dev}.json or tydiqa-goldp-dev-<language>.json) here", raw
        )
    return out


def squad_split_of(path: Path) -> str:
    name = path.name.lower()
    return "train" if "train" in name else "dev" if "dev" in name else "test" if "test" in name else "train"


# -- cross-lingual sampling (official src/sampler_qa.py, with the reproducibility fix) ---------------------------
def cross_lingual_sample(by_lang: dict[str, list[dict]], ntl: int, seed: int, order: str = "sorted") -> list[dict]:
    """The paper's training set from parallel files (``by_lang``: language -> rows, shared ids).

    Per question id: ``ntl`` of the available non-English languages drawn at random, English always
    added, and every (question language, context language) pair over that set emitted: question from
    lang_q, context and answers from lang_c, id ``{qid}_{lq}-{lc}``. ``ntl = 0``: monolingual pairs
    of every language; ``ntl >=`` the number available: all of them. The result is shuffled.

    ``order="sorted"`` (default) draws from the sorted language list: the same sample in every
    process. ``order="set"`` is the official code (``random.sample`` over a Python set), whose
    result depends on the set's iteration order, i.e. on PYTHONHASHSEED: reproducible only with it fixed.
    """
    if ntl < 0:
        raise SkdError(f"--ntl must be >= 0, got {ntl}")
    if order not in ("sorted", "set"):
        raise SkdError(f"sampling order must be 'sorted' or 'set', got '{order}'")
    rng = random.Random(seed)
    index = {lang: {r["id"]: r for r in rows} for lang, rows in by_lang.items()}
    ids: list[str] = []
    seen = set()
    for lang in sorted(by_lang, key=lambda x: (x != PIVOT, x)):  # English file order first, as the official code
        for r in by_lang[lang]:
            if r["id"] not in seen:
                seen.add(r["id"])
                ids.append(r["id"])
    out = []
    for qid in ids:
        available = [lang for lang in sorted(by_lang) if qid in index[lang]]
        if ntl == 0:
            pairs = [(lang, lang) for lang in available]
        else:
            others = [lang for lang in available if lang != PIVOT]
            if ntl >= len(others):
                chosen = others
            else:
                pool = list(set(others)) if order == "set" else others
                chosen = rng.sample(pool, ntl)
            langs = sorted(set(chosen) | ({PIVOT} if PIVOT in available else set()))
            pairs = [(lq, lc) for lq in langs for lc in langs]
        for lq, lc in pairs:
            q_row, c_row = index[lq][qid], index[lc][qid]
            out.append({**c_row, "id": f"{qid}_{lq}-{lc}", "question": q_row["question"], "lang_q": lq, "lang_c": lc})
    rng.shuffle(out)
    return out


# -- writing and reading prepared datasets ----------------------------------------------------------------------
def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def cell_path(root: Path, split: str, lang_c: str, lang_q: str) -> Path:
    return Path(root) / "eval" / split / f"context-{lang_c}-question-{lang_q}.jsonl"


def write_prepared(
    out: Path,
    *,
    train: list[dict] | None,
    cells: dict[tuple[str, str, str], list[dict]],
    report: ReadReport,
    info: dict,
) -> dict:
    """Write the files of a prepared dataset, then ``prep.json`` (the marker) last."""
    pair_counts: Counter = Counter()
    if train:
        atomic_write_text(out / "train.jsonl", _jsonl(train))
        pair_counts.update(f"{r['lang_q']}-{r['lang_c']}" for r in train)
    for (split, cl, ql), rows in sorted(cells.items()):
        atomic_write_text(cell_path(out, split, cl, ql), _jsonl(rows))
    atomic_write_text(out / "skipped.jsonl", _jsonl(report.skipped))
    result = {
        **info,
        "out": str(out),
        "train_examples": len(train or []),
        "train_pairs": dict(sorted(pair_counts.items())),  # "question-context" language pair -> examples
        "eval_cells": {
            f"{split}/context-{cl}-question-{ql}": len(rows) for (split, cl, ql), rows in sorted(cells.items())
        },
        "files": report.files,
        "skipped": report.skipped_counts(),
        "flagged": dict(report.flagged),
    }
    fingerprint = hashlib.sha256()
    for f in report.files:
        fingerprint.update(f["sha256"].encode())
    fingerprint.update(
        json.dumps(
            {k: info.get(k) for k in ("source", "ntl", "languages", "seed", "sampling", "keep_impossible")},
            sort_keys=True,
        ).encode()
    )
    result["fingerprint"] = fingerprint.hexdigest()[:16]
    atomic_write_json(out / "prep.json", result)
    return result


def prepare(
    source: str,
    raw: str | Path | None,
    out: str | Path,
    *,
    ntl: int = 5,
    languages: list[str] | None = None,
    seed: int = 3,
    sampling: str = "sorted",
    keep_impossible: bool = False,
    split: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Read one dataset in its official layout and write a prepared dataset (module doc)."""
    if source not in SOURCES:
        raise SkdError(f"--source must be one of {', '.join(SOURCES)}, got '{source}'")
    if source == "synthetic":
        from .synthetic import prepare_synthetic

        return prepare_synthetic(out, seed=seed, overwrite=overwrite)
    if raw is None:
        raise SkdError(f"--source {source} needs --raw PATH (the dataset's file or folder)")
    raw = Path(raw)
    if not raw.exists():
        raise SkdError("not found", raw)
    if split is not None and split not in SPLITS:
        raise SkdError(f"--split must be one of {', '.join(SPLITS)}, got '{split}'")
    wanted = check_languages(languages) if languages else None
    report = ReadReport()
    train: list[dict] | None = None
    cells: dict[tuple[str, str, str], list[dict]] = {}
    info: dict[str, Any] = {"source": source, "raw": str(raw.resolve()), "seed": seed}

    if source == "xquad":
        files = find_xquad_files(raw)
        train_langs = wanted or [lang for lang in PAPER_LANGUAGES if lang in files]
        missing = [lang for lang in train_langs if lang not in files]
        if missing:
            raise SkdError(f"no xquad.<lang>.json for {', '.join(missing)} (found: {', '.join(files)})", raw)
        by_lang = {}
        for lang, path in files.items():
            rows = read_squad_file(path, report, lang_c=lang, lang_q=lang, skip_mismatched=True)
            if lang in train_langs:
                by_lang[lang] = rows
            else:  # the languages left out of training are the zero-shot evaluation (paper: el ru tr th)
                cells[("test", lang, lang)] = read_squad_file(
                    path, ReadReport(), lang_c=lang, lang_q=lang, skip_mismatched=False
                )
        train = cross_lingual_sample(by_lang, ntl, seed, sampling)
        info.update(
            ntl=ntl,
            languages=train_langs,
            sampling=sampling,
            zero_shot_languages=sorted(lang for lang in files if lang not in train_langs),
        )
    elif source == "mlqa":
        files = find_mlqa_files(raw, [split] if split else ("dev", "test"))
        for (sp, cl, ql), path in sorted(files.items()):
            if wanted and (cl not in wanted or ql not in wanted):
                continue
            cells[(sp, cl, ql)] = read_squad_file(path, report, lang_c=cl, lang_q=ql, skip_mismatched=False)
        info.update(languages=sorted({cl for _, cl, _ in cells}))
    elif source == "tydiqa":
        for sp, path, lang in find_tydiqa_files(raw):
            if split and sp != split:
                continue
            rows = read_squad_file(
                path,
                report,
                lang_c=lang,
                lang_q=lang,
                keep_impossible=keep_impossible,
                skip_mismatched=sp == "train",
                lang_from_id=None if lang else TYDIQA_LANGUAGES,
            )
            if wanted:
                rows = [r for r in rows if r["lang_c"] in wanted]
            if sp == "train":
                train = (train or []) + rows
            else:
                for r in rows:
                    cells.setdefault((sp, r["lang_c"], r["lang_q"]), []).append(r)
        info.update(languages=sorted({r["lang_c"] for r in train or []} | {cl for _, cl, _ in cells}))
    else:  # squad
        if not raw.is_file():
            raise SkdError("--source squad reads one file (train-v1.1.json, dev-v1.1.json, train-v2.0.json, ...)", raw)
        sp = split or squad_split_of(raw)
        rows = read_squad_file(
            raw, report, lang_c="en", lang_q="en", keep_impossible=keep_impossible, skip_mismatched=sp == "train"
        )
        if sp == "train":
            train = rows
        else:
            cells[(sp, "en", "en")] = rows
        info.update(languages=["en"], keep_impossible=keep_impossible, split=sp)
    if not (train or any(cells.values())):
        raise SkdError(f"no usable question was read (skipped: {report.skipped_counts() or 'none'})", raw)
    out = claim_output_dir(out, overwrite, "prep.json", "prepared dataset")
    return write_prepared(out, train=train, cells=cells, report=report, info=info)


# -- reading prepared datasets ---------------------------------------------------------------------------------
SQUAD_COLUMNS = ("id", "title", "context", "question", "answers", "lang_q", "lang_c")


def squad_features():
    import datasets

    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "title": datasets.Value("string"),
            "context": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answers": {
                "text": datasets.Sequence(datasets.Value("string")),
                "answer_start": datasets.Sequence(datasets.Value("int32")),
            },
            "lang_q": datasets.Value("string"),
            "lang_c": datasets.Value("string"),
        }
    )


def load_rows(paths: Path | list[Path]):
    """Prepared JSONL file(s) as one HF ``datasets.Dataset`` (in memory; the arrow cache goes to a
    temp dir that is removed, so reading never writes beside the data)."""
    import datasets

    datasets.disable_progress_bars()
    paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
    for path in paths:
        if not path.is_file():
            raise SkdError("file not found", path)
    paths = [p for p in paths if p.stat().st_size > 0]
    if not paths:
        return datasets.Dataset.from_dict({k: [] for k in SQUAD_COLUMNS}, features=squad_features())
    with tempfile.TemporaryDirectory() as cache:
        try:
            return datasets.load_dataset(
                "json",
                data_files=[str(p) for p in paths],
                features=squad_features(),
                cache_dir=cache,
                split="train",
                keep_in_memory=True,
            )
        except Exception as exc:  # a hand-edited or truncated file
            where = paths[0] if len(paths) == 1 else paths[0].parent
            raise SkdError(
                f"cannot read prepared rows ({exc.__class__.__name__}: {str(exc).splitlines()[0]})", where
            ) from exc


@dataclass
class PreparedData:
    """A prepared dataset directory (``prepare``'s output)."""

    root: Path
    info: dict

    @classmethod
    def open(cls, root: str | Path) -> PreparedData:
        root = Path(root)
        if not (root / "prep.json").is_file():
            if root.is_dir() and (root / "init").is_dir() is False and any(root.glob("*.json")):
                raise SkdError("not a prepared dataset (no prep.json): run `skd xqa prep` on it first", root)
            raise SkdError("not a prepared dataset (no prep.json; write one with `skd xqa prep`)", root)
        return cls(root, read_json(root / "prep.json"))

    @property
    def fingerprint(self) -> str | None:
        return self.info.get("fingerprint")

    def has_train(self) -> bool:
        return (self.root / "train.jsonl").is_file()

    def train_rows(self):
        if not self.has_train():
            raise SkdError("this prepared dataset has no training examples (train.jsonl)", self.root)
        return load_rows(self.root / "train.jsonl")

    def cells(self, split: str) -> dict[tuple[str, str], Path]:
        """(context language, question language) -> cell file of ``split``."""
        folder = self.root / "eval" / split
        out = {}
        for p in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
            if m := CELL_NAME.match(p.name):
                out[(m.group(1), m.group(2))] = p
        return out

    def splits(self) -> list[str]:
        return [s for s in ("dev", "test") if self.cells(s)]

    def init_dir(self) -> Path | None:
        path = self.root / "init"
        return path if (path / "config.json").is_file() else None
