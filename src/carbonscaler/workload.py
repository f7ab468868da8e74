"""The workload contract, both sides: what a job writes, and how carbonscaler reads it.

A workload (``carbonscaler.examples.nbody``, ``examples/pytorch/train.py``, or your own) uses
the writing side: :class:`ProgressLog` for its progress file, :func:`write_atomically` for its
checkpoints and result, :func:`remove_stale_temporaries` when it starts, and the
:func:`positive_int`-style argument types. The runtime, the profiler and the accounting service
use the reading side below.

The progress file:

A job appends a ``step,percent`` row per checkpoint to its ``progress.csv`` (percent done,
0-100); a header row may lead. The job writes while we read, so:

- the part after the last newline is still being written, and is ignored until complete;
- only the file's tail is read (a long file costs nothing), and when the tail starts inside the
  file its first line may be cut, so it is ignored too;
- blank lines are skipped; a first line that is not numbers is the header (no progress yet).

**One rule for bad rows**: the last complete row is the job's report. If it is not
``step,percent`` with a percent in 0-100, that is an error (:class:`ProgressError`) naming the
file and what is wrong — never its content — rather than a fall back to an older row, which would
make a job that stopped reporting look stuck. Each reader decides what an error means for it:
the accounting service reports it, the local runtime warns and keeps its last reading, the
profiler stops.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from carbonscaler.outputs import atomic_path

__all__ = [
    "TAIL_BYTES",
    "ProgressError",
    "ProgressLog",
    "ProgressRow",
    "non_negative_int",
    "parse_tail",
    "positive_float",
    "positive_int",
    "read_progress",
    "remove_stale_temporaries",
    "write_atomically",
]

TAIL_BYTES = 4096
"""How much of the end of a progress file is read."""


class ProgressError(ValueError):
    """Progress cannot be read or is not a percentage; the message says where and why."""


@dataclass(frozen=True)
class ProgressRow:
    """A progress report: the job's own step counter and its percent done (0-100)."""

    step: float
    percent: float


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_tail(tail: bytes, *, cut: bool, source: str) -> ProgressRow | None:
    """The last complete row of a progress file's ``tail`` (see the module doc for the rules).

    Args:
        tail: the last bytes of the file.
        cut: whether the tail starts inside the file (its first line may be partial).
        source: the file's name, for messages.

    Returns:
        The row, or None if there is no complete row yet (or only the header).

    Raises:
        ProgressError: if the last complete row is malformed.
    """
    lines = tail.split(b"\n")[:-1]  # the part after the last newline is still being written
    if cut and lines:
        lines = lines[1:]  # the first line of a tail may be cut at its start
    for position in range(len(lines) - 1, -1, -1):
        line = lines[position].decode("utf-8", errors="replace").strip()
        if not line:
            continue
        cells = [c.strip() for c in line.split(",")]
        step = _number(cells[0])
        if len(cells) < 2:
            raise ProgressError(
                f"{source}: the last row has no second column; the format is 'step,percent' "
                "with percent done 0-100"
            )
        percent = _number(cells[1])
        if percent is None:
            if not cut and position == 0:
                return None  # only a header so far
            raise ProgressError(
                f"{source}: the second column of the last row is not a number; expected percent"
                " done, 0-100"
            )
        if not (math.isfinite(percent) and 0 <= percent <= 100):
            raise ProgressError(
                f"{source}: the second column of the last row is outside 0-100 percent done"
            )
        if step is None:
            raise ProgressError(f"{source}: the first column of the last row is not a step number")
        return ProgressRow(step, percent)
    return None


def read_progress(path: str | os.PathLike[str]) -> ProgressRow | None:
    """The last report in the progress file at ``path``; None before the job has written one.

    For files a service is *given* by callers, use the accounting's ``CsvProgress``, which
    also checks where the file is and what kind of file it is.

    Raises:
        ProgressError: if the last complete row is malformed or the file cannot be read.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(size - TAIL_BYTES, 0)
            fh.seek(start)
            tail = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProgressError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_tail(tail, cut=start > 0, source=str(path))


# -- the writing side: for workloads ----------------------------------------------------------


class ProgressLog:
    """Appends ``step,percent`` rows, each flushed at once, to a workload's progress file.

    A header is written to a new file; a partial last line a killed writer left is ended first,
    so that every row of ours starts on a line of its own (the reader ignores the broken one).

    Args:
        path: the progress file (``PROGRESS_FILE``); its folder is created if missing.
        total_steps: the step count that is 100 %.
    """

    def __init__(self, path: Path, total_steps: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._total = total_steps
        self._fh = path.open("a", encoding="utf-8")
        size = self._fh.tell()
        if size == 0:
            self._fh.write("step,percent\n")
        elif not _ends_with_newline(path, size):
            self._fh.write("\n")
        self._fh.flush()

    def record(self, step: int) -> None:
        """Report ``step`` of the total done."""
        self._fh.write(f"{step},{round(100.0 * step / self._total, 4)}\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _ends_with_newline(path: Path, size: int) -> bool:
    with path.open("rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file so that readers see the old or the new content, never a mix, and so that
    it survives a power cut: ``write`` fills a temporary file beside ``path``, which is fsynced
    and renamed over ``path``; then the folder is fsynced.

    Raises:
        OutputError: if the temporary file cannot be created or renamed.
    """
    with atomic_path(path, "file") as tmp, tmp.open("wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def remove_stale_temporaries(directory: Path) -> None:
    """Delete the temporary files a process killed in the middle of a write left behind."""
    for tmp in directory.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value
