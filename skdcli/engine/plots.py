"""Training-curve figures from a run's ``metrics.jsonl``; generic across recipes.

Lines are JSON objects with ``step`` and ``split``. ``train`` lines carry losses (keys starting
with ``loss``), ``lr`` and weights (``weight/...``); ``eval`` lines carry metrics. Figures are
drawn on an explicit Agg canvas (no display, no global pyplot state) and written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .io import atomic_write, read_jsonl

# Keys on eval lines that are bookkeeping, not metrics.
_NOT_METRICS = {"step", "split", "epoch", "time", "elapsed_s", "wall_time"}

Series = dict[str, tuple[list[float], list[float]]]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _collect(rows: list[dict], split: str, want: Callable[[str], bool]) -> Series:
    """Per key, (steps, values) for rows of ``split``; a later line for the same step wins."""
    by_key: dict[str, dict[float, float]] = {}
    for row in rows:
        if row.get("split") != split or not _is_number(row.get("step")):
            continue
        for key, value in row.items():
            if want(key) and _is_number(value):
                # A resumed run re-logs steps it already logged; keep the newest value so the
                # curve does not zig-zag back in time.
                by_key.setdefault(key, {})[row["step"]] = float(value)
    return {key: (sorted(points), [points[s] for s in sorted(points)]) for key, points in sorted(by_key.items())}


def _draw(ax: Axes, series: Series, ylabel: str, log_if_positive: bool) -> None:
    for key, (steps, values) in series.items():
        ax.plot(steps, values, label=key, marker="." if len(steps) < 30 else None)
    finite = [v for _, values in series.values() for v in values if math.isfinite(v)]
    # Losses and learning rates span decades; a log axis shows the tail, but only works > 0.
    if log_if_positive and finite and min(finite) > 0 and max(finite) / min(finite) > 10:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def _figure(panels: list[tuple[Series, str, bool]], title: str, path: Path) -> Path:
    fig = Figure(figsize=(8, 3.2 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (series, ylabel, log_if_positive) in zip(axes, panels):
        _draw(ax, series, ylabel, log_if_positive)
    axes[-1].set_xlabel("step")
    fig.suptitle(title)
    # The temp file has a ".tmp" suffix, so the format must be named explicitly.
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def plot_training_curves(metrics_jsonl_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``loss.png``, ``lr_weights.png`` and ``eval.png`` into ``out_dir``.

    A figure whose data is absent from the log is skipped. A torn last line (the run was
    killed mid-write) is ignored.

    Returns:
        The paths written, in the order above.
    """
    rows = read_jsonl(metrics_jsonl_path, strict=False)
    out_dir = Path(out_dir)
    written: list[Path] = []

    losses = _collect(rows, "train", lambda k: k.startswith("loss"))
    if losses:
        written.append(_figure([(losses, "loss", True)], "training losses", out_dir / "loss.png"))

    # lr and weights live on different scales, so each gets its own panel.
    lr = _collect(rows, "train", lambda k: k == "lr" or k.startswith("lr/"))
    weights = _collect(rows, "train", lambda k: k.startswith("weight/"))
    panels = [(s, label, log) for s, label, log in ((lr, "learning rate", True), (weights, "weight", False)) if s]
    if panels:
        written.append(_figure(panels, "learning rate and loss weights", out_dir / "lr_weights.png"))

    # Metrics may differ in scale (WER vs loss), so one panel per metric.
    metrics = _collect(rows, "eval", lambda k: k not in _NOT_METRICS)
    if metrics:
        panels = [({key: series}, key, False) for key, series in metrics.items()]
        written.append(_figure(panels, "evaluation", out_dir / "eval.png"))
    return written
