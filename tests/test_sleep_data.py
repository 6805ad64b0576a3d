"""Sleep data handling behind issue 15: unscored epochs inside a night (windows never jump over
them), the normalisation shared by prep and score, subject-wise splits and folds, the
memory-mapped store, skipped nights, --subjects FILE and the recorded channel fallback."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import torch

from skdcli.sleep.data import PreparedSleep, WindowDataset, prepare_dataset, scored_span
from skdcli.sleep.synth import _signal, _write_edf, night_eeg, nsrr_xml


def write_shhs_night(
    root: Path, rid: str, codes: list[int], channels: tuple[str, ...] = ("EEG(sec)", "EEG"), seed: int = 0
) -> Path:
    """One SHHS1-layout night with exactly these stage codes (SHHS: 0 W .. 5 REM, 6 movement, 9 unscored)."""
    rng = np.random.default_rng(seed)
    stages = np.asarray([{0: 0, 1: 1, 2: 2, 3: 3, 4: 3, 5: 4}.get(c, 0) for c in codes])
    eeg = night_eeg(stages, 125.0, rng, dataset="shhs")
    _write_edf(
        root / "polysomnography" / "edfs" / "shhs1" / f"{rid}.edf",
        [_signal(eeg, 125.0, ch) for ch in channels],
        dt.datetime(1985, 1, 1, 22, 0, 0),
    )
    xml = root / "polysomnography" / "annotations-events-nsrr" / "shhs1" / f"{rid}-nsrr.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.write_text(nsrr_xml(codes, len(codes) * 30.0), encoding="utf-8")
    return root


def test_scored_span_trims_wake_and_keeps_inner_unscored() -> None:
    y = np.array([-1, 0, 0, 0, 0, 1, 2, -1, -1, 2, 4, 0, 0, 0, -1])
    # 1 min of wake kept on each side of sleep (epochs 5..10): 3..12; edges shrink to scored epochs
    assert scored_span(y, trim_minutes=1.0) == (3, 12)
    assert scored_span(y, trim_minutes=0.0) == (1, 13)  # no trimming: first to last scored epoch
    assert scored_span(np.array([0, 0, -1]), 30.0) is None  # nothing to anchor the trimming to
    assert scored_span(np.array([-1, -1]), 0.0) is None


def test_prep_keeps_unscored_epochs_inside_the_night_as_masked_context(tmp_path: Path) -> None:
    # SHHS codes: movement (6) and unscored (9) in the middle of the night, unscored at the end
    codes = [0, 0, 1, 2, 6, 9, 2, 3, 4, 5, 0, 9]
    raw = write_shhs_night(tmp_path / "raw", "shhs1-200001", codes)
    prepare_dataset("shhs", raw, tmp_path / "prep", trim_wake=False)
    night = PreparedSleep(tmp_path / "prep").nights[0]
    # the night is the contiguous span 0..10: the two inner epochs stay (label -1), the trailing 9 goes
    assert night.y.tolist() == [0, 0, 1, 2, -1, -1, 2, 3, 3, 4, 0]
    assert len(night.x) == 11
    row = PreparedSleep(tmp_path / "prep").info["manifest"][0]
    assert row["epochs"] == 9 and row["unscored_in_span"] == 2 and row["first_epoch"] == 0
    # every window is L consecutive epochs of the recording: epochs 3..5 really are 2, movement, unscored
    windows = WindowDataset([night], seq_len=3)
    assert len(windows) == 9  # starts 0..8, each holds a scored epoch
    item = windows[3]
    assert item["y"].tolist() == [2, -1, -1] and torch.equal(item["x"], torch.from_numpy(np.array(night.x[3:6])))


def test_windows_without_a_scored_epoch_are_not_training_examples() -> None:
    from skdcli.sleep.data import Night

    y = np.array([2, -1, -1, -1, -1, 2, 2], dtype=np.int64)
    night = Night("n", np.zeros((7, 4), np.float32), y)
    windows = WindowDataset([night], seq_len=3)
    assert windows.starts.tolist() == [0, 3, 4]  # starts 1 and 2 see only unscored epochs
    assert WindowDataset([night], seq_len=8).starts.tolist() == []  # a night shorter than one window


# -- item 1: one normalisation, prep and score alike ---------------------------------------------------------
def test_normalisation_rules_by_hand() -> None:
    from skdcli.engine.errors import SkdError
    from skdcli.sleep.normalisation import normalise_recording

    x = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 100.0]])
    # robust: median 4.5, quartiles (numpy linear) 2.75 and 6.25 -> scale 3.5 / 1.349
    out, stats = normalise_recording(x, "robust")
    assert stats == {"center_uv": 4.5, "scale_uv": pytest.approx(3.5 / 1.349, abs=1e-4)}
    assert out.dtype == np.float32 and out[0, 0] == pytest.approx((1 - 4.5) * 1.349 / 3.5, rel=1e-6)
    out, stats = normalise_recording(x, "zscore")
    assert stats["center_uv"] == pytest.approx(x.mean()) and out.std() == pytest.approx(1.0, abs=1e-6)
    out, _ = normalise_recording(x, "epoch")
    assert np.allclose(out.mean(1), 0, atol=1e-6) and np.allclose(out.std(1), 1, atol=1e-6)
    with pytest.raises(SkdError, match="flat"):
        normalise_recording(np.zeros((3, 4)), "robust")
    with pytest.raises(SkdError, match="normalisation must be one of robust, zscore, epoch"):
        normalise_recording(x, "minmax")


@pytest.mark.parametrize("rule", ["robust", "epoch"])
def test_score_input_equals_prep_on_the_kept_epochs(sleep_raw, tmp_path: Path, rule: str) -> None:
    """What `score` feeds the model for a whole night is, on the epochs prep kept, exactly what
    prep stored (before issue 15: the trimmed night's z-score vs the whole night's, 1.24x apart on
    a 22-h night)."""
    from skdcli.sleep.data import read_recording_epochs

    raw = sleep_raw["sleep-edf"]
    info = prepare_dataset("sleep-edf", raw, tmp_path / "p", subjects="0", trim_minutes=1.0, normalisation=rule)
    assert info["normalisation"]["rule"] == rule
    data = PreparedSleep(tmp_path / "p")
    row = data.info["manifest"][0]
    assert row["first_epoch"] > 0  # wake was trimmed off the start (1 min kept before sleep)
    _, whole, _ = read_recording_epochs(raw / "sleep-cassette" / f"{row['id']}-PSG.edf", "EEG Fpz-Cz", 100, rule)
    night = data.nights[0]
    assert len(whole) > len(night.y)
    assert np.array_equal(whole[row["first_epoch"] : row["first_epoch"] + len(night.y)], np.asarray(night.x))


# -- item 2: whole subjects in every split ---------------------------------------------------------------------
def test_subject_ids() -> None:
    from skdcli.sleep.splits import subject_of

    assert subject_of("SC4001E0") == subject_of("SC4002E0") == "SC400"
    assert subject_of("SC4011E0") == "SC401" and subject_of("ST7022J0") == "ST702"
    assert subject_of("shhs1-200001") == subject_of("shhs2-200001") == "200001"
    assert subject_of("night-x") == "night-x"


def test_dev_and_folds_never_split_a_subject() -> None:
    from skdcli.sleep.data import Night
    from skdcli.sleep.splits import fold_subjects, partition

    # Sleep-EDF-20: 20 subjects, 39 nights (subject 13 has one)
    nights = [
        Night(f"SC4{s:02d}{n}E0", np.zeros((1, 1)), np.zeros(1), f"SC4{s:02d}")
        for s in range(20)
        for n in (1, 2)
        if (s, n) != (13, 2)
    ]
    parts = partition(nights, dev_fraction=0.1)
    train_subjects, dev_subjects = {n.subject for n in parts.train}, {n.subject for n in parts.dev}
    assert not train_subjects & dev_subjects and len(parts.dev) >= round(0.1 * len(nights)) and not parts.test
    assert len(parts.train) + len(parts.dev) == len(nights)
    assert partition(nights, 0.1).dev == parts.dev  # a pure function of the ids
    groups = fold_subjects([n.subject for n in nights], 4)
    assert [len(g) for g in groups] == [5, 5, 5, 5] and groups[0] == ["SC400", "SC401", "SC402", "SC403", "SC404"]
    seen = set()
    for k in range(4):
        fold = partition(nights, 0.1, folds=4, fold=k)
        test = {n.subject for n in fold.test}
        assert test == set(groups[k]) and not test & {n.subject for n in fold.train + fold.dev}
        assert not {n.subject for n in fold.train} & {n.subject for n in fold.dev}
        seen |= test
    assert seen == {n.subject for n in nights}  # every subject is tested exactly once


def test_task_holds_out_both_nights_of_a_dev_subject(sleep_sedf: Path) -> None:
    # 2 subjects x 2 nights: before issue 15 the dev night (1 of 4, by id hash) had its twin in training
    from skdcli.sleep.config import SleepConfig
    from skdcli.sleep.recipe import SleepTask

    task = SleepTask(SleepConfig(), sleep_sedf)
    train = {task.train_set.nights[k].id for k in range(len(task.train_set.nights))}
    dev = {n.id for n in task.dev_set.nights}
    assert len(dev) == 2 and {i[:5] for i in train}.isdisjoint({i[:5] for i in dev})
    cfg = SleepConfig()
    cfg.data.folds, cfg.data.fold = 2, 1
    folded = SleepTask(cfg, sleep_sedf)
    assert {n.id for n in folded.train_set.nights} == {"SC4001E0", "SC4002E0"} and folded.dev_set is None
    assert folded.data.held_out(cfg.data)[0] == "test"
    assert [n.id for n in folded.data.held_out(cfg.data)[1]] == ["SC4011E0", "SC4012E0"]


def test_fold_config_is_checked() -> None:
    from skdcli.engine.config import validate_config
    from skdcli.engine.errors import SkdError
    from skdcli.sleep.config import SleepConfig

    for folds, fold, message in ((1, 0, "data.folds must be 0"), (3, 3, "data.fold must be in")):
        cfg = SleepConfig()
        cfg.data.folds, cfg.data.fold = folds, fold
        with pytest.raises(SkdError, match=message):
            validate_config(cfg)


@pytest.mark.slow
def test_cross_validation_over_subject_folds(sleep_sedf: Path, tmp_path: Path) -> None:
    from conftest import invoke, invoke_json, sets
    from fixtures_sleep import SLEEP_TINY

    cv = ["sleep", "train", "--data", sleep_sedf, "--run-dir", tmp_path / "cv", "--folds", "2"]
    result = invoke_json(*cv, "--max-steps", "2", *sets(*SLEEP_TINY, "train.batch_size=5"))
    assert [r["subjects"] for r in result["per_fold"]] == [["SC400"], ["SC401"]]
    assert sum(r["epochs"] for r in result["per_fold"]) == result["pooled"]["epochs"]
    assert result["pooled"]["epochs"] == sum(r["epochs"] for r in PreparedSleep(sleep_sedf).info["manifest"])
    assert result["accuracy"]["n"] == 2 and (tmp_path / "cv" / "folds.json").is_file()
    assert '"split": "test"' in (tmp_path / "cv" / "fold1" / "eval.json").read_text()
    # the human view: one row per fold, mean ± std, pooled; finished folds are reused
    human = invoke(*cv)
    text = " ".join(human.stderr.split())
    assert human.exit_code == 0 and "reused" in text and "fold 1" in text and "pooled" in text and "±" in text


# -- item 4: SHHS at full scale --------------------------------------------------------------------------------
def test_shhs_subjects_file_skipped_nights_and_recorded_channel_fallback(tmp_path: Path) -> None:
    import json

    from conftest import invoke_json

    raw = tmp_path / "raw"
    codes = [0, 0, 1, 2, 2, 3, 4, 5, 0, 0]
    write_shhs_night(raw, "shhs1-200001", codes)
    write_shhs_night(raw, "shhs1-200002", codes, channels=("EEG(sec)", "EOG(L)"))  # no C4-A1 `EEG`
    write_shhs_night(raw, "shhs1-200003", codes)
    edf = raw / "polysomnography" / "edfs" / "shhs1" / "shhs1-200003.edf"
    edf.write_bytes(edf.read_bytes()[:-5000])  # truncated download
    write_shhs_night(raw, "shhs1-200004", codes)
    (raw / "polysomnography" / "annotations-events-nsrr" / "shhs1" / "shhs1-200004-nsrr.xml").unlink()
    write_shhs_night(raw, "shhs1-200005", codes)  # not selected
    selection = tmp_path / "selected_shhs1_files.txt"
    selection.write_text(
        "# a selection like the common 329-subject one\nshhs1-200001\nshhs1-200002.edf\n"
        "shhs1-200003\n200004\nshhs1-200009\n"
    )
    result = invoke_json(
        "sleep",
        "prep",
        "--source",
        "shhs",
        "--raw",
        raw,
        "--out",
        tmp_path / "prep",
        "--subjects",
        selection,
        "--no-trim-wake",
    )
    assert result["recordings"] == 2 and result["skipped"] == 3 and result["channel_fallbacks"] == 1
    assert result["subjects_file"]["entries"] == 5 and len(result["subjects_file"]["sha256"]) == 64
    assert result["warnings"] == [
        {
            "id": "shhs1-200002",
            "warning": "channel 'EEG' not in the EDF: read the fallback 'EEG(sec)' instead (C3-A2 instead of C4-A1)",
        }
    ]
    lines = (tmp_path / "prep" / "skipped.jsonl").read_text().splitlines()
    skipped = {r["id"]: r["reason"] for r in map(json.loads, lines)}
    assert set(skipped) == {"shhs1-200003", "shhs1-200004", "shhs1-200009"}
    assert "truncated EDF" in skipped["shhs1-200003"] and str(edf) in skipped["shhs1-200003"]
    assert "no shhs1-200004-nsrr.xml" in skipped["shhs1-200004"]
    assert "listed in --subjects but no EDF" in skipped["shhs1-200009"]
    manifest = {r["id"]: r for r in PreparedSleep(tmp_path / "prep").info["manifest"]}
    assert manifest["shhs1-200002"]["channel"] == "EEG(sec)" and manifest["shhs1-200002"]["fallback_from"] == "EEG"
    assert manifest["shhs1-200001"]["channel"] == "EEG" and manifest["shhs1-200001"]["fallback_from"] is None
    # without the fallback the C3-A2-only night is skipped, never read silently in place of C4-A1
    strict = prepare_dataset("shhs", raw, tmp_path / "strict", subjects=str(selection), trim_wake=False, fallbacks=())
    assert strict["recordings"] == 1 and strict["channel_fallbacks"] == 0


def test_prepared_signals_are_memory_mapped_and_windows_map_few_nights(sleep_shhs: Path) -> None:
    import pickle

    data = PreparedSleep(sleep_shhs)
    x = data.nights[0].x
    assert isinstance(x, np.memmap) and not x.flags.writeable and x.dtype == np.float32
    assert data.nights[0].y.dtype == np.int8  # labels are the only per-epoch data held in RAM
    windows = WindowDataset(data.nights, seq_len=3, max_open=2)
    for k in range(len(data.nights)):  # touch every night
        windows[int(np.flatnonzero(windows.night_of == k)[0])]
    assert len(windows._mapped) == 2 and sorted(windows._mapped) == [len(data.nights) - 2, len(data.nights) - 1]
    assert pickle.loads(pickle.dumps(windows))._mapped == {}  # DataLoader workers map their own


def test_a_dataset_prepared_by_an_older_version_is_refused(tmp_path: Path) -> None:
    from skdcli.engine.errors import SkdError

    (tmp_path / "prep.json").write_text('{"fs": 100, "manifest": []}')
    with pytest.raises(SkdError, match="prepared by another skd version .* re-run `skd sleep prep"):
        PreparedSleep(tmp_path)


def test_directly_written_prepared_set_reads_like_a_prepped_one(tmp_path: Path) -> None:
    from skdcli.sleep.synth import write_prepared_like

    data = PreparedSleep(write_prepared_like(tmp_path / "p", nights=3, epochs=20, seed=0))
    assert [n.id for n in data.nights] == ["shhs1-300001", "shhs1-300002", "shhs1-300003"]
    assert data.info["epochs"] == 60 and data.nights[2].x.shape == (20, 3000) and data.normalisation == "robust"
