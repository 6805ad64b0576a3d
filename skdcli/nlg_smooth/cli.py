"""`skd nlg-smooth ...`: thin typer commands over recipe.py's stages."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ..engine.cliutil import (BaselineOpt, CkptEveryOpt, DebugOpt, DeviceOpt, JsonOpt, MaxStepsOpt, OverwriteOpt,
                              SeedOpt, SetOpt, run_stage)

app = typer.Typer(help="Translation with adaptive label smoothing from self-knowledge, ALS-SK "
                       "(Lee, Cheung & Zhang, EMNLP 2022).", no_args_is_help=True)


@app.command()
def prep(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--source", help="iwslt14 | parallel | synthetic")] = "synthetic",
    raw: Annotated[Optional[str], typer.Option("--raw", help="iwslt14: the prepared dir (train.de/.en, valid.*, test.*); "
                                                             "parallel: a .tsv/.jsonl file or a dir of train/valid/test ones.")] = None,
    out: Annotated[str, typer.Option("--out", help="Where the prepared dataset goes.")] = "data/nlg-smooth",
    vocab_size: Annotated[Optional[int], typer.Option("--vocab-size", help="Joint sentencepiece vocabulary (default 10000; synthetic 200).")] = None,
    model_type: Annotated[str, typer.Option("--model-type", help="sentencepiece model: bpe | unigram | word | char.")] = "bpe",
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Longest sentence in pieces (model.max_positions - 2).")] = 256,
    src_lang: Annotated[Optional[str], typer.Option("--src-lang", help="Source language suffix/key (default: de, or detected).")] = None,
    tgt_lang: Annotated[Optional[str], typer.Option("--tgt-lang", help="Target language suffix/key (default: en, or detected).")] = None,
    bpe: Annotated[str, typer.Option("--bpe", help="'@@ ' markers in the input: remove (default) | keep.")] = "remove",
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Drop empty / over-long pairs (listed in skipped.jsonl) instead of stopping.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="synthetic: sentence sampling seed.")] = 0,
    overwrite: OverwriteOpt = False, json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """Read IWSLT14 / a TSV-JSONL parallel file (or write the synthetic toy pair) and train the tokenizer."""
    from .recipe import prep_stage
    run_stage("nlg-smooth prep", lambda: prep_stage(source, raw, out, vocab_size, model_type, max_tokens, src_lang,
                                                    tgt_lang, bpe, skip_bad, overwrite, seed), json_out, debug, ctx)


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[Optional[str], typer.Option("--data", help="Prepared dataset (from `prep`).")] = None,
    run_dir: Annotated[str, typer.Option("--run-dir", help="Run directory.")] = "runs/nlg-smooth",
    config: Annotated[Optional[str], typer.Option("--config", help="YAML config (e.g. recipes/nlg_smooth/iwslt14.yaml).")] = None,
    sets: SetOpt = None, baseline: BaselineOpt = False, seed: SeedOpt = None, max_steps: MaxStepsOpt = None,
    checkpoint_every: CkptEveryOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run from its latest checkpoint.")] = False,
    device: DeviceOpt = "auto", overwrite: OverwriteOpt = False, json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """Train with ALS-SK (loss.method=als_sk), or --baseline (plain CE); ls / confpen via --set loss.method=..."""
    from .recipe import train_stage
    run_stage("nlg-smooth train", lambda: train_stage(data, run_dir, config, sets, baseline, seed, max_steps,
                                                      checkpoint_every, resume, device, overwrite), json_out, debug, ctx)


@app.command("eval")
def evaluate(
    ctx: typer.Context,
    run_dir: Annotated[str, typer.Option("--run-dir")] = "runs/nlg-smooth",
    data: Annotated[Optional[str], typer.Option("--data", help="Prepared dataset (default: the one the run trained on).")] = None,
    split: Annotated[str, typer.Option("--split", help="test | valid | train.")] = "test",
    beam_size: Annotated[Optional[int], typer.Option("--beam-size", help="1 = greedy (default: eval.beam_size).")] = None,
    lenpen: Annotated[Optional[float], typer.Option("--lenpen", help="Length penalty: score / len^lenpen.")] = None,
    ece_bins: Annotated[Optional[int], typer.Option("--ece-bins", help="Confidence bins for ECE/MCE.")] = None,
    device: DeviceOpt = "auto", json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """BLEU (tokenized and sacreBLEU), chrF, token ECE/MCE + reliability diagram, NLL; writes eval.json."""
    from .recipe import eval_stage
    run_stage("nlg-smooth eval", lambda: eval_stage(run_dir, data, split, beam_size, lenpen, ece_bins, device),
              json_out, debug, ctx)


@app.command()
def export(
    ctx: typer.Context,
    run_dir: Annotated[str, typer.Option("--run-dir")] = "runs/nlg-smooth",
    out: Annotated[Optional[str], typer.Option("--out", help="Export directory (default: RUN_DIR/export).")] = None,
    overwrite: OverwriteOpt = False, json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """torch.export program + safetensors + tokenizer + manifest (with a parity check)."""
    from .recipe import export_stage
    run_stage("nlg-smooth export", lambda: export_stage(run_dir, out, overwrite), json_out, debug, ctx)


@app.command()
def translate(
    ctx: typer.Context,
    texts: Annotated[Optional[list[str]], typer.Argument(help="Sentences to translate (none: read stdin, one per line).")] = None,
    model: Annotated[str, typer.Option("--model", help="An export directory or its model.pt2.")] = "runs/nlg-smooth/export",
    beam_size: Annotated[Optional[int], typer.Option("--beam-size", help="Default: the export's eval.beam_size.")] = None,
    lenpen: Annotated[Optional[float], typer.Option("--lenpen")] = None,
    detok: Annotated[bool, typer.Option("--detok", help="Detokenize the output (Moses-style, ours).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="stdin lines translated together (1 = strictly line by line).")] = 16,
    json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """Translate with an exported model alone: one output line per input line on stdout (or --json)."""
    from .recipe import translate_stage

    def go() -> dict:
        result = translate_stage(model, texts or [], beam_size, lenpen, detok, batch_size,
                                 stream=None if json_out else sys.stdout)
        if not json_out:
            raise typer.Exit(0)  # the translations are already on stdout; no table
        return result

    run_stage("nlg-smooth translate", go, json_out, debug, ctx)


@app.command()
def run(
    ctx: typer.Context,
    run_dir: Annotated[str, typer.Option("--run-dir")] = "runs/nlg-smooth",
    data: Annotated[Optional[str], typer.Option("--data", help="Reuse a prepared dataset instead of RUN_DIR/data.")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="YAML config (default: the tiny embedded one).")] = None,
    compare: Annotated[bool, typer.Option("--compare/--no-compare", help="Also train CE and uniform LS (RUN_DIR/baselines/).")] = True,
    baseline: BaselineOpt = False, seed: SeedOpt = None, max_steps: MaxStepsOpt = None, sets: SetOpt = None,
    device: DeviceOpt = "auto", overwrite: OverwriteOpt = False, json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """The whole pipeline on the embedded tiny default: toy pair -> train SKD, CE, LS -> eval -> export."""
    from .recipe import run_all_stages
    run_stage("nlg-smooth run", lambda: run_all_stages(run_dir, data, baseline, seed, max_steps, sets, device,
                                                       overwrite, config, compare), json_out, debug, ctx)
