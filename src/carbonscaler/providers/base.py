"""The provider interface, its value types and its errors.

Every source of carbon intensity (a replayed trace, Electricity Maps, WattTime, the UK
Carbon Intensity API, a fallback chain, a cache) implements :class:`CarbonProvider`, so the
controller, the accounting and the advisor never know where the numbers came from. Values
are gCO2eq/kWh, timestamps are tz-aware UTC and mark the *start* of the slot a value is for.

Every value carries ``stale``: True when it is older than its provider considers current, or
was served from a fallback after the live source failed. Consumers decide what to do with
old data; providers never hide that it is old.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from types import TracebackType
from typing import Any, Self, TypeVar

import numpy as np

__all__ = [
    "CarbonProvider",
    "CarbonUnavailable",
    "Forecast",
    "ForecastUnavailable",
    "IntensityReading",
    "IntensitySeries",
    "ProviderAuthError",
    "ProviderConfigError",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderRequestError",
    "ProviderResponseError",
    "ProviderUnavailable",
    "UnknownZoneError",
    "check_horizon",
    "iso_utc",
    "series_from_points",
    "to_utc",
    "utc_now",
]


class ProviderError(Exception):
    """A provider could not answer; the message names the provider and what to do.

    Args:
        provider: Name of the provider that failed, e.g. ``"electricitymaps"``.
        message: What went wrong and, where the user can act, how to fix it.
    """

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider


class CarbonUnavailable(RuntimeError):
    """No carbon intensity could be had where one was needed (the source did not answer, or no
    value was ever known); the caller goes on with what it last had, or waits for a value.

    Raised by the consumers of carbon data — the controller's feeds
    (:mod:`carbonscaler.control.carbon`) and the accounting's feeds
    (:mod:`carbonscaler.accounting.feeds`) — not by providers, which raise
    :class:`ProviderError`.
    """


class ProviderConfigError(ProviderError):
    """The provider is not usable as configured (e.g. no API key)."""


class ProviderAuthError(ProviderError):
    """The upstream API refused the credentials (HTTP 401/403)."""


class ProviderRateLimited(ProviderError):
    """The upstream API asked us to slow down (HTTP 429) for longer than we may wait.

    Args:
        provider: Provider name.
        message: Details.
        retry_after_s: Seconds the API asked us to wait, when it said.
    """

    def __init__(self, provider: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(provider, message)
        self.retry_after_s = retry_after_s


class ProviderUnavailable(ProviderError):
    """The upstream API is unreachable, timed out or answered 5xx, even after retries."""


class ProviderRequestError(ProviderError):
    """The upstream API rejected the request itself (HTTP 4xx other than 401/403/404/429)."""


class ProviderResponseError(ProviderError):
    """The upstream API answered 2xx with a body we cannot read (malformed or unexpected)."""


class UnknownZoneError(ProviderError):
    """The provider has no data for the requested zone."""


class ForecastUnavailable(ProviderError):
    """The provider or forecaster cannot forecast here (no forecast, or not enough history)."""


def utc_now() -> datetime:
    """The current time as a tz-aware UTC datetime."""
    return datetime.now(UTC)


def to_utc(value: datetime | str) -> datetime:
    """A tz-aware UTC datetime from a datetime or an ISO 8601 string (naive means UTC).

    Raises:
        ValueError: If ``value`` is not a datetime or a parsable ISO 8601 string.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 time") from None
    if not isinstance(value, datetime):
        raise ValueError(f"{value!r} is not a time")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso_utc(value: datetime, timespec: str = "auto") -> str:
    """A time as ISO 8601 text in UTC, ending in ``Z`` (``timespec="seconds"``: to the second,
    as the providers' APIs take it)."""
    return value.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


@dataclass(frozen=True)
class IntensityReading:
    """One carbon-intensity value.

    Args:
        zone: Grid zone, e.g. ``"DE"``, ``"CAISO_NORTH"``, ``"GB-13"``.
        value_g_per_kwh: Carbon intensity in gCO2eq/kWh.
        timestamp: Start of the slot the value is for (UTC).
        source: Provider that produced it, e.g. ``"electricitymaps"``.
        stale: True when the value is older than its provider considers current or was served
            from a fallback.
        fetched_at: When the value was obtained from its source (UTC).
    """

    zone: str
    value_g_per_kwh: float
    timestamp: datetime
    source: str
    stale: bool = False
    fetched_at: datetime = field(default_factory=utc_now)

    def as_stale(self, source_note: str | None = None) -> IntensityReading:
        """The same reading flagged stale, its source annotated (e.g. ``"last known"``)."""
        source = f"{self.source} ({source_note})" if source_note else self.source
        return replace(self, stale=True, source=source)

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly view (ISO 8601 times)."""
        return {
            "zone": self.zone,
            "value_g_per_kwh": self.value_g_per_kwh,
            "timestamp": iso_utc(self.timestamp),
            "source": self.source,
            "stale": self.stale,
            "fetched_at": iso_utc(self.fetched_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IntensityReading:
        """Inverse of :meth:`to_json`.

        Raises:
            KeyError, ValueError, TypeError: If ``data`` is not such a view.
        """
        return cls(
            zone=str(data["zone"]),
            value_g_per_kwh=float(data["value_g_per_kwh"]),
            timestamp=to_utc(data["timestamp"]),
            source=str(data["source"]),
            stale=bool(data["stale"]),
            fetched_at=to_utc(data["fetched_at"]),
        )


@dataclass(frozen=True)
class IntensitySeries:
    """Carbon intensity at a regular step: history, or (as :class:`Forecast`) predictions.

    Args:
        zone: Grid zone.
        start: Start of the first slot (UTC).
        step_s: Slot length in seconds.
        values_g_per_kwh: One value per slot, gCO2eq/kWh.
        source: Provider that produced it.
        stale: True when produced from old data or served from a fallback.
        fetched_at: When it was obtained (UTC).

    Raises:
        ValueError: If ``step_s`` is not positive or a value is negative or not finite.
    """

    zone: str
    start: datetime
    step_s: int
    values_g_per_kwh: tuple[float, ...]
    source: str
    stale: bool = False
    fetched_at: datetime = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if self.step_s <= 0:
            raise ValueError(f"a series needs a positive step, not {self.step_s} s")
        for v in self.values_g_per_kwh:
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"carbon intensity must be finite and >= 0, not {v}")

    def __len__(self) -> int:
        return len(self.values_g_per_kwh)

    @property
    def step(self) -> timedelta:
        """Slot length."""
        return timedelta(seconds=self.step_s)

    @property
    def end(self) -> datetime:
        """End of the last slot (UTC), i.e. the start of the slot after it."""
        return self.start + len(self) * self.step

    @property
    def timestamps(self) -> list[datetime]:
        """Start of each slot (UTC)."""
        return [self.start + i * self.step for i in range(len(self))]

    def as_array(self) -> np.ndarray:
        """The values as a new float64 array."""
        return np.array(self.values_g_per_kwh, dtype=np.float64)

    def as_stale(self, source_note: str | None = None) -> Self:
        """The same series flagged stale, its source annotated."""
        source = f"{self.source} ({source_note})" if source_note else self.source
        return replace(self, stale=True, source=source)

    def to_slots(self, step_s: int) -> Self:
        """The series on slots of ``step_s`` seconds aligned to the Unix epoch.

        Values falling in one slot are averaged; a slot that none fall in holds the previous
        slot's value (series are at most as coarse as their source, so this only bridges
        gaps). A coarser source is repeated into finer slots.

        Raises:
            ValueError: If ``step_s`` is not positive or the series is empty.
        """
        if step_s <= 0:
            raise ValueError(f"slot length must be positive, not {step_s} s")
        if not self.values_g_per_kwh:
            raise ValueError("cannot re-slot an empty series")
        if step_s == self.step_s and int(self.start.timestamp()) % step_s == 0:
            return self
        points: list[tuple[datetime, float]] = []
        # Repeat coarse values into every fine slot they cover before averaging.
        sub = max(1, self.step_s // step_s)
        sub_step = self.step / sub
        for i, v in enumerate(self.values_g_per_kwh):
            t0 = self.start + i * self.step
            points.extend((t0 + j * sub_step, v) for j in range(sub))
        return replace(
            self,
            start=_slot_floor(points[0][0], step_s),
            step_s=step_s,
            values_g_per_kwh=_regular_values(points, step_s),
        )

    def window(self, start: datetime, n_slots: int) -> tuple[float, ...]:
        """Up to ``n_slots`` values from the slot containing ``start`` (fewer at the end)."""
        offset = math.floor((to_utc(start) - self.start) / self.step)
        first = max(offset, 0)
        return self.values_g_per_kwh[first : max(offset + n_slots, 0)]

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly view (ISO 8601 times)."""
        return {
            "zone": self.zone,
            "start": iso_utc(self.start),
            "step_s": self.step_s,
            "values_g_per_kwh": list(self.values_g_per_kwh),
            "source": self.source,
            "stale": self.stale,
            "fetched_at": iso_utc(self.fetched_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_json`.

        Raises:
            KeyError, ValueError, TypeError: If ``data`` is not such a view.
        """
        return cls(
            zone=str(data["zone"]),
            start=to_utc(data["start"]),
            step_s=int(data["step_s"]),
            values_g_per_kwh=tuple(float(v) for v in data["values_g_per_kwh"]),
            source=str(data["source"]),
            stale=bool(data["stale"]),
            fetched_at=to_utc(data["fetched_at"]),
        )


class Forecast(IntensitySeries):
    """Predicted carbon intensity; ``start`` is the first predicted slot."""


S = TypeVar("S", bound=IntensitySeries)


def _slot_floor(t: datetime, step_s: int) -> datetime:
    epoch = int(t.timestamp())
    return datetime.fromtimestamp(epoch - epoch % step_s, UTC)


def _regular_values(points: Sequence[tuple[datetime, float]], step_s: int) -> tuple[float, ...]:
    """Mean per epoch-aligned slot, gaps holding the previous slot's value."""
    sums: dict[int, list[float]] = {}
    for t, v in points:
        slot = int(_slot_floor(t, step_s).timestamp()) // step_s
        sums.setdefault(slot, []).append(v)
    first, last = min(sums), max(sums)
    out: list[float] = []
    for slot in range(first, last + 1):
        bucket = sums.get(slot)
        out.append(sum(bucket) / len(bucket) if bucket else out[-1])
    return tuple(out)


def series_from_points(
    kind: type[S],
    points: Iterable[tuple[datetime, float]],
    *,
    zone: str,
    source: str,
    step_s: int | None = None,
    stale: bool = False,
) -> S:
    """A regular series from (slot start, value) pairs as APIs return them.

    Args:
        kind: :class:`IntensitySeries` or :class:`Forecast`.
        points: Pairs in any order; duplicates are averaged.
        zone: Grid zone.
        source: Provider name.
        step_s: Slot length; by default the smallest spacing between the points.
        stale: Staleness flag to carry.

    Raises:
        ValueError: If there are no points, or ``step_s`` cannot be inferred from one point.
    """
    pts = sorted((to_utc(t), float(v)) for t, v in points)
    if not pts:
        raise ValueError("no data points")
    if step_s is None:
        gaps = [int((b[0] - a[0]).total_seconds()) for a, b in pairwise(pts)]
        positive = [g for g in gaps if g > 0]
        if not positive:
            raise ValueError("cannot infer the step of a single data point; pass step_s")
        step_s = min(positive)
    start = _slot_floor(pts[0][0], step_s)
    return kind(
        zone=zone,
        start=start,
        step_s=step_s,
        values_g_per_kwh=_regular_values(pts, step_s),
        source=source,
        stale=stale,
    )


class CarbonProvider(ABC):
    """A source of carbon intensity: current value, history, forecast, zones.

    Implementations are synchronous (the controller is synchronous); the async carbon
    service runs them in worker threads. Each has a default ``zone``; methods take another
    zone where the provider serves several. Use as a context manager to release
    connections.
    """

    name: str = "provider"
    """Short provider name, reported as the ``source`` of its values."""
    step_s: int = 3600
    """Length of the provider's native slots in seconds."""

    def __init__(self, zone: str) -> None:
        self.zone = zone

    @abstractmethod
    def current(self, zone: str | None = None) -> IntensityReading:
        """The latest carbon intensity.

        Raises:
            ProviderError: If the provider cannot answer (see the subclasses).
        """

    @abstractmethod
    def history(self, start: datetime, end: datetime, zone: str | None = None) -> IntensitySeries:
        """Carbon intensity for the slots from ``start`` (inclusive) to ``end`` (exclusive).

        Raises:
            ProviderError: If the provider cannot answer or holds no data for the window.
        """

    @abstractmethod
    def forecast(self, horizon_slots: int, zone: str | None = None) -> Forecast:
        """The provider's own forecast for up to ``horizon_slots`` of its slots, from now.

        Raises:
            ForecastUnavailable: If the provider has no forecast.
            ProviderError: If the provider cannot answer.
        """

    @abstractmethod
    def zones(self) -> list[str]:
        """Zones this provider can answer for.

        Raises:
            ProviderError: If the provider cannot answer.
        """

    def close(self) -> None:  # noqa: B027 - optional hook: most providers hold nothing
        """Release network connections and files; the provider is unusable afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _zone(self, zone: str | None) -> str:
        return self.zone if zone is None else zone


def check_horizon(provider: str, horizon_slots: int) -> None:
    """Reject a non-positive forecast horizon with a clear message.

    Raises:
        ProviderRequestError: If ``horizon_slots`` < 1.
    """
    if isinstance(horizon_slots, bool) or horizon_slots < 1:
        raise ProviderRequestError(
            provider, f"a forecast needs a horizon of at least 1 slot, not {horizon_slots}"
        )
