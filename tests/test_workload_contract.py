"""The workload contract's writing side, read back by its reading side."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from carbonscaler.workload import (
    ProgressLog,
    ProgressRow,
    non_negative_int,
    positive_float,
    positive_int,
    read_progress,
    remove_stale_temporaries,
    write_atomically,
)


def test_progress_log_rows_read_back_and_a_broken_line_is_ended(tmp_path: Path) -> None:
    path = tmp_path / "run" / "progress.csv"
    log = ProgressLog(path, total_steps=8)
    assert read_progress(path) is None  # the header alone: no progress yet
    log.record(2)
    log.close()
    assert read_progress(path) == ProgressRow(2.0, 25.0)
    with path.open("a") as fh:
        fh.write("3,37.")  # a writer killed mid-line
    again = ProgressLog(path, total_steps=8)
    again.record(4)
    again.close()
    assert read_progress(path) == ProgressRow(4.0, 50.0)
    assert path.read_text().splitlines() == ["step,percent", "2,25.0", "3,37.", "4,50.0"]


def test_write_atomically_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.bin"
    write_atomically(target, lambda fh: fh.write(b"first"))
    assert target.read_bytes() == b"first"

    def fails(fh: object) -> None:
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        write_atomically(target, fails)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.bin"]


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".checkpoint.bin.123.ab.tmp").write_bytes(b"half")
    (tmp_path / "keep.csv").write_text("x")
    remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.csv"]


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [(positive_int, "3", "0"), (non_negative_int, "0", "-1"), (positive_float, "0.5", "0")],
)
def test_argument_types(kind: object, good: str, bad: str) -> None:
    assert kind(good) == float(good)  # type: ignore[operator]
    with pytest.raises(argparse.ArgumentTypeError):
        kind(bad)  # type: ignore[operator]
