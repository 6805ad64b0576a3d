"""`skd env`: what a bug report needs (in the spirit of `accelerate env`)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil

import torch

from .. import __version__


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_report() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "skd": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchaudio": _version("torchaudio"),
        "transformers": _version("transformers"),
        "sentencepiece": _version("sentencepiece"),
        "soundfile": _version("soundfile"),
        "typer": _version("typer"),
        "rich": _version("rich"),
        "mne": _version("mne"),
        "datasets": _version("datasets"),
        "numpy": _version("numpy"),
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else ["cpu"],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "distributed_backends": [
            b
            for b, ok in (
                ("gloo", torch.distributed.is_gloo_available()),
                ("nccl", torch.distributed.is_nccl_available()),
            )
            if ok
        ],
        "espeak_ng": shutil.which("espeak-ng"),
    }
