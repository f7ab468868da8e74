"""``carbonscaler power-server``: one per node, serving the node's power over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from carbonscaler.cli._common import serve, setup_errors
from carbonscaler.cli._security import InsecureOption, TokenFileOption, TokenOption, service_token
from carbonscaler.power.rapl import DEFAULT_POWERCAP_ROOT


def power_server_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    powercap_root: Annotated[
        Path,
        typer.Option("--powercap-root", help="Where the RAPL zones are (a powercap sysfs tree)."),
    ] = DEFAULT_POWERCAP_ROOT,
    include_dram: Annotated[
        bool, typer.Option("--include-dram", help="Also count RAPL DRAM zones (memory power).")
    ] = False,
    gpu: Annotated[
        bool, typer.Option("--gpu/--no-gpu", help="Add NVIDIA GPUs (NVML) when present.")
    ] = True,
    kepler_url: Annotated[
        str | None,
        typer.Option("--kepler-url", help="Prometheus scraping Kepler, used when RAPL is absent."),
    ] = None,
    kepler_node: Annotated[
        str | None, typer.Option("--kepler-node", help="This node's name in Kepler's metrics.")
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option("--profile", help="Job profile CSV for a labelled estimate P(k)/k."),
    ] = None,
    servers: Annotated[
        int | None, typer.Option("--servers", help="The job's server count k for --profile.")
    ] = None,
    estimate_watts: Annotated[
        float | None,
        typer.Option("--estimate-watts", help="A stated node draw (W), labelled as an estimate."),
    ] = None,
    sample_interval: Annotated[
        float, typer.Option("--sample-interval", help="Seconds between readings.")
    ] = 1.0,
    history: Annotated[
        float, typer.Option("--history", help="Seconds of readings kept for /v1/energy.")
    ] = 3600.0,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Sample this node's power about once a second and serve it (reference GET / and /v1)."""
    from carbonscaler.profile import ProfileError
    from carbonscaler.services.power import PowerServerConfig, create_app

    with setup_errors(ValueError, ProfileError, OSError):
        resolved_token = service_token(
            token, token_file, host=host, insecure=insecure, service="power server"
        )
        config = PowerServerConfig(
            powercap_root=powercap_root,
            include_dram=include_dram,
            gpu=gpu,
            kepler_url=kepler_url,
            kepler_node=kepler_node,
            profile_path=profile,
            servers=servers,
            estimate_watts=estimate_watts,
            sample_interval_s=sample_interval,
            history_s=history,
            token=resolved_token,
        )
        app = create_app(config)
    serve(app, host=host, port=port)
