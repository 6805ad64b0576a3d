"""`skd TASK translate`: one command for every recipe whose export is a translation model on the text stack
(nlg-smooth, nlp-embed mode=nmt). Imports no torch until it runs (`skd TASK --help` stays fast).

No ``from __future__ import annotations`` here: typer evaluates the options' annotations, and these close over the
arguments of ``add_translate_command``."""

import sys
from typing import Annotated, Optional

import typer

from ..engine.cliutil import DebugOpt, JsonOpt, run_stage


def add_translate_command(app: typer.Typer, task: str, model_help: str, doc: str) -> None:
    """Register `translate` on ``app``: texts (or stdin) -> one output line per input on stdout, or one --json object."""

    @app.command("translate", help=doc)
    def translate(
        ctx: typer.Context,
        texts: Annotated[
            Optional[list[str]], typer.Argument(help="Sentences to translate (none: read stdin, one per line).")
        ] = None,
        model: Annotated[str, typer.Option("--model", help=model_help)] = f"runs/{task}/export",
        beam_size: Annotated[
            Optional[int], typer.Option("--beam-size", help="Default: the export's eval.beam_size.")
        ] = None,
        lenpen: Annotated[Optional[float], typer.Option("--lenpen")] = None,
        detok: Annotated[
            bool, typer.Option("--detok", help="Detokenize the output (the Moses detokenizer, sacremoses).")
        ] = False,
        batch_size: Annotated[
            int, typer.Option("--batch-size", help="stdin lines translated together (1 = strictly line by line).")
        ] = 16,
        json_out: JsonOpt = False,
        debug: DebugOpt = False,
    ):
        from .translation import Translator, translate_texts

        def go() -> dict:
            translator = Translator(model, task, beam_size, lenpen)
            stream = None if json_out else sys.stdout
            result = {"model": str(model), **translate_texts(translator, texts or [], detok, batch_size, None, stream)}
            if not json_out:
                raise typer.Exit(0)  # the translations are already on stdout; no table
            return result

        run_stage(f"{task} translate", go, json_out, debug, ctx)
