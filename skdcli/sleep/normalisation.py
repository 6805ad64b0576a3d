"""The one amplitude normalisation of the sleep recipe, shared by prep (training and eval data) and
`score` (a new night, through the export alone).

Every rule is computed from the recording's signal alone, over every 30-s epoch of the recording
as read (after resampling, BEFORE wake trimming, which needs the scoring). So `score` on a night
feeds the model exactly the values prep stored for the same epochs; a rule that needs the labels
(e.g. statistics of the trimmed night) could not be reproduced at inference time. The rule is
recorded in prep.json, carried into the run summary and the export manifest, and eval refuses a
dataset prepared with another rule than the training data.

Rules (``prep --normalisation``; ours, see recipes/sleep/README.md):
- ``robust`` (default): (x - median) / (IQR / 1.349) of the whole recording. IQR/1.349 is the
  standard deviation of a gaussian; median and IQR resist movement bursts and clipped stretches.
- ``zscore``: (x - mean) / std of the whole recording.
- ``epoch``: each 30-s epoch z-scored on its own (label-free and independent of how much wake a
  recording holds, but it removes the amplitude differences between stages, e.g. N3's delta).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine.errors import SkdError

NORMALISATIONS = {
    "robust": "per recording: (x - median) / (IQR / 1.349) over every epoch of the recording as read, before trimming",
    "zscore": "per recording: (x - mean) / std over every epoch of the recording as read, before trimming",
    "epoch": "per 30-s epoch: (x - mean) / std of that epoch",
}
DEFAULT_NORMALISATION = "robust"
MIN_SCALE_UV = 1e-3  # a recording (or epoch) flatter than this carries no EEG


def check_rule(rule: str) -> str:
    if rule not in NORMALISATIONS:
        raise SkdError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got '{rule}'")
    return rule


def describe(rule: str) -> dict:
    """What prep.json, the run summary and the export manifest record."""
    return {"rule": check_rule(rule), "description": NORMALISATIONS[rule], "units_before": "uV"}


def normalise_recording(x: np.ndarray, rule: str, path: str | Path | None = None) -> tuple[np.ndarray, dict]:
    """(n_epochs, samples) µV -> float32 normalised by ``rule``, and the statistics used."""
    check_rule(rule)
    x = np.asarray(x, dtype=np.float64)
    if rule == "epoch":
        center, scale = x.mean(axis=1, keepdims=True), x.std(axis=1, keepdims=True)
        flat = int((scale[:, 0] < MIN_SCALE_UV).sum())
        out = (x - center) / np.maximum(scale, MIN_SCALE_UV)  # a flat epoch stays 0 (= the mean)
        return out.astype(np.float32), {"flat_epochs": flat}
    if rule == "robust":
        q25, center, q75 = np.percentile(x, [25, 50, 75])
        scale = (q75 - q25) / 1.349
    else:
        center, scale = x.mean(), x.std()
    if not scale >= MIN_SCALE_UV:
        raise SkdError(f"the channel is flat (scale {scale:.3g} uV over the recording): nothing to normalise", path)
    return ((x - center) / scale).astype(np.float32), {
        "center_uv": round(float(center), 4),
        "scale_uv": round(float(scale), 4),
    }
