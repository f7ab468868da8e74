"""The cluster page's model: a generated stream of jobs sharing a capacity, over a trace.

The numbers are CarbonAdvisor's for shared clusters (:mod:`carbonscaler.advisor.cluster`): a
query becomes the job stream ``carbonscaler advise-cluster --generate N`` generates for the same
options (:func:`~carbonscaler.control.cluster_spec.generate_cluster_spec`), the trace from the
same start, and the same conditions; every policy is simulated by
:func:`~carbonscaler.advisor.cluster.simulate_cluster` (one after the other, as
:func:`~carbonscaler.advisor.cluster.compare_cluster_policies` does, so that a run can be
cancelled between two policies), and the table is :func:`~carbonscaler.advisor.cluster.
cluster_summary`'s. :meth:`ClusterQuery.cli_args` prints that command.

What is added here is only what a page needs: the servers each job holds per slot of a chosen
policy, every policy's servers in use, the capacity and the carbon intensity over the same
hours. Results are cached by query (the newest few) and one simulation runs at a time.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from carbonscaler.forecast_names import FORECAST_MODELS
from carbonscaler.ui.advisor import MAX_OVERHEAD_S, QueryError, SweepCancelled, _number, _text
from carbonscaler.ui.catalog import INLINE_PREFIX, Catalog

if TYPE_CHECKING:
    import pandas as pd

    from carbonscaler.advisor import Conditions
    from carbonscaler.advisor.cluster import ClusterOutcome
    from carbonscaler.planner.cluster import ClusterJob

__all__ = [
    "CLUSTER_PAGE_POLICIES",
    "MAX_JOBS",
    "ClusterCache",
    "ClusterQuery",
    "PreparedCluster",
    "cluster_view",
    "parse_cluster_query",
    "prepare_cluster",
]

MAX_JOBS = 60
"""Jobs in a generated stream: the joint policy re-plans every arrived job each slot, so the
time grows faster than the count (30 jobs take about 6 s, 60 a minute, 150 over five)."""
MAX_CAPACITY = 4096
MAX_SERVERS = 256
MAX_LENGTH_H = 24 * 14.0
CLUSTER_PAGE_POLICIES = ("agnostic", "suspend-resume", "carbonscaler", "joint")
"""The policies compared: ``carbonscaler advise-cluster``'s default set."""
DEFAULT_START_OFFSET_H = 24 * 7
"""A fresh page's start: a week into the trace."""
CACHE_SIZE = 8


@dataclass(frozen=True)
class ClusterQuery:
    """The cluster page's state, as its URL query carries it (``show`` only picks the policy
    whose jobs the chart shows)."""

    trace: str
    start: str = ""
    jobs: int = 30
    rate: float = 2.0
    shortest: float = 4.0
    longest: float = 24.0
    slack: float = 1.5
    min_servers: int = 1
    max_servers: int = 8
    profile: str = "amdahl:0.05"
    capacity: int = 20
    forecast: str = "perfect"
    error: float = 0.0
    overhead: float = 0.0
    seed: int = 0
    show: str = "joint"

    def key(self) -> tuple[Any, ...]:
        """What the simulations depend on (``show`` left out)."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "show")

    def params(self) -> list[tuple[str, str]]:
        """The query as URL parameters, in the form's order."""
        return [(param, _text(getattr(self, name))) for name, param in _PARAMS.items()]

    def cli_args(self, catalog: Catalog, start: str) -> list[str]:
        """The ``carbonscaler advise-cluster`` arguments that print the same numbers (with
        ``--json``).

        Args:
            catalog: where the trace and profile names lead.
            start: the stream's hour 0 as resolved (:attr:`PreparedCluster.start_text`).
        """
        args = ["carbonscaler", "advise-cluster", "--generate", str(self.jobs)]
        args += ["--rate", _text(self.rate), "--length", f"{_text(self.shortest)},"]
        args[-1] += _text(self.longest)
        args += ["--slack", _text(self.slack), "--min", str(self.min_servers)]
        args += ["--max", str(self.max_servers), "--profile", _profile_arg(self.profile, catalog)]
        args += ["--capacity", str(self.capacity)]
        choice = catalog.trace(self.trace)
        if choice.path is not None:
            args += ["--trace", str(choice.path)]
        else:
            args += ["--zone", str(choice.zone), "--year", str(choice.year)]
        args += ["--start", start, "--forecast-model", self.forecast]
        args += ["--forecast-error", _text(self.error)]
        args += ["--rescale-overhead-s", _text(self.overhead), "--seed", str(self.seed)]
        return args


_PARAMS = {
    "trace": "trace",
    "start": "start",
    "jobs": "jobs",
    "rate": "rate",
    "shortest": "shortest",
    "longest": "longest",
    "slack": "slack",
    "min_servers": "min",
    "max_servers": "max",
    "profile": "profile",
    "capacity": "capacity",
    "forecast": "forecast",
    "error": "error",
    "overhead": "overhead",
    "seed": "seed",
    "show": "show",
}


def _profile_arg(profile: str, catalog: Catalog) -> str:
    """A profile file offered by name becomes its path; a shape stays as it is."""
    for offered in catalog.profiles():
        if offered.name == profile:
            return str(offered.path)
    return profile


def parse_cluster_query(
    params: Mapping[str, Sequence[str]], default_trace: str | None
) -> ClusterQuery:
    """The page's state from its URL parameters (missing ones take their defaults).

    Raises:
        QueryError: listing every value that is not usable, each with what it should be.
    """
    problems: list[str] = []
    trace = (params.get("trace") or [""])[-1].strip() or (default_trace or "")
    if not trace:
        problems.append("trace: no trace is offered; start the dashboard with --traces DIR")
    d = ClusterQuery(trace="")

    def number(name: str, default: float, what: str, low: float, high: float, **kw: Any) -> float:
        return _number(params, name, default, problems, what=what, low=low, high=high, **kw)

    jobs = number("jobs", d.jobs, "jobs in the stream", 1, MAX_JOBS, whole=True)
    rate = number("rate", d.rate, "mean arrivals per hour", 0, 1000, low_inclusive=False)
    shortest = number(
        "shortest",
        d.shortest,
        "shortest job, hours at min servers",
        0,
        MAX_LENGTH_H,
        low_inclusive=False,
    )
    longest = number(
        "longest",
        d.longest,
        "longest job, hours at min servers",
        0,
        MAX_LENGTH_H,
        low_inclusive=False,
    )
    if shortest > longest:
        problems.append(
            f"shortest/longest: the shortest job ({shortest:g} h) must not be longer than the"
            f" longest ({longest:g} h)"
        )
    slack = number("slack", d.slack, "deadline = slack × length", 1, 100)
    low = number("min", d.min_servers, "fewest servers per job", 1, MAX_SERVERS, whole=True)
    high = number("max", d.max_servers, "most servers per job", 1, MAX_SERVERS, whole=True)
    if low > high:
        problems.append(f"min/max: min servers ({low:g}) must not exceed max servers ({high:g})")
    capacity = number(
        "capacity", d.capacity, "servers the cluster has per slot", 1, MAX_CAPACITY, whole=True
    )
    error = number("error", d.error, "forecast error, 0.1 = ±10 %", 0, 0.99)
    overhead = number("overhead", d.overhead, "seconds lost per rescale", 0, MAX_OVERHEAD_S)
    seed = number("seed", d.seed, "the stream's random seed", 0, 2**31 - 1, whole=True)
    forecast = (params.get("forecast") or [""])[-1].strip().lower() or d.forecast
    if forecast not in FORECAST_MODELS:
        problems.append(
            f"forecast: {forecast!r} is not a forecast model; use one of"
            f" {', '.join(FORECAST_MODELS)}"
        )
    show = (params.get("show") or [""])[-1].strip() or d.show
    if show not in CLUSTER_PAGE_POLICIES:
        problems.append(
            f"show: {show!r} is not a cluster policy; use one of {', '.join(CLUSTER_PAGE_POLICIES)}"
        )
    profile = (params.get("profile") or [""])[-1].strip() or d.profile
    if profile.startswith(INLINE_PREFIX):
        problems.append(
            "profile: an uploaded profile is not offered for clusters; give a shape such as"
            " amdahl:0.05 or a profile file offered (--profiles)"
        )
    start = (params.get("start") or [""])[-1].strip()
    if problems:
        raise QueryError(problems)
    return ClusterQuery(
        trace=trace,
        start=start,
        jobs=int(jobs),
        rate=rate,
        shortest=shortest,
        longest=longest,
        slack=slack,
        min_servers=int(low),
        max_servers=int(high),
        profile=profile,
        capacity=int(capacity),
        forecast=forecast,
        error=error,
        overhead=overhead,
        seed=int(seed),
        show=show,
    )


@dataclass(frozen=True)
class PreparedCluster:
    """A query made ready to simulate: the jobs, the trace from hour 0, the conditions."""

    jobs: list[ClusterJob]
    carbon: Any
    """Actual intensity per slot from the start (gCO2eq/kWh), to the trace's end."""
    start: pd.Timestamp
    zone: str
    source: str
    conditions: Conditions
    notes: list[str]

    @property
    def start_text(self) -> str:
        return self.start.strftime("%Y-%m-%dT%H:%MZ")


def prepare_cluster(query: ClusterQuery, catalog: Catalog) -> PreparedCluster:
    """What ``carbonscaler advise-cluster`` builds from the same options, checked before any
    simulation runs.

    Raises:
        UnknownNameError: for a trace that is not offered.
        ProfileError, TraceError, DatasetError, PlanningError, SpecError: as the command would.
    """
    import pandas as pd

    from carbonscaler.advisor import Conditions
    from carbonscaler.control.cluster_spec import generate_cluster_spec
    from carbonscaler.planner.model import PlanningError
    from carbonscaler.profile import ProfileError, parse_parametric_spec
    from carbonscaler.trace import TraceError

    loaded = catalog.load_trace(query.trace)
    profile = _profile_arg(query.profile, catalog)
    if profile == query.profile:  # not a file offered: it must be a shape, never a path
        if "/" in profile or "\\" in profile or profile.endswith(".csv"):
            offered = ", ".join(c.name for c in catalog.profiles()) or "none"
            raise ProfileError(
                f"profile {profile!r} is not offered: give a shape such as amdahl:0.05 or name"
                f" a profile file offered (--profiles): {offered}"
            )
        try:
            parse_parametric_spec(profile, default_servers=query.max_servers)
        except ProfileError as exc:
            raise ProfileError(f"profile {profile!r}: {exc}") from None
    conditions = Conditions.from_options(
        forecast_model=query.forecast,
        forecast_error=query.error,
        seed=query.seed,
        profile_error=0.0,
        rescale_overhead_s=query.overhead,
        replan_threshold=0.05,
        safety_margin=0.05,
    )
    spec = generate_cluster_spec(
        query.jobs,
        rate_per_h=query.rate,
        length_hours=(query.shortest, query.longest),
        slack=query.slack,
        profiles=[profile],
        min_servers=query.min_servers,
        max_servers=query.max_servers,
        seed=query.seed,
    )
    jobs = spec.cluster_jobs()
    trace = loaded.resample(spec.slot_minutes)
    if query.start:
        try:
            when = pd.Timestamp(query.start)
        except (ValueError, TypeError):
            raise PlanningError(
                f"start: {query.start!r} is not a time; use e.g. 2022-03-08T00:00Z"
            ) from None
        when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    else:
        when = pd.Timestamp(trace.start) + pd.Timedelta(hours=DEFAULT_START_OFFSET_H)
        when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    if not pd.Timestamp(trace.start) <= when <= pd.Timestamp(trace.end):
        raise TraceError(
            f"start: {when:%Y-%m-%d %H:%M} UTC is outside the trace"
            f" ({trace.start:%Y-%m-%d %H:%M} .. {trace.end:%Y-%m-%d %H:%M} UTC)"
        )
    first = trace.index_of(when)
    carbon = trace.values[first:]
    horizon = max(job.deadline_slot for job in jobs)
    if len(carbon) < horizon:
        raise TraceError(
            f"the trace covers {trace.start} .. {trace.end}; from {when} only {len(carbon)}"
            f" slots remain but the latest deadline is {horizon} slots away; choose an"
            " earlier start, fewer jobs or a higher arrival rate"
        )
    return PreparedCluster(
        jobs=jobs,
        carbon=carbon,
        start=when,
        zone=trace.zone,
        source=trace.source,
        conditions=conditions,
        notes=[f"{query.trace}: {note}" for note in loaded.notes],
    )


# -- running the simulations -----------------------------------------------------------------

Progress = Callable[[int, int, str], None]


@dataclass
class ClusterCache:
    """Each query's outcomes, the newest few kept; one simulation runs at a time."""

    size: int = CACHE_SIZE
    _results: OrderedDict[tuple[Any, ...], list[ClusterOutcome]] = field(
        default_factory=OrderedDict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _running: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: tuple[Any, ...]) -> list[ClusterOutcome] | None:
        with self._lock:
            found = self._results.get(key)
            if found is not None:
                self._results.move_to_end(key)
            return found

    def run(
        self,
        query: ClusterQuery,
        prepared: PreparedCluster,
        progress: Progress,
        cancelled: threading.Event,
    ) -> list[ClusterOutcome]:
        """Every policy of :data:`CLUSTER_PAGE_POLICIES` on the query's stream, from the cache
        or simulated (after any simulation already running).

        Raises:
            SweepCancelled: if ``cancelled`` was set before the last policy started.
        """
        from carbonscaler.advisor.cluster import simulate_cluster

        key = query.key()
        cached = self.get(key)
        if cached is not None:
            return cached
        progress(0, 0, "waiting for the simulation before this one")
        while not self._running.acquire(timeout=0.1):
            if cancelled.is_set():
                raise SweepCancelled
        try:
            cached = self.get(key)
            if cached is not None:
                return cached
            outcomes = []
            total = len(CLUSTER_PAGE_POLICIES)
            for done, policy in enumerate(CLUSTER_PAGE_POLICIES):
                if cancelled.is_set():
                    raise SweepCancelled
                progress(done, total, f"simulating {policy}")
                outcomes.append(
                    simulate_cluster(
                        prepared.jobs,
                        prepared.carbon,
                        query.capacity,
                        policy,
                        prepared.conditions,
                    )
                )
            progress(total, total, "done")
        finally:
            self._running.release()
        with self._lock:
            self._results[key] = outcomes
            while len(self._results) > self.size:
                self._results.popitem(last=False)
        return outcomes


# -- what the page shows ---------------------------------------------------------------------


def _round(value: float, digits: int = 4) -> float | None:
    return round(float(value), digits) if math.isfinite(float(value)) else None


def _rows(summary: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The table's rows, worded; savings only for policies that meet every deadline are
    comparable, so a missing policy's saving is flagged."""
    from carbonscaler.wording import grams, percent

    rows = []
    for rank, row in enumerate(summary, start=1):
        saved = row["savings_vs_agnostic_pct"]
        misses = int(row["deadline_misses"])
        turnaround = row["mean_completion_hours"]
        rows.append(
            {
                "rank": rank,
                "policy": row["policy"],
                "missed": misses > 0,
                "saving": "n/a" if saved is None else percent(float(saved)),
                "saving_value": None if saved is None else _round(saved),
                "misses": f"{misses} of {row['jobs']}" if misses else "0",
                "emissions": grams(float(row["emissions_g"])),
                "energy": f"{float(row['energy_kwh']):,.2f}",
                "turnaround": "—" if turnaround is None else f"{float(turnaround):.1f}",
                "utilisation": f"{100 * float(row['utilisation']):.0f} %",
            }
        )
    return rows


def cluster_view(
    outcomes: Sequence[ClusterOutcome], prepared: PreparedCluster, query: ClusterQuery
) -> dict[str, Any]:
    """The headline, the ranked table (with :func:`cluster_summary`'s raw rows) and the
    charts' data over the hours from the first arrival to the last work done under any
    policy."""
    from carbonscaler.advisor.cluster import cluster_headline, cluster_summary

    summary = cluster_summary(outcomes)
    first = min(o.span.start for o in outcomes)
    last = max(max(o.span.stop for o in outcomes), first + 1)
    shown = next(o for o in outcomes if o.policy == query.show)
    slot_hours = outcomes[0].slot_hours
    jobs = []
    for i, job in enumerate(shown.jobs):
        servers = shown.servers[i, first:last]
        jobs.append(
            {
                "name": job.name,
                "arrival_hours": (job.arrival_slot - first) * slot_hours,
                "deadline_hours": (job.deadline_slot - first) * slot_hours,
                "deadline_met": job.deadline_met,
                "servers": [_round(s) for s in servers],
            }
        )
    return {
        "headline": cluster_headline(summary, len(outcomes[0].jobs)),
        "summary": summary,
        "rows": _rows(summary),
        "notes": prepared.notes,
        "charts": {
            "policy": query.show,
            "slot_hours": slot_hours,
            "offset_hours": first * slot_hours,
            "start": prepared.start_text,
            "carbon": [_round(c) for c in prepared.carbon[first:last]],
            "capacity": [int(k) for k in shown.capacity[first:last]],
            "jobs": jobs,
            "used": [
                {
                    "name": o.policy,
                    "missed": o.deadline_misses > 0,
                    "values": [_round(s) for s in o.servers_used[first:last]],
                }
                for o in outcomes
            ],
        },
    }
