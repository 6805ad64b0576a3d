"""Data layer of the asr-ctc recipe: audio in, prepared splits on disk, padded batches out.

Reading order: audio I/O and features -> readers of real formats (LibriSpeech tree; NeMo, Common
Voice, HF audiofolder and generic TSV/CSV/JSONL manifests; Kaldi/ESPnet data directories) ->
synthetic espeak-ng corpus -> ``prepare_dataset`` (the ``prep`` stage) ->
``load_prepared`` -> ``AsrDataset`` / ``collate_asr``.

Audio is read with soundfile: ``torchaudio.load`` needs torchcodec, which the project machines
lack. torchaudio is used only for resampling and Kaldi filterbanks.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch.nn.utils.rnn import pad_sequence

from .. import __version__
from ..engine.errors import SkdError
from ..engine.io import (
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    claim_output_dir,
    read_json,
    read_jsonl,
)
from .tokenizer import TEXT_NORMS, TOKENIZER_KINDS, Tokenizer, load_tokenizer, normalize_transcript, train_tokenizer

SAMPLE_RATE = 16000
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
AUDIO_SUFFIXES = (".flac", ".wav")
SPLITS = ("train", "dev", "test")
SOURCES = ("librispeech", "manifest", "synthetic")
PREP_FILE = "prep.json"
HELD_OUT_SET = "dev-heldout"  # the set name of dev rows held out of the train pool

# progress(advance, total, description): lets the CLI drive a progress bar without this module knowing about it.
Progress = Callable[[int, int, str], None]


# --------------------------------------------------------------------------------------------
# Audio I/O and features
# --------------------------------------------------------------------------------------------


def _decode_audio(path: str | Path, start: float | None = None, end: float | None = None) -> tuple[np.ndarray, int]:
    """Decode to mono float32 at the file's own sample rate; every failure names the file.

    ``start`` / ``end`` (seconds; None = the file's start / end) read a segment only (Kaldi
    ``segments``, NeMo ``offset``), seeking instead of decoding the whole recording.
    """
    path = Path(path)
    if not path.is_file():
        raise SkdError("audio file not found", path)
    if path.stat().st_size == 0:
        raise SkdError("audio file is empty (0 bytes)", path)
    try:
        if start is None and end is None:
            data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
        else:
            sample_rate = sf.info(str(path)).samplerate
            first = round((start or 0.0) * sample_rate)
            last = None if end is None else round(end * sample_rate)
            data, _ = sf.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise SkdError(f"cannot decode audio ({exc.error_string})", path) from exc
    except (RuntimeError, ValueError) as exc:
        raise SkdError(f"cannot decode audio ({exc})", path) from exc
    if data.shape[0] == 0:
        stop = "end" if end is None else f"{end:g}"
        where = "" if start is None and end is None else f" in the segment {start or 0.0:g}-{stop} s"
        raise SkdError(f"audio file is empty (0 samples{where})", path)
    return data.mean(axis=1), sample_rate


def read_audio(
    path: str | Path, target_sr: int = SAMPLE_RATE, start: float | None = None, end: float | None = None
) -> torch.Tensor:
    """Mono 1-D float waveform at ``target_sr``; channels are averaged, other rates resampled.
    ``start`` / ``end`` (seconds) select a segment of the file."""
    samples, sample_rate = _decode_audio(path, start, end)
    wave = torch.from_numpy(np.ascontiguousarray(samples))
    if sample_rate != target_sr:
        wave = torchaudio.functional.resample(wave, sample_rate, target_sr)
    return wave


def fbank_features(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, num_mel_bins: int = 80) -> torch.Tensor:
    """Kaldi log-mel filterbank (frames, num_mel_bins): 25 ms windows every 10 ms, no dither."""
    window = int(sample_rate * FRAME_LENGTH_MS / 1000)
    if wave.numel() < window:  # kaldi.fbank raises on audio shorter than one window
        return torch.zeros(0, num_mel_bins)
    return torchaudio.compliance.kaldi.fbank(
        wave.unsqueeze(0),
        sample_frequency=sample_rate,
        num_mel_bins=num_mel_bins,
        frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
        dither=0.0,
    )


@dataclass(frozen=True)
class FeatureConfig:
    """What the model consumes; written into export manifests so inference rebuilds the same input.

    kind "fbank": (frames, num_mel_bins) log-mels. kind "waveform": the raw (samples,) signal, for
    HuBERT/WavLM-style encoders. normalize "utterance" gives each utterance zero mean and unit
    variance (per mel bin for fbank), as Wav2Vec2FeatureExtractor(do_normalize=True) does.
    """

    kind: str = "fbank"
    sample_rate: int = SAMPLE_RATE
    num_mel_bins: int = 80
    normalize: str = "utterance"

    def __post_init__(self) -> None:
        if self.kind not in ("fbank", "waveform"):
            raise SkdError(f"features: unknown kind {self.kind!r} (expected 'fbank' or 'waveform')")
        if self.normalize not in ("utterance", "none"):
            raise SkdError(f"features: unknown normalize {self.normalize!r} (expected 'utterance' or 'none')")
        if self.sample_rate <= 0 or self.num_mel_bins <= 0:
            raise SkdError("features: sample_rate and num_mel_bins must be positive")

    @property
    def feature_dim(self) -> int:
        """Size of the last axis of a padded batch: mel bins, or 1 for a waveform (B, T)."""
        return self.num_mel_bins if self.kind == "fbank" else 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> FeatureConfig:
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise SkdError(f"features: unknown keys {', '.join(sorted(unknown))}")
        return cls(**values)


def compute_features(wave: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """fbank (T, num_mel_bins) or waveform (T,), normalised per utterance if ``cfg`` asks."""
    feats = fbank_features(wave, cfg.sample_rate, cfg.num_mel_bins) if cfg.kind == "fbank" else wave
    if cfg.normalize == "utterance":
        # population variance and eps 1e-7 as in Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
        feats = (feats - feats.mean(0)) / torch.sqrt(feats.var(0, unbiased=False) + 1e-7)
    return feats


# --------------------------------------------------------------------------------------------
# Readers of real formats
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    id: str
    audio_path: Path
    text: str
    start: float | None = None  # seconds; a segment of a longer recording (Kaldi segments, NeMo offset)
    end: float | None = None  # seconds; None = to the end of the file


def _skip(path: str | Path, reason: str) -> dict:
    return {"path": str(path), "reason": reason}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SkdError(f"not UTF-8 text (byte {exc.start})", path) from exc


def read_librispeech(raw_dir: str | Path) -> tuple[list[Utterance], list[dict]]:
    """Utterances of a LibriSpeech-layout tree: ``<spk>/<chapter>/<id>.flac|.wav`` + ``<spk>-<chapter>.trans.txt``.

    Works on one split directory or on a directory of splits (everything below is read). Audio
    and transcript lines are paired within a chapter directory; either one without the other is
    skipped. The root ``*.TXT`` files of the official archives are not needed.
    """
    raw_dir = Path(raw_dir).resolve()
    if not raw_dir.is_dir():
        raise SkdError("not a directory", raw_dir)
    audio_files = sorted(p for p in raw_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not audio_files:
        raise SkdError("no .flac/.wav audio files found", raw_dir)

    transcripts: dict[tuple[Path, str], tuple[str, Path, int]] = {}
    for trans in sorted(raw_dir.rglob("*.trans.txt")):
        for lineno, line in enumerate(_read_text(trans).splitlines(), 1):
            utt_id, _, text = line.strip().partition(" ")
            if utt_id:
                transcripts[(trans.parent, utt_id)] = (text, trans, lineno)

    utterances: list[Utterance] = []
    skipped: list[dict] = []
    used: set[tuple[Path, str]] = set()
    for path in audio_files:  # sorted, so x.flac comes before x.wav and wins
        key = (path.parent, path.stem)
        if key in used:
            skipped.append(_skip(path, f"utterance {path.stem} already has another audio file"))
        elif key not in transcripts:
            skipped.append(_skip(path, f"no transcript line for {path.stem} in a *.trans.txt of its directory"))
        else:
            used.add(key)
            utterances.append(Utterance(path.stem, path, transcripts[key][0]))
    for key, (_, trans, lineno) in transcripts.items():
        if key not in used:
            skipped.append(_skip(trans, f"line {lineno}: transcript for {key[1]} has no .flac/.wav audio file"))
    return utterances, skipped


def _manifest_records(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, record with lower-cased keys) for each row of a JSON-lines, TSV or CSV manifest.

    ``.jsonl`` and ``.json`` are JSON lines (NeMo names its manifests ``*.json``). ``.tsv`` is
    read without quote processing, as Common Voice writes it (a sentence may start with a quote);
    ``.csv`` with standard CSV quoting (HF audiofolder ``metadata.csv``, pandas output).
    """
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SkdError(
                    f"line {lineno}: not valid JSON ({exc.msg}); expected one JSON object per line", path
                ) from exc
            if not isinstance(record, dict):
                raise SkdError(f"line {lineno}: expected a JSON object", path)
            yield lineno, {str(k).lower(): v for k, v in record.items()}
        return
    first_line = text.split("\n", 1)[0]
    delimiter = {".tsv": "\t", ".csv": ","}.get(suffix, "\t" if "\t" in first_line else ",")
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quoting=quoting)
    header = [h.strip().lower() for h in next(reader, [])]
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise SkdError(
                f"line {reader.line_num}: expected {len(header)} fields like the header, found {len(row)}", path
            )
        yield reader.line_num, dict(zip(header, row))


# Manifest formats, told apart by their fields (first record): name -> (audio field, text fields).
MANIFEST_FORMATS = {
    "nemo": ("audio_filepath", ("text",)),  # NeMo JSON lines: audio_filepath, text, duration[, offset]
    "audiofolder": ("file_name", ("transcription", "text")),  # HF audiofolder metadata.csv / .jsonl
    "commonvoice": ("path", ("sentence",)),  # Common Voice TSV; audio in the sibling clips/ folder
    "table": ("audio|path", ("text", "transcript")),  # generic TSV/CSV/JSONL (huutuongtu/skd-ctc CSVs)
}


def _manifest_format(keys: Iterable[str]) -> str:
    keys = set(keys)
    if "audio_filepath" in keys:
        return "nemo"
    if "file_name" in keys:
        return "audiofolder"
    if {"path", "sentence"} <= keys and not keys & {"text", "transcript"}:
        return "commonvoice"
    return "table"


def _number(record: dict, key: str, lineno: int, path: Path) -> float | None:
    value = record.get(key)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SkdError(f"line {lineno}: {key} must be a number of seconds (got {value!r})", path) from None
    if not math.isfinite(number) or number < 0:
        raise SkdError(f"line {lineno}: {key} must be a non-negative number of seconds (got {value!r})", path)
    return number


def _record_utterance(fmt: str, record: dict, lineno: int, path: Path) -> Utterance:
    """One manifest record as an Utterance (the audio file may not exist: the caller checks)."""
    if fmt == "table":
        audio_key = next((k for k in ("audio", "path") if k in record), None)
    else:
        audio_key = MANIFEST_FORMATS[fmt][0] if MANIFEST_FORMATS[fmt][0] in record else None
    text_key = next((k for k in MANIFEST_FORMATS[fmt][1] if k in record), None)
    if audio_key is None or text_key is None:
        audio_field, text_fields = MANIFEST_FORMATS[fmt]
        raise SkdError(
            f"line {lineno}: a {fmt} manifest row needs the fields {audio_field} and "
            f"{' or '.join(text_fields)}; found {', '.join(record) or 'none'}",
            path,
        )
    audio, text = record[audio_key], record[text_key]
    if not isinstance(audio, str) or not audio.strip():
        raise SkdError(f"line {lineno}: {audio_key} must be a non-empty string", path)
    if not isinstance(text, str):
        raise SkdError(f"line {lineno}: {text_key} must be a string", path)
    # Relative paths resolve against the manifest's folder; Common Voice names clips/<file>.
    base = path.parent / "clips" if fmt == "commonvoice" else path.parent
    audio_path = (base / audio.strip()).resolve()
    start = end = None
    if fmt == "nemo" and record.get("offset") not in (None, ""):
        # NeMo: offset (s) + duration (s) select a segment; without offset, duration describes the file.
        start = _number(record, "offset", lineno, path)
        duration = _number(record, "duration", lineno, path)
        end = None if duration is None else start + duration
    utt_id = str(record.get("id") or audio_path.stem)
    if start is not None:
        utt_id = f"{utt_id}-{round(start * 1000):08d}"  # segments of one file need distinct ids
    return Utterance(utt_id, audio_path, text, start, end)


def read_manifest(path: str | Path) -> tuple[list[Utterance], list[dict]]:
    """Utterances listed in one manifest file; the format is told by its fields (MANIFEST_FORMATS).

    - NeMo JSON lines (``audio_filepath``, ``text``, ``duration``; an ``offset`` makes the row a
      segment ``[offset, offset + duration]`` of the file);
    - Common Voice TSV (``path``, ``sentence``, ...): audio in the ``clips/`` folder beside the TSV;
    - HF audiofolder ``metadata.csv`` / ``metadata.jsonl`` (``file_name``, ``transcription`` or ``text``);
    - a generic TSV/CSV/JSONL with ``audio`` or ``path`` and ``text`` or ``transcript`` (covers
      huutuongtu/skd-ctc's ``,Unnamed: 0,Path,Transcript`` CSVs).

    Keys match in any case. An optional ``id`` names the utterance, otherwise the audio file name
    does. Relative audio paths resolve against the manifest's folder. Malformed rows raise; rows
    whose audio file does not exist are skipped.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise SkdError("manifest file not found", path)
    utterances: list[Utterance] = []
    skipped: list[dict] = []
    fmt: str | None = None
    for lineno, record in _manifest_records(path):
        fmt = fmt or _manifest_format(record)
        utt = _record_utterance(fmt, record, lineno, path)
        if not utt.audio_path.is_file():
            skipped.append(_skip(utt.audio_path, f"audio file not found (manifest line {lineno})"))
            continue
        utterances.append(utt)
    if not utterances and not skipped:
        raise SkdError("manifest has no rows", path)
    return utterances, skipped


def _kaldi_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        if line.strip():
            yield lineno, line.split(maxsplit=1)


def _kaldi_audio_path(data_dir: Path, entry: str) -> Path:
    """A wav.scp path. Relative ones resolve against the data directory first; Kaldi and ESPnet
    write them relative to the recipe directory, so the data directory's ancestors come next
    (first existing file wins; none existing: the data directory's, reported as missing)."""
    path = Path(entry)
    if path.is_absolute():
        return path
    for base in (data_dir, *data_dir.parents):
        if (base / path).is_file():
            return (base / path).resolve()
    return (data_dir / path).resolve()


def read_kaldi_dir(data_dir: str | Path) -> tuple[list[Utterance], list[dict]]:
    """Utterances of a Kaldi / ESPnet data directory: ``wav.scp`` + ``text``, optional ``segments``.

    ``wav.scp``: ``<recording-id> <audio file>``; command pipes (``<id> sox ... - |``) and ark
    offsets (``<id> foo.ark:123``) are refused: skd reads audio files. ``text``:
    ``<utterance-id> <transcript>``. ``segments``: ``<utterance-id> <recording-id> <start> <end>``
    in seconds (end -1 = to the end of the recording); without it each recording is one
    utterance named by its recording id. Other files (utt2spk, spk2utt, ...) are not needed.
    """
    data_dir = Path(data_dir).resolve()
    wav_scp, text_file, segments_file = data_dir / "wav.scp", data_dir / "text", data_dir / "segments"
    for required in (wav_scp, text_file):
        if not required.is_file():
            raise SkdError(f"not a Kaldi data directory: no {required.name}", data_dir)
    recordings: dict[str, Path] = {}
    for lineno, cols in _kaldi_lines(wav_scp):
        if len(cols) < 2:
            raise SkdError(f"line {lineno}: expected '<recording-id> <audio file>'", wav_scp)
        rec_id, entry = cols[0], cols[1].strip()
        if entry.endswith("|") or entry.startswith("|"):
            raise SkdError(
                f"line {lineno}: recording {rec_id} is a command pipe ({entry!r}); skd reads audio files, "
                "not commands: write the audio to files first (e.g. with sox) and list their paths",
                wav_scp,
            )
        if len(entry.split()) > 1 or re.search(r"\.ark:\d+$", entry):
            raise SkdError(
                f"line {lineno}: recording {rec_id} is not a plain audio file path ({entry!r}); "
                "extended filenames and ark offsets are not supported",
                wav_scp,
            )
        recordings[rec_id] = _kaldi_audio_path(data_dir, entry)
    texts: dict[str, str] = {}
    for _, cols in _kaldi_lines(text_file):
        texts[cols[0]] = cols[1] if len(cols) > 1 else ""

    skipped: list[dict] = []
    # (utterance id, recording id, start, end)
    if segments_file.is_file():
        pieces = []
        for lineno, cols in _kaldi_lines(segments_file):
            parts = [cols[0], *cols[1].split()] if len(cols) > 1 else cols
            if len(parts) != 4:
                raise SkdError(f"line {lineno}: expected '<utterance-id> <recording-id> <start> <end>'", segments_file)
            try:
                start, end = float(parts[2]), float(parts[3])
            except ValueError:
                raise SkdError(f"line {lineno}: start and end must be seconds", segments_file) from None
            if start < 0 or (end >= 0 and end <= start):
                raise SkdError(f"line {lineno}: segment {start:g}-{end:g} s is empty or negative", segments_file)
            pieces.append((parts[0], parts[1], start, None if end < 0 else end))
    else:
        pieces = [(rec_id, rec_id, None, None) for rec_id in recordings]
    utterances: list[Utterance] = []
    for utt_id, rec_id, start, end in pieces:
        if rec_id not in recordings:
            skipped.append(_skip(segments_file, f"segment {utt_id}: recording {rec_id} is not in wav.scp"))
        elif utt_id not in texts:
            skipped.append(_skip(recordings[rec_id], f"no line for {utt_id} in {text_file}"))
        elif not recordings[rec_id].is_file():
            skipped.append(_skip(recordings[rec_id], f"audio file not found ({wav_scp.name} recording {rec_id})"))
        else:
            utterances.append(Utterance(utt_id, recordings[rec_id], texts[utt_id], start, end))
    used = {p[0] for p in pieces}
    listing = "segments" if segments_file.is_file() else "wav.scp"
    skipped.extend(
        _skip(text_file, f"transcript for {u} has no audio (not in {listing})") for u in texts if u not in used
    )
    return utterances, skipped


AUDIOFOLDER_METADATA = ("metadata.csv", "metadata.jsonl")
COMMON_VOICE_SPLITS = ("train", "dev", "test")


def _dataset_kind(folder: Path) -> str | None:
    if (folder / "wav.scp").is_file():
        return "kaldi"
    if any((folder / name).is_file() for name in AUDIOFOLDER_METADATA):
        return "audiofolder"
    return None


def _read_dataset_dir(folder: Path, kind: str) -> tuple[list[Utterance], list[dict]]:
    if kind == "kaldi":
        return read_kaldi_dir(folder)
    metadata = next(folder / name for name in AUDIOFOLDER_METADATA if (folder / name).is_file())
    return read_manifest(metadata)


def read_manifest_source(raw: str | Path) -> tuple[dict[str, list[Utterance]], list[dict]]:
    """``prep --source manifest --raw PATH``: named sets of utterances, each set's role coming
    from its name (``set_role``).

    PATH may be one manifest file (a set named by the file's stem; for ``metadata.csv`` /
    ``metadata.jsonl`` / ``wav.scp`` / ``text`` by its folder), a Kaldi/ESPnet data directory, an HF
    audiofolder directory, a Common Voice release folder (``train.tsv``, ``dev.tsv``, ``test.tsv``
    and ``clips/``), or a folder of Kaldi/audiofolder directories (``data/{train,dev,test}``).
    """
    raw = Path(raw).resolve()
    if raw.is_file():
        if raw.name in ("wav.scp", "text", "segments"):
            utterances, skipped = read_kaldi_dir(raw.parent)
            return {raw.parent.name: utterances}, skipped
        name = raw.parent.name if raw.name.lower() in AUDIOFOLDER_METADATA else raw.stem
        utterances, skipped = read_manifest(raw)
        return {name: utterances}, skipped
    if not raw.is_dir():
        raise SkdError("manifest file or directory not found", raw)
    if kind := _dataset_kind(raw):
        utterances, skipped = _read_dataset_dir(raw, kind)
        return {raw.name: utterances}, skipped
    sets: dict[str, list[Utterance]] = {}
    skipped: list[dict] = []
    tsvs = [raw / f"{split}.tsv" for split in COMMON_VOICE_SPLITS if (raw / f"{split}.tsv").is_file()]
    if tsvs and (raw / "clips").is_dir():  # a Common Voice release (validated.tsv etc. are not splits)
        for tsv in tsvs:
            sets[tsv.stem], more = read_manifest(tsv)
            skipped.extend(more)
        return sets, skipped
    for sub in sorted(p for p in raw.iterdir() if p.is_dir()):
        if kind := _dataset_kind(sub):
            sets[sub.name], more = _read_dataset_dir(sub, kind)
            skipped.extend(more)
    if not sets:
        raise SkdError(
            "no manifest found: expected a manifest file, a Kaldi data directory (wav.scp + text), an "
            "audiofolder directory (metadata.csv), a Common Voice folder (train/dev/test.tsv + clips/), "
            "or a folder of such directories",
            raw,
        )
    return sets, skipped


# --------------------------------------------------------------------------------------------
# Synthetic spoken corpus (espeak-ng)
# --------------------------------------------------------------------------------------------

# Closed vocabulary of 30 words: digits, colours, nouns, verbs. Every letter but q and x is covered.
SYNTH_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "red",
    "green",
    "blue",
    "yellow",
    "white",
    "black",
    "cat",
    "dog",
    "bird",
    "fish",
    "box",
    "jug",
    "key",
    "van",
    "runs",
    "jumps",
    "stops",
    "sits",
    "walks",
    "flies",
)
# Each voice x speed is one "speaker". All four ship with Debian's espeak-ng-data (checked with --voices).
SYNTH_VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland+m3")
SYNTH_SPEEDS = (130, 165, 200)  # words per minute
SYNTH_CHAPTERS = {"train": 1, "dev": 2, "test": 3}  # distinct per split so utterance ids never collide


def _espeak_binary() -> str:
    """Path of espeak-ng, installing the Debian package when running as root with apt-get."""
    found = shutil.which("espeak-ng")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "espeak-ng"]):
            subprocess.run(command, capture_output=True, env=env, check=False)
        found = shutil.which("espeak-ng")
    if found is None:
        raise SkdError(
            "the synthetic corpus needs the espeak-ng binary, which is missing and could not be "
            "installed; install it (apt-get install espeak-ng) and retry"
        )
    return found


def _synthesize(binary: str, text: str, voice: str, speed: int) -> np.ndarray:
    """Speak ``text`` and return it as 16 kHz float32 samples (espeak-ng writes 22.05 kHz WAV)."""
    proc = subprocess.run([binary, "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise SkdError(f"espeak-ng failed for voice {voice}: {proc.stderr.decode(errors='replace').strip()}")
    samples, sample_rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    wave = torchaudio.functional.resample(torch.from_numpy(samples), sample_rate, SAMPLE_RATE)
    return wave.numpy()


def _synthetic_sentences(count: int, rng: random.Random) -> list[str]:
    """``count`` distinct word sequences of 1-4 words.

    Distinctness makes the dev/test sentences unseen in train. Once the 30 one-word sentences are
    used up, redraws shift the mix towards longer sentences.
    """
    sentences: list[str] = []
    seen: set[str] = set()
    while len(sentences) < count:
        sentence = " ".join(rng.choice(SYNTH_WORDS) for _ in range(rng.randint(1, 4)))
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    return sentences


def generate_synthetic_corpus(
    out_dir: str | Path,
    n_train: int = 720,
    n_dev: int = 40,
    n_test: int = 40,
    seed: int = 0,
    progress: Progress | None = None,
) -> Path:
    """Speak a small closed-vocabulary corpus with espeak-ng into ``out_dir/LibriSpeech``.

    Layout ``LibriSpeech/{train,dev,test}/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac`` plus
    ``.trans.txt`` files, so ``read_librispeech`` reads it like the real corpus. Speakers
    (voice x speed) are shared across splits; sentences are not. The same seed and espeak-ng
    version give byte-identical files. Returns the ``LibriSpeech`` directory.
    """
    if min(n_train, n_dev, n_test) < 0 or n_train == 0:
        raise SkdError("the synthetic corpus needs n_train > 0 and n_dev, n_test >= 0")
    root = Path(out_dir).resolve() / "LibriSpeech"
    if root.exists() and any(root.iterdir()):
        raise SkdError("already holds a corpus; choose an empty directory", root)
    binary = _espeak_binary()
    rng = random.Random(seed)
    sentences = _synthetic_sentences(n_train + n_dev + n_test, rng)
    speakers = [(voice, speed) for voice in SYNTH_VOICES for speed in SYNTH_SPEEDS]
    speaker_ids = [101 + i for i in range(len(speakers))]

    # (path, text, voice, speed) per utterance; speakers take turns so each split is balanced.
    jobs: list[tuple[Path, str, str, int]] = []
    transcripts: dict[Path, list[str]] = {}
    bounds = {"train": (0, n_train), "dev": (n_train, n_train + n_dev), "test": (n_train + n_dev, len(sentences))}
    for split, (start, stop) in bounds.items():
        for k, sentence in enumerate(sentences[start:stop]):
            spk, chapter = speaker_ids[k % len(speakers)], SYNTH_CHAPTERS[split]
            utt_id = f"{spk}-{chapter}-{k // len(speakers):04d}"
            chapter_dir = root / split / str(spk) / str(chapter)
            jobs.append((chapter_dir / f"{utt_id}.flac", sentence, *speakers[k % len(speakers)]))
            transcripts.setdefault(chapter_dir / f"{spk}-{chapter}.trans.txt", []).append(
                f"{utt_id} {sentence.upper()}"
            )

    def speak(job: tuple[Path, str, str, int]) -> None:
        path, text, voice, speed = job
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), _synthesize(binary, text, voice, speed), SAMPLE_RATE, format="FLAC", subtype="PCM_16")

    # espeak-ng runs as a subprocess and soundfile releases the GIL, so a few threads keep 2+ cores busy.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for _ in pool.map(speak, jobs):
            if progress:
                progress(1, len(jobs), "synthesising speech")
    for trans_path, lines in transcripts.items():
        atomic_write_text(trans_path, "".join(line + "\n" for line in sorted(lines)))
    speaker_lines = [f"{sid} | {voice} | {speed} wpm" for sid, (voice, speed) in zip(speaker_ids, speakers)]
    atomic_write_text(root / "SPEAKERS.TXT", "; ID | espeak-ng voice | speed\n" + "\n".join(speaker_lines) + "\n")
    return root


# --------------------------------------------------------------------------------------------
# prep: raw corpus -> validated split manifests + tokenizer
# --------------------------------------------------------------------------------------------

# Official LibriSpeech sets (SLR12) and Mini LibriSpeech (SLR31) are named <role>-...: each set
# keeps its name and takes its role from it, so WER is reported per set as papers do.
VALIDATION_ALIASES = ("val", "valid", "validation")  # HF datasets' name for dev


def set_role(name: str) -> str | None:
    """train / dev / test from a set's name (prefix, any case; HF's validation = dev), else None.
    A set without a role is a train pool from which prep holds out a dev set."""
    lower = name.lower()
    if lower in VALIDATION_ALIASES:
        return "dev"
    return next((split for split in SPLITS if lower.startswith(split)), None)


def _librispeech_sets(raw: Path) -> dict[str, Path]:
    """Named sets of a LibriSpeech-layout tree: {set name: directory}.

    ``raw`` may be the ``LibriSpeech`` directory (or the folder holding it) with set directories
    named train*/dev*/test* (``train-clean-100``, ``dev-other``, ...), or one set directory, whose
    name gives its role (``test-other`` is a test set; a name without a role is a train pool).
    """
    if not raw.is_dir():
        raise SkdError("not a directory", raw)
    subdirs = sorted(p for p in raw.iterdir() if p.is_dir())
    if not any(set_role(p.name) for p in subdirs) and (raw / "LibriSpeech").is_dir():
        raw = raw / "LibriSpeech"
        subdirs = sorted(p for p in raw.iterdir() if p.is_dir())
    found = {p.name: p for p in subdirs if set_role(p.name)}
    return found or {raw.name: raw}


def _read_librispeech_sets(set_dirs: dict[str, Path]) -> tuple[dict[str, list[Utterance]], list[dict]]:
    candidates: dict[str, list[Utterance]] = {}
    skipped: list[dict] = []
    for name, set_dir in set_dirs.items():
        candidates[name], dir_skipped = read_librispeech(set_dir)
        skipped.extend(dir_skipped)
    return candidates, skipped


def _probe_audio(utt: Utterance) -> dict | str:
    """Audio facts for the manifest row, or why the audio is unusable."""
    try:
        samples, sample_rate = _decode_audio(utt.audio_path, utt.start, utt.end)
    except SkdError as exc:
        return exc.message
    duration = len(samples) / sample_rate
    if duration * 1000 < FRAME_LENGTH_MS:
        return f"audio is shorter than one {FRAME_LENGTH_MS:g} ms frame ({len(samples)} samples)"
    facts = {"duration": round(duration, 4), "num_samples": len(samples), "sample_rate": sample_rate}
    if utt.start is not None or utt.end is not None:
        facts["start"], facts["end"] = utt.start or 0.0, utt.end
    return facts


def _text_problem(tokenizer: Tokenizer, text: str) -> str | None:
    bad = tokenizer.invalid_chars(text)
    if bad:
        return f"characters outside the tokenizer vocabulary: {''.join(sorted(bad))!r}"
    if not tokenizer.is_valid(text):
        return "transcript encodes to nothing or to <unk>"
    return None


def _hold_out(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Split off ceil(fraction * n) rows as dev, chosen by a seeded hash of the utterance id.

    Hash order does not depend on file order; ceil keeps at least one dev row for tiny corpora
    (and at least one train row).
    """
    if fraction == 0 or len(rows) < 2:
        return rows, []
    n_dev = min(math.ceil(fraction * len(rows)), len(rows) - 1)
    ranked = sorted(rows, key=lambda r: hashlib.sha256(f"{seed}:{r['id']}".encode()).hexdigest())
    dev_ids = {r["id"] for r in ranked[:n_dev]}
    return [r for r in rows if r["id"] not in dev_ids], [r for r in rows if r["id"] in dev_ids]


def _fingerprint(data_dir: Path) -> str:
    """sha256 over the split manifests exactly as written, each preceded by its split name."""
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(f"{split}\n".encode())
        digest.update((data_dir / f"{split}.jsonl").read_bytes())
    return digest.hexdigest()


def prepare_dataset(
    source: str,
    raw: str | Path | None,
    out: str | Path,
    *,
    tokenizer: str = "char",
    vocab_size: int = 64,
    dev_fraction: float = 0.05,
    overwrite: bool = False,
    seed: int = 0,
    progress: Progress | None = None,
    text_norm: str = "lower",
) -> dict:
    """The ``prep`` stage: read a corpus, validate every utterance, write manifests and a tokenizer.

    The corpus is read as named sets (LibriSpeech: one per set directory, ``test-clean``,
    ``dev-other``, ...; manifests: one per file or data directory), each taking its role (train /
    dev / test) from its name (``set_role``); a set without a role is a train pool. Without a
    dev set, ``dev_fraction`` of the train rows is held out as the set ``dev-heldout``. Without a
    train set the dataset is for evaluation only (e.g. ``--raw LibriSpeech/test-other``).

    Writes into ``out``: ``{train,dev,test}.jsonl`` (rows id, audio, text, duration,
    num_samples, sample_rate, set [, start, end], sorted by id; duration/num_samples/sample_rate
    describe the audio as stored, resampling happens at load time; start/end (seconds) mark a
    segment of a longer file), ``skipped.jsonl`` ({"path", "reason"} per unusable file or
    line), ``tokenizer/`` and, last, ``prep.json``, whose presence marks the dataset complete.
    Returns the ``prep.json`` content.
    """
    if source not in SOURCES:
        raise SkdError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if tokenizer not in TOKENIZER_KINDS:
        raise SkdError(f"unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZER_KINDS)}")
    if not 0 <= dev_fraction < 1:
        raise SkdError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
    if text_norm not in TEXT_NORMS:
        raise SkdError(f"unknown text normalisation {text_norm!r}; choose one of {', '.join(TEXT_NORMS)}")
    out = Path(out).resolve()

    # Read the source before claiming `out`, so a bad --raw never costs an existing dataset.
    if source != "synthetic":
        if raw is None:
            raise SkdError(f"source {source!r} needs a raw data path")
        raw = Path(raw).resolve()
        if not raw.exists():
            raise SkdError("raw data path not found", raw)
        if raw == out or out in raw.parents:
            raise SkdError(f"lies inside the output directory {out}, which prep replaces; choose another output", raw)
        if source == "librispeech":
            candidates, skipped = _read_librispeech_sets(_librispeech_sets(raw))
        else:
            candidates, skipped = read_manifest_source(raw)
    claim_output_dir(out, overwrite, PREP_FILE, "prepared dataset")
    if source == "synthetic":
        raw = generate_synthetic_corpus(out / "raw", seed=seed, progress=progress)
        candidates, skipped = _read_librispeech_sets(_librispeech_sets(raw))
    roles = {name: set_role(name) or "train" for name in candidates}

    # Cheap checks first (ids, transcripts, and the fixed char vocabulary), then decode the audio.
    tok: Tokenizer | None = train_tokenizer("char", [], out / "tokenizer", vocab_size) if tokenizer == "char" else None
    pending: list[tuple[str, Utterance]] = []
    seen_ids: set[str] = set()
    for name, utterances in candidates.items():
        for utt in utterances:
            utt = dataclasses.replace(utt, text=normalize_transcript(utt.text, text_norm))
            problem = (
                f"duplicate utterance id {utt.id}"
                if utt.id in seen_ids
                else "empty transcript"
                if not utt.text
                else _text_problem(tok, utt.text)
                if tok
                else None
            )
            seen_ids.add(utt.id)
            if problem:
                skipped.append(_skip(utt.audio_path, problem))
            else:
                pending.append((name, utt))

    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for (name, utt), audio in zip(pending, pool.map(lambda p: _probe_audio(p[1]), pending)):
            if progress:
                progress(1, len(pending), "checking audio")
            if isinstance(audio, str):
                skipped.append(_skip(utt.audio_path, audio))
            else:
                rows[roles[name]].append(
                    {"id": utt.id, "audio": str(utt.audio_path), "text": utt.text, **audio, "set": name}
                )

    held_out = "dev" not in roles.values() and bool(rows["train"])
    if held_out:
        rows["train"], rows["dev"] = _hold_out(rows["train"], dev_fraction, seed)
        for row in rows["dev"]:
            row["set"] = HELD_OUT_SET
    if not any(rows.values()):
        atomic_write_jsonl(out / "skipped.jsonl", skipped)
        raise SkdError(f"no usable utterances ({len(skipped)} skipped, see {out / 'skipped.jsonl'})", raw)

    if tok is None:  # sentencepiece learns from train transcripts only, then vets every split
        if not rows["train"]:
            raise SkdError(
                f"{tokenizer} tokenizers are learnt from a train set and these sets "
                f"({', '.join(candidates)}) have none; prep evaluation-only sets with --tokenizer char, "
                "or together with their train set",
                raw,
            )
        tok = train_tokenizer(tokenizer, [r["text"] for r in rows["train"]], out / "tokenizer", vocab_size)
        for split in SPLITS:
            kept = []
            for row in rows[split]:
                # Train rows need clean targets. Dev/test rows are only decoded and scored against
                # their text, so characters unseen in train must not shrink the eval sets: they
                # stay (and count as errors); only a transcript that encodes to nothing is dropped.
                if split == "train":
                    problem = _text_problem(tok, row["text"])
                else:
                    problem = None if tok.encode(row["text"]) else "transcript encodes to nothing"
                if problem:
                    skipped.append(_skip(row["audio"], problem))
                else:
                    kept.append(row)
            rows[split] = kept

    for split in SPLITS:
        atomic_write_jsonl(out / f"{split}.jsonl", sorted(rows[split], key=lambda r: r["id"]))
    atomic_write_jsonl(out / "skipped.jsonl", skipped)
    sets: dict[str, dict] = {}
    for split in SPLITS:
        for row in rows[split]:
            entry = sets.setdefault(row["set"], {"role": split, "utterances": 0, "hours": 0.0})
            entry["utterances"] += 1
            entry["hours"] += row["duration"] / 3600
    info = {
        "skd_version": __version__,
        "source": source,
        "raw": str(raw),
        "sets": {name: {**entry, "hours": round(entry["hours"], 4)} for name, entry in sorted(sets.items())},
        "text_norm": text_norm,
        "dev_held_out": held_out,
        "dev_fraction": dev_fraction,
        "seed": seed,
        "counts": {split: len(rows[split]) for split in SPLITS},
        "skipped": len(skipped),
        "tokenizer": {"dir": "tokenizer", "kind": tokenizer, "vocab_size": tok.vocab_size},
        "fingerprint": _fingerprint(out),
        "hours": {split: round(sum(r["duration"] for r in rows[split]) / 3600, 4) for split in SPLITS},
    }
    atomic_write_json(out / PREP_FILE, info)
    return info


# --------------------------------------------------------------------------------------------
# Loading a prepared dataset; torch Dataset and collate
# --------------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    root: Path
    info: dict
    train: list[dict]
    dev: list[dict]
    test: list[dict]
    tokenizer: Tokenizer

    def sets(self, role: str | None = None) -> dict[str, list[dict]]:
        """{set name: rows} of one role (or of all), in manifest order. Datasets prepared before
        sets were kept have no ``set`` field: each role is then one set named after it."""
        grouped: dict[str, list[dict]] = {}
        for split in SPLITS if role is None else (role,):
            for row in getattr(self, split):
                grouped.setdefault(row.get("set", split), []).append(row)
        return grouped

    def eval_sets(self, split: str) -> dict[str, list[dict]]:
        """The sets ``eval --split SPLIT`` scores, each on its own.

        SPLIT is a set name (``test-clean``), a role (``test``: each of its sets), ``all`` (every
        dev and test set) or ``auto`` (the test sets, else the dev sets)."""
        every = self.sets()
        if split in every:
            return {split: every[split]}
        if split == "auto":
            split = "test" if self.test else "dev"
        if split == "all":
            chosen = {**self.sets("dev"), **self.sets("test")}
        elif split in SPLITS:
            chosen = self.sets(split)
        else:
            chosen = {}
        if not chosen:
            names = ", ".join([*every, *(r for r in SPLITS if getattr(self, r)), "all"])
            raise SkdError(f"the dataset has no '{split}' set to evaluate (it has: {names})", self.root)
        return chosen


def load_prepared(data_dir: str | Path) -> PreparedData:
    """Read what ``prepare_dataset`` wrote, refusing half-written or edited datasets."""
    root = Path(data_dir).resolve()
    if not root.is_dir():
        raise SkdError("dataset directory not found", root)
    if not (root / PREP_FILE).is_file():
        raise SkdError(f"not a prepared dataset (no {PREP_FILE}); run `skd asr-ctc prep` first", root)
    info = read_json(root / PREP_FILE)
    splits = {split: read_jsonl(root / f"{split}.jsonl") for split in SPLITS}
    if info.get("fingerprint") != _fingerprint(root):
        raise SkdError(
            f"split manifests changed since prep (fingerprint differs from {PREP_FILE}); "
            "re-run `skd asr-ctc prep --overwrite`",
            root,
        )
    return PreparedData(root, info, splits["train"], splits["dev"], splits["test"], load_tokenizer(root / "tokenizer"))


class AsrDataset(torch.utils.data.Dataset):
    """Manifest rows -> {index, id, features, targets, text}.

    ``features`` is (T, F) fbank or a (T,) waveform, per ``feature_cfg``. Feature extraction is
    frozen (no learned part), so with ``cache=True`` it runs once, here, instead of every epoch;
    DataLoader workers forked later share the cache. Without a cache, audio is read and features
    computed in ``__getitem__`` (in the workers). SpecAugment is not applied here: the model
    applies it on the main process, where its RNG state is checkpointed.
    """

    def __init__(
        self,
        rows: Iterable[dict],
        tokenizer: Tokenizer,
        feature_cfg: FeatureConfig,
        cache: bool = False,
        progress: Progress | None = None,
    ):
        self.rows = list(rows)
        self.feature_cfg = feature_cfg
        # Encoded once up front: cheap, and a bad transcript fails before training starts.
        self.targets = [tokenizer.encode(row["text"]) for row in self.rows]
        self.cache: list[torch.Tensor] | None = None
        if cache:
            self.cache = []
            for row in self.rows:
                self.cache.append(self._features(row))
                if progress:
                    progress(1, len(self.rows), "computing features")

    def _features(self, row: dict) -> torch.Tensor:
        wave = read_audio(row["audio"], self.feature_cfg.sample_rate, row.get("start"), row.get("end"))
        return compute_features(wave, self.feature_cfg)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        features = self.cache[index] if self.cache is not None else self._features(row)
        return {
            "index": index,
            "id": row["id"],
            "features": features,
            "targets": torch.tensor(self.targets[index], dtype=torch.long),
            "text": row["text"],
        }


def collate_asr(batch: list[dict]) -> dict:
    """Zero-pad features to (B, Tmax, F) or (B, Tmax) and targets to (B, Umax); 0 is the CTC blank."""
    return {
        "features": pad_sequence([b["features"] for b in batch], batch_first=True),
        "feature_lengths": torch.tensor([b["features"].shape[0] for b in batch], dtype=torch.long),
        "targets": pad_sequence([b["targets"] for b in batch], batch_first=True, padding_value=0),
        "target_lengths": torch.tensor([len(b["targets"]) for b in batch], dtype=torch.long),
        "ids": [b["id"] for b in batch],
        "texts": [b["text"] for b in batch],
        "indices": torch.tensor([b["index"] for b in batch], dtype=torch.long),
    }
