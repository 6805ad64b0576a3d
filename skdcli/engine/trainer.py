"""The training loop every recipe shares.

A recipe hands the engine a ``Task`` (data, model, loss wiring, evaluation); the ``Trainer`` owns
everything else: optimiser and LR schedule, AMP, gradient accumulation and clipping, the
non-finite-loss guard, periodic eval and best checkpoint, exact resume, DDP, and metrics.

Exact resume. Every optimizer step starts by reseeding torch's RNG from (seed, step, rank), and
the data order of each epoch is a pure function of (seed, epoch). So the state after step N is a
function of the weights/optimizer/scheduler at N and nothing else: a run killed at any moment and
resumed from its last checkpoint replays exactly the steps an uninterrupted run would have taken
(bit-identical on CPU). Reseeding costs microseconds per step.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .config import TrainConfig
from .console import console, progress_bar
from .distributed import DistInfo, all_reduce_mean, any_rank, barrier, broadcast_object
from .errors import SkdError
from .io import append_jsonl
from .rundir import RunDir, truncate_metrics_after
from .schedules import Progress, make_lr_lambda
from .teachers import TeacherSignal


class Task:
    """What a recipe gives the engine. Subclass it; the engine never imports a recipe."""

    find_unused_parameters: bool = False  # DDP flag, for models with branches a loss may skip

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def data_fingerprint(self) -> str | None:
        """A short digest of the prepared data (from its prep.json), recorded in the run's provenance."""
        raise NotImplementedError

    def provenance(self) -> dict:
        """Entries the run's provenance.json records besides the engine's (e.g. where each layer's
        initial weights came from); written once, before training starts."""
        return {}

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def eval_dataset(self) -> Dataset | None:
        return None

    def collate(self, items: list) -> Any:
        return torch.utils.data.default_collate(items)

    def example_lengths(self, dataset: Dataset) -> list[int] | None:
        """Per-example sizes for length-grouped batching (``train.group_by_length``); None = off."""
        return None

    def epoch_order(self, dataset: Dataset, seed: int, epoch: int, global_batch: int) -> list[int] | None:
        """The train examples of one epoch in order, for recipes that sample (class-balanced or
        selective batches; repeats allowed). Must be a pure function of its arguments, so resume
        stays exact and every DDP rank computes the same order, and hold exactly
        ``len(dataset) // global_batch * global_batch`` indices. None (default) = the engine's shuffle."""
        return None

    def compute_loss(self, model: nn.Module, batch: Any, progress: Progress) -> tuple[torch.Tensor, dict[str, Any]]:
        """Return (loss to backpropagate, named values to log: loss terms, weights)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
        raise NotImplementedError

    def teachers(self) -> dict[str, TeacherSignal]:
        """Stateful teacher signals (EMA, snapshots...): their state goes into checkpoints."""
        return {}

    def before_optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress) -> None:
        """Called once per optimizer step after the gradients are complete (unscaled) and before the
        engine's global clip and ``optimizer.step()``: per-step optimizer schedules (DINO's weight-decay
        cosine), per-parameter clipping, dropping the gradients of a frozen layer (``p.grad = None``).
        Must depend only on ``progress`` and the model/optimizer state, so resume stays exact. Default: nothing."""


def move_to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def task_order_fn(task: Task, dataset: Dataset, seed: int, global_batch: int) -> Callable[[int, int], list[int]] | None:
    """The task's ``epoch_order`` as a sampler hook, or None when the task keeps the engine's shuffle."""
    if task.epoch_order(dataset, seed, 1, global_batch) is None:
        return None
    return lambda seed_, epoch: task.epoch_order(dataset, seed_, epoch, global_batch)


def reseed(seed: int, device: torch.device) -> None:
    """``torch.manual_seed`` for the per-step reseed, without its CPU cost: with a CUDA build and
    CUDA unused, ``manual_seed`` formats a stack trace for a lazy CUDA call each time (~80 us)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)


def step_seed(seed: int, step: int, rank: int) -> int:
    # Distinct, reproducible stream per (seed, step, rank); tuple hashing of ints is stable.
    return hash((seed, step, rank)) & 0x7FFF_FFFF


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start mid-epoch and can group examples of similar length.

    - ``start_index``: a resumed run skips exactly the examples it already trained on this epoch,
      without loading them.
    - ``lengths`` (optional, one per example): the epoch's permutation is cut into windows of
      ``group_batches`` global batches, each window sorted by length and cut into global batches,
      and the batch order shuffled (the trick ESPnet / HF use). Padding shrinks a lot for speech;
      the order is still a pure function of (seed, epoch), so resume stays exact.
    - ``order_fn(seed, epoch)`` (optional, from ``Task.epoch_order``): the recipe's own epoch
      order (class-balanced / selective sampling); replaces the shuffle and the length grouping.
    Ranks take interleaved positions of the order, so one optimizer step (``global_batch``
    examples) sees the same examples whatever the number of ranks and accumulation steps.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int,
        rank: int,
        seed: int,
        lengths: list[int] | None = None,
        global_batch: int = 1,
        group_batches: int = 32,
        order_fn: Callable[[int, int], list[int]] | None = None,
    ):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start_index = 0
        self.lengths, self.global_batch, self.group_batches = lengths, global_batch, group_batches
        self.order_fn = order_fn

    def _epoch_order(self) -> list[int]:
        if self.order_fn is not None:
            order = list(self.order_fn(self.seed, self.epoch))
            expected = len(self.dataset) // self.global_batch * self.global_batch
            if len(order) != expected:
                raise SkdError(f"Task.epoch_order returned {len(order)} indices; expected {expected}")
            return order
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        if self.lengths is None:
            return order
        window, gb = self.global_batch * self.group_batches, self.global_batch
        batches = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + gb] for i in range(0, len(chunk) - gb + 1, gb)]
        return [i for b in torch.randperm(len(batches), generator=g).tolist() for i in batches[b]]

    def __iter__(self):
        order = self._epoch_order()
        total = len(order) // self.num_replicas * self.num_replicas
        mine = order[self.rank : total : self.num_replicas]
        return iter(mine[self.start_index :])

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.order_fn is not None:
            return n // self.global_batch * self.global_batch // self.num_replicas - self.start_index
        if self.lengths is not None:
            n = (
                n // (self.global_batch * self.group_batches) * (self.global_batch * self.group_batches)
                + (n % (self.global_batch * self.group_batches)) // self.global_batch * self.global_batch
            )
        return n // self.num_replicas - self.start_index


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off":
        return None
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise SkdError("train.amp=fp16 needs --device cuda (use bf16 or off on CPU)")
        return torch.float16
    raise SkdError(f"train.amp: '{amp}' is not one of auto, off, bf16, fp16")


@dataclass
class TrainResult:
    steps: int
    epochs: float
    final_loss: float
    best: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    resumed_from: int | None = None

    def to_dict(self) -> dict:
        return self.__dict__.copy()


class Trainer:
    def __init__(
        self,
        task: Task,
        cfg: TrainConfig,
        run_dir: RunDir,
        device: torch.device,
        dist_info: DistInfo | None = None,
        show_progress: bool = True,
    ):
        self.task, self.cfg, self.run, self.device = task, cfg, run_dir, device
        self.dist = dist_info or DistInfo()
        self.show_progress = show_progress and self.dist.is_main
        if cfg.batch_size % (self.dist.world_size * cfg.grad_accum):
            raise SkdError(
                f"train.batch_size={cfg.batch_size} must divide evenly over "
                f"{self.dist.world_size} rank(s) x grad_accum={cfg.grad_accum}"
            )
        self.micro_batch = cfg.batch_size // (self.dist.world_size * cfg.grad_accum)
        self.amp_dtype = amp_dtype_for(cfg.amp, device)
        if cfg.best_mode not in ("min", "max"):
            raise SkdError(f"train.best_mode: '{cfg.best_mode}' is not one of min, max")
        if device.type == "cuda" and cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)

    # -- building ------------------------------------------------------------------------------
    def _build(self):
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # initial weights depend on the seed only
        model = self.task.build_model().to(self.device)
        train_set = self.task.train_dataset()
        lengths = self.task.example_lengths(train_set) if cfg.group_by_length else None
        self.sampler = ResumableDistributedSampler(
            train_set,
            self.dist.world_size,
            self.dist.rank,
            cfg.seed,
            lengths=lengths,
            global_batch=cfg.batch_size,
            order_fn=task_order_fn(self.task, train_set, cfg.seed, cfg.batch_size),
        )
        self.train_loader = DataLoader(
            train_set,
            batch_size=self.micro_batch,
            sampler=self.sampler,
            drop_last=True,
            collate_fn=self.task.collate,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        micro_per_epoch = len(self.sampler) // self.micro_batch
        self.steps_per_epoch = micro_per_epoch // cfg.grad_accum
        if self.steps_per_epoch == 0:
            raise SkdError(
                f"the train split has {len(train_set)} examples, fewer than one batch "
                f"({cfg.batch_size}); lower train.batch_size"
            )
        self.eval_set = self.task.eval_dataset()
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if cfg.optimizer != "adamw":
            raise SkdError(f"train.optimizer: '{cfg.optimizer}' is not supported (adamw)")
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=self.device.type == "cuda")
        try:
            lr_lambda = make_lr_lambda(
                cfg.lr_schedule, warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps, min_ratio=cfg.min_lr_ratio
            )
            lr_lambda(0)
        except ValueError as exc:
            raise SkdError(f"train.lr_schedule: {exc}") from exc
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.model = model
        self.ddp_model = (
            DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.task.find_unused_parameters,
            )
            if self.dist.enabled
            else model
        )

    def _progress(self, step: int, metrics: dict) -> Progress:
        return Progress(
            step=step,
            total_steps=self.cfg.max_steps,
            epoch=step // self.steps_per_epoch + 1,
            total_epochs=math.ceil(self.cfg.max_steps / self.steps_per_epoch),
            metrics=metrics,
        )

    # -- state -----------------------------------------------------------------------------------
    def _state(self, step: int) -> dict:
        return {
            "step": step,
            "data": {
                "epoch": step // self.steps_per_epoch + 1,
                "step_in_epoch": step % self.steps_per_epoch,
                "sampler_seed": self.cfg.seed,
                "world_size": self.dist.world_size,
            },
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "teachers": {k: t.state_dict() for k, t in self.task.teachers().items()},
            "best": dict(self.best),
            "last_eval": dict(self.last_eval),
        }

    def _restore(self, ckpt) -> int:
        state = RunDir.load_state(ckpt)
        if state["data"]["world_size"] != self.dist.world_size:
            raise SkdError(
                f"checkpoint was written with {state['data']['world_size']} rank(s); resume with the same "
                f"number (got {self.dist.world_size})",
                ckpt,
            )
        RunDir.load_weights(self.model, ckpt / "model.safetensors")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        for name, teacher in self.task.teachers().items():
            teacher.load_state_dict(state["teachers"][name])
        self.best = dict(state["best"])
        self.last_eval = dict(state["last_eval"])
        return int(state["step"])

    # -- evaluation --------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.dist.is_main and self.eval_set is not None:
            loader = DataLoader(
                self.eval_set,
                batch_size=self.micro_batch * self.cfg.grad_accum,
                shuffle=False,
                collate_fn=self.task.collate,
                num_workers=self.cfg.num_workers,
            )
            was_training = self.model.training
            self.model.eval()
            with torch.no_grad(), self._autocast():
                metrics = self.task.evaluate(self.model, loader, self.device)
            self.model.train(was_training)
        return broadcast_object(metrics)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _after_eval(self, step: int, metrics: dict) -> None:
        self.last_eval = metrics
        for teacher in self.task.teachers().values():
            teacher.on_eval(self.model, metrics)
        if not self.dist.is_main or not metrics:
            return
        append_jsonl(self.run.metrics, {"split": "eval", "step": step, **metrics})
        name, mode = self.cfg.best_metric, self.cfg.best_mode
        if name not in metrics:
            raise SkdError(f"best metric '{name}' is not among the eval metrics: {', '.join(sorted(metrics))}")
        value = metrics[name]
        better = not self.best or (value < self.best["value"] if mode == "min" else value > self.best["value"])
        if better:
            self.best = {"metric": name, "mode": mode, "value": value, "step": step}
            self.run.save_best(self.model, {**self.best, "metrics": metrics})

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, on_step: Callable[[int], None] | None = None) -> TrainResult:
        cfg = self.cfg
        self._build()
        self.best: dict = {}
        self.last_eval: dict = {}
        step = 0
        resumed_from = None
        if resume:
            ckpt = self.run.latest_checkpoint()
            if ckpt is not None:
                step = resumed_from = self._restore(ckpt)
            if self.dist.is_main:
                # drop what the interrupted run logged after its last checkpoint (or all of it)
                truncate_metrics_after(self.run.metrics, step)
                console.print(
                    f"[cyan]resuming from {ckpt} (step {step})"
                    if ckpt
                    else "[cyan]no checkpoint yet: starting from step 0"
                )
        barrier()

        model, ddp_model = self.model, self.ddp_model
        model.train()
        start_time = time.perf_counter()
        last_loss = float("nan")
        bar = progress_bar() if self.show_progress else None
        task_id = bar.add_task("train", total=cfg.max_steps, completed=step, info="") if bar else None
        with bar if bar else contextlib.nullcontext():
            while step < cfg.max_steps:
                epoch = step // self.steps_per_epoch + 1
                self.sampler.set_epoch(epoch)
                self.sampler.start_index = (step % self.steps_per_epoch) * cfg.grad_accum * self.micro_batch
                micro_iter = iter(self.train_loader)
                for _ in range(self.steps_per_epoch - step % self.steps_per_epoch):
                    reseed(step_seed(cfg.seed, step, self.dist.rank), self.device)
                    progress = self._progress(step, self.last_eval)
                    step_loss = torch.zeros((), device=self.device)
                    logs_sum: dict[str, torch.Tensor] = {}
                    # the named log values cost a few small ops each; gather them only on steps that log
                    will_log = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps
                    for micro in range(cfg.grad_accum):
                        batch = move_to(next(micro_iter), self.device)
                        sync = micro == cfg.grad_accum - 1 or not self.dist.enabled
                        with contextlib.nullcontext() if sync else ddp_model.no_sync():
                            with self._autocast():
                                loss, logs = self.task.compute_loss(ddp_model, batch, progress)
                            self.scaler.scale(loss / cfg.grad_accum).backward()
                        step_loss += loss.detach() / cfg.grad_accum
                        for k, v in logs.items() if will_log else ():
                            v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
                            logs_sum[k] = logs_sum.get(k, 0) + v.to(self.device) / cfg.grad_accum
                    loss_value = step_loss.item()  # the one host sync per step
                    if any_rank(not math.isfinite(loss_value), self.device):
                        self.optimizer.zero_grad(set_to_none=True)
                        last = self.run.latest_checkpoint()
                        raise SkdError(
                            f"non-finite loss ({loss_value}) at step {step + 1}; training stopped. "
                            f"Last good checkpoint: {last if last else 'none yet'}. "
                            "Lower train.lr or set train.grad_clip",
                            self.run.path,
                            exit_code=3,
                        )
                    self.scaler.unscale_(self.optimizer)
                    self.task.before_optimizer_step(model, self.optimizer, progress)
                    grad_norm = (
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
                    )
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    lr = self.scheduler.get_last_lr()[0]
                    self.scheduler.step()
                    step += 1
                    last_loss = loss_value
                    for teacher in self.task.teachers().values():
                        teacher.on_step_end(model, step)
                    if step % self.steps_per_epoch == 0:
                        for teacher in self.task.teachers().values():
                            teacher.on_epoch_end(model, epoch)

                    if will_log:
                        values = {"loss": loss_value, **{k: v.item() for k, v in logs_sum.items()}, "lr": lr}
                        if grad_norm is not None:
                            values["grad_norm"] = float(grad_norm)
                        values = all_reduce_mean(values, self.device)
                        if self.dist.is_main:
                            append_jsonl(
                                self.run.metrics,
                                {
                                    "split": "train",
                                    "step": step,
                                    "epoch": round(step / self.steps_per_epoch, 4),
                                    **values,
                                },
                            )
                    if bar:
                        bar.update(task_id, completed=step, info=f"loss {loss_value:.3f}")
                    is_last = step == cfg.max_steps
                    if (cfg.eval_every and step % cfg.eval_every == 0) or is_last:
                        self._after_eval(step, self.evaluate())
                    if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or is_last:
                        for teacher in self.task.teachers().values():
                            teacher.before_checkpoint()  # every rank: state split over ranks is gathered
                        if self.dist.is_main:
                            self.run.save_checkpoint(step, model, self._state(step), cfg.keep_checkpoints)
                        barrier()
                    if on_step:
                        on_step(step)
                    if is_last:
                        break
        seconds = time.perf_counter() - start_time
        return TrainResult(
            steps=step,
            epochs=round(step / self.steps_per_epoch, 3),
            final_loss=last_loss,
            best=dict(self.best),
            train_seconds=round(seconds, 2),
            resumed_from=resumed_from,
        )
