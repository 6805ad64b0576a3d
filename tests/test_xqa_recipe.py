"""The xqa Task on the engine: generations (teacher = student at each epoch end, optimizer and LR
schedule not reset), the frozen-teacher switch, the logged loss terms and the coefficient, the
teacher forward under inference_mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import invoke_json, sets
from fixtures_xqa import XQA_TRAIN
from skdcli.engine.config import build_config
from skdcli.engine.rundir import RunDir
from skdcli.engine.schedules import Progress
from skdcli.xqa.config import XqaConfig
from skdcli.xqa.recipe import XqaHooks


def checkpoints(run_dir: Path) -> dict[int, Path]:
    return {int(p.name.split("_")[1]): p for p in sorted((run_dir / "checkpoints").glob("step_*"))}


def teacher_state(ckpt: Path) -> dict:
    return RunDir.load_state(ckpt)["teachers"]["snapshot"]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def generations_run(xqa_data: Path, tmp_path_factory) -> tuple[Path, int]:
    run_dir = tmp_path_factory.mktemp("xqa_gen") / "run"
    summary = invoke_json(
        "xqa",
        "train",
        "--data",
        xqa_data,
        "--run-dir",
        run_dir,
        *sets(*XQA_TRAIN, "epochs=2", "train.checkpoint_every=1", "train.keep_checkpoints=100"),
    )
    per_epoch = summary["steps"] // 2
    assert summary["steps"] == 2 * per_epoch and per_epoch >= 3
    return run_dir, per_epoch


def test_teacher_is_the_student_of_the_last_epoch_end(generations_run, xqa_data: Path) -> None:
    run_dir, per_epoch = generations_run
    ckpts = checkpoints(run_dir)
    init = load_file(xqa_data / "init" / "model.safetensors")
    model_at = {step: load_file(p / "model.safetensors") for step, p in ckpts.items()}
    for step, ckpt in ckpts.items():
        state = teacher_state(ckpt)
        generation = step // per_epoch
        assert state["generation"] == generation and state["ready"]
        expected = init if generation == 0 else model_at[generation * per_epoch]
        assert same(state["model"], expected), f"teacher at step {step}"
    # within a generation the teacher is fixed while the student moves
    assert not same(model_at[per_epoch + 1], teacher_state(ckpts[per_epoch + 1])["model"])


def test_generations_keep_the_optimizer_and_the_lr_schedule(generations_run) -> None:
    run_dir, per_epoch = generations_run
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    lrs = [r["lr"] for r in train]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # one linear decay over both epochs, no restart
    state = RunDir.load_state(checkpoints(run_dir)[2 * per_epoch])
    assert max(int(s["step"]) for s in state["optimizer"]["state"].values()) == 2 * per_epoch
    assert [r["teacher/generation"] for r in train] == [float((r["step"] - 1) // per_epoch) for r in train]
    assert all(0.0 <= r["map_at_k"] <= 1.0 and r["weight/kl"] == r["map_at_k"] for r in train)
    assert {"loss/ce", "loss/kl", "loss/kl_start", "loss/kl_end", "weight/ce"} <= set(train[0])


def test_without_generations_the_initial_model_teaches_throughout(xqa_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "frozen"
    invoke_json(
        "xqa",
        "train",
        "--data",
        xqa_data,
        "--run-dir",
        run_dir,
        "--no-generations",
        *sets(*XQA_TRAIN, "epochs=2", "train.checkpoint_every=4", "train.keep_checkpoints=100"),
    )
    init = load_file(xqa_data / "init" / "model.safetensors")
    for ckpt in checkpoints(run_dir).values():
        state = teacher_state(ckpt)
        assert state["generation"] == 0 and same(state["model"], init)


def task_and_batch(xqa_data: Path, *sets: str):
    cfg = build_config(XqaConfig, None, [*XQA_TRAIN, *sets])
    task = XqaHooks().make_task(cfg, str(xqa_data))
    torch.manual_seed(0)
    model = task.build_model()
    task.teachers()  # the copy of the initial model, as the first training step makes it
    batch = task.collate([task.train_dataset()[i] for i in range(8)])
    return task, model, batch


def test_loss_terms_weights_and_switches(xqa_data: Path) -> None:
    progress = Progress(step=0, total_steps=10, epoch=1, total_epochs=1)
    task, model, batch = task_and_batch(xqa_data, "kd.map_coefficient=false")
    model.eval()  # no dropout: the teacher is an exact copy, so the KL is 0
    loss, logs = task.compute_loss(model, batch, progress)
    assert logs["loss/kl"].item() == pytest.approx(0.0, abs=1e-6) and logs["weight/kl"] == 1.0
    assert loss.item() == pytest.approx(logs["loss/ce"].item(), abs=1e-6)
    with torch.no_grad():  # move the student away from its teacher
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss, logs = task.compute_loss(model, batch, progress)
    assert logs["loss/kl"].item() > 0
    assert loss.item() == pytest.approx(logs["loss/ce"].item() + logs["loss/kl"].item(), rel=1e-5)

    task, model, batch = task_and_batch(xqa_data, "kd.ce=false")  # --no-ce, with the coefficient
    loss, logs = task.compute_loss(model, batch, progress)
    assert loss.item() == pytest.approx(logs["map_at_k"].item() * logs["loss/kl"].item(), rel=1e-5)

    task, model, batch = task_and_batch(xqa_data, "kd.method=ce")
    loss, logs = task.compute_loss(model, batch, progress)
    assert set(logs) == {"loss/ce"} and task.teachers() == {}


def test_official_masking_switch_changes_the_kl(xqa_data: Path) -> None:
    progress = Progress(step=0, total_steps=10, epoch=1, total_epochs=1)
    values = {}
    for mask in ("context", "none"):
        task, model, batch = task_and_batch(xqa_data, f"kd.mask={mask}")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
        values[mask] = task.compute_loss(model.eval(), batch, progress)[1]["loss/kl"].item()
    assert values["context"] != pytest.approx(values["none"])


def test_teacher_forward_runs_under_inference_mode(xqa_data: Path) -> None:
    task, model, batch = task_and_batch(xqa_data)
    seen = []
    teacher = task.teachers()["snapshot"].model
    forward = teacher.forward

    def spy(*args, **kwargs):
        seen.append(torch.is_inference_mode_enabled())
        return forward(*args, **kwargs)

    teacher.forward = spy
    loss, _ = task.compute_loss(model, batch, Progress(step=0, total_steps=1, epoch=1, total_epochs=1))
    loss.backward()  # the teacher's logits are usable in the student's graph
    assert seen == [True]
