"""`skd lus ...`: the recipe's description (train / eval / export / run come from the engine's contract) and its
own commands, `prep`, `pretrain` and `score`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..engine.cliutil import DebugOpt, JsonOpt, run_stage
from ..engine.contract import SHARED, DeviceOpt, Flag, OverwriteOpt, Recipe, SetOpt, StageOptions

RECIPE = Recipe(
    name="lus",
    help="Lung-ultrasound severity scoring: DINO self-distillation + dual-level VLAD (MeDiVLAD; Guo et al., "
    "ISBI 2025), frame and video level, patient-disjoint 2-fold.",
    hooks="skdcli.lus.recipe:LusHooks",
    config_example="recipes/lus/video.yaml",
    docs={
        "train": "Train a frame head (KNN + linear probe / --finetune-backbone) or a video aggregator on a frozen "
        "backbone (--backbone: a `pretrain` run or a ViT checkpoint; --baseline: random init).",
        "eval": "Accuracy, weighted F1, one-vs-rest AUC and the confusion matrix on the reported fold (frame level: "
        "plus the KNN sweep over k and k chosen on the training fold).",
        "export": "torch.export program (backbone + head: probabilities, frame weights, attention) + safetensors + "
        "manifest, with a parity check.",
        "run": "Tiny default: synthetic clips -> DINO per seed -> frame KNN / linear and video dual-VLAD / NetVLAD / "
        "mean, DINO vs random init, both folds -> main run eval -> export -> score.",
    },
    flags=(
        Flag("--level", "frame | video (level).", key="level", commands=("train",)),
        Flag(
            "--fold",
            "1 | 2: train on this fold file, report on the other (fold).",
            int,
            key="fold",
            commands=("train",),
        ),
        Flag(
            "--aggregator",
            "dual_vlad | netvlad | mean (video.aggregator).",
            key="video.aggregator",
            commands=("train",),
        ),
        Flag(
            "--finetune-backbone",
            "Frame level: fine-tune the backbone with the linear head (frame.mode=finetune; "
            "default: linear probe on cached features).",
            bool,
            False,
            commands=("train",),
        ),
        Flag(
            "--backbone",
            "A `skd lus pretrain` run directory or a local ViT checkpoint (backbone.path; default: "
            "a randomly initialised ViT).",
            key="backbone.path",
            commands=("train",),
        ),
        Flag("--seeds", "Seeds of the DINO-vs-random grid, from --seed (default 0) on.", int, 3, commands=("run",)),
        Flag(
            "--pretrain-set",
            "Override a pretraining config key (PretrainConfig), repeatable; --set, --config and "
            "--max-steps go to the heads.",
            list[str],
            None,
            commands=("run",),
            late=True,
        ),
    ),
)
app = RECIPE.app()

# `pretrain` spells the shared train options the same way (engine/contract.py:SHARED)
DataOpt = SHARED["data"].annotated("train")
SeedOpt = SHARED["seed"].annotated()
MaxStepsOpt = SHARED["max_steps"].annotated()
CheckpointEveryOpt = SHARED["checkpoint_every"].annotated()
ResumeOpt = SHARED["resume"].annotated()


@app.command()
def prep(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="medivlad (official .npy clips + labelled PNGs + fold "
            "CSVs) | videos (a folder + labels.csv) | pocus "
            "(COVID-19 POCUS dataset_metadata.csv) | synthetic.",
        ),
    ],
    raw: Annotated[
        Optional[str],
        typer.Option(
            "--raw",
            help="The dataset folder (synthetic: where its MeDiVLAD layout is written; default: a temporary folder).",
        ),
    ] = None,
    out: Annotated[str, typer.Option("--out", help="Where the prepared dataset goes.")] = "data/lus",
    labels: Annotated[
        Optional[str],
        typer.Option("--labels", help="videos: the labels CSV (file,label[,patient]); default RAW/labels.csv."),
    ] = None,
    size: Annotated[int, typer.Option("--size", help="Frames resized to SIZE x SIZE grey.")] = 224,
    fps: Annotated[float, typer.Option("--fps", help="Videos resampled to this frame rate.")] = 15.0,
    frames_per_clip: Annotated[
        int, typer.Option("--frames-per-clip", help="videos / pocus: labelled frames taken per labelled clip.")
    ] = 3,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Read LUS clips and labels in a real format into a prepared dataset (unreadable clips are skipped and listed)."""
    from .recipe import prep_stage

    run_stage(
        "lus prep",
        lambda: prep_stage(source, raw, out, size, fps, labels, frames_per_clip, overwrite),
        json_out,
        debug,
        ctx,
    )


@app.command()
def pretrain(
    ctx: typer.Context,
    data: DataOpt = None,
    run_dir: Annotated[str, typer.Option("--run-dir", help="Run directory.")] = "runs/lus-pretrain",
    config: Annotated[Optional[str], typer.Option("--config", help="YAML config (e.g. recipes/lus/dino.yaml).")] = None,
    sets: SetOpt = None,
    init: Annotated[
        Optional[str],
        typer.Option(
            "--init",
            help="A local ViT checkpoint (timm / DINO .pth or "
            ".safetensors, or a Hugging Face directory) to "
            "continue from (init); default: from scratch.",
        ),
    ] = None,
    seed: SeedOpt = None,
    max_steps: MaxStepsOpt = None,
    checkpoint_every: CheckpointEveryOpt = None,
    resume: ResumeOpt = False,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """DINO self-distillation of the ViT on unlabelled frames (EMA teacher, centring, sharpening, multi-crop)."""
    from .recipe import LusHooks

    opts = StageOptions(
        command="train",
        run_dir=run_dir,
        data=data,
        config=config,
        sets=list(sets or []),
        seed=seed,
        max_steps=max_steps,
        checkpoint_every=checkpoint_every,
        resume=resume,
        device=device,
        overwrite=overwrite,
        json=json_out,
        debug=debug,
        extra={"init": init},
    )
    run_stage("lus pretrain", lambda: LusHooks().pretrain(opts), json_out, debug, ctx)


@app.command()
def score(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="A video-level export directory.")],
    video: Annotated[list[str], typer.Option("--video", help="A clip (video file, .npy or frame folder); repeatable.")],
    out: Annotated[str, typer.Option("--out", help="Folder for the PNGs and one JSON per video.")] = "lus_scores",
    top_frames: Annotated[int, typer.Option("--top-frames", help="Frames shown with their attention map.")] = 3,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Score videos with an export alone: severity and class probabilities, frame weights and attention PNGs."""
    from .recipe import score_lines, score_stage

    run_stage(
        "lus score",
        lambda: score_stage(model, video, out, top_frames, overwrite),
        json_out,
        debug,
        ctx,
        lines=score_lines,
    )
