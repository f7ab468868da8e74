"""The power server: one per node, sampling the node's power about once a second.

A thin FastAPI shell over :class:`~carbonscaler.power.NodeSampler`.

- ``GET /`` — the reference contract: the JSON list of watt readings taken since the
  previous call (about one per second). Numbers only, as the reference; their source is
  in the versioned API.
- ``GET /v1/power?window_s=`` — average power over the last ``window_s`` seconds, with the
  source of the figure and the measured part.
- ``GET /v1/energy?start=&end=`` — energy between two Unix times, from the readings
  overlapping the interval; what the accounting asks (it does not consume readings, so
  any number of clients may ask, and asking again is safe).
- ``GET /healthz``, Prometheus ``GET /metrics`` (a registry per app).

With a token set, ``GET /`` (which hands readings out, so one caller takes them from the
next) needs it; the other endpoints only read and stay open.

Which meters: RAPL packages under the powercap root, else Kepler's node counters, else an
estimate (``--profile`` with ``--servers``: the node's share P(k)/k; or
``--estimate-watts``), all labelled; NVIDIA GPUs add to the CPU figure. With no source at
all the server says so (empty lists, 503 on ``/v1/power``) instead of inventing watts.
"""

# No `from __future__ import annotations`: FastAPI evaluates the route signatures.

import contextlib
import math
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from pydantic import BaseModel, Field

from carbonscaler.power.kepler import KeplerMeter
from carbonscaler.power.meter import (
    CompositeMeter,
    ConstantMeter,
    MeterError,
    MeterUnavailable,
    PowerMeter,
    PowerReading,
    ProfileMeter,
)
from carbonscaler.power.nvml import NvmlMeter
from carbonscaler.power.rapl import DEFAULT_POWERCAP_ROOT, RaplMeter
from carbonscaler.power.sampler import EnergyWindow, NodeSampler
from carbonscaler.profile import ProfileWarning, load_profile
from carbonscaler.services._app import service_app
from carbonscaler.services._auth import TokenAuth
from carbonscaler.services._models import ErrorOut

__all__ = ["PowerServerConfig", "build_meters", "create_app"]

_MAX_WINDOW_S = 7 * 24 * 3600.0
_MIN_WINDOW_S = 0.001  # below this, "now - window" is "now" again in float seconds


@dataclass
class PowerServerConfig:
    """What the power server measures and how; the CLI builds one from its options.

    Args:
        powercap_root: Where the RAPL zones are (``/sys/class/powercap``).
        include_dram: Count RAPL DRAM zones too (the package excludes memory).
        gpu: Add NVIDIA GPUs through NVML when present.
        kepler_url: Prometheus scraping Kepler, used when RAPL is unreadable.
        kepler_node: This node's name in Kepler's metrics (needed with ``kepler_url``).
        profile_path: A job profile for the estimate P(k)/k when nothing is measurable.
        servers: The k for that estimate.
        estimate_watts: Instead of a profile, a stated draw for the estimate, W.
        sample_interval_s: Seconds between readings.
        history_s: How long readings are kept for ``/v1/energy``.
        meters: Ready meters (tests); replaces everything above but the intervals.
        token: Bearer token ``GET /`` requires (it consumes readings); None leaves it open.

    Raises:
        ValueError: If numbers are out of range or options are incomplete.
    """

    powercap_root: Path = DEFAULT_POWERCAP_ROOT
    include_dram: bool = False
    gpu: bool = True
    kepler_url: str | None = None
    kepler_node: str | None = None
    profile_path: Path | None = None
    servers: int | None = None
    estimate_watts: float | None = None
    sample_interval_s: float = 1.0
    history_s: float = 3600.0
    meters: list[PowerMeter] | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise ValueError("the token must not be empty")
        if not (math.isfinite(self.sample_interval_s) and 0 < self.sample_interval_s <= 60):
            raise ValueError(f"sample interval must be in (0, 60] s, not {self.sample_interval_s}")
        if not (math.isfinite(self.history_s) and self.sample_interval_s <= self.history_s):
            raise ValueError(f"history must be at least one sample interval, not {self.history_s}")
        if (self.kepler_url is None) != (self.kepler_node is None):
            raise ValueError("give both --kepler-url and --kepler-node, or neither")
        if (self.profile_path is None) != (self.servers is None):
            raise ValueError("an estimate from a profile needs both --profile and --servers")
        if self.estimate_watts is not None and not (
            math.isfinite(self.estimate_watts) and self.estimate_watts > 0
        ):
            raise ValueError(f"--estimate-watts must be positive, not {self.estimate_watts}")


def build_meters(config: PowerServerConfig) -> tuple[list[PowerMeter], dict[str, str]]:
    """The node's meters (CPU composite, then GPUs) and why the missing ones are missing.

    Raises:
        ProfileError, OSError: If the estimate's profile cannot be read.
        ValueError: If ``servers`` is outside the profile.
    """
    if config.meters is not None:
        return list(config.meters), {}
    cpu: list[PowerMeter] = []
    missing: dict[str, str] = {}
    try:
        cpu.append(RaplMeter(config.powercap_root, include_dram=config.include_dram))
    except MeterUnavailable as exc:
        missing[RaplMeter.source] = str(exc)
    if config.kepler_url is not None and config.kepler_node is not None:
        cpu.append(KeplerMeter(config.kepler_url, node=config.kepler_node))
    if config.profile_path is not None and config.servers is not None:
        with warnings.catch_warnings():
            # Concavity matters to the planner, not to a power estimate: keep logs quiet.
            warnings.simplefilter("ignore", ProfileWarning)
            profile = load_profile(config.profile_path)
        cpu.append(ProfileMeter(profile, config.servers, per_server=True))
    if config.estimate_watts is not None:
        cpu.append(ConstantMeter(config.estimate_watts, source="estimated:nominal"))
    meters: list[PowerMeter] = [CompositeMeter(cpu)] if cpu else []
    if config.gpu:
        try:
            meters.append(NvmlMeter())
        except MeterUnavailable as exc:
            missing[NvmlMeter.source] = str(exc)
    return meters, missing


class PowerOut(BaseModel):
    """Average power over a recent window."""

    watts: float = Field(description="Average over the covered part of the window, W")
    window_s: float
    covered_s: float = Field(description="Seconds of the window the readings cover")
    energy_j: float
    measured_j: float = Field(description="The measured part of energy_j")
    source: str = Field(description="Label of most of the energy, e.g. measured:rapl")
    samples: int


class EnergyOut(BaseModel):
    """Energy over an interval."""

    start: float = Field(description="Unix seconds")
    end: float = Field(description="Unix seconds")
    energy_j: float
    measured_j: float
    covered_s: float = Field(description="Seconds the readings cover; the rest is unknown")
    watts: float | None
    source: str
    samples: int


class PowerHealthOut(BaseModel):
    """What the server measures with."""

    status: Literal["ok", "estimating", "no-source"]
    sources: list[str] = Field(description="Meters in use, best first")
    active_source: str | None = Field(description="Source of the newest reading")
    unavailable: dict[str, str] = Field(description="Meters not usable here, and why")
    errors: dict[str, str] = Field(description="Meters whose latest reading failed")
    sample_interval_s: float
    last_reading_age_s: float | None
    readings_kept: int


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.power = Gauge(
            "carbonscaler_node_power_watts", "Latest node power by source", ["source"], registry=r
        )
        self.energy = Counter(
            "carbonscaler_node_energy_joules",
            "Node energy since the server started, by source",
            ["source"],
            registry=r,
        )
        self.readings = Counter("carbonscaler_power_readings", "Meter readings taken", registry=r)
        self.errors = Counter(
            "carbonscaler_power_read_errors", "Meter readings that failed", ["source"], registry=r
        )


def _health_status(
    meters: list[PowerMeter], latest_source: str | None
) -> Literal["ok", "estimating", "no-source"]:
    if not meters:
        return "no-source"
    if latest_source is not None and "measured:" not in latest_source:
        return "estimating"
    return "ok"


API_DESCRIPTION = """\
The power this node draws, sampled about once a second from RAPL, Kepler or NVIDIA GPUs, or
estimated (and labelled so) where nothing can be measured.

`GET /` hands out the readings taken since the previous call (the original CarbonScaler
contract). `/v1/power` gives the average over a recent window and `/v1/energy` the energy
between two times, each with its source and the share that was measured. Health is at
`/healthz`, Prometheus metrics at `/metrics`.

With a token set, `GET /` needs `Authorization: Bearer <token>`; the rest only reads and stays
open.
"""


def create_app(config: PowerServerConfig) -> FastAPI:
    """The power server as a FastAPI app; sampling runs while the app's lifespan runs.

    Raises:
        ValueError, ProfileError, OSError: On a bad configuration (see :func:`build_meters`).
    """
    meters, unavailable = build_meters(config)
    metrics = _Metrics()

    def on_reading(reading: PowerReading) -> None:
        metrics.readings.inc()
        metrics.power.labels(reading.source).set(reading.watts)
        metrics.energy.labels(reading.source).inc(reading.energy_j)

    def on_error(meter: PowerMeter, exc: MeterError) -> None:
        metrics.errors.labels(meter.source).inc()

    sampler = NodeSampler(
        meters or [_NoSource()],
        interval_s=config.sample_interval_s,
        keep_s=config.history_s,
        on_reading=on_reading,
        on_error=on_error,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sampler.start()
        try:
            yield
        finally:
            sampler.stop()

    app = service_app("carbonscaler power server", API_DESCRIPTION, lifespan)
    app.state.sampler = sampler
    err = {"model": ErrorOut}
    auth = TokenAuth(config.token)

    @app.get(
        "/",
        tags=["reference"],
        summary="Watt readings since the previous call (reference-compatible)",
        response_model=list[float],
        dependencies=auth.required,
        responses=auth.responses,
    )
    async def readings() -> JSONResponse:
        return JSONResponse(sampler.history.drain())

    @app.get("/v1/power", response_model=PowerOut, tags=["v1"], responses={503: err})
    async def power(
        window_s: Annotated[
            float,
            Query(
                ge=_MIN_WINDOW_S,
                le=_MAX_WINDOW_S,
                allow_inf_nan=False,
                description=f"Seconds back from now, {_MIN_WINDOW_S:g} to {_MAX_WINDOW_S:.0f}",
            ),
        ] = 10.0,
    ) -> JSONResponse:
        end = time.time()
        found = sampler.history.window(end - window_s, end)
        if found.watts is None:
            raise HTTPException(503, _no_readings(meters, sampler.errors))
        # Built directly: re-validating our own numbers through the model would cost more
        # than answering (the p99 target is 5 ms on a small node); the model documents it.
        return JSONResponse(
            {
                "watts": found.watts,
                "window_s": window_s,
                "covered_s": found.covered_s,
                "energy_j": found.energy_j,
                "measured_j": found.measured_j,
                "source": found.source,
                "samples": found.samples,
            }
        )

    range_rule = f"after start, by at most {_MAX_WINDOW_S:.0f} s (7 days)"

    @app.get(
        "/v1/energy",
        response_model=EnergyOut,
        tags=["v1"],
        description=f"Energy between two Unix times; `end` must be {range_rule}.",
        responses={
            422: {
                **err,
                "description": f"A time is not a number in range, or end is not {range_rule}",
            }
        },
    )
    async def energy(
        start: Annotated[
            float, Query(ge=0, le=1e11, allow_inf_nan=False, description="Unix seconds")
        ],
        end: Annotated[
            float,
            Query(
                ge=0,
                le=1e11,
                allow_inf_nan=False,
                description=f"Unix seconds, {range_rule}",
            ),
        ],
    ) -> JSONResponse:
        if not end > start:
            raise HTTPException(422, f"end ({end}) must be {range_rule}; start is {start}")
        if end - start > _MAX_WINDOW_S:
            raise HTTPException(422, f"end ({end}) must be {range_rule}; start is {start}")
        found: EnergyWindow = sampler.history.window(start, end)
        return JSONResponse(
            {
                "start": start,
                "end": end,
                "energy_j": found.energy_j,
                "measured_j": found.measured_j,
                "covered_s": found.covered_s,
                "watts": found.watts,
                "source": found.source,
                "samples": found.samples,
            }
        )

    @app.get("/healthz", response_model=PowerHealthOut, tags=["operations"])
    async def healthz() -> PowerHealthOut:
        latest = sampler.history.latest()
        skipped = dict(unavailable)
        sources: list[str] = []
        for meter in meters:
            if isinstance(meter, CompositeMeter):
                skipped.update(meter.unavailable)
                sources.extend(m.source for m in meter.meters if m.source not in skipped)
            else:
                sources.append(meter.source)
        return PowerHealthOut(
            status=_health_status(meters, latest.source if latest else None),
            sources=sources,
            active_source=latest.source if latest else None,
            unavailable=skipped,
            errors=dict(sampler.errors),
            sample_interval_s=config.sample_interval_s,
            last_reading_age_s=None if latest is None else max(0.0, time.time() - latest.end_s),
            readings_kept=len(sampler.history),
        )

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


_NO_SOURCE = (
    "no power source on this node (no RAPL, GPU or Kepler); start the power server with"
    " --estimate-watts W or --profile CSV --servers K for a labelled estimate"
)


class _NoSource(PowerMeter):
    """Stands in when the node has no source at all, so the server runs and says so."""

    source = "none"

    def read(self) -> PowerReading:
        raise MeterUnavailable(_NO_SOURCE)


def _no_readings(meters: list[PowerMeter], errors: dict[str, str]) -> str:
    if not meters:
        return _NO_SOURCE
    detail = "; ".join(f"{k}: {v}" for k, v in errors.items()) or "no reading yet"
    return f"no power readings in that window ({detail})"
