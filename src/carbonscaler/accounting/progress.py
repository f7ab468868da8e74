"""How far along a job is: the reference ``progress.csv``, or progress posted to the API.

The reference example job appends a row per checkpoint to ``progress.csv`` whose second
column is the percent done (0-100); the rules for reading it, and for a bad row, are the
workload contract's (:mod:`carbonscaler.workload`), shared with the runtimes.

A service reads files a caller named, so :class:`CsvProgress` reads defensively: with a
``root``, only a file whose real path (symbolic links followed) is under it; only regular
files (a FIFO would block, ``/dev/zero`` never ends); opened without blocking and without
following a final symbolic link, checked on the open descriptor, and at most the last
4 KiB read. Its errors say what is wrong and where, never what the file contains.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import threading
from abc import ABC, abstractmethod
from pathlib import Path

from carbonscaler.workload import TAIL_BYTES, ProgressError, parse_tail

__all__ = [
    "ApiProgress",
    "CsvProgress",
    "ProgressError",
    "ProgressSource",
    "RefusedProgress",
    "check_progress_path",
    "parse_percent",
]

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


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


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_progress_path(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """The real path of a progress file, if it may be read: under ``root`` once symbolic
    links are followed, and a regular file if it exists yet.

    Raises:
        ProgressError: If the path is relative, outside ``root``, or not a regular file.
    """
    given = Path(path)
    if not given.is_absolute():
        raise ProgressError(f"{given}: a progress path must be absolute")
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(given))
    if not _inside(real, real_root):
        raise ProgressError(
            f"{given}: outside the progress root {root} (symbolic links followed); progress"
            " files must be under it"
        )
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real  # the job has not written it yet
    except OSError as exc:
        raise ProgressError(f"{given}: cannot check ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise ProgressError(f"{given}: not a regular file; progress comes from a plain file")
    return real


def _opened_inside(fd: int, root: Path) -> bool:
    """Whether the open descriptor's file is under ``root`` (True where /proc is absent)."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return True
    return _inside(Path(target), Path(os.path.realpath(root)))


class CsvProgress(ProgressSource):
    """The reference ``progress.csv``: the second column of the last complete row.

    Args:
        path: The file the job writes.
        root: If given, the file must be under this folder (symbolic links followed);
            checked again at every read.
    """

    def __init__(
        self, path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path)
        self.root = None if root is None else Path(root)

    def _tail(self) -> tuple[bytes, int] | None:
        """The last bytes of the file and their offset; None if it does not exist yet."""
        flags = _OPEN_FLAGS
        target = self.path
        if self.root is not None:
            target = check_progress_path(self.path, self.root)
            flags |= _NOFOLLOW  # resolved already: a link now is one swapped in since
        try:
            fd = os.open(target, flags)
        except FileNotFoundError:
            return None  # the job has not started writing
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ProgressError(f"{self.path}: became a symbolic link; refused") from None
            raise ProgressError(f"{self.path}: cannot read ({exc.strerror})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ProgressError(
                    f"{self.path}: not a regular file; progress comes from a plain file"
                )
            if self.root is not None and not _opened_inside(fd, self.root):
                raise ProgressError(f"{self.path}: moved outside the progress root; refused")
            start = max(0, info.st_size - TAIL_BYTES)
            tail = os.pread(fd, min(TAIL_BYTES, info.st_size - start), start)
        except OSError as exc:
            raise ProgressError(f"{self.path}: cannot read ({exc.strerror})") from None
        finally:
            os.close(fd)
        return tail, start

    def read(self) -> float | None:
        got = self._tail()
        if got is None:
            return None
        tail, start = got
        row = parse_tail(tail, cut=start > 0, source=str(self.path))
        return None if row is None else row.percent


class RefusedProgress(ProgressSource):
    """A progress file this service may not read (e.g. no ``--progress-root`` after a
    restart): every read says why, and the job's progress stays unknown.

    Args:
        reason: The message of every read's :class:`ProgressError`.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def read(self) -> float | None:
        raise ProgressError(self.reason)


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
