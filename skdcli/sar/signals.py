"""The recipe's stateful signals, built on the engine's ``TeacherSignal`` so the trainer checkpoints them
and a resumed run continues bit-exactly (their state is plain tensors and floats):

    LastIterationLogits       the online teacher "from the last iteration" (DLB; DRRNet online=last):
                              each chip's logits from the previous optimizer step, looked up by dataset index
    AdaptiveWeightAssignment  DRRNet's AWA module (OURS: recipes/sar/README.md): the two reverse-changing weights
                              (w_off, w_on), w_off + w_on = 1, from the network's performance
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..engine.schedules import PerformanceBased, Progress
from ..engine.teachers import TeacherSignal
from .config import AWAConfig


class LastIterationLogits(TeacherSignal):
    """Logits of the chips of the last optimizer step, keyed by dataset index.

    ``lookup(idx)`` gives (mask, logits): mask[i] is True when chip idx[i] was in the last step; its
    row then holds the logits it had then. ``store(idx, logits)`` replaces the cache with this step's
    chips (detached). With the overlapping epoch order (sampling.overlapping_order) half of every
    batch was in the previous one, as DLB's sampler arranges.
    """

    def __init__(self) -> None:
        self.indices = torch.zeros(0, dtype=torch.long)
        self.logits = torch.zeros(0, 0)

    def lookup(self, idx: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
        cached = self.indices.to(idx.device)
        if cached.numel() == 0:
            return torch.zeros(len(idx), dtype=torch.bool, device=idx.device), torch.zeros(
                len(idx), num_classes, device=idx.device
            )
        eq = idx[:, None] == cached[None, :]
        mask = eq.any(dim=1)
        pos = eq.float().argmax(dim=1)
        return mask, self.logits.to(idx.device)[pos]

    def store(self, idx: Tensor, logits: Tensor) -> None:
        self.indices = idx.detach().cpu().clone()
        self.logits = logits.detach().float().cpu().clone()

    def state_dict(self) -> dict[str, Any]:
        return {"indices": self.indices, "logits": self.logits}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.indices = state["indices"].clone()
        self.logits = state["logits"].clone()


class AdaptiveWeightAssignment(TeacherSignal):
    """(w_off, w_on) with w_off + w_on = 1 (config.AWAConfig has the four modes).

    ``weights(progress)`` is what this step uses (from the performance seen BEFORE it); ``update``
    folds this step's batch accuracy and CE into the running estimates afterwards. Its state (the
    EMAs, the first CE, the number of updates) is checkpointed with the run.
    """

    def __init__(self, cfg: AWAConfig):
        self.cfg = cfg
        self.acc_ema = 0.0
        self.ce_ema = 0.0
        self.ce_first = 0.0
        self.updates = 0
        self._val = PerformanceBased(metric="accuracy", mode="max", low=0.0, high=1.0, default=0.0)

    def _clip(self, w_on: float) -> float:
        return min(max(w_on, self.cfg.eps), 1.0 - self.cfg.eps)

    def weights(self, progress: Progress) -> tuple[float, float]:
        c = self.cfg
        if c.mode == "fixed":
            w_on = c.fixed_on
        elif c.mode == "linear":
            w_on = self._clip(progress.frac)
        elif c.mode == "loss":
            w_off = 0.5 if self.updates == 0 else self.ce_ema / (self.ce_ema + self.ce_first + 1e-12)
            w_on = self._clip(1.0 - w_off)
        elif c.source == "val":
            w_on = self._clip(self._val(progress))  # the engine's performance-based weight on val accuracy
        else:
            w_on = self._clip(self.acc_ema)
        return 1.0 - w_on, w_on

    def update(self, batch_accuracy: float, batch_ce: float) -> None:
        if not (math.isfinite(batch_accuracy) and math.isfinite(batch_ce)):
            return
        m = self.cfg.momentum
        if self.updates == 0:
            self.acc_ema, self.ce_ema, self.ce_first = batch_accuracy, batch_ce, batch_ce
        else:
            self.acc_ema = m * self.acc_ema + (1 - m) * batch_accuracy
            self.ce_ema = m * self.ce_ema + (1 - m) * batch_ce
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"acc_ema": self.acc_ema, "ce_ema": self.ce_ema, "ce_first": self.ce_first, "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.acc_ema, self.ce_ema = float(state["acc_ema"]), float(state["ce_ema"])
        self.ce_first, self.updates = float(state["ce_first"]), int(state["updates"])
