"""`skd sar ...`: the recipe's description (train / eval / export / run come from the engine's contract)
and its own commands, `prep`, `predict` and `compare`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..engine.cliutil import DebugOpt, JsonOpt, run_stage
from ..engine.contract import DeviceOpt, Flag, OverwriteOpt, Recipe, RunDirOpt, SetOpt

METHOD_NAMES = "drrnet | cs-kd | ps-kd | tf-kd | byot | dlb | zipf-ls | ce"
BACKBONE_NAMES = "resnet10t | resnet18 | resnet50 | vgg16 | densenet121 | mobilenet_v2"

RECIPE = Recipe(
    name="sar",
    help="SAR ship classification with DRRNet-SKD: offline + online self-KD combined by two reverse-changing "
    "weights from an Adaptive Weight Assignment module (Xu et al., arXiv 2311.15231), and the self-KD "
    "baselines it is compared with (CS-KD, PS-KD, TF-KD, BYOT, DLB, Zipf's LS).",
    hooks="skdcli.sar.recipe:SarHooks",
    config_example="recipes/sar/fusar.yaml",
    docs={
        "train": "Train a classifier with DRRNet-SKD or a baseline self-KD method (--method); --repeats N seeds.",
        "eval": "Top-1, macro-F1, per-class accuracy and a confusion PNG on the test (or val) split.",
        "export": "torch.export program + safetensors + manifest (normalisation, classes; parity check).",
        "run": "Tiny default: synthetic FUSAR-like chips -> DRRNet-SKD and CE over 3 seeds -> eval -> export -> "
        "Grad-CAM.",
    },
    flags=(
        Flag("--method", METHOD_NAMES + " (kd.method).", key="kd.method"),
        Flag("--backbone", BACKBONE_NAMES + " (model.backbone).", key="model.backbone"),
        Flag(
            "--repeats",
            "Train N seeds into RUN_DIR/seed<k>; report mean ± std.",
            int,
            1,
            commands=("train",),
            late=True,
        ),
        Flag("--split", "test | val (default eval.split = test).", commands=("eval",)),
        Flag("--seeds", "Seeds of DRRNet-SKD and CE, e.g. 0,1,2 (default; with --seed S: S alone).", commands=("run",)),
        Flag("--repeats", "N passes over randomly flipped/shifted test chips: mean ± std.", int, 0, commands=("eval",)),
    ),
)
app = RECIPE.app()


@app.command()
def prep(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--source", help="fusar | opensarship | imagefolder | synthetic.")],
    raw: Annotated[Optional[str], typer.Option("--raw", help="The dataset's root directory.")] = None,
    out: Annotated[str, typer.Option("--out", help="Where the prepared dataset goes.")] = "data/sar",
    classes: Annotated[
        Optional[str], typer.Option("--classes", help="Comma-separated class subset (in this order).")
    ] = None,
    label_level: Annotated[str, typer.Option("--label-level", help="fusar: subcategory | category.")] = "subcategory",
    variant: Annotated[
        str, typer.Option("--variant", help="opensarship: patch | patch_uint8 | patch_cal.")
    ] = "patch_uint8",
    pol: Annotated[str, typer.Option("--pol", help="opensarship: vv | vh | vv+vh (two channels).")] = "vv",
    name_regex: Annotated[
        Optional[str],
        typer.Option("--name-regex", help="opensarship: file-name pattern with (?P<cls>..) and (?P<pol>..) groups."),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            "--split", help="train,val,test fractions (stratified, seeded) or a split file of 'id,split' rows."
        ),
    ] = "0.6,0.2,0.2",
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the split, --shots, --label-noise, synthetic chips.")
    ] = 0,
    shots: Annotated[int, typer.Option("--shots", help="Keep K training chips per class (0 = all).")] = 0,
    label_noise: Annotated[float, typer.Option("--label-noise", help="Symmetric noise rate on training labels.")] = 0.0,
    size: Annotated[int, typer.Option("--size", help="Chip side after resizing (pixels).")] = 64,
    crop: Annotated[int, typer.Option("--crop", help="Centre crop before resizing (pixels; 0 = whole chip).")] = 0,
    scale: Annotated[str, typer.Option("--scale", help="auto (uint8 linear, else dB) | db | linear.")] = "auto",
    percentiles: Annotated[str, typer.Option("--percentiles", help="Per-chip clip percentiles LO,HI.")] = "1,99.9",
    per_class: Annotated[int, typer.Option("--per-class", help="synthetic: chips per class.")] = 80,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Read chips (TIFF uint8/uint16/float, PNG...) into normalised arrays; corrupt chips are skipped and listed."""
    from .recipe import prep_stage

    run_stage(
        "sar prep",
        lambda: prep_stage(
            source,
            raw,
            out,
            classes=classes,
            label_level=label_level,
            variant=variant,
            pol=pol,
            name_regex=name_regex,
            split=split,
            seed=seed,
            shots=shots,
            label_noise=label_noise,
            size=size,
            crop=crop,
            scale=scale,
            percentiles=percentiles,
            per_class=per_class,
            overwrite=overwrite,
        ),
        json_out,
        debug,
        ctx,
    )


@app.command()
def predict(
    ctx: typer.Context,
    chips: Annotated[list[str], typer.Argument(help="Chip files (.tif/.tiff/.png...).")],
    model: Annotated[str, typer.Option("--model", help="An export directory (`skd sar export`).")],
    gradcam: Annotated[
        Optional[str], typer.Option("--gradcam", help="Write a Grad-CAM PNG per chip into this folder.")
    ] = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Class and probabilities of each chip (one line per chip), with an exported model alone."""
    from .recipe import predict_chips, prediction_lines

    run_stage(
        "sar predict",
        lambda: predict_chips(model, chips, gradcam, overwrite),
        json_out,
        debug,
        ctx,
        lines=prediction_lines,
    )


@app.command()
def compare(
    ctx: typer.Context,
    data: Annotated[str, typer.Option("--data", help="Prepared dataset (from `prep`).")],
    run_dir: RunDirOpt = "runs/sar_compare",
    methods: Annotated[
        str, typer.Option("--methods", help="Comma-separated methods.")
    ] = "drrnet,ce,cs-kd,ps-kd,tf-kd,byot,dlb,zipf-ls",
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per method (0..N-1).")] = 3,
    config: Annotated[Optional[str], typer.Option("--config", help="YAML config for every run.")] = None,
    backbone: Annotated[Optional[str], typer.Option("--backbone", help=BACKBONE_NAMES + ".")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Optimizer steps (train.max_steps).")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="test | val.")] = None,
    sets: SetOpt = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Train every --methods over N seeds (RUN_DIR/<method>/seed<k>; reused when finished) into one table."""
    from .recipe import compare_methods, compare_report

    names = [m.strip() for m in methods.split(",") if m.strip()]
    run_stage(
        "sar compare",
        lambda: compare_methods(
            data,
            run_dir,
            names,
            seeds,
            config=config,
            sets=sets,
            backbone=backbone,
            max_steps=max_steps,
            device=device,
            overwrite=overwrite,
            split=split,
        ),
        json_out,
        debug,
        ctx,
        render=compare_report,
    )
