"""`skd xqa ...`: the recipe's description (train / eval / export / run come from the engine's contract)
and its own commands, `prep`, `answer` and `score`."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from ..engine.cliutil import DebugOpt, JsonOpt, run_stage
from ..engine.contract import Flag, OverwriteOpt, Recipe

TRAIN_RUN = ("train", "run")

RECIPE = Recipe(
    name="xqa",
    help="Generalized cross-lingual extractive QA with self-KD in generations and the mAP@k coefficient "
    "(Carrino, Escolano & Fonollosa, arXiv 2309.17134).",
    hooks="skdcli.xqa.recipe:XqaHooks",
    config_example="recipes/xqa/mbert_xquad.yaml",
    docs={
        "train": "Fine-tune a span model with CE + c * T^2 KL to the previous generation (or the CE --baseline).",
        "eval": "G-XLT / XLT EM and F1 of a suite (question x context matrix, heatmap), or --compare two runs "
        "(Wilcoxon signed-rank on example F1).",
        "export": "torch.export program + safetensors + tokenizer + HF directory + manifest (parity checked).",
        "run": "The tiny default: synthetic corpus -> stage 1 -> CE, SKD, SKD + mAP@k -> test grid -> export.",
    },
    flags=(
        Flag("--init", "Local Hugging Face checkpoint directory to start from (model.init).", key="model.init"),
        Flag("--kd-loss", "fw | rv | sym: KL(teacher||student), the reverse, or both (kd.loss).", key="kd.loss"),
        Flag("--temperature", "Distillation temperature T (kd.temperature).", float, key="kd.temperature"),
        Flag(
            "--map-coefficient/--no-map-coefficient",
            "Weight the KL by the teacher's mAP@k (kd.map_coefficient).",
            bool,
            key="kd.map_coefficient",
        ),
        Flag("--map-k", "k of mAP@k (kd.map_k).", int, key="kd.map_k"),
        Flag(
            "--map-window",
            "Hits from w positions before the gold one to w - 1 after; 0 = the gold position only (kd.map_window).",
            int,
            key="kd.map_window",
        ),
        Flag(
            "--ce/--no-ce",
            "Keep the cross-entropy term (--no-ce: the paper's w/o-CE ablation) (kd.ce).",
            bool,
            key="kd.ce",
        ),
        Flag(
            "--generations/--no-generations",
            "Refresh the teacher to the student at every epoch end, or keep the "
            "initial model as a frozen teacher (kd.generations).",
            bool,
            key="kd.generations",
        ),
        Flag(
            "--suite", "mlqa | xquad | tydiqa: the cells and how they are scored.", default="mlqa", commands=("eval",)
        ),
        Flag("--split", "dev | test.", default="test", commands=("eval",)),
        Flag(
            "--compare",
            "RUN_A RUN_B: two evaluated runs, the paper's Wilcoxon signed-rank test on their example-level F1 "
            "(same --suite/--split; writes RUN_A/compare.json).",
            tuple[str, str],
            commands=("eval",),
        ),
        Flag(
            "--normalization",
            "mlqa | squad (default: the suite's) (eval.normalization).",
            key="eval.normalization",
            commands=("eval",),
        ),
    ),
)
app = RECIPE.app()


@app.command()
def prep(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--source", help="xquad | mlqa | tydiqa | squad | synthetic")] = "synthetic",
    raw: Annotated[
        Optional[str],
        typer.Option(
            "--raw",
            help="xquad: folder of xquad.<lang>.json; mlqa: MLQA_V1/; "
            "tydiqa: tydiqa-goldp-v1.1-*.json or their folder; squad: "
            "one v1.1 / v2.0 file.",
        ),
    ] = None,
    out: Annotated[str, typer.Option("--out", help="Where the prepared dataset goes.")] = "data/xqa",
    ntl: Annotated[
        int,
        typer.Option(
            "--ntl", help="xquad: non-English languages sampled per question (+ en); 0 = monolingual pairs only."
        ),
    ] = 5,
    languages: Annotated[
        Optional[str],
        typer.Option("--languages", help="Comma-separated codes to keep (xquad default: en,es,de,ar,vi,hi,zh)."),
    ] = None,
    seed: Annotated[
        Optional[int], typer.Option("--seed", help="Sampling seed (default 3; synthetic: corpus seed 0).")
    ] = None,
    sampling: Annotated[
        str,
        typer.Option(
            "--sampling", help="sorted (reproducible) | set (the official code's, depends on PYTHONHASHSEED)."
        ),
    ] = "sorted",
    keep_impossible: Annotated[
        bool, typer.Option("--keep-impossible", help="SQuAD v2: keep unanswerable questions (target [CLS]).")
    ] = False,
    split: Annotated[
        Optional[str], typer.Option("--split", help="train | dev | test (default: from the file names).")
    ] = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Read XQuAD / MLQA / TyDiQA-GoldP / SQuAD into a prepared dataset (XQuAD: cross-lingual sampling)."""
    from .recipe import prep_stage

    run_stage(
        "xqa prep",
        lambda: prep_stage(source, raw, out, ntl, languages, seed, sampling, keep_impossible, split, overwrite),
        json_out,
        debug,
        ctx,
    )


@app.command()
def answer(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="An export directory (skd xqa export).")],
    question: Annotated[Optional[str], typer.Option("--question", help="One question (with --context).")] = None,
    context: Annotated[Optional[str], typer.Option("--context", help="The paragraph to answer from.")] = None,
    input_path: Annotated[
        Optional[str], typer.Option("--input", help='JSON lines {"id", "question", "context"} (\'-\': stdin).')
    ] = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Answer questions with an exported model alone: one JSON line per input (id, answer, score, start, end)."""
    from .recipe import answer_stage

    run_stage(
        "xqa answer",
        lambda: answer_stage(model, question, context, input_path),
        json_out,
        debug,
        ctx,
        lines=lambda result: [json.dumps(a, ensure_ascii=False) for a in result["answers"]],
    )


@app.command()
def score(
    ctx: typer.Context,
    data: Annotated[str, typer.Option("--data", help="A SQuAD-format file (MLQA, XQuAD, TyDiQA, SQuAD).")],
    predictions: Annotated[str, typer.Option("--predictions", help="JSON {question id: answer}.")],
    lang: Annotated[
        Optional[str], typer.Option("--lang", help="Context language (default: an MLQA file name's).")
    ] = None,
    normalization: Annotated[
        str, typer.Option("--normalization", help="mlqa | squad (default: mlqa when the language is known).")
    ] = "",
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """EM / F1 of one file, as the official MLQA v1 / SQuAD v1.1 evaluation scripts compute them."""
    from .recipe import score_stage

    run_stage(
        "xqa score",
        lambda: score_stage(data, predictions, lang, normalization),
        json_out,
        debug,
        ctx,
        lines=lambda r: [
            json.dumps(
                {"exact_match": r["exact_match"], "f1": r["f1"], "total": r["total"], "unanswered": r["unanswered"]}
            )
        ],
    )
