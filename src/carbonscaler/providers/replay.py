"""Trace replay: any trace the core reads, served as if it were live, on a chosen clock.

A :class:`TraceReplay` answers from a :class:`~carbonscaler.trace.CarbonTrace` at the slot
its clock points to. Clocks:

- :class:`ReplayClock` runs ``speedup`` times faster than wall time, so one slot can pass
  every S seconds (:meth:`ReplayClock.per_slot`) and demos and tests run in seconds; a
  speedup of 1 replays in real time.
- :class:`ManualClock` moves only when told to, e.g. one slot per carbon-service update,
  which is how the reference service replays.

Simulated time keeps running past the end of the trace; with ``wrap=True`` (the reference
behaviour) the values start over from the first slot, while timestamps keep increasing.
The replay's own forecast is the trace's future (perfect foresight, the reference's REAL).
"""

from __future__ import annotations

import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from carbonscaler.providers.base import (
    CarbonProvider,
    Forecast,
    IntensityReading,
    IntensitySeries,
    ProviderRequestError,
    UnknownZoneError,
    check_horizon,
    to_utc,
    utc_now,
)
from carbonscaler.trace import CarbonTrace, load_trace

__all__ = ["Clock", "ManualClock", "ReplayClock", "SimulatedClock", "SystemClock", "TraceReplay"]


class Clock(ABC):
    """Source of "now" (UTC) for providers."""

    @abstractmethod
    def now(self) -> datetime:
        """The current time, tz-aware UTC."""


class SystemClock(Clock):
    """Wall-clock time."""

    def now(self) -> datetime:
        return utc_now()


class SimulatedClock(Clock):
    """A clock whose time can be set."""

    @abstractmethod
    def seek(self, when: datetime) -> None:
        """Jump to ``when`` (naive means UTC)."""


class ReplayClock(SimulatedClock):
    """Simulated time running ``speedup`` times as fast as wall time from ``start``.

    Args:
        start: Simulated time at creation (naive means UTC).
        speedup: Simulated seconds per wall second; 1 is real time.
        monotonic: Wall-time source in seconds, replaceable in tests.

    Raises:
        ValueError: If ``speedup`` is not positive and finite.
    """

    def __init__(
        self,
        start: datetime | str,
        *,
        speedup: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(speedup) and speedup > 0):
            raise ValueError(f"speedup must be positive, not {speedup}")
        self.speedup = speedup
        self._monotonic = monotonic
        self._origin = to_utc(start)
        self._t0 = monotonic()

    @classmethod
    def per_slot(
        cls,
        start: datetime | str,
        *,
        slot_s: float,
        seconds_per_slot: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> ReplayClock:
        """A clock on which one ``slot_s``-long slot passes every ``seconds_per_slot``.

        Raises:
            ValueError: If either length is not positive.
        """
        if not (seconds_per_slot > 0 and slot_s > 0):
            raise ValueError(
                f"seconds per slot must be positive, not {seconds_per_slot} (slot {slot_s} s)"
            )
        return cls(start, speedup=slot_s / seconds_per_slot, monotonic=monotonic)

    def now(self) -> datetime:
        elapsed_s = (self._monotonic() - self._t0) * self.speedup
        return self._origin + timedelta(seconds=elapsed_s)

    def seek(self, when: datetime) -> None:
        self._origin = to_utc(when)
        self._t0 = self._monotonic()


class ManualClock(SimulatedClock):
    """Simulated time that moves only by :meth:`advance` and :meth:`seek`."""

    def __init__(self, start: datetime | str) -> None:
        self._now = to_utc(start)

    def now(self) -> datetime:
        return self._now

    def seek(self, when: datetime) -> None:
        self._now = to_utc(when)

    def advance(self, delta: timedelta) -> None:
        """Move forward by ``delta``."""
        self._now += delta


class TraceReplay(CarbonProvider):
    """A trace served as a provider, at the slot its clock points to.

    Args:
        trace: The trace to replay.
        start: First simulated time (default: the trace start); moves the clock there.
        clock: Default: real time from ``start``.
        wrap: Start over from the first slot after the last (the reference behaviour);
            otherwise reading past the end raises.

    Raises:
        ProviderRequestError: If ``start`` is outside the trace.
    """

    name = "replay"

    def __init__(
        self,
        trace: CarbonTrace,
        *,
        start: datetime | str | None = None,
        clock: SimulatedClock | None = None,
        wrap: bool = True,
    ) -> None:
        super().__init__(trace.zone)
        self.trace = trace
        self.wrap = wrap
        self.step_s = int(trace.step.total_seconds())
        self.source = f"replay:{Path(trace.source).name}"
        self._values = trace.values
        self._origin = trace.start.to_pydatetime()
        first = self._origin if start is None else to_utc(start)
        self.clock: SimulatedClock = clock if clock is not None else ReplayClock(first)
        if start is not None or clock is None:
            self.seek(self._index_of(first))

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        signal: str = "direct",
        zone: str | None = None,
        start: datetime | str | None = None,
        seconds_per_slot: float | None = None,
        wrap: bool = True,
    ) -> TraceReplay:
        """Replay a trace file, in real time or one slot per ``seconds_per_slot``.

        Raises:
            TraceError: If the file cannot be read (see :func:`~carbonscaler.trace.load_trace`).
            ProviderRequestError: If ``start`` is outside the trace.
        """
        trace = load_trace(path, signal=signal, zone=zone)
        return cls.from_trace(trace, start=start, seconds_per_slot=seconds_per_slot, wrap=wrap)

    @classmethod
    def from_trace(
        cls,
        trace: CarbonTrace,
        *,
        start: datetime | str | None = None,
        seconds_per_slot: float | None = None,
        wrap: bool = True,
    ) -> TraceReplay:
        """Replay a loaded trace (e.g. from the offline dataset), in real time or one slot
        per ``seconds_per_slot``.

        Raises:
            ProviderRequestError: If ``start`` is outside the trace.
        """
        first = trace.start.to_pydatetime() if start is None else to_utc(start)
        slot_s = trace.step.total_seconds()
        clock = ReplayClock.per_slot(
            first, slot_s=slot_s, seconds_per_slot=seconds_per_slot or slot_s
        )
        return cls(trace, start=first, clock=clock, wrap=wrap)

    def __len__(self) -> int:
        return len(self._values)

    @property
    def index(self) -> int:
        """Position of the current slot in the trace (after wrapping).

        Raises:
            ProviderRequestError: If the clock is outside the trace and ``wrap`` is off.
        """
        return self._wrap(self._slot_of(self.clock.now()))

    def slot_start(self) -> datetime:
        """Start of the current slot in simulated time (keeps increasing after a wrap)."""
        return self._origin + self._slot_of(self.clock.now()) * timedelta(seconds=self.step_s)

    def seek(self, index: int) -> None:
        """Move the clock to the start of slot ``index`` of the trace.

        Raises:
            ProviderRequestError: If ``index`` is not a slot of the trace.
        """
        if isinstance(index, bool) or not 0 <= index < len(self):
            raise ProviderRequestError(
                self.name, f"slot {index} is outside the trace (0 .. {len(self) - 1})"
            )
        self.clock.seek(self._origin + index * timedelta(seconds=self.step_s))

    def values_at(self, first: int, n: int) -> np.ndarray:
        """``n`` values from slot ``first`` (unwrapped; may be negative when ``wrap``).

        Raises:
            ProviderRequestError: If the slots run outside the trace and ``wrap`` is off.
        """
        if self.wrap:
            return self._values.take(np.arange(first, first + n), mode="wrap")
        if first < 0 or first + n > len(self):
            raise ProviderRequestError(
                self.name,
                f"slots {first} .. {first + n - 1} are outside the trace {self.trace.source}"
                f" (0 .. {len(self) - 1}); replay with wrap=True or choose another window",
            )
        return self._values[first : first + n].copy()

    def current(self, zone: str | None = None) -> IntensityReading:
        self.check_zone(zone)
        slot = self._slot_of(self.clock.now())
        return IntensityReading(
            zone=self.zone,
            value_g_per_kwh=float(self._values[self._wrap(slot)]),
            timestamp=self._time_of(slot),
            source=self.source,
        )

    def history(self, start: datetime, end: datetime, zone: str | None = None) -> IntensitySeries:
        self.check_zone(zone)
        first = self._slot_of(to_utc(start))
        last = math.ceil((to_utc(end) - self._origin) / timedelta(seconds=self.step_s))
        if last <= first:
            raise ProviderRequestError(self.name, f"empty history window {start} .. {end}")
        return IntensitySeries(
            zone=self.zone,
            start=self._time_of(first),
            step_s=self.step_s,
            values_g_per_kwh=tuple(self.values_at(first, last - first).tolist()),
            source=self.source,
        )

    def forecast(self, horizon_slots: int, zone: str | None = None) -> Forecast:
        check_horizon(self.name, horizon_slots)
        self.check_zone(zone)
        slot = self._slot_of(self.clock.now())
        return Forecast(
            zone=self.zone,
            start=self._time_of(slot),
            step_s=self.step_s,
            values_g_per_kwh=tuple(self.values_at(slot, horizon_slots).tolist()),
            source=self.source,
        )

    def zones(self) -> list[str]:
        return [self.zone]

    def _slot_of(self, when: datetime) -> int:
        return math.floor((when - self._origin) / timedelta(seconds=self.step_s))

    def _time_of(self, slot: int) -> datetime:
        return self._origin + slot * timedelta(seconds=self.step_s)

    def _index_of(self, when: datetime) -> int:
        slot = self._slot_of(when)
        if not 0 <= slot < len(self):
            last = self._time_of(len(self) - 1)
            raise ProviderRequestError(
                self.name,
                f"start {when:%Y-%m-%d %H:%M} UTC is outside the trace {self.trace.source},"
                f" which covers {self._origin:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC",
            )
        return slot

    def _wrap(self, slot: int) -> int:
        if self.wrap:
            return slot % len(self)
        if not 0 <= slot < len(self):
            raise ProviderRequestError(
                self.name,
                f"the replay clock is at slot {slot}, outside the trace (0 .. {len(self) - 1});"
                " replay with wrap=True or seek back",
            )
        return slot

    def check_zone(self, zone: str | None) -> None:
        """Accept None or this replay's zone (any case).

        Raises:
            UnknownZoneError: For any other zone.
        """
        if zone is not None and zone.strip().lower() != self.zone.lower():
            raise UnknownZoneError(
                self.name, f"this replay serves zone {self.zone!r} only, not {zone!r}"
            )
