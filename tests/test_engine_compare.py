"""Systems side by side over seeds (engine/compare.py): seed parsing, mean ± std, and `run --compare` through
the CLI (one tiny system over two seeds, so the layout and the statistics are checked cheaply)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from conftest import invoke, sets
from fixtures_nlp_embed import NLP_EMBED_TINY
from skdcli.engine.compare import mean_std, parse_seeds
from skdcli.engine.errors import SkdError


def test_parse_seeds_and_mean_std_by_hand() -> None:
    assert parse_seeds("0,1,2", [7]) == [0, 1, 2] and parse_seeds("3 4", [7]) == [3, 4]
    assert parse_seeds(None, (0, 1, 2)) == [0, 1, 2] and parse_seeds("", [None]) == [None]
    with pytest.raises(SkdError, match="integers"):
        parse_seeds("0,x", [0])
    with pytest.raises(SkdError, match="twice"):
        parse_seeds("1,1", [0])
    stats = mean_std([1.0, 2.0, 4.0])
    assert stats["mean"] == pytest.approx(7 / 3) and stats["values"] == [1.0, 2.0, 4.0]
    assert stats["std"] == pytest.approx(((4 / 3) ** 2 + (1 / 3) ** 2 + (5 / 3) ** 2) ** 0.5 / 2**0.5)  # n - 1
    assert mean_std([5.0])["std"] == 0.0 and mean_std([5.0])["n"] == 1
    # report precision rounds mean, std and values alike; a NaN run is not dropped: the summary is NaN
    assert mean_std([0.5, 0.7, 0.6], digits=4) == {"mean": 0.6, "std": 0.1, "n": 3, "values": [0.5, 0.7, 0.6]}
    nan = mean_std([1.0, float("nan")])
    assert nan["mean"] != nan["mean"] and nan["std"] != nan["std"] and nan["n"] == 2
    with pytest.raises(ValueError, match="no values"):
        mean_std([])


def test_run_compare_over_two_seeds(nlp_embed_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    result = invoke(
        "nlp-embed",
        "run",
        "--run-dir",
        run,
        "--data",
        nlp_embed_corpus,
        "--no-baselines",
        "--compare",
        "--seeds",
        "0,1",
        "--max-steps",
        "2",
        "--json",
        *sets(*NLP_EMBED_TINY, "train.eval_every=0"),
    )
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    # SKD alone over two seeds: the first seed is the run itself, the second under compare/skd/seed1
    assert out["seeds"] == [0, 1] and set(out["systems"]) == {"skd"}
    assert (run / "eval.json").is_file() and (run / "compare" / "skd" / "seed1" / "eval.json").is_file()
    rows = out["per_seed"]["skd"]
    assert [r["seed"] for r in rows] == [0, 1] and rows[0]["ppl"] != rows[1]["ppl"]
    ppl = [r["ppl"] for r in rows]
    assert out["systems"]["skd"]["ppl"] == pytest.approx(sum(ppl) / 2)
    assert out["systems"]["skd"]["ppl_std"] == pytest.approx(abs(ppl[0] - ppl[1]) / 2**0.5)
    # the human table (stderr without --json) says what the cells are
    from rich.console import Console

    from skdcli.nlp_embed.recipe import NlpEmbedHooks

    console = Console(record=True, width=200, file=io.StringIO())
    console.print(NlpEmbedHooks().report("run", out))
    assert "mean ± std over seeds 0, 1" in " ".join(console.export_text().split())
