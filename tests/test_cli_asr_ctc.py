"""Every asr-ctc stage through the CLI, on generated data: outputs, the --json contract, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_one_line_error, invoke, invoke_json, sets
from fixtures_asr_ctc import TINY_MODEL

FIXTURE = Path(__file__).parent / "fixtures" / "librispeech" / "LibriSpeech" / "dev-clean-2"


def test_top_level_help_and_version() -> None:
    top = invoke("--help")
    assert top.exit_code == 0
    for name in ("asr-ctc", "env", "bench"):
        assert name in top.stdout
    version = invoke("--version")
    assert version.exit_code == 0 and version.stdout.startswith("skd ")


def test_env_json() -> None:
    info = invoke_json("env")
    assert info["torch"] == torch.__version__
    assert info["torch_threads"] >= 1 and "cuda_available" in info


def test_prep_real_librispeech_fixture(tmp_path: Path) -> None:
    out = tmp_path / "ls"
    result = invoke_json("asr-ctc", "prep", "--source", "librispeech", "--raw", FIXTURE, "--out", out)
    assert result["counts"]["train"] + result["counts"]["dev"] == 3
    assert (out / "prep.json").is_file() and (out / "tokenizer" / "tokenizer.json").is_file()
    again = invoke("asr-ctc", "prep", "--source", "librispeech", "--raw", FIXTURE, "--out", out)
    assert_one_line_error(again, str(out), "--overwrite")


def test_prep_errors_are_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(
        invoke("asr-ctc", "prep", "--source", "librispeech", "--raw", empty, "--out", tmp_path / "o"), str(empty)
    )
    assert_one_line_error(invoke("asr-ctc", "prep", "--source", "librispeech", "--out", tmp_path / "o"), "--raw")


def test_train_writes_the_run_directory(asr_ctc_run: Path) -> None:
    for name in (
        "config.yaml",
        "provenance.json",
        "metrics.jsonl",
        "train_summary.json",
        "plots/loss.png",
        "checkpoints/latest.json",
        "checkpoints/best/model.safetensors",
    ):
        assert (asr_ctc_run / name).exists(), name
    prov = json.loads((asr_ctc_run / "provenance.json").read_text())
    assert prov["seed"] == 0 and prov["data_fingerprint"] and prov["command"].endswith("asr-ctc train")
    assert prov["options"]["max_steps"] == 6 and prov["torch"] == torch.__version__
    ckpt = asr_ctc_run / "checkpoints" / "step_00000006"
    state = torch.load(ckpt / "state.pt", weights_only=True)  # no pickle needed
    assert state["step"] == 6 and "optimizer" in state and "rng" in state and state["data"]["epoch"] >= 1
    weights = load_file(ckpt / "model.safetensors")
    assert any(k.startswith("student_head") for k in weights)
    rows = [json.loads(x) for x in (asr_ctc_run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "loss/ctc_teacher", "loss/ctc_student", "loss/kd", "weight/alpha", "lr"} <= set(train_rows[0])
    assert [r["step"] for r in rows if r["split"] == "eval"] == [3, 6]
    config = (asr_ctc_run / "config.yaml").read_text()
    assert "student_layer: 1" in config and "temperature: 1.0" in config  # resolved, whole config


def test_a_bad_yaml_key_and_missing_data_are_named(tiny_corpus: Path, tmp_path: Path) -> None:
    # (the rest of the contract: tests/test_contract.py)
    bad_key = invoke("asr-ctc", "train", "--data", tiny_corpus, "--run-dir", tmp_path / "r", *sets("train.lrr=1"))
    assert_one_line_error(bad_key, "unknown config key 'train.lrr'", "lr")  # the valid keys are listed
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model:\n  d_modle: 3\n")
    assert_one_line_error(
        invoke("asr-ctc", "train", "--data", tiny_corpus, "--run-dir", tmp_path / "r", "--config", bad_yaml),
        str(bad_yaml),
        "model.d_modle",
    )
    no_data = invoke("asr-ctc", "train", "--data", tmp_path / "nope", "--run-dir", tmp_path / "r")
    assert_one_line_error(no_data, str(tmp_path / "nope"))
    assert not (tmp_path / "r" / "config.yaml").exists()


def test_eval_and_missing_run_dir(asr_ctc_run: Path, tmp_path: Path) -> None:
    result = invoke_json("asr-ctc", "eval", "--run-dir", asr_ctc_run)
    assert result["split"] == "test" and result["utterances"] == 8
    for key in ("wer", "cer", "wer_teacher", "wer_student", "cer_student"):
        assert 0.0 <= result[key] <= 5.0
    assert 0.0 <= result["spike_timing"]["mean_overlap"] <= 1.0
    assert Path(result["posterior_plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((asr_ctc_run / "eval.json").read_text())["wer"] == result["wer"]
    beam = invoke_json("asr-ctc", "eval", "--run-dir", asr_ctc_run, "--split", "dev", "--beam-size", "4")
    assert beam["decoder"] == "beam4" and beam["split"] == "dev"
    missing = invoke("asr-ctc", "eval", "--run-dir", tmp_path / "no-run")
    assert_one_line_error(missing, str(tmp_path / "no-run"), "not found")


def test_export_and_transcribe_with_the_artifact_alone(asr_ctc_run: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = invoke_json("asr-ctc", "export", "--run-dir", asr_ctc_run, "--out", out)
    assert result["head"] == "student" and result["layers"] == 1
    assert result["parity_max_abs_diff"] < 1e-4
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["features"]["kind"] == "fbank" and manifest["files"]["model.pt2"]
    assert {"model.pt2", "model.safetensors", "manifest.json"} <= {p.name for p in out.iterdir()}
    assert_one_line_error(invoke("asr-ctc", "export", "--run-dir", asr_ctc_run, "--out", out), "--overwrite")

    # Move the export away from everything else: it must work on its own.
    alone = tmp_path / "elsewhere" / "model"
    shutil.copytree(out, alone)
    test_rows = [json.loads(x) for x in (tiny_corpus / "test.jsonl").read_text().splitlines()]
    files = [r["audio"] for r in test_rows[:2]]
    transcripts = invoke_json("asr-ctc", "transcribe", "--model", alone / "model.pt2", *files)["transcripts"]
    assert [t["file"] for t in transcripts] == files
    # The artifact decodes exactly what the training code decodes for the same utterances.
    evaluated = invoke_json("asr-ctc", "eval", "--run-dir", asr_ctc_run, "--split", "test")
    assert [t["text"] for t in transcripts] == [e["hyp"] for e in evaluated["examples"][:2]]
    bad = invoke("asr-ctc", "transcribe", "--model", tmp_path, files[0])
    assert_one_line_error(bad, "manifest.json")


def test_baseline_and_interctc_variants(tiny_corpus: Path, tmp_path: Path) -> None:
    base = invoke_json(
        "asr-ctc",
        "train",
        "--data",
        tiny_corpus,
        "--run-dir",
        tmp_path / "base",
        "--baseline",
        "--max-steps",
        "2",
        *sets(*TINY_MODEL),
    )
    assert base["kd_method"] == "ctc"
    weights = load_file(tmp_path / "base" / "checkpoints" / "step_00000002" / "model.safetensors")
    assert not any(k.startswith("student_head") for k in weights)
    evaluated = invoke_json("asr-ctc", "eval", "--run-dir", tmp_path / "base")
    assert evaluated["head"] == "teacher" and "wer_student" not in evaluated
    inter = invoke_json(
        "asr-ctc",
        "train",
        "--data",
        tiny_corpus,
        "--run-dir",
        tmp_path / "inter",
        "--max-steps",
        "2",
        *sets(*TINY_MODEL, "kd.method=interctc"),
    )
    rows = [json.loads(x) for x in (tmp_path / "inter" / "metrics.jsonl").read_text().splitlines()]
    assert "loss/ctc_student" in rows[0] and "loss/kd" not in rows[0]
    assert inter["kd_method"] == "interctc"


def test_non_finite_loss_stops_cleanly_and_keeps_last_good_checkpoint(
    tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skdcli.asr_ctc import recipe

    original = recipe.AsrCtcTask.compute_loss

    def poisoned(self, model, batch, progress):
        loss, logs = original(self, model, batch, progress)
        return (loss * float("nan") if progress.step == 4 else loss), logs

    monkeypatch.setattr(recipe.AsrCtcTask, "compute_loss", poisoned)
    run_dir = tmp_path / "nan"
    result = invoke(
        "asr-ctc",
        "train",
        "--data",
        tiny_corpus,
        "--run-dir",
        run_dir,
        "--max-steps",
        "8",
        *sets(*TINY_MODEL, "train.checkpoint_every=2", "train.eval_every=0"),
    )
    assert result.exit_code == 3
    assert_one_line_error(result, "non-finite loss", "step 5", "step_00000004")
    weights = load_file(run_dir / "checkpoints" / "step_00000004" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (run_dir / "train_summary.json").exists()


def test_resume_needs_a_run_and_extends_a_finished_one(asr_ctc_run: Path, tmp_path: Path) -> None:
    missing = invoke("asr-ctc", "train", "--run-dir", tmp_path / "none", "--resume")
    assert_one_line_error(missing, str(tmp_path / "none"))
    run = tmp_path / "copy"
    shutil.copytree(asr_ctc_run, run)
    extended = invoke_json("asr-ctc", "train", "--run-dir", run, "--resume", "--max-steps", "8")
    assert extended["resumed_from"] == 6 and extended["steps"] == 8
    steps = [
        json.loads(x)["step"]
        for x in (run / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["split"] == "train"
    ]
    assert steps == list(range(1, 9))


def test_bench_reports_ratios(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = invoke_json(
        "bench", "asr-ctc", "--data", tiny_corpus, "--steps", "3", "--rounds", "1", "--out", out, *sets(*TINY_MODEL)
    )
    assert result["engine_over_hand"] > 0 and result["skd_over_baseline"] > 0
    assert result["timed_steps"] == {"hand": 3, "engine": 3, "engine_baseline": 3}
    assert json.loads(out.read_text()) == result


def test_amp_bf16_path_runs_on_cpu_and_fp16_needs_cuda(tiny_corpus: Path, tmp_path: Path) -> None:
    # The autocast code path that CUDA uses, exercised with CPU bf16 autocast.
    result = invoke_json(
        "asr-ctc",
        "train",
        "--data",
        tiny_corpus,
        "--run-dir",
        tmp_path / "bf16",
        "--max-steps",
        "2",
        "--device",
        "cpu",
        *sets(*TINY_MODEL, "train.amp=bf16"),
    )
    assert result["steps"] == 2 and result["final_loss"] == result["final_loss"]  # finite, not NaN
    fp16 = invoke(
        "asr-ctc",
        "train",
        "--data",
        tiny_corpus,
        "--run-dir",
        tmp_path / "fp16",
        "--device",
        "cpu",
        *sets(*TINY_MODEL, "train.amp=fp16"),
    )
    assert_one_line_error(fp16, "fp16", "cuda")
    no_gpu = invoke("asr-ctc", "train", "--data", tiny_corpus, "--run-dir", tmp_path / "gpu", "--device", "cuda")
    if not torch.cuda.is_available():
        assert_one_line_error(no_gpu, "CUDA")


def test_run_takes_a_config_and_refuses_a_finished_run(tiny_corpus: Path, tmp_path: Path) -> None:
    config = Path(__file__).resolve().parent.parent / "recipes" / "asr_ctc" / "tiny.yaml"
    args = [
        "asr-ctc",
        "run",
        "--run-dir",
        tmp_path / "r",
        "--data",
        tiny_corpus,
        "--config",
        config,
        "--max-steps",
        "2",
        *sets(*TINY_MODEL, "model.conv_channels=4"),
    ]
    result = invoke_json(*args)
    assert result["steps"] == 2 and Path(result["export_dir"], "model.pt2").is_file()
    assert "conv_channels: 4" in (tmp_path / "r" / "config.yaml").read_text()
    assert_one_line_error(invoke(*args), "--overwrite")
    assert invoke_json(*args, "--overwrite")["steps"] == 2


def test_prep_from_a_manifest_tsv(tmp_path: Path) -> None:
    lines = (FIXTURE / "3752" / "4944" / "3752-4944.trans.txt").read_text().splitlines()
    rows = ["audio\ttext"] + [
        f"{FIXTURE / '3752' / '4944' / (line.split()[0] + '.flac')}\t{line.split(' ', 1)[1]}" for line in lines
    ]
    rows.append(f"{tmp_path / 'missing.flac'}\tHELLO")  # unreadable: skipped, listed with the reason
    manifest = tmp_path / "m.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    result = invoke_json("asr-ctc", "prep", "--source", "manifest", "--raw", manifest, "--out", tmp_path / "p")
    assert result["counts"]["train"] + result["counts"]["dev"] == 3 and result["skipped"] == 1
    skipped = [json.loads(x) for x in (tmp_path / "p" / "skipped.jsonl").read_text().splitlines()]
    assert skipped[0]["path"].endswith("missing.flac") and skipped[0]["reason"]
    assert json.loads((tmp_path / "p" / "tokenizer" / "tokenizer.json").read_text())["kind"] == "char"
