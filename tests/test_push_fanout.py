"""Slow, hanging and dead subscribers cost only themselves (issue 16, item 9).

The carbon service runs for real (uvicorn on 127.0.0.1); healthy subscribers are real HTTP
servers, hanging ones accept connections and never answer. Every update steps the replay by
one hourly slot, so a subscriber that got every update has seen consecutive hours.
"""

from __future__ import annotations

import asyncio
import json
import socket
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
from carbonscaler.services import CarbonServiceConfig, create_app
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
