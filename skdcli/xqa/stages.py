"""The xqa stages: prep -> train -> eval (suites, compare) -> export -> answer, `score`, the whole
pipeline on the tiny default, and the bench. Each returns a dict the CLI prints as a table or JSON."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from ..engine.config import build_config
from ..engine.console import console
from ..engine.distributed import resolve_device
from ..engine.errors import SkdError
from ..engine.export import export_program, load_exported
from ..engine.io import atomic_write_json, atomic_write_text
from ..engine.rundir import RunDir
from ..engine.stages import load_run_config, recorded_data_dir, start_pipeline, train_run
from ..engine.trainer import count_parameters
from .config import SUITES, XqaConfig
from .data import PreparedData, load_json_file, prepare
from .evaluation import (Cells, compare_examples, eval_record_dir, load_cells, normalization_for, recorded_eval,
                         score_cells, score_file)
from .features import build_eval_features, postprocess_predictions
from .model import SpanProgram, load_config, load_tokenizer, qa_model_from_config
from .plots import coefficient_curve, heatmap
from .recipe import TASK_NAME, PredictionSet, XqaTask, predict_cells, predict_logits

SYSTEMS = {  # the three systems of the paper's tables, as config overrides of the default (SKD + mAP@k)
    "ce": ["kd.method=ce"],
    "skd": ["kd.map_coefficient=false"],
    "skd_map": [],
}
SYSTEM_LABELS = {"zero_shot": "zero-shot (stage 1)", "ce": "CLS + CE", "skd": "CLS + SKD",
                 "skd_map": "CLS + SKD, mAP@10", "trivial": "most frequent position"}


# -- prep ----------------------------------------------------------------------------------------------------------
def prep_stage(source: str, raw: str | None, out: str, ntl: int = 5, languages: str | None = None, seed: int = 3,
               sampling: str = "sorted", keep_impossible: bool = False, split: str | None = None,
               overwrite: bool = False) -> dict:
    langs = [x for x in languages.split(",")] if languages else None
    result = prepare(source, raw, out, ntl=ntl, languages=langs, seed=seed, sampling=sampling,
                     keep_impossible=keep_impossible, split=split, overwrite=overwrite)
    return {k: v for k, v in result.items() if k not in ("generator",)}


def write_tiny_data(out_dir: str | Path) -> None:
    prepare("synthetic", None, out_dir, seed=0, overwrite=True)


# -- train ---------------------------------------------------------------------------------------------------------
def set_baseline(cfg: XqaConfig) -> None:
    """--baseline: cross-entropy only (the paper's "CLS + CE")."""
    cfg.kd.method = "ce"


def make_task(cfg: XqaConfig, data_dir: str) -> XqaTask:
    """The Task for ``data_dir``; ``train.max_steps = 0`` becomes ``epochs`` x steps per epoch, so a
    generation is exactly an epoch (the resolved value is written to the run's config.yaml)."""
    task = XqaTask(cfg, data_dir)
    per_epoch = task.steps_per_epoch()
    if per_epoch == 0:
        raise SkdError(f"{len(task.train_dataset())} training windows are fewer than one batch "
                       f"({cfg.train.batch_size}); lower train.batch_size", data_dir)
    if cfg.train.max_steps == 0:
        cfg.train.max_steps = cfg.epochs * per_epoch
    return task


def summary_extra(cfg: XqaConfig) -> dict:
    return {"method": system_name(cfg), "init": cfg.model.init, "kd_loss": cfg.kd.loss,
            "temperature": cfg.kd.temperature, "generations": cfg.kd.generations}


def system_name(cfg: XqaConfig) -> str:
    if cfg.kd.method == "ce":
        return "ce"
    name = "skd_map" if cfg.kd.map_coefficient else "skd"
    return name + ("" if cfg.kd.ce_weight > 0 else "_no_ce") + ("" if cfg.kd.generations else "_frozen")


def train_stage(data: str | None, run_dir: str, config: str | None = None, sets: list[str] | None = None,
                baseline: bool = False, seed: int | None = None, max_steps: int | None = None,
                checkpoint_every: int | None = None, resume: bool = False, device: str = "auto",
                overwrite: bool = False, show_progress: bool = True) -> dict:
    return train_run(TASK_NAME, XqaConfig, make_task, data=data, run_dir=run_dir, config=config, sets=sets,
                     baseline=set_baseline if baseline else None, seed=seed, max_steps=max_steps,
                     checkpoint_every=checkpoint_every, resume=resume, device=device, overwrite=overwrite,
                     show_progress=show_progress, summary_extra=summary_extra)


# -- loading a trained run -------------------------------------------------------------------------------------------
def load_trained_model(run: RunDir, device: torch.device) -> tuple[XqaConfig, torch.nn.Module, object]:
    run.require_trained()
    cfg = load_run_config(XqaConfig, run)
    model = qa_model_from_config(load_config(cfg.model.init))
    RunDir.load_weights(model, run.weights_for_eval())
    return cfg, model.to(device).eval(), load_tokenizer(cfg.model.init)


# -- eval ------------------------------------------------------------------------------------------------------------
def text_predictions(cells: Cells, preds: dict[tuple[str, str], list[dict]]) -> dict[tuple[str, str], dict[str, str]]:
    return {k: {r["id"]: p["text"] for r, p in zip(cells[k], v)} for k, v in preds.items()}


def record_eval(folder: Path, result: dict, examples: list[dict], title: str) -> dict:
    """result.json, examples.jsonl (one line per example: cell, id, EM, F1, prediction) and the
    question x context F1 heatmap; the result gets the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "examples.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in examples))
    png = heatmap(result, folder / "heatmap_f1.png", title)
    result = {**result, "heatmap": str(png), "examples_file": str(folder / "examples.jsonl")}
    atomic_write_json(folder / "result.json", result)
    return result


def evaluate_model(model, tokenizer, cfg: XqaConfig, data: str | Path, suite: str, split: str,
                   device: torch.device) -> tuple[dict, list[dict]]:
    if suite not in SUITES:
        raise SkdError(f"--suite must be one of {', '.join(SUITES)}, got '{suite}'")
    cells, source = load_cells(data, suite, split)
    t0 = time.perf_counter()
    pset, preds = predict_cells(model, tokenizer, cells, cfg, device)
    seconds = time.perf_counter() - t0
    agg, examples = score_cells(cells, text_predictions(cells, preds), suite, cfg.eval.normalization)
    tokens = int(pset.tensors["attention_mask"].sum()) if pset.n else 0
    agg.update(split=split, data=source, normalization=normalization_for(suite, cfg.eval.normalization),
               examples=sum(len(v) for v in cells.values()), windows=pset.n, predict_seconds=round(seconds, 3),
               eval_tokens_per_second=round(tokens / max(seconds, 1e-9), 1))
    return agg, examples


def eval_stage(run_dir: str, data: str | None = None, suite: str = "mlqa", split: str = "test",
               device: str = "auto", compare: tuple[str, str] | None = None) -> dict:
    if compare:
        return compare_stage(compare[0], compare[1], suite, split)
    run = RunDir(run_dir)
    dev = resolve_device(device)
    cfg, model, tokenizer = load_trained_model(run, dev)
    data = data or recorded_data_dir(run)
    agg, examples = evaluate_model(model, tokenizer, cfg, data, suite, split, dev)
    result = {"task": TASK_NAME, "run_dir": str(run.path), "method": system_name(cfg), **agg}
    result = record_eval(eval_record_dir(run.path, suite, split), result, examples,
                         f"{system_name(cfg)}: {suite} {split} F1 (question x context)")
    atomic_write_json(run.eval_json, result)
    return result


def compare_stage(run_a: str, run_b: str, suite: str = "mlqa", split: str = "test", alpha: float = 0.05) -> dict:
    """The paper's significance test: Wilcoxon signed-rank on example-level F1 of two evaluated runs."""
    res_a, rows_a = recorded_eval(Path(run_a), suite, split)
    res_b, rows_b = recorded_eval(Path(run_b), suite, split)
    tests = compare_examples(rows_a, rows_b, alpha)
    return {"task": TASK_NAME, "suite": suite, "split": split, "run_a": run_a, "run_b": run_b,
            "method_a": res_a.get("method"), "method_b": res_b.get("method"), **tests}


# -- the trivial baseline ----------------------------------------------------------------------------------------------
def most_frequent_positions(task: XqaTask) -> tuple[int, int]:
    """The most frequent (start, end) token positions of training windows that hold an answer."""
    arrays = task._arrays["train"]
    starts, ends = arrays["start_positions"].tolist(), arrays["end_positions"].tolist()
    pairs = Counter((s, e) for s, e in zip(starts, ends) if s > 0)
    if not pairs:
        raise SkdError("no training window holds an answer", task.data.root)
    return pairs.most_common(1)[0][0]


def trivial_eval(task: XqaTask, data: str | Path, suite: str, split: str) -> tuple[dict, list[dict]]:
    """Predict, for every example, the span at the most frequent training (start, end) positions,
    through the same n-best post-processing (one-hot logits) and the same scorer."""
    start, end = most_frequent_positions(task)
    cells, _ = load_cells(data, suite, split)
    pset = PredictionSet(cells, task.tokenizer, task.cfg)
    n, length = pset.n, task.cfg.data.max_seq_length
    starts = np.full((n, length), -1e4, np.float32)
    ends = np.full((n, length), -1e4, np.float32)
    starts[:, start] = 0.0
    ends[:, end] = 0.0
    preds = pset.predictions(starts, ends, task.cfg)
    agg, examples = score_cells(cells, text_predictions(cells, preds), suite, task.cfg.eval.normalization)
    agg["positions"] = [start, end]
    return agg, examples


# -- export ------------------------------------------------------------------------------------------------------------
def save_hf(model, tokenizer, out: Path) -> Path:
    """A complete Hugging Face directory (config, safetensors, tokenizer): usable as the next --init."""
    from .model import quiet_transformers

    quiet_transformers()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


def export_stage(run_dir: str, out: str | None = None, overwrite: bool = False) -> dict:
    run = RunDir(run_dir)
    cfg, model, tokenizer = load_trained_model(run, torch.device("cpu"))
    d = cfg.data
    feats = build_eval_features(tokenizer, ["Who?", "What is it?", "Where?"],
                                ["A short context.", "Another one, a bit longer than the first.", "Third."],
                                d.max_seq_length, d.doc_stride, d.max_query_length)
    t = {k: torch.from_numpy(v).long() for k, v in feats.arrays.items()}
    inputs = lambda a, b: (t["input_ids"][a:b], t["attention_mask"][a:b], t["token_type_ids"][a:b])  # noqa: E731
    batch = torch.export.Dim("batch", min=1, max=4096)
    out_dir = Path(out) if out else run.export_dir

    def write_extra(folder: Path) -> dict:
        tokenizer.save_pretrained(str(folder / "tokenizer"))
        save_hf(model, tokenizer, folder / "hf")
        return {"task": TASK_NAME, "method": system_name(cfg), "tokenizer": "tokenizer", "hf": "hf",
                "max_seq_length": d.max_seq_length, "doc_stride": d.doc_stride,
                "max_query_length": d.max_query_length, "n_best": cfg.eval.n_best,
                "max_answer_length": cfg.eval.max_answer_length,
                "inputs": ["input_ids (B, max_seq_length) int64", "attention_mask (B, max_seq_length) int64",
                           "token_type_ids (B, max_seq_length) int64"],
                "outputs": ["start_logits (B, max_seq_length) float32", "end_logits (B, max_seq_length) float32"],
                "parameters": count_parameters(model)}

    manifest = export_program(SpanProgram(model).eval(), inputs(0, 2), out_dir,
                              dynamic_shapes=({0: batch}, {0: batch}, {0: batch}), write_extra=write_extra,
                              overwrite=overwrite, parity_inputs=[inputs(0, 3), inputs(2, 3)])
    return {"task": TASK_NAME, "export_dir": str(out_dir), "method": manifest["method"],
            "parameters": manifest["parameters"], "parity_max_abs_diff": manifest["parity"]["max_abs_diff"],
            "files": sorted(manifest["files"])}


# -- answer (from an export alone) ----------------------------------------------------------------------------------------
class Answerer:
    def __init__(self, model_path: str | Path):
        self.program, self.manifest, folder = load_exported(model_path)
        if self.manifest.get("task") != TASK_NAME:
            raise SkdError(f"not an xqa export (task={self.manifest.get('task')})", folder)
        self.tokenizer = load_tokenizer(folder / self.manifest["tokenizer"])
        self.m = self.manifest

    def answer(self, items: list[dict], batch_size: int = 32) -> list[dict]:
        m = self.m
        feats = build_eval_features(self.tokenizer, [x["question"] for x in items], [x["context"] for x in items],
                                    m["max_seq_length"], m["doc_stride"], m["max_query_length"])
        t = {k: torch.from_numpy(v).long() for k, v in feats.arrays.items()}
        batches = ({k: v[i:i + batch_size] for k, v in t.items()} for i in range(0, len(feats), batch_size))
        starts, ends = [], []
        with torch.no_grad():
            for b in batches:
                s, e = self.program(b["input_ids"], b["attention_mask"], b["token_type_ids"])
                starts.append(s.float())
                ends.append(e.float())
        start_logits, end_logits = torch.cat(starts).numpy(), torch.cat(ends).numpy()
        preds = postprocess_predictions([x["context"] for x in items], feats, start_logits, end_logits,
                                        m["n_best"], m["max_answer_length"])
        return [{"id": x["id"], "answer": p["text"], "score": round(p["score"], 6), "start": p["start"],
                 "end": p["end"]} for x, p in zip(items, preds)]


def read_questions(path: str | None, stdin: TextIO | None = None) -> tuple[list[dict], str]:
    """JSONL lines ``{"id"?, "question", "context"}`` from a file or stdin ('-')."""
    where = "<stdin>" if path in (None, "-") else str(path)
    if path in (None, "-"):
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
        if not isinstance(obj, dict) or not isinstance(obj.get("question"), str) or \
                not isinstance(obj.get("context"), str):
            raise SkdError(f"line {n}: needs string fields 'question' and 'context'", where)
        items.append(_checked_item(str(obj.get("id", n)), obj["question"], obj["context"], f"line {n}", where))
    if not items:
        raise SkdError("no questions (one JSON object per line: {\"id\", \"question\", \"context\"})", where)
    return items, where


def _checked_item(qid: str, question: str, context: str, what: str, where: str) -> dict:
    if not context.strip():
        raise SkdError(f"{what}: empty context", where)
    if not question.strip():
        raise SkdError(f"{what}: empty question", where)
    return {"id": qid, "question": question, "context": context}


def answer_stage(model: str, question: str | None = None, context: str | None = None, input_path: str | None = None,
                 stream: TextIO | None = None, stdin: TextIO | None = None) -> dict:
    """Answer from an export alone: ``--question/--context`` or JSONL in (a file or '-'); ``stream``
    gets one JSON line per input (id, answer, score, start, end characters)."""
    if (question is None) != (context is None):
        raise SkdError("--question and --context go together")
    if question is not None and input_path is not None:
        raise SkdError("give --question/--context or --input, not both")
    answerer = Answerer(model)
    if question is not None:
        items = [_checked_item("1", question, context, "--context/--question", "argument")]
    else:
        items, _ = read_questions(input_path, stdin)
    results = answerer.answer(items)
    if stream is not None:
        for r in results:
            stream.write(json.dumps(r, ensure_ascii=False) + "\n")
        stream.flush()
    return {"model": str(model), "answers": results}


# -- score --------------------------------------------------------------------------------------------------------------
def score_stage(data: str, predictions: str, lang: str | None = None, normalization: str = "") -> dict:
    result = score_file(data, predictions, lang, normalization)
    result.pop("examples")
    return result


def read_predictions(path: str | Path) -> dict[str, str]:
    preds = load_json_file(Path(path))
    if not isinstance(preds, dict):
        raise SkdError("predictions must be a JSON object {id: answer}", path)
    return preds


# -- the whole pipeline on the tiny default -------------------------------------------------------------------------------
def stage1_sets(data: Path) -> list[str]:
    """The paper's stage 1 ("mBERT-qa-en": CE on English SQuAD) on the synthetic English set, from
    the random tiny BERT; a higher LR than the paper's 3e-5 because the tiny model starts from scratch."""
    return ["kd.method=ce", "epochs=3", "train.lr=1e-3", f"model.init={data / 'init'}", f"data.dev={data}"]


def run_pipeline(run_dir: str, data: str | None = None, seed: int | None = None, max_steps: int | None = None,
                 sets: list[str] | None = None, device: str = "auto", overwrite: bool = False,
                 config: str | None = None, baseline: bool = False, show_progress: bool = True) -> dict:
    """Synthetic corpus -> stage 1 (English CE) -> stage 2: CE, SKD and SKD + mAP@k from the stage-1
    model -> MLQA-style test grid for each (plus the stage-1 zero-shot model and the most-frequent-
    position baseline) -> Wilcoxon tests vs CE -> export the SKD + mAP@k model (CE with --baseline)."""
    t0 = time.perf_counter()
    run, data = start_pipeline(run_dir, data, overwrite, write_tiny_data, "the synthetic multilingual QA corpus")
    root = Path(data)
    prepared = PreparedData.open(root)
    dev = resolve_device(device)
    systems_dir = run.path / "systems"
    stage1_dir = systems_dir / "stage1"
    console.print("[cyan]stage 1:[/] English CE from the random init")
    train_stage(str(root / "stage1"), str(stage1_dir), sets=stage1_sets(root), seed=seed, device=device,
                overwrite=True, show_progress=show_progress)
    cfg1, model1, tok1 = load_trained_model(RunDir(stage1_dir), dev)
    stage1_hf = save_hf(model1.cpu(), tok1, stage1_dir / "hf")
    main = "ce" if baseline else "skd_map"
    plan = [(main, run.path)] + [(name, systems_dir / name) for name in SYSTEMS if name != main]
    rows, evals = {}, {}
    for name, rd in plan:
        console.print(f"[cyan]stage 2 {name}[/] -> {rd}")
        trained = train_stage(str(root), str(rd), config=config,
                              sets=[*(sets or []), *SYSTEMS[name], f"model.init={stage1_hf}"],
                              seed=seed, max_steps=max_steps, device=device, overwrite=True,
                              show_progress=show_progress)
        ev = eval_stage(str(rd), str(root), "mlqa", "test", device)
        evals[name] = rd
        rows[name] = {**_row(ev), "train_seconds": trained["train_seconds"], "steps": trained["steps"]}
        if name != "ce":
            curve = coefficient_curve(RunDir(rd).metrics, RunDir(rd).plots / "map_at_k.png", _steps_per_epoch(rd),
                                      f"{SYSTEM_LABELS[name]}: mAP@k coefficient per step")
            rows[name]["coefficient_plot"] = str(curve) if curve else None
            rows[name]["coefficient"] = coefficient_shape(RunDir(rd).metrics, _steps_per_epoch(rd))
    zs, zs_examples = evaluate_model(model1, tok1, cfg1, root, "mlqa", "test", dev)
    zs = record_eval(eval_record_dir(stage1_dir, "mlqa", "test"), {"method": "zero_shot", **zs}, zs_examples,
                     "stage 1 (English CE): mlqa test F1")
    rows = {"zero_shot": _row(zs), **rows}
    task = XqaTask(load_run_config(XqaConfig, RunDir(evals["ce"])), str(root), with_dev=False)
    triv, triv_examples = trivial_eval(task, root, "mlqa", "test")
    rows["trivial"] = _row(triv)
    tests = {name: compare_stage(str(evals[name]), str(evals["ce"]))
             for name in ("skd", "skd_map") if name in evals}
    console.print("[cyan]export[/]")
    exported = export_stage(str(run.path), overwrite=True)
    result = {"task": TASK_NAME, "run_dir": str(run.path), "method": main, "data": str(root),
              "train_examples": prepared.info.get("train_examples"), "systems": rows,
              "wilcoxon_vs_ce": {k: {"gxlt": v["gxlt"], "xlt": v["xlt"]} for k, v in tests.items()},
              "export_dir": exported["export_dir"], "parity_max_abs_diff": exported["parity_max_abs_diff"],
              "gxlt_f1": rows[main]["gxlt_f1"], "gxlt_em": rows[main]["gxlt_em"],
              "xlt_f1": rows[main]["xlt_f1"], "xlt_em": rows[main]["xlt_em"],
              "total_seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(run.path / "systems.json", result)
    return result


def _steps_per_epoch(rd: Path) -> int | None:
    summary = RunDir(rd).summary
    if not summary.is_file():
        return None
    info = json.loads(summary.read_text())
    return round(info["steps"] / info["epochs"]) if info.get("epochs") else None


def coefficient_shape(metrics: Path, steps_per_epoch: int | None) -> dict:
    """The coefficient curve in numbers: mean per generation (epoch), first and last values."""
    from ..engine.io import read_jsonl

    rows = [r for r in read_jsonl(metrics, strict=False) if r.get("split") == "train" and "map_at_k" in r]
    if not rows:
        return {}
    values = [r["map_at_k"] for r in sorted(rows, key=lambda r: r["step"])]
    per = steps_per_epoch or len(values)
    gens = [values[i:i + per] for i in range(0, len(values), per)]
    return {"first": values[0], "last": values[-1], "min": min(values), "max": max(values),
            "mean_per_generation": [round(sum(g) / len(g), 4) for g in gens if g]}


def _row(ev: dict) -> dict:
    return {k: ev.get(k) for k in ("gxlt_em", "gxlt_f1", "xlt_em", "xlt_f1", "heatmap")}


def print_summary(result: dict) -> None:
    from rich.table import Table

    table = Table(title="xqa on the synthetic MLQA-style test grid (EM / F1, x100)")
    for col in ("system", "G-XLT EM", "G-XLT F1", "XLT EM", "XLT F1"):
        table.add_column(col)
    for name, r in result["systems"].items():
        table.add_row(SYSTEM_LABELS.get(name, name), *(f"{r[k]:.1f}" for k in ("gxlt_em", "gxlt_f1", "xlt_em", "xlt_f1")))
    console.print(table)


# -- bench ----------------------------------------------------------------------------------------------------------------
def bench_stage(data: str | None, steps: int, rounds: int, device: str, sets: list[str] | None = None) -> dict:
    """Engine vs hand loop, SKD (+ teacher forward) vs CE step time; train and eval tokens/s."""
    import tempfile

    from ..engine.bench import benchmark

    dev = resolve_device(device)
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            data = str(Path(tmp) / "data")
            with console.status("writing the synthetic corpus"):
                write_tiny_data(data)

        def make(baseline: bool):
            cfg = build_config(XqaConfig, None, sets)
            if baseline:
                set_baseline(cfg)
            task = make_task(cfg, data)
            task.with_dev = False
            return task, cfg.train

        result = benchmark(make, dev, steps=steps, rounds=rounds)
        task, cfg = make(False)
        model = task.build_model().to(dev)
        pset = PredictionSet(task.dev_cells()[0], task.tokenizer, task.cfg)
        bs = task.cfg.eval.batch_size
        batches = [{k: v[i:i + bs].long() for k, v in pset.tensors.items()} for i in range(0, pset.n, bs)]
        predict_logits(model, batches[:1], dev)  # warm-up
        t0 = time.perf_counter()
        predict_logits(model, batches, dev)
        eval_seconds = time.perf_counter() - t0
    seq = task.cfg.data.max_seq_length
    ms = result["median_step_ms"]
    per_step = result["batch_size"] * seq
    return {"task": TASK_NAME, **result, "tokens_per_step": per_step,
            "train_tokens_per_second": {k: round(per_step / (v / 1000), 1) for k, v in ms.items()},
            "eval_windows": pset.n, "eval_tokens_per_second": round(pset.n * seq / eval_seconds, 1),
            "goal_engine_over_hand": 1.03, "goal_skd_over_baseline": 1.35}
