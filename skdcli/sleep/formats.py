"""Sleep file formats: EDF/EDF+ signals (mne), EDF+ hypnograms (edfio), SHHS NSRR / Profusion XML.

Everything here turns a file into plain arrays and a label per 30-s epoch, or fails with one
`SkdError` line naming the file. Label maps are the DeepSleepNet / SeriesSleepNet lineage
(R&K S3 + S4 -> N3); UNKNOWN (-1) epochs are dropped by prep. Facts and sources: recipes/sleep/README.md §1.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.errors import SkdError

EPOCH_SECONDS = 30
UNKNOWN = -1

# Sleep-EDF (R&K) and AASM (e.g. HMC) hypnogram annotation texts -> W 0, N1 1, N2 2, N3 3, REM 4
EDF_STAGE_LABELS = {
    "Sleep stage W": 0,
    "Sleep stage 1": 1,
    "Sleep stage 2": 2,
    "Sleep stage 3": 3,
    "Sleep stage 4": 3,
    "Sleep stage R": 4,
    "Sleep stage N1": 1,
    "Sleep stage N2": 2,
    "Sleep stage N3": 3,
    "Sleep stage ?": UNKNOWN,
    "Movement time": UNKNOWN,
}
# SHHS stage codes (NSRR EventConcept "...|code" and Profusion <SleepStage>): 6 movement, 9 unscored
SHHS_STAGE_CODES = {0: 0, 1: 1, 2: 2, 3: 3, 4: 3, 5: 4, 6: UNKNOWN, 9: UNKNOWN}
# how score writes predictions back as an EDF+ hypnogram (Sleep-EDF spelling, N3 as stage 3)
STAGE_TEXT = ["Sleep stage W", "Sleep stage 1", "Sleep stage 2", "Sleep stage 3", "Sleep stage R"]


# -- EDF signals ----------------------------------------------------------------------------------
def check_edf_file(path: Path) -> None:
    """Refuse non-EDF and truncated files before mne reads them (mne would read a truncated file
    silently short, or fail with an unrelated message). Sizes come from the fixed EDF header."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(256)
        if len(head) < 256 or head[:8].strip() not in (b"0", b"\xffBIOSEMI"):
            raise SkdError("not an EDF file (bad header)", path)
        try:
            header_bytes, n_records, n_signals = int(head[184:192]), int(head[236:244]), int(head[252:256])
            fh.seek(256 + n_signals * 216)
            samples = [int(fh.read(8)) for _ in range(n_signals)]
        except ValueError as exc:
            raise SkdError("not an EDF file (unreadable header fields)", path) from exc
    sample_bytes = 3 if head[:1] == b"\xff" else 2
    expected = header_bytes + n_records * sum(samples) * sample_bytes
    if n_records >= 0 and size < expected:
        raise SkdError(
            f"truncated EDF: the header promises {n_records} data records ({expected} bytes) "
            f"but the file has {size} bytes",
            path,
        )


def channel_key(label: str) -> str:
    """How channel labels are compared: case, spaces, brackets, '-' and '_' ignored, so SHHS's
    spellings of the second EEG (`EEG(sec)`, `EEG sec`, `EEG(SEC)`; `EEG2`, `EEG 2`) each match."""
    return re.sub(r"[\s()\[\]\-_]", "", label.lower())


def resolve_channel(
    available: list[str], wanted: str, path: Path, fallbacks: tuple[str, ...] = ()
) -> tuple[str, str | None]:
    """(label found, the fallback it came from or None). `wanted` is matched exactly, then by
    `channel_key`; only then, in order, each of `fallbacks`. There is no prefix matching: SHHS's
    `EEG` (C4-A1) must never silently become `EEG(sec)` (C3-A2); that substitution is a fallback
    the caller records as a warning."""
    for name, fallback in [(wanted, None)] + [(f, f) for f in fallbacks]:
        if name in available:
            return name, fallback
        matches = [c for c in available if channel_key(c) == channel_key(name)]
        if len(matches) == 1:
            return matches[0], fallback
        if len(matches) > 1:
            raise SkdError(f"channel '{name}' is ambiguous: {', '.join(matches)}", path)
    tried = f" (nor the fallback{'s' if len(fallbacks) > 1 else ''} {', '.join(fallbacks)})" if fallbacks else ""
    raise SkdError(f"channel '{wanted}' not found{tried}; channels present: {', '.join(available)}", path)


@dataclass
class Signal:
    data: np.ndarray  # (n_samples,) float64, volts as mne returns them
    fs: float
    channel: str
    start: dt.datetime | None  # recording start (naive, local clock as in the header)
    fallback_from: str | None = None  # the channel asked for, when a fallback was read instead


def read_edf_channel(path: str | Path, channel: str, fallbacks: tuple[str, ...] = ()) -> Signal:
    import mne

    path = Path(path)
    if not path.is_file():
        raise SkdError("EDF file not found", path)
    check_edf_file(path)
    try:
        header = mne.io.read_raw_edf(path, preload=False, verbose="error")
        name, fallback = resolve_channel(header.ch_names, channel, path, fallbacks)
        # only this channel: mne then keeps its native rate instead of upsampling to the fastest one
        raw = mne.io.read_raw_edf(path, include=[name], preload=True, verbose="error")
    except SkdError:
        raise
    except Exception as exc:
        raise SkdError(f"cannot read EDF ({exc.__class__.__name__}: {str(exc).splitlines()[0]})", path) from exc
    start = raw.info["meas_date"]
    start = start.replace(tzinfo=None) if start is not None else None
    return Signal(raw.get_data()[0], float(raw.info["sfreq"]), name, start, channel if fallback else None)


# -- hypnograms -----------------------------------------------------------------------------------
@dataclass
class Hypnogram:
    labels: np.ndarray  # (n_epochs,) int64 stage ids, UNKNOWN for ?/movement, -2 for gaps nobody scored
    start: dt.datetime | None  # scoring start; None when the format has no clock (XML: relative to the EDF)


def _events_to_epochs(events: list[tuple[float, float, int]], path: Path) -> np.ndarray:
    """(onset s, duration s, label) runs -> one label per 30-s epoch. Durations of any multiple of
    30 s are expanded (a run of 5 identical epochs is one event in Sleep-EDF and NSRR files)."""
    if not events:
        raise SkdError("no sleep-stage annotations", path)
    end = max(on + du for on, du, _ in events)
    labels = np.full(int(round(end / EPOCH_SECONDS)), -2, dtype=np.int64)
    for onset, duration, label in events:
        first, count = onset / EPOCH_SECONDS, duration / EPOCH_SECONDS
        if abs(first - round(first)) > 1e-6 or abs(count - round(count)) > 1e-6 or round(count) < 1:
            raise SkdError(
                f"stage annotation at {onset:g} s lasting {duration:g} s is not on the 30-s epoch grid", path
            )
        labels[int(round(first)) : int(round(first + count))] = label
    return labels


def read_edf_hypnogram(path: str | Path) -> Hypnogram:
    """Sleep-EDF style EDF+ annotation file (`SC4ssNx-Hypnogram.edf`), also AASM texts (HMC)."""
    import edfio

    path = Path(path)
    if not path.is_file():
        raise SkdError("hypnogram file not found", path)
    check_edf_file(path)
    try:
        edf = edfio.read_edf(path)
        annotations = list(edf.annotations)
    except Exception as exc:
        raise SkdError(
            f"cannot read EDF+ annotations ({exc.__class__.__name__}: {str(exc).splitlines()[0]})", path
        ) from exc
    try:
        start = dt.datetime.combine(edf.startdate, edf.starttime)
    except Exception:  # anonymised start date ('X'): no clock to check against the PSG
        start = None
    events = []
    for ann in annotations:
        text = ann.text.strip()
        if text in EDF_STAGE_LABELS:
            events.append((float(ann.onset), float(ann.duration or 0.0), EDF_STAGE_LABELS[text]))
        elif text.startswith("Sleep stage"):
            raise SkdError(f"unknown stage annotation '{text}' (known: {', '.join(EDF_STAGE_LABELS)})", path)
        # other annotations (lights off, arousals...) are not stages
    return Hypnogram(_events_to_epochs(events, path), start)


def _shhs_label(code_text: str, path: Path) -> int:
    try:
        code = int(code_text.strip())
    except ValueError as exc:
        raise SkdError(f"stage code '{code_text}' is not an integer", path) from exc
    if code not in SHHS_STAGE_CODES:
        raise SkdError(f"unknown sleep stage code {code} (known: {', '.join(map(str, SHHS_STAGE_CODES))})", path)
    return SHHS_STAGE_CODES[code]


def read_shhs_xml(path: str | Path) -> Hypnogram:
    """NSRR (`-nsrr.xml`, root PSGAnnotation) or Compumedics (`-profusion.xml`, root CMPStudyConfig).
    Elements are found by tag, not position (positional `root[4]` breaks on other exports)."""
    path = Path(path)
    if not path.is_file():
        raise SkdError("annotation file not found", path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise SkdError(f"not valid XML ({exc})", path) from exc
    epoch_len = float(root.findtext("EpochLength", str(EPOCH_SECONDS)))
    if epoch_len != EPOCH_SECONDS:
        raise SkdError(f"EpochLength is {epoch_len:g} s; only 30-s scoring is supported", path)
    if root.tag == "CMPStudyConfig":
        stages = root.find("SleepStages")
        if stages is None:
            raise SkdError("Profusion XML without <SleepStages>", path)
        codes = [_shhs_label(s.text or "", path) for s in stages.findall("SleepStage")]
        if not codes:
            raise SkdError("no sleep-stage annotations", path)
        return Hypnogram(np.asarray(codes, dtype=np.int64), None)
    if root.tag == "PSGAnnotation":
        events = []
        for ev in root.iter("ScoredEvent"):
            if (ev.findtext("EventType") or "").strip() != "Stages|Stages":
                continue
            concept = ev.findtext("EventConcept") or ""
            if "|" not in concept:
                raise SkdError(f"stage event concept '{concept}' has no '|code'", path)
            try:
                onset, duration = float(ev.findtext("Start")), float(ev.findtext("Duration"))
            except (TypeError, ValueError) as exc:
                raise SkdError(f"stage event '{concept}' has no numeric Start/Duration", path) from exc
            events.append((onset, duration, _shhs_label(concept.rsplit("|", 1)[1], path)))
        return Hypnogram(_events_to_epochs(events, path), None)
    raise SkdError(f"unknown XML root <{root.tag}> (expected PSGAnnotation or CMPStudyConfig)", path)


def runs(labels) -> list[tuple[int, int, int]]:
    """(first epoch, number of epochs, label) of each run of identical labels: how Sleep-EDF and
    NSRR files store a scoring."""
    out, i = [], 0
    while i < len(labels):
        j = i
        while j + 1 < len(labels) and labels[j + 1] == labels[i]:
            j += 1
        out.append((i, j - i + 1, int(labels[i])))
        i = j + 1
    return out


def write_edf_hypnogram(path: str | Path, labels: np.ndarray, start: dt.datetime | None) -> None:
    """Predicted stages as a Sleep-EDF-style EDF+ annotation-only file (runs merged, like the originals)."""
    import edfio

    anns = [edfio.EdfAnnotation(i * EPOCH_SECONDS, n * EPOCH_SECONDS, STAGE_TEXT[s]) for i, n, s in runs(labels)]
    start = start or dt.datetime(1985, 1, 1)
    edf = edfio.Edf(
        [],
        annotations=anns,
        recording=edfio.Recording(startdate=start.date()),
        starttime=start.time(),
        data_record_duration=None,
    )
    edf.write(path)
