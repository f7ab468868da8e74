"""Electricity Maps API v3: latest, history (past 24 h or a past range), forecast, zones.

Authentication is the ``auth-token`` header with the token from ``api_key=`` or the
environment variable ``ELECTRICITYMAPS_API_KEY``. Values are consumption-based average
intensity in gCO2eq/kWh; ``emission_factor="direct"`` (the default, matching the direct
column of the traces) or ``"lifecycle"`` selects the factors. Data is hourly.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from carbonscaler.providers._http import HttpProvider
from carbonscaler.providers.base import (
    Forecast,
    IntensityReading,
    IntensitySeries,
    ProviderConfigError,
    ProviderResponseError,
    check_horizon,
    iso_utc,
    series_from_points,
    to_utc,
    utc_now,
)

__all__ = ["ENV_API_KEY", "ElectricityMaps"]

ENV_API_KEY = "ELECTRICITYMAPS_API_KEY"
"""Environment variable holding the Electricity Maps API token."""

_STEP_S = 3600
_FACTORS = {"direct": "direct", "lifecycle": "lifecycle", "lca": "lifecycle"}


class ElectricityMaps(HttpProvider):
    """Electricity Maps API v3 client.

    Args:
        zone: Default zone, e.g. ``"DE"``, ``"US-CAL-CISO"``.
        api_key: API token; defaults to ``$ELECTRICITYMAPS_API_KEY``.
        emission_factor: ``"direct"`` or ``"lifecycle"`` (``"lca"`` is accepted too).
        base_url: API root (tests use a local server).
        **http: Timeouts, retries and backoff; see :class:`HttpProvider`.

    Raises:
        ProviderConfigError: If no token is given or the emission factor is unknown.
    """

    name = "electricitymaps"
    DEFAULT_BASE_URL = "https://api.electricitymaps.com/v3"
    credential_hint = f"Check the token passed as api_key= or in ${ENV_API_KEY}."

    def __init__(
        self,
        zone: str,
        *,
        api_key: str | None = None,
        emission_factor: str = "direct",
        base_url: str = DEFAULT_BASE_URL,
        **http: Any,
    ) -> None:
        token = api_key or os.environ.get(ENV_API_KEY)
        if not token:
            raise ProviderConfigError(
                self.name,
                f"no API token: pass api_key= or set ${ENV_API_KEY}"
                " (tokens: https://api-portal.electricitymaps.com)",
            )
        factor = _FACTORS.get(emission_factor.strip().lower())
        if factor is None:
            raise ProviderConfigError(
                self.name, f"unknown emission factor {emission_factor!r}; use direct or lifecycle"
            )
        super().__init__(zone, base_url=base_url, **http)
        self.emission_factor = factor
        self._headers = {"auth-token": token}

    def _params(self, zone: str, **extra: str) -> dict[str, str]:
        return {"zone": zone, "emissionFactorType": self.emission_factor, **extra}

    def current(self, zone: str | None = None) -> IntensityReading:
        z = self._zone(zone)
        body = self._get_json(
            "/carbon-intensity/latest", params=self._params(z), headers=self._headers
        )
        return self._reading(z, self._field(body, "carbonIntensity"), self._field(body, "datetime"))

    def history(self, start: datetime, end: datetime, zone: str | None = None) -> IntensitySeries:
        z = self._zone(zone)
        t0, t1 = to_utc(start), to_utc(end)
        if t1 <= t0:
            raise ValueError(f"history needs end > start, got {t0} .. {t1}")
        if t0 >= utc_now() - timedelta(hours=24):
            body = self._get_json(
                "/carbon-intensity/history", params=self._params(z), headers=self._headers
            )
            entries = self._field(body, "history")
        else:
            params = self._params(z, start=iso_utc(t0, "seconds"), end=iso_utc(t1, "seconds"))
            body = self._get_json(
                "/carbon-intensity/past-range", params=params, headers=self._headers
            )
            entries = self._field(body, "data")
        points = [(t, v) for t, v in self._points(entries) if t0 <= t < t1]
        if not points:
            raise ProviderResponseError(self.name, f"no data for {z} between {t0} and {t1}")
        series = series_from_points(
            IntensitySeries, points, zone=z, source=self.name, step_s=_STEP_S
        )
        age_s = (utc_now() - series.end).total_seconds()
        return series.as_stale() if age_s > self.stale_after_s else series

    def forecast(self, horizon_slots: int, zone: str | None = None) -> Forecast:
        check_horizon(self.name, horizon_slots)
        z = self._zone(zone)
        body = self._get_json(
            "/carbon-intensity/forecast", params=self._params(z), headers=self._headers
        )
        points = self._points(self._field(body, "forecast"))[:horizon_slots]
        if not points:
            raise ProviderResponseError(self.name, f"empty forecast for {z}")
        return series_from_points(Forecast, points, zone=z, source=self.name, step_s=_STEP_S)

    def zones(self) -> list[str]:
        body = self._get_json("/zones", headers=self._headers)
        if not isinstance(body, dict):
            raise ProviderResponseError(self.name, f"expected a zone map, got {str(body)[:80]}")
        return sorted(body)

    def _points(self, entries: Any) -> list[tuple[datetime, float]]:
        """(time, value) from a list of ``{"datetime", "carbonIntensity"}``, skipping gaps."""
        if not isinstance(entries, list):
            raise ProviderResponseError(self.name, f"expected a list, got {str(entries)[:80]}")
        points = []
        for entry in entries:
            value = self._field(entry, "carbonIntensity")
            if value is None:  # the API reports hours without data as null
                continue
            points.append((self._time(self._field(entry, "datetime")), self._number(value)))
        return sorted(points)
