"""`skd nlg-smooth ...`: the recipe's description (train / eval / export / run come from the engine's
contract) and its own commands, `prep` and `translate`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..engine.cliutil import DebugOpt, JsonOpt, run_stage
from ..engine.contract import Flag, OverwriteOpt, Recipe
from ..text.translate_cli import add_translate_command

RECIPE = Recipe(
    name="nlg-smooth",
    help="Translation with adaptive label smoothing from self-knowledge, ALS-SK (Lee, Cheung & Zhang, EMNLP 2022).",
    hooks="skdcli.nlg_smooth.recipe:NlgSmoothHooks",
    config_example="recipes/nlg_smooth/iwslt14.yaml",
    docs={
        "train": "Train with ALS-SK (loss.method=als_sk), or --baseline (plain CE); ce / ls / ls_unigram / confpen / "
        "tfkd / pskd via --set loss.method=...",
        "eval": "BLEU (tokenized and sacreBLEU), chrF, token ECE/MCE + reliability diagram, NLL; writes eval.json.",
        "export": "torch.export program + safetensors + tokenizer + manifest (with a parity check).",
        "run": "The whole pipeline on the embedded tiny default: toy pair -> train ALS-SK, CE, LS (--compare: every "
        "comparison system over 3 seeds) -> eval -> export.",
    },
    flags=(
        Flag("--split", "test | valid | train.", default="test", commands=("eval",)),
        Flag("--beam-size", "1 = greedy (default: eval.beam_size).", int, key="eval.beam_size", commands=("eval",)),
        Flag("--lenpen", "Length penalty: score / len^lenpen.", float, key="eval.lenpen", commands=("eval",)),
        Flag("--ece-bins", "Confidence bins for ECE/MCE.", int, key="eval.ece_bins", commands=("eval",)),
        Flag(
            "--baselines/--no-baselines",
            "Also train CE and uniform LS (RUN_DIR/compare/).",
            bool,
            True,
            commands=("run",),
        ),
        Flag(
            "--compare/--no-compare",
            "Train every comparison system side by side (CE, LS, LS-unigram, confidence "
            "penalty, TF-KD, PS-KD, ALS-SK in both smoothing directions) over --seeds (with --no-baselines: "
            "ALS-SK alone over the seeds).",
            bool,
            False,
            commands=("run",),
        ),
        Flag(
            "--seeds",
            "Seeds of every system, e.g. 0,1,2 (default: 0,1,2 with --compare, else --seed).",
            commands=("run",),
        ),
    ),
)
app = RECIPE.app()


@app.command()
def prep(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--source", help="iwslt14 | parallel | synthetic")] = "synthetic",
    raw: Annotated[
        Optional[str],
        typer.Option(
            "--raw",
            help="iwslt14: the prepared dir (train.de/.en, valid.*, test.*); "
            "parallel: a .tsv/.jsonl file or a dir of train/valid/test ones.",
        ),
    ] = None,
    out: Annotated[str, typer.Option("--out", help="Where the prepared dataset goes.")] = "data/nlg-smooth",
    vocab_size: Annotated[
        Optional[int],
        typer.Option("--vocab-size", help="Joint sentencepiece vocabulary (default 10000; synthetic 200)."),
    ] = None,
    model_type: Annotated[
        str, typer.Option("--model-type", help="sentencepiece model: bpe | unigram | word | char.")
    ] = "bpe",
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Longest sentence in pieces (model.max_positions - 2).")
    ] = 256,
    src_lang: Annotated[
        Optional[str], typer.Option("--src-lang", help="Source language suffix/key (default: de, or detected).")
    ] = None,
    tgt_lang: Annotated[
        Optional[str], typer.Option("--tgt-lang", help="Target language suffix/key (default: en, or detected).")
    ] = None,
    bpe: Annotated[str, typer.Option("--bpe", help="'@@ ' markers in the input: remove (default) | keep.")] = "remove",
    skip_bad: Annotated[
        bool,
        typer.Option("--skip-bad", help="Drop empty / over-long pairs (listed in skipped.jsonl) instead of stopping."),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="synthetic: sentence sampling seed.")] = 0,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Read IWSLT14 / a TSV-JSONL parallel file (or write the synthetic toy pair) and train the tokenizer."""
    from .recipe import prep_stage

    run_stage(
        "nlg-smooth prep",
        lambda: prep_stage(
            source, raw, out, vocab_size, model_type, max_tokens, src_lang, tgt_lang, bpe, skip_bad, overwrite, seed
        ),
        json_out,
        debug,
        ctx,
    )


add_translate_command(
    app,
    "nlg-smooth",
    "An export directory or its model.pt2.",
    "Translate with an exported model alone: one output line per input line on stdout (or --json).",
)
