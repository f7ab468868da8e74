"""The options every service command shares for what it trusts: its token, ``--insecure``,
and the networks its requests may go to. See :mod:`carbonscaler.security`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from carbonscaler.security.tokens import ENV_TOKEN, ENV_TOKEN_FILE, check_bind, load_token

if TYPE_CHECKING:
    from carbonscaler.security.netguard import DestinationPolicy

__all__ = [
    "ENV_CARBON_SERVICE_TOKEN",
    "ENV_CARBON_SERVICE_TOKEN_FILE",
    "CarbonServiceTokenFileOption",
    "CarbonServiceTokenOption",
    "InsecureOption",
    "TokenFileOption",
    "TokenOption",
    "client_token",
    "destination_policy",
    "service_token",
]

ENV_CARBON_SERVICE_TOKEN = "CARBONSCALER_CARBON_SERVICE_TOKEN"
"""Environment variable holding the carbon service's token, for its subscribers."""
ENV_CARBON_SERVICE_TOKEN_FILE = "CARBONSCALER_CARBON_SERVICE_TOKEN_FILE"

TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar=ENV_TOKEN,
        show_envvar=True,
        help="Bearer token this service requires for state-changing requests (prefer"
        " --token-file or the environment: a flag shows in the process list).",
    ),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        envvar=ENV_TOKEN_FILE,
        show_envvar=True,
        help="File holding the bearer token (e.g. a mounted Secret).",
    ),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Listen on a non-loopback address without a token (anyone who reaches it can"
        " change its state).",
    ),
]
CarbonServiceTokenOption = Annotated[
    str | None,
    typer.Option(
        "--carbon-service-token",
        envvar=ENV_CARBON_SERVICE_TOKEN,
        show_envvar=True,
        help="The carbon service's token, to register with it; default this service's own.",
    ),
]
CarbonServiceTokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--carbon-service-token-file",
        envvar=ENV_CARBON_SERVICE_TOKEN_FILE,
        show_envvar=True,
        help="File holding the carbon service's token.",
    ),
]


def service_token(
    token: str | None, token_file: Path | None, *, host: str, insecure: bool, service: str
) -> str | None:
    """The service's token, after refusing an open non-loopback listener.

    Raises:
        ValueError: If the token cannot be read, or ``host`` is not loopback and there is
            no token and no ``--insecure``; the message says what to do.
    """
    resolved = load_token(token, token_file)
    check_bind(host, resolved, insecure=insecure, service=service)
    return resolved


def client_token(token: str | None, token_file: Path | None, default: str | None) -> str | None:
    """A token to present to another service: the one given, else ``default``.

    Raises:
        ValueError: If the token cannot be read.
    """
    resolved = load_token(token, token_file)
    return resolved if resolved is not None else default


def destination_policy(networks: list[str] | None, what: str) -> DestinationPolicy:
    """The destination policy for ``--allow-...-net`` values.

    Raises:
        ValueError: If a value is not a CIDR block.
    """
    from carbonscaler.security.netguard import DestinationPolicy, parse_networks

    return DestinationPolicy(allow=parse_networks(networks or ()), what=what)
