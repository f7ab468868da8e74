"""``carbonscaler cluster``: plan many elastic jobs that share a cluster's capacity (issue #12).

Mounted by the main CLI as ``app.add_typer(cluster_app, name="cluster")``. Like every command
module it imports only the standard library, typer and light modules at module level; the
planner, the trace loader, numpy and rich are imported when the command runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from carbonscaler.cli._common import (
    TRACE_FLAGS,
    TRACE_HELP,
    YEAR_FLAGS,
    ZONE_FLAGS,
    FillGapsOption,
    TzOption,
    console,
    load_carbon,
    parse_start,
    user_errors,
)

if TYPE_CHECKING:
    import pandas as pd

    from carbonscaler.advisor import Conditions
    from carbonscaler.advisor.cluster import ClusterOutcome
    from carbonscaler.control.cluster_controller import ClusterRunReport
    from carbonscaler.control.cluster_spec import ClusterSpec
    from carbonscaler.planner.cluster import ClusterJob, ClusterPlan, Overcommit
    from carbonscaler.planner.regions import RegionalJobPlan, RegionalPlan
    from carbonscaler.trace import CarbonTrace

app = typer.Typer(
    help="Plan many elastic jobs together under a cluster's capacity.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

# Symbols of the jobs in the capacity chart, in job order (then repeated).
_SYMBOLS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Widest bar of the capacity chart, in characters; larger capacities are scaled down.
_CHART_WIDTH = 60


# The carbon source and capacity, the same for every cluster command.
TraceOption = Annotated[Path | None, typer.Option(*TRACE_FLAGS, help=TRACE_HELP)]
ZoneOption = Annotated[
    str | None,
    typer.Option(
        *ZONE_FLAGS,
        help="With --trace: the zone to select in a file that names zones. Without: a zone of "
        "the offline dataset (see `carbonscaler traces list`).",
    ),
]
YearOption = Annotated[
    int | None,
    typer.Option(*YEAR_FLAGS, help="Offline-dataset year for --zone (default: --start's)."),
]
SignalOption = Annotated[str, typer.Option(help="Electricity Maps column: direct or lca.")]
CapacityOption = Annotated[
    int | None,
    typer.Option("--capacity", min=0, help="Servers per slot (overrides the file's capacity)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@app.callback()
def _cluster() -> None:
    """Plan many elastic jobs together under a cluster's capacity."""


@app.command("plan")
def plan_command(
    jobs_file: Annotated[
        Path,
        typer.Argument(
            metavar="JOBS.yaml",
            help="The jobs and the capacity (see docs/cluster.md); profile paths are relative "
            "to this file.",
        ),
    ],
    start: Annotated[
        str, typer.Option(help="Start of the plan (arrivals count from it), ISO 8601.")
    ],
    trace: TraceOption = None,
    zone: ZoneOption = None,
    year: YearOption = None,
    signal: SignalOption = "direct",
    fill_gaps: FillGapsOption = None,
    tz: TzOption = None,
    capacity: CapacityOption = None,
    solver: Annotated[
        str, typer.Option(help="fast (production) or exact (HiGHS, for checking).")
    ] = "fast",
    time_limit: Annotated[
        float,
        typer.Option(
            "--time-limit",
            min=0.1,
            help="Seconds for HiGHS (exact solver, and explaining a set that does not fit).",
        ),
    ] = 60.0,
    as_json: JsonOption = False,
) -> None:
    """Plan the jobs of JOBS.yaml together: least carbon within the capacity and deadlines.

    A file with clusters: plans across them: each job gets a cluster (where it may run) and a
    schedule there; each cluster's trace or zone and capacity replace --trace/--zone/--capacity.
    """
    _plan(
        jobs_file=jobs_file,
        start_text=start,
        trace=trace,
        zone=zone,
        year=year,
        signal=signal,
        fill_gaps=fill_gaps,
        tz=tz,
        capacity_override=capacity,
        solver=solver,
        time_limit_s=time_limit,
        as_json=as_json,
    )


@user_errors
def _plan(
    *,
    jobs_file: Path,
    start_text: str,
    trace: Path | None,
    zone: str | None,
    year: int | None,
    signal: str,
    fill_gaps: int | None,
    tz: str | None,
    capacity_override: int | None,
    solver: str,
    time_limit_s: float,
    as_json: bool,
) -> None:
    from carbonscaler.control.cluster_spec import load_cluster_spec
    from carbonscaler.planner.cluster import (
        overcommit,
        plan_cluster,
        plan_cluster_agnostic,
        plan_cluster_independent,
    )
    from carbonscaler.planner.policies import savings_pct

    if solver not in ("fast", "exact"):
        raise typer.BadParameter(f"{solver!r}: use fast or exact", param_hint="--solver")
    start = parse_start(start_text)
    spec = load_cluster_spec(jobs_file)
    if spec.clusters is not None:
        given = [
            flag
            for flag, value in (
                ("--trace", trace),
                ("--zone", zone),
                ("--year", year),
                ("--capacity", capacity_override),
            )
            if value is not None
        ]
        if given:
            from carbonscaler.control.spec import SpecError

            raise SpecError(
                f"{jobs_file}: its clusters: give each cluster's carbon (trace:, or zone: and "
                f"year:) and capacity; drop {', '.join(given)}"
            )
        _plan_regions(spec, start, signal, fill_gaps, tz, solver, time_limit_s, as_json)
        return
    jobs, capacity, carbon_trace, first, carbon = _cluster_file(
        jobs_file, capacity_override, start, trace, zone, year, signal, fill_gaps, tz
    )
    horizon = max(job.deadline_slot for job in jobs)
    if solver == "fast":
        plan = plan_cluster(jobs, carbon, capacity, solver="fast", time_limit_s=time_limit_s)
    else:
        plan = plan_cluster(jobs, carbon, capacity, solver="exact", time_limit_s=time_limit_s)
    agnostic = plan_cluster_agnostic(jobs, carbon, capacity)
    independent = plan_cluster_independent(jobs, carbon, capacity)
    excess = overcommit(independent)
    times = carbon_trace.index[first : first + horizon]
    if as_json:
        out = _json(plan, agnostic, independent, excess, capacity)
        out.update(
            trace=carbon_trace.source,
            zone=carbon_trace.zone,
            start=start.isoformat(),
            slot_starts=[t.isoformat() for t in times],
            carbon_intensity=[float(c) for c in carbon[:horizon]],
            savings_vs_agnostic_pct=savings_pct(plan.emissions_g, agnostic.emissions_g),
        )
        typer.echo(json.dumps(out, indent=2))
        return
    title = (
        f"cluster plan ({plan.solver}) — {len(jobs)} jobs, {carbon_trace.zone} from "
        f"{start:%Y-%m-%d %H:%M} UTC, capacity "
        + (str(capacity) if isinstance(capacity, int) else "per slot (see the chart)")
    )
    console().print(_jobs_table(plan, agnostic, independent, title))
    console().print(_chart(plan, times, carbon[:horizon]), highlight=False, markup=False)
    _print_headline(
        plan,
        agnostic,
        independent,
        f"over capacity by up to {_count(excess.max_servers, 'server')} "
        f"({excess.server_hours:g} server-hours in {_count(excess.slots, 'slot')})"
        if excess.max_servers
        else "within the capacity",
    )


def _plan_regions(
    spec: ClusterSpec,
    start: pd.Timestamp,
    signal: str,
    fill_gaps: int | None,
    tz: str | None,
    solver: str,
    time_limit_s: float,
    as_json: bool,
) -> None:
    """``cluster plan`` of a file with clusters: where as well as when (issue #12).

    Raises:
        SpecError, ProfileError, PlanningError: for a bad file or a set that cannot fit;
        TraceError, DatasetError: as :func:`_cluster_carbon`.
    """
    from carbonscaler.planner.cluster import overcommit
    from carbonscaler.planner.policies import savings_pct
    from carbonscaler.planner.regions import (
        Region,
        plan_regions,
        plan_regions_agnostic,
        plan_regions_independent,
    )

    assert spec.clusters is not None
    jobs = spec.regional_jobs()
    horizon = max(job.job.deadline_slot for job in jobs)
    loaded = _cluster_carbon(spec, start, signal, fill_gaps, tz, horizon)
    regions = [
        Region(cluster.name, carbon, cluster.capacity)
        for cluster, (_, _, carbon) in zip(spec.clusters, loaded, strict=True)
    ]
    if solver == "fast":
        plan = plan_regions(jobs, regions, solver="fast", time_limit_s=time_limit_s)
    else:
        plan = plan_regions(jobs, regions, solver="exact", time_limit_s=time_limit_s)
    agnostic = plan_regions_agnostic(jobs, regions)
    independent = plan_regions_independent(jobs, regions)
    excess = {name: overcommit(part) for name, part in independent.regions.items()}
    first_trace, first, _ = loaded[0]
    times = first_trace.index[first : first + horizon]
    if as_json:
        out = _regions_json(plan, agnostic, independent, excess, spec, loaded, horizon)
        out.update(
            start=start.isoformat(),
            slot_starts=[t.isoformat() for t in times],
            savings_vs_agnostic_pct=savings_pct(plan.emissions_g, agnostic.emissions_g),
        )
        typer.echo(json.dumps(out, indent=2))
        return
    described = "; ".join(
        f"{cluster.name}: {trace.zone}, capacity "
        + (str(cluster.capacity) if isinstance(cluster.capacity, int) else "per slot")
        for cluster, (trace, _, _) in zip(spec.clusters, loaded, strict=True)
    )
    title = (
        f"cluster plan ({plan.solver}) — {len(jobs)} jobs in {len(regions)} clusters "
        f"({described}) from {start:%Y-%m-%d %H:%M} UTC"
    )
    symbols = {job.name: _SYMBOLS[i % len(_SYMBOLS)] for i, job in enumerate(plan.jobs)}
    console().print(
        _jobs_table(
            plan.combined(),
            agnostic.combined(),
            independent.combined(),
            title,
            regions=[_route(job) for job in plan.jobs],
        )
    )
    for region, (trace, _, carbon) in zip(regions, loaded, strict=True):
        part = plan.regions[region.name]
        console().print(
            f"\n{region.name} ({trace.zone}): {_count(len(part.jobs), 'job')}, "
            f"{part.emissions_g:.1f} gCO2eq",
            highlight=False,
            markup=False,
        )
        chart = _chart(part, times, carbon[:horizon], [symbols[j.name] for j in part.jobs])
        console().print(chart, highlight=False, markup=False)
    over = {name: e for name, e in excess.items() if e.max_servers}
    _print_headline(
        plan,
        agnostic,
        independent,
        "over capacity by up to "
        + ", ".join(f"{_count(e.max_servers, 'server')} in {name}" for name, e in over.items())
        if over
        else "within the capacities",
        agnostic_where=" in each job's first cluster",
        independent_where=" in each job's cleanest cluster",
    )


def _print_headline(
    plan: ClusterPlan | RegionalPlan,
    agnostic: ClusterPlan | RegionalPlan,
    independent: ClusterPlan | RegionalPlan,
    capacity_text: str,
    *,
    agnostic_where: str = "",
    independent_where: str = "",
) -> None:
    """``cluster plan``'s verdict: the joint plan against carbon-agnostic FIFO and against
    independent plans (``capacity_text``: how those fit the capacity), then the plans' notes."""
    from carbonscaler.planner.policies import savings_pct

    jobs = len(plan.jobs)
    console().print(
        f"[bold]joint plan[/]: {plan.emissions_g:.1f} gCO2eq, "
        f"{plan.deadlines_met}/{jobs} deadlines met, planned in {plan.solve_ms:.1f} ms; "
        f"saved {savings_pct(plan.emissions_g, agnostic.emissions_g):.1f} % against "
        f"carbon-agnostic FIFO{agnostic_where} ({agnostic.emissions_g:.1f} gCO2eq, "
        f"{agnostic.deadlines_met}/{jobs} deadlines met); "
        f"independent plans{independent_where}: {independent.emissions_g:.1f} gCO2eq, "
        + capacity_text,
        highlight=False,
    )
    for note in (*plan.notes, *agnostic.notes):
        console().print(f"  note: {note}", highlight=False, markup=False)


def _cluster_carbon(
    spec: ClusterSpec,
    start: pd.Timestamp,
    signal: str,
    fill_gaps: int | None,
    tz: str | None,
    horizon: int,
) -> list[tuple[CarbonTrace, int, Any]]:
    """Each cluster's trace, the index of ``start`` in it and its values from ``start`` on
    (:func:`_carbon_from`, with the cluster's trace or zone and year).

    Raises:
        TraceError, DatasetError: naming the cluster, as :func:`_carbon_from`.
    """
    from carbonscaler.datasets import DatasetError
    from carbonscaler.trace import TraceError

    assert spec.clusters is not None
    loaded = []
    for cluster in spec.clusters:
        trace = None if cluster.trace is None else Path(cluster.trace)
        try:
            loaded.append(
                _carbon_from(
                    start,
                    trace,
                    cluster.zone,
                    cluster.year,
                    signal,
                    spec.slot_minutes,
                    horizon,
                    fill_gaps,
                    tz,
                )
            )
        except (TraceError, DatasetError) as exc:
            raise type(exc)(f"cluster {cluster.name!r}: {exc}") from None
    return loaded


def _route(job: RegionalJobPlan) -> str:
    """Where a job runs: its cluster, or the clusters a migrating job runs in, in order."""
    visited: list[str] = []
    for region in job.slot_regions:
        if region is not None and (not visited or visited[-1] != region):
            visited.append(region)
    if len(visited) <= 1:
        return job.region
    if len(visited) > 4:
        return "→".join(visited[:3]) + f"… ({job.moves} moves)"
    return "→".join(visited)


def _regions_json(
    plan: RegionalPlan,
    agnostic: RegionalPlan,
    independent: RegionalPlan,
    excess: dict[str, Overcommit],
    spec: ClusterSpec,
    loaded: list[tuple[CarbonTrace, int, Any]],
    horizon: int,
) -> dict[str, Any]:
    """The ``--json`` object of a file with clusters: the single cluster's (servers and
    capacity per slot summed over the clusters, ``capacity`` by cluster as given), each job
    with its ``region`` (and ``regions_per_slot``, ``migrate``, the baselines' regions), and
    per cluster (``regions``) its capacity, servers used, emissions, trace and baselines."""
    assert spec.clusters is not None
    out = plan.to_dict()
    out["capacity_per_slot"] = out.pop("capacity")
    out["capacity"] = {cluster.name: cluster.capacity for cluster in spec.clusters}
    out["horizon_hours"] = plan.horizon * plan.slot_hours
    out["deadlines_met"] = plan.deadlines_met
    out["agnostic_emissions_g"] = agnostic.emissions_g
    out["agnostic_deadlines_met"] = agnostic.deadlines_met
    out["independent_emissions_g"] = independent.emissions_g
    out["independent_overcommit"] = max(e.max_servers for e in excess.values())
    out["independent_overcommit_server_hours"] = sum(e.server_hours for e in excess.values())
    out["independent_overcommit_slots"] = sum(e.slots for e in excess.values())
    for job, agn, ind in zip(out["jobs"], agnostic.jobs, independent.jobs, strict=True):
        job["agnostic_emissions_g"] = agn.emissions_g
        job["agnostic_completion_hours"] = agn.completion_hours if agn.schedule.completed else None
        job["agnostic_region"] = agn.region
        job["independent_emissions_g"] = ind.emissions_g
        job["independent_region"] = ind.region
    for entry, cluster, (trace, _, carbon) in zip(
        out["regions"], spec.clusters, loaded, strict=True
    ):
        name = cluster.name
        entry["capacity_per_slot"] = entry.pop("capacity")
        entry["capacity"] = cluster.capacity
        entry["trace"] = trace.source
        entry["zone"] = trace.zone
        entry["carbon_intensity"] = [float(c) for c in carbon[:horizon]]
        entry["agnostic_emissions_g"] = agnostic.regions[name].emissions_g
        entry["independent_emissions_g"] = independent.regions[name].emissions_g
        entry["independent_overcommit"] = excess[name].max_servers
    return out


def _cluster_file(
    jobs_file: Path,
    capacity_override: int | None,
    start: pd.Timestamp,
    trace: Path | None,
    zone: str | None,
    year: int | None,
    signal: str,
    fill_gaps: int | None,
    tz: str | None,
) -> tuple[list[ClusterJob], int | list[int], CarbonTrace, int, Any]:
    """A cluster file's jobs and capacity (``--capacity`` first), and the carbon from
    ``start`` to its latest deadline (:func:`_carbon_from`).

    Raises:
        SpecError: for a bad file; PlanningError: without a capacity; TraceError: as
            :func:`_carbon_from`.
    """
    from carbonscaler.control.cluster_spec import load_cluster_spec
    from carbonscaler.control.spec import SpecError
    from carbonscaler.planner.model import PlanningError

    spec = load_cluster_spec(jobs_file)
    if spec.clusters is not None:
        raise SpecError(
            f"{jobs_file} names several clusters (clusters:); running and simulating take one "
            "cluster for now: plan them with `carbonscaler cluster plan`, or give one "
            "`capacity:` and no `clusters:`"
        )
    capacity = capacity_override if capacity_override is not None else spec.capacity
    if capacity is None:
        raise PlanningError(
            f"{jobs_file}: no capacity; give `capacity:` in the file or --capacity K"
        )
    jobs = spec.cluster_jobs()
    horizon = max(job.deadline_slot for job in jobs)
    carbon_trace, first, carbon = _carbon_from(
        start, trace, zone, year, signal, spec.slot_minutes, horizon, fill_gaps, tz
    )
    return jobs, capacity, carbon_trace, first, carbon


def _carbon_from(
    start: pd.Timestamp,
    trace: Path | None,
    zone: str | None,
    year: int | None,
    signal: str,
    slot_minutes: int,
    horizon: int,
    fill_gaps: int | None,
    tz: str | None,
) -> tuple[CarbonTrace, int, Any]:
    """The trace, the index of ``start`` in it, and its values from ``start`` on (at least
    ``horizon`` slots: the latest deadline).

    Raises:
        TraceError: if the trace ends before the latest deadline.
    """
    from carbonscaler.trace import TraceError

    carbon_trace = load_carbon(
        trace, zone, signal, slot_minutes, start, year, fill_gaps=fill_gaps, tz=tz
    )
    first = carbon_trace.index_of(start)
    carbon = carbon_trace.values[first:]
    if len(carbon) < horizon:
        raise TraceError(
            f"the trace covers {carbon_trace.start} .. {carbon_trace.end}; from {start} only "
            f"{len(carbon)} slots remain but the latest deadline is {horizon} slots away; "
            "choose an earlier --start or a longer trace"
        )
    return carbon_trace, first, carbon


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _json(
    plan: ClusterPlan,
    agnostic: ClusterPlan,
    independent: ClusterPlan,
    excess: Overcommit,
    capacity: int | list[int],
) -> dict[str, Any]:
    """The ``--json`` object (the contract of issue #12, plus detail)."""
    out = plan.to_dict()
    out["capacity_per_slot"] = out.pop("capacity")
    out["capacity"] = capacity
    out["horizon_hours"] = plan.horizon * plan.slot_hours
    out["deadlines_met"] = plan.deadlines_met
    out["agnostic_emissions_g"] = agnostic.emissions_g
    out["agnostic_deadlines_met"] = agnostic.deadlines_met
    out["independent_emissions_g"] = independent.emissions_g
    out["independent_overcommit"] = excess.max_servers
    out["independent_overcommit_server_hours"] = excess.server_hours
    out["independent_overcommit_slots"] = excess.slots
    for job, agn, ind in zip(out["jobs"], agnostic.jobs, independent.jobs, strict=True):
        job["agnostic_emissions_g"] = agn.emissions_g
        job["agnostic_completion_hours"] = agn.completion_hours if agn.schedule.completed else None
        job["independent_emissions_g"] = ind.emissions_g
    return out


def _jobs_table(
    plan: ClusterPlan,
    agnostic: ClusterPlan,
    independent: ClusterPlan,
    title: str,
    regions: Sequence[str] | None = None,
) -> Any:
    """Per job: window, servers, work, emissions, completion, deadline and the baselines'
    emissions; with ``regions`` (one per job), a region column after the job's name."""
    from rich.table import Table

    table = Table(title=title)
    for col in (
        "job",
        *(() if regions is None else ("region",)),
        "window (h)",
        "servers",
        "work",
        "gCO2eq",
        "done (h)",
        "deadline",
        "alone gCO2eq",
        "agnostic gCO2eq",
    ):
        table.add_column(col, justify="left" if col in ("job", "region") else "right")
    dt = plan.slot_hours
    for i, (job, agn, ind) in enumerate(
        zip(plan.jobs, agnostic.jobs, independent.jobs, strict=True)
    ):
        schedule = job.schedule
        active = schedule.servers[schedule.servers > 0]
        levels = f"{int(active.min())}..{int(active.max())}" if len(active) else "0"
        table.add_row(
            f"{_SYMBOLS[i % len(_SYMBOLS)]} {job.name}",
            *(() if regions is None else (regions[i],)),
            f"{job.arrival_slot * dt:g}–{job.deadline_slot * dt:g}",
            levels,
            f"{schedule.work_required:.4g}",
            f"{job.emissions_g:.1f}",
            f"{job.completion_hours:.2f}",
            "met" if job.deadline_met else "[red]missed[/]",
            f"{ind.emissions_g:.1f}",
            f"{agn.emissions_g:.1f}" + ("" if agn.deadline_met else " (late)"),
        )
    return table


def _chart(
    plan: ClusterPlan,
    times: pd.DatetimeIndex,
    carbon: Any,
    symbols: Sequence[str] | None = None,
) -> str:
    """Servers per slot as text bars: one symbol per job's server (``symbols``, one per job
    of ``plan``; by default the jobs' letters in order), '·' for free capacity."""
    letters = symbols or [_SYMBOLS[i % len(_SYMBOLS)] for i in range(len(plan.jobs))]
    capacity = plan.capacity[: plan.horizon]
    widest = max(int(capacity.max()), int(plan.servers_used.max()), 1)
    scale = max(1.0, widest / _CHART_WIDTH)
    servers = [job.servers_on(plan.horizon) for job in plan.jobs]
    lines = [
        f"servers per slot (one character = {scale:g} server{'s' if scale != 1 else ''}; "
        "letters are the jobs of the table, · is free capacity)"
    ]
    for t in range(plan.horizon):
        bar = ""
        for letter, per_slot in zip(letters, servers, strict=True):
            bar += letter * round(int(per_slot[t]) / scale)
        used, cap = int(plan.servers_used[t]), int(capacity[t])
        bar += "·" * max(round(cap / scale) - len(bar), 0)
        width = round(widest / scale)
        lines.append(
            f"{times[t]:%m-%d %H:%M} {float(carbon[t]):6.1f} g/kWh |{bar:<{width}}| {used:>3}/{cap}"
        )
    return "\n".join(lines)


# -- online: the cluster core in a simulated world ------------------------------------------

ForecastModelOption = Annotated[
    str | None,
    typer.Option(
        help="perfect, uniform, gaussian, persistence, seasonal or learned; default uniform "
        "with --forecast-error, else perfect."
    ),
]
ForecastErrorOption = Annotated[
    float, typer.Option(help="Relative forecast error for uniform/gaussian (0.1 = ±10 %).")
]
ProfileErrorOption = Annotated[
    float, typer.Option(help="Each job's real throughput differs from its profile by up to ±x.")
]
OverheadOption = Annotated[
    float, typer.Option(help="Seconds of work a job loses per change of its server count.")
]
ThresholdOption = Annotated[float, typer.Option(help="Deviation that re-plans (0.05 = 5 %).")]
MarginOption = Annotated[
    float, typer.Option(help="Extra share of the remaining work each plan covers, where it fits.")
]
SeedOption = Annotated[int, typer.Option(help="Seed of the forecast and profile errors.")]
RunThresholdOption = Annotated[
    float | None,
    typer.Option(
        help="Deviation that re-plans (0.05 = 5 %). Default: 0.05 simulated; for real, the "
        "smallest of the job files' replanThreshold."
    ),
]
RunMarginOption = Annotated[
    float | None,
    typer.Option(
        help="Extra share of the remaining work each plan covers, where it fits. Default: 0.05 "
        "simulated; for real, the largest of the job files' safetyMargin."
    ),
]


@app.command("run")
def run_command(
    jobs_file: Annotated[
        Path, typer.Argument(metavar="JOBS.yaml", help="The jobs and the capacity.")
    ],
    start: Annotated[str, typer.Option(help="Start of the run (arrivals count from it).")],
    simulate: Annotated[
        bool,
        typer.Option(
            "--simulate",
            help="Run the cluster's decisions against simulated workloads that follow their "
            "profiles, on a virtual clock (no processes).",
        ),
    ] = False,
    trace: TraceOption = None,
    zone: ZoneOption = None,
    year: YearOption = None,
    signal: SignalOption = "direct",
    fill_gaps: FillGapsOption = None,
    tz: TzOption = None,
    capacity: CapacityOption = None,
    policy: Annotated[
        str,
        typer.Option(
            help="joint (plan every active job together) or a per-job policy, queued: "
            "carbonscaler, suspend-resume, agnostic, exact."
        ),
    ] = "joint",
    forecast_model: ForecastModelOption = None,
    forecast_error: ForecastErrorOption = 0.0,
    profile_error: ProfileErrorOption = 0.0,
    rescale_overhead_s: OverheadOption = 0.0,
    replan_threshold: RunThresholdOption = None,
    safety_margin: RunMarginOption = None,
    seed: SeedOption = 0,
    folder: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Run folder of a real run: the cluster's state (run again to resume after a "
            "crash). Default: runs/<JOBS file name>. Each job's workload stays in its own "
            "checkpoint_dir.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run the jobs of JOBS.yaml online on one shared capacity: jobs are admitted as they
    arrive and the set is re-planned when a job arrives, finishes or drifts.

    For real, each job is given by its job file (`job: JOB.yaml`, as for `carbonscaler run`)
    and its workload runs as local processes, at the job files' time scale; with --simulate
    the jobs follow their profiles on a virtual clock."""
    _run(**locals())


@user_errors
def _run(
    *,
    jobs_file: Path,
    start: str,
    simulate: bool,
    trace: Path | None,
    zone: str | None,
    year: int | None,
    signal: str,
    fill_gaps: int | None,
    tz: str | None,
    capacity: int | None,
    policy: str,
    forecast_model: str | None,
    forecast_error: float,
    profile_error: float,
    rescale_overhead_s: float,
    replan_threshold: float | None,
    safety_margin: float | None,
    seed: int,
    folder: Path | None,
    as_json: bool,
) -> None:
    from carbonscaler.advisor import Conditions
    from carbonscaler.advisor.cluster import simulate_cluster
    from carbonscaler.planner.model import PlanningError
    from carbonscaler.planner.policies import savings_pct

    if not simulate and profile_error:
        raise PlanningError(
            "--profile-error simulates jobs slower or faster than profiled; a real run "
            "measures them: remove it, or add --simulate"
        )
    if simulate and folder is not None:
        raise PlanningError("--dir is a real run's folder; a simulation keeps no state")
    cond = Conditions.from_options(
        forecast_model=forecast_model,
        forecast_error=forecast_error,
        seed=seed,
        profile_error=profile_error,
        rescale_overhead_s=rescale_overhead_s,
        replan_threshold=0.05 if replan_threshold is None else replan_threshold,
        safety_margin=0.05 if safety_margin is None else safety_margin,
    )
    when = parse_start(start)
    jobs, cap, carbon_trace, first, carbon = _cluster_file(
        jobs_file, capacity, when, trace, zone, year, signal, fill_gaps, tz
    )
    if not simulate:
        _run_for_real(
            jobs_file,
            folder or Path("runs") / jobs_file.stem,
            cap,
            carbon_trace,
            first,
            policy,
            cond,
            rescale_overhead_s or None,
            stated=replan_threshold is not None or safety_margin is not None,
            as_json=as_json,
        )
        return
    outcome = simulate_cluster(jobs, carbon, cap, policy, cond)
    agnostic = simulate_cluster(jobs, carbon, cap, "agnostic", cond)
    saved = savings_pct(outcome.emissions_g, agnostic.emissions_g)
    if as_json:
        out = outcome.to_dict()
        out.update(
            trace=carbon_trace.source,
            zone=carbon_trace.zone,
            start=when.isoformat(),
            simulated=True,
            agnostic_emissions_g=agnostic.emissions_g,
            agnostic_deadline_misses=agnostic.deadline_misses,
            savings_vs_agnostic_pct=saved,
        )
        typer.echo(json.dumps(out, indent=2))
        return
    console().print(_outcome_table(outcome, agnostic, jobs), highlight=False)
    console().print(
        f"[bold]{outcome.policy}[/] (simulated): {outcome.emissions_g:.1f} gCO2eq, "
        f"{len(jobs) - outcome.deadline_misses}/{len(jobs)} deadlines met, "
        f"{100 * outcome.utilisation:.0f} % of the capacity used; saved {saved:.1f} % against "
        f"carbon-agnostic first come first served ({agnostic.emissions_g:.1f} gCO2eq, "
        f"{len(jobs) - agnostic.deadline_misses}/{len(jobs)} deadlines met)",
        highlight=False,
    )


def _run_for_real(
    jobs_file: Path,
    folder: Path,
    capacity: int | list[int],
    carbon_trace: CarbonTrace,
    first: int,
    policy: str,
    cond: Conditions,
    overhead_s: float | None,
    *,
    stated: bool,
    as_json: bool,
) -> None:
    """Run the cluster's workloads as local processes (resuming ``folder``'s state), with a
    progress display, then print the report; the re-plan threshold and safety margin are
    ``cond``'s when ``stated`` on the command line, else the job files'."""
    from carbonscaler.cli._progress import ProgressDisplay
    from carbonscaler.cli._runner import build_cluster, forecaster_at
    from carbonscaler.control.carbon import ReplayFeed
    from carbonscaler.control.cluster_controller import ClusterController
    from carbonscaler.control.cluster_spec import load_cluster_spec

    spec = load_cluster_spec(jobs_file)
    feed = ReplayFeed(
        carbon_trace.values,
        first,
        forecaster_at(cond.forecast, spec.slot_hours),
        f"{carbon_trace.zone} ({carbon_trace.source})",
    )
    with ProgressDisplay(f"cluster {jobs_file.stem}", total=100.0, unit="%") as shown:

        def on_step(cluster: ClusterController) -> None:
            states = [m.state for m in cluster.members.values()]
            done = sum(s.progress_pct for s in states if s is not None) / len(states)
            running = sum(s.servers for s in states if s is not None and not s.completed)
            shown.update(
                done,
                detail=f"slot {cluster.slot + 1}, {running} of "
                f"{cluster.core.capacity_at(max(cluster.slot, 0))} servers in use",
            )

        controller = build_cluster(
            jobs_file.stem,
            spec,
            folder=folder,
            feed=feed,
            capacity=capacity,
            policy=policy,
            rules=cond.rules("carbonscaler") if stated else None,
            overhead_s=overhead_s,
            on_step=on_step,
        )
        report = controller.run()
    if as_json:
        out = report.to_dict()
        out.update(trace=carbon_trace.source, zone=carbon_trace.zone, folder=str(folder))
        typer.echo(json.dumps(out, indent=2))
        return
    console().print(_run_table(report), highlight=False)
    saved = report.to_dict()["savings_pct"]
    jobs = len(report.jobs)
    verdict = (
        ""
        if saved is None
        else f"; saved {saved:.1f} % against carbon-agnostic first come first served under "
        f"the same capacity ({report.agnostic_emissions_g:.1f} gCO2eq, "
        f"{report.agnostic_deadlines_met}/{jobs} deadlines met)"
    )
    console().print(
        f"[bold]{report.policy}[/]: {report.emissions_g:.1f} gCO2eq, "
        f"{report.deadlines_met}/{jobs} deadlines met{verdict}. State in {folder}; power "
        "estimated from each job's profile (jobs sharing one machine cannot be told apart by "
        "its energy counters).",
        highlight=False,
    )


def _run_table(report: ClusterRunReport) -> Any:
    from rich.table import Table

    table = Table(title=f"cluster run, {report.policy} — {len(report.jobs)} jobs")
    for col in ("job", "gCO2eq", "done after (h)", "deadline", "rescales", "re-plans", "restarts"):
        table.add_column(col, justify="left" if col == "job" else "right")
    for job in report.jobs:
        done = job.completion_hours
        table.add_row(
            job.name,
            f"{job.emissions_g:.1f}",
            "not done" if done is None else f"{done:.2f}",
            f"met ({job.deadline_hours:g} h)" if job.deadline_met else "[red]missed[/]",
            str(job.rescales),
            str(job.replans),
            str(job.restarts),
        )
    return table


def _outcome_table(
    outcome: ClusterOutcome, agnostic: ClusterOutcome, jobs: list[ClusterJob]
) -> Any:
    from rich.table import Table

    table = Table(title=f"cluster run, {outcome.policy} — {len(jobs)} jobs")
    for col in (
        "job",
        "window (h)",
        "gCO2eq",
        "done after (h)",
        "deadline",
        "rescales",
        "re-plans",
        "agnostic gCO2eq",
    ):
        table.add_column(col, justify="left" if col == "job" else "right")
    dt = outcome.slot_hours
    for ran, base in zip(outcome.jobs, agnostic.jobs, strict=True):
        done = ran.completion_hours
        table.add_row(
            ran.name,
            f"{ran.arrival_slot * dt:g}–{ran.deadline_slot * dt:g}",
            f"{ran.emissions_g:.1f}",
            "not done" if math.isnan(done) else f"{done:.2f}",
            "met" if ran.deadline_met else "[red]missed[/]",
            str(ran.rescales),
            str(ran.replans),
            f"{base.emissions_g:.1f}" + ("" if base.deadline_met else " (late)"),
        )
    return table


def advise_cluster_command(
    jobs_file: Annotated[
        Path | None,
        typer.Argument(
            metavar="[JOBS]",
            help="The jobs: a cluster file (YAML, as for `cluster plan`) or a CSV with columns "
            "name, arrival_hours, length_hours, profile, minReplicas, maxReplicas, slack. "
            "Or generate them with --generate.",
        ),
    ] = None,
    generate: Annotated[
        int | None,
        typer.Option(min=1, help="Generate this many jobs instead (Poisson arrivals)."),
    ] = None,
    rate: Annotated[float, typer.Option(help="Generated jobs: mean arrivals per hour.")] = 2.0,
    length: Annotated[
        str, typer.Option(help="Generated jobs: lengths in hours at --min, uniform in LO,HI.")
    ] = "4,24",
    slack: Annotated[float, typer.Option(help="Generated jobs: deadline = slack × length.")] = 1.5,
    profile: Annotated[
        list[str] | None,
        typer.Option(help="Generated jobs: profiles to draw from (repeat); default amdahl:0.05."),
    ] = None,
    min_servers: Annotated[int, typer.Option("--min", help="Generated jobs: m.")] = 1,
    max_servers: Annotated[int, typer.Option("--max", help="Generated jobs: M.")] = 8,
    start: Annotated[
        str | None, typer.Option(help="Hour 0 of the stream (default: the trace's first slot).")
    ] = None,
    trace: TraceOption = None,
    zone: ZoneOption = None,
    year: YearOption = None,
    signal: SignalOption = "direct",
    fill_gaps: FillGapsOption = None,
    tz: TzOption = None,
    capacity: CapacityOption = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            help="Repeatable; default: agnostic, suspend-resume, carbonscaler (per job, queued)"
            " and joint."
        ),
    ] = None,
    forecast_model: ForecastModelOption = None,
    forecast_error: ForecastErrorOption = 0.0,
    profile_error: ProfileErrorOption = 0.0,
    rescale_overhead_s: OverheadOption = 0.0,
    replan_threshold: ThresholdOption = 0.05,
    safety_margin: MarginOption = 0.05,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write a PNG of the servers each policy holds over time here."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write a self-contained HTML report here.")
    ] = None,
) -> None:
    """CarbonAdvisor for a shared cluster: a stream of jobs over a real trace under a capacity,
    each policy's emissions, savings, deadline misses, turnaround and utilisation."""
    _advise_cluster(**locals())


@user_errors
def _advise_cluster(
    *,
    jobs_file: Path | None,
    generate: int | None,
    rate: float,
    length: str,
    slack: float,
    profile: list[str] | None,
    min_servers: int,
    max_servers: int,
    start: str | None,
    trace: Path | None,
    zone: str | None,
    year: int | None,
    signal: str,
    fill_gaps: int | None,
    tz: str | None,
    capacity: int | None,
    policy: list[str] | None,
    forecast_model: str | None,
    forecast_error: float,
    profile_error: float,
    rescale_overhead_s: float,
    replan_threshold: float,
    safety_margin: float,
    seed: int,
    as_json: bool,
    plot: Path | None,
    report: Path | None,
) -> None:
    import sys

    from carbonscaler.advisor import Conditions
    from carbonscaler.advisor.cluster import (
        cluster_figure,
        cluster_headline,
        cluster_summary,
        compare_cluster_policies,
        write_cluster_report,
    )
    from carbonscaler.control.cluster_spec import (
        generate_cluster_spec,
        load_cluster_spec,
        load_jobs_csv,
    )
    from carbonscaler.control.spec import SpecError
    from carbonscaler.outputs import check_output_file
    from carbonscaler.planner.model import PlanningError

    if (jobs_file is None) == (generate is None):
        raise SpecError("give the jobs (a YAML or CSV file) or --generate N, one of the two")
    # Outputs are checked before the simulations, not after.
    if plot is not None:
        check_output_file(plot, "--plot")
    if report is not None:
        check_output_file(report, "--report")
    cond = Conditions.from_options(
        forecast_model=forecast_model,
        forecast_error=forecast_error,
        seed=seed,
        profile_error=profile_error,
        rescale_overhead_s=rescale_overhead_s,
        replan_threshold=replan_threshold,
        safety_margin=safety_margin,
    )
    if jobs_file is not None:
        spec = (
            load_jobs_csv(jobs_file)
            if jobs_file.suffix.lower() == ".csv"
            else load_cluster_spec(jobs_file)
        )
    else:
        assert generate is not None
        try:
            low, high = (float(part) for part in length.split(","))
        except ValueError:
            raise SpecError(f"--length {length!r}: give LO,HI in hours, e.g. 4,24") from None
        spec = generate_cluster_spec(
            generate,
            rate_per_h=rate,
            length_hours=(low, high),
            slack=slack,
            profiles=profile or ["amdahl:0.05"],
            min_servers=min_servers,
            max_servers=max_servers,
            seed=seed,
        )
    cap = capacity if capacity is not None else spec.capacity
    if cap is None:
        raise PlanningError("no capacity: give --capacity K (servers per slot)")
    jobs = spec.cluster_jobs()
    horizon = max(job.deadline_slot for job in jobs)
    if start is None:
        if trace is None and year is None:
            raise SpecError("with --zone, give --start (or --year) to pick the dataset's year")
        probe = load_carbon(
            trace,
            zone,
            signal,
            spec.slot_minutes,
            parse_start("2000-01-01"),
            year,
            fill_gaps=fill_gaps,
            tz=tz,
        )
        when = probe.start
    else:
        when = parse_start(start)
    carbon_trace, _, carbon = _carbon_from(
        when, trace, zone, year, signal, spec.slot_minutes, horizon, fill_gaps, tz
    )
    outcomes = compare_cluster_policies(
        jobs, carbon, cap, policy or ["agnostic", "suspend-resume", "carbonscaler", "joint"], cond
    )
    rows = cluster_summary(outcomes)
    if plot is not None:
        import matplotlib.pyplot as plt

        from carbonscaler.outputs import atomic_path

        figure = cluster_figure(outcomes, carbon)
        with atomic_path(plot, "--plot") as temporary:
            figure.savefig(temporary, dpi=100, format="png")
        plt.close(figure)
    if report is not None:
        write_cluster_report(
            outcomes,
            carbon,
            report,
            zone=carbon_trace.zone,
            source=carbon_trace.source,
            start=f"{when:%Y-%m-%d %H:%M} UTC",
            capacity=cap,
            cond=cond,
            command=" ".join(["carbonscaler", *sys.argv[1:]]),
        )
    if as_json:
        out = {
            "trace": carbon_trace.source,
            "zone": carbon_trace.zone,
            "start": when.isoformat(),
            "capacity": cap,
            "jobs": len(jobs),
            "summary": rows,
            "policies": {o.policy: o.to_dict() for o in outcomes},
        }
        typer.echo(json.dumps(out, indent=2))
        return
    console().print(cluster_headline(rows, len(jobs)), highlight=False)
    console().print(_summary_table(rows, carbon_trace.zone, when, cap, len(jobs)), highlight=False)
    for written in (plot, report):
        if written is not None:
            console().print(f"wrote {written}", highlight=False)


def _summary_table(
    rows: list[dict[str, Any]], zone: str, when: pd.Timestamp, capacity: Any, count: int
) -> Any:
    from rich.table import Table

    table = Table(
        title=f"CarbonAdvisor, shared cluster — {count} jobs, {zone} from "
        f"{when:%Y-%m-%d %H:%M} UTC, capacity {capacity}"
    )
    for col in ("policy", "gCO2eq", "saved", "deadline misses", "turnaround (h)", "utilisation"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for row in rows:
        saved = row["savings_vs_agnostic_pct"]
        turnaround = row["mean_completion_hours"]
        misses = row["deadline_misses"]
        table.add_row(
            row["policy"],
            f"{row['emissions_g']:.1f}",
            "—" if saved is None else f"{saved:.1f} %",
            f"[red]{misses}[/]" if misses else "0",
            "—" if turnaround is None else f"{turnaround:.1f}",
            f"{100 * row['utilisation']:.0f} %",
        )
    return table
