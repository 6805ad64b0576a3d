"""The xqa Task: cross-lingual extractive QA with self-knowledge distillation in generations.

The engine trains; this file wires the features (features.py), the span model (model.py) and the
losses (loss.py) into a Task. The teacher is the engine's ``SnapshotTeacher``: a frozen eval-mode
copy of the model, equal to the initial model in the first epoch and refreshed to the student at
every epoch end (a generation per epoch, official ``--self_distil``); the optimizer and the LR
schedule run on across generations. Its weights are checkpointed with the run, so a resumed run
has the teacher an uninterrupted one would have had. The teacher's forward runs under
``torch.inference_mode``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..engine.console import console
from ..engine.errors import SkdError
from ..engine.io import file_sha256
from ..engine.schedules import Progress
from ..engine.teachers import SnapshotTeacher
from ..engine.trainer import Task, move_to
from .config import XqaConfig
from .data import PreparedData
from .evaluation import Cells, load_cells, score_cells
from .features import EvalFeatures, build_eval_features, build_train_features, postprocess_predictions
from .loss import map_at_k_coefficient, qa_cross_entropy, qa_kd_loss
from .model import check_init_dir, load_config, load_qa_model, load_tokenizer, span_logits

TASK_NAME = "xqa"


class FrozenTeacher(SnapshotTeacher):
    """``--no-generations``: the initial model teaches every epoch (never refreshed)."""

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        pass


class Rows(Dataset):
    """Feature rows by index; the Task's collate gathers a whole batch from the arrays at once."""

    def __init__(self, key: str, n: int):
        self.key, self.n = key, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.key, i


def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


class PredictionSet:
    """Every window of a set of evaluation cells, concatenated, with the way back to each cell."""

    def __init__(self, cells: Cells, tokenizer, cfg: XqaConfig):
        self.cells = cells
        self.keys = sorted(cells)
        self.features: dict[tuple[str, str], EvalFeatures] = {}
        arrays: dict[str, list[np.ndarray]] = {}
        self.spans: dict[tuple[str, str], tuple[int, int]] = {}
        start = 0
        d = cfg.data
        for key in self.keys:
            rows = cells[key]
            feats = build_eval_features(
                tokenizer,
                [r["question"] for r in rows],
                [r["context"] for r in rows],
                d.max_seq_length,
                d.doc_stride,
                d.max_query_length,
            )
            self.features[key] = feats
            for k, v in feats.arrays.items():
                arrays.setdefault(k, []).append(v)
            self.spans[key] = (start, start + len(feats))
            start += len(feats)
        self.tensors = _tensors({k: np.concatenate(v) for k, v in arrays.items()}) if arrays else {}
        self.n = start

    def predictions(
        self, start_logits: np.ndarray, end_logits: np.ndarray, cfg: XqaConfig
    ) -> dict[tuple[str, str], list[dict]]:
        """Per cell, one ``{text, start, end, score}`` per example (n-best, max answer length)."""
        out = {}
        for key in self.keys:
            a, b = self.spans[key]
            out[key] = postprocess_predictions(
                [r["context"] for r in self.cells[key]],
                self.features[key],
                start_logits[a:b],
                end_logits[a:b],
                cfg.eval.n_best,
                cfg.eval.max_answer_length,
            )
        return out


class XqaTask(Task):
    """The training windows and the dev cells are built when first asked for: eval and export load a
    run's Task only for its tokenizer and model, on whatever ``--data`` they score."""

    def __init__(self, cfg: XqaConfig, data_dir: str | Path, *, with_dev: bool = True):
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self._data: PreparedData | None = None
        if not cfg.model.init:
            found = self.data.init_dir()
            if found is None:
                raise SkdError(
                    "--init PATH is required: a local Hugging Face checkpoint directory (e.g. mBERT "
                    "fine-tuned on SQuAD); only the synthetic dataset brings its own init/",
                    self.data.root,
                )
            cfg.model.init = str(found.resolve())
        self.init = check_init_dir(cfg.model.init)
        cfg.model.init = str(self.init.resolve())  # the resolved config records where the weights came from
        if cfg.data.dev:
            cfg.data.dev = str(Path(cfg.data.dev).resolve())
        self.tokenizer = load_tokenizer(self.init)
        self.hf_config = load_config(self.init)
        limit = getattr(self.hf_config, "max_position_embeddings", None)
        if limit is not None and cfg.data.max_seq_length > limit:
            raise SkdError(
                f"data.max_seq_length={cfg.data.max_seq_length} exceeds the model's max_position_embeddings={limit}",
                self.init,
            )
        self.teacher: SnapshotTeacher | None = None
        self.missing_keys: list[str] = []
        self._arrays: dict[str, dict[str, torch.Tensor]] = {}
        self._train: Rows | None = None
        self._dev: PredictionSet | None = None
        self._dev_rows: Rows | None = None
        self.with_dev = with_dev

    # -- data ------------------------------------------------------------------------------------------
    @property
    def data(self) -> PreparedData:
        if self._data is None:
            self._data = PreparedData.open(self.data_dir)
        return self._data

    def _build_train(self) -> None:
        rows = self.data.train_rows()
        if len(rows) == 0:
            raise SkdError("the prepared dataset has no training examples", self.data.root)
        d = self.cfg.data
        arrays = build_train_features(
            self.tokenizer,
            list(rows["question"]),
            list(rows["context"]),
            list(rows["answers"]),
            d.max_seq_length,
            d.doc_stride,
            d.max_query_length,
        )
        self.train_windows_per_example = len(arrays["input_ids"]) / len(rows)
        self.train_tokens = int(arrays["attention_mask"].sum())
        self._arrays["train"] = _tensors({k: v for k, v in arrays.items() if k != "example_index"})
        self._train = Rows("train", len(arrays["input_ids"]))

    def provenance(self) -> dict:
        """Where the initial weights came from (the run's provenance.json)."""
        weights = sorted(p.name for p in self.init.glob("*.safetensors")) or sorted(
            p.name for p in self.init.glob("*.bin")
        )
        return {
            "init": str(self.init),
            "init_weights": weights,
            "init_config_sha256": file_sha256(self.init / "config.json"),
        }

    def data_fingerprint(self) -> str | None:
        return self.data.fingerprint if (self.data_dir / "prep.json").is_file() else None

    def steps_per_epoch(self, world_size: int | None = None) -> int:
        """Optimizer steps in one pass over the training windows, as the engine's sampler counts them."""
        world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
        t = self.cfg.train
        micro = t.batch_size // (world * t.grad_accum)
        return (len(self.train_dataset()) // world) // max(micro, 1) // t.grad_accum

    def train_dataset(self) -> Dataset:
        if self._train is None:
            self._build_train()
        return self._train

    def dev_cells(self) -> tuple[Cells, dict]:
        d = self.cfg.data
        return load_cells(d.dev or self.data.root, d.dev_suite, d.dev_split)

    def eval_dataset(self) -> Dataset | None:
        if not self.with_dev:
            return None
        if self._dev is None:
            d = self.cfg.data
            source = Path(d.dev) if d.dev else self.data.root
            if not d.dev and not PreparedData.open(source).cells(d.dev_split):
                return None  # no dev cells: train without periodic evaluation (best = last)
            cells, _ = self.dev_cells()
            self._dev = PredictionSet(cells, self.tokenizer, self.cfg)
            self._arrays["dev"] = self._dev.tensors
            self._dev_rows = Rows("dev", self._dev.n)
        return self._dev_rows

    def collate(self, items: list[tuple[str, int]]) -> dict[str, torch.Tensor]:
        key = items[0][0]
        idx = torch.as_tensor([i for _, i in items], dtype=torch.long)
        out = {}
        for name, v in self._arrays[key].items():
            x = v.index_select(0, idx)
            out[name] = x if x.dtype == torch.bool else x.long()
        return out

    # -- model and teacher ------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        model, self.missing_keys = load_qa_model(self.init)
        if self.missing_keys:
            console.print(
                f"[yellow]note:[/] {self.init} has no {', '.join(self.missing_keys)}: initialised from "
                "the seed (a base checkpoint's new span head)"
            )
        self._model = model
        self.teacher = None
        return model

    def _teacher(self) -> SnapshotTeacher:
        """The teacher copy, made on first use: the first loss (so it holds the initial weights) or a
        resume (whose checkpoint overwrites it). Loading a run for eval or export never copies the model."""
        if self.teacher is None:
            cls = SnapshotTeacher if self.cfg.kd.generations else FrozenTeacher
            self.teacher = cls(self._model, refresh_every_epochs=1, initial="copy")
        return self.teacher

    def teachers(self) -> dict:
        return {"snapshot": self._teacher()} if self.cfg.kd.method == "skd" else {}

    def teacher_logits(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        teacher = self._teacher().model
        device = batch["input_ids"].device
        if next(teacher.parameters()).device != device:  # the copy was made before the model moved
            teacher.to(device)
        with torch.inference_mode():
            start, end = span_logits(teacher, batch)
        # inference tensors cannot be saved for backward: plain fp32 copies (B x L floats, negligible)
        return start.float().clone(), end.float().clone()

    # -- loss -------------------------------------------------------------------------------------------
    def compute_loss(self, model: nn.Module, batch: dict, progress: Progress) -> tuple[torch.Tensor, dict[str, Any]]:
        kd = self.cfg.kd
        start, end = (z.float() for z in span_logits(model, batch))  # the losses in fp32 under AMP too
        ce = qa_cross_entropy(start, end, batch["start_positions"], batch["end_positions"])
        if kd.method == "ce":
            return ce, {"loss/ce": ce}
        ce_weight = 1.0 if kd.ce else 0.0  # alpha_ce: 1, or 0 in the paper's "w/o CE" ablation
        t_start, t_end = self.teacher_logits(batch)
        mask = batch["kd_mask"] if kd.mask == "context" else None
        kl, kl_start, kl_end = qa_kd_loss(start, end, t_start, t_end, kd.temperature, kd.loss, mask)
        coefficient = map_at_k_coefficient(
            t_start, t_end, batch["start_positions"], batch["end_positions"], kd.map_k, kd.map_window, mask
        )
        weight = coefficient if kd.map_coefficient else 1.0
        loss = ce_weight * ce + weight * kl
        return loss, {
            "loss/ce": ce,
            "loss/kl": kl,
            "loss/kl_start": kl_start,
            "loss/kl_end": kl_end,
            "weight/ce": ce_weight,
            "weight/kl": weight,
            "map_at_k": coefficient,
            "teacher/generation": self.teacher.generation,
        }

    # -- evaluation -------------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        starts, ends = predict_logits(model, loader, device)
        preds = self._dev.predictions(starts, ends, self.cfg)
        agg, _ = score_cells(
            self._dev.cells,
            {k: {r["id"]: p["text"] for r, p in zip(self._dev.cells[k], v)} for k, v in preds.items()},
            self.cfg.data.dev_suite,
            self.cfg.eval.normalization,
        )
        return {k: float(agg[k]) for k in ("gxlt_f1", "gxlt_em", "xlt_f1", "xlt_em") if agg[k] is not None}


@torch.no_grad()
def predict_logits(model: nn.Module, batches, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    was_training = model.training
    model.eval()
    starts, ends = [], []
    for batch in batches:
        batch = move_to(batch, device)
        s, e = span_logits(model, batch)
        starts.append(s.float().cpu())
        ends.append(e.float().cpu())
    model.train(was_training)
    if not starts:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(starts).numpy(), torch.cat(ends).numpy()


def predict_cells(
    model: nn.Module, tokenizer, cells: Cells, cfg: XqaConfig, device: torch.device
) -> tuple[PredictionSet, dict[tuple[str, str], list[dict]]]:
    """Predictions for every example of every cell (batched over all windows)."""
    pset = PredictionSet(cells, tokenizer, cfg)
    bs = cfg.eval.batch_size
    batches = ({k: v[i : i + bs].long() for k, v in pset.tensors.items()} for i in range(0, pset.n, bs))
    starts, ends = predict_logits(model, batches, device)
    return pset, pset.predictions(starts, ends, cfg)
