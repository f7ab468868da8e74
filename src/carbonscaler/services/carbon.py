"""The carbon service: carbon intensity and forecasts, pushed to subscribers and served.

A thin FastAPI shell over :mod:`carbonscaler.providers` and :mod:`carbonscaler.forecast`.

Compatible with the reference service: ``POST /`` with ``{"app_name", "address"}``
registers a subscriber and answers ``{"carbon_intensity", "carbon_percentile",
"prediction"}`` (plus ``zone``, ``timestamp``, ``stale`` and ``source``, which its clients
ignore); every update interval the same body is POSTed to every active subscriber;
``POST /set_index`` with form field ``idx`` moves a trace replay and pushes at once.

Beside it, a versioned API under ``/v1`` (current intensity, forecasts, the best window to
start a fixed-length job, zones, subscriptions), ``/healthz`` and Prometheus ``/metrics`` on a
registry of its own per app.

How updates work: a background task started in the app's lifespan computes one snapshot
per interval (live provider calls run in a worker thread, since providers are synchronous)
and hands it to every subscriber's mailbox (:mod:`carbonscaler.services._delivery`): on an
event loop of its own thread (so a large fan-out does not hold up API requests) each
subscriber gets the newest update, one push at a time, each with its own timeout; an update
not yet sent is replaced by the next (latest value wins), and a failing subscriber backs
off. The update loop waits for nobody, and no push waits for another subscriber's, so a
slow, hanging or dead subscriber costs only itself. Outcomes are stored in batches as they
come; a subscriber whose pushes fail ``max_failures`` times in a row is marked inactive
(persisted, visible in the API) until it registers again.

A trace replay advances one slot per update, as the reference does, unless
``seconds_per_slot`` sets its own pace; its position is saved so that a restarted service
resumes where it was.
"""

# No `from __future__ import annotations` here: FastAPI must evaluate the route signatures,
# some of which close over values known only when the app is built (e.g. the trace length).

import asyncio
import contextlib
import gc
import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import numpy as np
from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
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
from carbonscaler.planner.model import PlanningError
from carbonscaler.planner.window import best_window
from carbonscaler.providers.base import (
    CarbonProvider,
    Forecast,
    ForecastUnavailable,
    IntensityReading,
    ProviderError,
    ProviderRequestError,
    UnknownZoneError,
    iso_utc,
)
from carbonscaler.providers.replay import ManualClock, ReplayClock, TraceReplay
from carbonscaler.security.netguard import DestinationPolicy
from carbonscaler.services._app import service_app
from carbonscaler.services._auth import TokenAuth
from carbonscaler.services._delivery import Deliveries
from carbonscaler.services._models import ErrorOut
from carbonscaler.services._push import PushResult
from carbonscaler.services._store import PushOutcome, Subscriber, SubscriberStore
from carbonscaler.services._validation import HTTP_URL_PATTERN, check_http_url
from carbonscaler.trace import DEFAULT_MAX_GAP, CarbonTrace, load_trace

__all__ = [
    "ADDRESS_PATTERN",
    "CarbonService",
    "CarbonServiceConfig",
    "Snapshot",
    "create_app",
]

log = logging.getLogger("carbonscaler.carbon_service")

ADDRESS_PATTERN = HTTP_URL_PATTERN
"""Subscriber addresses: an http(s) URL with a valid host (name, IPv4, bracketed IPv6), an
optional port 1-65535, no spaces; checked by parsing too (:func:`check_http_url`)."""

MAX_HORIZON_SLOTS = 2016
MAX_WINDOW_H = 8784.0
"""The longest job or look-ahead a best-window question may name (a leap year of hours)."""
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
        max_gap: Longest run of missing values in ``carbon_path`` to interpolate (noted);
            a longer gap is an error. None fills any gap.
        tz: Time zone of ``carbon_path``'s naive timestamps (default UTC, noted).
        start: First replayed slot (ISO 8601); default the trace start, or the saved
            position after a restart.
        update_interval_s: Seconds between updates (pushes).
        prediction_window: Slots in each pushed prediction (the current slot included).
        percentile_window: Past slots the current value's percentile is computed over.
        prediction_method: ``REAL``, ``PRED`` or a forecast model, e.g. ``gaussian:10`` (the
            noisy models' error in percent here: ``gaussian:10`` is 10 %).
        seconds_per_slot: Replay pace; None means one slot per update (the reference).
        slot_minutes: Slot length for live providers (a replay uses its trace's step).
        token: Bearer token required by admin endpoints (``set_index``, listing addresses,
            deleting others' subscriptions) and by registration; None leaves them open.
        push_timeout_s: Timeout of one push (connect, send, response).
        push_backoff_s: Wait after a failed push before the subscriber is tried again (with
            the newest update); doubles per consecutive failure.
        push_max_backoff_s: Longest such wait.
        max_failures: Consecutive failed pushes after which a subscriber goes inactive
            (with the defaults, after about two minutes of failing).
        push_concurrency: Requests being sent (connect, write) at once. A push frees its
            slot once its request is written, so a subscriber that never answers delays
            nobody; 64 measured best here (more adds nothing to a fan-out on loopback but
            starves the API thread of the GIL).
        allowed_hosts: If set, subscriber addresses must point to one of these hosts.
        destinations: Where pushes may go: link-local and cloud-metadata addresses are
            always refused; ``DestinationPolicy(allow=...)`` restricts further
            (``--allow-subscriber-net``). Checked at registration and at every connection,
            which goes to the checked address.
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
    max_gap: int | None = DEFAULT_MAX_GAP
    tz: str | None = None
    start: str | None = None
    update_interval_s: float = 30.0
    prediction_window: int = 24
    percentile_window: int = 24
    prediction_method: str = "REAL"
    seconds_per_slot: float | None = None
    slot_minutes: int = 60
    token: str | None = None
    push_timeout_s: float = 5.0
    push_backoff_s: float = 1.0
    push_max_backoff_s: float = 300.0
    max_failures: int = 8
    push_concurrency: int = 64
    allowed_hosts: frozenset[str] | None = None
    destinations: DestinationPolicy = field(
        default_factory=lambda: DestinationPolicy(what="subscriber address")
    )
    forecast_seed: int = 0

    def __post_init__(self) -> None:
        if self.provider is None and self.carbon_path is None and self.trace is None:
            raise ValueError("give a trace to replay (carbon_path) or a live provider")
        positive = {
            "update interval": self.update_interval_s,
            "push timeout": self.push_timeout_s,
            "push backoff": self.push_backoff_s,
            "push max backoff": self.push_max_backoff_s,
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
    replay_index: int | None = None
    """The replay's slot the update was computed at (None for live providers)."""


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
        self.superseded = Counter(
            "carbonscaler_push_superseded",
            "Updates replaced by a newer one before they went out to a subscriber",
            registry=r,
        )
        self.fanout = Histogram(
            "carbonscaler_push_fanout_seconds",
            "Time for one update to reach (or fail at, or be superseded at) every subscriber",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
            registry=r,
        )


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
        self._deliveries: Deliveries | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Touched by the delivery thread as pushes finish, and by the event loop.
        self._lock = threading.Lock()
        self._outcomes: list[PushOutcome] = []
        self._outcomes_ready = asyncio.Event()
        self._recordings: set[asyncio.Future[list[int]]] = set()
        self._wake = asyncio.Event()

    def _replay(self) -> TraceReplay:
        cfg = self.config
        if cfg.trace is not None:
            trace = cfg.trace
        else:
            assert cfg.carbon_path is not None  # checked by the config
            trace = load_trace(
                cfg.carbon_path, signal=cfg.signal, zone=cfg.zone, max_gap=cfg.max_gap, tz=cfg.tz
            )
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
            "timestamp": iso_utc(reading.timestamp),
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
            current_json=self._current_json(reading, percentile),
            replay_index=None if self.replay is None else self.replay.index,
        )

    @staticmethod
    def _current_json(reading: IntensityReading, percentile: float | None) -> bytes:
        return json.dumps({**reading.to_json(), "percentile": percentile}).encode()

    def current_json(self, snapshot: Snapshot) -> bytes:
        """``GET /v1/intensity/current`` for the default zone: the update's bytes, unless a
        replay running at its own pace (``--speed``) has moved on since — then its slot now, so
        that the current value, the forecast and the replay index always agree."""
        if self.replay is None:
            return snapshot.current_json
        try:
            if snapshot.replay_index == self.replay.index:
                return snapshot.current_json
            reading = self.provider.current()
        except ProviderError:  # past the trace's end: the last update is all there is
            return snapshot.current_json
        return self._current_json(reading, self._percentile(reading))

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
        """Start the deliveries, the update loop and the bookkeeping of push outcomes."""
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self._deliveries = Deliveries(
            timeout_s=cfg.push_timeout_s,
            backoff_s=cfg.push_backoff_s,
            max_backoff_s=cfg.push_max_backoff_s,
            max_failures=cfg.max_failures,
            max_sending=cfg.push_concurrency,
            on_result=self._push_done,
            on_round=self._round_done,
            on_superseded=self.metrics.superseded.inc,
            policy=cfg.destinations,
        )
        self._loop_task = asyncio.create_task(self._run(), name="carbon-updates")
        self._flush_task = asyncio.create_task(self._flush_soon(), name="carbon-outcomes")

    async def stop(self) -> None:
        """Stop the loop and in-flight pushes, close the client, the store and the provider."""
        tasks = [t for t in (self._loop_task, self._flush_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._deliveries is not None:
            await asyncio.to_thread(self._deliveries.close)
        await asyncio.gather(*self._recordings, return_exceptions=True)
        await self.flush_outcomes()
        self.store.close()
        if self._owns_provider:
            self.provider.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.update_interval_s
        next_at = loop.time()
        regular = True
        while True:
            await self.flush_outcomes()
            if await self.refresh():
                assert self.snapshot is not None
                self.push(self.snapshot)
            if regular:
                # Fell behind (a slow provider): carry on from now rather than burst to catch up.
                next_at = max(next_at + interval, loop.time())
            # An admin call (set_index) wakes the loop for an extra update in between; the
            # regular schedule stays where it was, however many calls come.
            woken = await self._sleep_until(next_at)
            regular = not woken
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

    def push(self, snapshot: Snapshot) -> None:
        """Hand ``snapshot`` to every active subscriber's mailbox (it replaces an update
        still waiting there); returns at once."""
        if self._deliveries is not None:
            self._deliveries.submit(snapshot.body_json, self.store.targets())

    def _round_done(self, seconds: float) -> None:
        """One update reached every subscriber (called in the delivery thread)."""
        self.last_fanout_s = seconds
        self.metrics.fanout.observe(seconds)

    def _push_done(self, result: PushResult) -> None:
        """One push finished (called in the delivery thread)."""
        self.metrics.pushes_sent.inc(result.attempts)
        self.metrics.push_failures.inc(result.attempts - result.ok)
        with self._lock:
            first = not self._outcomes
            self._outcomes.append(PushOutcome(result.subscriber_id, result.ok, result.error))
        if first and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the service loop has closed
                self._loop.call_soon_threadsafe(self._outcomes_ready.set)

    async def _flush_soon(self) -> None:
        """Store outcomes shortly after they arrive, batched (deactivations show at once)."""
        while True:
            await self._outcomes_ready.wait()
            self._outcomes_ready.clear()
            await asyncio.sleep(0.2)
            await self.flush_outcomes()

    async def flush_outcomes(self) -> None:
        """Store the push outcomes gathered so far in one transaction."""
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        if not outcomes:
            return
        # Shielded, and awaited by stop(): cancelling a caller must not close the store
        # under a transaction still running in its thread.
        recording = asyncio.ensure_future(
            asyncio.to_thread(self.store.record, outcomes, max_failures=self.config.max_failures)
        )
        self._recordings.add(recording)
        recording.add_done_callback(self._recordings.discard)
        dropped = await asyncio.shield(recording)
        for sub_id in dropped:
            log.warning(
                "subscriber %d marked inactive after %d failed pushes in a row",
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
        """Enforce ``allowed_hosts`` and what ``destinations`` can tell without resolving.

        Raises:
            ValueError: If the address's host is not allowed (a
                :class:`~carbonscaler.security.netguard.DestinationRefused` for link-local,
                metadata or disallowed destinations).
        """
        allowed = self.config.allowed_hosts
        if allowed is not None:
            host = urlsplit(address).hostname
            if host not in allowed:
                raise ValueError(
                    f"host {host!r} is not allowed here; subscribers must be on"
                    f" {', '.join(sorted(allowed))}"
                )
        self.config.destinations.check_url(address)

    async def check_destination(self, address: str) -> None:
        """:meth:`check_address`, then the addresses its host resolves to now (a name that
        does not resolve yet is checked at every push instead).

        Raises:
            ValueError: If the address is refused.
        """
        self.check_address(address)
        await self.config.destinations.check_url_resolved(address)

    def register(self, app_name: str, address: str) -> tuple[Subscriber, str | None]:
        """Add or reactivate a subscriber (see :meth:`SubscriberStore.register`)."""
        result = self.store.register(app_name, address)
        if self._deliveries is not None:
            self._deliveries.reset(result[0].id)  # no back-off left from before
        self._update_subscriber_gauge()
        return result

    def delete(self, subscriber_id: int) -> bool:
        """Remove a subscriber; False if unknown."""
        found = self.store.delete(subscriber_id)
        if self._deliveries is not None:
            self._deliveries.forget(subscriber_id)
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
        # Checked by the validator below: the pattern, then parsed (IP literals, ports).
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
        return check_http_url(value, "address")


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


class WindowOut(BaseModel):
    """The best time to start a job that runs for a fixed time without scaling or pausing."""

    zone: str
    start: datetime = Field(description="When to start (a slot boundary; the first is now's)")
    end: datetime = Field(description="When the job ends if started then")
    duration_h: float
    mean_g_per_kwh: float = Field(description="Mean forecast intensity over the best window")
    now_g_per_kwh: float = Field(description="Mean forecast intensity if started at once")
    saving_pct: float = Field(description="Emissions saved against starting at once, percent")
    method: str = Field(description="The forecaster the window was chosen on")
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
    address: str | None = Field(
        description="null when a token is set and the caller did not send it"
    )
    active: bool
    failures: int
    pushes_ok: int
    last_error: str | None = Field(
        description="The last push failure; null as the address when it is hidden"
    )
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


def _subscription(sub: Subscriber, reveal: bool = True) -> SubscriptionOut:
    """The API view; without ``reveal`` the address (and the push error, which may name
    it) is left out."""
    out = SubscriptionOut(**sub.__dict__)
    if not reveal:
        out.address = out.last_error = None
    return out


_ERR = {"model": ErrorOut}
_BAD_BODY = {"model": ErrorOut, "description": "The body could not be parsed at all"}


# -- the app -------------------------------------------------------------------------------


API_DESCRIPTION = """\
Carbon intensity (gCO2eq/kWh) for one grid zone: the current value, forecasts, and the best
time to start a job that runs for a fixed time.

Subscribers register an address once; every update the service POSTs them the current value,
its percentile among recent values and a forecast (`carbon_intensity`, `carbon_percentile`,
`prediction`, as the original CarbonScaler service). The same data can be read at any time
under `/v1`. Health is at `/healthz`, Prometheus metrics at `/metrics`.

When the service has an admin token, registering, moving a replayed trace (`/set_index`) and
deleting subscriptions need it as `Authorization: Bearer <token>`; reading stays open.
"""


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

    app = service_app("carbonscaler carbon service", API_DESCRIPTION, lifespan)
    app.state.service = service
    auth = TokenAuth(config.token, "The admin token (--token-file, $CARBONSCALER_TOKEN or --token)")
    bearer = auth.scheme
    Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

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

    # With a token set: set_index and registration need it, deleting needs it or the
    # subscription's own key, and listings show addresses only to callers who send it.
    admin_deps = auth.required

    # -- the reference's endpoints

    @app.post(
        "/",
        response_model=CarbonStatus,
        tags=["reference"],
        summary="Register a subscriber (reference-compatible)",
        responses={400: _BAD_BODY, 422: {}, 503: _ERR, **auth.responses},
        dependencies=admin_deps,
    )
    async def register_reference(body: Registration) -> dict[str, Any]:
        snapshot = _snapshot()
        await _register(body)
        return snapshot.body

    async def _register(body: Registration) -> tuple[Subscriber, str | None]:
        try:
            await service.check_destination(body.address)
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
            return Response(service.current_json(snapshot), media_type="application/json")
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

    @app.get(
        "/v1/best-window",
        response_model=WindowOut,
        tags=["v1"],
        responses={404: _ERR, 422: _ERR, 503: _ERR},
        summary="The best time to start a job that runs for a fixed time",
    )
    async def best_window_(
        duration_h: Annotated[
            float, Query(gt=0, le=MAX_WINDOW_H, description="How long the job runs, in hours")
        ],
        within_h: Annotated[
            float,
            Query(gt=0, le=MAX_WINDOW_H, description="It must finish within this many hours"),
        ],
        zone: Zone = None,
    ) -> WindowOut:
        slot_h = service.slot_s / 3600
        horizon = math.floor(within_h / slot_h + 1e-9)
        if duration_h > within_h or horizon < 1 or horizon > MAX_HORIZON_SLOTS:
            raise HTTPException(
                422,
                f"a {duration_h:g} h job cannot finish within {within_h:g} h: give within_h >="
                f" duration_h, and at least one {slot_h * 60:g}-minute slot and at most"
                f" {MAX_HORIZON_SLOTS} slots",
            )
        result: Forecast = await service.call_provider(
            lambda: service.forecaster.predict(
                service.provider, horizon, zone=zone, slot_s=service.slot_s
            )
        )
        try:
            window = best_window(
                np.asarray(result.values_g_per_kwh, dtype=np.float64), duration_h / slot_h
            )
        except PlanningError as exc:
            raise HTTPException(422, str(exc)) from None
        start = result.start + timedelta(seconds=window.start_slot * result.step_s)
        return WindowOut(
            zone=result.zone,
            start=start,
            end=start + timedelta(hours=duration_h),
            duration_h=duration_h,
            mean_g_per_kwh=window.mean_g_per_kwh,
            now_g_per_kwh=window.now_g_per_kwh,
            saving_pct=window.saving_pct,
            method=service.forecaster.name,
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
        responses={400: _BAD_BODY, 422: {}, **auth.responses},
        dependencies=admin_deps,
    )
    async def create_subscription(body: Registration) -> SubscriptionCreated:
        subscriber, key = await _register(body)
        return SubscriptionCreated(**subscriber.__dict__, key=key)

    @app.get(
        "/v1/subscriptions",
        response_model=list[SubscriptionOut],
        tags=["v1"],
        summary="List subscriptions (addresses only with the token, when one is set)",
    )
    async def list_subscriptions(request: Request) -> list[SubscriptionOut]:
        # Open to everyone (no security in the schema); addresses only for the token.
        reveal = auth.authorized(auth.bearer(request))
        return [_subscription(s, reveal) for s in service.store.subscribers()]

    SubscriptionId = Annotated[int, PathParam(ge=1, le=_MAX_ID)]

    @app.get(
        "/v1/subscriptions/{subscription_id}",
        response_model=SubscriptionOut,
        tags=["v1"],
        responses={404: _ERR},
        summary="One subscription (its address only with the token or its own key)",
    )
    async def get_subscription(
        subscription_id: SubscriptionId, request: Request
    ) -> SubscriptionOut:
        subscriber = service.store.get(subscription_id)
        if subscriber is None:
            raise HTTPException(404, f"no subscription {subscription_id}")
        given = auth.bearer(request)
        reveal = auth.authorized(given) or (
            given is not None and service.store.check_key(subscription_id, given)
        )
        return _subscription(subscriber, reveal)

    delete_responses: dict[int | str, dict[str, Any]] = {204: {}, 404: _ERR}
    delete_deps: list[Any] = []
    if config.token is not None:
        delete_responses[401] = _ERR

        async def may_delete(subscription_id: SubscriptionId, credentials: Credentials) -> None:
            own = credentials is not None and service.store.check_key(
                subscription_id, credentials.credentials
            )
            if not own and not auth.authorized(credentials):
                raise auth.unauthorized("the token or the subscription's own key")

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
