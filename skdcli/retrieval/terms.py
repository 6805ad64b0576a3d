"""Which vocabulary terms the sparse head may use, and where the sparse score's mass goes.

Ours (recipes/retrieval/README.md §2; the official code masks nothing): the sparse head's
``log1p(relu(.))`` output is multiplied by a 0/1 mask over the vocabulary, so a masked term has
weight 0 and no gradient. Masked by default: the tokenizer's special tokens ([PAD], [UNK], [CLS],
[SEP], [MASK], BLIP's [DEC]/[ENC], the stand-in's [SOS]/[EOS]): they are not words a user can
read in an explanation, and in a toy run they carried about half of the sparse score. Optional:
a stop-list (``model.stopwords``) and a document-frequency cap (``model.max_df``, the share of
train captions that contain the term, counted with the encoder's tokenizer at prep).

Prep writes ``DIR/term_stats.safetensors``: ``train_caption_df`` (V,) int64 caption counts and
``special`` (V,) uint8, plus ``train_captions`` in its metadata.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..engine.errors import SkdError

TERM_STATS = "term_stats.safetensors"
# A prepared dataset from before term_stats existed: special tokens recognised by their spelling
# ([PAD], [UNK], [CLS], [unused0] in BERT's vocab.txt; <pad>, </s> in sentencepiece-style vocabularies).
SPECIAL_PATTERN = re.compile(r"^(\[[A-Za-z_]+[0-9]*\]|<[^<>\s]+>)$")


def english_stopwords() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def read_stopwords(spec: str) -> frozenset[str]:
    """``english`` (scikit-learn's 318-word list) or a file with one word per line ('#' comments)."""
    if spec == "english":
        return english_stopwords()
    path = Path(spec)
    if not path.is_file():
        raise SkdError("model.stopwords: not 'english' and no such file", path)
    words = [ln.split("#")[0].strip().lower() for ln in path.read_text(encoding="utf-8").splitlines()]
    return frozenset(w for w in words if w)


def term_statistics(tokenizer, train_captions: list[str], vocab_size: int) -> dict[str, Tensor]:
    """Per-term caption document frequency over the train captions and the special-token flags."""
    df = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(train_captions), 4096):
        ids = tokenizer(train_captions[start : start + 4096], add_special_tokens=False)["input_ids"]
        for row in ids:
            uniq = np.unique(np.asarray(row, dtype=np.int64))
            df[uniq[uniq < vocab_size]] += 1
    special = np.zeros(vocab_size, dtype=np.uint8)
    ids = set(tokenizer.all_special_ids)
    ids |= {i for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(tok, "special", False)}
    special[[i for i in ids if 0 <= i < vocab_size]] = 1
    return {"train_caption_df": torch.from_numpy(df), "special": torch.from_numpy(special)}


def save_term_stats(folder: Path, stats: dict[str, Tensor], n_train_captions: int, source: str) -> Path:
    from safetensors.torch import save_file

    from ..engine.io import atomic_write

    path = folder / TERM_STATS
    atomic_write(
        path, lambda p: save_file(stats, str(p), metadata={"train_captions": str(n_train_captions), "source": source})
    )
    return path


def load_term_stats(folder: Path) -> tuple[dict[str, Tensor], dict[str, str]] | None:
    path = folder / TERM_STATS
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def special_ids(vocab: list[str], stats: dict[str, Tensor] | None) -> tuple[list[int], str]:
    """(ids, how they were found): the tokenizer's flags from prep, else the vocabulary's spelling."""
    if stats is not None:
        return torch.nonzero(stats["special"]).flatten().tolist(), "the tokenizer's special tokens (term_stats)"
    if vocab:
        return [i for i, w in enumerate(vocab) if SPECIAL_PATTERN.match(w)], "spelled like [X] or <x> in vocab.txt"
    return [], "none known (the dataset has no vocabulary)"


def vocab_keep(
    model_cfg, vocab: list[str], vocab_size: int, stats: tuple[dict, dict] | None, data_path: Path
) -> tuple[Tensor, dict]:
    """The (V,) 0/1 mask of usable terms and a record of what was masked and why."""
    keep = torch.ones(vocab_size)
    record: dict = {"vocab_size": vocab_size}
    tensors = stats[0] if stats else None
    if model_cfg.mask_special_tokens:
        ids, how = special_ids(vocab, tensors)
        ids = [i for i in ids if i < vocab_size]
        keep[ids] = 0
        record["special_tokens"] = {
            "masked": len(ids),
            "found_by": how,
            "terms": [vocab[i] if i < len(vocab) else f"[id{i}]" for i in ids[:20]],
        }
    if model_cfg.stopwords:
        if not vocab:
            raise SkdError(
                "model.stopwords needs the dataset's vocabulary (prepare with --encoder or --vocab)", data_path
            )
        stop = read_stopwords(model_cfg.stopwords)
        ids = [i for i, w in enumerate(vocab[:vocab_size]) if w.lower() in stop]
        keep[ids] = 0
        record["stopwords"] = {"list": model_cfg.stopwords, "masked": len(ids)}
    if model_cfg.max_df < 1.0:
        if tensors is None:
            raise SkdError(
                f"model.max_df needs caption term statistics ({TERM_STATS}); re-run prep, which writes it", data_path
            )
        n = int(stats[1].get("train_captions", "0"))
        df = tensors["train_caption_df"][:vocab_size].float() / max(n, 1)
        ids = torch.nonzero(df > model_cfg.max_df).flatten().tolist()
        keep[ids] = 0
        record["max_df"] = {
            "cap": model_cfg.max_df,
            "masked": len(ids),
            "train_captions": n,
            "terms": [vocab[i] if i < len(vocab) else f"[id{i}]" for i in ids[:20]],
        }
    record["usable_terms"] = int(keep.sum())
    if record["usable_terms"] == 0:
        raise SkdError("every vocabulary term is masked (model.mask_special_tokens / stopwords / max_df)", data_path)
    return keep, record


def term_mass(z_q: Tensor, z_d: Tensor, gold: Tensor, ids: list[int]) -> dict[str, float]:
    """Share of the sparse score that terms ``ids`` carry: over every (query, image) pair of the
    split (``all_pairs``) and over each query's own image (``positives``)."""
    cq, cd = z_q.double().sum(0), z_d.double().sum(0)
    per_term_all = cq * cd
    per_term_pos = (z_q.double() * z_d.double()[gold]).sum(0)
    idx = torch.tensor(ids, dtype=torch.long)

    def share(per_term: Tensor) -> float:
        total = float(per_term.sum())
        return float(per_term[idx].sum()) / total if total > 0 and len(ids) else 0.0

    return {"all_pairs": share(per_term_all), "positives": share(per_term_pos)}


def top_mass_terms(z_q: Tensor, z_d: Tensor, gold: Tensor, vocab: list[str], n: int = 8) -> list[list]:
    """The n terms carrying most of the positive pairs' sparse score, with their share."""
    per_term = (z_q.double() * z_d.double()[gold]).sum(0)
    total = float(per_term.sum())
    if total <= 0:
        return []
    vals, idx = per_term.topk(min(n, per_term.numel()))
    return [
        [vocab[i] if i < len(vocab) else f"[id{i}]", round(float(v) / total, 4)]
        for v, i in zip(vals.tolist(), idx.tolist())
        if v > 0
    ]
