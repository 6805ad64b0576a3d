"""Every sleep stage through the CLI on generated recordings in the real formats, the real
Sleep-EDF fixture, the --json contract, and each bad input the issue lists."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_one_line_error, invoke, invoke_json, sets
from fixtures_sleep import SLEEP_FIXTURES, SLEEP_TINY
from skdcli.sleep.data import PreparedSleep, prepare_dataset
from skdcli.sleep.formats import read_edf_hypnogram
from skdcli.sleep.sampling import supervised_shares
from skdcli.sleep.synth import write_shhs_like


def test_prep_shhs_layout_resamples_and_expands_xml(sleep_shhs: Path) -> None:
    info = json.loads((sleep_shhs / "prep.json").read_text())
    assert info["source"] == "shhs" and info["channel"] == "EEG" and info["fs"] == 100
    assert info["recordings"] == 4 and {r["native_fs"] for r in info["manifest"]} == {125.0}
    night = PreparedSleep(sleep_shhs).nights[0]
    assert np.asarray(night.x).shape == (len(night.y), 3000) and night.y.max() <= 4
    # robust normalisation over the whole recording: the night's median near 0, its IQR near 1.349
    q25, q50, q75 = np.percentile(np.asarray(night.x), [25, 50, 75])
    assert abs(q50) < 0.1 and 1.0 < q75 - q25 < 1.7 and info["normalisation"]["rule"] == "robust"
    assert "30 min" in info["trim_rule"] and "S3+S4" in info["label_map"]


def test_prep_sleep_edf_cli_subjects_and_incremental(sleep_raw, tmp_path: Path) -> None:
    out = tmp_path / "sedf"
    first = invoke_json(
        "sleep", "prep", "--source", "sleep-edf", "--raw", sleep_raw["sleep-edf"], "--out", out, "--subjects", "0"
    )
    assert first["recordings"] == 2 and first["reused"] == 0 and first["channel"] == "EEG Fpz-Cz"
    manifest = json.loads((out / "prep.json").read_text())["manifest"]
    assert [r["id"] for r in manifest] == ["SC4001E0", "SC4002E0"]
    assert all("past the PSG end" in r["notes"][0] for r in manifest)  # trailing "Sleep stage ?" cropped
    again = invoke("sleep", "prep", "--source", "sleep-edf", "--raw", sleep_raw["sleep-edf"], "--out", out)
    assert_one_line_error(again, str(out), "--overwrite")
    # adding subject 1: only its two nights are processed, subject 0's are reused
    wider = invoke_json(
        "sleep",
        "prep",
        "--source",
        "sleep-edf",
        "--raw",
        sleep_raw["sleep-edf"],
        "--out",
        out,
        "--subjects",
        "0-1",
        "--overwrite",
    )
    assert wider["recordings"] == 4 and wider["reused"] == 2


def test_prep_resumes_an_interrupted_run(sleep_raw, tmp_path: Path) -> None:
    out = tmp_path / "shhs"
    invoke_json("sleep", "prep", "--source", "shhs", "--raw", sleep_raw["shhs"], "--out", out)
    (out / "prep.json").unlink()  # as if killed before the end
    resumed = invoke_json("sleep", "prep", "--source", "shhs", "--raw", sleep_raw["shhs"], "--out", out)
    assert resumed["reused"] == 4


def test_prep_real_sleep_edf_fixture(tmp_path: Path) -> None:
    raw = SLEEP_FIXTURES / "sleep-cassette"
    # the 5-min excerpt is all wake: nothing to trim around, so the default skips it with a reason
    assert_one_line_error(
        invoke("sleep", "prep", "--source", "sleep-edf", "--raw", raw, "--out", tmp_path / "a"),
        "skipped",
        "--no-trim-wake",
    )
    result = invoke_json(
        "sleep", "prep", "--source", "sleep-edf", "--raw", raw, "--out", tmp_path / "b", "--no-trim-wake"
    )
    assert result["epochs"] == 10 and result["class_counts"]["W"] == 10
    row = json.loads((tmp_path / "b" / "prep.json").read_text())["manifest"][0]
    assert row["native_fs"] == 100.0 and "2870 epochs past the PSG end" in row["notes"][0]


def _pair(tmp_path: Path, name: str) -> Path:
    raw = tmp_path / name / "sleep-cassette"
    raw.mkdir(parents=True)
    for f in (SLEEP_FIXTURES / "sleep-cassette").iterdir():
        shutil.copy(f, raw / f.name)
    return raw


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    prep = lambda source, raw, *extra: invoke(
        "sleep", "prep", "--source", source, "--raw", raw, "--out", tmp_path / "out", "--no-trim-wake", *extra
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(prep("sleep-edf", empty), str(empty), "no recordings found")
    # an unknown source is named as such, with or without --raw
    assert_one_line_error(
        prep("shhs2", empty), "--source must be one of sleep-edf, shhs, synthetic, synthetic-sleep-edf, got 'shhs2'"
    )
    assert_one_line_error(
        invoke("sleep", "prep", "--source", "shhs2", "--out", tmp_path / "o"),
        "--source must be one of sleep-edf, shhs, synthetic, synthetic-sleep-edf, got 'shhs2'",
    )
    # a missing channel lists the channels present
    raw = _pair(tmp_path, "channel")
    assert_one_line_error(
        prep("sleep-edf", raw, "--channel", "EEG C4-A1"),
        "SC4001E0-PSG.edf",
        "channel 'EEG C4-A1' not found",
        "EEG Fpz-Cz, EEG Pz-Oz, EOG horizontal",
    )
    # truncated EDF
    raw = _pair(tmp_path, "cut")
    psg = raw / "SC4001E0-PSG.edf"
    psg.write_bytes(psg.read_bytes()[:120_000])
    assert_one_line_error(prep("sleep-edf", raw), str(psg), "truncated EDF")
    # a hypnogram that does not start with its PSG
    raw = _pair(tmp_path, "start")
    hyp = raw / "SC4001EC-Hypnogram.edf"
    data = hyp.read_bytes()
    hyp.write_bytes(data[:176] + b"16.14.00" + data[184:])  # header start time field
    assert_one_line_error(prep("sleep-edf", raw), str(hyp), "starts at 1989-04-24 16:14:00", "16:13:00")
    # mismatched sampling rates: a 100 Hz channel cannot feed a 200 Hz dataset
    raw = _pair(tmp_path, "rate")
    assert_one_line_error(prep("sleep-edf", raw, "--fs", "200"), "sampled at 100 Hz, below the dataset rate 200 Hz")


def test_bad_shhs_inputs(tmp_path: Path) -> None:
    """A bad night is skipped and listed with its reason (issue 15: prep of 5,793 SHHS nights must not
    abort on one); prep fails, naming the first reason, only when no night is left."""
    raw = write_shhs_like(tmp_path / "shhs", recordings=2, epochs=12, seed=5)
    out = tmp_path / "out"
    prep = lambda: invoke("sleep", "prep", "--source", "shhs", "--raw", raw, "--out", out, "--overwrite", "--json")

    def skipped_reason() -> str:
        result = prep()
        assert result.exit_code == 0 and json.loads(result.stdout)["recordings"] == 1, result.stderr
        assert "skipped 1 recording(s)" in " ".join(result.stderr.split())
        rows = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == ["shhs1-200001"]
        return rows[0]["reason"]

    xml = next(raw.rglob("*-nsrr.xml"))
    good = xml.read_text()
    xml.write_text(good.replace("Wake|0", "Wake|8", 1))
    assert str(xml) in skipped_reason() and "unknown sleep stage code 8" in skipped_reason()
    # a scoring shorter than its PSG (another night's file?)
    events = good.split("<ScoredEvent>")
    xml.write_text("<ScoredEvent>".join(events[:-1]) + "</ScoredEvents></PSGAnnotation>\n")
    reason = skipped_reason()
    assert str(xml) in reason and "covers" in reason and "wrong file pair" in reason
    xml.unlink()
    assert "no shhs1-200001-nsrr.xml" in skipped_reason()
    # every night bad: one line naming the first reason
    other = next(raw.rglob("*-profusion.xml"))
    other.write_text(other.read_text().replace("<SleepStage>", "<SleepStage>x", 1))
    assert_one_line_error(prep(), "all 2 recordings were skipped", "skipped.jsonl", str(other), "not an integer")


def test_train_writes_the_run_directory(sleep_run: Path) -> None:
    run = sleep_run
    for name in (
        "config.yaml",
        "provenance.json",
        "metrics.jsonl",
        "train_summary.json",
        "plots/loss.png",
        "checkpoints/latest.json",
        "checkpoints/best/model.safetensors",
    ):
        assert (run / name).exists(), name
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["kd_method"] == "skd" and summary["sampler"] == "selective" and summary["fs"] == 100
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "loss/ce", "loss/kd", "weight/kd", "lr"} <= set(train_rows[0])
    assert {"accuracy", "macro_f1", "kappa"} <= set(next(r for r in rows if r["split"] == "eval"))
    state = torch.load(run / "checkpoints" / "step_00000006" / "state.pt", weights_only=True)
    assert state["step"] == 6


def test_eval_dev_and_cross_dataset(sleep_run: Path, sleep_sedf: Path) -> None:
    dev = invoke_json("sleep", "eval", "--run-dir", sleep_run)
    assert dev["split"] == "dev" and dev["recordings"] == 1 and not dev["cross_dataset"]
    cross = invoke_json("sleep", "eval", "--run-dir", sleep_run, "--data", sleep_sedf, "--cross-dataset")
    assert cross["cross_dataset"] and cross["recordings"] == 4 and cross["test_source"] == "sleep-edf"
    assert 0 <= cross["accuracy"] <= 1 and set(cross["per_class_f1"]) == {"W", "N1", "N2", "N3", "REM"}
    assert np.array(cross["confusion"]).sum() == cross["epochs"]
    assert set(cross["priors"]) == {"train", "test_true", "test_predicted"}
    assert cross["priors"]["train"] != cross["priors"]["test_true"]  # the two sets' label bias differs
    assert (sleep_run / "eval_cross.json").is_file()
    assert_one_line_error(invoke("sleep", "eval", "--run-dir", sleep_run, "--cross-dataset"), "--data")


def test_eval_refuses_mismatched_rates(sleep_run: Path, sleep_raw, tmp_path: Path) -> None:
    out = tmp_path / "sedf50"
    invoke_json(
        "sleep",
        "prep",
        "--source",
        "sleep-edf",
        "--raw",
        sleep_raw["sleep-edf"],
        "--out",
        out,
        "--fs",
        "50",
        "--subjects",
        "0",
    )
    assert_one_line_error(
        invoke("sleep", "eval", "--run-dir", sleep_run, "--data", out, "--cross-dataset"),
        "mismatched sampling rates",
        "100 Hz",
        "50 Hz",
    )


def test_eval_refuses_another_normalisation(sleep_run: Path, sleep_raw, tmp_path: Path) -> None:
    out = tmp_path / "sedf_epoch"
    prepare_dataset("sleep-edf", sleep_raw["sleep-edf"], out, subjects="0", normalisation="epoch")
    assert_one_line_error(
        invoke("sleep", "eval", "--run-dir", sleep_run, "--data", out, "--cross-dataset"),
        "mismatched normalisation",
        "'robust'",
        "'epoch'",
    )


def test_export_and_score_with_the_export_alone(
    sleep_export: Path, sleep_raw, sleep_sedf: Path, tmp_path: Path
) -> None:
    manifest = json.loads((sleep_export / "manifest.json").read_text())
    assert manifest["task"] == "sleep" and manifest["fs"] == 100 and manifest["parity"]["max_abs_diff"] < 1e-4
    assert manifest["normalisation"]["rule"] == "robust" and manifest["trim_minutes"] == 30.0
    assert any(k.startswith("head") for k in load_file(sleep_export / "model.safetensors"))
    psg = sleep_raw["sleep-edf"] / "sleep-cassette" / "SC4001E0-PSG.edf"
    hyp = sleep_raw["sleep-edf"] / "sleep-cassette" / "SC4001EC-Hypnogram.edf"
    out = tmp_path / "night.csv"
    result = invoke_json(
        "sleep",
        "score",
        "--model",
        sleep_export,
        "--edf",
        psg,
        "--out",
        out,
        "--channel",
        "EEG Fpz-Cz",
        "--hypnogram",
        hyp,
    )
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == result["epochs"] and rows[1]["onset_s"] == "30"
    assert abs(sum(float(rows[0][f"p_{s}"]) for s in ("W", "N1", "N2", "N3", "REM")) - 1) < 1e-3
    back = read_edf_hypnogram(tmp_path / "night.edf")
    assert [("W", "N1", "N2", "N3", "REM")[v] for v in back.labels] == [r["stage"] for r in rows]
    assert (tmp_path / "night.png").stat().st_size > 1000 and "kappa" in result
    # metrics on eval's epochs (the prepared night's scored epochs) and on the whole night's
    row = next(r for r in json.loads((sleep_sedf / "prep.json").read_text())["manifest"] if r["id"] == "SC4001E0")
    assert result["scored_epochs"] == row["epochs"] and result["trimmed_span"][0] == row["first_epoch"]
    n_scored = int((read_edf_hypnogram(hyp).labels[: result["epochs"]] >= 0).sum())
    assert result["whole_night"]["scored_epochs"] == n_scored and result["normalisation"] == "robust"
    # sleep statistics of both hypnograms over the recording (time in bed = the recording)
    stats = result["sleep_statistics"]
    assert stats["predicted"]["tib_min"] == stats["true"]["tib_min"] == result["epochs"] / 2
    true_labels = read_edf_hypnogram(hyp).labels[: result["epochs"]]
    assert stats["true"]["minutes"]["REM"] == (true_labels == 4).sum() / 2
    assert sum(stats["predicted"]["minutes"].values()) == stats["predicted"]["tib_min"]
    assert_one_line_error(
        invoke("sleep", "score", "--model", sleep_export, "--edf", psg, "--out", out), str(out), "--overwrite"
    )
    assert_one_line_error(
        invoke("sleep", "score", "--model", sleep_export, "--edf", psg, "--out", tmp_path / "x.csv"),
        "channel 'EEG' not found",
    )  # SHHS channel name by default, no prefix match


def test_baseline_sampler_and_exact_resume(sleep_shhs: Path, tmp_path: Path) -> None:
    base = invoke_json(
        "sleep",
        "train",
        "--data",
        sleep_shhs,
        "--run-dir",
        tmp_path / "base",
        "--baseline",
        "--max-steps",
        "2",
        *sets(*SLEEP_TINY),
    )
    assert base["kd_method"] == "ce" and base["sampler"] == "random"
    bal = invoke_json(
        "sleep",
        "train",
        "--data",
        sleep_shhs,
        "--run-dir",
        tmp_path / "bal",
        "--baseline",
        "--sampler",
        "balanced",
        "--max-steps",
        "2",
        *sets(*SLEEP_TINY),
    )
    assert bal["kd_method"] == "ce" and bal["sampler"] == "balanced"
    # selective sampling + augment views resume bit-identically (the sampler hook is a pure function)
    # constant LR: the schedule must not depend on --max-steps for the 5-step run to be a prefix of the 8-step one
    common = ["--data", sleep_shhs, *sets(*SLEEP_TINY, "train.eval_every=0", "train.lr_schedule=constant")]
    invoke_json("sleep", "train", "--run-dir", tmp_path / "full", "--max-steps", "8", *common)
    invoke_json("sleep", "train", "--run-dir", tmp_path / "cut", "--max-steps", "5", "--checkpoint-every", "5", *common)
    resumed = invoke_json("sleep", "train", "--run-dir", tmp_path / "cut", "--resume", "--max-steps", "8")
    assert resumed["resumed_from"] == 5
    a = load_file(tmp_path / "full" / "checkpoints" / "step_00000008" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoints" / "step_00000008" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_repeats_report_mean_and_std(sleep_shhs: Path, sleep_sedf: Path, tmp_path: Path) -> None:
    result = invoke_json(
        "sleep",
        "train",
        "--data",
        sleep_shhs,
        "--run-dir",
        tmp_path / "rep",
        "--repeats",
        "3",
        "--eval-data",
        sleep_sedf,
        "--max-steps",
        "2",
        *sets(*SLEEP_TINY),
    )
    assert result["seeds"] == [0, 1, 2] and result["cross_dataset"]
    acc = result["accuracy"]
    assert acc["n"] == 3 and acc["std"] == pytest.approx(float(np.std(acc["values"], ddof=1)), abs=1e-4)
    assert (tmp_path / "rep" / "seed2" / "eval_cross.json").is_file() and (tmp_path / "rep" / "repeats.json").is_file()


def test_trainer_batches_come_from_the_recipe_sampler(sleep_shhs: Path, tmp_path: Path) -> None:
    from skdcli.engine.config import build_config
    from skdcli.engine.rundir import RunDir
    from skdcli.engine.trainer import Trainer
    from skdcli.sleep.config import SleepConfig
    from skdcli.sleep.recipe import SleepTask

    cfg = build_config(SleepConfig, None, [*SLEEP_TINY, "sampler.kind=balanced"])
    task = SleepTask(cfg, sleep_shhs)
    trainer = Trainer(task, cfg.train, RunDir(tmp_path / "r"), torch.device("cpu"), show_progress=False)
    trainer._build()
    trainer.sampler.set_epoch(2)
    order, data = list(trainer.sampler), task.train_set
    assert len(order) == len(data) // 10 * 10 and order == task.epoch_order(data, cfg.train.seed, 2, 10)
    # what the loss sees (every scored epoch of every window) is balanced over the stages
    shares = supervised_shares(data.epoch_labels, data.window_starts, data.seq_len, order)
    assert np.abs(shares - 0.2).max() < 0.03
