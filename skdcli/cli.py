"""The `skd` command: one sub-app per task, plus `env` and `bench`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import __version__
from .asr_ctc.cli import app as asr_ctc_app
from .engine.cliutil import DebugOpt, JsonOpt, run_stage
from .nlg_smooth.cli import app as nlg_smooth_app
from .nlp_embed.cli import app as nlp_embed_app
from .retrieval.cli import app as retrieval_app
from .sleep.cli import app as sleep_app

app = typer.Typer(name="skd", help="Self-knowledge-distillation recipes on one shared engine.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.add_typer(retrieval_app, name="retrieval")
app.add_typer(asr_ctc_app, name="asr-ctc")
app.add_typer(sleep_app, name="sleep")
app.add_typer(nlg_smooth_app, name="nlg-smooth")
app.add_typer(nlp_embed_app, name="nlp-embed")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"skd {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                         help="Print the version and exit.")] = None):
    """skd: train, evaluate and export self-KD models, one sub-command per task."""


@app.command()
def env(json_out: JsonOpt = False, debug: DebugOpt = False):
    """Print what a bug report needs: versions, devices, threads."""
    from .engine.envinfo import environment_report
    run_stage("skd env", environment_report, json_out, debug)


BENCHES = {  # task -> module with bench_stage(data, steps, rounds, device, sets)
    "retrieval": "skdcli.retrieval.bench",
    "asr-ctc": "skdcli.asr_ctc.recipe",
    "sleep": "skdcli.sleep.recipe",
    "nlg-smooth": "skdcli.nlg_smooth.recipe",
    "nlp-embed": "skdcli.nlp_embed.recipe",
}


@app.command()
def bench(
    task: Annotated[str, typer.Argument(help="Task to benchmark: " + ", ".join(BENCHES))],
    data: Annotated[Optional[str], typer.Option("--data", help="Prepared dataset (default: generate the tiny one).")] = None,
    steps: Annotated[int, typer.Option("--steps", help="Timed steps per variant per round.")] = 20,
    rounds: Annotated[int, typer.Option("--rounds", help="Alternating rounds.")] = 3,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Config override (repeatable).")] = None,
    device: Annotated[str, typer.Option("--device")] = "auto",
    out: Annotated[Optional[str], typer.Option("--out", help="Also write the result to this JSON file.")] = None,
    json_out: JsonOpt = False, debug: DebugOpt = False,
):
    """Engine vs hand-written PyTorch loop, and SKD vs --baseline step time (ratios)."""
    import importlib

    from .engine.errors import SkdError
    from .engine.io import atomic_write_json

    def go() -> dict:
        if task not in BENCHES:
            raise SkdError(f"no benchmark for task '{task}'; available: {', '.join(BENCHES)}")
        result = importlib.import_module(BENCHES[task]).bench_stage(data, steps, rounds, device, sets)
        if out:
            atomic_write_json(out, result)
        return result

    run_stage(f"skd bench {task}", go, json_out, debug)


def main() -> None:
    app()
