"""Every xqa stage and command through the CLI: prep (real excerpts), train flags, eval suites and
--compare, export + answer from the export alone, score; and the bad-input cases of issue 10.
(--help, --json, refusing a finished run, --resume refusing --set: tests/test_contract.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import assert_one_line_error, invoke, invoke_json, sets
from fixtures_xqa import XQA_TRAIN
from skdcli.cli import app

FIX = Path(__file__).parent / "fixtures" / "xqa"
MLQA_ZH = FIX / "mlqa" / "MLQA_V1" / "dev" / "dev-context-en-question-zh.json"
MLQA_ZH_ID = "2e62cb1a941e40208fe73d1d11d77611f8fc91af"


def test_prep_real_layouts_through_the_cli(tmp_path: Path) -> None:
    xq = invoke_json(
        "xqa",
        "prep",
        "--source",
        "xquad",
        "--raw",
        FIX / "xquad",
        "--ntl",
        "1",
        "--seed",
        "3",
        "--out",
        tmp_path / "xq",
    )
    assert xq["train_examples"] == 30 * 4 and xq["ntl"] == 1 and xq["zero_shot_languages"] == ["el"]
    ml = invoke_json("xqa", "prep", "--source", "mlqa", "--raw", FIX / "mlqa" / "MLQA_V1", "--out", tmp_path / "ml")
    assert len(ml["eval_cells"]) == 4 and ml["languages"] == ["en"]
    ty = invoke_json(
        "xqa", "prep", "--source", "tydiqa", "--raw", FIX / "tydiqa", "--split", "dev", "--out", tmp_path / "ty"
    )
    assert ty["eval_cells"] == {"dev/context-ar-question-ar": 1} and ty["train_examples"] == 0
    assert_one_line_error(
        invoke(
            "xqa",
            "prep",
            "--source",
            "xquad",
            "--raw",
            FIX / "xquad",
            "--languages",
            "en,xx",
            "--out",
            tmp_path / "bad",
        ),
        "unknown language code 'xx'",
    )
    assert_one_line_error(
        invoke("xqa", "prep", "--source", "wikipedia", "--raw", FIX, "--out", tmp_path / "w"), "--source must be one of"
    )
    broken = tmp_path / "broken" / "train-v1.1.json"
    broken.parent.mkdir()
    broken.write_text('{"version": "1.1", "data": [}', encoding="utf-8")
    assert_one_line_error(
        invoke("xqa", "prep", "--source", "squad", "--raw", broken, "--out", tmp_path / "b"),
        str(broken),
        "line 1 column 29",
    )


def test_train_flags_are_config_keys(xqa_data: Path, tmp_path: Path) -> None:
    out = invoke_json(
        "xqa",
        "train",
        "--data",
        xqa_data,
        "--run-dir",
        tmp_path / "r",
        "--max-steps",
        "1",
        "--kd-loss",
        "sym",
        "--temperature",
        "4",
        "--no-map-coefficient",
        "--map-k",
        "5",
        "--map-window",
        "0",
        "--no-ce",
        "--no-generations",
        *sets(*XQA_TRAIN),
    )
    assert out["steps"] == 1 and out["method"] == "skd_no_ce_frozen" and out["kd_loss"] == "sym"
    kd = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["kd"]
    assert kd == {
        **kd,
        "loss": "sym",
        "temperature": 4.0,
        "map_coefficient": False,
        "map_k": 5,
        "map_window": 0,
        "ce": False,
        "generations": False,
    }
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert cfg["model"]["init"] == str((xqa_data / "init").resolve())  # the dataset's own init, recorded
    assert_one_line_error(
        invoke("xqa", "train", "--data", xqa_data, "--run-dir", tmp_path / "x", "--kd-loss", "js"),
        "kd.loss",
        "fw, rv, sym",
    )
    assert_one_line_error(
        invoke("xqa", "train", "--data", xqa_data, "--run-dir", tmp_path / "y", "--init", tmp_path / "nowhere"),
        str(tmp_path / "nowhere"),
        "not found",
    )


def test_epochs_set_the_length_and_a_generation_is_an_epoch(xqa_run: Path) -> None:
    summary = json.loads((xqa_run / "train_summary.json").read_text())
    assert summary["steps"] == 6 and summary["method"] == "skd_map" and summary["generations"]
    rows = [json.loads(x) for x in (xqa_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6] and {"gxlt_f1", "gxlt_em", "xlt_f1", "xlt_em"} <= set(evals[0])
    assert all("map_at_k" in r for r in rows if r["split"] == "train")


def test_eval_suites_matrix_and_heatmap(xqa_run: Path) -> None:
    res = invoke_json("xqa", "eval", "--run-dir", xqa_run)  # mlqa test grid of the run's own data
    langs = ["ar", "de", "en", "es", "zh"]
    assert res["suite"] == "mlqa" and res["split"] == "test" and res["cells"] == 25
    assert res["question_languages"] == langs == res["context_languages"]
    f1s = [res["matrix"][q][c]["f1"] for q in langs for c in langs]
    assert res["gxlt_f1"] == pytest.approx(sum(f1s) / 25)
    assert res["xlt_f1"] == pytest.approx(sum(res["matrix"][q][q]["f1"] for q in langs) / 5)
    assert Path(res["heatmap"]).is_file() and Path(res["examples_file"]).is_file()
    assert json.loads((xqa_run / "eval.json").read_text())["gxlt_f1"] == res["gxlt_f1"]
    rows = [json.loads(x) for x in Path(res["examples_file"]).read_text().splitlines()]
    assert len(rows) == res["examples"] and {"id", "f1", "em", "prediction", "start", "end"} <= set(rows[0])
    # the official layouts straight from disk, each scored with its suite's rules
    xq = invoke_json("xqa", "eval", "--run-dir", xqa_run, "--suite", "xquad", "--data", FIX / "xquad")
    assert xq["normalization"] == "squad" and xq["xlt_languages"] == ["el"] and xq["gxlt_f1"] is None
    ty = invoke_json("xqa", "eval", "--run-dir", xqa_run, "--suite", "tydiqa", "--data", FIX / "tydiqa")
    assert ty["cells"] == 1 and ty["xlt_languages"] == ["ar"]
    ml = invoke_json("xqa", "eval", "--run-dir", xqa_run, "--data", FIX / "mlqa", "--split", "dev")
    assert ml["cells"] == 4 and ml["context_languages"] == ["en"]
    assert_one_line_error(invoke("xqa", "eval", "--run-dir", xqa_run, "--suite", "squad"), "--suite")


def test_compare_runs_with_wilcoxon(xqa_data: Path, xqa_run: Path, tmp_path: Path) -> None:
    ce = tmp_path / "ce"
    invoke_json(
        "xqa", "train", "--data", xqa_data, "--run-dir", ce, "--baseline", "--max-steps", "6", *sets(*XQA_TRAIN)
    )
    assert_one_line_error(invoke("xqa", "eval", "--compare", xqa_run, ce), "no mlqa/test evaluation")
    invoke_json("xqa", "eval", "--run-dir", ce)
    invoke_json("xqa", "eval", "--run-dir", xqa_run)
    res = invoke_json("xqa", "eval", "--compare", xqa_run, ce)
    assert res["method_a"] == "skd_map" and res["method_b"] == "ce"
    assert res["gxlt"]["n"] == 4 * 25 and 0.0 <= res["gxlt"]["p_value"] <= 1.0
    assert res["xlt"]["n"] == 4 * 5 and sorted(res["per_language"]) == ["ar", "de", "en", "es", "zh"]
    assert (xqa_run / "compare.json").is_file()


def test_export_then_answer_from_the_export_alone(xqa_export: Path, tmp_path: Path) -> None:
    manifest = json.loads((xqa_export / "manifest.json").read_text())
    assert manifest["task"] == "xqa" and manifest["n_best"] == 20 and manifest["max_answer_length"] == 30
    assert (xqa_export / "hf" / "config.json").is_file() and (xqa_export / "tokenizer" / "tokenizer.json").is_file()
    context = "The capital of Zorvak is Melidon. The longest river in Zorvak is Tala."
    one = invoke(
        "xqa", "answer", "--model", xqa_export, "--question", "What is the capital of Zorvak?", "--context", context
    )
    assert one.exit_code == 0, one.stderr
    (line,) = one.stdout.splitlines()
    ans = json.loads(line)
    assert ans["id"] == "1" and context[ans["start"] : ans["end"]] == ans["answer"] and 0 <= ans["score"] <= 1
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "\n".join(
            json.dumps(q, ensure_ascii=False)
            for q in [
                {"id": "a", "question": "¿Cuál es la capital de Zorvak?", "context": context},
                {
                    "id": "b",
                    "question": "Zorvak的首都是哪里？",
                    "context": "Zorvak的首都是Melidon。" * 20,
                },  # several windows
                {"question": "Which is the longest river in Zorvak?", "context": context},
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    many = invoke("xqa", "answer", "--model", xqa_export, "--input", questions)
    assert many.exit_code == 0, many.stderr
    out = [json.loads(x) for x in many.stdout.splitlines()]
    assert [o["id"] for o in out] == ["a", "b", "3"]
    as_json = invoke_json("xqa", "answer", "--model", xqa_export, "--input", questions)
    assert as_json["answers"] == out
    piped = CliRunner().invoke(
        app,
        ["xqa", "answer", "--model", str(xqa_export), "--input", "-"],
        input=questions.read_text(encoding="utf-8"),
        catch_exceptions=False,
    )
    assert [json.loads(x) for x in piped.stdout.splitlines()] == out  # JSON lines in on stdin, out on stdout
    questions.write_text('{"id": "x", "question": "Why?", "context": "  "}\n', encoding="utf-8")
    assert_one_line_error(
        invoke("xqa", "answer", "--model", xqa_export, "--input", questions), str(questions), "line 1", "empty context"
    )
    assert_one_line_error(invoke("xqa", "answer", "--model", xqa_export, "--question", "Why?"), "--context")


def test_score_one_file_as_the_official_scripts(tmp_path: Path) -> None:
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({MLQA_ZH_ID: "Penn"}), encoding="utf-8")
    res = invoke("xqa", "score", "--data", MLQA_ZH, "--predictions", preds)
    assert res.exit_code == 0, res.stderr
    (line,) = res.stdout.splitlines()
    assert json.loads(line) == {"exact_match": 100.0, "f1": 100.0, "total": 1, "unanswered": 0}  # "The Penn", en
    full = invoke_json("xqa", "score", "--data", MLQA_ZH, "--predictions", preds, "--normalization", "squad")
    assert full["normalization"] == "squad" and full["exact_match"] == 100.0
    assert_one_line_error(
        invoke("xqa", "score", "--data", MLQA_ZH, "--predictions", preds, "--lang", "xx"), "unknown language code 'xx'"
    )
    preds.write_text(json.dumps({"56beb4343aeaaa14008c925b": "Denver"}), encoding="utf-8")
    assert_one_line_error(
        invoke("xqa", "score", "--data", MLQA_ZH, "--predictions", preds), str(preds), "none of its 1 ids"
    )
