"""The nlg-smooth recipe: the Task the engine trains (the text stack of skdcli/text, the model and loss.py
wired together), the hooks of the shared stages (eval: BLEU / calibration, export, and `run` on the
synthetic toy pair: SKD vs CE vs uniform LS), `translate` from an export, and the bench.
The self-knowledge prior is the engine's ``BestCheckpointTeacher``: a frozen eval-mode copy of the
model, replaced only when the validation metric (``loss.prior_metric``, default NLL) improves.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..engine.compare import compare_over_seeds, parse_seeds
from ..engine.console import console, metric_table, progress_bar
from ..engine.contract import StageOptions
from ..engine.errors import SkdError
from ..engine.io import atomic_write_text, read_json
from ..engine.schedules import Progress
from ..engine.stages import ExportSpec, Pipeline, RecipeHooks, Trained
from ..engine.teachers import BestCheckpointTeacher, SnapshotTeacher
from ..engine.trainer import Task, move_to
from ..text.metrics import reliability_diagram
from ..text.parallel import ParallelTaskData, collate_parallel, prepare_parallel
from ..text.seq2seq import Seq2SeqTransformer
from ..text.tokenizer import EOS_ID, PAD_ID
from ..text.translation import (
    BLEU_CONVENTION,
    TRANSLATION_COLUMNS,
    DecodeOptions,
    score_translation,
    translation_export_spec,
    translation_rows,
)
from .config import NlgSmoothConfig
from .loss import (
    als_sk_loss,
    ce_loss,
    confidence_penalty_loss,
    label_smoothing_loss,
    label_smoothing_prior_loss,
    ps_kd_alpha,
    ps_kd_loss,
    smoothing_weight,
    tf_kd_loss,
    unigram_distribution,
)

TASK_NAME = "nlg-smooth"
SYNTHETIC_VOCAB = 200  # the toy pair has ~130 word types; sentencepiece keeps them whole


# -- the Task the engine trains ---------------------------------------------------------------------------
class NlgSmoothTask(ParallelTaskData, Task):
    def __init__(self, cfg: NlgSmoothConfig, data_dir: str | Path):
        self.cfg = cfg
        self.open_parallel(data_dir, cfg.model.max_positions)
        self.prior: BestCheckpointTeacher | None = None
        self.previous_epoch: SnapshotTeacher | None = None  # loss.method=pskd
        self._unigram: torch.Tensor | None = None  # loss.method=ls_unigram
        self.warm_prior = False  # bench: start with a ready prior so every step pays its forward
        self._prior_cache: dict[int, torch.Tensor] = {}  # train index -> prior logits (T_i, V), one generation
        self._prior_cache_generation = -1

    def build_model(self) -> Seq2SeqTransformer:
        model = Seq2SeqTransformer(self.cfg.model.sizes(self.tokenizer.vocab_size))
        if self.cfg.loss.method == "als_sk":
            self.prior = BestCheckpointTeacher(model, self.cfg.loss.prior_metric, self.cfg.loss.prior_mode)
            if self.warm_prior:
                self.prior.refresh(model)
        if self.cfg.loss.method == "pskd":  # the model as it was at the end of the previous epoch
            self.previous_epoch = SnapshotTeacher(model, refresh_every_epochs=1, initial="none")
            if self.warm_prior:
                self.previous_epoch.refresh(model)
        return model

    def teachers(self) -> dict:
        if self.prior is not None:
            return {"prior": self.prior}
        return {"previous_epoch": self.previous_epoch} if self.previous_epoch is not None else {}

    def unigram_prior(self, device: torch.device) -> torch.Tensor:
        """The train targets' unigram distribution (ls_unigram), counted once."""
        if self._unigram is None:
            self._unigram = unigram_distribution(self.dataset("train").tgt, self.tokenizer.vocab_size, EOS_ID)
        if self._unigram.device != device:
            self._unigram = self._unigram.to(device)
        return self._unigram

    def compute_loss(self, model, batch: dict, progress: Progress):
        logits = model(batch["src"], batch["tgt_in"])
        targets = batch["tgt_out"]
        lc = self.cfg.loss
        if lc.method == "ce":
            return ce_loss(logits, targets)
        if lc.method == "ls":
            return label_smoothing_loss(logits, targets, lc.smoothing)
        if lc.method == "ls_unigram":
            return label_smoothing_prior_loss(logits, targets, lc.smoothing, self.unigram_prior(logits.device))
        if lc.method == "confpen":
            return confidence_penalty_loss(logits, targets, lc.beta)
        if lc.method == "tfkd":
            return tf_kd_loss(
                logits, targets, lc.tfkd_alpha, lc.tfkd_temperature, lc.tfkd_correct_prob, lc.tfkd_multiplier
            )
        if lc.method == "pskd":
            teacher_logits = None
            if self.previous_epoch.ready:
                if self.previous_epoch.model.embed.weight.device != logits.device:
                    self.previous_epoch.model.to(logits.device)
                teacher_logits = self.previous_epoch(batch["src"], batch["tgt_in"])  # frozen, eval mode, no grad
            alpha_t = ps_kd_alpha(lc.pskd_alpha_T, progress.epoch, progress.total_epochs)
            loss, logs = ps_kd_loss(logits, targets, alpha_t, teacher_logits)
            logs["weight/alpha_t"] = alpha_t if teacher_logits is not None else 0.0
            return loss, logs
        mask = targets != PAD_ID
        prior_logits = None
        lam = lc.lam
        if self.prior is not None and self.prior.ready:
            prior_logits = self.prior_logits(batch)
        elif lc.prior_fallback == "ce":
            lam = 0.0
        loss, logs = als_sk_loss(
            logits,
            targets,
            lambda lp: smoothing_weight(logits, mask, lam, lc.alpha_fn, lp),
            prior_logits,
            lc.temperature,
        )
        logs["weight/prior_generation"] = float(self.prior.generation if self.prior is not None else 0)
        return loss, logs

    def prior_cache_fits(self) -> bool:
        if not hasattr(self, "_prior_cache_fits"):
            tokens = sum(len(t) + 1 for t in self.dataset("train").tgt)
            self._prior_cache_fits = tokens * self.tokenizer.vocab_size * 4 <= self.cfg.loss.prior_cache_mb * 2**20
        return self._prior_cache_fits

    def prior_logits(self, batch: dict) -> torch.Tensor:
        """The frozen prior's logits for this batch: from the per-pair cache when every pair of the
        batch was seen since the prior was last swapped, else one forward (whose rows are cached).
        Cached rows equal a fresh forward up to float rounding (other batch shapes)."""
        if self.prior.model.embed.weight.device != batch["src"].device:  # the copy was made before .to(device)
            self.prior.model.to(batch["src"].device)
        use_cache = self.cfg.loss.prior_cache_mb > 0 and self.prior_cache_fits()
        if not use_cache:
            return self.prior(batch["src"], batch["tgt_in"])  # frozen, eval mode, no grad
        if self._prior_cache_generation != self.prior.generation:
            self._prior_cache, self._prior_cache_generation = {}, self.prior.generation
        index = batch["index"].tolist()
        lengths = (batch["tgt_out"] != PAD_ID).sum(dim=1).tolist()
        if all(i in self._prior_cache for i in index):
            out = torch.zeros(*batch["tgt_out"].shape, self.tokenizer.vocab_size, device=batch["src"].device)
            for row, i in enumerate(index):
                out[row, : self._prior_cache[i].shape[0]] = self._prior_cache[i]
            return out
        logits = self.prior(batch["src"], batch["tgt_in"]).float()
        for row, (i, n) in enumerate(zip(index, lengths)):
            self._prior_cache[i] = logits[row, :n].clone()
        return logits

    def evaluate(self, model, loader, device) -> dict[str, float]:
        ev = self.cfg.eval
        scored = score_translation(
            model,
            loader,
            device,
            self.tokenizer,
            self.dataset("valid"),
            DecodeOptions.from_eval(self.cfg.eval, beam=1),
            ece_bins=ev.ece_bins,
            decode_max=(ev.valid_decode_max if ev.valid_bleu else -1),
            keep_bpe=self.data.info.get("bpe") == "keep",
            lang=self.tgt_lang,
        )
        return scored["metrics"]


# -- stages ---------------------------------------------------------------------------------------------------
def prep_stage(
    source: str,
    raw: str | None,
    out: str,
    vocab_size: int | None = None,
    model_type: str = "bpe",
    max_tokens: int = 256,
    src_lang: str | None = None,
    tgt_lang: str | None = None,
    bpe: str = "remove",
    skip_bad: bool = False,
    overwrite: bool = False,
    seed: int = 0,
) -> dict:
    if vocab_size is None:
        vocab_size = SYNTHETIC_VOCAB if source == "synthetic" else 10000
    return prepare_parallel(
        source,
        raw,
        out,
        vocab_size=vocab_size,
        model_type=model_type,
        max_tokens=max_tokens,
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        bpe=bpe,
        skip_bad=skip_bad,
        overwrite=overwrite,
        seed=seed,
        log=lambda msg: console.print(f"[cyan]prep:[/] {msg}"),
    )


def check_task(task: NlgSmoothTask) -> NlgSmoothTask:
    """What the method needs of the dataset, checked before anything trains."""
    if task.cfg.loss.method == "als_sk" and not task.data.split("valid")[0]:
        raise SkdError(
            "loss.method=als_sk needs a valid split (the prior is the best checkpoint on it); this dataset has none",
            task.data.root,
        )
    task.dataset("train")  # a pair longer than the model's limit stops here, with its file and line
    if task.data.info.get("max_tokens", 0) > task.max_tokens:
        console.print(
            f"[yellow]note:[/] the data allows {task.data.info['max_tokens']} tokens per sentence, "
            f"the model {task.max_tokens} (model.max_positions - 2); longer pairs stop training"
        )
    return task


# What `run` trains next to ALS-SK (RUN_DIR/compare/<name>/seed<S>): its standard baselines, and with --compare
# every comparison point of the paper's tables that the README names, both smoothing directions included.
BASELINES = {"ce": ["loss.method=ce"], "ls": ["loss.method=ls"]}
COMPARE = {
    "als_sk_confident": ["loss.method=als_sk", "loss.alpha_fn=one_minus_norm_entropy"],
    "ce": ["loss.method=ce"],
    "ls": ["loss.method=ls"],
    "ls_unigram": ["loss.method=ls_unigram"],
    "confpen": ["loss.method=confpen"],
    "tfkd": ["loss.method=tfkd"],
    "pskd": ["loss.method=pskd"],
}
COMPARE_SEEDS = (0, 1, 2)
HEADLINE = ("bleu", "bleu_sacre", "chrf", "nll", "ece", "mce", "token_accuracy")


class NlgSmoothHooks(RecipeHooks):
    name = TASK_NAME
    config_class = NlgSmoothConfig
    tiny_data_note = "the synthetic toy language pair"

    baseline = ("loss.method=ce",)  # plain cross-entropy (no smoothing, no prior)
    summary_keys = {"method": "loss.method"}
    prep = staticmethod(prep_stage)

    def make_task(self, cfg: NlgSmoothConfig, data_dir: str) -> NlgSmoothTask:
        return check_task(NlgSmoothTask(cfg, data_dir))

    def evaluate_run(self, trained: Trained, opts: StageOptions) -> dict:
        cfg, task, model, run = trained.cfg, trained.task, trained.model, trained.run
        split = opts.extra.get("split") or "test"
        if split not in ("train", "valid", "test"):
            raise SkdError(f"--split must be train, valid or test, got '{split}'")
        dataset = task.dataset(split)
        if not len(dataset):
            raise SkdError(f"the dataset has no '{split}' pairs", trained.data_dir)
        dev = next(model.parameters()).device
        loader = DataLoader(dataset, batch_size=cfg.eval.batch_size, shuffle=False, collate_fn=collate_parallel)
        t0 = time.perf_counter()
        with progress_bar(transient=True) as bar:
            batches = bar.track(loader, description=f"translate {split} (beam {cfg.eval.beam_size})")
            scored = score_translation(
                model,
                batches,
                dev,
                task.tokenizer,
                dataset,
                DecodeOptions.from_eval(cfg.eval),
                ece_bins=cfg.eval.ece_bins,
                keep_bpe=task.data.info.get("bpe") == "keep",
                lang=task.tgt_lang,
            )
        seconds = time.perf_counter() - t0
        png = reliability_diagram(
            scored["calibration"],
            run.plots / f"reliability_{split}.png",
            title=f"{cfg.loss.method} on {split}: ECE {100 * scored['calibration']['ece']:.2f}%, "
            f"MCE {100 * scored['calibration']['mce']:.2f}%",
        )
        atomic_write_text(run.path / f"translations.{split}.txt", "".join(h + "\n" for h in scored["hyps"]))
        m = scored["metrics"]
        return {
            "task": TASK_NAME,
            "run_dir": str(run.path),
            "method": cfg.loss.method,
            "split": split,
            "sentences": len(dataset),
            "tokens": scored["calibration"]["tokens"],
            "decoder": "greedy" if cfg.eval.beam_size == 1 else f"beam{cfg.eval.beam_size}",
            "lenpen": cfg.eval.lenpen,
            "bleu": m["bleu"],
            "bleu_sacre": m["bleu_sacre"],
            "chrf": m["chrf"],
            "bleu_sacre_signature": scored["signatures"]["bleu_sacre"],
            "signatures": scored["signatures"],
            "bleu_convention": BLEU_CONVENTION,
            "max_len": {"a": cfg.eval.max_len_a, "b": cfg.eval.max_len_b},
            "nll": m["nll"],
            "ppl": m["ppl"],
            "token_accuracy": m["accuracy"],
            "ece": m["ece"],
            "mce": m["mce"],
            "ece_bins": cfg.eval.ece_bins,
            "reliability_plot": str(png),
            "translations": str(run.path / f"translations.{split}.txt"),
            "decode_seconds": round(seconds, 3),
            "weights": str(run.weights_for_eval()),
            "examples": [
                {"src": s, "ref": r, "hyp": h}
                for s, r, h in list(zip(scored["srcs"], scored["refs"], scored["hyps"]))[:3]
            ],
        }

    def export_spec(self, trained: Trained, opts: StageOptions) -> ExportSpec:
        cfg, task = trained.cfg, trained.task
        ds = task.dataset("valid") if len(task.dataset("valid")) else task.dataset("train")
        return translation_export_spec(
            trained.model,
            task.tokenizer,
            ds,
            data_info=task.data.info,
            train_texts=task.data.split("train"),
            decode=DecodeOptions.from_eval(cfg.eval),
            manifest={"method": cfg.loss.method},
            result_keys=("method",),
        )

    def pipeline(self, p: Pipeline) -> dict:
        """Toy pair -> train ALS-SK and its baselines (CE, uniform LS; with --compare every comparison system,
        over --seeds, default 0,1,2; --no-baselines: ALS-SK alone) -> eval each on test -> export the ALS-SK
        run (RUN_DIR)."""
        extra = p.opts.extra
        main = "ce" if p.opts.baseline else "als_sk"
        others = (COMPARE if extra.get("compare") else BASELINES) if extra.get("baselines", True) else {}
        systems = {main: [], **{name: sets for name, sets in others.items() if name != main}}
        default = COMPARE_SEEDS if extra.get("compare") else [p.opts.seed]
        seeds = parse_seeds(extra.get("seeds"), default)
        compared = compare_over_seeds(p, systems, seeds, HEADLINE, main, train_keys=("train_seconds",))
        exported = p.export()
        first = compared["per_seed"][main][0]
        evaluated = read_json(p.run.eval_json)
        return {
            "task": TASK_NAME,
            "run_dir": str(p.run.path),
            "method": main,
            "split": "test",
            **{k: first[k] for k in HEADLINE},
            "bleu_sacre_signature": evaluated["bleu_sacre_signature"],
            "seeds": compared["seeds"],
            "systems": compared["systems"],
            "per_seed": compared["per_seed"],
            "export_dir": exported["export_dir"],
            "parity_max_abs_diff": exported["parity_max_abs_diff"],
        }

    def report(self, command: str, result: dict):
        if command not in ("eval", "run"):
            return None
        systems = result.get("systems") or {result["method"]: result}
        several = len(result.get("seeds") or [None]) > 1
        seeds = f"mean ± std over seeds {', '.join(map(str, result['seeds']))}; " if several else ""
        caption = f"{seeds}sacreBLEU {result.get('bleu_sacre_signature', '')}"
        return metric_table(
            f"nlg-smooth {command}: {result['split']} split",
            ["system", *TRANSLATION_COLUMNS],
            translation_rows(systems, several),
            caption=caption,
        )

    def bench_task(self, cfg: NlgSmoothConfig, data_dir: str) -> NlgSmoothTask:
        task = NlgSmoothTask(cfg, data_dir)
        task.warm_prior = True  # no eval happens in the bench: start with a ready prior
        return task

    def bench_extra(self, make, data: str, device: torch.device, steps: int, rounds: int, timed: dict) -> dict:
        """Target tokens/s, and the step with the prior's logits read from the cache (later epochs)."""
        task, train = make(False)
        tokens_per_example = statistics.mean(len(t) + 1 for t in task.dataset("train").tgt)
        per_batch = tokens_per_example * train.batch_size
        return {
            "target_tokens_per_batch": round(per_batch, 1),
            "tokens_per_second": {k: round(per_batch / (v / 1000), 1) for k, v in timed["median_step_ms"].items()},
            "prior_cache": _cached_prior_steps(make, device, steps, rounds),
            "method": task.cfg.loss.method,
            "goal_skd_over_baseline": 1.25,
        }


# -- bench ---------------------------------------------------------------------------------------------------------
def _cached_prior_steps(make, device: torch.device, steps: int, rounds: int) -> dict:
    """The engine figures above pay the prior's forward on every step (the first epoch after each
    swap). Later epochs of the same prior read its logits from the cache; time that case: the same
    ``steps`` batches replayed through a bare step (loss, backward, AdamW), ALS-SK with the cache
    already filled vs CE, alternating rounds, median step time."""
    variants = {}
    for name, baseline in (("als_sk_cached", False), ("baseline", True)):
        task, cfg = make(baseline)
        torch.manual_seed(cfg.seed)
        model = task.build_model().to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        ds = task.train_dataset()
        g = torch.Generator().manual_seed(cfg.seed)
        batches = [
            move_to(
                collate_parallel([ds[int(i)] for i in torch.randint(len(ds), (cfg.batch_size,), generator=g)]), device
            )
            for _ in range(steps)
        ]
        variants[name] = (task, model, opt, batches)
    progress = Progress(step=0, total_steps=1, epoch=1, total_epochs=1)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds + 1):  # round 0 fills the cache and warms up; not timed
        for name, (task, model, opt, batches) in variants.items():
            for batch in batches:
                t0 = time.perf_counter()
                loss, _ = task.compute_loss(model, batch, progress)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss.item()
                if r:
                    times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    return {
        "median_step_ms": {k: round(v * 1000, 3) for k, v in med.items()},
        "skd_over_baseline": round(med["als_sk_cached"] / med["baseline"], 4),
        "cache_on": bool(
            variants["als_sk_cached"][0].prior_cache_fits() and variants["als_sk_cached"][0].cfg.loss.prior_cache_mb > 0
        ),
    }
