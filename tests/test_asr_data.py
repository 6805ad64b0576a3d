"""asr-ctc data layer: audio I/O, readers, prep, tokenizers, dataset/collate, synthetic corpus.

Real inputs: three LibriSpeech dev-clean-2 utterances in tests/fixtures/librispeech (CC BY 4.0,
see LICENSE.md there); every test works on a copy in tmp_path.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from skdcli.asr_ctc import data
from skdcli.asr_ctc.data import (
    SYNTH_WORDS,
    AsrDataset,
    FeatureConfig,
    collate_asr,
    compute_features,
    fbank_features,
    generate_synthetic_corpus,
    load_prepared,
    prepare_dataset,
    read_audio,
    read_librispeech,
    read_manifest,
)
from skdcli.asr_ctc.tokenizer import (
    CharTokenizer,
    SentencePieceTokenizer,
    load_tokenizer,
    normalize_transcript,
    train_tokenizer,
)
from skdcli.engine.errors import SkdError
from skdcli.engine.io import read_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "librispeech" / "LibriSpeech"
IDS = ["3752-4944-0000", "3752-4944-0001", "3752-4944-0002"]
TEXTS = {
    "3752-4944-0000": "captain frere says that the scenery is delightful",
    "3752-4944-0001": "abandoned indeed by god and man almost",
    "3752-4944-0002": "in the valley of the shadow of death he is with us",
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A writable copy of the fixture as someone's own corpus in the LibriSpeech layout
    (…/LibriSpeech/my-corpus): a name without a train/dev/test role, so prep treats it as a
    train pool and holds out dev. (Prepped under its official name, dev-clean-2, it would be a
    dev set: tests/test_asr_formats.py.)"""
    shutil.copytree(FIXTURE / "dev-clean-2", tmp_path / "LibriSpeech" / "my-corpus")
    return tmp_path / "LibriSpeech" / "my-corpus"


def chapter(corpus: Path) -> Path:
    return corpus / "3752" / "4944"


def add_utterance(
    corpus: Path,
    utt_id: str,
    text: str | None,
    audio: np.ndarray | bytes | None,
    sample_rate: int = 16000,
    suffix: str = ".flac",
) -> Path:
    """Add audio (samples, raw bytes, or none) and/or a transcript line to the fixture chapter."""
    path = chapter(corpus) / f"{utt_id}{suffix}"
    if isinstance(audio, bytes):
        path.write_bytes(audio)
    elif audio is not None:
        sf.write(str(path), audio, sample_rate, subtype="PCM_16")
    if text is not None:
        trans = chapter(corpus) / "3752-4944.trans.txt"
        trans.write_text(trans.read_text() + f"{utt_id} {text}\n")
    return path


def tone(seconds: float, sample_rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


# ---- tokenizers ---------------------------------------------------------------------------


def test_char_tokenizer_matches_reference_vocab(tmp_path: Path) -> None:
    tok = CharTokenizer()
    assert tok.vocab_size == 29
    assert tok.encode("A b") == [2, 1, 3]
    assert tok.encode("it's") == [10, 21, 28, 20]
    assert tok.decode([0, *tok.encode("Hello  World ")]) == "hello world"
    assert tok.invalid_chars("room 42 café") == {"4", "2", "é"}
    assert not tok.is_valid("42") and not tok.is_valid("   ") and tok.is_valid("ok")
    with pytest.raises(SkdError, match="outside the vocabulary"):
        tok.encode("42")
    tok.save(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["kind"] == "char"
    assert load_tokenizer(tmp_path).symbols == tok.symbols


def test_normalize_transcript() -> None:
    assert normalize_transcript("  HELLO\tThere \n  world ") == "hello there world"
    assert normalize_transcript('"It\u2019s a well-known ‘fact’," she said - 42 times!', "strip_punctuation") == (
        "it's a well known fact she said 42 times"
    )
    assert normalize_transcript("Don't stop.", "lower") == "don't stop."
    with pytest.raises(SkdError, match="unknown text normalisation"):
        normalize_transcript("x", "nfkc")


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_sentencepiece_tokenizer_reserves_blank_and_is_deterministic(tmp_path: Path, kind: str) -> None:
    texts = list(TEXTS.values())
    tok = train_tokenizer(kind, texts, tmp_path / "a", vocab_size=40)
    again = train_tokenizer(kind, texts, tmp_path / "b", vocab_size=40)
    assert (tmp_path / "a" / "spm.model").read_bytes() == (tmp_path / "b" / "spm.model").read_bytes()
    assert isinstance(tok, SentencePieceTokenizer) and tok.vocab_size <= 40
    for text in texts:
        ids = tok.encode(text)
        assert 0 not in ids and tok.unk_id not in ids
        assert tok.decode(ids) == text == again.decode(ids)
    assert tok.invalid_chars("the 42") == {"4", "2"} and not tok.is_valid("42")
    loaded = load_tokenizer(tmp_path / "a")
    assert loaded.encode(texts[0]) == tok.encode(texts[0])
    with pytest.raises(SkdError, match="too small"):
        train_tokenizer(kind, texts, tmp_path / "c", vocab_size=10)


def test_load_tokenizer_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SkdError, match="tokenizer.json: file not found"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(SkdError, match="tokenizer.json: not valid JSON"):
        load_tokenizer(tmp_path)
    train_tokenizer("bpe", TEXTS.values(), tmp_path, vocab_size=40)
    (tmp_path / "spm.model").write_bytes(b"garbage")
    with pytest.raises(SkdError, match="spm.model: checksum differs"):
        load_tokenizer(tmp_path)
    (tmp_path / "spm.model").unlink()
    with pytest.raises(SkdError, match="spm.model: sentencepiece model file not found"):
        load_tokenizer(tmp_path)
    with pytest.raises(SkdError, match="unknown tokenizer"):
        train_tokenizer("wordpiece", [], tmp_path, 10)


# ---- audio and features -------------------------------------------------------------------


def test_read_audio_and_features_on_real_file() -> None:
    path = FIXTURE / "dev-clean-2" / "3752" / "4944" / "3752-4944-0000.flac"
    wave = read_audio(path)
    assert wave.dtype == torch.float32 and wave.ndim == 1 and wave.numel() == 53360  # 3.335 s
    fbank = fbank_features(wave)
    assert fbank.shape == (1 + (53360 - 400) // 160, 80)
    feats = compute_features(wave, FeatureConfig())
    assert torch.allclose(feats.mean(0), torch.zeros(80), atol=1e-4)
    assert torch.allclose(feats.std(0, unbiased=False), torch.ones(80), atol=1e-3)
    raw = compute_features(wave, FeatureConfig(kind="waveform"))
    assert raw.shape == wave.shape and abs(raw.mean().item()) < 1e-4 and abs(raw.std().item() - 1) < 1e-3
    assert fbank_features(wave[:100]).shape == (0, 80)


def test_read_audio_resamples_and_downmixes(tmp_path: Path) -> None:
    sf.write(str(tmp_path / "a8k.wav"), tone(1.0, 8000, channels=2), 8000)
    sf.write(str(tmp_path / "a44k.flac"), tone(0.5, 44100), 44100)
    assert read_audio(tmp_path / "a8k.wav").shape == (16000,)
    assert read_audio(tmp_path / "a44k.flac").shape == (8000,)


def test_read_audio_errors_name_file_and_problem(tmp_path: Path) -> None:
    (tmp_path / "corrupt.flac").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "zero.flac").write_bytes(b"")
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), 16000)
    cases = {
        "corrupt.flac": "cannot decode audio",
        "zero.flac": "empty \\(0 bytes\\)",
        "empty.wav": "empty \\(0 samples\\)",
        "missing.flac": "not found",
    }
    for name, problem in cases.items():
        with pytest.raises(SkdError, match=f"{name}: .*{problem}"):
            read_audio(tmp_path / name)


def test_feature_config_round_trip() -> None:
    cfg = FeatureConfig(kind="waveform", normalize="none")
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert FeatureConfig().feature_dim == 80 and cfg.feature_dim == 1
    with pytest.raises(SkdError, match="unknown kind"):
        FeatureConfig(kind="mfcc")
    with pytest.raises(SkdError, match="unknown keys"):
        FeatureConfig.from_dict({"kind": "fbank", "hop": 10})


# ---- readers ------------------------------------------------------------------------------


def test_read_librispeech_fixture_split_or_root() -> None:
    for raw in (FIXTURE / "dev-clean-2", FIXTURE):
        utterances, skipped = read_librispeech(raw)
        assert [u.id for u in utterances] == IDS and skipped == []
        assert utterances[1].text == "ABANDONED INDEED BY GOD AND MAN ALMOST"
        assert utterances[0].audio_path.is_absolute() and utterances[0].audio_path.is_file()


def test_read_librispeech_pairs_audio_and_lines(corpus: Path) -> None:
    orphan_audio = add_utterance(corpus, "3752-4944-0005", None, tone(0.5, 16000))
    add_utterance(corpus, "3752-4944-0006", "NO AUDIO HERE", None)
    wav = add_utterance(corpus, "3752-4944-0007", "A WAV FILE", tone(0.5, 16000), suffix=".wav")
    utterances, skipped = read_librispeech(corpus)
    assert [u.id for u in utterances] == IDS + ["3752-4944-0007"] and utterances[-1].audio_path == wav
    reasons = {s["path"]: s["reason"] for s in skipped}
    assert "no transcript line" in reasons[str(orphan_audio)]
    assert "3752-4944-0006 has no .flac/.wav" in reasons[str(chapter(corpus) / "3752-4944.trans.txt")]


def write_table(path: Path, header: list[str], rows: list[list[str]], sep: str) -> Path:
    path.write_text("\n".join(sep.join(r) for r in [header, *rows]) + "\n")
    return path


def test_read_manifest_tsv_jsonl_and_skd_ctc_csv(corpus: Path) -> None:
    base = corpus.parent.parent  # manifests live in tmp_path; audio paths relative to it
    rel = {i: str((chapter(corpus) / f"{i}.flac").relative_to(base)) for i in IDS}
    tsv = write_table(base / "m.tsv", ["Audio", "Text"], [[rel[i], TEXTS[i]] for i in IDS], "\t")
    jsonl = base / "m.jsonl"
    jsonl.write_text("".join(json.dumps({"path": rel[i], "text": TEXTS[i].upper()}) + "\n" for i in IDS))
    # huutuongtu/skd-ctc: header ",Unnamed: 0,Path,Transcript", two index columns first
    csv = write_table(
        base / "train.csv",
        ["", "Unnamed: 0", "Path", "Transcript"],
        [[str(k), str(k), "./" + rel[i], TEXTS[i]] for k, i in enumerate(IDS)],
        ",",
    )
    for manifest in (tsv, jsonl, csv):
        utterances, skipped = read_manifest(manifest)
        assert [u.id for u in utterances] == IDS and skipped == []
        assert [normalize_transcript(u.text) for u in utterances] == [TEXTS[i] for i in IDS]
        assert utterances[0].audio_path == chapter(corpus) / f"{IDS[0]}.flac"

    info = prepare_dataset("manifest", csv, base / "prepared")
    assert info["counts"] == {"train": 2, "dev": 1, "test": 0} and info["dev_held_out"]


def test_read_manifest_malformed_rows_raise_with_line(tmp_path: Path) -> None:
    bad_fields = write_table(tmp_path / "a.tsv", ["audio", "text"], [["x.flac", "hi"], ["y.flac"]], "\t")
    with pytest.raises(SkdError, match="a.tsv: line 3: expected 2 fields"):
        read_manifest(bad_fields)
    no_text = write_table(tmp_path / "b.tsv", ["audio", "words"], [["x.flac", "hi"]], "\t")
    with pytest.raises(SkdError, match="b.tsv: line 2: a table manifest row needs the fields audio|path and text"):
        read_manifest(no_text)
    (tmp_path / "c.jsonl").write_text('{"audio": "x.flac", "text": "hi"}\n{"audio": "y.flac"\n')
    with pytest.raises(SkdError, match="c.jsonl: line 2: not valid JSON"):
        read_manifest(tmp_path / "c.jsonl")
    (tmp_path / "d.jsonl").write_text('{"audio": 3, "text": "hi"}\n')
    with pytest.raises(SkdError, match="d.jsonl: line 1: audio must be a non-empty string"):
        read_manifest(tmp_path / "d.jsonl")
    missing = write_table(tmp_path / "e.tsv", ["path", "transcript"], [["nowhere.flac", "hi"]], "\t")
    utterances, skipped = read_manifest(missing)
    assert utterances == [] and "audio file not found (manifest line 2)" in skipped[0]["reason"]


# ---- prep ---------------------------------------------------------------------------------


def test_prep_char_on_real_fixture(corpus: Path, tmp_path: Path) -> None:
    seen = []
    info = prepare_dataset("librispeech", corpus, tmp_path / "out", progress=lambda a, t, d: seen.append((a, t, d)))
    out = tmp_path / "out"
    assert info["counts"] == {"train": 2, "dev": 1, "test": 0} and info["skipped"] == 0
    assert {name: (s["role"], s["utterances"]) for name, s in info["sets"].items()} == {
        "dev-heldout": ("dev", 1),
        "my-corpus": ("train", 2),
    }
    assert info["tokenizer"] == {"dir": "tokenizer", "kind": "char", "vocab_size": 29}
    assert json.loads((out / "prep.json").read_text()) == info
    assert sum(a for a, _, _ in seen) == 3 and seen[-1][1] == 3
    rows = read_jsonl(out / "train.jsonl") + read_jsonl(out / "dev.jsonl")
    assert sorted(r["id"] for r in rows) == IDS
    row = next(r for r in rows if r["id"] == IDS[0])
    assert {k: v for k, v in row.items() if k != "set"} == {
        "id": IDS[0],
        "audio": str(chapter(corpus) / f"{IDS[0]}.flac"),
        "text": TEXTS[IDS[0]],
        "duration": 3.335,
        "num_samples": 53360,
        "sample_rate": 16000,
    }
    assert row["set"] in ("my-corpus", "dev-heldout")
    assert read_jsonl(out / "test.jsonl") == [] and read_jsonl(out / "skipped.jsonl") == []
    assert info["hours"]["train"] + info["hours"]["dev"] == pytest.approx((3.335 + 4.415 + 3.225) / 3600, abs=1e-4)

    prepared = load_prepared(out)
    assert [r["id"] for r in prepared.train] == sorted(r["id"] for r in prepared.train)
    assert isinstance(prepared.tokenizer, CharTokenizer) and prepared.info == info

    # Same input, same seed: identical manifests.
    again = prepare_dataset("librispeech", corpus, tmp_path / "out2")
    assert again["fingerprint"] == info["fingerprint"]


def test_prep_bpe_tokenizer(corpus: Path, tmp_path: Path) -> None:
    info = prepare_dataset("librispeech", corpus, tmp_path / "out", tokenizer="bpe", vocab_size=48, dev_fraction=0.0)
    assert info["counts"]["train"] == 3 and info["tokenizer"]["kind"] == "bpe"
    assert (tmp_path / "out" / "tokenizer" / "spm.model").is_file()
    prepared = load_prepared(tmp_path / "out")
    assert isinstance(prepared.tokenizer, SentencePieceTokenizer)
    for row in prepared.train:
        assert prepared.tokenizer.decode(prepared.tokenizer.encode(row["text"])) == row["text"]


def test_prep_skips_bad_inputs_and_resamples(corpus: Path, tmp_path: Path) -> None:
    bad = {
        add_utterance(corpus, "3752-4944-0003", "CORRUPT", np.random.default_rng(0).bytes(3000)): "cannot decode",
        add_utterance(corpus, "3752-4944-0004", "EMPTY", np.zeros(0, np.float32), suffix=".wav"): "0 samples",
        add_utterance(corpus, "3752-4944-0005", None, tone(0.5, 16000)): "no transcript line",
        add_utterance(corpus, "3752-4944-0006", "ROOM 42", tone(0.5, 16000)): "outside the tokenizer vocabulary: '24'",
        add_utterance(corpus, "3752-4944-0007", "CAFÉ", tone(0.5, 16000)): "vocabulary: 'é'",
        add_utterance(corpus, "3752-4944-0008", "   ", tone(0.5, 16000)): "empty transcript",
        add_utterance(corpus, "3752-4944-0009", "NO AUDIO", None).with_name("3752-4944.trans.txt"): "no .flac/.wav",
    }
    add_utterance(corpus, "3752-4944-0010", "EIGHT K", tone(1.0, 8000), sample_rate=8000)
    add_utterance(corpus, "3752-4944-0011", "FORTY FOUR K", tone(1.0, 44100, channels=2), sample_rate=44100)

    info = prepare_dataset("librispeech", corpus, tmp_path / "out")
    out = tmp_path / "out"
    skipped = {s["path"]: s["reason"] for s in read_jsonl(out / "skipped.jsonl")}
    assert info["skipped"] == len(skipped) == len(bad)
    for path, reason in bad.items():
        assert reason in skipped[str(path)]
    rows = {r["id"]: r for split in ("train", "dev") for r in read_jsonl(out / f"{split}.jsonl")}
    assert sorted(rows) == IDS + ["3752-4944-0010", "3752-4944-0011"]
    assert (rows["3752-4944-0010"]["sample_rate"], rows["3752-4944-0011"]["sample_rate"]) == (8000, 44100)
    assert read_audio(rows["3752-4944-0011"]["audio"]).shape == (16000,)


def test_prep_refuses_unusable_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SkdError, match="empty: no .flac/.wav audio files found"):
        prepare_dataset("librispeech", tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # the source is read before the output is claimed
    with pytest.raises(SkdError, match="raw data path not found"):
        prepare_dataset("librispeech", tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(SkdError, match="unknown source"):
        prepare_dataset("timit", tmp_path, tmp_path / "out")

    chap = tmp_path / "bad" / "1" / "2"
    chap.mkdir(parents=True)
    (chap / "1-2-0000.flac").write_bytes(b"not audio at all")
    (chap / "1-2.trans.txt").write_text("1-2-0000 HELLO\n")
    with pytest.raises(SkdError, match=r"bad: no usable utterances \(1 skipped, see .*skipped.jsonl\)"):
        prepare_dataset("librispeech", tmp_path / "bad", tmp_path / "out")
    assert "cannot decode" in read_jsonl(tmp_path / "out" / "skipped.jsonl")[0]["reason"]


def test_prep_overwrite_guard(corpus: Path, tmp_path: Path) -> None:
    prepare_dataset("librispeech", corpus, tmp_path / "out")
    with pytest.raises(SkdError, match="already holds a prepared dataset; pass --overwrite"):
        prepare_dataset("librispeech", corpus, tmp_path / "out")
    info = prepare_dataset("librispeech", corpus, tmp_path / "out", overwrite=True, dev_fraction=0.0)
    assert info["counts"]["train"] == 3
    with pytest.raises(SkdError, match="inside the output directory"):
        prepare_dataset("librispeech", corpus, corpus.parent.parent, overwrite=True)
    assert corpus.is_dir()


def test_load_prepared_errors(corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(SkdError, match="not a prepared dataset \\(no prep.json\\); run `skd asr-ctc prep` first"):
        load_prepared(tmp_path / "plain")
    prepare_dataset("librispeech", corpus, tmp_path / "out")
    train = tmp_path / "out" / "train.jsonl"
    train.write_text(train.read_text().splitlines()[0] + "\n")
    with pytest.raises(SkdError, match="fingerprint differs"):
        load_prepared(tmp_path / "out")


# ---- dataset and collate ------------------------------------------------------------------


def test_dataset_and_collate_shapes(corpus: Path, tmp_path: Path) -> None:
    prepare_dataset("librispeech", corpus, tmp_path / "out", dev_fraction=0.0)
    prepared = load_prepared(tmp_path / "out")
    dataset = AsrDataset(prepared.train, prepared.tokenizer, FeatureConfig())
    item = dataset[1]
    assert item["id"] == IDS[1] and item["index"] == 1 and item["features"].shape[1] == 80
    assert prepared.tokenizer.decode(item["targets"].tolist()) == TEXTS[IDS[1]]

    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=collate_asr)))
    lengths = [dataset[i]["features"].shape[0] for i in range(3)]
    assert batch["features"].shape == (3, max(lengths), 80)
    assert batch["feature_lengths"].tolist() == lengths
    assert batch["target_lengths"].tolist() == [len(TEXTS[i]) for i in IDS]
    assert batch["targets"].shape == (3, max(len(t) for t in TEXTS.values()))
    assert batch["targets"][2, len(TEXTS[IDS[2]]) :].eq(0).all()
    assert batch["features"][2, lengths[2] :].eq(0).all()
    assert batch["ids"] == IDS and batch["texts"] == [TEXTS[i] for i in IDS]
    assert batch["indices"].tolist() == [0, 1, 2]

    waves = collate_asr(
        [AsrDataset(prepared.train, prepared.tokenizer, FeatureConfig(kind="waveform"))[i] for i in range(3)]
    )
    assert waves["features"].shape == (3, 70640) and waves["feature_lengths"].tolist() == [53360, 70640, 51600]


# ---- synthetic corpus ---------------------------------------------------------------------


@pytest.mark.espeak
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng binary not installed")
def test_synthetic_corpus_layout_determinism_and_held_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = generate_synthetic_corpus(tmp_path / "a", n_train=12, n_dev=3, n_test=3, seed=0)
    assert root == tmp_path / "a" / "LibriSpeech"
    texts = {}
    for split, n in (("train", 12), ("dev", 3), ("test", 3)):
        utterances, skipped = read_librispeech(root / split)
        assert len(utterances) == n and skipped == []
        texts[split] = {u.text.lower() for u in utterances}
        for u in utterances:
            assert 1 <= len(u.text.split()) <= 4 and set(u.text.lower().split()) <= set(SYNTH_WORDS)
            assert u.audio_path.relative_to(root / split).parts[:2] == tuple(u.id.split("-")[:2])
            assert sf.info(str(u.audio_path)).samplerate == 16000
    assert not texts["dev"] & texts["train"] and not texts["test"] & texts["train"]

    def digest(r: Path) -> dict[str, str]:
        return {str(p.relative_to(r)): hashlib.sha256(p.read_bytes()).hexdigest() for p in r.rglob("*") if p.is_file()}

    assert digest(root) == digest(generate_synthetic_corpus(tmp_path / "b", n_train=12, n_dev=3, n_test=3, seed=0))
    other = generate_synthetic_corpus(tmp_path / "c", n_train=12, n_dev=3, n_test=3, seed=1)
    assert digest(root) != digest(other)

    # prep's synthetic source generates into out/raw and prepares it like LibriSpeech.
    monkeypatch.setattr(
        data, "generate_synthetic_corpus", functools.partial(generate_synthetic_corpus, n_train=12, n_dev=3, n_test=3)
    )
    info = prepare_dataset("synthetic", None, tmp_path / "syn")
    assert info["counts"] == {"train": 12, "dev": 3, "test": 3} and not info["dev_held_out"]
    assert info["raw"] == str(tmp_path / "syn" / "raw" / "LibriSpeech")
    assert os.path.isfile(tmp_path / "syn" / "prep.json")


def test_feature_cache_matches_on_the_fly_features(corpus: Path, tmp_path: Path) -> None:
    prepare_dataset("librispeech", corpus, tmp_path / "p")
    prepared = load_prepared(tmp_path / "p")
    rows = prepared.train + prepared.dev
    cfg = FeatureConfig()
    cached = AsrDataset(rows, prepared.tokenizer, cfg, cache=True)
    fresh = AsrDataset(rows, prepared.tokenizer, cfg)
    assert cached.cache is not None and len(cached.cache) == len(rows)
    for i in range(len(rows)):
        assert torch.equal(cached[i]["features"], fresh[i]["features"])
        assert torch.equal(cached[i]["targets"], fresh[i]["targets"])


def test_sentencepiece_keeps_eval_utterances_with_unseen_characters(corpus: Path, tmp_path: Path) -> None:
    # One held-out dev utterance whose text has letters that no train transcript has ("bm" in
    # "abandoned ... almost"): it must stay in dev, not be silently skipped.
    info = prepare_dataset("librispeech", corpus, tmp_path / "out", tokenizer="bpe", vocab_size=40, dev_fraction=0.3)
    assert info["counts"]["train"] + info["counts"]["dev"] == 3
    assert info["skipped"] == 0
