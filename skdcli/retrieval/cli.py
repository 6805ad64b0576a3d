"""`skd retrieval ...`: the recipe's description (train / eval / export / run come from the engine's
contract) and its own commands: prep, index, search, explain."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..engine.cliutil import DebugOpt, JsonOpt, run_stage
from ..engine.contract import Flag, OverwriteOpt, Recipe, RunDirOpt, SetOpt

RECIPE = Recipe(
    name="retrieval",
    help="Text-image retrieval with joint sparse-dense self-KD (Song et al., CIKM 2025) and an inverted index.",
    hooks="skdcli.retrieval.recipe:RetrievalHooks",
    config_example="recipes/retrieval/coco.yaml",
    docs={
        "train": "Train the dense + sparse heads with mutual self-KD (or the contrastive-only --baseline).",
        "eval": "R@1/5/10 + MRR@10 (dense, sparse, integrated), i2t + RSUM, sparsity, FLOPs, sparse score mass; "
        "TREC run files and per-query results; --index: through the built index; --compare: significance.",
        "export": "torch.export program of the heads + safetensors + vocabulary + manifest (parity checked).",
        "run": "The whole pipeline on the tiny default: synthetic corpus -> train -> eval -> export -> index -> search.",
    },
    flags=(
        Flag("--split", "test | val | train (default eval.split).", key="eval.split", commands=("eval",)),
        Flag(
            "--index/--no-index",
            "Also answer every query from RUN/index (Seismic, as `search` does): R@k, MRR@10 "
            "and latency percentiles next to the exact scorer's.",
            type=bool,
            default=False,
            commands=("eval",),
        ),
        Flag(
            "--compare",
            "Another evaluated run (e.g. the --baseline): paired t-test and Fisher randomisation "
            "p-values per score and metric, from both runs' eval/per_query.tsv.",
            commands=("eval",),
        ),
        Flag("--query", "Demo query searched at the end.", default="a red circle", commands=("run",), late=True),
    ),
)
app = RECIPE.app()


@app.command()
def prep(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--source", help="synthetic | karpathy | embeddings")] = "synthetic",
    raw: Annotated[
        Optional[str],
        typer.Option(
            "--raw",
            help="karpathy: folder with dataset_*.json (or coco_karpathy_*.json) "
            "and the images; embeddings: folder with {text,img}_embs*.parquet + dataset_meta.json.",
        ),
    ] = None,
    encoder: Annotated[
        Optional[str], typer.Option("--encoder", help="Local CLIP / BLIP-retrieval checkpoint directory (HF format).")
    ] = None,
    images: Annotated[Optional[str], typer.Option("--images", help="Image root if not --raw.")] = None,
    out: Annotated[str, typer.Option("--out", help="Where the prepared dataset goes.")] = "data/retrieval",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Encoder batch size.")] = 64,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Items per resumable shard.")] = 2048,
    restval: Annotated[str, typer.Option("--restval", help="COCO restval images: train | drop.")] = "train",
    vocab_size: Annotated[
        int, typer.Option("--vocab-size", help="embeddings without --encoder: sparse vocabulary size.")
    ] = 30522,
    init: Annotated[
        Optional[str],
        typer.Option(
            "--init",
            help="embeddings: the projections (text_proj, vision_proj) and E "
            "from a LAVIS / ALBEF / BLIP checkpoint (.pth, weights only) or safetensors.",
        ),
    ] = None,
    vocab: Annotated[
        Optional[str],
        typer.Option(
            "--vocab", help="embeddings with --init: BERT's vocab.txt (words, special tokens, caption statistics)."
        ),
    ] = None,
    standin_steps: Annotated[
        int, typer.Option("--standin-steps", help="synthetic: training steps of the stand-in CLIP.")
    ] = 800,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Karpathy JSON + images through a local encoder (or ready-made embeddings, or the synthetic corpus) -> parquet."""
    from .recipe import prep_stage

    run_stage(
        "retrieval prep",
        lambda: prep_stage(
            source,
            raw,
            out,
            encoder,
            images,
            batch_size,
            shard_size,
            restval,
            vocab_size,
            standin_steps,
            overwrite=overwrite,
            seed=seed,
            init_file=init,
            vocab_file=vocab,
        ),
        json_out,
        debug,
        ctx,
    )


@app.command()
def index(
    ctx: typer.Context,
    run_dir: RunDirOpt = "runs/retrieval",
    split: Annotated[str, typer.Option("--split", help="Images to index: test | val | train | all.")] = "test",
    engine: Annotated[Optional[str], typer.Option("--engine", help="seismic | exact (default index.engine).")] = None,
    sets: SetOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Build an inverted index (Seismic) over the images' sparse vectors into RUN_DIR/index."""
    from .recipe import index_stage

    run_stage("retrieval index", lambda: index_stage(run_dir, split, engine, sets, overwrite), json_out, debug, ctx)


def hits_table(result: dict):
    """The human view of `search`: one ranked table per query (the JSON carries the same hits)."""
    from rich.console import Group
    from rich.table import Table

    tables = []
    for res in result["results"]:
        table = Table(
            title=f"{res['query']!r}  ({res['engine']}, {res['query_terms']} query terms)", header_style="bold"
        )
        for col in ("rank", "image id", "file", "score", "top matching terms"):
            table.add_column(col, justify="right" if col in ("rank", "score") else "left")
        for hit in res["hits"]:
            table.add_row(
                str(hit["rank"]),
                str(hit["image_id"]),
                str(hit.get("filename", "")),
                f"{hit['score']:.4g}",
                " ".join(hit.get("matching_terms", [])),
            )
        tables.append(table)
    return Group(*tables)


@app.command()
def search(
    ctx: typer.Context,
    run_dir: RunDirOpt = "runs/retrieval",
    query: Annotated[Optional[list[str]], typer.Option("--query", help="Query text (repeatable).")] = None,
    queries: Annotated[
        Optional[str], typer.Option("--queries", help="File: one query per line (or id<TAB>text).")
    ] = None,
    query_id: Annotated[
        Optional[list[str]], typer.Option("--query-id", help="A caption id of the dataset (repeatable).")
    ] = None,
    k: Annotated[int, typer.Option("--k", help="Results per query.")] = 10,
    exact: Annotated[bool, typer.Option("--exact", help="Exhaustive scipy scoring instead of the index.")] = False,
    validate: Annotated[
        bool, typer.Option("--validate", help="Also report the overlap with exhaustive scoring.")
    ] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Ranked image ids for text queries, from the index (runs the saved text encoder and the trained heads)."""
    from .recipe import search_stage

    run_stage(
        "retrieval search",
        lambda: search_stage(run_dir, query, queries, query_id, k, exact, validate),
        json_out,
        debug,
        ctx,
        render=hits_table,
    )


@app.command()
def explain(
    ctx: typer.Context,
    run_dir: RunDirOpt = "runs/retrieval",
    item_id: Annotated[str, typer.Option("--id", help="Image id (or caption id).")] = "",
    top: Annotated[int, typer.Option("--top", help="Terms to list.")] = 20,
    kind: Annotated[str, typer.Option("--kind", help="auto (image first) | image | caption.")] = "auto",
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """An item's top expansion terms, as words, with their weights."""
    from .recipe import explain_stage

    run_stage("retrieval explain", lambda: explain_stage(run_dir, item_id, top, kind), json_out, debug, ctx)
