"""The engine calls ``TeacherSignal.before_checkpoint`` right before each checkpoint is written, before
``state_dict`` is read, so a signal whose state is split over DDP ranks can gather it first."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from skdcli.engine.config import TrainConfig
from skdcli.engine.rundir import RunDir
from skdcli.engine.teachers import TeacherSignal
from skdcli.engine.trainer import Task, Trainer


class RecordingSignal(TeacherSignal):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.steps_seen = 0

    def on_step_end(self, model: nn.Module, step: int) -> None:
        self.steps_seen = step

    def before_checkpoint(self) -> None:
        self.events.append(f"gather@{self.steps_seen}")

    def state_dict(self) -> dict:
        self.events.append(f"save@{self.steps_seen}")
        return {"steps_seen": self.steps_seen}


class LinearTask(Task):
    def __init__(self) -> None:
        self.signal = RecordingSignal()

    def build_model(self) -> nn.Module:
        return nn.Linear(3, 1)

    def train_dataset(self):
        g = torch.Generator().manual_seed(0)
        return torch.utils.data.TensorDataset(torch.randn(16, 3, generator=g), torch.randn(16, 1, generator=g))

    def compute_loss(self, model, batch, progress):
        x, y = batch
        return torch.nn.functional.mse_loss(model(x), y), {}

    def teachers(self) -> dict:
        return {"recorder": self.signal}


def test_before_checkpoint_runs_before_each_save(tmp_path: Path) -> None:
    task = LinearTask()
    cfg = TrainConfig(max_steps=5, batch_size=4, checkpoint_every=2, eval_every=0, log_every=1, warmup_steps=0)
    Trainer(task, cfg, RunDir(tmp_path), torch.device("cpu"), show_progress=False).fit()
    # checkpoints at steps 2, 4 and the last step 5: gathered, then saved, each time
    assert task.signal.events == ["gather@2", "save@2", "gather@4", "save@4", "gather@5", "save@5"]
    assert TeacherSignal().before_checkpoint() is None  # the base hook is a no-op
