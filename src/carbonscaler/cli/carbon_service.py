"""``carbonscaler carbon-service``: the carbon service (trace replay or live), over HTTP.

The options of the reference service keep their names (and short forms) beside the carbon
source spellings every command shares (``--trace``, ``--zone``/``--year``, ``--provider``); the
rest add an accelerated replay and an admin token. See docs/carbon-service.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from carbonscaler.cli._common import (
    LIVE_ZONE_HELP,
    PROVIDER_FLAGS,
    PROVIDER_HELP,
    TRACE_FLAGS,
    YEAR_FLAGS,
    YEAR_HELP,
    ZONE_FLAGS,
    FillGapsOption,
    TzOption,
    pick_carbon_source,
    serve,
    setup_errors,
)
from carbonscaler.cli._security import (
    InsecureOption,
    TokenFileOption,
    TokenOption,
    destination_policy,
    service_token,
)
from carbonscaler.security.tokens import ENV_TOKEN

__all__ = ["ENV_TOKEN", "carbon_service_command"]


def carbon_service_command(
    carbon_path: Annotated[
        Path | None,
        typer.Option(
            *TRACE_FLAGS,
            "--carbon-path",
            "-f",
            help="Carbon trace to replay (any format `carbonscaler traces` reads).",
        ),
    ] = None,
    db_path: Annotated[
        Path,
        typer.Option("--db-path", "-d", help="SQLite file for subscribers (created if missing)."),
    ] = Path("carbon-service.db"),
    update_interval: Annotated[
        float, typer.Option("--update-interval", "-i", help="Seconds between pushed updates.")
    ] = 30.0,
    prediction_window: Annotated[
        int, typer.Option("--prediction-window", "-w", help="Slots in each prediction.")
    ] = 24,
    percentile_window: Annotated[
        int,
        typer.Option("--percentile-window", "-p", help="Past slots for the percentile."),
    ] = 24,
    prediction_method: Annotated[
        str,
        typer.Option(
            "--prediction-method",
            "-m",
            help="REAL (= perfect: the trace future), PRED (= provider: the provider's"
            " forecast), or a forecast model: perfect, uniform:PCT, gaussian:PCT, persistence,"
            " seasonal, provider. PCT is the noise in percent (uniform:30 = ±30 %; kept in"
            " percent for existing command lines, unlike the fractions elsewhere).",
        ),
    ] = "REAL",
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 7777,
    speed: Annotated[
        float | None,
        typer.Option(
            "--speed",
            help="Replay pace in seconds per slot, e.g. 1 for a demo or 3600 for real time"
            " on hourly data; default: one slot per update, as the reference.",
        ),
    ] = None,
    zone: Annotated[str | None, typer.Option(*ZONE_FLAGS, help=LIVE_ZONE_HELP)] = None,
    year: Annotated[int | None, typer.Option(*YEAR_FLAGS, help=YEAR_HELP)] = None,
    provider_spec: Annotated[str | None, typer.Option(*PROVIDER_FLAGS, help=PROVIDER_HELP)] = None,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    insecure: InsecureOption = False,
    allow_subscriber_net: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-subscriber-net",
            help="Push only to subscribers in this network (CIDR, repeatable); link-local and"
            " cloud-metadata addresses are refused in any case.",
        ),
    ] = None,
    signal: Annotated[
        str, typer.Option("--signal", help="Trace signal: direct, lca or avg.")
    ] = "direct",
    start: Annotated[
        str | None,
        typer.Option(
            "--start",
            help="First replayed slot (ISO 8601); default the trace start, or where a"
            " restarted service left off.",
        ),
    ] = None,
    fill_gaps: FillGapsOption = None,
    tz: TzOption = None,
) -> None:
    """Serve carbon intensity and forecasts, and push them to subscribers."""
    from carbonscaler.datasets import DatasetError
    from carbonscaler.providers import ProviderError
    from carbonscaler.services._store import StoreError
    from carbonscaler.services.carbon import CarbonServiceConfig, create_app

    with setup_errors(ValueError, ProviderError, DatasetError, StoreError, OSError):
        resolved_token = service_token(
            token, token_file, host=host, insecure=insecure, service="carbon service"
        )
        destinations = destination_policy(allow_subscriber_net, "subscriber address")
        if not db_path.parent.is_dir():
            raise ValueError(f"--db-path {db_path}: folder {db_path.parent} does not exist")
        source = pick_carbon_source(
            trace=carbon_path,
            zone=zone,
            year=year,
            provider=provider_spec,
            signal=signal,
            fill_gaps=fill_gaps,
            tz=tz,
        )
        if source is None:
            raise ValueError(
                "give --trace PATH (or --carbon-path) to replay a trace, --zone ZONE --year YEAR"
                " to replay the offline dataset, or --provider SPEC for live data (e.g."
                " --provider ukgrid:GB)"
            )
        config = CarbonServiceConfig(
            db_path=db_path,
            trace=source.trace,
            provider=source.cached_provider(db_path),
            start=start,
            update_interval_s=update_interval,
            prediction_window=prediction_window,
            percentile_window=percentile_window,
            prediction_method=prediction_method,
            seconds_per_slot=speed,
            token=resolved_token,
            destinations=destinations,
        )
        app = create_app(config)
    serve(app, host=host, port=port, log_level="info")
