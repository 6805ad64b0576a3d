"""`skd asr-ctc ...`: the recipe's description (train / eval / export / run come from the engine's
contract) and its own commands, `prep` and `transcribe`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..engine.cliutil import DebugOpt, JsonOpt, run_stage
from ..engine.contract import Flag, OverwriteOpt, Recipe

RECIPE = Recipe(
    name="asr-ctc",
    help="CTC speech recognition with frame-level self-KD (Kim, Kim & Lee, Interspeech 2024).",
    hooks="skdcli.asr_ctc.recipe:AsrCtcHooks",
    config_example="recipes/asr_ctc/librispeech.yaml",
    docs={
        "train": "Train the CTC model with self-KD (or the plain-CTC --baseline); works under torchrun.",
        "eval": "WER/CER of both heads, spike-timing analysis and a posterior plot; writes eval.json.",
        "export": "torch.export program + safetensors + tokenizer + manifest (with a parity check).",
        "run": "The whole pipeline on the embedded tiny default: synthetic corpus -> train -> eval -> export.",
    },
    flags=(
        Flag(
            "--split",
            "A set (test-clean, test-other, dev-clean, ...), a role (test | dev | train: each of its "
            "sets), all (every dev and test set, one row each) or auto (the test sets, else dev).",
            default="auto",
            commands=("eval",),
        ),
        Flag("--beam-size", "1 = greedy; >1 = prefix beam search.", int, key="eval.beam_size", commands=("eval",)),
        Flag("--head", "student | teacher (default: eval.head).", key="eval.head", commands=("export",)),
    ),
)
app = RECIPE.app()


@app.command()
def prep(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--source", help="librispeech | manifest | synthetic")] = "synthetic",
    raw: Annotated[
        Optional[str],
        typer.Option(
            "--raw",
            help="librispeech: the LibriSpeech folder or one set of it. "
            "manifest: a NeMo JSON-lines, Common Voice TSV, audiofolder metadata.csv or TSV/CSV/JSONL "
            "file, a Kaldi/ESPnet data dir, a Common Voice release dir, or a dir of such dirs.",
        ),
    ] = None,
    out: Annotated[str, typer.Option("--out", help="Where the prepared dataset goes.")] = "data/asr",
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="char | bpe | unigram (sentencepiece).")] = "char",
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="sentencepiece vocabulary size.")] = 64,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    text_norm: Annotated[
        str,
        typer.Option(
            "--text-norm",
            help="lower (default) | strip_punctuation (for sentence-style transcripts, e.g. Common Voice).",
        ),
    ] = "lower",
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Read a real dataset format (or write the synthetic espeak-ng corpus) into a prepared dataset.
    Each set keeps its name (test-clean, test-other, ...) and takes its role from it."""
    from .recipe import prep_stage

    run_stage(
        "asr-ctc prep",
        lambda: prep_stage(source, raw, out, tokenizer, vocab_size, overwrite, seed, text_norm),
        json_out,
        debug,
        ctx,
    )


@app.command()
def transcribe(
    ctx: typer.Context,
    files: Annotated[list[str], typer.Argument(help="Audio files (any rate; resampled to 16 kHz).")],
    model: Annotated[str, typer.Option("--model", help="An export directory or its model.pt2.")],
    beam_size: Annotated[int, typer.Option("--beam-size")] = 1,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Transcribe audio files with an exported model alone."""
    from .recipe import transcribe_stage

    run_stage(
        "asr-ctc transcribe",
        lambda: transcribe_stage(model, files, beam_size),
        json_out,
        debug,
        ctx,
        lines=lambda result: [f"{t['file']}\t{t['text']}" for t in result["transcripts"]],
    )
