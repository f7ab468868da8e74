"""The accounting service: how many grams each job emitted, and how we know.

A thin FastAPI shell over :class:`~carbonscaler.accounting.Tracker`. Jobs are registered
with the nodes (power-server URLs) or pods (Kepler) they run on and a way to estimate what
cannot be measured (their profile, or watts per server); every few seconds the tracker
charges each job's energy at the carbon intensity of the moment and commits samples and
totals to the SQLite ledger. Every figure comes with the share that was measured.

Carbon intensity comes from one of: a trace replayed at a chosen pace (its origin is kept
in the ledger, so a restarted service maps time the same way), a live provider chain, or
the carbon service, which pushes the reference body ``{"carbon_intensity", ...}`` to
``POST /carbon`` after this service subscribes to it.

Endpoints: ``/v1/jobs`` (register, list), ``/v1/jobs/{id}`` (totals; ``PATCH`` after a
rescale), ``/v1/jobs/{id}/progress``, ``/v1/jobs/{id}/stop``, ``/v1/jobs/{id}/samples.csv``,
``/healthz`` and Prometheus ``/metrics`` (per job: emissions, energy, power, servers,
progress, intensity, measured share; a registry per app).

What it trusts: with a token set, every POST and PATCH needs it (``/carbon`` also takes
the push key the service registers with the carbon service); GETs stay open. Node URLs
never reach link-local or cloud-metadata addresses (and only ``--allow-node-net`` networks
when given); progress files are read only under ``--progress-root``.
"""

# No `from __future__ import annotations`: FastAPI evaluates the route signatures.

import asyncio
import contextlib
import csv
import io
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

from carbonscaler.accounting.feeds import IntensityFeed, ProviderIntensityFeed, PushedFeed, TimeMap
from carbonscaler.accounting.integrate import j_to_kwh, measured_share
from carbonscaler.accounting.ledger import JobRecord, Ledger, SampleRecord
from carbonscaler.accounting.progress import ProgressError
from carbonscaler.accounting.tracker import (
    JOB_ID_PATTERN,
    JobExistsError,
    TrackedJob,
    Tracker,
    TrackerConfig,
    TrackerError,
    UnknownJobError,
)
from carbonscaler.providers.base import CarbonProvider, iso_utc, to_utc
from carbonscaler.providers.replay import ManualClock, TraceReplay
from carbonscaler.security.netguard import DestinationRefused
from carbonscaler.security.tokens import with_push_key
from carbonscaler.services._app import service_app
from carbonscaler.services._auth import TokenAuth
from carbonscaler.services._models import ErrorOut
from carbonscaler.services._validation import (
    HTTP_URL_PATTERN,
    FiniteFloat,
    Intensity,
    StrictInt,
    check_http_url,
)
from carbonscaler.trace import CarbonTrace, load_trace

__all__ = ["AccountingConfig", "create_app"]

log = logging.getLogger("carbonscaler.accounting")

_REPLAY_KEY = "replay_origin"


@dataclass
class AccountingConfig:
    """Everything the accounting service needs; the CLI builds one from its options.

    Give exactly one carbon source: ``carbon_trace`` or ``trace`` (replay), ``provider``
    (live), or ``carbon_service_url`` (subscribe to the carbon service).

    Args:
        db_path: The ledger (SQLite, created if missing).
        carbon_trace: Trace file to replay.
        trace: A trace already loaded (e.g. from the offline dataset) to replay instead.
        carbon_start: First replayed time (ISO 8601); default the trace start.
        seconds_per_slot: Replay pace; None replays in real time.
        signal: Trace signal (``direct``, ``lca``, ``avg``).
        zone: Zone of a multi-zone trace file.
        provider: A live provider (e.g. :func:`~carbonscaler.providers.live_provider`).
        carbon_service_url: The carbon service to subscribe to.
        public_url: This service's URL as the carbon service should reach it.
        tracker: Sampling settings (also where node URLs may point and the progress root).
        clock: Wall time in Unix seconds, replaceable in tests.
        token: Bearer token every POST and PATCH requires; None leaves them open. The
            subscription to the carbon service carries its push key.
        carbon_service_token: The carbon service's token, sent when registering with it.
        resubscribe_after_s: Register with the carbon service again when no push came for
            this long (the subscription may have been deleted or deactivated).

    Raises:
        ValueError: If no or several carbon sources are given, or a number is out of range.
    """

    db_path: Path
    carbon_trace: Path | None = None
    trace: CarbonTrace | None = None
    carbon_start: str | None = None
    seconds_per_slot: float | None = None
    signal: str = "direct"
    zone: str | None = None
    provider: CarbonProvider | None = None
    carbon_service_url: str | None = None
    public_url: str | None = None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    clock: Callable[[], float] = time.time
    token: str | None = None
    carbon_service_token: str | None = None
    resubscribe_after_s: float = 300.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.resubscribe_after_s) and self.resubscribe_after_s > 0):
            raise ValueError(
                f"resubscribe_after_s must be a positive number, not {self.resubscribe_after_s}"
            )
        given = [
            x
            for x in (self.carbon_trace, self.trace, self.provider, self.carbon_service_url)
            if x is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one carbon source: --trace PATH or --zone ZONE --year YEAR"
                " (replay), --provider SPEC (live providers) or --carbon-service URL"
            )
        if self.carbon_service_url is not None and self.public_url is None:
            raise ValueError(
                "subscribing to the carbon service needs this service's own URL (--public-url)"
            )
        if self.seconds_per_slot is not None and not (
            math.isfinite(self.seconds_per_slot) and self.seconds_per_slot > 0
        ):
            raise ValueError(
                f"--speed must be positive seconds per slot, not {self.seconds_per_slot}"
            )


def _replay_feed(config: AccountingConfig, ledger: Ledger) -> ProviderIntensityFeed:
    """A replay whose wall-to-trace time map survives restarts (kept in the ledger)."""
    if config.trace is not None:
        trace, origin = config.trace, config.trace.source
    else:
        assert config.carbon_trace is not None
        trace = load_trace(config.carbon_trace, signal=config.signal, zone=config.zone)
        origin = str(config.carbon_trace.resolve())
    start = to_utc(config.carbon_start) if config.carbon_start else trace.start.to_pydatetime()
    slot_s = trace.step.total_seconds()
    speedup = 1.0 if config.seconds_per_slot is None else slot_s / config.seconds_per_slot
    key = {
        "trace": origin,
        "start": start.isoformat(),
        "speedup": speedup,
    }
    saved = ledger.get_meta(_REPLAY_KEY)
    wall0 = config.clock()
    if saved is not None:
        stored = json.loads(saved)
        if {k: stored.get(k) for k in key} == key:
            wall0 = float(stored["wall0_s"])
            log.info("resuming the carbon replay started at %s", datetime.fromtimestamp(wall0, UTC))
    ledger.set_meta(_REPLAY_KEY, json.dumps({**key, "wall0_s": wall0}))
    replay = TraceReplay(trace, start=start, clock=ManualClock(start), wrap=True)
    return ProviderIntensityFeed(replay, time_map=TimeMap(wall0, start, speedup))


def build_feed(config: AccountingConfig, ledger: Ledger) -> IntensityFeed:
    """The carbon feed the configuration asks for.

    Raises:
        TraceError, ProviderError: If the trace cannot be read or the start is outside it.
    """
    if config.carbon_trace is not None or config.trace is not None:
        return _replay_feed(config, ledger)
    if config.provider is not None:
        return ProviderIntensityFeed(config.provider)
    assert config.carbon_service_url is not None
    return PushedFeed(ledger, source=config.carbon_service_url)


# -- HTTP models ---------------------------------------------------------------------------


def _node_url(value: str) -> str:
    return check_http_url(value, "a node URL")


# A power server's base URL: the subscriber addresses' pattern for the schema, and parsed.
NodeUrl = Annotated[
    str,
    Field(max_length=512, json_schema_extra={"pattern": HTTP_URL_PATTERN}),
    AfterValidator(_node_url),
]


class JobIn(BaseModel):
    """A job to account for."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(pattern=JOB_ID_PATTERN, description="Unique id")
    nodes: list[NodeUrl] = Field(
        default_factory=list, max_length=1024, description="Power-server base URLs"
    )
    pods: list[Annotated[str, Field(max_length=320)]] = Field(
        default_factory=list, max_length=1024, description="'namespace/name' via Kepler"
    )
    servers: StrictInt | None = Field(default=None, ge=0, le=100_000, description="Current k")
    profile_path: str | None = Field(default=None, max_length=4096)
    watts_per_server: FiniteFloat | None = Field(default=None, gt=0, le=1e6)
    progress_path: str | None = Field(
        default=None, max_length=4096, description="Absolute path of the job's progress.csv"
    )


class JobUpdate(BaseModel):
    """A rescale: new server count and/or nodes and pods."""

    model_config = ConfigDict(extra="forbid")

    servers: StrictInt | None = Field(default=None, ge=0, le=100_000)
    nodes: list[NodeUrl] | None = Field(default=None, max_length=1024)
    pods: list[Annotated[str, Field(max_length=320)]] | None = Field(default=None, max_length=1024)


class ProgressIn(BaseModel):
    """Progress reported by the job."""

    model_config = ConfigDict(extra="forbid")

    percent: FiniteFloat = Field(ge=0, le=100, description="Percent done, 0-100")


class CarbonPush(BaseModel):
    """The carbon service's push (the reference body; extra fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    carbon_intensity: Intensity = Field(description="gCO2eq/kWh, 0-10000")
    stale: StrictBool = False


class JobOut(BaseModel):
    """A job's totals, every figure with how much of it was measured."""

    job_id: str
    active: bool
    nodes: list[str]
    pods: list[str]
    servers: int
    created: datetime
    accounted_until: datetime
    samples: int
    energy_kwh: float
    measured_energy_kwh: float
    estimated_energy_kwh: float
    measured_energy_share: float | None = Field(description="0..1; null before any energy")
    emissions_g: float = Field(description="gCO2eq")
    measured_emissions_g: float
    estimated_emissions_g: float
    measured_emissions_share: float | None
    mean_intensity_g_per_kwh: float | None
    progress_pct: float | None
    progress_error: str | None
    g_per_percent: float | None = Field(description="Emissions per percent of the job done")
    projected_total_g: float | None = Field(description="Emissions at 100 % at this rate")
    last_watts: float | None
    last_intensity_g_per_kwh: float | None
    last_power_source: str | None = Field(description="e.g. measured:rapl+estimated:profile")
    last_note: str | None = Field(description="Why part of the last sample was estimated")
    last_error: str | None


class AccountingHealthOut(BaseModel):
    """Liveness of the sampling loop."""

    status: Literal["ok", "waiting"]
    carbon_source: str
    jobs_tracked: int
    rounds: int
    last_round: datetime | None


_ERR = {"model": ErrorOut}
_CSV_COLUMNS = [
    "seq",
    "start",
    "end",
    "duration_s",
    "watts",
    "energy_j",
    "measured_j",
    "intensity_g_per_kwh",
    "emissions_g",
    "carbon_stale",
    "servers",
    "progress_pct",
    "power_source",
    "carbon_source",
    "note",
]


def _csv_rows(samples: Iterable[SampleRecord]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_CSV_COLUMNS)
    for s in samples:
        writer.writerow(
            [
                s.seq,
                iso_utc(datetime.fromtimestamp(s.start_s, UTC)),
                iso_utc(datetime.fromtimestamp(s.end_s, UTC)),
                repr(s.end_s - s.start_s),
                repr(s.watts),
                repr(s.energy_j),
                repr(s.measured_j),
                repr(s.intensity_g_per_kwh),
                repr(s.emissions_g),
                int(s.carbon_stale),
                s.servers,
                "" if s.progress_pct is None else repr(s.progress_pct),
                s.power_source,
                s.carbon_source,
                s.note,
            ]
        )
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


class _JobCollector(Collector):
    """Per-job figures read from the tracker at scrape time (no stale label sets)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def collect(self) -> Iterator[Any]:
        jobs = list(self.tracker.jobs.values())
        families: list[tuple[Any, Callable[[JobRecord], float | None]]] = [
            (
                CounterMetricFamily(
                    "carbonscaler_job_emissions_grams", "Job emissions (gCO2eq)", labels=["job"]
                ),
                lambda r: r.emissions_g,
            ),
            (
                CounterMetricFamily(
                    "carbonscaler_job_energy_kwh", "Job energy (kWh)", labels=["job"]
                ),
                lambda r: j_to_kwh(r.energy_j),
            ),
            (
                GaugeMetricFamily(
                    "carbonscaler_job_measured_energy_ratio",
                    "Share of the job's energy that was measured (0..1)",
                    labels=["job"],
                ),
                lambda r: measured_share(r.measured_j, r.energy_j),
            ),
            (
                GaugeMetricFamily(
                    "carbonscaler_job_power_watts", "Job power in the last sample", labels=["job"]
                ),
                lambda r: r.last_watts,
            ),
            (
                GaugeMetricFamily("carbonscaler_job_servers", "Job servers", labels=["job"]),
                lambda r: float(r.servers),
            ),
            (
                GaugeMetricFamily(
                    "carbonscaler_job_progress_percent", "Job percent done", labels=["job"]
                ),
                lambda r: r.progress_pct,
            ),
            (
                GaugeMetricFamily(
                    "carbonscaler_job_carbon_intensity_g_per_kwh",
                    "Carbon intensity in the job's last sample (gCO2eq/kWh)",
                    labels=["job"],
                ),
                lambda r: r.last_intensity_g_per_kwh,
            ),
        ]
        for family, value in families:
            for status in jobs:
                figure = value(status.record)
                if figure is not None:
                    family.add_metric([status.spec.job_id], figure)
            yield family
        yield CounterMetricFamily(
            "carbonscaler_accounting_rounds", "Sampling rounds", value=self.tracker.rounds
        )
        yield GaugeMetricFamily(
            "carbonscaler_accounting_jobs", "Jobs being tracked", value=len(jobs)
        )


def _job_out(tracker: Tracker, record: JobRecord) -> JobOut:
    status = tracker.jobs.get(record.job_id)
    if status is not None:
        record = status.record
    spec = TrackedJob.from_json(record.spec)
    energy_kwh = j_to_kwh(record.energy_j)
    measured_kwh = j_to_kwh(record.measured_j)
    progress = record.progress_pct
    per_percent = record.emissions_g / progress if progress else None
    return JobOut(
        job_id=record.job_id,
        active=record.active,
        nodes=list(spec.nodes),
        pods=list(spec.pods),
        servers=record.servers,
        created=datetime.fromtimestamp(record.created_s, UTC),
        accounted_until=datetime.fromtimestamp(record.last_end_s, UTC),
        samples=record.samples,
        energy_kwh=energy_kwh,
        measured_energy_kwh=measured_kwh,
        estimated_energy_kwh=energy_kwh - measured_kwh,
        measured_energy_share=measured_share(record.measured_j, record.energy_j),
        emissions_g=record.emissions_g,
        measured_emissions_g=record.measured_g,
        estimated_emissions_g=record.emissions_g - record.measured_g,
        measured_emissions_share=measured_share(record.measured_g, record.emissions_g),
        mean_intensity_g_per_kwh=record.emissions_g / energy_kwh if energy_kwh > 0 else None,
        progress_pct=progress,
        progress_error=record.progress_error,
        g_per_percent=per_percent,
        projected_total_g=None if per_percent is None else per_percent * 100,
        last_watts=record.last_watts,
        last_intensity_g_per_kwh=record.last_intensity_g_per_kwh,
        last_power_source=None if status is None else status.last_power_source,
        last_note=None if status is None else status.last_note or None,
        last_error=None if status is None else status.last_error,
    )


API_DESCRIPTION = """\
How many grams of CO2eq each job emitted, and how much of that was measured.

Register a job with the nodes (power-server URLs) or pods it runs on and a way to estimate what
cannot be measured; every few seconds its energy is charged at the carbon intensity of the
moment. Read a job's totals, report its progress, tell it about a rescale (`PATCH`), stop it,
and download its samples as CSV. Health is at `/healthz`, Prometheus metrics at `/metrics`.

With a token set, every POST and PATCH needs `Authorization: Bearer <token>`; reading stays
open.
"""


def create_app(config: AccountingConfig) -> FastAPI:
    """The accounting service as a FastAPI app; sampling runs while its lifespan runs.

    Raises:
        LedgerError, TraceError, ProviderError, TrackerError: On a bad configuration.
    """
    ledger = Ledger(config.db_path)
    feed = build_feed(config, ledger)
    tracker = Tracker(ledger, feed, config.tracker, clock=config.clock)
    registry = CollectorRegistry()
    registry.register(_JobCollector(tracker))

    last_push = [time.monotonic()]  # when the carbon service last gave a value

    async def register_once(client: httpx.AsyncClient, body: dict[str, str]) -> bool:
        """One registration with the carbon service; its answer is a value like a push."""
        assert config.carbon_service_url is not None and isinstance(feed, PushedFeed)
        try:
            answer = await client.post(config.carbon_service_url.rstrip("/") + "/", json=body)
            if answer.status_code == 401:
                log.error(
                    "the carbon service %s wants its token to register: give it with"
                    " --carbon-service-token-file; retrying in 5 s",
                    config.carbon_service_url,
                )
                return False
            answer.raise_for_status()
            push = CarbonPush.model_validate(answer.json())
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("carbon service not reachable yet (%s); retrying in 5 s", exc)
            return False
        feed.push(config.clock(), push.carbon_intensity, stale=push.stale)
        last_push[0] = time.monotonic()
        log.info("subscribed to the carbon service %s", config.carbon_service_url)
        return True

    async def subscribe() -> None:
        """Register with the carbon service until it answers, and again whenever no push
        came for ``resubscribe_after_s`` (the subscription was deleted, or deactivated
        after failed pushes): re-registering is idempotent and revives it."""
        address = with_push_key(f"{config.public_url}/carbon", config.token)
        body = {"app_name": "carbonscaler-accounting", "address": address}
        headers = {}
        if config.carbon_service_token is not None:
            headers["Authorization"] = f"Bearer {config.carbon_service_token}"
        check_s = min(5.0, config.resubscribe_after_s / 4)
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(5.0), trust_env=False, headers=headers
        ) as client:
            while True:
                while not await register_once(client, body):
                    await asyncio.sleep(5.0)
                while time.monotonic() - last_push[0] < config.resubscribe_after_s:
                    await asyncio.sleep(check_s)
                log.warning(
                    "no push from the carbon service %s for %.0f s; registering again",
                    config.carbon_service_url,
                    time.monotonic() - last_push[0],
                )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        if isinstance(feed, PushedFeed) and config.carbon_service_url is not None:
            tasks.append(asyncio.create_task(subscribe(), name="carbon-subscribe"))
        await tracker.start()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await tracker.stop()
            feed.close()
            ledger.close()

    app = service_app("carbonscaler accounting", API_DESCRIPTION, lifespan)
    app.state.tracker = tracker
    auth = TokenAuth(config.token, "The token (--token-file, $CARBONSCALER_TOKEN or --token)")
    guarded = auth.required  # every POST and PATCH when a token is set

    async def _check_nodes(nodes: Iterable[str]) -> None:
        """Refuse node URLs that are, or resolve to, refused destinations (422): first
        what needs no resolution (``allowed_hosts`` too), then the names' addresses."""
        nodes = list(nodes)
        tracker.check_nodes(nodes)
        policy = config.tracker.node_policy
        try:
            await asyncio.gather(*(policy.check_url_resolved(n) for n in dict.fromkeys(nodes)))
        except DestinationRefused as exc:
            raise HTTPException(422, str(exc)) from None

    @app.exception_handler(TrackerError)
    async def _tracker_error(_: Request, exc: TrackerError) -> JSONResponse:
        status = 422
        if isinstance(exc, UnknownJobError):
            status = 404
        elif isinstance(exc, JobExistsError):
            status = 409
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(ProgressError)
    async def _progress_error(_: Request, exc: ProgressError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    JobId = Annotated[str, PathParam(pattern=JOB_ID_PATTERN, max_length=128)]

    def _record(job_id: str) -> JobRecord:
        record = ledger.job(job_id)
        if record is None:
            raise HTTPException(404, f"no job {job_id!r}; list them at GET /v1/jobs")
        return record

    @app.post(
        "/v1/jobs",
        response_model=JobOut,
        status_code=201,
        tags=["jobs"],
        responses={400: _ERR, 409: _ERR, 422: _ERR, **auth.responses},
        dependencies=guarded,
    )
    async def register(body: JobIn) -> JobOut:
        await _check_nodes(body.nodes)
        spec = TrackedJob(
            job_id=body.job_id,
            nodes=tuple(body.nodes),
            pods=tuple(body.pods),
            servers=body.servers,
            profile_path=body.profile_path,
            watts_per_server=body.watts_per_server,
            progress_path=body.progress_path,
        )
        status = tracker.register(spec)
        return _job_out(tracker, status.record)

    @app.get("/v1/jobs", response_model=list[JobOut], tags=["jobs"])
    async def list_jobs() -> list[JobOut]:
        return [_job_out(tracker, r) for r in ledger.jobs()]

    @app.get("/v1/jobs/{job_id}", response_model=JobOut, tags=["jobs"], responses={404: _ERR})
    async def get_job(job_id: JobId) -> JobOut:
        return _job_out(tracker, _record(job_id))

    @app.patch(
        "/v1/jobs/{job_id}",
        response_model=JobOut,
        tags=["jobs"],
        summary="Record a rescale (servers, nodes, pods)",
        responses={400: _ERR, 404: _ERR, 422: _ERR, **auth.responses},
        dependencies=guarded,
    )
    async def update_job(job_id: JobId, body: JobUpdate) -> JobOut:
        await _check_nodes(body.nodes or ())
        status = await tracker.update(
            job_id, servers=body.servers, nodes=body.nodes, pods=body.pods
        )
        return _job_out(tracker, status.record)

    @app.post(
        "/v1/jobs/{job_id}/progress",
        response_model=JobOut,
        tags=["jobs"],
        responses={400: _ERR, 404: _ERR, 422: _ERR, **auth.responses},
        dependencies=guarded,
    )
    async def post_progress(job_id: JobId, body: ProgressIn) -> JobOut:
        tracker.post_progress(job_id, body.percent)
        return _job_out(tracker, _record(job_id))

    @app.post(
        "/v1/jobs/{job_id}/stop",
        response_model=JobOut,
        tags=["jobs"],
        summary="Stop accounting a job (its records stay)",
        responses={404: _ERR, **auth.responses},
        dependencies=guarded,
    )
    async def stop_job(job_id: JobId) -> JobOut:
        _record(job_id)
        if job_id in tracker.jobs:
            await tracker.stop_tracking(job_id)
        return _job_out(tracker, _record(job_id))

    @app.get(
        "/v1/jobs/{job_id}/samples.csv",
        tags=["jobs"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/csv": {}}}, 404: _ERR},
    )
    async def samples_csv(job_id: JobId) -> StreamingResponse:
        _record(job_id)
        return StreamingResponse(
            _csv_rows(ledger.samples(job_id)),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{job_id}-samples.csv"'},
        )

    if isinstance(feed, PushedFeed):
        pushed = feed

        @app.post(
            "/carbon",
            tags=["carbon"],
            summary="Receive the carbon service's push (the token or the push key, if set)",
            responses={400: _ERR, 422: _ERR, **auth.responses},
            dependencies=auth.push_required,
        )
        async def carbon_push(body: CarbonPush) -> dict[str, bool]:
            pushed.push(config.clock(), body.carbon_intensity, stale=body.stale)
            last_push[0] = time.monotonic()
            oldest = min((s.record.last_end_s for s in tracker.jobs.values()), default=None)
            if oldest is not None:
                pushed.forget_before(oldest)
            return {"ok": True}

    @app.get("/healthz", response_model=AccountingHealthOut, tags=["operations"])
    async def healthz() -> AccountingHealthOut:
        last = tracker.last_round_s
        return AccountingHealthOut(
            status="ok" if tracker.rounds else "waiting",
            carbon_source=feed.source,
            jobs_tracked=len(tracker.jobs),
            rounds=tracker.rounds,
            last_round=None if last is None else datetime.fromtimestamp(last, UTC),
        )

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
