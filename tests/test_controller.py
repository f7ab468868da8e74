"""The controller and the local backend, with a real (sleeping) workload process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from carbonscaler.backends.base import BackendError, WorkloadState
from carbonscaler.backends.local import LocalBackend
from carbonscaler.cli._runner import build_controller, make_forecaster_for, state_path
from carbonscaler.control import (
    CarbonUnavailable,
    ControllerState,
    JobSpec,
    ReplayFeed,
    SpecError,
    StateStore,
    load_job_spec,
)
from carbonscaler.planner import InfeasibleError
from carbonscaler.workload import ProgressError, ProgressRow, read_progress

pytestmark = pytest.mark.integration  # starts real processes or servers

COUNTER = Path(__file__).parent / "workloads" / "counter.py"
# One slot (an hour of job time) every 0.5 wall seconds; 10 steps per job hour at 1 worker.
SLOT_S = 0.5
STEP_S = 0.05


def write_trace(path: Path, values: list[float]) -> Path:
    times = [f"2022-01-{1 + h // 24:02d}T{h % 24:02d}:00:00Z" for h in range(len(values))]
    path.write_text(
        "timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in zip(times, values, strict=True))
    )
    return path


def write_profile(path: Path, workers: int = 3) -> Path:
    # Steps per job hour: WORKERS steps every STEP_S wall seconds, SLOT_S wall s per job hour.
    per_hour = SLOT_S / STEP_S
    rows = "".join(f"{k},{k * per_hour},{60 * k}\n" for k in range(1, workers + 1))
    path.write_text("nodes,throughput,power\n" + rows)
    return path


CARBON = [
    300,
    320,
    80,
    60,
    90,
    400,
    380,
    70,
    50,
    420,
    410,
    400,
    390,
    380,
    370,
    360,
    350,
    340,
    330,
    320,
    310,
    300,
    290,
    280,
    270,
    260,
]


def make_spec(tmp_path: Path, **over: Any) -> JobSpec:
    data: dict[str, Any] = {
        "name": "counter",
        "workload": {
            "command": f"{{python}} {COUNTER}",
            "env": {"TOTAL_STEPS": "60", "STEP_S": str(STEP_S)},
            "stop_timeout_s": 5,
            "restart_overhead_s": 0.025,  # 5 % of a slot until measured
        },
        "profile": str(write_profile(tmp_path / "profile.csv")),
        "minReplicas": 1,
        "maxReplicas": 3,
        "work": 60,
        "deadline": 12,
        "carbon": {
            "trace": str(write_trace(tmp_path / "trace.csv", CARBON)),
            "start": "2022-01-01T00:00Z",
        },
        "time_scale_s": SLOT_S,
        "checkpoint_dir": str(tmp_path / "run"),
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return JobSpec.model_validate(data)


def test_run_follows_the_plan_and_saves_carbon(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    controller = build_controller(spec, tick_s=0.02)
    state = controller.prepare()
    planned = list(state.plan_servers)
    # Linear scaling: the work goes to the cleanest slots at the top level, and the time each
    # start loses (0.025 s, 5 % of a slot, until measured) to the next cleanest (slot 7, 70 g).
    assert planned[3] == planned[8] == 3
    assert planned[7] > 0
    assert planned[:3] == [0, 0, 0] and planned[4:7] == [0, 0, 0] and planned[9:] == [0] * 3
    report = controller.run()
    assert report.completed and report.deadline_met
    assert report.emissions_g < report.agnostic_emissions_g
    assert report.savings_pct > 10  # planned ~70 %; a loaded machine runs slower than profiled
    assert report.power_source == "estimated:profile"
    assert report.rescales >= 1
    # Each slot ran what the last plan for it said (re-plans happen at slot boundaries;
    # ticks and start-up blur the edges a little).
    final = controller.state
    assert final is not None
    done_slot = int(report.completion_hours or 0)
    for i in range(done_slot):
        f = final.plan_fraction[i]
        expected = final.plan_servers[i] * f + final.plan_after[i] * (1 - f)
        assert abs(report.servers_by_slot[i] - expected) < 0.35, (i, report.servers_by_slot)
    final = read_progress(Path(spec.checkpoint_dir) / "workload" / "progress.csv")
    assert final is not None and final.percent == 100.0
    events = [e.kind for e in StateStore(state_path(spec)).events("counter")]
    assert events[0] == "planned" and events[-1] == "done"


def test_crashed_workload_is_restarted_from_checkpoint(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        workload={"env": {"TOTAL_STEPS": "60", "STEP_S": str(STEP_S), "FAIL_AT_STEP": "10"}},
    )
    report = build_controller(spec, tick_s=0.02).run()
    assert report.restarts == 1
    assert report.completed and report.deadline_met
    kinds = [e.kind for e in StateStore(state_path(spec)).events("counter")]
    assert "crashed" in kinds and "restarted" in kinds


def test_infeasible_deadline_is_refused_before_anything_starts(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, deadline=1)
    controller = build_controller(spec)
    with pytest.raises(InfeasibleError, match="shortest deadline that works is 2 h"):
        controller.prepare()
    assert not (Path(spec.checkpoint_dir) / "workload" / "progress.csv").exists()


class FailingFeed(ReplayFeed):
    """The trace, until the carbon source goes away after ``ok_slots`` slots."""

    def __init__(self, base: ReplayFeed, ok_slots: int) -> None:
        super().__init__(base.values, base.start_index, base.forecaster, base.source)
        self.ok_slots = ok_slots

    def actual(self, slot: int) -> float:
        if slot >= self.ok_slots:
            raise CarbonUnavailable("connection refused")
        return super().actual(slot)

    def forecast(self, slot: int, horizon: int) -> np.ndarray:
        if slot >= self.ok_slots:
            raise CarbonUnavailable("connection refused")
        return super().forecast(slot, horizon)


def test_unreachable_carbon_source_degrades_but_meets_deadline(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, deadline=16)
    controller = build_controller(spec, tick_s=0.02)
    assert isinstance(controller.feed, ReplayFeed)
    controller.feed = FailingFeed(controller.feed, ok_slots=2)
    report = controller.run()
    assert report.degraded
    assert report.completed and report.deadline_met
    kinds = [e.kind for e in StateStore(state_path(spec)).events("counter")]
    assert "degraded" in kinds


def test_killed_controller_resumes_the_same_job(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        workload={"env": {"TOTAL_STEPS": "80", "STEP_S": str(STEP_S)}},
        work=80,
        deadline=20,
    )
    job_file = tmp_path / "job.yaml"
    job_file.write_text(json.dumps(spec.model_dump(mode="json", by_alias=True)))
    command = [sys.executable, "-m", "carbonscaler.cli", "run", str(job_file), "--json"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    progress = Path(spec.checkpoint_dir) / "workload" / "progress.csv"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        last = read_progress(progress)
        if last is not None and last.percent >= 30:
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    store = StateStore(state_path(spec))
    saved = store.load("counter")
    assert saved is not None
    before: ControllerState = saved[1]
    assert before.started and before.progress_pct < 100
    second = subprocess.run(command, capture_output=True, timeout=60)
    assert second.returncode == 0, second.stderr.decode()
    report = json.loads(second.stdout)
    assert report["completed"] and report["deadline_met"]
    kinds = [e.kind for e in store.events("counter")]
    assert kinds.count("planned") == 1  # the same plan, not a new job
    assert "resumed" in kinds
    # Resumed from the checkpoint: the work was not started over.
    lines = progress.read_text().splitlines()
    assert lines.count("step,percent") == 1
    assert report["emissions_g"] >= before.emissions_g


def test_local_backend_start_stop_rescale(tmp_path: Path) -> None:
    backend = LocalBackend(
        f"{{python}} {COUNTER}",
        tmp_path / "w",
        env={"TOTAL_STEPS": "100000", "STEP_S": "0.01"},
        stop_timeout_s=5,
    )
    backend.start(2)
    time.sleep(0.3)
    assert backend.poll() is WorkloadState.RUNNING and backend.workers == 2
    first = read_progress(backend.progress_file)
    assert first is not None and first.step >= 2
    began = time.monotonic()
    backend.rescale(1)
    assert time.monotonic() - began < 2.0
    assert backend.workers == 1
    handle = backend.handle()
    other = LocalBackend(f"{{python}} {COUNTER}", tmp_path / "w")
    assert other.attach(handle) and other.poll() is WorkloadState.RUNNING
    backend.rescale(0)
    assert backend.poll() is WorkloadState.STOPPED and not other.attach(handle)
    saved = json.loads((tmp_path / "w" / "state.json").read_text())["step"]
    assert saved >= first.step


def test_mpi_launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(BackendError, match="needs mpirun"):
        LocalBackend("prog", tmp_path, launcher="mpi")
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/mpirun")
    backend = LocalBackend("prog --n {workers}", tmp_path, launcher="auto")
    assert backend.argv(4) == ["/usr/bin/mpirun", "-np", "4", "prog", "--n", "4"]
    assert backend.environment(4)["WORKERS"] == "4"


def test_progress_reader_ignores_partial_lines_and_refuses_a_bad_last_row(
    tmp_path: Path,
) -> None:
    path = tmp_path / "progress.csv"
    assert read_progress(path) is None
    path.write_text("step,percent\n")
    assert read_progress(path) is None  # a header only
    path.write_text("step,percent\n1,10\n2,20\n3,3")  # last line still being written
    assert read_progress(path) == ProgressRow(2.0, 20.0)
    path.write_text("step,percent\n1,10\ngarbage\n")
    with pytest.raises(ProgressError, match="no second column"):
        read_progress(path)
    # The local runtime warns and reads it as no news, rather than stopping the run.
    backend = LocalBackend("true", tmp_path / "run")
    backend.progress_file.parent.mkdir(parents=True, exist_ok=True)
    backend.progress_file.write_text("1,10\n2,abc\n")
    assert backend.progress_pct() is None


def test_spec_validation(tmp_path: Path) -> None:
    good = make_spec(tmp_path)
    assert good.deadline_slots == 12
    for over, fragment in (
        ({"maxReplicas": 0}, "maxReplicas"),
        ({"minReplicas": 4}, "below minReplicas"),
        ({"slack": 1.5}, "exactly one of deadline"),
        ({"carbon": {"start": None}}, "needs start"),
        ({"name": "bad name!"}, "name"),
    ):
        with pytest.raises(ValueError, match=fragment):
            make_spec(tmp_path, **over)
    path = tmp_path / "job.yaml"
    path.write_text("name: x\nworkload: {command: run}\nmaxReplicas: 2\nwork: 5\n")
    with pytest.raises(SpecError, match="carbon: Field required"):
        load_job_spec(path)
    path.write_text(
        "carbonScalerSpec: {minReplicas: 1, maxReplicas: 4, deadline: 12, profileName: p.csv}\n"
        "name: ref\nworkload: {command: run}\nwork: 5\ncheckpoint_dir: out\n"
        "carbon: {trace: t.csv, start: '2022-01-01'}\npolicy: fixed\n"
    )
    spec = load_job_spec(path)
    assert spec.max_replicas == 4 and spec.deadline_slots == 12
    assert spec.policy_name == "agnostic" and spec.profile.endswith("p.csv")
    assert os.path.isabs(spec.checkpoint_dir)
    assert make_forecaster_for(make_spec(tmp_path, forecaster="persistence")) is not None


NBODY = "carbonscaler.examples.nbody"  # the N-body example, shipped with the package


def _is_nbody_worker(pid: int, backend: LocalBackend) -> bool:
    """A compute worker of the launcher: not the launcher, not a multiprocessing helper."""
    if pid == backend.handle()["pid"]:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"resource_tracker" not in cmdline and b"forkserver" not in cmdline


def test_killed_nbody_worker_mid_slot_resumes_and_matches_uninterrupted(tmp_path: Path) -> None:
    """The issue's fault test with the real N-body example under the controller."""
    env = {"BODIES": "300", "ITERATIONS": "800", "SEED": "3"}
    reference = tmp_path / "reference"
    subprocess.run(
        [sys.executable, "-m", NBODY],
        env={
            **os.environ,
            **env,
            "WORKERS": "1",
            "CHECKPOINT_DIR": str(reference),
            "PROGRESS_FILE": str(reference / "progress.csv"),
        },
        check=True,
        capture_output=True,
        timeout=120,
    )
    profile = tmp_path / "nbody.csv"
    # Roughly 200 steps per wall second at 1 worker: ~100 per job hour at 0.5 s per slot.
    profile.write_text("nodes,throughput,power\n1,100,60\n2,160,120\n")
    spec = make_spec(
        tmp_path,
        workload={"command": f"{{python}} -m {NBODY}", "env": env},
        profile=str(profile),
        work=800,
        deadline=24,
    )
    controller = build_controller(spec, tick_s=0.02)
    state = controller.prepare()
    killed: list[int] = []
    seen: list[tuple[float, float, int]] = []  # (job hours, progress, workers): if none is killed
    while not state.completed:
        if controller.step():
            break
        backend = controller.backend
        assert isinstance(backend, LocalBackend)
        hours = controller.job_hours(state)
        slot = int(hours)
        # Mid-slot, far from a planned change, so the crash is not absorbed by a planned stop.
        in_plan = slot < len(state.plan_fraction) and state.plan_fraction[slot] == 1.0
        seen.append((round(hours, 2), round(state.progress_pct, 1), backend.workers))
        mid_slot = in_plan and 0.05 < hours - slot < 0.75
        if not killed and mid_slot and 10 < state.progress_pct < 90 and backend.workers > 0:
            workers = [pid for pid in backend.pids() if _is_nbody_worker(pid, backend)]
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
        time.sleep(0.02)
    report = controller.report()
    assert killed, f"the test never found a worker to kill; plan {state.plan_servers}, {seen}"
    assert report.completed and report.restarts >= 1
    ours = np.load(Path(spec.checkpoint_dir) / "workload" / "result.npz")
    theirs = np.load(reference / "result.npz")
    assert set(ours.files) == set(theirs.files)
    for name in ours.files:
        assert np.array_equal(ours[name], theirs[name]), name


def test_run_uses_measured_rapl_power_where_readable(tmp_path: Path) -> None:
    """A powercap tree whose package counter advances as a 90 W machine's would."""
    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    counter = zone / "energy_uj"
    counter.write_text("1000\n")
    stop = threading.Event()

    def tick() -> None:  # 90 W: 90 J per second, written every 20 ms
        energy_uj, last = 1000.0, time.monotonic()
        while not stop.is_set():
            time.sleep(0.02)
            now = time.monotonic()
            energy_uj += 90.0 * (now - last) * 1e6
            last = now
            tmp = counter.with_suffix(".tmp")
            tmp.write_text(f"{int(energy_uj)}\n")
            os.replace(tmp, counter)

    writer = threading.Thread(target=tick, daemon=True)
    writer.start()
    try:
        spec = make_spec(tmp_path, powercap_root=str(tmp_path / "powercap"))
        report = build_controller(spec, tick_s=0.05).run()
    finally:
        stop.set()
        writer.join()
    assert report.completed
    assert report.power_source == "measured:rapl"
    # Energy in job hours: 90 W whenever servers ran (the machine's package, not P(k)).
    server_hours = sum(1 for s in report.servers_by_slot if s > 0)
    assert report.energy_kwh > 0 and server_hours > 0
    assert report.agnostic_emissions_g > 0 and report.savings_pct > 0
