"""Evaluation of a distilled dataset: fresh classifiers trained on it, top-1 on the real test split.

The protocol of DiM (vimar-gu/DiM @ 36573394, validate.py / pool_match.py ``validate``): SGD
lr 0.01, momentum 0.9, weight decay 5e-4, DSA ``color_crop`` per image, cross-entropy. Sources
of training batches, one per model:

- ``fixed``       a generated set of IPC images per class, made once, shuffled each epoch;
- ``on_the_fly``  DiM's mode: every epoch draws floor(C * IPC / batch) (+ 1) FRESH batches from the
                  generator with random labels, so the number of generator forwards matches IPC;
- ``real``        a random real subset of IPC images per class, or the whole real train split.

Many small models are trained at once: the R models of one (system, arch, IPC, mode) cell are
stacked with ``torch.func.stack_module_state`` and trained as one ``vmap``-ed ensemble with one
SGD over the stacked parameters (SGD is elementwise, so this is R independent SGDs). Each model
keeps its own ``torch.Generator`` for data order, noise and augmentation, so the vectorised and
the one-at-a-time paths see identical batches (tested equal).

Selection: the LAST epoch's top-1 by default; ``select=best_on_test`` reproduces DiM's report of
the best top-1 over its test points (selected on the test set, hence optimistic).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from ..engine.dsa import DSA
from .model import Generator, conditional_noise


# -- batch sources ---------------------------------------------------------------------------------------------
class BatchSource:
    """One model's training batches in the generator's [-1, 1] image range."""

    steps_per_epoch: int

    def next_batch(self, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class FixedSet(BatchSource):
    """A fixed set, reshuffled every epoch with the model's generator. An epoch is ceil(N / b)
    batches of b = min(batch, N) images; its last batch wraps around to the start of the
    permutation, so every batch has the same shape (the models of a cell are stacked)."""

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int):
        self.images, self.labels = images, labels
        self.batch = min(batch_size, len(labels))
        self.steps_per_epoch = math.ceil(len(labels) / self.batch)
        self._order: Tensor | None = None
        self._pos = 0

    def next_batch(self, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        n = len(self.labels)
        if self._order is None or self._pos >= self.steps_per_epoch * self.batch:
            perm = torch.randperm(n, generator=gen)
            reps = math.ceil(self.steps_per_epoch * self.batch / n)
            self._order = torch.cat([perm] * reps)  # the last batch of an epoch wraps to the start
            self._pos = 0
        idx = self._order[self._pos : self._pos + self.batch]
        self._pos += self.batch
        return self.images[idx], self.labels[idx]


class OnTheFly(BatchSource):
    """DiM's on-the-fly mode: a fresh generated batch with uniformly random labels every step."""

    def __init__(self, generator: Generator, ipc: int, num_classes: int, batch_size: int, plus_one: bool = True):
        self.generator, self.num_classes, self.batch = generator.eval(), num_classes, batch_size
        self.steps_per_epoch = num_classes * ipc // batch_size + (1 if plus_one else 0)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"on_the_fly with floor({num_classes} * {ipc} / {batch_size}) = 0 batches per epoch "
                "trains nothing (DiM validate.py's count); use floor_plus_one or a smaller batch"
            )
        self.device = next(generator.parameters()).device

    @torch.no_grad()
    def next_batch(self, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        labels = torch.randint(self.num_classes, (self.batch,), generator=gen)
        z = conditional_noise(labels, self.generator.noise_dim, self.num_classes, gen)
        return self.generator(z.to(self.device)), labels.to(self.device)


@torch.no_grad()
def generate_fixed(
    generator: Generator, ipc: int, num_classes: int, seed: int, batch_size: int = 500
) -> tuple[Tensor, Tensor]:
    """IPC images per class (class-major order) in [-1, 1], from noise drawn with ``seed``."""
    generator.eval()
    device = next(generator.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(ipc)
    z = conditional_noise(labels, generator.noise_dim, num_classes, gen)
    images = torch.cat([generator(z[i : i + batch_size].to(device)) for i in range(0, len(z), batch_size)])
    return images, labels.to(device)


def random_real_subset(images: Tensor, labels: Tensor, ipc: int, num_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(num_classes):
        idx = torch.nonzero(labels.cpu() == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:ipc]])
    order = torch.cat(picks).to(labels.device)
    return images[order], labels[order]


# -- training -----------------------------------------------------------------------------------------------------
@dataclass
class TrainSpec:
    steps: int
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dsa: str = "color_crop"
    test_every_steps: int = 0  # 0: test after the last step only
    test_batch: int = 1000


def _prepare(x_gan: Tensor, normalize: Callable[[Tensor], Tensor], dsa: DSA, gen: torch.Generator) -> Tensor:
    x = normalize(x_gan)
    if dsa.enabled:
        params = dsa.sample(x.shape[0], x.shape[2], x.shape[3], device=x.device, generator=gen)
        x = dsa.apply(x, params)
    return x


def _test_top1(forward: Callable[[Tensor], Tensor], test_x: Tensor, test_y: Tensor, batch: int) -> Tensor:
    """Per-model top-1 (%) of ``forward`` ((B, ...) -> (R, B, C) logits)."""
    correct = None
    with torch.no_grad():
        for i in range(0, len(test_y), batch):
            pred = forward(test_x[i : i + batch]).argmax(-1)
            hits = (pred == test_y[i : i + batch]).sum(-1).double()
            correct = hits if correct is None else correct + hits
    return correct * 100.0 / len(test_y)


def train_models(
    build: Callable[[], nn.Module],
    seeds: list[int],
    sources: list[BatchSource],
    spec: TrainSpec,
    normalize: Callable[[Tensor], Tensor],
    test_x: Tensor,
    test_y: Tensor,
    *,
    vectorize: bool = True,
    device: torch.device | str = "cpu",
) -> dict:
    """Train one fresh model per (seed, source) for ``spec.steps`` steps; return each model's test
    curve ``[(step, top1)]`` plus wall time. ``test_x`` is the classifier input (already normalised)."""
    if len(seeds) != len(sources):
        raise ValueError("one seed per source")
    device = torch.device(device)
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build().to(device).train())
    gens = [torch.Generator().manual_seed(seed + 7) for seed in seeds]
    dsa = DSA(spec.dsa)
    test_x, test_y = test_x.to(device), test_y.to(device)
    test_points = sorted(
        {spec.steps}
        | (set(range(spec.test_every_steps, spec.steps + 1, spec.test_every_steps)) if spec.test_every_steps else set())
    )
    curves: list[list[tuple[int, float]]] = [[] for _ in models]
    start = time.perf_counter()

    def batches() -> tuple[Tensor, Tensor]:
        xs, ys = zip(*[src.next_batch(g) for src, g in zip(sources, gens)])
        xs = [_prepare(x.to(device), normalize, dsa, g) for x, g in zip(xs, gens)]
        return torch.stack(xs), torch.stack([y.to(device) for y in ys])

    if vectorize and len(models) > 1:
        params, buffers = stack_module_state(models)
        base = copy.deepcopy(models[0]).to("meta")

        def call(p: dict, b: dict, x: Tensor) -> Tensor:
            return functional_call(base, (p, b), (x,))

        opt = torch.optim.SGD(list(params.values()), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
        for step in range(1, spec.steps + 1):
            x, y = batches()
            base.train()
            logits = vmap(call)(params, buffers, x)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step in test_points:
                base.eval()
                top1 = _test_top1(
                    lambda xb: vmap(call, in_dims=(0, 0, None))(params, buffers, xb), test_x, test_y, spec.test_batch
                )
                for r, v in enumerate(top1.tolist()):
                    curves[r].append((step, v))
    else:
        opts = [
            torch.optim.SGD(m.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
            for m in models
        ]
        for step in range(1, spec.steps + 1):
            x, y = batches()
            for r, (model, opt) in enumerate(zip(models, opts)):
                model.train()
                loss = F.cross_entropy(model(x[r]), y[r])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if step in test_points:
                for r, model in enumerate(models):
                    model.eval()
                    top1 = _test_top1(lambda xb, m=model: m(xb).unsqueeze(0), test_x, test_y, spec.test_batch)
                    curves[r].append((step, float(top1[0])))
    return {"curves": curves, "seconds": time.perf_counter() - start, "model_steps": spec.steps * len(models)}


def select_top1(curve: list[tuple[int, float]], select: str) -> float:
    """last: the top-1 after the last step; best_on_test: DiM's max over the test points."""
    return curve[-1][1] if select == "last" else max(v for _, v in curve)
