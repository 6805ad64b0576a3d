"""The retrieval recipe: the Task the engine trains (the cached embeddings, the model and the loss wired
together), the hooks of the shared stages (eval scores, export, and `run` on the embedded synthetic
shapes corpus), and the recipe's own stages: prep, index, search, explain. Each returns a dict.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine.console import console, metric_table, progress_bar, progress_callback
from ..engine.contract import StageOptions
from ..engine.errors import SkdError
from ..engine.io import atomic_write_json, atomic_write_text, staged_dir
from ..engine.rundir import RunDir
from ..engine.schedules import Progress, QuadraticWarmup
from ..engine.stages import ExportSpec, Pipeline, RecipeHooks, Trained, load_trained, train_run
from ..engine.trainer import Task
from . import data as D
from .config import RetrievalConfig
from .loss import retrieval_objective
from .metrics import (
    flops,
    flops_official,
    gold_ranks,
    i2t_metrics,
    mean_nnz,
    t2i_metrics,
    truncate_top_terms,
    write_per_query,
    write_qrels,
    write_trec_run,
)
from .model import RetrievalHeads, SparseDenseRetriever

TASK_NAME = "retrieval"
SCORES = ("dense", "sparse", "integrated")
PER_QUERY = "per_query.tsv"  # RUN/eval/: one line per caption and score (metrics.write_per_query)


def restores_threads(fn):
    """Stages may pin torch's CPU threads (``cpu_threads``); put the caller's setting back after."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper


def use_threads(n: int) -> None:
    if n > 0:
        torch.set_num_threads(n)


def quiet_hf() -> None:
    """HF progress bars and warnings would clutter stderr (and the parquet writer's bars are per file)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


# -- the Task the engine trains ------------------------------------------------------------------------
class PairDataset(torch.utils.data.Dataset):
    """(caption embedding, its image's embedding) for every caption of a split: cached tensors, so
    nothing frozen is recomputed per step."""

    def __init__(self, data: D.Prepared, captions: torch.Tensor):
        self.text = data.text_emb[captions]
        self.img = data.img_emb[data.text_to_img[captions]]

    def __len__(self) -> int:
        return self.text.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"text": self.text[i], "img": self.img[i]}


class RetrievalTask(Task):
    def __init__(self, cfg: RetrievalConfig, data_dir: str | Path):
        self.cfg = cfg
        use_threads(cfg.cpu_threads)
        self.data = D.load_prepared(data_dir)
        self.train_captions, _ = self.data.split_indices("train")
        if len(self.train_captions) == 0:
            raise SkdError("the dataset has no train split", data_dir)
        self.val_split = "val" if (np.array(self.data.text_split) == "val").any() else None
        warm = round(cfg.loss.reg_warmup_frac * cfg.train.max_steps)
        self.eta_q = QuadraticWarmup(cfg.loss.q_reg, warm)
        self.eta_d = QuadraticWarmup(cfg.loss.d_reg, warm)
        # checked here, before the engine writes the run directory: a projection or E that does not
        # fit is an error naming both shapes (never a silent random init); the record goes into provenance
        self.plan = plan_model(cfg, self.data)

    def data_fingerprint(self) -> str | None:
        return self.data.info.get("fingerprint")

    def provenance(self) -> dict:
        return {"init": self.plan.record}

    def build_model(self) -> SparseDenseRetriever:
        return build_model(self.cfg, self.data, self.plan)

    def train_dataset(self) -> PairDataset:
        return PairDataset(self.data, self.train_captions)

    def eval_dataset(self):
        # The evaluation scores the whole val split from the cached tensors (evaluate ignores the
        # loader); the dataset only tells the Trainer there is something to evaluate.
        return PairDataset(self.data, self.data.split_indices(self.val_split)[0]) if self.val_split else None

    def compute_loss(self, model, batch: dict, progress: Progress):
        out = model(batch["text"], batch["img"])
        return retrieval_objective(out, self.cfg.loss, self.eta_q(progress), self.eta_d(progress))

    def evaluate(self, model, loader, device) -> dict[str, float]:
        scored = score_split(model, self.data, self.val_split, self.cfg, device)
        return {f"val/{name}/{m}": v for name in SCORES for m, v in scored["t2i"][name].items()}


@dataclass
class ModelPlan:
    """Everything ``build_model`` needs, checked before a run directory is written: the layer widths,
    the initial tensors (shapes equal to the model's), the vocabulary mask, and their record (which
    goes into the run's provenance as ``init``)."""

    dims: dict[str, int]
    init_tensors: dict[str, torch.Tensor]
    keep: torch.Tensor
    record: dict


def plan_model(cfg: RetrievalConfig, data: D.Prepared) -> ModelPlan:
    from .init_weights import init_tensors_for
    from .terms import vocab_keep

    E = data.init.get("E") if cfg.model.init_vocab_from_encoder else None
    # widths: the config's when set (then E must fit them), else E's, else the dataset's vocab_size / BERT's 768
    vocab = cfg.model.vocab_size or (E.shape[0] if E is not None else int(data.info.get("vocab_size", 0)))
    if vocab < 1:
        raise SkdError("the dataset has no word-embedding matrix and no vocab_size; set model.vocab_size", data.path)
    word_dim = cfg.model.word_dim or (E.shape[1] if E is not None else 768)
    dims = {
        "text_dim": int(data.text_emb.shape[1]),
        "img_dim": int(data.img_emb.shape[1]),
        "vocab_size": int(vocab),
        "word_dim": int(word_dim),
    }
    tensors, record = init_tensors_for(
        cfg.model, data.init, dims["text_dim"], dims["img_dim"], vocab, word_dim, data.path / D.INIT, data.init_origin
    )
    keep, masked = vocab_keep(cfg.model, data.vocab, vocab, data.term_stats, data.path)
    record["vocab_mask"] = masked
    return ModelPlan(dims, tensors, keep, record)


def build_model(cfg: RetrievalConfig, data: D.Prepared, plan: ModelPlan | None = None) -> SparseDenseRetriever:
    plan = plan or plan_model(cfg, data)
    model = SparseDenseRetriever(
        plan.dims["text_dim"],
        plan.dims["img_dim"],
        cfg.model.proj_dim,
        plan.dims["vocab_size"],
        plan.dims["word_dim"],
        cfg.model.temperature,
        cfg.model.learn_temperature,
        vocab_keep=plan.keep,
    )
    model.load_init(plan.init_tensors)
    return model


# -- scoring (periodic eval and the eval stage) -----------------------------------------------------------
@torch.no_grad()
def encode_split(
    model: SparseDenseRetriever, data: D.Prepared, split: str, device: torch.device, batch: int = 4096
) -> dict:
    captions, images = data.split_indices(split)
    if len(captions) == 0 or len(images) == 0:
        raise SkdError(f"the dataset has no '{split}' split", data.path)

    def run(fn, embs):
        outs = [fn(embs[s : s + batch].to(device)) for s in range(0, embs.shape[0], batch)]
        return torch.cat([u for u, _ in outs]).float().cpu(), torch.cat([z for _, z in outs]).float().cpu()

    u_t, z_t = run(model.encode_text, data.text_emb[captions])
    u_i, z_i = run(model.encode_image, data.img_emb[images])
    pos = {int(n): j for j, n in enumerate(images.tolist())}
    gold = torch.tensor([pos[int(data.text_to_img[c])] for c in captions.tolist()], dtype=torch.long)
    return {
        "captions": captions,
        "images": images,
        "u_t": u_t,
        "z_t": z_t,
        "u_i": u_i,
        "z_i": z_i,
        "gold": gold,
        "temp": float(model.temp.detach()),
    }


def score_split(
    model, data: D.Prepared, split: str, cfg: RetrievalConfig, device: torch.device, keep_scores: bool = False
) -> dict:
    enc = encode_split(model, data, split, device)
    z_t = truncate_top_terms(enc["z_t"], cfg.eval.truncate_topk)
    z_i = truncate_top_terms(enc["z_i"], cfg.eval.truncate_topk)
    cos = enc["u_t"] @ enc["u_i"].t()
    sparse = z_t @ z_i.t()
    w1, w2 = cfg.loss.w_dense, cfg.loss.w_sparse
    scores = {
        "dense": cos,
        "sparse": sparse,
        "integrated_cos": w1 * cos + w2 * sparse,
        "integrated_temp": w1 * cos / enc["temp"] + w2 * sparse,
    }
    scores["integrated"] = scores[f"integrated_{cfg.eval.integrated_scale}"]
    t2i, i2t, tops = {}, {}, {}
    for name, s in scores.items():
        t2i[name], tops[name] = t2i_metrics(s, enc["gold"], cfg.eval.topk)
        i2t[name] = i2t_metrics(s.t(), enc["gold"], cfg.eval.topk)
    rsum = {name: 100 * sum(t2i[name][f"R@{k}"] + i2t[name][f"R@{k}"] for k in (1, 5, 10)) for name in scores}
    result = {
        "t2i": t2i,
        "i2t": i2t,
        "rsum": rsum,
        "sparsity": {"text_mean_nnz": mean_nnz(z_t), "image_mean_nnz": mean_nnz(z_i), "vocab_size": int(z_t.shape[1])},
        "flops": flops(z_t, z_i) if cfg.eval.flops == "d2s" else flops_official(z_t, z_i),
        "flops_definition": cfg.eval.flops,
        "temperature": enc["temp"],
        "queries": int(len(enc["captions"])),
        "images": int(len(enc["images"])),
        "sparse_mass": sparse_mass_report(z_t, z_i, enc["gold"], data),
    }
    if keep_scores:
        result["_scores"], result["_tops"], result["_enc"] = scores, tops, enc
    return result


def sparse_mass_report(z_t: torch.Tensor, z_i: torch.Tensor, gold: torch.Tensor, data: D.Prepared) -> dict:
    """Where the sparse score goes (README §4): the share carried by the special tokens and by
    English function words (scikit-learn's stop-list), whether or not they are masked, and the
    terms that carry most of it on the positive pairs."""
    from .terms import english_stopwords, special_ids, term_mass, top_mass_terms

    specials, _ = special_ids(data.vocab, data.term_stats[0] if data.term_stats else None)
    stop = english_stopwords()
    function_words = [i for i, w in enumerate(data.vocab[: z_t.shape[1]]) if w.lower() in stop]
    return {
        "special_tokens": term_mass(z_t, z_i, gold, specials),
        "function_words": term_mass(z_t, z_i, gold, function_words),
        "top_terms_positives": top_mass_terms(z_t, z_i, gold, data.vocab),
    }


# -- prep ----------------------------------------------------------------------------------------------
IN_PROGRESS = ".prep-in-progress"


def claim_prep_dir(out: Path, overwrite: bool) -> bool:
    """Make ``out`` ready; returns True when an interrupted prep is continued (its shards are kept)."""
    if out.exists() and not out.is_dir():
        raise SkdError("exists and is not a directory", out)
    if (out / "prep.json").is_file():
        if not overwrite:
            raise SkdError("already holds a prepared dataset; pass --overwrite to replace it", out)
        shutil.rmtree(out)
    elif out.is_dir() and any(out.iterdir()):
        if (out / IN_PROGRESS).is_file() and not overwrite:
            return True
        if not overwrite:
            raise SkdError("directory is not empty; pass --overwrite to replace it", out)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / IN_PROGRESS).write_text("skd retrieval prep is writing here; rerun the same command to continue\n")
    return False


def _finish_prep(
    out: Path,
    source: str,
    images: list[dict],
    counts: dict,
    encoder_ref: str | None,
    init: dict[str, torch.Tensor],
    vocab: list[str],
    extra: dict,
) -> dict:
    from safetensors.torch import save_file

    atomic_write_json(out / D.META, {"images": images, "dataset": source})
    if init:
        save_file(init, str(out / D.INIT))
    if vocab:
        atomic_write_text(out / D.VOCAB, "\n".join(vocab) + "\n")
    splits = {s: sum(1 for im in images if im["split"] == s) for s in D.SPLITS}
    text_dim = D.read_embeddings(out / D.TEXT_EMBS)[1].shape[1]
    img_dim = D.read_embeddings(out / D.IMG_EMBS)[1].shape[1]
    vocab_size = extra.pop("vocab_size", 0)  # only used without E
    info = {
        "task": TASK_NAME,
        "source": source,
        "images_per_split": splits,
        **counts,
        "text_dim": text_dim,
        "img_dim": img_dim,
        "vocab_size": int(init["E"].shape[0]) if "E" in init else vocab_size,
        "encoder": encoder_ref,
        "has_word_embeddings": "E" in init,
        "fingerprint": D.fingerprint(
            *(f"{im['imgid']}|{im['split']}|{len(im['sentences'])}" for im in images), str(text_dim), str(img_dim)
        ),
        **extra,
    }
    atomic_write_json(out / "prep.json", info)
    (out / IN_PROGRESS).unlink(missing_ok=True)
    return {"out": str(out), **info}


@restores_threads
def prep_stage(
    source: str,
    raw: str | None,
    out: str,
    encoder: str | None = None,
    images_dir: str | None = None,
    batch_size: int = 64,
    shard_size: int = 2048,
    restval: str = "train",
    vocab_size: int = 30522,
    standin_steps: int = 800,
    overwrite: bool = False,
    seed: int = 0,
    init_file: str | None = None,
    vocab_file: str | None = None,
) -> dict:
    quiet_hf()
    from .encoder import extract_embeddings, load_encoder, train_standin_encoder

    if source not in ("synthetic", "karpathy", "embeddings"):
        raise SkdError(f"--source: '{source}' is not one of synthetic, karpathy, embeddings")
    if source in ("karpathy", "embeddings") and not raw:
        raise SkdError(f"--source {source} needs --raw DIR")
    if source == "karpathy" and not encoder:
        raise SkdError("--source karpathy needs --encoder PATH (a local CLIP or BLIP checkpoint directory)")
    if restval not in ("train", "drop"):
        raise SkdError(f"--restval: '{restval}' is not one of train, drop")
    if (init_file or vocab_file) and source != "embeddings":
        raise SkdError("--init / --vocab are for --source embeddings (karpathy and synthetic take both from --encoder)")
    if init_file and encoder:
        raise SkdError("give --encoder DIR or --init FILE, not both (both supply the projections and E)")
    if vocab_file and encoder:
        raise SkdError("give --encoder DIR or --vocab FILE, not both (the encoder's tokenizer is the vocabulary)")
    out_p = Path(out)
    if source != "synthetic":  # check the inputs before touching the output directory
        rows = D.load_karpathy_dir(Path(raw), restval) if source == "karpathy" else None
    resumed = claim_prep_dir(out_p, overwrite)
    bar = progress_bar(transient=True)
    progress = progress_callback(bar)
    t0 = time.perf_counter()
    if source == "embeddings":
        return _prep_embeddings(Path(raw), out_p, encoder, vocab_size, restval, init_file, vocab_file)
    if source == "synthetic":
        use_threads(1)  # a tiny encoder: one thread is fastest, and robust on a busy machine
        raw_p = out_p / "raw"
        if not (raw_p / "dataset_synthetic.json").is_file():
            D.generate_synthetic_corpus(raw_p, seed=seed)
        rows = D.load_karpathy_dir(raw_p)
        enc_dir = out_p / "encoder"
        if not (enc_dir / "model.safetensors").is_file():
            console.print(f"[cyan]prep:[/] training the stand-in CLIP encoder ({standin_steps} steps)")
            train_standin_encoder(rows, raw_p, enc_dir, steps=standin_steps, seed=seed)
        image_root, encoder_path, encoder_ref = raw_p, enc_dir, "encoder"
    else:
        image_root = Path(images_dir) if images_dir else Path(raw)
        encoder_path = Path(encoder)
        encoder_ref = str(encoder_path.resolve())
    enc = load_encoder(encoder_path)
    with bar:
        counts = extract_embeddings(
            rows, image_root, enc, out_p, batch_size=batch_size, shard_size=shard_size, progress=progress
        )
    init = enc.init_tensors()
    vocab = enc.vocab(init["E"].shape[0])
    _write_term_stats(out_p, rows, enc.tokenizer, init["E"].shape[0], f"tokenizer of {encoder_ref}")
    return _finish_prep(
        out_p,
        source,
        rows,
        counts,
        encoder_ref,
        init,
        vocab,
        {"encoder_kind": enc.kind, "resumed": resumed, "seconds": round(time.perf_counter() - t0, 2)},
    )


def _write_term_stats(out: Path, rows: list[dict], tokenizer, vocab_size: int, source: str) -> None:
    """Caption document frequencies over the train split and special-token flags (``terms.py``)."""
    from .terms import save_term_stats, term_statistics

    train = [s["raw"] for img in rows if img["split"] == "train" for s in img["sentences"]]
    save_term_stats(out, term_statistics(tokenizer, train, vocab_size), len(train), source)


def _prep_embeddings(
    raw: Path,
    out: Path,
    encoder: str | None,
    vocab_size: int,
    restval: str = "train",
    init_file: str | None = None,
    vocab_file: str | None = None,
) -> dict:
    """Import embedding parquet files in the official layout:
    RAW/{text|img}_embs_before_proj_<backbone>.parquet (or text_embs*.parquet / img_embs*.parquet)
    + RAW/dataset_meta.json (or any Karpathy JSON). Where the trained layers start from:
    --encoder DIR (E, the vocabulary and the projections from a local HF checkpoint), or --init FILE
    (the projections and E from a LAVIS / ALBEF / BLIP checkpoint or safetensors: the official
    code's route) with --vocab FILE (a BERT vocab.txt: words, special tokens, caption statistics)."""
    from .encoder import load_encoder

    def one(kind: str) -> Path:
        found = sorted(raw.glob(f"{kind}_embs*.parquet"))
        if len(found) != 1:
            raise SkdError(f"expected exactly one {kind}_embs*.parquet file, found {len(found)}", raw)
        return found[0]

    meta_file = raw / "dataset_meta.json"
    rows = D.read_karpathy(meta_file, restval) if meta_file.is_file() else D.load_karpathy_dir(raw, restval)
    t_file, i_file = one("text"), one("img")
    init, vocab, ref, kind, tokenizer, extra = {}, [], None, None, None, {}
    if encoder:
        enc = load_encoder(encoder)
        init, ref, kind, tokenizer = enc.init_tensors(), str(Path(encoder).resolve()), enc.kind, enc.tokenizer
        vocab = enc.vocab(init["E"].shape[0])
    if init_file:
        from .init_weights import read_init_file

        init = read_init_file(init_file)
        extra["init_file"] = str(Path(init_file).resolve())
        extra["init_tensors"] = {k: list(v.shape) for k, v in init.items()}
    if vocab_file:
        tokenizer, vocab = _bert_vocab(Path(vocab_file))
        size = init["E"].shape[0] if "E" in init else vocab_size
        if len(vocab) > size:
            raise SkdError(f"has {len(vocab)} entries, more than the {size} rows of the vocabulary layer", vocab_file)
        vocab += [f"[id{i}]" for i in range(len(vocab), size)]  # e.g. BLIP's E has [DEC]/[ENC] rows beyond BERT's
        extra["vocab_file"] = str(Path(vocab_file).resolve())
    t_width = init["text_proj.weight"].shape[1] if init else None
    i_width = init["vision_proj.weight"].shape[1] if init else None
    t_ids, t_emb = D.read_embeddings(t_file, t_width)
    i_ids, i_emb = D.read_embeddings(i_file, i_width)
    have_t, have_i = set(t_ids), set(i_ids)
    kept = []
    for img in rows:  # entries without embeddings are dropped (and counted), as in the official loaders
        sents = [s for s in img["sentences"] if s["sentid"] in have_t]
        if img["imgid"] in have_i and sents:
            kept.append({**img, "sentences": sents})
    if not kept:
        raise SkdError("no image of the split file has embeddings (ids must be str(imgid) / str(sentid))", raw)
    want_t = {s["sentid"] for img in kept for s in img["sentences"]}
    want_i = {img["imgid"] for img in kept}
    t_keep = [n for n, i in enumerate(t_ids) if i in want_t]
    i_keep = [n for n, i in enumerate(i_ids) if i in want_i]
    D.write_embeddings(out / D.TEXT_EMBS, [t_ids[n] for n in t_keep], t_emb[t_keep])
    D.write_embeddings(out / D.IMG_EMBS, [i_ids[n] for n in i_keep], i_emb[i_keep])
    counts = {
        "images": len(i_keep),
        "captions": len(t_keep),
        "dropped_images": len(rows) - len(kept),
        "restval": restval,
    }
    if tokenizer is not None:
        _write_term_stats(
            out,
            kept,
            tokenizer,
            init["E"].shape[0] if "E" in init else vocab_size,
            f"tokenizer of {ref or extra['vocab_file']}",
        )
    return _finish_prep(
        out,
        "embeddings",
        kept,
        counts,
        ref,
        init,
        vocab,
        {"encoder_kind": kind, "vocab_size": vocab_size, "resumed": False, **extra},
    )


def _bert_vocab(path: Path):
    """A BERT WordPiece tokenizer (lower-cased, as bert-base-uncased under BLIP/ALBEF) from vocab.txt."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import PreTrainedTokenizerFast

    if not path.is_file():
        raise SkdError("vocabulary file not found", path)
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    if not lines or len(set(lines)) != len(lines):
        raise SkdError("not a vocab.txt (one distinct token per line)", path)
    try:
        wordpiece = BertWordPieceTokenizer(str(path), lowercase=True)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=wordpiece._tokenizer,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
        )
    except Exception as exc:
        raise SkdError(f"cannot build a WordPiece tokenizer from it ({exc.__class__.__name__})", path) from exc
    return tokenizer, lines


def predates_vocab_mask(run: RunDir) -> bool:
    """True for a run whose config.yaml has no model.mask_special_tokens (trained unmasked)."""
    from ..engine.config import load_yaml

    return run.config.is_file() and "mask_special_tokens" not in (load_yaml(run.config).get("model") or {})


# -- the hooks of the shared train / eval / export / run commands (engine/stages.py) ---------------------------
class RetrievalHooks(RecipeHooks):
    name = TASK_NAME
    config_class = RetrievalConfig
    tiny_data_note = "the synthetic shapes corpus"

    baseline = ("loss.method=contrastive",)  # the paper's "without SKD" ablation (3 InfoNCE terms + regulariser)
    summary_keys = {"method": "loss.method"}

    prep = staticmethod(prep_stage)

    def make_task(self, cfg: RetrievalConfig, data_dir: str) -> RetrievalTask:
        quiet_hf()
        return RetrievalTask(cfg, data_dir)

    @restores_threads
    def train(self, opts: StageOptions) -> dict:
        if opts.resume:
            run = RunDir(opts.run_dir)
            if predates_vocab_mask(run):  # resume it as it started: unmasked, written into its config.yaml
                import yaml

                from ..engine.config import load_yaml

                saved = load_yaml(run.config)
                saved.setdefault("model", {})["mask_special_tokens"] = False
                atomic_write_text(run.config, yaml.safe_dump(saved, sort_keys=False))
        return train_run(self, opts)

    def check_data_for(self, run: RunDir, cfg: RetrievalConfig, data_dir: str) -> None:
        """A run trained before the vocabulary mask existed is loaded as it was trained, unmasked,
        and says so: the default would otherwise mask terms its weights were trained to use."""
        if predates_vocab_mask(run):
            cfg.model.mask_special_tokens = False
            console.print(
                f"[yellow]note:[/] {run.config} predates model.mask_special_tokens: loaded unmasked, as it was trained"
            )

    @restores_threads
    def evaluate_run(self, trained: Trained, opts: StageOptions) -> dict:
        cfg, run, model, prepared = trained.cfg, trained.run, trained.model, trained.task.data
        dev = next(model.parameters()).device
        split = cfg.eval.split
        t0 = time.perf_counter()
        scored = score_split(model, prepared, split, cfg, dev, keep_scores=True)
        enc, tops, scores = scored.pop("_enc"), scored.pop("_tops"), scored.pop("_scores")
        qids = [prepared.text_ids[i] for i in enc["captions"].tolist()]
        dids = [prepared.img_ids[i] for i in enc["images"].tolist()]
        run_files = [
            str(write_trec_run(run.path / "eval" / f"{name}.trec", qids, dids, tops[name], scores[name], f"skd-{name}"))
            for name in SCORES
        ]
        write_qrels(run.path / "eval" / "qrels.txt", qids, dids, enc["gold"])
        ranks = {name: gold_ranks(tops[name], enc["gold"]) for name in SCORES}
        result = {
            "task": TASK_NAME,
            "run_dir": str(run.path),
            "split": split,
            "method": cfg.loss.method,
            **scored,
            "run_files": run_files,
            "weights": str(run.weights_for_eval()),
        }
        if opts.extra.get("index"):  # every query answered from RUN/index, as a user's search is
            through = evaluate_index(run.path, cfg, prepared, model, split)
            ranks["index"] = through["index"].pop("_ranks")
            through["exact"].pop("_ranks")
            result["index"] = through
        per_query = write_per_query(run.path / "eval" / PER_QUERY, qids, ranks, cfg.eval.topk)
        result["per_query_file"] = str(per_query)
        if opts.extra.get("compare"):
            result["compare"] = compare_runs(per_query, Path(opts.extra["compare"]), str(run.path))
        result["eval_seconds"] = round(time.perf_counter() - t0, 3)
        return result

    def export_spec(self, trained: Trained, opts: StageOptions) -> ExportSpec:
        cfg, model, prepared = trained.cfg, trained.model, trained.task.data
        heads = RetrievalHeads(model).eval()
        text, img = prepared.text_emb, prepared.img_emb
        batch = torch.export.Dim("batch", min=1, max=1 << 20)
        images = torch.export.Dim("images", min=1, max=1 << 20)

        def write_files(folder: Path) -> dict:
            if prepared.vocab:
                atomic_write_text(folder / D.VOCAB, "\n".join(prepared.vocab) + "\n")
            return {"vocab": D.VOCAB if prepared.vocab else None}

        enc = prepared.encoder_path
        return ExportSpec(
            heads,
            (text[:3], img[:2]),
            dynamic_shapes=({0: batch}, {0: images}),
            parity_inputs=[(text[:5], img[:7]), (text[:1], img[:1])],
            write_files=write_files,
            manifest={
                "inputs": [f"text_emb (B, {text.shape[1]}) float32", f"img_emb (N, {img.shape[1]}) float32"],
                "outputs": ["u_t (B, proj_dim) L2-normalised", "z_t (B, V) sparse", "u_i (N, proj_dim)", "z_i (N, V)"],
                "encoder": str(enc.resolve()) if enc else None,
                "score": {
                    "integrated": f"{cfg.loss.w_dense} * cos + {cfg.loss.w_sparse} * sparse",
                    "temperature": float(model.temp.detach()),
                },
            },
        )

    def pipeline(self, p: Pipeline) -> dict:
        """synthetic corpus -> train -> eval -> export -> index -> search."""
        query = p.opts.extra.get("query") or "a red circle"
        trained, evaluated, exported = p.train(), p.evaluate(), p.export()
        console.print("[cyan]index[/]")
        indexed = index_stage(str(p.run.path), overwrite=True)
        prepared = D.load_prepared(p.data)
        searched = search_stage(str(p.run.path), [query], validate=True) if prepared.encoder_path else None
        result = {
            "task": TASK_NAME,
            "run_dir": str(p.run.path),
            "method": trained["method"],
            "steps": trained["steps"],
            "train_seconds": trained["train_seconds"],
            "split": evaluated["split"],
            "t2i": {name: evaluated["t2i"][name] for name in SCORES},
            "i2t": {name: evaluated["i2t"][name] for name in SCORES},
            "rsum": {name: evaluated["rsum"][name] for name in SCORES},
            "sparsity": evaluated["sparsity"],
            "flops": evaluated["flops"],
            "export_dir": exported["export_dir"],
            "parity_max_abs_diff": exported["parity_max_abs_diff"],
            "index_dir": indexed["index_dir"],
            "index_engine": indexed["engine"],
        }
        if searched:
            hit = searched["results"][0]
            result["search"] = {
                "query": query,
                "top": [h["image_id"] for h in hit["hits"][:5]],
                "captions_of_first": next(
                    (
                        [s["raw"] for s in im["sentences"][:2]]
                        for im in prepared.images
                        if im["imgid"] == hit["hits"][0]["image_id"]
                    ),
                    [],
                ),
                "overlap_with_exact": hit.get("overlap_with_exact"),
            }
        return result

    def report(self, command: str, result: dict):
        if command not in ("eval", "run"):
            return None
        from rich.console import Group

        metrics = ("R@1", "R@5", "R@10", "MRR@10")
        rows = [
            [
                name,
                *(100 * result["t2i"][name][m] for m in metrics),
                100 * result["i2t"][name]["R@1"],
                result["rsum"][name],
            ]
            for name in SCORES
        ]
        caption = None
        if isinstance(result.get("flops"), float):
            mass = result.get("sparse_mass", {}).get("special_tokens", {}).get("all_pairs")
            caption = f"sparse FLOPs {result['flops']:.3g}" + (
                f"; sparse score on special tokens {100 * mass:.1f} %" if mass is not None else ""
            )
        tables = [
            metric_table(
                f"retrieval {command}: {result['split']} split ({result['method']})",
                ["score", "t2i R@1", "t2i R@5", "t2i R@10", "t2i MRR@10", "i2t R@1", "RSUM"],
                rows,
                caption=caption,
            )
        ]
        through = result.get("index")
        if through:
            rows = [
                [
                    f"{name} ({through['engine'] if name == 'index' else 'exact scorer'})",
                    *(100 * through[name]["t2i"][m] for m in metrics),
                    through[name]["latency"].get("p50_ms"),
                    through[name]["latency"].get("p99_ms"),
                ]
                for name in ("index", "exact")
            ]
            tables.append(
                metric_table(
                    f"sparse, every query through RUN/index ({through['queries']} queries, {through['documents']} images)",
                    ["answered by", *(f"t2i {m}" for m in metrics), "p50 ms", "p99 ms"],
                    rows,
                    caption=f"top-{through['k']} overlap with the exact scorer {through['overlap_with_exact@k']:.4f}",
                )
            )
        compared = result.get("compare")
        if compared:
            rows = [
                [
                    name,
                    *(
                        f"{100 * t['mean_diff']:+.1f} (p {t['t_test_p']:.3g} / {t['randomisation_p']:.3g})"
                        for t in (compared["scores"][name][m] for m in metrics)
                    ),
                ]
                for name in compared["scores"]
            ]
            tables.append(
                metric_table(
                    f"this run minus {compared['run']}",
                    ["score", *metrics],
                    rows,
                    caption="difference in points (paired t-test p / randomisation p)",
                )
            )
        return Group(*tables)

    def bench(self, data: str | None, steps: int, rounds: int, device: str, sets: list[str] | None = None) -> dict:
        from .bench import bench_stage

        return bench_stage(data, steps, rounds, device, sets)


HOOKS = RetrievalHooks()


def load(run_dir: str, sets: list[str] | None = None) -> Trained:
    """The trained run on CPU, for index / search / explain."""
    return load_trained(HOOKS, run_dir, sets=sets)


def compare_runs(ours: Path, other_run: Path, our_run: str) -> dict:
    """`eval --compare RUN`: the paper's significance test (paired t-test, and Fisher's randomisation
    test) of this run against another evaluated run, per score and metric, paired by caption id."""
    from .metrics import compare_per_query, read_per_query

    if not other_run.is_dir():
        raise SkdError("--compare: not a run directory", other_run)
    if other_run.resolve() == Path(our_run).resolve():
        raise SkdError("--compare: that is this run; give another evaluated run", other_run)
    theirs = read_per_query(other_run / "eval" / PER_QUERY)
    return {
        "run": str(other_run),
        "tests": "paired t-test (scipy.stats.ttest_rel) and Fisher randomisation "
        "(scipy.stats.permutation_test, 10,000 within-query swaps or exact), two-sided, this run minus the other",
        "scores": compare_per_query(read_per_query(ours), theirs),
    }


def evaluate_index(run_path: Path, cfg: RetrievalConfig, prepared: D.Prepared, model, split: str) -> dict:
    """`eval --index`: every query of the split answered from RUN/index (Seismic), one at a time as a
    user's search is, with R@k / MRR@10 and latency percentiles next to the exact scorer's over the
    same stored vectors (``index.evaluate_through_index``)."""
    from .index import LoadedIndex, evaluate_through_index

    index = LoadedIndex(run_path / "index")
    built = index.manifest.get("split")
    if built not in (split, "all"):
        raise SkdError(
            f"the index holds the '{built}' images, not the '{split}' split; rebuild it with "
            f"`skd retrieval index --run-dir {run_path} --split {split} --overwrite`",
            index.folder,
        )
    captions, _ = prepared.split_indices(split)
    device = next(model.parameters()).device
    with torch.no_grad():
        _, z = model.encode_text(prepared.text_emb[captions].to(device))
    z = truncate_top_terms(z.float().cpu(), cfg.eval.truncate_topk).numpy()
    gold_ids = [prepared.img_ids[int(prepared.text_to_img[c])] for c in captions.tolist()]
    return evaluate_through_index(index, z, gold_ids, cfg.eval.topk)


# -- index / search / explain --------------------------------------------------------------------------------
@restores_threads
def index_stage(
    run_dir: str, split: str = "test", engine: str | None = None, sets: list[str] | None = None, overwrite: bool = False
) -> dict:
    from .index import MANIFEST_FILE, build_index

    trained = load(run_dir, [*(sets or []), *([f"index.engine={engine}"] if engine else [])])
    run, cfg, prepared, model = trained.run, trained.cfg, trained.task.data, trained.model
    folder = run.path / "index"
    if (folder / MANIFEST_FILE).is_file() and not overwrite:
        raise SkdError("already holds an index; pass --overwrite to rebuild it", folder)
    if split == "all":
        images = torch.arange(len(prepared.img_ids))
    else:
        images = torch.tensor([i for i, s in enumerate(prepared.img_split) if s == split], dtype=torch.long)
        if len(images) == 0:
            raise SkdError(f"the dataset has no '{split}' split", prepared.path)
    with torch.no_grad():
        _, z = model.encode_image(prepared.img_emb[images])
    z = truncate_top_terms(z, cfg.eval.truncate_topk).numpy()
    # built beside the old index and swapped in at the end: a kill mid-build loses nothing
    with staged_dir(folder) as building:
        manifest = build_index(
            building,
            [prepared.img_ids[i] for i in images.tolist()],
            z,
            cfg.index,
            {"split": split, "run_dir": str(run.path)},
        )
    return {"task": TASK_NAME, "index_dir": str(folder), **{k: v for k, v in manifest.items() if k != "doc_ids"}}


def _query_vectors(cfg, prepared, model, queries: list[str], query_ids: list[str]) -> list[tuple[str, np.ndarray]]:
    """(query text, sparse vector) for text queries (encoder + heads) and caption ids (cached embeddings)."""
    texts, embs = [], []
    if queries:
        enc_path = prepared.encoder_path
        if enc_path is None:
            raise SkdError(
                "the dataset was imported without an encoder: text queries cannot be encoded; "
                "use --query-id CAPTION_ID",
                prepared.path,
            )
        from .encoder import load_encoder

        encoder = load_encoder(enc_path)
        for q in queries:
            pieces, unknown = encoder.unknown_words(q)
            if pieces == 0 or unknown == pieces:
                raise SkdError(f"query {q!r} has no word the encoder's vocabulary knows")
        texts += queries
        embs.append(encoder.encode_text(queries))
    if query_ids:
        pos = {t: n for n, t in enumerate(prepared.text_ids)}
        for qid in query_ids:
            if qid not in pos:
                raise SkdError(f"caption id {qid!r} is not in the dataset", prepared.path)
            texts.append(prepared.captions[pos[qid]] or qid)
        embs.append(prepared.text_emb[[pos[q] for q in query_ids]])
    with torch.no_grad():
        _, z = model.encode_text(torch.cat(embs).float())
    z = truncate_top_terms(z, cfg.eval.truncate_topk).numpy()
    return list(zip(texts, z))


def _words(prepared: D.Prepared, ids) -> list[str]:
    return [prepared.vocab[i] if i < len(prepared.vocab) else f"[id{i}]" for i in ids]


@restores_threads
def search_stage(
    run_dir: str,
    queries: list[str] | None = None,
    queries_file: str | None = None,
    query_ids: list[str] | None = None,
    k: int = 10,
    exact: bool = False,
    validate: bool = False,
) -> dict:
    from .index import LoadedIndex

    trained = load(run_dir)
    run, cfg, prepared, model = trained.run, trained.cfg, trained.task.data, trained.model
    queries = list(queries or [])
    if queries_file:
        p = Path(queries_file)
        if not p.is_file():
            raise SkdError("queries file not found", p)
        queries += [ln.split("\t")[-1].strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not queries and not query_ids:
        raise SkdError("give --query TEXT, --queries FILE or --query-id CAPTION_ID")
    index = LoadedIndex(run.path / "index")
    meta_of = {im["imgid"]: im for im in prepared.images}
    results = []
    t0 = time.perf_counter()
    for text, z in _query_vectors(cfg, prepared, model, queries, list(query_ids or [])):
        top, scores, engine = index.search(z, k, exact=exact)
        hits = []
        for r, (d, s) in enumerate(zip(top.tolist(), scores.tolist())):
            img_id = index.doc_ids[d]
            doc = index.docs.getrow(d)
            shared = [(t, float(z[t] * v)) for t, v in zip(doc.indices.tolist(), doc.data.tolist()) if z[t] > 0]
            shared.sort(key=lambda x: -x[1])
            meta = meta_of.get(img_id, {})
            hits.append(
                {
                    "rank": r + 1,
                    "image_id": img_id,
                    "filename": meta.get("filename"),
                    "score": round(s, 5),
                    "matching_terms": _words(prepared, [t for t, _ in shared[:5]]),
                }
            )
        row = {"query": text, "engine": engine, "query_terms": int((z > 0).sum()), "hits": hits}
        if validate:
            ex, _, _ = index.search(z, k, exact=True)
            row["overlap_with_exact"] = len(set(ex.tolist()) & set(top.tolist())) / max(len(ex), 1)
        results.append(row)
    return {
        "task": TASK_NAME,
        "index_dir": str(index.folder),
        "documents": len(index.doc_ids),
        "seconds": round(time.perf_counter() - t0, 4),
        "results": results,
    }


@restores_threads
def explain_stage(run_dir: str, item_id: str, top: int = 20, kind: str = "auto") -> dict:
    """Top expansion terms of an image (or, with kind=caption or an id that is only a caption's, a caption)."""
    if kind not in ("auto", "image", "caption"):
        raise SkdError(f"--kind: '{kind}' is not one of auto, image, caption")
    trained = load(run_dir)
    prepared, model = trained.task.data, trained.model
    img_pos = {i: n for n, i in enumerate(prepared.img_ids)}
    txt_pos = {i: n for n, i in enumerate(prepared.text_ids)}
    with torch.no_grad():
        if item_id in img_pos and kind in ("auto", "image"):
            kind, n = "image", img_pos[item_id]
            _, z = model.encode_image(prepared.img_emb[n].unsqueeze(0))
            meta = next(im for im in prepared.images if im["imgid"] == item_id)
            described = {"filename": meta["filename"], "captions": [s["raw"] for s in meta["sentences"]]}
        elif item_id in txt_pos and kind in ("auto", "caption"):
            kind, n = "caption", txt_pos[item_id]
            _, z = model.encode_text(prepared.text_emb[n].unsqueeze(0))
            described = {"caption": prepared.captions[n]}
        else:
            what = {"auto": "an image id nor a caption id", "image": "an image id", "caption": "a caption id"}[kind]
            raise SkdError(f"{item_id!r} is not {what} of the dataset", prepared.path)
    z = z[0]
    vals, idx = z.topk(min(top, int((z > 0).sum()) or 1))
    terms = [
        {"term": w, "weight": round(float(v), 4)}
        for w, v in zip(_words(prepared, idx.tolist()), vals.tolist())
        if v > 0
    ]
    return {
        "task": TASK_NAME,
        "id": item_id,
        "kind": kind,
        **described,
        "nonzero_terms": int((z > 0).sum()),
        "top_terms": terms,
    }
