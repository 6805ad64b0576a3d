"""The nlp-embed recipe: the Task the engine trains (the LM corpus, the LM and the embedding-space loss
wired together), the hooks of the shared stages (eval: perplexity / calibration, export, and `run` on
the synthetic class-based Markov corpus, SKD next to its baselines), `sample` and `neighbours`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..engine.compare import compare_over_seeds, parse_seeds, summary_cell
from ..engine.config import validate_config
from ..engine.console import metric_table
from ..engine.contract import StageOptions
from ..engine.errors import SkdError
from ..engine.export import load_exported
from ..engine.io import read_json
from ..engine.schedules import Progress, build_weight_schedule
from ..engine.stages import ExportSpec, Pipeline, RecipeHooks, Trained, load_trained
from ..engine.teachers import unwrap_model
from ..engine.trainer import Task, move_to
from ..text.lm import CarriedHiddenState, LSTMStep, RecurrentScorer, SequenceScorer, build_lm, sample, stateful_logits
from ..text.lm_corpus import (
    EOS,
    SOURCES,
    UNK,
    LMCorpus,
    LMStreamColumns,
    LMWindows,
    batchify,
    load_lm_corpus,
    prepare_lm_corpus,
    synthetic_oracle_nll,
)
from ..text.metrics import TokenCalibration, perplexity, reliability_diagram
from .config import NlpEmbedConfig
from .loss import NeighbourTable, build_neighbour_table, embedding_skd_loss, similarity

TASK_NAME = "nlp-embed"


# -- the Task the engine trains ----------------------------------------------------------------------
class NlpEmbedTask(Task):
    def __init__(self, cfg: NlpEmbedConfig, data_dir: str | Path):
        self.cfg = cfg
        self.corpus: LMCorpus = load_lm_corpus(data_dir)
        self.beta = build_weight_schedule(cfg.kd.beta)
        self.stateful = cfg.data.bptt_mode == "stateful"
        uses_table = cfg.kd.method in ("skd", "noise", "random") and cfg.kd.topk > 0
        self.neighbours = (
            NeighbourTable(
                cfg.kd.topk,
                cfg.kd.sim,
                cfg.kd.include_gold,
                cfg.kd.refresh_every,
                choice="random" if cfg.kd.method == "random" else "nearest",
                seed=cfg.train.seed,
            )
            if uses_table
            else None
        )
        if uses_table and cfg.kd.topk - int(cfg.kd.include_gold) > len(self.corpus.vocab) - 1:
            raise SkdError(f"kd.topk={cfg.kd.topk} is larger than the vocabulary ({len(self.corpus.vocab)} words)")
        # truncated BPTT: one train column per sequence of the global batch, its LSTM state carried
        self.carried = (
            CarriedHiddenState(cfg.model.num_layers, cfg.train.batch_size, cfg.model.d_hidden)
            if self.stateful
            else None
        )

    def build_model(self):
        return build_lm(len(self.corpus.vocab), self.cfg.model)

    def data_fingerprint(self) -> str | None:
        return self.corpus.info.get("fingerprint")

    def train_dataset(self) -> LMStreamColumns | LMWindows:
        if self.stateful:
            return LMStreamColumns(self.corpus.streams["train"], self.cfg.train.batch_size, self.cfg.data.bptt)
        return LMWindows(self.corpus.streams["train"], self.cfg.data.bptt)

    def epoch_order(self, dataset, seed: int, epoch: int, global_batch: int) -> list[int] | None:
        """Truncated BPTT reads each column in order, window after window, every epoch (no shuffle)."""
        return dataset.order() if isinstance(dataset, LMStreamColumns) else None

    def eval_dataset(self) -> LMWindows:
        # bptt_mode=stateful: ``evaluate`` runs the valid stream itself; the engine's loader goes unused
        return LMWindows(self.corpus.streams["valid"], self.cfg.data.eval_bptt or self.cfg.data.bptt)

    def teachers(self) -> dict:
        signals = {"neighbours": self.neighbours} if self.neighbours is not None else {}
        return {**signals, "lstm_state": self.carried} if self.carried is not None else signals

    def compute_loss(self, model, batch: dict, progress: Progress):
        kd = self.cfg.kd
        noise = None
        if kd.method == "input_noise" and model.training and kd.noise_scale > 0:
            emb = unwrap_model(model).embed.weight.detach()
            noise = torch.randn(*batch["inputs"].shape, emb.shape[1], device=emb.device, dtype=emb.dtype)
            noise = noise * kd.noise_scale * emb.pow(2).mean().sqrt()
        if self.carried is not None:
            window = int(batch["window"][0])  # one global batch = one time slice of every column
            state = self.carried.get(batch["column"], window, batch["inputs"].device)
            logits, new_state = model(batch["inputs"], noise, state=state, return_state=True)
            self.carried.put(batch["column"], window, new_state)  # detached: truncated BPTT
        else:
            logits = model(batch["inputs"], noise) if noise is not None else model(batch["inputs"])
        beta = float(self.beta(progress))
        weight = unwrap_model(model).output_embedding
        table = None
        if self.neighbours is not None and beta > 0:  # the table is only built once the soft term is on
            self.neighbours.get(weight, progress.step)
            table = self.neighbours.to(logits.device)
        return embedding_skd_loss(logits, batch["targets"], batch["mask"], weight, beta, kd, table)

    def evaluate(self, model, loader, device) -> dict[str, float]:
        return score_lm_split(model, self.corpus.streams["valid"], self.cfg, device)["metrics"]


def score_lm(model, loader, device: torch.device, bins: int) -> dict:
    """Perplexity, NLL/token, accuracy and ECE/MCE (token level, teacher forced) over a loader of windows."""
    calib = TokenCalibration(num_bins=bins)
    for batch in loader:
        batch = move_to(batch, device)
        calib.update(model(batch["inputs"]), batch["targets"], batch["mask"])
    result = calib.result()
    metrics = {k: result[k] for k in ("ppl", "nll", "accuracy", "ece", "mce")}
    metrics["tokens"] = result["tokens"]
    return {"metrics": metrics, "calibration": result}


def score_lm_stateful(model, columns: torch.Tensor, bptt: int, device: torch.device, bins: int) -> dict:
    """Perplexity, NLL/token, accuracy, ECE/MCE with the LSTM state carried over the whole of
    ``columns`` (B, L): every token but each column's first is predicted once."""
    calib = TokenCalibration(num_bins=bins)
    was_training = model.training
    model.eval()
    for logits, targets in stateful_logits(model, columns.to(device), bptt):
        calib.update(logits, targets, torch.ones_like(targets, dtype=torch.bool))
    model.train(was_training)
    result = calib.result()
    metrics = {k: result[k] for k in ("ppl", "nll", "accuracy", "ece", "mce")}
    metrics["tokens"] = result["tokens"]
    return {"metrics": metrics, "calibration": result}


def score_lm_split(model, stream: torch.Tensor, cfg: NlpEmbedConfig, device: torch.device) -> dict:
    """Perplexity etc. of one split by the run's convention: stateful over the whole stream in
    ``eval.stream_batch`` columns (bptt_mode=stateful), or independent windows; ``convention`` names it."""
    bptt = cfg.data.eval_bptt or cfg.data.bptt
    with torch.no_grad():
        if cfg.data.bptt_mode == "stateful":
            columns = batchify(stream, cfg.eval.stream_batch)
            scored = score_lm_stateful(unwrap_model(model), columns, bptt, device, cfg.eval.ece_bins)
            convention = (
                f"stateful: the whole stream as {cfg.eval.stream_batch} parallel stream(s) of "
                f"{columns.shape[1]} tokens, LSTM state carried across windows of {bptt}; "
                f"{scored['metrics']['tokens']} of {len(stream) - 1} tokens predicted"
            )
        else:
            loader = DataLoader(LMWindows(stream, bptt), batch_size=cfg.eval.batch_size, shuffle=False)
            scored = score_lm(model, loader, device, cfg.eval.ece_bins)
            convention = (
                f"windows: independent windows of {bptt} tokens, no carried state; "
                f"{scored['metrics']['tokens']} of {len(stream) - 1} tokens predicted"
            )
    return {**scored, "convention": convention}


def predicted_positions(length: int, cfg: NlpEmbedConfig) -> list[int]:
    """Stream positions whose token the split's evaluation predicts (``score_lm_split``'s convention)."""
    if cfg.data.bptt_mode != "stateful":
        return list(range(1, length))
    columns = cfg.eval.stream_batch
    per = length // columns
    return [c * per + i for c in range(columns) for i in range(1, per)]


def class_purity(weight: torch.Tensor, vocab: list[str], classes: dict[str, int], k: int, sim: str = "cos") -> float:
    """Share of each classed word's k nearest words (output embedding) that are in its own class:
    the synthetic corpus's ground truth for how much sense the embedding-space soft targets make."""
    ids = [i for i, w in enumerate(vocab) if w in classes]
    if not ids:
        return float("nan")
    table = build_neighbour_table(weight, k, sim, include_gold=False)
    cls = torch.tensor([classes.get(w, -1) for w in vocab])
    ids_t = torch.tensor(ids)
    return float((cls[table[ids_t]] == cls[ids_t].unsqueeze(1)).float().mean())


# -- stages ------------------------------------------------------------------------------------------------
NMT_SOURCES = {"iwslt14": "iwslt14", "parallel": "parallel", "synthetic-nmt": "synthetic"}


def prep_stage(
    source: str,
    raw: str | None,
    out: str,
    max_vocab: int = 0,
    empty_lines: str = "keep",
    overwrite: bool = False,
    seed: int = 0,
    vocab_size: int | None = None,
    max_tokens: int = 256,
) -> dict:
    """LM sources -> text.lm_corpus; NMT sources -> the shared parallel-corpus prep (sentencepiece)."""
    if source in NMT_SOURCES:
        from ..text.parallel import prepare_parallel

        # the toy pair has ~130 word types: a 200-piece vocabulary keeps its words whole
        size = vocab_size or (200 if source == "synthetic-nmt" else 8000)
        return prepare_parallel(
            NMT_SOURCES[source], raw, out, vocab_size=size, max_tokens=max_tokens, overwrite=overwrite, seed=seed
        )
    if source not in SOURCES:
        raise SkdError(f"unknown source '{source}'; valid: {', '.join([*SOURCES, *NMT_SOURCES])}")
    return prepare_lm_corpus(
        source, raw, out, max_vocab=max_vocab, empty_lines=empty_lines, overwrite=overwrite, seed=seed
    )


def dataset_mode(data_dir: str | Path) -> str:
    """'lm' for a prepared LM corpus, 'nmt' for a prepared parallel dataset."""
    path = Path(data_dir)
    if (path / "tokenizer").is_dir() and (path / "train.src").is_file():
        return "nmt"
    return "lm"  # load_lm_corpus names what is missing otherwise


def make_task(cfg: NlpEmbedConfig, data_dir: str | Path) -> Task:
    cfg.mode = dataset_mode(data_dir)  # recorded in the run's config.yaml (written after this)
    validate_config(cfg)
    if cfg.mode == "nmt":
        from .nmt import NlpEmbedNmtTask

        return NlpEmbedNmtTask(cfg, data_dir)
    return NlpEmbedTask(cfg, data_dir)


def eval_translation(trained: Trained, split: str) -> dict:
    """mode=nmt: beam search BLEU / chrF and teacher-forced NLL / ECE / MCE on a split (skdcli/text/translation.py)."""
    from ..text.parallel import collate_parallel
    from ..text.translation import BLEU_CONVENTION, DecodeOptions, score_translation

    cfg, task, model, run = trained.cfg, trained.task, trained.model, trained.run
    if split not in ("train", "valid", "test") or not len(task.dataset(split)):
        raise SkdError(f"the dataset has no '{split}' split", task.data.root)
    ds = task.dataset(split)
    loader = DataLoader(ds, batch_size=cfg.eval.batch_size, shuffle=False, collate_fn=collate_parallel)
    t0 = time.perf_counter()
    with torch.no_grad():
        scored = score_translation(
            model,
            loader,
            next(model.parameters()).device,
            task.tokenizer,
            ds,
            DecodeOptions.from_eval(cfg.eval),
            ece_bins=cfg.eval.ece_bins,
            keep_bpe=task.data.info.get("bpe") == "keep",
            lang=task.tgt_lang,
        )
    ece = 100 * scored["metrics"]["ece"]
    png = reliability_diagram(
        scored["calibration"],
        run.plots / "reliability.png",
        title=f"{TASK_NAME} nmt {cfg.kd.method} ({split}): ECE {ece:.2f}%",
    )
    return {
        "task": TASK_NAME,
        "mode": "nmt",
        "run_dir": str(run.path),
        "split": split,
        "kd_method": cfg.kd.method,
        "sentences": len(ds),
        "decoder": f"beam{cfg.eval.beam_size}",
        **scored["metrics"],
        "bleu_sacre_signature": scored["signatures"]["bleu_sacre"],
        "signatures": scored["signatures"],
        "bleu_convention": BLEU_CONVENTION,
        "max_len": {"a": cfg.eval.max_len_a, "b": cfg.eval.max_len_b},
        "ece_bins": cfg.eval.ece_bins,
        "seconds": round(time.perf_counter() - t0, 3),
        "weights": str(run.weights_for_eval()),
        "reliability_png": str(png),
        "examples": [{"hyp": h, "ref": r} for h, r in list(zip(scored["hyps"], scored["refs"]))[:3]],
    }


# What `run` trains next to SKD (RUN_DIR/compare/<name>/seed<S>): its baselines and controls, with --compare over
# --seeds (default 0,1,2). `noise` keeps the gold word's true neighbours and perturbs their weighting; `random`
# keeps the weighting and draws the neighbours at random.
BASELINES = {
    "ce": ["kd.method=ce"],
    "ls": ["kd.method=ls"],
    "noise": ["kd.method=noise"],
    "random": ["kd.method=random"],
}
NMT_BASELINES = {"ce": ["kd.method=ce"], "noise": ["kd.method=noise"], "random": ["kd.method=random"]}
COMPARE_SEEDS = (0, 1, 2)
HEADLINE = ("ppl", "nll", "accuracy", "ece", "mce", "class_purity@5", "oracle_ppl")
NMT_HEADLINE = ("bleu", "bleu_sacre", "chrf", "nll", "accuracy", "ece", "mce")


class NlpEmbedHooks(RecipeHooks):
    name = TASK_NAME
    config_class = NlpEmbedConfig
    tiny_data_note = "the synthetic class-based Markov corpus"

    baseline = ("kd.method=ce",)  # plain cross-entropy, no soft targets
    summary_keys = {"kd_method": "kd.method"}
    bench_sets = ("kd.beta=0.5",)  # beta constant from step 0, so every timed SKD step pays for the soft term
    prep = staticmethod(prep_stage)

    def make_task(self, cfg: NlpEmbedConfig, data_dir: str) -> Task:
        return make_task(cfg, data_dir)

    def evaluate_run(self, trained: Trained, opts: StageOptions) -> dict:
        cfg, task, model, run = trained.cfg, trained.task, trained.model, trained.run
        split = opts.extra.get("split") or "test"
        if cfg.mode == "nmt":
            return eval_translation(trained, split)
        if split not in task.corpus.streams:
            raise SkdError(
                f"the dataset has no '{split}' split (has: {', '.join(task.corpus.streams)})", trained.data_dir
            )
        t0 = time.perf_counter()
        scored = score_lm_split(model, task.corpus.streams[split], cfg, next(model.parameters()).device)
        png = reliability_diagram(
            scored["calibration"],
            run.plots / "reliability.png",
            title=f"{TASK_NAME} {cfg.kd.method} ({split}): ECE {100 * scored['metrics']['ece']:.2f}%",
        )
        result = {
            "task": TASK_NAME,
            "run_dir": str(run.path),
            "split": split,
            "kd_method": cfg.kd.method,
            **scored["metrics"],
            "ppl_convention": scored["convention"],
            "ece_bins": cfg.eval.ece_bins,
            "seconds": round(time.perf_counter() - t0, 3),
            "weights": str(run.weights_for_eval()),
            "reliability_png": str(png),
            "bins": scored["calibration"]["bins"],
        }
        if task.corpus.classes:
            k = max(1, min(5, len(task.corpus.vocab) - 1))
            result[f"class_purity@{k}"] = class_purity(
                model.output_embedding.detach().cpu(), task.corpus.vocab, task.corpus.classes, k
            )
        if task.corpus.synthetic:  # the generating chain's own perplexity: the floor any model can reach
            stream = task.corpus.streams[split]  # the same predicted positions as the model's evaluation
            nll, n = synthetic_oracle_nll(
                [task.corpus.vocab[i] for i in stream.tolist()],
                task.corpus.synthetic,
                positions=predicted_positions(len(stream), cfg),
            )
            result["oracle_ppl"] = perplexity(nll, n)
        return result

    def export_spec(self, trained: Trained, opts: StageOptions) -> ExportSpec:
        """Transformer: the whole-sequence program (ids (B, T) -> logits (B, T, V), dynamic B and T);
        LSTM: the one-step program with explicit state (see ``text.lm.LSTMStep``)."""
        cfg, task, model = trained.cfg, trained.task, trained.model
        if cfg.mode == "nmt":  # the text stack's translation export: `skd nlp-embed translate` reads it
            from ..text.translation import DecodeOptions, translation_export_spec

            ds = task.dataset("valid") if len(task.dataset("valid")) else task.dataset("train")
            return translation_export_spec(
                model,
                task.tokenizer,
                ds,
                data_info=task.data.info,
                train_texts=task.data.split("train"),
                decode=DecodeOptions.from_eval(cfg.eval),
                manifest={"kd_method": cfg.kd.method, "mode": "nmt"},
                result_keys=("mode",),
            )
        vocab = task.corpus.vocab
        stream = task.corpus.streams["valid"]
        batch = torch.export.Dim("batch", min=1, max=1024)
        if cfg.model.arch == "transformer":
            module, interface = model, "sequence"
            seq = torch.export.Dim("tokens", min=1, max=cfg.model.max_len)
            example, dynamic = (stream[:8].reshape(2, 4),), ({0: batch, 1: seq},)
            parity = [(stream[:30].reshape(3, 10),), (stream[:1].reshape(1, 1),)]
            io = {"inputs": ["ids (B, T) int64"], "outputs": ["logits (B, T, V)"]}
        else:
            module, interface = LSTMStep(model), "recurrent_step"
            layers, hidden = cfg.model.num_layers, cfg.model.d_hidden

            def state(b: int) -> tuple[torch.Tensor, torch.Tensor]:
                g = torch.Generator().manual_seed(b)  # non-zero states exercise the recurrence in the parity check
                return (
                    torch.randn(layers, b, hidden, generator=g) * 0.5,
                    torch.randn(layers, b, hidden, generator=g) * 0.5,
                )

            example = (stream[:2].reshape(2, 1), *state(2))
            dynamic = ({0: batch}, {1: batch}, {1: batch})
            parity = [(stream[:5].reshape(5, 1), *state(5)), (stream[:1].reshape(1, 1), *state(1))]
            io = {
                "inputs": [
                    "ids (B, 1) int64",
                    f"h ({layers}, B, {hidden}) float32",
                    f"c ({layers}, B, {hidden}) float32",
                ],
                "outputs": ["logits (B, 1, V)", "h", "c"],
                "num_layers": layers,
                "hidden": hidden,
            }

        def write_files(folder: Path) -> dict:
            (folder / "vocab.txt").write_text("".join(w + "\n" for w in vocab), encoding="utf-8")
            return {"vocab": "vocab.txt"}

        return ExportSpec(
            module,
            example,
            dynamic_shapes=dynamic,
            parity_inputs=parity,
            write_files=write_files,
            result_keys=("arch", "interface"),
            manifest={
                "arch": cfg.model.arch,
                "interface": interface,
                **io,
                "vocab_size": len(vocab),
                "eos_id": vocab.index(EOS),
                "unk_id": vocab.index(UNK),
                "max_len": cfg.model.max_len if interface == "sequence" else 0,
                "kd_method": cfg.kd.method,
            },
        )

    def pipeline(self, p: Pipeline) -> dict:
        """prep (synthetic) -> train -> eval -> export in RUN_DIR, next to the baselines and controls (CE, uniform
        LS, the noise and random controls) under RUN_DIR/compare/<name>/seed<S>; --compare runs every system over
        --seeds (default 0,1,2). A parallel dataset (--data, `prep --source synthetic-nmt|iwslt14|parallel`) runs
        the NMT half the same way (SKD, CE, noise, random; BLEU and calibration)."""
        extra = p.opts.extra
        nmt = dataset_mode(p.data) == "nmt"
        main = "ce" if p.opts.baseline else "skd"
        others = (NMT_BASELINES if nmt else BASELINES) if extra.get("baselines", True) else {}
        systems = {main: [], **{name: sets for name, sets in others.items() if name != main}}
        seeds = parse_seeds(extra.get("seeds"), COMPARE_SEEDS if extra.get("compare") else [p.opts.seed])
        headline = NMT_HEADLINE if nmt else HEADLINE
        compared = compare_over_seeds(p, systems, seeds, headline, main, train_keys=("train_seconds", "steps"))
        exported = p.export()
        first = compared["per_seed"][main][0]
        evaluated = read_json(p.run.eval_json)  # the run's own eval: how its figures were computed
        how = "bleu_sacre_signature" if nmt else "ppl_convention"
        return {
            "task": TASK_NAME,
            "run_dir": str(p.run.path),
            "mode": "nmt" if nmt else "lm",
            "split": "test",
            "kd_method": main,
            **{k: first[k] for k in headline if k in first},
            "steps": first["steps"],
            "train_seconds": first["train_seconds"],
            how: evaluated[how],
            "seeds": compared["seeds"],
            "systems": compared["systems"],
            "per_seed": compared["per_seed"],
            "export_dir": exported["export_dir"],
            "parity_max_abs_diff": exported["parity_max_abs_diff"],
        }

    def report(self, command: str, result: dict):
        if command not in ("eval", "run"):
            return None
        systems = result.get("systems") or {result["kd_method"]: result}
        several = len(result.get("seeds") or [None]) > 1

        def cell(r: dict, key: str, scale: float = 1.0):
            return summary_cell(r, key, several, scale)

        seeds = f"mean ± std over seeds {', '.join(map(str, result['seeds']))}. " if several else ""
        if result.get("mode") == "nmt":
            from ..text.translation import TRANSLATION_COLUMNS, translation_rows

            return metric_table(
                f"nlp-embed {command} (nmt): {result['split']} split",
                ["system", *TRANSLATION_COLUMNS],
                translation_rows(systems, several),
                caption=f"{seeds}sacreBLEU {result.get('bleu_sacre_signature', '')}",
            )
        purity = next(
            (k for k in next(iter(systems.values())) if k.startswith("class_purity") and not k.endswith("_std")), None
        )
        rows = [
            [
                name,
                cell(r, "ppl"),
                cell(r, "nll"),
                cell(r, "accuracy"),
                cell(r, "ece", 100),
                *([cell(r, purity)] if purity else []),
            ]
            for name, r in systems.items()
        ]
        oracle = next((r.get("oracle_ppl") for r in systems.values() if r.get("oracle_ppl")), None)
        caption = (
            seeds
            + (f"oracle perplexity (the generating chain) {oracle:.4g}. " if oracle else "")
            + f"perplexity: {result.get('ppl_convention', '')}"
        )
        return metric_table(
            f"nlp-embed {command}: {result['split']} split",
            ["system", "perplexity", "NLL", "accuracy", "ECE %", *([purity] if purity else [])],
            rows,
            caption=caption,
        )

    def bench_extra(self, make, data: str, device: torch.device, steps: int, rounds: int, timed: dict) -> dict:
        """Tokens/s and the neighbour-table rebuild cost (paid every kd.refresh_every steps)."""
        task, train = make(False)
        model = task.build_model().to(device)
        cfg = task.cfg
        times = []
        for _ in range(5):
            t = time.perf_counter()
            build_neighbour_table(model.output_embedding, max(cfg.kd.topk, 1), cfg.kd.sim, cfg.kd.include_gold)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        tokens_per_step = train.batch_size * cfg.data.bptt
        return {
            "tokens_per_step": tokens_per_step,
            "tokens_per_second": {
                k: round(tokens_per_step / (v / 1000), 1) for k, v in timed["median_step_ms"].items()
            },
            "vocab_size": len(task.corpus.vocab),
            "topk": cfg.kd.topk,
            "sim": cfg.kd.sim,
            "refresh_every": cfg.kd.refresh_every,
            "neighbour_table_ms": round(statistics.median(times) * 1000, 3),
            "neighbour_table_ms_per_step": round(statistics.median(times) * 1000 / cfg.kd.refresh_every, 4),
        }


HOOKS = NlpEmbedHooks()


def sample_stage(
    model_path: str,
    prompt: str,
    max_new_tokens: int = 30,
    temperature: float = 1.0,
    top_k: int = 0,
    num_samples: int = 1,
    seed: int = 0,
    stop_at_eos: bool = True,
) -> dict:
    module, manifest, folder = load_exported(model_path, TASK_NAME)
    if manifest.get("interface") == "translation":
        raise SkdError("a translation model (mode=nmt): use `skd nlp-embed translate`, not `sample`", folder)
    if max_new_tokens < 1 or temperature < 0 or top_k < 0 or num_samples < 1:
        raise SkdError("--max-new-tokens and --num-samples must be >= 1, --temperature and --top-k >= 0")
    vocab = (folder / manifest["vocab"]).read_text(encoding="utf-8").splitlines()
    index = {w: i for i, w in enumerate(vocab)}
    words = prompt.split()
    unknown = [w for w in words if w not in index]
    eos = manifest["eos_id"]
    # a sentence starts after <eos> in the LM streams, so that is the context before the prompt
    ids = [eos] + [index.get(w, manifest["unk_id"]) for w in words]
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(num_samples):
        scorer = (
            SequenceScorer(module, manifest["max_len"])
            if manifest["interface"] == "sequence"
            else RecurrentScorer(module, manifest["num_layers"], manifest["hidden"])
        )
        new = sample(scorer, ids, max_new_tokens, temperature, top_k, stop_id=eos if stop_at_eos else None, generator=g)
        samples.append(" ".join(vocab[i] for i in new if not (stop_at_eos and i == eos)))
    return {
        "model": str(folder),
        "prompt": prompt,
        "unknown_words": unknown,
        "temperature": temperature,
        "top_k": top_k,
        "samples": samples,
    }


def neighbours_stage(run_dir: str, word: str, k: int = 10, sim: str | None = None) -> dict:
    """WORD's nearest words in the run's output-embedding space (mode=nmt: sentencepiece pieces)."""
    trained = load_trained(HOOKS, run_dir)
    cfg, task, model, run, data = trained.cfg, trained.task, trained.model, trained.run, trained.data_dir
    if cfg.mode == "nmt":
        from .nmt import output_embedding

        vocab = [task.tokenizer.id_to_piece(i) for i in range(task.tokenizer.vocab_size)]
        weight, classes, where = output_embedding(model).detach(), None, Path(data) / "tokenizer"
    else:
        vocab, weight, classes = task.corpus.vocab, model.output_embedding.detach(), task.corpus.classes
        where = Path(data) / "vocab.txt"
    if word not in vocab:
        raise SkdError(f"'{word}' is not in the vocabulary ({len(vocab)} words)", where)
    sim = sim or cfg.kd.sim
    k = min(k, len(vocab) - 1)
    wid = vocab.index(word)
    scores = similarity(weight[wid : wid + 1], weight, sim)[0]
    scores[wid] = float("-inf")
    top = scores.topk(k)
    rows = [{"word": vocab[i], "similarity": round(float(s), 5)} for s, i in zip(top.values, top.indices.tolist())]
    result = {"run_dir": str(run.path), "word": word, "sim": sim, "neighbours": rows}
    if classes and word in classes:
        for r in rows:
            r["same_class"] = classes.get(r["word"]) == classes[word]
        result["same_class_share"] = sum(r["same_class"] for r in rows) / max(len(rows), 1)
    return result
