"""``carbonscaler accounting``: per-job energy and carbon, sampled into a SQLite ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from carbonscaler.cli._common import (
    LIVE_ZONE_HELP,
    PROVIDER_FLAGS,
    PROVIDER_HELP,
    SERVICE_FLAGS,
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
    CarbonServiceTokenFileOption,
    CarbonServiceTokenOption,
    InsecureOption,
    TokenFileOption,
    TokenOption,
    client_token,
    destination_policy,
    service_token,
)


def accounting_command(
    db_path: Annotated[
        Path, typer.Option("--db-path", "-d", help="The ledger (SQLite, created if missing).")
    ] = Path("accounting.db"),
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8010,
    carbon_trace: Annotated[
        Path | None,
        typer.Option(*TRACE_FLAGS, help="Carbon trace to replay (any format traces reads)."),
    ] = None,
    carbon_start: Annotated[
        str | None,
        typer.Option("--carbon-start", help="First replayed time (ISO 8601); default its start."),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option("--speed", help="Replay pace in seconds per slot; default real time."),
    ] = None,
    signal: Annotated[
        str, typer.Option("--signal", help="Trace signal: direct, lca or avg.")
    ] = "direct",
    fill_gaps: FillGapsOption = None,
    tz: TzOption = None,
    zone: Annotated[str | None, typer.Option(*ZONE_FLAGS, help=LIVE_ZONE_HELP)] = None,
    year: Annotated[int | None, typer.Option(*YEAR_FLAGS, help=YEAR_HELP)] = None,
    provider_spec: Annotated[str | None, typer.Option(*PROVIDER_FLAGS, help=PROVIDER_HELP)] = None,
    carbon_service: Annotated[
        str | None,
        typer.Option(*SERVICE_FLAGS, help="Subscribe to this carbon service for intensity."),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            help="This service's URL as the carbon service reaches it; default from --host/--port.",
        ),
    ] = None,
    sample_interval: Annotated[
        float, typer.Option("--sample-interval", help="Seconds between sampling rounds.")
    ] = 5.0,
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", help="Timeout of each power-server request (s).")
    ] = 2.0,
    kepler_url: Annotated[
        str | None,
        typer.Option("--kepler-url", help="Prometheus scraping Kepler, for jobs given as pods."),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="Only accept nodes on this host (repeatable); default any host.",
        ),
    ] = None,
    allow_node_net: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-node-net",
            help="Only ask node URLs in this network (CIDR, repeatable); link-local and"
            " cloud-metadata addresses are refused in any case.",
        ),
    ] = None,
    progress_root: Annotated[
        Path | None,
        typer.Option(
            "--progress-root",
            help="Folder the jobs' progress files must be in; without it progress_path is"
            " refused and jobs post their progress instead.",
        ),
    ] = None,
    resubscribe_after: Annotated[
        float,
        typer.Option(
            "--resubscribe-after",
            help="Register with the carbon service again after this many seconds without a push.",
        ),
    ] = 300.0,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    insecure: InsecureOption = False,
    carbon_service_token: CarbonServiceTokenOption = None,
    carbon_service_token_file: CarbonServiceTokenFileOption = None,
) -> None:
    """Account each job's energy (kWh) and emissions (gCO2eq), measured vs estimated."""
    from carbonscaler.accounting.ledger import LedgerError
    from carbonscaler.accounting.tracker import TrackerConfig, TrackerError
    from carbonscaler.datasets import DatasetError
    from carbonscaler.providers import ProviderError
    from carbonscaler.services.accounting import AccountingConfig, create_app
    from carbonscaler.trace import TraceError

    with setup_errors(
        ValueError, ProviderError, TraceError, DatasetError, LedgerError, TrackerError, OSError
    ):
        resolved_token = service_token(
            token, token_file, host=host, insecure=insecure, service="accounting service"
        )
        carbon_token = client_token(
            carbon_service_token, carbon_service_token_file, default=resolved_token
        )
        if progress_root is not None and not progress_root.is_dir():
            raise ValueError(f"--progress-root {progress_root} is not a folder")
        source = pick_carbon_source(
            trace=carbon_trace,
            zone=zone,
            year=year,
            provider=provider_spec,
            carbon_service=carbon_service,
            signal=signal,
            fill_gaps=fill_gaps,
            tz=tz,
        )
        if source is None:
            raise ValueError(
                "give a carbon source: --trace PATH, --zone ZONE --year YEAR (offline dataset),"
                " --provider SPEC (live providers, e.g. ukgrid:GB) or --carbon-service URL"
            )
        config = AccountingConfig(
            db_path=db_path,
            trace=source.trace,
            carbon_start=carbon_start,
            seconds_per_slot=speed,
            provider=source.cached_provider(db_path),
            carbon_service_url=source.service_url,
            public_url=public_url or f"http://{host}:{port}",
            tracker=TrackerConfig(
                sample_interval_s=sample_interval,
                request_timeout_s=request_timeout,
                kepler_url=kepler_url,
                allowed_hosts=frozenset(allowed_host) if allowed_host else None,
                node_policy=destination_policy(allow_node_net, "node URL"),
                progress_root=None if progress_root is None else progress_root.resolve(),
            ),
            token=resolved_token,
            carbon_service_token=carbon_token,
            resubscribe_after_s=resubscribe_after,
        )
        app = create_app(config)
    serve(app, host=host, port=port)
