"""Real-format readers: Karpathy / LAVIS JSON + images through a local HF encoder, embedding
parquet import, resumable extraction, and the bad inputs the issue lists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke, invoke_json, sets
from fixtures_retrieval import RETRIEVAL_FIXTURES
from skdcli.retrieval.data import read_embeddings, read_karpathy, write_embeddings
from test_retrieval_cli import assert_one_line_error

COCO_JPG = RETRIEVAL_FIXTURES / "val2014" / "COCO_val2014_000000522418.jpg"


def test_read_both_karpathy_layouts(tmp_path: Path) -> None:
    lavis = read_karpathy(RETRIEVAL_FIXTURES / "coco_karpathy_train.json")
    assert len(lavis) == 1 and lavis[0]["split"] == "train" and len(lavis[0]["sentences"]) == 5
    assert lavis[0]["filename"] == "val2014/COCO_val2014_000000522418.jpg" and lavis[0]["imgid"] == "coco_522418"
    assert (
        lavis[0]["sentences"][0]["raw"] == "A woman wearing a net on her head cutting a cake."
    )  # trailing space stripped
    karpathy = {
        "images": [
            {
                "filepath": "val2014",
                "filename": "a.jpg",
                "imgid": 0,
                "split": "restval",
                "sentids": [7],
                "sentences": [{"tokens": ["x"], "raw": "x", "imgid": 0, "sentid": 7}],
            },
            {
                "filepath": "val2014",
                "filename": "b.jpg",
                "imgid": 1,
                "split": "test",
                "sentids": [8],
                "sentences": [{"tokens": ["y"], "raw": "y", "imgid": 1, "sentid": 8}],
            },
        ],
        "dataset": "coco",
    }
    (tmp_path / "dataset_coco.json").write_text(json.dumps(karpathy))
    rows = read_karpathy(tmp_path / "dataset_coco.json")
    assert [(r["imgid"], r["split"], r["filename"]) for r in rows] == [
        ("0", "train", "val2014/a.jpg"),
        ("1", "test", "val2014/b.jpg"),
    ]
    assert rows[0]["sentences"][0]["sentid"] == "7"
    assert [r["imgid"] for r in read_karpathy(tmp_path / "dataset_coco.json", restval="drop")] == ["1"]


def test_prep_real_coco_image_through_a_tiny_clip(retrieval_tiny_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "coco"
    result = invoke_json(
        "retrieval",
        "prep",
        "--source",
        "karpathy",
        "--raw",
        RETRIEVAL_FIXTURES,
        "--encoder",
        retrieval_tiny_clip,
        "--out",
        out,
    )
    assert result["images"] == 1 and result["captions"] == 5 and result["encoder_kind"] == "clip"
    assert result["text_dim"] == 64 and result["img_dim"] == 64 and result["vocab_size"] == result["vocab_size"] > 20
    ids, embs = read_embeddings(out / "text_embs.parquet")
    assert len(ids) == 5 and embs.shape == (5, 64) and np.isfinite(embs).all()
    from datasets import Dataset  # the official code reads these files the same way

    assert Dataset.from_parquet(str(out / "img_embs.parquet")).column_names == ["id", "emb"]
    from safetensors.torch import load_file

    init = load_file(str(out / "encoder_init.safetensors"))
    assert init["E"].shape[1] == 64 and init["text_proj.weight"].shape == (32, 64)


def test_prep_tiny_blip_checkpoint(tmp_path: Path) -> None:
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor

    from skdcli.retrieval.encoder import build_word_tokenizer

    words = "a woman cutting cake white sheet hair net wearing".split()
    tok = build_word_tokenizer(words, 16)
    cfg = BlipConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=32,
            encoder_hidden_size=32,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    model_dir = tmp_path / "blip"
    BlipForImageTextRetrieval(cfg).eval().save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    BlipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(model_dir))
    result = invoke_json(
        "retrieval",
        "prep",
        "--source",
        "karpathy",
        "--raw",
        RETRIEVAL_FIXTURES,
        "--encoder",
        model_dir,
        "--out",
        tmp_path / "out",
    )
    assert result["encoder_kind"] == "blip" and result["text_dim"] == 32 and result["img_dim"] == 32


def test_missing_and_undecodable_images(retrieval_tiny_clip: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(RETRIEVAL_FIXTURES / "coco_karpathy_train.json", raw)
    missing = invoke(
        "retrieval",
        "prep",
        "--source",
        "karpathy",
        "--raw",
        raw,
        "--encoder",
        retrieval_tiny_clip,
        "--out",
        tmp_path / "o1",
    )
    assert_one_line_error(missing, "missing", "COCO_val2014_000000522418.jpg")
    (raw / "val2014").mkdir()
    (raw / "val2014" / COCO_JPG.name).write_bytes(b"this is not a jpeg")
    broken = invoke(
        "retrieval",
        "prep",
        "--source",
        "karpathy",
        "--raw",
        raw,
        "--encoder",
        retrieval_tiny_clip,
        "--out",
        tmp_path / "o2",
    )
    assert_one_line_error(broken, "does not decode", COCO_JPG.name)
    assert_one_line_error(
        invoke("retrieval", "prep", "--source", "karpathy", "--raw", RETRIEVAL_FIXTURES, "--out", tmp_path / "o3"),
        "--encoder",
    )
    assert_one_line_error(
        invoke(
            "retrieval",
            "prep",
            "--source",
            "karpathy",
            "--raw",
            RETRIEVAL_FIXTURES,
            "--encoder",
            tmp_path,
            "--out",
            tmp_path / "o4",
        ),
        "config.json",
    )


def test_extraction_resumes_from_finished_shards(retrieval_tiny_clip: Path, tmp_path: Path, monkeypatch) -> None:
    from skdcli.engine.errors import SkdError
    from skdcli.retrieval import encoder as enc_mod
    from skdcli.retrieval.recipe import prep_stage

    calls, kill = [], [True]
    original = enc_mod.FrozenEncoder.encode_text

    def flaky(self, texts):
        calls.append(len(texts))
        if kill[0] and len(calls) == 2:
            raise SkdError("killed mid-extraction")
        return original(self, texts)

    monkeypatch.setattr(enc_mod.FrozenEncoder, "encode_text", flaky)
    out = tmp_path / "o"
    with pytest.raises(SkdError, match="killed"):
        prep_stage("karpathy", str(RETRIEVAL_FIXTURES), str(out), str(retrieval_tiny_clip), batch_size=2, shard_size=2)
    assert (out / ".prep-in-progress").is_file() and (out / "shards" / "text_00000.parquet").is_file()
    calls.clear()
    kill[0] = False
    result = prep_stage(
        "karpathy", str(RETRIEVAL_FIXTURES), str(out), str(retrieval_tiny_clip), batch_size=2, shard_size=2
    )
    assert result["resumed"] and result["captions"] == 5
    assert calls == [2, 1]  # shard 0 (captions 1-2) was not recomputed; shards 1 and 2 were
    assert len(read_embeddings(out / "text_embs.parquet")[0]) == 5


def official_layout(folder: Path, width: int = 48, n_train: int = 40, n_test: int = 10, n_restval: int = 0) -> Path:
    """dataset_meta.json + {text,img}_embs_before_proj_blip.parquet as the official .cache/ holds them
    (the last ``n_restval`` images are COCO's `restval`)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    images, img_ids, text_ids = [], [], []
    for i in range(n_train + n_test + n_restval):
        sents = [{"raw": f"a photo of caption {i} {j}", "sentid": 5 * i + j} for j in range(2)]
        split = "train" if i < n_train else "test" if i < n_train + n_test else "restval"
        images.append({"imgid": i, "filename": f"{i}.jpg", "split": split, "sentences": sents})
        img_ids.append(str(i))
        text_ids += [str(s["sentid"]) for s in sents]
    (folder / "dataset_meta.json").write_text(json.dumps({"images": images}))
    concept = rng.normal(size=(len(img_ids), 8))
    write_embeddings(
        folder / "img_embs_before_proj_blip.parquet",
        img_ids,
        concept @ rng.normal(size=(8, width)) + 0.1 * rng.normal(size=(len(img_ids), width)),
    )
    write_embeddings(
        folder / "text_embs_before_proj_blip.parquet",
        text_ids,
        np.repeat(concept, 2, axis=0) @ rng.normal(size=(8, width)),
    )
    return folder


def test_import_official_embeddings_then_train_and_search_by_id(tmp_path: Path) -> None:
    raw = official_layout(tmp_path / "cache")
    out = tmp_path / "prepared"
    result = invoke_json(
        "retrieval", "prep", "--source", "embeddings", "--raw", raw, "--out", out, "--vocab-size", "50"
    )
    assert result["images"] == 50 and result["captions"] == 100 and not result["has_word_embeddings"]
    assert result["vocab_size"] == 50 and result["encoder"] is None
    run = tmp_path / "run"
    quick = ("train.batch_size=16", "train.warmup_steps=1", "model.word_dim=16", "train.eval_every=0")
    # no encoder and no --init: the projections and E cannot start from the encoder, and that is said, not skipped
    refused = invoke("retrieval", "train", "--data", out, "--run-dir", run, "--max-steps", "6", *sets(*quick))
    assert_one_line_error(refused, "init_proj_from_encoder", "no text_proj", "--init FILE")
    assert not run.exists()  # checked before the run directory is written
    invoke_json(
        "retrieval",
        "train",
        "--data",
        out,
        "--run-dir",
        run,
        "--max-steps",
        "6",
        *sets(*quick, "model.init_proj_from_encoder=false", "model.init_vocab_from_encoder=false"),
    )
    invoke_json("retrieval", "index", "--run-dir", run, "--engine", "exact")
    assert_one_line_error(invoke("retrieval", "search", "--run-dir", run, "--query", "a cat"), "--query-id")
    found = invoke_json("retrieval", "search", "--run-dir", run, "--query-id", "200")
    assert found["results"][0]["engine"] == "exact" and len(found["results"][0]["hits"]) == 10


def test_embedding_file_with_the_wrong_width(retrieval_tiny_clip: Path, tmp_path: Path) -> None:
    raw = official_layout(tmp_path / "cache", width=48)  # the tiny CLIP's encoder width is 64
    bad = invoke(
        "retrieval",
        "prep",
        "--source",
        "embeddings",
        "--raw",
        raw,
        "--encoder",
        retrieval_tiny_clip,
        "--out",
        tmp_path / "o",
    )
    assert_one_line_error(bad, "text_embs_before_proj_blip.parquet", "width 48, expected 64")
    from datasets import Dataset

    Dataset.from_dict({"id": ["a", "b"], "emb": [[1.0, 2.0], [1.0]]}).to_parquet(str(tmp_path / "ragged.parquet"))
    from skdcli.engine.errors import SkdError

    with pytest.raises(SkdError, match="different widths"):
        read_embeddings(tmp_path / "ragged.parquet")
    Dataset.from_dict({"key": ["a"]}).to_parquet(str(tmp_path / "nocol.parquet"))
    with pytest.raises(SkdError, match="missing column"):
        read_embeddings(tmp_path / "nocol.parquet")


def test_import_embeddings_with_an_encoder_takes_its_vocabulary(retrieval_tiny_clip: Path, tmp_path: Path) -> None:
    raw = official_layout(tmp_path / "cache", width=64)
    result = invoke_json(
        "retrieval",
        "prep",
        "--source",
        "embeddings",
        "--raw",
        raw,
        "--encoder",
        retrieval_tiny_clip,
        "--out",
        tmp_path / "o",
    )
    vocab = (tmp_path / "o" / "vocab.txt").read_text().splitlines()
    assert result["has_word_embeddings"] and result["vocab_size"] == len(vocab) and "cake" in vocab
    assert result["encoder_kind"] == "clip" and Path(result["encoder"]).is_absolute()
