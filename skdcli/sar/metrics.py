"""Classification metrics: top-1 accuracy (the SAR ship papers' headline figure), macro-F1, per-class
accuracy (recall), the confusion matrix (rows = true class, columns = predicted); scikit-learn."""

from __future__ import annotations

from functools import partial

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

from ..engine.compare import mean_std as engine_mean_std

# repeated runs (seeds, TTA passes) summarised at the reports' precision
mean_std = partial(engine_mean_std, digits=4)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    labels = list(range(len(classes)))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    per_class = cm.diagonal() / np.maximum(cm.sum(axis=1), 1)
    return {
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class_accuracy": {c: round(float(a), 4) for c, a in zip(classes, per_class)},
        "confusion": cm.tolist(),
        "chips": int(len(y_true)),
    }
