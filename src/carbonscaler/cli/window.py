"""``carbonscaler best-window``: when to start a job that runs for a fixed time."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from carbonscaler.cli._common import (
    SERVICE_FLAGS,
    SERVICE_HELP,
    TRACE_FLAGS,
    TRACE_HELP,
    YEAR_FLAGS,
    YEAR_HELP,
    ZONE_FLAGS,
    ZONE_HELP,
    FillGapsOption,
    TzOption,
    console,
    load_carbon,
    open_trace,
    parse_start,
    user_errors,
)


@user_errors
def best_window_command(
    duration_h: Annotated[
        float, typer.Option("--duration-h", help="How long the job runs, in hours.")
    ],
    within_h: Annotated[
        float, typer.Option("--within-h", help="It must finish within this many hours.")
    ],
    trace: Annotated[Path | None, typer.Option(*TRACE_FLAGS, help=TRACE_HELP)] = None,
    zone: Annotated[str | None, typer.Option(*ZONE_FLAGS, help=ZONE_HELP)] = None,
    year: Annotated[int | None, typer.Option(*YEAR_FLAGS, help=YEAR_HELP)] = None,
    start: Annotated[
        str | None,
        typer.Option(help="Now, for a trace or the dataset (ISO 8601; default its first slot)."),
    ] = None,
    slot_minutes: Annotated[int, typer.Option(help="Slot length for a trace.")] = 60,
    fill_gaps: FillGapsOption = None,
    tz: TzOption = None,
    carbon_service: Annotated[str | None, typer.Option(*SERVICE_FLAGS, help=SERVICE_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The best time to start a job that cannot scale or pause: the window of --duration-h
    hours, ending within --within-h hours, with the least mean carbon intensity.

    On a trace or the offline dataset the intensities are the actual ones (perfect foresight);
    a carbon service answers from its own forecast (GET /v1/best-window).
    """
    from carbonscaler.planner.model import PlanningError

    for name, hours in (("--duration-h", duration_h), ("--within-h", within_h)):
        if not (math.isfinite(hours) and hours > 0):
            raise PlanningError(f"{name} must be a positive number of hours, got {hours}")
    if duration_h > within_h:
        raise PlanningError(
            f"a {duration_h:g} h job cannot finish within {within_h:g} h; give --within-h >= "
            "--duration-h"
        )
    if carbon_service is not None:
        if trace is not None or zone is not None or year is not None or start is not None:
            raise PlanningError("give --carbon-service, or a trace/dataset with --start, not both")
        answer = _ask_service(carbon_service, duration_h, within_h)
    else:
        answer = _from_trace(
            trace, zone, year, start, slot_minutes, duration_h, within_h, fill_gaps, tz
        )
    if as_json:
        typer.echo(json.dumps(answer))
        return
    begins, ends = (_readable(answer[key]) for key in ("start", "end"))
    console().print(
        f"Start at {begins} (ends {ends}): mean {answer['mean_g_per_kwh']:.1f} gCO2eq/kWh over "
        f"{duration_h:g} h, saving {answer['saving_pct']:.1f} % against starting now "
        f"({answer['now_g_per_kwh']:.1f} gCO2eq/kWh).",
        highlight=False,
    )


def _readable(iso: str) -> str:
    """An ISO 8601 time as ``2019-06-01 09:00 UTC``."""
    from datetime import UTC, datetime

    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _from_trace(
    trace: Path | None,
    zone: str | None,
    year: int | None,
    start: str | None,
    slot_minutes: int,
    duration_h: float,
    within_h: float,
    fill_gaps: int | None,
    tz: str | None,
) -> dict[str, Any]:
    """The best window on the actual intensities of a trace or the offline dataset."""
    import pandas as pd

    from carbonscaler.planner.window import best_window
    from carbonscaler.trace import TraceError

    if start is not None:
        now = parse_start(start)
        carbon = load_carbon(
            trace, zone, "direct", slot_minutes, now, year, fill_gaps=fill_gaps, tz=tz
        )
    else:
        if slot_minutes <= 0:
            raise TraceError(f"--slot-minutes must be positive, got {slot_minutes}")
        carbon = open_trace(trace, zone, year, fill_gaps=fill_gaps, tz=tz).resample(slot_minutes)
        now = carbon.series.index[0]
    slot_h = slot_minutes / 60
    horizon = math.floor(within_h / slot_h + 1e-9)
    first = carbon.index_of(now)
    if first + horizon > len(carbon.series):
        raise TraceError(
            f"the trace ends {carbon.series.index[-1]}; {within_h:g} h from {now} runs past it; "
            "choose an earlier --start or a shorter --within-h"
        )
    window = best_window(carbon.values[first : first + horizon], duration_h / slot_h)
    begins = carbon.series.index[first + window.start_slot]
    return {
        "zone": carbon.zone,
        "start": begins.isoformat(),
        "end": (begins + pd.Timedelta(hours=duration_h)).isoformat(),
        "duration_h": duration_h,
        "mean_g_per_kwh": window.mean_g_per_kwh,
        "now_g_per_kwh": window.now_g_per_kwh,
        "saving_pct": window.saving_pct,
        "method": "actual",
        "source": str(carbon.source),
        "notes": list(carbon.notes),
    }


def _ask_service(url: str, duration_h: float, within_h: float) -> dict[str, Any]:
    """The carbon service's best window (from its forecast)."""
    import httpx

    from carbonscaler.providers import ProviderError

    try:
        reply = httpx.get(
            url.rstrip("/") + "/v1/best-window",
            params={"duration_h": duration_h, "within_h": within_h},
            timeout=10.0,
        )
    except httpx.HTTPError as exc:
        raise ProviderError("carbon-service", f"{url} did not answer: {exc}") from None
    if reply.status_code != 200:
        try:
            detail = reply.json().get("detail", reply.text)
        except ValueError:
            detail = reply.text
        raise ProviderError("carbon-service", f"{url} answered {reply.status_code}: {detail}")
    answer: dict[str, Any] = reply.json()
    return answer
