"""``carbonscaler run`` and ``carbonscaler demo``: run a job carbon-aware, for real."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from carbonscaler.cli._common import console, err_console, user_errors
from carbonscaler.cli._progress import ProgressDisplay

if TYPE_CHECKING:
    from rich.table import Table

    from carbonscaler.control import Controller, ControllerState, JobSpec, RunReport

    ExtraFn = Callable[[Controller, RunReport], dict[str, Any]]


def _live_table(controller: Controller, state: ControllerState) -> Table:
    from rich.table import Table

    from carbonscaler.wording import grams

    spec = controller.spec
    hours = controller.job_hours(state)
    slot = min(math.floor(hours / spec.slot_hours), state.deadline_slots - 1)
    seen = controller.intensity_seen(slot)
    upcoming = ""
    for i in range(max(slot + 1, 0), state.deadline_slots):
        if state.plan_servers[i] != state.servers:
            upcoming = f"{state.plan_servers[i]} servers at slot {i + 1}"
            break
    table = Table(title=f"{spec.name} — {spec.policy_name}", show_header=False)
    table.add_column(justify="right")
    table.add_column()
    table.add_row("slot", f"{slot + 1} of {state.deadline_slots} ({hours:.1f} job hours)")
    table.add_row("carbon intensity", "—" if seen is None else f"{seen:.0f} gCO2eq/kWh")
    table.add_row("servers", str(state.servers))
    table.add_row("emissions so far", f"{grams(state.emissions_g)} ({state.energy_kwh:.3g} kWh)")
    table.add_row("next rescale", upcoming or "—")
    table.add_row("re-plans / rescales", f"{state.replans} / {state.rescales}")
    if state.degraded:
        table.add_row("[yellow]degraded[/]", "carbon source unreachable: on the last forecast")
    return table


class _RunProgress:
    """The run as it goes, through a :class:`ProgressDisplay`: on a terminal the live table
    over a bar (share of the work done, time left until the plan's end); without one a line at
    every slot and every change of servers."""

    def __init__(self, controller: Controller, reporter: ProgressDisplay) -> None:
        self.controller = controller
        self.reporter = reporter
        self._drawn = -math.inf
        self._seen: tuple[int, int] | None = None

    def eta_s(self, state: ControllerState) -> float | None:
        """Wall seconds until the plan's last server stops; None past it or once done."""
        if state.progress_pct >= 100.0:
            return None
        spec = self.controller.spec
        end_h = float(state.plan.get("endSlot", 0.0)) * spec.slot_hours
        left_h = end_h - self.controller.job_hours(state)
        if left_h <= 0:
            return None
        return left_h / spec.slot_hours * spec.seconds_per_slot

    def __call__(self, state: ControllerState) -> None:
        from carbonscaler.wording import grams, servers

        spec = self.controller.spec
        hours = self.controller.job_hours(state)
        slot = min(math.floor(hours / spec.slot_hours), state.deadline_slots - 1)
        now = time.monotonic()
        milestone = (slot, state.servers) != self._seen
        if self.reporter.terminal and not milestone and now - self._drawn < 0.25:
            return
        self._seen, self._drawn = (slot, state.servers), now
        seen = self.controller.intensity_seen(slot)
        carbon = "" if seen is None else f" at {seen:.0f} gCO2eq/kWh"
        self.reporter.update(
            state.progress_pct,
            detail=(
                f"slot {slot + 1}/{state.deadline_slots}, {servers(state.servers)}{carbon}, "
                f"{grams(state.emissions_g)} so far"
            ),
            eta_s=self.eta_s(state),
            milestone=milestone,
            above=_live_table(self.controller, state) if self.reporter.terminal else None,
        )


def _report_table(report: RunReport) -> Table:
    from rich.table import Table

    from carbonscaler.control.report import summary_rows

    table = Table(title=f"Run report: {report.name}", show_header=False)
    table.add_column(justify="right", style="bold", no_wrap=True)
    table.add_column()
    for label, value in summary_rows(report):
        table.add_row(label, value)
    return table


def _prediction_table(report: RunReport, prediction: Mapping[str, Any]) -> Table:
    from rich.table import Table

    from carbonscaler.control.report import prediction_rows

    table = Table(title="The advisor's prediction beside the measurement")
    table.add_column("")
    for column in ("measured", "advisor predicted", "difference"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in prediction_rows(report, prediction):
        table.add_row(*row)
    return table


def _already_complete(spec: JobSpec, folder: Path, *, as_json: bool) -> None:
    """If the job finished in an earlier run, say so (and where its report is) and exit 0.

    Raises:
        typer.Exit: with code 0, when the job is complete.
    """
    from datetime import UTC, datetime

    from carbonscaler.cli._runner import state_path
    from carbonscaler.control.report import finish_words
    from carbonscaler.control.state import StateStore

    path = state_path(spec)
    if not path.is_file():
        return
    store = StateStore(path)
    try:
        loaded = store.load(spec.name)
        if loaded is None or not loaded[1].completed:
            return
        state = loaded[1]
        done = [e for e in store.events(spec.name) if e.kind == "done"]
    finally:
        store.close()
    deadline_h = state.deadline_slots * spec.slot_hours
    finished = state.completion_hours if state.completion_hours is not None else math.nan
    when = ""
    if done:
        when = f" on {datetime.fromtimestamp(done[-1].wall_time, UTC):%Y-%m-%d %H:%M} UTC"
    report = folder / "report.html"
    where = f"Report: {report}." if report.is_file() else f"No report in {folder}."
    verdict = finish_words(finished, deadline_h, finished <= deadline_h + 1e-9)
    err_console().print(
        f"{spec.name} is already complete: {verdict}{when}. {where} "
        f"Delete {spec.checkpoint_dir} to run it again.",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    saved = folder / "report.json"
    if as_json and saved.is_file():
        typer.echo(saved.read_text())
    raise typer.Exit(code=0)


def execute(
    spec: JobSpec, *, as_json: bool, report_dir: Path | None, extra_fn: ExtraFn | None = None
) -> RunReport:
    """Profile (if asked), plan, run with progress on standard error, report.

    A job that finished in an earlier run is not run again: that is said, with where its
    report is, and the command exits 0 (:func:`_already_complete`).

    ``extra_fn`` adds fields to the report (the demo adds the advisor's prediction).
    """
    from carbonscaler.cli._runner import build_controller
    from carbonscaler.control.report import write_run_report
    from carbonscaler.outputs import check_output_folder

    folder = check_output_folder(report_dir or Path(spec.checkpoint_dir), "report folder")
    _already_complete(spec, folder, as_json=as_json)
    with contextlib.ExitStack() as profiling:
        bar: list[ProgressDisplay] = []

        def on_profile(k: int, top: int) -> None:
            if not bar:
                bar.append(profiling.enter_context(ProgressDisplay("profiling the workload")))
            bar[0].update(
                k - 1,
                total=top,
                detail=f"{k} of {top} workers, {spec.profile_seconds:g} s each",
                eta_s=(top - k + 1) * spec.profile_seconds,
                milestone=True,
            )

        controller = build_controller(spec, on_profile=on_profile)
    with ProgressDisplay(spec.name, total=100.0, unit="%", every_s=10.0) as reporter:
        controller.on_step = _RunProgress(controller, reporter)
        try:
            report = controller.run()
        except KeyboardInterrupt:
            controller.backend.stop()
            reporter.print("stopped; run the same command again to resume")
            raise typer.Exit(code=130) from None
    extra = extra_fn(controller, report) if extra_fn is not None else {}
    written = write_run_report(report, folder, spec.slot_hours, prediction=extra)
    _print_report(report, as_json=as_json, written=written, extra=extra)
    return report


def _print_report(
    report: RunReport,
    *,
    as_json: bool,
    written: list[Path],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """The report on standard output: JSON, or the headline, the table, the advisor's
    prediction beside it (the demo) and the files written."""
    from rich.text import Text

    from carbonscaler.control.report import (
        PREDICTION_KEYS,
        has_prediction,
        headline,
        prediction_note,
    )

    extra = dict(extra or {})
    if as_json:
        typer.echo(json.dumps({**report.to_dict(), **extra}, indent=2, default=float))
        return
    good = report.completed and report.deadline_met and report.savings_pct > 0
    console().print(
        Text(f"{report.name}: {headline(report)}", style="bold green" if good else "bold red")
    )
    console().print(_report_table(report))
    shown: set[str] = set()
    if has_prediction(extra):
        console().print(_prediction_table(report, extra))
        console().print(prediction_note(report, extra), highlight=False)
        shown = {*PREDICTION_KEYS, "savings_vs_advisor_pct_points"}
    for key, value in extra.items():
        if key not in shown:
            text = f"{value:.2f}" if isinstance(value, float) else str(value)
            console().print(f"{key.replace('_', ' ')}: {text}")
    for note in report.notes:
        console().print(f"note: {note}", highlight=False)
    if written:
        console().print(f"report: {', '.join(str(p) for p in written)}")


def simulate(
    spec: JobSpec, *, as_json: bool, report_dir: Path | None, pace_s: float | None = None
) -> RunReport:
    """Run the job's controller on a virtual clock against a simulated workload and report.

    Writes report files only into ``report_dir`` (never into the job's run folder). With
    ``pace_s`` (wall seconds per slot) the virtual clock also passes for real and the state is
    kept in ``report_dir`` as a real run keeps it in its folder, so ``carbonscaler ui --runs``
    on the folder above follows the simulation live.

    Raises:
        SpecError: if ``pace_s`` comes without ``report_dir`` or is not positive.
    """
    from carbonscaler.cli._runner import build_simulation
    from carbonscaler.clock import PacedClock
    from carbonscaler.control.report import write_run_report
    from carbonscaler.control.spec import SpecError
    from carbonscaler.control.state import STATE_FILE, StateStore
    from carbonscaler.outputs import check_output_folder

    if report_dir is not None:
        check_output_folder(report_dir, "--report-dir")
    if pace_s is None:
        controller = build_simulation(spec)
        report = controller.run()
    else:
        if report_dir is None or not pace_s > 0:
            raise SpecError(
                "--pace needs a positive number of wall seconds per slot and --report-dir, "
                "the folder the simulation keeps its state and report in (watch it with "
                "`carbonscaler ui --runs <its parent>`)"
            )
        report_dir.mkdir(parents=True, exist_ok=True)
        store = StateStore(report_dir / STATE_FILE)
        try:
            store.delete(spec.name)  # a paced simulation always starts afresh
            clock = PacedClock(wall_per_s=pace_s / spec.seconds_per_slot)
            controller = build_simulation(spec, store=store, clock=clock)
            report = controller.run()
        finally:
            store.close()
    note = "simulated: the controller on a virtual clock, the workload following its profile"
    report = dataclasses.replace(report, notes=[*report.notes, note])
    written = write_run_report(report, report_dir, spec.slot_hours) if report_dir else []
    _print_report(report, as_json=as_json, written=written)
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
    pace: Annotated[
        float | None,
        typer.Option(
            help="With --simulate: wall seconds per slot, so the simulation can be watched; "
            "its state and report go to --report-dir, which `carbonscaler ui --runs` on the "
            "folder above follows live."
        ),
    ] = None,
) -> None:
    """Run an elastic job carbon-aware: scale up when the grid is clean, down when dirty.

    Re-running the same spec after an interruption resumes the job where it was; after it
    finished, says so and where its report is (delete the checkpoint folder to run it again).
    Progress goes to standard error: a bar on a terminal, a line per slot otherwise.
    """
    _run(
        job=job,
        as_json=as_json,
        report_dir=report_dir,
        simulate_only=simulate_only,
        profile=profile,
        pace=pace,
    )


@user_errors
def _run(
    *,
    job: Path,
    as_json: bool,
    report_dir: Path | None,
    simulate_only: bool,
    profile: str | None,
    pace: float | None,
) -> None:
    from carbonscaler.backends.base import BackendError
    from carbonscaler.control.spec import SpecError, load_job_spec

    spec = load_job_spec(job)
    if profile is not None:
        if profile.endswith(".csv"):
            profile = str(Path(profile).resolve())
        spec = spec.model_copy(update={"profile": profile})
    if pace is not None and not simulate_only:
        raise SpecError("--pace paces a simulation: add --simulate")
    if simulate_only:
        simulate(spec, as_json=as_json, report_dir=report_dir, pace_s=pace)
        return
    try:
        report = execute(spec, as_json=as_json, report_dir=report_dir)
    except BackendError as exc:
        raise SpecError(str(exc)) from None
    if not report.completed:
        raise typer.Exit(code=1)
