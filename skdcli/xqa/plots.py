"""Figures of the xqa recipe: the G-XLT heatmap (question language x context language, as the
paper's ``src/figures/heatmap.py``) and the mAP@k coefficient curve with generation boundaries
(``src/figures/curves.py``). Agg canvas, written atomically."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..engine.io import atomic_write, read_jsonl


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    return path


def heatmap(result: dict, path: str | Path, title: str, metric: str = "f1") -> Path:
    """F1 (or EM) per cell: rows = question language, columns = context language."""
    q_langs, c_langs, matrix = result["question_languages"], result["context_languages"], result["matrix"]
    values = [[matrix[q].get(c, {}).get(metric, float("nan")) for c in c_langs] for q in q_langs]
    fig = Figure(figsize=(1.0 + 0.7 * len(c_langs), 0.8 + 0.55 * len(q_langs)))
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(c_langs)), c_langs)
    ax.set_yticks(range(len(q_langs)), q_langs)
    ax.set_xlabel("context language")
    ax.set_ylabel("question language")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8, color="white" if v < 60 else "black")
    fig.colorbar(im, ax=ax, label=metric.upper())
    ax.set_title(title, fontsize=9)
    return _save(fig, Path(path))


def coefficient_curve(
    metrics_path: str | Path, path: str | Path, steps_per_epoch: int | None, title: str
) -> Path | None:
    """The per-step mAP@k coefficient (the authors' diagnostic), generation boundaries dashed."""
    rows = [r for r in read_jsonl(metrics_path, strict=False) if r.get("split") == "train" and "map_at_k" in r]
    if not rows:
        return None
    by_step = {r["step"]: r["map_at_k"] for r in rows}
    steps = sorted(by_step)
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot()
    ax.plot(steps, [by_step[s] for s in steps], lw=0.8)
    if steps_per_epoch:
        for b in range(steps_per_epoch, steps[-1], steps_per_epoch):
            ax.axvline(b, ls="--", color="grey", lw=0.8)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("step")
    ax.set_ylabel("mAP@k coefficient")
    ax.set_title(title, fontsize=9)
    return _save(fig, Path(path))
