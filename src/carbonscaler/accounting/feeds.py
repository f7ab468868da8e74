"""Carbon intensity over the accounting's intervals, from a provider or the carbon service.

A feed answers "which intensity applied when, between these two wall-clock times" as
:class:`~carbonscaler.accounting.integrate.IntensitySegment` s, so an interval can be split
at slot boundaries. Two feeds:

- :class:`ProviderIntensityFeed` asks any :class:`~carbonscaler.providers.CarbonProvider` (a live
  chain, or a trace replay) for the history of the interval, falling back to its current
  value. A replay runs on simulated time: a :class:`TimeMap` maps wall-clock seconds to
  replay time (``speedup`` replay seconds per wall second) and back.
- :class:`PushedFeed` holds what the carbon service pushes (the reference body
  ``{"carbon_intensity", ...}``): each push is in force from its arrival until the next.
  Points are kept in the ledger, so a restarted process still knows what applied while
  it was down.

When nothing new can be had, the last known value is held and flagged stale; only when
no value was ever known does a feed raise :class:`CarbonUnavailable`.
"""

from __future__ import annotations

import bisect
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from carbonscaler.accounting.integrate import IntensitySegment
from carbonscaler.accounting.ledger import Ledger
from carbonscaler.providers.base import CarbonProvider, CarbonUnavailable, ProviderError

__all__ = ["CarbonUnavailable", "IntensityFeed", "ProviderIntensityFeed", "PushedFeed", "TimeMap"]


class IntensityFeed(ABC):
    """Carbon intensity over wall-clock intervals."""

    source: str = "carbon"
    """Label of the values, stored with every sample."""

    @abstractmethod
    def segments(self, start_s: float, end_s: float) -> list[IntensitySegment]:
        """Segments covering ``[start_s, end_s]`` (Unix seconds), in order.

        Raises:
            CarbonUnavailable: If no value was ever known.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the provider or connections."""


@dataclass(frozen=True)
class TimeMap:
    """Wall-clock seconds to replay time: ``sim = sim0 + (wall − wall0) · speedup``."""

    wall0_s: float
    sim0: datetime
    speedup: float = 1.0

    def to_sim(self, wall_s: float) -> datetime:
        """Replay time at a wall-clock time."""
        return self.sim0 + timedelta(seconds=(wall_s - self.wall0_s) * self.speedup)

    def to_wall(self, sim: datetime) -> float:
        """Wall-clock time at a replay time."""
        return self.wall0_s + (sim - self.sim0).total_seconds() / self.speedup


def identity_map() -> TimeMap:
    """Live data: replay time is wall time."""
    return TimeMap(0.0, datetime.fromtimestamp(0, UTC), 1.0)


class ProviderIntensityFeed(IntensityFeed):
    """Intensity from a provider: its history for the interval, else its current value.

    Args:
        provider: Live chain or trace replay.
        time_map: Wall time to the provider's time; default identity (live data).
    """

    def __init__(self, provider: CarbonProvider, *, time_map: TimeMap | None = None) -> None:
        self.provider = provider
        self.time_map = time_map if time_map is not None else identity_map()
        self.source = getattr(provider, "source", provider.name)
        self._last: IntensitySegment | None = None
        self._cache: tuple[tuple[float, float], list[IntensitySegment]] | None = None
        self._lock = threading.Lock()

    def segments(self, start_s: float, end_s: float) -> list[IntensitySegment]:
        with self._lock:
            # Every job sampled in a round asks for the same interval: answer it once.
            if self._cache is not None and self._cache[0] == (start_s, end_s):
                return self._cache[1]
            found = self._history(start_s, end_s)
            if not found or found[-1].end_s < end_s:
                found.extend(self._current(end_s))
            if found:
                self._last = found[-1]
            elif self._last is not None:
                held = self._last
                found = [IntensitySegment(held.start_s, held.end_s, held.g_per_kwh, stale=True)]
            else:
                raise CarbonUnavailable(f"{self.source}: no carbon intensity known yet")
            self._cache = ((start_s, end_s), found)
            return found

    def _history(self, start_s: float, end_s: float) -> list[IntensitySegment]:
        tm = self.time_map
        try:
            series = self.provider.history(tm.to_sim(start_s), tm.to_sim(end_s))
        except (ProviderError, ValueError):
            return []
        out: list[IntensitySegment] = []
        for i, value in enumerate(series.values_g_per_kwh):
            slot = series.start + i * series.step
            out.append(
                IntensitySegment(
                    tm.to_wall(slot), tm.to_wall(slot + series.step), value, series.stale
                )
            )
        return out

    def _current(self, end_s: float) -> list[IntensitySegment]:
        try:
            reading = self.provider.current()
        except ProviderError:
            return []
        start = self.time_map.to_wall(reading.timestamp)
        return [IntensitySegment(min(start, end_s), end_s, reading.value_g_per_kwh, reading.stale)]

    def close(self) -> None:
        self.provider.close()


class PushedFeed(IntensityFeed):
    """Intensity pushed by the carbon service, each value in force until the next push.

    Args:
        ledger: Where points are kept across restarts; None keeps them in memory only.
        source: Label for the values, e.g. the carbon service's URL.
    """

    def __init__(self, ledger: Ledger | None = None, *, source: str = "carbon-service") -> None:
        self.ledger = ledger
        self.source = source
        self._times: list[float] = []
        self._points: list[tuple[float, float, bool]] = []
        self._lock = threading.Lock()
        if ledger is not None:
            for t, value, _, stale in ledger.carbon_points(0.0):
                self._times.append(t)
                self._points.append((t, value, stale))

    def push(self, t_s: float, g_per_kwh: float, *, stale: bool = False) -> None:
        """Record that ``g_per_kwh`` is in force from ``t_s`` (Unix seconds)."""
        with self._lock:
            i = bisect.bisect_right(self._times, t_s)
            self._times.insert(i, t_s)
            self._points.insert(i, (t_s, g_per_kwh, stale))
        if self.ledger is not None:
            self.ledger.add_carbon_point(t_s, g_per_kwh, self.source, stale)

    def forget_before(self, t_s: float) -> None:
        """Drop points no open interval can need (the last one before ``t_s`` stays)."""
        with self._lock:
            keep = max(0, bisect.bisect_right(self._times, t_s) - 1)
            del self._times[:keep]
            del self._points[:keep]

    def segments(self, start_s: float, end_s: float) -> list[IntensitySegment]:
        with self._lock:
            if not self._points:
                raise CarbonUnavailable(
                    f"{self.source}: no carbon intensity pushed yet; is the carbon service up?"
                )
            first = max(0, bisect.bisect_right(self._times, start_s) - 1)
            last = bisect.bisect_left(self._times, end_s)
            chosen = self._points[first : max(last, first + 1)]
        out: list[IntensitySegment] = []
        for i, (t, value, stale) in enumerate(chosen):
            until = chosen[i + 1][0] if i + 1 < len(chosen) else max(end_s, t)
            out.append(IntensitySegment(t, until, value, stale))
        return out
