"""Helpers shared by the CLI command groups: error reporting and carbon-data loading."""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import pandas as pd
import typer
from rich.console import Console

from carbonscaler import datasets
from carbonscaler.control.backend import BackendError
from carbonscaler.control.spec import SpecError
from carbonscaler.forecast import ForecastError
from carbonscaler.planner.model import PlanningError
from carbonscaler.profile import ProfileError
from carbonscaler.providers import ProviderError
from carbonscaler.trace import CarbonTrace, TraceError, load_trace

P = ParamSpec("P")
R = TypeVar("R")

# Piped output (files, CI logs) gets a wide fixed width so tables are not folded to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

# Errors that are the user's input, not our bug: one red line, exit code 2, no traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    PlanningError,
    ProfileError,
    TraceError,
    datasets.DatasetError,
    SpecError,
    BackendError,
    ProviderError,
    ForecastError,
    FileNotFoundError,
)


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn expected input errors into a clear message and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = func(*args, **kwargs)
            for w in caught:
                err_console.print(
                    f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True
                )
            return result
        except USER_ERRORS as exc:
            err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


def parse_start(value: str) -> pd.Timestamp:
    """An ISO 8601 time as a UTC timestamp (naive means UTC)."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise TraceError(
            f"--start {value!r} is not an ISO 8601 time; use e.g. 2022-06-01T00:00Z"
        ) from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def load_carbon(
    trace: Path | None,
    zone: str | None,
    signal: str,
    slot_minutes: int,
    start: pd.Timestamp,
) -> CarbonTrace:
    """The carbon trace to plan on: a file, or the offline dataset's zone for the start year.

    Raises:
        TraceError: if neither a trace nor a zone is given, or the file cannot be read.
        DatasetError: if the offline dataset is missing or lacks the zone/year.
    """
    if trace is not None:
        loaded = load_trace(trace, signal=signal, zone=zone)
    elif zone is not None:
        loaded = datasets.load(zone, start.year)
    else:
        raise TraceError(
            "give --trace PATH (a carbon-intensity CSV) or --zone ZONE (the offline dataset; "
            "see `carbonscaler traces list`)"
        )
    if slot_minutes <= 0:
        raise TraceError(f"--slot-minutes must be positive, got {slot_minutes}")
    return loaded.resample(slot_minutes)
