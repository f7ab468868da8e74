"""POSTs to subscribers with aiohttp's client, only where the policy allows.

:class:`PushClient` sends a body to http(s) URLs over HTTP/1.1 keep-alive connections,
with a timeout per request and a limit on the requests in flight: one
:class:`aiohttp.ClientSession` over one :class:`aiohttp.TCPConnector` (one pool of
connections for every subscriber). Every name is resolved by a resolver of ours
(:class:`aiohttp.abc.AbstractResolver`) that asks the
:class:`~carbonscaler.security.netguard.DestinationPolicy`, checks every address and hands
aiohttp only checked ones: the connection goes to a checked address while the URL's name
stays in the ``Host`` header and the TLS handshake (SNI and certificate check), so a name
cannot resolve to something harmless for the check and to the cloud metadata service for
the connection. IP literals, which aiohttp connects to without resolving, are checked
before each request.

Measured on the 2-core reference machine with ``benchmarks/bench_push_fanout.py`` (1,000
subscribers, an update a second, 10 % of them hanging): healthy subscribers get every
update about as soon as with the hand-written HTTP/1.1 client this replaced, and 3-5x
sooner than over httpx's transport (httpcore's pool looks at every connection it holds
each time a request is queued or finished, encode/httpx#3215, which took one pool per
subscriber and adapter code to work around); see docs/carbon-service.md.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from carbonscaler.security.netguard import DestinationPolicy

__all__ = [
    "PushClient",
    "PushConnectionError",
    "PushProtocolError",
    "PushResult",
    "PushTimeout",
    "default_tls",
]

_MAX_BODY = 1024 * 1024
"""Response bodies up to this size are read (so the connection can be reused) and dropped."""
_EMPTY = {204, 304}
_DNS_TTL_S = 10
"""A name's checked addresses are reused this long (aiohttp's DNS cache, per host and port)."""


class PushProtocolError(Exception):
    """The subscriber did not answer with a valid HTTP/1.x response."""


class PushConnectionError(ConnectionError):
    """The subscriber cannot be connected to, or the connection broke."""


class PushTimeout(TimeoutError):
    """The request (waiting for a connection, connecting, sending, the answer) took too long."""


@functools.cache
def default_tls() -> ssl.SSLContext:
    """The system's default TLS client context, made once and shared by every client."""
    return ssl.create_default_context()


class PushClient:
    """POST bytes to http(s) URLs over pooled keep-alive connections.

    The connections are made on the event loop of the first :meth:`post`; use the client
    on that loop only.

    Args:
        timeout_s: Default timeout of a request, from waiting for a connection (when
            ``max_connections`` are busy) to the end of the answer.
        max_connections: Requests in flight at once, each on a connection of its own; None
            for no limit (a caller bounding its requests itself). Idle keep-alive
            connections do not count.
        keepalive_s: An idle connection unused for this long is closed.
        user_agent: Sent with every request.
        policy: Where connections may go (link-local and metadata addresses never).
        tls: TLS client context for https (default: :func:`default_tls`).

    Raises:
        ValueError: If a timeout or limit is not positive.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 5.0,
        max_connections: int | None = 8,
        keepalive_s: float = 60.0,
        user_agent: str = "carbonscaler",
        policy: DestinationPolicy | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if not timeout_s > 0 or not keepalive_s > 0:
            raise ValueError(f"timeouts must be positive, not {timeout_s}, {keepalive_s}")
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"need max_connections >= 1 (or None), not {max_connections}")
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.keepalive_s = keepalive_s
        self.user_agent = user_agent
        self.policy = policy if policy is not None else DestinationPolicy(what="subscriber address")
        self._tls = tls or default_tls()
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=_PinnedResolver(self.policy),
            ttl_dns_cache=_DNS_TTL_S,
            ssl=self._tls,
            limit=self.max_connections or 0,  # 0: no limit
            limit_per_host=0,
            keepalive_timeout=self.keepalive_s,
        )
        tracing = aiohttp.TraceConfig()
        tracing.on_connection_reuseconn.append(_on_reuse)
        tracing.on_request_headers_sent.append(_on_headers_sent)
        tracing.on_request_chunk_sent.append(_on_chunk_sent)
        # No proxy (trust_env=False: none from the environment; it would bypass the
        # policy), no cookies, no redirects (per request), no decompression: a push is one
        # POST and its status.
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": self.user_agent},
            skip_auto_headers=("Accept-Encoding",),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            trace_configs=[tracing],
        )
        return self._session

    async def post(
        self,
        url: str,
        body: bytes,
        content_type: str = "application/json",
        *,
        timeout_s: float | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> int:
        """POST ``body`` to ``url``; returns the response status code.

        A kept-alive connection the subscriber closed meanwhile costs nothing: the request
        is sent once more, on a new connection (within the same timeout).

        Args:
            url: An http(s) URL.
            body: The request body.
            content_type: Its media type.
            timeout_s: Timeout of this request (default: the client's).
            on_sent: Called once the request is handed to the connection, before the
                answer is awaited (a caller bounding concurrent sends can free its slot
                there); at most once.

        Raises:
            ValueError: If ``url`` is not an http(s) URL with a host.
            DestinationRefused: If the policy refuses the destination.
            PushTimeout: If the request timed out.
            PushConnectionError, OSError: If it cannot connect or the connection broke.
            PushProtocolError: If the answer is not HTTP/1.x.
        """
        try:
            parsed = URL(url)
            host, _ = parsed.raw_host, parsed.port
        except (ValueError, TypeError):
            raise ValueError(f"not an http(s) URL: {url!r}") from None
        if parsed.scheme not in ("http", "https") or not host:
            raise ValueError(f"not an http(s) URL: {url!r}")
        # Names are checked by the resolver when they are resolved; aiohttp connects to an
        # IP literal without resolving it, so it is checked here (a name's check is cheap).
        self.policy.check_host(host)
        session = self._session or self._open()
        limit = timeout_s if timeout_s is not None else self.timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        headers = {"Content-Type": content_type}
        state = _Attempt(on_sent)
        for attempt in (1, 2):
            state.start(len(body))
            try:
                async with session.post(
                    parsed,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=max(deadline - loop.time(), 0.001)),
                    trace_request_ctx=state,
                ) as response:
                    await _drain(response)
                    return response.status
            except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors
                raise PushTimeout(f"{type(exc).__name__} (timeout {limit:g} s)") from exc
            except aiohttp.ClientConnectionError as exc:
                stale = state.reused and not isinstance(exc, aiohttp.ClientConnectorError)
                if not stale or attempt == 2:  # a failure of this subscriber's, not resent
                    raise _push_error(exc) from exc
            except aiohttp.ClientError as exc:
                raise _push_error(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close every connection."""
        if self._session is not None:
            await self._session.close()


class _Attempt:
    """One request's state, seen by the trace hooks (``trace_request_ctx``)."""

    __slots__ = ("notify", "reused", "unsent")

    def __init__(self, on_sent: Callable[[], None] | None) -> None:
        self.notify = on_sent
        self.reused = False
        self.unsent = 0

    def start(self, size: int) -> None:
        self.reused, self.unsent = False, size

    def sent(self, size: int) -> None:
        self.unsent -= size
        if self.unsent <= 0 and self.notify is not None:
            call, self.notify = self.notify, None
            call()


def _state(context: SimpleNamespace) -> _Attempt | None:
    state = context.trace_request_ctx
    return state if isinstance(state, _Attempt) else None


async def _on_reuse(session: Any, context: SimpleNamespace, params: Any) -> None:
    if (state := _state(context)) is not None:
        state.reused = True


async def _on_headers_sent(session: Any, context: SimpleNamespace, params: Any) -> None:
    if (state := _state(context)) is not None:
        state.sent(0)  # an empty body: the headers are the request


async def _on_chunk_sent(
    session: Any, context: SimpleNamespace, params: aiohttp.TraceRequestChunkSentParams
) -> None:
    if (state := _state(context)) is not None:
        state.sent(len(params.chunk))


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read (and drop) a small response body so the connection can carry the next request.

    A body that runs until the connection closes, or is larger than ``_MAX_BODY``, is not
    waited for: the connection is closed instead (aiohttp does not reuse a connection
    whose answer was not read to its end).
    """
    length = response.content_length
    if length == 0:
        return
    chunked = "chunked" in response.headers.get("Transfer-Encoding", "").lower()
    bounded = length is not None and length <= _MAX_BODY
    if not (chunked or bounded or response.status in _EMPTY):
        return
    total = 0
    async for chunk in response.content.iter_any():
        total += len(chunk)
        if total > _MAX_BODY:
            return


_NOT_HTTP = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientResponseError,
    aiohttp.ClientPayloadError,
)
"""No answer before the connection closed, an answer that does not parse, a broken body."""


def _push_error(exc: aiohttp.ClientError) -> Exception:
    if isinstance(exc, _NOT_HTTP):
        return PushProtocolError(f"no valid HTTP/1.x response ({exc})")
    if isinstance(exc, aiohttp.ClientConnectorError):  # its own message omits the cause
        cause: Exception = exc.os_error
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            cause = exc.certificate_error
        reason = str(cause) or type(cause).__name__
        return PushConnectionError(
            f"{type(exc).__name__}: cannot connect to {exc.host}:{exc.port} ({reason})"
        )
    return PushConnectionError(f"{type(exc).__name__}: {exc}".rstrip(": "))


class _PinnedResolver(AbstractResolver):
    """aiohttp's resolver contract over :meth:`DestinationPolicy.resolve`: every address a
    name resolves to is checked, and only allowed ones are connected to.

    Raises (from :meth:`resolve`):
        DestinationRefused: If the policy refuses the host or an address of it.
        OSError: If the name does not resolve.
    """

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self._policy.resolve(host, port)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class PushResult:
    """One push to one subscriber (see :mod:`carbonscaler.services._delivery`)."""

    subscriber_id: int
    ok: bool
    error: str | None
    attempts: int
