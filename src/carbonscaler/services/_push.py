"""POSTs to subscribers over pooled HTTP/1.1 keep-alive connections, only where the policy allows.

:class:`PushClient` sends a body to http(s) URLs with a timeout per request and a limit on
the requests in flight. The answers are parsed by ``httptools`` (llhttp, the parser behind
uvicorn and Node.js): status line, headers, ``Content-Length``, chunked bodies, keep-alive,
malformed answers. The request is one fixed form (``POST``, ``Host``, ``User-Agent``,
``Content-Type``, ``Content-Length``, the body) whose target is the URL as ``yarl``
percent-encodes it. The connections are this module's: asyncio protocols in one pool per
origin (scheme, host, port), reused most-recently-used first, closed after ``keepalive_s``
idle.

Every name is resolved through the :class:`~carbonscaler.security.netguard.DestinationPolicy`,
which checks every address, and the connection goes to a checked address while the URL's
name stays in the ``Host`` header and the TLS handshake (SNI and certificate check), so a
name cannot resolve to something harmless for the check and to the cloud metadata service
for the connection. IP literals are checked without resolving.

Why not aiohttp's or httpx's client: a push is tiny and the fan-out to 1,000 subscribers runs
on one core, so the CPU per push is the lag. Measured side by side with
``benchmarks/bench_push_fanout.py`` (docs/carbon-service.md), aiohttp's ``ClientSession``
spent about three times this client's CPU per push (request and response objects, trace hooks,
a task to write each body, a timeout scope) and delivered at 2-3x the lag; httpx's pool more
still. This client spends no more than the hand-written one it replaced, and keeps its lag.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools
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
_DNS_TTL_S = 10.0
"""A name's checked addresses are reused this long (per host and port)."""
_MAX_TARGETS = 8192
"""Parsed and checked URLs remembered (a subscriber's URL is pushed to every update)."""


class PushProtocolError(Exception):
    """The subscriber did not answer with a valid HTTP/1.x response."""


class PushConnectionError(ConnectionError):
    """The subscriber cannot be connected to, or the connection broke."""


class PushTimeout(TimeoutError):
    """The request (waiting for a connection, connecting, sending, the answer) took too long."""


class _Stale(Exception):
    """A kept-alive connection was closed by the subscriber before it took the request."""


@functools.cache
def default_tls() -> ssl.SSLContext:
    """The system's default TLS client context, made once and shared by every client."""
    return ssl.create_default_context()


Origin = tuple[str, str, int]
"""(scheme, host, port): connections to one origin are interchangeable."""


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL, checked against the policy, with the start of its request."""

    origin: Origin
    head: bytes
    """Request line, ``Host`` and ``User-Agent``."""


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
        ValueError: If a timeout or limit is not positive, or ``user_agent`` has control
            characters.
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
        self._agent = _field(b"User-Agent", user_agent)
        self.policy = policy if policy is not None else DestinationPolicy(what="subscriber address")
        self._tls = tls
        self._targets: dict[str, _Target] = {}
        self._content_types: dict[str, bytes] = {}
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._addresses: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._resolving: dict[tuple[str, int], asyncio.Task[list[str]]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._sweeper: asyncio.TimerHandle | None = None

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
            PushConnectionError: If it cannot connect or the connection broke.
            PushProtocolError: If the answer is not HTTP/1.x.
        """
        target = self._targets.get(url) or self._target(url)
        kind = self._content_types.get(content_type) or self._content_type(content_type)
        request = b"%s%sContent-Length: %d\r\n\r\n%s" % (target.head, kind, len(body), body)
        limit = timeout_s if timeout_s is not None else self.timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        reuse = True
        if self.max_connections is None:
            connection = self._idle_connection(target.origin)
            if connection is not None:
                # The common case: a kept-alive connection and no limit to wait for, so the
                # answer is all there is to time (one timer: a third of the CPU of a timeout
                # scope per push).
                timer = loop.call_at(deadline, connection.expire, limit)
                try:
                    return await self._exchange(connection, request, on_sent)
                except _Stale:  # closed by the subscriber while idle: once more, on a new one
                    reuse = False
                    if connection.notified:
                        on_sent = None
                finally:
                    timer.cancel()
        try:
            async with asyncio.timeout_at(deadline):
                if self.max_connections is None:
                    return await self._send(target.origin, request, on_sent, reuse)
                if self._slots is None:
                    self._slots = asyncio.Semaphore(self.max_connections)
                async with self._slots:
                    return await self._send(target.origin, request, on_sent, reuse)
        except TimeoutError as exc:
            if isinstance(exc, PushTimeout):
                raise
            raise PushTimeout(f"no answer within {limit:g} s") from exc

    async def aclose(self) -> None:
        """Close every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
        for task in self._resolving.values():
            task.cancel()

    # -- one request ------------------------------------------------------------------------

    async def _send(
        self, origin: Origin, request: bytes, on_sent: Callable[[], None] | None, reuse: bool
    ) -> int:
        connection = self._idle_connection(origin) if reuse else None
        if connection is not None:
            try:
                return await self._exchange(connection, request, on_sent)
            except _Stale:  # closed by the subscriber while idle: once more, on a new one
                if connection.notified:
                    on_sent = None
        connection = await self._connect(origin)
        try:
            return await self._exchange(connection, request, on_sent)
        except _Stale as exc:  # on a new connection, this is the subscriber's answer
            raise PushProtocolError(f"no valid HTTP/1.x response ({exc})") from None

    async def _exchange(
        self, connection: _Connection, request: bytes, on_sent: Callable[[], None] | None
    ) -> int:
        answer: asyncio.Future[int] | None = None
        try:
            answer = connection.send(request)
            if connection.paused:
                await connection.drained()
            if on_sent is not None:
                connection.notified = True
                on_sent()
            status = await answer
        except BaseException:
            self._discard(connection)
            if answer is not None and answer.done() and not answer.cancelled():
                answer.exception()  # retrieved: the failure that matters is being raised
            raise
        if connection.reusable():
            connection.idle_since = connection.loop.time()
            self._idle.setdefault(connection.origin, []).append(connection)
            if self._sweeper is None:
                self._sweep_later()
        else:
            self._discard(connection)
        return status

    # -- connections ------------------------------------------------------------------------

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()  # the most recently used: the likeliest to be alive
            if connection.usable():
                return connection
            self._discard(connection)
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = (self._tls or default_tls()) if scheme == "https" else None
        failure: OSError | None = None
        # Connect to a checked address; the name stays in the Host header and in TLS (SNI,
        # certificate check).
        for address in await self._checked_addresses(host, port):
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(origin, loop),
                    address,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
            except OSError as exc:
                failure = exc
                continue
            self._open.add(connection)
            return connection
        assert failure is not None
        reason = f"{type(failure).__name__}: {failure}".rstrip(": ")
        raise PushConnectionError(f"cannot connect to {host}:{port} ({reason})") from failure

    async def _checked_addresses(self, host: str, port: int) -> list[str]:
        """The addresses ``host`` resolves to, each allowed by the policy."""
        if self.policy.check_host(host) is not None:
            return [host]  # an IP literal, checked
        key = (host, port)
        loop = asyncio.get_running_loop()
        known = self._addresses.get(key)
        if known is not None and known[0] > loop.time():
            return known[1]
        task = self._resolving.get(key)
        if task is None:  # one resolution at a time per name, shared by its requests
            task = self._resolving[key] = loop.create_task(self.policy.resolve(host, port))
            task.add_done_callback(functools.partial(self._resolved, key))
        try:
            addresses = await asyncio.shield(task)
        except OSError as exc:
            reason = str(exc) or type(exc).__name__
            raise PushConnectionError(f"cannot resolve {host!r} ({reason})") from exc
        if len(self._addresses) >= _MAX_TARGETS:
            self._addresses.clear()
        self._addresses[key] = (loop.time() + _DNS_TTL_S, addresses)
        return addresses

    def _resolved(self, key: tuple[str, int], task: asyncio.Task[list[str]]) -> None:
        self._resolving.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved, also when every request waiting for it timed out

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    def _sweep_later(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(min(max(self.keepalive_s / 4, 0.05), 5.0), self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for ``keepalive_s`` (each pool is oldest first)."""
        self._sweeper = None
        if not self._idle:
            return
        expired = asyncio.get_running_loop().time() - self.keepalive_s
        for origin, idle in list(self._idle.items()):
            old = 0
            while old < len(idle) and (idle[old].idle_since <= expired or idle[old].closed):
                self._discard(idle[old])
                old += 1
            del idle[:old]
            if not idle:
                del self._idle[origin]
        if self._idle:
            self._sweep_later()

    # -- requests ---------------------------------------------------------------------------

    def _target(self, url: str) -> _Target:
        try:
            parsed = URL(url)
            scheme, host, port = parsed.scheme, parsed.raw_host, parsed.port
            if scheme not in ("http", "https") or not host or port is None:
                raise ValueError(url)
            name = f"[{host}]" if ":" in host else host
            authority = name if port == (443 if scheme == "https" else 80) else f"{name}:{port}"
            # yarl's percent-encoded form: no spaces, controls or non-ASCII characters left.
            line = f"POST {parsed.raw_path_qs or '/'} HTTP/1.1\r\nHost: {authority}\r\n"
            head = line.encode("ascii") + self._agent
        except (ValueError, TypeError):
            raise ValueError(f"not an http(s) URL: {url!r}") from None
        self.policy.check_host(host)  # a name's addresses are checked when it is resolved
        if len(self._targets) >= _MAX_TARGETS:
            self._targets.clear()
        target = self._targets[url] = _Target((scheme, host.rstrip("."), port), head)
        return target

    def _content_type(self, content_type: str) -> bytes:
        kind = _field(b"Content-Type", content_type)
        if len(self._content_types) < 64:
            self._content_types[content_type] = kind
        return kind


def _field(name: bytes, value: str) -> bytes:
    """One header line; refuses a value that would break the request.

    Raises:
        ValueError: If ``value`` has control characters or is not Latin-1.
    """
    if any(c < " " or c == "\x7f" for c in value):
        raise ValueError(f"a {name.decode()} must not contain control characters: {value!r}")
    try:
        return b"%s: %s\r\n" % (name, value.encode("latin-1"))
    except UnicodeEncodeError:
        raise ValueError(f"a {name.decode()} must be Latin-1 text: {value!r}") from None


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed by httptools."""

    __slots__ = (
        "_answer",
        "_body",
        "_broken",
        "_drain",
        "_framed",
        "_keep",
        "_parser",
        "_received",
        "_reused",
        "_status",
        "_transport",
        "_used",
        "closed",
        "idle_since",
        "loop",
        "notified",
        "origin",
        "paused",
    )

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self.loop = loop
        self.idle_since = 0.0
        self.closed = False
        self.paused = False
        self.notified = False
        """Whether the caller was told that its request went out on this connection."""
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._used = False
        self._answer: asyncio.Future[int] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._received = False
        self._reused = False
        self._status = 0
        self._framed = False
        self._body = 0
        self._keep = False
        self._broken = False

    # -- used by the client -----------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[int]:
        """Write the request; the future is its answer's status.

        Raises:
            _Stale: If the connection was kept alive and is closed now.
        """
        transport = self._transport
        if self.closed or transport is None or transport.is_closing():
            raise _Stale("the connection was closed")
        reused, self._used = self._used, True
        self._received = self._broken = self._framed = self._keep = False
        self._status = self._body = 0
        self._answer = answer = self.loop.create_future()
        self._reused = reused
        transport.write(request)
        return answer

    async def drained(self) -> None:
        """Wait until the transport takes more data (its buffer is below the high mark)."""
        if self.paused:
            self._drain = self.loop.create_future()
            await self._drain

    def expire(self, limit: float) -> None:
        """The request's time is up: fail it (the client then closes the connection)."""
        if self._answer is not None and not self._answer.done():
            self._fail(PushTimeout(f"no answer within {limit:g} s"))

    def usable(self) -> bool:
        transport = self._transport
        return not self.closed and transport is not None and not transport.is_closing()

    def reusable(self) -> bool:
        return self._keep and not self._broken and self.usable()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()
        self._fail(PushConnectionError("the connection was closed"))

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (not an asyncio.Transport instance on every loop: uvloop's).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self._broken = True  # an answer nobody asked for: never reused
            self.close()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(PushProtocolError("no valid HTTP/1.x response (a protocol switch)"))
            self.close()
        except httptools.HttpParserError as exc:
            self._fail(PushProtocolError(f"no valid HTTP/1.x response ({exc})"))
            self.close()

    def eof_received(self) -> bool:
        self._lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._framed = False
        if self._answer is None or self._answer.done():
            self._broken = True  # a second answer to one request: never reused

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-length":  # (llhttp refuses invalid or conflicting lengths)
            length = value.strip()
            self._framed = length.isdigit() and int(length) <= _MAX_BODY
        elif lower == b"transfer-encoding":
            self._framed = value.lower().rstrip().endswith(b"chunked")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # an interim answer: the real one follows
        self._status = status
        self._keep = self._parser.should_keep_alive()
        if not self._framed and status not in (204, 304):
            # The body runs until the connection closes (or is too long): not waited for.
            self._keep = False
            self._done()

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body > _MAX_BODY:
            self._keep = False
            self._done()

    def on_message_complete(self) -> None:
        if self._status:
            self._done()

    # -- outcomes ---------------------------------------------------------------------------

    def _done(self) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_result(self._status)

    def _fail(self, exc: Exception) -> None:
        self._broken = True
        for waiter in (self._answer, self._drain):
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self._answer
        if answer is None or answer.done():
            return
        if self._reused and not self._received:
            self._fail(_Stale("the connection closed before the answer"))
        elif exc is not None:
            host, port = self.origin[1:]
            self._fail(PushConnectionError(f"the connection to {host}:{port} broke ({exc})"))
        else:
            self._fail(PushProtocolError("no valid HTTP/1.x response (the connection closed)"))


@dataclass(frozen=True)
class PushResult:
    """One push to one subscriber (see :mod:`carbonscaler.services._delivery`)."""

    subscriber_id: int
    ok: bool
    error: str | None
    attempts: int
