"""Posterior-over-time figure for a teacher and a student CTC head (spike-timing inspection)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..engine.io import atomic_write
from .metrics import ArrayLike, _to_numpy, spike_frames

# Smallest peak posterior for a non-blank token to get its own line and legend entry.
_MIN_PEAK = 0.05


def _posteriors(log_probs: ArrayLike) -> np.ndarray:
    scores = _to_numpy(log_probs)
    if scores.ndim != 2:
        raise ValueError(f"log_probs must have shape (T, V), got {tuple(scores.shape)}")
    # Softmax, so raw logits and log-probabilities both give probabilities.
    scores = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    return probs / probs.sum(axis=-1, keepdims=True)


def _display(symbol: str) -> str:
    # A space token would be an invisible label.
    return "␣" if symbol.strip() == "" else symbol


def _panel(
    ax: Axes,
    probs: np.ndarray,
    tokens: list[int],
    colours: dict[int, object],
    symbols: list[str],
    blank: int,
    name: str,
) -> None:
    frames = np.arange(probs.shape[0])
    ax.plot(
        frames, probs[:, blank], linestyle="--", color="grey", linewidth=1, label=f"{_display(symbols[blank])} (blank)"
    )
    for token in tokens:
        ax.plot(frames, probs[:, token], color=colours[token], linewidth=1.2, label=_display(symbols[token]))
    # Name every spike at its peak, so the transcript can be read off the panel. spike_frames
    # only compares scores, so probabilities serve as well as log-probabilities.
    for frame, token in spike_frames(probs, blank=blank, position="peak"):
        ax.annotate(
            _display(symbols[token]),
            (frame, probs[frame, token]),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            color=colours.get(token, "black"),
        )
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(f"{name}\nposterior")
    ax.grid(True, alpha=0.3)


def plot_posteriors(
    teacher_log_probs: ArrayLike,
    student_log_probs: ArrayLike,
    out_png: str | Path,
    *,
    symbols: list[str],
    title: str,
    blank: int = 0,
    max_tokens: int = 8,
) -> Path:
    """Two stacked panels, teacher above student, of per-token posteriors over frames.

    The blank is drawn dashed grey. The ``max_tokens`` non-blank tokens with the highest peak
    posterior in either head (at least 0.05) get a coloured line and a legend entry, in the same
    colour in both panels; every spike is labelled with its symbol. The PNG is written atomically.

    Args:
        teacher_log_probs, student_log_probs: (T, V) log-probabilities or logits of one
            utterance, valid frames only.
        symbols: display string per token id (``len(symbols) >= V``).
    """
    teacher = _posteriors(teacher_log_probs)
    student = _posteriors(student_log_probs)
    if teacher.shape != student.shape:
        raise ValueError(f"teacher {teacher.shape} and student {student.shape} shapes differ")
    if len(symbols) < teacher.shape[1]:
        raise ValueError(f"{len(symbols)} symbols for a vocabulary of {teacher.shape[1]}")

    peak = np.maximum(teacher.max(axis=0, initial=0.0), student.max(axis=0, initial=0.0))
    peak[blank] = -1.0
    # Tokens that never rise above the noise floor would only clutter the legend.
    tokens = [int(k) for k in np.argsort(-peak, kind="stable")[:max_tokens] if peak[k] >= _MIN_PEAK]
    colours = {token: f"C{i % 10}" for i, token in enumerate(tokens)}

    # Widen with the utterance so spikes stay apart, within what a viewer can open.
    fig = Figure(figsize=(min(max(8.0, teacher.shape[0] / 12), 24.0), 6), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    _panel(top, teacher, tokens, colours, symbols, blank, "teacher")
    _panel(bottom, student, tokens, colours, symbols, blank, "student")
    bottom.set_xlabel("frame")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.suptitle(title)
    # The temp file has a ".tmp" suffix, so the format must be named explicitly.
    return atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
