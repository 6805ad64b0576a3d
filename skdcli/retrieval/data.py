"""Data of the retrieval recipe: Karpathy-split captions, the synthetic shapes corpus, and the
prepared dataset (pre-projection embeddings as parquet + the split metadata) training reads.

A prepared dataset (``skd retrieval prep --out DIR``) is

    DIR/prep.json              what was prepared, counts, widths, fingerprint (written last: "finished")
    DIR/dataset_meta.json      Karpathy schema: {"images": [{"imgid", "filename", "split", "sentences": [{"sentid", "raw"}]}]}
    DIR/text_embs.parquet      `id` (str(sentid)), `emb` (float list): the text encoder's pre-projection [CLS]/EOS vector
    DIR/img_embs.parquet       `id` (str(imgid)), `emb`: the image encoder's pre-projection vector
    DIR/encoder_init.safetensors  (optional) E (V x d_word word embeddings), the encoder's text/vision projections
    DIR/vocab.txt              (optional) the V vocabulary entries, one per line (for words in `explain` / `search`)
    DIR/term_stats.safetensors (with a tokenizer) per-term train-caption document frequency + special-token flags
    DIR/encoder/               (synthetic only) the stand-in dual encoder in Hugging Face format

Parquet is written and read with the HF ``datasets`` library, as the official code loads its
`.cache/*/{text|img}_embs_before_proj_*.parquet` files.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..engine.errors import SkdError
from ..engine.io import atomic_write, atomic_write_json, read_json

META = "dataset_meta.json"
TEXT_EMBS = "text_embs.parquet"
IMG_EMBS = "img_embs.parquet"
INIT = "encoder_init.safetensors"
VOCAB = "vocab.txt"
SPLITS = ("train", "val", "test")


# -- Karpathy split files ----------------------------------------------------------------------------
def read_karpathy(path: Path, restval: str = "train") -> list[dict]:
    """Read a Karpathy-split caption file into our meta rows.

    Two layouts are accepted:
    - Karpathy `dataset_{coco,flickr30k,flickr8k}.json`: {"images": [{"imgid", "filename", "filepath"?,
      "split", "sentences": [{"raw", "sentid"}]}]}; `restval` (COCO) is folded into train by default
      (the 113,287-image convention) or dropped with restval="drop".
    - the BLIP/ALBEF/LAVIS re-packaging `coco_karpathy_{train,val,test}.json`: a list of
      {"caption": str, "image": rel/path.jpg, "image_id"?} (train) or {"image", "caption": [str]} (val/test);
      the split comes from the file name.
    """
    data = read_json(path)
    images: list[dict] = []
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        for n, img in enumerate(data["images"]):
            if not isinstance(img, dict) or "filename" not in img or "sentences" not in img:
                raise SkdError(f"images[{n}] lacks 'filename' or 'sentences' (not the Karpathy schema)", path)
            split = img.get("split", "train")
            if split == "restval":
                if restval == "drop":
                    continue
                split = "train"
            if split not in SPLITS:
                continue
            rel = f"{img['filepath']}/{img['filename']}" if img.get("filepath") else img["filename"]
            images.append(
                {
                    "imgid": str(img.get("imgid", n)),
                    "filename": rel,
                    "split": split,
                    "sentences": [
                        {"sentid": str(s.get("sentid", f"{n}_{j}")), "raw": str(s["raw"]).strip()}
                        for j, s in enumerate(img["sentences"])
                    ],
                }
            )
        return images
    if isinstance(data, list):
        split = next((s for s in SPLITS if f"_{s}" in path.stem), "train")
        by_image: dict[str, dict] = {}
        for n, row in enumerate(data):
            if not isinstance(row, dict) or "image" not in row or "caption" not in row:
                raise SkdError(f"entry {n} lacks 'image' or 'caption' (not the LAVIS Karpathy layout)", path)
            key = row["image"]
            img = by_image.setdefault(
                key, {"imgid": str(row.get("image_id", key)), "filename": key, "split": split, "sentences": []}
            )
            captions = row["caption"] if isinstance(row["caption"], list) else [row["caption"]]
            for c in captions:
                img["sentences"].append({"sentid": f"{img['imgid']}#{len(img['sentences'])}", "raw": str(c).strip()})
        return list(by_image.values())
    raise SkdError("not a Karpathy split file (expected {'images': [...]} or a LAVIS list of captions)", path)


def find_caption_files(raw: Path) -> list[Path]:
    """Karpathy JSON(s) in a raw dataset folder (or the file itself)."""
    if raw.is_file():
        return [raw]
    if not raw.is_dir():
        raise SkdError("raw dataset not found", raw)
    for folder in (raw, raw / "annotations"):
        found = sorted(folder.glob("dataset_*.json"))
        if found:
            return found[:1]
        found = sorted(
            p
            for p in folder.glob("*.json")
            if any(f"_{s}" in p.stem for s in SPLITS) and ("karpathy" in p.stem or "flickr" in p.stem)
        )
        if found:
            return found
    raise SkdError(
        "no Karpathy caption file (dataset_coco.json / dataset_flickr30k.json or "
        "coco_karpathy_{train,val,test}.json) found",
        raw,
    )


def load_karpathy_dir(raw: Path, restval: str = "train") -> list[dict]:
    rows: list[dict] = []
    for f in find_caption_files(raw):
        rows += read_karpathy(f, restval)
    if not rows:
        raise SkdError("the Karpathy file lists no image of the train/val/test splits", raw)
    seen: set[str] = set()
    for r in rows:
        if r["imgid"] in seen:
            raise SkdError(f"image id {r['imgid']} appears twice", raw)
        seen.add(r["imgid"])
    return rows


def resolve_image(root: Path, rel: str) -> Path | None:
    """Image path of a Karpathy entry: root/rel, root/images/rel, root/<basename> (Flickr30k's
    `flickr30k-images/` folder is found too)."""
    for cand in (root / rel, root / "images" / rel, root / Path(rel).name, root / "flickr30k-images" / Path(rel).name):
        if cand.is_file():
            return cand
    return None


# -- the synthetic shapes corpus ------------------------------------------------------------------------
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 210, 20),
    "purple": (140, 40, 170),
    "orange": (245, 140, 20),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75), "center": (0.5, 0.5)}
POSITION_WORDS = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
SIZES = {"small": 0.16, "large": 0.3}


def synthetic_captions(colour: str, shape: str, pos: str, size: str) -> list[str]:
    """Five compositional captions per image, some leaving an attribute out (like real captions)."""
    where = POSITION_WORDS[pos]
    return [
        f"a {size} {colour} {shape} {where}",
        f"a {colour} {shape} {where}",
        f"there is a {size} {shape} {where} and it is {colour}",
        f"{size} {colour} {shape}",
        f"a {shape} in {colour} {where}",
    ]


def draw_shape(colour: str, shape: str, pos: str, size: str, rng: random.Random, px: int = 96):
    from PIL import Image, ImageDraw

    bg = tuple(rng.randint(200, 245) for _ in range(3))
    img = Image.new("RGB", (px, px), bg)
    d = ImageDraw.Draw(img)
    cx, cy = POSITIONS[pos]
    cx, cy = (cx + rng.uniform(-0.05, 0.05)) * px, (cy + rng.uniform(-0.05, 0.05)) * px
    r = SIZES[size] * px * rng.uniform(0.85, 1.15) / 2 * 1.6
    fill = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in COLOURS[colour])
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        d.rectangle([cx - r * 0.9, cy - r * 0.9, cx + r * 0.9, cy + r * 0.9], fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    return img


def generate_synthetic_corpus(out: Path, n_train: int = 400, n_val: int = 40, n_test: int = 100, seed: int = 0) -> Path:
    """Write JPEG images of coloured shapes + a Karpathy `dataset_synthetic.json` into ``out``.

    Test and val images get distinct attribute combinations within their split (there are 180),
    so a caption has one right image; train samples combinations with replacement.
    """
    combos = [(c, s, p, z) for c in COLOURS for s in SHAPES for p in POSITIONS for z in SIZES]
    if max(n_val, n_test) > len(combos):
        raise SkdError(
            f"the synthetic corpus has {len(combos)} distinct scenes; ask for at most that many val/test images"
        )
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    plan = [("train", rng.choice(combos)) for _ in range(n_train)]
    plan += [("val", c) for c in rng.sample(combos, n_val)] + [("test", c) for c in rng.sample(combos, n_test)]
    images, sentid = [], 0
    for imgid, (split, (colour, shape, pos, size)) in enumerate(plan):
        name = f"syn_{imgid:06d}.jpg"
        draw_shape(colour, shape, pos, size, rng).save(out / "images" / name, quality=92)
        sents = []
        for caption in synthetic_captions(colour, shape, pos, size):
            sents.append({"tokens": caption.split(), "raw": caption, "imgid": imgid, "sentid": sentid})
            sentid += 1
        images.append(
            {
                "filepath": "images",
                "filename": name,
                "imgid": imgid,
                "split": split,
                "sentids": [s["sentid"] for s in sents],
                "sentences": sents,
            }
        )
    atomic_write_json(out / "dataset_synthetic.json", {"images": images, "dataset": "synthetic-shapes"})
    return out


# -- embedding parquet files ------------------------------------------------------------------------------
def write_embeddings(path: Path, ids: list[str], embs: np.ndarray) -> None:
    from datasets import Dataset

    ds = Dataset.from_dict({"id": list(ids), "emb": [row for row in np.asarray(embs, dtype=np.float32)]})
    atomic_write(path, lambda p: ds.to_parquet(str(p)))


def read_embeddings(path: Path, width: int | None = None) -> tuple[list[str], np.ndarray]:
    """(ids, float32 matrix) of an (`id`, `emb`) parquet file; checks every row has one width."""
    from datasets import Dataset

    if not path.is_file():
        raise SkdError("embedding file not found", path)
    try:
        ds = Dataset.from_parquet(str(path), keep_in_memory=True)
    except Exception as exc:
        raise SkdError(f"cannot read parquet ({exc.__class__.__name__})", path) from exc
    missing = {"id", "emb"} - set(ds.column_names)
    if missing:
        raise SkdError(f"missing column(s) {sorted(missing)}; an embedding file has `id` and `emb`", path)
    import pyarrow.compute as pc

    col = ds.data.table.column("emb")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if len(lengths) == 0:
        raise SkdError("embedding file has no rows", path)
    if lengths.min() != lengths.max():
        raise SkdError(f"rows have different widths ({int(lengths.min())} to {int(lengths.max())})", path)
    if width is not None and int(lengths[0]) != width:
        raise SkdError(f"embeddings have width {int(lengths[0])}, expected {width}", path)
    embs = np.asarray(pc.list_flatten(col).to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(lengths), -1)
    if not np.isfinite(embs).all():
        raise SkdError("embeddings contain NaN or inf", path)
    return [str(i) for i in ds["id"]], embs


# -- the prepared dataset ---------------------------------------------------------------------------------
@dataclass
class Prepared:
    """Everything training/eval/search read, as tensors indexed by position."""

    path: Path
    info: dict
    images: list[dict]  # meta rows (imgid, filename, split, sentences)
    img_ids: list[str]
    img_emb: torch.Tensor  # (N_img, d_img)
    text_ids: list[str]
    text_emb: torch.Tensor  # (N_txt, d_txt)
    captions: list[str]
    text_to_img: torch.Tensor  # (N_txt,) index into img_ids of each caption's image
    text_split: list[str]
    img_split: list[str]
    vocab: list[str] = field(default_factory=list)
    init: dict[str, torch.Tensor] = field(default_factory=dict)
    term_stats: tuple[dict[str, torch.Tensor], dict[str, str]] | None = None  # terms.load_term_stats

    @property
    def init_origin(self) -> str | None:
        """What encoder_init.safetensors was taken from: the encoder directory or the --init file."""
        return self.info.get("init_file") or self.info.get("encoder")

    def split_indices(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(caption indices, image indices) of a split."""
        t = torch.tensor([i for i, s in enumerate(self.text_split) if s == split], dtype=torch.long)
        im = torch.tensor([i for i, s in enumerate(self.img_split) if s == split], dtype=torch.long)
        return t, im

    @property
    def encoder_path(self) -> Path | None:
        enc = self.info.get("encoder")
        if not enc:
            return None
        p = Path(enc)
        return p if p.is_absolute() else self.path / p


def fingerprint(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
    return h.hexdigest()[:16]


def load_prepared(data_dir: str | Path) -> Prepared:
    from safetensors.torch import load_file

    path = Path(data_dir)
    if not (path / "prep.json").is_file():
        raise SkdError("not a prepared retrieval dataset (no prep.json; run `skd retrieval prep`)", path)
    info = read_json(path / "prep.json")
    if info.get("task") != "retrieval":
        raise SkdError(f"prep.json is for task {info.get('task')!r}, not retrieval", path)
    meta = read_json(path / META)
    images = meta["images"]
    img_ids, img_emb = read_embeddings(path / IMG_EMBS)
    text_ids, text_emb = read_embeddings(path / TEXT_EMBS)
    img_pos = {i: n for n, i in enumerate(img_ids)}
    txt_pos = {i: n for n, i in enumerate(text_ids)}
    text_to_img = torch.empty(len(text_ids), dtype=torch.long)
    captions = [""] * len(text_ids)
    text_split = [""] * len(text_ids)
    img_split = [""] * len(img_ids)
    for img in images:
        n = img_pos.get(img["imgid"])
        if n is None:
            raise SkdError(f"image {img['imgid']} of {META} has no row in {IMG_EMBS}", path)
        img_split[n] = img["split"]
        for s in img["sentences"]:
            t = txt_pos.get(s["sentid"])
            if t is None:
                raise SkdError(f"caption {s['sentid']} of {META} has no row in {TEXT_EMBS}", path)
            text_to_img[t], captions[t], text_split[t] = n, s["raw"], img["split"]
    vocab = (path / VOCAB).read_text(encoding="utf-8").split("\n") if (path / VOCAB).is_file() else []
    if vocab and vocab[-1] == "":
        vocab = vocab[:-1]
    init = load_file(str(path / INIT)) if (path / INIT).is_file() else {}
    from .terms import load_term_stats

    return Prepared(
        path=path,
        info=info,
        images=images,
        img_ids=img_ids,
        img_emb=torch.from_numpy(img_emb.copy()),
        text_ids=text_ids,
        text_emb=torch.from_numpy(text_emb.copy()),
        captions=captions,
        text_to_img=text_to_img,
        text_split=text_split,
        img_split=img_split,
        vocab=vocab,
        init=init,
        term_stats=load_term_stats(path),
    )
