"""Push fan-out with hanging subscribers: do the healthy ones still get every update?

Run: .venv/bin/python benchmarks/bench_push_fanout.py [--quick] [--subscribers 1000]
     [--updates 30] [--interval 1] [--hanging 0.1,0.5]

For each share of hanging subscribers (default 10 % and 50 % of 1,000), on 127.0.0.1 only
and in separate processes:

- the carbon service (uvicorn, a fresh database, an update every ``--interval`` seconds,
  the default push timeout of 5 s and back-off);
- the healthy subscribers: one asyncio HTTP/1.1 server answering 200 at once and recording,
  per subscriber path, the timestamp of every update and when it arrived;
- the hanging subscribers: one asyncio server that accepts connections, reads the requests
  and never answers (the subscriber is up but stuck).

After registering every subscriber the benchmark lets ``--updates`` updates go out and
reports, over the updates computed in that window: how many each healthy subscriber
received (all of them is the target), the lag of each arrival behind the first arrival of
the same update anywhere, and what the service made of the hanging subscribers (failures,
back-off, deactivation), with its superseded-update count and open sockets.

Bounded: at most ``--subscribers`` (<= 5,000) subscribers, ``--updates`` (<= 300) updates,
and every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

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


def slot(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


# -- one scenario --------------------------------------------------------------------------


def scenario(n: int, share: float, updates: int, interval_s: float, tmp: Path) -> dict[str, Any]:
    n_hanging = round(n * share)
    healthy_proc, healthy_port = start(healthy_subscribers)
    hanging_proc, hanging_port = start(hanging_subscribers)
    svc, port = start(serve, str(tmp / f"fanout-{share:g}.db"), interval_s)
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
            deadline = time.monotonic() + (updates + 2) * interval_s + 120
            while slot(client.get("/v1/intensity/current").json()["timestamp"]) <= window[-1]:
                if time.monotonic() > deadline:
                    raise RuntimeError("the service fell behind its update interval")
                time.sleep(0.2)
            time.sleep(5.0)  # pushes of the last window update still on their way land
            subs = client.get("/v1/subscriptions").json()
            metrics = client.get("/metrics").text
            sockets = open_sockets(svc.pid or 0)
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
    }


# -- the benchmark -------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 updates per scenario")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between updates")
    parser.add_argument("--hanging", default="0.1,0.5", help="shares of hanging subscribers")
    args = parser.parse_args()
    n = min(max(args.subscribers, 10), 5000)
    updates = min(max(15 if args.quick else args.updates, 3), 300)
    interval = min(max(args.interval, 0.1), 10.0)
    shares = [min(max(float(x), 0.0), 0.95) for x in args.hanging.split(",")]

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
    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    for share in shares:
        r = scenario(n, share, updates, interval, tmp)
        print(f"\n## {share:.0%} hanging ({r['n_hanging']} hanging, {r['n_healthy']} healthy)")
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
            f"hanging subscribers: median {r['hanging_failures']:g} failed pushes,"
            f" {r['hanging_inactive']} deactivated so far; last error {r['hanging_error']!r}"
        )
        print(
            f"service: {r['superseded']:.0f} updates superseded before delivery,"
            f" {r['sockets']} open sockets at the end"
        )


if __name__ == "__main__":
    main()
