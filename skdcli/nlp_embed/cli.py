"""`skd nlp-embed ...`: the recipe's description (train / eval / export / run come from the engine's
contract) and its own commands: prep, sample, translate (mode=nmt), neighbours."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..engine.cliutil import DebugOpt, JsonOpt, run_stage
from ..engine.contract import Flag, OverwriteOpt, Recipe
from ..text.translate_cli import add_translate_command

RECIPE = Recipe(
    name="nlp-embed",
    help="Language modelling with self-KD from the output-embedding space (Hahn & Choi, RANLP 2019).",
    hooks="skdcli.nlp_embed.recipe:NlpEmbedHooks",
    config_example="recipes/nlp_embed/ptb.yaml",
    docs={
        "train": "Train the LM with embedding-space self-KD (or the plain-CE --baseline); works under torchrun.",
        "eval": "Perplexity, NLL, accuracy, ECE/MCE, reliability diagram (NMT: + beam-search BLEU/chrF); writes eval.json.",
        "export": "torch.export program + safetensors + vocabulary (NMT: tokenizer) + manifest (with a parity check).",
        "run": "The whole pipeline on the embedded tiny default (or --data: a parallel dataset), SKD next to CE / LS "
        "and the noise and random controls; --compare: over 3 seeds.",
    },
    flags=(
        Flag("--split", "test | valid | train.", default="test", commands=("eval",)),
        Flag(
            "--baselines/--no-baselines",
            "Also train plain CE, uniform LS and the noise and random controls "
            "(NMT: CE, noise, random) under RUN_DIR/compare/.",
            bool,
            True,
            commands=("run",),
        ),
        Flag(
            "--compare/--no-compare",
            "Every system side by side over --seeds (default 0,1,2; with --no-baselines: SKD alone over the seeds).",
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
    source: Annotated[
        str,
        typer.Option(
            "--source", help="LM: ptb | wikitext2 | text | synthetic; NMT: iwslt14 | parallel | synthetic-nmt"
        ),
    ] = "synthetic",
    raw: Annotated[
        Optional[str],
        typer.Option(
            "--raw",
            help="LM: directory with the split files (ptb.train.txt, wiki.train.tokens...); NMT: the IWSLT14 layout or a TSV/JSONL file.",
        ),
    ] = None,
    out: Annotated[str, typer.Option("--out", help="Where the prepared dataset goes.")] = "data/lm",
    max_vocab: Annotated[int, typer.Option("--max-vocab", help="Keep the N most frequent train words (0 = all).")] = 0,
    empty_lines: Annotated[
        str, typer.Option("--empty-lines", help="keep (a lone <eos>, the LM convention) | skip.")
    ] = "keep",
    vocab_size: Annotated[
        Optional[int],
        typer.Option("--vocab-size", help="NMT: joint sentencepiece vocabulary (default 8000; synthetic-nmt 200)."),
    ] = None,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="NMT: longest sentence in pieces (the model's limit).")
    ] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic corpus.")] = 0,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Read an LM corpus or a parallel corpus (or write a synthetic one) into a prepared dataset."""
    from .recipe import prep_stage

    run_stage(
        "nlp-embed prep",
        lambda: prep_stage(source, raw, out, max_vocab, empty_lines, overwrite, seed, vocab_size, max_tokens),
        json_out,
        debug,
        ctx,
    )


@app.command("sample")
def sample_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="An export directory (from `export`).")],
    prompt: Annotated[str, typer.Option("--prompt", help="Words to continue (whitespace separated).")] = "",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 30,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy.")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample among the k most likely words (0 = all).")] = 0,
    num_samples: Annotated[int, typer.Option("--num-samples")] = 1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Continue a prompt with an exported model alone (stops at <eos>)."""
    from .recipe import sample_stage

    run_stage(
        "nlp-embed sample",
        lambda: sample_stage(model, prompt, max_new_tokens, temperature, top_k, num_samples, seed),
        json_out,
        debug,
        ctx,
        lines=lambda result: result["samples"],
    )


add_translate_command(
    app,
    "nlp-embed",
    "An NMT export directory (from `export` of a mode=nmt run).",
    "Translate with an exported mode=nmt model alone: one output line per input line on stdout (or --json).",
)


@app.command()
def neighbours(
    ctx: typer.Context,
    run_dir: Annotated[str, typer.Option("--run-dir")] = "runs/nlp-embed",
    word: Annotated[str, typer.Option("--word", help="A vocabulary word.")] = "",
    k: Annotated[int, typer.Option("--k", help="How many neighbours.")] = 10,
    sim: Annotated[Optional[str], typer.Option("--sim", help="dot | cos | neg_l2 (default: the run's kd.sim).")] = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """The nearest words of WORD in the run's output-embedding space (where the soft targets come from)."""
    from .recipe import neighbours_stage

    run_stage(
        "nlp-embed neighbours",
        lambda: neighbours_stage(run_dir, word, k, sim),
        json_out,
        debug,
        ctx,
        render=neighbours_table,
    )


def neighbours_table(result: dict):
    """The human view of `neighbours`: one row per neighbour (the JSON carries the same list)."""
    from rich.table import Table

    title = f"nearest words of {result['word']!r} ({result['sim']})"
    if result.get("same_class_share") is not None:
        title += f", same class: {result['same_class_share']:.0%}"
    table = Table(title=title, header_style="bold")
    columns = ["word", "similarity"] + (
        ["same class"] if result["neighbours"] and "same_class" in result["neighbours"][0] else []
    )
    for col in columns:
        table.add_column(col, justify="right" if col == "similarity" else "left")
    for n in result["neighbours"]:
        table.add_row(n["word"], f"{n['similarity']:.4g}", *([str(n["same_class"])] if len(columns) == 3 else []))
    return table
