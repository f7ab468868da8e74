"""A node's power over time: sampled about once a second, kept for an hour, queried by interval.

:class:`NodeSampler` reads the node's meters in a background thread — the CPU meter (a
:class:`~carbonscaler.power.meter.CompositeMeter`: RAPL, else Kepler, else an estimate) and,
where there are GPUs, the NVML meter, whose power adds to the CPU's — and appends one
:class:`PowerEntry` per tick to a :class:`PowerHistory`. The history answers "how much
energy between these two times" from the overlap of each entry with the interval, which
the accounting needs to charge exactly its own interval, and keeps the readings the
reference ``GET /`` hands out.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from carbonscaler.power.meter import MeterError, PowerMeter, PowerReading, is_measured

__all__ = ["EnergyWindow", "NodeSampler", "PowerEntry", "PowerHistory"]

log = logging.getLogger("carbonscaler.power")


@dataclass(frozen=True)
class PowerEntry:
    """The node's average power over ``[start_s, end_s]`` (Unix seconds)."""

    start_s: float
    end_s: float
    watts: float
    measured_w: float
    """The part of ``watts`` that was measured."""
    source: str
    """Labels of the meters that answered, joined by ``+``."""


@dataclass(frozen=True)
class EnergyWindow:
    """The node's energy over an interval, as far as the history covers it."""

    start_s: float
    end_s: float
    energy_j: float
    measured_j: float
    covered_s: float
    """Seconds of the interval the history covers; the rest is unknown here."""
    source: str
    """The label of most of the energy ('' when nothing is covered)."""
    samples: int

    @property
    def watts(self) -> float | None:
        """Average power over the covered part, or None when nothing is covered."""
        return self.energy_j / self.covered_s if self.covered_s > 0 else None


class PowerHistory:
    """Entries in time order, the oldest dropped after ``keep_s``; thread-safe.

    Args:
        keep_s: How far back the history reaches, s.
        hold_s: A query reaching past the newest entry by at most this much takes the
            newest entry's power for the rest (the tick in progress); beyond, it is uncovered.
    """

    def __init__(self, keep_s: float = 3600.0, hold_s: float = 2.0) -> None:
        self.keep_s = keep_s
        self.hold_s = hold_s
        self._entries: list[PowerEntry] = []
        self._ends: list[float] = []
        self._fresh: list[float] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: PowerEntry) -> None:
        """Append an entry (its end must not precede the previous one's)."""
        with self._lock:
            self._entries.append(entry)
            self._ends.append(entry.end_s)
            self._fresh.append(entry.watts)
            horizon = entry.end_s - self.keep_s
            # Trim in batches so appends stay O(1) on average.
            if self._ends[0] < horizon and len(self._entries) % 64 == 0:
                cut = bisect.bisect_left(self._ends, horizon)
                del self._entries[:cut]
                del self._ends[:cut]
            if len(self._fresh) > 2 * self.keep_s:
                del self._fresh[: len(self._fresh) // 2]

    def drain(self) -> list[float]:
        """The watts of every entry since the previous drain (the reference ``GET /``)."""
        with self._lock:
            fresh, self._fresh = self._fresh, []
        return fresh

    def latest(self) -> PowerEntry | None:
        """The newest entry."""
        with self._lock:
            return self._entries[-1] if self._entries else None

    def window(self, start_s: float, end_s: float) -> EnergyWindow:
        """Energy over ``[start_s, end_s]`` from the entries overlapping it."""
        with self._lock:
            first = bisect.bisect_right(self._ends, start_s)
            chosen = self._entries[first:]
            newest = self._entries[-1] if self._entries else None
        energy_j = measured_j = covered_s = 0.0
        by_source: dict[str, float] = {}
        samples = 0

        def add(entry: PowerEntry, seconds: float) -> None:
            nonlocal energy_j, measured_j, covered_s
            energy_j += entry.watts * seconds
            measured_j += entry.measured_w * seconds
            covered_s += seconds
            by_source[entry.source] = by_source.get(entry.source, 0.0) + entry.watts * seconds

        for entry in chosen:
            if entry.start_s >= end_s:
                break
            overlap_s = min(end_s, entry.end_s) - max(start_s, entry.start_s)
            if overlap_s > 0:
                samples += 1
                add(entry, overlap_s)
        # The tick in progress: hold the newest power for a moment rather than leave a gap.
        if newest is not None and 0 < end_s - newest.end_s <= self.hold_s:
            add(newest, end_s - max(newest.end_s, start_s))
        source = max(by_source, key=lambda s: by_source[s]) if by_source else ""
        return EnergyWindow(start_s, end_s, energy_j, measured_j, covered_s, source, samples)


class NodeSampler:
    """Reads the node's meters every ``interval_s`` in a thread, into a history.

    Args:
        meters: Meters whose powers add up to the node's (e.g. CPU composite, GPUs).
        interval_s: Seconds between readings.
        keep_s: History length, s.
        wall: Wall clock, Unix seconds.
        on_reading: Called with each meter's reading (e.g. to update metrics).
        on_error: Called with a meter and the error when it fails a reading.

    Raises:
        ValueError: If there is no meter or the interval is not positive.
    """

    def __init__(
        self,
        meters: Sequence[PowerMeter],
        *,
        interval_s: float = 1.0,
        keep_s: float = 3600.0,
        wall: Callable[[], float] = time.time,
        on_reading: Callable[[PowerReading], None] | None = None,
        on_error: Callable[[PowerMeter, MeterError], None] | None = None,
    ) -> None:
        if not meters:
            raise ValueError("a sampler needs at least one meter")
        if not interval_s > 0:
            raise ValueError(f"the sampling interval must be positive, not {interval_s}")
        self.meters = list(meters)
        self.interval_s = interval_s
        self.history = PowerHistory(keep_s, hold_s=2 * interval_s)
        self.errors: dict[str, str] = {}
        """The last error of each meter that failed its latest reading, by source label."""
        self._wall = wall
        self._on_reading = on_reading
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_end_s: float | None = None

    def sample(self) -> PowerEntry | None:
        """Read every meter once and append the entry (None if no meter answered)."""
        readings: list[PowerReading] = []
        for meter in self.meters:
            try:
                reading = meter.read()
            except MeterError as exc:
                self.errors[meter.source] = str(exc)
                if self._on_error is not None:
                    self._on_error(meter, exc)
                continue
            self.errors.pop(meter.source, None)
            readings.append(reading)
            if self._on_reading is not None:
                self._on_reading(reading)
        end_s = self._wall()
        if not readings:
            self._last_end_s = end_s
            return None
        # Entries tile the wall-clock timeline: each starts where the previous tick ended
        # (the meters' own intervals run on the monotonic clock and differ by microseconds).
        if self._last_end_s is not None:
            start_s = self._last_end_s
        else:
            start_s = end_s - max(r.interval_s for r in readings)
        self._last_end_s = end_s
        if end_s <= start_s:
            return None
        entry = PowerEntry(
            start_s,
            end_s,
            sum(r.watts for r in readings),
            sum(r.watts for r in readings if is_measured(r.source)),
            "+".join(sorted({r.source for r in readings})),
        )
        self.history.add(entry)
        return entry

    def _run(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at += self.interval_s
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                return
            try:
                self.sample()
            except Exception:  # a meter bug must not stop the node's sampling
                log.exception("power sampling failed")
            next_at = max(next_at, time.monotonic() - self.interval_s)

    def start(self) -> None:
        """Start sampling in a daemon thread."""
        self._stop.clear()
        self._last_end_s = self._wall()
        self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling and close the meters."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for meter in self.meters:
            meter.close()
