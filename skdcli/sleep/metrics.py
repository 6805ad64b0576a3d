"""Sleep-staging metrics, pooled over every scored epoch of every test recording (the authors'
habit): accuracy, macro-F1 over the five stages (absent stages count as F1 0), Cohen's kappa,
per-stage F1 and the confusion matrix (rows = true stage, columns = predicted). scikit-learn."""

from __future__ import annotations

from functools import partial

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score

from ..engine.compare import mean_std as engine_mean_std
from .config import STAGES

# repeated runs (seeds, folds) summarised at the reports' precision
mean_std = partial(engine_mean_std, digits=4)

LABELS = list(range(len(STAGES)))


def sleep_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Over the scored epochs: positions where y_true is negative (unscored, kept as context) are left out."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    y_true, y_pred = y_true[y_true >= 0], y_pred[y_true >= 0]
    per_class = f1_score(y_true, y_pred, labels=LABELS, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(np.mean(per_class)),
        "kappa": float(cohen_kappa_score(y_true, y_pred, labels=LABELS)),
        "per_class_f1": {s: round(float(f), 4) for s, f in zip(STAGES, per_class)},
        "confusion": confusion_matrix(y_true, y_pred, labels=LABELS).tolist(),
        "epochs": int(len(y_true)),
    }


def priors(y: np.ndarray) -> dict[str, float]:
    y = np.asarray(y)
    counts = np.bincount(y[y >= 0], minlength=len(STAGES))
    return {s: round(float(c / max(counts.sum(), 1)), 4) for s, c in zip(STAGES, counts)}


def metrics_from_confusion(confusion) -> dict:
    """accuracy, macro-F1 (five stages, absent ones count 0), Cohen's kappa and per-stage F1 of a
    confusion matrix (rows true, columns predicted): how folds are pooled without their predictions."""
    c = np.asarray(confusion, dtype=float)
    n = c.sum()
    tp, true, pred = np.diag(c), c.sum(1), c.sum(0)
    denominator = true + pred
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    p_o, p_e = tp.sum() / n, float((true * pred).sum()) / n**2
    return {
        "accuracy": float(p_o),
        "macro_f1": float(f1.mean()),
        "kappa": float((p_o - p_e) / (1 - p_e)) if p_e < 1 else 0.0,
        "per_class_f1": {s: round(float(f), 4) for s, f in zip(STAGES, f1)},
        "confusion": c.astype(int).tolist(),
        "epochs": int(n),
    }


def cross_validation_summary(folds: list[dict]) -> dict:
    """Per-fold rows, mean ± sample std over folds, and the metrics of all folds' epochs pooled
    (the DeepSleepNet lineage reports the pooled figures; SeriesSleepNet prints both)."""
    rows = [
        {
            "fold": k,
            "subjects": f.get("subjects"),
            "recordings": f["recordings"],
            "epochs": f["epochs"],
            **{m: round(float(f[m]), 4) for m in ("accuracy", "macro_f1", "kappa")},
        }
        for k, f in enumerate(folds)
    ]
    pooled = metrics_from_confusion(np.sum([f["confusion"] for f in folds], axis=0))
    return {
        "folds": len(folds),
        "per_fold": rows,
        "std": "sample (ddof=1)",
        **{m: mean_std([f[m] for f in folds]) for m in ("accuracy", "macro_f1", "kappa")},
        "per_class_f1": {s: mean_std([f["per_class_f1"][s] for f in folds]) for s in STAGES},
        "pooled": pooled,
    }


def sleep_statistics(hypnogram, epoch_seconds: float = 30.0) -> dict:
    """The statistics a sleep lab reads first, from one label per epoch (0 W, 1 N1, 2 N2, 3 N3,
    4 REM, negative = unscored / movement), over the whole hypnogram taken as time in bed (AASM
    definitions, as yasa computes them; tests/test_sleep_units.py checks every value against yasa):
    TIB; SPT = first to last sleep epoch; TST = sleep epochs (N1-REM) in SPT; SE = TST / TIB;
    SME = TST / SPT; SOL = TIB start to the first sleep epoch; WASO = wake in SPT; REM latency from
    sleep onset (AASM; yasa's Lat_REM counts from the start: Lat_REM - SOL); minutes per stage;
    percent of TST for N1-REM and of TIB for W. Unscored epochs count in TIB and SPT only.
    Undefined values (no sleep, no REM) are None."""
    h = np.asarray(hypnogram)
    minutes = epoch_seconds / 60
    sleep = np.flatnonzero((h >= 1) & (h <= 4))
    rem = np.flatnonzero(h == 4)
    span = h[sleep[0] : sleep[-1] + 1] if len(sleep) else h[:0]
    tib, spt, tst = len(h) * minutes, len(span) * minutes, int(((span >= 1) & (span <= 4)).sum()) * minutes
    per_stage = {s: int((h == k).sum()) * minutes for k, s in enumerate(STAGES)}
    r = lambda v: None if v is None else round(float(v), 4)
    return {
        "tib_min": r(tib),
        "spt_min": r(spt),
        "tst_min": r(tst),
        "sleep_efficiency_pct": r(100 * tst / tib) if tib else None,
        "sleep_maintenance_efficiency_pct": r(100 * tst / spt) if spt else None,
        "sleep_onset_latency_min": r(sleep[0] * minutes) if len(sleep) else None,
        "waso_min": r(int((span == 0).sum()) * minutes) if len(sleep) else None,
        "rem_latency_min": r((rem[0] - sleep[0]) * minutes) if len(rem) else None,
        "unscored_min": r(int((h < 0).sum()) * minutes),
        "minutes": {s: r(v) for s, v in per_stage.items()},
        "percent": {
            s: (r(100 * v / tib) if s == "W" else (r(100 * v / tst) if tst else None)) if tib else None
            for s, v in per_stage.items()
        },
    }
