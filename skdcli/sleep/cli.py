"""`skd sleep ...`: thin typer commands over recipe.py's stages."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..engine.cliutil import (BaselineOpt, CkptEveryOpt, DebugOpt, DeviceOpt, JsonOpt, MaxStepsOpt, OverwriteOpt,
                              SeedOpt, SetOpt, run_stage)

app = typer.Typer(help="Sleep staging from single-channel EEG: Siamese Sleep Transformer with self-KD and selective "
                       "batch sampling (Kwak, Kweon & Shin, 2022), cross-dataset SHHS -> Sleep-EDF.",
                  no_args_is_help=True)

SamplerOpt = Annotated[Optional[str], typer.Option("--sampler", help="random | balanced | selective (sampler.kind).")]


@app.command()
def prep(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--source", help="sleep-edf (cassette EDF + hypnogram EDF+) | shhs (EDF + NSRR/Profusion XML).")],
    raw: Annotated[Optional[str], typer.Option("--raw", help="The dataset's download directory.")] = None,
    out: Annotated[str, typer.Option("--out", help="Where the prepared dataset goes.")] = "data/sleep",
    channel: Annotated[Optional[str], typer.Option("--channel", help="EEG channel label (default: 'EEG Fpz-Cz' / SHHS 'EEG' = C4-A1).")] = None,
    fs: Annotated[int, typer.Option("--fs", help="Common sampling rate in Hz (resampled).")] = 100,
    trim_wake: Annotated[bool, typer.Option("--trim-wake/--no-trim-wake", help="Keep wake only 30 min around sleep.")] = True,
    subjects: Annotated[Optional[str], typer.Option("--subjects", help="Sleep-EDF subjects, e.g. 0-19 (Sleep-EDF-20).")] = None,
    overwrite: OverwriteOpt = False, json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """Read real recordings into 30-s epochs (incremental: unchanged recordings are not redone)."""
    from .recipe import prep_stage
    run_stage("sleep prep", lambda: prep_stage(source, raw, out, channel, fs, trim_wake, subjects, overwrite),
              json_out, debug, ctx)


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[Optional[str], typer.Option("--data", help="Prepared training dataset (e.g. SHHS).")] = None,
    run_dir: Annotated[str, typer.Option("--run-dir", help="Run directory.")] = "runs/sleep",
    config: Annotated[Optional[str], typer.Option("--config", help="YAML config (e.g. recipes/sleep/shhs.yaml).")] = None,
    sets: SetOpt = None, baseline: BaselineOpt = False, sampler: SamplerOpt = None, seed: SeedOpt = None,
    max_steps: MaxStepsOpt = None, checkpoint_every: CkptEveryOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run from its latest checkpoint.")] = False,
    repeats: Annotated[int, typer.Option("--repeats", help="Train N seeds into RUN_DIR/seed<k>; report mean ± std.")] = 1,
    eval_data: Annotated[Optional[str], typer.Option("--eval-data", help="Also evaluate cross-dataset on this prepared dataset.")] = None,
    device: DeviceOpt = "auto", overwrite: OverwriteOpt = False, json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """Train SST with Siamese self-KD (or the plain-CE --baseline); works under torchrun."""
    from .recipe import train_stage
    run_stage("sleep train", lambda: train_stage(data, run_dir, config, sets, baseline, sampler, seed, max_steps,
                                                  checkpoint_every, resume, device, overwrite, repeats, eval_data),
              json_out, debug, ctx)


@app.command("eval")
def evaluate(
    ctx: typer.Context,
    run_dir: Annotated[str, typer.Option("--run-dir")] = "runs/sleep",
    data: Annotated[Optional[str], typer.Option("--data", help="Prepared dataset (default: the run's, dev recordings).")] = None,
    cross_dataset: Annotated[bool, typer.Option("--cross-dataset", help="Evaluate every recording of --data, another dataset.")] = False,
    device: DeviceOpt = "auto", json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """Accuracy, macro-F1, Cohen's kappa, per-stage F1, confusion matrix and both datasets' priors."""
    from .recipe import eval_stage
    run_stage("sleep eval", lambda: eval_stage(run_dir, data, cross_dataset, device), json_out, debug, ctx)


@app.command()
def export(
    ctx: typer.Context,
    run_dir: Annotated[str, typer.Option("--run-dir")] = "runs/sleep",
    out: Annotated[Optional[str], typer.Option("--out", help="Export directory (default: RUN_DIR/export).")] = None,
    overwrite: OverwriteOpt = False, json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """torch.export program + safetensors + manifest (with a parity check)."""
    from .recipe import export_stage
    run_stage("sleep export", lambda: export_stage(run_dir, out, overwrite), json_out, debug, ctx)


@app.command()
def score(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="An export directory.")],
    edf: Annotated[str, typer.Option("--edf", help="The recording (EDF/EDF+).")],
    out: Annotated[str, typer.Option("--out", help="CSV path; .edf (EDF+ hypnogram) and .png are written beside it.")],
    channel: Annotated[Optional[str], typer.Option("--channel", help="EEG channel (default: the training channel).")] = None,
    hypnogram: Annotated[Optional[str], typer.Option("--hypnogram", help="True scoring (EDF+ or SHHS XML): plot and metrics.")] = None,
    overwrite: OverwriteOpt = False, json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """Stage a new recording with an exported model alone."""
    from .recipe import score_stage
    run_stage("sleep score", lambda: score_stage(model, edf, out, channel, hypnogram, overwrite), json_out, debug, ctx)


@app.command()
def run(
    ctx: typer.Context,
    run_dir: Annotated[str, typer.Option("--run-dir")] = "runs/sleep",
    data: Annotated[Optional[str], typer.Option("--data", help="Reuse a prepared training dataset.")] = None,
    eval_data: Annotated[Optional[str], typer.Option("--eval-data", help="Reuse a prepared cross-dataset test set.")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="YAML config (default: the tiny embedded one).")] = None,
    baseline: BaselineOpt = False, sampler: SamplerOpt = None, seed: SeedOpt = None, max_steps: MaxStepsOpt = None,
    sets: SetOpt = None, device: DeviceOpt = "auto", overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """Tiny default: synthetic SHHS-like -> train -> eval --cross-dataset on Sleep-EDF-like -> export -> score."""
    from .recipe import run_all_stages
    run_stage("sleep run", lambda: run_all_stages(run_dir, data, eval_data, baseline, sampler, seed, max_steps, sets,
                                                  device, overwrite, config), json_out, debug, ctx)
