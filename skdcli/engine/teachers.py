"""Teacher signals: where a self-distillation recipe gets its targets from.

In self-KD the teacher is the model itself, seen some other way:

    DetachedPrediction     same forward pass: a deeper layer, a sub-model, another score (asr-ctc, nlp-embed)
    capture_outputs        forward hooks by module path, to tap those layers without editing model code
    EMATeacher             exponential moving average of the weights (lus / DINO)
    SnapshotTeacher        frozen copy from the previous generation / epoch (xqa)
    BestCheckpointTeacher  frozen copy of the best validation checkpoint so far (nlg-smooth)
    CombinedScore          weighted sum of named scores, detached (retrieval: 0.5 S_dense + 0.5 S_sparse)
    PredictionMemory       per-sample predictions from the last epoch, by dataset index (PS-KD)

Every kind is a ``TeacherSignal``: the trainer calls the hooks and saves ``state_dict()`` with the
run's checkpoint. A teacher copy is not a submodule of the student, so ``model.state_dict()`` does
not hold it; without this state a resumed run would restart from a different teacher. The state is
plain tensors / numbers / dicts so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module inside DistributedDataParallel / DataParallel / torch.compile wrappers,
    so teacher copies and module paths are the same with or without them."""
    while True:
        if isinstance(model, (DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def _frozen_copy(model: nn.Module) -> nn.Module:
    """Deep copy in eval mode (no dropout, fixed BN statistics) that never takes gradients."""
    teacher = copy.deepcopy(unwrap_model(model))
    for p in teacher.parameters():
        p.grad = None  # deepcopy also copies .grad; the teacher never needs it
    return teacher.eval().requires_grad_(False)


def _detach(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, Mapping):
        return {k: _detach(v) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # namedtuple
        return type(x)(*(_detach(v) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(_detach(v) for v in x)
    return x


class TeacherSignal:
    """Base class: resumable state plus training hooks, all no-ops by default.

    The trainer calls ``on_step_end`` after each optimizer step (``step`` = optimizer steps done),
    ``on_epoch_end`` after each epoch (``epoch`` = the 1-based epoch that just ended),
    ``on_eval`` after each validation with the metrics dict, and ``before_checkpoint`` on every
    rank right before a checkpoint is written (only rank 0 writes ``state_dict()``: a signal whose
    state is split over DDP ranks gathers it here; a collective is safe, all ranks are there).
    """

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)}")

    def on_step_end(self, model: nn.Module, step: int) -> None:
        pass

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        pass

    def on_eval(self, model: nn.Module, metrics: Mapping[str, float]) -> None:
        pass

    def before_checkpoint(self) -> None:
        pass


class DetachedPrediction(TeacherSignal):
    """Teacher = a tensor (or dict / list / tuple of tensors) from the student's own forward pass.

    ``stop_gradient=False`` returns it unchanged: the retrieval recipe's official code lets the
    gradient flow through its in-batch teacher, so that must stay a visible switch.
    """

    def __init__(self, stop_gradient: bool = True):
        self.stop_gradient = stop_gradient

    def __call__(self, prediction: Any) -> Any:
        return _detach(prediction) if self.stop_gradient else prediction


@contextmanager
def capture_outputs(model: nn.Module, module_names: str | Sequence[str]) -> Iterator[dict[str, Any]]:
    """Record the outputs of named submodules during the forward passes run inside the block.

        with capture_outputs(model, ["encoder.layers.5"]) as taps:
            logits = model(x)
        hidden = taps["encoder.layers.5"]

    Names are ``model.named_modules()`` paths of the unwrapped model (DDP's ``module.`` prefix is
    not needed). A module called several times in one forward keeps its latest output. Outputs keep
    their graph (they are the student's); wrap with ``DetachedPrediction`` to use one as a teacher.
    The hooks are removed when the block exits, even on error.
    """
    if isinstance(module_names, str):
        module_names = [module_names]
    modules = dict(unwrap_model(model).named_modules())
    missing = [name for name in module_names if name not in modules]
    if missing:
        valid = ", ".join(repr(name) for name in modules if name)
        raise ValueError(f"unknown module name(s) {missing}; valid names: {valid}")

    outputs: dict[str, Any] = {}

    def hook_for(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            outputs[name] = output

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in module_names]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


class EMATeacher(TeacherSignal):
    """Exponential moving average of the student's weights (mean teacher, DINO, BYOL).

    After each update:  theta_teacher <- d * theta_teacher + (1 - d) * theta_student;
    buffers (BN statistics, counters) are copied, not averaged. ``decay`` is a float or a callable
    ``decay(n) -> float`` of the number of updates done so far (0-based; equal to the optimizer
    step when updating once per step), e.g. DINO's cosine momentum 0.996 -> 1.

    Build it after moving the model to its device: the copy lives where the model was.
    """

    def __init__(self, model: nn.Module, decay: float | Callable[[int], float] = 0.999):
        self.model = _frozen_copy(model)
        self.decay = decay
        self.num_updates = 0

    def current_decay(self) -> float:
        d = float(self.decay(self.num_updates)) if callable(self.decay) else float(self.decay)
        if not 0.0 <= d <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {d} at update {self.num_updates}")
        return d

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        student = unwrap_model(model)
        d = self.current_decay()
        for t, s in zip(self.model.parameters(), student.parameters(), strict=True):
            t.lerp_(s.detach(), 1.0 - d)  # t + (1-d)(s - t) = d t + (1-d) s
        for t, s in zip(self.model.buffers(), student.buffers(), strict=True):
            t.copy_(s)
        self.num_updates += 1

    def on_step_end(self, model: nn.Module, step: int) -> None:
        self.update(model)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.model(*args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return {"model": dict(self.model.state_dict()), "num_updates": self.num_updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])


class _FrozenCopyTeacher(TeacherSignal):
    """A frozen copy of the student that is overwritten (``refresh``) at chosen moments.

    The copy is always allocated, even before it is ``ready``, so that a saved state can be
    loaded into it and a refresh is an in-place weight copy rather than a new deepcopy.
    """

    def __init__(self, model: nn.Module, ready: bool):
        self.model = _frozen_copy(model)
        self._ready = ready
        self.generation = 0  # number of refreshes so far; handy in logs

    @property
    def ready(self) -> bool:
        """False until the copy holds a teacher (calling it before then raises)."""
        return self._ready

    def refresh(self, model: nn.Module) -> None:
        self.model.load_state_dict(unwrap_model(model).state_dict())
        self._ready = True
        self.generation += 1

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._ready:
            raise RuntimeError(f"{type(self).__name__} has no teacher yet; check .ready before calling it")
        with torch.no_grad():
            return self.model(*args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return {"model": dict(self.model.state_dict()), "ready": self._ready, "generation": self.generation}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self._ready = bool(state["ready"])
        self.generation = int(state["generation"])


class SnapshotTeacher(_FrozenCopyTeacher):
    """Teacher = the student as it was at the last generation boundary (born-again / xqa).

    ``on_epoch_end(model, epoch)`` refreshes when ``epoch % refresh_every_epochs == 0`` (epoch is
    1-based), so generation g trains against the model that ended generation g-1.
    ``initial="copy"``: the first generation is taught by the initial weights;
    ``initial="none"``: the first generation has no teacher (``ready`` is False until the first refresh).
    """

    def __init__(self, model: nn.Module, refresh_every_epochs: int = 1, initial: str = "copy"):
        if refresh_every_epochs < 1:
            raise ValueError(f"refresh_every_epochs must be >= 1, got {refresh_every_epochs}")
        if initial not in ("copy", "none"):
            raise ValueError(f"initial must be 'copy' or 'none', got {initial!r}")
        super().__init__(model, ready=initial == "copy")
        self.refresh_every_epochs = refresh_every_epochs

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        if epoch % self.refresh_every_epochs == 0:
            self.refresh(model)


class BestCheckpointTeacher(_FrozenCopyTeacher):
    """Teacher = the best checkpoint so far by a validation metric (nlg-smooth).

    ``on_eval`` copies the student in when ``metrics[metric]`` improves on ``best`` (strictly;
    NaN never improves). Not ready before the first evaluation.
    """

    def __init__(self, model: nn.Module, metric: str, mode: str = "min"):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        super().__init__(model, ready=False)
        self.metric = metric
        self.mode = mode
        self.best = float("inf") if mode == "min" else float("-inf")

    def on_eval(self, model: nn.Module, metrics: Mapping[str, float]) -> None:
        if not metrics:  # no evaluation ran (no eval split, or the bench): nothing to compare
            return
        if self.metric not in metrics:
            raise ValueError(f"metric {self.metric!r} not in the eval metrics {sorted(metrics)}")
        value = float(metrics[self.metric])
        if (value < self.best) if self.mode == "min" else (value > self.best):
            self.best = value
            self.refresh(model)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best": self.best}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.best = float(state["best"])


class CombinedScore(TeacherSignal):
    """Teacher score = sum_name weights[name] * scores[name], detached when ``stop_gradient``."""

    def __init__(self, weights: Mapping[str, float], stop_gradient: bool = True):
        if not weights:
            raise ValueError("CombinedScore needs at least one weight")
        self.weights = {name: float(w) for name, w in weights.items()}
        self.stop_gradient = stop_gradient

    def __call__(self, scores: Mapping[str, Tensor]) -> Tensor:
        missing = [name for name in self.weights if name not in scores]
        if missing:
            raise ValueError(f"scores missing {missing}; got {sorted(scores)}")
        total = sum(w * scores[name] for name, w in self.weights.items())
        return total.detach() if self.stop_gradient else total


class PredictionMemory(TeacherSignal):
    """Per-sample class probabilities from the previous epoch, indexed by dataset index (PS-KD).

    Read the rows for a batch before overwriting them with this step's predictions:

        past = memory[idx]            # last epoch's probabilities (zeros where never filled)
        ...
        memory.update(idx, probs)

    Rows never written read as zeros; ``filled`` tells which rows hold a prediction. Under DDP
    each rank sees only its own indices: all-gather (indices, probs) before ``update`` so every
    rank's memory stays identical.
    """

    def __init__(self, num_samples: int, num_classes: int, *, device: str | torch.device = "cpu"):
        self.probs = torch.zeros(num_samples, num_classes, device=device)
        self.filled = torch.zeros(num_samples, dtype=torch.bool, device=device)

    @torch.no_grad()
    def update(self, indices: Tensor, probs: Tensor) -> None:
        indices = indices.to(self.probs.device, torch.long)
        if probs.shape != (indices.numel(), self.probs.shape[1]):
            raise ValueError(f"probs shape {tuple(probs.shape)} must be ({indices.numel()}, {self.probs.shape[1]})")
        self.probs[indices] = probs.detach().to(self.probs)
        self.filled[indices] = True

    def __getitem__(self, indices: Tensor) -> Tensor:
        """Rows for ``indices`` (a copy), on the memory's device."""
        return self.probs[indices.to(self.probs.device, torch.long)]

    def state_dict(self) -> dict[str, Any]:
        return {"probs": self.probs, "filled": self.filled}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["probs"].shape != self.probs.shape:
            raise ValueError(
                f"saved memory has shape {tuple(state['probs'].shape)}, expected {tuple(self.probs.shape)}"
            )
        self.probs.copy_(state["probs"])
        self.filled.copy_(state["filled"])
