"""Sleep-staging metrics, pooled over every scored epoch of every test recording (the authors'
habit): accuracy, macro-F1 over the five stages (absent stages count as F1 0), Cohen's kappa,
per-stage F1 and the confusion matrix (rows = true stage, columns = predicted). scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score

from .config import STAGES

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


def mean_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) over repeated runs."""
    arr = np.asarray(values, dtype=float)
    return {"mean": round(float(arr.mean()), 4), "std": round(float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, 4),
            "n": int(len(arr)), "values": [round(float(v), 4) for v in arr]}
