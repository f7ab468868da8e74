"""Power meters: one interface for every way of knowing how many watts a node or job draws.

A meter answers "average watts since you were last asked" as a :class:`PowerReading` whose
``source`` says how the figure was obtained:

- ``measured:rapl``, ``measured:nvml``, ``measured:kepler``: read from hardware counters or
  from Kepler's attribution of them;
- ``estimated:profile``: P(k) from the job's scaling profile at its current server count;
- ``estimated:...``: any other estimate (e.g. ``estimated:nominal``, a stated wattage);
- ``constant``: a fixed figure for tests and demos, never counted as measured.

Only sources starting with ``measured:`` count as measured. The reference power server
reported a fixed 10 W as if it were measured; here an unreadable sensor either raises
:class:`MeterUnavailable` (so that :class:`CompositeMeter` falls back to the next source) or
is replaced by an estimate labelled as one.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:  # annotations only: the meters (and DEFAULT_POWERCAP_ROOT) need no numpy
    from carbonscaler.profile import ScalingProfile

__all__ = [
    "DEFAULT_IDLE_W",
    "DEFAULT_WORKER_W",
    "MEASURED_PREFIX",
    "CompositeMeter",
    "ConstantMeter",
    "MeterError",
    "MeterUnavailable",
    "PowerFunction",
    "PowerMeter",
    "PowerReading",
    "ProfileMeter",
    "estimated_power",
    "is_measured",
]

log = logging.getLogger("carbonscaler.power")

MEASURED_PREFIX = "measured:"
"""Sources with this prefix are measurements; every other source is an estimate."""

Monotonic = Callable[[], float]


def is_measured(source: str) -> bool:
    """Whether a ``source`` label denotes a measurement rather than an estimate."""
    return source.startswith(MEASURED_PREFIX)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MeterError(RuntimeError):
    """A meter could not produce a reading this time (e.g. a counter reset); try again."""


class MeterUnavailable(MeterError):
    """The meter's source cannot be read here (no RAPL, no GPU driver, no permission)."""


@dataclass(frozen=True)
class PowerReading:
    """Average power over one interval.

    Args:
        watts: Average power over the interval, W.
        interval_s: Length of the interval, s (0 when no time passed since the last read).
        source: How the figure was obtained, e.g. ``measured:rapl`` or ``estimated:profile``.
        timestamp: End of the interval (UTC).

    Raises:
        ValueError: If ``watts`` or ``interval_s`` is negative or not finite.
    """

    watts: float
    interval_s: float
    source: str
    timestamp: datetime = field(default_factory=_utc_now)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.watts) and self.watts >= 0):
            raise ValueError(f"power must be finite and >= 0 W, not {self.watts}")
        if not (math.isfinite(self.interval_s) and self.interval_s >= 0):
            raise ValueError(f"an interval must be finite and >= 0 s, not {self.interval_s}")

    @property
    def energy_j(self) -> float:
        """Energy over the interval, J."""
        return self.watts * self.interval_s

    @property
    def start(self) -> datetime:
        """Start of the interval (UTC)."""
        return self.timestamp - timedelta(seconds=self.interval_s)

    @property
    def measured(self) -> bool:
        """Whether the figure is a measurement (its source starts with ``measured:``)."""
        return is_measured(self.source)


class PowerMeter(ABC):
    """A source of power readings. Use as a context manager to release devices and sockets."""

    source: str = "unknown"
    """The ``source`` label of this meter's readings."""

    @abstractmethod
    def read(self) -> PowerReading:
        """Average power since the previous read (or since the meter was created).

        Raises:
            MeterUnavailable: If the source cannot be read on this machine.
            MeterError: If this one reading failed but a later one may succeed.
        """

    def close(self) -> None:  # noqa: B027 - optional hook: most meters hold nothing
        """Release files, devices and connections; the meter is unusable afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _IntervalMeter(PowerMeter):
    """A meter whose readings cover the time since its previous read, on a monotonic clock."""

    def __init__(self, monotonic: Monotonic = time.monotonic) -> None:
        self._monotonic = monotonic
        self._last_t = monotonic()

    def _interval_s(self) -> float:
        now = self._monotonic()
        elapsed = max(0.0, now - self._last_t)
        self._last_t = now
        return elapsed


class ConstantMeter(_IntervalMeter):
    """A fixed wattage: for tests, demos and a stated nominal draw.

    Args:
        watts: The power, W.
        source: The label; ``constant`` by default, ``estimated:nominal`` for a stated draw.
            It must not start with ``measured:``: a constant is never a measurement.
        monotonic: Clock for the intervals, replaceable in tests.

    Raises:
        ValueError: If ``watts`` is negative or the source claims to be measured.
    """

    def __init__(
        self, watts: float, *, source: str = "constant", monotonic: Monotonic = time.monotonic
    ) -> None:
        if not (math.isfinite(watts) and watts >= 0):
            raise ValueError(f"a constant meter needs finite watts >= 0, not {watts}")
        if is_measured(source):
            raise ValueError(f"a constant is not a measurement; do not label it {source!r}")
        super().__init__(monotonic)
        self.watts = watts
        self.source = source

    def read(self) -> PowerReading:
        return PowerReading(self.watts, self._interval_s(), self.source)


class ProfileMeter(_IntervalMeter):
    """An estimate from the job's scaling profile: P(k) at its current server count k.

    Args:
        profile: The job's profile (``power_w[k]`` is the job's power on k servers).
        servers: The current server count, or a function returning it (it changes as the
            job is rescaled).
        per_server: Report one server's share, P(k) / k, e.g. for one node of the job.
        monotonic: Clock for the intervals, replaceable in tests.

    Raises:
        ValueError: If a fixed ``servers`` is outside the profile.
    """

    source = "estimated:profile"

    def __init__(
        self,
        profile: ScalingProfile,
        servers: int | Callable[[], int],
        *,
        per_server: bool = False,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        super().__init__(monotonic)
        self.profile = profile
        self.per_server = per_server
        self._servers = servers if callable(servers) else (lambda: servers)
        if not callable(servers):
            self.watts()  # reject a bad fixed count now rather than at the first read

    def watts(self) -> float:
        """The estimate at the current server count, W.

        Raises:
            ValueError: If the count is negative or beyond the profile.
        """
        k = self._servers()
        top = self.profile.max_servers
        if not 0 <= k <= top:
            raise ValueError(
                f"{k} servers is outside profile {self.profile.name!r} (0..{top}); profile the"
                " job at more servers or lower its maximum"
            )
        total = float(self.profile.power_w[k])
        return total / k if self.per_server and k > 0 else total

    def read(self) -> PowerReading:
        try:
            watts = self.watts()
        except ValueError as exc:
            raise MeterError(str(exc)) from None
        return PowerReading(watts, self._interval_s(), self.source)


class CompositeMeter(PowerMeter):
    """The first of several meters that can answer: best source first, estimates last.

    A meter that raises :class:`MeterUnavailable` is skipped for good (the hardware will not
    appear later); one that raises :class:`MeterError` is skipped for this read only. When a
    counter-based meter answers again after others stood in for it, its reading covers the
    time the others already reported; the composite trims every reading to the time since
    its own previous reading, so no second is counted twice.

    Args:
        meters: Candidates, best first.
        monotonic: Clock for the trimming, replaceable in tests.

    Raises:
        ValueError: If ``meters`` is empty.
    """

    def __init__(self, meters: Sequence[PowerMeter], *, monotonic: Monotonic = time.monotonic):
        if not meters:
            raise ValueError("a composite meter needs at least one meter")
        self.meters = list(meters)
        self._disabled: dict[int, str] = {}
        self._monotonic = monotonic
        self._last_t = monotonic()
        self.active: PowerMeter | None = None
        """The meter that produced the last reading."""

    @property
    def source(self) -> str:  # type: ignore[override]  # the active meter's label
        return self.active.source if self.active is not None else self.meters[0].source

    @property
    def unavailable(self) -> dict[str, str]:
        """Why each skipped-for-good meter is unavailable, by its source label."""
        return {self.meters[i].source: why for i, why in self._disabled.items()}

    def read(self) -> PowerReading:
        now = self._monotonic()
        since_last_s = max(0.0, now - self._last_t)
        reasons: list[str] = []
        for i, meter in enumerate(self.meters):
            if i in self._disabled:
                continue
            try:
                reading = meter.read()
            except MeterUnavailable as exc:
                self._disabled[i] = str(exc)
                log.warning("power source %s unavailable, falling back: %s", meter.source, exc)
                continue
            except MeterError as exc:
                reasons.append(f"{meter.source}: {exc}")
                continue
            self._last_t = now
            self.active = meter
            if reading.interval_s > since_last_s:
                reading = replace(reading, interval_s=since_last_s)
            return reading
        reasons.extend(f"{self.meters[i].source}: {why}" for i, why in self._disabled.items())
        raise MeterUnavailable("no power source answered (" + "; ".join(reasons) + ")")

    def close(self) -> None:
        for meter in self.meters:
            meter.close()


PowerFunction = Callable[[int], tuple[float, str]]
"""Watts and their source at ``k`` workers."""

DEFAULT_IDLE_W = 30.0
"""A small server's or desktop's idle power (SPECpower idle figures for one-socket machines
are 20-50 W): paid once, while the job holds the machine."""
DEFAULT_WORKER_W = 15.0
"""Dynamic power of one busy core-sized worker (a one-socket server's full-load minus idle,
about 100-150 W, over its 8-16 cores)."""


def estimated_power(
    idle_w: float = DEFAULT_IDLE_W, per_worker_w: float = DEFAULT_WORKER_W
) -> PowerFunction:
    """The node estimate when nothing can be measured: ``k ≥ 1`` workers draw
    ``idle_w + k × per_worker_w``; a suspended job (``k = 0``) draws nothing.

    Raises:
        ValueError: If a figure is negative or both are zero.
    """
    if idle_w < 0 or per_worker_w < 0 or idle_w + per_worker_w <= 0:
        raise ValueError(
            f"power estimate needs idle_w >= 0 and per_worker_w >= 0, not both 0 "
            f"(got {idle_w:g} and {per_worker_w:g})"
        )
    label = f"estimated:{idle_w:g}W-idle+{per_worker_w:g}W-per-worker"

    def power(workers: int) -> tuple[float, str]:
        return (idle_w + workers * per_worker_w if workers > 0 else 0.0), label

    return power
