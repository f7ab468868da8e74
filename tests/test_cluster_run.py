"""A shared cluster run for real: the cluster core deciding, each job's own controller running.

On a virtual clock with simulated workloads the runtime is exactly CarbonAdvisor's cluster
simulation (the same core, the same world); with real processes (the counter workload, whose
speed is exact) ``carbonscaler cluster run`` keeps the capacity, keeps the deadlines and
resumes every job after ``kill -9``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from carbonscaler.advisor import Conditions
from carbonscaler.advisor.cluster import simulate_cluster
from carbonscaler.backends.simulated import SimulatedBackend
from carbonscaler.cli._runner import build_cluster
from carbonscaler.clock import VirtualClock
from carbonscaler.control.carbon import ReplayFeed
from carbonscaler.control.cluster_spec import load_cluster_spec
from carbonscaler.control.spec import SpecError
from carbonscaler.control.state import STATE_FILE, StateStore
from carbonscaler.decision import Rules
from carbonscaler.forecast import make_forecaster
from carbonscaler.planner.policies import Policy
from carbonscaler.workload import read_progress

COUNTER = Path(__file__).parent / "workloads" / "counter.py"
SLOT_S = 2.0  # wall seconds per one-hour slot in the real runs
STEP_S = 0.1  # the counter's pace: 1 / STEP_S steps per wall second at one worker
# Steps per job hour (SLOT_S wall seconds) at 1 and 2 workers, SCALING 0.8; power per count.
PROFILE = "nodes,throughput,power\n1,20,100\n2,34.82,180\n"


def _job_file(
    folder: Path, name: str, length_h: float, deadline_h: float, seconds_per_slot: float
) -> Path:
    (folder / "profile.csv").write_text(PROFILE)
    spec = {
        "name": name,
        "workload": {
            "command": f"{{python}} {COUNTER}",
            "env": {"STEP_S": str(STEP_S), "SCALING": "0.8"},
            "size_env": "TOTAL_STEPS",
        },
        "profile": str(folder / "profile.csv"),
        "minReplicas": 1,
        "maxReplicas": 2,
        "length_hours": length_h,
        "deadline_hours": deadline_h,
        "slot_seconds": 3600,
        "carbon": {"dataset_zone": "DE", "start": "2020-03-02T00:00Z"},
        "time_scale_s": seconds_per_slot,
        "checkpoint_dir": str(folder / "runs" / name),
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _cluster_file(folder: Path, capacity: int, seconds_per_slot: float = SLOT_S) -> Path:
    jobs = [("a", 3.0, 6.0, 0), ("b", 2.0, 5.0, 0), ("c", 2.0, 5.0, 1)]
    entries = []
    for name, length, deadline, arrival in jobs:
        _job_file(folder, name, length, deadline, seconds_per_slot)
        entries.append({"job": f"{name}.yaml", "arrival_hours": arrival})
    path = folder / "cluster.yaml"
    path.write_text(yaml.safe_dump({"capacity": capacity, "jobs": entries}))
    return path


def _diurnal(slots: int) -> np.ndarray:
    hours = np.arange(slots)
    return 300 + 150 * np.sin(2 * np.pi * hours / 24) + 40 * np.cos(hours)


@pytest.mark.parametrize("policy", ["joint", "carbonscaler", "agnostic"])
def test_on_a_virtual_clock_the_runtime_is_the_advisors_simulation(
    tmp_path: Path, policy: str
) -> None:
    cluster = load_cluster_spec(_cluster_file(tmp_path, capacity=2, seconds_per_slot=60.0))
    trace = _diurnal(48)
    clock = VirtualClock(1000.0)

    def simulated(spec: Any, profile: Any, work: float, env: Any) -> SimulatedBackend:
        return SimulatedBackend(
            profile, work, clock, seconds_per_slot=60.0, slot_hours=1.0, restart_overhead_s=0.0
        )

    controller = build_cluster(
        "cluster",
        cluster,
        folder=tmp_path / "state",
        feed=ReplayFeed(trace, 0, make_forecaster("perfect"), "diurnal"),
        capacity=2,
        policy=policy,
        rules=Rules(Policy.CARBONSCALER, 0.05, 0.05),
        overhead_s=0.0,
        time_limit_s=60.0,
        clock=clock,
        backend_for=simulated,
    )
    report = controller.run()
    advisor = simulate_cluster(
        list(controller.jobs.values()),
        trace,
        2,
        policy,
        Conditions(safety_margin=0.05),
    )
    assert report.completed and [j.name for j in report.jobs] == ["a", "b", "c"]
    for ran, expected in zip(report.jobs, advisor.jobs, strict=True):
        assert ran.name == expected.name
        assert ran.emissions_g == pytest.approx(expected.emissions_g, rel=1e-6)
        assert ran.completion_hours == pytest.approx(expected.completion_hours, abs=1e-6)
        assert ran.deadline_met == expected.deadline_met
        assert ran.replans == expected.replans
    fifo = simulate_cluster(list(controller.jobs.values()), trace, 2, "agnostic")
    assert report.agnostic_emissions_g == pytest.approx(fifo.emissions_g, rel=1e-9)
    assert report.agnostic_deadlines_met == 3 - fifo.deadline_misses
    held = np.array(report.servers_by_slot)
    assert (held <= np.array(report.capacity) + 1e-9).all()
    assert held[: len(advisor.servers_used)] == pytest.approx(
        advisor.servers_used[: len(held)], abs=1e-6
    )


def test_a_cluster_run_needs_each_jobs_file(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "capacity": 2,
                "jobs": [
                    {
                        "name": "x",
                        "profile": "linear",
                        "maxReplicas": 2,
                        "length_hours": 2,
                        "deadline_hours": 4,
                    }
                ],
            }
        )
    )
    with pytest.raises(SpecError, match=r"needs its job file.*without one: x"):
        build_cluster(
            "plain",
            load_cluster_spec(path),
            folder=tmp_path / "state",
            feed=ReplayFeed(_diurnal(24), 0, make_forecaster("perfect"), "diurnal"),
            capacity=2,
            policy="joint",
            rules=Rules(),
        )


def test_a_job_file_entry_takes_only_its_arrival_and_weight(tmp_path: Path) -> None:
    _job_file(tmp_path, "a", 2.0, 4.0, 60.0)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"capacity": 2, "jobs": [{"job": "a.yaml", "maxReplicas": 3}]}))
    with pytest.raises(
        SpecError, match=r"takes only arrival_hours, weight, regions and migrate.*maxReplicas comes"
    ):
        load_cluster_spec(path)
    path.write_text(
        yaml.safe_dump({"capacity": 2, "slot_minutes": 30, "jobs": [{"job": "a.yaml"}]})
    )
    with pytest.raises(SpecError, match="slot_seconds is 3600 but the cluster's slots are 30"):
        load_cluster_spec(path)
    path.write_text(yaml.safe_dump({"capacity": 2, "jobs": [{"job": "a.yaml", "weight": 2}]}))
    (job,) = load_cluster_spec(path).jobs
    assert (job.name, job.max_replicas, job.length_hours, job.weight) == ("a", 2, 2.0, 2.0)
    assert job.job == str(tmp_path / "a.yaml")


@pytest.mark.integration
def test_a_killed_cluster_run_resumes_every_job_within_the_capacity(tmp_path: Path) -> None:
    cluster = _cluster_file(tmp_path, capacity=2)
    state = tmp_path / "state"
    command = [
        sys.executable,
        "-m",
        "carbonscaler.cli",
        "cluster",
        "run",
        str(cluster),
        "--zone",
        "DE",
        "--start",
        "2020-03-02T00:00Z",
        "--dir",
        str(state),
        "--json",
    ]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    progress = {n: tmp_path / "runs" / n / "workload" / "progress.csv" for n in "abc"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()[1].decode()
        seen = [read_progress(p) for p in progress.values()]
        if sum(row.percent for row in seen if row is not None) >= 60:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"no progress within 60 s: {first.communicate(timeout=5)}")
    first.send_signal(signal.SIGKILL)
    first.wait()
    store = StateStore(state / STATE_FILE)
    saved = store.load_cluster("cluster")
    assert saved is not None and saved["slot"] >= 0
    before = {n: s[1] for n in "abc" if (s := store.load(n)) is not None}
    assert before and not all(s.completed for s in before.values())
    second = subprocess.run(command, capture_output=True, timeout=180)
    assert second.returncode == 0, second.stderr.decode()
    report = json.loads(second.stdout)
    assert report["completed"] and report["deadlines_met"] == 3
    granted, capacity = report["granted_by_slot"], report["capacity"]
    assert all(g <= k for g, k in zip(granted, capacity, strict=True)), granted
    # What the jobs held: a slot's change takes effect at its first tick and a job that has
    # done its work holds its servers until its process exits — a few hundredths of a slot
    # on a loaded machine beyond the grants, never a whole server.
    held = report["servers_by_slot"]
    assert all(h <= k + 0.25 for h, k in zip(held, capacity, strict=True)), held
    for name in "abc":
        kinds = [e.kind for e in store.events(name)]
        assert kinds.count("planned") == 1, (name, kinds)  # one job, planned once
        assert kinds[-1] == "done"
        # Resumed from its checkpoint, never started over.
        assert progress[name].read_text().splitlines().count("step,percent") == 1
    resumed = [n for n in before if "resumed" in [e.kind for e in store.events(n)]]
    assert resumed == sorted(saved["core"]["members"])
    assert report["emissions_g"] >= sum(s.emissions_g for s in before.values())
