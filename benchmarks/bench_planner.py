"""Planner speed: the greedy at the reference's sizes, and the exact MILP at 168 × 8.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_planner.py [--repeat 30]``.

Prints, per size, the median in-process planning time, the ratio to the reference Go greedy's
time on this machine class (from the issue), and the ratio to a plain ``numpy.sort`` of the same
number of values measured in the same run — the floor of any sort-based greedy.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from _shared import shared_dir
from carbonscaler.planner import Job, plan
from carbonscaler.profile import amdahl_profile

# (slots, max servers) -> the reference Go greedy's time in ms (issue #2).
REFERENCE_GO_MS = {
    (36, 8): 0.1,
    (168, 8): 0.5,
    (720, 16): 10.0,
    (2160, 32): 240.0,
    (8760, 64): 6000.0,
}
SHARED_TRACE = shared_dir() / "traces" / "electricitymaps-fedstale" / "NL_2022_hourly.csv"


def carbon_values() -> tuple[np.ndarray, str]:
    """A year of real hourly intensity if ../shared is present, else a seeded synthetic one."""
    if SHARED_TRACE.is_file():
        from carbonscaler.trace import load_trace

        return load_trace(SHARED_TRACE).values, f"{SHARED_TRACE.name} (direct)"
    rng = np.random.default_rng(0)
    hours = np.arange(8760)
    synthetic = 300 + 120 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 30, 8760)
    return np.clip(synthetic, 5, None), "synthetic diurnal (../shared not found)"


def median_ms(func: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    carbon, source = carbon_values()
    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"carbon: {source}; profile: Amdahl 5 % serial, 60 W/server; job length = slots/3 h "
        "at 1 server; deadline = all slots"
    )
    print()
    header = (
        f"{'slots x M':>12} {'greedy ms':>10} {'Go ref ms':>10} {'x faster':>9} "
        f"{'np.sort ms':>11} {'greedy/sort':>12}"
    )
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(1)
    for (n, top), go_ms in REFERENCE_GO_MS.items():
        profile = amdahl_profile(top, 0.05)
        job = Job.from_length(profile, n / 3, 1, top)
        window = carbon[:n]
        plan("carbonscaler", job, window)  # warm-up
        ours = median_ms(lambda j=job, w=window: plan("carbonscaler", j, w), args.repeat)
        values = rng.random(n * top)
        floor = median_ms(lambda v=values: np.sort(v), args.repeat)
        print(
            f"{n:>6} x {top:<3} {ours:>10.3f} {go_ms:>10.1f} {go_ms / ours:>8.0f}x "
            f"{floor:>11.3f} {ours / floor:>12.2f}"
        )
    print()
    profile = amdahl_profile(8, 0.05)
    job = Job.from_length(profile, 56, 1, 8)
    exact_ms = median_ms(lambda: plan("exact", job, carbon[:168]), max(3, args.repeat // 10))
    greedy = plan("carbonscaler", job, carbon[:168])
    exact = plan("exact", job, carbon[:168])
    print(
        f"exact (HiGHS MILP) 168 x 8: {exact_ms:.1f} ms (target < 2000 ms); "
        f"emissions exact {exact.emissions_g:.6f} g vs greedy {greedy.emissions_g:.6f} g"
    )
    from carbonscaler.profile import ScalingProfile

    bumpy = ScalingProfile(
        np.array([0.0, 1.0, 1.2, 2.6, 2.9, 4.1, 4.3, 5.2, 5.4]),
        np.array([0.0, 60, 120, 180, 240, 300, 360, 420, 480]),
        "non-concave",
    )
    job = Job.from_length(bumpy, 56, 1, 8)
    exact_ms = median_ms(lambda: plan("exact", job, carbon[:168]), 3)
    greedy = plan("carbonscaler", job, carbon[:168])
    exact = plan("exact", job, carbon[:168])
    print(
        f"exact on a non-concave profile 168 x 8: {exact_ms:.1f} ms; exact "
        f"{exact.emissions_g:.3f} g vs greedy {greedy.emissions_g:.3f} g "
        f"({100 * (1 - exact.emissions_g / greedy.emissions_g):.2f} % better)"
    )


if __name__ == "__main__":
    main()
