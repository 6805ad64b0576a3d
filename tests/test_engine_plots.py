"""Training-curve figures from metrics.jsonl."""

from __future__ import annotations

import json

import pytest

from skdcli.engine.errors import SkdError
from skdcli.engine.plots import plot_training_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_metrics(path, rows, torn_tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + torn_tail, encoding="utf-8")


def train_row(step: int) -> dict:
    return {
        "step": step,
        "split": "train",
        "epoch": step // 10,
        "loss": 5.0 / step,
        "loss/ctc": 4.0 / step,
        "loss/kd": 1.0 / step,
        "weight/alpha": 0.3 + 0.01 * step,
        "lr": 1e-3 * min(1.0, step / 5),
    }


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5000


def test_all_three_figures_and_torn_line(tmp_path):
    rows = [train_row(s) for s in range(1, 41)]
    rows += [
        {"step": s, "split": "eval", "epoch": s // 10, "wer": 1.0 - s / 50, "loss": 2.0 - s / 40}
        for s in (10, 20, 30, 40)
    ]
    metrics = tmp_path / "metrics.jsonl"
    write_metrics(metrics, rows, torn_tail='{"step": 41, "split": "tra')
    out_dir = tmp_path / "plots"

    written = plot_training_curves(metrics, out_dir)

    assert [p.name for p in written] == ["loss.png", "lr_weights.png", "eval.png"]
    for path in written:
        assert path.parent == out_dir
        assert_png(path)
    assert sorted(p.name for p in out_dir.iterdir()) == ["eval.png", "loss.png", "lr_weights.png"]


def test_absent_data_skips_figures(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    write_metrics(metrics, [{"step": s, "split": "train", "loss": 1.0 / s} for s in range(1, 6)])
    written = plot_training_curves(metrics, tmp_path)
    assert [p.name for p in written] == ["loss.png"]
    assert_png(written[0])
    assert not (tmp_path / "eval.png").exists() and not (tmp_path / "lr_weights.png").exists()


def test_resumed_run_and_non_numeric_values(tmp_path):
    # Steps 3-4 are logged twice (resume), and a value is null: neither may break the plot.
    rows = [{"step": s, "split": "train", "loss": 1.0, "lr": 0.1} for s in (1, 2, 3, 4, 3, 4, 5)]
    rows.append({"step": 6, "split": "train", "loss": None, "lr": 0.1, "note": "text"})
    metrics = tmp_path / "metrics.jsonl"
    write_metrics(metrics, rows)
    assert [p.name for p in plot_training_curves(metrics, tmp_path)] == ["loss.png", "lr_weights.png"]


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(SkdError):
        plot_training_curves(tmp_path / "nope.jsonl", tmp_path)
