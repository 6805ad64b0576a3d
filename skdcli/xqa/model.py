"""The span model: a Hugging Face ``*ForQuestionAnswering`` loaded from a local directory (mBERT /
XLM-R in real use; the tiny random BERT of the synthetic default), and the export wrapper.

Nothing is downloaded: every load passes ``local_files_only=True``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..engine.errors import SkdError


def quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def check_init_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise SkdError("--init must be a local Hugging Face checkpoint directory; not found", path)
    if not (path / "config.json").is_file():
        raise SkdError("not a Hugging Face checkpoint directory (no config.json)", path)
    return path


def load_tokenizer(path: str | Path):
    """The checkpoint's fast tokenizer (offset mapping is required for span extraction)."""
    from transformers import AutoTokenizer

    quiet_transformers()
    path = Path(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise SkdError(f"cannot load a tokenizer ({exc.__class__.__name__}: {str(exc).splitlines()[0]})", path) from exc
    if not tokenizer.is_fast:
        raise SkdError(
            "the tokenizer is not a fast (Rust) tokenizer; offsets need one (save it with tokenizer.json)", path
        )
    return tokenizer


def load_config(path: str | Path):
    from transformers import AutoConfig

    quiet_transformers()
    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise SkdError(f"cannot read config.json ({exc.__class__.__name__}: {str(exc).splitlines()[0]})", path) from exc


def load_qa_model(path: str | Path) -> tuple[nn.Module, list[str]]:
    """(model in fp32, names of weights the checkpoint lacked: a base model's new span head)."""
    from transformers import AutoModelForQuestionAnswering

    quiet_transformers()
    try:
        model, info = AutoModelForQuestionAnswering.from_pretrained(
            str(path), local_files_only=True, output_loading_info=True, dtype=torch.float32
        )
    except Exception as exc:
        raise SkdError(
            f"cannot load a question-answering model ({exc.__class__.__name__}: {str(exc).splitlines()[0]})", path
        ) from exc
    return model, sorted(info.get("missing_keys", []))


def span_logits(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]
    )
    return out.start_logits, out.end_logits


class SpanProgram(nn.Module):
    """What gets exported: token ids, attention mask, token types -> (start logits, end logits)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.start_logits, out.end_logits
