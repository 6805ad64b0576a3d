"""dataset-distill through the CLI: prep, both training stages, eval (both modes, references), export,
sample, generate (bit-exact with --fixed-seed), bad input as one-line errors, and exact resume after
SIGKILL in both stages (the pool model's draw included)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import assert_one_line_error, invoke, invoke_json, kill_mid_training, run_cli_subprocess, sets
from fixtures_dataset_distill import DD_TINY
from skdcli.dataset_distill.synth import idx_bytes, write_idx_split


def test_prep_bad_idx_is_one_line(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    images = torch.zeros(3, 28, 28, dtype=torch.uint8).numpy()
    write_idx_split(raw, "train", images, (torch.arange(3) % 10).numpy().astype("uint8"))
    write_idx_split(raw, "t10k", images, (torch.arange(3) % 10).numpy().astype("uint8"))
    (raw / "t10k-images-idx3-ubyte.gz").unlink()
    (raw / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images, 0x00000801))
    result = invoke("dataset-distill", "prep", "--source", "mnist", "--raw", raw, "--out", tmp_path / "out")
    assert_one_line_error(result, "t10k-images-idx3-ubyte", "wrong IDX magic number", exit_code=2)
    assert not (tmp_path / "out").exists()


def test_train_match_needs_stage1_weights(dataset_distill_data: Path, tmp_path: Path) -> None:
    result = invoke(
        "dataset-distill",
        "train",
        "--stage",
        "match",
        "--data",
        dataset_distill_data,
        "--run-dir",
        tmp_path / "r",
        "--max-steps",
        "1",
        *sets(*DD_TINY),
    )
    assert_one_line_error(result, "match.init", exit_code=2)
    result = invoke(
        "dataset-distill",
        "train",
        "--stage",
        "match",
        "--init",
        tmp_path / "missing",
        "--data",
        dataset_distill_data,
        "--run-dir",
        tmp_path / "r2",
        "--max-steps",
        "1",
        *sets(*DD_TINY),
    )
    assert_one_line_error(result, "missing", "stage-1 weights not found")


def test_both_stages_log_each_term(dataset_distill_cgan: Path, dataset_distill_run: Path) -> None:
    cgan = [json.loads(x) for x in (dataset_distill_cgan / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/g_adversarial", "loss/d_gp", "loss/d_wasserstein"} <= set(cgan[0]) and "loss/match_skd" not in cgan[0]
    rows = [json.loads(x) for x in (dataset_distill_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert {"loss/match_skd", "weight/skd", "weight/mse", "pool/online_ce", "pool/arch"} <= set(train[0])
    assert [r["step"] for r in train if "pool/draw" in r] == [1, 3]  # match.redraw_every_steps=2
    assert [r for r in rows if r["split"] == "eval"][-1]["dev_top1"] >= 0
    saved = json.loads((dataset_distill_run / "train_summary.json").read_text())
    assert saved["stage"] == "match" and saved["init"] == str(dataset_distill_cgan)


def test_baseline_is_dim_logit_matching(dataset_distill_data: Path, dataset_distill_cgan: Path, tmp_path: Path) -> None:
    out = invoke_json(
        "dataset-distill",
        "train",
        "--stage",
        "match",
        "--init",
        dataset_distill_cgan,
        "--baseline",
        "--data",
        dataset_distill_data,
        "--run-dir",
        tmp_path / "dim",
        "--max-steps",
        "1",
        *sets(*DD_TINY),
    )
    assert out["skd_weight"] == 0.0 and out["mse_weight"] == 0.01
    row = json.loads((tmp_path / "dim" / "metrics.jsonl").read_text().splitlines()[0])
    assert "loss/match_mse" in row and "loss/match_skd" not in row and row["weight/mse"] == pytest.approx(0.01)


def test_eval_names_both_modes_and_references(dataset_distill_run: Path) -> None:
    result = invoke_json(
        "dataset-distill",
        "eval",
        "--run-dir",
        dataset_distill_run,
        "--ipc",
        "1,2",
        "--arch",
        "convnet,resnet10",
        "--mode",
        "fixed,on_the_fly",
        "--references",
    )
    rows = {(r["system"], r["arch"], r["ipc"], r["mode"]) for r in result["rows"]}
    assert ("generator", "resnet10", 2, "on_the_fly") in rows and ("generator", "convnet", 1, "fixed") in rows
    assert ("random real", "convnet", 2, "fixed") in rows and (
        "full real",
        "resnet10",
        None,
        "full train split",
    ) in rows
    assert len(rows) == 2 * (4 + 2 + 1) and result["select"] == "last" and result["split"] == "test"
    assert all(len(r["top1"]) == 2 and 0 <= r["top1_mean"] <= 100 for r in result["rows"])
    assert json.loads((dataset_distill_run / "eval.json").read_text())["rows"] == result["rows"]
    bad = invoke("dataset-distill", "eval", "--run-dir", dataset_distill_run, "--arch", "vgg11")
    assert_one_line_error(bad, "--arch", "vgg11")


def test_export_and_sample_grid(dataset_distill_run: Path, tmp_path: Path) -> None:
    manifest = json.loads((dataset_distill_run / "export" / "manifest.json").read_text())
    assert manifest["task"] == "dataset-distill" and manifest["parity"]["max_abs_diff"] < 1e-5
    assert manifest["noise_dim"] == 32 and manifest["classes"][3] == "3"
    out = tmp_path / "grid.png"
    result = invoke(
        "dataset-distill",
        "sample",
        "--model",
        dataset_distill_run / "export",
        "--class",
        "3",
        "--n",
        "16",
        "--out",
        out,
    )
    assert result.exit_code == 0 and result.stdout.strip() == str(out)
    with Image.open(out) as img:
        assert img.mode == "L" and img.size == (4 * 65 + 1, 4 * 65 + 1)  # 4x4 grid of 8x8 images shown x8
    again = invoke("dataset-distill", "sample", "--model", dataset_distill_run / "export", "--class", "3", "--out", out)
    assert_one_line_error(again, "already exists")
    bad = invoke(
        "dataset-distill",
        "sample",
        "--model",
        dataset_distill_run / "export",
        "--class",
        "12",
        "--out",
        tmp_path / "x.png",
    )
    assert_one_line_error(bad, "--class 12 out of range")


def test_generate_fixed_seed_is_bit_identical(dataset_distill_run: Path, tmp_path: Path) -> None:
    args = ["dataset-distill", "generate", "--run-dir", dataset_distill_run, "--ipc", "3", "--fixed-seed", "7"]
    first = invoke_json(*args, "--out", tmp_path / "a")
    invoke_json(*args, "--out", tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".png"]) == 30
    for name in files:
        if name.name != "generate.json":  # it records the wall-clock speed
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    tensors = load_file(tmp_path / "a" / "images.safetensors")
    assert tensors["images"].shape == (30, 1, 8, 8) and tensors["labels"].tolist() == [
        c for c in range(10) for _ in range(3)
    ]
    with Image.open(tmp_path / "a" / "3" / "000009.png") as img:  # the PNGs hold the tensor file's pixels
        assert torch.equal(torch.from_numpy(np.asarray(img).copy()), tensors["images"][9, 0])
    fresh = invoke_json(
        "dataset-distill", "generate", "--run-dir", dataset_distill_run, "--ipc", "3", "--out", tmp_path / "c"
    )
    assert fresh["fixed_seed"] is False and fresh["images_sha256"] != first["images_sha256"]
    refused = invoke(*args, "--out", tmp_path / "a")
    assert_one_line_error(refused, "already exists; pass --overwrite")


# -- exact resume after SIGKILL, both stages ----------------------------------------------------------------------
STEPS = 9


def _kill_mid_run(args: list[str], run_dir: Path) -> None:
    # wait for the 2nd checkpoint, then land inside the following steps
    kill_mid_training(
        "skdcli.dataset_distill.task:DistillTask",
        args,
        run_dir / "checkpoints" / "step_00000004",
        delay=0.15,
        settle=0.2,
    )
    assert not (run_dir / "train_summary.json").exists()


def _final_state(run_dir: Path) -> tuple[dict, dict]:
    ckpt = run_dir / "checkpoints" / f"step_{STEPS:08d}"
    return load_file(ckpt / "model.safetensors"), torch.load(ckpt / "state.pt", weights_only=True)["teachers"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["cgan", "match"])
def test_sigkill_then_resume_is_bit_identical(
    stage: str, dataset_distill_data: Path, dataset_distill_cgan: Path, tmp_path: Path
) -> None:
    common = [
        "dataset-distill",
        "train",
        "--stage",
        stage,
        "--data",
        str(dataset_distill_data),
        "--max-steps",
        str(STEPS),
        "--checkpoint-every",
        "2",
        *sets(*DD_TINY, "train.keep_checkpoints=20", "match.redraw_every_steps=3"),
    ]
    if stage == "match":
        common += ["--init", str(dataset_distill_cgan)]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = run_cli_subprocess(*common, "--run-dir", straight)
    assert done.returncode == 0, done.stderr
    _kill_mid_run([*common, "--run-dir", str(killed)], killed)
    resumed = run_cli_subprocess("dataset-distill", "train", "--run-dir", killed, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed_from"] >= 4
    (w1, t1), (w2, t2) = _final_state(straight), _final_state(killed)
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    if stage == "match":  # the pool model: same draw (architecture, weights, SGD momentum)
        assert t1["pool"]["arch"] == t2["pool"]["arch"] and t1["pool"]["draw_index"] == t2["pool"]["draw_index"] == 2
        assert all(torch.equal(t1["pool"]["model"][k], t2["pool"]["model"][k]) for k in t1["pool"]["model"])
    losses = [
        [
            (r["step"], r["loss"])
            for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
            if r["split"] == "train"
        ]
        for d in (straight, killed)
    ]
    assert losses[0] == losses[1]
