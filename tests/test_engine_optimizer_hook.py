"""engine: Task.before_optimizer_step runs once per optimizer step, after the gradients are complete and
before the optimizer step, so a recipe can schedule the weight decay, clip per parameter, or drop a layer's
gradients (DINO's frozen last layer)."""

from __future__ import annotations

import torch
from torch import nn

from skdcli.engine.config import TrainConfig
from skdcli.engine.rundir import RunDir
from skdcli.engine.trainer import Task, Trainer


class HookTask(Task):
    def __init__(self):
        self.calls: list[tuple[int, bool, float]] = []
        self.frozen_before = None

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))

    def train_dataset(self):
        g = torch.Generator().manual_seed(0)
        return torch.utils.data.TensorDataset(torch.randn(16, 3, generator=g), torch.randn(16, 1, generator=g))

    def compute_loss(self, model, batch, progress):
        x, y = batch
        return ((model(x) - y) ** 2).mean(), {}

    def before_optimizer_step(self, model, optimizer, progress):
        grads_ready = all(p.grad is not None for p in model.parameters())
        optimizer.param_groups[0]["weight_decay"] = 0.1 * (progress.step + 1)
        self.calls.append((progress.step, grads_ready, optimizer.param_groups[0]["weight_decay"]))
        if progress.step < 2:  # the second layer gets no update in the first two steps
            if self.frozen_before is None:
                self.frozen_before = model[1].weight.detach().clone()
            for p in model[1].parameters():
                p.grad = None


def test_hook_called_once_per_step_with_grads(tmp_path):
    task = HookTask()
    cfg = TrainConfig(
        max_steps=4,
        batch_size=4,
        grad_accum=2,
        lr=0.1,
        weight_decay=0.0,
        warmup_steps=0,
        eval_every=0,
        checkpoint_every=0,
        log_every=1,
        group_by_length=False,
        grad_clip=0.0,
    )
    trainer = Trainer(task, cfg, RunDir(tmp_path), torch.device("cpu"), show_progress=False)
    seen = []
    trainer.fit(
        on_step=lambda step: seen.append(
            (step, trainer.model[1].weight.detach().clone(), trainer.optimizer.param_groups[0]["weight_decay"])
        )
    )
    assert [c[0] for c in task.calls] == [0, 1, 2, 3]  # once per optimizer step (grad_accum=2 micro-batches)
    assert all(c[1] for c in task.calls)  # gradients complete when the hook runs
    assert [round(w, 6) for _, _, w in seen] == [0.1, 0.2, 0.3, 0.4]  # the scheduled decay reached the optimizer
    assert torch.equal(seen[0][1], task.frozen_before) and torch.equal(seen[1][1], task.frozen_before)
    assert not torch.equal(seen[2][1], task.frozen_before)  # updated once the gradients are kept
