"""The what-if page's model: its query, the sweep behind it, and what the page shows.

The numbers are CarbonAdvisor's: a query becomes the :class:`~carbonscaler.advisor.SweepSpec`
that ``carbonscaler advise`` builds from the same options (:meth:`AdvisorQuery.cli_args`
prints that command), :func:`~carbonscaler.advisor.run_sweep` simulates it, and the table
is the advisor's ranked summary (:func:`~carbonscaler.advisor.ranked_summary`: deadline-meeting
policies first), its savings worded as the advisor's table words them. What is added here is
only the slicing a page needs: percentiles over start times, means by hour of day and month,
and one run's schedule, re-simulated with its per-slot record.

Sweeps are cached by query (a link opened twice, or a chart setting changed, costs nothing)
and run one at a time; a sweep can be cancelled between two policy runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from carbonscaler.forecast_names import FORECAST_MODELS
from carbonscaler.planner.names import POLICIES
from carbonscaler.ui.catalog import Catalog

if TYPE_CHECKING:
    import pandas as pd

    from carbonscaler.advisor import SweepResult, SweepSpec

__all__ = [
    "MAX_TRACES",
    "AdvisorQuery",
    "QueryError",
    "SweepCache",
    "SweepCancelled",
    "build_spec",
    "parse_query",
    "results_view",
    "schedule_view",
    "warm_up",
]

MAX_TRACES = 6
"""Traces compared at once: each adds a year of simulations."""
MAX_LENGTH_H = 8784.0  # a leap year
MAX_OVERHEAD_S = 86_400.0
MAX_SERVERS_FORM = 1024
CACHE_SIZE = 6
"""Sweeps kept: a year-long one for one trace is ~10 MB."""


class QueryError(ValueError):
    """The query's values are not usable; ``problems`` says what is wrong with each."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class SweepCancelled(Exception):
    """The page that asked for a sweep went away before it finished."""


@dataclass(frozen=True)
class AdvisorQuery:
    """The what-if page's state, as its URL query carries it.

    The first fields are the sweep's (``carbonscaler advise``'s options of the same meaning);
    ``focus``, ``show`` and ``start`` only choose what the charts show.
    """

    traces: tuple[str, ...]
    profile: str = "amdahl:0.05"
    length: float = 24.0
    slack: float = 1.5
    min_servers: int = 1
    max_servers: int = 8
    forecast: str = "perfect"
    error: float = 0.0
    overhead: float = 0.0
    starts: str = "all"
    focus: str = ""
    show: str = "carbonscaler"
    start: str = ""

    def sweep_key(self) -> tuple[Any, ...]:
        """What the sweep depends on (the view-only fields left out)."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name not in _VIEW_ONLY)

    def params(self) -> list[tuple[str, str]]:
        """The query as URL parameters, in the form's order (view fields only when set)."""
        out = [("trace", t) for t in self.traces]
        for name, param in _PARAMS.items():
            value = getattr(self, name)
            if name in _VIEW_ONLY and not value:
                continue
            out.append((param, _text(value)))
        return out

    def focus_trace(self) -> str:
        """The trace the charts are about: ``focus`` when it is one of the traces."""
        return self.focus if self.focus in self.traces else self.traces[0]

    def cli_args(self, catalog: Catalog) -> list[str]:
        """The ``carbonscaler advise`` arguments that print the same numbers (``--json``)."""
        args = ["carbonscaler", "advise"]
        for name in self.traces:
            choice = catalog.trace(name)
            if choice.path is not None:
                args += ["--trace", str(choice.path)]
            else:
                args += ["--zone", str(choice.zone), "--year", str(choice.year)]
        profile = self.profile
        for offered in catalog.profiles():
            if offered.name == profile:
                profile = str(offered.path)
        args += [
            "--profile",
            profile,
            "--length",
            _text(self.length),
            "--slack",
            _text(self.slack),
            "--min",
            str(self.min_servers),
            "--max",
            str(self.max_servers),
            "--forecast-model",
            self.forecast,
            "--forecast-error",
            _text(self.error),
            "--rescale-overhead-s",
            _text(self.overhead),
            "--starts",
            self.starts,
        ]
        return args


_PARAMS = {  # field -> URL parameter (after the repeated "trace")
    "profile": "profile",
    "length": "length",
    "slack": "slack",
    "min_servers": "min",
    "max_servers": "max",
    "forecast": "forecast",
    "error": "error",
    "overhead": "overhead",
    "starts": "starts",
    "focus": "focus",
    "show": "show",
    "start": "start",
}
_VIEW_ONLY = frozenset({"focus", "show", "start"})


def _text(value: object) -> str:
    """A value as the URL says it: ``24`` rather than ``24.0``."""
    if isinstance(value, float):
        return f"{value:g}" if value == float(f"{value:g}") else repr(value)
    return str(value)


def _number(
    params: Mapping[str, Sequence[str]],
    name: str,
    default: float,
    problems: list[str],
    *,
    what: str,
    low: float,
    high: float,
    low_inclusive: bool = True,
    whole: bool = False,
) -> float:
    """The number in parameter ``name``, or its default; a problem noted if it is not one.

    Args:
        params: the query's parameters.
        name: the parameter.
        default: its value when it is missing or empty.
        problems: where a problem is noted: ``"slack (deadline = slack × length): must be
            at least 1 and at most 100, not 0.5"``.
        what: what the parameter is, for the message.
        low: the least value (or the bound it must exceed, without ``low_inclusive``).
        high: the greatest value.
        low_inclusive: whether ``low`` itself is allowed.
        whole: whether the value must be a whole number.
    """
    raw = (params.get(name) or [""])[-1].strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"{name} ({what}): must be a number, not {raw!r}")
        return default
    too_low = value < low if low_inclusive else value <= low
    if not math.isfinite(value) or too_low or value > high:
        bound = f"at least {low:g}" if low_inclusive else f"more than {low:g}"
        problems.append(f"{name} ({what}): must be {bound} and at most {high:g}, not {raw}")
        return default
    if whole and not value.is_integer():
        problems.append(f"{name} ({what}): must be a whole number, not {raw}")
        return default
    return value


def parse_query(params: Mapping[str, Sequence[str]], default_trace: str | None) -> AdvisorQuery:
    """The page's state from its URL parameters (missing ones take their defaults).

    Only the form of each value is checked here; whether the traces and the profile exist
    and the job is feasible is :func:`build_spec`'s and the sweep's business.

    Args:
        params: every parameter's values (a repeated ``trace`` compares regions).
        default_trace: the trace when none is given.

    Raises:
        QueryError: listing every value that is not usable, each with what it should be.
    """
    problems: list[str] = []
    traces = tuple(dict.fromkeys(t.strip() for t in params.get("trace", []) if t.strip()))
    if not traces and default_trace is not None:
        traces = (default_trace,)
    if not traces:
        problems.append("trace: no trace is offered; start the dashboard with --traces DIR")
    if len(traces) > MAX_TRACES:
        problems.append(f"trace: compare at most {MAX_TRACES} traces at once, not {len(traces)}")
    length = _number(
        params,
        "length",
        24.0,
        problems,
        what="job length, hours at min servers",
        low=0,
        high=MAX_LENGTH_H,
        low_inclusive=False,
    )
    slack = _number(
        params, "slack", 1.5, problems, what="deadline = slack × length", low=1, high=100
    )
    low = _number(
        params, "min", 1, problems, what="fewest servers", low=1, high=MAX_SERVERS_FORM, whole=True
    )
    high = _number(
        params, "max", 8, problems, what="most servers", low=1, high=MAX_SERVERS_FORM, whole=True
    )
    if low > high:
        problems.append(f"min/max: min servers ({low:g}) must not exceed max servers ({high:g})")
    error = _number(
        params, "error", 0.0, problems, what="forecast error, 0.1 = ±10 %", low=0, high=0.99
    )
    overhead = _number(
        params,
        "overhead",
        0.0,
        problems,
        what="seconds lost per rescale",
        low=0,
        high=MAX_OVERHEAD_S,
    )
    forecast = (params.get("forecast") or ["perfect"])[-1].strip().lower() or "perfect"
    if forecast not in FORECAST_MODELS:
        problems.append(
            f"forecast: {forecast!r} is not a forecast model; use one of"
            f" {', '.join(FORECAST_MODELS)}"
        )
    starts = (params.get("starts") or ["all"])[-1].strip().lower() or "all"
    if starts != "all" and not (starts.isdigit() and int(starts) > 0):
        problems.append(f"starts: use 'all' or a number of evenly spaced starts, not {starts!r}")
    show = (params.get("show") or ["carbonscaler"])[-1].strip() or "carbonscaler"
    if show not in POLICIES:
        problems.append(f"show: {show!r} is not a policy; use one of {', '.join(POLICIES)}")
    profile = (params.get("profile") or [""])[-1].strip() or AdvisorQuery.profile
    if problems:
        raise QueryError(problems)
    return AdvisorQuery(
        traces=traces,
        profile=profile,
        length=length,
        slack=slack,
        min_servers=int(low),
        max_servers=int(high),
        forecast=forecast,
        error=error,
        overhead=overhead,
        starts=starts,
        focus=(params.get("focus") or [""])[-1].strip(),
        show=show,
        start=(params.get("start") or [""])[-1].strip(),
    )


def build_spec(query: AdvisorQuery, catalog: Catalog) -> tuple[SweepSpec, dict[str, str]]:
    """The sweep ``carbonscaler advise`` runs for the same options, and the dashboard's
    name of each trace by its ``source`` (the runs' ``trace`` column).

    Raises:
        UnknownNameError: for a trace that is not offered.
        ProfileError, TraceError, DatasetError, ForecastError, PlanningError: as
            ``carbonscaler advise`` would for these options.
    """
    from carbonscaler.advisor import (
        Conditions,
        SweepSpec,
        resolve_starts,
    )

    traces = [catalog.load_trace(name) for name in query.traces]
    names = {trace.source: name for trace, name in zip(traces, query.traces, strict=True)}
    profile = catalog.load_profile(query.profile, default_servers=query.max_servers)
    conditions = Conditions.from_options(
        forecast_model=query.forecast,
        forecast_error=query.error,
        rescale_overhead_s=query.overhead,
    )
    spec = SweepSpec(
        traces=traces,
        profile=profile,
        length_hours=query.length,
        slacks=[query.slack],
        min_servers=[query.min_servers],
        max_servers=[query.max_servers],
        policies=list(POLICIES),
        starts="all" if query.starts == "all" else int(query.starts),
        conditions=conditions,
    )
    # What makes the job infeasible is found now, before the page waits for a sweep: the
    # bounds against the profile, and room for the deadline in each trace.
    for scenario in spec.scenarios():
        spec.job(scenario)
        resolve_starts(
            scenario.trace.resample(spec.slot_minutes), spec.starts, spec.deadline_slots(scenario)
        )
    return spec, names


# -- running sweeps --------------------------------------------------------------------------

Progress = Callable[[int, int, str], None]


@dataclass
class SweepCache:
    """Sweeps by query, the newest few kept; one runs at a time (they use every core)."""

    size: int = CACHE_SIZE
    _results: OrderedDict[tuple[Any, ...], SweepResult] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _running: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: tuple[Any, ...]) -> SweepResult | None:
        """The cached sweep for ``key``, if any."""
        with self._lock:
            result = self._results.get(key)
            if result is not None:
                self._results.move_to_end(key)
            return result

    def run(
        self,
        key: tuple[Any, ...],
        spec: SweepSpec,
        progress: Progress,
        cancelled: threading.Event,
    ) -> SweepResult:
        """The sweep for ``key``: from the cache, or run (after any sweep already running).

        Args:
            key: the query's :meth:`AdvisorQuery.sweep_key`.
            spec: its sweep.
            progress: ``progress(done, total, label)`` as policies finish.
            cancelled: set when the asker has gone; the sweep stops at the next policy.

        Raises:
            SweepCancelled: if ``cancelled`` was set first.
            PlanningError, ProfileError: for an infeasible sweep.
        """
        from carbonscaler.advisor import default_jobs, run_sweep

        cached = self.get(key)
        if cached is not None:
            return cached
        progress(0, 0, "waiting for the sweep before this one")
        while not self._running.acquire(timeout=0.1):
            if cancelled.is_set():
                raise SweepCancelled
        try:
            cached = self.get(key)  # the sweep that held the lock may have been this one
            if cached is not None:
                return cached

            def checked(done: int, total: int, label: str) -> None:
                if cancelled.is_set():
                    raise SweepCancelled
                progress(done, total, label)

            checked(0, 0, "starting")
            result = run_sweep(spec, checked, jobs=default_jobs())
        finally:
            self._running.release()
        with self._lock:
            self._results[key] = result
            while len(self._results) > self.size:
                self._results.popitem(last=False)
        return result


def warm_up() -> float:
    """Run a tiny sweep of every policy, so that the first real query does not wait for the
    compiled kernels to load; the seconds it took."""
    import numpy as np

    from carbonscaler.advisor import SweepSpec, run_sweep
    from carbonscaler.profile import parse_parametric_spec
    from carbonscaler.trace import from_values

    began = time.perf_counter()
    hours = np.arange(24 * 14)
    trace = from_values(300 + 150 * np.sin(hours * 2 * np.pi / 24), zone="warm-up")
    spec = SweepSpec(
        traces=[trace],
        profile=parse_parametric_spec("amdahl:0.05"),
        length_hours=12,
        starts=4,
    )
    run_sweep(spec)
    return time.perf_counter() - began


# -- what the page shows ---------------------------------------------------------------------

_PERCENTILES = (5, 25, 50, 75, 95)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _float(value: Any) -> float | None:
    """A number for JSON (which has no NaN), rounded to what a page can show."""
    number = float(value)
    return round(number, 4) if math.isfinite(number) else None


def _scenario_rows(group: pd.DataFrame) -> list[dict[str, Any]]:
    """The table's rows, worded as the advisor's own tables word them."""
    from carbonscaler.advisor.report import miss_note, share_of_runs
    from carbonscaler.wording import percent

    rows = []
    for row in group.to_dict("records"):
        misses = int(row["deadline_misses"])
        pct = float(row["deadline_miss_pct"])
        same_as = row["same_as"] if isinstance(row["same_as"], str) else ""
        rows.append(
            {
                "rank": int(row["rank"]),
                "policy": str(row["policy"]),
                "same_as": same_as,
                "missed": misses > 0,
                "saving": percent(float(row["mean_savings_vs_agnostic_pct"])),
                "saving_value": _float(row["mean_savings_vs_agnostic_pct"]),
                "saving_sr": percent(float(row["mean_savings_vs_suspend_resume_pct"])),
                "misses": f"{misses:,} ({share_of_runs(pct)})" if misses else "0",
                "miss_note": miss_note(pct) if misses else "",
                "mean_g": f"{float(row['mean_emissions_g']):,.1f}",
                "completion_h": f"{float(row['mean_completion_hours']):.1f}",
                "server_h": f"{float(row['mean_server_hours']):,.1f}",
                "server_h_change": f"{float(row['server_hours_change_pct']):+.1f} %",
            }
        )
    return rows


def _by_period(runs: pd.DataFrame, policies: Sequence[str], period: str) -> dict[str, Any]:
    """Mean saving vs carbon-agnostic per policy by the start's hour of day or month (UTC),
    with the deadline misses in each."""
    starts = runs["start"].dt.hour if period == "hour" else runs["start"].dt.month
    keys = list(range(24)) if period == "hour" else list(range(1, 13))
    frame = runs.assign(_period=starts)
    series = []
    for policy in policies:
        part = frame[frame["policy"] == policy].groupby("_period")
        saving = part["savings_vs_agnostic_pct"].mean()
        misses = part["deadline_met"].apply(lambda met: int((~met).sum()))
        series.append(
            {
                "name": policy,
                "values": [_float(saving.get(k, math.nan)) for k in keys],
                "misses": [int(misses.get(k, 0)) for k in keys],
            }
        )
    labels = [f"{k:02d}" for k in keys] if period == "hour" else [_MONTHS[k - 1] for k in keys]
    present = [k for k in keys if (starts == k).any()]
    return {"labels": labels, "series": series, "periods": len(present)}


def _distribution(runs: pd.DataFrame, policies: Sequence[str]) -> list[dict[str, Any]]:
    """Per policy: percentiles of the saving over start times, and its misses."""
    import numpy as np

    out = []
    for policy in policies:
        part = runs[runs["policy"] == policy]
        savings = part["savings_vs_agnostic_pct"].to_numpy(dtype=float)
        savings = savings[np.isfinite(savings)]
        if savings.size == 0:
            continue
        p5, p25, p50, p75, p95 = np.percentile(savings, _PERCENTILES)
        misses = int((~part["deadline_met"]).sum())
        out.append(
            {
                "policy": policy,
                "p5": _float(p5),
                "p25": _float(p25),
                "median": _float(p50),
                "p75": _float(p75),
                "p95": _float(p95),
                "mean": _float(savings.mean()),
                "misses": misses,
                "miss_pct": _float(100.0 * misses / len(part)),
            }
        )
    return out


def results_view(
    result: SweepResult, query: AdvisorQuery, names: Mapping[str, str]
) -> dict[str, Any]:
    """What the page shows for a sweep: the headline, one ranked table per trace, and the
    charts' data for the focused trace.

    Args:
        result: the sweep.
        query: the query it answers.
        names: the dashboard's trace name by trace source (:func:`build_spec`).
    """
    from carbonscaler.advisor import RANKING_RULE, ranked_summary
    from carbonscaler.advisor.report import headline

    summary = ranked_summary(result)
    scenarios = []
    for source, group in summary.groupby("trace", sort=False):
        first = group.iloc[0]
        scenarios.append(
            {
                "trace": names.get(str(source), str(source)),
                "zone": str(first["zone"]),
                "runs": int(first["runs"]),
                "cv": _float(first["trace_cv"]),
                "rows": _scenario_rows(group),
                "equal": [
                    f"{r['policy']} = {r['same_as']}" for r in _scenario_rows(group) if r["same_as"]
                ],
            }
        )
    focus = query.focus_trace()
    source = next(s for s, n in names.items() if n == focus)
    runs = result.runs[result.runs["trace"] == source]
    charted = [p for p in POLICIES if p != "agnostic"]
    notes = [
        f"{names.get(t.source, t.source)}: {note}" for t in result.spec.traces for note in t.notes
    ]
    return {
        "headline": headline(result),
        "ranking_rule": RANKING_RULE,
        "scenarios": scenarios,
        "focus": focus,
        "notes": notes,
        "charts": {
            "distribution": _distribution(runs, charted),
            "by_hour": _by_period(runs, charted, "hour"),
            "by_month": _by_period(runs, charted, "month"),
        },
    }


def schedule_view(
    result: SweepResult, query: AdvisorQuery, names: Mapping[str, str]
) -> dict[str, Any]:
    """One run of the focused trace for the chart of servers per slot over the carbon
    curve: the policy ``query.show`` from the sweep's start nearest ``query.start`` (by
    default its median run by emissions).

    The run's numbers are the sweep's; its servers per slot come from simulating that one
    start again with a record of each slot (:func:`~carbonscaler.advisor.simulate_policy`:
    a run depends on nothing but its own start here, as the view offers no profile error).

    Raises:
        PlanningError: if ``query.start`` is not a time.
    """
    import numpy as np
    import pandas as pd

    from carbonscaler.advisor import simulate_policy
    from carbonscaler.planner import PlanningError

    spec = result.spec
    focus = query.focus_trace()
    source = next(s for s, n in names.items() if n == focus)
    runs = result.runs[(result.runs["trace"] == source) & (result.runs["policy"] == query.show)]
    runs = runs.reset_index(drop=True)
    if query.start:
        try:
            wanted = pd.Timestamp(query.start)
        except ValueError:
            raise PlanningError(
                f"start: {query.start!r} is not a time; use e.g. 2022-03-01T06:00Z"
            ) from None
        wanted = wanted.tz_localize("UTC") if wanted.tzinfo is None else wanted.tz_convert("UTC")
        row = int(np.argmin(np.abs((runs["start"] - wanted).dt.total_seconds().to_numpy())))
    else:
        order = np.argsort(runs["emissions_g"].to_numpy(), kind="stable")
        row = int(order[len(order) // 2])
    run = runs.iloc[row]
    scenario = next(s for s in spec.scenarios() if s.trace.source == source)
    trace = scenario.trace.resample(spec.slot_minutes)
    job = spec.job(scenario)
    deadline = spec.deadline_slots(scenario)
    slot_hours = spec.slot_minutes / 60.0
    start = trace.index_of(run["start"])
    met = bool(run["deadline_met"])
    shown = deadline
    if not met:  # drawn until it ends, up to twice the deadline
        end = float(run["completion_hours"])
        late = int(np.ceil(end / slot_hours)) if np.isfinite(end) else 2 * deadline
        shown = max(deadline, min(late, 2 * deadline, len(trace) - start))
    outcome = simulate_policy(
        query.show,
        job,
        trace.values,
        np.array([start], dtype=np.int64),
        deadline,
        spec.conditions,
        record_slots=shown,
    )
    if outcome.servers_by_slot is not None:
        servers = outcome.servers_by_slot[0]
    else:  # static-best keeps no record: one level from arrival until done
        done = float(outcome.completion_hours[0])
        done = done if np.isfinite(done) else shown * slot_hours
        level = float(outcome.server_hours[0]) / max(done, 1e-9)
        hours = np.arange(shown) * slot_hours
        servers = level * np.clip(done - hours, 0.0, slot_hours) / slot_hours
    completion = float(run["completion_hours"])
    return {
        "trace": focus,
        "policy": query.show,
        "start": pd.Timestamp(run["start"]).strftime("%Y-%m-%dT%H:%MZ"),
        "starts": {
            "first": pd.Timestamp(runs["start"].iloc[0]).strftime("%Y-%m-%dT%H:%M"),
            "last": pd.Timestamp(runs["start"].iloc[-1]).strftime("%Y-%m-%dT%H:%M"),
        },
        "slot_hours": slot_hours,
        "deadline_hours": deadline * slot_hours,
        "completion_hours": completion if math.isfinite(completion) else None,
        "deadline_met": met,
        "emissions_g": _float(run["emissions_g"]),
        "saving_pct": _float(run["savings_vs_agnostic_pct"]),
        "max_servers": job.max_servers,
        "servers": [_float(x) for x in servers],
        "carbon": [_float(x) for x in trace.values[start : start + shown]],
    }
