"""``carbonscaler run`` and ``carbonscaler demo``: run a job carbon-aware, for real."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from carbonscaler.cli._common import console, err_console, user_errors

if TYPE_CHECKING:
    from rich.table import Table

    from carbonscaler.control import Controller, ControllerState, JobSpec, RunReport

    ExtraFn = Callable[[Controller, RunReport], dict[str, Any]]


def _live_table(controller: Controller, state: ControllerState) -> Table:
    from rich.table import Table

    spec = controller.spec
    hours = controller.job_hours(state)
    slot = min(math.floor(hours / spec.slot_hours), state.deadline_slots - 1)
    seen = controller.intensity_seen(slot)
    carbon = float("nan") if seen is None else seen
    upcoming = ""
    for i in range(max(slot + 1, 0), state.deadline_slots):
        if state.plan_servers[i] != state.servers:
            upcoming = f"{state.plan_servers[i]} servers at slot {i}"
            break
    table = Table(title=f"{spec.name} — {spec.policy_name}", show_header=False)
    table.add_column(justify="right")
    table.add_column()
    table.add_row("slot", f"{slot} of {state.deadline_slots} ({hours:.2f} job hours)")
    table.add_row("carbon intensity", f"{carbon:.1f} gCO2eq/kWh")
    table.add_row("servers", str(state.servers))
    table.add_row("progress", f"{state.progress_pct:.1f} %")
    table.add_row("emissions so far", f"{state.emissions_g:.2f} g ({state.energy_kwh:.4f} kWh)")
    table.add_row("next rescale", upcoming or "—")
    table.add_row("re-plans / rescales", f"{state.replans} / {state.rescales}")
    if state.degraded:
        table.add_row("[yellow]degraded[/]", "carbon source unreachable: on the last forecast")
    return table


def _report_table(report: RunReport) -> Table:
    from rich.table import Table

    table = Table(title=f"Run report: {report.name}", show_header=False)
    table.add_column(justify="right")
    table.add_column()
    done = f"{report.completion_hours:.2f} h" if report.completion_hours is not None else "—"
    table.add_row(
        "completed",
        f"{report.completed} after {done} (deadline "
        f"{report.deadline_hours:g} h, {'met' if report.deadline_met else 'MISSED'})",
    )
    table.add_row("emissions", f"{report.emissions_g:.2f} gCO2eq ({report.energy_kwh:.4f} kWh)")
    table.add_row("carbon-agnostic", f"{report.agnostic_emissions_g:.2f} gCO2eq")
    table.add_row("saved", f"{report.savings_pct:.1f} %")
    table.add_row(
        "rescales / re-plans / restarts",
        f"{report.rescales} / {report.replans} / {report.restarts}",
    )
    table.add_row("mean rescale time", f"{report.mean_rescale_s:.2f} s")
    table.add_row("power", report.power_source)
    table.add_row("carbon", report.carbon_source)
    table.add_row("profile", report.profile_source)
    return table


def execute(
    spec: JobSpec, *, as_json: bool, report_dir: Path | None, extra_fn: ExtraFn | None = None
) -> RunReport:
    """Profile (if asked), plan, run with a live view, report.

    ``extra_fn`` adds fields to the printed report (the demo adds the advisor's prediction).
    """
    from rich.live import Live

    from carbonscaler.cli._runner import build_controller
    from carbonscaler.control.report import write_run_report
    from carbonscaler.outputs import check_output_folder

    def profiling(k: int, top: int) -> None:
        err_console().print(
            f"profiling the workload at {k} of {top} workers ({spec.profile_seconds:g} s each)..."
        )

    folder = check_output_folder(report_dir or Path(spec.checkpoint_dir), "report folder")
    controller = build_controller(spec, on_profile=profiling)
    live_enabled = console().is_terminal and not as_json
    last_draw = [0.0]
    with Live(console=console(), refresh_per_second=4, transient=False, auto_refresh=False) as live:

        def on_step(state: ControllerState) -> None:
            now = time.monotonic()
            if live_enabled and now - last_draw[0] > 0.25:
                live.update(_live_table(controller, state), refresh=True)
                last_draw[0] = now

        controller.on_step = on_step
        try:
            report = controller.run()
        except KeyboardInterrupt:
            controller.backend.stop()
            err_console().print("stopped; run the same command again to resume")
            raise typer.Exit(code=130) from None
    written = write_run_report(report, folder, spec.slot_hours)
    _print_report(controller, report, as_json=as_json, written=written, extra_fn=extra_fn)
    return report


def _print_report(
    controller: Controller,
    report: RunReport,
    *,
    as_json: bool,
    written: list[Path],
    extra_fn: ExtraFn | None = None,
) -> None:
    extra = extra_fn(controller, report) if extra_fn is not None else {}
    out = report.to_dict()
    out.update(extra)
    if as_json:
        typer.echo(json.dumps(out, indent=2, default=float))
        return
    console().print(_report_table(report))
    for key, value in extra.items():
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        console().print(f"{key.replace('_', ' ')}: {shown}")
    if written:
        console().print(f"report: {', '.join(str(p) for p in written)}")


def simulate(spec: JobSpec, *, as_json: bool, report_dir: Path | None) -> RunReport:
    """Run the job's controller on a virtual clock against a simulated workload and report.

    Writes report files only into ``report_dir`` (never into the job's run folder).
    """
    from carbonscaler.cli._runner import build_simulation
    from carbonscaler.control.report import write_run_report
    from carbonscaler.outputs import check_output_folder

    if report_dir is not None:
        check_output_folder(report_dir, "--report-dir")
    controller = build_simulation(spec)
    report = controller.run()
    note = "simulated: the controller on a virtual clock, the workload following its profile"
    report = dataclasses.replace(report, notes=[*report.notes, note])
    written = write_run_report(report, report_dir, spec.slot_hours) if report_dir else []
    _print_report(controller, report, as_json=as_json, written=written)
    return report


def run_command(
    job: Annotated[Path, typer.Argument(help="Job spec (YAML).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    simulate_only: Annotated[
        bool,
        typer.Option(
            "--simulate",
            help="Run the controller on a virtual clock against a simulated workload that "
            "follows the profile (no processes): what the job will do, in under a second.",
        ),
    ] = False,
    profile: Annotated[
        str | None,
        typer.Option(
            help="Use this profile instead of the spec's: a CSV (nodes,throughput,power) or a "
            "parametric shape such as 'amdahl:0.1' (a simulation needs one if the spec says auto)."
        ),
    ] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where to write report.json/png/html (default: the job's checkpoint_dir)."
        ),
    ] = None,
) -> None:
    """Run an elastic job carbon-aware: scale up when the grid is clean, down when dirty.

    Re-running the same spec after an interruption resumes the job where it was.
    """
    _run(
        job=job,
        as_json=as_json,
        report_dir=report_dir,
        simulate_only=simulate_only,
        profile=profile,
    )


@user_errors
def _run(
    *,
    job: Path,
    as_json: bool,
    report_dir: Path | None,
    simulate_only: bool,
    profile: str | None,
) -> None:
    from carbonscaler.backends.base import BackendError
    from carbonscaler.control.spec import SpecError, load_job_spec

    spec = load_job_spec(job)
    if profile is not None:
        if profile.endswith(".csv"):
            profile = str(Path(profile).resolve())
        spec = spec.model_copy(update={"profile": profile})
    if simulate_only:
        simulate(spec, as_json=as_json, report_dir=report_dir)
        return
    try:
        report = execute(spec, as_json=as_json, report_dir=report_dir)
    except BackendError as exc:
        raise SpecError(str(exc)) from None
    if not report.completed:
        raise typer.Exit(code=1)
