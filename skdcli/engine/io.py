"""Atomic file output and guarded output directories.

Everything skd writes goes through these helpers: a temp file in the same directory, fsync,
then ``os.replace``. A kill at any point leaves either the old file or the new one, never half.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import SkdError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename tmp_path over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one line; a torn last line (kill mid-write) is skipped by ``read_jsonl``."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, default=str) + "\n")
        fh.flush()


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise SkdError("file not found", path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SkdError(f"not valid JSON ({exc.msg} at line {exc.lineno})", path) from exc


def read_jsonl(path: str | Path, strict: bool = True) -> list[dict]:
    """Read JSON lines. With ``strict=False`` a torn final line is dropped silently."""
    path = Path(path)
    if not path.is_file():
        raise SkdError("file not found", path)
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if not strict and i == len(lines):
                break
            raise SkdError(f"line {i} is not valid JSON ({exc.msg})", path) from exc
    return rows


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def staged_dir(out: str | Path) -> Iterator[Path]:
    """A whole output directory (a prepared dataset, an export, generated images) built in a sibling
    ``.tmp-<name>-<pid>`` and swapped into ``out`` only when the block ends without error: a kill or an
    error leaves ``out`` as it was. An existing ``out`` is moved aside just before the swap (put back if
    the swap fails) and deleted after it; the caller decides beforehand whether replacing it is allowed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    old = out.parent / f".old-{out.name}-{os.getpid()}"
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            if old.exists() and not out.exists():
                os.replace(old, out)
            raise
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)


def claim_output_dir(path: str | Path, overwrite: bool, marker: str, what: str) -> Path:
    """Make ``path`` ready for new output.

    ``marker`` is the file that says the directory holds finished output (``prep.json`` for a
    prepared dataset, ``config.yaml`` for a run). Such a directory is only replaced with
    ``overwrite=True``; a non-empty directory without the marker is refused too, so we never
    delete files we did not write.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SkdError(f"exists and is not a directory; cannot write the {what} here", path)
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            if (path / marker).exists():
                raise SkdError(f"already holds a {what}; pass --overwrite to replace it", path)
            raise SkdError("directory is not empty; pass --overwrite to replace it", path)
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path
