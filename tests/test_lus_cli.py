"""`skd lus` through the CLI on generated data in the real formats (and the real POCUS clips): prep from every
source with its bad inputs, pretrain (DINO, --init from timm and Hugging Face checkpoints), train at frame level
(KNN sweep, linear probe, --finetune-backbone) and video level (every --aggregator, --baseline), eval, export,
score and bench. The shared checks (help, --json, refusing a finished run, --resume) are tests/test_contract.py's;
`run` is recipes/lus/smoke.yaml's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, invoke, invoke_json, sets
from fixtures_lus import LUS_TINY_DINO, LUS_TINY_VIDEO, LUS_TINY_VIT, PRETRAIN_GOLDEN
from skdcli.engine.rundir import RunDir

FIXTURES = Path(__file__).parent / "fixtures" / "lus"
POCUS = FIXTURES / "pocus"
REAL_MP4 = POCUS / "data" / "pocus_videos" / "linear" / "Pneu_prospective_file3.mp4"


def test_prep_every_source_and_its_errors(tmp_path: Path) -> None:
    from skdcli.lus.synth import write_video_folder

    pocus = invoke_json("lus", "prep", "--source", "pocus", "--raw", POCUS, "--out", tmp_path / "pocus", "--size", "16")
    assert pocus["source"] == "pocus" and pocus["clips"] == 2 and pocus["skipped"] == 1
    raw = write_video_folder(tmp_path / "videos", [("a.mp4", 0, "p1"), ("b.gif", 3, "p2")], size=24, seed=0)
    videos = invoke_json(
        "lus", "prep", "--source", "videos", "--raw", raw, "--out", tmp_path / "v", "--size", "16", "--fps", "10"
    )
    assert videos["clips"] == 2 and videos["fps"] == 10.0 and (tmp_path / "v" / "prep.json").is_file()
    mv = invoke_json(
        "lus", "prep", "--source", "synthetic", "--raw", tmp_path / "mv_raw", "--out", tmp_path / "mv", "--size", "16"
    )
    assert mv["clips"] == 72 and (tmp_path / "mv_raw" / "data" / "2_fold_validation" / "train1.csv").is_file()

    assert_one_line_error(
        invoke("lus", "prep", "--source", "dicom", "--raw", raw, "--out", tmp_path / "x"),
        "--source must be one of",
        "dicom",
    )
    assert_one_line_error(invoke("lus", "prep", "--source", "videos", "--out", tmp_path / "x"), "needs --raw")
    assert_one_line_error(
        invoke("lus", "prep", "--source", "videos", "--raw", raw, "--out", tmp_path / "v"),
        str(tmp_path / "v"),
        "already holds a prepared dataset",
        "--overwrite",
    )
    (raw / "labels.csv").write_text("file,label\na.mp4,0\ngone.mp4,1\n")
    assert_one_line_error(
        invoke("lus", "prep", "--source", "videos", "--raw", raw, "--out", tmp_path / "y"),
        "labels.csv",
        "line 3",
        "gone.mp4",
        "does not exist",
    )
    (raw / "labels.csv").write_text("file,label\na.mp4,4\n")
    assert_one_line_error(
        invoke("lus", "prep", "--source", "videos", "--raw", raw, "--out", tmp_path / "y"),
        "line 2",
        "not a LUS score 0-3",
    )


def test_pretrain_run_holds_teacher_centre_and_schedules(lus_pretrain: Path, lus_data: Path) -> None:
    summary = json.loads((lus_pretrain / "train_summary.json").read_text())
    assert summary["stage"] == "pretrain" and summary["init"] == "scratch" and summary["steps"] == 6
    state = RunDir.load_state(RunDir(lus_pretrain).latest_checkpoint())
    assert state["teachers"]["ema"]["num_updates"] == 6 and state["teachers"]["center"]["center"].shape == (1, 32)
    rows = [json.loads(line) for line in (lus_pretrain / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert [r["weight/teacher_temp"] for r in train[:4]] == pytest.approx([0.04, 0.04, 0.06, 0.06])  # 2 steps/epoch
    assert train[0]["weight/weight_decay"] == pytest.approx(0.1) and train[-1]["weight/weight_decay"] > 0.4
    assert [r["step"] for r in rows if r["split"] == "eval"] == [3, 6] and "knn_acc" in rows[-1]
    # a finished pretraining run is never replaced, and --resume refuses --init like any config change
    assert_one_line_error(
        invoke("lus", "pretrain", "--data", lus_data, "--run-dir", lus_pretrain),
        str(lus_pretrain),
        "finished run",
        "--overwrite",
    )
    assert_one_line_error(
        invoke("lus", "pretrain", "--run-dir", lus_pretrain, "--resume", "--init", "x.pth"), "--resume"
    )


def test_pretrain_golden_trajectory(lus_pretrain: Path) -> None:
    from test_golden_trajectories import TOLERANCE, logged_values

    logged = logged_values(lus_pretrain)
    assert PRETRAIN_GOLDEN
    for step, values in PRETRAIN_GOLDEN.items():
        assert set(logged[step]) == set(values)
        for key, value in values.items():
            assert logged[step][key] == pytest.approx(value, rel=TOLERANCE, abs=TOLERANCE), (step, key)


def _hf_vit(tmp_path: Path):
    """A tiny Hugging Face ViT (3-channel) saved as a model directory, and the model itself."""
    from transformers import ViTConfig as HFViTConfig
    from transformers import ViTModel

    torch.manual_seed(0)
    hf = ViTModel(
        HFViTConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=16,
            patch_size=4,
            num_channels=3,
            layer_norm_eps=1e-6,
            qkv_bias=True,
            hidden_act="gelu",
        ),
        add_pooling_layer=False,
    ).eval()
    hf.save_pretrained(tmp_path / "hf_vit")
    return hf, tmp_path / "hf_vit"


def test_checkpoints_load_exactly_timm_and_hugging_face(tmp_path: Path) -> None:
    """A 3-channel checkpoint is folded into the grey patch embedding exactly (grey frames repeated to 3 channels,
    as the official pipeline feeds them); Hugging Face names are mapped to timm / DINO names."""
    from safetensors.torch import save_file

    from skdcli.lus.config import ViTConfig
    from skdcli.lus.model import VisionTransformer, load_backbone_weights, read_checkpoint, vit_config_from_state

    hf, folder = _hf_vit(tmp_path)
    sd, head, extra = read_checkpoint(folder)
    ours = VisionTransformer(vit_config_from_state(sd, extra))
    load_backbone_weights(ours, sd, folder)
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        expected = hf(pixel_values=x.repeat(1, 3, 1, 1)).last_hidden_state[:, 0]
        assert torch.allclose(ours.eval()(x), expected, atol=1e-5)
    # the same weights as a timm / DINO file (3-channel patch embedding, `module.` and `backbone.` prefixes)
    timm = {
        f"module.backbone.{k}": v.repeat(1, 3, 1, 1) / 3 if k == "patch_embed.proj.weight" else v
        for k, v in ours.state_dict().items()
    }
    save_file(timm, str(tmp_path / "timm.safetensors"))
    sd2, _, _ = read_checkpoint(tmp_path / "timm.safetensors")
    again = VisionTransformer(vit_config_from_state(sd2, {}, num_heads=2))
    load_backbone_weights(again, sd2, "timm.safetensors")
    with torch.no_grad():
        assert torch.allclose(again.eval()(x), expected, atol=1e-5)
    conv = VisionTransformer(ViTConfig(img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2, stem="conv"))
    with pytest.raises(Exception, match="patch stem"):
        load_backbone_weights(conv, sd2, "timm.safetensors")


def test_pretrain_init_from_a_checkpoint_and_bad_init(tmp_path: Path, lus_data: Path) -> None:
    hf, folder = _hf_vit(tmp_path)
    run = tmp_path / "pre"
    summary = invoke_json(
        "lus",
        "pretrain",
        "--data",
        lus_data,
        "--run-dir",
        run,
        "--init",
        folder,
        "--max-steps",
        "1",
        *sets(*LUS_TINY_DINO, "model.mlp_ratio=2.0"),
    )
    assert summary["init"] == str(folder)
    assert_one_line_error(
        invoke(
            "lus",
            "pretrain",
            "--data",
            lus_data,
            "--run-dir",
            tmp_path / "bad",
            "--init",
            tmp_path / "none.pth",
            *sets(*LUS_TINY_DINO),
        ),
        "none.pth",
        "checkpoint not found",
    )
    torch.save({"weight": torch.zeros(2)}, tmp_path / "notvit.pth")
    assert_one_line_error(
        invoke(
            "lus",
            "pretrain",
            "--data",
            lus_data,
            "--run-dir",
            tmp_path / "bad2",
            "--init",
            tmp_path / "notvit.pth",
            *sets(*LUS_TINY_DINO),
        ),
        "notvit.pth",
        "not a ViT checkpoint",
    )


def test_frame_level_knn_linear_probe_and_finetune(tmp_path: Path, lus_data: Path, lus_pretrain: Path) -> None:
    linear = tmp_path / "linear"
    summary = invoke_json(
        "lus",
        "train",
        "--data",
        lus_data,
        "--run-dir",
        linear,
        "--level",
        "frame",
        "--fold",
        "2",
        "--backbone",
        lus_pretrain,
        "--max-steps",
        "4",
        *sets(*LUS_TINY_VIT, "train.log_every=1"),
    )
    assert summary["level"] == "frame" and summary["fold"] == 2 and summary["method"] == "linear"
    ev = invoke_json("lus", "eval", "--run-dir", linear)
    assert ev["reported_fold"] == 1 and ev["backbone"] == "pretrain" and 0 <= ev["accuracy"] <= 1
    knn = ev["knn"]
    assert len(knn["sweep"]) == 19 and knn["selected_on"] == "train_fold" and 1 <= knn["k"] <= 19
    assert knn["sweep"][knn["k"] - 1]["accuracy"] == pytest.approx(knn["accuracy"], abs=1e-4)
    assert knn["max_over_k"]["accuracy"] >= knn["accuracy"] - 1e-4  # the official max over k is optimistic
    assert (linear / "eval.json").is_file()

    tuned = tmp_path / "finetune"
    summary = invoke_json(
        "lus",
        "train",
        "--data",
        lus_data,
        "--run-dir",
        tuned,
        "--level",
        "frame",
        "--backbone",
        lus_pretrain,
        "--finetune-backbone",
        "--max-steps",
        "2",
        *sets(*LUS_TINY_VIT, "train.batch_size=4"),
    )
    assert summary["method"] == "finetune"
    exported = invoke_json("lus", "export", "--run-dir", tuned)
    assert exported["level"] == "frame" and exported["parity_max_abs_diff"] < 1e-4
    assert_one_line_error(invoke("lus", "train", "--run-dir", tuned, "--resume", "--finetune-backbone"), "--resume")
    assert_one_line_error(
        invoke("lus", "score", "--model", exported["export_dir"], "--video", REAL_MP4, "--out", tmp_path / "s"),
        "frame-level export",
    )
    assert_one_line_error(
        invoke(
            "lus",
            "train",
            "--data",
            lus_data,
            "--run-dir",
            tmp_path / "bad",
            "--level",
            "video",
            "--finetune-backbone",
            *sets(*LUS_TINY_VIT),
        ),
        "--finetune-backbone is for --level frame",
    )


def test_video_aggregators_and_baseline(tmp_path: Path, lus_data: Path, lus_pretrain: Path) -> None:
    for aggregator in ("netvlad", "mean"):
        run = tmp_path / aggregator
        invoke_json(
            "lus",
            "train",
            "--data",
            lus_data,
            "--run-dir",
            run,
            "--aggregator",
            aggregator,
            "--backbone",
            lus_pretrain,
            "--max-steps",
            "3",
            *sets(*LUS_TINY_VIDEO),
        )
        ev = invoke_json("lus", "eval", "--run-dir", run)
        assert ev["aggregator"] == aggregator and ev["level"] == "video" and ev["n"] == 36
        if aggregator == "mean":
            assert ev["beta_max_mean"] == pytest.approx(1 / 4)  # uniform frame weights over seq_len = 4
    baseline = invoke_json(
        "lus",
        "train",
        "--data",
        lus_data,
        "--run-dir",
        tmp_path / "random",
        "--baseline",
        "--backbone",
        lus_pretrain,
        "--max-steps",
        "2",
        *sets(*LUS_TINY_VIDEO),
    )
    assert baseline["backbone"] == lus_pretrain.as_posix() or baseline["backbone"] == str(lus_pretrain)
    random = invoke_json(
        "lus",
        "train",
        "--data",
        lus_data,
        "--run-dir",
        tmp_path / "random2",
        "--baseline",
        "--max-steps",
        "2",
        *sets(*LUS_TINY_VIDEO),
    )
    assert random["backbone"] == "random init"


def test_eval_table_and_video_run(lus_run: Path) -> None:
    shown = invoke("lus", "eval", "--run-dir", lus_run)
    assert shown.exit_code == 0 and "dual_vlad" in shown.stderr and "weighted F1" in shown.stderr
    ev = json.loads((lus_run / "eval.json").read_text())
    assert ev["aggregator"] == "dual_vlad" and ev["train_fold"] == 1 and ev["reported_fold"] == 2
    assert sum(map(sum, ev["confusion"])) == ev["n"] == 36 and 1 / 4 <= ev["beta_max_mean"] <= 1


def test_score_videos_with_the_export_alone(tmp_path: Path, lus_export: Path) -> None:
    from skdcli.lus.synth import write_video_folder

    clips = write_video_folder(tmp_path / "clips", [("severe.mp4", 3, "p")], size=32, seed=5)
    out = tmp_path / "scores"
    shown = invoke(
        "lus", "score", "--model", lus_export, "--video", clips / "severe.mp4", "--video", REAL_MP4, "--out", out
    )
    assert shown.exit_code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(clips / "severe.mp4") + "\t")
    video, severity, *probs = lines[1].split("\t")
    assert video == str(REAL_MP4) and severity in ("score 0", "score 1-2", "score 3")
    assert [p.split("=")[0] for p in probs] == ["p(score 0)", "p(score 1-2)", "p(score 3)"]
    assert sum(float(p.split("=")[1]) for p in probs) == pytest.approx(1, abs=1e-3)
    for stem in ("severe", REAL_MP4.stem):
        for suffix in ("_frame_weights.png", "_attention.png", ".json"):
            assert (out / f"{stem}{suffix}").is_file()
    scored = json.loads((out / "severe.json").read_text())
    assert len(scored["beta"]) == 4 and sum(scored["beta"]) == pytest.approx(1, abs=1e-3)
    assert scored["top_frames"][0] == scored["sampled_frames"][int(np.argmax(scored["beta"]))]

    again = invoke("lus", "score", "--model", lus_export, "--video", clips / "severe.mp4", "--out", out)
    assert_one_line_error(again, str(out), "already holds the score of severe.mp4", "--overwrite")
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video" * 4)
    assert_one_line_error(
        invoke("lus", "score", "--model", lus_export, "--video", tmp_path / "broken.mp4", "--out", out),
        "broken.mp4",
        "cannot decode",
    )
    assert_one_line_error(
        invoke("lus", "score", "--model", lus_export, "--video", tmp_path / "none.mp4", "--out", out),
        "none.mp4",
        "video not found",
    )


def test_bench(lus_data: Path) -> None:
    result = invoke_json(
        "bench", "lus", "--data", lus_data, "--steps", "2", "--rounds", "1", "--device", "cpu", *sets(*LUS_TINY_DINO)
    )
    assert result["task"] == "lus" and result["engine_over_hand"] > 0 and result["crops_per_image"] == 4
    assert result["dino_over_supervised_same_crops"] > 0 and result["timed_steps"]["engine"] == 2
    decode = result["decode"]
    assert decode["frames"] == decode["frames_kept"] > 0 and decode["skd_over_pyav"] > 0


# A stand-in for `skd` (the way tests/test_recipes_common_sh.py tests common.sh): logs its arguments; `pretrain` and
# `train` leave a finished run, `eval` prints a JSON result (a frame run's with its KNN).
STUB = """#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
args=("$@")
for ((i = 0; i < $#; i++)); do [[ ${args[i]} == --run-dir ]] && rd=${args[i+1]}; done
case "$2" in
  pretrain|train) mkdir -p "$rd"; touch "$rd/config.yaml"; echo '{}' > "$rd/train_summary.json" ;;
  eval) if [[ $rd == *frame* ]]; then
          echo '{"accuracy": 0.8, "weighted_f1": 0.7, "auc": 0.9, "knn": {"accuracy": 0.6, "weighted_f1": 0.5,'\
               '"auc": 0.7, "max_over_k": {"accuracy": 0.65}}}'
        else echo '{"accuracy": 0.75, "weighted_f1": 0.7, "auc": 0.85}'; fi ;;
esac
"""


def test_run_sh_two_fold_protocol_with_a_stub_skd(tmp_path: Path) -> None:
    import os
    import subprocess

    from conftest import REPO

    skd = tmp_path / "bin" / "skd"
    skd.parent.mkdir()
    skd.write_text(STUB)
    skd.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    (data / "prep.json").write_text("{}")
    env = {**os.environ, "SKD": str(skd), "STUB_LOG": str(tmp_path / "calls.log")}
    runs = tmp_path / "runs"
    result = subprocess.run(
        [
            "bash",
            str(REPO / "recipes" / "lus" / "run.sh"),
            "--stage",
            "1",
            "--stop-stage",
            "4",
            "--data",
            str(data),
            "--runs",
            str(runs),
            "--init",
            str(tmp_path / "dino_s8.pth"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0].startswith("lus pretrain --config recipes/lus/dino.yaml") and "--init" in calls[0]
    trains = [c for c in calls if c.startswith("lus train")]
    assert len(trains) == 14  # 7 systems x 2 folds
    assert sum("--config recipes/lus/video.yaml" in c and "--level video" in c for c in trains) == 8
    assert any("--finetune-backbone" in c and "--fold 2" in c for c in trains)
    assert all(("dino_s8.pth" in c) == ("_imnet_" in c) for c in trains)  # ImageNet-only systems: the checkpoint
    assert len(list((runs / "results").glob("*.json"))) == 14
    assert "frame: KNN (k on train fold)" in result.stdout and "82.47" in result.stdout
