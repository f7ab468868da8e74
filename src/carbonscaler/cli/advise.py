"""``carbonscaler advise``: CarbonAdvisor's what-if sweep on real traces."""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from carbonscaler.cli._common import (
    TRACE_FLAGS,
    YEAR_FLAGS,
    ZONE_FLAGS,
    FillGapsOption,
    TzOption,
    console,
    err_console,
    open_trace,
    user_errors,
)
from carbonscaler.cli._progress import ProgressDisplay
from carbonscaler.forecast_names import FORECAST_MODELS
from carbonscaler.planner.names import POLICIES

if TYPE_CHECKING:
    from carbonscaler.trace import CarbonTrace


def _parse_starts(value: str) -> str | int | list[str]:
    if value == "all":
        return "all"
    if value.isdigit():
        return int(value)
    return [part.strip() for part in value.split(",") if part.strip()]


def advise_command(
    length: Annotated[float, typer.Option(help="Job length: hours at --min servers.")],
    profile: Annotated[
        str, typer.Option(help="Profile CSV (nodes,throughput,power) or e.g. 'amdahl:0.05'.")
    ],
    trace: Annotated[
        list[Path] | None,
        typer.Option(*TRACE_FLAGS, help="Carbon trace CSV; repeat for several regions."),
    ] = None,
    zone: Annotated[
        list[str] | None,
        typer.Option(*ZONE_FLAGS, help="Offline dataset zone (with --year); repeat for several."),
    ] = None,
    year: Annotated[
        int | None, typer.Option(*YEAR_FLAGS, help="Year for --zone (default: latest).")
    ] = None,
    signal: Annotated[str, typer.Option(help="Electricity Maps column: direct or lca.")] = "direct",
    fill_gaps: FillGapsOption = None,
    tz: TzOption = None,
    slack: Annotated[
        list[float] | None, typer.Option(help="Deadline = slack × length; repeat for several.")
    ] = None,
    min_servers: Annotated[list[int] | None, typer.Option("--min", help="m; repeatable.")] = None,
    max_servers: Annotated[list[int] | None, typer.Option("--max", help="M; repeatable.")] = None,
    policy: Annotated[
        list[str] | None, typer.Option(help=f"Repeatable; default all: {', '.join(POLICIES)}.")
    ] = None,
    starts: Annotated[
        str, typer.Option(help="'all' slots, a number N of evenly spaced starts, or ISO,ISO,...")
    ] = "all",
    forecast_error: Annotated[
        float, typer.Option(help="Relative forecast error for uniform/gaussian (0.1 = ±10 %).")
    ] = 0.0,
    forecast_model: Annotated[
        str | None,
        typer.Option(
            help=f"One of: {', '.join(FORECAST_MODELS)} (alias: real = perfect); default"
            " uniform with --forecast-error, else perfect."
        ),
    ] = None,
    forecast_quantile: Annotated[
        float,
        typer.Option(
            help="For --forecast-model learned: the quantile to plan on (0.5 = the median; "
            "0.9 plans on a dirtier future)."
        ),
    ] = 0.5,
    profile_error: Annotated[
        float, typer.Option(help="Real throughput differs from the profile by up to ±x.")
    ] = 0.0,
    rescale_overhead_s: Annotated[
        float, typer.Option(help="Seconds of work lost per change of server count.")
    ] = 0.0,
    replan_threshold: Annotated[
        float, typer.Option(help="Deviation that triggers a re-plan (0.05 = 5 %).")
    ] = 0.05,
    safety_margin: Annotated[
        float,
        typer.Option(
            help="Extra share of the remaining work each plan covers where the deadline "
            "leaves room (0.05 = 5 %, the job spec's default)."
        ),
    ] = 0.05,
    price: Annotated[
        float | None, typer.Option(help="Price per server-hour, to report cost.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for forecast and profile errors.")] = 0,
    slot_minutes: Annotated[int, typer.Option(help="Slot length in minutes.")] = 60,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="Simulations run at once, on threads (default: every core); 1 runs them one"
            " after the other. The results are the same.",
        ),
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="Write every simulated run to this CSV.")] = None,
    summary_csv: Annotated[
        Path | None,
        typer.Option(help="Write the ranked summary (misses beside savings) to this CSV."),
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write PNG figures into this folder.")] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write a self-contained HTML report here.")
    ] = None,
) -> None:
    """Simulate every policy over many start times on real traces: CarbonAdvisor."""
    _advise(**locals())


@user_errors
def _advise(
    *,
    length: float,
    profile: str,
    trace: list[Path] | None,
    zone: list[str] | None,
    year: int | None,
    signal: str,
    fill_gaps: int | None,
    tz: str | None,
    slack: list[float] | None,
    min_servers: list[int] | None,
    max_servers: list[int] | None,
    policy: list[str] | None,
    starts: str,
    forecast_error: float,
    forecast_model: str | None,
    forecast_quantile: float,
    profile_error: float,
    rescale_overhead_s: float,
    replan_threshold: float,
    safety_margin: float,
    price: float | None,
    seed: int,
    slot_minutes: int,
    as_json: bool,
    jobs: int | None,
    csv: Path | None,
    summary_csv: Path | None,
    plot: Path | None,
    report: Path | None,
) -> None:
    from carbonscaler.advisor import (
        RANKING_RULE,
        Conditions,
        SweepSpec,
        default_jobs,
        run_sweep,
        scenario_tables,
        summary_records,
        write_csv,
        write_html,
        write_plots,
        write_summary_csv,
    )
    from carbonscaler.advisor.report import headline
    from carbonscaler.outputs import check_output_file, check_output_folder
    from carbonscaler.planner import PlanningError
    from carbonscaler.profile import parse_profile_spec
    from carbonscaler.trace import TraceError

    # Every output is checked before minutes of simulation, not after.
    if csv is not None:
        check_output_file(csv, "--csv")
    if summary_csv is not None:
        check_output_file(summary_csv, "--summary-csv")
    if plot is not None:
        check_output_folder(plot, "--plot")
    if report is not None:
        check_output_file(report, "--report")
    traces: list[CarbonTrace] = [
        open_trace(p, signal=signal, fill_gaps=fill_gaps, tz=tz) for p in trace or []
    ]
    traces += [open_trace(None, z, year) for z in zone or []]
    if not traces:
        raise TraceError("give at least one --trace PATH or --zone ZONE")
    conditions = Conditions.from_options(
        forecast_model=forecast_model,
        forecast_error=forecast_error,
        forecast_quantile=forecast_quantile,
        seed=seed,
        profile_error=profile_error,
        rescale_overhead_s=rescale_overhead_s,
        replan_threshold=replan_threshold,
        safety_margin=safety_margin,
    )
    if price is not None and not (math.isfinite(price) and price >= 0):
        raise PlanningError(f"--price must be a finite number >= 0, not {price}")
    top = max(max_servers or [8])
    spec = SweepSpec(
        traces=traces,
        profile=parse_profile_spec(profile, default_servers=top),
        length_hours=length,
        slacks=slack or [1.5],
        min_servers=min_servers or [1],
        max_servers=max_servers or [8],
        policies=policy or list(POLICIES),
        starts=_parse_starts(starts),
        conditions=conditions,
        slot_minutes=slot_minutes,
        price_per_server_hour=price,
    )
    with ProgressDisplay("simulating", unit=" runs") as reporter:

        def progress(done: int, total: int, label: str) -> None:
            reporter.update(done, total=total, detail=label)

        result = run_sweep(spec, progress, jobs=jobs or default_jobs())
    if csv is not None:
        write_csv(result, csv)
    if summary_csv is not None:
        write_summary_csv(result, summary_csv)
    if plot is not None:
        written = write_plots(result, plot)
        err_console().print(f"wrote {len(written)} figures to {plot}")
    if report is not None:
        write_html(result, report, command=shlex.join(["carbonscaler", *sys.argv[1:]]))
        err_console().print(f"wrote report {report}")
    if as_json:
        typer.echo(json.dumps(summary_records(result), indent=2))
        return
    for table in scenario_tables(result, width=console().width):
        console().print(table)
    console().print(RANKING_RULE, style="dim")
    console().print(headline(result), style="bold", highlight=False)
