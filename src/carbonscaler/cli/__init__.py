"""The ``carbonscaler`` command line: one module per command group."""

from __future__ import annotations

import typer

from carbonscaler.cli.advise import advise_command
from carbonscaler.cli.carbon_service import carbon_service_command
from carbonscaler.cli.plan import demo_command, plan_command
from carbonscaler.cli.traces import app as traces_app

app = typer.Typer(
    name="carbonscaler",
    help="Carbon-aware autoscaling of elastic batch jobs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.command("plan")(plan_command)
app.command("demo")(demo_command)
app.command("carbon-service")(carbon_service_command)
app.command("advise")(advise_command)
app.add_typer(traces_app, name="traces")


def main() -> None:
    """Console-script entry point."""
    app()
