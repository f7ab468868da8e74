"""POSTs to subscribers over httpx's transport layer, only where the policy allows.

:class:`PushClient` sends a body to http(s) URLs over HTTP/1.1 keep-alive connections, with
explicit timeouts (connect, write, read, and waiting for a pooled connection) and limits on
its connections: httpx's request and response models and :class:`httpx.Limits` /
:class:`httpx.Timeout`, httpcore's connection pool and h11's HTTP/1.1. Each new connection
resolves the host with the :class:`~carbonscaler.security.netguard.DestinationPolicy`,
checks every address and connects to a checked one, while the URL's name stays in the
``Host`` header and the TLS handshake (SNI and certificate check): a name cannot resolve to
something harmless for the check and to the cloud metadata service for the connection.

Measured on the 2-core reference machine, pushing rounds of 1,000 concurrent POSTs to one
loopback server (``benchmarks/bench_push_fanout.py`` runs the real fan-out):

- One client per subscriber, not one for all: httpcore's pool looks at every connection it
  holds each time a request is queued or finished (encode/httpx#3215), so one pool for
  1,000 subscribers took 23 s per round; 1,000 pools of one connection, under a second.
- No :class:`httpx.AsyncClient` on top, and asyncio streams under httpcore rather than
  anyio's (httpcore's default): the client's per-request work (request building, cookies,
  auth and redirect machinery, none of which a push uses) and anyio's layer cost about
  0.9 ms of CPU per push against 0.5 ms without them, which decided whether 1,000
  subscribers got every update at one update a second on a busy machine. The transport
  below is httpx's documented extension point, :class:`httpx.AsyncBaseTransport`, and the
  network backend httpcore's, :class:`httpcore.AsyncNetworkBackend`.

The hand-written HTTP/1.1 client this replaced cost about 0.15 ms per push: in the fan-out
benchmark (1,000 subscribers, an update a second, 10 % or 50 % of them hanging) healthy
subscribers still get every update, about 0.2-0.35 s (median) after its first arrival
rather than 0.05-0.1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

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
_SENT = "http11.send_request_body.complete"  # httpcore trace events
_CONNECTING = "connection.connect_tcp.started"
_EXTRA_INFO = {
    "ssl_object": "ssl_object",
    "client_addr": "sockname",
    "server_addr": "peername",
    "socket": "socket",
}
"""httpcore's names of a stream's details -> asyncio's."""


class PushProtocolError(Exception):
    """The subscriber did not answer with a valid HTTP/1.x response."""


class PushConnectionError(ConnectionError):
    """The subscriber cannot be connected to, or the connection broke."""


class PushTimeout(TimeoutError):
    """Connecting, sending, waiting for the answer or for a free connection took too long."""


@functools.cache
def default_tls() -> ssl.SSLContext:
    """The system's default TLS client context, made once and shared by every client."""
    return ssl.create_default_context()


class PushClient:
    """POST bytes to http(s) URLs over pooled keep-alive connections.

    Args:
        timeout_s: Default timeout of each phase of a request (connect, write, read, and
            waiting for a connection when ``max_connections`` are busy).
        max_connections: Connections open at once (busy or idle).
        max_idle: Idle keep-alive connections kept.
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
        max_connections: int = 8,
        max_idle: int = 8,
        keepalive_s: float = 60.0,
        user_agent: str = "carbonscaler",
        policy: DestinationPolicy | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if not timeout_s > 0 or not keepalive_s > 0:
            raise ValueError(f"timeouts must be positive, not {timeout_s}, {keepalive_s}")
        if max_connections < 1 or max_idle < 0:
            raise ValueError(f"need max_connections >= 1, max_idle >= 0; got {max_connections}")
        self.timeout_s = timeout_s
        self.policy = policy if policy is not None else DestinationPolicy(what="subscriber address")
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_idle,
            keepalive_expiry=keepalive_s,
        )
        self.limits = limits
        self.user_agent = user_agent
        # No proxy (from the environment or otherwise): it would bypass the policy. No
        # redirects, no cookies: a push is one POST and its status.
        self._transport = _PinnedTransport(self.policy, tls or default_tls(), limits)

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
        is sent once more, on a new connection.

        Args:
            url: An http(s) URL.
            body: The request body.
            content_type: Its media type.
            timeout_s: Timeout of each phase of this request (default: the client's).
            on_sent: Called once the request is written, before the answer is awaited (a
                caller bounding concurrent sends can free its slot there); at most once.

        Raises:
            ValueError: If ``url`` is not an http(s) URL with a host.
            DestinationRefused: If the policy refuses the destination.
            PushTimeout: If a phase of the request timed out.
            PushConnectionError, OSError: If it cannot connect or the connection broke.
            PushProtocolError: If the answer is not HTTP/1.x.
        """
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise ValueError(f"not an http(s) URL: {url!r}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"not an http(s) URL: {url!r}")
        timeout = httpx.Timeout(timeout_s if timeout_s is not None else self.timeout_s)
        headers = {"Content-Type": content_type, "User-Agent": self.user_agent}
        notify, connected = on_sent, False

        async def trace(event: str, info: dict[str, Any]) -> None:
            nonlocal notify, connected
            if event == _CONNECTING:
                connected = True
            elif event == _SENT and notify is not None:
                call, notify = notify, None
                call()

        for attempt in (1, 2):
            connected = False
            request = httpx.Request(
                "POST",
                parsed,
                content=body,
                headers=headers,
                extensions={"timeout": timeout.as_dict(), "trace": trace},
            )
            try:
                response = await self._transport.handle_async_request(request)
                try:
                    await _drain(response)
                finally:
                    await response.aclose()
                return response.status_code
            except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                if connected or attempt == 2:  # not a stale kept-alive connection
                    raise _push_error(exc, timeout) from exc
            except httpx.TransportError as exc:
                raise _push_error(exc, timeout) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close every connection."""
        await self._transport.aclose()


async def _drain(response: httpx.Response) -> None:
    """Read (and drop) a small response body so the connection can carry the next request.

    A body that runs until the connection closes, or is larger than ``_MAX_BODY``, is not
    waited for: the connection is closed instead.
    """
    headers = response.headers
    length = headers.get("content-length", "")
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    bounded = length.isdigit() and int(length) <= _MAX_BODY
    if not (chunked or bounded or response.status_code in _EMPTY):
        return
    total = 0
    async for chunk in response.aiter_raw():
        total += len(chunk)
        if total > _MAX_BODY:
            return


def _push_error(exc: httpx.TransportError, timeout: httpx.Timeout) -> Exception:
    if isinstance(exc, httpx.TimeoutException):
        limit = max((t for t in timeout.as_dict().values() if t is not None), default=0.0)
        return PushTimeout(f"{type(exc).__name__} (timeout {limit:g} s)")
    if isinstance(exc, httpx.ProtocolError):
        return PushProtocolError(f"no valid HTTP/1.x response ({exc})")
    return PushConnectionError(f"{type(exc).__name__}: {exc}".rstrip(": "))


# -- httpx over an httpcore pool whose connections go to checked addresses ------------------


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to an address the policy checked (names resolved here, for each connection),
    over asyncio streams."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve ``host`` with the policy and connect to its first checked address.

        Raises:
            DestinationRefused: If the policy refuses the host or an address of it.
            OSError: If the name does not resolve.
            httpcore.ConnectTimeout: If resolving and connecting took over ``timeout``.
            httpcore.ConnectError: If the connection is refused or fails.
        """
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._policy.resolve(host, port)  # OSError: no such name
                try:
                    reader, writer = await asyncio.open_connection(
                        addresses[0],
                        port,
                        local_addr=(local_address, 0) if local_address else None,
                    )
                except OSError as exc:  # refused, unreachable, ...
                    raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        except TimeoutError:
            raise httpcore.ConnectTimeout(
                f"connecting to {host!r} took over {timeout:g} s"
            ) from None
        stream = _AsyncioStream(reader, writer)
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return stream

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _AsyncioStream(httpcore.AsyncNetworkStream):
    """httpcore's network stream over an asyncio stream pair, every wait bounded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout(f"no answer within {timeout:g} s") from None
        except OSError as exc:  # ssl.SSLError too
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout(f"could not send within {timeout:g} s") from None
        except OSError as exc:  # ssl.SSLError too
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._writer.close()  # not waited for: a hanging peer must not hold anyone up

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            self._writer.close()
            raise httpcore.ConnectTimeout(f"TLS handshake took over {timeout:g} s") from None
        except OSError as exc:  # ssl.SSLError too
            self._writer.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle connection the server closed is not reused
            return self._reader.at_eof() or self._writer.is_closing()
        name = _EXTRA_INFO.get(info)
        return None if name is None else self._writer.get_extra_info(name)


_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
)
"""httpcore's exceptions as httpx's, most specific first (as httpx's own transport does)."""


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, mapped in _ERRORS:
            if isinstance(exc, core):
                raise mapped(str(exc)) from exc
        raise


class _PinnedTransport(httpx.AsyncBaseTransport):
    """httpx's transport contract over an httpcore pool with a :class:`_PinnedBackend`."""

    def __init__(self, policy: DestinationPolicy, tls: ssl.SSLContext, limits: httpx.Limits):
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=tls,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=_PinnedBackend(policy),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            response = await self._pool.handle_async_request(core)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            with _as_httpx_errors():
                await close()


@dataclass(frozen=True)
class PushResult:
    """One push to one subscriber (see :mod:`carbonscaler.services._delivery`)."""

    subscriber_id: int
    ok: bool
    error: str | None
    attempts: int
