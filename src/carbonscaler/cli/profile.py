"""``carbonscaler profile``: measure a workload's scaling profile on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from carbonscaler.cli._common import console, user_errors
from carbonscaler.cli._progress import ProgressDisplay
from carbonscaler.power.meter import DEFAULT_IDLE_W, DEFAULT_WORKER_W


def profile_command(
    job: Annotated[
        Path | None, typer.Argument(help="Job spec whose workload to profile (YAML).")
    ] = None,
    command: Annotated[
        str | None, typer.Option(help="Workload command template, instead of a job spec.")
    ] = None,
    max_workers: Annotated[
        int, typer.Option("--max", help="Most workers to try (capped at the cores).")
    ] = 8,
    seconds: Annotated[float, typer.Option(help="Wall seconds measured per count.")] = 10.0,
    idle_w: Annotated[
        float,
        typer.Option(
            "--idle-w",
            help="Where power cannot be measured (no readable RAPL): the machine's idle power, "
            "paid once while the job runs.",
        ),
    ] = DEFAULT_IDLE_W,
    watts_per_worker: Annotated[
        float,
        typer.Option(help="Where power cannot be measured: the dynamic power of each worker."),
    ] = DEFAULT_WORKER_W,
    out: Annotated[Path, typer.Option(help="Profile CSV to write.")] = Path("profile.csv"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run a workload at 1..K workers and write its profile (nodes,throughput,power).

    Throughput is in the workload's steps per hour (the first column of its progress file);
    power is measured where the machine allows and otherwise estimated, and labelled so.
    """
    _profile(
        job=job,
        command=command,
        max_workers=max_workers,
        seconds=seconds,
        idle_w=idle_w,
        watts_per_worker=watts_per_worker,
        out=out,
        as_json=as_json,
    )


@user_errors
def _profile(
    *,
    job: Path | None,
    command: str | None,
    max_workers: int,
    seconds: float,
    idle_w: float,
    watts_per_worker: float,
    out: Path,
    as_json: bool,
) -> None:
    from rich.table import Table

    from carbonscaler.backends.profiler import profile_workload
    from carbonscaler.control.spec import load_job_spec
    from carbonscaler.outputs import check_output_file
    from carbonscaler.power import DEFAULT_POWERCAP_ROOT, MeterUnavailable, RaplMeter
    from carbonscaler.power.meter import estimated_power

    env: dict[str, str] = {}
    cwd = None
    size_env = None
    if job is not None:
        spec = load_job_spec(job)
        command = spec.workload.command_template
        env, cwd, size_env = dict(spec.workload.env), spec.workload.cwd, spec.workload.size_env
        max_workers = min(max_workers, spec.max_replicas)
    if command is None:
        raise FileNotFoundError("give a job spec or --command")
    check_output_file(out, "--out")  # before minutes of profiling, not after
    estimate = estimated_power(idle_w, watts_per_worker)  # a bad figure fails before profiling
    try:
        meter: RaplMeter | None = RaplMeter(DEFAULT_POWERCAP_ROOT)
    except MeterUnavailable:
        meter = None
    scratch = out.resolve().parent / f".{out.name}.profiling"
    with ProgressDisplay("profiling") as reporter:

        def on_progress(k: int, top: int) -> None:
            reporter.update(
                k - 1,
                total=top,
                detail=f"{k} of {top} workers, {seconds:g} s each",
                eta_s=(top - k + 1) * seconds,
                milestone=True,
            )

        result = profile_workload(
            command,
            scratch,
            max_workers=max_workers,
            seconds_each=seconds,
            seconds_per_slot=3600.0,
            slot_hours=1.0,
            env=env,
            cwd=cwd,
            size_env=size_env,
            power=estimate,
            meter=meter,
            on_progress=on_progress,
        )
    result.profile.to_csv(out)
    rows = [
        {
            "nodes": k,
            "steps_per_hour": float(result.profile.throughput[k]),
            "power_w": float(result.profile.power_w[k]),
        }
        for k in range(1, result.profile.max_servers + 1)
    ]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "profile": str(out),
                    "rows": rows,
                    "note": result.note,
                    "power_source": result.power_source,
                },
                indent=2,
            )
        )
        return
    table = Table(title=f"profile written to {out}")
    for col in ("workers", "steps/hour", "speed-up", "power (W)"):
        table.add_column(col, justify="right")
    base = rows[0]["steps_per_hour"]
    for row in rows:
        table.add_row(
            str(row["nodes"]),
            f"{row['steps_per_hour']:.0f}",
            f"{row['steps_per_hour'] / base:.2f}x",
            f"{row['power_w']:.0f}",
        )
    console().print(table)
    console().print(f"{result.note}; power {result.power_source}")
