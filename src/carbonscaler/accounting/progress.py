"""How far along a job is: the reference ``progress.csv``, or progress posted to the API.

The reference example job appends a row per checkpoint to ``progress.csv`` whose second
column is the percent done (0-100); a header row may lead. The job writes while we read,
so the last line may be half-written: a line without its final newline is ignored until
it is complete. Only the file's tail is read, so a long file costs nothing.
"""

from __future__ import annotations

import math
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path

__all__ = ["ApiProgress", "CsvProgress", "ProgressError", "ProgressSource", "parse_percent"]

_TAIL_BYTES = 4096


class ProgressError(ValueError):
    """Progress cannot be read or is not a percentage; the message says where and why."""


def parse_percent(value: object, where: str) -> float:
    """A percent-done value as a float in 0..100.

    Raises:
        ProgressError: If it is not a number in 0..100; the message names ``where``.
    """
    try:
        percent = float(str(value).strip())
    except ValueError:
        raise ProgressError(
            f"{where}: {str(value)[:40]!r} is not a number; expected percent done, 0-100"
        ) from None
    if not (math.isfinite(percent) and 0 <= percent <= 100):
        raise ProgressError(f"{where}: {percent:g} is outside 0-100 percent done")
    return percent


class ProgressSource(ABC):
    """Where a job's progress comes from."""

    @abstractmethod
    def read(self) -> float | None:
        """The latest percent done, or None if the job has reported nothing yet.

        Raises:
            ProgressError: If the latest report is malformed.
        """


class CsvProgress(ProgressSource):
    """The reference ``progress.csv``: the second column of the last complete row.

    Args:
        path: The file the job writes.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def read(self) -> float | None:
        try:
            with self.path.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                start = max(0, size - _TAIL_BYTES)
                fh.seek(start)
                tail = fh.read()
        except FileNotFoundError:
            return None  # the job has not started writing
        except OSError as exc:
            raise ProgressError(f"{self.path}: cannot read ({exc.strerror})") from None
        lines = tail.split(b"\n")
        complete = lines[:-1]  # the part after the last newline is still being written
        if start > 0 and complete:
            complete = complete[1:]  # the first line of a tail may be cut at its start
        for raw in reversed(complete):
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            cells = [c.strip() for c in line.split(",")]
            if len(cells) < 2:
                raise ProgressError(
                    f"{self.path}: last row {line[:60]!r} has no second column; the reference"
                    " format is 'step,percent' with percent done 0-100"
                )
            try:
                return parse_percent(cells[1], f"{self.path}: last row {line[:60]!r}")
            except ProgressError:
                if start == 0 and raw is complete[0] and not _is_number(cells[1]):
                    return None  # only a header so far
                raise
        return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class ApiProgress(ProgressSource):
    """Progress posted to the accounting API (kept in memory; the ledger persists it).

    Args:
        percent: The last known value, e.g. restored from the ledger.
    """

    def __init__(self, percent: float | None = None) -> None:
        self._lock = threading.Lock()
        self._percent = percent

    def post(self, percent: object) -> float:
        """Record a new value.

        Raises:
            ProgressError: If it is not a number in 0..100.
        """
        value = parse_percent(percent, "posted progress")
        with self._lock:
            self._percent = value
        return value

    def read(self) -> float | None:
        with self._lock:
            return self._percent
