"""`skd dataset-distill ...`: the recipe's description (train / eval / export / run come from the
engine's contract) and its own commands, `prep`, `generate` and `sample`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..engine.cliutil import DebugOpt, JsonOpt, run_stage
from ..engine.contract import DeviceOpt, Flag, OverwriteOpt, Recipe, RunDirOpt

RECIPE = Recipe(
    name="dataset-distill",
    help="Generative dataset distillation with self-KD logit alignment (Li et al., ICASSP 2025) on the DiM "
    "pipeline: a conditional WGAN-GP, then logit matching against a model pool.",
    hooks="skdcli.dataset_distill.recipe:DistillHooks",
    config_example="recipes/dataset_distill/cifar10_match.yaml",
    docs={
        "train": "Train stage cgan (AC-WGAN-GP) or stage match (pool logit matching + self-KD; --baseline = DiM's "
        "MSE only); resumable.",
        "eval": "Top-1 on the real test split of fresh models trained on generated images: IPC x arch x mode.",
        "export": "The generator as a torch.export program (z, labels) -> images, + safetensors + manifest.",
        "run": "Tiny default on real 8x8 digits: 3 seeds of cgan -> match with and without SKD -> IPC table "
        "vs random and full real -> export -> samples.",
    },
    flags=(
        Flag("--stage", "cgan | match (stage).", key="stage", commands=("train",)),
        Flag(
            "--init",
            "Stage-1 weights for --stage match: a cgan run dir, a model.safetensors or DiM's "
            "model_dict_*.pth (match.init).",
            key="match.init",
            commands=("train",),
        ),
        Flag("--ipc", "Images per class, comma-separated (default: eval.ipc), e.g. 1,10,50.", commands=("eval",)),
        Flag(
            "--arch",
            "Evaluation architectures, comma-separated (default: eval.archs), e.g. convnet,resnet18.",
            commands=("eval",),
        ),
        Flag("--mode", "fixed,on_the_fly (default: eval.modes).", commands=("eval",)),
        Flag("--repeats", "Models per cell, for mean ± std (default: eval.repeats).", int, None, commands=("eval",)),
        Flag(
            "--epochs",
            "Epochs of each evaluation model (eval.epochs; DiM: 1000).",
            int,
            key="eval.epochs",
            commands=("eval",),
        ),
        Flag(
            "--select",
            "last | best_on_test (DiM's optimistic choice) (eval.select).",
            key="eval.select",
            commands=("eval",),
        ),
        Flag(
            "--references/--no-references",
            "Also train on random real subsets and the full real train split.",
            bool,
            False,
            commands=("eval",),
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
            help="mnist | fashion-mnist (IDX, gzipped or not) | cifar10 | "
            "cifar100 (binary or python version) | imagefolder | "
            "digits (scikit-learn's) | synthetic.",
        ),
    ],
    raw: Annotated[
        Optional[str], typer.Option("--raw", help="The extracted download (synthetic: where the PNGs go).")
    ] = None,
    out: Annotated[str, typer.Option("--out", help="Where the prepared dataset goes.")] = "data/dataset-distill",
    test_fraction: Annotated[
        float,
        typer.Option(
            "--test-fraction", help="imagefolder without train/test, digits, synthetic: the held-out test share."
        ),
    ] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Split / synthetic seed.")] = 0,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Read a real image-classification dataset into train/test tensors (magic numbers and sizes checked)."""
    from .recipe import prep_stage

    run_stage(
        "dataset-distill prep",
        lambda: prep_stage(source, raw, out, overwrite, test_fraction, seed),
        json_out,
        debug,
        ctx,
    )


@app.command()
def generate(
    ctx: typer.Context,
    run_dir: RunDirOpt = "runs/dataset-distill",
    ipc: Annotated[int, typer.Option("--ipc", help="Images per class.")] = 10,
    out: Annotated[
        str, typer.Option("--out", help="Output directory: <class>/*.png + images.safetensors.")
    ] = "generated",
    fixed_seed: Annotated[
        Optional[int],
        typer.Option("--fixed-seed", help="Noise seed: bit-identical output (default: a fresh seed, recorded)."),
    ] = None,
    device: DeviceOpt = "cpu",
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Write a distilled dataset from the run's generator: an ImageFolder of PNGs plus a tensor file."""
    from .recipe import DistillHooks, generate_stage

    run_stage(
        "dataset-distill generate",
        lambda: generate_stage(DistillHooks(), run_dir, ipc, out, fixed_seed, overwrite, device),
        json_out,
        debug,
        ctx,
        lines=lambda r: [f"{r['out']}\t{r['num_images']} images\tseed {r['seed']}"],
    )


@app.command()
def sample(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="An export directory (from `export`).")],
    class_: Annotated[str, typer.Option("--class", help="Class index or name.")],
    n: Annotated[int, typer.Option("--n", help="Number of images in the grid.")] = 16,
    out: Annotated[
        Optional[str], typer.Option("--out", help="PNG path (default: EXPORT/../samples/class<k>.png).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Noise seed.")] = 0,
    scale: Annotated[int, typer.Option("--scale", help="Upscale factor per image (0: to about 64 pixels).")] = 0,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """A PNG grid of N generated images of one class, from an exported generator alone."""
    from .recipe import sample_stage

    run_stage(
        "dataset-distill sample",
        lambda: sample_stage(model, class_, n, out, seed, scale, overwrite),
        json_out,
        debug,
        ctx,
        lines=lambda r: [r["png"]],
    )
