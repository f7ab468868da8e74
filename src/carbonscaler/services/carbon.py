"""The carbon service: carbon intensity and forecasts, pushed to subscribers and served.

A thin FastAPI shell over :mod:`carbonscaler.providers` and :mod:`carbonscaler.forecast`.

Compatible with the reference service: ``POST /`` with ``{"app_name", "address"}``
registers a subscriber and answers ``{"carbon_intensity", "carbon_percentile",
"prediction"}`` (plus ``zone``, ``timestamp``, ``stale`` and ``source``, which its clients
ignore); every update interval the same body is POSTed to every active subscriber;
``POST /set_index`` with form field ``idx`` moves a trace replay and pushes at once.

Beside it, a versioned API under ``/v1`` (current intensity, forecasts, zones,
subscriptions), ``/healthz`` and Prometheus ``/metrics`` on a registry of its own per app.

How updates work: a background task started in the app's lifespan computes one snapshot
per interval (live provider calls run in a worker thread, since providers are synchronous)
and hands it to the push worker, which POSTs it to all subscribers concurrently on an event
loop of its own thread (so a large fan-out does not hold up API requests), each push with
its own timeout and retries with backoff. The update loop does not wait for fan-outs, so a
slow or dead subscriber delays nobody; while one subscriber's push is still in flight it is
skipped by the next fan-out rather than piled up. Outcomes are stored once per interval; a
subscriber whose pushes fail ``max_failures`` updates in a row is marked inactive (visible
in the API) until it registers again.

A trace replay advances one slot per update, as the reference does, unless
``seconds_per_slot`` sets its own pace; its position is saved so that a restarted service
resumes where it was.
"""

# No `from __future__ import annotations` here: FastAPI must evaluate the route signatures,
# some of which close over values known only when the app is built (e.g. the trace length).

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator

from carbonscaler.forecast import (
    Forecaster,
    ForecastError,
    ForecastModel,
    ForecastModelName,
    carbon_percentile,
    forecaster_from_spec,
    make_forecaster,
)
from carbonscaler.providers.base import (
    CarbonProvider,
    Forecast,
    ForecastUnavailable,
    IntensityReading,
    ProviderError,
    ProviderRequestError,
    UnknownZoneError,
)
from carbonscaler.providers.replay import ManualClock, ReplayClock, TraceReplay
from carbonscaler.services._models import ErrorOut
from carbonscaler.services._push import PushResult, PushWorker
from carbonscaler.services._store import PushOutcome, Subscriber, SubscriberStore
from carbonscaler.trace import CarbonTrace, load_trace

__all__ = [
    "ADDRESS_PATTERN",
    "CarbonService",
    "CarbonServiceConfig",
    "Snapshot",
    "create_app",
]

log = logging.getLogger("carbonscaler.carbon_service")

_PORT = (  # 1..65535 without leading zeros, so every address the pattern admits is valid
    r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
)
ADDRESS_PATTERN = (
    r"^https?://(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])"
    rf"(?::{_PORT})?(?:[/?#][\x21-\x7E]*)?$"
)
"""Subscriber addresses: an http(s) URL with a host, an optional valid port, no spaces."""
_ADDRESS = re.compile(ADDRESS_PATTERN)

MAX_HORIZON_SLOTS = 2016
"""Longest forecast the API serves (a week of 5-minute slots)."""

ForecasterName = ForecastModelName
"""The forecast models of :class:`~carbonscaler.forecast.ForecastModel` (aliases such as
``real`` accepted), as a type for the schema."""

_MAX_ID = 2**63 - 1  # SQLite INTEGER range
_REPLAY_STATE = "replay_index"


@dataclass
class CarbonServiceConfig:
    """Everything the carbon service needs; the CLI builds one from its options.

    Args:
        db_path: SQLite file for subscribers and the replay position (created if missing).
        carbon_path: Trace file to replay (any format :func:`~carbonscaler.trace.load_trace`
            reads). Ignored when ``provider`` is given.
        trace: A trace already loaded (e.g. from the offline dataset) to replay instead of
            ``carbon_path``. Ignored when ``provider`` is given.
        provider: A ready provider (live chain, or a replay) instead of ``carbon_path``.
        zone: Zone to select in a multi-zone trace file.
        signal: Trace signal (``direct``, ``lca``, ``avg``).
        start: First replayed slot (ISO 8601); default the trace start, or the saved
            position after a restart.
        update_interval_s: Seconds between updates (pushes).
        prediction_window: Slots in each pushed prediction (the current slot included).
        percentile_window: Past slots the current value's percentile is computed over.
        prediction_method: ``REAL``, ``PRED`` or a forecast model, e.g. ``gaussian:10`` (the
            noisy models' error in percent here: ``gaussian:10`` is 10 %).
        seconds_per_slot: Replay pace; None means one slot per update (the reference).
        slot_minutes: Slot length for live providers (a replay uses its trace's step).
        token: Bearer token required by admin endpoints; None leaves them open.
        push_timeout_s: Timeout of one push attempt.
        push_retries: Retries of a failed push within one update.
        push_backoff_s: First retry delay; doubles per retry.
        max_failures: Consecutive failed updates after which a subscriber goes inactive.
        push_concurrency: Pushes in flight at once. 64 measured best here: more adds nothing
            to a fan-out on loopback but starves the API thread of the GIL.
        allowed_hosts: If set, subscriber addresses must point to one of these hosts.
        forecast_seed: Seed of the noisy forecasters.

    Raises:
        ValueError: If a number is out of range, or neither a trace nor a provider is given.
    """

    db_path: Path
    carbon_path: Path | None = None
    trace: CarbonTrace | None = None
    provider: CarbonProvider | None = None
    zone: str | None = None
    signal: str = "direct"
    start: str | None = None
    update_interval_s: float = 30.0
    prediction_window: int = 24
    percentile_window: int = 24
    prediction_method: str = "REAL"
    seconds_per_slot: float | None = None
    slot_minutes: int = 60
    token: str | None = None
    push_timeout_s: float = 5.0
    push_retries: int = 2
    push_backoff_s: float = 0.2
    max_failures: int = 5
    push_concurrency: int = 64
    allowed_hosts: frozenset[str] | None = None
    forecast_seed: int = 0

    def __post_init__(self) -> None:
        if self.provider is None and self.carbon_path is None and self.trace is None:
            raise ValueError("give a trace to replay (carbon_path) or a live provider")
        positive = {
            "update interval": self.update_interval_s,
            "push timeout": self.push_timeout_s,
            "seconds per slot": 1.0 if self.seconds_per_slot is None else self.seconds_per_slot,
        }
        for name, number in positive.items():
            if not (math.isfinite(number) and number > 0):
                raise ValueError(f"{name} must be a positive number of seconds, not {number}")
        at_least_one = {
            "prediction window": self.prediction_window,
            "percentile window": self.percentile_window,
            "slot minutes": self.slot_minutes,
            "push concurrency": self.push_concurrency,
            "max failures": self.max_failures,
            "push retries + 1": self.push_retries + 1,
        }
        for name, count in at_least_one.items():
            if count < 1:
                raise ValueError(f"{name} must be at least 1, not {count}")
        if self.prediction_window > MAX_HORIZON_SLOTS:
            raise ValueError(f"prediction window must be <= {MAX_HORIZON_SLOTS} slots")
        if self.token is not None and not self.token.strip():
            raise ValueError("the admin token must not be empty")


@dataclass(frozen=True)
class Snapshot:
    """One update: what every subscriber receives."""

    reading: IntensityReading
    percentile: float | None
    prediction: Forecast | None
    stale: bool
    body: dict[str, Any]
    body_json: bytes
    current_json: bytes
    """``GET /v1/intensity/current`` for the default zone, serialised once per update."""
    computed_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class ServiceMetrics:
    """Prometheus metrics on a registry of their own (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.intensity = Gauge(
            "carbonscaler_carbon_intensity_g_per_kwh",
            "Current carbon intensity (gCO2eq/kWh)",
            ["zone"],
            registry=r,
        )
        self.stale = Gauge(
            "carbonscaler_carbon_data_stale",
            "1 when the current carbon data is stale (old or from a fallback)",
            ["zone"],
            registry=r,
        )
        self.updates = Counter("carbonscaler_updates", "Updates computed", registry=r)
        self.update_errors = Counter(
            "carbonscaler_update_errors", "Updates without carbon data", registry=r
        )
        self.pushes_sent = Counter(
            "carbonscaler_pushes_sent", "Push attempts sent to subscribers", registry=r
        )
        self.push_failures = Counter(
            "carbonscaler_push_failures", "Push attempts that failed", registry=r
        )
        self.subscribers = Gauge(
            "carbonscaler_subscribers", "Subscribers by state", ["state"], registry=r
        )
        self.fanout = Histogram(
            "carbonscaler_push_fanout_seconds",
            "Time to push one update to every subscriber",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
            registry=r,
        )


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _slot_floor(t: datetime, slot_s: int) -> datetime:
    epoch = int(t.timestamp())
    return datetime.fromtimestamp(epoch - epoch % slot_s, UTC)


class CarbonService:
    """The service's state and update loop, independent of HTTP routing.

    Args:
        config: The configuration.

    Raises:
        TraceError: If the trace cannot be read.
        ForecastError: If the prediction method is unknown.
        StoreError: If the database cannot be opened.
        ProviderError: If the replay start is outside the trace.
    """

    def __init__(self, config: CarbonServiceConfig) -> None:
        self.config = config
        self._owns_provider = config.provider is None
        self.provider = config.provider if config.provider is not None else self._replay()
        self.replay = self.provider if isinstance(self.provider, TraceReplay) else None
        self.slot_s = self.replay.step_s if self.replay else config.slot_minutes * 60
        self.forecaster: Forecaster = forecaster_from_spec(
            config.prediction_method, seed=config.forecast_seed
        )
        self.store = SubscriberStore(config.db_path)
        self.metrics = ServiceMetrics()
        self.snapshot: Snapshot | None = None
        self.last_error: str | None = None
        self.last_fanout_s: float | None = None
        self.updates = 0
        self._resume()
        self._update_subscriber_gauge()
        self._pusher: PushWorker | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._fanouts: set[asyncio.Task[None]] = set()
        # Touched by the push worker thread as pushes finish, and by the event loop.
        self._lock = threading.Lock()
        self._in_flight: set[int] = set()
        self._outcomes: list[PushOutcome] = []
        self._wake = asyncio.Event()

    def _replay(self) -> TraceReplay:
        cfg = self.config
        if cfg.trace is not None:
            trace = cfg.trace
        else:
            assert cfg.carbon_path is not None  # checked by the config
            trace = load_trace(cfg.carbon_path, signal=cfg.signal, zone=cfg.zone)
        start = cfg.start or trace.start.to_pydatetime()
        slot_s = trace.step.total_seconds()
        if cfg.seconds_per_slot is None:
            clock: ManualClock | ReplayClock = ManualClock(start)
        else:
            clock = ReplayClock.per_slot(
                start, slot_s=slot_s, seconds_per_slot=cfg.seconds_per_slot
            )
        return TraceReplay(trace, start=start, clock=clock, wrap=True)

    def _resume(self) -> None:
        if self.replay is None or self.config.start is not None:
            return
        saved = self.store.get_state(_REPLAY_STATE)
        if saved is not None and saved.isdigit() and int(saved) < len(self.replay):
            self.replay.seek(int(saved))
            log.info("resuming the replay at slot %s", saved)

    @property
    def stepped(self) -> bool:
        """Whether the replay advances one slot per update (the reference behaviour)."""
        return self.replay is not None and isinstance(self.replay.clock, ManualClock)

    # -- snapshots ----------------------------------------------------------------------

    def compute_snapshot(self) -> Snapshot:
        """Current value, prediction and percentile from the provider (blocking).

        Raises:
            ProviderError: If the provider has no current value.
        """
        cfg = self.config
        reading = self.provider.current()
        stale = reading.stale
        prediction: Forecast | None
        try:
            prediction = self.forecaster.predict(
                self.provider, cfg.prediction_window, slot_s=self.slot_s
            )
            values = list(prediction.values_g_per_kwh)
            stale = stale or prediction.stale
        except (ProviderError, ForecastError) as exc:
            log.warning("no prediction this update: %s", exc)
            prediction, values, stale = None, [reading.value_g_per_kwh], True
        percentile = self._percentile(reading)
        body = {
            "carbon_intensity": reading.value_g_per_kwh,
            "carbon_percentile": percentile,
            "prediction": values,
            "zone": reading.zone,
            "timestamp": _ts(reading.timestamp),
            "stale": stale,
            "source": reading.source,
        }
        return Snapshot(
            reading=reading,
            percentile=percentile,
            prediction=prediction,
            stale=stale,
            body=body,
            body_json=json.dumps(body, separators=(",", ":")).encode(),
            current_json=json.dumps({**reading.to_json(), "percentile": percentile}).encode(),
        )

    def _percentile(self, reading: IntensityReading) -> float | None:
        n = self.config.percentile_window
        step = timedelta(seconds=self.slot_s)
        slot0 = _slot_floor(reading.timestamp, self.slot_s)
        try:
            past = self.provider.history(slot0 - n * step, slot0).to_slots(self.slot_s)
        except (ProviderError, ValueError) as exc:
            log.warning("no percentile this update: %s", exc)
            return None
        return carbon_percentile(past.window(slot0 - n * step, n), reading.value_g_per_kwh)

    async def call_provider(self, func: Callable[[], Any]) -> Any:
        """Run a provider call: inline for a replay (memory only), else in a worker thread."""
        if self.replay is not None:
            return func()
        return await asyncio.to_thread(func)

    async def refresh(self) -> bool:
        """Compute a new snapshot; False (and the error kept) if the provider failed."""
        try:
            snapshot: Snapshot = await self.call_provider(self.compute_snapshot)
        except ProviderError as exc:
            self.last_error = str(exc)
            self.metrics.update_errors.inc()
            log.error("update failed: %s", exc)
            return False
        self.snapshot, self.last_error = snapshot, None
        self.updates += 1
        zone = snapshot.reading.zone
        self.metrics.intensity.labels(zone).set(snapshot.reading.value_g_per_kwh)
        self.metrics.stale.labels(zone).set(1 if snapshot.stale else 0)
        self.metrics.updates.inc()
        return True

    # -- the loop and the pushes ---------------------------------------------------------

    async def start(self) -> None:
        """Open the push client, compute the first snapshot, start the update loop."""
        cfg = self.config
        self._pusher = PushWorker(
            concurrency=cfg.push_concurrency,
            timeout_s=cfg.push_timeout_s,
            retries=cfg.push_retries,
            backoff_s=cfg.push_backoff_s,
        )
        self._loop_task = asyncio.create_task(self._run(), name="carbon-updates")

    async def stop(self) -> None:
        """Stop the loop and in-flight pushes, close the client, the store and the provider."""
        tasks = [t for t in (self._loop_task, *self._fanouts) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._pusher is not None:
            await asyncio.to_thread(self._pusher.close)
        self.store.close()
        if self._owns_provider:
            self.provider.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.update_interval_s
        next_at = loop.time()
        while True:
            await self.flush_outcomes()
            if await self.refresh():
                assert self.snapshot is not None
                self.start_fanout(self.snapshot)
            next_at += interval
            # Fell behind (a slow provider): carry on from now rather than burst to catch up.
            next_at = max(next_at, loop.time())
            woken = await self._sleep_until(next_at)
            if self.replay is not None:
                if self.stepped and not woken:
                    assert isinstance(self.replay.clock, ManualClock)
                    self.replay.clock.advance(timedelta(seconds=self.replay.step_s))
                self.store.set_state(_REPLAY_STATE, str(self.replay.index))

    async def _sleep_until(self, deadline: float) -> bool:
        """Sleep until ``deadline`` (loop time); True if woken early by :meth:`set_index`."""
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            return False
        self._wake.clear()
        return True

    def set_index(self, index: int) -> None:
        """Move the replay to slot ``index`` and push it at once.

        Raises:
            ProviderRequestError: If there is no replay or ``index`` is outside it.
        """
        if self.replay is None:
            raise ProviderRequestError("carbon-service", "set_index needs a trace replay")
        self.replay.seek(index)
        self.store.set_state(_REPLAY_STATE, str(index))
        self._wake.set()

    def start_fanout(self, snapshot: Snapshot) -> asyncio.Task[None] | None:
        """Push ``snapshot`` to every active subscriber not still busy with an earlier push."""
        with self._lock:
            targets = [t for t in self.store.targets() if t[0] not in self._in_flight]
            self._in_flight.update(sub_id for sub_id, _ in targets)
        if not targets:
            return None
        task = asyncio.create_task(self._fanout(snapshot.body_json, targets))
        self._fanouts.add(task)
        task.add_done_callback(self._fanouts.discard)
        return task

    async def _fanout(self, body: bytes, targets: list[tuple[int, str]]) -> None:
        assert self._pusher is not None
        started = time.perf_counter()
        try:
            await self._pusher.fan_out(body, targets, self._push_done)
        finally:  # cancelled: nothing is in flight any more
            with self._lock:
                self._in_flight.difference_update(sub_id for sub_id, _ in targets)
        self.last_fanout_s = time.perf_counter() - started
        self.metrics.fanout.observe(self.last_fanout_s)
        await self.flush_outcomes()

    def _push_done(self, result: PushResult) -> None:
        """One subscriber's push finished (called in the push worker thread)."""
        self.metrics.pushes_sent.inc(result.attempts)
        self.metrics.push_failures.inc(result.attempts - result.ok)
        with self._lock:
            # Free for the next fan-out now, not when the slowest push of this one ends.
            self._in_flight.discard(result.subscriber_id)
            self._outcomes.append(PushOutcome(result.subscriber_id, result.ok, result.error))

    async def flush_outcomes(self) -> None:
        """Store the push outcomes gathered so far in one transaction.

        Called at every tick and at the end of every fan-out, so a slow subscriber delays
        the bookkeeping of the others by one interval at most.
        """
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        if not outcomes:
            return
        dropped = await asyncio.to_thread(
            self.store.record, outcomes, max_failures=self.config.max_failures
        )
        for sub_id in dropped:
            log.warning(
                "subscriber %d marked inactive after %d failed updates",
                sub_id,
                self.config.max_failures,
            )
        self._update_subscriber_gauge()

    def _update_subscriber_gauge(self) -> None:
        active, inactive = self.store.counts()
        self.metrics.subscribers.labels("active").set(active)
        self.metrics.subscribers.labels("inactive").set(inactive)

    # -- requests ------------------------------------------------------------------------

    def check_address(self, address: str) -> None:
        """Enforce ``allowed_hosts``.

        Raises:
            ValueError: If the address's host is not allowed.
        """
        allowed = self.config.allowed_hosts
        if allowed is None:
            return
        host = urlsplit(address).hostname
        if host not in allowed:
            raise ValueError(
                f"host {host!r} is not allowed here; subscribers must be on"
                f" {', '.join(sorted(allowed))}"
            )

    def register(self, app_name: str, address: str) -> tuple[Subscriber, str | None]:
        """Add or reactivate a subscriber (see :meth:`SubscriberStore.register`)."""
        result = self.store.register(app_name, address)
        self._update_subscriber_gauge()
        return result

    def delete(self, subscriber_id: int) -> bool:
        """Remove a subscriber; False if unknown."""
        found = self.store.delete(subscriber_id)
        self._update_subscriber_gauge()
        return found


# -- HTTP models ---------------------------------------------------------------------------


class Registration(BaseModel):
    """A subscriber: the reference's registration body."""

    model_config = ConfigDict(extra="ignore")

    app_name: str = Field(min_length=1, max_length=256, description="Name shown in listings")
    address: str = Field(
        max_length=2048,
        description="http(s) URL the updates are POSTed to",
        examples=["http://127.0.0.1:8899/"],
        # Checked by the validator below with Python's re, as the schema's readers do.
        json_schema_extra={"pattern": ADDRESS_PATTERN},
    )

    @field_validator("app_name")
    @classmethod
    def _encodable(cls, value: str) -> str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("app_name must be valid Unicode text") from None
        return value

    @field_validator("address")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not _ADDRESS.fullmatch(value):
            raise ValueError(
                "address must be an http:// or https:// URL with a host, an optional port"
                " (1-65535) and no spaces, e.g. http://127.0.0.1:8899/"
            )
        return value


class CarbonStatus(BaseModel):
    """The body pushed to subscribers and returned on registration."""

    carbon_intensity: float = Field(description="Current gCO2eq/kWh")
    carbon_percentile: float | None = Field(
        description="Share (0..1) of the past percentile window at or below the current value"
    )
    prediction: list[float] = Field(description="gCO2eq/kWh per slot from the current slot")
    zone: str
    timestamp: datetime = Field(description="Start of the current slot (UTC)")
    stale: bool = Field(description="True when planning on old or fallback data")
    source: str


class IntensityOut(BaseModel):
    """A current value."""

    zone: str
    value_g_per_kwh: float
    timestamp: datetime
    source: str
    stale: bool
    percentile: float | None = None


class ForecastOut(BaseModel):
    """A forecast from the current slot."""

    zone: str
    start: datetime
    step_s: int
    values_g_per_kwh: list[float]
    method: str
    source: str
    stale: bool


class ZonesOut(BaseModel):
    """Zones the provider serves."""

    zones: list[str]
    default: str


class SubscriptionOut(BaseModel):
    """A subscriber as the API shows it."""

    id: int
    app_name: str
    address: str
    active: bool
    failures: int
    pushes_ok: int
    last_error: str | None
    created_at: str
    last_success_at: str | None
    last_attempt_at: str | None


class SubscriptionCreated(SubscriptionOut):
    """A new subscriber, with the key that lets its owner delete it (shown only once)."""

    key: str | None = Field(
        description="Bearer token for DELETE of this subscription; null if it existed"
    )


class CarbonHealthOut(BaseModel):
    """Liveness and data freshness."""

    status: Literal["ok", "degraded"]
    provider: str
    zone: str
    stale: bool
    last_update: datetime | None
    last_error: str | None
    updates: int
    subscribers_active: int
    subscribers_inactive: int
    replay_index: int | None


def _subscription(sub: Subscriber) -> SubscriptionOut:
    return SubscriptionOut(**sub.__dict__)


_ERR = {"model": ErrorOut}
_BAD_BODY = {"model": ErrorOut, "description": "The body could not be parsed at all"}


# -- the app -------------------------------------------------------------------------------


def create_app(config: CarbonServiceConfig) -> FastAPI:
    """The carbon service as a FastAPI app; updates run while the app's lifespan runs.

    Raises:
        ValueError, TraceError, ForecastError, StoreError, ProviderError: On a bad config
            (see :class:`CarbonService`).
    """
    service = CarbonService(config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.refresh()  # answer requests from the first moment
        # The trace, the app and the libraries are loaded for good: keep them out of the
        # cyclic GC, whose full passes over them would stall requests for many ms.
        gc.freeze()
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="carbonscaler carbon service",
        version="1",
        description=__doc__,
        lifespan=lifespan,
    )
    app.state.service = service
    bearer = HTTPBearer(auto_error=False, description="The admin token (--token)")

    @app.exception_handler(ProviderError)
    async def _provider_error(_: Request, exc: ProviderError) -> JSONResponse:
        if isinstance(exc, UnknownZoneError):
            status = 404
        elif isinstance(exc, ProviderRequestError | ForecastUnavailable):
            status = 422  # the request asks for something this provider cannot give
        else:
            status = 503
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(ForecastError)
    async def _forecast_error(_: Request, exc: ForecastError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def _snapshot() -> Snapshot:
        if service.snapshot is None:
            raise HTTPException(
                503, f"no carbon data yet: {service.last_error or 'first update pending'}"
            )
        return service.snapshot

    def _admin_ok(credentials: HTTPAuthorizationCredentials | None) -> bool:
        token = config.token
        if token is None:
            return True
        given = credentials.credentials if credentials is not None else ""
        return hmac.compare_digest(given.encode(), token.encode())

    def _unauthorized() -> HTTPException:
        return HTTPException(
            401,
            "this endpoint needs the admin token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )

    admin_deps: list[Any] = []
    if config.token is not None:

        async def require_admin(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> None:
            if not _admin_ok(credentials):
                raise _unauthorized()

        admin_deps = [Depends(require_admin)]

    # -- the reference's endpoints

    @app.post(
        "/",
        response_model=CarbonStatus,
        tags=["reference"],
        summary="Register a subscriber (reference-compatible)",
        responses={400: _BAD_BODY, 422: {}, 503: _ERR},
    )
    async def register_reference(body: Registration) -> dict[str, Any]:
        snapshot = _snapshot()
        _register(body)
        return snapshot.body

    def _register(body: Registration) -> tuple[Subscriber, str | None]:
        try:
            service.check_address(body.address)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return service.register(body.app_name, body.address)

    if service.replay is not None:
        last = len(service.replay) - 1

        @app.post(
            "/set_index",
            tags=["reference"],
            summary="Move the trace replay to a slot and push it (reference-compatible)",
            response_class=PlainTextResponse,
            responses={
                200: {"content": {"text/plain": {}}},
                400: _BAD_BODY,
                401: _ERR,
                422: {},
            },
            dependencies=admin_deps,
        )
        async def set_index(idx: Annotated[int, Form(ge=0, le=last)]) -> str:
            service.set_index(idx)
            return f"Carbon trace index is set to {idx} successfully"

    # -- v1

    Zone = Annotated[
        str | None, Query(min_length=1, max_length=64, description="Default: the service's")
    ]

    @app.get(
        "/v1/intensity/current",
        response_model=IntensityOut,
        tags=["v1"],
        responses={404: _ERR, 503: _ERR},
    )
    async def current(zone: Zone = None) -> Response:
        snapshot = _snapshot()
        if zone is None or zone.lower() == snapshot.reading.zone.lower():
            # The hot path: bytes prepared at the update, no per-request serialisation.
            return Response(snapshot.current_json, media_type="application/json")
        reading = await service.call_provider(lambda: service.provider.current(zone))
        out = IntensityOut(**{**reading.to_json(), "percentile": None})
        return Response(out.model_dump_json(), media_type="application/json")

    @app.get(
        "/v1/intensity/forecast",
        response_model=ForecastOut,
        tags=["v1"],
        responses={404: _ERR, 422: _ERR, 503: _ERR},
    )
    async def forecast(
        horizon: Annotated[int, Query(ge=1, le=MAX_HORIZON_SLOTS, description="Slots")] = 24,
        zone: Zone = None,
        method: Annotated[
            ForecasterName | None,
            Query(description="Forecaster; default the service's prediction method"),
        ] = None,
    ) -> ForecastOut:
        forecaster = (
            service.forecaster
            if method is None
            else make_forecaster(method, **_method_options(method, config.forecast_seed))
        )
        result: Forecast = await service.call_provider(
            lambda: forecaster.predict(service.provider, horizon, zone=zone, slot_s=service.slot_s)
        )
        return ForecastOut(
            zone=result.zone,
            start=result.start,
            step_s=result.step_s,
            values_g_per_kwh=list(result.values_g_per_kwh),
            method=forecaster.name,
            source=result.source,
            stale=result.stale,
        )

    @app.get("/v1/zones", response_model=ZonesOut, tags=["v1"], responses={503: _ERR})
    async def zones() -> ZonesOut:
        found: list[str] = await service.call_provider(service.provider.zones)
        return ZonesOut(zones=found, default=service.provider.zone)

    @app.post(
        "/v1/subscriptions",
        response_model=SubscriptionCreated,
        status_code=201,
        tags=["v1"],
        responses={400: _BAD_BODY, 422: {}},
    )
    async def create_subscription(body: Registration) -> SubscriptionCreated:
        subscriber, key = _register(body)
        return SubscriptionCreated(**subscriber.__dict__, key=key)

    @app.get("/v1/subscriptions", response_model=list[SubscriptionOut], tags=["v1"])
    async def list_subscriptions() -> list[SubscriptionOut]:
        return [_subscription(s) for s in service.store.subscribers()]

    SubscriptionId = Annotated[int, PathParam(ge=1, le=_MAX_ID)]

    @app.get(
        "/v1/subscriptions/{subscription_id}",
        response_model=SubscriptionOut,
        tags=["v1"],
        responses={404: _ERR},
    )
    async def get_subscription(subscription_id: SubscriptionId) -> SubscriptionOut:
        subscriber = service.store.get(subscription_id)
        if subscriber is None:
            raise HTTPException(404, f"no subscription {subscription_id}")
        return _subscription(subscriber)

    delete_responses: dict[int | str, dict[str, Any]] = {204: {}, 404: _ERR}
    delete_deps: list[Any] = []
    if config.token is not None:
        delete_responses[401] = _ERR

        async def may_delete(
            subscription_id: SubscriptionId,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> None:
            own = credentials is not None and service.store.check_key(
                subscription_id, credentials.credentials
            )
            if not own and not _admin_ok(credentials):
                raise _unauthorized()

        delete_deps = [Depends(may_delete)]

    @app.delete(
        "/v1/subscriptions/{subscription_id}",
        status_code=204,
        tags=["v1"],
        summary="Delete a subscription (its own key, or the admin token when one is set)",
        responses=delete_responses,
        response_class=Response,
        dependencies=delete_deps,
    )
    async def delete_subscription(subscription_id: SubscriptionId) -> Response:
        if not service.delete(subscription_id):
            raise HTTPException(404, f"no subscription {subscription_id}")
        return Response(status_code=204)

    # -- operations

    @app.get("/healthz", response_model=CarbonHealthOut, tags=["operations"])
    async def healthz() -> CarbonHealthOut:
        snapshot = service.snapshot
        active, inactive = service.store.counts()
        stale = snapshot is None or snapshot.stale
        return CarbonHealthOut(
            status="degraded" if stale else "ok",
            provider=service.provider.name,
            zone=service.provider.zone,
            stale=stale,
            last_update=None if snapshot is None else snapshot.computed_at,
            last_error=service.last_error,
            updates=service.updates,
            subscribers_active=active,
            subscribers_inactive=inactive,
            replay_index=None if service.replay is None else service.replay.index,
        )

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _method_options(method: ForecastModel, seed: int) -> dict[str, Any]:
    return {"seed": seed} if method.is_noisy else {}
