"""Every nlg-smooth stage through the CLI on generated data: outputs, --json, the prior, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, assert_one_line_error, invoke, invoke_json, sets
from fixtures_nlg_smooth import NLG_TINY_MODEL
from skdcli.engine.config import build_config
from skdcli.nlg_smooth.config import NlgSmoothConfig

RECIPE = REPO / "recipes" / "nlg_smooth"


def metrics(run: Path, split: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


def test_prep_cli_and_its_errors(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    info = invoke_json("nlg-smooth", "prep", "--source", "synthetic", "--out", out, "--seed", "1")
    assert info["counts"]["train"] > 1000 and info["tokenizer"]["vocab_size"] <= 200
    for name in ("train.src", "train.tgt", "valid.src", "test.tgt", "prep.json", "tokenizer/spm.model", "raw/train.de"):
        assert (out / name).is_file(), name
    assert_one_line_error(invoke("nlg-smooth", "prep", "--source", "synthetic", "--out", out), str(out), "--overwrite")
    assert_one_line_error(
        invoke("nlg-smooth", "prep", "--source", "europarl", "--raw", tmp_path, "--out", tmp_path / "o"),
        "unknown source 'europarl'",
    )
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"de": f"satz nummer {i}", "en": f"sentence number {i}"}) + "\n" for i in range(50))
    )
    par = invoke_json(
        "nlg-smooth", "prep", "--source", "parallel", "--raw", jsonl, "--out", tmp_path / "par", "--vocab-size", "40"
    )
    assert par["counts"] == {"train": 44, "valid": 3, "test": 3} and par["source"] == "parallel"
    raw = tmp_path / "iw"
    raw.mkdir()
    (raw / "train.de").write_text("a\nb\nc\n")
    (raw / "train.en").write_text("x\ny\n")
    assert_one_line_error(
        invoke("nlg-smooth", "prep", "--source", "iwslt14", "--raw", raw, "--out", tmp_path / "o"),
        f"{raw / 'train.de'} has 3 lines but {raw / 'train.en'} has 2 lines",
    )


def test_train_outputs_and_the_prior_is_swapped_only_on_improvement(nlg_smooth_run: Path) -> None:
    run = nlg_smooth_run
    for name in (
        "config.yaml",
        "provenance.json",
        "train_summary.json",
        "checkpoints/best/model.safetensors",
        "plots/loss.png",
    ):
        assert (run / name).is_file(), name
    train = metrics(run, "train")
    evals = metrics(run, "eval")
    assert [e["step"] for e in evals] == [4, 8, 12]
    assert {"nll", "ppl", "ece", "mce", "bleu", "bleu_sacre", "chrf"} <= set(evals[0])
    gen = {r["step"]: r["weight/prior_generation"] for r in train}
    assert all(gen[s] == 0 for s in (1, 2, 3, 4))  # no prior before the first validation (uniform fallback)
    assert gen[5] == 1  # the step-4 model became the prior
    improved = [e["nll"] < min(x["nll"] for x in evals[:i]) for i, e in enumerate(evals) if i]
    assert gen[12] == 1 + sum(improved[:1])  # swapped at step 8 only if step 8's NLL beat step 4's
    assert all(0 <= r["weight/alpha"] <= 0.5 for r in train)
    state = torch.load(sorted((run / "checkpoints").glob("step_*"))[-1] / "state.pt", weights_only=True)
    assert state["teachers"]["prior"]["ready"] and state["teachers"]["prior"]["best"] == min(e["nll"] for e in evals)


def test_best_checkpoint_prior_unit(nlg_smooth_corpus: Path) -> None:
    from skdcli.nlg_smooth.recipe import NlgSmoothTask

    cfg = build_config(NlgSmoothConfig, None, NLG_TINY_MODEL)
    task = NlgSmoothTask(cfg, nlg_smooth_corpus)
    model = task.build_model()
    prior = task.teachers()["prior"]
    assert not prior.ready
    prior.on_eval(model, {})  # no evaluation ran (engine change): nothing happens
    assert not prior.ready and prior.generation == 0
    prior.on_eval(model, {"nll": 2.0})
    first = {k: v.clone() for k, v in prior.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    prior.on_eval(model, {"nll": 2.5})  # worse: the prior stays
    assert prior.generation == 1 and all(torch.equal(first[k], v) for k, v in prior.model.state_dict().items())
    prior.on_eval(model, {"nll": 1.5})  # better: swapped in
    assert prior.generation == 2 and not torch.equal(first["embed.weight"], prior.model.state_dict()["embed.weight"])
    assert not any(p.requires_grad for p in prior.model.parameters()) and not prior.model.training
    assert "prior" not in dict(model.named_modules())  # not a submodule: the student's weights stay alone


def test_baseline_and_methods_are_recorded(nlg_smooth_corpus: Path, tmp_path: Path) -> None:
    for args, method in ((["--baseline"], "ce"), (sets("loss.method=confpen"), "confpen")):
        run = tmp_path / method
        res = invoke_json(
            "nlg-smooth",
            "train",
            "--data",
            nlg_smooth_corpus,
            "--run-dir",
            run,
            "--max-steps",
            "2",
            *args,
            *sets(*NLG_TINY_MODEL, "train.eval_every=0"),
        )
        assert res["method"] == method
        assert yaml.safe_load((run / "config.yaml").read_text())["loss"]["method"] == method
    assert_one_line_error(
        invoke(
            "nlg-smooth", "train", "--data", nlg_smooth_corpus, "--run-dir", tmp_path / "x", *sets("loss.method=kd")
        ),
        "loss.method: 'kd' is not one of",
    )
    assert_one_line_error(
        invoke("nlg-smooth", "train", "--data", tmp_path / "none", "--run-dir", tmp_path / "y"),
        "prepared dataset not found",
    )
    assert_one_line_error(
        invoke(
            "nlg-smooth",
            "train",
            "--data",
            nlg_smooth_corpus,
            "--run-dir",
            tmp_path / "z",
            *sets(*NLG_TINY_MODEL, "model.max_positions=6"),
        ),
        "more than the model's limit of 4",
    )


def test_resume_continues_exactly(nlg_smooth_corpus: Path, tmp_path: Path) -> None:
    # The prior's weights and best value live in the checkpoint: a resumed run replays the same steps.
    # (Extending a finished 3-step run = the 6-step run when the LR schedule does not depend on
    # max_steps and both validate at step 3, where the prior is swapped in.)
    common = [
        "nlg-smooth",
        "train",
        "--data",
        nlg_smooth_corpus,
        "--checkpoint-every",
        "3",
        *sets(*NLG_TINY_MODEL, "train.eval_every=3", "eval.valid_bleu=false", "train.lr_schedule=constant"),
    ]
    invoke_json(*common, "--run-dir", tmp_path / "full", "--max-steps", "6")
    invoke_json(*common, "--run-dir", tmp_path / "part", "--max-steps", "3")
    invoke_json("nlg-smooth", "train", "--run-dir", tmp_path / "part", "--resume", "--max-steps", "6")
    full = [r["loss"] for r in metrics(tmp_path / "full", "train")]
    part = [r["loss"] for r in metrics(tmp_path / "part", "train")]
    assert part == pytest.approx(full, rel=1e-6) and len(full) == 6


def test_eval_writes_scores_plot_and_translations(nlg_smooth_run: Path) -> None:
    res = invoke_json("nlg-smooth", "eval", "--run-dir", nlg_smooth_run, "--ece-bins", "5")
    assert res["split"] == "test" and res["sentences"] == 24 and res["decoder"] == "beam2"
    for key in ("bleu", "bleu_sacre", "chrf"):
        assert 0.0 <= res[key] <= 100.0
    assert 0.0 <= res["ece"] <= res["mce"] <= 1.0 and res["ece_bins"] == 5 and res["nll"] > 0
    assert "tokenized, case-insensitive" in res["bleu_convention"]
    assert Path(res["reliability_plot"]).read_bytes()[:4] == b"\x89PNG"
    assert len(Path(res["translations"]).read_text().splitlines()) == 24
    assert json.loads((nlg_smooth_run / "eval.json").read_text())["bleu"] == res["bleu"]
    greedy = invoke_json("nlg-smooth", "eval", "--run-dir", nlg_smooth_run, "--beam-size", "1", "--split", "valid")
    assert greedy["decoder"] == "greedy" and greedy["split"] == "valid"
    assert_one_line_error(
        invoke("nlg-smooth", "eval", "--run-dir", nlg_smooth_run.parent / "missing"), "run directory not found"
    )


def test_export_and_translate(nlg_smooth_export: Path, nlg_smooth_corpus: Path, tmp_path: Path) -> None:
    manifest = json.loads((nlg_smooth_export / "manifest.json").read_text())
    assert manifest["task"] == "nlg-smooth" and manifest["parity"]["max_abs_diff"] < 1e-4
    assert (nlg_smooth_export / "tokenizer" / "spm.model").is_file()
    sentences = (nlg_smooth_corpus / "test.src").read_text().splitlines()[:3]
    res = invoke_json("nlg-smooth", "translate", "--model", nlg_smooth_export, *sentences[:2])
    assert [t["src"] for t in res["translations"]] == sentences[:2]
    # stdin: one line in, one line out, empty lines kept, nothing else on stdout
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "skdcli",
            "nlg-smooth",
            "translate",
            "--model",
            str(nlg_smooth_export),
            "--batch-size",
            "2",
        ],
        input="\n".join([sentences[0], "", sentences[1], sentences[2]]) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")[:-1]
    assert len(lines) == 4 and lines[1] == ""
    assert lines[0] == res["translations"][0]["hyp"] and lines[2] == res["translations"][1]["hyp"]
    assert_one_line_error(
        invoke("nlg-smooth", "translate", "--model", nlg_smooth_export, "la " * 300),
        "argument: line 1",
        "more than the model's limit",
    )
    assert_one_line_error(invoke("nlg-smooth", "translate", "--model", tmp_path, "x"), "no manifest.json")
    assert_one_line_error(
        invoke("nlg-smooth", "export", "--run-dir", nlg_smooth_export.parent.parent / "nope"), "run directory not found"
    )


@pytest.mark.slow
def test_bench_json(nlg_smooth_corpus: Path) -> None:
    res = invoke_json(
        "bench", "nlg-smooth", "--data", nlg_smooth_corpus, "--steps", "3", "--rounds", "1", *sets(*NLG_TINY_MODEL)
    )
    assert res["task"] == "nlg-smooth" and res["skd_over_baseline"] > 0
    assert set(res["tokens_per_second"]) == {"hand", "engine", "engine_baseline"}
    assert res["prior_cache"]["cache_on"] and res["prior_cache"]["skd_over_baseline"] > 0


def test_iwslt14_yaml_loads(nlg_smooth_corpus: Path, tmp_path: Path) -> None:
    iw = build_config(NlgSmoothConfig, RECIPE / "iwslt14.yaml")
    assert (iw.model.d_model, iw.model.ff_dim, iw.model.num_heads, iw.model.encoder_layers) == (512, 1024, 4, 6)
    res = invoke_json(
        "nlg-smooth",
        "train",
        "--data",
        nlg_smooth_corpus,
        "--run-dir",
        tmp_path / "iw",
        "--config",
        RECIPE / "iwslt14.yaml",
        "--max-steps",
        "1",
        "--device",
        "cpu",
        *sets("train.batch_size=4", "train.eval_every=0", "train.warmup_steps=1", "eval.valid_bleu=false"),
    )  # an untrained model would decode 200 tokens per sentence
    assert res["steps"] == 1 and res["parameters"] > 30_000_000


def test_prior_cache_skips_the_forward_until_the_prior_changes(nlg_smooth_corpus: Path) -> None:
    from skdcli.nlg_smooth.recipe import NlgSmoothTask

    cfg = build_config(NlgSmoothConfig, None, NLG_TINY_MODEL)
    task = NlgSmoothTask(cfg, nlg_smooth_corpus)
    model = task.build_model()
    prior = task.teachers()["prior"]
    prior.on_eval(model, {"nll": 1.0})
    ds = task.train_dataset()
    batch = task.collate([ds[i] for i in (0, 5, 9)])
    alone = prior(batch["src"][:1], batch["tgt_in"][:1])  # pair 0 in a batch of its own
    calls = []
    prior.model.register_forward_hook(lambda *a: calls.append(1))
    fresh = task.prior_logits(batch)
    assert len(calls) == 1
    again = task.prior_logits(task.collate([ds[i] for i in (9, 0)]))  # other batch, other padding: cached
    assert len(calls) == 1
    n = len(ds[0]["tgt"]) + 1  # pair 0's real target positions (</s> included)
    assert torch.allclose(again[1, :n], fresh[0, :n], atol=1e-5)
    assert torch.allclose(again[1, :n], alone[0, :n], atol=1e-5)
    prior.on_eval(model, {"nll": 0.5})  # a new prior: the cache is stale
    task.prior_logits(batch)
    assert len(calls) == 2
    task.cfg.loss.prior_cache_mb = 0  # off: every call runs the prior
    task.prior_logits(batch)
    assert len(calls) == 3


def test_the_prenorm_option_is_the_old_model(nlg_smooth_corpus: Path, tmp_path: Path) -> None:
    """model.arch=prenorm with shared embeddings is the model as it was before issue 14, bit for bit: the
    shared tiny run's pinned pre-issue-14 trajectory (ALS-SK, the prior swapped in at step 4) comes back."""
    from fixtures_nlg_smooth import PRE_ISSUE_14_TRAJECTORY

    run = tmp_path / "prenorm"
    # the shared run's settings (the LR schedule depends on max_steps), the old layout and sharing
    invoke_json(
        "nlg-smooth",
        "train",
        "--data",
        nlg_smooth_corpus,
        "--run-dir",
        run,
        "--max-steps",
        "12",
        *sets(
            *NLG_TINY_MODEL,
            "train.eval_every=4",
            "train.checkpoint_every=6",
            "eval.valid_decode_max=8",
            "model.arch=prenorm",
            "model.share_embeddings=true",
        ),
    )
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {
        r["step"]: {k: v for k, v in r.items() if k == "loss" or k.startswith(("loss/", "weight/"))}
        for r in rows
        if r["split"] == "train"
    }
    for step, values in PRE_ISSUE_14_TRAJECTORY.items():
        assert logged[step] == pytest.approx(values, rel=1e-4, abs=1e-4), step
