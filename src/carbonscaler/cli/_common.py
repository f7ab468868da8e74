"""Helpers shared by the CLI command groups: error reporting, carbon sources, serving an app.

Every command that takes a carbon source spells it the same way, where it makes sense:

* ``--trace PATH`` — a carbon-intensity file (``--zone Z`` then picks one zone of a file that
  names several);
* ``--zone Z [--year Y]`` — the offline dataset (ENTSO-E), see ``carbonscaler traces list``;
* ``--provider NAME:ZONE`` — live providers, e.g. ``ukgrid:GB``, comma-separated for fallback;
* ``--carbon-service URL`` — the carbon service.

Older spellings stay as aliases (``--carbon-trace``, the carbon service's ``--carbon-path``/
``-f``; on the long-running commands ``--zone SPEC`` without ``--trace`` or ``--year`` still means
live providers). :func:`open_trace` opens a trace source; :func:`pick_carbon_source` checks the
long-running commands' choice of one source.

Where a command reads trace files, ``--fill-gaps N`` (:data:`FillGapsOption`) says how long a
gap may be interpolated and ``--tz ZONE`` (:data:`TzOption`) what zone naive timestamps are in;
pass both on to :func:`open_trace` / :func:`load_carbon`.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer

# Light at module level, as every command module (see carbonscaler.cli): what is heavier is
# imported inside the functions that use it.
if TYPE_CHECKING:
    import pandas as pd
    from fastapi import FastAPI
    from rich.console import Console

    from carbonscaler.providers import FallbackChain
    from carbonscaler.trace import CarbonTrace

P = ParamSpec("P")
R = TypeVar("R")


@functools.cache
def console() -> Console:
    """The console for results, on standard output (made on first use)."""
    from rich.console import Console

    # Piped output (files, CI logs) gets a wide fixed width so tables are not folded to 80
    # columns.
    return Console(width=None if sys.stdout.isatty() else 160)


@functools.cache
def err_console() -> Console:
    """The console for progress, warnings and errors, on standard error (made on first use)."""
    from rich.console import Console

    return Console(stderr=True)


# Errors that are the user's input, not our bug: one red line, exit code 2, no traceback.
# Named, not imported: their modules are heavy, and an error cannot have been raised unless its
# module was imported, so :func:`user_errors` looks only at the modules loaded by then.
USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("carbonscaler.planner.model", "PlanningError"),
    ("carbonscaler.profile", "ProfileError"),
    ("carbonscaler.trace", "TraceError"),
    ("carbonscaler.datasets", "DatasetError"),
    ("carbonscaler.control.spec", "SpecError"),
    ("carbonscaler.control.state", "StateError"),
    ("carbonscaler.backends.base", "BackendError"),
    ("carbonscaler.providers.base", "ProviderError"),
    ("carbonscaler.forecast_names", "ForecastError"),
    ("carbonscaler.outputs", "OutputError"),
    ("builtins", "FileNotFoundError"),
)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The classes of :data:`USER_ERRORS` whose modules have been imported."""
    loaded = (sys.modules.get(module) for module, _ in USER_ERRORS)
    return tuple(
        getattr(module, name)
        for module, (_, name) in zip(loaded, USER_ERRORS, strict=True)
        if module is not None
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
                err_console().print(
                    f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True
                )
            return result
        except Exception as exc:
            if not isinstance(exc, user_error_types()):
                raise
            err_console().print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


@contextlib.contextmanager
def setup_errors(*errors: type[Exception]) -> Iterator[None]:
    """Turn the ``errors`` of a long-running command's setup into one red line and exit code 2."""
    try:
        yield
    except errors as exc:
        err_console().print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(code=2) from None


def serve(app: FastAPI, *, host: str, port: int, log_level: str = "warning") -> None:
    """Serve a service's app until interrupted, its log (INFO and up) on standard error."""
    import logging

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def parse_start(value: str) -> pd.Timestamp:
    """An ISO 8601 time as a UTC timestamp (naive means UTC)."""
    import pandas as pd

    from carbonscaler.trace import TraceError

    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise TraceError(
            f"--start {value!r} is not an ISO 8601 time; use e.g. 2022-06-01T00:00Z"
        ) from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


# The shared spellings of a carbon source (first name canonical, the rest aliases).
TRACE_FLAGS = ("--trace", "--carbon-trace")
ZONE_FLAGS = ("--zone",)
YEAR_FLAGS = ("--year",)
PROVIDER_FLAGS = ("--provider",)
SERVICE_FLAGS = ("--carbon-service",)

TRACE_HELP = "Carbon-intensity file (any format `carbonscaler traces` reads)."
ZONE_HELP = (
    "With --trace: the zone to select in a file that names zones. Without: a zone of the "
    "offline dataset (see `carbonscaler traces list`)."
)
YEAR_HELP = "Offline-dataset year for --zone (default: the latest)."
PROVIDER_HELP = (
    "Live providers, NAME:ZONE, e.g. ukgrid:GB, em:DE, watttime:CAISO_NORTH; comma-separated "
    "for fallback (keys: $ELECTRICITYMAPS_API_KEY, $WATTTIME_USER/$WATTTIME_PASSWORD)."
)
SERVICE_HELP = "Carbon service base URL (carbonscaler carbon-service)."

DEFAULT_FILL_GAPS = 3
"""carbonscaler.trace.DEFAULT_MAX_GAP, restated so that this module stays light (a test keeps
the two equal)."""
FILL_GAPS_FLAGS = ("--fill-gaps",)
FILL_GAPS_HELP = (
    f"Interpolate gaps in a trace of up to N consecutive missing values (default "
    f"{DEFAULT_FILL_GAPS}); a longer gap is an error naming it. Every fill is reported."
)
TZ_FLAGS = ("--tz",)
TZ_HELP = (
    "Time zone of a trace file's timestamps that carry none, e.g. Europe/Berlin or +01:00 "
    "(default: UTC, with a note saying so)."
)
FillGapsOption = Annotated[
    int | None, typer.Option(*FILL_GAPS_FLAGS, help=FILL_GAPS_HELP, metavar="N", min=0)
]
"""``--fill-gaps N`` for a command that reads trace files (None: the default)."""
TzOption = Annotated[str | None, typer.Option(*TZ_FLAGS, help=TZ_HELP, metavar="ZONE")]
"""``--tz ZONE`` for a command that reads trace files."""
# The long-running commands keep --zone's older meaning when it comes alone.
LIVE_ZONE_HELP = (
    "With --trace: the zone of a multi-zone file. With --year: a zone of the offline dataset. "
    "Alone: live providers, as --provider (the older spelling)."
)


def open_trace(
    trace: Path | None,
    zone: str | None = None,
    year: int | None = None,
    *,
    signal: str = "direct",
    fill_gaps: int | None = None,
    tz: str | None = None,
) -> CarbonTrace:
    """The carbon trace a command names: a file, or a zone of the offline dataset.

    What loading repaired or assumed is in the trace's ``notes`` (and in
    :class:`~carbonscaler.trace.TraceWarning` warnings, which :func:`user_errors` prints).

    Args:
        trace: A carbon-intensity file; ``zone`` then selects a zone of a file that names
            several (or labels one that does not).
        zone: Without ``trace``: a zone of the offline dataset.
        year: The dataset year (None: the latest); not for a file.
        signal: The file's column where it has several (``direct``, ``lca``, ``avg``).
        fill_gaps: Longest gap to interpolate, in values (``--fill-gaps``). None: for a
            file :data:`DEFAULT_FILL_GAPS`, for the offline dataset any (it cannot be
            repaired by the user; its fills are noted all the same).
        tz: Zone of a file's naive timestamps (``--tz``); None takes them as UTC, noted.

    Raises:
        TraceError: if neither a trace nor a zone is given, a year or ``tz`` is given with
            the dataset, or the file cannot be read (including a gap over ``fill_gaps``).
        DatasetError: if the offline dataset is missing or lacks the zone/year.
    """
    from carbonscaler import datasets
    from carbonscaler.trace import TraceError, load_trace

    if fill_gaps is not None and fill_gaps < 0:
        raise TraceError(f"--fill-gaps must be 0 or more values, not {fill_gaps}")
    if trace is not None:
        if year is not None:
            raise TraceError("--year selects a dataset year; it does not apply to a file")
        max_gap = DEFAULT_FILL_GAPS if fill_gaps is None else fill_gaps
        return load_trace(trace, signal=signal, zone=zone, max_gap=max_gap, tz=tz)
    if zone is not None:
        if tz is not None:
            raise TraceError(
                "--tz applies to trace files whose timestamps carry no zone; the offline"
                " dataset's are UTC already"
            )
        return datasets.load(zone, year, max_gap=fill_gaps)
    raise TraceError(
        "give --trace PATH (a carbon-intensity CSV) or --zone ZONE (the offline dataset; "
        "see `carbonscaler traces list`)"
    )


def load_carbon(
    trace: Path | None,
    zone: str | None,
    signal: str,
    slot_minutes: int,
    start: pd.Timestamp,
    year: int | None = None,
    *,
    fill_gaps: int | None = None,
    tz: str | None = None,
    shows_notes: bool = False,
) -> CarbonTrace:
    """The carbon trace to plan on, at the slot length: a file, or the offline dataset's zone
    for ``year`` (default: the start's year).

    What loading repaired or assumed is in the trace's ``notes``, and comes as
    :class:`~carbonscaler.trace.TraceWarning` warnings too (which :func:`user_errors` prints).
    A caller that shows the notes with its result (``plan``: table and ``--json``) passes
    ``shows_notes=True``, and those warnings are not repeated (other warnings pass through).

    Raises:
        TraceError: if neither a trace nor a zone is given, or the file cannot be read.
        DatasetError: if the offline dataset is missing or lacks the zone/year.
    """
    from carbonscaler.trace import TraceError, TraceWarning

    if trace is None and zone is not None and year is None:
        year = start.year
    if slot_minutes <= 0:
        raise TraceError(f"--slot-minutes must be positive, got {slot_minutes}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = open_trace(trace, zone, year, signal=signal, fill_gaps=fill_gaps, tz=tz)
    noted = {f"{loaded.source}: {note}" for note in loaded.notes} if shows_notes else set()
    for w in caught:
        if not (issubclass(w.category, TraceWarning) and str(w.message) in noted):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return loaded.resample(slot_minutes)


@dataclass(frozen=True)
class CarbonSourceChoice:
    """The one carbon source a long-running command was given.

    Exactly one of ``trace`` (a trace to replay: a file, read with ``--fill-gaps``/``--tz``, or
    an offline-dataset zone and year), ``provider`` (a live-provider spec) and ``service_url``
    is set.
    """

    trace: CarbonTrace | None = None
    provider: str | None = None
    service_url: str | None = None

    def cached_provider(self, db_path: Path) -> FallbackChain | None:
        """The live providers of ``provider``, their answers cached beside a service's database
        (``db_path`` with the suffix ``.cache``); None for another source."""
        if self.provider is None:
            return None
        from carbonscaler.providers import TTLCache, live_provider

        return live_provider(self.provider, cache=TTLCache(db_path.with_suffix(".cache")))


def pick_carbon_source(
    *,
    trace: Path | None,
    zone: str | None,
    year: int | None,
    provider: str | None,
    carbon_service: str | None = None,
    trace_flag: str = "--trace",
    signal: str = "direct",
    fill_gaps: int | None = None,
    tz: str | None = None,
) -> CarbonSourceChoice | None:
    """Check the carbon-source options of a long-running command and read a trace it names;
    None if no source was given.

    ``--zone`` with ``--trace`` picks the zone of the file, with ``--year`` (and no trace) a
    zone of the offline dataset, and alone means live providers (its older meaning). A trace
    file is read as every command reads one (:func:`open_trace`: ``signal``, ``fill_gaps``,
    ``tz``).

    Raises:
        ValueError: if several sources are given, or ``--year`` comes without a dataset zone.
        TraceError: if the trace file cannot be read (a gap longer than ``fill_gaps`` ...).
        DatasetError: if the offline dataset lacks the zone/year.
    """
    if year is not None and (trace is not None or zone is None):
        raise ValueError("--year selects an offline-dataset year: give it with --zone, no trace")
    if provider is not None and zone is not None and trace is None:
        raise ValueError("give --provider SPEC or --zone, not both")
    live = provider if provider is not None else (zone if trace is None and year is None else None)
    dataset_zone = zone if trace is None and year is not None else None
    given = [
        name
        for name, value in (
            (trace_flag, trace),
            ("--zone/--year", dataset_zone),
            ("--provider", live),
            ("--carbon-service", carbon_service),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"give exactly one carbon source, not {' and '.join(given)}")
    if trace is not None:
        return CarbonSourceChoice(
            trace=open_trace(trace, zone, signal=signal, fill_gaps=fill_gaps, tz=tz)
        )
    if dataset_zone is not None:
        return CarbonSourceChoice(trace=open_trace(None, dataset_zone, year))
    if live is not None:
        return CarbonSourceChoice(provider=live)
    if carbon_service is not None:
        return CarbonSourceChoice(service_url=carbon_service)
    return None
