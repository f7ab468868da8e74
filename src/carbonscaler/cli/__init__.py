"""The ``carbonscaler`` command line: one module per command group.

Every command module is imported to build the command line, so ``carbonscaler --help`` costs
what they import at module level: the standard library, typer and light modules only. Each
command imports what it needs (numpy, pandas, the planner, the services...) in its function,
when it runs; tests/test_cli_startup.py checks it, benchmarks/bench_startup.py times it. Help is
plain click help (``rich_markup_mode=None``): typer's rich help would import rich's markdown
renderer, a large share of the start-up budget.

The root takes ``--version`` and typer's ``--install-completion``/``--show-completion`` (bash,
zsh, fish, PowerShell); ``python -m carbonscaler`` runs :func:`main` too.
"""

from __future__ import annotations

from typing import Annotated

import typer

from carbonscaler.cli.accounting import accounting_command
from carbonscaler.cli.advise import advise_command
from carbonscaler.cli.carbon_service import carbon_service_command
from carbonscaler.cli.cluster import advise_cluster_command
from carbonscaler.cli.cluster import app as cluster_app
from carbonscaler.cli.demo import demo_command
from carbonscaler.cli.forecast import app as forecast_app
from carbonscaler.cli.operator import operator_command
from carbonscaler.cli.plan import plan_command
from carbonscaler.cli.power_server import power_server_command
from carbonscaler.cli.profile import profile_command
from carbonscaler.cli.run import run_command
from carbonscaler.cli.traces import app as traces_app
from carbonscaler.cli.ui import ui_command
from carbonscaler.cli.window import best_window_command

app = typer.Typer(
    name="carbonscaler",
    help="Carbon-aware autoscaling of elastic batch jobs.",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
    # Plain help uses the terminal's width (click's default stops at 80 columns).
    context_settings={"max_content_width": 120},
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        from carbonscaler import __version__

        typer.echo(f"carbonscaler {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:
    """Carbon-aware autoscaling of elastic batch jobs."""


app.command("plan")(plan_command)
app.command("demo")(demo_command)
app.command("run")(run_command)
app.command("profile")(profile_command)
app.command("carbon-service")(carbon_service_command)
app.command("advise")(advise_command)
app.command("advise-cluster")(advise_cluster_command)
app.command("best-window")(best_window_command)
app.command("power-server")(power_server_command)
app.command("accounting")(accounting_command)
app.command("operator")(operator_command)
app.command("ui")(ui_command)
app.add_typer(traces_app, name="traces")
app.add_typer(forecast_app, name="forecast")
app.add_typer(cluster_app, name="cluster")


def main() -> None:
    """Console-script entry point."""
    app()
