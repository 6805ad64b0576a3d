"""Synthetic sleep recordings in the real on-disk formats, so the tests exercise the real readers.

Two "datasets" with different label priors (the label bias the paper is about):
- SHHS-like: `polysomnography/edfs/shhs1/shhs1-ID.edf` (EEG C4-A1 as `EEG`, `EEG(sec)` at 125 Hz,
  `EOG(L)` at 50 Hz) + NSRR `-nsrr.xml` or Compumedics `-profusion.xml` scorings; N2/N3-heavy.
- Sleep-EDF-like: `sleep-cassette/SC4ssNE0-PSG.edf` (`EEG Fpz-Cz`, `EEG Pz-Oz` at 100 Hz,
  `Temp rectal` at 1 Hz) + `SC4ssNEC-Hypnogram.edf` EDF+ annotations (R&K texts, merged runs, a
  trailing `Sleep stage ?` past the end of the PSG as in the real files); wake/N1-heavy.
EEG per stage (µV): W alpha 10 Hz + EMG-like broadband, N1 low-amplitude theta, N2 theta + 12-14 Hz
spindles + K-complexes, N3 high-amplitude 0.5-2 Hz delta, REM low-amplitude mixed theta + sawtooth.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from .formats import EPOCH_SECONDS, STAGE_TEXT, runs

# mean run length (epochs) per stage and stage-to-stage transitions: the two datasets' priors differ
RUN_MEANS = {"shhs": [3.0, 1.5, 8.0, 5.0, 4.0], "sleep-edf": [5.0, 3.0, 4.0, 2.5, 5.0]}
TRANSITIONS = np.array(
    [  # from W, N1, N2, N3, REM -> to W, N1, N2, N3, REM
        [0.00, 0.70, 0.20, 0.00, 0.10],
        [0.30, 0.00, 0.60, 0.00, 0.10],
        [0.20, 0.10, 0.00, 0.40, 0.30],
        [0.20, 0.00, 0.80, 0.00, 0.00],
        [0.30, 0.20, 0.50, 0.00, 0.00],
    ]
)


def stage_sequence(
    n_epochs: int, dataset: str, rng: np.random.Generator, wake_before: int = 0, wake_after: int = 0
) -> np.ndarray:
    """A Markov stage sequence with geometric run lengths, padded with lights-on wake."""
    means, seq, stage = RUN_MEANS[dataset], [], 1
    while len(seq) < n_epochs:
        seq += [stage] * int(rng.geometric(1.0 / means[stage]))
        stage = int(rng.choice(5, p=TRANSITIONS[stage]))
    return np.asarray([0] * wake_before + seq[:n_epochs] + [0] * wake_after, dtype=np.int64)


# Montage/scoring differences between the two sets (cross-dataset shift that z-scoring does not
# remove): frontal Fpz-Cz sees weaker alpha and spindles than central C4-A1, more background noise.
STYLE = {
    "shhs": {"alpha": 1.0, "spindle": 1.0, "delta": 1.0, "noise": 6.0},
    "sleep-edf": {"alpha": 0.6, "spindle": 0.6, "delta": 0.8, "noise": 8.0},
}


def stage_features(stage: int, t: np.ndarray, fs: float, rng: np.random.Generator, style: dict) -> np.ndarray:
    """The stage-specific part of one 30-s epoch in µV."""
    tone = lambda f, a: a * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    x = np.zeros_like(t)
    if stage == 0:  # W: alpha + muscle-like broadband
        x += style["alpha"] * tone(rng.uniform(8.5, 11), rng.uniform(8, 22)) + rng.normal(0, 6.0, t.size)
    elif stage == 1:  # N1: low-amplitude theta, some residual alpha
        x += tone(rng.uniform(4, 7), rng.uniform(8, 14)) + style["alpha"] * tone(rng.uniform(8, 10), rng.uniform(0, 6))
    elif stage == 2:  # N2: theta + spindles (~1 s, 12-14 Hz) + a K-complex
        x += tone(rng.uniform(4, 7), rng.uniform(6, 12))
        for _ in range(int(rng.integers(0, 4))):
            c = rng.uniform(1, EPOCH_SECONDS - 1)
            x += (
                style["spindle"] * 22 * np.exp(-(((t - c) / 0.35) ** 2)) * np.sin(2 * np.pi * rng.uniform(11.5, 14) * t)
            )
        if rng.random() < 0.6:
            c = rng.uniform(2, EPOCH_SECONDS - 2)
            x += -60 * np.exp(-(((t - c) / 0.15) ** 2)) + 35 * np.exp(-(((t - c - 0.4) / 0.25) ** 2))
    elif stage == 3:  # N3: high-amplitude delta
        x += style["delta"] * (
            tone(rng.uniform(0.5, 1.2), rng.uniform(35, 80)) + tone(rng.uniform(1.2, 2.0), rng.uniform(15, 35))
        )
    else:  # REM: low-amplitude mixed theta + intermittent sawtooth waves
        x += tone(rng.uniform(4, 7), rng.uniform(6, 12)) + style["alpha"] * tone(rng.uniform(8, 10), rng.uniform(0, 5))
        saw = 2 * ((t * rng.uniform(2, 3)) % 1.0) - 1
        x += rng.uniform(0, 15) * saw * (np.sin(2 * np.pi * 0.1 * t + rng.uniform(0, 6)) > 0.3)
    return x


def stage_eeg(
    stage: int, fs: float, rng: np.random.Generator, dataset: str = "sleep-edf", neighbour: int | None = None
) -> np.ndarray:
    """One 30-s epoch: background + the stage's features, blended with a neighbouring stage's
    features near transitions (the epochs human scorers disagree on)."""
    style = STYLE[dataset]
    n = int(fs * EPOCH_SECONDS)
    t = np.arange(n) / fs
    x = rng.normal(0, style["noise"], n) + np.cumsum(rng.normal(0, 0.5, n))  # white + drifting background
    x -= np.linspace(x[:1].mean(), x[-1:].mean(), n)  # no ramp across the epoch
    x += stage_features(stage, t, fs, rng, style)
    if neighbour is not None and neighbour != stage:
        x += rng.uniform(0.3, 0.8) * stage_features(neighbour, t, fs, rng, style)
    return x


def night_eeg(
    labels: np.ndarray, fs: float, rng: np.random.Generator, gain: float = 1.0, dataset: str = "sleep-edf"
) -> np.ndarray:
    epochs = []
    for i, s in enumerate(labels):
        near = [int(labels[j]) for j in (i - 1, i + 1) if 0 <= j < len(labels) and labels[j] != s]
        epochs.append(stage_eeg(int(s), fs, rng, dataset, near[0] if near and rng.random() < 0.7 else None))
    return gain * np.concatenate(epochs)


def _signal(data: np.ndarray, fs: float, label: str, unit: str = "uV", rng: float = 250.0):
    import edfio

    return edfio.EdfSignal(
        np.clip(data, -rng, rng),
        sampling_frequency=fs,
        label=label,
        physical_dimension=unit,
        physical_range=(-rng, rng),
    )


def _write_edf(path: Path, signals: list, start: dt.datetime) -> None:
    import edfio

    path.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(
        signals,
        recording=edfio.Recording(startdate=start.date()),
        starttime=start.time(),
        data_record_duration=EPOCH_SECONDS,
    ).write(path)


def write_sleep_edf_like(root: str | Path, subjects: int = 2, nights: int = 2, epochs: int = 80, seed: int = 1) -> Path:
    """Sleep-EDF Expanded cassette layout under ROOT/sleep-cassette; returns ROOT."""
    import edfio

    root = Path(root)
    rng = np.random.default_rng(seed)
    for subject in range(subjects):
        for night in range(1, nights + 1):
            labels = stage_sequence(
                epochs, "sleep-edf", rng, wake_before=int(rng.integers(4, 12)), wake_after=int(rng.integers(4, 12))
            )
            start = dt.datetime(1989, 4, 24 + night, 22, int(rng.integers(0, 59)), 0)
            fs = 100.0
            eeg = night_eeg(labels, fs, rng, dataset="sleep-edf")
            n_sec = len(labels) * EPOCH_SECONDS
            name = f"SC4{subject:02d}{night}"
            _write_edf(
                root / "sleep-cassette" / f"{name}E0-PSG.edf",
                [
                    _signal(eeg, fs, "EEG Fpz-Cz", rng=192.0),
                    _signal(0.7 * eeg + rng.normal(0, 5, eeg.size), fs, "EEG Pz-Oz", rng=197.0),
                    _signal(37 + 0.1 * rng.standard_normal(n_sec), 1.0, "Temp rectal", "DegC", 40.0),
                ],
                start,
            )
            # runs merged into one annotation each; the real files run past the PSG with "?"
            anns = [
                edfio.EdfAnnotation(
                    i * EPOCH_SECONDS,
                    n * EPOCH_SECONDS,
                    "Sleep stage 4" if s == 3 and rng.random() < 0.5 else STAGE_TEXT[s],
                )
                for i, n, s in runs(labels)
            ]  # R&K: N3 scored as stage 3 or 4
            anns.append(edfio.EdfAnnotation(n_sec, 10 * EPOCH_SECONDS, "Sleep stage ?"))
            hyp = edfio.Edf(
                [],
                annotations=anns,
                recording=edfio.Recording(startdate=start.date()),
                starttime=start.time(),
                data_record_duration=None,
            )
            hyp.write(root / "sleep-cassette" / f"{name}EC-Hypnogram.edf")
    return root


NSRR_CONCEPTS = {
    0: "Wake|0",
    1: "Stage 1 sleep|1",
    2: "Stage 2 sleep|2",
    3: "Stage 3 sleep|3",
    4: "Stage 4 sleep|4",
    5: "REM sleep|5",
    6: "Movement|6",
    9: "Unscored|9",
}


def nsrr_xml(codes: list[int], duration: float) -> str:
    """NSRR XML with one Stages event per run of identical SHHS codes."""
    events = [
        "<ScoredEvent><EventType /><EventConcept>Recording Start Time</EventConcept><Start>0</Start>"
        f"<Duration>{duration:.1f}</Duration><ClockTime>00.00.00 22.00.00</ClockTime></ScoredEvent>"
    ]
    for i, n, code in runs(codes):
        events.append(
            f"<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>{NSRR_CONCEPTS[code]}"
            f"</EventConcept><Start>{i * 30.0:.1f}</Start><Duration>{n * 30.0:.1f}</Duration>"
            "</ScoredEvent>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<PSGAnnotation><SoftwareVersion>Compumedics'
        "</SoftwareVersion><EpochLength>30</EpochLength><ScoredEvents>"
        + "".join(events)
        + "</ScoredEvents></PSGAnnotation>\n"
    )


def profusion_xml(codes: list[int]) -> str:
    stages = "".join(f"<SleepStage>{c}</SleepStage>" for c in codes)
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<CMPStudyConfig><EpochLength>30</EpochLength>'
        "<StepChannels /><ScoredEventSettings /><ScoredEvents><ScoredEvent><Name>SpO2 desaturation</Name>"
        "<Start>120</Start><Duration>15</Duration><Input>SaO2</Input></ScoredEvent></ScoredEvents>"
        f"<SleepStages>{stages}</SleepStages><Montage /></CMPStudyConfig>\n"
    )


def write_shhs_like(root: str | Path, recordings: int = 5, epochs: int = 100, seed: int = 0) -> Path:
    """SHHS1 NSRR layout under ROOT/polysomnography; even recordings get NSRR XML, odd ones Profusion."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for k in range(recordings):
        labels = stage_sequence(
            epochs, "shhs", rng, wake_before=int(rng.integers(3, 8)), wake_after=int(rng.integers(3, 8))
        )
        fs = 125.0
        rid = f"shhs1-{200001 + k}"
        start = dt.datetime(1985, 1, 1, 22, 0, 0)  # SHHS dates are de-identified to 01.01.85
        c4 = night_eeg(labels, fs, rng, gain=1.3, dataset="shhs")  # a different montage and amplitude than Sleep-EDF
        c3 = 0.9 * c4 + rng.normal(0, 6, c4.size)
        eog = rng.normal(0, 20, len(labels) * EPOCH_SECONDS * 50)
        _write_edf(
            root / "polysomnography" / "edfs" / "shhs1" / f"{rid}.edf",
            [_signal(c3, fs, "EEG(sec)"), _signal(c4, fs, "EEG"), _signal(eog, 50.0, "EOG(L)")],
            start,
        )
        # SHHS scoring: N3 as R&K stage 3 or 4, a few movement (6) / unscored (9) epochs
        codes = [[0, 1, 2, 3, 5][s] for s in labels]
        codes = [4 if c == 3 and rng.random() < 0.4 else c for c in codes]
        for i in rng.choice(len(codes), size=2, replace=False):
            codes[i] = 6 if k % 2 == 0 else 9
        ann = root / "polysomnography"
        if k % 2 == 0:
            path = ann / "annotations-events-nsrr" / "shhs1" / f"{rid}-nsrr.xml"
            text = nsrr_xml(codes, len(labels) * 30.0)
        else:
            path = ann / "annotations-events-profusion" / "shhs1" / f"{rid}-profusion.xml"
            text = profusion_xml(codes)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def write_prepared_like(out: str | Path, nights: int, epochs: int, fs: int = 100, seed: int = 0) -> Path:
    """A prepared dataset written directly (no EDF round trip), in exactly the layout prep writes
    (data.store_recording + data.dataset_summary): gaussian signals in normalised units, SHHS-like
    stage sequences. For measuring memory and throughput at sizes no test fixture reaches (e.g. a
    dataset larger than RAM); nothing here is meant to be learnable beyond the labels' statistics."""
    from ..engine.io import atomic_write_json
    from .data import PREP_FORMAT, dataset_summary, store_recording
    from .normalisation import DEFAULT_NORMALISATION
    from .splits import subject_of

    out = Path(out)
    folder = out / "recordings"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    params = {
        "format": PREP_FORMAT,
        "source": "synthetic-prepared",
        "channel": "EEG",
        "fallbacks": [],
        "fs": fs,
        "trim_minutes": 0.0,
        "normalisation": DEFAULT_NORMALISATION,
    }
    rows = []
    for k in range(nights):
        rid = f"shhs1-{300001 + k}"
        y = stage_sequence(epochs, "shhs", rng)
        store_recording(folder, rid, rng.standard_normal((epochs, fs * EPOCH_SECONDS), dtype=np.float32), y)
        rows.append(
            {
                "id": rid,
                "subject": subject_of(rid),
                "night": None,
                "epochs": epochs,
                "unscored_in_span": 0,
                "first_epoch": 0,
                "counts": np.bincount(y, minlength=5).tolist(),
                "channel": "EEG",
                "fallback_from": None,
                "native_fs": float(fs),
                "notes": [],
                "warnings": [],
            }
        )
    atomic_write_json(
        out / "prep.json",
        {
            **params,
            "raw": None,
            **dataset_summary(params, rows),
            "trim_rule": "none",
            "skipped": 0,
            "warnings": [],
            "manifest": rows,
        },
    )
    return out
