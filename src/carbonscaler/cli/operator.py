"""``carbonscaler operator``: the Kubernetes operator (kopf) for CarbonScaler jobs.

kopf and the kubernetes client are imported when the command runs, so the rest of the CLI
works without them. See docs/kubernetes.md.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    CarbonSourceChoice,
    FillGapsOption,
    TzOption,
    err_console,
    pick_carbon_source,
    setup_errors,
)
from carbonscaler.cli._security import (
    CarbonServiceTokenFileOption,
    CarbonServiceTokenOption,
    InsecureOption,
    TokenFileOption,
    TokenOption,
    client_token,
    service_token,
)
from carbonscaler.security.tokens import with_push_key

if TYPE_CHECKING:
    import asyncio

    from carbonscaler.operator.carbon import CarbonBoard, Poller

log = logging.getLogger("carbonscaler.operator")

RESUBSCRIBE_S = 600.0


def operator_command(
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace", "-n", help="Namespace (or glob) to watch; repeatable. Default: all."
        ),
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Watch the whole cluster.")
    ] = False,
    webhook_host: Annotated[
        str, typer.Option("--webhook-host", help="Address for the carbon-push webhook.")
    ] = "0.0.0.0",
    webhook_port: Annotated[
        int,
        typer.Option("--webhook-port", help="Port the carbon service pushes to (0: no webhook)."),
    ] = 8899,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            help="The webhook's URL as the carbon service reaches it (e.g. the operator's "
            "Service); with --carbon-service the operator subscribes itself.",
        ),
    ] = None,
    carbon_service: Annotated[
        str | None,
        typer.Option(*SERVICE_FLAGS, help="Carbon service base URL to poll and subscribe to."),
    ] = None,
    carbon_trace: Annotated[
        Path | None,
        typer.Option(*TRACE_FLAGS, help="Replay this carbon trace instead (offline demos)."),
    ] = None,
    carbon_start: Annotated[
        str | None, typer.Option("--carbon-start", help="First replayed time (ISO 8601).")
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option("--speed", help="Replay pace in seconds per trace slot; default real time."),
    ] = None,
    fill_gaps: FillGapsOption = None,
    tz: TzOption = None,
    zone: Annotated[str | None, typer.Option(*ZONE_FLAGS, help=LIVE_ZONE_HELP)] = None,
    year: Annotated[int | None, typer.Option(*YEAR_FLAGS, help=YEAR_HELP)] = None,
    provider_spec: Annotated[str | None, typer.Option(*PROVIDER_FLAGS, help=PROVIDER_HELP)] = None,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", help="Seconds between carbon polls.")
    ] = 300.0,
    tick: Annotated[
        float, typer.Option("--tick", help="Seconds between passes over each job.")
    ] = 10.0,
    slot_seconds: Annotated[
        float | None,
        typer.Option(
            "--slot-seconds",
            envvar="CARBONSCALER_SLOT_SECONDS",
            min=1.0,
            help="The carbon data's pace: wall-clock seconds per forecast entry (the carbon "
            "service's --speed). Jobs must plan in slots of this length (slotSeconds); others "
            "wait with a CarbonPaceMismatch event. Default: --speed, or the trace's step, when "
            "replaying a trace here; unchecked otherwise.",
        ),
    ] = None,
    peering: Annotated[
        str | None,
        typer.Option(
            "--peering",
            help="kopf peering object: of several operators, one is active (deploy/crds).",
        ),
    ] = None,
    priority: Annotated[
        int, typer.Option("--priority", help="This operator's peering priority.")
    ] = 0,
    liveness: Annotated[
        str | None,
        typer.Option("--liveness", help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz"),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    insecure: InsecureOption = False,
    carbon_service_token: CarbonServiceTokenOption = None,
    carbon_service_token_file: CarbonServiceTokenFileOption = None,
) -> None:
    """Run the CarbonScaler operator: plan and scale CarbonScalerMPIJob/PyTorchJob resources."""
    import asyncio
    import contextlib

    try:
        import kopf

        from carbonscaler.backends.kubernetes import KubeflowApi, api_client
        from carbonscaler.operator import handlers
        from carbonscaler.operator.carbon import CarbonBoard
    except ImportError as exc:
        err_console().print(
            f"[red]error:[/] the operator needs kopf and kubernetes ({exc.name} is missing): "
            "pip install 'kopf>=1.37' 'kubernetes>=37'",
            highlight=False,
        )
        raise typer.Exit(code=2) from None
    if all_namespaces and namespace:
        err_console().print("[red]error:[/] give --namespace or --all-namespaces, not both")
        raise typer.Exit(code=2)
    with setup_errors(Exception):  # any setup failure here is the user's to fix
        # The webhook is what listens: it alone needs the token (pushes change the plans).
        webhook_token = service_token(
            token,
            token_file,
            host=webhook_host if webhook_port else "127.0.0.1",
            insecure=insecure,
            service="operator's carbon webhook",
        )
        carbon_token = client_token(
            carbon_service_token, carbon_service_token_file, default=webhook_token
        )
        source = pick_carbon_source(
            trace=carbon_trace,
            zone=zone,
            year=year,
            provider=provider_spec,
            carbon_service=carbon_service,
            fill_gaps=fill_gaps,
            tz=tz,
        )
        poller, pace = _poller(source, carbon_start, speed)
        if slot_seconds is not None and pace is not None and abs(slot_seconds - pace) > 1e-6:
            raise ValueError(
                f"--slot-seconds {slot_seconds:g} contradicts the replay's pace of {pace:g} s "
                "per slot (--speed, or the trace's step)"
            )
        api = KubeflowApi(api_client(), instance=handlers.instance_name())
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if poller is None and webhook_port == 0:
        log.warning("no carbon source and no webhook: jobs plan on a flat forecast")
    board = CarbonBoard(slot_seconds=slot_seconds if slot_seconds is not None else pace)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, tick_s=tick)
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    if peering:
        settings.peering.mandatory = True
    context = handlers.OperatorContext(api=api, board=board)

    async def main() -> None:
        tasks = await _start_carbon(
            board,
            poller,
            webhook_host,
            webhook_port,
            carbon_service,
            public_url,
            poll_interval,
            token=webhook_token,
            carbon_token=carbon_token,
        )
        try:
            await kopf.operator(
                registry=registry,
                settings=settings,
                memo=context,
                clusterwide=all_namespaces or not namespace,
                namespaces=namespace or (),
                standalone=peering is None,
                peering_name=peering,
                priority=priority,
                liveness_endpoint=liveness,
            )
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def _poller(
    source: CarbonSourceChoice | None, carbon_start: str | None, speed: float | None
) -> tuple[Poller | None, float | None]:
    """The carbon poller for the chosen source, if any, and its pace (wall-clock seconds per
    forecast entry) where it is known here: a trace replayed here runs one of its steps every
    ``speed`` seconds, or in real time."""
    import httpx

    from carbonscaler.operator.carbon import ProviderPoller, ServicePoller
    from carbonscaler.providers import TraceReplay, live_provider

    if source is None:
        return None, None
    if source.service_url:
        return ServicePoller(httpx.AsyncClient(timeout=10.0), source.service_url), None
    if source.trace is not None:
        replay = TraceReplay.from_trace(source.trace, start=carbon_start, seconds_per_slot=speed)
        return ProviderPoller(replay), float(speed or replay.step_s)
    if source.provider:
        return ProviderPoller(live_provider(source.provider)), None
    return None, None


async def _start_carbon(
    board: CarbonBoard,
    poller: Poller | None,
    host: str,
    port: int,
    carbon_service: str | None,
    public_url: str | None,
    poll_interval: float,
    *,
    token: str | None = None,
    carbon_token: str | None = None,
) -> list[asyncio.Task[None]]:
    """Start the webhook, the poller and the subscription; their tasks, to cancel at exit.

    With a ``token`` the webhook requires it or its push key, and the address registered
    with the carbon service carries the push key; ``carbon_token`` is the carbon service's.
    """
    import asyncio

    import httpx
    from aiohttp import web

    from carbonscaler.operator.carbon import poll_forever, subscribe, webhook_app

    tasks: list[asyncio.Task[None]] = []
    if port:
        runner = web.AppRunner(webhook_app(board, token), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.info("carbon webhook listening on %s:%d", host, port)

        async def close_webhook() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()

        tasks.append(asyncio.create_task(close_webhook()))
    if poller is not None:
        tasks.append(asyncio.create_task(poll_forever(poller, board, poll_interval)))
    if carbon_service and public_url:
        address = with_push_key(public_url, token)

        async def keep_subscribed() -> None:
            async with httpx.AsyncClient(timeout=10.0) as client:
                delay = 5.0
                while True:
                    try:
                        await subscribe(client, carbon_service, address, carbon_token)
                        delay = RESUBSCRIBE_S  # re-register now and then: reactivates us
                    except httpx.HTTPError as exc:
                        log.warning("subscribing to %s failed: %s", carbon_service, exc)
                        delay = min(delay * 2, 300.0)
                    await asyncio.sleep(delay)

        tasks.append(asyncio.create_task(keep_subscribed()))
    return tasks
