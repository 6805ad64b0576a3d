"""The run directory: layout, provenance, and atomic checkpoints.

    run_dir/
      config.yaml        resolved config (every key, defaults included)
      provenance.json    skd/torch/python versions, git commit, seed, command line, data fingerprint
      metrics.jsonl      one JSON line per logged train step or eval
      checkpoints/       step_XXXXXXXX/{model.safetensors, state.pt}, latest.json, best/
      train_summary.json written last: marks a finished training run
      eval.json  export/  plots/

Weights are safetensors; the rest of the trainer state (optimizer, scheduler, RNG, data position)
is a ``torch.save`` of tensors and plain containers, so it loads with ``weights_only=True``.
A checkpoint is written into a temp directory and renamed into place, and ``latest.json`` is
replaced atomically after it: a kill at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from .. import __version__
from .errors import SkdError
from .invocation import INVOCATION
from .io import atomic_write, atomic_write_json, atomic_write_text, read_json

FINISHED_MARKER = "train_summary.json"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- layout -------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def provenance(self) -> Path:
        return self.path / "provenance.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best"

    @property
    def summary(self) -> Path:
        return self.path / FINISHED_MARKER

    @property
    def eval_json(self) -> Path:
        return self.path / "eval.json"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    def clear_outputs(self) -> None:
        """--overwrite: remove what a run wrote here and nothing else (`run`'s data/ survives)."""
        for p in (
            self.config,
            self.provenance,
            self.metrics,
            self.checkpoints,
            self.summary,
            self.eval_json,
            self.export_dir,
            self.plots,
        ):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def is_finished(self) -> bool:
        return self.summary.is_file()

    def require_trained(self) -> None:
        """For eval/export: the directory must hold a run with weights."""
        if not self.path.is_dir():
            raise SkdError("run directory not found (train first with `train --run-dir`)", self.path)
        if not self.config.is_file():
            raise SkdError("not a skd run directory (no config.yaml)", self.path)
        if self.weights_for_eval() is None:
            raise SkdError("run has no checkpoint yet (train it, or resume it with --resume)", self.path)

    def weights_for_eval(self) -> Path | None:
        """Best checkpoint if there is one, else the latest."""
        best = self.best / "model.safetensors"
        if best.is_file():
            return best
        latest = self.latest_checkpoint()
        return None if latest is None else latest / "model.safetensors"

    # -- checkpoints ----------------------------------------------------------------------------
    def latest_checkpoint(self) -> Path | None:
        pointer = self.checkpoints / "latest.json"
        if pointer.is_file():
            cand = self.checkpoints / read_json(pointer)["dir"]
            if (cand / "model.safetensors").is_file() and (cand / "state.pt").is_file():
                return cand
        # Pointer missing (killed between rename and pointer update): newest complete step dir.
        steps = sorted(p for p in self.checkpoints.glob("step_*") if (p / "state.pt").is_file())
        return steps[-1] if steps else None

    def save_checkpoint(self, step: int, model: torch.nn.Module, state: dict, keep: int) -> Path:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        name = f"step_{step:08d}"
        final = self.checkpoints / name
        tmp = self.checkpoints / f".tmp-{name}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(state, tmp / "state.pt")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # re-saving a step after resume: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_json(self.checkpoints / "latest.json", {"dir": name, "step": step})
        steps = sorted(self.checkpoints.glob("step_*"))
        for old in steps[: max(0, len(steps) - keep)]:
            shutil.rmtree(old)
        return final

    def save_best(self, model: torch.nn.Module, info: dict) -> None:
        self.best.mkdir(parents=True, exist_ok=True)
        atomic_write(self.best / "model.safetensors", lambda p: save_model(model, str(p)))
        atomic_write_json(self.best / "best.json", info)

    @staticmethod
    def load_state(ckpt_dir: Path) -> dict:
        try:
            return torch.load(ckpt_dir / "state.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt file is a user-facing problem, not a crash
            raise SkdError(
                f"cannot read trainer state ({exc.__class__.__name__}: {exc})", ckpt_dir / "state.pt"
            ) from exc

    @staticmethod
    def load_weights(model: torch.nn.Module, weights: Path, strict: bool = True) -> None:
        try:
            load_model(model, str(weights), strict=strict, device="cpu")
        except Exception as exc:
            raise SkdError(f"cannot load weights ({exc.__class__.__name__}: {exc})", weights) from exc

    # -- provenance -----------------------------------------------------------------------------
    def write_config(self, yaml_text: str) -> None:
        atomic_write_text(self.config, yaml_text)

    def write_provenance(self, seed: int, data_fingerprint: str | None, extra: dict | None = None) -> None:
        atomic_write_json(self.provenance, provenance(seed, data_fingerprint, extra))


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def provenance(seed: int, data_fingerprint: str | None, extra: dict | None = None) -> dict:
    info: dict[str, Any] = {
        "skd_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "seed": seed,
        "command_line": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "command": INVOCATION.get("command"),
        "options": INVOCATION.get("options"),
        "data_fingerprint": data_fingerprint,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }
    if extra:
        info.update(extra)
    return info


def truncate_metrics_after(path: Path, step: int) -> None:
    """On resume, drop log lines written after the checkpoint we resume from (and a torn line)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", 0) <= step:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))
