"""The nlg-smooth recipe: the Task the engine trains (the text stack of skdcli/text, the model and loss.py
wired together), the hooks of the shared stages (eval: BLEU / calibration, export, and `run` on the
synthetic toy pair: SKD vs CE vs uniform LS), `translate` from an export, and the bench.
The self-knowledge prior is the engine's ``BestCheckpointTeacher``: a frozen eval-mode copy of the
model, replaced only when the validation metric (``loss.prior_metric``, default NLL) improves.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Iterable, TextIO

import torch
from torch.utils.data import DataLoader

from ..engine.console import console, metric_table, progress_bar
from ..engine.contract import StageOptions
from ..engine.errors import SkdError
from ..engine.export import load_exported
from ..engine.io import atomic_write_text
from ..engine.schedules import Progress
from ..engine.stages import ExportSpec, Pipeline, RecipeHooks, Trained
from ..engine.teachers import BestCheckpointTeacher
from ..engine.trainer import Task, move_to
from ..text.metrics import (TokenCalibration, bleu_sacre, bleu_tokenized, chrf, detokenize, reliability_diagram,
                            remove_bpe)
from ..text.parallel import ParallelDataset, ParallelTaskData, collate_parallel, prepare_parallel
from ..text.seq2seq import (Seq2SeqTransformer, TranslationProgram, beam_search, pad_batch,
                            program_scorer)
from ..text.tokenizer import EOS_ID, PAD_ID, load_tokenizer
from .config import NlgSmoothConfig
from .loss import (als_sk_loss, ce_loss, confidence_penalty_loss, label_smoothing_loss, smoothing_weight)

TASK_NAME = "nlg-smooth"
SYNTHETIC_VOCAB = 200  # the toy pair has ~130 word types; sentencepiece keeps them whole



# -- the Task the engine trains ---------------------------------------------------------------------------
class NlgSmoothTask(ParallelTaskData, Task):
    def __init__(self, cfg: NlgSmoothConfig, data_dir: str | Path):
        self.cfg = cfg
        self.open_parallel(data_dir, cfg.model.max_positions)
        self.prior: BestCheckpointTeacher | None = None
        self.warm_prior = False  # bench: start with a ready prior so every step pays its forward
        self._prior_cache: dict[int, torch.Tensor] = {}  # train index -> prior logits (T_i, V), one generation
        self._prior_cache_generation = -1

    def build_model(self) -> Seq2SeqTransformer:
        model = Seq2SeqTransformer(self.cfg.model.sizes(self.tokenizer.vocab_size))
        if self.cfg.loss.method == "als_sk":
            self.prior = BestCheckpointTeacher(model, self.cfg.loss.prior_metric, self.cfg.loss.prior_mode)
            if self.warm_prior:
                self.prior.refresh(model)
        return model

    def teachers(self) -> dict:
        return {"prior": self.prior} if self.prior is not None else {}

    def compute_loss(self, model, batch: dict, progress: Progress):
        logits = model(batch["src"], batch["tgt_in"])
        targets = batch["tgt_out"]
        lc = self.cfg.loss
        if lc.method == "ce":
            return ce_loss(logits, targets)
        if lc.method == "ls":
            return label_smoothing_loss(logits, targets, lc.smoothing)
        if lc.method == "confpen":
            return confidence_penalty_loss(logits, targets, lc.beta)
        mask = targets != PAD_ID
        prior_logits = None
        lam = lc.lam
        if self.prior is not None and self.prior.ready:
            prior_logits = self.prior_logits(batch)
        elif lc.prior_fallback == "ce":
            lam = 0.0
        loss, logs = als_sk_loss(logits, targets, lambda lp: smoothing_weight(logits, mask, lam, lc.alpha_fn, lp),
                                 prior_logits, lc.temperature)
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
        scored = score_batches(model, loader, device, self.cfg, self.tokenizer, self.dataset("valid"),
                               beam=1, decode_max=(ev.valid_decode_max if ev.valid_bleu else -1),
                               keep_bpe=self.data.info.get("bpe") == "keep")
        return scored["metrics"]


# -- scoring: teacher-forced calibration + decoding ---------------------------------------------------------
def max_output_len(cfg: NlgSmoothConfig, src_len: int) -> int:
    return max(1, min(int(cfg.eval.max_len_a * src_len + cfg.eval.max_len_b), cfg.model.max_positions - 2))


def score_batches(model: Seq2SeqTransformer, batches: Iterable[dict], device: torch.device, cfg: NlgSmoothConfig,
                  tokenizer, dataset: ParallelDataset, beam: int, decode_max: int = 0, lenpen: float = 1.0,
                  keep_bpe: bool = False) -> dict:
    """One pass: NLL / ECE / MCE / accuracy with teacher forcing on all batches, and BLEU / chrF of
    the decoded first ``decode_max`` sentences (0 = all, < 0 = no decoding)."""
    calib = TokenCalibration(cfg.eval.ece_bins, PAD_ID)
    hyps: list[str] = []
    refs: list[str] = []
    srcs: list[str] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in batches:
            batch = move_to(batch, device)
            calib.update(model(batch["src"], batch["tgt_in"]), batch["tgt_out"])
            if decode_max < 0 or (decode_max and len(hyps) >= decode_max):
                continue
            src_len = int((batch["src"] != PAD_ID).sum(dim=1).max())
            ids = beam_search(model.scorer(), batch["src"], beam, max_output_len(cfg, src_len), lenpen)
            for i, out in zip(batch["index"].tolist(), ids):
                hyps.append(tokenizer.decode(out))
                refs.append(dataset.tgt_text[i])
                srcs.append(dataset.src_text[i])
    model.train(was_training)
    if keep_bpe:
        hyps, refs = [remove_bpe(h) for h in hyps], [remove_bpe(r) for r in refs]
    calibration = calib.result()
    metrics = {k: calibration[k] for k in ("nll", "ppl", "accuracy", "ece", "mce")}
    if hyps:
        metrics.update(bleu=bleu_tokenized(hyps, refs)["bleu"], bleu_sacre=bleu_sacre(hyps, refs)["bleu"],
                       chrf=chrf(hyps, refs))
    return {"metrics": metrics, "calibration": calibration, "hyps": hyps, "refs": refs, "srcs": srcs}


# -- stages ---------------------------------------------------------------------------------------------------
def prep_stage(source: str, raw: str | None, out: str, vocab_size: int | None = None, model_type: str = "bpe",
               max_tokens: int = 256, src_lang: str | None = None, tgt_lang: str | None = None,
               bpe: str = "remove", skip_bad: bool = False, overwrite: bool = False, seed: int = 0) -> dict:
    if vocab_size is None:
        vocab_size = SYNTHETIC_VOCAB if source == "synthetic" else 10000
    return prepare_parallel(source, raw, out, vocab_size=vocab_size, model_type=model_type, max_tokens=max_tokens,
                            src_lang=src_lang, tgt_lang=tgt_lang, bpe=bpe, skip_bad=skip_bad, overwrite=overwrite,
                            seed=seed, log=lambda msg: console.print(f"[cyan]prep:[/] {msg}"))


def check_task(task: NlgSmoothTask) -> NlgSmoothTask:
    """What the method needs of the dataset, checked before anything trains."""
    if task.cfg.loss.method == "als_sk" and not task.data.split("valid")[0]:
        raise SkdError("loss.method=als_sk needs a valid split (the prior is the best checkpoint on it); "
                       "this dataset has none", task.data.root)
    if task.data.info.get("max_tokens", 0) > task.max_tokens:
        console.print(f"[yellow]note:[/] the data allows {task.data.info['max_tokens']} tokens per sentence, "
                      f"the model {task.max_tokens} (model.max_positions - 2); longer pairs stop training")
    return task


def _is_lowercase(texts: list[str]) -> bool:
    return all(t == t.lower() for t in texts[:2000])


# The systems `run --compare` trains next to ALS-SK (RUN_DIR/baselines/<name>).
COMPARE = {"ce": ["loss.method=ce"], "ls": ["loss.method=ls"]}


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
            scored = score_batches(model, batches, dev, cfg, task.tokenizer, dataset, beam=cfg.eval.beam_size,
                                   lenpen=cfg.eval.lenpen, keep_bpe=task.data.info.get("bpe") == "keep")
        seconds = time.perf_counter() - t0
        png = reliability_diagram(scored["calibration"], run.plots / f"reliability_{split}.png",
                                  title=f"{cfg.loss.method} on {split}: ECE {100 * scored['calibration']['ece']:.2f}%, "
                                        f"MCE {100 * scored['calibration']['mce']:.2f}%")
        atomic_write_text(run.path / f"translations.{split}.txt", "".join(h + "\n" for h in scored["hyps"]))
        m = scored["metrics"]
        return {"task": TASK_NAME, "run_dir": str(run.path), "method": cfg.loss.method, "split": split,
                "sentences": len(dataset), "tokens": scored["calibration"]["tokens"],
                "decoder": "greedy" if cfg.eval.beam_size == 1 else f"beam{cfg.eval.beam_size}",
                "lenpen": cfg.eval.lenpen,
                "bleu": m["bleu"], "bleu_sacre": m["bleu_sacre"], "chrf": m["chrf"],
                "bleu_convention": "bleu: tokenized, case-insensitive (fairseq/IWSLT, sacrebleu tokenize=none on "
                                   "lowercased text); bleu_sacre: detokenized sacreBLEU 13a, case-sensitive",
                "nll": m["nll"], "ppl": m["ppl"], "token_accuracy": m["accuracy"], "ece": m["ece"], "mce": m["mce"],
                "ece_bins": cfg.eval.ece_bins, "reliability_plot": str(png),
                "translations": str(run.path / f"translations.{split}.txt"),
                "decode_seconds": round(seconds, 3), "weights": str(run.weights_for_eval()),
                "examples": [{"src": s, "ref": r, "hyp": h}
                             for s, r, h in list(zip(scored["srcs"], scored["refs"], scored["hyps"]))[:3]]}

    def export_spec(self, trained: Trained, opts: StageOptions) -> ExportSpec:
        cfg, task = trained.cfg, trained.task
        program = TranslationProgram(trained.model).eval()
        ds = task.dataset("valid") if len(task.dataset("valid")) else task.dataset("train")
        items = [ds[i] for i in range(min(5, len(ds)))]
        example, parity, single = collate_parallel(items[:2]), collate_parallel(items), collate_parallel(items[-1:])
        limit = cfg.model.max_positions
        batch = torch.export.Dim("batch", min=1, max=4096)
        src_len = torch.export.Dim("src_len", min=1, max=limit)
        tgt_len = torch.export.Dim("tgt_len", min=1, max=limit)
        train_src, train_tgt = task.data.split("train")

        def write_files(folder: Path) -> dict:
            task.tokenizer.save(folder / "tokenizer")
            return {"tokenizer": "tokenizer"}

        return ExportSpec(
            program, (example["src"], example["tgt_in"]),
            dynamic_shapes=({0: batch, 1: src_len}, {0: batch, 1: tgt_len}),
            parity_inputs=[(parity["src"], parity["tgt_in"]), (single["src"], single["tgt_in"]),
                           (single["src"], single["tgt_in"][:, :1])],
            write_files=write_files, result_keys=("method",),
            manifest={"method": cfg.loss.method, "src_lang": task.data.info.get("src_lang"),
                      "tgt_lang": task.data.info.get("tgt_lang"),
                      "lowercase": _is_lowercase(train_src) and _is_lowercase(train_tgt),
                      "bpe": task.data.info.get("bpe", "remove"), "max_positions": limit,
                      "decoding": {"beam_size": cfg.eval.beam_size, "lenpen": cfg.eval.lenpen,
                                   "max_len_a": cfg.eval.max_len_a, "max_len_b": cfg.eval.max_len_b},
                      "inputs": ["src_ids (B, S) int64: pieces + </s>, padded with 0",
                                 "tgt_ids (B, T) int64: <s> + prefix, padded with 0"],
                      "outputs": ["log_probs (B, T, V) float32: next-token log-probabilities"],
                      "special_ids": {"pad": PAD_ID, "unk": 1, "bos": 2, "eos": EOS_ID}})

    def pipeline(self, p: Pipeline) -> dict:
        """Synthetic toy pair -> train SKD (and CE, uniform LS for comparison) -> eval -> export the SKD model."""
        baseline, compare = p.opts.baseline, p.opts.extra.get("compare", True)
        systems = [("skd" if not baseline else "ce", str(p.run.path), [])]
        if compare and not baseline:
            systems += [(name, str(p.run.path / "baselines" / name), extra) for name, extra in COMPARE.items()]
        rows = {}
        for name, rd, extra in systems:
            trained = p.train(rd, sets=[*p.opts.sets, *extra], baseline=baseline and rd == str(p.run.path),
                              overwrite=True)
            ev = p.evaluate(rd)
            rows[name] = {"method": trained["method"], "bleu": ev["bleu"], "bleu_sacre": ev["bleu_sacre"],
                          "chrf": ev["chrf"], "nll": ev["nll"], "ece": ev["ece"], "mce": ev["mce"],
                          "token_accuracy": ev["token_accuracy"], "train_seconds": trained["train_seconds"]}
        exported = p.export()
        main = rows[systems[0][0]]
        return {"task": TASK_NAME, "run_dir": str(p.run.path), "method": main["method"], "split": "test",
                "bleu": main["bleu"], "bleu_sacre": main["bleu_sacre"], "chrf": main["chrf"], "nll": main["nll"],
                "ece": main["ece"], "mce": main["mce"], "systems": rows,
                "export_dir": exported["export_dir"], "parity_max_abs_diff": exported["parity_max_abs_diff"]}

    def report(self, command: str, result: dict):
        if command not in ("eval", "run"):
            return None
        systems = result.get("systems") or {result["method"]: result}
        rows = [[name, r["bleu"], r["bleu_sacre"], r["chrf"], r["nll"], 100 * r["ece"], 100 * r["mce"]]
                for name, r in systems.items()]
        return metric_table(f"nlg-smooth {command}: {result['split']} split", ["system", "BLEU (tok.)", "sacreBLEU",
                                                                               "chrF", "NLL", "ECE %", "MCE %"], rows)

    def bench_task(self, cfg: NlgSmoothConfig, data_dir: str) -> NlgSmoothTask:
        task = NlgSmoothTask(cfg, data_dir)
        task.warm_prior = True  # no eval happens in the bench: start with a ready prior
        return task

    def bench_extra(self, make, data: str, device: torch.device, steps: int, rounds: int, timed: dict) -> dict:
        """Target tokens/s, and the step with the prior's logits read from the cache (later epochs)."""
        task, train = make(False)
        tokens_per_example = statistics.mean(len(t) + 1 for t in task.dataset("train").tgt)
        per_batch = tokens_per_example * train.batch_size
        return {"target_tokens_per_batch": round(per_batch, 1),
                "tokens_per_second": {k: round(per_batch / (v / 1000), 1) for k, v in timed["median_step_ms"].items()},
                "prior_cache": _cached_prior_steps(make, device, steps, rounds), "method": task.cfg.loss.method,
                "goal_skd_over_baseline": 1.25}


class Translator:
    """An exported model + its tokenizer: text in, text out (no training code needed)."""

    def __init__(self, model_path: str | Path, beam_size: int | None = None, lenpen: float | None = None):
        self.program, self.manifest, folder = load_exported(model_path, TASK_NAME)
        self.tokenizer = load_tokenizer(folder / self.manifest["tokenizer"])
        dec = self.manifest["decoding"]
        self.beam = beam_size or dec["beam_size"]
        self.lenpen = dec["lenpen"] if lenpen is None else lenpen
        self.max_len_a, self.max_len_b = dec["max_len_a"], dec["max_len_b"]
        self.max_tokens = self.manifest["max_positions"] - 2

    def translate(self, lines: list[str], where: str = "input", first_line: int = 1) -> list[str]:
        texts = [" ".join(t.split()) for t in lines]
        if self.manifest.get("lowercase"):
            texts = [t.lower() for t in texts]
        todo = [(i, self.tokenizer.encode(t)) for i, t in enumerate(texts) if t]
        for i, ids in todo:
            if len(ids) > self.max_tokens:
                raise SkdError(f"line {first_line + i}: {len(ids)} tokens, more than the model's limit of "
                               f"{self.max_tokens}", where)
        out = [""] * len(texts)
        if todo:
            src = pad_batch([ids + [EOS_ID] for _, ids in todo])
            max_len = max(1, min(int(self.max_len_a * src.shape[1] + self.max_len_b), self.max_tokens))
            ids = beam_search(program_scorer(self.program), src, self.beam, max_len, self.lenpen)
            for (i, _), hyp in zip(todo, ids):
                text = self.tokenizer.decode(hyp)
                out[i] = remove_bpe(text) if self.manifest.get("bpe") == "keep" else text
        return out


def translate_stage(model_path: str, texts: list[str], beam_size: int | None = None, lenpen: float | None = None,
                    detok: bool = False, batch_size: int = 16, stdin: TextIO | None = None,
                    stream: TextIO | None = None) -> dict:
    """Translate ``texts``, or (none given) stdin line by line; ``stream`` gets one output line per input line."""
    translator = Translator(model_path, beam_size, lenpen)
    post = detokenize if detok else (lambda s: s)
    results: list[dict] = []

    def emit(batch: list[str], where: str, first: int) -> None:
        for src, hyp in zip(batch, translator.translate(batch, where, first)):
            results.append({"src": src, "hyp": post(hyp)})
            if stream is not None:
                stream.write(post(hyp) + "\n")
        if stream is not None:
            stream.flush()

    if texts:
        emit(list(texts), "argument", 1)
    else:
        stdin = stdin or sys.stdin
        batch: list[str] = []
        first = 1
        for n, raw in enumerate(stdin, 1):
            batch.append(raw.rstrip("\n").rstrip("\r"))
            if len(batch) >= max(batch_size, 1):
                emit(batch, "<stdin>", first)
                batch, first = [], n + 1
        if batch:
            emit(batch, "<stdin>", first)
    return {"model": str(model_path), "beam_size": translator.beam, "lenpen": translator.lenpen,
            "translations": results}


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
        batches = [move_to(collate_parallel([ds[int(i)] for i in torch.randint(len(ds), (cfg.batch_size,), generator=g)]),
                          device) for _ in range(steps)]
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
    return {"median_step_ms": {k: round(v * 1000, 3) for k, v in med.items()},
            "skd_over_baseline": round(med["als_sk_cached"] / med["baseline"], 4),
            "cache_on": bool(variants["als_sk_cached"][0].prior_cache_fits() and
                             variants["als_sk_cached"][0].cfg.loss.prior_cache_mb > 0)}
