"""`score` figures: the frame-level attention weights beta_t, and the teacher's last-layer self-attention
overlaid on the highest-weighted frames (the paper's "classification reasoning")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..engine.io import atomic_write


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def plot_frame_weights(
    path: Path,
    beta: np.ndarray,
    frame_idx: np.ndarray,
    predicted: str,
    probs: np.ndarray,
    classes: list[str],
    title: str,
    uniform: bool = False,
) -> None:
    fig = Figure(figsize=(7, 3.2))
    ax, ax_p = fig.add_gridspec(1, 2, width_ratios=[3, 1]).subplots()
    ax.bar(np.arange(len(beta)), beta, color="tab:blue")
    ax.set_xticks(np.arange(len(beta)), [str(int(i)) for i in frame_idx], fontsize=7)
    ax.set_xlabel("sampled frame (index after fps resampling)")
    ax.set_ylabel("frame weight beta_t")
    ax.set_title(
        f"{title}: {predicted}" + (" (aggregator without frame attention: uniform)" if uniform else ""), fontsize=9
    )
    ax.axhline(1.0 / len(beta), color="gray", lw=0.8, ls="--")
    ax_p.barh(np.arange(len(classes)), probs, color=["tab:green", "tab:orange", "tab:red"][: len(classes)])
    ax_p.set_yticks(np.arange(len(classes)), classes, fontsize=8)
    ax_p.set_xlim(0, 1)
    ax_p.set_xlabel("probability")
    _save(fig, path)


def _upsample(a: np.ndarray, size: int) -> np.ndarray:
    """Nearest-patch upsampling of an (h, w) map to (size, size)."""
    reps = size // a.shape[0]
    up = np.kron(a, np.ones((reps, reps)))
    return np.pad(up, ((0, size - up.shape[0]), (0, size - up.shape[1])), mode="edge")


def plot_attention_overlay(
    path: Path,
    frames: np.ndarray,
    attn: np.ndarray,
    top: np.ndarray,
    beta: np.ndarray,
    title: str,
    frame_idx: np.ndarray | None = None,
) -> None:
    """For each chosen frame: the frame, and the [CLS]->patch attention of the last block (mean over heads,
    normalised to [0, 1]) overlaid as a heat map."""
    n = len(top)
    fig = Figure(figsize=(2.6 * n, 5.2))
    axes = fig.subplots(2, n, squeeze=False)
    for col, t in enumerate(top):
        frame = frames[t].astype(np.float32) / 255.0
        a = attn[t].mean(0)
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-8)
        heat = _upsample(a, frame.shape[0])
        axes[0, col].imshow(frame, cmap="gray", vmin=0, vmax=1)
        shown = int(frame_idx[t]) if frame_idx is not None else int(t)
        axes[0, col].set_title(f"frame {shown}: beta {beta[t]:.3f}", fontsize=8)
        axes[1, col].imshow(frame, cmap="gray", vmin=0, vmax=1)
        axes[1, col].imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[1, col].set_title("last-layer [CLS] attention", fontsize=8)
        for ax in axes[:, col]:
            ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
