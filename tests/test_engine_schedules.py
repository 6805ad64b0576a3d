"""Weight schedules and LR multipliers: values at chosen points, worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from skdcli.engine.schedules import (
    ClippedLinearEpoch,
    Constant,
    Cosine,
    LinearRamp,
    PerformanceBased,
    Progress,
    QuadraticWarmup,
    build_weight_schedule,
    lr_multiplier,
    make_lr_lambda,
)


def at(step: int = 0, total_steps: int = 100, epoch: int = 1, total_epochs: int = 10, **metrics) -> Progress:
    return Progress(step=step, total_steps=total_steps, epoch=epoch, total_epochs=total_epochs, metrics=metrics)


# ---------------------------------------------------------------- weight schedules


@pytest.mark.parametrize(
    "epoch, expected",
    [(1, 0.3), (2, 0.3), (4, 3 / 9), (5, 4 / 9), (7, 6 / 9), (8, 0.7), (10, 0.7)],
)
def test_clipped_linear_epoch(epoch, expected):
    # alpha(e) = min(max((e-1)/9, 0.3), 0.7) for E = 10
    assert ClippedLinearEpoch(0.3)(at(epoch=epoch)) == pytest.approx(expected)


def test_clipped_linear_epoch_single_epoch_is_t():
    assert ClippedLinearEpoch(0.3)(at(epoch=1, total_epochs=1)) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="t must be"):
        ClippedLinearEpoch(0.6)


@pytest.mark.parametrize("step, expected", [(0, 1.0), (20, 1.0), (40, 2.0), (50, 2.5), (60, 3.0), (100, 3.0)])
def test_linear_ramp(step, expected):
    # 1 until 20% of 100 steps, linear to 3 at 60%
    assert LinearRamp(1.0, 3.0, 0.2, 0.6)(at(step=step)) == pytest.approx(expected)


@pytest.mark.parametrize("step, expected", [(0, 0.0), (5, 2.0 * 0.5**2), (10, 2.0), (30, 2.0)])
def test_quadratic_warmup(step, expected):
    assert QuadraticWarmup(2.0, 10)(at(step=step)) == pytest.approx(expected)
    assert QuadraticWarmup(2.0, 0)(at(step=0)) == 2.0


@pytest.mark.parametrize(
    "step, expected", [(0, 0.996), (50, 0.998), (100, 1.0), (25, 0.996 + 0.004 * (1 - math.sqrt(0.5)) / 2)]
)
def test_cosine(step, expected):
    assert Cosine(0.996, 1.0)(at(step=step)) == pytest.approx(expected)


def test_performance_based():
    acc = PerformanceBased("acc", "max", low=0.2, high=0.8, default=0.5)
    assert acc(at()) == 0.5  # not evaluated yet
    assert acc(at(acc=0.5)) == pytest.approx(0.2 + 0.6 * 0.5)
    assert acc(at(acc=1.0)) == pytest.approx(0.8)
    err = PerformanceBased("wer", "min", low=0.2, high=0.8)
    assert err(at(wer=0.25)) == pytest.approx(0.2 + 0.6 * 0.75)
    assert err(at(wer=1.3)) == pytest.approx(0.2)  # p clipped to 0
    assert Constant(0.7)(at()) == 0.7


def test_build_weight_schedule():
    assert build_weight_schedule(0.5) == Constant(0.5)
    assert build_weight_schedule(2) == Constant(2.0)
    assert build_weight_schedule({"kind": "clipped_linear_epoch", "t": 0.3}) == ClippedLinearEpoch(0.3)
    built = build_weight_schedule({"kind": "quadratic_warmup", "value": 1e-3, "warmup_steps": 10})
    assert built(at(step=5)) == pytest.approx(1e-3 / 4)
    custom = ClippedLinearEpoch(0.2)
    assert build_weight_schedule(custom) is custom


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"kind": "exp"}, r"unknown schedule kind 'exp'; valid kinds: constant, linear_ramp, clipped_linear_epoch"),
        ({"kind": "clipped_linear_epoch", "tt": 0.3}, r"unknown key\(s\) \['tt'\].*valid keys: t"),
        ({"kind": "quadratic_warmup", "value": 1.0}, r"missing key\(s\) \['warmup_steps'\]"),
        ({"t": 0.3}, "has no 'kind'"),
        (True, "number or a schedule dict"),
        ("0.5", "number or a schedule dict"),
    ],
)
def test_build_weight_schedule_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        build_weight_schedule(spec)


# ---------------------------------------------------------------- LR multipliers


@pytest.mark.parametrize(
    "kind, step, expected",
    [
        # warm-up 10 steps, then 100 decay steps, floor 0.1
        ("linear_warmup_cosine", 0, 0.0),
        ("linear_warmup_cosine", 5, 0.5),
        ("linear_warmup_cosine", 10, 1.0),
        ("linear_warmup_cosine", 60, 0.1 + 0.9 * 0.5),  # r = 1/2: cos(pi/2) = 0
        ("linear_warmup_cosine", 35, 0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2),
        ("linear_warmup_cosine", 110, 0.1),
        ("linear_warmup_cosine", 500, 0.1),
        ("linear_warmup_linear", 5, 0.5),
        ("linear_warmup_linear", 60, 1 - 0.9 * 0.5),
        ("linear_warmup_linear", 110, 0.1),
        ("constant", 5, 0.5),
        ("constant", 60, 1.0),
    ],
)
def test_lr_multiplier(kind, step, expected):
    got = lr_multiplier(kind, step, warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    "step, expected", [(0, 1 / 4), (1, 2 / 4), (3, 1.0), (15, math.sqrt(4 / 16)), (99, math.sqrt(4 / 100))]
)
@pytest.mark.parametrize("d_model", [None, 256])
def test_noam_peaks_at_one(step, expected, d_model):
    # s = step + 1, w = 4: min(s/w, sqrt(w/s)); d_model cancels after normalisation
    assert lr_multiplier("noam", step, warmup_steps=4, total_steps=100, d_model=d_model) == pytest.approx(expected)


def test_make_lr_lambda_drives_lambdalr():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, make_lr_lambda("linear_warmup_linear", warmup_steps=2, total_steps=4)
    )
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.25, 0.5, 0.25, 0.0])


@pytest.mark.parametrize(
    "kind, kwargs, match",
    [
        ("step", {}, "unknown LR schedule 'step'; valid: constant, linear_warmup_cosine"),
        ("noam", {"warmup_steps": 0}, "noam needs warmup_steps >= 1"),
        ("constant", {"total_steps": 0}, "total_steps >= 1"),
        ("linear_warmup_cosine", {"min_ratio": 2.0}, "min_ratio"),
    ],
)
def test_lr_errors(kind, kwargs, match):
    args = {"warmup_steps": 10, "total_steps": 100, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_lr_lambda(kind, **args)
