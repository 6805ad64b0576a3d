"""The paper's metrics at both levels: accuracy, weighted F1 and one-vs-rest ROC-AUC (scikit-learn)."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

from ..engine.compare import mean_std as engine_mean_std
from .config import NUM_CLASSES


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """accuracy, weighted F1 (sklearn average='weighted'), macro one-vs-rest ROC-AUC over the classes
    present in ``y_true`` (NaN when fewer than two are), confusion matrix (rows = truth)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = probs.argmax(1)
    present = np.unique(y_true)
    auc = float("nan")
    if len(present) >= 2:
        if len(present) == NUM_CLASSES:
            auc = float(roc_auc_score(y_true, probs, multi_class="ovr", labels=list(range(NUM_CLASSES))))
        else:  # one-vs-rest per present class, averaged (sklearn's ovr needs every class present)
            auc = float(np.mean([roc_auc_score(y_true == c, probs[:, c]) for c in present]))
    return {
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "weighted_f1": float(
            f1_score(y_true, y_pred, average="weighted", labels=list(range(NUM_CLASSES)), zero_division=0)
        ),
        "auc": auc,
        "n": int(len(y_true)),
        "confusion": confusion_matrix(y_true, y_pred, labels=list(range(NUM_CLASSES))).tolist(),
    }


def mean_std(values: list[float | None]) -> dict:
    """The engine's summary (4 digits) over the cells where a metric is defined: an AUC is None / NaN on a reported
    fold that lacks a class, and such a cell is left out (n says how many count), not allowed to blank the row."""
    defined = [v for v in values if v is not None and not math.isnan(v)]
    if not defined:
        return {"mean": math.nan, "std": math.nan, "n": 0, "values": []}
    return engine_mean_std(defined, digits=4)
