"""Self-contained export: a ``torch.export`` program (.pt2), inference weights as safetensors,
and a manifest with everything needed to run it (recipe-supplied: tokenizer, feature config...).

Export checks parity: the saved program is loaded back and run on a sample input next to the
eager module; the max abs difference is recorded in ``manifest.json``. The directory is built
under a temp name and renamed into place, so a kill never leaves a half export.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_model

from .. import __version__
from .errors import SkdError
from .io import atomic_write_json, file_sha256, read_json, staged_dir

PROGRAM = "model.pt2"
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"


def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flatten(v)]
    return []


def export_program(
    module: torch.nn.Module,
    example_inputs: tuple,
    out_dir: str | Path,
    *,
    dynamic_shapes: Any = None,
    manifest: dict | None = None,
    write_extra: Callable[[Path], dict] | None = None,
    overwrite: bool = False,
    parity_inputs: list[tuple] | None = None,
) -> dict:
    """Export ``module`` and return the manifest.

    ``write_extra(tmp_dir)`` lets the recipe add its files (tokenizer, ...) and returns entries
    merged into the manifest. ``parity_inputs`` (default: ``[example_inputs]``) should differ in
    shape from the example (batch of 1, other lengths) so the dynamic dimensions are exercised.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise SkdError("already holds an export; pass --overwrite to replace it", out_dir)
    module = module.eval().cpu()
    with staged_dir(out_dir) as tmp:
        with torch.no_grad():
            try:
                program = torch.export.export(module, example_inputs, dynamic_shapes=dynamic_shapes, strict=False)
            except Exception as exc:  # an export failure is a model limitation worth one clear line
                raise SkdError(
                    f"torch.export failed for {type(module).__name__}: {exc.__class__.__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}"
                ) from exc
            torch.export.save(program, str(tmp / PROGRAM))
            save_model(module, str(tmp / WEIGHTS))
            reloaded = _load_program(tmp / PROGRAM)
            checks = parity_inputs or [example_inputs]
            diff = 0.0
            for inputs in checks:
                eager, exported = _flatten(module(*inputs)), _flatten(reloaded(*inputs))
                diff = max(
                    [diff]
                    + [
                        float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
                        for a, b in zip(eager, exported)
                    ]
                )
        extra = write_extra(tmp) if write_extra else {}
        info = {
            "format": "torch.export",
            "skd_version": __version__,
            "torch": torch.__version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "program": PROGRAM,
            "weights": WEIGHTS,
            **(manifest or {}),
            **extra,
            "parity": {
                "max_abs_diff": diff,
                "input_shapes": [[list(t.shape) for t in inp if isinstance(t, torch.Tensor)] for inp in checks],
            },
        }
        info["files"] = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        atomic_write_json(tmp / MANIFEST, info)
    return info


def _load_program(path: Path) -> torch.nn.Module:
    with warnings.catch_warnings():
        # torch.export.load reads weights with torch.frombuffer and warns about read-only buffers
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        return torch.export.load(str(path)).module()


def load_exported(path: str | Path, task: str | None = None) -> tuple[torch.nn.Module, dict, Path]:
    """Load an export directory (or its manifest / .pt2 file): (callable module, manifest, dir).
    With ``task``, an export of another task is refused with one line."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    manifest_path = folder / MANIFEST
    if not path.exists():
        raise SkdError("exported model not found", path)
    if not manifest_path.is_file():
        raise SkdError("not a skd export (no manifest.json beside it)", folder)
    manifest = read_json(manifest_path)
    if task is not None and manifest.get("task") != task:
        raise SkdError(f"not a {task} export (task={manifest.get('task')})", folder)
    program_path = folder / manifest.get("program", PROGRAM)
    try:
        module = _load_program(program_path)
    except Exception as exc:
        raise SkdError(f"cannot load exported program ({exc.__class__.__name__})", program_path) from exc
    return module, manifest, folder
