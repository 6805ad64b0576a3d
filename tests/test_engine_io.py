"""engine/io.staged_dir: a whole output directory appears only when it is complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from skdcli.engine.io import staged_dir


def test_staged_dir_swaps_in_a_finished_directory(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    with staged_dir(out) as tmp:
        (tmp / "a.txt").write_text("new")
        assert not out.exists()  # nothing at `out` until the block ends
    assert (out / "a.txt").read_text() == "new"
    with staged_dir(out) as tmp:  # an existing directory is replaced as a whole
        (tmp / "b.txt").write_text("newer")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]  # no .tmp- / .old- left behind


def test_staged_dir_keeps_the_old_directory_on_error(tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.pt2").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_dir(out) as tmp:
            (tmp / "model.pt2").write_text("half")
            raise RuntimeError("killed mid-way")
    assert (out / "model.pt2").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
