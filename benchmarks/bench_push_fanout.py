"""Push fan-out with hanging subscribers: do the healthy ones still get every update?

Run: .venv/bin/python benchmarks/bench_push_fanout.py [--quick] [--subscribers 1000]
     [--updates 30] [--interval 1] [--hanging 0.1,0.5] [--clients current,hand-written]
     [--rounds 1]

For each share of hanging subscribers (default 10 % and 50 % of 1,000) and each push client
(``--clients``, in turn, ``--rounds`` times, each round starting with the next client, so
they are measured side by side under the same load), on 127.0.0.1 only and in separate
processes:

- the carbon service (uvicorn, a fresh database, an update every ``--interval`` seconds,
  the default push timeout of 5 s and back-off);
- the healthy subscribers: one asyncio HTTP/1.1 server answering 200 at once and recording,
  per subscriber path, the timestamp of every update and when it arrived;
- the hanging subscribers: one asyncio server that accepts connections, reads the requests
  and never answers (the subscriber is up but stuck).

After registering every subscriber the benchmark lets ``--updates`` updates go out and
reports, over the updates computed in that window: how many each healthy subscriber
received (all of them is the target), the lag of each arrival behind the first arrival of
the same update anywhere, the CPU time per push of the service's delivery thread (and of
the whole service process), and what the service made of the hanging subscribers (failures,
back-off, deactivation), with its superseded-update count and open sockets.

The push clients: ``current`` is the service's own (``carbonscaler.services._push``);
``hand-written`` is the yardstick, the hand-written HTTP/1.1 client the service used before
issue #15 (commit 04675ef), kept below only to be measured against; ``module:Class`` is any
other class with the same constructor and ``post``/``aclose`` (importable in the service
process, e.g. with PYTHONPATH). Each is put in place of ``_delivery.PushClient`` in the
service process; everything else is the same code.

Bounded: at most ``--subscribers`` (<= 5,000) subscribers, ``--updates`` (<= 300) updates,
and every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

# The carbon service in a child process, started and awaited as the service benchmark does.
from bench_carbon_service import serve, start, wait_healthy

# -- processes -----------------------------------------------------------------------------


def healthy_subscribers(ready: Any) -> None:
    """Answers every POST with 200 at once, recording (timestamp, arrival) per path;
    ``GET /stats`` returns the record (child process)."""
    seen: dict[str, list[tuple[str, float]]] = defaultdict(list)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method, path = lines[0].split(b" ")[:2]
                length = 0
                for line in lines:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                if method == b"GET":
                    payload = json.dumps(seen).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        + f"content-length: {len(payload)}\r\n\r\n".encode()
                        + payload
                    )
                else:
                    arrived = time.time()
                    seen[path.decode()].append((json.loads(body)["timestamp"], arrived))
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
        ready.put(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def hanging_subscribers(ready: Any) -> None:
    """Accepts connections and reads requests, never answers (child process)."""
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
        ready.put(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- the yardstick: the hand-written client the service had before issue #15 ---------------
#
# The push client of commit 04675ef (src/carbonscaler/services/_push.py), reconstructed here
# only to be measured against; it is not used by the service. It writes the request by hand
# and parses the answer by hand (status line, headers, Content-Length, chunked bodies) over
# asyncio streams, with keep-alive connections pooled per origin (4,096 idle at most, as the
# delivery of that commit asked for). It has no timeouts of its own: the delivery bounds
# every push. The constructor takes (and ignores) what today's delivery passes.


class HandWrittenPushClient:
    """YARDSTICK ONLY: the hand-written HTTP/1.1 push client of commit 04675ef."""

    def __init__(
        self, *, policy: Any = None, max_idle_per_origin: int = 4096, **_ignored: Any
    ) -> None:
        from carbonscaler.security.netguard import DestinationPolicy

        self.max_idle_per_origin = max_idle_per_origin
        self.policy = policy if policy is not None else DestinationPolicy()
        self._idle: dict[tuple[str, str, int], list[Any]] = {}
        self._tls: Any = None

    async def post(
        self,
        url: str,
        body: bytes,
        content_type: str = "application/json",
        *,
        on_sent: Callable[[], None] | None = None,
        **_ignored: Any,
    ) -> int:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"User-Agent: carbonscaler\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("ascii")
        idle = self._idle.get(origin, [])
        while idle:
            connection = idle.pop()
            if connection[1].is_closing() or connection[0].at_eof():
                continue
            try:
                return await self._exchange(origin, connection, head + body, on_sent)
            except (asyncio.IncompleteReadError, ConnectionError):
                continue
        return await self._exchange(origin, await self._connect(origin), head + body, on_sent)

    async def _connect(self, origin: tuple[str, str, int]) -> Any:
        scheme, host, port = origin
        address = (await self.policy.resolve(host, port))[0]
        if scheme == "https":
            import ssl

            if self._tls is None:
                self._tls = ssl.create_default_context()
            return await asyncio.open_connection(
                address, port, ssl=self._tls, server_hostname=host, limit=64 * 1024
            )
        return await asyncio.open_connection(address, port, limit=64 * 1024)

    async def _exchange(
        self, origin: tuple[str, str, int], connection: Any, request: bytes, on_sent: Any
    ) -> int:
        reader, writer = connection
        try:
            writer.write(request)
            await writer.drain()
            if on_sent is not None:
                on_sent()
            status, reusable = await self._read_response(reader)
        except BaseException:
            writer.close()
            raise
        pool = self._idle.setdefault(origin, [])
        if reusable and len(pool) < self.max_idle_per_origin:
            pool.append(connection)
        else:
            writer.close()
        return status

    @staticmethod
    async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise ValueError(f"not an HTTP/1.x response: {lines[0][:60]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip().lower()
        keep_alive = version == "HTTP/1.1" and headers.get("connection") != "close"
        if status in (204, 304) or 100 <= status < 200:
            return status, keep_alive
        if "chunked" in headers.get("transfer-encoding", ""):
            while True:  # chunks, dropped
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    return status, keep_alive
                await reader.readexactly(size + 2)
        length = headers.get("content-length")
        if length is None or not length.isdigit() or int(length) > 1024 * 1024:
            return status, False
        await reader.readexactly(int(length))
        return status, keep_alive

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for _, writer in pool:
                writer.close()
        self._idle.clear()


def push_client(name: str) -> Any:
    """The push client class a ``--clients`` entry names."""
    if name == "current":
        from carbonscaler.services._push import PushClient

        return PushClient
    if name == "hand-written":
        return HandWrittenPushClient
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute or "PushClient")


def service(ready: Any, db: str, interval_s: float, client: str, tid_file: str) -> None:
    """The carbon service with the push client ``client`` (child process); writes the
    native id of its delivery thread to ``tid_file`` once that thread runs."""
    import carbonscaler.services._delivery as delivery

    delivery.PushClient = push_client(client)  # type: ignore[misc]

    def report_thread() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            for thread in threading.enumerate():
                if thread.name == "carbon-pushes" and thread.native_id is not None:
                    Path(tid_file).write_text(str(thread.native_id))
                    return
            time.sleep(0.1)

    threading.Thread(target=report_thread, daemon=True).start()
    serve(ready, db, interval_s)


def stop(*procs: mp.process.BaseProcess) -> None:
    for proc in procs:
        proc.terminate()
        proc.join(timeout=10)


# -- helpers -------------------------------------------------------------------------------


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def open_sockets(pid: int) -> int:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return -1
    count = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("socket:")
    return count


_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int, tid: int | None = None) -> float:
    """CPU time (user + system) of a process, or of one of its threads."""
    stat = Path(f"/proc/{pid}" + (f"/task/{tid}" if tid else "") + "/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def slot(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


# -- one scenario --------------------------------------------------------------------------


def scenario(
    n: int, share: float, updates: int, interval_s: float, client: str, tmp: Path
) -> dict[str, Any]:
    n_hanging = round(n * share)
    healthy_proc, healthy_port = start(healthy_subscribers)
    hanging_proc, hanging_port = start(hanging_subscribers)
    run = tempfile.mkdtemp(prefix="run-", dir=tmp)
    tid_file = Path(run) / "push-thread"
    svc, port = start(service, f"{run}/fanout.db", interval_s, client, str(tid_file))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base)
        # Spread the hanging ones through the registration order (every k-th).
        hanging_ids = (
            set(np.linspace(0, n - 1, n_hanging, dtype=int).tolist()) if n_hanging else set()
        )
        with httpx.Client(base_url=base, timeout=30) as client:
            t = time.perf_counter()
            for i in range(n):
                if i in hanging_ids:
                    address = f"http://127.0.0.1:{hanging_port}/hang/{i}"
                else:
                    address = f"http://127.0.0.1:{healthy_port}/ok/{i}"
                r = client.post("/v1/subscriptions", json={"app_name": f"s{i}", "address": address})
                r.raise_for_status()
            registration_s = time.perf_counter() - t
            # The window: the next `updates` updates (one hourly slot each) from now.
            now = slot(client.get("/v1/intensity/current").json()["timestamp"])
            window = [now + timedelta(hours=k) for k in range(1, updates + 1)]
            tid = int(tid_file.read_text()) if tid_file.is_file() else None
            pid = svc.pid or 0
            cpu_before = cpu_s(pid, tid), cpu_s(pid)
            sent_before = metric(client.get("/metrics").text, "carbonscaler_pushes_sent_total")
            deadline = time.monotonic() + (updates + 2) * interval_s + 120
            while slot(client.get("/v1/intensity/current").json()["timestamp"]) <= window[-1]:
                if time.monotonic() > deadline:
                    raise RuntimeError("the service fell behind its update interval")
                time.sleep(0.2)
            time.sleep(5.0)  # pushes of the last window update still on their way land
            subs = client.get("/v1/subscriptions").json()
            cpu_after = cpu_s(pid, tid), cpu_s(pid)
            metrics = client.get("/metrics").text
            sockets = open_sockets(pid)
            pushes = metric(metrics, "carbonscaler_pushes_sent_total") - sent_before
        with httpx.Client(base_url=f"http://127.0.0.1:{healthy_port}", timeout=60) as stats:
            seen: dict[str, list[list[Any]]] = stats.get("/stats").json()
    finally:
        stop(svc, healthy_proc, hanging_proc)

    arrivals = [(path, slot(stamp), at) for path, got in seen.items() for stamp, at in got]
    index = {t: k for k, t in enumerate(window)}
    # Lag behind the schedule: update k is due at t0 + k * interval, t0 taken from the
    # earliest arrival of any update (so the fastest delivery has lag 0).
    t0 = min((at - index[t] * interval_s for _, t, at in arrivals if t in index), default=0.0)
    healthy_paths = [f"/ok/{i}" for i in range(n) if i not in hanging_ids]
    received: dict[str, set[datetime]] = defaultdict(set)
    for path, t, _ in arrivals:
        received[path].add(t)
    got = [len(received[p] & set(window)) for p in healthy_paths]
    lags = [at - (t0 + index[t] * interval_s) for _, t, at in arrivals if t in index]
    hanging_subs = [s for s in subs if int(s["app_name"][1:]) in hanging_ids]
    return {
        "n_hanging": n_hanging,
        "n_healthy": len(healthy_paths),
        "registration_s": registration_s,
        "window": len(window),
        "got_min": min(got) if got else 0,
        "got_median": statistics.median(got) if got else 0,
        "all_updates": sum(g == len(window) for g in got),
        "lag_p50_ms": 1000 * pct(lags, 50),
        "lag_p99_ms": 1000 * pct(lags, 99),
        "lag_max_ms": 1000 * max(lags, default=float("nan")),
        "hanging_inactive": sum(not s["active"] for s in hanging_subs),
        "hanging_failures": statistics.median([s["failures"] for s in hanging_subs])
        if hanging_subs
        else 0,
        "hanging_error": next((s["last_error"] for s in hanging_subs if s["last_error"]), None),
        "healthy_failing": sum(
            1 for s in subs if int(s["app_name"][1:]) not in hanging_ids and s["failures"]
        ),
        "superseded": metric(metrics, "carbonscaler_push_superseded_total"),
        "sockets": sockets,
        "pushes": pushes,
        "thread_cpu_ms": 1000 * (cpu_after[0] - cpu_before[0]) / pushes if tid else float("nan"),
        "process_cpu_ms": 1000 * (cpu_after[1] - cpu_before[1]) / pushes,
    }


# -- the benchmark -------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 updates per scenario")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between updates")
    parser.add_argument("--hanging", default="0.1,0.5", help="shares of hanging subscribers")
    parser.add_argument(
        "--clients",
        default="current,hand-written",
        help="push clients, measured in turn: current, hand-written (the yardstick), module:Class",
    )
    parser.add_argument("--rounds", type=int, default=1, help="times each client is measured")
    args = parser.parse_args()
    n = min(max(args.subscribers, 10), 5000)
    updates = min(max(15 if args.quick else args.updates, 3), 300)
    interval = min(max(args.interval, 0.1), 10.0)
    shares = [min(max(float(x), 0.0), 0.95) for x in args.hanging.split(",")]
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    rounds = min(max(args.rounds, 1), 10)
    for name in clients:
        push_client(name)  # fails here, not in the service, if it does not import

    import carbonscaler

    print("# push fan-out with hanging subscribers")
    print(f"command : {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine : {platform.platform()}, {platform.processor() or platform.machine()}")
    print(f"cpus    : {os.cpu_count()}  python {platform.python_version()}")
    print(f"code    : {Path(carbonscaler.__file__).parent}")
    print(
        f"setup   : {n} subscribers on 127.0.0.1, an update every {interval:g} s,"
        f" {updates} updates measured, push timeout 5 s"
    )
    print(
        f"clients : {', '.join(clients)}; {rounds} round(s), the clients in turn in each"
        " (each round starts with the next one)"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    for share in shares:
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in clients}
        for k in range(rounds):
            for name in clients[k % len(clients) :] + clients[: k % len(clients)]:
                r = scenario(n, share, updates, interval, name, tmp)
                results[name].append(r)
                print(
                    f"\n## {share:.0%} hanging ({r['n_hanging']} hanging,"
                    f" {r['n_healthy']} healthy), client {name}, round {k + 1}"
                )
                report(r)
        print(f"\n## {share:.0%} hanging: ranges over {rounds} round(s)")
        print(
            "| client | lag p50 | lag p99 | lag max | CPU per push, delivery thread"
            " | CPU per push, service | healthy with every update | sockets |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, runs in results.items():
            print(
                f"| {name} | {span(runs, 'lag_p50_ms')} ms | {span(runs, 'lag_p99_ms')} ms"
                f" | {span(runs, 'lag_max_ms')} ms | {span(runs, 'thread_cpu_ms', '.3f')} ms"
                f" | {span(runs, 'process_cpu_ms', '.3f')} ms"
                f" | {span(runs, 'all_updates')} of {runs[0]['n_healthy']}"
                f" | {span(runs, 'sockets')} |"
            )


def span(runs: list[dict[str, Any]], key: str, fmt: str = ".0f") -> str:
    """The range of ``key`` over ``runs``: ``low–high``, or one value if they agree."""
    low, high = (
        f"{value:{fmt}}" for value in (min(r[key] for r in runs), max(r[key] for r in runs))
    )
    return low if low == high else f"{low}–{high}"


def report(r: dict[str, Any]) -> None:
    print(f"registration: {r['registration_s']:.1f} s")
    print(
        f"healthy subscribers: updates received of {r['window']}: min {r['got_min']},"
        f" median {r['got_median']:g}; {r['all_updates']} of {r['n_healthy']} got every one;"
        f" {r['healthy_failing']} with failures"
    )
    print(
        f"lag behind the update schedule: p50 {r['lag_p50_ms']:.1f} ms,"
        f" p99 {r['lag_p99_ms']:.1f} ms, max {r['lag_max_ms']:.1f} ms"
    )
    print(
        f"CPU per push: {r['thread_cpu_ms']:.3f} ms in the delivery thread,"
        f" {r['process_cpu_ms']:.3f} ms in the service ({r['pushes']:.0f} pushes)"
    )
    print(
        f"hanging subscribers: median {r['hanging_failures']:g} failed pushes,"
        f" {r['hanging_inactive']} deactivated so far; last error {r['hanging_error']!r}"
    )
    print(
        f"service: {r['superseded']:.0f} updates superseded before delivery,"
        f" {r['sockets']} open sockets at the end"
    )


if __name__ == "__main__":
    main()
