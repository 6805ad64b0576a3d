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


def metrics_from_confusion(confusion) -> dict:
    """accuracy, macro-F1 (five stages, absent ones count 0), Cohen's kappa and per-stage F1 of a
    confusion matrix (rows true, columns predicted): how folds are pooled without their predictions."""
    c = np.asarray(confusion, dtype=float)
    n = c.sum()
    tp, true, pred = np.diag(c), c.sum(1), c.sum(0)
    denominator = true + pred
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    p_o, p_e = tp.sum() / n, float((true * pred).sum()) / n ** 2
    return {"accuracy": float(p_o), "macro_f1": float(f1.mean()),
            "kappa": float((p_o - p_e) / (1 - p_e)) if p_e < 1 else 0.0,
            "per_class_f1": {s: round(float(f), 4) for s, f in zip(STAGES, f1)},
            "confusion": c.astype(int).tolist(), "epochs": int(n)}


def cross_validation_summary(folds: list[dict]) -> dict:
    """Per-fold rows, mean ± sample std over folds, and the metrics of all folds' epochs pooled
    (the DeepSleepNet lineage reports the pooled figures; SeriesSleepNet prints both)."""
    rows = [{"fold": k, "subjects": f.get("subjects"), "recordings": f["recordings"], "epochs": f["epochs"],
             **{m: round(float(f[m]), 4) for m in ("accuracy", "macro_f1", "kappa")}} for k, f in enumerate(folds)]
    pooled = metrics_from_confusion(np.sum([f["confusion"] for f in folds], axis=0))
    return {"folds": len(folds), "per_fold": rows, "std": "sample (ddof=1)",
            **{m: mean_std([f[m] for f in folds]) for m in ("accuracy", "macro_f1", "kappa")},
            "per_class_f1": {s: mean_std([f["per_class_f1"][s] for f in folds]) for s in STAGES},
            "pooled": pooled}
