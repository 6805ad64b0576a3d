"""The xqa stages on the engine's contract: prep, the hooks of train / eval (suites, --compare) /
export / run, `answer` from an export alone, `score` with the official semantics, and the bench.

`run` is the paper in small: the synthetic corpus -> stage 1 (English CE from the random init) ->
stage 2 from the stage-1 model: CE, SKD and SKD + mAP@k -> the MLQA-style test grid of each (plus
the stage-1 zero-shot model and the most-frequent-position baseline) -> Wilcoxon tests vs CE ->
a question x context heatmap per system -> export of the SKD + mAP@k model (CE with --baseline).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from ..engine.console import console, metric_table
from ..engine.contract import StageOptions
from ..engine.errors import SkdError
from ..engine.export import load_exported
from ..engine.io import atomic_write_json, atomic_write_text, read_json, read_jsonl
from ..engine.rundir import RunDir
from ..engine.stages import (
    ExportSpec,
    Pipeline,
    RecipeHooks,
    Trained,
    eval_stage,
    load_run_config,
    load_trained,
    train_stage,
)
from .config import SUITES, XqaConfig
from .data import prepare
from .evaluation import (
    Cells,
    compare_examples,
    eval_record_dir,
    load_cells,
    normalization_for,
    recorded_eval,
    score_cells,
    score_file,
)
from .features import build_eval_features, postprocess_predictions
from .model import SpanProgram, load_tokenizer, quiet_transformers
from .plots import coefficient_curve, heatmap
from .task import TASK_NAME, PredictionSet, XqaTask, predict_cells, predict_logits

SYSTEMS = {  # the paper's three stage-2 systems, as config overrides of the default (SKD + mAP@k)
    "ce": ["kd.method=ce"],
    "skd": ["kd.map_coefficient=false"],
    "skd_map": [],
}
SYSTEM_LABELS = {
    "zero_shot": "stage 1 only (zero-shot)",
    "ce": "CLS + CE",
    "skd": "CLS + SKD",
    "skd_map": "CLS + SKD, mAP@10",
    "trivial": "most frequent position",
}
METRICS = ("gxlt_em", "gxlt_f1", "xlt_em", "xlt_f1")


# -- prep ----------------------------------------------------------------------------------------------------------
def prep_stage(
    source: str,
    raw: str | None,
    out: str,
    ntl: int = 5,
    languages: str | None = None,
    seed: int | None = None,
    sampling: str = "sorted",
    keep_impossible: bool = False,
    split: str | None = None,
    overwrite: bool = False,
) -> dict:
    """``seed``: the cross-lingual sample's (default 3, the official sampler's), or the synthetic corpus's (0)."""
    langs = languages.split(",") if languages else None
    if seed is None:
        seed = 0 if source == "synthetic" else 3
    result = prepare(
        source,
        raw,
        out,
        ntl=ntl,
        languages=langs,
        seed=seed,
        sampling=sampling,
        keep_impossible=keep_impossible,
        split=split,
        overwrite=overwrite,
    )
    return {k: v for k, v in result.items() if k != "generator"}


def system_name(cfg: XqaConfig) -> str:
    if cfg.kd.method == "ce":
        return "ce"
    name = "skd_map" if cfg.kd.map_coefficient else "skd"
    return name + ("" if cfg.kd.ce else "_no_ce") + ("" if cfg.kd.generations else "_frozen")


def text_predictions(cells: Cells, preds: dict[tuple[str, str], list[dict]]) -> dict[tuple[str, str], dict[str, str]]:
    return {k: {r["id"]: p["text"] for r, p in zip(cells[k], v)} for k, v in preds.items()}


def evaluate_model(
    model, tokenizer, cfg: XqaConfig, data: str | Path, suite: str, split: str, device: torch.device
) -> tuple[dict, list[dict]]:
    """Every cell of ``suite``/``split`` in ``data`` predicted and scored with its own language."""
    if suite not in SUITES:
        raise SkdError(f"--suite must be one of {', '.join(SUITES)}, got '{suite}'")
    cells, source = load_cells(data, suite, split)
    t0 = time.perf_counter()
    pset, preds = predict_cells(model, tokenizer, cells, cfg, device)
    seconds = time.perf_counter() - t0
    agg, examples = score_cells(cells, text_predictions(cells, preds), suite, cfg.eval.normalization)
    for row, pred in zip(examples, (p for key in sorted(cells) for p in preds[key])):
        row.update(start=pred["start"], end=pred["end"], score=round(pred["score"], 6))
    tokens = int(pset.tensors["attention_mask"].sum()) if pset.n else 0
    agg.update(
        split=split,
        data=source,
        normalization=normalization_for(suite, cfg.eval.normalization),
        examples=sum(len(v) for v in cells.values()),
        windows=pset.n,
        predict_seconds=round(seconds, 3),
        eval_tokens_per_second=round(tokens / max(seconds, 1e-9), 1),
    )
    return agg, examples


def record_eval(folder: Path, result: dict, examples: list[dict], title: str) -> dict:
    """result.json, examples.jsonl (one line per example: cell, id, EM, F1, prediction, span) and the
    question x context F1 heatmap, under RUN/evals/<suite>-<split>/; the result gets the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "examples.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in examples))
    png = heatmap(result, folder / "heatmap_f1.png", title)
    result = {**result, "heatmap": str(png), "examples_file": str(folder / "examples.jsonl")}
    atomic_write_json(folder / "result.json", result)
    return result


def compare_runs(run_a: str | Path, run_b: str | Path, suite: str = "mlqa", split: str = "test") -> dict:
    """The paper's significance test: Wilcoxon signed-rank on the example-level F1 of two evaluated runs."""
    res_a, rows_a = recorded_eval(Path(run_a), suite, split)
    res_b, rows_b = recorded_eval(Path(run_b), suite, split)
    return {
        "task": TASK_NAME,
        "suite": suite,
        "split": split,
        "run_a": str(run_a),
        "run_b": str(run_b),
        "method_a": res_a.get("method"),
        "method_b": res_b.get("method"),
        "f1_a": {k: res_a.get(k) for k in ("gxlt_f1", "xlt_f1")},
        "f1_b": {k: res_b.get(k) for k in ("gxlt_f1", "xlt_f1")},
        **compare_examples(rows_a, rows_b),
    }


# -- the trivial baseline ----------------------------------------------------------------------------------------------
def most_frequent_positions(task: XqaTask) -> tuple[int, int]:
    """The most frequent (start, end) token positions of the training windows that hold an answer."""
    task.train_dataset()
    arrays = task._arrays["train"]
    pairs = Counter(
        (s, e) for s, e in zip(arrays["start_positions"].tolist(), arrays["end_positions"].tolist()) if s > 0
    )
    if not pairs:
        raise SkdError("no training window holds an answer", task.data.root)
    return pairs.most_common(1)[0][0]


def trivial_eval(task: XqaTask, data: str | Path, suite: str, split: str) -> tuple[dict, list[dict]]:
    """Predict, for every example, the span at the most frequent training (start, end) positions,
    through the same n-best post-processing (one-hot logits) and the same scorer."""
    start, end = most_frequent_positions(task)
    cells, _ = load_cells(data, suite, split)
    pset = PredictionSet(cells, task.tokenizer, task.cfg)
    shape = (pset.n, task.cfg.data.max_seq_length)
    starts, ends = np.full(shape, -1e4, np.float32), np.full(shape, -1e4, np.float32)
    starts[:, start] = 0.0
    ends[:, end] = 0.0
    agg, examples = score_cells(
        cells, text_predictions(cells, pset.predictions(starts, ends, task.cfg)), suite, task.cfg.eval.normalization
    )
    return {**agg, "positions": [start, end]}, examples


def save_hf(model, tokenizer, out: Path) -> Path:
    """A complete Hugging Face directory (config, safetensors, tokenizer): usable as the next --init."""
    quiet_transformers()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


def steps_per_epoch_of(run: RunDir) -> int | None:
    if not run.summary.is_file():
        return None
    info = read_json(run.summary)
    return round(info["steps"] / info["epochs"]) if info.get("epochs") else None


def coefficient_shape(metrics: Path, steps_per_epoch: int | None) -> dict:
    """The coefficient curve in numbers: first / last value, range, and its mean per generation."""
    rows = sorted(
        (r for r in read_jsonl(metrics, strict=False) if r.get("split") == "train" and "map_at_k" in r),
        key=lambda r: r["step"],
    )
    if not rows:
        return {}
    values = [r["map_at_k"] for r in rows]
    per = steps_per_epoch or len(values)
    gens = [values[i : i + per] for i in range(0, len(values), per)]
    return {
        "first": round(values[0], 4),
        "last": round(values[-1], 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "mean_per_generation": [round(sum(g) / len(g), 4) for g in gens if g],
    }


def stage1_sets(data: Path) -> list[str]:
    """The paper's stage 1 ("mBERT-qa-en": CE on English SQuAD) on the synthetic English set, from the
    random tiny BERT: a higher LR than the paper's 3e-5 (and a short warm-up) because it starts from scratch."""
    return [
        "kd.method=ce",
        "epochs=4",
        "train.lr=2e-3",
        "train.warmup_steps=30",
        f"model.init={data / 'init'}",
        f"data.dev={data}",
    ]


# -- the hooks ---------------------------------------------------------------------------------------------------------
class XqaHooks(RecipeHooks):
    name = TASK_NAME
    config_class = XqaConfig
    tiny_data_note = "the synthetic multilingual QA corpus (SQuAD / XQuAD / MLQA layouts)"
    baseline = ("kd.method=ce",)  # the paper's "CLS + CE"
    prep = staticmethod(prep_stage)

    def make_task(self, cfg: XqaConfig, data_dir: str) -> XqaTask:
        """``train.max_steps = 0`` becomes ``epochs`` x steps per epoch, so a generation is exactly an
        epoch (the resolved value is what the run's config.yaml records)."""
        task = XqaTask(cfg, data_dir)
        if cfg.train.max_steps == 0:
            per_epoch = task.steps_per_epoch()
            if per_epoch == 0:
                raise SkdError(
                    f"{len(task.train_dataset())} training windows are fewer than one batch "
                    f"({cfg.train.batch_size}); lower train.batch_size",
                    data_dir,
                )
            cfg.train.max_steps = cfg.epochs * per_epoch
        return task

    def summary_extra(self, cfg: XqaConfig, data_dir: str) -> dict:
        return {
            "method": system_name(cfg),
            "init": cfg.model.init,
            "kd_loss": cfg.kd.loss,
            "temperature": cfg.kd.temperature,
            "generations": cfg.kd.generations,
            "kd_mask": cfg.kd.mask,
        }

    def write_tiny_data(self, out: Path) -> None:
        prep_stage("synthetic", None, str(out), overwrite=True)

    # -- eval ---------------------------------------------------------------------------------------------
    def evaluate_run(self, trained: Trained, opts: StageOptions) -> dict:
        suite = opts.extra.get("suite") or "mlqa"
        split = opts.extra.get("split") or "test"
        cfg, task = trained.cfg, trained.task
        device = next(trained.model.parameters()).device
        agg, examples = evaluate_model(trained.model, task.tokenizer, cfg, trained.data_dir, suite, split, device)
        result = {
            "task": TASK_NAME,
            "run_dir": str(trained.run.path),
            "method": system_name(cfg),
            **agg,
            "weights": str(trained.run.weights_for_eval()),
        }
        return record_eval(
            eval_record_dir(trained.run.path, suite, split),
            result,
            examples,
            f"{system_name(cfg)}: {suite} {split} F1 (question x context language)",
        )

    def evaluate_recorded(self, opts: StageOptions) -> dict | None:
        """`eval --compare RUN_A RUN_B`: the paper's Wilcoxon test from the two runs' recorded evaluations."""
        if not opts.extra.get("compare"):
            return None
        run_a, run_b = opts.extra["compare"]
        result = compare_runs(run_a, run_b, opts.extra.get("suite") or "mlqa", opts.extra.get("split") or "test")
        atomic_write_json(Path(run_a) / "compare.json", result)
        return result

    # -- export -------------------------------------------------------------------------------------------
    def export_spec(self, trained: Trained, opts: StageOptions) -> ExportSpec:
        cfg, model, tokenizer = trained.cfg, trained.model, trained.task.tokenizer
        d = cfg.data
        feats = build_eval_features(
            tokenizer,
            ["Who?", "What is it?", "Where?"],
            ["A short context.", "Another one, a bit longer than the first.", "Third."],
            d.max_seq_length,
            d.doc_stride,
            d.max_query_length,
        )
        t = {k: torch.from_numpy(v).long() for k, v in feats.arrays.items()}

        def inputs(a: int, b: int) -> tuple:
            return t["input_ids"][a:b], t["attention_mask"][a:b], t["token_type_ids"][a:b]

        batch = torch.export.Dim("batch", min=1, max=4096)

        def write_files(folder: Path) -> dict:
            tokenizer.save_pretrained(str(folder / "tokenizer"))
            save_hf(model, tokenizer, folder / "hf")
            return {"tokenizer": "tokenizer", "hf": "hf"}

        # Example batch of 2 (a batch of 1 would be specialised as a constant); parity on 3 and 1.
        return ExportSpec(
            SpanProgram(model).eval(),
            inputs(0, 2),
            dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
            parity_inputs=[inputs(0, 3), inputs(2, 3)],
            write_files=write_files,
            result_keys=("method",),
            manifest={
                "method": system_name(cfg),
                "max_seq_length": d.max_seq_length,
                "doc_stride": d.doc_stride,
                "max_query_length": d.max_query_length,
                "n_best": cfg.eval.n_best,
                "max_answer_length": cfg.eval.max_answer_length,
                "inputs": [
                    f"input_ids (B, {d.max_seq_length}) int64",
                    f"attention_mask (B, {d.max_seq_length}) int64",
                    f"token_type_ids (B, {d.max_seq_length}) int64",
                ],
                "outputs": [
                    f"start_logits (B, {d.max_seq_length}) float32",
                    f"end_logits (B, {d.max_seq_length}) float32",
                ],
            },
        )

    # -- run ----------------------------------------------------------------------------------------------
    def pipeline(self, p: Pipeline) -> dict:
        """Module doc: stage 1, then CE / SKD / SKD + mAP@k, each scored on the test grid, and the export."""
        root, opts = Path(p.data), p.opts
        stage1_dir = p.run.path / "systems" / "stage1"
        console.print("[cyan]stage 1:[/] English CE from the random init")
        train_stage(
            self,
            opts.but(
                command="train",
                data=str(root / "stage1"),
                run_dir=str(stage1_dir),
                sets=stage1_sets(root),
                baseline=False,
                max_steps=None,
                config=None,
                overwrite=True,
            ),
        )
        stage1 = p.run.path / "systems" / "stage1"
        first = load_trained(self, stage1, str(root), "cpu")
        stage1_hf = save_hf(first.model, first.task.tokenizer, stage1 / "hf")
        zero, zero_rows = evaluate_model(
            first.model, first.task.tokenizer, first.cfg, root, "mlqa", "test", torch.device("cpu")
        )
        record_eval(
            eval_record_dir(stage1, "mlqa", "test"),
            {"method": "zero_shot", **zero},
            zero_rows,
            "stage 1 (English CE): mlqa test F1",
        )
        main = "ce" if opts.baseline else "skd_map"
        plan = [(main, p.run.path)] + [(n, p.run.path / "systems" / n) for n in SYSTEMS if n != main]
        rows: dict[str, dict] = {"zero_shot": {k: zero[k] for k in METRICS}}
        runs: dict[str, Path] = {}
        for name, rd in plan:
            console.print(f"[cyan]stage 2 {name}[/] -> {rd}")
            trained = train_stage(
                self,
                opts.but(
                    command="train",
                    data=str(root),
                    run_dir=str(rd),
                    baseline=False,
                    sets=[*opts.sets, *SYSTEMS[name], f"model.init={stage1_hf}"],
                    overwrite=True,
                ),
            )
            ev = eval_stage(
                self,
                opts.but(
                    command="eval", data=str(root), run_dir=str(rd), sets=[], extra={"suite": "mlqa", "split": "test"}
                ),
            )
            runs[name] = rd
            rows[name] = {
                **{k: ev[k] for k in METRICS},
                "heatmap": ev["heatmap"],
                "train_seconds": trained["train_seconds"],
                "steps": trained["steps"],
            }
            if name != "ce":
                run = RunDir(rd)
                per = steps_per_epoch_of(run)
                curve = coefficient_curve(
                    run.metrics,
                    run.plots / "map_at_k.png",
                    per,
                    f"{SYSTEM_LABELS[name]}: mAP@k coefficient per step (generations dashed)",
                )
                rows[name].update(
                    coefficient=coefficient_shape(run.metrics, per), coefficient_plot=str(curve) if curve else None
                )
        ce_task = XqaTask(load_run_config(XqaConfig, RunDir(runs["ce"])), str(root), with_dev=False)
        trivial, _ = trivial_eval(ce_task, root, "mlqa", "test")
        rows["trivial"] = {k: trivial[k] for k in METRICS}
        tests = {n: compare_runs(runs[n], runs["ce"]) for n in ("skd", "skd_map")}
        exported = p.export()
        result = {
            "task": TASK_NAME,
            "run_dir": str(p.run.path),
            "method": main,
            "data": str(root),
            **{k: rows[main][k] for k in METRICS},
            "systems": rows,
            "wilcoxon_vs_ce": {n: {"gxlt": t["gxlt"], "xlt": t["xlt"]} for n, t in tests.items()},
            "export_dir": exported["export_dir"],
            "parity_max_abs_diff": exported["parity_max_abs_diff"],
        }
        atomic_write_json(p.run.path / "systems.json", result)
        return result

    def report(self, command: str, result: dict) -> Any:
        if command == "run" or (command == "eval" and "systems" in result):
            rows = [[SYSTEM_LABELS.get(n, n), *(r[k] for k in METRICS)] for n, r in result["systems"].items()]
            return metric_table(
                "xqa: synthetic MLQA-style test grid (EM / F1 x100)",
                ["system", "G-XLT EM", "G-XLT F1", "XLT EM", "XLT F1"],
                rows,
                caption=f"heatmaps: {result['run_dir']}/**/evals/mlqa-test/heatmap_f1.png",
            )
        if command == "eval" and "matrix" in result:
            langs = result["context_languages"]
            rows = [
                [q, *(result["matrix"][q].get(c, {}).get("f1", float("nan")) for c in langs)]
                for q in result["question_languages"]
            ]
            gx = "" if result.get("gxlt_f1") is None else f"G-XLT F1 {result['gxlt_f1']:.1f}, "
            return metric_table(
                f"xqa eval {result['suite']} {result['split']}: F1, question (rows) x context",
                ["q \\ c", *langs],
                rows,
                caption=f"{gx}XLT F1 {result['xlt_f1']:.1f}",
            )
        if command == "eval" and "gxlt" in result:
            rows = [
                [name, t["f1_a"], t["f1_b"], t["p_value"], "yes" if t["significant"] else "no"]
                for name, t in [("G-XLT", result["gxlt"]), ("XLT", result["xlt"]), *result["per_language"].items()]
                if t
            ]
            return metric_table(
                f"Wilcoxon signed-rank, example F1: {result['method_a']} vs {result['method_b']}",
                ["cells", "F1 A", "F1 B", "p", f"p < {result['alpha']}"],
                rows,
            )
        return None

    # -- bench --------------------------------------------------------------------------------------------
    def bench_task(self, cfg: XqaConfig, data_dir: str) -> XqaTask:
        task = self.make_task(cfg, data_dir)
        task.with_dev = False  # the bench times training steps; eval throughput is measured apart
        return task

    def bench_extra(self, make, data: str, device: torch.device, steps: int, rounds: int, timed: dict) -> dict:
        """Train tokens/s (padded windows, as the model sees them) and eval tokens/s on the dev grid."""
        task, _ = make(False)
        model = task.build_model().to(device)
        cells, _ = task.dev_cells()
        pset = PredictionSet(cells, task.tokenizer, task.cfg)
        bs = task.cfg.eval.batch_size
        batches = [{k: v[i : i + bs].long() for k, v in pset.tensors.items()} for i in range(0, pset.n, bs)]
        predict_logits(model, batches[:1], device)  # warm-up
        t0 = time.perf_counter()
        predict_logits(model, batches, device)
        eval_seconds = time.perf_counter() - t0
        seq = task.cfg.data.max_seq_length
        per_step = timed["batch_size"] * seq
        return {
            "tokens_per_step": per_step,
            "train_tokens_per_second": {k: round(per_step / (v / 1000), 1) for k, v in timed["median_step_ms"].items()},
            "eval_windows": pset.n,
            "eval_tokens_per_second": round(pset.n * seq / eval_seconds, 1),
            "goal_engine_over_hand": 1.03,
            "goal_skd_over_baseline": 1.35,
        }


# -- answer (from an export alone) -------------------------------------------------------------------------------------
class Answerer:
    def __init__(self, model_path: str | Path):
        self.program, self.manifest, folder = load_exported(model_path, TASK_NAME)
        self.tokenizer = load_tokenizer(folder / self.manifest["tokenizer"])

    def answer(self, items: list[dict], batch_size: int = 32) -> list[dict]:
        m = self.manifest
        feats = build_eval_features(
            self.tokenizer,
            [x["question"] for x in items],
            [x["context"] for x in items],
            m["max_seq_length"],
            m["doc_stride"],
            m["max_query_length"],
        )
        t = {k: torch.from_numpy(v).long() for k, v in feats.arrays.items()}
        starts, ends = [], []
        with torch.no_grad():
            for i in range(0, len(feats), batch_size):
                s, e = self.program(
                    t["input_ids"][i : i + batch_size],
                    t["attention_mask"][i : i + batch_size],
                    t["token_type_ids"][i : i + batch_size],
                )
                starts.append(s.float())
                ends.append(e.float())
        preds = postprocess_predictions(
            [x["context"] for x in items],
            feats,
            torch.cat(starts).numpy(),
            torch.cat(ends).numpy(),
            m["n_best"],
            m["max_answer_length"],
        )
        return [
            {"id": x["id"], "answer": p["text"], "score": round(p["score"], 6), "start": p["start"], "end": p["end"]}
            for x, p in zip(items, preds)
        ]


def _checked_item(qid: str, question: str, context: str, what: str, where: str) -> dict:
    if not context.strip():
        raise SkdError(f"{what}: empty context", where)
    if not question.strip():
        raise SkdError(f"{what}: empty question", where)
    return {"id": qid, "question": question, "context": context}


def read_questions(path: str, stdin: TextIO | None = None) -> list[dict]:
    """JSON lines ``{"id"?, "question", "context"}`` from a file, or stdin for '-'."""
    where = "<stdin>" if path == "-" else path
    if path == "-":
        lines = (stdin or sys.stdin).read().splitlines()
    else:
        p = Path(path)
        if not p.is_file():
            raise SkdError("file not found", p)
        lines = p.read_text(encoding="utf-8").splitlines()
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SkdError(f"line {n}: not valid JSON ({exc.msg} at column {exc.colno})", where) from exc
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("question"), str)
            or not isinstance(obj.get("context"), str)
        ):
            raise SkdError(f"line {n}: needs the string fields 'question' and 'context'", where)
        items.append(_checked_item(str(obj.get("id", n)), obj["question"], obj["context"], f"line {n}", where))
    if not items:
        raise SkdError('no questions (one JSON object per line: {"id", "question", "context"})', where)
    return items


def answer_stage(
    model: str,
    question: str | None = None,
    context: str | None = None,
    input_path: str | None = None,
    stdin: TextIO | None = None,
) -> dict:
    """Answers from an export alone: ``--question/--context``, or JSON lines from ``--input`` ('-': stdin)."""
    if (question is None) != (context is None):
        raise SkdError("--question and --context go together")
    if (question is None) == (input_path is None):
        raise SkdError("give --question and --context, or --input FILE.jsonl ('-' for stdin)")
    answerer = Answerer(model)
    if question is not None:
        items = [_checked_item("1", question, context, "--context/--question", "arguments")]
    else:
        items = read_questions(input_path, stdin)
    return {"model": str(model), "answers": answerer.answer(items)}


# -- score -------------------------------------------------------------------------------------------------------------
def score_stage(data: str, predictions: str, lang: str | None = None, normalization: str = "") -> dict:
    result = score_file(data, predictions, lang, normalization)
    result.pop("examples")
    return {"task": TASK_NAME, **result}
