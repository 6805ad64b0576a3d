"""Teacher signals: EMA math by hand, frozen snapshots, resumable state, forward-hook capture."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from skdcli.engine.teachers import (
    BestCheckpointTeacher,
    CombinedScore,
    DetachedPrediction,
    EMATeacher,
    PredictionMemory,
    SnapshotTeacher,
    TeacherSignal,
    capture_outputs,
    unwrap_model,
)


def scalar_model(w: float) -> nn.Module:
    """y = w * x with one BatchNorm buffer set, to see that buffers are copied, not averaged."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    set_weight(model, w)
    return model


def set_weight(model: nn.Module, w: float) -> None:
    with torch.no_grad():
        model[0].weight.fill_(w)


def weight(model: nn.Module) -> float:
    return model[0].weight.item()


def roundtrip(state: dict, tmp_path) -> dict:
    torch.save(state, tmp_path / "teacher.pt")
    return torch.load(tmp_path / "teacher.pt", weights_only=True)


# ---------------------------------------------------------------- EMA


def test_ema_update_by_hand():
    student = scalar_model(0.0)
    ema = EMATeacher(student, decay=0.9)
    set_weight(student, 1.0)
    ema.update(student)
    assert weight(ema.model) == pytest.approx(0.9 * 0.0 + 0.1 * 1.0)  # 0.1
    set_weight(student, 2.0)
    with torch.no_grad():
        student[1].running_mean.fill_(5.0)
    ema.on_step_end(student, step=1)
    assert weight(ema.model) == pytest.approx(0.9 * 0.1 + 0.1 * 2.0)  # 0.29
    assert ema.model[1].running_mean.item() == 5.0
    assert ema.num_updates == 2


def test_ema_callable_decay_gets_update_count():
    student = scalar_model(0.0)
    seen = []
    ema = EMATeacher(student, decay=lambda n: seen.append(n) or 0.5)
    set_weight(student, 4.0)
    ema.update(student)  # 0.5 * 0 + 0.5 * 4 = 2
    ema.update(student)  # 0.5 * 2 + 0.5 * 4 = 3
    assert seen == [0, 1]
    assert weight(ema.model) == pytest.approx(3.0)


def test_ema_teacher_is_frozen_and_runs_without_grad():
    student = scalar_model(1.0)
    ema = EMATeacher(student)
    assert not ema.model.training
    assert all(not p.requires_grad for p in ema.model.parameters())
    out = ema(torch.ones(2, 1, requires_grad=True))
    assert not out.requires_grad
    with pytest.raises(ValueError, match="decay"):
        EMATeacher(student, decay=1.5).update(student)


def test_ema_state_roundtrip(tmp_path):
    student = scalar_model(0.0)
    ema = EMATeacher(student, decay=0.9)
    set_weight(student, 1.0)
    ema.update(student)
    resumed = EMATeacher(scalar_model(7.0), decay=0.9)
    resumed.load_state_dict(roundtrip(ema.state_dict(), tmp_path))
    assert weight(resumed.model) == pytest.approx(0.1)
    assert resumed.num_updates == 1


def test_ema_unwraps_ddp():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        inner = scalar_model(0.0)
        ddp = nn.parallel.DistributedDataParallel(inner)
        assert unwrap_model(ddp) is inner
        ema = EMATeacher(ddp, decay=0.5)
        assert all(not k.startswith("module.") for k in ema.state_dict()["model"])
        set_weight(inner, 2.0)
        ema.update(ddp)
        assert weight(ema.model) == pytest.approx(1.0)
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- snapshots


def test_snapshot_is_frozen_and_refreshes_at_boundaries():
    student = scalar_model(1.0)
    snap = SnapshotTeacher(student, refresh_every_epochs=2)
    assert snap.ready and not snap.model.training
    assert all(not p.requires_grad for p in snap.model.parameters())
    set_weight(student, 2.0)
    assert weight(snap.model) == 1.0  # a copy, not a view of the student
    snap.on_epoch_end(student, epoch=1)
    assert weight(snap.model) == 1.0  # not a boundary
    snap.on_epoch_end(student, epoch=2)
    assert weight(snap.model) == 2.0
    assert snap.generation == 1
    assert not snap(torch.ones(2, 1, requires_grad=True)).requires_grad


def test_snapshot_initial_none():
    student = scalar_model(1.0)
    snap = SnapshotTeacher(student, initial="none")
    assert not snap.ready
    with pytest.raises(RuntimeError, match="no teacher yet"):
        snap(torch.ones(2, 1))
    snap.on_epoch_end(student, epoch=1)
    assert snap.ready
    with pytest.raises(ValueError, match="initial"):
        SnapshotTeacher(student, initial="random")


def test_snapshot_state_roundtrip(tmp_path):
    student = scalar_model(3.0)
    snap = SnapshotTeacher(student, initial="none")
    snap.refresh(student)
    resumed = SnapshotTeacher(scalar_model(0.0), initial="none")
    resumed.load_state_dict(roundtrip(snap.state_dict(), tmp_path))
    assert resumed.ready and resumed.generation == 1
    assert weight(resumed.model) == 3.0


def test_best_checkpoint_swaps_on_improvement(tmp_path):
    student = scalar_model(1.0)
    best = BestCheckpointTeacher(student, metric="acc", mode="max")
    assert not best.ready
    best.on_eval(student, {"acc": 0.5})
    assert best.ready and weight(best.model) == 1.0
    set_weight(student, 2.0)
    best.on_eval(student, {"acc": 0.4})  # worse: keep the old teacher
    assert weight(best.model) == 1.0
    best.on_eval(student, {"acc": 0.6})
    assert weight(best.model) == 2.0 and best.best == 0.6

    resumed = BestCheckpointTeacher(scalar_model(0.0), metric="acc", mode="max")
    resumed.load_state_dict(roundtrip(best.state_dict(), tmp_path))
    assert resumed.best == 0.6 and resumed.ready and weight(resumed.model) == 2.0

    with pytest.raises(ValueError, match="'acc' not in the eval metrics"):
        best.on_eval(student, {"loss": 1.0})


# ---------------------------------------------------------------- same-forward signals


def test_capture_outputs_on_sequential():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(5, 3)
    with capture_outputs(model, ["1", "2"]) as taps:
        y = model(x)
    torch.testing.assert_close(taps["1"], torch.relu(model[0](x)))
    torch.testing.assert_close(taps["2"], y)
    assert taps["1"].requires_grad  # the student's own activations keep their graph
    assert all(not m._forward_hooks for m in model.modules())


def test_capture_outputs_unknown_name_lists_valid_ones():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    with pytest.raises(ValueError, match=r"unknown module name\(s\) \['2'\]; valid names: '0', '1'"):
        with capture_outputs(model, "2"):
            pass


def test_detached_prediction():
    x = torch.ones(2, requires_grad=True)
    y = x * 2
    out = DetachedPrediction()({"a": y, "b": (y, 3)})
    assert not out["a"].requires_grad and not out["b"][0].requires_grad and out["b"][1] == 3
    assert DetachedPrediction(stop_gradient=False)(y) is y
    assert DetachedPrediction().state_dict() == {}


def test_combined_score():
    dense = torch.tensor([2.0, 4.0], requires_grad=True)
    sparse = torch.tensor([6.0, 0.0])
    score = CombinedScore({"dense": 0.5, "sparse": 0.5})({"dense": dense, "sparse": sparse})
    torch.testing.assert_close(score, torch.tensor([4.0, 2.0]))
    assert not score.requires_grad
    assert CombinedScore({"dense": 1.0}, stop_gradient=False)({"dense": dense}).requires_grad
    with pytest.raises(ValueError, match="missing"):
        CombinedScore({"dense": 1.0, "sparse": 1.0})({"dense": dense})


def test_prediction_memory(tmp_path):
    memory = PredictionMemory(num_samples=4, num_classes=2)
    memory.update(torch.tensor([1, 3]), torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    torch.testing.assert_close(memory[torch.tensor([3, 1, 0])], torch.tensor([[0.5, 0.5], [0.25, 0.75], [0.0, 0.0]]))
    assert memory.filled.tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match="probs shape"):
        memory.update(torch.tensor([0]), torch.ones(2, 2))

    resumed = PredictionMemory(4, 2)
    resumed.load_state_dict(roundtrip(memory.state_dict(), tmp_path))
    torch.testing.assert_close(resumed.probs, memory.probs)
    assert resumed.filled.tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match="shape"):
        PredictionMemory(5, 2).load_state_dict(memory.state_dict())


def test_base_hooks_are_noops():
    signal = TeacherSignal()
    model = nn.Linear(1, 1)
    signal.on_step_end(model, 0)
    signal.on_epoch_end(model, 1)
    signal.on_eval(model, {})
    signal.load_state_dict({})
    with pytest.raises(ValueError, match="no state"):
        signal.load_state_dict({"x": 1})
