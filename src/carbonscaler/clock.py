"""The controller's clock: wall time for real runs, virtual time for simulations and tests.

A controller reads the time and waits between ticks only through its clock, so the same loop
runs a job for real (:class:`WallClock`) or on a virtual clock that jumps from one decision to
the next without sleeping (:class:`VirtualClock`) — a 36-hour job in well under a second, and
tests with exact assertions instead of wall-clock tolerances.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

__all__ = ["ControlClock", "PacedClock", "VirtualClock", "WallClock"]


class ControlClock(ABC):
    """Seconds since the epoch, and a way to wait."""

    @abstractmethod
    def now(self) -> float:
        """The time in seconds."""

    @abstractmethod
    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""

    @property
    def virtual(self) -> bool:
        """Whether waiting costs no real time (a simulation)."""
        return False


class WallClock(ControlClock):
    """Real time."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0))


class VirtualClock(ControlClock):
    """Time that moves only when the controller waits (or a test says so).

    Args:
        start: the time to start at, seconds since the epoch.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self._now += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (tests)."""
        self.sleep(seconds)

    @property
    def virtual(self) -> bool:
        return True


class PacedClock(VirtualClock):
    """Virtual time that also passes for real, ``wall_per_s`` wall seconds per virtual second:
    a simulation someone can watch (``carbonscaler ui`` follows it). It stays virtual: the
    controller still lands exactly on each event.

    Args:
        start: the time to start at, seconds since the epoch.
        wall_per_s: wall seconds per virtual second (> 0).

    Raises:
        ValueError: if ``wall_per_s`` is not positive.
    """

    def __init__(self, start: float = 0.0, *, wall_per_s: float) -> None:
        if not wall_per_s > 0:
            raise ValueError(f"a paced clock needs wall_per_s > 0, not {wall_per_s}")
        super().__init__(start)
        self.wall_per_s = wall_per_s

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0) * self.wall_per_s)
        super().sleep(seconds)
