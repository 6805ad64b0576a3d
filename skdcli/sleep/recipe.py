"""The sleep recipe: the Task the engine trains (data, the Siamese views, the loss and the class-aware
sampler wired together) and the hooks the shared stages call: train (--repeats), eval (--cross-dataset),
export, and `run` on two synthetic datasets in the real formats (SHHS-like -> Sleep-EDF-like) -> score.
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
from ..engine.console import console, metric_table, progress_bar, progress_callback
from ..engine.contract import StageOptions
from ..engine.errors import SkdError
from ..engine.export import load_exported
from ..engine.io import atomic_write, atomic_write_json, atomic_write_text, read_json
from ..engine.rundir import RunDir
from ..engine.schedules import Progress
from ..engine.stages import (
    ExportSpec,
    Pipeline,
    RecipeHooks,
    Trained,
    eval_stage,
    load_run_config,
    recorded_data_dir,
    train_run,
)
from ..engine.trainer import Task
from .config import STAGES, KDConfig, SleepConfig
from .data import (
    SOURCES,
    PreparedSleep,
    WindowDataset,
    night_windows,
    prepare_dataset,
    read_recording_epochs,
    scored_span,
)
from .formats import EPOCH_SECONDS, read_edf_hypnogram, read_shhs_xml, write_edf_hypnogram
from .loss import siamese_self_kd_loss
from .metrics import cross_validation_summary, mean_std, priors, sleep_metrics, sleep_statistics
from .model import SleepTransformer
from .normalisation import DEFAULT_NORMALISATION, NORMALISATIONS
from .plots import plot_hypnogram
from .sampling import WindowBalancer

TASK_NAME = "sleep"


# -- the Siamese views ----------------------------------------------------------------------------------
def augment(x: torch.Tensor, kd: KDConfig, fs: int) -> torch.Tensor:
    """One random view of (B, L, S) windows: amplitude scale, circular time shift of each 30-s epoch,
    gaussian noise. Draws from torch's RNG, which the engine reseeds every step (exact resume)."""
    b, n_epochs, s = x.shape
    scale = 1 + kd.aug_amplitude * (2 * torch.rand(b, 1, 1, device=x.device) - 1)
    max_shift = int(kd.aug_shift_seconds * fs)
    if max_shift > 0:
        shift = torch.randint(-max_shift, max_shift + 1, (b, 1, 1), device=x.device)
        idx = (torch.arange(s, device=x.device).view(1, 1, s) - shift) % s
        x = x.gather(2, idx.expand(b, n_epochs, s))
    return x * scale + kd.aug_noise * torch.randn_like(x)


# -- the Task the engine trains -----------------------------------------------------------------------------
class SleepTask(Task):
    def __init__(self, cfg: SleepConfig, data_dir: str | Path):
        self.cfg = cfg
        self.data = PreparedSleep(data_dir)
        parts = self.data.partition(cfg.data)  # whole subjects (splits.py); a fold's test subjects are never seen
        self.train_set = WindowDataset(parts.train, cfg.data.seq_len)
        self.dev_set = WindowDataset(parts.dev, cfg.data.seq_len) if parts.dev else None
        if len(self.train_set) == 0:
            raise SkdError(f"no training window of data.seq_len={cfg.data.seq_len} epochs", data_dir)
        self._balancers: dict[int, WindowBalancer] = {}
        self._last_order: tuple = (None, None)

    def data_fingerprint(self) -> str | None:
        return self.data.info.get("fingerprint")

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
                self._balancers[id(dataset)] = WindowBalancer(
                    dataset.epoch_labels, dataset.window_starts, dataset.seq_len, power, sampler.candidates
                )
            self._last_order = (key, self._balancers[id(dataset)].order(global_batch, seed, epoch))
        return self._last_order[1]

    def compute_loss(self, model, batch: dict, progress: Progress):
        kd, x, y = self.cfg.kd, batch["x"], batch["y"]
        view = (lambda: augment(x, kd, self.data.fs)) if kd.siamese_view == "augment" else (lambda: x)
        if kd.method == "ce":
            return siamese_self_kd_loss(model(view()), None, y, kd)
        logits = model(torch.cat([view(), view()]))  # both branches in one pass: same weights, own dropout masks
        return siamese_self_kd_loss(logits[: len(x)], logits[len(x) :], y, kd)

    def evaluate(self, model, loader, device) -> dict[str, float]:
        nights = loader.dataset.nights
        probs = predict_nights(model, (n.x for n in nights), self.cfg, device)  # one night mapped at a time
        scores = sleep_metrics(np.concatenate([n.y for n in nights]), np.concatenate([p.argmax(1) for p in probs]))
        return {k: scores[k] for k in ("accuracy", "macro_f1", "kappa")}


# -- whole-night inference ---------------------------------------------------------------------------------------
def predict_nights(
    model, nights: Iterable[np.ndarray], cfg: SleepConfig, device: torch.device, batch_size: int = 64
) -> list[np.ndarray]:
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
            chunk = starts[k : k + batch_size]
            windows = torch.from_numpy(np.stack([x[s : s + L] for s in chunk])).to(device)
            with torch.no_grad():
                p = torch.softmax(model(windows).float(), -1).cpu().numpy()
            for s, pw in zip(chunk, p):
                total[s : s + L] += pw
                count[s : s + L] += 1
        out.append((total / count)[:n])
    return out


# -- stages: what the shared train / eval / export / run commands call (engine/stages.py) -------------------
def prep_stage(
    source: str,
    raw: str | None,
    out: str,
    channel: str | None = None,
    fs: int = 100,
    trim_wake: bool = True,
    subjects: str | None = None,
    overwrite: bool = False,
    seed: int = 0,
    normalisation: str = DEFAULT_NORMALISATION,
    fallbacks: tuple[str, ...] | None = None,
) -> dict:
    if source not in (*SOURCES, *SYNTHETIC_SOURCES):  # the unknown name first: "needs --raw" would mislead
        raise SkdError(f"--source must be one of {', '.join((*SOURCES, *SYNTHETIC_SOURCES))}, got '{source}'")
    if source in SYNTHETIC_SOURCES:
        return write_synthetic(source, Path(out), seed, overwrite, normalisation)
    if not raw:
        raise SkdError(f"--source {source} needs --raw DIR")
    with progress_bar(transient=True) as bar:
        result = prepare_dataset(
            source,
            raw,
            out,
            channel=channel,
            fs=fs,
            trim_wake=trim_wake,
            subjects=subjects,
            normalisation=normalisation,
            fallbacks=fallbacks,
            overwrite=overwrite,
            progress=progress_callback(bar),
        )
    for w in result["warnings"][:10]:
        console.print(f"[yellow]warning:[/] {w['id']}: {w['warning']}", highlight=False)
    if len(result["warnings"]) > 10:
        console.print(f"[yellow]... {len(result['warnings']) - 10} more warnings in {Path(out) / 'prep.json'}")
    if result["skipped"]:
        console.print(
            f"[yellow]skipped {result['skipped']} recording(s), listed with the reason in {result['skipped_list']}",
            highlight=False,
        )
    return result


# `prep --source synthetic` writes an SHHS-like set (what `run` trains on), `synthetic-sleep-edf` a
# Sleep-EDF-like one (what `run` tests on): raw recordings in the real formats under OUT/raw, read back
# through the real readers into OUT.
SYNTHETIC_SOURCES = ("synthetic", "synthetic-sleep-edf")


def write_synthetic(
    source: str, out: Path, seed: int = 0, overwrite: bool = False, normalisation: str = DEFAULT_NORMALISATION
) -> dict:
    from .synth import write_shhs_like, write_sleep_edf_like

    if (out / "prep.json").is_file() and not overwrite:
        raise SkdError("already holds a prepared dataset; pass --overwrite to replace it", out)
    if source == "synthetic":
        raw = write_shhs_like(out / "raw", recordings=6, epochs=100, seed=seed)
        return prep_stage("shhs", str(raw), str(out), overwrite=True, normalisation=normalisation)
    raw = write_sleep_edf_like(out / "raw", subjects=2, nights=2, epochs=80, seed=seed + 1)
    return prep_stage("sleep-edf", str(raw), str(out), overwrite=True, normalisation=normalisation)


def summary_info(data: str) -> dict:
    info = read_json(Path(data) / "prep.json")
    return {
        "fs": info["fs"],
        "channel": info["channel"],
        "source": info["source"],
        "train_priors": info["class_priors"],
        "normalisation": info["normalisation"],
        "trim_minutes": info["trim_minutes"],
    }


class SleepHooks(RecipeHooks):
    name = TASK_NAME
    config_class = SleepConfig
    tiny_data_note = "synthetic SHHS-like and Sleep-EDF-like recordings (EDF/EDF+/XML)"

    baseline = ("kd.method=ce", "sampler.kind=random")  # plain CE on one branch, random batches (--sampler wins)
    summary_keys = {"kd_method": "kd.method", "sampler": "sampler.kind"}
    prep = staticmethod(prep_stage)

    def make_task(self, cfg: SleepConfig, data_dir: str) -> SleepTask:
        return SleepTask(cfg, data_dir)

    def tiny_data(self, root: Path) -> str:
        """Two datasets: SHHS-like (train) and Sleep-EDF-like (cross-dataset test)."""
        if not (root / "shhs" / "prep.json").is_file() or not (root / "sleep-edf" / "prep.json").is_file():
            console.print(f"[cyan]prep:[/] writing {self.tiny_data_note}")
        return make_tiny_datasets(root)[0]

    def summary_extra(self, cfg: SleepConfig, data_dir: str) -> dict:
        return {**super().summary_extra(cfg, data_dir), **summary_info(data_dir)}

    def train(self, opts: StageOptions) -> dict:
        repeats, eval_data = opts.extra.get("repeats") or 1, opts.extra.get("eval_data")
        folds = opts.extra.get("folds") or 0
        if folds:
            if repeats > 1 or eval_data or opts.resume:
                raise SkdError(
                    "--folds trains and evaluates every fold itself; drop --repeats / --eval-data / "
                    "--resume (a re-run reuses finished folds and resumes nothing else)"
                )
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise SkdError(
                    "--folds trains the folds one after another in one process; under torchrun launch "
                    "one `skd sleep train --set data.folds=K --set data.fold=k` per fold"
                )
            return self.cross_validate(opts, folds)
        if repeats > 1:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise SkdError(
                    "--repeats trains the seeds one after another in one process; under torchrun launch "
                    "one `skd sleep train --seed S` per seed (recipes/sleep/run.sh does)"
                )
            return self.repeat(opts, repeats, eval_data)
        summary = train_run(self, opts)
        if eval_data and is_main_process():
            crossed = eval_stage(self, opts.but(command="eval", data=eval_data, sets=[], extra={"cross_dataset": True}))
            summary["cross_dataset"] = {
                k: v for k, v in crossed.items() if k in ("accuracy", "macro_f1", "kappa", "per_class_f1")
            }
        return summary

    def repeat(self, opts: StageOptions, repeats: int, eval_data: str | None) -> dict:
        """N seeds -> RUN_DIR/seed<k>, each evaluated (cross-dataset on --eval-data when given):
        mean ± sample std of accuracy / macro-F1 / kappa / per-stage F1, the paper's robustness figure."""
        first = 0 if opts.seed is None else opts.seed
        runs = []
        for k in range(repeats):
            sub = str(Path(opts.run_dir) / f"seed{first + k}")
            console.print(f"[cyan]repeat {k + 1}/{repeats}:[/] seed {first + k} -> {sub}")
            if (Path(sub) / "train_summary.json").is_file() and not opts.overwrite:
                console.print(f"[cyan]  finished run in {sub}: reused (--overwrite retrains)")
            else:
                train_run(self, opts.but(run_dir=sub, seed=first + k))
            runs.append(
                eval_stage(
                    self,
                    opts.but(
                        command="eval", run_dir=sub, data=eval_data, sets=[], extra={"cross_dataset": bool(eval_data)}
                    ),
                )
            )
        cfg = load_run_config(SleepConfig, RunDir(runs[0]["run_dir"]))
        result = {
            "task": TASK_NAME,
            "run_dir": str(opts.run_dir),
            "repeats": repeats,
            "seeds": list(range(first, first + repeats)),
            "kd_method": cfg.kd.method,
            "sampler": cfg.sampler.kind,
            "eval_data": runs[0]["data"],
            "cross_dataset": bool(eval_data),
            "std": "sample (ddof=1)",
            **{m: mean_std([r[m] for r in runs]) for m in ("accuracy", "macro_f1", "kappa")},
            "per_class_f1": {s: mean_std([r["per_class_f1"][s] for r in runs]) for s in STAGES},
        }
        atomic_write_json(Path(opts.run_dir) / "repeats.json", result)
        return result

    def cross_validate(self, opts: StageOptions, folds: int) -> dict:
        """Subject-wise K-fold cross-validation (splits.py): fold k trains on the other folds' subjects
        into RUN_DIR/fold<k> (its dev subjects come from those), `eval` scores fold k's test subjects;
        the result is the per-fold table, mean ± sample std over folds and the pooled metrics
        (RUN_DIR/folds.json). Finished folds are reused, so a killed cross-validation continues."""
        if folds < 2:
            raise SkdError(f"--folds must be >= 2, got {folds}")
        if not opts.data:
            raise SkdError("--folds needs --data DIR (the prepared dataset to cross-validate on)")
        evals = []
        for k in range(folds):
            sub = str(Path(opts.run_dir) / f"fold{k}")
            console.print(f"[cyan]fold {k + 1}/{folds}:[/] -> {sub}")
            if (Path(sub) / "train_summary.json").is_file() and not opts.overwrite:
                console.print(f"[cyan]  finished run in {sub}: reused (--overwrite retrains)")
            else:
                train_run(self, opts.but(run_dir=sub, sets=[*opts.sets, f"data.folds={folds}", f"data.fold={k}"]))
            evals.append(eval_stage(self, opts.but(command="eval", run_dir=sub, data=None, sets=[], extra={})))
        cfg = load_run_config(SleepConfig, RunDir(evals[0]["run_dir"]))
        result = {
            "task": TASK_NAME,
            "run_dir": str(opts.run_dir),
            "data": evals[0]["data"],
            "kd_method": cfg.kd.method,
            "sampler": cfg.sampler.kind,
            "protocol": "subject-wise K-fold (sorted subjects, contiguous groups)",
            **cross_validation_summary(evals),
        }
        atomic_write_json(Path(opts.run_dir) / "folds.json", result)
        return result

    def check_data_for(self, run: RunDir, cfg: SleepConfig, data_dir: str) -> None:
        prep = Path(data_dir) / "prep.json"
        if not prep.is_file() or not run.summary.is_file():
            return  # not a prepared dataset / an unfinished run: make_task and the stage say so
        summary, info = read_json(run.summary), read_json(prep)
        train_fs, test_fs = summary.get("fs"), info.get("fs")
        if train_fs is not None and test_fs != train_fs:
            raise SkdError(
                f"mismatched sampling rates: the model was trained at {train_fs} Hz but this dataset was "
                f"prepared at {test_fs} Hz (re-run prep with --fs {train_fs})",
                data_dir,
            )
        train_rule = (summary.get("normalisation") or {}).get("rule")
        test_rule = info["normalisation"].get("rule") if isinstance(info.get("normalisation"), dict) else None
        if train_rule is not None and test_rule != train_rule:
            raise SkdError(
                f"mismatched normalisation: the model was trained on '{train_rule}' data but this dataset "
                f"was prepared with '{test_rule}' (re-run prep with --normalisation {train_rule})",
                data_dir,
            )

    def evaluate_run(self, trained: Trained, opts: StageOptions) -> dict:
        cfg, run, model = trained.cfg, trained.run, trained.model
        cross_dataset = bool(opts.extra.get("cross_dataset"))
        train_data = recorded_data_dir(run)
        if cross_dataset and not opts.data:
            raise SkdError("--cross-dataset needs --data DIR (the other prepared dataset, e.g. Sleep-EDF)")
        data = trained.data_dir
        test = trained.task.data
        summary = read_json(run.summary)
        same = Path(data).resolve() == Path(train_data).resolve()
        if same and cross_dataset:
            raise SkdError("--cross-dataset needs a dataset other than the one the run trained on", data)
        split, nights = test.held_out(cfg.data) if same else ("all", test.nights)
        if not nights:
            raise SkdError(
                "no held-out subjects to evaluate (data.dev_fraction=0 or a single subject); pass --data", data
            )
        dev = next(model.parameters()).device
        t0 = time.perf_counter()
        probs = predict_nights(model, (n.x for n in nights), cfg, dev)
        seconds = time.perf_counter() - t0
        y_true = np.concatenate([n.y for n in nights])
        y_pred = np.concatenate([p.argmax(1) for p in probs])
        scores = sleep_metrics(y_true, y_pred)
        y_true, y_pred = y_true[y_true >= 0], y_pred[y_true >= 0]  # unscored epochs in a night are context only
        return {
            "task": TASK_NAME,
            "run_dir": str(run.path),
            "data": str(Path(data).resolve()),
            "cross_dataset": not same,
            "split": split,
            "recordings": len(nights),
            "subjects": sorted({n.subject for n in nights}),
            "kd_method": cfg.kd.method,
            "sampler": cfg.sampler.kind,
            **scores,
            "priors": {
                "train": summary.get("train_priors"),
                "test_true": priors(y_true),
                "test_predicted": priors(y_pred),
            },
            "train_source": summary.get("source"),
            "test_source": test.info.get("source"),
            "epochs_per_second": round(len(y_true) / max(seconds, 1e-9), 1),
            "weights": str(run.weights_for_eval()),
        }

    def eval_file(self, opts: StageOptions, result: dict) -> str:
        return "eval_cross.json" if result["cross_dataset"] else "eval.json"

    def export_spec(self, trained: Trained, opts: StageOptions) -> ExportSpec:
        cfg, model = trained.cfg, trained.model
        summary = read_json(trained.run.summary)
        fs = int(summary["fs"])
        L, S = cfg.data.seq_len, fs * EPOCH_SECONDS
        gen = torch.Generator().manual_seed(0)
        batch = torch.export.Dim("windows", min=1, max=4096)
        return ExportSpec(
            model,
            (torch.randn(2, L, S, generator=gen),),
            dynamic_shapes=({0: batch},),
            parity_inputs=[(torch.randn(5, L, S, generator=gen),), (torch.randn(1, L, S, generator=gen),)],
            manifest={
                "fs": fs,
                "seq_len": L,
                "channel": summary.get("channel"),
                "stages": STAGES,
                "eval_stride": cfg.eval.stride,
                "train_source": summary.get("source"),
                "normalisation": summary["normalisation"],
                "trim_minutes": summary["trim_minutes"],
                "inputs": [f"windows (B, {L}, {S}) float32"],
                "outputs": [f"logits (B, {L}, {len(STAGES)})"],
            },
        )

    def pipeline(self, p: Pipeline) -> dict:
        """Tiny default: synthetic SHHS-like -> train -> eval --cross-dataset on Sleep-EDF-like -> export -> score."""
        eval_data = p.opts.extra.get("eval_data") or make_tiny_datasets(p.run.path / "data")[1]
        trained = p.train(extra={})
        evaluated = p.evaluate(data=eval_data, extra={"cross_dataset": True})
        exported = p.export()
        first = sorted((Path(eval_data).parent / "raw_sleep_edf").rglob("*-PSG.edf"))
        scored = {}
        if first:  # stage one night with the export alone, as a user would
            hyp = next(first[0].parent.glob(first[0].name[:6] + "*-Hypnogram.edf"))
            scored = score_stage(
                exported["export_dir"],
                str(first[0]),
                str(p.run.path / "score" / "hypnogram.csv"),
                channel="EEG Fpz-Cz",
                hypnogram=str(hyp),
                overwrite=True,
            )
        return {
            "task": TASK_NAME,
            "run_dir": str(p.run.path),
            "kd_method": trained["kd_method"],
            "sampler": trained["sampler"],
            "steps": trained["steps"],
            "train_seconds": trained["train_seconds"],
            "test_data": evaluated["data"],
            **{k: evaluated[k] for k in ("accuracy", "macro_f1", "kappa", "per_class_f1", "confusion")},
            "priors": evaluated["priors"],
            "export_dir": exported["export_dir"],
            "parity_max_abs_diff": exported["parity_max_abs_diff"],
            "score_png": scored.get("png"),
        }

    def report(self, command: str, result: dict):
        if command == "train" and "per_fold" in result:
            rows = [
                [
                    f"fold {r['fold']}",
                    ", ".join(r["subjects"] or []),
                    r["epochs"],
                    r["accuracy"],
                    r["macro_f1"],
                    r["kappa"],
                ]
                for r in result["per_fold"]
            ]
            rows.append(
                [
                    "mean ± std",
                    f"{result['folds']} folds",
                    sum(r["epochs"] for r in result["per_fold"]),
                    result["accuracy"],
                    result["macro_f1"],
                    result["kappa"],
                ]
            )
            pooled = result["pooled"]
            rows.append(["pooled", "", pooled["epochs"], pooled["accuracy"], pooled["macro_f1"], pooled["kappa"]])
            return metric_table(
                f"sleep: subject-wise {result['folds']}-fold cross-validation "
                f"({result['kd_method']} + {result['sampler']})",
                ["fold", "test subjects", "epochs", "accuracy", "macro-F1", "kappa"],
                rows,
            )
        if command == "train" and "repeats" in result:
            rows = [
                [
                    f"{result['kd_method']} + {result['sampler']}",
                    result["accuracy"],
                    result["macro_f1"],
                    result["kappa"],
                ]
            ]
            return metric_table(
                f"sleep: {result['repeats']} seeds (mean ± std), "
                f"{'cross-dataset' if result['cross_dataset'] else 'dev'}",
                ["system", "accuracy", "macro-F1", "kappa"],
                rows,
            )
        if command not in ("eval", "run"):
            return None
        rows = [
            [
                f"{result['kd_method']} + {result['sampler']}",
                result["accuracy"],
                result["macro_f1"],
                result["kappa"],
                *(result["per_class_f1"][s] for s in STAGES),
            ]
        ]
        where = "cross-dataset" if result.get("cross_dataset", command == "run") else result.get("split", "")
        return metric_table(
            f"sleep {command}: {where}", ["system", "accuracy", "macro-F1", "kappa", *(f"F1 {s}" for s in STAGES)], rows
        )

    def bench_extra(self, make, data: str, device: torch.device, steps: int, rounds: int, timed: dict) -> dict:
        """Prep throughput (hours of PSG per second through the real readers) and inference throughput
        (epochs per second)."""
        import tempfile

        from .synth import write_shhs_like

        with tempfile.TemporaryDirectory() as tmp:
            raw = write_shhs_like(Path(tmp) / "raw", recordings=4, epochs=120, seed=0)
            t0 = time.perf_counter()
            prepared = prepare_dataset("shhs", raw, Path(tmp) / "prep")
            prep_seconds = time.perf_counter() - t0
            psg_hours = sum(len(read_shhs_xml(p).labels) for p in raw.rglob("*.xml")) * EPOCH_SECONDS / 3600
        task, _ = make(False)
        torch.manual_seed(0)
        model = task.build_model().to(device).eval()
        nights = task.data.nights
        predict_nights(model, [nights[0].x], task.cfg, device)  # warm-up
        t0 = time.perf_counter()
        predict_nights(model, (n.x for n in nights), task.cfg, device)
        infer_seconds = time.perf_counter() - t0
        epochs = sum(len(n.y) for n in nights)
        return {
            "prep": {
                "recordings": prepared["recordings"],
                "psg_hours": round(psg_hours, 3),
                "seconds": round(prep_seconds, 3),
                "psg_hours_per_second": round(psg_hours / prep_seconds, 2),
            },
            "inference": {
                "epochs": epochs,
                "seq_len": task.cfg.data.seq_len,
                "stride": task.cfg.eval.stride,
                "seconds": round(infer_seconds, 3),
                "epochs_per_second": round(epochs / infer_seconds, 1),
            },
        }


def score_stage(
    model_path: str,
    edf: str,
    out: str,
    channel: str | None = None,
    hypnogram: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Stage a new recording with an export alone: CSV (one row per 30-s epoch, probabilities),
    an EDF+ hypnogram like Sleep-EDF's, a PNG hypnogram (true vs predicted with --hypnogram), and
    the sleep statistics (metrics.sleep_statistics: TST, SE, SOL, WASO, REM latency, minutes and
    percent per stage) of the predicted hypnogram and, with --hypnogram, of the true one, both over
    the whole recording as time in bed (no lights-off/on markers are read).

    The night is read and normalised by the export's recorded rule over the whole recording, as
    prep did for the training data (data.read_recording_epochs). With --hypnogram the metrics
    are given twice: on the epochs `eval` would score (the export's wake-trimming rule applied to
    the true scoring; the predictions still come from the whole night, so the span's first and
    last windows see their real neighbours) and, under `whole_night`, on every scored epoch."""
    module, manifest, folder = load_exported(model_path, TASK_NAME)
    rule = manifest.get("normalisation")
    if not isinstance(rule, dict) or rule.get("rule") not in NORMALISATIONS:
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
    result = {
        "edf": str(edf),
        "channel": sig.channel,
        "epochs": int(n),
        "normalisation": rule["rule"],
        "csv": str(out_csv),
        "hypnogram_edf": str(out_edf),
        "png": str(out_png),
        "predicted_priors": priors(pred),
        "sleep_statistics": {"predicted": sleep_statistics(pred)},
    }
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
    out: dict = {}
    span = scored_span(true, trim_minutes)
    if span is not None:
        first, last = span
        in_span = np.full(len(true), -1)
        in_span[first : last + 1] = true[first : last + 1]
        s = sleep_metrics(in_span, pred)
        out.update(
            {k: s[k] for k in ("accuracy", "macro_f1", "kappa")}, scored_epochs=s["epochs"], trimmed_span=[first, last]
        )
    if (true >= 0).any():
        s = sleep_metrics(true, pred)
        out["whole_night"] = {**{k: s[k] for k in ("accuracy", "macro_f1", "kappa")}, "scored_epochs": s["epochs"]}
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
