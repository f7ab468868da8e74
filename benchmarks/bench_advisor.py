"""CarbonAdvisor speed: plans per second over a year of start times, and a full sweep.

Run: ``.venv/bin/python benchmarks/bench_advisor.py``.

Job: 24 h at 1 server, deadline 36 h, 1..8 servers (Amdahl 5 % serial, 60 W per server), on a
year of real hourly intensity (NL 2022 from ../shared, or a synthetic year without it).
Prints plans/s for the batch planner alone, for plan + execution against the actual trace, the
ratio to a per-plan loop over the planning core measured in the same run, and the time of a sweep
of every policy with ±10 % forecast error and re-planning.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from carbonscaler.advisor import Conditions, ForecastSpec, SweepSpec, run_sweep, simulate_policy
from carbonscaler.planner import Job, plan
from carbonscaler.planner.batch import batch_greedy
from carbonscaler.profile import amdahl_profile
from carbonscaler.trace import CarbonTrace, from_values, load_trace

SHARED_TRACE = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "traces"
    / "electricitymaps-fedstale"
    / "NL_2022_hourly.csv"
)


def year_trace() -> CarbonTrace:
    if SHARED_TRACE.is_file():
        return load_trace(SHARED_TRACE)
    rng = np.random.default_rng(0)
    hours = np.arange(8760)
    values = 300 + 120 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 30, 8760)
    return from_values(np.clip(values, 5, None), zone="synthetic")


def best_of(func: object, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    trace = year_trace()
    print(
        f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"trace: {trace.source} ({len(trace)} hourly slots)")
    job = Job.from_length(amdahl_profile(8, 0.05), 24, 1, 8)
    deadline = 36
    starts = np.arange(len(trace) - deadline + 1)
    windows = np.lib.stride_tricks.sliding_window_view(trace.values, deadline)
    ladder = job.ladder()

    batch_s = best_of(lambda: batch_greedy(ladder, windows, job.work))
    sim_s = best_of(lambda: simulate_policy("carbonscaler", job, trace.values, starts, deadline))
    sample = starts[:: max(len(starts) // 1000, 1)]
    loop_s = best_of(
        lambda: [plan("carbonscaler", job, trace.values[s : s + deadline]) for s in sample]
    )
    loop_rate = len(sample) / loop_s
    print()
    print(f"{'what':<52} {'plans':>7} {'seconds':>8} {'plans/s':>9} {'vs loop':>8}")
    for label, seconds in (
        ("batch planner (greedy, all starts)", batch_s),
        ("plan + execute against the actual trace", sim_s),
    ):
        rate = len(starts) / seconds
        print(
            f"{label:<52} {len(starts):>7} {seconds:>8.3f} {rate:>9.0f} {rate / loop_rate:>7.1f}x"
        )
    print(
        f"{'per-plan loop over plan() (sampled)':<52} {len(sample):>7} {loop_s:>8.3f} "
        f"{loop_rate:>9.0f} {1.0:>7.1f}x"
    )
    print("targets: >= 20,000 plans/s; one policy over a year < 0.5 s")
    print()

    for model in ("uniform", "persistence"):
        cond = Conditions(
            forecast=ForecastSpec(model, 0.1, seed=1), profile_error=0.05, rescale_overhead_s=30
        )
        spec = SweepSpec(
            traces=[trace],
            profile=job.profile,
            length_hours=24,
            slacks=[1.5],
            max_servers=[8],
            conditions=cond,
        )
        start = time.perf_counter()
        result = run_sweep(spec)
        seconds = time.perf_counter() - start
        cs = result.summary[result.summary["policy"] == "carbonscaler"].iloc[0]
        print(
            f"sweep, every policy, {len(starts)} starts, {model} forecast ±10 %, profile error "
            f"±5 %, 30 s rescale: {seconds:.1f} s (target < 30 s); carbonscaler mean replans "
            f"{cs['mean_replans']:.1f}, misses {int(cs['deadline_misses'])}"
        )


if __name__ == "__main__":
    main()
