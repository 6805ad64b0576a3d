"""The sar Task (DRRNet-SKD and its self-KD baselines on one engine) and the stages:
prep -> train -> eval -> export -> predict, `compare` (every method x N seeds) and `run` (the tiny default).

The teachers are the engine's teacher signals: DRRNet's offline teacher is a ``SnapshotTeacher``
(previous generation), a ``BestCheckpointTeacher`` (best validation checkpoint) or a frozen copy loaded
from a file; its online teacher is the network's own detached prediction from the last iteration
(``LastIterationLogits``), on another augmented view (``DetachedPrediction``) or an ``EMATeacher``.
The AWA module is a stateful signal too, so kill -9 + --resume continues bit-exactly.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..engine.config import build_config
from ..engine.console import console
from ..engine.distributed import resolve_device
from ..engine.errors import SkdError
from ..engine.export import export_program, load_exported
from ..engine.io import atomic_write_json, read_json
from ..engine.rundir import RunDir
from ..engine.schedules import Progress
from ..engine.stages import load_run_config, recorded_data_dir, train_run
from ..engine.teachers import (BestCheckpointTeacher, DetachedPrediction, EMATeacher, PredictionMemory, SnapshotTeacher,
                               TeacherSignal, unwrap_model)
from ..engine.trainer import Task, count_parameters
from .chips import NormSpec, normalise, read_chip
from .config import METHODS, SarConfig
from .data import SPLITS, PrepOptions, PreparedSar, prepare_dataset
from .loss import (byot_loss, cs_kd_loss, dense_votes, dlb_loss, drrnet_loss, ps_kd_loss, tf_kd_reg_loss,
                   tf_kd_self_loss, zipf_ls_loss)
from .metrics import classification_metrics, mean_std
from .model import SarNet, build_model, gradcam, read_state_dict
from .plots import plot_awa, plot_confusion, plot_gradcam
from .sampling import overlapping_order, paired_order
from .signals import AdaptiveWeightAssignment, LastIterationLogits

TASK_NAME = "sar"
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
        raise SkdError(f"teacher does not fit this backbone (missing {missing[:3]}, unexpected {unexpected[:3]})",
                       weights)


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
        self.data_fingerprint = self.data.info.get("fingerprint")
        self.find_unused_parameters = cfg.kd.method == "byot"
        self._teachers: dict[str, TeacherSignal] = {}
        self.awa: AdaptiveWeightAssignment | None = None
        self.last: LastIterationLogits | None = None
        self.memory: PredictionMemory | None = None
        self._device: torch.device | None = None

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
            loss, terms = ps_kd_loss(logits, y, self.memory[idx], self.memory.filled[idx.to(self.memory.filled.device)],
                                     alpha_t)
            self.memory.update(_gather(idx), _gather(torch.softmax(logits.detach().float(), -1)))
            logs["weight/alpha_t"] = alpha_t
        elif m == "tf-kd":
            logits = model(xa)
            c = kd.tf_kd
            if c.variant == "reg":
                loss, terms = tf_kd_reg_loss(logits, y, c.alpha, c.temperature, c.multiplier, c.correct_prob, c.reduction)
            else:
                loss, terms = tf_kd_self_loss(logits, self._teachers["teacher"](xa), y, c.alpha, c.temperature,
                                              c.multiplier, c.reduction)
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
        logs.update({"weight/off": w_off, "weight/on": w_on, "awa/accuracy_ema": self.awa.acc_ema,
                     "teacher/offline_ready": float(offline is not None),
                     "teacher/online_coverage": float(mask.float().mean()) if mask is not None else 1.0})
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


# -- stages -----------------------------------------------------------------------------------------------------------
def prep_stage(source: str, raw: str | None, out: str, *, classes: str | None = None, label_level: str = "subcategory",
               variant: str = "patch_uint8", pol: str = "vv", name_regex: str | None = None, split: str = "0.6,0.2,0.2",
               seed: int = 0, shots: int = 0, label_noise: float = 0.0, size: int = 64, crop: int = 0,
               scale: str = "auto", percentiles: str = "1,99.9", per_class: int = 80, overwrite: bool = False) -> dict:
    try:
        p_lo, p_hi = (float(v) for v in percentiles.split(","))
    except ValueError as exc:
        raise SkdError(f"--percentiles expects LO,HI like 1,99.9, got '{percentiles}'") from exc
    opts = PrepOptions(classes=classes, label_level=label_level, variant=variant, pol=pol, split=split, seed=seed,
                       shots=shots, label_noise=label_noise, norm=NormSpec(scale, p_lo, p_hi, crop, size),
                       synthetic_per_class=per_class)
    if name_regex:
        opts.name_regex = name_regex
    return prepare_dataset(source, raw, out, opts, overwrite=overwrite)


def configure(cfg: SarConfig, method: str | None = None, backbone: str | None = None, baseline: bool = False) -> None:
    """--baseline = plain cross-entropy (kd.method=ce); --method / --backbone set kd.method / model.backbone."""
    if method:
        cfg.kd.method = method
    if baseline:
        cfg.kd.method = "ce"
    if backbone:
        cfg.model.backbone = backbone
    cfg.validate()


def _summary_extra(cfg: SarConfig) -> dict:
    return {"method": cfg.kd.method, "backbone": cfg.model.backbone}


def train_stage(data: str | None, run_dir: str, config: str | None = None, sets: list[str] | None = None,
                method: str | None = None, backbone: str | None = None, baseline: bool = False, seed: int | None = None,
                max_steps: int | None = None, checkpoint_every: int | None = None, resume: bool = False,
                device: str = "auto", overwrite: bool = False, show_progress: bool = True) -> dict:
    change = method or backbone or baseline
    summary = train_run(TASK_NAME, SarConfig, SarTask, data=data, run_dir=run_dir, config=config, sets=sets,
                        baseline=(lambda cfg: configure(cfg, method, backbone, baseline)) if change else None,
                        seed=seed, max_steps=max_steps, checkpoint_every=checkpoint_every, resume=resume,
                        device=device, overwrite=overwrite, summary_extra=_summary_extra, show_progress=show_progress)
    awa = plot_awa(RunDir(run_dir).metrics, RunDir(run_dir).plots / "awa_weights.png")
    if awa:
        summary.setdefault("plots", []).append(str(awa))
    return summary


def load_run(run_dir: str, data: str | None, device: torch.device) -> tuple[SarConfig, SarTask, SarNet, RunDir]:
    run = RunDir(run_dir)
    run.require_trained()
    cfg = load_run_config(SarConfig, run)
    task = SarTask(cfg, data or recorded_data_dir(run))
    model = SarNet(cfg.model.backbone, task.num_classes, task.in_chans, cfg.model.width, cfg.model.dropout,
                   byot_exits=cfg.kd.method == "byot")
    RunDir.load_weights(model, run.weights_for_eval())
    return cfg, task, model.to(device).eval(), run


def eval_stage(run_dir: str, data: str | None = None, split: str | None = None, device: str = "auto",
               repeats: int = 0) -> dict:
    """Top-1, macro-F1, per-class accuracy, confusion matrix + PNG on the test (or val) split.
    ``repeats`` N: evaluate RUN_DIR/seed<k> for k < N and report mean ± sample std."""
    if repeats:
        subs = sorted(Path(run_dir).glob("seed*"), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else 0)
        subs = [s for s in subs if (s / "config.yaml").is_file()][:repeats]
        if len(subs) < repeats:
            raise SkdError(f"--repeats {repeats}: found {len(subs)} trained seed<k> run(s) here "
                           "(train them with `train --repeats N`)", run_dir)
        runs = [eval_stage(str(s), data, split, device) for s in subs]
        result = {"task": TASK_NAME, "run_dir": str(run_dir), "repeats": repeats, "split": runs[0]["split"],
                  "method": runs[0]["method"], "backbone": runs[0]["backbone"], "std": "sample (ddof=1)",
                  "accuracy": mean_std([r["accuracy"] for r in runs]), "macro_f1": mean_std([r["macro_f1"] for r in runs]),
                  "per_class_accuracy": {c: mean_std([r["per_class_accuracy"][c] for r in runs])
                                         for c in runs[0]["per_class_accuracy"]},
                  "runs": [r["run_dir"] for r in runs]}
        atomic_write_json(Path(run_dir) / "eval_repeats.json", result)
        return result
    dev = resolve_device(device)
    cfg, task, model, run = load_run(run_dir, data, dev)
    split = split or cfg.eval.split
    idx = task.data.indices(split)
    if len(idx) == 0:
        raise SkdError(f"the prepared dataset has no {split} chips (choose --split val|test)", task.data.path)
    x = torch.from_numpy((task.data.x[idx] - task.data.mean) / task.data.std).float()
    y = torch.from_numpy(task.data.clean_labels[idx]).long()
    loader = torch.utils.data.DataLoader(ChipDataset(x, y), batch_size=128)
    t0 = time.perf_counter()
    logits, y = predict_logits(model, loader, dev)
    seconds = time.perf_counter() - t0
    scores = classification_metrics(y.numpy(), logits.argmax(1).numpy(), task.data.classes)
    png = plot_confusion(run.path / "plots" / f"confusion_{split}.png", scores["confusion"], task.data.classes,
                         f"{cfg.kd.method} / {cfg.model.backbone} — {split}: top-1 {scores['accuracy']:.1%}, "
                         f"macro-F1 {scores['macro_f1']:.3f}")
    result = {"task": TASK_NAME, "run_dir": str(run.path), "data": str(task.data.path.resolve()), "split": split,
              "method": cfg.kd.method, "backbone": cfg.model.backbone, **scores,
              "nll": round(float(F.cross_entropy(logits, y)), 4), "classes": task.data.classes,
              "confusion_png": str(png), "chips_per_second": round(len(y) / max(seconds, 1e-9), 1),
              "weights": str(run.weights_for_eval())}
    atomic_write_json(run.eval_json, result)
    return result


class _Classifier(torch.nn.Module):
    """What the export runs: chips (B, C, S, S) in [0, 1] -> logits; the train standardisation inside."""

    def __init__(self, net: SarNet, mean: float, std: float):
        super().__init__()
        self.net = net
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def export_stage(run_dir: str, out: str | None = None, overwrite: bool = False) -> dict:
    dev = torch.device("cpu")
    cfg, task, model, run = load_run(run_dir, None, dev)
    model.exits = torch.nn.ModuleList()  # BYOT's shallow exits are training-only
    module = _Classifier(model, task.data.mean, task.data.std).eval()
    c, s = task.in_chans, task.data.x.shape[-1]
    gen = torch.Generator().manual_seed(0)
    batch = torch.export.Dim("chips", min=1, max=4096)
    out_dir = Path(out) if out else run.export_dir
    info = task.data.info

    def write_extra(folder: Path) -> dict:
        return {"task": TASK_NAME, "classes": task.data.classes, "channels": c, "size": int(s),
                "normalisation": info["normalisation"], "train_mean": task.data.mean, "train_std": task.data.std,
                "source": info["source"], "options": info.get("options", {}),
                "model": {"backbone": cfg.model.backbone, "width": cfg.model.width, "dropout": cfg.model.dropout},
                "method": cfg.kd.method, "inputs": [f"chips (B, {c}, {s}, {s}) float32 in [0, 1]"],
                "outputs": [f"logits (B, {task.num_classes})"], "parameters": count_parameters(module)}

    manifest = export_program(module, (torch.rand(2, c, s, s, generator=gen),), out_dir, dynamic_shapes=({0: batch},),
                              write_extra=write_extra, overwrite=overwrite,
                              parity_inputs=[(torch.rand(3, c, s, s, generator=gen),), (torch.rand(1, c, s, s, generator=gen),)])
    return {"task": TASK_NAME, "export_dir": str(out_dir), "parameters": manifest["parameters"],
            "parity_max_abs_diff": manifest["parity"]["max_abs_diff"], "files": sorted(manifest["files"])}


def predict_stage(model_path: str, chips: list[str], gradcam_dir: str | None = None, overwrite: bool = False) -> dict:
    """Class and probabilities per chip with an export alone; optional Grad-CAM PNG per chip (the
    export's safetensors weights rebuilt into the eager network, which gives gradients)."""
    if not chips:
        raise SkdError("give at least one chip file")
    module, manifest, folder = load_exported(model_path)
    if manifest.get("task") != TASK_NAME:
        raise SkdError(f"not a sar export (task={manifest.get('task')})", folder)
    n = manifest["normalisation"]
    spec = NormSpec(n["scale"], n["p_lo"], n["p_hi"], n["crop"], n["size"])
    channels = int(manifest["channels"])
    if channels != 1:
        raise SkdError(f"this export takes {channels} channels (VV+VH); predict reads single-polarisation chips", folder)
    arrays = []
    for chip in chips:
        arrays.append(normalise(read_chip(chip), spec)[None])
    x = torch.from_numpy(np.stack(arrays)).float()
    with torch.no_grad():
        probs = torch.softmax(module(x).float(), -1)
    classes = manifest["classes"]
    rows = [{"chip": str(c), "class": classes[int(p.argmax())], "probabilities": {k: round(float(v), 4)
                                                                                 for k, v in zip(classes, p)}}
            for c, p in zip(chips, probs)]
    if gradcam_dir:
        mm = manifest["model"]
        net = SarNet(mm["backbone"], len(classes), channels, mm["width"], mm["dropout"])
        RunDir.load_weights(net, folder / manifest["weights"], strict=False)
        wrapped = _Classifier(net, float(manifest["train_mean"]), float(manifest["train_std"]))
        cams, _ = gradcam(net, (x - wrapped.mean) / wrapped.std)
        for row, chip, xi, cam in zip(rows, chips, x, cams):
            png = Path(gradcam_dir) / f"{Path(chip).stem}_gradcam.png"
            if png.exists() and not overwrite:
                raise SkdError("already exists; pass --overwrite to replace it", png)
            top = row["probabilities"][row["class"]]
            plot_gradcam(png, xi[0].numpy(), cam.numpy(), f"{Path(chip).name}: {row['class']} ({top:.0%})")
            row["gradcam_png"] = str(png)
    return {"task": TASK_NAME, "model": str(folder), "predictions": rows}


def train_repeats(data: str, run_dir: str, repeats: int, seed: int | None = None, **kw) -> dict:
    """N seeds into RUN_DIR/seed<k>; finished seeds are kept, unfinished ones resumed."""
    first = 0 if seed is None else seed
    summaries = []
    for s in range(first, first + repeats):
        sub = Path(run_dir) / f"seed{s}"
        summaries.append(_train_or_reuse(data, str(sub), seed=s, **kw))
    return {"task": TASK_NAME, "run_dir": str(run_dir), "repeats": repeats, "seeds": list(range(first, first + repeats)),
            "method": summaries[0].get("method"), "train_seconds": [s.get("train_seconds") for s in summaries]}


def _train_or_reuse(data: str, run_dir: str, overwrite: bool = False, **kw) -> dict:
    run = RunDir(run_dir)
    if run.is_finished() and not overwrite:
        console.print(f"[cyan]finished run in {run_dir}: reused (--overwrite retrains)")
        return read_json(run.summary)
    if run.config.is_file() and not overwrite:
        console.print(f"[cyan]unfinished run in {run_dir}: resumed")
        return train_stage(None, run_dir, resume=True, device=kw.get("device", "auto"), show_progress=False)
    return train_stage(data, run_dir, overwrite=overwrite, show_progress=False, **kw)


def compare_stage(data: str, run_dir: str, methods: list[str], seeds: int = 3, *, config: str | None = None,
                  sets: list[str] | None = None, backbone: str | None = None, max_steps: int | None = None,
                  device: str = "auto", overwrite: bool = False, split: str | None = None) -> dict:
    """Every method x N seeds into RUN_DIR/<method>/seed<k>, each evaluated; one table (mean ± std).
    TF-KD's ``self`` variant is taught by the CE run of the same seed."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SkdError(f"--methods: {unknown} unknown; valid: {', '.join(METHODS)}")
    if seeds < 1:
        raise SkdError("--seeds must be >= 1")
    cfg0 = build_config(SarConfig, config, sets)
    order = sorted(methods, key=lambda m: 0 if m == "ce" else 1)  # the CE runs first: TF-KD self needs them
    table = {}
    for m in order:
        evals = []
        for s in range(seeds):
            sub = str(Path(run_dir) / m / f"seed{s}")
            extra = list(sets or [])
            if m == "tf-kd" and cfg0.kd.tf_kd.variant == "self" and not cfg0.kd.tf_kd.teacher:
                if "ce" not in methods:
                    raise SkdError("tf-kd with kd.tf_kd.variant=self in compare needs ce among --methods (its teacher)")
                extra.append(f"kd.tf_kd.teacher={Path(run_dir) / 'ce' / f'seed{s}'}")
            console.print(f"[cyan]compare:[/] {m} seed {s} -> {sub}")
            _train_or_reuse(data, sub, config=config, sets=extra, method=m, backbone=backbone, seed=s,
                            max_steps=max_steps, device=device, overwrite=overwrite)
            evals.append(eval_stage(sub, None, split, device))
        table[m] = {"accuracy": mean_std([e["accuracy"] for e in evals]),
                    "macro_f1": mean_std([e["macro_f1"] for e in evals])}
    info = PreparedSar(data).info
    result = {"task": TASK_NAME, "run_dir": str(run_dir), "data": str(Path(data).resolve()), "seeds": seeds,
              "split": split or cfg0.eval.split, "backbone": backbone or cfg0.model.backbone,
              "shots": info.get("shots"), "label_noise": info.get("label_noise", {}).get("rate"),
              "std": "sample (ddof=1)", "methods": {m: table[m] for m in methods}}
    atomic_write_json(Path(run_dir) / "compare.json", result)
    return result


def compare_table(result: dict):
    from rich.table import Table

    t = Table(title=f"sar compare: {result['backbone']}, {result['seeds']} seed(s), {result['split']} split "
                    f"(shots={result['shots'] or 'all'}, label noise={result['label_noise']})")
    for col in ("method", "top-1 (%)", "macro-F1 (%)"):
        t.add_column(col)
    for m, row in result["methods"].items():
        a, f = row["accuracy"], row["macro_f1"]
        t.add_row(m, f"{100 * a['mean']:.1f} ± {100 * a['std']:.1f}", f"{100 * f['mean']:.1f} ± {100 * f['std']:.1f}")
    return t


# -- the tiny default ----------------------------------------------------------------------------------------------------
TINY_SIZE = 48


def write_tiny_data(out_dir: str | Path) -> dict:
    """The embedded tiny default: synthetic SAR chips in the FUSAR-Ship layout (written under
    OUT/raw), prepared through the real FUSAR reader at 48x48 (same as `prep --source synthetic`)."""
    return prep_stage("synthetic", None, str(out_dir), size=TINY_SIZE, overwrite=True)


def run_all_stages(run_dir: str, data: str | None = None, config: str | None = None, sets: list[str] | None = None,
                   seed: int | None = None, max_steps: int | None = None, device: str = "auto",
                   overwrite: bool = False) -> dict:
    """prep (synthetic FUSAR-like) -> train DRRNet-SKD and the CE baseline -> eval both -> export DRRNet ->
    predict one test chip with Grad-CAM."""
    t0 = time.perf_counter()
    run = RunDir(run_dir)
    if (run.path / "drrnet" / "config.yaml").is_file() and not overwrite:
        raise SkdError("already holds a run; pass --overwrite to replace it", run.path)
    if data is None:
        data = str(run.path / "data")
        if not (Path(data) / "prep.json").is_file():
            console.print("[cyan]prep:[/] writing synthetic SAR chips in the FUSAR-Ship layout")
            write_tiny_data(data)
    results = {}
    for name, method in (("drrnet", "drrnet"), ("ce", "ce")):
        console.print(f"[cyan]train[/] {name}")
        train_stage(data, str(run.path / name), config=config, sets=sets, method=method, seed=seed, max_steps=max_steps,
                    device=device, overwrite=overwrite)
        results[name] = eval_stage(str(run.path / name), None, None, device)
    console.print("[cyan]export[/] drrnet")
    exported = export_stage(str(run.path / "drrnet"), overwrite=True)
    prepared = PreparedSar(data)
    test_row = next(r for r in prepared.index_rows() if r["split"] == "test")
    chip = test_row["files"][0]
    if not Path(chip).is_absolute():
        chip = str(Path(data) / chip)
    predicted = predict_stage(exported["export_dir"], [chip], gradcam_dir=str(run.path / "gradcam"), overwrite=True)
    d, c = results["drrnet"], results["ce"]
    return {"task": TASK_NAME, "run_dir": str(run.path), "data": data, "split": d["split"],
            "drrnet": {k: d[k] for k in ("accuracy", "macro_f1", "per_class_accuracy")},
            "ce": {k: c[k] for k in ("accuracy", "macro_f1", "per_class_accuracy")},
            "confusion_png": d["confusion_png"], "awa_png": str(run.path / "drrnet" / "plots" / "awa_weights.png"),
            "export_dir": exported["export_dir"], "parity_max_abs_diff": exported["parity_max_abs_diff"],
            "prediction": predicted["predictions"][0], "total_seconds": round(time.perf_counter() - t0, 1)}
