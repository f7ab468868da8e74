"""Request validation every service shares: hostile bodies get a 4xx, never a 500.

:func:`install_request_validation` sets up an app (the carbon service, the power server and
the accounting service all call it):

- **Bodies** are read with a size bound (413 beyond it) and, when they are JSON (as FastAPI
  would parse them), checked before any route sees them: strict UTF-8, no ``NaN`` or
  ``Infinity`` literals, no number that overflows a float (``1e400``), no integer longer than
  Python parses, no lone surrogate (``"\\ud800"``) in a string or a key, no nesting deep
  enough to exhaust the parser. Each is a 422 in FastAPI's own error format.
- **Validation errors** (422) are serialised safely: the echoed input and context are
  sanitised (non-finite numbers become text, invalid strings are escaped, long values cut),
  so FastAPI's handler can no longer fail on the very input it rejects.
- **405** answers carry an ``Allow`` header listing every method the path serves, not only
  the first route's.

Body models use :data:`FiniteFloat` and :data:`StrictInt` (JSON ``true`` is not a number,
``"5"`` is not an int, NaN and infinities are refused) and :data:`Intensity` (0..10,000
gCO2eq/kWh). Subscriber and node URLs are checked with :func:`check_http_url`, which parses
them (IP literals with :mod:`ipaddress`, the whole URL with :class:`httpx.URL`) rather
than trusting a pattern alone; :data:`HTTP_URL_PATTERN` is that pattern for the schema, and
every URL it matches passes the checks.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

__all__ = [
    "HTTP_URL_PATTERN",
    "INTENSITY_MAX_G_PER_KWH",
    "MAX_BODY_BYTES",
    "FiniteFloat",
    "Intensity",
    "StrictInt",
    "check_http_url",
    "install_request_validation",
    "sanitise",
]

MAX_BODY_BYTES = 2 * 1024 * 1024
"""Largest request body any service reads (the biggest valid one, a job with 1,024 nodes
and 1,024 pods, is under 1 MiB)."""

INTENSITY_MAX_G_PER_KWH = 10_000.0
"""Highest carbon intensity accepted, gCO2eq/kWh (real grids stay below ~1,500)."""

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A JSON number that is finite; ``true`` or ``"1"`` are not numbers."""

StrictInt = Annotated[int, Field(strict=True)]
"""A JSON integer; ``true``, ``1.5`` or ``"1"`` are not."""

Intensity = Annotated[
    float,
    Field(strict=True, allow_inf_nan=False, ge=0, le=INTENSITY_MAX_G_PER_KWH),
]
"""Carbon intensity, gCO2eq/kWh: a finite number in 0..10,000."""

# -- URLs ------------------------------------------------------------------------------------

_PORT = (  # 1..65535 without leading zeros
    r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H = r"[0-9A-Fa-f]{1,4}"
# Every IPv6 text form without a zone: full, each place of the "::", and the IPv4 tails.
_IPV6 = "|".join(
    [
        rf"(?:{_H}:){{7}}{_H}",
        rf"(?:{_H}:){{1,7}}:",
        rf"(?:{_H}:){{1,6}}:{_H}",
        rf"(?:{_H}:){{1,5}}(?::{_H}){{1,2}}",
        rf"(?:{_H}:){{1,4}}(?::{_H}){{1,3}}",
        rf"(?:{_H}:){{1,3}}(?::{_H}){{1,4}}",
        rf"(?:{_H}:){{1,2}}(?::{_H}){{1,5}}",
        rf"{_H}:(?::{_H}){{1,6}}",
        rf"::(?:{_H}(?::{_H}){{0,6}})?",
        rf"(?:{_H}:){{6}}{_IPV4}",
        rf"(?:{_H}:){{1,5}}:{_IPV4}",
        rf"::(?:{_H}:){{0,5}}{_IPV4}",
    ]
)
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[(?:{_IPV6})\])"
HTTP_URL_PATTERN = rf"^https?://{_HOST}(?::{_PORT})?(?:[/?#][\x21-\x7E]*)?$"
"""An http(s) URL: a host name (labels of 1-63 letters, digits, ``_`` or ``-``), an IPv4
address or a bracketed IPv6 address; an optional port 1-65535; no user part, spaces or
non-ASCII characters."""
_URL = re.compile(HTTP_URL_PATTERN)
_MAX_HOST = 253

_URL_HELP = (
    "an http:// or https:// URL with a valid host (a name, an IPv4 address or a bracketed"
    " IPv6 address such as [::1]), an optional port (1-65535) and no spaces,"
    " e.g. http://127.0.0.1:8899/"
)


def check_http_url(value: str, what: str = "address") -> str:
    """``value`` if it is an http(s) URL with a valid host and port.

    Parsed, not only matched: an IPv6 literal must be an IPv6 address (``[da]`` and
    ``[:::::]`` are not), a name at most 253 characters, and :class:`httpx.URL` must read
    the same host and port.

    Raises:
        ValueError: Naming ``what`` and saying what a valid URL looks like.
    """
    problem = _url_problem(value)
    if problem is not None:
        raise ValueError(f"{what} must be {_URL_HELP}{problem}")
    return value


def _url_problem(value: str) -> str | None:
    if not _URL.fullmatch(value):
        return ""
    authority = value.split("://", 1)[1]
    authority = re.split(r"[/?#]", authority, maxsplit=1)[0]
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f" ({host!r} is not an IPv6 address)"
    else:
        host, _, rest = authority.partition(":")
        rest = ":" + rest if rest else ""
        if len(host.rstrip(".")) > _MAX_HOST:
            return f" (the host name is longer than {_MAX_HOST} characters)"
    port = int(rest[1:]) if rest.startswith(":") else None
    try:
        parsed = httpx.URL(value)
    except (httpx.InvalidURL, ValueError) as exc:
        return f" ({exc})"
    default = 443 if parsed.scheme == "https" else 80  # httpx leaves a default port out
    if (parsed.port or default) != (port or default) or not parsed.host:
        return " (it does not parse to one host and port)"
    return None


# -- bodies ----------------------------------------------------------------------------------


class _Rejected(ValueError):
    """A JSON body that parses in Python but is not valid, finite JSON."""


def _reject_constant(name: str) -> Any:
    raise _Rejected(f"{name} is not a JSON number; send a finite number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise _Rejected(f"the number {shown} is too large for a 64-bit float")
    return number


def _invalid_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_body_problem(body: bytes) -> dict[str, Any] | None:
    """Why ``body`` is not acceptable JSON (an error in FastAPI's format), or None.

    Invalid UTF-8, syntax errors, ``NaN``/``Infinity``, numbers beyond float range, integers
    longer than Python reads, lone surrogates in strings or keys, too deep nesting.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _error(
            "json_invalid",
            ["body", exc.start],
            f"the body is not valid UTF-8 JSON ({exc.reason} at byte {exc.start})",
        )
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        return _error("json_invalid", ["body", exc.pos], f"JSON decode error: {exc.msg}")
    except _Rejected as exc:
        return _error("finite_number", ["body"], str(exc))
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        return _error("json_invalid", ["body"], f"JSON decode error: {str(exc)[:200]}")
    except RecursionError:
        return _error("json_invalid", ["body"], "JSON decode error: nested too deeply")
    stack: list[tuple[Any, list[Any]]] = [(value, ["body"])]
    while stack:  # iterative: a deep body must not exhaust the stack here either
        item, loc = stack.pop()
        if isinstance(item, str):
            if _invalid_text(item):
                return _error("string_unicode", loc, "strings must be valid Unicode text")
        elif isinstance(item, dict):
            for key, child in item.items():
                if _invalid_text(key):
                    return _error("string_unicode", loc, "keys must be valid Unicode text")
                stack.append((child, [*loc, key]))
        elif isinstance(item, list):
            stack.extend((child, [*loc, i]) for i, child in enumerate(item))
    return None


def _error(kind: str, loc: list[Any], msg: str) -> dict[str, Any]:
    return {"type": kind, "loc": loc[:16], "msg": msg}


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse a body of this content type as JSON."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyGuard:
    """ASGI middleware: bounded request bodies, JSON ones checked by
    :func:`json_body_problem` before any route parses them.

    Args:
        app: The app to guard.
        max_bytes: Largest body read; larger ones get 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        length = headers.get("content-length", b"")
        if not length and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (GET and friends)
            return
        if length.strip().isdigit() and int(length) > self.max_bytes:
            await _reply(send, 413, {"detail": self._too_large()})
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _reply(send, 413, {"detail": self._too_large()})
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = headers.get("content-type")
        if body.strip() and _is_json(None if content_type is None else content_type.decode()):
            problem = json_body_problem(body)
            if problem is not None:
                await _reply(send, 422, {"detail": [problem]})
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"


async def _reply(send: Send, status: int, content: Any) -> None:
    payload = json.dumps(content, ensure_ascii=True).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


# -- error answers ---------------------------------------------------------------------------

_MAX_TEXT = 512
_MAX_ITEMS = 64
_MAX_DEPTH = 8


def sanitise(value: Any, depth: int = 0) -> Any:
    """``value`` made safe to echo as JSON: non-finite numbers as text, invalid strings
    escaped, long strings and lists cut, anything else as its (escaped) text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, str):
        text = value.encode("utf-8", errors="backslashreplace").decode("utf-8")
        return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."
    if depth >= _MAX_DEPTH:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(sanitise(k, depth + 1)): sanitise(v, depth + 1) for k, v in items[:_MAX_ITEMS]}
        if len(items) > _MAX_ITEMS:
            out["..."] = f"{len(items) - _MAX_ITEMS} more"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        out_list = [sanitise(v, depth + 1) for v in seq[:_MAX_ITEMS]]
        if len(seq) > _MAX_ITEMS:
            out_list.append(f"... {len(seq) - _MAX_ITEMS} more")
        return out_list
    return sanitise(str(value), depth)


async def _invalid_request(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": sanitise(list(exc.errors()))}, status_code=422)


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if not route_methods:
            continue
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(route_methods)
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
        return JSONResponse(
            {"detail": f"{request.method} is not allowed here; use {', '.join(allowed)}"},
            status_code=405,
            headers=headers,
        )
    return await http_exception_handler(request, exc)


def install_request_validation(app: FastAPI, *, max_body_bytes: int = MAX_BODY_BYTES) -> None:
    """Set ``app`` up as this module describes (body guard, safe 422s, full ``Allow``)."""
    app.add_middleware(BodyGuard, max_bytes=max_body_bytes)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
