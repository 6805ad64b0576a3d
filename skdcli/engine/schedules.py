"""Loss-weight schedules (functions of training progress) and LR multipliers for LambdaLR.

A weight schedule is any callable ``schedule(progress) -> float``; the trainer builds one
``Progress`` per step and logs every weight it gets (the QA authors read the coefficient curve
as a diagnostic). Configs name schedules through ``build_weight_schedule``:

    kd_weight: 0.5                                         # Constant(0.5)
    kd_weight: {kind: clipped_linear_epoch, t: 0.3}        # ASR alpha(e)
    l1_weight: {kind: quadratic_warmup, value: 1e-3, warmup_steps: 5000}
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    """Where training is. ``step``: optimizer steps done (0-based); ``epoch``: current epoch
    (1-based); ``metrics``: latest eval metrics (empty before the first evaluation)."""

    step: int
    total_steps: int
    epoch: int
    total_epochs: int
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def frac(self) -> float:
        """Fraction of training done, step / total_steps, clipped to [0, 1]."""
        return min(max(self.step / max(self.total_steps, 1), 0.0), 1.0)


@dataclass(frozen=True)
class Constant:
    value: float

    def __call__(self, progress: Progress) -> float:
        return float(self.value)


@dataclass(frozen=True)
class LinearRamp:
    """``start`` until frac = begin_frac, linear to ``end`` at frac = end_frac, then ``end``
    (frac = step / total_steps)."""

    start: float
    end: float
    begin_frac: float = 0.0
    end_frac: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.begin_frac <= self.end_frac <= 1.0:
            raise ValueError(f"need 0 <= begin_frac <= end_frac <= 1, got {self.begin_frac}, {self.end_frac}")

    def __call__(self, progress: Progress) -> float:
        f = progress.frac
        if f >= self.end_frac:
            return float(self.end)
        if f <= self.begin_frac:
            return float(self.start)
        r = (f - self.begin_frac) / (self.end_frac - self.begin_frac)
        return self.start + (self.end - self.start) * r


@dataclass(frozen=True)
class ClippedLinearEpoch:
    """alpha(e) = min(max((e - 1) / (E - 1), t), 1 - t), e = current epoch (1-based), E = total.

    Rises linearly over the epochs, clipped to [t, 1 - t] (asr-ctc, t = 0.3: 0.3 ... 0.7).
    With E == 1 the ratio is taken as 0 (the single epoch is the start of training): alpha = t.
    """

    t: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.t <= 0.5:
            raise ValueError(f"t must be in [0, 0.5] so that t <= 1 - t, got {self.t}")

    def __call__(self, progress: Progress) -> float:
        e, total = progress.epoch, progress.total_epochs
        r = (e - 1) / (total - 1) if total > 1 else 0.0
        return min(max(r, self.t), 1.0 - self.t)


@dataclass(frozen=True)
class QuadraticWarmup:
    """eta(step) = value * min(1, step / warmup_steps)^2 (regulariser warm-up, e.g. SPLADE's L1)."""

    value: float
    warmup_steps: int

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")

    def __call__(self, progress: Progress) -> float:
        if self.warmup_steps == 0:
            return float(self.value)
        return self.value * min(1.0, progress.step / self.warmup_steps) ** 2


@dataclass(frozen=True)
class Cosine:
    """start + (end - start) * (1 - cos(pi * frac)) / 2: ``start`` at step 0, ``end`` at the last
    step (DINO's teacher momentum 0.996 -> 1)."""

    start: float
    end: float

    def __call__(self, progress: Progress) -> float:
        return self.start + (self.end - self.start) * (1.0 - math.cos(math.pi * progress.frac)) / 2.0


@dataclass(frozen=True)
class PerformanceBased:
    """Weight from the model's own latest performance (SAR adaptive weighting).

    p = metrics[metric] when mode == "max" (higher is better, e.g. accuracy) or
    1 - metrics[metric] when mode == "min" (lower is better, e.g. an error rate), clipped to
    [0, 1] (a WER above 1 counts as p = 0); weight = low + (high - low) * p.
    ``default`` before the metric exists. For a complementary pair w_on + w_off = 1 use
    (low=0, high=1) and (low=1, high=0) on the same metric.
    """

    metric: str
    mode: str = "max"
    low: float = 0.0
    high: float = 1.0
    default: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")

    def __call__(self, progress: Progress) -> float:
        if self.metric not in progress.metrics:
            return float(self.default)
        m = float(progress.metrics[self.metric])
        p = m if self.mode == "max" else 1.0 - m
        p = min(max(p, 0.0), 1.0)
        return self.low + (self.high - self.low) * p


WEIGHT_SCHEDULES: dict[str, type] = {
    "constant": Constant,
    "linear_ramp": LinearRamp,
    "clipped_linear_epoch": ClippedLinearEpoch,
    "quadratic_warmup": QuadraticWarmup,
    "cosine": Cosine,
    "performance_based": PerformanceBased,
}


def build_weight_schedule(
    spec: float | int | Mapping[str, Any] | Callable[[Progress], float],
) -> Callable[[Progress], float]:
    """A number -> Constant; {"kind": name, **fields} -> that schedule; a callable is returned as is."""
    if isinstance(spec, bool):
        raise ValueError(f"a weight must be a number or a schedule dict, got {spec!r}")
    if isinstance(spec, (int, float)):
        return Constant(float(spec))
    if callable(spec):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError(f"a weight must be a number or a schedule dict, got {type(spec).__name__}")
    kinds = ", ".join(WEIGHT_SCHEDULES)
    if "kind" not in spec:
        raise ValueError(f"schedule {dict(spec)} has no 'kind'; valid kinds: {kinds}")
    kind = spec["kind"]
    if kind not in WEIGHT_SCHEDULES:
        raise ValueError(f"unknown schedule kind {kind!r}; valid kinds: {kinds}")
    cls = WEIGHT_SCHEDULES[kind]
    fields = dataclasses.fields(cls)
    valid = {f.name for f in fields}
    kwargs = {k: v for k, v in spec.items() if k != "kind"}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} for schedule {kind!r}; valid keys: {', '.join(f.name for f in fields)}"
        )
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in kwargs]
    if required:
        raise ValueError(f"schedule {kind!r} is missing key(s) {required}")
    return cls(**kwargs)


LR_KINDS = ("constant", "linear_warmup_cosine", "linear_warmup_linear", "noam")


def _check_lr_args(kind: str, warmup_steps: int, total_steps: int, d_model: int | None, min_ratio: float) -> None:
    if kind not in LR_KINDS:
        raise ValueError(f"unknown LR schedule {kind!r}; valid: {', '.join(LR_KINDS)}")
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}")
    if kind == "noam" and warmup_steps < 1:
        raise ValueError("noam needs warmup_steps >= 1")
    if d_model is not None and d_model < 1:
        raise ValueError(f"d_model must be >= 1, got {d_model}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")


def lr_multiplier(
    kind: str,
    step: int,
    *,
    warmup_steps: int,
    total_steps: int,
    d_model: int | None = None,
    min_ratio: float = 0.0,
) -> float:
    """LR factor at ``step`` (optimizer steps done, 0-based, as LambdaLR passes it).

    All kinds but noam warm up linearly: step / warmup_steps for step < warmup_steps (0 at step 0,
    1 at step = warmup_steps). Afterwards, with r = (step - warmup) / (total - warmup) clipped to [0, 1]:

        constant              1
        linear_warmup_cosine  min_ratio + (1 - min_ratio) * (1 + cos(pi r)) / 2
        linear_warmup_linear  1 - (1 - min_ratio) * r
        noam                  with s = step + 1, w = warmup_steps:
                              d_model^-0.5 * min(s^-0.5, s * w^-1.5), divided by its peak value
                              d_model^-0.5 * w^-0.5 (at s = w), i.e. min(s / w, sqrt(w / s)).
                              The peak is 1.0, so the optimizer's lr is the peak lr; d_model cancels
                              (it is accepted so a Transformer config can pass it; default 1).
    """
    _check_lr_args(kind, warmup_steps, total_steps, d_model, min_ratio)
    if kind == "noam":
        s, w, d = step + 1, warmup_steps, d_model or 1
        raw = d**-0.5 * min(s**-0.5, s * w**-1.5)
        return raw / (d**-0.5 * w**-0.5)
    if step < warmup_steps:
        return step / warmup_steps
    if kind == "constant":
        return 1.0
    r = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    if kind == "linear_warmup_cosine":
        return min_ratio + (1.0 - min_ratio) * (1.0 + math.cos(math.pi * r)) / 2.0
    return 1.0 - (1.0 - min_ratio) * r  # linear_warmup_linear


def make_lr_lambda(
    kind: str,
    *,
    warmup_steps: int,
    total_steps: int,
    d_model: int | None = None,
    min_ratio: float = 0.0,
) -> Callable[[int], float]:
    """``lr_multiplier`` with everything but the step bound, for torch.optim.lr_scheduler.LambdaLR.
    Arguments are validated here, at build time, not at the first step."""
    _check_lr_args(kind, warmup_steps, total_steps, d_model, min_ratio)
    return functools.partial(
        lr_multiplier, kind, warmup_steps=warmup_steps, total_steps=total_steps, d_model=d_model, min_ratio=min_ratio
    )
