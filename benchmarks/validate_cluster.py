"""CarbonAdvisor for shared clusters on real traces: the joint planner against per-job policies.

Run: ``.venv/bin/python benchmarks/validate_cluster.py [--days D] [--rate R] [--quick]``.

For each trace (Electricity Maps 2022 from ../shared: DE, NL, CA-ON, GB, FR), one stream of jobs
(the same for every trace, fixed seed): the first at hour 0 of 6 June 2022, then Poisson arrivals
at R per hour for D days; lengths 2–12 h at ``m = 1``, up to 8 servers; Amdahl 5 %, Amdahl 20 %
and linear profiles at 60 W per server; deadline 2× the length. Capacity: 1.5× the mean demand
at ``m``. Each policy runs online (:func:`carbonscaler.advisor.cluster.simulate_cluster`):
carbon-agnostic first come first served, suspend-resume and CarbonScaler per job (each job
planned alone, then queued), and the joint planner (all active jobs re-planned together on
every arrival, departure or drift), with perfect forecasts and then with a ±10 % uniform forecast
error, ±5 % profile error and 30 s per rescale. The offline oracle is the joint plan of the
whole stream made at hour 0 with every arrival known and a perfect forecast
(:func:`carbonscaler.planner.cluster.plan_cluster`).

Prints a markdown table per condition: savings against carbon-agnostic, deadline misses, the
online joint plan's gap to the oracle, and the time each took.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from _shared import shared_dir
from carbonscaler.advisor import Conditions, ForecastSpec
from carbonscaler.advisor.cluster import simulate_cluster
from carbonscaler.control.cluster_spec import generate_cluster_spec
from carbonscaler.planner.cluster import ClusterJob, plan_cluster
from carbonscaler.trace import load_trace

ZONES = ("DE", "NL", "CA-ON", "GB", "FR")
POLICIES = ("agnostic", "suspend-resume", "carbonscaler", "joint")
START = "2022-06-06T00:00Z"


def stream(days: float, rate: float, seed: int) -> list[ClusterJob]:
    spec = generate_cluster_spec(
        max(1, round(days * 24 * rate)),
        rate_per_h=rate,
        length_hours=(2, 12),
        slack=2.0,
        profiles=["amdahl:0.05", "amdahl:0.2", "linear"],
        min_servers=1,
        max_servers=8,
        seed=seed,
    )
    return spec.cluster_jobs()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=1.5, help="arrivals per hour")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="DE and NL, perfect world only")
    args = parser.parse_args()
    print(
        f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    jobs = stream(args.days, args.rate, args.seed)
    demand = sum(j.job.work / float(j.job.profile.throughput[1]) for j in jobs)
    span_h = max(j.deadline_slot for j in jobs)
    capacity = max(1, round(1.5 * demand / (args.days * 24)))
    print(
        f"stream: {len(jobs)} jobs over {args.days:g} days (seed {args.seed}), "
        f"{demand:.0f} server-hours at m, capacity {capacity} servers, {START} onwards"
    )
    worlds = {
        "perfect forecast, exact profiles, no overhead": Conditions(),
        "uniform ±10 % forecast, ±5 % profile error, 30 s per rescale": Conditions(
            forecast=ForecastSpec("uniform", 0.1, seed=1),
            profile_error=0.05,
            rescale_overhead_s=30.0,
        ),
    }
    zones = ZONES[:2] if args.quick else ZONES
    if args.quick:
        worlds = dict(list(worlds.items())[:1])
    folder = shared_dir() / "traces" / "electricitymaps-fedstale"
    for label, cond in worlds.items():
        print(f"\n### {label}\n")
        print(
            "| trace | "
            + " | ".join(f"{p} saved / misses" for p in POLICIES)
            + " | oracle saved | joint vs oracle | seconds (joint, oracle) |"
        )
        print("|---" * (len(POLICIES) + 4) + "|")
        for zone in zones:
            path = folder / f"{zone}_2022_hourly.csv"
            if not path.is_file():
                print(f"| {zone} | missing: {path} |")
                continue
            trace = load_trace(path)
            first = trace.index_of(START)
            carbon = trace.values[first : first + span_h + 24 * 7]
            outcomes = {}
            seconds = {}
            for policy in POLICIES:
                began = time.perf_counter()
                outcomes[policy] = simulate_cluster(jobs, carbon, capacity, policy, cond)
                seconds[policy] = time.perf_counter() - began
            began = time.perf_counter()
            oracle = plan_cluster(jobs, carbon, capacity)
            oracle_s = time.perf_counter() - began
            base = outcomes["agnostic"].emissions_g
            cells = [
                f"{100 * (1 - o.emissions_g / base):.1f} % / {o.deadline_misses}"
                for o in outcomes.values()
            ]
            joint = outcomes["joint"].emissions_g
            print(
                f"| {zone} | "
                + " | ".join(cells)
                + f" | {100 * (1 - oracle.emissions_g / base):.1f} %"
                + f" | +{100 * (joint / oracle.emissions_g - 1):.1f} %"
                + f" | {seconds['joint']:.1f}, {oracle_s:.1f} |"
            )


if __name__ == "__main__":
    main()
