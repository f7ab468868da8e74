"""Bearer tokens for the services: where they come from, how they are compared, and the
refusal to listen beyond loopback without one.

Every service (carbon service, accounting, power server, the operator's carbon webhook)
takes one token, from ``--token-file FILE`` (or ``$CARBONSCALER_TOKEN_FILE``), from
``$CARBONSCALER_TOKEN``, or from ``--token`` (visible in the process list: prefer the other
two). When set, state-changing endpoints need ``Authorization: Bearer <token>``, compared in
constant time. A service asked to listen on a non-loopback address without a token refuses
to start unless ``--insecure`` is given.

Pushes: the carbon service cannot present a subscriber's token (it does not have it, and
must not). A subscriber with a token registers an address carrying a *push key* instead,
``...?key=<push key>``, derived from its token (HMAC-SHA256), which its push endpoint also
accepts. The key lets the holder post carbon values to that subscriber and nothing else, so
the carbon service's database (or its admin's listing) never holds a token that could stop
jobs.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "ENV_TOKEN",
    "ENV_TOKEN_FILE",
    "PUSH_KEY_PARAM",
    "InsecureBindError",
    "TokenError",
    "bearer_value",
    "check_bind",
    "is_loopback",
    "load_token",
    "push_authorized",
    "push_key",
    "token_matches",
    "with_push_key",
]

ENV_TOKEN = "CARBONSCALER_TOKEN"
"""Environment variable holding a service's bearer token."""
ENV_TOKEN_FILE = "CARBONSCALER_TOKEN_FILE"
"""Environment variable naming a file that holds a service's bearer token."""
PUSH_KEY_PARAM = "key"
"""Query parameter carrying the push key in a subscriber address."""

_MAX_TOKEN_FILE_BYTES = 4096
_MIN_TOKEN_CHARS = 8
_PUSH_CONTEXT = b"carbonscaler push key v1"


class TokenError(ValueError):
    """A token cannot be used (empty, unreadable file, given twice); says what to do."""


class InsecureBindError(ValueError):
    """A service would listen beyond loopback without a token; says what to do."""


def _clean(token: str, where: str) -> str:
    token = token.strip()
    if not token:
        raise TokenError(f"the token from {where} is empty")
    if len(token) < _MIN_TOKEN_CHARS:
        raise TokenError(
            f"the token from {where} has {len(token)} characters; use at least"
            f" {_MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)"
        )
    if any(c.isspace() or not c.isprintable() or not c.isascii() for c in token):
        raise TokenError(
            f"the token from {where} must be printable ASCII without spaces (it travels in an"
            " HTTP header)"
        )
    return token


def load_token(token: str | None, token_file: str | os.PathLike[str] | None) -> str | None:
    """The token given by value (flag or ``$CARBONSCALER_TOKEN``) or in a file, if any.

    A file is read up to 4 KiB and stripped of surrounding whitespace (a trailing newline).

    Raises:
        TokenError: If both are given, the file cannot be read, or the token is empty,
            shorter than 8 characters, or not printable ASCII.
    """
    if token is not None and token_file is not None:
        raise TokenError(
            f"give the token once: --token (or ${ENV_TOKEN}) or --token-file (or"
            f" ${ENV_TOKEN_FILE}), not both"
        )
    if token is not None:
        return _clean(token, f"--token/${ENV_TOKEN}")
    if token_file is None:
        return None
    path = Path(token_file)
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise TokenError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    if len(raw) > _MAX_TOKEN_FILE_BYTES:
        raise TokenError(f"the token file {path} is larger than {_MAX_TOKEN_FILE_BYTES} bytes")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise TokenError(f"the token file {path} is not ASCII text") from None
    return _clean(text, f"the token file {path}")


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` is reachable from this machine only.

    ``localhost`` and loopback addresses are; any other name, a wildcard (``0.0.0.0``,
    ``::``, empty) or a routable address is not.
    """
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, *, insecure: bool, service: str) -> None:
    """Refuse to serve beyond loopback without a token, unless ``insecure``.

    Raises:
        InsecureBindError: If ``host`` is not loopback, no token is set and not ``insecure``.
    """
    if token is not None or insecure or is_loopback(host):
        return
    raise InsecureBindError(
        f"refusing to start the {service} on {host or 'every address'} without a token:"
        " anyone who can reach it could change its state. Give a token with --token-file"
        f" FILE (or ${ENV_TOKEN_FILE}, or ${ENV_TOKEN}), listen on 127.0.0.1, or pass"
        " --insecure to run it open anyway (only on a network you trust)."
    )


def token_matches(given: str | None, token: str) -> bool:
    """Whether ``given`` is ``token`` (constant-time compare; None never matches)."""
    if given is None:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    )


def bearer_value(authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer <credentials>`` header, if any."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def push_key(token: str) -> str:
    """The push key derived from ``token`` (64 hex digits)."""
    return hmac.new(token.encode(), _PUSH_CONTEXT, hashlib.sha256).hexdigest()


def with_push_key(url: str, token: str | None) -> str:
    """``url`` with the push key of ``token`` in its query (``url`` itself if no token)."""
    if token is None:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "key"]
    query.append((PUSH_KEY_PARAM, push_key(token)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def push_authorized(authorization: str | None, query_key: str | None, token: str | None) -> bool:
    """Whether a push may post: no token set, the token as bearer, or the push key (as
    bearer or in the query)."""
    if token is None:
        return True
    given = bearer_value(authorization)
    key = push_key(token)
    return token_matches(given, token) or token_matches(given, key) or token_matches(query_key, key)
