"""The lus Tasks the engine trains:

    DinoTask    `pretrain`: DINO self-distillation (EMA teacher, centring, sharpening) on unlabelled frames
    FrameTask   `train --level frame`: linear probe on cached frozen features, or fine-tuning the backbone
    VideoTask   `train --level video`: dual-level VLAD / NetVLAD / mean pooling on cached frame features

and the evaluation / export helpers the stages use (stages.py).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..engine.console import console
from ..engine.errors import SkdError
from ..engine.schedules import Progress
from ..engine.teachers import EMATeacher, unwrap_model
from ..engine.trainer import Task
from .augment import clean_view, finetune_crops, multi_crop
from .config import NUM_CLASSES, LusConfig, PretrainConfig
from .data import PreparedLus, sample_frame_indices
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
from .metrics import classification_metrics
from .model import DinoModel, FineTuneModel, FrameHead, VideoHead, load_backbone_weights, read_checkpoint

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
        self.data_fingerprint = self.data.fingerprint
        self.monitor = {f: self.data.labelled_of_fold(f) for f in (1, 2)}
        self._model: DinoModel | None = None
        self._ema: EMATeacher | None = None
        self._centre: DinoCentre | None = None

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
        self.data_fingerprint = self.data.fingerprint
        self.train_fold, self.report_fold = cfg.fold, 3 - cfg.fold
        self.backbone = backbone or load_backbone(cfg, device)
        self.features = features or cached_features(self.backbone, self.data, cfg, torch.device(device))
        self.views = self.features.clips.shape[0]

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
