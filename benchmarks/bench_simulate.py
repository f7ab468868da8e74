"""How long ``carbonscaler run --simulate`` takes for a 36-hour job, beside the advisor.

Run: ``.venv/bin/python benchmarks/bench_simulate.py`` (a few seconds; needs the shared data:
``$CARBONSCALER_SHARED``, default ``../shared``).

The real controller on a virtual clock against the simulated workload (in process, so the CLI's
start-up is not counted), and CarbonAdvisor's executor for the same job, trace and start — the
two run the same decision core, and the figures below show they agree.
"""

from __future__ import annotations

import platform
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np

from _shared import shared_dir
from carbonscaler.advisor.executor import Conditions, simulate_policy
from carbonscaler.cli._runner import build_simulation
from carbonscaler.control import JobSpec, ReplayFeed
from carbonscaler.forecast import ForecastSpec
from carbonscaler.profile import ProfileWarning

SHARED = shared_dir()
REPEATS = 7


def main() -> None:
    print(f"machine: {platform.platform()}, {platform.machine()}, Python {sys.version.split()[0]}")
    print("command: python benchmarks/bench_simulate.py")
    if not (SHARED / "traces").is_dir():
        sys.exit(f"needs the shared traces in {SHARED}")
    warnings.simplefilter("ignore", ProfileWarning)
    with tempfile.TemporaryDirectory() as folder:
        spec = JobSpec.model_validate(
            {
                "name": "bench",
                "workload": {"command": "true"},
                "profile": str(SHARED / "profiles" / "nbody10k.csv"),
                "maxReplicas": 7,
                "length_hours": 24,
                "slack": 1.5,
                "forecaster": "uniform",
                "forecast_error": 0.1,
                "rescale_overhead_s": 30,
                "carbon": {
                    "trace": str(
                        SHARED / "traces" / "electricitymaps-fedstale" / "NL_2022_hourly.csv"
                    ),
                    "start": "2022-03-01T00:00Z",
                },
                "checkpoint_dir": folder,
            }
        )
        simulate_s, advise_s = [], []
        report = None
        for _ in range(REPEATS):
            began = time.perf_counter()
            controller = build_simulation(spec)
            report = controller.run()
            simulate_s.append(time.perf_counter() - began)
        assert report is not None
        feed = controller.feed
        assert isinstance(feed, ReplayFeed)
        conditions = Conditions(
            forecast=ForecastSpec(spec.forecaster, spec.forecast_error, spec.seed),
            rescale_overhead_s=30,
            safety_margin=spec.safety_margin,
            replan_threshold=spec.replan_threshold,
        )
        for _ in range(REPEATS):
            began = time.perf_counter()
            row = simulate_policy(
                "carbonscaler",
                controller.job,
                feed.values,
                np.array([feed.start_index]),
                spec.deadline_slots,
                conditions,
            )
            advise_s.append(time.perf_counter() - began)
    sim, adv = statistics.median(simulate_s), statistics.median(advise_s)
    print(f"run --simulate, 36 h job, {report.replans} re-plans: {sim * 1000:.1f} ms (median)")
    print(
        f"advisor, the same job as one row: {adv * 1000:.1f} ms "
        f"(the simulation takes {sim / adv:.1f}x that)"
    )
    print(
        f"emissions {report.emissions_g:.3f} vs {row.emissions_g[0]:.3f} g; completion "
        f"{report.completion_hours:.4f} vs {row.completion_hours[0]:.4f} h; rescales "
        f"{report.rescales} vs {row.rescales[0]}; re-plans {report.replans} vs {row.replans[0]}"
    )


if __name__ == "__main__":
    main()
