"""The results table of every run.sh (engine/results.py): per-seed JSON files grouped by system, mean ± sample
std of dotted-key metrics as Markdown, checked by hand; the `python -m` entry point's errors; and no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from skdcli.engine.errors import SkdError
from skdcli.engine.results import Metric, lookup, markdown, results_table


def write(folder: Path, name: str, obj: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(obj))


def cells(table: str) -> list[list[str]]:
    """The Markdown table's rows (header first, the rule left out) as lists of stripped cells."""
    lines = [ln for ln in table.splitlines() if ln.startswith("|") and not ln.startswith("|-")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def module(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "skdcli.engine.results", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)


@pytest.fixture()
def seeds(tmp_path: Path) -> Path:
    """skd over three seeds (one of them seed 10), ce over one, and files the default glob leaves out."""
    d = tmp_path / "results"
    for seed, acc, n1 in ((0, 0.80, 0.4), (1, 0.82, 0.5), (10, 0.87, 0.6)):
        write(d, f"skd_seed{seed}.json", {"accuracy": acc, "per_class_f1": {"N1": n1}, "nll": 2.0 + seed})
    write(d, "ce_seed0.json", {"accuracy": 0.75, "per_class_f1": {"N1": 0.3}, "nll": None})
    write(d, "summary.json", {"accuracy": 1.0})  # not a per-seed file
    return d


def test_mean_and_sample_std_by_hand(seeds: Path) -> None:
    table = results_table(seeds, ["top-1=accuracy:100", "N1 F1=per_class_f1.N1:100", "nll"], caption="over seeds")
    rows = cells(table)
    assert rows[0] == ["system", "n", "top-1", "N1 F1", "nll"]
    # files sort ce_seed0 < skd_seed0 < skd_seed1 < skd_seed10: rows in that order, seed 10 grouped with skd
    # skd top-1: 80, 82, 87 -> mean 83; deviations -3, -1, 4 -> sum of squares 26 / (3 - 1) = 13 -> std 3.61
    # skd N1: 40, 50, 60 -> 50 ± 10; nll 2, 3, 12 -> 17 / 3 = 5.67; (121 + 64 + 361) / 9 / 2 = 30.33 -> 5.51
    assert rows[1] == ["ce", "1", "75.00 ± 0.00", "30.00 ± 0.00", "-"]  # one value: std 0; a null: '-'
    assert rows[2] == ["skd", "3", "83.00 ± 3.61", "50.00 ± 10.00", "5.67 ± 5.51"]
    assert table.endswith("\n\nover seeds") and len(rows) == 3  # summary.json is not read
    assert results_table(seeds, ["accuracy:100"], digits=1).splitlines()[3].endswith("| 83.0 ± 3.6 |")


def test_a_value_only_some_runs_have_says_how_many(tmp_path: Path) -> None:
    write(tmp_path, "a_seed0.json", {"x": 1.0})
    write(tmp_path, "a_seed1.json", {"x": 3.0})
    write(tmp_path, "a_seed2.json", {"y": 0.0})
    assert cells(results_table(tmp_path, ["x"]))[1] == ["a", "3", "2.00 ± 1.41 (n=2)"]


def test_metric_specs_and_lookup() -> None:
    assert Metric.parse("ECE %=ece:100") == Metric("ECE %", "ece", 100.0)
    assert Metric.parse("t2i.dense.R@1") == Metric("t2i.dense.R@1", "t2i.dense.R@1", 1.0)
    assert Metric.parse("R@1=t2i.{score}.R@1:100").path == "t2i.{score}.R@1"
    data = {"t2i": {"dense": {"R@1": 0.5}}, "rows": [{"a": 1}, {"a": 2}]}
    assert lookup(data, "t2i.dense.R@1") == 0.5 and lookup(data, "rows.1.a") == 2 and lookup(data, "rows.2") is None
    assert markdown(["k", "v"], [["a|b", "1"]], 1).splitlines() == [
        "| k    |   v |",
        "|------|----:|",
        "| a\\|b |   1 |",
    ]


def test_options_for_the_recipes_that_need_them(tmp_path: Path) -> None:
    # retrieval: a row per score type, the metric paths templated
    ret = tmp_path / "ret"
    for seed, r1 in ((0, 0.1), (1, 0.3)):
        t2i = {s: {"R@1": r1 + i} for i, s in enumerate(("dense", "sparse", "integrated", "integrated_cos"))}
        write(ret, f"skd_seed{seed}.eval.json", {"t2i": t2i})
    rows = cells(results_table(ret, ["R@1=t2i.{score}.R@1:100"], expand=["score=dense,integrated"]))
    assert rows == [
        ["system", "score", "n", "R@1"],
        ["skd", "dense", "2", "20.00 ± 14.14"],
        ["skd", "integrated", "2", "220.00 ± 14.14"],
    ]

    # lus: the file-name key from a regex; an extra row from a sub-object, where a run has one
    lus = tmp_path / "lus"
    for fold in (1, 2):
        write(lus, f"frame_f{fold}_seed0.json", {"accuracy": 0.5 + fold / 10, "knn": {"accuracy": 0.4}})
        write(lus, f"mean_f{fold}_seed0.json", {"accuracy": 0.6})
    table = results_table(
        lus, ["accuracy:100"], glob="*_f[12]_seed*.json", group=r"(?P<system>.+)_f[12]_seed\d+", sub=["KNN=knn"]
    )
    assert [r[:3] for r in cells(table)[1:]] == [
        ["frame", "2", "65.00 ± 7.07"],
        ["frame: KNN", "2", "40.00 ± 0.00"],
        ["mean", "2", "60.00 ± 0.00"],
    ]

    # sar: keys from the JSON (no file-name key then), one pivoted into the columns, each cell with its n
    sar = tmp_path / "sar"
    for bb in ("vgg16", "resnet18"):
        for seed in (0, 1):
            write(sar, f"{bb}__ce_seed{seed}.json", {"method": "ce", "backbone": bb, "accuracy": 0.8 + seed / 10})
    write(sar, "resnet18__drrnet_seed0.json", {"method": "drrnet", "backbone": "resnet18", "accuracy": 0.9})
    rows = cells(
        results_table(sar, ["top-1=accuracy:100"], by_key=["method", "backbone"], columns="backbone", digits=1)
    )
    assert rows == [
        ["method", "resnet18", "vgg16"],
        ["ce", "85.0 ± 7.1 (n=2)", "85.0 ± 7.1 (n=2)"],
        ["drrnet", "90.0 ± 0.0 (n=1)", ""],
    ]

    # dataset-distill: the records are a list inside each file, keyed by the file name and their own fields
    dd = tmp_path / "dd"
    for seed in (0, 1):
        rows_in = [
            {"system": "generator", "ipc": 1, "top1": 20.0 + seed},
            {"system": "generator", "ipc": 10, "top1": 40.0},
        ]
        write(
            dd,
            f"skd_seed{seed}.json",
            {"rows": rows_in + ([{"system": "full real", "ipc": None, "top1": 80.0}] if seed == 0 else [])},
        )
    rows = cells(results_table(dd, ["top1"], group=r"(?P<run>.+)_seed\d+", each="rows", by_key=["system", "IPC=ipc"]))
    assert rows[0] == ["run", "system", "IPC", "n", "top1"]
    assert rows[1:] == [
        ["skd", "generator", "1", "2", "20.50 ± 0.71"],
        ["skd", "generator", "10", "2", "40.00 ± 0.00"],
        ["skd", "full real", "-", "1", "80.00 ± 0.00"],
    ]

    # asr-ctc: an object of sets, its keys in a column (an older file without it: its own 'split'); sorted by set
    asr = tmp_path / "asr"
    write(asr, "ctc_seed0.all.eval.json", {"sets": {"dev": {"wer": 0.3}, "test": {"wer": 0.2}}})
    write(asr, "skd_seed0.all.eval.json", {"sets": {"dev": {"wer": 0.1}, "test": {"wer": 0.4}}})
    write(asr, "skd_seed1.test.eval.json", {"split": "test", "wer": 0.6})
    rows = cells(results_table(asr, ["wer:100"], glob="*.eval.json", each="sets=split", sort=["split"]))
    assert [r[:3] for r in rows[1:]] == [
        ["ctc", "dev", "1"],
        ["skd", "dev", "1"],
        ["ctc", "test", "1"],
        ["skd", "test", "2"],
    ]
    assert rows[4][3] == "50.00 ± 14.14"
    # --sort with listed values first (nlp-embed's skd, ce, ls, noise), the rest in file order
    rows = cells(results_table(asr, ["wer:100"], glob="*.eval.json", each="sets=split", sort=["system=skd"]))
    assert [r[0] for r in rows[1:]] == ["skd", "skd", "ctc", "ctc"]


def test_errors_name_what_is_wrong(seeds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # a key no file has (a typo, or asr-ctc's student head when only the ctc baseline ran): '-', and a warning
    assert cells(results_table(seeds, ["acuracy"]))[1] == ["ce", "1", "-"]
    assert (
        capsys.readouterr().err
        == f"warning: no file matching '*_seed*.json' in {seeds} has 'acuracy' (--metric 'acuracy')\n"
    )
    with pytest.raises(SkdError, match="is not a number"):
        results_table(seeds, ["per_class_f1"])
    with pytest.raises(SkdError, match="not a key column"):
        results_table(seeds, ["accuracy"], columns="backbone")
    with pytest.raises(SkdError, match="no results in .* name matching"):
        results_table(seeds, ["accuracy"], group=r"(?P<system>.+)_fold\d+")
    write(tmp_path / "bad", "a_seed0.json", {})
    (tmp_path / "bad" / "a_seed1.json").write_text("{")
    with pytest.raises(SkdError, match="a_seed1.json: not a readable JSON file"):
        results_table(tmp_path / "bad", ["x"])


def test_module_entry_point_prints_the_table_or_one_error_line(seeds: Path, tmp_path: Path) -> None:
    ok = module(seeds, "--metric", "top-1=accuracy:100", "--caption", "mean ± sample std over seeds")
    assert ok.returncode == 0, ok.stderr
    assert "| skd    |   3 | 83.00 ± 3.61 |" in ok.stdout and ok.stdout.endswith("mean ± sample std over seeds\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    failed = module(empty, "--metric", "accuracy")
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.splitlines() == [f"error: no files matching '*_seed*.json' in {empty}"]
    missing = module(tmp_path / "nowhere", "--metric", "accuracy")
    assert missing.returncode == 1 and missing.stderr == f"error: no results directory {tmp_path / 'nowhere'}\n"
    assert module(seeds).returncode == 2  # argparse: --metric is required


def test_imports_no_torch() -> None:
    probe = "import sys, skdcli.engine.results; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
