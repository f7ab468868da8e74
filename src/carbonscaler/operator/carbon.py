"""Carbon data for the operator: pushed by the carbon service, or polled.

The carbon service POSTs the reference body ``{"carbon_intensity", "carbon_percentile",
"prediction"}`` (ours adds ``zone``, ``stale``, ``source``) to every subscriber each update
interval; the operator listens for it on its webhook port (reference default 8899) and
subscribes itself at startup when it knows its own address. It can also poll — the carbon
service's ``/v1`` API, or a carbon provider directly (a trace replay, a live API) — which is
also what keeps a standby operator (kopf peering) and a missed push covered.

The :class:`CarbonBoard` holds the latest :class:`CarbonSnapshot` per zone; handlers read it.
It stamps every snapshot with the carbon source's pace (``slot_seconds``: wall-clock seconds per
forecast entry — the carbon service's ``--speed``, given to the operator as ``--slot-seconds``),
which each job's ``slotSeconds`` must equal (see :func:`carbonscaler.operator.reconcile`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
from aiohttp import web

from carbonscaler.operator.reconcile import CarbonSnapshot
from carbonscaler.providers import CarbonProvider, ProviderError
from carbonscaler.security.tokens import PUSH_KEY_PARAM, push_authorized

__all__ = [
    "CarbonBoard",
    "ProviderPoller",
    "ServicePoller",
    "snapshot_from_push",
    "subscribe",
    "webhook_app",
]

log = logging.getLogger("carbonscaler.operator.carbon")

_DEFAULT = ""


class CarbonBoard:
    """The latest carbon snapshot per zone (``""`` is the source's default zone).

    Args:
        clock: epoch seconds.
        slot_seconds: the carbon source's pace (wall-clock seconds per forecast entry), set on
            every snapshot that does not carry its own; None: unknown (not checked).
    """

    def __init__(
        self, clock: Callable[[], float] = time.time, slot_seconds: float | None = None
    ) -> None:
        if slot_seconds is not None and not (math.isfinite(slot_seconds) and slot_seconds > 0):
            raise ValueError(f"slot seconds must be positive, not {slot_seconds}")
        self._latest: dict[str, CarbonSnapshot] = {}
        self.clock = clock
        self.slot_seconds = slot_seconds
        self.wanted: set[str] = set()  # zones the jobs plan on, for the pollers

    def update(self, snapshot: CarbonSnapshot, zone: str | None = None) -> None:
        if snapshot.slot_seconds is None and self.slot_seconds is not None:
            snapshot = replace(snapshot, slot_seconds=self.slot_seconds)
        self._latest[(zone or _DEFAULT).lower()] = snapshot

    def get(self, zone: str | None = None) -> CarbonSnapshot | None:
        """The snapshot for ``zone``; a job without a zone gets the default one."""
        if zone:
            self.wanted.add(zone)
        return self._latest.get((zone or _DEFAULT).lower())

    def ages(self) -> dict[str, float]:
        """Seconds since each zone's last update (for the health endpoint)."""
        now = self.clock()
        return {zone or "default": round(now - s.received, 1) for zone, s in self._latest.items()}


_MAX_G_PER_KWH = 10_000.0  # no grid comes near; beyond it a value is a unit mistake


def _number(value: Any, what: str) -> float:
    # A JSON number, nothing coerced: `true` is not 1 g/kWh, nor "5" five.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number (gCO2eq/kWh), got {value!r:.40}")
    number = float(value)
    if not (math.isfinite(number) and 0 <= number <= _MAX_G_PER_KWH):
        raise ValueError(f"{what} must be a finite number in 0..10000 gCO2eq/kWh, got {value!r}")
    return number


def snapshot_from_push(body: Any, received: float) -> tuple[CarbonSnapshot, str | None]:
    """A snapshot (and its zone, if named) from the carbon service's pushed body.

    Raises:
        ValueError: if the body is not the reference shape, saying what is wrong.
    """
    if not isinstance(body, dict) or "carbon_intensity" not in body:
        raise ValueError(
            'expected the carbon service\'s body {"carbon_intensity": ..., "prediction": [...]}'
        )
    intensity = _number(body["carbon_intensity"], "carbon_intensity")
    prediction = body.get("prediction") or []
    if not isinstance(prediction, list):
        raise ValueError("prediction must be a list of gCO2eq/kWh per slot")
    forecast = tuple(_number(v, "prediction[]") for v in prediction)
    zone = body.get("zone")
    source = str(body.get("source") or "carbon-service push")
    snapshot = CarbonSnapshot(intensity, forecast, received, source=source)
    return snapshot, str(zone) if zone else None


def webhook_app(board: CarbonBoard, token: str | None = None) -> web.Application:
    """The webhook the carbon service pushes to: ``POST /`` (also ``/carbon``), and
    ``GET /healthz``.

    With a ``token``, a push needs it (``Authorization: Bearer``) or its push key (in the
    ``key`` query parameter of the address the operator registers, or as bearer).
    """

    async def push(request: web.Request) -> web.Response:
        if not push_authorized(
            request.headers.get("Authorization"), request.query.get(PUSH_KEY_PARAM), token
        ):
            detail = "a push needs the operator's token or its push key (?key=... in the address)"
            return web.json_response(
                {"detail": detail}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        try:
            body = await request.json()
            snapshot, zone = snapshot_from_push(body, board.clock())
        except ValueError as exc:  # includes malformed JSON
            return web.json_response({"detail": str(exc)}, status=422)
        board.update(snapshot, zone)
        board.update(snapshot)  # the service's zone is the default for jobs without one
        log.info(
            "carbon push: %.1f g/kWh, %d-slot prediction",
            snapshot.intensity,
            len(snapshot.forecast),
        )
        return web.json_response({"ok": True})

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "carbon_age_s": board.ages()})

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/", push)
    app.router.add_post("/carbon", push)
    app.router.add_get("/healthz", health)
    return app


async def subscribe(
    client: httpx.AsyncClient, service_url: str, address: str, token: str | None = None
) -> None:
    """Register ``address`` for pushes with the carbon service (v1 API, else the reference's
    ``POST /``), with the carbon service's ``token`` when it has one.

    Raises:
        httpx.HTTPError: if the service cannot be reached or refuses.
    """
    body = {"app_name": "carbonscaler-operator", "address": address}
    base = service_url.rstrip("/")
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    response = await client.post(f"{base}/v1/subscriptions", json=body, headers=headers)
    if response.status_code == 404:
        response = await client.post(f"{base}/", json=body, headers=headers)
    response.raise_for_status()


class ServicePoller:
    """Polls a carbon service's ``/v1/intensity/current`` and ``/v1/intensity/forecast``.

    Args:
        client: the HTTP client (with its timeout).
        url: the service's base URL.
        horizon: forecast slots to ask for.
    """

    def __init__(self, client: httpx.AsyncClient, url: str, horizon: int = 96) -> None:
        self.client = client
        self.url = url.rstrip("/")
        self.horizon = horizon

    async def fetch(self, zone: str | None, received: float) -> CarbonSnapshot:
        """One snapshot.

        Raises:
            httpx.HTTPError, ValueError: if the service fails or answers nonsense.
        """
        params: dict[str, str | int] = {} if zone is None else {"zone": zone}
        current = await self.client.get(f"{self.url}/v1/intensity/current", params=params)
        current.raise_for_status()
        forecast = await self.client.get(
            f"{self.url}/v1/intensity/forecast", params={**params, "horizon": self.horizon}
        )
        forecast.raise_for_status()
        values = forecast.json().get("values_g_per_kwh") or []
        return CarbonSnapshot(
            _number(current.json()["value_g_per_kwh"], "value_g_per_kwh"),
            tuple(_number(v, "values_g_per_kwh[]") for v in values),
            received,
            source=f"carbon-service {self.url}",
        )


class ProviderPoller:
    """Polls a carbon provider (trace replay, Electricity Maps, WattTime, UK) directly."""

    def __init__(self, provider: CarbonProvider, horizon: int = 96) -> None:
        self.provider = provider
        self.horizon = horizon

    async def fetch(self, zone: str | None, received: float) -> CarbonSnapshot:
        """One snapshot (the provider is called in a worker thread).

        Raises:
            ProviderError: if the provider fails.
        """

        def read() -> CarbonSnapshot:
            current = self.provider.current(zone)
            try:
                values = tuple(self.provider.forecast(self.horizon, zone).values_g_per_kwh)
            except ProviderError as exc:
                log.warning(
                    "no forecast from %s (%s); planning on the current value",
                    self.provider.name,
                    exc,
                )
                values = (current.value_g_per_kwh,)
            return CarbonSnapshot(
                current.value_g_per_kwh, values, received, source=self.provider.name
            )

        return await asyncio.to_thread(read)


Poller = ServicePoller | ProviderPoller


async def poll_forever(poller: Poller, board: CarbonBoard, interval_s: float) -> None:
    """Refresh the default zone and every zone a job asked for, every ``interval_s``; a
    failure is logged and the jobs carry on with what they last had."""
    while True:
        for zone in [None, *sorted(board.wanted)]:
            try:
                board.update(await poller.fetch(zone, board.clock()), zone)
            except (httpx.HTTPError, ProviderError, ValueError, KeyError) as exc:
                log.warning("carbon poll for zone %s failed: %s", zone or "default", exc)
        await asyncio.sleep(interval_s)
