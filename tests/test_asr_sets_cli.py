"""asr-ctc through the CLI: per-set evaluation (issue 14, item 4), prep of the manifest formats
(item 5), the labels of the KD preset and of InterCTC (items 3, 6). Real fixture audio
(tests/fixtures/librispeech, CC BY 4.0) and the shared tiny run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, invoke, invoke_json, sets
from fixtures_asr_ctc import TINY_MODEL

CHAPTER = Path(__file__).parent / "fixtures" / "librispeech" / "LibriSpeech" / "dev-clean-2" / "3752" / "4944"
IDS = ["3752-4944-0000", "3752-4944-0001", "3752-4944-0002"]
TEXTS = dict(line.split(" ", 1) for line in (CHAPTER / "3752-4944.trans.txt").read_text().splitlines())


def librispeech_sets(root: Path, names: list[str]) -> Path:
    """A LibriSpeech folder whose sets each hold the three fixture utterances under fresh ids."""
    for k, name in enumerate(names):
        chapter = root / "LibriSpeech" / name / "3752" / "4944"
        chapter.mkdir(parents=True)
        lines = []
        for n, utt in enumerate(IDS):
            shutil.copy(CHAPTER / f"{utt}.flac", chapter / f"3752-4944-{k}{n:03d}.flac")
            lines.append(f"3752-4944-{k}{n:03d} {TEXTS[utt]}\n")
        (chapter / "3752-4944.trans.txt").write_text("".join(lines))
    return root / "LibriSpeech"


def test_eval_reports_each_librispeech_set(asr_ctc_run: Path, tmp_path: Path) -> None:
    raw = librispeech_sets(tmp_path, ["dev-clean", "dev-other", "test-clean", "test-other"])
    prepped = invoke_json("asr-ctc", "prep", "--source", "librispeech", "--raw", raw, "--out", tmp_path / "ls")
    assert {n: s["role"] for n, s in prepped["sets"].items()} == {
        "dev-clean": "dev",
        "dev-other": "dev",
        "test-clean": "test",
        "test-other": "test",
    }
    assert prepped["counts"] == {"train": 0, "dev": 6, "test": 6}  # evaluation only

    one = invoke_json("asr-ctc", "eval", "--run-dir", asr_ctc_run, "--data", tmp_path / "ls", "--split", "test-other")
    assert one["set"] == "test-other" and one["utterances"] == 3 and list(one["sets"]) == ["test-other"]
    assert one["wer"] == one["sets"]["test-other"]["wer"]

    every = invoke("asr-ctc", "eval", "--run-dir", asr_ctc_run, "--data", tmp_path / "ls", "--split", "all", "--json")
    assert every.exit_code == 0, every.stderr
    result = json.loads(every.stdout)
    assert list(result["sets"]) == ["dev-clean", "dev-other", "test-clean", "test-other"]
    assert "wer" not in result  # several sets: no pooled number
    for metrics in result["sets"].values():
        assert metrics["utterances"] == 3 and {"wer", "cer", "wer_teacher", "wer_student"} <= set(metrics)
    # the same audio in every set, so the same WER: each set is scored on its own rows
    assert len({m["wer"] for m in result["sets"].values()}) == 1

    human = invoke("asr-ctc", "eval", "--run-dir", asr_ctc_run, "--data", tmp_path / "ls", "--split", "test")
    assert human.exit_code == 0
    table = " ".join(human.stderr.split())
    assert "test-clean" in table and "test-other" in table and "dev-clean" not in table

    bad = invoke("asr-ctc", "eval", "--run-dir", asr_ctc_run, "--data", tmp_path / "ls", "--split", "test-clean-2")
    assert bad.exit_code == 2 and "no 'test-clean-2' set to evaluate" in " ".join(bad.stderr.split())

    # recipes/asr_ctc/run.sh stage 6 turns such results into one row per set
    results = tmp_path / "runs" / "results"
    results.mkdir(parents=True)
    (results / "skd_seed0.all.eval.json").write_text(every.stdout)
    table = subprocess.run(
        ["bash", str(REPO / "recipes" / "asr_ctc" / "run.sh"), "--stage", "6", "--runs", tmp_path / "runs"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
    )
    assert table.returncode == 0, table.stderr
    assert all(name in table.stdout for name in ("dev-clean", "dev-other", "test-clean", "test-other"))


def test_training_on_an_evaluation_only_set_is_refused(tmp_path: Path) -> None:
    raw = librispeech_sets(tmp_path, ["test-other"])
    invoke_json("asr-ctc", "prep", "--source", "librispeech", "--raw", raw / "test-other", "--out", tmp_path / "to")
    result = invoke("asr-ctc", "train", "--data", tmp_path / "to", "--run-dir", tmp_path / "r", "--max-steps", "1")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "has no train set (its sets: test-other)" in " ".join(result.stderr.split())


def test_prep_a_kaldi_data_dir_and_common_voice_sentences(tmp_path: Path) -> None:
    data_dir = tmp_path / "data" / "train"
    data_dir.mkdir(parents=True)
    (data_dir / "wav.scp").write_text("".join(f"{i} {CHAPTER / (i + '.flac')}\n" for i in IDS))
    (data_dir / "text").write_text("".join(f"{i} {TEXTS[i].capitalize()}.\n" for i in IDS))
    prepped = invoke_json(
        "asr-ctc",
        "prep",
        "--source",
        "manifest",
        "--raw",
        data_dir,
        "--out",
        tmp_path / "p",
        "--text-norm",
        "strip_punctuation",
    )
    assert prepped["sets"]["train"]["role"] == "train" and prepped["counts"]["train"] + prepped["counts"]["dev"] == 3
    (data_dir / "wav.scp").write_text(f"{IDS[0]} sox {CHAPTER / (IDS[0] + '.flac')} -t wav - |\n")
    piped = invoke("asr-ctc", "prep", "--source", "manifest", "--raw", data_dir, "--out", tmp_path / "q")
    assert piped.exit_code == 2 and "command pipe" in " ".join(piped.stderr.split())


def test_train_summary_names_the_system(tiny_corpus: Path, tmp_path: Path) -> None:
    official = invoke_json(
        "asr-ctc",
        "train",
        "--data",
        tiny_corpus,
        "--run-dir",
        tmp_path / "o",
        "--max-steps",
        "1",
        *sets(*TINY_MODEL, "kd.reduction=official", "train.eval_every=0"),
    )
    assert "kd.reduction=official" in official["system"]
    inter = invoke_json(
        "asr-ctc",
        "train",
        "--data",
        tiny_corpus,
        "--run-dir",
        tmp_path / "i",
        "--max-steps",
        "1",
        *sets(*TINY_MODEL, "kd.method=interctc", "train.eval_every=0"),
    )
    assert inter["system"].startswith("InterCTC") and "constant weight 0.3" in inter["system"]
    row = json.loads((tmp_path / "i" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["weight/interctc"] == pytest.approx(0.3) and "weight/alpha" not in row
