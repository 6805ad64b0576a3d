"""The frozen vision-language encoder: loading a local checkpoint, extracting pre-projection
embeddings (batched, resumable shards), and the tiny stand-in CLIP the synthetic corpus uses.

The paper's encoders are BLIP / ALBEF retrieval checkpoints (LAVIS). Here any local Hugging Face
CLIP (`CLIPModel`) or BLIP retrieval (`BlipForImageTextRetrieval`) directory works; nothing is
downloaded. What the recipe takes from it, as the official code does from LAVIS:
- the pre-projection vectors: CLIP's pooled text (EOS) / image (post-LN CLS) states; BLIP's text
  encoder [CLS] and vision [CLS] states;
- the projections to the dense space (text_proj / vision_proj), which become the trained "final layer";
- the text encoder's word-embedding matrix E, from which the sparse head's vocabulary layer starts.

The stand-in (synthetic corpus only, documented as such): a 2-layer, 64-wide CLIP with a
word-level tokenizer over the corpus' words, trained briefly with CLIP's contrastive loss through
the engine's Trainer, then saved with ``save_pretrained`` and read back through the same path as
a real checkpoint.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..engine.config import TrainConfig
from ..engine.errors import SkdError
from ..engine.rundir import RunDir
from ..engine.schedules import Progress
from ..engine.trainer import Task, Trainer
from .data import resolve_image, write_embeddings

SPECIALS = ["[PAD]", "[UNK]", "[SOS]", "[EOS]"]  # ids 0..3; CLIP pools the first [EOS] (eos_token_id != 2)


# -- loading a local checkpoint ------------------------------------------------------------------------
@dataclass
class FrozenEncoder:
    kind: str  # clip | blip
    model: nn.Module
    tokenizer: object
    image_processor: object
    path: Path

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_text_len, return_tensors="pt")
        if self.kind == "clip":
            return self.model.text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).pooler_output
        out = self.model.text_encoder(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        return out.last_hidden_state[:, 0, :]

    @torch.no_grad()
    def encode_images(self, images: list) -> torch.Tensor:
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        if self.kind == "clip":
            return self.model.vision_model(pixel_values=pixels).pooler_output
        return self.model.vision_model(pixel_values=pixels).last_hidden_state[:, 0, :]

    @property
    def max_text_len(self) -> int:
        cfg = self.model.config.text_config
        return int(getattr(cfg, "max_position_embeddings", 77))

    def unknown_words(self, text: str) -> tuple[int, int]:
        """(word pieces, unknown pieces) of a query, without special tokens."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return len(ids), sum(1 for i in ids if i == self.tokenizer.unk_token_id)

    def init_tensors(self) -> dict[str, torch.Tensor]:
        """E and the dense projections, as the official code copies them from LAVIS."""
        m = self.model
        if self.kind == "clip":
            out = {
                "E": m.text_model.embeddings.token_embedding.weight,
                "text_proj.weight": m.text_projection.weight,
                "vision_proj.weight": m.visual_projection.weight,
            }
        else:
            out = {
                "E": m.text_encoder.embeddings.word_embeddings.weight,
                "text_proj.weight": m.text_proj.weight,
                "text_proj.bias": m.text_proj.bias,
                "vision_proj.weight": m.vision_proj.weight,
                "vision_proj.bias": m.vision_proj.bias,
            }
        return {k: v.detach().float().contiguous().clone() for k, v in out.items()}

    def vocab(self, size: int) -> list[str]:
        n = len(self.tokenizer)
        words = self.tokenizer.convert_ids_to_tokens(list(range(min(n, size))))
        return [w.replace("\n", " ") if w else f"[id{i}]" for i, w in enumerate(words)] + [
            f"[id{i}]" for i in range(n, size)
        ]


def load_encoder(path: str | Path) -> FrozenEncoder:
    """A local CLIP or BLIP-retrieval checkpoint (config.json + safetensors + tokenizer + image processor)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise SkdError("not a Hugging Face model directory (no config.json)", path)
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise SkdError(f"cannot read the model config ({exc.__class__.__name__})", path / "config.json") from exc
    if config.model_type == "clip":
        from transformers import CLIPModel as cls
    elif config.model_type == "blip":
        from transformers import BlipForImageTextRetrieval as cls
    else:
        raise SkdError(f"model_type '{config.model_type}' is not supported (clip or blip)", path / "config.json")
    try:
        model = cls.from_pretrained(str(path), local_files_only=True, use_safetensors=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
    except SkdError:
        raise
    except Exception as exc:
        raise SkdError(
            f"cannot load the encoder ({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})", path
        ) from exc
    return FrozenEncoder(config.model_type, model, tokenizer, processor, path)


# -- extraction: batched, with progress, resumable by shard ------------------------------------------------
def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SkdError(f"image does not decode ({exc.__class__.__name__})", path) from exc


def extract_embeddings(
    images: list[dict],
    image_root: Path,
    encoder: FrozenEncoder,
    out: Path,
    batch_size: int = 64,
    shard_size: int = 2048,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, int]:
    """Write ``out/text_embs.parquet`` and ``out/img_embs.parquet``.

    Work is cut into shards of ``shard_size`` items written to ``out/shards/`` as they finish; a
    shard already on disk is not recomputed, so a killed prep continues where it stopped.
    Every image is checked to exist before any work starts (a missing file is an error naming it).
    """
    paths = {}
    missing = []
    for img in images:
        p = resolve_image(image_root, img["filename"])
        if p is None:
            missing.append(img["filename"])
        paths[img["imgid"]] = p
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SkdError(f"image listed in the Karpathy file is missing: {missing[0]}{more}", image_root)
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    img_items = [(img["imgid"], paths[img["imgid"]]) for img in images]
    txt_items = [(s["sentid"], s["raw"]) for img in images for s in img["sentences"]]

    def run(kind: str, items: list, encode: Callable[[list], torch.Tensor]) -> Path:
        shards = []
        for start in range(0, len(items), shard_size):
            shard = shard_dir / f"{kind}_{start // shard_size:05d}.parquet"
            chunk = items[start : start + shard_size]
            shards.append(shard)
            if shard.is_file():  # finished in an earlier (interrupted) prep
                if progress:
                    progress(len(chunk), len(items), f"{kind} embeddings")
                continue
            embs = []
            for b in range(0, len(chunk), batch_size):
                batch = chunk[b : b + batch_size]
                embs.append(encode([x for _, x in batch]).float().cpu().numpy())
                if progress:
                    progress(len(batch), len(items), f"{kind} embeddings")
            write_embeddings(shard, [i for i, _ in chunk], np.concatenate(embs))
        return _merge_shards(shards, out / f"{kind}_embs.parquet")

    run("img", img_items, lambda ps: encoder.encode_images([_open_image(p) for p in ps]))
    run("text", txt_items, encoder.encode_text)
    shutil.rmtree(shard_dir)
    return {"images": len(img_items), "captions": len(txt_items)}


def _merge_shards(shards: list[Path], dest: Path) -> Path:
    from datasets import Dataset, concatenate_datasets

    from ..engine.io import atomic_write

    parts = [Dataset.from_parquet(str(s), keep_in_memory=True) for s in shards]
    merged = concatenate_datasets(parts)
    atomic_write(dest, lambda p: merged.to_parquet(str(p)))
    return dest


# -- the stand-in CLIP (synthetic corpus only) ------------------------------------------------------------
def build_word_tokenizer(words: list[str], max_len: int):
    """A word-level fast tokenizer in HF format (lowercase, whitespace split, [SOS] ... [EOS])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + sorted(set(words) - set(SPECIALS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[SOS] $A [EOS]", special_tokens=[("[SOS]", 2), ("[EOS]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="[SOS]",
        eos_token="[EOS]",
        model_max_length=max_len,
    )


def standin_clip_config(vocab_size: int, image_size: int = 48):
    from transformers import CLIPConfig

    text = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    vision = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=8,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)


class _CaptionImagePairs(torch.utils.data.Dataset):
    def __init__(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention: torch.Tensor, img_of: list[int]):
        self.pixels, self.input_ids, self.attention, self.img_of = pixels, input_ids, attention, img_of

    def __len__(self) -> int:
        return len(self.img_of)

    def __getitem__(self, i: int) -> dict:
        return {
            "pixel_values": self.pixels[self.img_of[i]],
            "input_ids": self.input_ids[i],
            "attention_mask": self.attention[i],
        }


class StandInClipTask(Task):
    """CLIP's contrastive loss on (caption, image) pairs of the train split, trained by the engine."""

    def __init__(self, config, pairs: _CaptionImagePairs):
        self.config, self.pairs = config, pairs

    def build_model(self) -> nn.Module:
        from transformers import CLIPModel

        return CLIPModel(self.config)

    def train_dataset(self):
        return self.pairs

    def compute_loss(self, model, batch: dict, progress: Progress):
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
            return_loss=True,
        )
        return out.loss, {}


def train_standin_encoder(
    images: list[dict], image_root: Path, out: Path, steps: int = 300, seed: int = 0, show_progress: bool = True
) -> Path:
    """Train the stand-in CLIP on the train split and save it (config, safetensors, tokenizer,
    image processor) to ``out`` in Hugging Face format."""
    from transformers import CLIPImageProcessor

    train = [img for img in images if img["split"] == "train"]
    words = [w for img in images for s in img["sentences"] for w in s["raw"].lower().split()]
    max_len = 16
    tokenizer = build_word_tokenizer(words, max_len)
    config = standin_clip_config(len(tokenizer))
    processor = CLIPImageProcessor(
        size={"shortest_edge": 48},
        crop_size={"height": 48, "width": 48},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
    )
    pixels = torch.cat(
        [
            processor(images=[_open_image(resolve_image(image_root, img["filename"]))], return_tensors="pt")[
                "pixel_values"
            ]
            for img in train
        ]
    )
    captions, img_of = [], []
    for n, img in enumerate(train):
        for s in img["sentences"]:
            captions.append(s["raw"])
            img_of.append(n)
    tok = tokenizer(captions, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
    task = StandInClipTask(config, _CaptionImagePairs(pixels, tok["input_ids"], tok["attention_mask"], img_of))
    cfg = TrainConfig(
        max_steps=steps,
        batch_size=64,
        lr=2e-3,
        weight_decay=0.05,
        warmup_steps=steps // 10,
        lr_schedule="linear_warmup_cosine",
        grad_clip=1.0,
        group_by_length=False,
        log_every=50,
        eval_every=0,
        checkpoint_every=0,
        keep_checkpoints=1,
        seed=seed,
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(task, cfg, RunDir(tmp), torch.device("cpu"), show_progress=show_progress)
        result = trainer.fit()
        model = trainer.model
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    (out / "STAND_IN.md").write_text(
        "Stand-in dual encoder for the synthetic shapes corpus (skd retrieval prep --source synthetic).\n"
        "A 2-layer, 64-wide CLIP trained for %d steps with CLIP's contrastive loss (final loss %.3f);\n"
        "it plays the frozen BLIP/ALBEF model of the paper so the real extraction path runs end to end.\n"
        % (result.steps, result.final_loss),
        encoding="utf-8",
    )
    return out
