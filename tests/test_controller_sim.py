"""The controller on a virtual clock against a simulated workload: exact, no sleeping.

Also the contract of ``run --simulate``: for the same job, trace, start and conditions, the
controller and CarbonAdvisor (`advise`) make the same decisions, because both run the decision
core — same emissions, completion, rescales, re-plans and servers in every slot.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from _jobs import NL, spec_for
from carbonscaler.advisor.executor import Conditions, simulate_policy
from carbonscaler.backends.base import WorkloadState
from carbonscaler.backends.simulated import SimulatedBackend
from carbonscaler.cli import app
from carbonscaler.cli._runner import build_simulation
from carbonscaler.control import CarbonUnavailable, Controller, JobSpec, ReplayFeed, StateStore
from carbonscaler.control.controller import RunReport
from carbonscaler.forecast import ForecastSpec
from carbonscaler.planner import InfeasibleError, plan

runner = CliRunner()


def advisor_row(controller: Controller, spec: JobSpec, **conditions: Any) -> Any:
    feed = controller.feed
    assert isinstance(feed, ReplayFeed)
    cond = Conditions(
        forecast=ForecastSpec(spec.forecaster, spec.forecast_error, spec.seed),
        rescale_overhead_s=spec.restart_overhead_s / spec.seconds_per_slot * 3600,
        replan_threshold=spec.replan_threshold,
        safety_margin=spec.safety_margin,
        seed=spec.seed,
        **conditions,
    )
    return simulate_policy(
        spec.policy_name,
        controller.job,
        feed.values,
        np.array([feed.start_index]),
        spec.deadline_slots,
        cond,
        record_slots=spec.deadline_slots,
    )


def assert_same_decisions(report: RunReport, row: Any) -> None:
    assert report.emissions_g == pytest.approx(float(row.emissions_g[0]), rel=1e-3)
    assert report.completion_hours == pytest.approx(float(row.completion_hours[0]), abs=0.01)
    assert report.rescales == int(row.rescales[0])
    assert report.replans == int(row.replans[0])
    n = row.servers_by_slot.shape[1]
    assert report.servers_by_slot[:n] == pytest.approx(row.servers_by_slot[0].tolist(), abs=1e-6)


def test_a_simulated_run_follows_its_plan_exactly(shared_dir: Path, tmp_path: Path) -> None:
    spec = spec_for(shared_dir, tmp_path, safety_margin=0.0, workload={"restart_overhead_s": 0})
    controller = build_simulation(spec)
    report = controller.run()
    # Perfect forecast, the profile right, no overhead: the run is the greedy plan itself.
    feed = controller.feed
    assert isinstance(feed, ReplayFeed)
    schedule = plan(
        "carbonscaler",
        controller.job,
        feed.values[feed.start_index :],
        deadline_slots=spec.deadline_slots,
    )
    assert report.completed and report.deadline_met
    assert report.replans == 0
    assert report.emissions_g == pytest.approx(schedule.emissions_g, rel=1e-9)
    assert report.energy_kwh == pytest.approx(schedule.energy_kwh, rel=1e-9)
    assert report.completion_hours == pytest.approx(schedule.completion_hours, abs=1e-9)
    assert report.rescales == schedule.rescales
    servers = schedule.servers.astype(float)
    if schedule.partial_slot is not None:
        f = schedule.last_slot_fraction
        servers[schedule.partial_slot] = servers[
            schedule.partial_slot
        ] * f + schedule.partial_servers_after * (1 - f)
    assert report.servers_by_slot[: len(servers)] == pytest.approx(servers.tolist(), abs=1e-9)
    # The run was not written to the job's folder: a simulation never disturbs a real run.
    assert not (tmp_path / "run").exists()


def test_simulations_are_deterministic(shared_dir: Path, tmp_path: Path) -> None:
    spec = spec_for(
        shared_dir,
        tmp_path,
        forecaster="uniform",
        forecast_error=0.2,
        workload={"restart_overhead_s": 60},
    )
    first = build_simulation(spec).run().to_dict()
    again = build_simulation(spec).run().to_dict()
    assert first == again
    assert first["replans"] > 0


CASES = [
    # profile, m, M, length, slack, forecaster, error, overhead s, threshold, margin, seed, start
    ("nbody10k.csv", 1, 7, 24, 1.5, "perfect", 0.0, 0, 0.05, 0.05, 0, "2022-03-01T00:00Z"),
    ("nbody10k.csv", 1, 7, 24, 1.5, "uniform", 0.2, 30, 0.05, 0.05, 3, "2022-06-10T05:00Z"),
    ("nbody100k.csv", 2, 7, 12, 2.0, "gaussian", 0.1, 120, 0.1, 0.1, 7, "2022-01-20T13:00Z"),
    ("nbody100k.csv", 1, 4, 30, 1.2, "persistence", 0.0, 30, 0.05, 0.0, 1, "2022-09-02T22:00Z"),
    ("amdahl:0.05", 1, 8, 20, 1.5, "seasonal", 0.0, 600, 0.05, 0.05, 2, "2022-11-11T11:00Z"),
    ("amdahl:0.2", 1, 6, 10, 1.0, "uniform", 0.3, 0, 0.2, 0.05, 5, "2022-04-04T04:00Z"),
    ("nbody10k.csv", 1, 1, 16, 2.0, "perfect", 0.0, 30, 0.05, 0.05, 0, "2022-07-07T00:00Z"),
]


@pytest.mark.parametrize("policy", ["carbonscaler", "suspend-resume", "agnostic", "exact"])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_controller_and_advisor_make_the_same_decisions(
    shared_dir: Path, tmp_path: Path, case: tuple[Any, ...], policy: str
) -> None:
    name, m, top, length, slack, model, error, overhead, threshold, margin, seed, start = case
    profile = str(shared_dir / "profiles" / name) if name.endswith(".csv") else name
    spec = spec_for(
        shared_dir,
        tmp_path,
        profile=profile,
        minReplicas=m,
        maxReplicas=top,
        length_hours=length,
        slack=slack,
        forecaster=model,
        forecast_error=error,
        seed=seed,
        replan_threshold=threshold,
        safety_margin=margin,
        policy=policy,
        workload={"restart_overhead_s": overhead},
        carbon={"start": start},
    )
    controller = build_simulation(spec)
    report = controller.run()
    assert_same_decisions(report, advisor_row(controller, spec))


def test_run_simulate_and_advise_agree_on_the_command_line(
    shared_dir: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "job.yaml"
    profile = shared_dir / "profiles" / "nbody10k.csv"
    trace = shared_dir / "traces" / NL
    spec.write_text(
        "name: contract\n"
        "workload: {command: 'true', restart_overhead_s: 30}\n"
        f"profile: {profile}\n"
        "minReplicas: 1\nmaxReplicas: 7\nlength_hours: 24\nslack: 1.5\n"
        "forecaster: uniform\nforecast_error: 0.1\nseed: 4\n"
        f"carbon: {{trace: {trace}, start: '2022-05-05T05:00Z'}}\n"
        f"checkpoint_dir: {tmp_path / 'run'}\n"
    )
    simulated = runner.invoke(app, ["run", str(spec), "--simulate", "--json"])
    assert simulated.exit_code == 0, simulated.output
    run = json.loads(simulated.stdout)
    advised = runner.invoke(
        app,
        [
            "advise",
            "--length", "24", "--profile", str(profile), "--trace", str(trace),
            "--starts", "2022-05-05T05:00Z", "--policy", "carbonscaler",
            "--min", "1", "--max", "7", "--rescale-overhead-s", "30",
            "--forecast-model", "uniform", "--forecast-error", "0.1", "--seed", "4",
            "--safety-margin", "0.05", "--json",
        ],
    )  # fmt: skip
    assert advised.exit_code == 0, advised.output
    row = next(r for r in json.loads(advised.stdout) if r["policy"] == "carbonscaler")
    assert run["emissions_g"] == pytest.approx(row["mean_emissions_g"], rel=1e-3)
    assert run["completion_hours"] == pytest.approx(row["mean_completion_hours"], abs=0.01)
    assert run["rescales"] == row["mean_rescales"]
    assert run["replans"] == row["mean_replans"]
    # The same report as a real run: every RunReport field, nothing else.
    assert set(run) == set(RunReport.__dataclass_fields__)


def test_simulate_needs_an_explicit_profile(shared_dir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "name: auto\nworkload: {command: 'true'}\nprofile: auto\nmaxReplicas: 2\n"
        "length_hours: 4\nslack: 2\n"
        f"carbon: {{trace: {shared_dir / 'traces' / NL}, start: '2022-05-05T05:00Z'}}\n"
        f"checkpoint_dir: {tmp_path / 'run'}\n"
    )
    result = runner.invoke(app, ["run", str(spec), "--simulate"])
    assert result.exit_code != 0
    assert "needs an explicit profile" in result.output


# -- the controller's own handling, step by step -------------------------------------------


def sim_controller(
    shared: Path,
    tmp_path: Path,
    backend_cls: type[SimulatedBackend] = SimulatedBackend,
    **over: Any,
) -> Controller:
    spec = spec_for(shared, tmp_path, **over)
    return build_simulation(spec, backend_cls=backend_cls, store=StateStore(tmp_path / "s.db"))


class CrashOnce(SimulatedBackend):
    """Crashes (losing its workers) the first time it is polled past job hour 10."""

    crashed = False

    def poll(self) -> WorkloadState:
        state = super().poll()
        hours = self.clock.now() / 3600.0  # the virtual clock starts at 0, real-time slots
        if not self.crashed and self.workers and hours >= 10:
            self.crashed = True
            self._workers = 0
            return WorkloadState.CRASHED
        return state


def test_a_crashed_workload_is_restarted_and_the_deadline_kept(
    shared_dir: Path, tmp_path: Path
) -> None:
    controller = sim_controller(shared_dir, tmp_path, CrashOnce, slack=2.0)
    report = controller.run()
    assert report.restarts == 1
    assert report.completed and report.deadline_met
    events = [e.kind for e in controller.store.events("sim")]
    assert events.count("crashed") == 1 and events.count("restarted") == 1


def test_slower_than_profiled_is_caught_by_replanning(shared_dir: Path, tmp_path: Path) -> None:
    controller = sim_controller(shared_dir, tmp_path)
    backend = controller.backend
    assert isinstance(backend, SimulatedBackend)
    backend._per_s *= 0.8  # the job runs 20 % slower than its profile says
    report = controller.run()
    assert report.completed and report.deadline_met
    replans = [e for e in controller.store.events("sim") if e.kind == "replanned"]
    assert replans and "behind" in replans[0].detail["reasons"]
    assert replans[-1].detail["observed_rate"] == pytest.approx(0.8, abs=0.02)


class FlakyFeed(ReplayFeed):
    """A replay whose source goes down from slot 5 to slot 12."""

    def forecast(self, slot: int, horizon: int) -> np.ndarray:
        if 5 <= slot < 12:
            raise CarbonUnavailable("carbon service unreachable")
        return super().forecast(slot, horizon)


def test_a_carbon_outage_keeps_the_plan_and_recovers(shared_dir: Path, tmp_path: Path) -> None:
    controller = sim_controller(shared_dir, tmp_path, forecaster="uniform", forecast_error=0.2)
    feed = controller.feed
    assert isinstance(feed, ReplayFeed)
    controller.feed = FlakyFeed(feed.values, feed.start_index, feed.forecaster, feed.source)
    report = controller.run()
    assert report.completed and report.deadline_met
    events = controller.store.events("sim")
    kinds = [e.kind for e in events]
    assert kinds.count("degraded") == 1 and kinds.count("recovered") == 1
    # No re-plan while the source was down: the plan made before stood.
    down = [e for e in events if e.kind == "replanned" and 5 <= e.detail["slot"] < 12]
    assert down == []


def test_an_impossible_deadline_is_refused_before_anything_runs(
    shared_dir: Path, tmp_path: Path
) -> None:
    # 24 h at one server; two do 1.6× the work: 15 h at best, not 10.
    controller = sim_controller(shared_dir, tmp_path, maxReplicas=2, slack=None, deadline_hours=10)
    with pytest.raises(InfeasibleError, match="shortest deadline that works"):
        controller.prepare()
    assert controller.backend.workers == 0


@pytest.mark.parametrize(
    ("top_row", "words"),
    [
        ("2,1.1,120", "never ran at 2 servers: as profiled, 2 do 1.10× the work of 1 for 2.00×"),
        ("2,2.0,60.1", None),  # a second server that pays runs in the cleanest slots
    ],
)
def test_a_run_that_never_scaled_says_why(
    shared_dir: Path, tmp_path: Path, top_row: str, words: str | None
) -> None:
    profile = tmp_path / "p.csv"
    profile.write_text(f"nodes,throughput,power\n1,1.0,60\n{top_row}\n")
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "name: flat\nworkload: {command: 'true'}\n"
        f"profile: {profile}\n"
        "minReplicas: 1\nmaxReplicas: 2\nlength_hours: 12\nslack: 2\n"
        f"carbon: {{trace: {shared_dir / 'traces' / NL}, start: '2022-05-05T05:00Z'}}\n"
        f"checkpoint_dir: {tmp_path / 'run'}\n"
    )
    result = runner.invoke(app, ["run", str(spec), "--simulate", "--json"])
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    said = [note for note in run["notes"] if note.startswith("never ran")]
    if words is None:
        assert run["hours_by_servers"].get("2", 0) > 0 and not said
    else:
        assert "2" not in run["hours_by_servers"] and said and said[0].startswith(words)


def test_a_paced_simulation_keeps_its_state_where_it_can_be_watched(
    shared_dir: Path, tmp_path: Path
) -> None:
    from carbonscaler.control.state import STATE_FILE, StateStore

    spec = tmp_path / "job.yaml"
    spec.write_text(
        "name: paced\nworkload: {command: 'true'}\nprofile: amdahl:0.05\n"
        "minReplicas: 1\nmaxReplicas: 4\nlength_hours: 6\nslack: 2\n"
        f"carbon: {{trace: {shared_dir / 'traces' / NL}, start: '2022-05-05T05:00Z'}}\n"
        f"checkpoint_dir: {tmp_path / 'run'}\n"
    )
    watched = tmp_path / "runs" / "paced"
    args = ["run", str(spec), "--simulate", "--json"]
    began = time.monotonic()
    result = runner.invoke(app, [*args, "--pace", "0.02", "--report-dir", str(watched)])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - began >= 0.02 * 6  # at least the slots it ran, in wall time
    paced = json.loads(result.stdout)
    instant = json.loads(runner.invoke(app, args).stdout)
    assert paced["emissions_g"] == instant["emissions_g"]  # the same decisions, only slower
    store = StateStore.read_only(watched / STATE_FILE)
    try:
        assert [name for name, _ in store.runs()] == ["paced"]
    finally:
        store.close()
    assert (watched / "report.json").is_file() and not (tmp_path / "run").exists()
    for extra, message in (([], "add --simulate"), (["--simulate"], "--report-dir")):
        refused = runner.invoke(app, ["run", str(spec), *extra, "--pace", "1"])
        assert refused.exit_code == 2 and message in refused.stderr
