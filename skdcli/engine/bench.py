"""`skd bench <task>`: what the engine costs, measured side by side in one process.

Three timings on the same model, data and loss wiring (the recipe's ``compute_loss``):
- ``hand``: a minimal hand-written PyTorch loop (DataLoader, forward, backward, clip, AdamW, LR step);
- ``engine``: the same steps through ``Trainer.fit`` (reseeding, logging, guards, schedules);
- ``engine_baseline``: the recipe's no-distillation baseline through the engine.
Blocks of steps alternate between the variants for several rounds, so drift in machine speed
hits all of them alike; the per-variant figure is the median step time over all timed steps.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from typing import Callable

import torch
from torch.utils.data import DataLoader

from .config import TrainConfig
from .rundir import RunDir
from .schedules import Progress
from .trainer import ResumableDistributedSampler, Task, Trainer, move_to, task_order_fn


def _engine_block(task: Task, cfg: TrainConfig, device: torch.device, steps: int) -> list[float]:
    times: list[float] = []
    last = [0.0]

    def on_step(step: int) -> None:
        now = time.perf_counter()
        if step > 1:  # the first step pays for DataLoader start-up and lazy init
            times.append(now - last[0])
        last[0] = now

    with tempfile.TemporaryDirectory() as tmp:
        run_cfg = dataclasses.replace(
            cfg, max_steps=steps + 1, eval_every=0, checkpoint_every=0, log_every=cfg.log_every
        )
        trainer = Trainer(task, run_cfg, RunDir(tmp), device, show_progress=False)
        trainer.evaluate = lambda: {}  # the end-of-run eval is not part of a training step
        trainer.run.save_checkpoint = lambda *a, **k: None
        last[0] = time.perf_counter()
        trainer.fit(on_step=on_step)
    return times


def _hand_block(task: Task, cfg: TrainConfig, device: torch.device, steps: int) -> list[float]:
    torch.manual_seed(cfg.seed)
    model = task.build_model().to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1)))
    dataset = task.train_dataset()
    # The same batch composition as the engine (length grouping included), so only the loop differs.
    sampler = ResumableDistributedSampler(
        dataset,
        1,
        0,
        cfg.seed,
        global_batch=cfg.batch_size,
        lengths=task.example_lengths(dataset) if cfg.group_by_length else None,
        order_fn=task_order_fn(task, dataset, cfg.seed, cfg.batch_size),
    )
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        drop_last=True,
        collate_fn=task.collate,
        num_workers=cfg.num_workers,
    )
    times: list[float] = []
    done = 0
    last = time.perf_counter()
    while done < steps + 1:
        sampler.set_epoch(sampler.epoch + 1)
        for batch in loader:
            batch = move_to(batch, device)
            progress = Progress(step=done, total_steps=steps + 1, epoch=1, total_epochs=1)
            loss, _ = task.compute_loss(model, batch, progress)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            task.before_optimizer_step(model, opt, progress)  # the same per-step hook the engine calls
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            loss.item()  # a real loop looks at its loss
            done += 1
            now = time.perf_counter()
            if done > 1:
                times.append(now - last)
            last = now
            if done >= steps + 1:
                break
    return times


def benchmark(
    make_task: Callable[[bool], tuple[Task, TrainConfig]], device: torch.device, steps: int = 20, rounds: int = 3
) -> dict:
    """``make_task(baseline)`` returns a fresh (task, train config) for the SKD or baseline variant."""
    samples: dict[str, list[float]] = {"hand": [], "engine": [], "engine_baseline": []}
    for _ in range(rounds):
        task, cfg = make_task(False)
        samples["hand"] += _hand_block(task, cfg, device, steps)
        task, cfg = make_task(False)
        samples["engine"] += _engine_block(task, cfg, device, steps)
        task, cfg = make_task(True)
        samples["engine_baseline"] += _engine_block(task, cfg, device, steps)
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "steps_per_round": steps,
        "rounds": rounds,
        "batch_size": cfg.batch_size,
        "median_step_ms": {k: round(v * 1000, 3) for k, v in med.items()},
        "engine_over_hand": round(med["engine"] / med["hand"], 4),
        "skd_over_baseline": round(med["engine"] / med["engine_baseline"], 4),
        "timed_steps": {k: len(v) for k, v in samples.items()},
    }
