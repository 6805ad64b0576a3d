"""asr-ctc prep: named LibriSpeech sets (issue 14, item 4), on the real LibriSpeech fixture
audio (CC BY 4.0, tests/fixtures/librispeech/LICENSE.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from skdcli.asr_ctc.data import load_prepared, prepare_dataset, read_audio, set_role
from skdcli.engine.errors import SkdError
from skdcli.engine.io import read_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "librispeech" / "LibriSpeech"
CHAPTER = FIXTURE / "dev-clean-2" / "3752" / "4944"
IDS = ["3752-4944-0000", "3752-4944-0001", "3752-4944-0002"]
TEXTS = dict(line.split(" ", 1) for line in (CHAPTER / "3752-4944.trans.txt").read_text().splitlines())
ORIGINAL = {i: read_audio(CHAPTER / f"{i}.flac") for i in IDS}  # 16 kHz mono, as LibriSpeech ships it
VARIANTS = {"8k-mono": (8000, 1), "44k1-stereo": (44100, 2)}


def write_variant(wave16k: torch.Tensor, path: Path, rate: int, channels: int) -> Path:
    """The fixture audio at another rate; stereo channels differ (right = half the left), so only
    a true down-mix (their mean, 0.75 x) gives back the original."""
    wave = torchaudio.functional.resample(wave16k, 16000, rate).numpy()
    data = np.stack([wave, 0.5 * wave], axis=1) if channels == 2 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate)
    return path


def assert_same_speech(row: dict, utt_id: str, rate: int, channels: int) -> None:
    assert row["sample_rate"] == rate and row["text"] == TEXTS[utt_id].lower()
    wave = read_audio(row["audio"], 16000, row.get("start"), row.get("end"))
    original = ORIGINAL[utt_id]
    assert abs(wave.numel() - original.numel()) <= 2, (wave.numel(), original.numel())
    n = min(wave.numel(), original.numel())
    corr = np.corrcoef(wave[:n].numpy(), original[:n].numpy())[0, 1]
    assert corr > 0.95, corr  # 8 kHz keeps the speech band below 4 kHz
    if channels == 2:  # the mean of both channels, not the first one
        gain = float(wave[:n] @ original[:n] / (original[:n] @ original[:n]))
        assert gain == pytest.approx(0.75, abs=0.02)


def prep_rows(raw: Path, out: Path) -> tuple[dict, dict[str, dict]]:
    info = prepare_dataset("manifest", raw, out, dev_fraction=0.0)
    rows = {r["id"]: r for split in ("train", "dev", "test") for r in read_jsonl(out / f"{split}.jsonl")}
    return info, rows


# ---- item 4: LibriSpeech sets keep their names and roles ------------------------------------------

def librispeech_tree(root: Path, sets: dict[str, list[str]]) -> Path:
    """A LibriSpeech root whose sets hold copies of the fixture utterances (fresh ids per set)."""
    for k, (name, ids) in enumerate(sets.items()):
        chapter = root / "LibriSpeech" / name / "3752" / "4944"
        chapter.mkdir(parents=True)
        lines = []
        for n, utt in enumerate(ids):
            new_id = f"3752-4944-{k}{n:03d}"
            shutil.copy(CHAPTER / f"{utt}.flac", chapter / f"{new_id}.flac")
            lines.append(f"{new_id} {TEXTS[utt]}\n")
        (chapter / "3752-4944.trans.txt").write_text("".join(lines))
    return root / "LibriSpeech"


def test_set_roles_from_names() -> None:
    roles = {name: set_role(name) for name in ("train-clean-100", "train-other-500", "dev-clean", "dev-other",
                                               "test-clean", "test-other", "dev-clean-2", "train-clean-5",
                                               "validation", "test_clean", "validated", "my-corpus")}
    assert roles == {"train-clean-100": "train", "train-other-500": "train", "dev-clean": "dev", "dev-other": "dev",
                     "test-clean": "test", "test-other": "test", "dev-clean-2": "dev", "train-clean-5": "train",
                     "validation": "dev", "test_clean": "test", "validated": None, "my-corpus": None}


def test_each_official_set_is_its_own_named_split(tmp_path: Path) -> None:
    root = librispeech_tree(tmp_path, {"train-clean-100": IDS[:2], "dev-clean": IDS[2:], "dev-other": IDS[:1],
                                       "test-clean": IDS[1:2], "test-other": IDS})
    info = prepare_dataset("librispeech", root, tmp_path / "out")
    assert info["counts"] == {"train": 2, "dev": 2, "test": 4} and not info["dev_held_out"]
    assert {n: (s["role"], s["utterances"]) for n, s in info["sets"].items()} == {
        "train-clean-100": ("train", 2), "dev-clean": ("dev", 1), "dev-other": ("dev", 1),
        "test-clean": ("test", 1), "test-other": ("test", 3)}
    data = load_prepared(tmp_path / "out")
    assert {r["set"] for r in data.test} == {"test-clean", "test-other"}  # not merged into one "test"
    assert list(data.eval_sets("test-other")) == ["test-other"] and len(data.eval_sets("test-other")["test-other"]) == 3
    assert list(data.eval_sets("test")) == ["test-clean", "test-other"] == list(data.eval_sets("auto"))
    assert list(data.eval_sets("all")) == ["dev-clean", "dev-other", "test-clean", "test-other"]
    assert list(data.eval_sets("dev")) == ["dev-clean", "dev-other"]
    with pytest.raises(SkdError, match="no 'test-clean-2' set to evaluate .*test-other.*all"):
        data.eval_sets("test-clean-2")


@pytest.mark.parametrize("name,role", [("test-other", "test"), ("dev-clean-2", "dev")])
def test_a_lone_official_set_keeps_its_role(name: str, role: str, tmp_path: Path) -> None:
    root = librispeech_tree(tmp_path, {name: IDS})
    for raw in (root / name, root):  # the set directory, or the LibriSpeech root holding only it
        info = prepare_dataset("librispeech", raw, tmp_path / "out", overwrite=True)
        assert info["counts"] == {"train": 0, "dev": 3 if role == "dev" else 0, "test": 3 if role == "test" else 0}
        assert info["sets"][name]["role"] == role and not info["dev_held_out"]
        assert list(load_prepared(tmp_path / "out").eval_sets("all")) == [name]
    with pytest.raises(SkdError, match="bpe tokenizers are learnt from a train set"):
        prepare_dataset("librispeech", root / name, tmp_path / "bpe", tokenizer="bpe")


def test_datasets_prepared_before_named_sets_still_evaluate(tmp_path: Path) -> None:
    root = librispeech_tree(tmp_path, {"train-clean-5": IDS[:2], "test-clean": IDS[2:]})
    prepare_dataset("librispeech", root, tmp_path / "out")
    data = load_prepared(tmp_path / "out")
    for split in ("train", "dev", "test"):  # rows without a "set" field, as older preps wrote them
        for row in getattr(data, split):
            del row["set"]
    assert list(data.eval_sets("all")) == ["dev", "test"] and list(data.eval_sets("test")) == ["test"]


def test_eval_scores_each_set_on_its_own_and_eval_only_data_cannot_train(tmp_path: Path) -> None:
    from rich.console import Console
    from torch.utils.data import DataLoader

    from skdcli.asr_ctc.config import AsrCtcConfig
    from skdcli.asr_ctc.data import AsrDataset, collate_asr
    from skdcli.asr_ctc.recipe import AsrCtcTask, decode_and_score, per_set_table, score_eval_sets

    root = librispeech_tree(tmp_path, {"train-clean-5": IDS[:2], "test-clean": IDS[2:], "test-other": IDS[:2]})
    prepare_dataset("librispeech", root, tmp_path / "out")
    cfg = AsrCtcConfig()
    cfg.model.d_model, cfg.model.num_layers, cfg.model.student_layer, cfg.model.ff_dim = 16, 2, 1, 32
    cfg.model.conv_channels, cfg.train.batch_size = 4, 2
    task = AsrCtcTask(cfg, tmp_path / "out")
    torch.manual_seed(0)
    model = task.build_model().eval()
    sets = task.data.eval_sets("all")  # the held-out dev of train-clean-5 and both test sets
    scored = score_eval_sets(model, task, sets, torch.device("cpu"), keep_posteriors=1)
    assert list(scored["sets"]) == ["dev-heldout", "test-clean", "test-other"]
    for name, rows in sets.items():
        loader = DataLoader(AsrDataset(rows, task.tokenizer, task.features), batch_size=2, collate_fn=collate_asr)
        with torch.no_grad():
            alone = decode_and_score(model, loader, torch.device("cpu"), cfg, task.tokenizer)["metrics"]
        assert {k: scored["sets"][name][k] for k in alone} == alone
        assert scored["sets"][name]["utterances"] == len(rows)
    console = Console(record=True, width=120)
    console.print(per_set_table({**scored, "head": "student", "decoder": "greedy"}))
    text = console.export_text()
    assert "test-other" in text and "WER % teacher" in text

    eval_only = librispeech_tree(tmp_path / "b", {"test-other": IDS})
    prepare_dataset("librispeech", eval_only / "test-other", tmp_path / "eval-only")
    with pytest.raises(SkdError, match="has no train set \\(its sets: test-other\\)"):
        AsrCtcTask(cfg, tmp_path / "eval-only").train_dataset()
