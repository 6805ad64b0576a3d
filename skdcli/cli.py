"""The `skd` command: one sub-app per task, plus `env` and `bench`."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from . import __version__
from .engine.cliutil import DebugOpt, JsonOpt, run_stage
from .engine.contract import DeviceOpt, SetOpt, load_recipe_app

# The registry: one line per recipe (its cli module, which builds `app` from its RECIPE), in --help order.
RECIPES = [
    "skdcli.retrieval.cli",
    "skdcli.asr_ctc.cli",
    "skdcli.sleep.cli",
    "skdcli.nlg_smooth.cli",
    "skdcli.nlp_embed.cli",
    "skdcli.dataset_distill.cli",
    "skdcli.sar.cli",
    "skdcli.xqa.cli",
    "skdcli.lus.cli",
]

app = typer.Typer(
    name="skd",
    help="Self-knowledge-distillation recipes on one shared engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
RECIPE_APPS = {}
for _module in RECIPES:
    _app = load_recipe_app(_module)
    RECIPE_APPS[_app.recipe.name] = _app
    app.add_typer(_app, name=_app.recipe.name)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"skd {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
):
    """skd: train, evaluate and export self-KD models, one sub-command per task."""


@app.command()
def env(json_out: JsonOpt = False, debug: DebugOpt = False):
    """Print what a bug report needs: versions, devices, threads."""
    from .engine.envinfo import environment_report

    run_stage("skd env", environment_report, json_out, debug)


@app.command()
def bench(
    task: Annotated[str, typer.Argument(help="Task to benchmark: " + ", ".join(RECIPE_APPS))],
    data: Annotated[
        Optional[str], typer.Option("--data", help="Prepared dataset (default: generate the tiny one).")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Timed steps per variant per round.")] = 20,
    rounds: Annotated[int, typer.Option("--rounds", help="Alternating rounds.")] = 3,
    sets: SetOpt = None,
    device: DeviceOpt = "auto",
    out: Annotated[Optional[str], typer.Option("--out", help="Also write the result to this JSON file.")] = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    """Engine vs hand-written PyTorch loop, and SKD vs --baseline step time (ratios)."""
    from .engine.errors import SkdError
    from .engine.io import atomic_write_json

    def go() -> dict:
        if task not in RECIPE_APPS:
            raise SkdError(f"no benchmark for task '{task}'; available: {', '.join(RECIPE_APPS)}")
        result = RECIPE_APPS[task].recipe.load_hooks().bench(data, steps, rounds, device, sets)
        if out:
            atomic_write_json(out, result)
        return result

    run_stage(f"skd bench {task}", go, json_out, debug)


def main() -> None:
    # `skd TASK ...` runs only TASK's commands: typer converts every registered command to click before it
    # parses anything, and skipping the other recipes' commands keeps `skd TASK --help` fast.
    if len(sys.argv) > 1 and sys.argv[1] in RECIPE_APPS:
        app.registered_groups = [group for group in app.registered_groups if group.name == sys.argv[1]]
    app()
