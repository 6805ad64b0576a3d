"""The results table every recipes/<task>/run.sh ends with: the per-seed eval JSON files of a results folder,
grouped by system, as a Markdown table of mean ± sample std (``compare.mean_std``) of chosen metrics, plus n.

    python -m skdcli.engine.results DIR [--glob '*_seed*.json'] --metric 'top-1=accuracy:100' [--metric ...]

How a file becomes rows:

* its name is matched against ``--group`` (a regular expression, default ``(?P<system>.+)_seed\\d+``): every
  named group is a key column (an unnamed first group is ``system``); a file that does not match is left out;
* ``--by-key method,backbone`` adds key columns read from the JSON (dotted paths, ``LABEL=PATH`` to rename);
  given without ``--group``, they replace the file-name key (``--group ''`` drops it in any case);
* ``--each rows`` takes every item of a list (or every value of an object, its key in the column named after
  ``=``) as a record of its own; a file without that entry is one record itself;
* ``--expand score=dense,sparse,integrated`` repeats each record once per value, ``{score}`` in the metric paths
  replaced by it;
* ``--sub 'KNN=knn'`` adds, for every record with a ``knn`` entry, a record ``<first key>: KNN`` read from it.

Records with the same key form a row. A metric is ``LABEL=PATH[:SCALE]`` (``ECE %=ece:100``,
``N1=per_class_f1.N1:100``); a cell is the mean ± sample std (n - 1; 0 for one value) of the row's values, ``-``
when none has it, with ``(n=K)`` when only K have it. ``--columns backbone`` pivots that key column into the
table's columns. Rows keep the order their files sort in; ``--sort split`` or ``--sort system=skd,ce`` reorders.

It imports no torch: a table over a results folder is instant.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .compare import mean_std
from .errors import SkdError

DEFAULT_GLOB = "*_seed*.json"
DEFAULT_GROUP = r"(?P<system>.+)_seed\d+"
_MISSING = object()


@dataclass(frozen=True)
class Metric:
    label: str
    path: str
    scale: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> Metric:
        """``LABEL=PATH[:SCALE]``, or ``PATH[:SCALE]`` labelled by its path."""
        label, _, rest = spec.partition("=") if "=" in spec else ("", "", spec)
        path, scale = rest, 1.0
        head, sep, tail = rest.rpartition(":")
        if sep:
            try:
                path, scale = head, float(tail)
            except ValueError:
                pass
        if not path:
            raise SkdError(f"--metric '{spec}': no key path (LABEL=PATH[:SCALE])")
        return cls(label or path, path, scale)


@dataclass
class _Record:
    data: Any
    key: dict[str, Any]
    source: Path
    template: dict[str, str] = field(default_factory=dict)  # --expand values for {NAME} in metric paths


def lookup(data: Any, path: str, default: Any = None) -> Any:
    """``data`` at a dotted key path (``t2i.dense.R@1``; a number indexes a list); ``default`` where absent."""
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.lstrip("-").isdigit() and -len(data) <= int(part) < len(data):
            data = data[int(part)]
        else:
            return default
    return data


def _named(spec: str) -> tuple[str, str]:
    """``LABEL=PATH`` or ``PATH`` -> (label, path)."""
    label, sep, path = spec.partition("=")
    return (label, path) if sep else (spec, spec)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SkdError(f"not a readable JSON file ({exc})", path) from exc


def collect(
    directory: str | Path,
    glob: str = DEFAULT_GLOB,
    group: str | None = None,
    by_key: Sequence[str] = (),
    each: str | None = None,
    expand: Sequence[str] = (),
    sub: Sequence[str] = (),
) -> list[_Record]:
    """The records of ``directory`` (see the module doc), in the order their files sort in. ``group`` None is
    the default file-name key, or none when ``by_key`` is given; '' is none."""
    for spec in [*expand, *sub]:
        if "=" not in spec.strip("="):
            raise SkdError(f"'{spec}': expected NAME=VALUE")
    if group is None:
        group = "" if by_key else DEFAULT_GROUP
    try:
        pattern = re.compile(group) if group else None
    except re.error as exc:
        raise SkdError(f"--group '{group}' is not a regular expression ({exc})") from exc
    folder = Path(directory)
    if not folder.is_dir():
        raise SkdError(f"no results directory {folder}")
    files = sorted(p for p in folder.glob(glob) if p.is_file())
    if not files:
        raise SkdError(f"no files matching '{glob}' in {folder}")
    each_path, each_column = each.partition("=")[::2] if each else ("", "")
    records: list[_Record] = []
    for path in files:
        key: dict[str, Any] = {}
        if pattern is not None:
            match = pattern.match(path.name)
            if match is None:
                continue
            names = match.groupdict()
            key = dict(names) if names else ({"system": match.group(1)} if pattern.groups else {})
        data = _read(path)
        parts: list[tuple[dict[str, Any], Any]] = [({}, data)]
        if each_path:
            items = lookup(data, each_path, _MISSING)
            if isinstance(items, list):
                parts = [({each_column: i} if each_column else {}, item) for i, item in enumerate(items)]
            elif isinstance(items, dict):
                column = each_column or each_path.rsplit(".", 1)[-1]
                parts = [({column: k}, item) for k, item in items.items()]
            elif each_column:  # no such entry: the file is the record, its own value in the column
                parts = [({each_column: lookup(data, each_column)}, data)]
        for extra, item in parts:
            base = {**key, **{label: lookup(item, p) for label, p in map(_named, by_key)}, **extra}
            variants: list[dict[str, str]] = [{}]
            for spec in expand:
                name, _, values = spec.partition("=")
                variants = [{**v, name: value} for v in variants for value in values.split(",")]
            for template in variants:
                record = _Record(item, {**base, **template}, path, template)
                records.append(record)
                for spec in sub:
                    label, sub_path = spec.split("=", 1)
                    inner = lookup(item, sub_path, _MISSING)
                    if inner is not _MISSING:
                        first, sub_key = next(iter(record.key), None), dict(record.key)
                        if first is not None:
                            sub_key[first] = f"{sub_key[first]}: {label}"
                        records.append(_Record(inner, sub_key, path, template))
    if not records:
        why = f"has a name matching '{group}'" if group else "holds a record"
        raise SkdError(f"no results in {folder}: no file matching '{glob}' {why}")
    return records


def _value(record: _Record, metric: Metric, default: Any = None) -> tuple[str, Any]:
    """(the metric's path with the record's --expand values in, the record's value there)."""
    path = metric.path
    for name, value in record.template.items():
        path = path.replace("{" + name + "}", value)
    return path, lookup(record.data, path, default)


def _cell(records: Sequence[_Record], metric: Metric, digits: int) -> str:
    values = []
    for r in records:
        path, v = _value(r, metric)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SkdError(f"'{path}' is not a number: {json.dumps(v)[:60]}", r.source)
        values.append(metric.scale * v)
    if not values:
        return "-"
    stats = mean_std(values)
    text = f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"
    return text if len(values) == len(records) else f"{text} (n={len(values)})"


def _show(value: Any) -> str:
    return "-" if value is None else str(value)


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> str:
    """A Markdown table, padded so it also reads as plain text; the first ``left`` columns left-aligned."""
    esc = [[str(c).replace("|", "\\|") for c in row] for row in [header, *rows]]
    widths = [max(3, *(len(row[i]) for row in esc)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
            + " |"
        )

    rule = "|" + "|".join("-" * (w + 1) + (":" if i >= left else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(esc[0]), rule, *(line(r) for r in esc[1:])])


def results_table(
    directory: str | Path,
    metrics: Sequence[str | Metric],
    columns: str | None = None,
    sort: Sequence[str] = (),
    digits: int = 2,
    caption: str | None = None,
    **records_of: Any,
) -> str:
    """The Markdown table (and ``caption`` under it) of ``directory``'s results, read by ``collect(directory,
    **records_of)`` (glob, group, by_key, each, expand, sub); see the module doc."""
    metrics = [m if isinstance(m, Metric) else Metric.parse(m) for m in metrics]
    if not metrics:
        raise SkdError("no --metric to report")
    records = collect(directory, **records_of)
    for m in metrics:  # a key no record has may be a typo (or a head no system has): said, shown as '-'
        if all(_value(r, m, _MISSING)[1] is _MISSING for r in records):
            where = f"'{records_of.get('glob', DEFAULT_GLOB)}' in {directory}"
            print(f"warning: no file matching {where} has '{m.path}' (--metric '{m.label}')", file=sys.stderr)
    key_columns = list(dict.fromkeys(c for r in records for c in r.key))
    rows: dict[tuple, list[_Record]] = {}
    for r in records:
        rows.setdefault(tuple(r.key.get(c) for c in key_columns), []).append(r)
    order = list(rows)
    for spec in reversed(sort):  # the first --sort is the primary key; each sort is stable
        column, _, listed = spec.partition("=")
        if column not in key_columns:
            raise SkdError(f"--sort '{column}' is not a key column ({', '.join(key_columns)})")
        i = key_columns.index(column)
        first = [v for v in listed.split(",") if v] + list(dict.fromkeys(_show(k[i]) for k in order))
        rank = {v: n for n, v in reversed(list(enumerate(first)))}
        order.sort(key=lambda k, i=i, rank=rank: rank[_show(k[i])])
    if columns is None:
        header = [*key_columns, "n", *(m.label for m in metrics)]
        body = [[*map(_show, k), str(len(rows[k])), *(_cell(rows[k], m, digits) for m in metrics)] for k in order]
        table = markdown(header, body, len(key_columns))
    else:
        if columns not in key_columns:
            raise SkdError(f"--columns '{columns}' is not a key column ({', '.join(key_columns)})")
        i = key_columns.index(columns)
        row_keys = list(dict.fromkeys(k[:i] + k[i + 1 :] for k in order))
        col_values = list(dict.fromkeys(k[i] for k in order))
        header = [*(c for c in key_columns if c != columns)]
        for v in col_values:
            header += [_show(v) if len(metrics) == 1 else f"{_show(v)} {m.label}" for m in metrics]
        body = []
        for rk in row_keys:
            line = list(map(_show, rk))
            for v in col_values:
                cell = rows.get(rk[:i] + (v,) + rk[i:])
                line += [f"{_cell(cell, m, digits)} (n={len(cell)})" if cell else "" for m in metrics]
            body.append(line)
        table = markdown(header, body, len(key_columns) - 1)
    return table + (f"\n\n{caption}" if caption else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skdcli.engine.results",
        description="Mean ± sample std over seeds of a results folder's JSON files, as a Markdown table.",
        epilog="Example: python -m skdcli.engine.results runs/x/results --glob '*.eval.json' "
        "--metric 'BLEU=bleu' --metric 'ECE %=ece:100' --caption 'mean ± sample std over seeds'",
    )
    parser.add_argument("directory", metavar="DIR")
    parser.add_argument("--glob", default=DEFAULT_GLOB, help=f"the files to read (default '{DEFAULT_GLOB}')")
    parser.add_argument(
        "--metric", action="append", default=[], required=True, help="LABEL=PATH[:SCALE], repeatable, in order"
    )
    parser.add_argument(
        "--group",
        default=None,
        help=f"file-name regex whose named groups are key columns (default '{DEFAULT_GROUP}'; '' for none)",
    )
    parser.add_argument("--by-key", default="", help="comma-separated JSON key paths (or LABEL=PATH) as key columns")
    parser.add_argument("--each", default=None, help="PATH[=COLUMN]: every item of that list / object is a record")
    parser.add_argument("--expand", action="append", default=[], help="NAME=V1,V2,...: {NAME} in metric paths")
    parser.add_argument("--sub", action="append", default=[], help="LABEL=PATH: a row '<key>: LABEL' from PATH")
    parser.add_argument("--columns", default=None, help="a key column to pivot into the table's columns")
    parser.add_argument("--sort", action="append", default=[], help="COLUMN[=V1,V2,...]: order rows by it")
    parser.add_argument("--digits", type=int, default=2, help="decimals of mean and std (default 2)")
    parser.add_argument("--caption", default=None, help="a line printed under the table")
    args = parser.parse_args(argv)
    try:
        print(
            results_table(
                args.directory,
                args.metric,
                glob=args.glob,
                group=args.group,
                by_key=[k for k in args.by_key.split(",") if k],
                each=args.each,
                expand=args.expand,
                sub=args.sub,
                columns=args.columns,
                sort=args.sort,
                digits=args.digits,
                caption=args.caption,
            )
        )
    except SkdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
