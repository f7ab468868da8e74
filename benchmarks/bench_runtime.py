"""Runtime figures: controller CPU overhead, N-body rescale time, demo vs advisor.

Run: ``.venv/bin/python benchmarks/bench_runtime.py [--skip-demo]`` (about 3 minutes).

1. Controller overhead: a sleeping workload (tests/workloads/counter.py) runs a 40-slot job at
   0.5 s per slot under the controller in this process; the controller's CPU time (this
   process; the workload is a separate process) over the wall time, as % of one core.
2. Rescale on the local backend for the N-body example: checkpoint + stop + start, and until
   the workload reports progress again.
3. The demo (`carbonscaler demo`): measured savings vs the advisor's prediction for the same
   job, trace and start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from carbonscaler.backends.local import LocalBackend, read_progress
from carbonscaler.cli._runner import build_controller
from carbonscaler.control import JobSpec

ROOT = Path(__file__).resolve().parents[1]


def controller_overhead(folder: Path) -> None:
    trace = folder / "trace.csv"
    hours = [f"2022-01-{1 + h // 24:02d}T{h % 24:02d}:00:00Z" for h in range(60)]
    values = [200 + 150 * ((h * 7) % 11) / 10 for h in range(60)]
    trace.write_text(
        "timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in zip(hours, values, strict=True))
    )
    profile = folder / "profile.csv"
    profile.write_text("nodes,throughput,power\n1,10,60\n2,20,120\n")
    spec = JobSpec.model_validate(
        {
            "name": "overhead",
            "workload": {
                "command": f"{{python}} {ROOT / 'tests/workloads/counter.py'}",
                "env": {"TOTAL_STEPS": "300", "STEP_S": "0.05"},
            },
            "profile": str(profile),
            "minReplicas": 1,
            "maxReplicas": 2,
            "work": 300,
            "deadline": 40,
            "time_scale_s": 0.5,
            "checkpoint_dir": str(folder / "run"),
            "carbon": {"trace": str(trace), "start": "2022-01-01T00:00Z"},
        }
    )
    controller = build_controller(spec)
    cpu0, wall0 = time.process_time(), time.monotonic()
    report = controller.run()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    print(
        f"controller overhead: {cpu:.2f} s CPU over {wall:.1f} s wall = "
        f"{100 * cpu / wall:.2f} % of one core (tick {controller.tick_s:.3f} s, "
        f"{report.rescales} rescales, {report.replans} re-plans; target < 1 %)"
    )


def nbody_rescale(folder: Path) -> None:
    backend = LocalBackend(
        "{python} -m carbonscaler.examples.nbody",
        folder / "nbody",
        env={"BODIES": "2000", "ITERATIONS": "1000000"},
    )
    stops, totals = [], []
    workers = 2
    backend.start(workers)
    for _ in range(6):
        time.sleep(1.0)
        before = read_progress(backend.progress_file)
        workers = 3 - workers
        began = time.monotonic()
        backend.rescale(workers)
        stopped_started = time.monotonic() - began
        while True:
            now = read_progress(backend.progress_file)
            if now is not None and before is not None and now[0] > before[0]:
                break
            time.sleep(0.005)
        stops.append(stopped_started)
        totals.append(time.monotonic() - began)
    backend.kill()
    print(
        f"N-body rescale (2000 bodies, 1<->2 workers, 6 times): checkpoint+stop+start "
        f"median {statistics.median(stops):.2f} s (max {max(stops):.2f}); until progress "
        f"resumes median {statistics.median(totals):.2f} s (max {max(totals):.2f}); "
        "target < 2 s"
    )


def demo(folder: Path) -> None:
    began = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "carbonscaler.cli", "demo", "--json", "--dir", str(folder / "demo")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    if out.returncode != 0:
        print(f"demo failed ({out.returncode}): {out.stderr[-500:]}")
        return
    report = json.loads(out.stdout)
    print(
        f"demo ({time.monotonic() - began:.0f} s): measured {report['emissions_g']:.1f} g vs "
        f"agnostic {report['agnostic_emissions_g']:.1f} g = {report['savings_pct']:.1f} % "
        f"saved; advisor predicted {report['advisor_savings_pct']:.1f} % "
        f"({report['advisor_emissions_g']:.1f} g); difference "
        f"{report['savings_vs_advisor_pct_points']:+.1f} points; deadline "
        f"{'met' if report['deadline_met'] else 'missed'}; {report['rescales']} rescales, "
        f"{report['replans']} re-plans"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {load[0]:.2f}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        controller_overhead(folder)
        nbody_rescale(folder)
        if not args.skip_demo:
            demo(folder)


if __name__ == "__main__":
    main()
