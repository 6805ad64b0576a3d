"""mode=nmt: the embedding-space self-KD on the shared Transformer encoder-decoder, through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO, invoke, invoke_json, sets

NMT_TINY = [
    "nmt.d_model=16",
    "nmt.num_heads=2",
    "nmt.ff_dim=32",
    "nmt.encoder_layers=1",
    "nmt.decoder_layers=1",
    "train.batch_size=8",
    "train.warmup_steps=2",
    "train.log_every=1",
    "kd.topk=4",
    "kd.beta=0.5",
    "kd.refresh_every=2",
    "eval.valid_decode_max=8",
    "eval.beam_size=2",
    "eval.max_len_b=16",
]


def test_nmt_train_eval_neighbours(nlp_embed_nmt_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "nmt"
    trained = invoke_json(
        "nlp-embed",
        "train",
        "--data",
        nlp_embed_nmt_corpus,
        "--run-dir",
        run,
        "--max-steps",
        "4",
        *sets(*NMT_TINY, "train.eval_every=2"),
    )
    assert trained["steps"] == 4 and trained["kd_method"] == "skd"
    assert yaml.safe_load((run / "config.yaml").read_text())["mode"] == "nmt"  # set from the dataset
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("loss/soft" in r for r in rows if r["split"] == "train")
    assert all({"bleu", "nll", "ece"} <= set(r) for r in rows if r["split"] == "eval")
    result = invoke_json("nlp-embed", "eval", "--run-dir", run)
    assert result["mode"] == "nmt" and result["decoder"] == "beam2" and result["sentences"] == 16
    assert 0 <= result["bleu"] <= 100 and 0 <= result["bleu_sacre"] <= 100 and 0 <= result["ece"] <= 1
    assert (run / "plots" / "reliability.png").is_file() and len(result["examples"]) == 3
    piece = (nlp_embed_nmt_corpus / "train.tgt").read_text().split()[0]
    near = invoke_json("nlp-embed", "neighbours", "--run-dir", run, "--word", "▁" + piece, "--k", "3")
    assert len(near["neighbours"]) == 3


def test_iwslt14_config_is_the_nlg_smooth_architecture() -> None:
    """The paper-scale NMT config: transformer_iwslt_de_en exactly as nlg-smooth's iwslt14.yaml builds it."""
    from skdcli.engine.config import build_config
    from skdcli.nlg_smooth.config import NlgSmoothConfig
    from skdcli.nlp_embed.config import NlpEmbedConfig

    ne = build_config(NlpEmbedConfig, REPO / "recipes" / "nlp_embed" / "iwslt14.yaml")
    nlg = build_config(NlgSmoothConfig, REPO / "recipes" / "nlg_smooth" / "iwslt14.yaml")
    assert ne.mode == "nmt" and ne.nmt == nlg.model and ne.nmt.arch == "fairseq" and not ne.nmt.share_embeddings
    assert (ne.eval.max_len_a, ne.eval.max_len_b, ne.eval.beam_size) == (0.0, 200, 5)
    assert ne.train.lr == nlg.train.lr and ne.train.warmup_steps == nlg.train.warmup_steps == 4000


def test_nmt_baseline_and_bad_method(nlp_embed_nmt_corpus: Path, tmp_path: Path) -> None:
    result = invoke_json(
        "nlp-embed",
        "train",
        "--data",
        nlp_embed_nmt_corpus,
        "--run-dir",
        tmp_path / "ce",
        "--max-steps",
        "2",
        "--baseline",
        *sets(*NMT_TINY, "train.eval_every=0"),
    )
    assert result["kd_method"] == "ce"
    bad = invoke(
        "nlp-embed",
        "train",
        "--data",
        nlp_embed_nmt_corpus,
        "--run-dir",
        tmp_path / "x",
        "--max-steps",
        "2",
        *sets(*NMT_TINY, "kd.method=input_noise"),
    )
    assert bad.exit_code == 2 and "input_noise is implemented for mode=lm only" in bad.stderr


def test_run_on_a_parallel_dataset_exports_and_translates(nlp_embed_nmt_corpus: Path, tmp_path: Path) -> None:
    """`run --data <parallel>` is the NMT half: train, eval (BLEU + signature), export; then `translate`
    reads the export alone through the text stack's shared Translator."""
    run = tmp_path / "r"
    result = invoke_json(
        "nlp-embed",
        "run",
        "--run-dir",
        run,
        "--data",
        nlp_embed_nmt_corpus,
        "--no-baselines",
        "--max-steps",
        "3",
        *sets(*NMT_TINY, "train.eval_every=0"),
    )
    assert result["mode"] == "nmt" and set(result["systems"]) == {"skd"} and 0 <= result["bleu"] <= 100
    assert result["bleu_sacre_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["interface"] == "translation" and manifest["task"] == "nlp-embed" and manifest["kd_method"] == "skd"
    assert manifest["parity"]["max_abs_diff"] < 1e-4 and manifest["model"]["arch"] == "fairseq"
    sentences = (nlp_embed_nmt_corpus / "test.src").read_text().splitlines()[:2]
    proc = subprocess.run(
        [sys.executable, "-m", "skdcli", "nlp-embed", "translate", "--model", str(run / "export")],
        input="\n".join([sentences[0], "", sentences[1]]) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")[:-1]
    assert len(lines) == 3 and lines[1] == ""
    out = invoke_json("nlp-embed", "translate", "--model", run / "export", *sentences)
    assert [t["hyp"] for t in out["translations"]] == [lines[0], lines[2]]
    refused = invoke("nlp-embed", "sample", "--model", run / "export", "--prompt", "x")
    assert refused.exit_code == 2 and "use `skd nlp-embed translate`" in refused.stderr
    other = invoke("nlg-smooth", "translate", "--model", run / "export", "x")
    assert other.exit_code == 2 and "not a nlg-smooth export" in other.stderr
