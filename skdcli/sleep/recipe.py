"""The sleep stages: prep -> train (--repeats) -> eval (--cross-dataset) -> export -> score, and
`run` = all of them on two synthetic datasets in the real formats (SHHS-like -> Sleep-EDF-like).

The engine does the training; this file wires data, the Siamese views, the loss and the
class-aware sampler into a ``Task``.
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..engine.cliutil import is_main_process
from ..engine.config import build_config
from ..engine.console import console, progress_bar
from ..engine.distributed import resolve_device
from ..engine.errors import SkdError
from ..engine.export import export_program, load_exported
from ..engine.io import atomic_write, atomic_write_json, atomic_write_text, read_json
from ..engine.rundir import RunDir
from ..engine.schedules import Progress
from ..engine.stages import load_run_config, recorded_data_dir, train_run
from ..engine.trainer import Task, count_parameters
from .config import STAGES, KDConfig, SleepConfig
from .normalisation import DEFAULT_NORMALISATION
from .data import SOURCES, PreparedSleep, WindowDataset, night_windows, prepare_dataset, read_recording_epochs, scored_span
from .formats import EPOCH_SECONDS, read_edf_channel, read_edf_hypnogram, read_shhs_xml, write_edf_hypnogram
from .loss import siamese_self_kd_loss
from .metrics import cross_validation_summary, mean_std, priors, sleep_metrics, sleep_statistics
from .model import SleepTransformer
from .plots import plot_hypnogram
from .sampling import WindowBalancer

TASK_NAME = "sleep"


# -- the Siamese views ----------------------------------------------------------------------------------
def augment(x: torch.Tensor, kd: KDConfig, fs: int) -> torch.Tensor:
    """One random view of (B, L, S) windows: amplitude scale, circular time shift of each 30-s epoch,
    gaussian noise. Draws from torch's RNG, which the engine reseeds every step (exact resume)."""
    b, l, s = x.shape
    scale = 1 + kd.aug_amplitude * (2 * torch.rand(b, 1, 1, device=x.device) - 1)
    max_shift = int(kd.aug_shift_seconds * fs)
    if max_shift > 0:
        shift = torch.randint(-max_shift, max_shift + 1, (b, 1, 1), device=x.device)
        idx = (torch.arange(s, device=x.device).view(1, 1, s) - shift) % s
        x = x.gather(2, idx.expand(b, l, s))
    return x * scale + kd.aug_noise * torch.randn_like(x)


# -- the Task the engine trains -----------------------------------------------------------------------------
class SleepTask(Task):
    best_metric, best_mode = "macro_f1", "max"

    def __init__(self, cfg: SleepConfig, data_dir: str | Path):
        self.cfg = cfg
        self.data = PreparedSleep(data_dir)
        parts = self.data.partition(cfg.data)  # whole subjects (splits.py); a fold's test subjects are never seen
        self.train_set = WindowDataset(parts.train, cfg.data.seq_len)
        self.dev_set = WindowDataset(parts.dev, cfg.data.seq_len) if parts.dev else None
        if len(self.train_set) == 0:
            raise SkdError(f"no training window of data.seq_len={cfg.data.seq_len} epochs", data_dir)
        self.data_fingerprint = self.data.info.get("fingerprint")
        self._balancers: dict[int, WindowBalancer] = {}
        self._last_order: tuple = (None, None)

    def build_model(self) -> SleepTransformer:
        return SleepTransformer(self.cfg.model, self.data.fs * EPOCH_SECONDS, self.cfg.data.seq_len)

    def train_dataset(self) -> WindowDataset:
        return self.train_set

    def eval_dataset(self) -> WindowDataset | None:
        return self.dev_set

    def epoch_order(self, dataset, seed: int, epoch: int, global_batch: int) -> list[int] | None:
        """balanced / selective: batches balanced on the epochs the loss sees (sampling.py). The
        engine asks for the same epoch more than once (its sampler's __iter__ and the hook check):
        the last order is kept."""
        sampler = self.cfg.sampler
        if sampler.kind == "random":
            return None
        key = (id(dataset), seed, epoch, global_batch)
        if self._last_order[0] != key:
            if id(dataset) not in self._balancers:
                power = 0.0 if sampler.kind == "balanced" else sampler.power
                self._balancers[id(dataset)] = WindowBalancer(dataset.epoch_labels, dataset.window_starts,
                                                              dataset.seq_len, power, sampler.candidates)
            self._last_order = (key, self._balancers[id(dataset)].order(global_batch, seed, epoch))
        return self._last_order[1]

    def compute_loss(self, model, batch: dict, progress: Progress):
        kd, x, y = self.cfg.kd, batch["x"], batch["y"]
        view = (lambda: augment(x, kd, self.data.fs)) if kd.siamese_view == "augment" else (lambda: x)
        if kd.method == "ce":
            return siamese_self_kd_loss(model(view()), None, y, kd)
        logits = model(torch.cat([view(), view()]))  # both branches in one pass: same weights, own dropout masks
        return siamese_self_kd_loss(logits[: len(x)], logits[len(x):], y, kd)

    def evaluate(self, model, loader, device) -> dict[str, float]:
        nights = loader.dataset.nights
        probs = predict_nights(model, (n.x for n in nights), self.cfg, device)  # one night mapped at a time
        scores = sleep_metrics(np.concatenate([n.y for n in nights]), np.concatenate([p.argmax(1) for p in probs]))
        return {k: scores[k] for k in ("accuracy", "macro_f1", "kappa")}


# -- whole-night inference ---------------------------------------------------------------------------------------
def predict_nights(model, nights: Iterable[np.ndarray], cfg: SleepConfig, device: torch.device,
                   batch_size: int = 64) -> list[np.ndarray]:
    """Per-epoch stage probabilities of each night: windows of seq_len every eval.stride epochs,
    each epoch's softmax averaged over the windows that contain it. `model` may be an exported
    program (fixed window length, any batch)."""
    L, out = cfg.data.seq_len, []
    for x in nights:
        n = len(x)
        if n < L:  # a night shorter than one window: pad with zero (= mean) epochs
            x = np.concatenate([x, np.zeros((L - n, x.shape[1]), x.dtype)])
        starts = night_windows(len(x), L, cfg.eval.stride)
        total = np.zeros((len(x), len(STAGES)))
        count = np.zeros((len(x), 1))
        for k in range(0, len(starts), batch_size):
            chunk = starts[k:k + batch_size]
            windows = torch.from_numpy(np.stack([x[s:s + L] for s in chunk])).to(device)
            with torch.no_grad():
                p = torch.softmax(model(windows).float(), -1).cpu().numpy()
            for s, pw in zip(chunk, p):
                total[s:s + L] += pw
                count[s:s + L] += 1
        out.append((total / count)[:n])
    return out


# -- stages ---------------------------------------------------------------------------------------------------------
def _progress_callback(bar):
    ids: dict[str, int] = {}

    def progress(advance: int, total: int, description: str) -> None:
        if description not in ids:
            ids[description] = bar.add_task(description, total=total, info="")
        bar.update(ids[description], advance=advance, total=total)
    return progress


def prep_stage(source: str, raw: str | None, out: str, channel: str | None = None, fs: int = 100,
               trim_wake: bool = True, subjects: str | None = None, overwrite: bool = False,
               normalisation: str = DEFAULT_NORMALISATION, fallbacks: tuple[str, ...] | None = None) -> dict:
    if source not in SOURCES:  # the unknown name first: "needs --raw" would mislead
        raise SkdError(f"--source must be one of {', '.join(SOURCES)}, got '{source}'")
    if not raw:
        raise SkdError(f"--source {source} needs --raw DIR")
    bar = progress_bar(transient=True)
    with bar:
        result = prepare_dataset(source, raw, out, channel=channel, fs=fs, trim_wake=trim_wake, subjects=subjects,
                                 normalisation=normalisation, fallbacks=fallbacks, overwrite=overwrite,
                                 progress=_progress_callback(bar))
    for w in result["warnings"][:10]:
        console.print(f"[yellow]warning:[/] {w['id']}: {w['warning']}", highlight=False)
    if result["skipped"]:
        console.print(f"[yellow]skipped {result['skipped']} recording(s), listed with the reason in "
                      f"{result['skipped_list']}", highlight=False)
    return result


def configure(cfg: SleepConfig, baseline: bool, sampler: str | None) -> None:
    """--baseline: plain CE on one branch with the engine's random batches; --sampler overrides the sampler."""
    if baseline:
        cfg.kd.method = "ce"
        cfg.sampler.kind = "random"
    if sampler:
        cfg.sampler.kind = sampler
    cfg.validate()


def _summary_extra(data: str):
    info = read_json(Path(data) / "prep.json")
    return lambda cfg: {"kd_method": cfg.kd.method, "sampler": cfg.sampler.kind, "fs": info["fs"],
                        "channel": info["channel"], "source": info["source"], "train_priors": info["class_priors"],
                        "normalisation": info["normalisation"], "trim_minutes": info["trim_minutes"]}


def train_stage(data: str | None, run_dir: str, config: str | None = None, sets: list[str] | None = None,
                baseline: bool = False, sampler: str | None = None, seed: int | None = None,
                max_steps: int | None = None, checkpoint_every: int | None = None, resume: bool = False,
                device: str = "auto", overwrite: bool = False, repeats: int = 1, eval_data: str | None = None) -> dict:
    if repeats > 1:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise SkdError("--repeats trains the seeds one after another in one process; under torchrun launch "
                           "one `skd sleep train --seed S` per seed (recipes/sleep/run.sh does)")
        return repeat_stage(data, run_dir, repeats, eval_data, config, sets, baseline, sampler, seed, max_steps,
                            device, overwrite)
    if resume and not data:
        data = recorded_data_dir(RunDir(run_dir))
    extra = _summary_extra(data) if data and (Path(data) / "prep.json").is_file() else None
    summary = train_run(TASK_NAME, SleepConfig, SleepTask, data=data, run_dir=run_dir, config=config, sets=sets,
                        baseline=(lambda cfg: configure(cfg, baseline, sampler)) if (baseline or sampler) else None,
                        seed=seed, max_steps=max_steps, checkpoint_every=checkpoint_every, resume=resume,
                        device=device, overwrite=overwrite, summary_extra=extra)
    if eval_data and is_main_process():
        summary["cross_dataset"] = {k: v for k, v in eval_stage(run_dir, eval_data, True, device).items()
                                    if k in ("accuracy", "macro_f1", "kappa", "per_class_f1")}
    return summary


def repeat_stage(data: str | None, run_dir: str, repeats: int, eval_data: str | None, config=None, sets=None,
                 baseline=False, sampler=None, seed=None, max_steps=None, device="auto", overwrite=False) -> dict:
    """N seeds -> RUN_DIR/seed<k>, each evaluated (cross-dataset on --eval-data when given):
    mean ± sample std of accuracy / macro-F1 / kappa / per-stage F1, the paper's robustness figure."""
    first = 0 if seed is None else seed
    runs = []
    for k in range(repeats):
        sub = str(Path(run_dir) / f"seed{first + k}")
        console.print(f"[cyan]repeat {k + 1}/{repeats}:[/] seed {first + k} -> {sub}")
        if (Path(sub) / "train_summary.json").is_file() and not overwrite:
            console.print(f"[cyan]  finished run in {sub}: reused (--overwrite retrains)")
        else:
            train_run(TASK_NAME, SleepConfig, SleepTask, data=data, run_dir=sub, config=config, sets=sets,
                      baseline=(lambda cfg: configure(cfg, baseline, sampler)) if (baseline or sampler) else None,
                      seed=first + k, max_steps=max_steps, device=device, overwrite=overwrite,
                      summary_extra=_summary_extra(data) if data else None)
        runs.append(eval_stage(sub, eval_data, cross_dataset=bool(eval_data), device=device))
    cfg = load_run_config(SleepConfig, RunDir(runs[0]["run_dir"]))
    result = {"task": TASK_NAME, "run_dir": str(run_dir), "repeats": repeats, "seeds": list(range(first, first + repeats)),
              "kd_method": cfg.kd.method, "sampler": cfg.sampler.kind,
              "eval_data": runs[0]["data"], "cross_dataset": bool(eval_data), "std": "sample (ddof=1)",
              **{m: mean_std([r[m] for r in runs]) for m in ("accuracy", "macro_f1", "kappa")},
              "per_class_f1": {s: mean_std([r["per_class_f1"][s] for r in runs]) for s in STAGES}}
    atomic_write_json(Path(run_dir) / "repeats.json", result)
    return result


def folds_stage(data: str | None, run_dir: str, folds: int, config=None, sets=None, baseline=False, sampler=None,
                seed=None, max_steps=None, device="auto", overwrite=False) -> dict:
    """Subject-wise K-fold cross-validation (splits.py): fold k trains on the other folds' subjects
    into RUN_DIR/fold<k> (dev subjects from those), `eval` scores fold k's test subjects; the result
    is the per-fold table, mean ± sample std over folds and the pooled metrics (RUN_DIR/folds.json)."""
    if not data:
        raise SkdError("--folds needs --data DIR (the prepared dataset to cross-validate on)")
    if folds < 2:
        raise SkdError(f"--folds must be >= 2, got {folds}")
    evals = []
    for k in range(folds):
        sub = str(Path(run_dir) / f"fold{k}")
        console.print(f"[cyan]fold {k + 1}/{folds}[/] -> {sub}")
        if (Path(sub) / "train_summary.json").is_file() and not overwrite:
            console.print(f"[cyan]  finished run in {sub}: reused (--overwrite retrains)")
        else:
            train_run(TASK_NAME, SleepConfig, SleepTask, data=data, run_dir=sub, config=config,
                      sets=[*(sets or []), f"data.folds={folds}", f"data.fold={k}"],
                      baseline=(lambda cfg: configure(cfg, baseline, sampler)) if (baseline or sampler) else None,
                      seed=seed, max_steps=max_steps, device=device, overwrite=overwrite,
                      summary_extra=_summary_extra(data))
        evals.append(eval_stage(sub, device=device))
    cfg = load_run_config(SleepConfig, RunDir(evals[0]["run_dir"]))
    result = {"task": TASK_NAME, "run_dir": str(run_dir), "data": evals[0]["data"], "kd_method": cfg.kd.method,
              "sampler": cfg.sampler.kind, "protocol": "subject-wise K-fold (sorted subjects, contiguous groups)",
              **cross_validation_summary(evals)}
    atomic_write_json(Path(run_dir) / "folds.json", result)
    return result


def load_model(run: RunDir, cfg: SleepConfig, data: PreparedSleep, device: torch.device) -> SleepTransformer:
    model = SleepTransformer(cfg.model, data.fs * EPOCH_SECONDS, cfg.data.seq_len)
    RunDir.load_weights(model, run.weights_for_eval())
    return model.to(device).eval()


def eval_stage(run_dir: str, data: str | None = None, cross_dataset: bool = False, device: str = "auto") -> dict:
    run = RunDir(run_dir)
    run.require_trained()
    cfg = load_run_config(SleepConfig, run)
    train_data = recorded_data_dir(run)
    if cross_dataset and not data:
        raise SkdError("--cross-dataset needs --data DIR (the other prepared dataset, e.g. Sleep-EDF)")
    data = data or train_data
    test = PreparedSleep(data)
    summary = read_json(run.summary)
    train_fs = summary.get("fs", test.fs)
    if test.fs != train_fs:
        raise SkdError(f"mismatched sampling rates: the model was trained at {train_fs} Hz but this dataset was "
                       f"prepared at {test.fs} Hz (re-run prep with --fs {train_fs})", data)
    train_rule = (summary.get("normalisation") or {}).get("rule", test.normalisation)
    if test.normalisation != train_rule:
        raise SkdError(f"mismatched normalisation: the model was trained on '{train_rule}' data but this dataset was "
                       f"prepared with '{test.normalisation}' (re-run prep with --normalisation {train_rule})", data)
    same = Path(data).resolve() == Path(train_data).resolve()
    if same and cross_dataset:
        raise SkdError("--cross-dataset needs a dataset other than the one the run trained on", data)
    split, nights = test.held_out(cfg.data) if same else ("all", test.nights)
    if not nights:
        raise SkdError("no held-out subjects to evaluate (data.dev_fraction=0 or a single subject); pass --data", data)
    dev = resolve_device(device)
    model = load_model(run, cfg, test, dev)
    t0 = time.perf_counter()
    probs = predict_nights(model, (n.x for n in nights), cfg, dev)
    seconds = time.perf_counter() - t0
    y_true = np.concatenate([n.y for n in nights])
    y_pred = np.concatenate([p.argmax(1) for p in probs])
    scores = sleep_metrics(y_true, y_pred)
    y_true, y_pred = y_true[y_true >= 0], y_pred[y_true >= 0]  # unscored epochs in a night are context only
    result = {"task": TASK_NAME, "run_dir": str(run.path), "data": str(Path(data).resolve()),
              "cross_dataset": not same, "split": split, "recordings": len(nights),
              "subjects": sorted({n.subject for n in nights}),
              "kd_method": cfg.kd.method, "sampler": cfg.sampler.kind, **scores,
              "priors": {"train": summary.get("train_priors"), "test_true": priors(y_true), "test_predicted": priors(y_pred)},
              "train_source": summary.get("source"), "test_source": test.info.get("source"),
              "epochs_per_second": round(len(y_true) / max(seconds, 1e-9), 1), "weights": str(run.weights_for_eval())}
    atomic_write_json(run.path / ("eval_cross.json" if not same else "eval.json"), result)
    return result


def export_stage(run_dir: str, out: str | None = None, overwrite: bool = False) -> dict:
    run = RunDir(run_dir)
    run.require_trained()
    cfg = load_run_config(SleepConfig, run)
    summary = read_json(run.summary)
    fs = int(summary["fs"])
    model = SleepTransformer(cfg.model, fs * EPOCH_SECONDS, cfg.data.seq_len)
    RunDir.load_weights(model, run.weights_for_eval())
    model.eval()
    L, S = cfg.data.seq_len, fs * EPOCH_SECONDS
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, L, S, generator=gen)
    batch = torch.export.Dim("windows", min=1, max=4096)
    out_dir = Path(out) if out else run.export_dir

    def write_extra(folder: Path) -> dict:
        return {"task": TASK_NAME, "fs": fs, "seq_len": L, "channel": summary.get("channel"),
                "stages": STAGES, "eval_stride": cfg.eval.stride, "train_source": summary.get("source"),
                "normalisation": summary["normalisation"], "trim_minutes": summary["trim_minutes"],
                "inputs": [f"windows (B, {L}, {S}) float32"], "outputs": [f"logits (B, {L}, {len(STAGES)})"],
                "parameters": count_parameters(model)}

    manifest = export_program(model, (example,), out_dir, dynamic_shapes=({0: batch},), write_extra=write_extra,
                              overwrite=overwrite, parity_inputs=[(torch.randn(5, L, S, generator=gen),),
                                                                  (torch.randn(1, L, S, generator=gen),)])
    return {"task": TASK_NAME, "export_dir": str(out_dir), "parameters": manifest["parameters"],
            "parity_max_abs_diff": manifest["parity"]["max_abs_diff"], "files": sorted(manifest["files"])}


def score_stage(model_path: str, edf: str, out: str, channel: str | None = None, hypnogram: str | None = None,
                overwrite: bool = False) -> dict:
    """Stage a new recording with an export alone: CSV (one row per 30-s epoch, probabilities),
    an EDF+ hypnogram like Sleep-EDF's, a PNG hypnogram (true vs predicted with --hypnogram), and
    the sleep statistics (metrics.sleep_statistics: TST, SE, SOL, WASO, REM latency, minutes and
    percent per stage) of the predicted hypnogram and, with --hypnogram, of the true one, both over
    the whole recording as time in bed (no lights-off/on markers are read).

    The night is read and normalised by the export's recorded rule over the whole recording, as
    prep did for the training data (data.read_recording_epochs). With --hypnogram the metrics
    are given twice: on the epochs `eval` would score (the export's wake-trimming rule applied to
    the true scoring; the predictions still come from the whole night, so the span's first and
    last windows see their real neighbours) and on every scored epoch of the night."""
    module, manifest, folder = load_exported(model_path)
    if manifest.get("task") != TASK_NAME:
        raise SkdError(f"not a sleep export (task={manifest.get('task')})", folder)
    rule = manifest.get("normalisation")
    if not isinstance(rule, dict) or "rule" not in rule:
        raise SkdError("export records no normalisation rule (made by an older skd); re-run `skd sleep export`", folder)
    out_csv = Path(out)
    out_edf, out_png = out_csv.with_suffix(".edf"), out_csv.with_suffix(".png")
    for p in (out_csv, out_edf, out_png):
        if p.exists() and not overwrite:
            raise SkdError("already exists; pass --overwrite to replace it", p)
    sig, x, _ = read_recording_epochs(edf, channel or manifest["channel"], int(manifest["fs"]), rule["rule"])
    n = len(x)
    if n == 0:
        raise SkdError("recording is shorter than one 30-s epoch", edf)
    cfg = SleepConfig()
    cfg.data.seq_len, cfg.eval.stride = int(manifest["seq_len"]), int(manifest.get("eval_stride", 1))
    probs = predict_nights(module, [x], cfg, torch.device("cpu"))[0]
    pred = probs.argmax(1)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", "onset_s", "stage"] + [f"p_{s}" for s in STAGES])
    for i, (s, p) in enumerate(zip(pred, probs)):
        writer.writerow([i, i * EPOCH_SECONDS, STAGES[s]] + [f"{v:.4f}" for v in p])
    atomic_write_text(out_csv, buf.getvalue())
    atomic_write(out_edf, lambda p: write_edf_hypnogram(p, pred, sig.start))
    result = {"edf": str(edf), "channel": sig.channel, "epochs": int(n), "normalisation": rule["rule"],
              "csv": str(out_csv), "hypnogram_edf": str(out_edf), "png": str(out_png), "predicted_priors": priors(pred),
              "sleep_statistics": {"predicted": sleep_statistics(pred)}}
    true = None
    if hypnogram:
        hyp = read_shhs_xml(hypnogram) if hypnogram.lower().endswith(".xml") else read_edf_hypnogram(hypnogram)
        true = np.full(n, -1)
        m = min(n, len(hyp.labels))
        true[:m] = np.where(hyp.labels[:m] >= 0, hyp.labels[:m], -1)
        result.update(score_against(true, pred, float(manifest.get("trim_minutes", 0.0))))
        result["sleep_statistics"]["true"] = sleep_statistics(true)
    plot_hypnogram(out_png, pred, true, title=Path(edf).name)
    return result


def score_against(true: np.ndarray, pred: np.ndarray, trim_minutes: float) -> dict:
    """Metrics of a scored night: on eval's epochs (the trimmed span's scored epochs) at the top
    level, and on every scored epoch of the night under `whole_night`."""
    keys = ("accuracy", "macro_f1", "kappa", "epochs")
    out: dict = {}
    span = scored_span(true, trim_minutes)
    if span is not None:
        first, last = span
        in_span = np.full(len(true), -1)
        in_span[first:last + 1] = true[first:last + 1]
        s = sleep_metrics(in_span, pred)
        out.update({k: s[k] for k in keys if k != "epochs"}, scored_epochs=s["epochs"], trimmed_span=[first, last])
    if (true >= 0).any():
        s = sleep_metrics(true, pred)
        out["whole_night"] = {**{k: s[k] for k in keys if k != "epochs"}, "scored_epochs": s["epochs"]}
    return out


# -- the whole pipeline on the tiny default --------------------------------------------------------------------------
def make_tiny_datasets(root: Path, seed: int = 0) -> tuple[str, str]:
    """Synthetic SHHS-like (train) and Sleep-EDF-like (test) raw files, prepared through the real readers."""
    from .synth import write_shhs_like, write_sleep_edf_like

    shhs, sedf = root / "shhs", root / "sleep-edf"
    if not (shhs / "prep.json").is_file():
        write_shhs_like(root / "raw_shhs", recordings=6, epochs=100, seed=seed)
        prep_stage("shhs", str(root / "raw_shhs"), str(shhs), overwrite=True)
    if not (sedf / "prep.json").is_file():
        write_sleep_edf_like(root / "raw_sleep_edf", subjects=2, nights=2, epochs=80, seed=seed + 1)
        prep_stage("sleep-edf", str(root / "raw_sleep_edf"), str(sedf), overwrite=True)
    return str(shhs), str(sedf)


def run_all_stages(run_dir: str, data: str | None = None, eval_data: str | None = None, baseline: bool = False,
                   sampler: str | None = None, seed: int | None = None, max_steps: int | None = None,
                   sets: list[str] | None = None, device: str = "auto", overwrite: bool = False,
                   config: str | None = None) -> dict:
    t0 = time.perf_counter()
    run = RunDir(run_dir)
    if run.config.is_file() and not overwrite:
        raise SkdError("already holds a run; pass --overwrite to replace it", run.path)
    if data is None or eval_data is None:
        console.print("[cyan]prep:[/] writing synthetic SHHS-like and Sleep-EDF-like recordings (EDF/EDF+/XML)")
        gen_train, gen_test = make_tiny_datasets(run.path / "data")
        data, eval_data = data or gen_train, eval_data or gen_test
    console.print("[cyan]train[/] (SHHS-like)")
    trained = train_stage(data, run_dir, config=config, sets=sets, baseline=baseline, sampler=sampler, seed=seed,
                          max_steps=max_steps, device=device, overwrite=overwrite)
    console.print("[cyan]eval --cross-dataset[/] (Sleep-EDF-like)")
    evaluated = eval_stage(run_dir, eval_data, cross_dataset=True, device=device)
    console.print("[cyan]export[/]")
    exported = export_stage(run_dir, overwrite=True)
    first = sorted((Path(eval_data).parent / "raw_sleep_edf").rglob("*-PSG.edf"))
    scored = {}
    if first:  # stage one night with the export alone, as a user would
        hyp = next(first[0].parent.glob(first[0].name[:6] + "*-Hypnogram.edf"))
        scored = score_stage(exported["export_dir"], str(first[0]), str(run.path / "score" / "hypnogram.csv"),
                             channel="EEG Fpz-Cz", hypnogram=str(hyp), overwrite=True)
    return {"task": TASK_NAME, "run_dir": str(run.path), "kd_method": trained["kd_method"], "sampler": trained["sampler"],
            "steps": trained["steps"], "train_seconds": trained["train_seconds"], "test_data": evaluated["data"],
            **{k: evaluated[k] for k in ("accuracy", "macro_f1", "kappa", "per_class_f1", "confusion")},
            "priors": evaluated["priors"], "export_dir": exported["export_dir"],
            "parity_max_abs_diff": exported["parity_max_abs_diff"], "score_png": scored.get("png"),
            "total_seconds": round(time.perf_counter() - t0, 1)}


def bench_stage(data: str | None, steps: int, rounds: int, device: str, sets: list[str] | None = None) -> dict:
    """Engine vs hand loop and SKD vs baseline step ratios, plus prep throughput (hours of PSG per
    second through the real readers) and inference throughput (epochs per second)."""
    import tempfile

    from ..engine.bench import benchmark
    from .synth import write_shhs_like

    dev = resolve_device(device)
    with tempfile.TemporaryDirectory() as tmp:
        raw = write_shhs_like(Path(tmp) / "raw", recordings=4, epochs=120, seed=0)
        t0 = time.perf_counter()
        prepared = prepare_dataset("shhs", raw, Path(tmp) / "prep")
        prep_seconds = time.perf_counter() - t0
        psg_hours = sum(len(read_shhs_xml(p).labels) for p in raw.rglob("*.xml")) * EPOCH_SECONDS / 3600
        data = data or str(Path(tmp) / "prep")

        def make(baseline: bool):
            cfg = build_config(SleepConfig, None, sets)
            configure(cfg, baseline, None)
            return SleepTask(cfg, data), cfg.train

        ratios = benchmark(make, dev, steps=steps, rounds=rounds)
        task, _ = make(False)
        torch.manual_seed(0)
        model = task.build_model().to(dev).eval()
        nights = task.data.nights
        predict_nights(model, [nights[0].x], task.cfg, dev)  # warm-up
        t0 = time.perf_counter()
        predict_nights(model, (n.x for n in nights), task.cfg, dev)
        infer_seconds = time.perf_counter() - t0
        epochs = sum(len(n.y) for n in nights)
    return {"task": TASK_NAME, **ratios,
            "prep": {"recordings": prepared["recordings"], "psg_hours": round(psg_hours, 3),
                     "seconds": round(prep_seconds, 3), "psg_hours_per_second": round(psg_hours / prep_seconds, 2)},
            "inference": {"epochs": epochs, "seq_len": task.cfg.data.seq_len, "stride": task.cfg.eval.stride,
                          "seconds": round(infer_seconds, 3), "epochs_per_second": round(epochs / infer_seconds, 1)}}
