"""Joint cluster planner speed and quality: 50 jobs × 72 hourly slots × up to 8 servers.

Run: ``.venv/bin/python benchmarks/bench_cluster.py [--instances N] [--time-limit S]``.

Each instance: 50 jobs drawn with a fixed seed — arrival in the first 48 h, length 2–12 h at
``m``, deadline 1.2–3× the length (cut at 72 h), ``m`` 1 or 2, ``M`` 2–8, Amdahl (0–20 % serial),
power-law or linear profiles at 60 W (CPU) or 210 W (GPU) per server — over 72 hours of a real
trace (DE 2022 from ../shared, or a synthetic day-night curve without it), under a capacity of
half the servers the independent plans would need at their peak (so it binds).

Prints, per instance and in total: the fast solver's time (best of 3; target ≤ 1 s), the exact
solver's time (HiGHS; it runs the fast solver first, as a floor) and their ratio, the gap in
emissions, and the baselines (carbon-agnostic first come first served, independent plans and
how far they exceed the capacity).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy

from _shared import shared_dir
from carbonscaler.planner.cluster import (
    ClusterJob,
    overcommit,
    plan_cluster,
    plan_cluster_agnostic,
    plan_cluster_independent,
)
from carbonscaler.planner.model import Job
from carbonscaler.profile import amdahl_profile, linear_profile, power_law_profile
from carbonscaler.trace import CarbonTrace, from_values, load_trace

N_JOBS = 50
HORIZON = 72
STARTS = ("2022-03-07T00:00Z", "2022-06-06T00:00Z", "2022-09-05T00:00Z", "2022-12-05T00:00Z")


def trace() -> CarbonTrace:
    path = shared_dir() / "traces" / "electricitymaps-fedstale" / "DE_2022_hourly.csv"
    if path.is_file():
        return load_trace(path)
    hours = np.arange(8760)
    rng = np.random.default_rng(0)
    values = 350 + 150 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 25, 8760)
    return from_values(np.clip(values, 20, None), zone="synthetic", start="2022-01-01T00:00Z")


def jobs(seed: int) -> list[ClusterJob]:
    rng = np.random.default_rng(seed)
    out = []
    for j in range(N_JOBS):
        top = int(rng.integers(2, 9))
        low = int(rng.integers(1, 3))
        watts = float(rng.choice([60.0, 210.0]))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            profile = amdahl_profile(top, float(rng.uniform(0, 0.2)), power_per_server_w=watts)
        elif shape == 1:
            profile = power_law_profile(top, float(rng.uniform(0.5, 1)), power_per_server_w=watts)
        else:
            profile = linear_profile(top, power_per_server_w=watts)
        arrival = int(rng.integers(0, 48))
        length = float(rng.uniform(2, 12))
        deadline = min(HORIZON, arrival + int(np.ceil(length * rng.uniform(1.2, 3))))
        length = min(length, 0.9 * (deadline - arrival))  # a job cut at the horizon still fits
        job = Job.from_length(profile, length, low, top)
        out.append(ClusterJob(f"job{j:02d}", job, arrival, deadline))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=len(STARTS), help="1 to 4")
    parser.add_argument("--time-limit", type=float, default=300.0, help="HiGHS seconds")
    args = parser.parse_args()
    print(
        f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    carbon_trace = trace()
    print(f"trace: {carbon_trace.source} ({carbon_trace.zone}, {len(carbon_trace)} hourly slots)")
    print(
        f"{N_JOBS} jobs × {HORIZON} slots, 1..8 servers each; capacity = half the independent "
        "plans' peak"
    )
    header = (
        f"{'start':<17} {'K':>3} {'fast s':>7} {'exact s':>8} {'ratio':>6} {'gap %':>7} "
        f"{'joint g':>9} {'agnostic g':>10} {'saved %':>7} {'indep. g':>9} {'over':>5}"
    )
    print(header)
    fast_times, exact_times, gaps = [], [], []
    for k, start in enumerate(STARTS[: max(1, min(args.instances, len(STARTS)))]):
        carbon = carbon_trace.window(start, HORIZON + 48)  # past the horizon for FIFO
        cluster = jobs(seed=k)
        alone = plan_cluster_independent(cluster, carbon, 10_000)
        capacity = int(alone.servers_used.max()) // 2
        runs = []
        for _ in range(3):
            begun = time.perf_counter()
            fast = plan_cluster(cluster, carbon, capacity)
            runs.append(time.perf_counter() - begun)
        begun = time.perf_counter()
        exact = plan_cluster(
            cluster, carbon, capacity, solver="exact", time_limit_s=args.time_limit
        )
        exact_s = time.perf_counter() - begun
        agnostic = plan_cluster_agnostic(cluster, carbon, capacity)
        independent = plan_cluster_independent(cluster, carbon, capacity)
        excess = overcommit(independent)
        gap = 100 * (fast.emissions_g / exact.emissions_g - 1)
        saved = 100 * (1 - fast.emissions_g / agnostic.emissions_g)
        fast_times.append(min(runs))
        exact_times.append(exact_s)
        gaps.append(gap)
        assert fast.deadlines_met == N_JOBS and np.all(fast.servers_used <= capacity)
        print(
            f"{start:<17} {capacity:>3} {min(runs):>7.3f} {exact_s:>8.2f} "
            f"{exact_s / min(runs):>6.0f} {gap:>7.3f} {fast.emissions_g:>9.0f} "
            f"{agnostic.emissions_g:>10.0f} {saved:>7.1f} {independent.emissions_g:>9.0f} "
            f"{excess.max_servers:>5}"
        )
        for note in exact.notes:
            print(f"  exact: {note}")
    print(
        f"fast solver: max {max(fast_times):.3f} s (target ≤ 1 s); exact/fast time ratio "
        f"{min(e / f for e, f in zip(exact_times, fast_times, strict=True)):.0f}–"
        f"{max(e / f for e, f in zip(exact_times, fast_times, strict=True)):.0f}×; "
        f"gap to exact: max {max(gaps):.3f} %, mean {float(np.mean(gaps)):.3f} %"
    )
    print(
        "columns: K capacity; ratio exact/fast time; gap fast over exact emissions; saved vs "
        "carbon-agnostic FIFO; over = independent plans' largest excess over K (servers)"
    )


if __name__ == "__main__":
    main()
