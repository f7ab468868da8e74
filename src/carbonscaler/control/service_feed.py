"""A carbon feed from a running ``carbonscaler carbon-service`` (its versioned REST API)."""

from __future__ import annotations

import httpx
import numpy as np

from carbonscaler.control.carbon import CarbonFeed, CarbonUnavailable
from carbonscaler.forecast import ForecastModel
from carbonscaler.planner.model import FloatArray

__all__ = ["ServiceFeed"]


class ServiceFeed(CarbonFeed):
    """Reads ``/v1/intensity/current`` and ``/v1/intensity/forecast`` of a carbon service.

    Actual values are remembered per job slot. Every request has a timeout; any failure
    (refused, timeout, non-2xx, malformed body) becomes :class:`CarbonUnavailable`, on which
    the controller carries on with what it last had.

    Args:
        url: the service's base URL, e.g. ``http://127.0.0.1:8080``.
        forecaster_name: the service's forecast model to ask for (``perfect``, ``uniform``,
            ..., or an alias such as ``real``); ``provider`` means the service's default
            method.
        timeout_s: per-request timeout.
    """

    def __init__(
        self, url: str, *, forecaster_name: str = "perfect", timeout_s: float = 5.0
    ) -> None:
        self.url = url.rstrip("/")
        model = ForecastModel.parse(forecaster_name)
        self.method = None if model is ForecastModel.PROVIDER else str(model)
        self.source = f"carbon-service {self.url}"
        self._client = httpx.Client(base_url=self.url, timeout=timeout_s)
        self._seen: dict[int, float] = {}

    def _get(self, path: str, params: dict[str, str | int]) -> dict[str, object]:
        try:
            response = self._client.get(path, params=params)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise CarbonUnavailable(f"{self.source}{path}: {exc}") from exc
        if not isinstance(body, dict):
            raise CarbonUnavailable(f"{self.source}{path}: unexpected answer {body!r:.80}")
        return body

    def actual(self, slot: int) -> float:
        if slot not in self._seen:
            body = self._get("/v1/intensity/current", {})
            try:
                self._seen[slot] = float(body["value_g_per_kwh"])  # type: ignore[arg-type]
            except (KeyError, TypeError, ValueError) as exc:
                raise CarbonUnavailable(f"{self.source}: malformed current value") from exc
        return self._seen[slot]

    def forecast(self, slot: int, horizon: int) -> FloatArray:
        params: dict[str, str | int] = {"horizon": max(1, min(horizon, 1000))}
        if self.method is not None:
            params["method"] = self.method
        body = self._get("/v1/intensity/forecast", params)
        try:
            values = np.asarray(body["values_g_per_kwh"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise CarbonUnavailable(f"{self.source}: malformed forecast") from exc
        if values.ndim != 1 or len(values) == 0:
            raise CarbonUnavailable(f"{self.source}: empty forecast")
        if len(values) < horizon:
            values = np.concatenate([values, np.full(horizon - len(values), values[-1])])
        return values[:horizon]

    def close(self) -> None:
        self._client.close()
