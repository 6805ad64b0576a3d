"""DiM's model pool as a teacher signal (vimar-gu/DiM @ 36573394, pool_match.py ``define_model`` /
``train_match_model``).

Each epoch (or every N generator steps) a pool architecture is drawn and freshly initialised,
with its own SGD; before every generator step it trains online on real data for
``online_batches`` batches with DSA. The generator is then matched against a frozen snapshot of
it (the engine's ``SnapshotTeacher``): logits on real images are the teacher, logits on generated
images carry the gradient to the generator and never into the pool model.

Resume is exact: the draw (architecture and initial weights) is a pure function of (seed, draw
index), and the state saved with each checkpoint holds the pool model's weights, its norm
statistics and its SGD momentum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.teachers import SnapshotTeacher, TeacherSignal


def draw_seed(seed: int, index: int) -> int:
    # hashing a tuple of ints is stable across processes (strings are not: PYTHONHASHSEED)
    return hash((seed, index, 104_729)) & 0x7FFF_FFFF


class PoolTeacher(TeacherSignal):
    def __init__(
        self,
        archs: list[str],
        build: Callable[[str], nn.Module],
        *,
        seed: int,
        steps_per_draw: int,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        train_mode: bool = True,
        device: torch.device | str = "cpu",
    ):
        if steps_per_draw < 1:
            raise ValueError(f"steps_per_draw must be >= 1, got {steps_per_draw}")
        self.archs, self.build, self.seed, self.steps_per_draw = list(archs), build, seed, steps_per_draw
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.train_mode, self.device = train_mode, torch.device(device)
        self.draw_index = -1
        self.arch: str | None = None
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.snapshot: SnapshotTeacher | None = None
        self.online_steps = 0  # SGD steps of the current pool model

    # -- drawing -----------------------------------------------------------------------------------
    def _draw(self, index: int) -> None:
        gen = torch.Generator().manual_seed(draw_seed(self.seed, index))
        arch = self.archs[int(torch.randint(len(self.archs), (1,), generator=gen))]
        with torch.random.fork_rng(devices=[]):  # the initial weights: a function of (seed, index) only
            torch.manual_seed(draw_seed(self.seed, index) + 1)
            model = self.build(arch)
        self.model = model.to(self.device).train()
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        self.snapshot = SnapshotTeacher(self.model, initial="copy")
        self.arch, self.draw_index, self.online_steps = arch, index, 0

    def ensure_drawn(self, step: int) -> bool:
        """Draw the pool model that generator step ``step`` (0-based) uses; True if a new one was drawn."""
        index = step // self.steps_per_draw
        if index == self.draw_index:
            return False
        self._draw(index)
        return True

    def to(self, device: torch.device | str) -> PoolTeacher:
        """Move the pool model (and its SGD state) to ``device``; the next draws are made there too."""
        device = torch.device(device)
        if device == self.device:
            return self
        self.device = device
        if self.model is not None:
            state = self.optimizer.state_dict()
            self.model.to(device)
            self.optimizer = torch.optim.SGD(
                self.model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
            self.optimizer.load_state_dict(state)  # casts the momentum buffers to the parameters' device
            self.snapshot = SnapshotTeacher(self.model, initial="copy")
        return self

    # -- online training ---------------------------------------------------------------------------------
    def train_online(self, batches: Iterable[tuple[Tensor, Tensor]]) -> float:
        """SGD on (already augmented, normalised) real batches; returns the last batch's CE."""
        assert self.model is not None and self.optimizer is not None, "ensure_drawn() first"
        self.model.train()
        last = float("nan")
        with torch.enable_grad():
            for x, y in batches:
                loss = F.cross_entropy(self.model(x), y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.online_steps += 1
                last = loss.detach()
        return last

    def frozen(self) -> nn.Module:
        """The current pool model frozen for matching (no parameter takes a gradient). In train
        mode (DiM) its norm layers use the statistics of the batch they see."""
        assert self.snapshot is not None and self.model is not None, "ensure_drawn() first"
        self.snapshot.refresh(self.model)
        return self.snapshot.model.train(self.train_mode)

    # -- TeacherSignal: checkpointed state ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.model is None:
            return {"draw_index": -1}
        return {
            "draw_index": self.draw_index,
            "arch": self.arch,
            "online_steps": self.online_steps,
            "model": dict(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        index = int(state["draw_index"])
        if index < 0:
            self.draw_index, self.model, self.optimizer, self.snapshot, self.arch = -1, None, None, None, None
            return
        self._draw(index)  # same architecture (checked) and parameter layout, then the saved values
        if self.arch != state["arch"]:
            raise ValueError(
                f"pool draw {index} gives {self.arch}, the checkpoint holds {state['arch']} "
                "(match.pool changed since the checkpoint?)"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.online_steps = int(state["online_steps"])
