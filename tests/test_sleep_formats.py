"""Sleep readers on real PhysioNet files (tests/fixtures/sleep) and on hand-written XML/EDF."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from fixtures_sleep import SLEEP_FIXTURES
from skdcli.engine.errors import SkdError
from skdcli.sleep.formats import (
    check_edf_file,
    read_edf_channel,
    read_edf_hypnogram,
    read_shhs_xml,
    resolve_channel,
    write_edf_hypnogram,
)
from skdcli.sleep.synth import nsrr_xml, profusion_xml

PSG = SLEEP_FIXTURES / "sleep-cassette" / "SC4001E0-PSG.edf"
HYP = SLEEP_FIXTURES / "sleep-cassette" / "SC4001EC-Hypnogram.edf"
HMC = SLEEP_FIXTURES / "hmc" / "SN001_sleepscoring.edf"


def test_real_sleep_edf_psg_channel_at_its_native_rate() -> None:
    sig = read_edf_channel(PSG, "EEG Fpz-Cz")
    assert sig.fs == 100.0 and sig.data.shape == (30000,) and sig.channel == "EEG Fpz-Cz"
    assert sig.start == dt.datetime(1989, 4, 24, 16, 13, 0)
    assert np.abs(sig.data).max() <= 192e-6 + 1e-9  # physical range ±192 µV, in volts


def test_real_sleep_edf_hypnogram_counts_and_start() -> None:
    hyp = read_edf_hypnogram(HYP)
    assert hyp.start == dt.datetime(1989, 4, 24, 16, 13, 0)
    counts = np.bincount(hyp.labels + 1, minlength=6)  # -1 (?) first
    # SOURCE.md counts: W 1997, 1 58, 2 250, 3 101 + 4 119 -> N3 220, R 125, ? 230 (2880 epochs)
    assert len(hyp.labels) == 2880 and counts.tolist() == [230, 1997, 58, 250, 220, 125]


def test_real_hmc_aasm_scoring_one_annotation_per_epoch() -> None:
    hyp = read_edf_hypnogram(HMC)
    assert hyp.start is None  # anonymised start date
    assert np.bincount(hyp.labels).tolist() == [151, 109, 430, 23, 141]


def test_channel_matching_and_missing_channel_lists_present() -> None:
    present = ["EEG(sec)", "EEG", "EOG(L)"]
    assert resolve_channel(present, "EEG", Path("x.edf")) == ("EEG", None)
    assert resolve_channel(["EEG 2", "EEG"], "eeg2", Path("x.edf")) == ("EEG 2", None)
    # SHHS's C4-A1 `EEG` is never silently replaced by C3-A2 (before issue 15 a prefix match did it)
    with pytest.raises(SkdError, match="channel 'EEG' not found; channels present: EEG sec, EOG"):
        resolve_channel(["EEG sec", "EOG(L)"], "EEG", Path("x.edf"))
    assert resolve_channel(["EEG sec", "EOG(L)"], "EEG", Path("x.edf"), ("EEG(sec)", "EEG2")) == ("EEG sec", "EEG(sec)")
    assert resolve_channel(["EEG 2"], "EEG", Path("x.edf"), ("EEG(sec)", "EEG2")) == ("EEG 2", "EEG2")
    with pytest.raises(SkdError, match=r"not found \(nor the fallbacks EEG\(sec\), EEG2\)"):
        resolve_channel(["EOG(L)"], "EEG", Path("x.edf"), ("EEG(sec)", "EEG2"))
    with pytest.raises(SkdError) as err:
        read_edf_channel(PSG, "EEG C4-A1")
    assert str(PSG) in str(err.value) and "EEG Fpz-Cz, EEG Pz-Oz" in str(err.value)


def test_truncated_and_non_edf_files(tmp_path: Path) -> None:
    cut = tmp_path / "cut.edf"
    cut.write_bytes(PSG.read_bytes()[:100_000])
    with pytest.raises(SkdError, match="truncated EDF: the header promises 10 data records"):
        check_edf_file(cut)
    junk = tmp_path / "junk.edf"
    junk.write_bytes(b"hello" * 100)
    with pytest.raises(SkdError, match="not an EDF"):
        read_edf_channel(junk, "EEG")


def test_nsrr_events_of_any_length_expand_to_epochs(tmp_path: Path) -> None:
    # codes 2,2,2 are one 90-s event: the classic bug reads it as one epoch
    path = tmp_path / "a-nsrr.xml"
    path.write_text(nsrr_xml([0, 2, 2, 2, 4, 3, 5, 6, 9, 1], 300.0))
    assert read_shhs_xml(path).labels.tolist() == [0, 2, 2, 2, 3, 3, 4, -1, -1, 1]
    assert "<Duration>90.0</Duration>" in path.read_text()


def test_profusion_found_by_tag_not_position(tmp_path: Path) -> None:
    text = profusion_xml([0, 1, 2, 3, 4, 5, 6, 9])
    swapped = text.replace("<StepChannels />", "").replace(
        "<Montage />", "<StepChannels />"
    )  # SleepStages no longer root[4]
    path = tmp_path / "a-profusion.xml"
    path.write_text(swapped)
    assert read_shhs_xml(path).labels.tolist() == [0, 1, 2, 3, 3, 4, -1, -1]


def test_unknown_stage_code_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "b-nsrr.xml"
    path.write_text(nsrr_xml([0, 2], 60.0).replace("Stage 2 sleep|2", "Stage 7 sleep|7"))
    with pytest.raises(SkdError) as err:
        read_shhs_xml(path)
    assert str(path) in str(err.value) and "unknown sleep stage code 7" in str(err.value)
    off_grid = tmp_path / "c-nsrr.xml"
    off_grid.write_text(
        nsrr_xml([0, 2], 60.0).replace(
            "<Duration>30.0</Duration></ScoredEvent></Scored", "<Duration>45.0</Duration></ScoredEvent></Scored"
        )
    )
    with pytest.raises(SkdError, match="not on the 30-s epoch grid"):
        read_shhs_xml(off_grid)


def test_written_hypnogram_reads_back(tmp_path: Path) -> None:
    labels = np.array([0, 0, 1, 2, 2, 2, 3, 4, 4, 0])
    path = tmp_path / "pred-Hypnogram.edf"
    write_edf_hypnogram(path, labels, dt.datetime(1989, 4, 24, 16, 13))
    back = read_edf_hypnogram(path)
    assert back.labels.tolist() == labels.tolist() and back.start == dt.datetime(1989, 4, 24, 16, 13)
