"""What every stage command shares: --json / --debug handling, one-line errors, result tables.

A stage function returns a dict (its result). ``run_stage`` prints it as exactly one JSON object on
stdout with ``--json`` (human output stays on stderr), or as a rich table on stderr otherwise.
A ``SkdError`` becomes one line on stderr and a non-zero exit code; any other exception too,
unless ``--debug``, which shows the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any, Callable, Optional

import typer
from rich.table import Table

from . import rundir
from .console import console
from .errors import SkdError

# Shared option types, so every task spells the contract the same way.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object (the result) on stdout.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a finished run / prepared dataset / export.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu | cuda | auto.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: --set train.lr=3e-4 (repeatable).")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed (train.seed).")]
MaxStepsOpt = Annotated[Optional[int], typer.Option("--max-steps", help="Optimizer steps (train.max_steps).")]
CkptEveryOpt = Annotated[Optional[int], typer.Option("--checkpoint-every", help="Checkpoint every N steps (train.checkpoint_every).")]
BaselineOpt = Annotated[bool, typer.Option("--baseline", help="Train the recipe's no-distillation baseline.")]


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def result_table(title: str, result: dict) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("key")
    table.add_column("value", overflow="fold")
    for k, v in flatten(result).items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, list) and len(v) > 8:
            v = f"[{len(v)} items]"
        table.add_row(k, str(v))
    return table


def run_stage(title: str, fn: Callable[[], dict], json_out: bool, debug: bool,
              ctx: typer.Context | None = None, render: Callable[[dict], Any] | None = None) -> dict:
    """Run a stage, print its result, and turn errors into one-line messages + exit codes.

    ``render`` (optional) turns the result into the human view (e.g. a ranked hit list) instead
    of the generic key/value table; ``--json`` output is the same either way."""
    if ctx is not None:  # provenance records the command and its parsed options
        rundir.INVOCATION.update(command=ctx.command_path, options=dict(ctx.params))
    try:
        result = fn()
    except SkdError as exc:
        if debug:
            raise
        console.print(f"[bold red]error:[/] {exc.format()}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        raise typer.Exit(130)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # unexpected: still one line unless --debug
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        console.print(f"[bold red]error:[/] {exc.__class__.__name__}: {first} (run with --debug for the traceback)",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if is_main_process():
        if json_out:
            sys.stdout.write(json.dumps(result, default=str) + "\n")
            sys.stdout.flush()
        else:
            console.print(render(result) if render else result_table(title, result))
    return result
