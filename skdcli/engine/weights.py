"""Reading a local weights file a user hands us (pretrained backbones, init checkpoints) without unpickling
arbitrary objects: safetensors, or ``torch.load(weights_only=True)``, and nothing else."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .errors import SkdError


def read_state_dict(
    path: str | Path, unwrap: tuple[str, ...] = (), what: str = "weights", missing: str = "weights file not found"
) -> dict[str, Tensor]:
    """The tensors of a local ``.safetensors`` file or torch state dict. ``unwrap`` names the entries a
    checkpoint may nest its state dict under (e.g. ``state_dict``, ``model``), opened in that order. Every
    failure is a one-line SkdError naming the file (``missing`` when it does not exist, ``cannot read
    <what>`` when it cannot be read, and a non-tensor content)."""
    path = Path(path)
    if not path.is_file():
        raise SkdError(missing, path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SkdError(
            f"cannot read {what} ({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})", path
        ) from exc
    for key in unwrap:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise SkdError("not a state dict of tensors", path)
    return state
