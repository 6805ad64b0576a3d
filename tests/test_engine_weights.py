"""engine/weights.read_state_dict: a user's weights file is read as tensors or refused, never unpickled."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from skdcli.engine.errors import SkdError
from skdcli.engine.weights import read_state_dict


def test_reads_safetensors_and_unwraps_torch_checkpoints(tmp_path: Path) -> None:
    w = {"layer.weight": torch.arange(6.0).view(2, 3)}
    save_file(w, str(tmp_path / "w.safetensors"))
    assert torch.equal(read_state_dict(tmp_path / "w.safetensors")["layer.weight"], w["layer.weight"])
    torch.save({"epoch": 3, "state_dict": w}, tmp_path / "ckpt.pth")
    assert set(read_state_dict(tmp_path / "ckpt.pth", unwrap=("state_dict",))) == {"layer.weight"}
    with pytest.raises(SkdError, match="not a state dict of tensors"):
        read_state_dict(tmp_path / "ckpt.pth")  # without unwrapping, the epoch number is not a tensor


class Payload:  # an arbitrary object: weights_only loading must refuse it, not run its unpickling
    pass


def test_refuses_pickled_objects_and_missing_files(tmp_path: Path) -> None:
    torch.save({"w": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(SkdError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "evil.pt", what="checkpoint")
    with pytest.raises(SkdError, match="checkpoint not found"):
        read_state_dict(tmp_path / "none.pt", missing="checkpoint not found")
