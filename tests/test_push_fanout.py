"""Slow, hanging and dead subscribers cost only themselves (issue 16, item 9); the push
client under them (httptools parsing, pooled asyncio connections) keeps connections alive,
times out, and connects only where the destination policy allows.

The carbon service runs for real (uvicorn on 127.0.0.1); healthy subscribers are real HTTP
servers, hanging ones accept connections and never answer. Every update steps the replay by
one hourly slot, so a subscriber that got every update has seen consecutive hours.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from _servers import ServiceThread
from carbonscaler.providers import ManualClock, TraceReplay
from carbonscaler.security.netguard import DestinationPolicy, DestinationRefused
from carbonscaler.services import CarbonServiceConfig, create_app
from carbonscaler.services._push import (
    PushClient,
    PushConnectionError,
    PushProtocolError,
    PushTimeout,
)
from carbonscaler.trace import from_values

pytestmark = pytest.mark.integration  # starts real servers

VALUES = [100.0 + i for i in range(400)]


def steps(seen: list[datetime]) -> set[timedelta]:
    return {b - a for a, b in pairwise(seen)}


class Hanging:
    """A subscriber host that accepts connections on 127.0.0.1 and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)  # held open, never read from or answered

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        for conn in self.connections:
            conn.close()


class Subscribers:
    """Many subscribers on one 127.0.0.1 port: an asyncio HTTP/1.1 server (keep-alive, a
    large backlog) recording every POST by path; ``/slow...`` answers after ``slow_s``."""

    def __init__(self, slow_s: float = 1.0) -> None:
        self.slow_s = slow_s
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self, ready: threading.Event) -> None:
        async def start() -> asyncio.Server:
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            return server

        self._server = self._loop.run_until_complete(start())
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = next(
                    int(line.split(":", 1)[1])
                    for line in lines
                    if line.lower().startswith("content-length:")
                )
                body = json.loads(await reader.readexactly(length))
                if path.startswith("/slow"):
                    await asyncio.sleep(self.slow_s)
                self.received[path].append(body)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return list(self.received.get(path, []))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def config(tmp_path: Path, **options: Any) -> CarbonServiceConfig:
    trace = from_values(VALUES, start="2022-01-01")
    defaults: dict[str, Any] = {
        "db_path": tmp_path / "reg.db",
        "provider": TraceReplay(trace, clock=ManualClock("2022-01-01")),
        "prediction_window": 4,
        "percentile_window": 4,
        "allowed_hosts": frozenset({"127.0.0.1"}),
    }
    return CarbonServiceConfig(**{**defaults, **options})


def hours(pushes: list[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")) for p in pushes]


def subscribe(base: str, name: str, address: str) -> dict[str, Any]:
    r = httpx.post(base + "/v1/subscriptions", json={"app_name": name, "address": address})
    assert r.status_code == 201, r.text
    answer: dict[str, Any] = r.json()
    return answer


def wait_until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_hanging_subscribers_do_not_starve_healthy_ones(tmp_path: Path) -> None:
    # 50 subscribers, 10 of them (20 %) hanging, and fewer send slots than hanging
    # subscribers: the old fan-out held a slot per push until the push timed out, so the
    # healthy subscribers queued behind the hanging ones and missed most updates.
    hanging, receiver = Hanging(), Subscribers()
    cfg = config(tmp_path, update_interval_s=0.5, push_timeout_s=60.0, push_concurrency=4)
    healthy = [f"/ok{i}" for i in range(50) if i % 5]
    wanted = 12
    try:
        with ServiceThread(create_app(cfg)) as svc:
            for i in range(50):
                if i % 5 == 0:
                    subscribe(svc.url, f"hang{i}", f"{hanging.url}/hang{i}")
                else:
                    subscribe(svc.url, f"ok{i}", receiver.url + f"/ok{i}")
            wait_until(
                lambda: all(len(receiver.bodies(p)) >= wanted for p in healthy),
                timeout_s=90,
                what=f"{wanted} updates at every healthy subscriber",
            )
            # The hanging ones hold their pushes open all along (a 60 s timeout).
            assert len(hanging.connections) >= 10
            for path in healthy:  # every update since it subscribed, in order
                seen = hours(receiver.bodies(path))
                assert steps(seen) == {timedelta(hours=1)}, (path, seen)
            subs = httpx.get(svc.url + "/v1/subscriptions").json()
            assert all(s["active"] and s["failures"] == 0 for s in subs)
    finally:
        hanging.close()
        receiver.close()


def test_failing_subscribers_back_off_and_are_deactivated(tmp_path: Path) -> None:
    hanging, receiver = Hanging(), Subscribers(slow_s=0.8)
    cfg = config(
        tmp_path,
        update_interval_s=0.2,
        push_timeout_s=1.5,
        push_backoff_s=0.1,
        push_max_backoff_s=0.4,
        max_failures=3,
    )
    try:
        with ServiceThread(create_app(cfg)) as svc:
            dead = subscribe(svc.url, "dead", "http://127.0.0.1:9/gone")
            hung = subscribe(svc.url, "hung", hanging.url + "/h")
            slow = subscribe(svc.url, "slow", receiver.url + "/slow")
            fast = subscribe(svc.url, "fast", receiver.url + "/fast")

            def state() -> dict[str, dict[str, Any]]:
                listing = httpx.get(svc.url + "/v1/subscriptions").json()
                return {s["app_name"]: s for s in listing}

            wait_until(
                lambda: not state()["dead"]["active"] and not state()["hung"]["active"],
                timeout_s=30,
                what="the dead and the hanging subscriber to be deactivated",
            )
            subs = state()
            assert subs["dead"]["failures"] >= 3 and subs["dead"]["last_error"]
            assert subs["hung"]["last_error"] == "timed out after 1.5 s"
            # A slow subscriber (0.8 s per answer, an update every 0.2 s) is not failing: it
            # gets the newest value each time, not a queue of old ones.
            wait_until(lambda: len(receiver.bodies("/slow")) >= 3, 30, "3 pushes to /slow")
            seen = hours(receiver.bodies("/slow"))
            assert min(steps(seen)) > timedelta(hours=1), seen
            assert subs["slow"]["active"] and subs["fast"]["active"]
            fast_seen = hours(receiver.bodies("/fast"))
            assert {b - a for a, b in pairwise(fast_seen)} == {timedelta(hours=1)}
            metrics = httpx.get(svc.url + "/metrics").text
            superseded = next(
                line for line in metrics.splitlines() if line.startswith("carbonscaler_push_su")
            )
            assert float(superseded.split()[-1]) > 0, superseded
        # Deactivation is persisted: a restarted service still lists them inactive and
        # pushes nothing to them.
        with ServiceThread(create_app(config(tmp_path, update_interval_s=3600))) as svc:
            listing = {s["app_name"]: s for s in httpx.get(svc.url + "/v1/subscriptions").json()}
            assert not listing["dead"]["active"] and not listing["hung"]["active"]
            # Registering again revives one, with its failures cleared.
            again = subscribe(svc.url, "dead", "http://127.0.0.1:9/gone")
            assert again["id"] == dead["id"] and again["active"] and again["failures"] == 0
        assert {hung["id"], slow["id"], fast["id"]} == {2, 3, 4}
    finally:
        hanging.close()
        receiver.close()


# -- the push client (httptools parses, one pool of connections for every subscriber) --------


class Origin:
    """An asyncio HTTP/1.1 server on 127.0.0.1 for one test's event loop: answers each POST
    with 200 after ``delay_s`` (or with the raw bytes ``answers`` has for its path), records
    bodies, paths and ``Host`` headers, counts connections made and closed by the client; a
    request for ``/drop`` (or the second request of a connection when ``drop_second``) is
    read and the connection closed without an answer; ``/hang`` is never answered."""

    def __init__(
        self,
        delay_s: float = 0.0,
        drop_second: bool = False,
        tls: ssl.SSLContext | None = None,
        answers: dict[str, bytes] | None = None,
    ) -> None:
        self.delay_s, self.drop_second, self.tls = delay_s, drop_second, tls
        self.answers = answers or {}
        self.accepted = 0
        self.ended = 0
        self.bodies: list[bytes] = []
        self.hosts: list[str] = []
        self.paths: list[str] = []

    async def __aenter__(self) -> Origin:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http{'s' if self.tls else ''}://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        served = 0
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                fields = dict(
                    line.lower().split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line
                )
                self.bodies.append(await reader.readexactly(int(fields["content-length"])))
                self.hosts.append(fields["host"])
                path = head.split(" ")[1]
                self.paths.append(path)
                if path == "/hang":
                    await asyncio.sleep(3600)
                if path == "/drop" or (self.drop_second and served == 1):
                    writer.close()
                    return
                await asyncio.sleep(self.delay_s)
                writer.write(
                    self.answers.get(path, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                )
                await writer.drain()
                served += 1
        except asyncio.IncompleteReadError as exc:
            self.ended += not exc.partial  # the client closed the connection between requests
            writer.close()
        except ConnectionError:
            writer.close()


def test_push_client_keeps_connections_alive_and_resends_on_a_stale_one() -> None:
    async def main() -> None:
        async with Origin(drop_second=True) as origin:
            client = PushClient()
            assert await client.post(origin.url + "/a", b"1") == 200
            # The subscriber closes the kept-alive connection as the second push arrives:
            # the push goes again, once, on a new connection (and says it was sent once).
            sent: list[int] = []
            assert await client.post(origin.url + "/b", b"2", on_sent=lambda: sent.append(1)) == 200
            assert origin.accepted == 2 and origin.bodies == [b"1", b"2", b"2"]
            assert sent == [1]
            await client.aclose()
            # On a new connection the same failure is the subscriber's answer: not resent.
            fresh = PushClient()
            with pytest.raises(PushProtocolError, match=r"no valid HTTP/1\.x response"):
                await fresh.post(origin.url + "/drop", b"3")
            assert origin.accepted == 3 and origin.bodies == [b"1", b"2", b"2", b"3"]
            await fresh.aclose()

    asyncio.run(main())


def test_push_client_timeouts_are_explicit_and_per_request() -> None:
    async def main() -> None:
        async with Origin() as origin:
            client = PushClient(timeout_s=30.0)
            sent: list[float] = []
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(PushTimeout) as caught:
                await client.post(
                    origin.url + "/hang", b"{}", timeout_s=0.2, on_sent=lambda: sent.append(1)
                )
            assert isinstance(caught.value, TimeoutError)  # what the deliveries catch
            assert loop.time() - started < 5.0
            assert sent == [1]  # the request was written before the wait for the answer
            # The client's defaults: a timeout for every request, bounded connections.
            assert client.timeout_s == 30.0 and client.keepalive_s == 60.0
            assert client.max_connections == 8
            with pytest.raises(ValueError, match="positive"):
                PushClient(timeout_s=0)
            await client.aclose()

    asyncio.run(main())


def test_push_client_calls_on_sent_once_before_the_answer_and_respects_its_limit() -> None:
    async def main() -> None:
        async with Origin(delay_s=0.3) as origin:
            client = PushClient(max_connections=1)
            loop = asyncio.get_running_loop()
            sent_at: list[float] = []
            assert await client.post(origin.url, b"{}", on_sent=lambda: sent_at.append(loop.time()))
            assert len(sent_at) == 1 and loop.time() - sent_at[0] >= 0.25
            # Two pushes at once over a limit of one connection: one after the other.
            statuses = await asyncio.gather(
                client.post(origin.url, b"a"), client.post(origin.url, b"b")
            )
            assert list(statuses) == [200, 200] and origin.accepted == 1
            await client.aclose()

    asyncio.run(main())


def test_push_client_connects_only_to_checked_addresses_keeping_the_name() -> None:
    answers = {"subscriber.test": ["127.0.0.1"], "evil.test": ["127.0.0.1", "169.254.169.254"]}

    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError(f"{host} does not resolve")
        return answers[host]

    async def main() -> None:
        async with Origin() as origin:
            policy = DestinationPolicy(resolver=resolve, what="subscriber address")
            client = PushClient(policy=policy)
            assert await client.post(f"http://subscriber.test:{origin.port}/s", b"{}") == 200
            assert origin.hosts == [f"subscriber.test:{origin.port}"]  # the name, not the IP
            with pytest.raises(DestinationRefused, match=r"169\.254\.169\.254"):
                await client.post(f"http://evil.test:{origin.port}/e", b"{}")
            with pytest.raises(OSError, match="does not resolve"):
                await client.post(f"http://nowhere.test:{origin.port}/n", b"{}")
            with pytest.raises(DestinationRefused):
                await client.post(f"http://169.254.169.254:{origin.port}/", b"{}")
            with pytest.raises(ValueError, match="not an http"):
                await client.post("ftp://subscriber.test/", b"{}")
            assert origin.accepted == 1  # nothing refused was ever connected to
            await client.aclose()

    asyncio.run(main())


def test_push_client_speaks_tls_to_the_checked_address_verifying_the_name(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subject = ["-subj", "/CN=subscriber.test", "-addext", "subjectAltName=DNS:subscriber.test"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run([*make, *files, *subject], check=True, capture_output=True)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]  # both names: the certificate tells them apart

    async def main() -> None:
        async with Origin(tls=server_tls) as origin:
            client = PushClient(
                policy=DestinationPolicy(resolver=resolve),
                tls=ssl.create_default_context(cafile=str(cert)),
            )
            url = f"https://subscriber.test:{origin.port}/s"
            assert await client.post(url, b"{}") == 200
            assert await client.post(url, b"{}") == 200
            assert origin.accepted == 1 and origin.hosts[0] == f"subscriber.test:{origin.port}"
            with pytest.raises(PushConnectionError, match=r"certificate|hostname"):
                await client.post(f"https://other.test:{origin.port}/o", b"{}")
            await client.aclose()

    asyncio.run(main())


def test_push_client_reuses_a_connection_only_after_a_clean_answer() -> None:
    # httptools parses every answer; a connection carries the next push only if its answer
    # ended cleanly where HTTP/1.1 says it ends.
    answers = {
        "/interim": b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        "/empty": b"HTTP/1.1 204 No Content\r\n\r\n",
        "/huge": b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\nnot all of it",
        "/twice": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 2,
        "/old": b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        "/conflict": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    }

    async def main() -> None:
        async with Origin(answers=answers) as origin:
            client = PushClient()
            assert await client.post(origin.url + "/interim", b"{}") == 201
            assert await client.post(origin.url + "/empty", b"{}") == 204
            assert origin.accepted == 1  # both on one connection
            # A body too long to read is not waited for; its connection is not reused. Nor
            # is one that answered twice, or an HTTP/1.0 one without keep-alive.
            for path, connections in (("/huge", 2), ("/twice", 3), ("/old", 4)):
                assert await client.post(origin.url + path, b"{}") == 200
                assert await client.post(origin.url + "/ok", b"{}") == 200
                assert origin.accepted == connections, path
            with pytest.raises(PushProtocolError, match="Duplicate Content-Length"):
                await client.post(origin.url + "/conflict", b"{}")
            await client.aclose()

    asyncio.run(main())


def test_push_client_closes_idle_connections_and_keeps_requests_well_formed() -> None:
    async def main() -> None:
        async with Origin() as origin:
            client = PushClient(keepalive_s=0.2, user_agent="carbonscaler-test")
            assert await client.post(origin.url + "/a b/é?q=1 2", b"{}") == 200
            assert origin.paths == ["/a%20b/%C3%A9?q=1+2"]  # percent-encoded by yarl
            await asyncio.sleep(0.8)  # idle longer than keepalive_s: closed by the client
            assert origin.ended == 1
            assert await client.post(origin.url + "/b", b"{}") == 200
            assert origin.accepted == 2
            with pytest.raises(ValueError, match="control characters"):
                await client.post(origin.url, b"{}", "text/plain\r\nX-Evil: 1")
            with pytest.raises(ValueError, match="control characters"):
                PushClient(user_agent="a\nb")
            await client.aclose()

    asyncio.run(main())


def test_push_client_resolves_a_name_once_for_many_connections() -> None:
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        await asyncio.sleep(0.05)
        return ["127.0.0.1"]

    async def main() -> None:
        async with Origin(delay_s=0.1) as origin:
            client = PushClient(max_connections=None, policy=DestinationPolicy(resolver=resolve))
            url = f"http://subscriber.test:{origin.port}/s"
            statuses = await asyncio.gather(*(client.post(url, b"{}") for _ in range(10)))
            assert statuses == [200] * 10 and origin.accepted == 10
            # One resolution, its checked addresses reused by every new connection meanwhile.
            assert calls == ["subscriber.test"]
            await client.aclose()

    asyncio.run(main())


def test_push_client_runs_on_uvloop() -> None:
    # uvloop's transports are not asyncio.Transport instances; the client only needs their
    # methods (uvicorn[standard] runs services on uvloop).
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        async with Origin() as origin:
            client = PushClient()
            assert await client.post(origin.url + "/a", b"1") == 200
            assert await client.post(origin.url + "/b", b"2") == 200
            assert origin.accepted == 1
            with pytest.raises(PushTimeout):
                await client.post(origin.url + "/hang", b"3", timeout_s=0.2)
            await client.aclose()

    uvloop.run(main())
