"""The workload contract's progress file: what a job writes for carbonscaler to read.

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

import math
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TAIL_BYTES", "ProgressError", "ProgressRow", "parse_tail", "read_progress"]

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
