"""Power server latency and accounting overhead.

Run: ``.venv/bin/python benchmarks/bench_power_accounting.py [--seconds 60] [--jobs 100]``.

1. Power server latency: two power servers are started as separate processes with the
   real CLI (``carbonscaler power-server``; this machine has no RAPL, so they sample a
   labelled estimate once a second); this process is the client and times ``GET /`` and
   ``GET /v1/energy`` over loopback on a keep-alive connection. Target: p99 < 5 ms.
2. Accounting overhead: the accounting tracker (the same object the ``accounting`` service
   runs) accounts ``--jobs`` concurrent jobs, each on ``--nodes-per-job`` nodes of its own
   (distinct power-server URLs, so every node is one request per round, nothing shared),
   sampled every ``--interval`` seconds for ``--seconds`` of wall time, on a replayed
   carbon trace into a SQLite ledger (WAL, synchronous=FULL). The nodes are answered by one
   small stand-in server in another process (``/node-N/v1/energy``; the real power server
   cannot be started hundreds of times on one machine). The CPU time of this process over
   that period, divided by the wall time, is the cost in % of one core. Target: < 5 %.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from carbonscaler.accounting import (
    Ledger,
    ProviderIntensityFeed,
    TimeMap,
    TrackedJob,
    Tracker,
    TrackerConfig,
)
from carbonscaler.providers import ManualClock, TraceReplay
from carbonscaler.trace import from_values


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_power_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable, "-c", "from carbonscaler.cli import main; main()", "power-server",
        "--host", "127.0.0.1", "--port", str(port), "--no-gpu", "--estimate-watts", "60",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


NODES_SERVER = r"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real power server (uvicorn) does

    def log_message(self, *args):
        pass

    def do_GET(self):
        parts = urlsplit(self.path)
        q = parse_qs(parts.query)
        span = float(q["end"][0]) - float(q["start"][0])
        body = json.dumps({"energy_j": 60.0 * span, "measured_j": 60.0 * span,
                           "covered_s": span, "source": "measured:rapl"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 256  # the default 5 drops bursts of connects
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def start_nodes_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", NODES_SERVER, str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/node-0/v1/energy", params={"start": 0, "end": 1})
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("the stand-in node server did not start")


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the power server at {url} exited with {proc.returncode}")
        try:
            if httpx.get(url + "/v1/power", params={"window_s": 5}).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the power server at {url} did not start")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency(url: str, requests: int, pid: int) -> dict[str, tuple[float, float, float, float]]:
    """Client-side p50, p99, max (ms) and the server's CPU per request, per path.

    The client is the standard library's keep-alive ``http.client``: cheap enough that
    the figures are the server's answer time, not the client's own overhead.
    """
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    out: dict[str, tuple[float, float, float, float]] = {}
    for name, path in (("GET /", "/"), ("GET /v1/energy (60 s)", "/v1/energy")):
        times: list[float] = []
        server_cpu0 = 0.0
        for i in range(requests + 50):
            if i == 50:  # warm-up excluded
                server_cpu0 = cpu_s(pid)
            target = path
            if path == "/v1/energy":
                now = time.time()
                target += f"?start={now - 60!r}&end={now!r}"
            start = time.perf_counter()
            connection.request("GET", target)
            response = connection.getresponse()
            response.read()
            elapsed_ms = (time.perf_counter() - start) * 1e3
            if response.status != 200:
                raise SystemExit(f"{name} answered HTTP {response.status}")
            if i >= 50:
                times.append(elapsed_ms)
        server_ms = (cpu_s(pid) - server_cpu0) / requests * 1e3
        times.sort()
        out[name] = (
            statistics.median(times),
            times[int(0.99 * len(times)) - 1],
            times[-1],
            server_ms,
        )
    connection.close()
    return out


async def account(
    base: str, jobs: int, per_job: int, interval_s: float, seconds: float
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        start = datetime(2022, 1, 1, tzinfo=UTC)
        trace = from_values([100.0 + 10 * (i % 24) for i in range(24 * 30)], start="2022-01-01")
        replay = TraceReplay(trace, start=start, clock=ManualClock(start))
        # One wall second is one replay minute: intervals cross carbon slots now and then.
        feed = ProviderIntensityFeed(replay, time_map=TimeMap(time.time(), start, 60.0))
        ledger = Ledger(Path(tmp) / "acct.db")
        tracker = Tracker(ledger, feed, TrackerConfig(sample_interval_s=interval_s))
        for i in range(jobs):
            nodes = tuple(f"{base}/node-{i * per_job + n}" for n in range(per_job))
            tracker.register(TrackedJob(f"job-{i:03d}", nodes=nodes, watts_per_server=60.0))
        await asyncio.sleep(0.5)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await tracker.start()
        await asyncio.sleep(seconds)
        await tracker.stop()
        cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
        records = ledger.jobs()
        samples = sum(r.samples for r in records)
        measured = sum(r.measured_j for r in records) / max(1e-9, sum(r.energy_j for r in records))
        ledger.close()
    return {
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "rounds": float(tracker.rounds),
        "samples": float(samples),
        "measured_share": measured,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="accounting wall time")
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--nodes-per-job", type=int, default=2)
    parser.add_argument("--interval", type=float, default=5.0, help="sampling interval, s")
    parser.add_argument("--requests", type=int, default=2000, help="latency requests per path")
    args = parser.parse_args()

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    # Other work on the machine shows in the latency tail: report it with the figures.
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    servers = [start_power_server() for _ in range(2)]
    try:
        for proc, url in servers:
            wait_up(url, proc)
        time.sleep(2.0)  # a few readings in the history
        print("\npower server latency over loopback (client in this process, server in its own):")
        figures = latency(servers[0][1], args.requests, servers[0][0].pid)
        for name, (p50, p99, worst, server_ms) in figures.items():
            verdict = "OK" if p99 < 5.0 else "ABOVE TARGET"
            print(
                f"  {name:<24} p50 {p50:6.3f} ms   p99 {p99:6.3f} ms   max {worst:6.2f} ms"
                f"   server CPU {server_ms:5.3f} ms/request"
                f"   ({args.requests} requests; target p99 < 5 ms: {verdict})"
            )
        for proc, _ in servers:
            proc.send_signal(signal.SIGTERM)
        nodes_proc, base = start_nodes_server()
        servers.append((nodes_proc, base))
        print(
            f"\naccounting {args.jobs} concurrent jobs x {args.nodes_per_job} nodes each"
            f" ({args.jobs * args.nodes_per_job} power-server requests per round), sampled every"
            f" {args.interval:g} s for {args.seconds:g} s of wall time:"
        )
        got = asyncio.run(account(base, args.jobs, args.nodes_per_job, args.interval, args.seconds))
        pct = 100.0 * got["cpu_s"] / got["wall_s"]
        verdict = "OK" if pct < 5.0 else "ABOVE TARGET"
        print(
            f"  CPU {got['cpu_s']:.3f} s over {got['wall_s']:.1f} s wall = {pct:.2f} % of one core"
            f" (target < 5 %: {verdict})"
        )
        print(
            f"  {got['rounds']:.0f} rounds, {got['samples']:.0f} samples committed,"
            f" {got['samples'] / max(1.0, got['rounds']):.0f} per round;"
            f" CPU per job sample {1e3 * got['cpu_s'] / max(1.0, got['samples']):.2f} ms;"
            f" measured share {got['measured_share']:.2f}"
        )
    finally:
        for proc, _ in servers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in servers:
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
