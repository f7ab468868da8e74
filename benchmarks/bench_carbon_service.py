"""Carbon service benchmark on loopback: push fan-out, GET latency under load, memory.

Run: .venv/bin/python benchmarks/bench_carbon_service.py [--quick]

Three separate processes, so the figures are the service's own: the service (uvicorn), the
subscribers (one asyncio HTTP server accepting any path, standing in for 1,000 distinct
subscriber URLs), and the load generator (asyncio keep-alive connections, open loop).

1. Fan-out: 1,000 subscribers registered; ``POST /set_index`` triggers one update; time
   from the trigger to the 1,000th push received (and the service's own histogram).
2. Latency: ``GET /v1/intensity/current`` at a steady 200 req/s for 10 s; latency counts
   from each request's scheduled send time, so a stalled server cannot hide queueing.
   Measured once quiet and once while the service pushes to the 1,000 subscribers every
   second.
3. Memory: RSS of the service process over 10,000 updates (10 subscribers, 2 ms interval).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter, deque
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from _shared import shared_dir

SHARED_TRACE = shared_dir() / "traces" / "electricitymaps-fedstale" / "NL_2022_hourly.csv"
N_SUBSCRIBERS = 1000


# -- processes -----------------------------------------------------------------------------


def serve(ready: Any, db: str, interval_s: float) -> None:
    """The carbon service on a free port (run in a child process)."""
    import uvicorn

    from carbonscaler.providers import ManualClock, TraceReplay
    from carbonscaler.services import CarbonServiceConfig, create_app
    from carbonscaler.trace import from_values, load_trace

    if SHARED_TRACE.is_file():
        trace = load_trace(SHARED_TRACE)
    else:  # a synthetic daily cycle, for machines without ../shared
        hours = np.arange(8760)
        trace = from_values(300 + 100 * np.sin(hours / 24 * 2 * np.pi), zone="synthetic")
    config = CarbonServiceConfig(
        db_path=Path(db),
        provider=TraceReplay(trace, clock=ManualClock(trace.start.to_pydatetime())),
        update_interval_s=interval_s,
        push_timeout_s=5.0,
    )
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP; with proto 0, responses stall ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    ready.put(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning"))
    server.run(sockets=[sock])


def subscribers(ready: Any, count: Synchronized[int], last: Synchronized[float]) -> None:
    """One HTTP/1.1 server answering 200 to every POST, counting them (child process)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                with count.get_lock():
                    count.value += 1
                last.value = time.time()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=2048)
        ready.put(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def load(result: Any, port: int, path: str, rate_per_s: float, duration_s: float) -> None:
    """Open-loop GETs at a steady rate; puts (latencies in s, error kinds) (child process).

    Plain asyncio streams over keep-alive connections: httpx.AsyncClient's pool is itself
    slow under concurrency (encode/httpx#3215) and would measure the client, not the server.
    """
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()

    async def get(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> int:
        reader, writer = conn
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        return int(head[9:12])

    async def main() -> None:
        # FIFO, so every connection stays busy: one idle past uvicorn's keep-alive timeout
        # (5 s) would be closed by the server, as any HTTP client expects.
        idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = deque()
        for _ in range(8):
            conn = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(5):  # warm up
                await get(conn)
            idle.append(conn)
        latencies: list[float] = []
        errors: list[str] = []

        async def one(scheduled: float) -> None:
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            conn = idle.popleft() if idle else await asyncio.open_connection("127.0.0.1", port)
            try:
                if conn[0].at_eof():  # closed by the server while idle: reconnect
                    conn = await asyncio.open_connection("127.0.0.1", port)
                status = await asyncio.wait_for(get(conn), 5.0)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                errors.append(type(exc).__name__)
                conn[1].close()
                return
            idle.append(conn)
            if status == 200:
                latencies.append(time.perf_counter() - scheduled)
            else:
                errors.append(f"HTTP {status}")

        t0 = time.perf_counter() + 0.1
        n = int(rate_per_s * duration_s)
        await asyncio.gather(*(one(t0 + i / rate_per_s) for i in range(n)))
        result.put((latencies, errors))

    asyncio.run(main())


# -- helpers -------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start(target: Any, *args: Any) -> tuple[mp.process.BaseProcess, int]:
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    proc = ctx.Process(target=target, args=(ready, *args), daemon=True)
    proc.start()
    port = ready.get(timeout=60)
    return proc, port


def wait_healthy(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the service did not come up")


def metric(base: str, name: str) -> float:
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def latency_run(port: int, rate: float, duration_s: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    proc = ctx.Process(target=load, args=(result, port, "/v1/intensity/current", rate, duration_s))
    proc.start()
    latencies, errors = result.get(timeout=duration_s + 60)
    proc.join()
    ms = [x * 1000 for x in latencies]
    return {
        "n": len(ms),
        "errors": dict(Counter(errors)) or 0,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "rate": len(ms) / duration_s,
    }


# -- the benchmark -------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()

    print("# carbon service benchmark")
    print(f"command : {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine : {platform.platform()}, {platform.processor() or platform.machine()}")
    print(f"cpus    : {os.cpu_count()}  python {platform.python_version()}")
    print(f"trace   : {SHARED_TRACE.name if SHARED_TRACE.is_file() else 'synthetic'}")

    ctx = mp.get_context("spawn")
    count = ctx.Value("i", 0)
    last = ctx.Value("d", 0.0)
    subs_proc, subs_port = start(subscribers, count, last)
    tmp = Path(tempfile.mkdtemp(prefix="bench-carbon-"))

    # 1. fan-out --------------------------------------------------------------------------
    svc, port = start(serve, str(tmp / "fanout.db"), 3600.0)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base)
    with httpx.Client(base_url=base) as client:
        t = time.perf_counter()
        for i in range(N_SUBSCRIBERS):
            address = f"http://127.0.0.1:{subs_port}/subscriber/{i}"
            client.post("/v1/subscriptions", json={"app_name": f"s{i}", "address": address})
        registration_s = time.perf_counter() - t
        times, service_times = [], []
        for rep in range(3 if args.quick else 7):
            with count.get_lock():
                count.value = 0
            before = metric(base, "carbonscaler_push_fanout_seconds_sum")
            t0 = time.time()
            client.post("/set_index", data={"idx": str(rep + 1)})
            deadline = time.monotonic() + 30
            while count.value < N_SUBSCRIBERS and time.monotonic() < deadline:
                time.sleep(0.002)
            if count.value < N_SUBSCRIBERS:
                raise RuntimeError(f"only {count.value} pushes arrived")
            times.append(last.value - t0)
            time.sleep(0.2)  # let the service record the fan-out
            service_times.append(metric(base, "carbonscaler_push_fanout_seconds_sum") - before)
    print(f"\n## 1. one update pushed to {N_SUBSCRIBERS} subscribers (target < 2 s)")
    print(f"registration of {N_SUBSCRIBERS} subscribers: {registration_s:.2f} s")
    print(
        f"trigger -> last push received: median {statistics.median(times):.3f} s,"
        f" min {min(times):.3f} s, max {max(times):.3f} s ({len(times)} updates)"
    )
    print(f"service-side fan-out time    : median {statistics.median(service_times):.3f} s")

    # 2. latency --------------------------------------------------------------------------
    duration = 5.0 if args.quick else 10.0
    print("\n## 2. GET /v1/intensity/current at 200 req/s (target p99 < 10 ms)")
    quiet = latency_run(port, 200.0, duration)
    svc.terminate()
    svc.join()
    busy_svc, busy_port = start(serve, str(tmp / "fanout.db"), 1.0)
    busy_base = f"http://127.0.0.1:{busy_port}"
    wait_healthy(busy_base)
    busy = latency_run(busy_port, 200.0, duration)
    busy_svc.terminate()
    busy_svc.join()
    for label, r in (("quiet", quiet), (f"pushing to {N_SUBSCRIBERS} every 1 s", busy)):
        print(
            f"{label:30}: {r['n']} requests in {duration:g} s ({r['rate']:.0f}/s),"
            f" p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms,"
            f" errors {r['errors']}"
        )

    # 3. memory ---------------------------------------------------------------------------
    mem_svc, mem_port = start(serve, str(tmp / "memory.db"), 0.002)
    mem_base = f"http://127.0.0.1:{mem_port}"
    wait_healthy(mem_base)
    with httpx.Client(base_url=mem_base) as client:
        for i in range(10):
            address = f"http://127.0.0.1:{subs_port}/memory/{i}"
            client.post("/v1/subscriptions", json={"app_name": f"m{i}", "address": address})

        def updates() -> int:
            return int(client.get("/healthz").json()["updates"])

        while updates() < 500:  # warm up: caches, connection pools, first allocations
            time.sleep(0.1)
        first = updates()
        samples = [(first, rss_mib(mem_svc.pid or 0))]
        t = time.perf_counter()
        while samples[-1][0] < first + 10_000:
            time.sleep(1.0)
            samples.append((updates(), rss_mib(mem_svc.pid or 0)))
        elapsed = time.perf_counter() - t
    mem_svc.terminate()
    mem_svc.join()
    done = samples[-1][0] - first
    print("\n## 3. memory over 10,000 updates (10 subscribers, 2 ms interval)")
    print(f"{done} updates in {elapsed:.1f} s; RSS of the service process (MiB):")
    print(
        f"after warm-up {samples[0][1]:.1f}, after {done} updates {samples[-1][1]:.1f},"
        f" min {min(s[1] for s in samples):.1f}, max {max(s[1] for s in samples):.1f},"
        f" change {samples[-1][1] - samples[0][1]:+.1f}"
    )
    subs_proc.terminate()
    subs_proc.join()


if __name__ == "__main__":
    main()
