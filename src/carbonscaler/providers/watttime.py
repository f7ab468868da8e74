"""WattTime API v3: marginal emissions (``co2_moer``) now, in history and as a forecast.

``GET /login`` with HTTP Basic credentials returns a bearer token valid for 30 minutes; the
client logs in lazily, renews the token before it expires, and logs in again once if a data
call answers 401. Credentials come from ``username=``/``password=`` or the environment
variables ``WATTTIME_USER`` and ``WATTTIME_PASSWORD`` (the names WattTime's own SDK uses).

WattTime reports *marginal* operating emissions, by default in lbs CO2/MWh; values are
converted to gCO2/kWh (1 lb/MWh = 0.45359237 g/kWh). Marginal and average intensity are
different signals: do not compare them in one study without saying so. Data is at 5-minute
resolution. ``/v3/signal-index`` (a 0-100 percentile, free for all regions) is exposed as
:meth:`WattTime.signal_index`.
"""

from __future__ import annotations

import math
import os
import time
from datetime import datetime, timedelta
from typing import Any

import httpx

from carbonscaler.providers._http import HttpProvider
from carbonscaler.providers.base import (
    Forecast,
    IntensityReading,
    IntensitySeries,
    ProviderAuthError,
    ProviderConfigError,
    ProviderResponseError,
    check_horizon,
    iso_utc,
    series_from_points,
    to_utc,
    utc_now,
)

__all__ = ["ENV_PASSWORD", "ENV_USER", "LBS_PER_MWH_IN_G_PER_KWH", "WattTime"]

ENV_USER = "WATTTIME_USER"
"""Environment variable holding the WattTime user name."""
ENV_PASSWORD = "WATTTIME_PASSWORD"
"""Environment variable holding the WattTime password."""

LBS_PER_MWH_IN_G_PER_KWH = 0.45359237
"""One lb CO2 per MWh in g CO2 per kWh."""

_UNITS = {"lbs_co2_per_mwh": LBS_PER_MWH_IN_G_PER_KWH, "g_co2_per_kwh": 1.0, "kg_co2_per_mwh": 1.0}
_TOKEN_LIFETIME_S = 25 * 60  # WattTime tokens last 30 min; renew early to avoid edge 401s
_CHUNK = timedelta(days=30)  # the longest window one /v3/historical call serves


class WattTime(HttpProvider):
    """WattTime API v3 client for one signal type (``co2_moer`` by default).

    Args:
        zone: Default region, e.g. ``"CAISO_NORTH"`` (free for every account).
        username: Defaults to ``$WATTTIME_USER``.
        password: Defaults to ``$WATTTIME_PASSWORD``.
        signal_type: ``"co2_moer"`` (marginal) or ``"co2_aoer"`` (average).
        base_url: API root (tests use a local server).
        **http: Timeouts, retries and backoff; see :class:`HttpProvider`.

    Raises:
        ProviderConfigError: If credentials are missing.
    """

    name = "watttime"
    step_s = 300
    DEFAULT_BASE_URL = "https://api.watttime.org"
    credential_hint = f"Check username/password or ${ENV_USER} and ${ENV_PASSWORD}."

    def __init__(
        self,
        zone: str,
        *,
        username: str | None = None,
        password: str | None = None,
        signal_type: str = "co2_moer",
        base_url: str = DEFAULT_BASE_URL,
        **http: Any,
    ) -> None:
        user = username or os.environ.get(ENV_USER)
        secret = password or os.environ.get(ENV_PASSWORD)
        if not user or not secret:
            raise ProviderConfigError(
                self.name,
                f"no credentials: pass username= and password= or set ${ENV_USER} and"
                f" ${ENV_PASSWORD} (register at https://watttime.org)",
            )
        super().__init__(zone, base_url=base_url, **http)
        self.signal_type = signal_type
        self._auth = httpx.BasicAuth(user, secret)
        self._token: str | None = None
        self._token_expires = 0.0  # time.monotonic()

    def _login(self) -> str:
        if self._token is None or time.monotonic() >= self._token_expires:
            body = self._get_json("/login", auth=self._auth)
            token = self._field(body, "token")
            if not isinstance(token, str) or not token:
                raise ProviderResponseError(self.name, "login answered without a token")
            self._token = token
            self._token_expires = time.monotonic() + _TOKEN_LIFETIME_S
        return self._token

    def _data(self, path: str, params: dict[str, str | int]) -> Any:
        """A data call with the bearer token; one fresh login if the token was refused."""
        for attempt in range(2):
            headers = {"Authorization": f"Bearer {self._login()}"}
            try:
                return self._get_json(path, params=params, headers=headers)
            except ProviderAuthError:
                if attempt:
                    raise
                self._token = None  # expired or revoked early: log in again once
        raise AssertionError("unreachable")

    def current(self, zone: str | None = None) -> IntensityReading:
        z = self._zone(zone)
        now = utc_now()
        body = self._data("/v3/historical", self._window(z, now - timedelta(hours=1), now))
        points = self._points(body)
        if not points:
            raise ProviderResponseError(self.name, f"no recent data for {z}")
        t, value = points[-1]
        return self._reading(z, value, t.isoformat())

    def signal_index(self, zone: str | None = None) -> tuple[datetime, float]:
        """The current value's percentile (0-100) among the region's recent values.

        Raises:
            ProviderError: If the API cannot answer.
        """
        z = self._zone(zone)
        body = self._data("/v3/signal-index", {"region": z, "signal_type": self.signal_type})
        entry = self._field(body, "data", 0)
        return self._time(self._field(entry, "point_time")), self._number(
            self._field(entry, "value")
        )

    def history(self, start: datetime, end: datetime, zone: str | None = None) -> IntensitySeries:
        z = self._zone(zone)
        t0, t1 = to_utc(start), to_utc(end)
        if t1 <= t0:
            raise ValueError(f"history needs end > start, got {t0} .. {t1}")
        points: list[tuple[datetime, float]] = []
        step_s = 300
        chunk_start = t0
        while chunk_start < t1:
            chunk_end = min(t1, chunk_start + _CHUNK)
            body = self._data("/v3/historical", self._window(z, chunk_start, chunk_end))
            step_s = self._step_s(body)
            points.extend((t, v) for t, v in self._points(body) if t0 <= t < t1)
            chunk_start = chunk_end
        if not points:
            raise ProviderResponseError(self.name, f"no data for {z} between {t0} and {t1}")
        return series_from_points(IntensitySeries, points, zone=z, source=self.name, step_s=step_s)

    def forecast(self, horizon_slots: int, zone: str | None = None) -> Forecast:
        check_horizon(self.name, horizon_slots)
        z = self._zone(zone)
        # Ask for whole hours covering the horizon at the 5-minute native step.
        hours = max(1, math.ceil(horizon_slots * 300 / 3600))
        params: dict[str, str | int] = {
            "region": z,
            "signal_type": self.signal_type,
            "horizon_hours": hours,
        }
        body = self._data("/v3/forecast", params)
        points = self._points(body)[:horizon_slots]
        if not points:
            raise ProviderResponseError(self.name, f"empty forecast for {z}")
        return series_from_points(
            Forecast, points, zone=z, source=self.name, step_s=self._step_s(body)
        )

    def zones(self) -> list[str]:
        body = self._data("/v3/my-access", {})
        regions: set[str] = set()
        for signal in self._field(body, "signal_types"):
            if self._field(signal, "signal_type") == self.signal_type:
                entries = self._field(signal, "regions")
                regions.update(str(self._field(r, "region")) for r in entries)
        return sorted(regions)

    def _window(self, zone: str, start: datetime, end: datetime) -> dict[str, str | int]:
        return {
            "region": zone,
            "signal_type": self.signal_type,
            "start": iso_utc(start, "seconds"),
            "end": iso_utc(end, "seconds"),
        }

    def _step_s(self, body: Any) -> int:
        meta = body.get("meta") if isinstance(body, dict) else None
        period = meta.get("data_point_period_seconds") if isinstance(meta, dict) else None
        return int(period) if isinstance(period, int) and period > 0 else 300

    def _points(self, body: Any) -> list[tuple[datetime, float]]:
        """Values in gCO2/kWh from ``{"data": [{"point_time", "value"}], "meta": {"units"}}``."""
        units = self._field(body, "meta", "units")
        factor = _UNITS.get(str(units).lower())
        if factor is None:
            raise ProviderResponseError(
                self.name, f"unknown units {units!r}; expected one of {sorted(_UNITS)}"
            )
        entries = self._field(body, "data")
        if not isinstance(entries, list):
            raise ProviderResponseError(self.name, f"expected a data list, got {str(entries)[:80]}")
        points = [
            (
                self._time(self._field(e, "point_time")),
                self._number(self._field(e, "value")) * factor,
            )
            for e in entries
        ]
        return sorted(points)
