"""`skd sleep ...`: the recipe's description (train / eval / export / run come from the engine's
contract) and its own commands, `prep` and `score`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..engine.cliutil import DebugOpt, JsonOpt, run_stage
from ..engine.contract import Flag, OverwriteOpt, Recipe

RECIPE = Recipe(
    name="sleep",
    help="Sleep staging from single-channel EEG: Siamese Sleep Transformer with self-KD and selective "
    "batch sampling (Kwak, Kweon & Shin, 2022), cross-dataset SHHS -> Sleep-EDF.",
    hooks="skdcli.sleep.recipe:SleepHooks",
    config_example="recipes/sleep/shhs.yaml",
    docs={
        "train": "Train SST with Siamese self-KD (or the plain-CE --baseline); works under torchrun.",
        "eval": "Accuracy, macro-F1, Cohen's kappa, per-stage F1, confusion matrix and both datasets' priors.",
        "export": "torch.export program + safetensors + manifest (with a parity check).",
        "run": "Tiny default: synthetic SHHS-like -> train -> eval --cross-dataset on Sleep-EDF-like -> export -> score.",
    },
    flags=(
        Flag("--sampler", "random | balanced | selective (sampler.kind).", key="sampler.kind"),
        Flag(
            "--repeats",
            "Train N seeds into RUN_DIR/seed<k>; report mean ± std.",
            int,
            1,
            commands=("train",),
            late=True,
        ),
        Flag("--eval-data", "Also evaluate cross-dataset on this prepared dataset.", commands=("train",), late=True),
        Flag(
            "--folds",
            "Subject-wise K-fold cross-validation: train fold k into RUN_DIR/fold<k>, test it on its "
            "subjects; per-fold table, mean ± std and pooled metrics (RUN_DIR/folds.json).",
            int,
            0,
            commands=("train",),
            late=True,
        ),
        Flag("--eval-data", "Reuse a prepared cross-dataset test set.", commands=("run",)),
        Flag(
            "--cross-dataset", "Evaluate every recording of --data, another dataset.", bool, False, commands=("eval",)
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
            "--source",
            help="sleep-edf (cassette EDF + hypnogram EDF+) | shhs (EDF + "
            "NSRR/Profusion XML) | synthetic (SHHS-like) | "
            "synthetic-sleep-edf.",
        ),
    ],
    raw: Annotated[Optional[str], typer.Option("--raw", help="The dataset's download directory.")] = None,
    out: Annotated[str, typer.Option("--out", help="Where the prepared dataset goes.")] = "data/sleep",
    channel: Annotated[
        Optional[str], typer.Option("--channel", help="EEG channel label (default: 'EEG Fpz-Cz' / SHHS 'EEG' = C4-A1).")
    ] = None,
    fs: Annotated[int, typer.Option("--fs", help="Common sampling rate in Hz (resampled).")] = 100,
    trim_wake: Annotated[
        bool, typer.Option("--trim-wake/--no-trim-wake", help="Keep wake only 30 min around sleep.")
    ] = True,
    subjects: Annotated[
        Optional[str],
        typer.Option(
            "--subjects",
            help="Sleep-EDF subject ranges (0-19 = Sleep-EDF-20) "
            "or SHHS ids (shhs1-200001, 200001), comma-separated or a "
            "FILE with one or more per line (# comments).",
        ),
    ] = None,
    normalisation: Annotated[
        str,
        typer.Option(
            "--normalisation", help="robust | zscore (per recording, before trimming) | epoch; recorded in the export."
        ),
    ] = "robust",
    channel_fallback: Annotated[
        Optional[list[str]],
        typer.Option(
            "--channel-fallback",
            help="Channel read when "
            "--channel is missing, recorded as a warning (repeatable; SHHS default: EEG(sec), "
            "EEG2 = C3-A2).",
        ),
    ] = None,
    no_channel_fallback: Annotated[
        bool, typer.Option("--no-channel-fallback", help="Skip a night that lacks --channel.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="synthetic: recording seed.")] = 0,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Read real recordings into 30-s epochs (incremental: unchanged recordings are not redone; a night that fails
    to read is skipped and listed in skipped.jsonl)."""
    from .recipe import prep_stage

    fallbacks = () if no_channel_fallback else (tuple(channel_fallback) if channel_fallback else None)
    run_stage(
        "sleep prep",
        lambda: prep_stage(
            source, raw, out, channel, fs, trim_wake, subjects, overwrite, seed, normalisation, fallbacks
        ),
        json_out,
        debug,
        ctx,
    )


@app.command()
def score(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="An export directory.")],
    edf: Annotated[str, typer.Option("--edf", help="The recording (EDF/EDF+).")],
    out: Annotated[str, typer.Option("--out", help="CSV path; .edf (EDF+ hypnogram) and .png are written beside it.")],
    channel: Annotated[
        Optional[str], typer.Option("--channel", help="EEG channel (default: the training channel).")
    ] = None,
    hypnogram: Annotated[
        Optional[str],
        typer.Option(
            "--hypnogram",
            help="True scoring (EDF+ or SHHS XML): metrics on "
            "eval's (trimmed) epochs and on the whole night, its sleep "
            "statistics, the plot.",
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Stage a new recording with an exported model alone."""
    from .recipe import score_stage

    run_stage(
        "sleep score",
        lambda: score_stage(model, edf, out, channel, hypnogram, overwrite),
        json_out,
        debug,
        ctx,
        lines=score_lines,
    )


def score_lines(result: dict) -> list[str]:
    """One line per input recording: where the hypnogram went, and how it scored against the truth."""
    stats = result["sleep_statistics"]["predicted"]
    line = (
        f"{result['edf']}\t{result['epochs']} epochs\t{result['csv']}\tTST {stats['tst_min']:g} min"
        f"\tSE {stats['sleep_efficiency_pct']:.1f}%"
    )
    if "accuracy" in result:  # on eval's (trimmed) epochs; the whole night's are in --json
        line += f"\taccuracy {result['accuracy']:.3f}\tmacro-F1 {result['macro_f1']:.3f}\tkappa {result['kappa']:.3f}"
    return [line]
