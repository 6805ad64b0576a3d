"""Human output goes to stderr (rich); stdout is reserved for ``--json`` results and inference lines."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

console = Console(stderr=True)


class _InfoColumn(ProgressColumn):
    """The task's free-text ``info`` field (loss, file name...), empty when a task has none."""

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get("info", "")))


def progress_bar(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        _InfoColumn(),
        console=console,
        transient=transient,
    )


def progress_callback(bar: Progress) -> Callable[[int, int, str], None]:
    """``progress(advance, total, description)`` for long loops (prep readers): one bar per description."""
    ids: dict[str, Any] = {}

    def progress(advance: int, total: int, description: str) -> None:
        if description not in ids:
            ids[description] = bar.add_task(description, total=total)
        bar.update(ids[description], advance=advance, total=total)

    return progress


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"{value[0]:.4g} ± {value[1]:.2g}"  # (mean, std)
    if isinstance(value, dict) and {"mean", "std"} <= set(value):
        return f"{value['mean']:.4g} ± {value['std']:.2g}"
    return "" if value is None else str(value)


def metric_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str | None = None
) -> Table:
    """A small comparison table (systems or heads as rows, the paper's metric first), for stderr."""
    table = Table(title=title, header_style="bold", caption=caption)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    return table
