"""`skd asr-ctc ...`: thin typer commands over recipe.py's stages."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..engine.cliutil import (BaselineOpt, CkptEveryOpt, DebugOpt, DeviceOpt, JsonOpt, MaxStepsOpt, OverwriteOpt,
                              SeedOpt, SetOpt, run_stage)

app = typer.Typer(help="CTC speech recognition with frame-level self-KD (Kim, Kim & Lee, Interspeech 2024).",
                  no_args_is_help=True)


@app.command()
def prep(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--source", help="librispeech | manifest | synthetic")] = "synthetic",
    raw: Annotated[Optional[str], typer.Option("--raw", help="LibriSpeech split dir (or dir of splits), or a TSV/JSONL/CSV manifest.")] = None,
    out: Annotated[str, typer.Option("--out", help="Where the prepared dataset goes.")] = "data/asr",
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="char | bpe | unigram (sentencepiece).")] = "char",
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="sentencepiece vocabulary size.")] = 64,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    overwrite: OverwriteOpt = False, json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """Read a real dataset format (or write the synthetic espeak-ng corpus) into a prepared dataset."""
    from .recipe import prep_stage
    run_stage("asr-ctc prep", lambda: prep_stage(source, raw, out, tokenizer, vocab_size, overwrite, seed), json_out, debug, ctx)


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[Optional[str], typer.Option("--data", help="Prepared dataset (from `prep`).")] = None,
    run_dir: Annotated[str, typer.Option("--run-dir", help="Run directory.")] = "runs/asr-ctc",
    config: Annotated[Optional[str], typer.Option("--config", help="YAML config (e.g. recipes/asr_ctc/librispeech.yaml).")] = None,
    sets: SetOpt = None, baseline: BaselineOpt = False, seed: SeedOpt = None, max_steps: MaxStepsOpt = None,
    checkpoint_every: CkptEveryOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run from its latest checkpoint.")] = False,
    device: DeviceOpt = "auto", overwrite: OverwriteOpt = False, json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """Train the CTC model with self-KD (or the plain-CTC --baseline); works under torchrun."""
    from .recipe import train_stage
    run_stage("asr-ctc train", lambda: train_stage(data, run_dir, config, sets, baseline, seed, max_steps,
                                                    checkpoint_every, resume, device, overwrite), json_out, debug, ctx)


@app.command("eval")
def evaluate(
    ctx: typer.Context,
    run_dir: Annotated[str, typer.Option("--run-dir")] = "runs/asr-ctc",
    data: Annotated[Optional[str], typer.Option("--data", help="Prepared dataset (default: the one the run trained on).")] = None,
    split: Annotated[str, typer.Option("--split", help="test | dev | train | auto (test if present).")] = "auto",
    beam_size: Annotated[Optional[int], typer.Option("--beam-size", help="1 = greedy; >1 = prefix beam search.")] = None,
    device: DeviceOpt = "auto", json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """WER/CER of both heads, spike-timing analysis and a posterior plot; writes eval.json."""
    from .recipe import eval_stage
    run_stage("asr-ctc eval", lambda: eval_stage(run_dir, data, split, beam_size, device), json_out, debug, ctx)


@app.command()
def export(
    ctx: typer.Context,
    run_dir: Annotated[str, typer.Option("--run-dir")] = "runs/asr-ctc",
    out: Annotated[Optional[str], typer.Option("--out", help="Export directory (default: RUN_DIR/export).")] = None,
    head: Annotated[Optional[str], typer.Option("--head", help="student | teacher (default: eval.head).")] = None,
    overwrite: OverwriteOpt = False, json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """torch.export program + safetensors + tokenizer + manifest (with a parity check)."""
    from .recipe import export_stage
    run_stage("asr-ctc export", lambda: export_stage(run_dir, out, head, overwrite), json_out, debug, ctx)


@app.command()
def transcribe(
    ctx: typer.Context,
    files: Annotated[list[str], typer.Argument(help="Audio files (any rate; resampled to 16 kHz).")],
    model: Annotated[str, typer.Option("--model", help="An export directory or its model.pt2.")],
    beam_size: Annotated[int, typer.Option("--beam-size")] = 1,
    json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """Transcribe audio files with an exported model alone."""
    from .recipe import transcribe_stage
    run_stage("asr-ctc transcribe", lambda: transcribe_stage(model, files, beam_size), json_out, debug, ctx)


@app.command()
def run(
    ctx: typer.Context,
    run_dir: Annotated[str, typer.Option("--run-dir")] = "runs/asr-ctc",
    data: Annotated[Optional[str], typer.Option("--data", help="Reuse a prepared dataset instead of RUN_DIR/data.")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="YAML config (default: the tiny embedded one).")] = None,
    baseline: BaselineOpt = False, seed: SeedOpt = None, max_steps: MaxStepsOpt = None, sets: SetOpt = None,
    device: DeviceOpt = "auto", overwrite: OverwriteOpt = False, json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """The whole pipeline on the embedded tiny default: synthetic corpus -> train -> eval -> export."""
    from .recipe import run_all_stages
    run_stage("asr-ctc run", lambda: run_all_stages(run_dir, data, baseline, seed, max_steps, sets, device, overwrite, config),
              json_out, debug, ctx)
