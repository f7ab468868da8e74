"""The UK Carbon Intensity API (National Energy System Operator): national and regional.

No key is needed. Zones: ``"GB"`` is the national figure; ``"GB-1"`` .. ``"GB-17"`` are the
API's regions (1 North Scotland .. 14 South East England, 15 England, 16 Scotland,
17 Wales); region short names such as ``"London"`` are accepted too. Values are half-hourly
gCO2/kWh. Nationally the *actual* value is used when published, else the forecast;
regional values are always the API's (model) forecast. The forecast reaches 48 hours.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from carbonscaler.providers._http import HttpProvider
from carbonscaler.providers.base import (
    Forecast,
    IntensityReading,
    IntensitySeries,
    ProviderResponseError,
    UnknownZoneError,
    check_horizon,
    series_from_points,
    to_utc,
    utc_now,
)

__all__ = ["REGIONS", "UKCarbonIntensity"]

REGIONS: dict[int, str] = {
    1: "North Scotland",
    2: "South Scotland",
    3: "North West England",
    4: "North East England",
    5: "Yorkshire",
    6: "North Wales & Merseyside",
    7: "South Wales",
    8: "West Midlands",
    9: "East Midlands",
    10: "East England",
    11: "South West England",
    12: "South England",
    13: "London",
    14: "South East England",
    15: "England",
    16: "Scotland",
    17: "Wales",
}
"""Region ids of the API and their short names."""

_STEP_S = 1800
_CHUNK = timedelta(days=14)  # the longest window one from/to call serves


class UKCarbonIntensity(HttpProvider):
    """Client of https://api.carbonintensity.org.uk (no key).

    Args:
        zone: ``"GB"`` (national, the default), ``"GB-<region id>"`` or a region short name.
        base_url: API root (tests use a local server).
        **http: Timeouts, retries and backoff; see :class:`HttpProvider`.

    Raises:
        UnknownZoneError: If the zone is none of those.
    """

    name = "ukgrid"
    step_s = _STEP_S
    DEFAULT_BASE_URL = "https://api.carbonintensity.org.uk"

    def __init__(self, zone: str = "GB", *, base_url: str = DEFAULT_BASE_URL, **http: Any) -> None:
        # Half-hourly data: an hour-old value already misses two updates.
        http.setdefault("stale_after_s", 3600.0)
        super().__init__(zone, base_url=base_url, **http)
        self._region(zone)  # fail on a bad default zone now, not at the first call

    def _region(self, zone: str) -> int | None:
        """None for national, else the region id."""
        key = zone.strip()
        if key.upper() in ("GB", "GB-18", "NATIONAL"):
            return None
        if key.upper().startswith("GB-") and key[3:].isdigit() and int(key[3:]) in REGIONS:
            return int(key[3:])
        for rid, short in REGIONS.items():
            if short.lower() == key.lower():
                return rid
        raise UnknownZoneError(
            self.name, f"unknown zone {zone!r}; use GB, GB-1 .. GB-17 or a region name"
        )

    def _canonical(self, zone: str) -> str:
        rid = self._region(zone)
        return "GB" if rid is None else f"GB-{rid}"

    def current(self, zone: str | None = None) -> IntensityReading:
        z = self._zone(zone)
        rid = self._region(z)
        if rid is None:
            entry = self._field(self._get_json("/intensity"), "data", 0)
        else:
            body = self._get_json(f"/regional/regionid/{rid}")
            entry = self._field(self._unwrap_region(body), "data", 0)
        return self._reading(self._canonical(z), self._value(entry), self._field(entry, "from"))

    def history(self, start: datetime, end: datetime, zone: str | None = None) -> IntensitySeries:
        z = self._zone(zone)
        rid = self._region(z)
        t0, t1 = to_utc(start), to_utc(end)
        if t1 <= t0:
            raise ValueError(f"history needs end > start, got {t0} .. {t1}")
        points: list[tuple[datetime, float]] = []
        chunk_start = t0
        while chunk_start < t1:
            chunk_end = min(t1, chunk_start + _CHUNK)
            span = f"{_fmt(chunk_start)}/{_fmt(chunk_end)}"
            if rid is None:
                entries = self._field(self._get_json(f"/intensity/{span}"), "data")
            else:
                body = self._get_json(f"/regional/intensity/{span}/regionid/{rid}")
                entries = self._field(self._unwrap_region(body), "data")
            points.extend((t, v) for t, v in self._points(entries) if t0 <= t < t1)
            chunk_start = chunk_end
        if not points:
            raise ProviderResponseError(self.name, f"no data for {z} between {t0} and {t1}")
        return series_from_points(
            IntensitySeries, points, zone=self._canonical(z), source=self.name, step_s=_STEP_S
        )

    def forecast(self, horizon_slots: int, zone: str | None = None) -> Forecast:
        check_horizon(self.name, horizon_slots)
        z = self._zone(zone)
        rid = self._region(z)
        now = _fmt(utc_now())
        if rid is None:
            entries = self._field(self._get_json(f"/intensity/{now}/fw48h"), "data")
        else:
            body = self._get_json(f"/regional/intensity/{now}/fw48h/regionid/{rid}")
            entries = self._field(self._unwrap_region(body), "data")
        points = self._points(entries, prefer_actual=False)[:horizon_slots]
        if not points:
            raise ProviderResponseError(self.name, f"empty forecast for {z}")
        return series_from_points(
            Forecast, points, zone=self._canonical(z), source=self.name, step_s=_STEP_S
        )

    def zones(self) -> list[str]:
        return ["GB", *(f"GB-{rid}" for rid in REGIONS)]

    def _unwrap_region(self, body: Any) -> Any:
        """The region object: regional answers wrap it as ``data`` or ``data[0]``."""
        data = self._field(body, "data")
        return self._field(data, 0) if isinstance(data, list) else data

    def _value(self, entry: Any, *, prefer_actual: bool = True) -> float:
        intensity = self._field(entry, "intensity")
        actual = intensity.get("actual") if isinstance(intensity, dict) else None
        if prefer_actual and actual is not None:
            return self._number(actual)
        return self._number(self._field(intensity, "forecast"))

    def _points(self, entries: Any, *, prefer_actual: bool = True) -> list[tuple[datetime, float]]:
        if not isinstance(entries, list):
            raise ProviderResponseError(self.name, f"expected a list, got {str(entries)[:80]}")
        return sorted(
            (self._time(self._field(e, "from")), self._value(e, prefer_actual=prefer_actual))
            for e in entries
        )


def _fmt(t: datetime) -> str:
    """The API's path time format, e.g. ``2024-01-20T12:00Z``."""
    return t.strftime("%Y-%m-%dT%H:%MZ")
