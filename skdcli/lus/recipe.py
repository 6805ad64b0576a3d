"""The lus Tasks the engine trains, and the hooks the CLI contract runs them through:

DinoTask    `pretrain`: DINO self-distillation (EMA teacher, centring, sharpening) on unlabelled frames
FrameTask   `train --level frame`: linear probe on cached frozen features, or fine-tuning the backbone
VideoTask   `train --level video`: dual-level VLAD / NetVLAD / mean pooling on cached frame features

LusHooks       train / eval / export / run of the shared contract (engine/stages.py), and the recipe's
               own stages: prep, pretrain (through PretrainHooks), score, bench
PretrainHooks  the DINO stage on the engine's train plumbing, with its own config class (PretrainConfig)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..engine.config import build_config
from ..engine.console import console, metric_table, progress_bar, progress_callback
from ..engine.contract import StageOptions
from ..engine.distributed import resolve_device
from ..engine.errors import SkdError
from ..engine.export import load_exported
from ..engine.io import atomic_write_json
from ..engine.rundir import RunDir
from ..engine.schedules import Progress
from ..engine.stages import ExportSpec, Pipeline, RecipeHooks, Trained, eval_stage, load_run_config, train_run
from ..engine.teachers import EMATeacher, unwrap_model
from ..engine.trainer import Task
from .augment import clean_view, finetune_crops, multi_crop
from .config import CLASS_NAMES, NUM_CLASSES, LusConfig, PretrainConfig
from .data import SOURCES, ClipError, PreparedLus, decode_video, prepare_dataset, read_clip, sample_frame_indices
from .features import Backbone, FeatureSet, cached_features, load_backbone
from .loss import (
    DinoCentre,
    clip_per_parameter,
    dino_loss,
    knn_scores,
    teacher_momentum,
    teacher_temperature,
    weight_decay_at,
)
from .metrics import classification_metrics, mean_std
from .model import (
    DinoModel,
    FineTuneModel,
    FrameHead,
    FrameScorer,
    VideoHead,
    VideoScorer,
    load_backbone_weights,
    read_checkpoint,
)

TASK_NAME = "lus"


class IndexDataset(Dataset):
    """Items are integer ids (frames / clips); the Task turns a batch of ids into tensors."""

    def __init__(self, ids: list[int]):
        self.ids = list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> int:
        return self.ids[i]


def _ids(items: list[int]) -> torch.Tensor:
    return torch.tensor(items, dtype=torch.long)


# -- DINO pretraining --------------------------------------------------------------------------------------------------
class DinoTask(Task):
    """DINO on every clip frame (labels unused). One draw = a uniformly chosen clip, then a uniformly
    chosen frame of it (official WeightedRandomSampler + RandomSelect); an epoch of the engine has as
    many draws as there are frames, the DINO schedules count their own epochs (dino.epoch_steps)."""

    def __init__(self, cfg: PretrainConfig, data_dir: str | Path):
        self.cfg = cfg
        self.data = PreparedLus(data_dir)
        if not self.data.clips:
            raise SkdError("no clips to pretrain on", data_dir)
        self.global_size = cfg.aug.global_size or cfg.model.img_size
        self.offsets = np.array([c["offset"] for c in self.data.clips])
        self.lengths = np.array([c["n_frames"] for c in self.data.clips])
        self.train_set = IndexDataset(range(len(self.data.frames)))
        self.monitor = {f: self.data.labelled_of_fold(f) for f in (1, 2)}
        self._model: DinoModel | None = None
        self._ema: EMATeacher | None = None
        self._centre: DinoCentre | None = None

    def data_fingerprint(self) -> str:
        return self.data.fingerprint

    def build_model(self) -> DinoModel:
        model = DinoModel(self.cfg.model, self.cfg.dino)
        if self.cfg.init:
            backbone, head, _ = read_checkpoint(self.cfg.init)
            load_backbone_weights(model.backbone, backbone, self.cfg.init)
            if head is not None:
                try:
                    model.head.load_state_dict(head)
                except RuntimeError:
                    console.print(
                        f"[yellow]{self.cfg.init}: its DINO head does not fit dino.* (out_dim, hidden_dim, "
                        "bottleneck_dim): the head starts from random weights"
                    )
        self._model, self._ema, self._centre = model, None, None
        return model

    def train_dataset(self) -> Dataset:
        return self.train_set

    def eval_dataset(self) -> Dataset | None:
        # KNN monitoring (fold 1 <-> fold 2) when both folds have labelled frames
        return IndexDataset([0]) if all(self.monitor.values()) else None

    def epoch_order(self, dataset, seed: int, epoch: int, global_batch: int) -> list[int]:
        n = len(dataset) // global_batch * global_batch
        rng = np.random.default_rng([seed, epoch, 0x1D1])
        clips = rng.integers(0, len(self.offsets), size=n)
        within = np.minimum((rng.random(n) * self.lengths[clips]).astype(np.int64), self.lengths[clips] - 1)
        return (self.offsets[clips] + within).tolist()

    def collate(self, items: list[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.data.frames[i] for i in items]))

    def teachers(self) -> dict:
        if self._ema is None:
            if self._model is None:
                raise RuntimeError("build_model() first")
            cfg = self.cfg
            self._ema = EMATeacher(self._model, decay=lambda n: teacher_momentum(cfg.dino, n, cfg.train.max_steps))
            device = next(self._model.parameters()).device
            self._centre = DinoCentre(cfg.dino.out_dim, cfg.dino.center_momentum, cfg.dino.center_mode, device)
        return {"ema": self._ema, "center": self._centre}

    def compute_loss(self, model, batch: torch.Tensor, progress: Progress):
        teachers = self.teachers()  # created from the initial weights at step 0
        ema, centre = teachers["ema"], teachers["center"]
        d = self.cfg.dino
        temp = teacher_temperature(d, progress.step)
        globals_, locals_ = multi_crop(batch, self.cfg.aug, self.global_size)
        student = model(globals_, locals_)
        teacher = ema(globals_)
        loss, q = dino_loss(student, teacher.float(), centre.value(), d.student_temp, temp)
        centre.update(teacher)
        with torch.no_grad():
            entropy = -(q * q.clamp_min(1e-12).log()).sum(-1).mean()
        return loss, {
            "loss/dino": loss.detach(),
            "weight/teacher_temp": temp,
            "weight/teacher_momentum": ema.current_decay(),
            "weight/weight_decay": weight_decay_at(
                self.cfg.train.weight_decay, d, progress.step, self.cfg.train.max_steps
            ),
            "teacher_entropy": entropy,
            "center_norm": centre.center.norm(dim=-1).mean(),
        }

    def before_optimizer_step(self, model, optimizer, progress: Progress) -> None:
        d = self.cfg.dino
        # group 0 = the decayed weights (the engine's grouping = DINO's get_params_groups)
        optimizer.param_groups[0]["weight_decay"] = weight_decay_at(
            self.cfg.train.weight_decay, d, progress.step, self.cfg.train.max_steps
        )
        bare = unwrap_model(model)
        if d.clip_grad > 0:
            clip_per_parameter(bare.parameters(), d.clip_grad)
        if progress.step < d.freeze_last_layer_epochs * d.epoch_steps:  # official cancel_gradients_last_layer
            for p in bare.head.last_layer.parameters():
                p.grad = None

    @torch.no_grad()
    def evaluate(self, model, loader, device) -> dict[str, float]:
        vit = self.teachers()["ema"].model.backbone
        feats = {}
        for f in (1, 2):
            ids = self.monitor[f]
            x = torch.from_numpy(np.stack([self.data.labelled_frames[i] for i in ids])).to(device)
            feats[f] = (
                vit(clean_view(x, self.cfg.aug, self.cfg.model.img_size)).float(),
                _ids([self.data.labelled[i]["label"] for i in ids]).to(device),
            )
        accs = []
        for f in (1, 2):
            (tr, ytr), (te, yte) = feats[f], feats[3 - f]
            votes = knn_scores(tr, ytr, te, self.cfg.dino.knn_k, 0.07, NUM_CLASSES)[-1]
            accs.append(float((votes.argmax(1) == yte).float().mean()))
        return {"knn_acc": float(np.mean(accs)), "knn_acc_fold1": accs[0], "knn_acc_fold2": accs[1]}


class SupervisedCropsTask(DinoTask):
    """The bench's reference step: the same ViT and the same crops, trained with plain cross-entropy on
    the clip labels (no teacher, no centre) — one supervised forward/backward at the DINO crop count."""

    def __init__(self, cfg: PretrainConfig, data_dir: str | Path):
        super().__init__(cfg, data_dir)
        self.frame_label = np.full(len(self.data.frames), -100, dtype=np.int64)
        for c in self.data.clips:
            self.frame_label[c["offset"] : c["offset"] + c["n_frames"]] = c["label"] if c["label"] >= 0 else -100

    def build_model(self) -> nn.Module:
        model = super().build_model()
        return FineTuneModel(model.backbone)

    def teachers(self) -> dict:
        return {}

    def eval_dataset(self):
        return None

    def collate(self, items: list[int]):
        return super().collate(items), torch.from_numpy(self.frame_label[items])

    def compute_loss(self, model, batch, progress: Progress):
        frames, labels = batch
        globals_, locals_ = multi_crop(frames, self.cfg.aug, self.global_size)
        logits = torch.cat([model(globals_)] + ([model(locals_)] if locals_ is not None else []))
        loss = F.cross_entropy(logits, labels.repeat(logits.shape[0] // labels.shape[0]), ignore_index=-100)
        return loss, {"loss/ce": loss.detach()}

    def before_optimizer_step(self, model, optimizer, progress: Progress) -> None:
        if self.cfg.dino.clip_grad > 0:
            clip_per_parameter(unwrap_model(model).parameters(), self.cfg.dino.clip_grad)


# -- frame and video heads ---------------------------------------------------------------------------------------------
class _FoldTask(Task):
    """Shared by the frame and video tasks: the prepared data, the frozen backbone and its cached features."""

    def __init__(
        self,
        cfg: LusConfig,
        data_dir: str | Path,
        device: torch.device | str = "cpu",
        backbone: Backbone | None = None,
        features: FeatureSet | None = None,
    ):
        self.cfg = cfg
        self.data = PreparedLus(data_dir)
        self.train_fold, self.report_fold = cfg.fold, 3 - cfg.fold
        self.backbone = backbone or load_backbone(cfg, device)
        self.features = features or cached_features(self.backbone, self.data, cfg, torch.device(device))
        self.views = self.features.clips.shape[0]

    def data_fingerprint(self) -> str:
        return self.data.fingerprint

    def _check(self, train: list[int], report: list[int], what: str) -> None:
        for ids, fold, role in ((train, self.train_fold, "train on"), (report, self.report_fold, "report on")):
            if not ids:
                raise SkdError(f"no labelled {what} in fold {fold} to {role}", self.data.path)

    def eval_dataset(self):
        return IndexDataset(self.report_ids) if self.cfg.selection == "reported_fold" else None

    def collate(self, items: list[int]) -> torch.Tensor:
        return _ids(items)


class FrameTask(_FoldTask):
    def __init__(self, cfg: LusConfig, data_dir: str | Path, device: torch.device | str = "cpu", **kw):
        super().__init__(cfg, data_dir, device, **kw)
        self.train_ids = self.data.labelled_of_fold(self.train_fold)
        self.report_ids = self.data.labelled_of_fold(self.report_fold)
        self._check(self.train_ids, self.report_ids, "frames")
        self.labels = _ids([r["label"] for r in self.data.labelled])
        self.finetune = cfg.frame.mode == "finetune"

    def build_model(self) -> nn.Module:
        if self.finetune:
            return FineTuneModel(copy.deepcopy(self.backbone.model).requires_grad_(True).train())
        head = FrameHead(self.backbone.model.embed_dim)
        if self.cfg.features.standardize:
            head.norm.set(self.features.labelled[0, self.train_ids])
        return head

    def train_dataset(self) -> Dataset:
        return IndexDataset(self.train_ids)

    def compute_loss(self, model, ids: torch.Tensor, progress: Progress):
        labels = self.labels.to(ids.device)[ids]
        if self.finetune:
            frames = torch.from_numpy(np.stack([self.data.labelled_frames[i] for i in ids.tolist()])).to(ids.device)
            x = finetune_crops(
                frames,
                self.cfg.aug,
                self.backbone.model.cfg.img_size,
                tuple(self.cfg.frame.crop_scale),
                self.cfg.frame.hflip,
            )
            logits = model(x)
        else:
            view = torch.randint(self.views, (len(ids),))
            feats = self.features.labelled[view, ids.cpu()].to(ids.device)
            logits = model(feats)
        loss = F.cross_entropy(logits, labels)
        return loss, {"loss/ce": loss.detach()}

    @torch.no_grad()
    def predict(self, model, ids: list[int], device) -> np.ndarray:
        if self.finetune:
            out = []
            for k in range(0, len(ids), 256):
                chunk = ids[k : k + 256]
                x = torch.from_numpy(np.stack([self.data.labelled_frames[i] for i in chunk])).to(device)
                out.append(
                    model(clean_view(x, self.cfg.aug, self.backbone.model.cfg.img_size)).softmax(-1).float().cpu()
                )
            return torch.cat(out).numpy()
        return model(self.features.labelled[0, ids].to(device)).softmax(-1).float().cpu().numpy()

    def evaluate(self, model, loader, device) -> dict[str, float]:
        m = classification_metrics(self.labels[self.report_ids].numpy(), self.predict(model, self.report_ids, device))
        return {k: m[k] for k in ("accuracy", "weighted_f1", "auc")}

    def knn(self) -> dict:
        """KNN on the frozen clean features: the sweep over k = 1..k_max on the reported fold, and the k picked
        by leave-one-patient-out KNN inside the training fold (or, with knn.select_k=reported_fold, the
        official max over k on the reported fold)."""
        kc = self.cfg.knn
        feats = self.features.labelled[0]
        tr, te = _ids(self.train_ids), _ids(self.report_ids)
        votes = knn_scores(feats[tr], self.labels[tr], feats[te], kc.k_max, kc.temperature, NUM_CLASSES)
        y = self.labels[te].numpy()
        sweep = [classification_metrics(y, _vote_probs(v)) for v in votes]
        patients = np.array([self.data.labelled[i]["patient"] for i in self.train_ids])
        same = torch.from_numpy(patients[:, None] == patients[None, :])
        inner = knn_scores(feats[tr], self.labels[tr], feats[tr], kc.k_max, kc.temperature, NUM_CLASSES, exclude=same)
        inner_acc = [float((v.argmax(1) == self.labels[tr]).float().mean()) for v in inner]
        if kc.select_k == "train_fold":
            k = int(np.argmax(inner_acc)) + 1
        else:
            k = int(np.argmax([s["accuracy"] for s in sweep])) + 1
        chosen = sweep[k - 1]
        best = max(range(kc.k_max), key=lambda i: sweep[i]["accuracy"])
        return {
            "k": k,
            "selected_on": kc.select_k,
            "accuracy": chosen["accuracy"],
            "weighted_f1": chosen["weighted_f1"],
            "auc": chosen["auc"],
            "confusion": chosen["confusion"],
            "max_over_k": {
                "k": best + 1,
                "accuracy": sweep[best]["accuracy"],
                "note": "official protocol (optimistic)",
            },
            "sweep": [
                {
                    "k": i + 1,
                    "accuracy": round(s["accuracy"], 4),
                    "weighted_f1": round(s["weighted_f1"], 4),
                    "train_fold_loo_accuracy": round(inner_acc[i], 4),
                }
                for i, s in enumerate(sweep)
            ],
        }


def _vote_probs(votes: torch.Tensor) -> np.ndarray:
    v = votes.double()
    return (v / v.sum(1, keepdim=True).clamp_min(1e-300)).numpy()


class VideoTask(_FoldTask):
    def __init__(self, cfg: LusConfig, data_dir: str | Path, device: torch.device | str = "cpu", **kw):
        super().__init__(cfg, data_dir, device, **kw)
        self.train_ids = self.data.video_clips(self.train_fold)
        self.report_ids = self.data.video_clips(self.report_fold)
        self._check(self.train_ids, self.report_ids, "videos")
        self.labels = _ids([c["label"] for c in self.data.clips])
        self.offsets = [c["offset"] for c in self.data.clips]
        self.lengths = [c["n_frames"] for c in self.data.clips]

    def class_means(self) -> torch.Tensor:
        """Centroid init: class means of the L2-normalised clean features of the training clips' frames (the
        official intent, commented out in its code); classes absent from the fold fall back to torch.rand."""
        feats = self.features.clips[0]
        if self.cfg.features.standardize:  # the centroids live where the aggregator sees the features
            train = feats[self.train_frames()]
            feats = (feats - train.mean(0)) / train.std(0).clamp_min(1e-6)
        feats = F.normalize(feats, dim=-1)
        rows = torch.rand(self.cfg.video.num_clusters, feats.shape[1])
        for c in range(min(NUM_CLASSES, self.cfg.video.num_clusters)):
            idx = self.train_frames(c)
            if idx:
                rows[c] = feats[idx].mean(0)
        return rows

    def build_model(self) -> VideoHead:
        head = VideoHead(self.backbone.model.embed_dim, self.cfg.video)
        if self.cfg.features.standardize:
            head.norm.set(self.features.clips[0, self.train_frames()])
        if self.cfg.video.aggregator != "mean":
            init = self.class_means() if self.cfg.video.centroid_init == "class_means" else None
            head.pool.init_assignment(init)
        return head

    def train_frames(self, label: int | None = None) -> list[int]:
        """Frame rows (in the feature cache) of the training clips (of one class)."""
        return [
            j
            for i in self.train_ids
            if label is None or self.labels[i] == label
            for j in range(self.offsets[i], self.offsets[i] + self.lengths[i])
        ]

    def train_dataset(self) -> Dataset:
        return IndexDataset(self.train_ids)

    def clip_features(self, ids: list[int], train: bool, device) -> torch.Tensor:
        """(B, T, D) features: T frames per clip (random stride + offset, random view and time flip when
        training; uniform and clean otherwise)."""
        T = self.cfg.video.seq_len
        rows = []
        for i in ids:
            n = self.lengths[i]
            if train:
                idx = sample_frame_indices(n, T, True, lambda k: int(torch.randint(k, (1,))))
                view = int(torch.randint(self.views, (1,)))
                if float(torch.rand(())) < self.cfg.video.time_flip:
                    idx = idx[::-1].copy()
            else:
                idx, view = sample_frame_indices(n, T), 0
            rows.append(self.features.clips[view, self.offsets[i] + torch.from_numpy(idx)])
        return torch.stack(rows).to(device)

    def compute_loss(self, model, ids: torch.Tensor, progress: Progress):
        feats = self.clip_features(ids.tolist(), True, ids.device)
        logits, beta = model(feats)
        loss = F.cross_entropy(logits, self.labels.to(ids.device)[ids])
        return loss, {"loss/ce": loss.detach(), "beta_max": beta.max(-1).values.mean()}

    @torch.no_grad()
    def predict(self, model, ids: list[int], device) -> tuple[np.ndarray, np.ndarray]:
        logits, beta = model(self.clip_features(ids, False, device))
        return logits.softmax(-1).float().cpu().numpy(), beta.float().cpu().numpy()

    def evaluate(self, model, loader, device) -> dict[str, float]:
        probs, _ = self.predict(model, self.report_ids, device)
        m = classification_metrics(self.labels[self.report_ids].numpy(), probs)
        return {k: m[k] for k in ("accuracy", "weighted_f1", "auc")}


def make_task(cfg: LusConfig, data_dir: str | Path, device: torch.device | str = "cpu", **kw) -> _FoldTask:
    return (FrameTask if cfg.level == "frame" else VideoTask)(cfg, data_dir, device, **kw)


# -- the stages: engine.contract generates train / eval / export / run; cli.py adds prep, pretrain, score -------------
def prep_stage(
    source: str,
    raw: str | None,
    out: str,
    size: int = 224,
    fps: float = 15.0,
    labels: str | None = None,
    frames_per_clip: int = 3,
    overwrite: bool = False,
) -> dict:
    """`skd lus prep`: one of the readers into the prepared layout (data.py). ``--source synthetic`` without
    ``--raw`` writes its MeDiVLAD-layout clips to a temporary folder that is removed afterwards."""
    if source not in SOURCES:  # the unknown name first: "needs --raw" would mislead
        raise SkdError(f"--source must be one of {', '.join(SOURCES)}, got '{source}'")
    with progress_bar(transient=True) as bar, tempfile.TemporaryDirectory() as tmp:
        tick = progress_callback(bar)
        if source == "synthetic" and raw is None:
            raw = str(Path(tmp) / "raw")
        return prepare_dataset(
            source,
            raw,
            out,
            size=size,
            fps=fps,
            labels=labels,
            frames_per_clip=frames_per_clip,
            overwrite=overwrite,
            progress=lambda done, total: tick(1, total, f"read {source}"),
        )


def score_stage(model: str, videos: list[str], out: str, top_frames: int = 3, overwrite: bool = False) -> dict:
    """`skd lus score`: a video's severity with an export alone: class probabilities, the frame weights beta_t
    (PNG), and the last-layer [CLS] self-attention of the top-weighted frames overlaid on them (PNG)."""
    from .plots import plot_attention_overlay, plot_frame_weights

    module, manifest, folder = load_exported(model, TASK_NAME)
    if manifest.get("level") != "video":
        raise SkdError("a frame-level export: `score --video` needs a video-level export (train --level video)", folder)
    if not videos:
        raise SkdError("give at least one --video")
    if top_frames < 1:
        raise SkdError(f"--top-frames must be >= 1, got {top_frames}")
    out_dir = Path(out)
    size, T = int(manifest["image_size"]), int(manifest["seq_len"])
    mean, std = manifest["normalize"]["mean"], manifest["normalize"]["std"]
    results = []
    for video in videos:
        path = Path(video)
        if not path.exists():
            raise SkdError("video not found", path)
        stem = path.stem
        targets = [out_dir / f"{stem}_frame_weights.png", out_dir / f"{stem}_attention.png", out_dir / f"{stem}.json"]
        if any(t.exists() for t in targets) and not overwrite:
            raise SkdError(f"already holds the score of {path.name}; pass --overwrite to replace it", out_dir)
        try:
            frames, src_fps, _ = read_clip(path, size, float(manifest["fps"]))
        except ClipError as exc:
            raise SkdError(str(exc), path) from exc
        idx = sample_frame_indices(len(frames), T)
        x = torch.from_numpy(frames[idx]).unsqueeze(1).float() / 255.0
        with torch.no_grad():
            probs, beta, attn = module((x - mean) / std)
        probs, beta, attn = probs.numpy(), beta.numpy(), attn.numpy()
        pred = int(probs.argmax())
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_frame_weights(
            targets[0],
            beta,
            idx,
            CLASS_NAMES[pred],
            probs,
            CLASS_NAMES,
            path.name,
            uniform=manifest.get("method") != "dual_vlad",
        )
        top = np.argsort(-beta, kind="stable")[:top_frames]
        plot_attention_overlay(targets[1], frames[idx], attn, top, beta, path.name, idx)
        result = {
            "video": str(path),
            "severity": CLASS_NAMES[pred],
            "class": pred,
            "probabilities": {c: round(float(p), 4) for c, p in zip(CLASS_NAMES, probs)},
            "frames_after_fps": len(frames),
            "source_fps": src_fps,
            "sampled_frames": idx.tolist(),
            "beta": [round(float(b), 4) for b in beta],
            "top_frames": [int(idx[t]) for t in top],
            "weights_png": str(targets[0]),
            "attention_png": str(targets[1]),
        }
        atomic_write_json(targets[2], result)
        results.append(result)
    return {"task": TASK_NAME, "model": str(folder), "results": results}


def score_lines(result: dict) -> list[str]:
    """One tab-separated line per video (pipe-friendly): path, severity, then p(class)=probability per class."""
    return [
        "\t".join([r["video"], r["severity"], *(f"p({c})={p:.4f}" for c, p in r["probabilities"].items())])
        for r in result["results"]
    ]


class PretrainHooks(RecipeHooks):
    """`skd lus pretrain`: DINO through the engine's shared train plumbing (run-directory guards, --resume,
    provenance, summary), with the pretraining config (PretrainConfig) instead of the heads' LusConfig."""

    name = TASK_NAME
    config_class = PretrainConfig

    def make_task(self, cfg: PretrainConfig, data_dir: str) -> DinoTask:
        return DinoTask(cfg, data_dir)

    def summary_extra(self, cfg: PretrainConfig, data_dir: str) -> dict:
        return {
            "stage": "pretrain",
            "init": cfg.init or "scratch",
            "backbone_init": cfg.model.init,
            "stem": cfg.model.stem,
        }


def _chance(data: PreparedLus) -> dict:
    """Majority-class accuracy of each reported fold, averaged over the two folds (the floor to beat)."""
    out = {}
    for level, rows in (("frame", data.labelled), ("video", [c for c in data.clips if c["kind"] == "video"])):
        accs = []
        for fold in (1, 2):
            train = [r["label"] for r in rows if r["fold"] == fold and r["label"] >= 0]
            test = [r["label"] for r in rows if r["fold"] == 3 - fold and r["label"] >= 0]
            if train and test:
                majority = np.bincount(train, minlength=NUM_CLASSES).argmax()
                accs.append(float(np.mean(np.array(test) == majority)))
        out[level] = round(float(np.mean(accs)), 4) if accs else None
    return out


GRID_METHODS = ("knn", "linear", "dual_vlad", "netvlad", "mean")
METRICS = ("accuracy", "weighted_f1", "auc")


class LusHooks(RecipeHooks):
    name = TASK_NAME
    config_class = LusConfig
    tiny_data_note = "synthetic B-mode clips in the MeDiVLAD layout"
    summary_keys = {"level": "level", "fold": "fold"}
    prep = staticmethod(prep_stage)
    # where the frozen backbone's features are computed (then cached): train's --device; eval and export
    # reuse the cache written at training time, or compute on the default device
    device = "auto"

    def make_task(self, cfg: LusConfig, data_dir: str) -> _FoldTask:
        if cfg.backbone.path and Path(cfg.backbone.path).exists():
            cfg.backbone.path = str(Path(cfg.backbone.path).resolve())  # recorded absolute: eval from anywhere
        return make_task(cfg, data_dir, resolve_device(self.device))

    def set_baseline(self, cfg: LusConfig) -> None:
        """--baseline: the same heads on a randomly initialised backbone (no self-distillation)."""
        cfg.backbone.path = ""

    def summary_extra(self, cfg: LusConfig, data_dir: str) -> dict:
        return {
            **super().summary_extra(cfg, data_dir),
            "backbone": cfg.backbone.path or "random init",
            "method": cfg.video.aggregator if cfg.level == "video" else cfg.frame.mode,
        }

    def write_tiny_data(self, out: Path, raw: Path | None = None) -> None:
        prep_stage("synthetic", str(raw) if raw else None, str(out), size=32, overwrite=True)

    def tiny_data(self, root: Path) -> str:
        """RUN_DIR/data/raw: the synthetic clips in the official MeDiVLAD layout; RUN_DIR/data/prepared: read back."""
        prepared = root / "prepared"
        if not (prepared / "prep.json").is_file():
            console.print(f"[cyan]prep:[/] writing {self.tiny_data_note}")
            self.write_tiny_data(prepared, root / "raw")
        return str(prepared)

    # -- train / pretrain ----------------------------------------------------------------------------------------------
    def train(self, opts: StageOptions, show_progress: bool = True, plots: bool = True) -> dict:
        if opts.extra.get("finetune_backbone"):  # a config change like any --set: --resume refuses it
            opts = opts.but(sets=[*opts.sets, "frame.mode=finetune"])
        self.device = opts.device
        return train_run(self, opts, show_progress, plots)

    def pretrain(self, opts: StageOptions, show_progress: bool = True) -> dict:
        init = opts.extra.get("init")
        if init:
            opts = opts.but(sets=[*opts.sets, f"init={json.dumps(init)}"])
        return train_run(PretrainHooks(), opts, show_progress)

    # -- eval / export -------------------------------------------------------------------------------------------------
    def evaluate_run(self, trained: Trained, opts: StageOptions) -> dict:
        """Metrics on the reported fold (+ the KNN sweep at frame level)."""
        task, model, cfg = trained.task, trained.model, trained.cfg
        dev = next(model.parameters()).device
        if isinstance(task, VideoTask):
            probs, beta = task.predict(model, task.report_ids, dev)
            m = classification_metrics(task.labels[task.report_ids].numpy(), probs)
            extra = {
                "aggregator": cfg.video.aggregator,
                "beta_max_mean": float(beta.max(1).mean()),
                "seq_len": cfg.video.seq_len,
            }
        else:
            m = classification_metrics(task.labels[task.report_ids].numpy(), task.predict(model, task.report_ids, dev))
            extra = {"mode": cfg.frame.mode, "knn": task.knn()}
        return {
            "task": TASK_NAME,
            "run_dir": str(trained.run.path),
            "level": cfg.level,
            "train_fold": task.train_fold,
            "reported_fold": task.report_fold,
            "backbone": task.backbone.kind,
            "backbone_path": task.backbone.path,
            "selection": cfg.selection,
            **{k: m[k] for k in (*METRICS, "n", "confusion")},
            "classes": CLASS_NAMES,
            **extra,
            "weights": str(trained.run.weights_for_eval()),
        }

    def export_spec(self, trained: Trained, opts: StageOptions) -> ExportSpec:
        """Normalised grey frames in; probabilities, frame weights beta_t (video) and the last block's [CLS]
        self-attention out: everything `score` needs, with the backbone inside."""
        cfg, task, model = trained.cfg, trained.task, trained.model
        vit = model.backbone if isinstance(model, FineTuneModel) else task.backbone.model
        size = vit.cfg.img_size
        gen = torch.Generator().manual_seed(0)
        if isinstance(task, VideoTask):
            T = cfg.video.seq_len
            scorer: nn.Module = VideoScorer(vit, model).eval()
            example = (torch.randn(T, 1, size, size, generator=gen),)
            parity, dynamic = [(torch.randn(T, 1, size, size, generator=gen) * 2,)], None
            inputs = [f"frames ({T}, 1, {size}, {size}) float32, normalised"]
            outputs = ["probs (3,)", f"beta ({T},)", "attention (T, heads, h, w): last-layer [CLS] self-attention"]
        else:
            scorer = FrameScorer(vit, model.head if isinstance(model, FineTuneModel) else model).eval()
            example = (torch.randn(2, 1, size, size, generator=gen),)
            parity = [(torch.randn(5, 1, size, size, generator=gen),)]
            dynamic = ({0: torch.export.Dim("frames", min=1, max=4096)},)
            inputs = [f"frames (B, 1, {size}, {size}) float32, normalised"]
            outputs = ["probs (B, 3)", "attention (B, heads, h, w)"]
        manifest = {
            "level": cfg.level,
            "classes": CLASS_NAMES,
            "image_size": size,
            "patch_size": vit.cfg.patch_size,
            "fps": task.data.info["fps"],
            "normalize": {"mean": cfg.aug.mean, "std": cfg.aug.std},
            "seq_len": cfg.video.seq_len if cfg.level == "video" else None,
            "method": cfg.video.aggregator if cfg.level == "video" else cfg.frame.mode,
            "backbone": task.backbone.kind,
            "backbone_path": task.backbone.path,
            "train_fold": cfg.fold,
            "inputs": inputs,
            "outputs": outputs,
        }
        return ExportSpec(
            scorer,
            example,
            dynamic_shapes=dynamic,
            parity_inputs=parity,
            manifest=manifest,
            result_keys=("level", "method"),
        )

    # -- run: the tiny default -----------------------------------------------------------------------------------------
    def pipeline(self, p: Pipeline) -> dict:
        """DINO pretraining per seed -> frame KNN / linear probe and video dual-VLAD / NetVLAD / mean pooling on the
        DINO teacher and on the same backbone at random init, both folds -> the main run (first seed, DINO,
        dual-VLAD, fold 1) evaluated, exported, and two synthetic mp4 clips scored with the export alone."""
        opts, data, root = p.opts, p.data, p.run.path
        self.device = opts.device
        first = opts.seed or 0
        seeds = list(range(first, first + (opts.extra.get("seeds") or 3)))
        pretrain_sets = list(opts.extra.get("pretrain_set") or [])
        pretrained = {}
        for seed in seeds:
            rd = root / "pretrain" / f"seed{seed}"
            console.print(f"[cyan]pretrain[/] DINO, seed {seed} -> {rd}")
            self.pretrain(
                opts.but(
                    command="train",
                    run_dir=str(rd),
                    data=data,
                    config=None,
                    sets=pretrain_sets,
                    baseline=False,
                    seed=seed,
                    max_steps=None,  # run's --max-steps is the heads'; pretraining: --pretrain-set train.max_steps=N
                    checkpoint_every=None,
                    overwrite=True,
                    extra={},
                ),
                show_progress=False,
            )
            pretrained[seed] = str(rd)
        console.print("[cyan]grid[/] frame KNN / linear probe, video dual-VLAD / NetVLAD / mean; DINO vs random init")
        cells = []
        # the random-init backbone is the pretraining's own starting point: its architecture, seeded alike
        # (features.load_backbone seeds train.seed before building the ViT, as the Trainer before build_model)
        pretrained_vit = load_run_config(PretrainConfig, RunDir(pretrained[first])).model
        same_vit = [f"model.{k}={json.dumps(v)}" for k, v in dataclasses.asdict(pretrained_vit).items()]
        for seed in seeds:
            for init, backbone in (("dino", pretrained[seed]), ("random", "")):
                for fold in (1, 2):
                    for level, method in (
                        ("frame", "linear"),
                        ("video", "dual_vlad"),
                        ("video", "netvlad"),
                        ("video", "mean"),
                    ):
                        rd = root / "grid" / f"seed{seed}" / init / f"fold{fold}" / method
                        sets = [
                            *opts.sets,
                            *same_vit,
                            f"backbone.path={json.dumps(backbone)}",
                            f"level={level}",
                            f"fold={fold}",
                        ]
                        if level == "video":
                            sets.append(f"video.aggregator={method}")
                        cell = opts.but(
                            command="train",
                            run_dir=str(rd),
                            data=data,
                            sets=sets,
                            seed=seed,
                            baseline=False,
                            overwrite=True,
                            extra={},
                        )
                        self.train(cell, show_progress=False, plots=False)
                        ev = eval_stage(self, cell.but(command="eval", sets=[]))
                        cells.append(
                            {"seed": seed, "init": init, "fold": fold, "method": method, **{k: ev[k] for k in METRICS}}
                        )
                        if method == "linear":
                            cells.append(
                                {
                                    "seed": seed,
                                    "init": init,
                                    "fold": fold,
                                    "method": "knn",
                                    "k": ev["knn"]["k"],
                                    **{k: ev["knn"][k] for k in METRICS},
                                }
                            )
        table = {
            f"{init}/{method}": {
                m: mean_std([c[m] for c in cells if c["init"] == init and c["method"] == method]) for m in METRICS
            }
            for method in GRID_METHODS
            for init in ("dino", "random")
        }
        grid = {
            "seeds": seeds,
            "folds": [1, 2],
            "chance": _chance(PreparedLus(data)),
            "table": table,
            "cells": cells,
            "std": "sample (ddof=1) over seeds x folds",
        }
        atomic_write_json(root / "grid.json", grid)
        console.print(f"[cyan]main run[/] DINO seed {first}, video dual-VLAD, fold 1: train -> eval -> export -> score")
        # --baseline: the main run on the random-init backbone (the grid has both either way)
        main_sets = [] if opts.baseline else [f"backbone.path={json.dumps(pretrained[first])}"]
        p.train(sets=[*opts.sets, *main_sets], seed=first, extra={})
        evaluated, exported = p.evaluate(extra={}), p.export(extra={})
        from .synth import write_video_folder

        clips = write_video_folder(
            root / "data" / "score_clips", [("severe.mp4", 3, "s0"), ("healthy.mp4", 0, "s1")], size=32, seed=123
        )
        scored = score_stage(
            exported["export_dir"],
            [str(clips / "severe.mp4"), str(clips / "healthy.mp4")],
            str(root / "score"),
            overwrite=True,
        )
        return {
            "task": TASK_NAME,
            "run_dir": str(root),
            "data": data,
            "seeds": seeds,
            "chance": grid["chance"],
            "table": table,
            "main": {k: evaluated[k] for k in (*METRICS, "confusion")},
            "export_dir": exported["export_dir"],
            "parity_max_abs_diff": exported["parity_max_abs_diff"],
            "score": [
                {k: r[k] for k in ("video", "severity", "probabilities", "weights_png", "attention_png")}
                for r in scored["results"]
            ],
        }

    def report(self, command: str, result: dict):
        if command == "run":
            rows = [
                [method, init, *(result["table"][f"{init}/{method}"][m] for m in METRICS)]
                for method in GRID_METHODS
                for init in ("dino", "random")
            ]
            chance = result["chance"]
            return metric_table(
                f"lus run: mean ± std over seeds {result['seeds']} x folds 1, 2",
                ["method", "backbone", "accuracy", "weighted F1", "AUC"],
                rows,
                caption=f"chance (majority class of the reported fold): frame {chance['frame']}, "
                f"video {chance['video']}",
            )
        if command == "eval":
            rows = [[result.get("aggregator") or result.get("mode"), result["backbone"], *(result[m] for m in METRICS)]]
            if "knn" in result:
                knn = result["knn"]
                rows.append(
                    [f"knn (k={knn['k']}, {knn['selected_on']})", result["backbone"], *(knn[m] for m in METRICS)]
                )
            return metric_table(
                f"lus eval: {result['level']} level, train fold {result['train_fold']} -> "
                f"fold {result['reported_fold']}",
                ["method", "backbone", "accuracy", "weighted F1", "AUC"],
                rows,
            )
        return None

    # -- bench ---------------------------------------------------------------------------------------------------------
    def bench(self, data: str | None, steps: int, rounds: int, device: str, sets: list[str] | None) -> dict:
        """The DINO pretraining step (the hot path) through the engine vs a hand-written loop; DINO's step vs one
        supervised forward/backward of the same ViT on the same crops (``SupervisedCropsTask``); decoding
        throughput of the PyAV reader vs a plain PyAV loop on the same clips."""
        from ..engine.bench import benchmark

        dev = resolve_device(device)
        with tempfile.TemporaryDirectory() as tmp:
            data = data or self.tiny_data(Path(tmp) / "data")

            def make(baseline: bool) -> tuple[Task, Any]:
                cfg = build_config(PretrainConfig, None, list(sets or []))
                return (SupervisedCropsTask if baseline else DinoTask)(cfg, data), cfg.train

            timed = benchmark(make, dev, steps=steps, rounds=rounds)
            cfg = build_config(PretrainConfig, None, list(sets or []))
            timed["crops_per_image"] = 2 + cfg.aug.local_crops_number
            timed["dino_over_supervised_same_crops"] = timed.pop("skd_over_baseline")
            decode = decode_benchmark(Path(tmp) / "clips", rounds)
        return {
            "task": TASK_NAME,
            "timed": "pretrain step (DinoTask); baseline = SupervisedCropsTask",
            **timed,
            "decode": decode,
        }


def decode_benchmark(folder: Path, rounds: int = 3, clips: int = 6, size: int = 128) -> dict:
    """Frames per second of ``data.decode_video`` (PyAV decode + grey + resize + fps resampling) against a plain
    PyAV loop doing the same decode and grey conversion at the same size, on the same 15-fps mp4 clips (every
    frame kept at 15 fps, so both convert every frame); alternating, the best round of each."""
    import av

    from .synth import write_video_folder

    write_video_folder(folder, [(f"clip{i}.mp4", i % 4, f"p{i}") for i in range(clips)], size=size, seed=7)
    files = sorted(folder.glob("*.mp4"))

    def ours() -> int:
        return sum(len(decode_video(f, size, 15.0)[0]) for f in files)

    def plain() -> int:
        n = 0
        for f in files:
            with av.open(str(f)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    frame.reformat(width=size, height=size, format="gray", interpolation="AREA").to_ndarray()
                    n += 1
        return n

    best = {"skd": 0.0, "pyav": 0.0}
    frames = {}
    for _ in range(max(rounds, 1)):
        for name, fn in (("skd", ours), ("pyav", plain)):
            t0 = time.perf_counter()
            frames[name] = fn()
            best[name] = max(best[name], frames[name] / (time.perf_counter() - t0))
    return {
        "clips": len(files),
        "size": size,
        "frames": frames["pyav"],
        "frames_kept": frames["skd"],
        "frames_per_second": round(best["skd"], 1),
        "pyav_frames_per_second": round(best["pyav"], 1),
        "skd_over_pyav": round(best["skd"] / best["pyav"], 3),
    }
