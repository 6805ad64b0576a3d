"""Figures of the sar recipe, drawn on explicit Agg canvases and written atomically:
confusion matrix, the AWA weight curves, and a Grad-CAM overlay per chip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..engine.io import atomic_write, read_jsonl


def _save(fig: Figure, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def plot_confusion(path: str | Path, confusion: list[list[int]], classes: list[str], title: str) -> Path:
    cm = np.asarray(confusion, dtype=float)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    fig = Figure(figsize=(1.2 + 0.9 * k, 1.0 + 0.8 * k), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}\n{rows[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rows[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return _save(fig, Path(path))


def plot_awa(metrics_jsonl: str | Path, path: str | Path) -> Path | None:
    """w_off and w_on per step (the AWA module's reverse-changing pair) with the accuracy they follow."""
    rows = [r for r in read_jsonl(metrics_jsonl, strict=False) if r.get("split") == "train" and "weight/off" in r]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(steps, [r["weight/off"] for r in rows], label="w_off (offline teacher)")
    ax.plot(steps, [r["weight/on"] for r in rows], label="w_on (online teacher)")
    if "awa/accuracy_ema" in rows[0]:
        ax.plot(steps, [r["awa/accuracy_ema"] for r in rows], "--", color="gray", label="train accuracy (EMA)")
    evals = [r for r in read_jsonl(metrics_jsonl, strict=False) if r.get("split") == "eval" and "accuracy" in r]
    if evals:
        ax.plot([r["step"] for r in evals], [r["accuracy"] for r in evals], "o:", color="black", label="val accuracy")
    ax.set_ylim(0, 1)
    ax.set_xlabel("step")
    ax.set_ylabel("weight")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("DRRNet adaptive weight assignment")
    return _save(fig, Path(path))


def plot_gradcam(path: str | Path, chip: np.ndarray, cam: np.ndarray, title: str) -> Path:
    """The chip (grayscale) beside the chip with the Grad-CAM heat map over it."""
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    a, b = fig.subplots(1, 2)
    a.imshow(chip, cmap="gray")
    a.set_title("chip (normalised)", fontsize=9)
    b.imshow(chip, cmap="gray")
    b.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    b.set_title("Grad-CAM", fontsize=9)
    for ax in (a, b):
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, Path(path))
