"""``carbonscaler plan``: plan one job on a real trace."""

from __future__ import annotations

import json
import math
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
    err_console,
    load_carbon,
    parse_start,
    user_errors,
)
from carbonscaler.planner.names import DEADLINE_AWARE, POLICIES

if TYPE_CHECKING:
    import pandas as pd
    from rich.table import Table

    from carbonscaler.planner import PlanningError, Schedule
    from carbonscaler.trace import CarbonTrace


# The servers a parametric --profile describes when --max is not given (a CSV names its own).
DEFAULT_PARAMETRIC_SERVERS = 8

# The columns of ``plan --csv``, one row per slot.
CSV_COLUMNS = (
    "slot",
    "start",
    "servers",
    "fraction",
    "servers_after",
    "carbon_intensity_g_per_kwh",
    "work",
    "energy_kwh",
    "emissions_g",
)


def schedule_csv(schedule: Schedule, times: pd.DatetimeIndex, carbon: Any) -> str:
    """The schedule as CSV, one row per slot (:data:`CSV_COLUMNS`).

    ``start`` is the slot's start, ISO 8601 in UTC; ``servers`` run for ``fraction`` of the
    slot and ``servers_after`` for the rest (the same count, with fraction 1, except in the
    slot where the job's last increment is only partly needed); ``carbon_intensity_g_per_kwh``
    is the intensity the plan used (gCO2eq/kWh), and ``work``, ``energy_kwh`` and
    ``emissions_g`` (gCO2eq) what the slot does and costs.
    """
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i, servers in enumerate(schedule.servers):
        partial = i == schedule.partial_slot
        writer.writerow(
            (
                i,
                times[i].isoformat(),
                int(servers),
                float(schedule.last_slot_fraction) if partial else 1.0,
                int(schedule.partial_servers_after) if partial else int(servers),
                float(carbon[i]),
                float(schedule.work_per_slot[i]),
                float(schedule.energy_kwh_per_slot[i]),
                float(schedule.emissions_g_per_slot[i]),
            )
        )
    return buffer.getvalue()


def _deadline_slots(deadline_hours: float, slot_hours: float) -> int:
    from carbonscaler.planner import PlanningError

    if not (math.isfinite(deadline_hours) and deadline_hours > 0):
        raise PlanningError(f"--deadline must be a positive number of hours, got {deadline_hours}")
    slots = deadline_hours / slot_hours
    whole = math.floor(slots + 1e-9)
    if whole < 1:
        raise PlanningError(
            f"--deadline {deadline_hours} h is shorter than one {slot_hours * 60:g}-minute slot"
        )
    return whole


def _carbon_from(trace: CarbonTrace, start: pd.Timestamp, deadline_slots: int, policy: str) -> Any:
    """The forecast from ``start``: up to the deadline, or to the trace's end for policies that
    may run late (so they can show how late)."""
    from carbonscaler.trace import TraceError

    first = trace.index_of(start)
    available = len(trace.series) - first
    if available < deadline_slots:
        raise TraceError(
            f"the trace covers {trace.series.index[0]} .. {trace.series.index[-1]}; from {start} "
            f"only {available} slots remain but the deadline needs {deadline_slots}; "
            "choose an earlier --start or a shorter --deadline"
        )
    if policy in DEADLINE_AWARE:
        return trace.window(start, deadline_slots)
    return trace.values[first:]


def _schedule_table(schedule: Schedule, times: pd.DatetimeIndex, carbon: Any, title: str) -> Table:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in ("slot", "start (UTC)", "gCO2eq/kWh", "servers", "work", "kWh", "gCO2eq"):
        table.add_column(col, justify="right")
    for i in range(len(schedule.servers)):
        servers = str(int(schedule.servers[i]))
        if i == schedule.partial_slot:
            servers += (
                f" ({schedule.last_slot_fraction:.2f}, then {schedule.partial_servers_after})"
            )
        style = "dim" if schedule.servers[i] == 0 else None
        table.add_row(
            str(i),
            times[i].strftime("%Y-%m-%d %H:%M"),
            f"{carbon[i]:.1f}",
            servers,
            f"{schedule.work_per_slot[i]:.4g}",
            f"{schedule.energy_kwh_per_slot[i]:.3f}",
            f"{schedule.emissions_g_per_slot[i]:.1f}",
            style=style,
        )
    return table


def _summary(schedule: Schedule) -> str:
    return (
        f"[bold]{schedule.policy}[/]: {schedule.emissions_g:.1f} gCO2eq, "
        f"{schedule.energy_kwh:.3f} kWh, done after {schedule.completion_hours:.2f} h "
        f"(deadline {schedule.deadline_slots * schedule.slot_hours:g} h, "
        f"{'met' if schedule.deadline_met else '[red]missed[/]'}), "
        f"{schedule.server_hours:.1f} server-hours, {schedule.rescales} rescales, "
        f"planned in {schedule.solve_ms:.2f} ms"
    )


def _comparison_table(results: dict[str, Schedule | PlanningError]) -> Table:
    from rich.table import Table

    from carbonscaler.planner import PlanningError, Schedule, savings_pct

    agnostic = results.get("agnostic")
    suspend = results.get("suspend-resume")
    base_a = agnostic.emissions_g if isinstance(agnostic, Schedule) else float("nan")
    base_s = suspend.emissions_g if isinstance(suspend, Schedule) else float("nan")
    table = Table(title="All policies on the same job and trace")
    for col in (
        "policy",
        "gCO2eq",
        "saved vs agnostic",
        "saved vs suspend-resume",
        "done (h)",
        "deadline",
        "server-h",
        "rescales",
    ):
        table.add_column(col, justify="right" if col != "policy" else "left")
    for name, result in results.items():
        if isinstance(result, PlanningError):
            table.add_row(name, "[red]cannot plan[/]", "", "", "", str(result)[:60], "", "")
            continue
        table.add_row(
            name,
            f"{result.emissions_g:.1f}",
            f"{savings_pct(result.emissions_g, base_a):+.1f} %",
            f"{savings_pct(result.emissions_g, base_s):+.1f} %",
            f"{result.completion_hours:.2f}" if result.completed else "not done",
            "met" if result.deadline_met else "[red]missed[/]",
            f"{result.server_hours:.1f}",
            str(result.rescales),
        )
    return table


def plan_command(
    start: Annotated[str, typer.Option(help="Job arrival, ISO 8601 (naive = UTC).")],
    length: Annotated[float, typer.Option(help="Job length: hours at --min servers.")],
    deadline: Annotated[float, typer.Option(help="Hours from arrival to the deadline.")],
    profile: Annotated[
        str, typer.Option(help="Profile CSV (nodes,throughput,power) or e.g. 'amdahl:0.05'.")
    ],
    trace: Annotated[Path | None, typer.Option(*TRACE_FLAGS, help=TRACE_HELP)] = None,
    signal: Annotated[str, typer.Option(help="Electricity Maps column: direct or lca.")] = "direct",
    fill_gaps: FillGapsOption = None,
    tz: TzOption = None,
    zone: Annotated[
        str | None,
        typer.Option(
            *ZONE_FLAGS,
            help="With --trace: the zone to select in a file that names zones (or a label "
            "for one that does not). Without --trace: a zone of the offline dataset.",
        ),
    ] = None,
    year: Annotated[
        int | None,
        typer.Option(*YEAR_FLAGS, help="Offline-dataset year for --zone (default: --start's)."),
    ] = None,
    min_servers: Annotated[int, typer.Option("--min", help="Fewest servers (m).")] = 1,
    max_servers: Annotated[
        int | None,
        typer.Option(
            "--max",
            help="Most servers (M). Default: the profile's largest count (a CSV's last row; "
            f"{DEFAULT_PARAMETRIC_SERVERS} for a parametric shape).",
        ),
    ] = None,
    policy: Annotated[str, typer.Option(help=f"One of: {', '.join(POLICIES)}.")] = "carbonscaler",
    slot_minutes: Annotated[int, typer.Option(help="Slot length in minutes.")] = 60,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    csv_path: Annotated[
        str | None,
        typer.Option(
            "--csv",
            metavar="PATH",
            help="Also write the per-slot schedule as CSV (slot, start, servers, fraction, "
            "servers_after, carbon_intensity_g_per_kwh, work, energy_kwh, emissions_g) to PATH; "
            "'-' prints it to standard output instead of the table.",
        ),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--compare", help="Also plan with every policy and compare.")
    ] = False,
    static_servers: Annotated[
        int | None, typer.Option(help="k for the static policy (default 2·min).")
    ] = None,
    threshold_percentile: Annotated[
        float, typer.Option(help="Percentile for suspend-resume-threshold.")
    ] = 25.0,
) -> None:
    """Plan how many servers a job gets in each slot, and what it emits."""
    _plan(
        start_text=start,
        length=length,
        deadline=deadline,
        profile_spec=profile,
        trace=trace,
        signal=signal,
        fill_gaps=fill_gaps,
        tz=tz,
        zone=zone,
        year=year,
        min_servers=min_servers,
        max_servers=max_servers,
        policy=policy,
        slot_minutes=slot_minutes,
        as_json=as_json,
        csv_path=csv_path,
        show_all=show_all,
        static_servers=static_servers,
        threshold_percentile=threshold_percentile,
    )


@user_errors
def _plan(
    *,
    start_text: str,
    length: float,
    deadline: float,
    profile_spec: str,
    trace: Path | None,
    signal: str,
    fill_gaps: int | None,
    tz: str | None,
    zone: str | None,
    year: int | None,
    min_servers: int,
    max_servers: int | None,
    policy: str,
    slot_minutes: int,
    as_json: bool,
    csv_path: str | None,
    show_all: bool,
    static_servers: int | None,
    threshold_percentile: float,
) -> None:
    from carbonscaler.outputs import atomic_write, check_output_file
    from carbonscaler.planner import Job, PlanningError, Schedule, compare, plan
    from carbonscaler.profile import parse_profile_spec

    csv_to_stdout = csv_path == "-"
    if csv_to_stdout and (as_json or show_all):
        raise typer.BadParameter(
            f"'-' prints the CSV instead of the table; with {'--json' if as_json else '--compare'}"
            " give a file: --csv PATH",
            param_hint="--csv",
        )
    csv_file = None if csv_path is None or csv_to_stdout else check_output_file(csv_path, "--csv")
    start = parse_start(start_text)
    carbon_trace = load_carbon(
        trace, zone, signal, slot_minutes, start, year, fill_gaps=fill_gaps, tz=tz, shows_notes=True
    )
    profile = parse_profile_spec(
        profile_spec,
        default_servers=DEFAULT_PARAMETRIC_SERVERS if max_servers is None else max(max_servers, 1),
    )
    if max_servers is None:
        max_servers = profile.max_servers
    slot_hours = slot_minutes / 60.0
    if policy not in POLICIES:
        raise PlanningError(f"unknown policy {policy!r}; choose one of: {', '.join(POLICIES)}")
    job = Job.from_length(profile, length, min_servers, max_servers, slot_hours)
    deadline_slots = _deadline_slots(deadline, slot_hours)
    carbon = _carbon_from(carbon_trace, start, deadline_slots, policy)
    options: dict[str, Any] = {
        "deadline_slots": deadline_slots,
        "static_servers": static_servers,
        "threshold_percentile": threshold_percentile,
    }
    schedule = plan(policy, job, carbon, **options)
    times = carbon_trace.index[carbon_trace.index_of(start) :]
    if csv_path is not None:
        text = schedule_csv(schedule, times, carbon)
        if csv_file is None:
            for note in carbon_trace.notes:  # the table that shows them is not printed
                err_console().print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
            typer.echo(text, nl=False)
            return
        atomic_write(csv_file, text, "--csv")
    if as_json:
        out = schedule.to_dict()
        out["notes"] = [*carbon_trace.notes, *schedule.notes]  # what the trace's loading repaired
        out.update(
            trace=carbon_trace.source,
            zone=carbon_trace.zone,
            start=start.isoformat(),
            profile=profile.name,
            min_servers=min_servers,
            max_servers=max_servers,
            length_hours=length,
            carbon_intensity=[float(c) for c in carbon[: len(schedule.servers)]],
        )
        if show_all:
            full = carbon_trace.values[carbon_trace.index_of(start) :]
            results = compare(job, full, **options)
            out["comparison"] = {
                name: (r.to_dict() if isinstance(r, Schedule) else {"error": str(r)})
                for name, r in results.items()
            }
        typer.echo(json.dumps(out, indent=2))
        return
    title = (
        f"{policy} plan — {carbon_trace.zone} from {start:%Y-%m-%d %H:%M} UTC, "
        f"{length:g} h job at {min_servers} server(s), deadline {deadline:g} h, "
        f"{min_servers}..{max_servers} servers, profile {profile.name}"
    )
    console().print(_schedule_table(schedule, times, carbon, title))
    console().print(_summary(schedule))
    for note in (*carbon_trace.notes, *schedule.notes):
        console().print(f"  note: {note}")
    if csv_file is not None:
        console().print(f"per-slot schedule written to {csv_file}", highlight=False)
    if show_all:
        full = carbon_trace.values[carbon_trace.index_of(start) :]
        console().print(_comparison_table(compare(job, full, **options)))
