"""``carbonscaler cluster``: plan many elastic jobs that share a cluster's capacity (issue #12).

Mounted by the main CLI as ``app.add_typer(cluster_app, name="cluster")``. Like every command
module it imports only the standard library, typer and light modules at module level; the
planner, the trace loader, numpy and rich are imported when the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from carbonscaler.cli._common import (
    TRACE_FLAGS,
    TRACE_HELP,
    YEAR_FLAGS,
    ZONE_FLAGS,
    console,
    load_carbon,
    parse_start,
    user_errors,
)

if TYPE_CHECKING:
    import pandas as pd

    from carbonscaler.planner.cluster import ClusterPlan, Overcommit

app = typer.Typer(
    help="Plan many elastic jobs together under a cluster's capacity.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

# Symbols of the jobs in the capacity chart, in job order (then repeated).
_SYMBOLS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Widest bar of the capacity chart, in characters; larger capacities are scaled down.
_CHART_WIDTH = 60


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
    trace: Annotated[Path | None, typer.Option(*TRACE_FLAGS, help=TRACE_HELP)] = None,
    zone: Annotated[
        str | None,
        typer.Option(
            *ZONE_FLAGS,
            help="With --trace: the zone to select in a file that names zones. Without: a "
            "zone of the offline dataset (see `carbonscaler traces list`).",
        ),
    ] = None,
    year: Annotated[
        int | None,
        typer.Option(*YEAR_FLAGS, help="Offline-dataset year for --zone (default: --start's)."),
    ] = None,
    signal: Annotated[str, typer.Option(help="Electricity Maps column: direct or lca.")] = "direct",
    capacity: Annotated[
        int | None,
        typer.Option("--capacity", min=0, help="Servers per slot (overrides the file's capacity)."),
    ] = None,
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
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Plan the jobs of JOBS.yaml together: least carbon within the capacity and deadlines."""
    _plan(
        jobs_file=jobs_file,
        start_text=start,
        trace=trace,
        zone=zone,
        year=year,
        signal=signal,
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
    from carbonscaler.planner.model import PlanningError
    from carbonscaler.planner.policies import savings_pct
    from carbonscaler.trace import TraceError

    if solver not in ("fast", "exact"):
        raise typer.BadParameter(f"{solver!r}: use fast or exact", param_hint="--solver")
    spec = load_cluster_spec(jobs_file)
    capacity: int | list[int] | None = (
        capacity_override if capacity_override is not None else spec.capacity
    )
    if capacity is None:
        raise PlanningError(
            f"{jobs_file}: no capacity; give `capacity:` in the file or --capacity K"
        )
    jobs = spec.cluster_jobs()
    start = parse_start(start_text)
    carbon_trace = load_carbon(trace, zone, signal, spec.slot_minutes, start, year)
    first = carbon_trace.index_of(start)
    carbon = carbon_trace.values[first:]
    horizon = max(job.deadline_slot for job in jobs)
    if len(carbon) < horizon:
        raise TraceError(
            f"the trace covers {carbon_trace.start} .. {carbon_trace.end}; from {start} only "
            f"{len(carbon)} slots remain but the latest deadline is {horizon} slots away; "
            "choose an earlier --start or a longer trace"
        )
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
    console().print(
        f"[bold]joint plan[/]: {plan.emissions_g:.1f} gCO2eq, "
        f"{plan.deadlines_met}/{len(jobs)} deadlines met, planned in {plan.solve_ms:.1f} ms; "
        f"saved {savings_pct(plan.emissions_g, agnostic.emissions_g):.1f} % against "
        f"carbon-agnostic FIFO ({agnostic.emissions_g:.1f} gCO2eq, "
        f"{agnostic.deadlines_met}/{len(jobs)} deadlines met); "
        f"independent plans: {independent.emissions_g:.1f} gCO2eq, "
        + (
            f"over capacity by up to {_count(excess.max_servers, 'server')} "
            f"({excess.server_hours:g} server-hours in {_count(excess.slots, 'slot')})"
            if excess.max_servers
            else "within the capacity"
        ),
        highlight=False,
    )
    for note in (*plan.notes, *agnostic.notes):
        console().print(f"  note: {note}", highlight=False, markup=False)


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
    plan: ClusterPlan, agnostic: ClusterPlan, independent: ClusterPlan, title: str
) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for col in (
        "job",
        "window (h)",
        "servers",
        "work",
        "gCO2eq",
        "done (h)",
        "deadline",
        "alone gCO2eq",
        "agnostic gCO2eq",
    ):
        table.add_column(col, justify="left" if col == "job" else "right")
    dt = plan.slot_hours
    for i, (job, agn, ind) in enumerate(
        zip(plan.jobs, agnostic.jobs, independent.jobs, strict=True)
    ):
        schedule = job.schedule
        active = schedule.servers[schedule.servers > 0]
        levels = f"{int(active.min())}..{int(active.max())}" if len(active) else "0"
        table.add_row(
            f"{_SYMBOLS[i % len(_SYMBOLS)]} {job.name}",
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


def _chart(plan: ClusterPlan, times: pd.DatetimeIndex, carbon: Any) -> str:
    """Servers per slot as text bars: one symbol per job's server, '·' for free capacity."""
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
        for i, per_slot in enumerate(servers):
            bar += _SYMBOLS[i % len(_SYMBOLS)] * round(int(per_slot[t]) / scale)
        used, cap = int(plan.servers_used[t]), int(capacity[t])
        bar += "·" * max(round(cap / scale) - len(bar), 0)
        width = round(widest / scale)
        lines.append(
            f"{times[t]:%m-%d %H:%M} {float(carbon[t]):6.1f} g/kWh |{bar:<{width}}| {used:>3}/{cap}"
        )
    return "\n".join(lines)
