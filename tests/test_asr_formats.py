"""asr-ctc prep: named LibriSpeech sets (issue 14, item 4) and the manifest formats people have
(item 5: NeMo, Common Voice, HF audiofolder, Kaldi/ESPnet), on the real LibriSpeech fixture
audio (CC BY 4.0, tests/fixtures/librispeech/LICENSE.md) re-written at 8 kHz mono and at
44.1 kHz stereo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from skdcli.asr_ctc.data import (
    load_prepared,
    prepare_dataset,
    read_audio,
    read_kaldi_dir,
    read_manifest,
    read_manifest_source,
    set_role,
)
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


def prep_rows(raw: Path, out: Path, **options) -> tuple[dict, dict[str, dict]]:
    info = prepare_dataset("manifest", raw, out, dev_fraction=0.0, **options)
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
    roles = {
        name: set_role(name)
        for name in (
            "train-clean-100",
            "train-other-500",
            "dev-clean",
            "dev-other",
            "test-clean",
            "test-other",
            "dev-clean-2",
            "train-clean-5",
            "validation",
            "test_clean",
            "validated",
            "my-corpus",
        )
    }
    assert roles == {
        "train-clean-100": "train",
        "train-other-500": "train",
        "dev-clean": "dev",
        "dev-other": "dev",
        "test-clean": "test",
        "test-other": "test",
        "dev-clean-2": "dev",
        "train-clean-5": "train",
        "validation": "dev",
        "test_clean": "test",
        "validated": None,
        "my-corpus": None,
    }


def test_each_official_set_is_its_own_named_split(tmp_path: Path) -> None:
    root = librispeech_tree(
        tmp_path,
        {
            "train-clean-100": IDS[:2],
            "dev-clean": IDS[2:],
            "dev-other": IDS[:1],
            "test-clean": IDS[1:2],
            "test-other": IDS,
        },
    )
    info = prepare_dataset("librispeech", root, tmp_path / "out")
    assert info["counts"] == {"train": 2, "dev": 2, "test": 4} and not info["dev_held_out"]
    assert {n: (s["role"], s["utterances"]) for n, s in info["sets"].items()} == {
        "train-clean-100": ("train", 2),
        "dev-clean": ("dev", 1),
        "dev-other": ("dev", 1),
        "test-clean": ("test", 1),
        "test-other": ("test", 3),
    }
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


# ---- item 5: manifest formats, on real speech at 8 kHz mono and 44.1 kHz stereo -----------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_nemo_jsonl(variant: str, tmp_path: Path) -> None:
    rate, channels = VARIANTS[variant]
    folder = tmp_path / "nemo"
    lines = []
    for i in IDS:
        write_variant(ORIGINAL[i], folder / "audio" / f"{i}.wav", rate, channels)
        lines.append(
            {"audio_filepath": f"audio/{i}.wav", "text": TEXTS[i].lower(), "duration": ORIGINAL[i].numel() / 16000}
        )
    # a segment of the first file: offset + duration
    lines.append({"audio_filepath": f"audio/{IDS[1]}.wav", "text": "indeed by god", "offset": 0.5, "duration": 1.25})
    manifest = folder / "train_manifest.json"  # NeMo's usual name: JSON lines in a .json file
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    info, rows = prep_rows(manifest, tmp_path / "out")
    assert info["sets"] == {"train_manifest": {"role": "train", "utterances": 4, "hours": info["hours"]["train"]}}
    for i in IDS:
        assert_same_speech(rows[i], i, rate, channels)
    segment = rows[f"{IDS[1]}-00000500"]
    assert (segment["start"], segment["end"], segment["num_samples"]) == (0.5, 1.75, round(1.25 * rate))
    wave = read_audio(segment["audio"], 16000, segment["start"], segment["end"])
    torch.testing.assert_close(wave, read_audio(rows[IDS[1]]["audio"])[8000:28000], atol=0.02, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_common_voice_tsv(variant: str, tmp_path: Path) -> None:
    rate, channels = VARIANTS[variant]
    release = tmp_path / "cv-corpus" / "en"
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment\n"
    for split, ids in (("train", IDS[:2]), ("test", IDS[2:])):
        rows = []
        for i in ids:
            write_variant(ORIGINAL[i], release / "clips" / f"common_voice_en_{i}.mp3", rate, channels)
            sentence = TEXTS[i].capitalize().replace(" ", ", ", 1) + "."  # written as sentences
            rows.append(f"abc123\tcommon_voice_en_{i}.mp3\t{sentence}\t2\t0\t\t\t\ten\t\n")
        (release / f"{split}.tsv").write_text(header + "".join(rows))
    (release / "validated.tsv").write_text(header)  # not a split: ignored
    with pytest.raises(SkdError, match="no usable utterances"):  # "," and "." are not in the char vocabulary
        prep_rows(release, tmp_path / "kept")
    assert "outside the tokenizer vocabulary: ',.'" in read_jsonl(tmp_path / "kept" / "skipped.jsonl")[0]["reason"]
    info, rows = prep_rows(release, tmp_path / "out", text_norm="strip_punctuation")
    assert info["text_norm"] == "strip_punctuation"
    assert {n: (s["role"], s["utterances"]) for n, s in info["sets"].items()} == {
        "train": ("train", 2),
        "test": ("test", 1),
    }
    for i in IDS:
        assert_same_speech(rows[f"common_voice_en_{i}"], i, rate, channels)
    # one TSV alone; Common Voice does not quote: a sentence may start with a quote character
    tsv = release / "train.tsv"
    tsv.write_text(header + f'abc\tcommon_voice_en_{IDS[0]}.mp3\t"Captain" Frere says\t2\t0\t\t\t\ten\t\n')
    utterances, skipped = read_manifest(tsv)
    assert utterances[0].text == '"Captain" Frere says' and not skipped
    assert utterances[0].audio_path == release / "clips" / f"common_voice_en_{IDS[0]}.mp3"


@pytest.mark.parametrize("variant", VARIANTS)
def test_hf_audiofolder_metadata(variant: str, tmp_path: Path) -> None:
    rate, channels = VARIANTS[variant]
    root = tmp_path / "hf"
    for split, ids, text_column in (("train", IDS[:2], "transcription"), ("validation", IDS[2:], "text")):
        for i in ids:
            write_variant(ORIGINAL[i], root / split / "clips" / f"{i}.flac", rate, channels)
        rows = "".join(f'clips/{i}.flac,"{TEXTS[i]}",3752\n' for i in ids)  # quoted CSV fields, extra column
        (root / split / "metadata.csv").write_text(f"file_name,{text_column},speaker\n" + rows)
    info, rows = prep_rows(root, tmp_path / "out")
    assert {n: s["role"] for n, s in info["sets"].items()} == {"train": "train", "validation": "dev"}
    for i in IDS:
        assert_same_speech(rows[i], i, rate, channels)
    # one audiofolder directory, or its metadata file: a set named after the folder
    sets, _ = read_manifest_source(root / "validation" / "metadata.csv")
    assert list(sets) == ["validation"] and [u.id for u in sets["validation"]] == IDS[2:]


@pytest.mark.parametrize("variant", VARIANTS)
def test_kaldi_data_dir_with_segments(variant: str, tmp_path: Path) -> None:
    rate, channels = VARIANTS[variant]
    recipe = tmp_path / "egs" / "s5"
    data_dir = recipe / "data" / "train"
    data_dir.mkdir(parents=True)
    # one recording holding the three utterances back to back, 0.5 s of silence between them
    gap = torch.zeros(8000)
    long = torch.cat([torch.cat([ORIGINAL[i], gap]) for i in IDS])
    write_variant(long, recipe / "wav" / "rec1.flac", rate, channels)
    write_variant(ORIGINAL[IDS[0]], recipe / "wav" / "rec2.wav", rate, channels)
    starts = np.cumsum([0] + [ORIGINAL[i].numel() + 8000 for i in IDS])[:3] / 16000
    # Kaldi writes paths relative to the recipe directory (an ancestor of the data directory)
    (data_dir / "wav.scp").write_text("rec1 wav/rec1.flac\nrec2 ../../wav/rec2.wav\n")
    (data_dir / "segments").write_text(
        "".join(f"{i} rec1 {s:.4f} {s + ORIGINAL[i].numel() / 16000:.4f}\n" for i, s in zip(IDS, starts))
        + "whole rec2 0 -1\n"
    )
    (data_dir / "text").write_text("".join(f"{i} {TEXTS[i]}\n" for i in IDS) + f"whole {TEXTS[IDS[0]]}\n")
    (data_dir / "utt2spk").write_text("".join(f"{i} 3752\n" for i in IDS))  # present, not needed
    info, rows = prep_rows(data_dir, tmp_path / "out")
    assert info["sets"]["train"]["utterances"] == 4
    for i, start in zip(IDS, starts):
        assert rows[i]["start"] == pytest.approx(start, abs=1e-4)
        assert_same_speech(rows[i], i, rate, channels)
    assert rows["whole"]["end"] is None
    assert_same_speech(rows["whole"], IDS[0], rate, channels)


def test_kaldi_refuses_pipes_and_archives(tmp_path: Path) -> None:
    (tmp_path / "text").write_text("u1 HELLO\n")
    for entry, problem in (
        ("sox in.sph -t wav - |", "command pipe"),
        ("feats.ark:1234", "ark offsets"),
        ("flac -c -d -s x.flac |", "command pipe"),
    ):
        (tmp_path / "wav.scp").write_text(f"u1 {entry}\n")
        with pytest.raises(SkdError, match=f"wav.scp: line 1: recording u1 .*{problem}"):
            read_kaldi_dir(tmp_path)
    (tmp_path / "wav.scp").write_text("u1 missing.wav\nu2 missing2.wav\n")
    utterances, skipped = read_kaldi_dir(tmp_path)
    reasons = " ".join(s["reason"] for s in skipped)
    assert utterances == [] and "audio file not found (wav.scp recording u1)" in reasons and "no line for u2" in reasons
    (tmp_path / "text").unlink()
    with pytest.raises(SkdError, match="not a Kaldi data directory: no text"):
        read_kaldi_dir(tmp_path)


def test_unknown_manifest_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SkdError, match="no manifest found: expected a manifest file, a Kaldi data directory"):
        read_manifest_source(tmp_path)
    (tmp_path / "m.jsonl").write_text('{"audio_filepath": "a.wav"}\n')
    with pytest.raises(SkdError, match="line 1: a nemo manifest row needs the fields audio_filepath and text"):
        read_manifest(tmp_path / "m.jsonl")
    (tmp_path / "n.json").write_text('{"audio_filepath": "a.wav", "text": "hi", "offset": "soon"}\n')
    with pytest.raises(SkdError, match="n.json: line 1: offset must be a number of seconds"):
        read_manifest(tmp_path / "n.json")


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
