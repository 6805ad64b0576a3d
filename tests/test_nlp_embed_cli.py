"""Every nlp-embed stage through the CLI on generated / fixture data, and its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import invoke, invoke_json, sets
from fixtures_nlp_embed import NLP_EMBED_TINY, NLP_EMBED_WIKITEXT


def test_prep_wikitext2_and_synthetic(tmp_path: Path) -> None:
    wt = invoke_json(
        "nlp-embed", "prep", "--source", "wikitext2", "--raw", NLP_EMBED_WIKITEXT, "--out", tmp_path / "wt2"
    )
    assert wt["source"] == "wikitext2" and wt["splits"]["train"]["tokens"] > 1000 and not wt["has_classes"]
    syn = invoke_json("nlp-embed", "prep", "--source", "synthetic", "--out", tmp_path / "syn", "--seed", "1")
    assert syn["has_classes"] and syn["vocab_size"] == 98  # 8 classes x 12 words + <eos> + <unk>
    assert (tmp_path / "syn" / "raw" / "ptb.train.txt").is_file() and (tmp_path / "syn" / "classes.json").is_file()
    again = invoke("nlp-embed", "prep", "--source", "synthetic", "--out", tmp_path / "syn")
    assert again.exit_code == 2 and "--overwrite" in again.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "penn", "--raw", "."], "unknown source 'penn'; valid: ptb, wikitext2, text, synthetic, iwslt14"),
        (["--source", "ptb"], "--source ptb needs --raw DIR"),
        (["--source", "wikitext2", "--raw", "MISSING"], "raw corpus directory not found"),
        (["--source", "synthetic", "--empty-lines", "drop"], "--empty-lines: 'drop'"),
    ],
)
def test_prep_bad_input_is_one_line(tmp_path: Path, args, message) -> None:
    args = [str(tmp_path / a) if a == "MISSING" else a for a in args]
    result = invoke("nlp-embed", "prep", *args, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert (
        message in result.stderr and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    )


def test_prep_non_utf8_and_missing_split_through_the_cli(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "wiki.train.tokens").write_bytes(b" good\n bad \xe9t\xe9 \n")
    (raw / "wiki.valid.tokens").write_text(" a\n")
    result = invoke("nlp-embed", "prep", "--source", "wikitext2", "--raw", raw, "--out", tmp_path / "o1")
    assert result.exit_code == 2 and "no test split" in result.stderr
    (raw / "wiki.test.tokens").write_text(" a\n")
    result = invoke("nlp-embed", "prep", "--source", "wikitext2", "--raw", raw, "--out", tmp_path / "o2")
    assert result.exit_code == 2 and "wiki.train.tokens: line 2, column 6: not valid UTF-8" in result.stderr


def test_train_logs_the_skd_terms_and_refreshes_the_table(nlp_embed_run: Path) -> None:
    rows = [json.loads(line) for line in (nlp_embed_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 8 and all("loss/soft" in r and r["weight/beta"] == 0.5 for r in train)
    assert all(0 < r["target/gold_mass"] < 1 for r in train)
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [4, 8] and all({"ppl", "ece", "mce", "nll"} <= set(r) for r in evals)
    state = torch.load(nlp_embed_run / "checkpoints" / "step_00000008" / "state.pt", weights_only=True)
    table = state["teachers"]["neighbours"]
    assert table["table"].shape == (98, 4) and table["built_at"] == 6  # refresh_every=2: steps 0, 2, 4, 6


def test_eval_reports_perplexity_and_calibration(nlp_embed_run: Path, tmp_path: Path) -> None:
    result = invoke_json("nlp-embed", "eval", "--run-dir", nlp_embed_run, "--split", "valid")
    assert result["ppl"] == pytest.approx(torch.tensor(result["nll"]).exp().item(), rel=1e-6)
    assert 1 < result["ppl"] < 98 * 1.5 and 0 <= result["ece"] <= result["mce"] <= 1
    assert sum(b["count"] for b in result["bins"]) == result["tokens"]
    assert Path(result["reliability_png"]).read_bytes()[:4] == b"\x89PNG"
    assert 0 <= result["class_purity@5"] <= 1 and 20 < result["oracle_ppl"] < 30  # the chain's floor, ~24
    bad = invoke("nlp-embed", "eval", "--run-dir", nlp_embed_run, "--split", "dev")
    assert bad.exit_code == 2 and "no 'dev' split" in bad.stderr
    missing = invoke("nlp-embed", "eval", "--run-dir", tmp_path / "nope")
    assert missing.exit_code == 2 and "run directory not found" in missing.stderr


def test_perplexity_matches_a_hand_computation(nlp_embed_run: Path) -> None:
    from skdcli.engine.stages import load_trained
    from skdcli.nlp_embed.recipe import HOOKS

    result = invoke_json("nlp-embed", "eval", "--run-dir", nlp_embed_run, "--split", "test")
    trained = load_trained(HOOKS, nlp_embed_run)
    cfg, task, model = trained.cfg, trained.task, trained.model
    stream, bptt = task.corpus.streams["test"], cfg.data.bptt
    nll, n, state = 0.0, 0, None
    with torch.no_grad():
        for start in range(0, len(stream) - 1, bptt):  # window after window, the LSTM state carried, by hand
            chunk = stream[start : start + bptt + 1]
            logits, state = model(chunk[:-1].unsqueeze(0), state=state, return_state=True)
            logp = torch.log_softmax(logits[0], -1)
            nll -= float(logp.gather(1, chunk[1:].unsqueeze(1)).sum())
            n += len(chunk) - 1
    assert n == len(stream) - 1 == result["tokens"]
    assert result["ppl"] == pytest.approx(float(torch.tensor(nll / n).exp()), rel=1e-5)


def task_data(run: Path) -> Path:
    return Path(json.loads((run / "provenance.json").read_text())["data_dir"])


def test_export_sample_and_neighbours(nlp_embed_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    exported = invoke_json("nlp-embed", "export", "--run-dir", nlp_embed_run, "--out", out)
    assert exported["interface"] == "recurrent_step" and exported["parity_max_abs_diff"] < 1e-5
    assert {"model.pt2", "model.safetensors", "vocab.txt"} <= set(exported["files"]) and (
        out / "manifest.json"
    ).is_file()
    assert invoke("nlp-embed", "export", "--run-dir", nlp_embed_run, "--out", out).exit_code == 2  # no --overwrite
    vocab = (out / "vocab.txt").read_text().splitlines()
    word = vocab[5]
    sampled = invoke_json(
        "nlp-embed",
        "sample",
        "--model",
        out,
        "--prompt",
        f"{word} zzz",
        "--num-samples",
        "2",
        "--top-k",
        "5",
        "--max-new-tokens",
        "12",
    )
    assert sampled["unknown_words"] == ["zzz"] and len(sampled["samples"]) == 2
    assert all(w in vocab for s in sampled["samples"] for w in s.split())
    greedy = [
        invoke_json("nlp-embed", "sample", "--model", out, "--prompt", word, "--temperature", "0", "--seed", str(s))[
            "samples"
        ]
        for s in (1, 2)
    ]
    assert greedy[0] == greedy[1]  # greedy ignores the seed
    near = invoke_json("nlp-embed", "neighbours", "--run-dir", nlp_embed_run, "--word", word, "--k", "5")
    assert len(near["neighbours"]) == 5 and word not in [r["word"] for r in near["neighbours"]]
    assert near["sim"] == "cos" and "same_class_share" in near
    sims = [r["similarity"] for r in near["neighbours"]]
    assert sims == sorted(sims, reverse=True)
    human = invoke("nlp-embed", "neighbours", "--run-dir", nlp_embed_run, "--word", word, "--k", "5")
    assert human.exit_code == 0 and human.stdout == "" and near["neighbours"][0]["word"] in human.stderr
    bad = invoke("nlp-embed", "neighbours", "--run-dir", nlp_embed_run, "--word", "notaword")
    assert bad.exit_code == 2 and "'notaword' is not in the vocabulary" in bad.stderr
    not_export = invoke("nlp-embed", "sample", "--model", tmp_path, "--prompt", "a")
    assert not_export.exit_code == 2 and "manifest.json" in not_export.stderr


def test_transformer_exports_the_sequence_program(nlp_embed_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "tf"
    invoke_json(
        "nlp-embed",
        "train",
        "--data",
        nlp_embed_corpus,
        "--run-dir",
        run,
        "--max-steps",
        "2",
        *sets(
            *NLP_EMBED_TINY, "model.arch=transformer", "model.max_len=32", "model.ff_dim=32", "data.bptt_mode=windows"
        ),
    )  # a Transformer LM carries no state
    exported = invoke_json("nlp-embed", "export", "--run-dir", run)
    assert exported["interface"] == "sequence" and exported["parity_max_abs_diff"] < 1e-5
    sampled = invoke_json(
        "nlp-embed", "sample", "--model", run / "export", "--max-new-tokens", "40", "--temperature", "0.5"
    )
    assert len(sampled["samples"]) == 1


def test_baseline_and_controls_train(nlp_embed_corpus: Path, tmp_path: Path) -> None:
    for name, extra in (
        ("ce", ["--baseline"]),
        ("noise", sets("kd.method=noise")),
        ("input_noise", sets("kd.method=input_noise")),
        ("full", sets("kd.topk=0", "kd.sim=neg_l2")),
    ):
        result = invoke_json(
            "nlp-embed",
            "train",
            "--data",
            nlp_embed_corpus,
            "--run-dir",
            tmp_path / name,
            "--max-steps",
            "3",
            *sets(*NLP_EMBED_TINY),
            *extra,
        )
        assert result["steps"] == 3
    assert result["kd_method"] == "skd"
    rows = [json.loads(x) for x in (tmp_path / "ce" / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert all("loss/soft" not in r for r in rows)
    # kd.topk=0 (the whole vocabulary) keeps no neighbour table; the LSTM state is the only signal saved
    saved = torch.load(tmp_path / "full" / "checkpoints" / "step_00000003" / "state.pt", weights_only=True)["teachers"]
    assert set(saved) == {"lstm_state"}


@pytest.mark.parametrize(
    "override, message",
    [
        ("kd.method=magic", "kd.method: 'magic' is not one of"),
        ("kd.topk=500", "kd.topk=500 is larger than the vocabulary"),
        ("kd.temperature=0", "kd.temperature must be > 0"),
        ("kd.wrong=1", "unknown config key 'kd.wrong'"),
    ],
)
def test_train_bad_config(nlp_embed_corpus: Path, tmp_path: Path, override: str, message: str) -> None:
    result = invoke("nlp-embed", "train", "--data", nlp_embed_corpus, "--run-dir", tmp_path / "r", "--set", override)
    assert result.exit_code == 2 and message in result.stderr


def test_resume_is_exact(nlp_embed_corpus: Path, tmp_path: Path) -> None:
    """Killed after step 4 and resumed = uninterrupted (the neighbour table comes from the checkpoint)."""
    # a constant LR: a cosine schedule over 4 steps would differ from one over 7 before the "kill"
    common = [
        "nlp-embed",
        "train",
        "--data",
        nlp_embed_corpus,
        *sets(*NLP_EMBED_TINY, "kd.refresh_every=3", "train.lr_schedule=constant", "train.eval_every=0"),
    ]
    invoke_json(*common, "--run-dir", tmp_path / "full", "--max-steps", "7")
    invoke_json(*common, "--run-dir", tmp_path / "part", "--max-steps", "4", "--checkpoint-every", "4")
    (tmp_path / "part" / "train_summary.json").unlink()  # as if killed right after the step-4 checkpoint
    invoke_json("nlp-embed", "train", "--run-dir", tmp_path / "part", "--resume", "--max-steps", "7")
    a = load_file(str(tmp_path / "full" / "checkpoints" / "step_00000007" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoints" / "step_00000007" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bench_reports_ratios_and_tokens_per_second() -> None:
    result = invoke_json(
        "bench", "nlp-embed", "--steps", "3", "--rounds", "1", "--set", "model.d_embed=16", "--set", "model.d_hidden=16"
    )
    assert result["task"] == "nlp-embed" and result["skd_over_baseline"] > 0 and result["engine_over_hand"] > 0
    assert result["tokens_per_step"] == 16 * 20 and result["tokens_per_second"]["engine"] > 0
    assert result["neighbour_table_ms"] > 0 and result["topk"] == 16


@pytest.mark.slow
def test_run_compares_skd_with_the_baselines(tmp_path: Path) -> None:
    result = invoke_json("nlp-embed", "run", "--run-dir", tmp_path / "run", "--max-steps", "100")
    assert set(result["systems"]) == {"skd", "ce", "ls", "noise", "random"} and result["kd_method"] == "skd"
    assert result["ppl_convention"].startswith("stateful")
    assert all(s["ppl"] < 98 for s in result["systems"].values())
    assert (tmp_path / "run" / "export" / "model.pt2").is_file()
    again = invoke("nlp-embed", "run", "--run-dir", tmp_path / "run")
    assert again.exit_code == 2 and "--overwrite" in again.stderr
