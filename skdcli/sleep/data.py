"""Prep (real dataset layouts -> one signal file per recording) and the training windows.

A prepared dataset directory:
    prep.json                 written last: source, channel, rate, rules, class counts, warnings, recordings
    recordings/<id>.x.npy     (n_epochs, fs*30) float32, normalised (normalisation.py); memory-mapped when read
    recordings/<id>.y.npy     (n_epochs,) int8 stage ids, -1 = unscored epoch inside the night (masked)
    recordings/<id>.json      what made it: source files (size, mtime), prep parameters, notes, warnings
    skipped.jsonl             recordings left out and why (unreadable file, no scoring, not found...)
Prep is incremental: a recording whose sources and parameters are unchanged is not redone, so an
interrupted prep continues where it stopped, and `--overwrite` after adding nights only does the new ones.
A night that fails to read is skipped and listed with its reason; prep stops only when every one fails.

Nothing of the signal is held in RAM when training: `Night.x` maps its `.x.npy` file on access and
`WindowDataset` keeps at most `max_open` nights mapped (all of SHHS1 is ~67 GB of float32).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.signal import resample_poly
from torch.utils.data import Dataset

from ..engine.errors import SkdError
from ..engine.io import atomic_write, atomic_write_json, atomic_write_jsonl, read_json
from .formats import (
    EPOCH_SECONDS,
    UNKNOWN,
    Hypnogram,
    Signal,
    channel_key,
    read_edf_channel,
    read_edf_hypnogram,
    read_shhs_xml,
)
from .normalisation import DEFAULT_NORMALISATION, check_rule, describe, normalise_recording
from .splits import Partition, partition, subject_of

SOURCES = ("sleep-edf", "shhs")
PREP_FORMAT = 4  # bumped whenever what prep writes changes, so an incremental prep redoes old recordings
DEFAULT_CHANNEL = {"sleep-edf": "EEG Fpz-Cz", "shhs": "EEG"}  # SHHS1 `EEG` = C4-A1
SHHS_SECOND_EEG = ("EEG(sec)", "EEG2")  # C3-A2; channel_key also matches `EEG sec`, `EEG(SEC)`, `EEG 2`
TRIM_RULE = (
    "wake trimmed to {m} min before the first and after the last sleep (N1-REM) epoch, on the "
    "recording's timeline (SeriesSleepNet / DeepSleepNet rule); the kept span starts and ends on a "
    "scored epoch"
)
UNSCORED_RULE = (
    "?/movement/unscored epochs (SHHS 6, 9) inside the kept span stay, labelled -1: windows keep their "
    "real neighbours and those epochs get no loss and no metric (masked); outside the span they are "
    "dropped"
)


@dataclass
class RawRecording:
    id: str
    psg: Path
    scoring: Path
    subject: int | None = None
    night: int | None = None


# -- discovery ----------------------------------------------------------------------------------------
SLEEP_EDF_NAME = re.compile(r"^(S[CT][47]\d\d\d)[A-Z0-9]{2}-PSG\.edf$", re.IGNORECASE)
SHHS_TOKEN = re.compile(r"^(?:(shhs\d+)-)?(\d+)$", re.IGNORECASE)


def selection_tokens(spec: str | None) -> tuple[list[str], dict | None]:
    """--subjects as tokens: the lines (or whitespace/comma separated words) of a FILE, '#' comments
    ignored, or the comma-separated spec itself; plus what to record about a file (path, sha256)."""
    if not spec:
        return [], None
    path = Path(spec)
    if path.is_file():
        text = "\n".join(line.split("#", 1)[0] for line in path.read_text(encoding="utf-8").splitlines())
        tokens = [t for t in re.split(r"[\s,]+", text) if t]
        if not tokens:
            raise SkdError("--subjects file lists no recording", path)
        return tokens, {
            "file": str(path.resolve()),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "entries": len(tokens),
        }
    return [t.strip() for t in spec.split(",") if t.strip()], None


def parse_subjects(tokens: list[str], spec: str | None = None) -> set[int] | None:
    """Sleep-EDF subject numbers from tokens like '0-19', '3', '5-7'."""
    if not tokens:
        return None
    out: set[int] = set()
    try:
        for part in tokens:
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError as exc:
        raise SkdError(
            f"--subjects expects Sleep-EDF subject ranges like 0-19 or 0,3,5-7 (or a file of them), got '{spec}'"
        ) from exc
    return out


def discover_sleep_edf(raw: Path, subjects: set[int] | None) -> tuple[list[RawRecording], list[dict]]:
    """`SC4ssNE0-PSG.edf` + `SC4ssNx-Hypnogram.edf` pairs matched by subject and night (the first
    six characters); the scorer letter after them varies (EC, EH, EJ, ...). A PSG with no (or
    several) hypnograms is skipped with the reason."""
    hyps: dict[str, list[Path]] = {}
    for p in raw.rglob("*-Hypnogram.edf"):
        hyps.setdefault(p.name[:6].upper(), []).append(p)
    recs, skipped = [], []
    for psg in sorted(raw.rglob("*-PSG.edf")):
        m = SLEEP_EDF_NAME.match(psg.name)
        if not m:
            continue
        key = psg.name[:6].upper()
        subject, night = int(key[3:5]), int(key[5])
        if subjects is not None and subject not in subjects:
            continue
        found = hyps.get(key, [])
        rid = psg.name[: -len("-PSG.edf")]
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            skipped.append({"id": rid, "psg": str(psg), "reason": f"{what} hypnogram file(s) {key}??-Hypnogram.edf"})
            continue
        recs.append(RawRecording(rid, psg, found[0], subject, night))
    return recs, skipped


def shhs_selection(tokens: list[str]) -> tuple[set[str], set[str]]:
    """SHHS --subjects tokens -> (recording ids like 'shhs1-200001', bare subject numbers like '200001').
    File names (`shhs1-200001.edf`, `...-nsrr.xml`) are accepted as their ids."""
    ids, numbers = set(), set()
    for token in tokens:
        name = re.sub(r"(-nsrr\.xml|-profusion\.xml|\.edf)$", "", Path(token).name, flags=re.IGNORECASE)
        m = SHHS_TOKEN.match(name)
        if not m:
            raise SkdError(f"--subjects: '{token}' is not an SHHS file id (shhs1-200001) or subject number (200001)")
        (ids.add(f"{m.group(1).lower()}-{m.group(2)}") if m.group(1) else numbers.add(m.group(2)))
    return ids, numbers


def discover_shhs(raw: Path, tokens: list[str] | None = None) -> tuple[list[RawRecording], list[dict]]:
    """`edfs/shhs1/shhs1-ID.edf` with `shhs1-ID-nsrr.xml` (preferred) or `shhs1-ID-profusion.xml`
    anywhere under RAW (the NSRR download puts them in sibling annotation folders). With --subjects
    (ids or subject numbers, e.g. the common 329-subject SHHS1 selection file), only those; a
    listed id with no EDF under RAW and an EDF with no annotation file are skipped with the reason."""
    ids, numbers = shhs_selection(tokens or [])
    xmls: dict[str, Path] = {}
    for p in sorted(raw.rglob("*-profusion.xml")) + sorted(raw.rglob("*-nsrr.xml")):  # nsrr wins
        xmls[p.name.rsplit("-", 1)[0].lower()] = p
    recs, skipped, found = [], [], set()
    for edf in sorted(raw.rglob("shhs*-*.edf")):
        rid = edf.stem
        if tokens and rid.lower() not in ids and subject_of(rid) not in numbers:
            continue
        found.update({rid.lower(), subject_of(rid)})
        if rid.lower() not in xmls:
            skipped.append(
                {"id": rid, "psg": str(edf), "reason": f"no {rid}-nsrr.xml or {rid}-profusion.xml annotation"}
            )
            continue
        recs.append(RawRecording(rid, edf, xmls[rid.lower()]))
    for missing in sorted((ids | numbers) - found):
        skipped.append(
            {"id": missing, "psg": None, "reason": "listed in --subjects but no EDF under the raw directory"}
        )
    return recs, skipped


# -- one recording ------------------------------------------------------------------------------------
def epoch_labels_for(
    signal_seconds: float, hyp: Hypnogram, psg_start, path: Path, scoring: Path
) -> tuple[np.ndarray, list[str]]:
    """Align a hypnogram to its PSG: same start, covers the whole PSG; a scoring running past
    the PSG's end is cropped (the real Sleep-EDF hypnograms do, with `Sleep stage ?`)."""
    notes = []
    if hyp.start is not None and psg_start is not None and hyp.start != psg_start:
        raise SkdError(f"hypnogram starts at {hyp.start} but its PSG {path.name} starts at {psg_start}", scoring)
    n_psg = int(signal_seconds // EPOCH_SECONDS)
    n_hyp = len(hyp.labels)
    if n_hyp < n_psg:
        raise SkdError(
            f"hypnogram covers {n_hyp * EPOCH_SECONDS} s but its PSG {path.name} lasts "
            f"{n_psg * EPOCH_SECONDS} s (wrong file pair?)",
            scoring,
        )
    if n_hyp > n_psg:
        scored_past = int((hyp.labels[n_psg:] >= 0).sum())
        notes.append(f"hypnogram runs {n_hyp - n_psg} epochs past the PSG end ({scored_past} scored); cropped")
    return hyp.labels[:n_psg], notes


def signal_epochs(sig: Signal, fs: int, path: Path) -> np.ndarray:
    """The channel in µV, resampled to `fs` (polyphase: SHHS 125 -> 100 Hz is up 4, down 5), cut
    into whole 30-s epochs (n, fs*30). A slower channel is refused: upsampling invents nothing."""
    if sig.fs < fs:
        raise SkdError(
            f"channel '{sig.channel}' is sampled at {sig.fs:g} Hz, below the dataset rate {fs} Hz "
            f"(pass --fs {int(sig.fs)} or pick another channel)",
            path,
        )
    data = sig.data * 1e6  # mne returns volts
    ratio = Fraction(fs, 1) / Fraction(sig.fs).limit_denominator(1000)
    if ratio != 1:
        data = resample_poly(data, ratio.numerator, ratio.denominator)
    n = len(data) // (fs * EPOCH_SECONDS)
    return data[: n * fs * EPOCH_SECONDS].reshape(n, fs * EPOCH_SECONDS)


def read_recording_epochs(
    psg: str | Path, channel: str, fs: int, normalisation: str, fallbacks: tuple[str, ...] = ()
) -> tuple[Signal, np.ndarray, dict]:
    """The channel of a whole recording as the model sees it: read, resampled to `fs`, cut into
    30-s epochs and normalised over the whole recording (normalisation.py). Prep (then trimming)
    and `score` both call this, so both give the model the same values for the same epoch."""
    sig = read_edf_channel(psg, channel, fallbacks)
    x, stats = normalise_recording(signal_epochs(sig, fs, Path(psg)), normalisation, psg)
    return sig, x, stats


def scored_span(labels: np.ndarray, trim_minutes: float) -> tuple[int, int] | None:
    """The epochs prep keeps of a recording, as an inclusive range [first, last] on its timeline:
    with wake trimming, from `trim_minutes` before the first to `trim_minutes` after the last sleep
    (N1-REM) epoch (SeriesSleepNet / DeepSleepNet rule), then narrowed to start and end on a scored
    epoch. Unscored epochs (-1: ?, movement, SHHS 6/9) INSIDE the range stay in it, masked: a
    window of consecutive epochs never silently jumps over them (recipes/sleep/README.md, item 6
    of issue 15). None when nothing is left (no scored epoch; no sleep to trim around)."""
    scored = np.flatnonzero(labels >= 0)
    if len(scored) == 0:
        return None
    first, last = int(scored[0]), int(scored[-1])
    if trim_minutes > 0:
        sleep = np.flatnonzero((labels >= 1) & (labels <= 4))
        if len(sleep) == 0:
            return None
        edge = int(trim_minutes * 60 // EPOCH_SECONDS)
        inside = scored[(scored >= sleep[0] - edge) & (scored <= sleep[-1] + edge)]
        first, last = int(inside[0]), int(inside[-1])
    return first, last


def process_recording(
    rec: RawRecording,
    source: str,
    channel: str,
    fs: int,
    trim_minutes: float,
    normalisation: str,
    fallbacks: tuple[str, ...] = (),
) -> dict:
    sig, x, stats = read_recording_epochs(rec.psg, channel, fs, normalisation, fallbacks)
    warnings = []
    if sig.fallback_from:
        warnings.append(
            f"channel '{sig.fallback_from}' not in the EDF: read the fallback '{sig.channel}' instead"
            + (" (C3-A2 instead of C4-A1)" if source == "shhs" else "")
        )
    hyp = read_shhs_xml(rec.scoring) if source == "shhs" else read_edf_hypnogram(rec.scoring)
    labels, notes = epoch_labels_for(len(sig.data) / sig.fs, hyp, sig.start, rec.psg, rec.scoring)
    n = min(len(labels), len(x))
    x, y = x[:n], np.where(labels[:n] >= 0, labels[:n], UNKNOWN)
    span = scored_span(y, trim_minutes)
    if span is None:
        if trim_minutes > 0 and (y >= 0).any():
            return {"skip": "no sleep epochs: wake trimming has nothing to anchor to (use --no-trim-wake to keep it)"}
        return {"skip": "no scored epochs"}
    first, last = span
    return {
        "x": x[first : last + 1],
        "y": y[first : last + 1].astype(np.int64),
        "first_epoch": first,
        "channel": sig.channel,
        "fallback_from": sig.fallback_from,
        "native_fs": sig.fs,
        "notes": notes,
        "warnings": warnings,
        "normalisation_stats": stats,
    }


# -- the whole dataset ----------------------------------------------------------------------------------
def _file_id(p: Path) -> dict:
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def default_fallbacks(source: str, channel: str) -> tuple[str, ...]:
    """SHHS1's `EEG` (C4-A1) falls back to the second EEG, C3-A2 (`EEG(sec)`, also spelled `EEG 2`,
    `EEG2`...) in the studies that lack it; every such night carries a warning in prep.json."""
    if source == "shhs" and channel_key(channel) == channel_key(DEFAULT_CHANNEL["shhs"]):
        return SHHS_SECOND_EEG
    return ()


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    atomic_write(path, write)


def store_recording(folder: Path, rid: str, x: np.ndarray, y: np.ndarray) -> None:
    """One prepared recording: its signal and labels as .npy files (memory-mappable), written atomically."""
    _save_npy(folder / f"{rid}.x.npy", np.ascontiguousarray(x, dtype=np.float32))
    _save_npy(folder / f"{rid}.y.npy", np.asarray(y, dtype=np.int8))


def dataset_summary(params: dict, rows: list[dict]) -> dict:
    """The prep.json fields computed from the manifest rows: totals, class counts and priors, rules, fingerprint."""
    counts = np.sum([r["counts"] for r in rows], axis=0).tolist()
    fingerprint = hashlib.sha256(json.dumps([params, [(r["id"], r["epochs"]) for r in rows]]).encode()).hexdigest()[:16]
    return {
        "recordings": len(rows),
        "epochs": sum(counts),
        "hours": round(sum(counts) * EPOCH_SECONDS / 3600, 3),
        "class_counts": dict(zip(["W", "N1", "N2", "N3", "REM"], counts)),
        "class_priors": dict(zip(["W", "N1", "N2", "N3", "REM"], [round(c / sum(counts), 4) for c in counts])),
        "label_map": "W 0, N1 1, N2 2, N3 3 (R&K S3+S4 / SHHS codes 3+4), REM 4; ?/movement/unscored (SHHS 6, 9) -1",
        "unscored_rule": UNSCORED_RULE,
        "normalisation": describe(params["normalisation"]),
        "fingerprint": fingerprint,
    }


READ_ERRORS = (SkdError, OSError, ValueError)  # what makes one night unreadable; anything else is a bug


def prepare_dataset(
    source: str,
    raw: str | Path,
    out: str | Path,
    channel: str | None = None,
    fs: int = 100,
    trim_wake: bool = True,
    trim_minutes: float = 30.0,
    subjects: str | None = None,
    normalisation: str = DEFAULT_NORMALISATION,
    fallbacks: tuple[str, ...] | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """`fallbacks`: channels to read when `channel` is missing (None = the source's default,
    `default_fallbacks`; () = none)."""
    if source not in SOURCES:
        raise SkdError(f"--source must be one of {', '.join(SOURCES)}, got '{source}'")
    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise SkdError("raw data directory not found", raw)
    channel = channel or DEFAULT_CHANNEL[source]
    fallbacks = default_fallbacks(source, channel) if fallbacks is None else tuple(fallbacks)
    if (out / "prep.json").is_file() and not overwrite:
        raise SkdError(
            "already holds a prepared dataset; pass --overwrite to redo it (unchanged recordings are reused)", out
        )
    if out.is_dir() and any(out.iterdir()) and not (out / "recordings").is_dir() and not overwrite:
        raise SkdError(
            "directory is not empty and is not a prepared sleep dataset; pass --overwrite or pick another --out", out
        )
    tokens, selection_file = selection_tokens(subjects)
    if source == "sleep-edf":
        recs, skipped = discover_sleep_edf(raw, parse_subjects(tokens, subjects))
    else:
        recs, skipped = discover_shhs(raw, tokens)
    if not recs:
        pattern = (
            "SC4ssNE0-PSG.edf + SC4ssNx-Hypnogram.edf" if source == "sleep-edf" else "shhs1-ID.edf + shhs1-ID-nsrr.xml"
        )
        why = f"; skipped: {skipped[0]['id']}: {skipped[0]['reason']}" if skipped else ""
        raise SkdError(
            f"no recordings found (expected {pattern} files{' for --subjects ' + subjects if subjects else ''}){why}",
            raw,
        )
    params = {
        "format": PREP_FORMAT,
        "source": source,
        "channel": channel,
        "fallbacks": list(fallbacks),
        "fs": fs,
        "trim_minutes": trim_minutes if trim_wake else 0.0,
        "normalisation": check_rule(normalisation),
    }
    folder = out / "recordings"
    folder.mkdir(parents=True, exist_ok=True)
    (out / "prep.json").unlink(missing_ok=True)  # unfinished from here on
    rows, warnings, failed, reused = [], [], [], 0
    for rec in recs:
        sources = [_file_id(rec.psg), _file_id(rec.scoring)]
        meta_path, x_path, y_path = folder / f"{rec.id}.json", folder / f"{rec.id}.x.npy", folder / f"{rec.id}.y.npy"
        old = json.loads(meta_path.read_text()) if meta_path.is_file() else None
        if (
            old
            and old.get("sources") == sources
            and old.get("params") == params
            and ("skip" in old or (x_path.is_file() and y_path.is_file()))
        ):
            meta, reused = old, reused + 1
        else:
            try:
                done = process_recording(rec, source, channel, fs, params["trim_minutes"], normalisation, fallbacks)
            except READ_ERRORS as exc:  # one bad night does not stop a 5,793-night prep; it is listed
                text = exc.format() if isinstance(exc, SkdError) else f"{rec.psg}: {exc.__class__.__name__}: {exc}"
                done = {"skip": text.splitlines()[0] if text else exc.__class__.__name__}
            meta = {
                "id": rec.id,
                "sources": sources,
                "params": params,
                "subject": subject_of(rec.id),
                "night": rec.night,
            }
            if "skip" in done:
                meta["skip"] = done["skip"]
                x_path.unlink(missing_ok=True)
                y_path.unlink(missing_ok=True)
            else:
                store_recording(folder, rec.id, done["x"], done["y"])
                scored = done["y"][done["y"] >= 0]
                meta.update(
                    epochs=int(len(scored)),
                    unscored_in_span=int(len(done["y"]) - len(scored)),
                    first_epoch=done["first_epoch"],
                    counts=np.bincount(scored, minlength=5).tolist(),
                    channel=done["channel"],
                    native_fs=done["native_fs"],
                    notes=done["notes"],
                    warnings=done["warnings"],
                    fallback_from=done["fallback_from"],
                    normalisation_stats=done["normalisation_stats"],
                )
            atomic_write_json(meta_path, meta)
        if "skip" in meta:
            failed.append({"id": rec.id, "psg": str(rec.psg), "reason": meta["skip"]})
        else:
            rows.append(
                {
                    k: meta[k]
                    for k in (
                        "id",
                        "subject",
                        "night",
                        "epochs",
                        "unscored_in_span",
                        "first_epoch",
                        "counts",
                        "channel",
                        "fallback_from",
                        "native_fs",
                        "notes",
                        "warnings",
                    )
                }
            )
            warnings += [{"id": rec.id, "warning": w} for w in meta["warnings"]]
        if progress:
            progress(1, len(recs), f"prep {source}")
    wanted = {r.id for r in recs}
    for stale in folder.iterdir():  # recordings no longer in RAW (or outside --subjects)
        if stale.name.split(".")[0] not in wanted:
            stale.unlink()
    skipped += failed
    atomic_write_jsonl(out / "skipped.jsonl", skipped)
    if not rows:
        raise SkdError(
            f"all {len(skipped)} recordings were skipped (listed in {out / 'skipped.jsonl'}); first: "
            f"{failed[0]['reason']}",
            raw,
        )
    info = {
        **params,
        "raw": str(raw.resolve()),
        "subjects": subjects,
        "subjects_file": selection_file,
        **dataset_summary(params, rows),
        "trim_rule": TRIM_RULE.format(m=f"{trim_minutes:g}") if trim_wake else "no wake trimming",
        "reused": reused,
        "skipped": len(skipped),
        "skipped_list": str(out / "skipped.jsonl"),
        "channel_fallbacks": sum(1 for r in rows if r["fallback_from"]),
        "warnings": warnings,
        "manifest": rows,
    }
    atomic_write_json(out / "prep.json", info)
    return {k: v for k, v in info.items() if k != "manifest"} | {"out": str(out)}


# -- reading a prepared dataset ---------------------------------------------------------------------------
@dataclass
class Night:
    id: str
    signal: np.ndarray | Path  # (n, fs*30) float32, or the .npy file holding it (memory-mapped on access)
    y: np.ndarray  # (n,) stage ids, -1 = unscored (context only)
    subject: str = ""  # splits.subject_of(id): the unit of every train / dev / test split

    @property
    def x(self) -> np.ndarray:
        """The signal; a file is mapped read-only, so only the pages read become resident, and they
        are released when the returned array is dropped."""
        if isinstance(self.signal, Path):
            return np.load(self.signal, mmap_mode="r")
        return self.signal


class PreparedSleep:
    """A prepared dataset's index (prep.json) and labels; the signals stay on disk (`Night.x`)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder)
        info_path = self.path / "prep.json"
        if not info_path.is_file():
            raise SkdError("not a prepared sleep dataset (no prep.json; run `skd sleep prep`, or finish it)", self.path)
        self.info = read_json(info_path)
        if self.info.get("format") != PREP_FORMAT:
            raise SkdError(
                f"prepared by another skd version (format {self.info.get('format', 1)}, this one reads "
                f"{PREP_FORMAT}); re-run `skd sleep prep ... --overwrite`",
                info_path,
            )
        self.fs = int(self.info["fs"])
        self.normalisation = self.info["normalisation"]["rule"]
        self.nights: list[Night] = []
        for row in self.info["manifest"]:
            x_path, y_path = (self.path / "recordings" / f"{row['id']}.{k}.npy" for k in ("x", "y"))
            for f in (x_path, y_path):
                if not f.is_file():
                    raise SkdError("recording listed in prep.json is missing", f)
            self.nights.append(Night(row["id"], x_path, np.load(y_path), subject_of(row["id"])))

    def partition(self, data_cfg) -> Partition:
        """train / dev / test nights by subject (splits.py) for a `DataConfig` (dev_fraction, folds, fold)."""
        return partition(self.nights, data_cfg.dev_fraction, data_cfg.folds, data_cfg.fold)

    def held_out(self, data_cfg) -> tuple[str, list[Night]]:
        """What `eval` scores on the run's own dataset: the fold's test subjects, else the dev subjects."""
        parts = self.partition(data_cfg)
        return ("test", parts.test) if data_cfg.folds else ("dev", parts.dev)


class WindowDataset(Dataset):
    """Every run of `seq_len` consecutive epochs of a night (stride 1) that holds at least one
    scored epoch. Nights are contiguous spans on the recording's timeline (unscored epochs inside
    are kept, labelled -1), so a window never jumps over a dropped epoch. A night shorter than
    `seq_len` gives no training window.

    `epoch_labels` (every night's labels, concatenated) and `window_starts` (each window's first
    epoch in that concatenation) are what the class-aware samplers balance. The index costs ~13
    bytes per window (numpy arrays, not Python tuples); the signal is read from the memory-mapped
    files, at most `max_open` nights mapped at a time (least recently used unmapped), so resident
    memory does not grow with the dataset."""

    def __init__(self, nights: list[Night], seq_len: int, max_open: int = 16):
        self.nights, self.seq_len, self.max_open = nights, seq_len, max_open
        night_of, starts, offsets = [], [], [0]
        for k, night in enumerate(nights):
            scored = np.concatenate([[0], np.cumsum(night.y >= 0)])
            s = np.arange(max(len(night.y) - seq_len + 1, 0))
            s = s[scored[s + seq_len] - scored[s] > 0]  # windows with a supervised epoch
            night_of.append(np.full(len(s), k, dtype=np.int32))
            starts.append(s.astype(np.int32))
            offsets.append(offsets[-1] + len(night.y))
        self.night_of = np.concatenate(night_of) if nights else np.zeros(0, np.int32)
        self.starts = np.concatenate(starts) if nights else np.zeros(0, np.int32)
        self.night_offsets = np.asarray(offsets[:-1], dtype=np.int64)
        self.epoch_labels = (np.concatenate([n.y for n in nights]) if nights else np.zeros(0)).astype(np.int8)
        self.window_starts = self.night_offsets[self.night_of] + self.starts
        self._mapped: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:  # DataLoader workers map their own files
        return {**self.__dict__, "_mapped": OrderedDict()}

    def _signal(self, k: int) -> np.ndarray:
        x = self._mapped.get(k)
        if x is None:
            x = self._mapped[k] = self.nights[k].x
            if len(self._mapped) > self.max_open:
                self._mapped.popitem(last=False)
        else:
            self._mapped.move_to_end(k)
        return x

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict:
        k, s = int(self.night_of[i]), int(self.starts[i])
        return {
            "x": torch.from_numpy(np.array(self._signal(k)[s : s + self.seq_len])),
            "y": torch.from_numpy(self.nights[k].y[s : s + self.seq_len].astype(np.int64)),
        }


def night_windows(n_epochs: int, seq_len: int, stride: int) -> list[int]:
    """Window starts covering a whole night (the last window ends at the last epoch)."""
    if n_epochs < seq_len:
        return []
    starts = list(range(0, n_epochs - seq_len + 1, stride))
    if starts[-1] != n_epochs - seq_len:
        starts.append(n_epochs - seq_len)
    return starts
