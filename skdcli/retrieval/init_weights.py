"""Where the trained layers start: the encoder's projections and word embeddings, read from a
prepared dataset or from a checkpoint file, checked against the model's shapes, and recorded.

The official code (holi-lab/mm-sparse-retrieval @ 6b1f91d1, ``model.py: RetrievalProjModel``)
loads the LAVIS BLIP/ALBEF retrieval model only to copy ``text_proj``, ``vision_proj`` and the
text encoder's word-embedding matrix E into the trained part. Here the same tensors come from
``prep --encoder DIR`` (a local HF CLIP / BLIP checkpoint) or, for ready-made embeddings (the
official parquet route), from ``prep --init FILE``: a LAVIS / ALBEF / BLIP checkpoint (.pth, read
with ``torch.load(weights_only=True)``) or a safetensors file. Nothing is skipped silently: a
requested tensor that is absent or of another shape is an error naming both shapes, and every
layer's origin goes into the run's provenance.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..engine.errors import SkdError

# Our names (as saved in DIR/encoder_init.safetensors) -> the names a checkpoint may use for them.
# LAVIS BLIP/ALBEF retrieval models and HF BlipForImageTextRetrieval: text_proj, vision_proj and
# text_encoder.embeddings.word_embeddings; the ALBEF repository's own checkpoints keep the BERT
# under text_encoder.bert; HF CLIP: text_projection / visual_projection (no bias) and
# text_model.embeddings.token_embedding.
CHECKPOINT_NAMES: dict[str, tuple[str, ...]] = {
    "E": (
        "E",
        "text_encoder.embeddings.word_embeddings.weight",
        "text_encoder.bert.embeddings.word_embeddings.weight",
        "text_model.embeddings.token_embedding.weight",
    ),
    "text_proj.weight": ("text_proj.weight", "text_projection.weight"),
    "text_proj.bias": ("text_proj.bias",),
    "vision_proj.weight": ("vision_proj.weight", "visual_projection.weight"),
    "vision_proj.bias": ("vision_proj.bias",),
}


def _state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint ({"model": sd}, {"state_dict": sd} or sd)."""
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise SkdError("not a checkpoint of named tensors", path)
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_init_file(path: str | Path) -> dict[str, torch.Tensor]:
    """E and the dense projections from a checkpoint file, under our names (float32, contiguous).

    Safetensors is read directly; anything else through ``torch.load(weights_only=True)`` (no
    arbitrary unpickling). The projections are required; E is taken when present."""
    path = Path(path)
    if not path.is_file():
        raise SkdError("init file not found", path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except Exception as exc:
            raise SkdError(f"cannot read safetensors ({exc.__class__.__name__})", path) from exc
    else:
        try:
            sd = _state_dict(torch.load(str(path), map_location="cpu", weights_only=True), path)
        except SkdError:
            raise
        except Exception as exc:
            raise SkdError(
                f"cannot load as plain tensors with torch.load(weights_only=True) "
                f"({exc.__class__.__name__}); save the state dict as safetensors",
                path,
            ) from exc
    out: dict[str, torch.Tensor] = {}
    for ours, names in CHECKPOINT_NAMES.items():
        found = next((n for n in names if n in sd), None)
        if found is not None:
            out[ours] = sd[found].detach().float().contiguous().clone()
    missing = [n for n in ("text_proj.weight", "vision_proj.weight") if n not in out]
    if missing:
        raise SkdError(
            f"has no {' / '.join(CHECKPOINT_NAMES[missing[0]])} tensor (expected the LAVIS BLIP/ALBEF "
            "retrieval names text_proj.weight, vision_proj.weight, text_encoder.embeddings.word_embeddings.weight)",
            path,
        )
    for name in ("text_proj", "vision_proj"):
        w, b = out[f"{name}.weight"], out.get(f"{name}.bias")
        if w.ndim != 2 or (b is not None and b.shape != (w.shape[0],)):
            raise SkdError(
                f"{name}: weight {tuple(w.shape)} and bias {tuple(b.shape) if b is not None else None} "
                "are not a linear layer",
                path,
            )
    if "E" in out and out["E"].ndim != 2:
        raise SkdError(f"word embeddings have shape {tuple(out['E'].shape)}, expected (V, d)", path)
    return out


def shape(t) -> list[int]:
    return [int(n) for n in t.shape]


def init_tensors_for(
    model_cfg,
    init: dict[str, torch.Tensor],
    text_dim: int,
    img_dim: int,
    vocab_size: int,
    word_dim: int,
    init_file: Path,
    origin: str | None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors to copy into a ``SparseDenseRetriever`` (its parameter names) and the record of
    where every layer starts. Raises ``SkdError`` naming both shapes when a requested tensor does not
    fit, and when a requested tensor is absent (the dataset was prepared without an encoder / --init).

    ``init``: the prepared dataset's encoder_init tensors; ``origin``: what they were taken from."""
    where = f"{init_file.name}" + (f" (from {origin})" if origin else "")
    tensors: dict[str, torch.Tensor] = {}
    record: dict = {}
    how_to = "prepare with --encoder DIR or --init FILE"
    if model_cfg.init_proj_from_encoder:
        for name, in_dim in (("text_proj", text_dim), ("vision_proj", img_dim)):
            want = [model_cfg.proj_dim, in_dim]
            w = init.get(f"{name}.weight")
            if w is None:
                raise SkdError(
                    f"model.init_proj_from_encoder is true but the prepared dataset has no {name} "
                    f"({how_to}, or set model.init_proj_from_encoder=false to start it at random)",
                    init_file.parent,
                )
            if shape(w) != want:
                hint = (
                    f"; set model.proj_dim={w.shape[0]}" if w.shape[1] == in_dim else f"; the embeddings are {in_dim}-d"
                )
                raise SkdError(
                    f"{name}: the encoder's weight is {tuple(w.shape)} but the model's is {tuple(want)}{hint} "
                    f"(or model.init_proj_from_encoder=false)",
                    init_file,
                )
            tensors[f"{name}.weight"] = w
            b = init.get(f"{name}.bias")
            tensors[f"{name}.bias"] = b if b is not None else torch.zeros(w.shape[0])
            record[name] = {
                "from": f"{where}: {name}.weight" + (f", {name}.bias" if b is not None else ""),
                "shape": want,
                "bias": "copied" if b is not None else "zeros (the encoder's has none)",
            }
    else:
        for name, in_dim in (("text_proj", text_dim), ("vision_proj", img_dim)):
            record[name] = {
                "from": "random (nn.Linear default init; model.init_proj_from_encoder=false)",
                "shape": [model_cfg.proj_dim, in_dim],
            }
    if model_cfg.init_vocab_from_encoder:
        E = init.get("E")
        if E is None:
            raise SkdError(
                "model.init_vocab_from_encoder is true but the prepared dataset has no word-embedding "
                f"matrix E ({how_to} that holds one, or set model.init_vocab_from_encoder=false)",
                init_file.parent,
            )
        if shape(E) != [vocab_size, word_dim]:
            raise SkdError(
                f"vocab_proj: E is {tuple(E.shape)} but the model's is {(vocab_size, word_dim)}; leave "
                "model.vocab_size / model.word_dim at 0 to take E's",
                init_file,
            )
        tensors["vocab_proj.weight"] = E
        record["vocab_proj"] = {"from": f"{where}: E (a detached copy, not tied)", "shape": [vocab_size, word_dim]}
    else:
        record["vocab_proj"] = {
            "from": "random (nn.Linear default init; model.init_vocab_from_encoder=false)",
            "shape": [vocab_size, word_dim],
        }
    record["sparse_proj"] = {"from": "random (nn.Linear default init)", "shape": [word_dim, model_cfg.proj_dim]}
    record["sparse_norm"] = {"from": "LayerNorm default (weight 1, bias 0)", "shape": [word_dim]}
    record["temp"] = {"from": f"model.temperature = {model_cfg.temperature}"}
    return tensors, record
