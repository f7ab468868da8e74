"""Reading remote power servers (``carbonscaler power-server``), as the accounting does.

The accounting asks each node's server for the energy over the exact interval it is
accounting (``GET /v1/energy?start=&end=``, Unix seconds), which the server answers from its
history of one-second readings. Unlike the reference ``GET /``, which hands out the
readings since the previous call and so lets two consumers steal each other's readings,
this query does not change the server's state: retries and restarts are safe, and an
accounting process restarted after a crash still gets measured figures for the time it
was down, as long as the server's history reaches back that far.

:meth:`PowerServerClient.energy_or_estimate` never fails: whatever part of the interval
the server cannot cover (it is down, or its history is shorter) is estimated from the
job's profile and labelled as such — never counted as zero and never as measured.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode, urlsplit

from carbonscaler.security.netguard import DestinationPolicy, DestinationRefused

__all__ = ["NodeAnswer", "NodeEnergy", "PowerServerClient", "PowerServerError"]

_MAX_RESPONSE_BYTES = 1 << 20


class PowerServerError(RuntimeError):
    """A power server could not be read (down, timed out, or answered nonsense)."""


@dataclass(frozen=True)
class NodeEnergy:
    """One node's energy over one interval, split into measured and estimated parts."""

    node: str
    """The power server's base URL."""
    energy_j: float
    """All energy over the interval, J."""
    measured_j: float
    """The part of ``energy_j`` that was measured, J."""
    source: str
    """The label of most of the energy, e.g. ``measured:rapl`` or ``estimated:profile``."""
    note: str = ""
    """Why part of the figure is estimated, if it is."""

    @property
    def estimated_j(self) -> float:
        """The estimated part, J."""
        return self.energy_j - self.measured_j


@dataclass(frozen=True)
class NodeAnswer:
    """What a power server has for an interval."""

    energy_j: float
    measured_j: float
    covered_s: float
    """Seconds of the interval its readings cover."""
    source: str


class PowerServerClient:
    """Asks power servers for energy over intervals; one client serves many nodes.

    Each question is one short HTTP/1.1 GET on its own connection (``Connection: close``),
    written directly on asyncio streams. Why not httpx, as elsewhere: the accounting asks
    every node every few seconds, and on this project's 2-core reference machine an httpx
    async request costs about 3.4 ms of CPU against 0.6 ms for the plain exchange, which
    decides whether 100 jobs fit in 5 % of a core. Keep-alive would not help either: at a
    5 s sampling interval the server (uvicorn, 5 s idle timeout) has closed the connection
    by the next round. The exchange is small and fixed: our own server, JSON bodies with a
    ``Content-Length``.

    Args:
        timeout_s: Deadline of each whole exchange (connect, send, receive).
        max_in_flight: Questions in flight at once (bounds sockets and bursts).
        policy: Where questions may go: never link-local or cloud-metadata addresses. The
            host is resolved and checked at every question, which then connects to the
            checked address (the ``Host`` header and TLS keep the name).
    """

    def __init__(
        self,
        *,
        timeout_s: float = 2.0,
        max_in_flight: int = 32,
        policy: DestinationPolicy | None = None,
    ) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout_s}")
        self.timeout_s = timeout_s
        self.policy = policy if policy is not None else DestinationPolicy(what="node URL")
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tls: ssl.SSLContext | None = None

    async def aclose(self) -> None:
        """Nothing to release (no connection outlives a question); kept for symmetry."""

    async def get_json(self, url: str, params: dict[str, str]) -> tuple[int, Any]:
        """``(status, parsed JSON body)`` of ``GET url?params``.

        Raises:
            PowerServerError: On a bad URL, a network error, a timeout or a malformed answer.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
            target = (parts.path or "/") + "?" + urlencode(params)
            request = (
                f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                "Accept: application/json\r\nUser-Agent: carbonscaler-accounting\r\n"
                "Connection: close\r\n\r\n"
            ).encode("ascii")
        except ValueError:  # a bad port, or a URL that is not plain ASCII
            raise PowerServerError(f"{url!r} is not a usable http(s) URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PowerServerError(f"{url!r} is not an http(s) URL with a host")
        tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            async with self._slots, asyncio.timeout(self.timeout_s):
                port = port or (443 if tls else 80)
                address = (await self.policy.resolve(parts.hostname, port))[0]
                reader, writer = await asyncio.open_connection(
                    address, port, ssl=tls, server_hostname=parts.hostname if tls else None
                )
                try:
                    writer.write(request)
                    await writer.drain()
                    raw = await reader.read(_MAX_RESPONSE_BYTES + 1)
                    while chunk := await reader.read(_MAX_RESPONSE_BYTES):
                        raw += chunk
                        if len(raw) > _MAX_RESPONSE_BYTES:
                            break
                finally:
                    writer.close()
        except TimeoutError:
            raise PowerServerError(f"{url} did not answer within {self.timeout_s:g} s") from None
        except DestinationRefused as exc:
            raise PowerServerError(str(exc)) from None
        except (OSError, ssl.SSLError) as exc:
            raise PowerServerError(f"{url} unreachable: {type(exc).__name__}") from None
        return _parse_response(url, raw)

    async def energy(self, node: str, start_s: float, end_s: float) -> NodeAnswer:
        """What the server has for the interval ``[start_s, end_s]`` (Unix seconds).

        Raises:
            PowerServerError: If the server is unreachable, slow or answers badly.
        """
        url = node.rstrip("/") + "/v1/energy"
        status, body = await self.get_json(url, {"start": repr(start_s), "end": repr(end_s)})
        if status != 200:
            raise PowerServerError(f"power server {node} answered HTTP {status}")
        try:
            answer = NodeAnswer(
                float(body["energy_j"]),
                float(body["measured_j"]),
                float(body["covered_s"]),
                str(body["source"]),
            )
        except (ValueError, KeyError, TypeError):
            raise PowerServerError(f"power server {node} answered without energy figures") from None
        figures = (answer.energy_j, answer.measured_j, answer.covered_s)
        if not all(math.isfinite(v) and v >= 0 for v in figures):
            raise PowerServerError(f"power server {node} answered impossible figures")
        if answer.measured_j > answer.energy_j:
            answer = replace(answer, measured_j=answer.energy_j)
        return answer

    async def energy_or_estimate(
        self,
        node: str,
        start_s: float,
        end_s: float,
        estimate_w: float,
        estimate_source: str,
        *,
        answer: Awaitable[NodeAnswer] | None = None,
    ) -> NodeEnergy:
        """The node's energy over the interval; what the server cannot cover is estimated.

        Args:
            node: The power server's base URL.
            start_s: Interval start, Unix seconds.
            end_s: Interval end, Unix seconds.
            estimate_w: The node's estimated power (e.g. P(k) / k from the job's profile).
            estimate_source: Label of that estimate, e.g. ``estimated:profile``.
            answer: The server's answer when already asked (shared between the jobs on
                one node); default: ask now.
        """
        interval_s = max(0.0, end_s - start_s)
        try:
            got = await (answer if answer is not None else self.energy(node, start_s, end_s))
        except PowerServerError as exc:
            return NodeEnergy(node, estimate_w * interval_s, 0.0, estimate_source, str(exc))
        gap_s = max(0.0, interval_s - got.covered_s)
        if gap_s <= 0:
            return NodeEnergy(node, got.energy_j, got.measured_j, got.source)
        gap_j = estimate_w * gap_s
        note = f"power server {node} covered {got.covered_s:.1f} of {interval_s:.1f} s"
        main = got.source if got.energy_j >= gap_j else estimate_source
        return NodeEnergy(node, got.energy_j + gap_j, got.measured_j, main, note)


def _parse_response(url: str, raw: bytes) -> tuple[int, Any]:
    """Status and JSON body of a complete HTTP/1.1 response.

    Raises:
        PowerServerError: If it is cut short, too large, chunked or not JSON.
    """
    if len(raw) > _MAX_RESPONSE_BYTES:
        raise PowerServerError(f"{url} answered more than {_MAX_RESPONSE_BYTES} bytes")
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if not sep or len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
        raise PowerServerError(f"{url} answered something other than HTTP")
    try:
        status = int(status_line[1])
    except ValueError:
        raise PowerServerError(f"{url} answered status {status_line[1][:10]!r}") from None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise PowerServerError(f"{url} answered chunked; a power server sends Content-Length")
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit() or len(body) < int(length):
            raise PowerServerError(f"{url} answered a cut-short body")
        body = body[: int(length)]
    try:
        return status, json.loads(body)
    except ValueError:
        raise PowerServerError(f"{url} answered HTTP {status} without a JSON body") from None
