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
from typing import Annotated, Any, Callable, Iterable

import typer

from .errors import SkdError
from .invocation import INVOCATION

# The two options every command has (the stage options are spelled in engine/contract.py).
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object (the result) on stdout.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]


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


def result_table(title: str, result: dict):
    from rich.table import Table

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


def run_stage(
    title: str,
    fn: Callable[[], dict],
    json_out: bool,
    debug: bool,
    ctx: typer.Context | None = None,
    render: Callable[[dict], Any] | None = None,
    lines: Callable[[dict], Iterable[str]] | None = None,
) -> dict:
    """Run a stage, print its result, and turn errors into one-line messages + exit codes.

    The human view of the result goes to stderr: ``render(result)`` (e.g. a ranked hit list, a
    comparison table) where it gives one, else the generic key/value table. ``lines(result)`` is for
    inference commands: one line per input on stdout, pipe-friendly, and nothing else there.
    ``--json`` output is the same whatever the view: exactly one object on stdout."""
    from .console import console  # rich's progress machinery: not needed to build `--help`

    if ctx is not None:  # provenance records the command and its parsed options
        INVOCATION.update(command=ctx.command_path, options=dict(ctx.params))
    try:
        result = fn()
    except SkdError as exc:
        if debug:
            raise
        console.print(f"[bold red]error:[/] {exc.format()}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # unexpected: still one line unless --debug
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        console.print(
            f"[bold red]error:[/] {exc.__class__.__name__}: {first} (run with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    if is_main_process():
        if json_out:
            sys.stdout.write(json.dumps(result, default=str) + "\n")
            sys.stdout.flush()
        elif lines is not None:
            for line in lines(result):
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
        else:
            view = render(result) if render else None
            console.print(view if view is not None else result_table(title, result))
    return result
