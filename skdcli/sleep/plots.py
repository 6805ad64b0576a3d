"""Hypnogram plot: predicted (and true, when a scoring exists) stages over the night."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine.io import atomic_write
from .config import STAGES

# clinical display order, top to bottom: W, REM, N1, N2, N3
ROW = {0: 4, 4: 3, 1: 2, 2: 1, 3: 0}


def plot_hypnogram(path: str | Path, predicted: np.ndarray, true: np.ndarray | None = None, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = np.arange(len(predicted) + 1) * 30 / 3600
    fig, ax = plt.subplots(figsize=(10, 3))
    step = lambda y: np.append([ROW[int(v)] for v in y], ROW[int(y[-1])])
    if true is not None:
        scored = np.where(true >= 0, true, predicted)
        ax.step(hours, step(scored), where="post", color="0.6", lw=2.5, label="true")
    ax.step(hours, step(predicted), where="post", color="tab:blue", lw=1, label="predicted")
    ax.set_yticks(range(5), [STAGES[k] for k in sorted(ROW, key=ROW.get)])
    ax.set_xlabel("hours from recording start")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return Path(path)
