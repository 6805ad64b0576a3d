"""The sar Task (DRRNet-SKD and its self-KD baselines on one engine) and the stages:
prep -> train -> eval -> export -> predict, `compare` (every method x N seeds) and `run` (the tiny default).

The teachers are the engine's teacher signals: DRRNet's offline teacher is a ``SnapshotTeacher``
(previous generation), a ``BestCheckpointTeacher`` (best validation checkpoint) or a frozen copy loaded
from a file; its online teacher is the network's own detached prediction from the last iteration
(``LastIterationLogits``), on another augmented view (``DetachedPrediction``) or an ``EMATeacher``.
The AWA module is a stateful signal too, so kill -9 + --resume continues bit-exactly.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..engine.cliutil import is_main_process
from ..engine.compare import compare_over_seeds, parse_seeds, summary_cell
from ..engine.config import build_config
from ..engine.console import console, metric_table
from ..engine.contract import StageOptions
from ..engine.errors import SkdError
from ..engine.export import load_exported
from ..engine.io import atomic_write_json, read_json
from ..engine.rundir import RunDir
from ..engine.schedules import Progress
from ..engine.stages import ExportSpec, Pipeline, RecipeHooks, Trained, eval_stage, train_run
from ..engine.teachers import (
    BestCheckpointTeacher,
    DetachedPrediction,
    EMATeacher,
    PredictionMemory,
    SnapshotTeacher,
    TeacherSignal,
)
from ..engine.trainer import Task
from .chips import NormSpec, normalise, read_chip
from .config import METHODS, SarConfig
from .data import PreparedSar, PrepOptions, prepare_dataset
from .loss import (
    byot_loss,
    cs_kd_loss,
    dense_votes,
    dlb_loss,
    drrnet_loss,
    ps_kd_loss,
    tf_kd_reg_loss,
    tf_kd_self_loss,
    zipf_ls_loss,
)
from .metrics import classification_metrics, mean_std
from .model import SarNet, build_model, gradcam, read_state_dict
from .plots import plot_awa, plot_confusion, plot_gradcam
from .sampling import overlapping_order, paired_order
from .signals import AdaptiveWeightAssignment, LastIterationLogits

TASK_NAME = "sar"
RUN_SEEDS = (0, 1, 2)  # `skd sar run`: DRRNet-SKD and CE over three seeds (issue 12: "report 3 seeds with std")
GENERATION_NEVER = 10**9  # a frozen file teacher: a SnapshotTeacher that is never refreshed


# -- datasets ---------------------------------------------------------------------------------------------------
class ChipDataset(Dataset):
    """Standardised chips of one split; items carry their index in this split (PS-KD memory, DLB cache)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "idx": i}


class PairedDataset(ChipDataset):
    """CS-KD: entry anchor * n + pair (sampling.paired_order) -> the anchor's item plus its pair's chip."""

    def __getitem__(self, code: int) -> dict:
        n = len(self.y)
        anchor, pair = divmod(int(code), n)
        return {"x": self.x[anchor], "y": self.y[anchor], "idx": anchor, "x_pair": self.x[pair]}


def resolve_weights(path: str) -> Path:
    """A weights file, or a run directory (its best checkpoint, else the latest)."""
    p = Path(path)
    if p.is_dir():
        weights = RunDir(p).weights_for_eval()
        if weights is None:
            raise SkdError("run has no checkpoint to use as a teacher", p)
        return weights
    if not p.is_file():
        raise SkdError("teacher weights not found (a weights file or a run directory)", p)
    return p


def _load_frozen(teacher: SnapshotTeacher, path: str) -> None:
    weights = resolve_weights(path)
    state = read_state_dict(weights)
    missing, unexpected = teacher.model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("exits.")]
    unexpected = [k for k in unexpected if not k.startswith("exits.")]
    if missing or unexpected:
        raise SkdError(
            f"teacher does not fit this backbone (missing {missing[:3]}, unexpected {unexpected[:3]})", weights
        )


def _gather(t: torch.Tensor) -> torch.Tensor:
    """All ranks' rows (equal micro-batches), so per-sample memories stay identical under DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


# -- the Task -------------------------------------------------------------------------------------------------------
class SarTask(Task):
    def __init__(self, cfg: SarConfig, data_dir: str | Path):
        self.cfg = cfg
        self.data = PreparedSar(data_dir)
        x = torch.from_numpy((self.data.x - self.data.mean) / self.data.std).float()
        labels = torch.from_numpy(self.data.labels).long()
        self.num_classes = len(self.data.classes)
        self.in_chans = int(x.shape[1])
        tr, va = self.data.indices("train"), self.data.indices("val")
        if len(tr) == 0:
            raise SkdError("the prepared dataset has no training chips", data_dir)
        cls = PairedDataset if cfg.kd.method == "cs-kd" else ChipDataset
        self.train_set = cls(x[tr], labels[tr])
        # validation scores against the clean labels (prep keeps val/test clean; README §3)
        clean = torch.from_numpy(self.data.clean_labels).long()
        self.val_set = ChipDataset(x[va], clean[va]) if len(va) else None
        self.find_unused_parameters = cfg.kd.method == "byot"
        self._teachers: dict[str, TeacherSignal] = {}
        self.awa: AdaptiveWeightAssignment | None = None
        self.last: LastIterationLogits | None = None
        self.memory: PredictionMemory | None = None
        self._device: torch.device | None = None
        self.warm_offline = False  # bench: start with an offline teacher, so every timed step pays its forward

    def data_fingerprint(self) -> str | None:
        return self.data.info.get("fingerprint")

    # -- model and its signals --------------------------------------------------------------------------------
    def build_model(self) -> SarNet:
        cfg, kd = self.cfg, self.cfg.kd
        model = build_model(cfg.model, self.num_classes, self.in_chans, byot_exits=kd.method == "byot")
        t: dict[str, TeacherSignal] = {}
        if kd.method == "drrnet":
            dr = kd.drrnet
            if dr.offline == "snapshot":
                t["offline"] = SnapshotTeacher(model, refresh_every_epochs=dr.generation_epochs, initial="none")
            elif dr.offline == "best":
                t["offline"] = BestCheckpointTeacher(model, metric="accuracy", mode="max")
            else:
                t["offline"] = SnapshotTeacher(model, refresh_every_epochs=GENERATION_NEVER, initial="copy")
                _load_frozen(t["offline"], dr.offline_path)
            if dr.online == "last":
                t["online"] = self.last = LastIterationLogits()
            elif dr.online == "ema":
                t["online"] = EMATeacher(model, decay=dr.ema_decay)
            else:
                t["online"] = DetachedPrediction()
            t["awa"] = self.awa = AdaptiveWeightAssignment(dr.awa)
            if self.warm_offline and not t["offline"].ready:
                t["offline"].refresh(model)
        elif kd.method == "dlb":
            t["last"] = self.last = LastIterationLogits()
        elif kd.method == "ps-kd":
            t["memory"] = self.memory = PredictionMemory(len(self.train_set), self.num_classes)
        elif kd.method == "tf-kd" and kd.tf_kd.variant == "self":
            t["teacher"] = SnapshotTeacher(model, refresh_every_epochs=GENERATION_NEVER, initial="copy")
            _load_frozen(t["teacher"], kd.tf_kd.teacher)
        self._teachers = t
        return model

    def teachers(self) -> dict[str, TeacherSignal]:
        return self._teachers

    def train_dataset(self) -> Dataset:
        return self.train_set

    def eval_dataset(self) -> Dataset | None:
        return self.val_set

    def epoch_order(self, dataset, seed: int, epoch: int, global_batch: int) -> list[int] | None:
        kd = self.cfg.kd
        if kd.method == "cs-kd":
            return paired_order(dataset.y.numpy(), seed, epoch, global_batch, kd.cs_kd.exclude_self)
        if kd.method == "dlb" or (kd.method == "drrnet" and kd.drrnet.online == "last"):
            return overlapping_order(len(dataset), seed, epoch, global_batch)
        return None

    def _on_device(self, device: torch.device) -> None:
        """Teacher copies are made on the CPU model in build_model; follow the batch's device once."""
        if self._device != device:
            for sig in self._teachers.values():
                if hasattr(sig, "model"):
                    sig.model.to(device)
            if self.memory is not None:
                self.memory.probs, self.memory.filled = self.memory.probs.to(device), self.memory.filled.to(device)
            self._device = device

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Random flips and integer translations per chip, one grid_sample (zero = the mean after standardising)."""
        a = self.cfg.augment
        b, _, h, w = x.shape
        sx = torch.where(torch.rand(b) < 0.5, -1.0, 1.0) if a.hflip else torch.ones(b)
        sy = torch.where(torch.rand(b) < 0.5, -1.0, 1.0) if a.vflip else torch.ones(b)
        if a.shift:
            tx = torch.randint(-a.shift, a.shift + 1, (b,)).float() * 2 / w
            ty = torch.randint(-a.shift, a.shift + 1, (b,)).float() * 2 / h
        else:
            tx = ty = torch.zeros(b)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = sx, sy, tx, ty
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    # -- the losses ----------------------------------------------------------------------------------------------
    def compute_loss(self, model, batch: dict, progress: Progress):
        kd = self.cfg.kd
        x, y, idx = batch["x"], batch["y"], batch["idx"]
        self._on_device(x.device)
        xa = self.augment(x)
        k = self.num_classes
        logs: dict = {}
        m = kd.method
        if m == "ce":
            logits = model(xa)
            ce = F.cross_entropy(logits, y)
            loss, terms = ce, {"loss/ce": ce}
        elif m == "drrnet":
            loss, terms, logits = self._drrnet(model, x, xa, y, idx, progress, logs)
        elif m == "cs-kd":
            logits = model(xa)
            with torch.no_grad():  # the official code runs the pair batch in train mode without gradient
                pair_logits = model(self.augment(batch["x_pair"]))
            loss, terms = cs_kd_loss(logits, pair_logits, y, kd.cs_kd.temperature, kd.cs_kd.weight)
        elif m == "ps-kd":
            logits = model(xa)
            alpha_t = kd.ps_kd.alpha_T * progress.epoch / max(progress.total_epochs, 1)
            loss, terms = ps_kd_loss(
                logits, y, self.memory[idx], self.memory.filled[idx.to(self.memory.filled.device)], alpha_t
            )
            self.memory.update(_gather(idx), _gather(torch.softmax(logits.detach().float(), -1)))
            logs["weight/alpha_t"] = alpha_t
        elif m == "tf-kd":
            logits = model(xa)
            c = kd.tf_kd
            if c.variant == "reg":
                loss, terms = tf_kd_reg_loss(
                    logits, y, c.alpha, c.temperature, c.multiplier, c.correct_prob, c.reduction
                )
            else:
                loss, terms = tf_kd_self_loss(
                    logits, self._teachers["teacher"](xa), y, c.alpha, c.temperature, c.multiplier, c.reduction
                )
        elif m == "byot":
            feats, exit_logits, deep_feat, logits = model(xa, output="exits")
            c = kd.byot
            loss, terms = byot_loss(feats, exit_logits, deep_feat, logits, y, c.alpha, c.temperature, c.feature_weight)
            for i, z in enumerate(exit_logits, 1):
                logs[f"accuracy/exit{i}"] = (z.argmax(1) == y).float().mean()
        elif m == "dlb":
            logits = model(xa)
            mask, last = self.last.lookup(idx, k)
            loss, terms = dlb_loss(logits, y, last, mask, kd.dlb.temperature, kd.dlb.weight)
            self.last.store(idx, logits)
            logs["dlb/overlap"] = mask.float().mean()
        else:  # zipf-ls
            c = kd.zipf_ls
            logits, dense = model(xa, output="dense")
            scores = dense_votes(dense) if c.dense and dense is not None else logits
            loss, terms = zipf_ls_loss(logits, y, scores, c.weight, c.power, c.loss_mask)
        logs.update(terms)
        logs["accuracy/train_batch"] = (logits.detach().argmax(1) == y).float().mean()
        return loss, logs

    def _drrnet(self, model, x, xa, y, idx, progress: Progress, logs: dict):
        dr = self.cfg.kd.drrnet
        logits = model(xa)
        off_teacher = self._teachers["offline"]
        offline = off_teacher(xa) if off_teacher.ready else None
        online, mask = None, None
        if dr.online == "last":
            mask, online = self.last.lookup(idx, self.num_classes)
            self.last.store(idx, logits)
        elif dr.online == "ema":
            online = self._teachers["online"](xa)
        else:
            with torch.no_grad():
                online = self._teachers["online"](model(self.augment(x)))
        w_off, w_on = self.awa.weights(progress)
        loss, terms = drrnet_loss(logits, y, offline, online, mask, w_off, w_on, dr.temperature, dr.weight)
        acc = (logits.detach().argmax(1) == y).float().mean()
        self.awa.update(float(acc), float(terms["loss/ce"].detach()))
        logs.update(
            {
                "weight/off": w_off,
                "weight/on": w_on,
                "awa/accuracy_ema": self.awa.acc_ema,
                "teacher/offline_ready": float(offline is not None),
                "teacher/online_coverage": float(mask.float().mean()) if mask is not None else 1.0,
            }
        )
        return loss, terms, logits

    # -- evaluation -------------------------------------------------------------------------------------------------
    def evaluate(self, model, loader, device) -> dict[str, float]:
        logits, y = predict_logits(model, loader, device)
        m = classification_metrics(y.numpy(), logits.argmax(1).numpy(), self.data.classes)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "nll": float(F.cross_entropy(logits, y))}


def predict_logits(model, loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    outs, ys = [], []
    with torch.no_grad():
        for batch in loader:
            outs.append(model(batch["x"].to(device)).float().cpu())
            ys.append(batch["y"])
    return torch.cat(outs), torch.cat(ys)


# -- prep, evaluation, export, inference ---------------------------------------------------------------------------
def prep_stage(
    source: str,
    raw: str | None,
    out: str,
    *,
    classes: str | None = None,
    label_level: str = "subcategory",
    variant: str = "patch_uint8",
    pol: str = "vv",
    name_regex: str | None = None,
    split: str = "0.6,0.2,0.2",
    seed: int = 0,
    shots: int = 0,
    label_noise: float = 0.0,
    size: int = 64,
    crop: int = 0,
    scale: str = "auto",
    percentiles: str = "1,99.9",
    per_class: int = 80,
    overwrite: bool = False,
) -> dict:
    try:
        p_lo, p_hi = (float(v) for v in percentiles.split(","))
    except ValueError as exc:
        raise SkdError(f"--percentiles expects LO,HI like 1,99.9, got '{percentiles}'") from exc
    opts = PrepOptions(
        classes=classes,
        label_level=label_level,
        variant=variant,
        pol=pol,
        split=split,
        seed=seed,
        shots=shots,
        label_noise=label_noise,
        norm=NormSpec(scale, p_lo, p_hi, crop, size),
        synthetic_per_class=per_class,
    )
    if name_regex:
        opts.name_regex = name_regex
    return prepare_dataset(source, raw, out, opts, overwrite=overwrite)


TINY_SIZE = 48
TINY_CROP = 64  # the ships sit at the centre of the 96x96 chips: crop 64x64, then resize to 48x48


def write_tiny_data(out_dir: str | Path) -> dict:
    """The embedded tiny default: synthetic SAR chips in the FUSAR-Ship layout (written under
    OUT/raw), prepared through the real FUSAR reader, centre crop 64 -> 48x48
    (`prep --source synthetic --crop 64 --size 48`)."""
    return prep_stage("synthetic", None, str(out_dir), size=TINY_SIZE, crop=TINY_CROP, overwrite=True)


def split_tensors(task: SarTask, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised chips and CLEAN labels of a split."""
    idx = task.data.indices(split)
    if len(idx) == 0:
        raise SkdError(f"the prepared dataset has no {split} chips (choose --split val|test)", task.data.path)
    x = torch.from_numpy((task.data.x[idx] - task.data.mean) / task.data.std).float()
    return x, torch.from_numpy(task.data.clean_labels[idx]).long()


def evaluate_split(task: SarTask, model, split: str, tta_repeats: int = 0) -> dict:
    """Top-1, macro-F1, per-class accuracy and confusion on one split; with ``tta_repeats`` N, also N passes
    over randomly flipped / shifted chips (the training augmentation, seeds 0..N-1): mean ± sample std."""
    x, y = split_tensors(task, split)
    dev = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(ChipDataset(x, y), batch_size=128)
    t0 = time.perf_counter()
    logits, y = predict_logits(model, loader, dev)
    seconds = time.perf_counter() - t0
    scores = classification_metrics(y.numpy(), logits.argmax(1).numpy(), task.data.classes)
    result = {
        **scores,
        "nll": round(float(F.cross_entropy(logits, y)), 4),
        "chips_per_second": round(len(y) / max(seconds, 1e-9), 1),
    }
    if tta_repeats:
        accs, f1s = [], []
        for k in range(tta_repeats):
            torch.manual_seed(k)
            xa = torch.cat([task.augment(x[i : i + 256]) for i in range(0, len(x), 256)])
            aug = predict_logits(model, torch.utils.data.DataLoader(ChipDataset(xa, y), batch_size=128), dev)[0]
            s = classification_metrics(y.numpy(), aug.argmax(1).numpy(), task.data.classes)
            accs.append(s["accuracy"])
            f1s.append(s["macro_f1"])
        result["repeats"] = {
            "n": tta_repeats,
            "what": "random flips/shifts of the test chips (augment.*), seeds 0..N-1",
            "accuracy": mean_std(accs),
            "macro_f1": mean_std(f1s),
        }
    return result


class ChipClassifier(torch.nn.Module):
    """What the export runs: chips (B, C, S, S) in [0, 1] (prep's normalisation) -> logits; the train split's
    standardisation is inside, so a user feeds normalised chips only."""

    def __init__(self, net: SarNet, mean: float, std: float):
        super().__init__()
        self.net = net
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def predict_chips(model_path: str, chips: list[str], gradcam_dir: str | None = None, overwrite: bool = False) -> dict:
    """Class and probabilities per chip with an export alone (same reader and normalisation as prep,
    from the manifest); optional Grad-CAM PNG per chip: the export's safetensors weights rebuilt into the
    eager network, which gives the gradients."""
    if not chips:
        raise SkdError("give at least one chip file")
    module, manifest, folder = load_exported(model_path, task=TASK_NAME)
    n = manifest["normalisation"]
    spec = NormSpec(n["scale"], n["p_lo"], n["p_hi"], n["crop"], n["size"])
    channels = int(manifest["channels"])
    if channels != 1:
        raise SkdError(
            f"this export takes {channels} channels (VV+VH); predict reads single-polarisation chips", folder
        )
    pngs = [Path(gradcam_dir) / f"{Path(c).stem}_gradcam.png" for c in chips] if gradcam_dir else []
    for png in pngs:
        if png.exists() and not overwrite:
            raise SkdError("already exists; pass --overwrite to replace it", png)
    x = torch.from_numpy(np.stack([normalise(read_chip(c), spec)[None] for c in chips])).float()
    with torch.no_grad():
        probs = torch.softmax(module(x).float(), -1)
    classes = manifest["classes"]
    rows = [
        {
            "chip": str(c),
            "class": classes[int(p.argmax())],
            "probabilities": {k: round(float(v), 4) for k, v in zip(classes, p)},
        }
        for c, p in zip(chips, probs)
    ]
    if gradcam_dir:
        mm = manifest["model"]
        net = ChipClassifier(
            SarNet(mm["backbone"], len(classes), channels, mm["width"], mm["dropout"]),
            float(manifest["train_mean"]),
            float(manifest["train_std"]),
        )
        RunDir.load_weights(net, folder / manifest["weights"])
        cams, _ = gradcam(net.net, (x - net.mean) / net.std)
        for row, png, xi, cam in zip(rows, pngs, x, cams):
            top = row["probabilities"][row["class"]]
            plot_gradcam(png, xi[0].numpy(), cam.numpy(), f"{Path(row['chip']).name}: {row['class']} ({top:.0%})")
            row["gradcam_png"] = str(png)
    return {"task": TASK_NAME, "model": str(folder), "predictions": rows}


def prediction_lines(result: dict) -> list[str]:
    """One line per chip: path, class, then every class probability."""
    return [
        f"{r['chip']}\t{r['class']}\t"
        + " ".join(f"{k}={v:.4f}" for k, v in r["probabilities"].items())
        + (f"\t{r['gradcam_png']}" if "gradcam_png" in r else "")
        for r in result["predictions"]
    ]


# -- the hooks the engine's shared stages call ----------------------------------------------------------------------
class SarHooks(RecipeHooks):
    name = TASK_NAME
    config_class = SarConfig
    baseline = ("kd.method=ce",)
    summary_keys = {"method": "kd.method", "backbone": "model.backbone"}
    tiny_data_note = "synthetic SAR chips in the FUSAR-Ship layout (Category/Subcategory/*.tiff + meta.csv)"
    prep = staticmethod(prep_stage)

    def make_task(self, cfg: SarConfig, data_dir: str) -> SarTask:
        return SarTask(cfg, data_dir)

    def write_tiny_data(self, out: Path) -> None:
        write_tiny_data(out)

    def summary_extra(self, cfg: SarConfig, data_dir: str) -> dict:
        info = read_json(Path(data_dir) / "prep.json")
        return {
            **super().summary_extra(cfg, data_dir),
            "classes": info["classes"],
            "shots": info["shots"],
            "label_noise": info["label_noise"]["rate"],
            "source": info["source"],
        }

    def train(self, opts: StageOptions) -> dict:
        repeats = opts.extra.get("repeats") or 1
        if repeats > 1:
            return self.repeat(opts, repeats)
        summary = train_run(self, opts)
        if is_main_process():
            run = RunDir(opts.run_dir)
            awa = plot_awa(run.metrics, run.plots / "awa_weights.png")
            if awa:
                summary["plots"] = [*summary.get("plots", []), str(awa)]
        return summary

    def repeat(self, opts: StageOptions, repeats: int) -> dict:
        """N seeds -> RUN_DIR/seed<k> (finished ones reused, unfinished resumed), each evaluated: mean ± std."""
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise SkdError(
                "--repeats trains the seeds one after another; under torchrun launch one "
                "`skd sar train --seed S` per seed"
            )
        first = 0 if opts.seed is None else opts.seed
        runs = []
        for s in range(first, first + repeats):
            sub = str(Path(opts.run_dir) / f"seed{s}")
            console.print(f"[cyan]repeat:[/] seed {s} -> {sub}")
            self.train_or_reuse(opts.but(run_dir=sub, seed=s, extra={}))
            runs.append(eval_stage(self, opts.but(command="eval", run_dir=sub, data=None, sets=[], extra={})))
        result = {
            "task": TASK_NAME,
            "run_dir": str(opts.run_dir),
            "repeats": repeats,
            "seeds": list(range(first, first + repeats)),
            "method": runs[0]["method"],
            "backbone": runs[0]["backbone"],
            "split": runs[0]["split"],
            "std": "sample (ddof=1)",
            "accuracy": mean_std([r["accuracy"] for r in runs]),
            "macro_f1": mean_std([r["macro_f1"] for r in runs]),
            "per_class_accuracy": {
                c: mean_std([r["per_class_accuracy"][c] for r in runs]) for c in runs[0]["per_class_accuracy"]
            },
        }
        atomic_write_json(Path(opts.run_dir) / "repeats.json", result)
        return result

    def train_or_reuse(self, opts: StageOptions) -> dict:
        run = RunDir(opts.run_dir)
        if run.is_finished() and not opts.overwrite:
            console.print(f"[cyan]  finished run in {run.path}: reused (--overwrite retrains)")
            return read_json(run.summary)
        if run.config.is_file() and not opts.overwrite:
            console.print(f"[cyan]  unfinished run in {run.path}: resumed")
            return self.train(opts.but(resume=True, config=None, sets=[], baseline=False, seed=None, data=None))
        return self.train(opts)

    def check_data_for(self, run: RunDir, cfg: SarConfig, data_dir: str) -> None:
        """Another prepared dataset must have the classes, channels and chip size the run was trained on."""
        prep = Path(data_dir) / "prep.json"
        if not prep.is_file() or not run.provenance.is_file():
            return  # make_task says what is wrong with the directory
        trained_on = Path(read_json(run.provenance).get("data_dir", ""))
        if not (trained_on / "prep.json").is_file() or trained_on.resolve() == Path(data_dir).resolve():
            return
        a, b = read_json(trained_on / "prep.json"), read_json(prep)
        for key in ("classes", "channels", "size"):
            if a.get(key) != b.get(key):
                raise SkdError(f"the run was trained on {key} {a.get(key)}, this dataset has {b.get(key)}", data_dir)

    def evaluate_run(self, trained: Trained, opts: StageOptions) -> dict:
        cfg, task = trained.cfg, trained.task
        split = opts.extra.get("split") or cfg.eval.split
        if split not in ("val", "test"):
            raise SkdError(f"--split must be val or test, got '{split}'")
        scores = evaluate_split(task, trained.model, split, int(opts.extra.get("repeats") or 0))
        png = plot_confusion(
            trained.run.plots / f"confusion_{split}.png",
            scores["confusion"],
            task.data.classes,
            f"{cfg.kd.method} / {cfg.model.backbone} — {split}: top-1 {scores['accuracy']:.1%}, "
            f"macro-F1 {scores['macro_f1']:.3f}",
        )
        return {
            "task": TASK_NAME,
            "run_dir": str(trained.run.path),
            "data": str(Path(trained.data_dir).resolve()),
            "split": split,
            "method": cfg.kd.method,
            "backbone": cfg.model.backbone,
            **scores,
            "classes": task.data.classes,
            "confusion_png": str(png),
            "weights": str(trained.run.weights_for_eval()),
        }

    def eval_file(self, opts: StageOptions, result: dict) -> str:
        return "eval.json" if result["split"] == "test" else f"eval_{result['split']}.json"

    def export_spec(self, trained: Trained, opts: StageOptions) -> ExportSpec:
        cfg, task, net = trained.cfg, trained.task, trained.model
        net.exits = torch.nn.ModuleList()  # BYOT's shallow exits are training-only
        module = ChipClassifier(net, task.data.mean, task.data.std).eval()
        c, s = task.in_chans, int(task.data.x.shape[-1])
        gen = torch.Generator().manual_seed(0)
        info = task.data.info
        return ExportSpec(
            module,
            (torch.rand(2, c, s, s, generator=gen),),
            dynamic_shapes=({0: torch.export.Dim("chips", min=1, max=4096)},),
            parity_inputs=[(torch.rand(3, c, s, s, generator=gen),), (torch.rand(1, c, s, s, generator=gen),)],
            manifest={
                "classes": task.data.classes,
                "channels": c,
                "size": s,
                "normalisation": info["normalisation"],
                "train_mean": task.data.mean,
                "train_std": task.data.std,
                "source": info["source"],
                "options": info.get("options", {}),
                "method": cfg.kd.method,
                "model": {"backbone": cfg.model.backbone, "width": cfg.model.width, "dropout": cfg.model.dropout},
                "inputs": [f"chips (B, {c}, {s}, {s}) float32 in [0, 1] (prep's normalisation)"],
                "outputs": [f"logits (B, {task.num_classes})"],
            },
            result_keys=("classes",),
        )

    def pipeline(self, p: Pipeline) -> dict:
        """Tiny default: DRRNet-SKD and the CE baseline over --seeds (default 0, 1, 2; RUN_DIR is DRRNet's first
        seed, the others RUN_DIR/compare/<method>[/seed<S>]), each evaluated on the test split (top-1, macro-F1,
        confusion PNG) and summarised as mean ± sample std; DRRNet's first seed exported, one test chip predicted
        with Grad-CAM."""
        main = "ce" if p.opts.baseline else "drrnet"
        systems = {"ce": []} if p.opts.baseline else {"drrnet": [], "ce": list(self.baseline)}
        seeds = parse_seeds(p.opts.extra.get("seeds"), RUN_SEEDS if p.opts.seed is None else [p.opts.seed])
        compared = compare_over_seeds(p, systems, seeds, ("accuracy", "macro_f1"), main)
        exported = p.export()
        test_row = next(r for r in PreparedSar(p.data).index_rows() if r["split"] == "test")
        predicted = predict_chips(
            exported["export_dir"], [test_row["files"][0]], gradcam_dir=str(p.run.path / "gradcam"), overwrite=True
        )
        # the first seed of each system in full (per-class accuracy), as its eval.json holds it
        first = {name: read_json(Path(rows[0]["run_dir"]) / "eval.json") for name, rows in compared["per_seed"].items()}
        out = {
            "task": TASK_NAME,
            "run_dir": str(p.run.path),
            "data": p.data,
            "split": first[main]["split"],
            "seeds": compared["seeds"],
            "systems": compared["systems"],
            "per_seed": compared["per_seed"],
            **{name: {k: r[k] for k in ("accuracy", "macro_f1", "per_class_accuracy")} for name, r in first.items()},
            "confusion_png": first[main]["confusion_png"],
            "export_dir": exported["export_dir"],
            "parity_max_abs_diff": exported["parity_max_abs_diff"],
            "prediction": predicted["predictions"][0],
        }
        if not p.opts.baseline:
            out["awa_png"] = str(p.run.plots / "awa_weights.png")
        return out

    def report(self, command: str, result: dict) -> Any:
        if command == "run" and "systems" in result:
            several = len(result["seeds"]) > 1

            rows = [
                (name, summary_cell(r, "accuracy", several), summary_cell(r, "macro_f1", several))
                for name, r in result["systems"].items()
            ]
            seeds = ", ".join(map(str, result["seeds"]))
            return metric_table(
                f"sar run — {result['split']} split",
                ("system", "top-1", "macro-F1"),
                rows,
                caption=(f"mean ± sample std over seeds {seeds}" if several else f"seed {seeds}")
                + f"; confusion (first seed): {result['confusion_png']}; every method: `skd sar compare`",
            )
        if command == "eval":
            rows = [(c, a) for c, a in result["per_class_accuracy"].items()]
            rows += [("top-1", result["accuracy"]), ("macro-F1", result["macro_f1"])]
            if "repeats" in result:
                rows += [(f"top-1 ({result['repeats']['n']} TTA passes)", result["repeats"]["accuracy"])]
            return metric_table(
                f"sar eval: {result['method']} / {result['backbone']} ({result['split']})",
                ("class", "accuracy"),
                rows,
                caption=f"confusion: {result['confusion_png']}",
            )
        if command == "train" and "repeats" in result:
            return metric_table(
                f"sar train --repeats {result['repeats']}: {result['method']}",
                ("metric", "mean ± std"),
                [("top-1", result["accuracy"]), ("macro-F1", result["macro_f1"])],
            )
        return None

    # -- bench ------------------------------------------------------------------------------------------------------
    def bench_task(self, cfg: SarConfig, data_dir: str) -> SarTask:
        task = SarTask(cfg, data_dir)
        task.warm_offline = True  # the DRRNet/CE ratio must include the offline teacher's forward
        return task

    def bench_extra(self, make, data: str, device: torch.device, steps: int, rounds: int, timed: dict) -> dict:
        """Images/s at 128x128 on ResNet-18 (1-channel, 5 classes): a CE and a DRRNet train step (batch 32)
        and inference (batch 64), measured on random chips in memory."""
        return {"resnet18_128": resnet18_throughput(device, steps=max(3, min(steps, 10)))}


def resnet18_throughput(device: torch.device, steps: int = 5, batch: int = 32) -> dict:
    from .config import AWAConfig

    torch.manual_seed(0)
    net = SarNet("resnet18", 5, 1).to(device)
    x = torch.randn(batch, 1, 128, 128, device=device)
    y = torch.randint(0, 5, (batch,), device=device)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    teacher = SnapshotTeacher(net, initial="copy")
    teacher.model.to(device)
    awa = AdaptiveWeightAssignment(AWAConfig())
    last = LastIterationLogits()
    idx = torch.arange(batch, device=device)

    def step(kd: bool) -> None:
        logits = net(x)
        if kd:
            mask, online = last.lookup(idx, 5)
            w_off, w_on = awa.weights(Progress(0, 1, 1, 1))
            loss, _ = drrnet_loss(logits, y, teacher(x), online, mask, w_off, w_on, 3.0, 1.0)
            last.store(idx, logits)
        else:
            loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()

    out = {"batch": batch, "steps": steps, "device": str(device)}
    for name, kd in (("train_ce", False), ("train_drrnet", True)):
        step(kd)  # warm-up
        t0 = time.perf_counter()
        for _ in range(steps):
            step(kd)
        out[f"{name}_images_per_second"] = round(steps * batch / (time.perf_counter() - t0), 1)
    net.eval()
    xi = torch.randn(64, 1, 128, 128, device=device)
    with torch.no_grad():
        net(xi)
        t0 = time.perf_counter()
        for _ in range(steps):
            float(net(xi).sum())
    out["inference_images_per_second"] = round(steps * 64 / (time.perf_counter() - t0), 1)
    return out


# -- compare: every method x N seeds ----------------------------------------------------------------------------------
def compare_methods(
    data: str,
    run_dir: str,
    methods: list[str],
    seeds: int = 3,
    *,
    config: str | None = None,
    sets: list[str] | None = None,
    backbone: str | None = None,
    max_steps: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
    split: str | None = None,
) -> dict:
    """Every method x N seeds into RUN_DIR/<method>/seed<k> (finished runs reused, unfinished resumed),
    each evaluated; one table of mean ± sample std. TF-KD's ``self`` variant is taught by the CE run of
    the same seed."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SkdError(f"--methods: {unknown or 'none given'}; valid: {', '.join(METHODS)}")
    if seeds < 1:
        raise SkdError("--seeds must be >= 1")
    if not (Path(data) / "prep.json").is_file():
        raise SkdError("not a prepared sar dataset (no prep.json)", data)
    hooks = SarHooks()
    cfg0 = build_config(SarConfig, config, sets)
    order = sorted(methods, key=lambda m: 0 if m == "ce" else 1)  # CE first: TF-KD self needs its runs
    table = {}
    for m in order:
        evals = []
        for s in range(seeds):
            sub = Path(run_dir) / m / f"seed{s}"
            extra = [*(sets or []), f"kd.method={m}"] + ([f"model.backbone={backbone}"] if backbone else [])
            if m == "tf-kd" and cfg0.kd.tf_kd.variant == "self" and not cfg0.kd.tf_kd.teacher:
                if "ce" not in methods:
                    raise SkdError("tf-kd with kd.tf_kd.variant=self in compare needs ce among --methods (its teacher)")
                extra.append(f"kd.tf_kd.teacher={Path(run_dir) / 'ce' / f'seed{s}'}")
            console.print(f"[cyan]compare:[/] {m} seed {s} -> {sub}")
            opts = StageOptions(
                command="train",
                run_dir=str(sub),
                data=data,
                config=config,
                sets=extra,
                seed=s,
                max_steps=max_steps,
                device=device,
                overwrite=overwrite,
            )
            hooks.train_or_reuse(opts)
            evals.append(
                eval_stage(hooks, StageOptions(command="eval", run_dir=str(sub), device=device, extra={"split": split}))
            )
        table[m] = {
            "accuracy": mean_std([e["accuracy"] for e in evals]),
            "macro_f1": mean_std([e["macro_f1"] for e in evals]),
        }
    info = PreparedSar(data).info
    result = {
        "task": TASK_NAME,
        "run_dir": str(run_dir),
        "data": str(Path(data).resolve()),
        "seeds": seeds,
        "split": split or cfg0.eval.split,
        "backbone": backbone or cfg0.model.backbone,
        "shots": info.get("shots"),
        "label_noise": info.get("label_noise", {}).get("rate"),
        "std": "sample (ddof=1)",
        "methods": {m: table[m] for m in methods},
    }
    atomic_write_json(Path(run_dir) / "compare.json", result)
    return result


def compare_report(result: dict) -> Any:
    rows = [(m, r["accuracy"], r["macro_f1"]) for m, r in result["methods"].items()]
    return metric_table(
        f"sar compare: {result['backbone']}, {result['seeds']} seed(s), {result['split']} split",
        ("method", "top-1", "macro-F1"),
        rows,
        caption=f"shots={result['shots'] or 'all'}, label noise={result['label_noise']}; mean ± sample std over seeds",
    )
