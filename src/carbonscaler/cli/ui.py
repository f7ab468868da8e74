"""``carbonscaler ui``: the web dashboard (what-if in the browser, the local runtime's jobs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from carbonscaler.cli._common import err_console

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def ui_command(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (only this machine by default).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")
    ] = 8080,
    traces: Annotated[
        list[Path] | None,
        typer.Option(
            "--traces",
            help="Folder of carbon-trace CSV files to offer (by file stem); repeatable. The"
            " offline dataset's zones and years are always offered.",
        ),
    ] = None,
    runs: Annotated[
        Path,
        typer.Option("--runs", help="Folder of the local runtime's runs (their checkpoint_dir)."),
    ] = Path("runs"),
    profiles: Annotated[
        list[Path] | None,
        typer.Option("--profiles", help="Folder of profile CSV files to offer; repeatable."),
    ] = None,
) -> None:
    """Serve the dashboard: CarbonAdvisor's what-if with charts and shareable links, and the
    runs of `carbonscaler run`, followed live."""
    import uvicorn

    from carbonscaler.ui import DashboardConfig, create_app

    for folder in [*(traces or []), *(profiles or [])]:
        if not folder.is_dir():
            err_console().print(f"[red]error:[/] {folder} is not a folder")
            raise typer.Exit(code=2)
    if host not in _LOOPBACK:
        err_console().print(
            f"[yellow]warning:[/] listening on {host}: anyone who can reach it can read the"
            " offered traces and the runs under --runs"
        )
    config = DashboardConfig(
        trace_folders=tuple(traces or ()), runs=runs, profile_folders=tuple(profiles or ())
    )
    err_console().print(f"dashboard on http://{host}:{port}/ (runs in {runs})")
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
