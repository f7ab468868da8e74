"""The Kubernetes operator runs a job exactly as CarbonAdvisor's executor says it would.

Both call the one decision core (:mod:`carbonscaler.decision`). Here :func:`reconcile` is stepped
on a fake cluster whose Kubeflow job is a :class:`SimulatedBackend` on a :class:`VirtualClock`
(the executor's world: the profile's throughput, the rescale overhead lost at every start after
the first): creating the Kubeflow job starts the backend, a replicas patch rescales it, a
suspend patch or a deletion stops it (an MPI rescale is a deletion and a creation in two passes
at the same instant), the job's progress reaches the operator through
``carbonScalerSpec.progress`` and the Kubeflow job turns Succeeded when the backend is done. The
carbon service pushes, at every slot, the slot's actual intensity and the trace's future as a
(perfect) forecast. Passes come at every slot boundary, every planned change and the backend's
completion, and repeat at the same instant while they act. The operator's emissions, completion,
rescales, re-plans and servers per slot must be the executor's — and the local controller's,
run on a virtual clock against the same simulated workload: one advisor row == the controller ==
``reconcile``, slot by slot.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from carbonscaler.advisor.executor import Conditions, simulate_policy
from carbonscaler.backends.base import WorkloadState
from carbonscaler.backends.simulated import SimulatedBackend
from carbonscaler.clock import VirtualClock
from carbonscaler.control import Controller, JobSpec, ReplayFeed, RunReport, StateStore
from carbonscaler.decision import Plans, next_change_h, slot_of
from carbonscaler.forecast import ForecastModel, ForecastSpec, issue_forecasts, make_forecaster
from carbonscaler.kube.crd import MPI, PYTORCH, JobKind
from carbonscaler.operator.reconcile import (
    CarbonSnapshot,
    ChildState,
    CreateChild,
    Decision,
    DeleteChild,
    Observation,
    PatchChild,
    reconcile,
)
from carbonscaler.planner.model import FloatArray, Job
from carbonscaler.profile import ProfileWarning, ScalingProfile, amdahl_profile, load_profile
from carbonscaler.trace import load_trace

# The job's creation, in epoch seconds. Passes land on planned switch points inside a slot;
# near today's epoch (~1.7e9 s) a float second has only ~2e-7 s of resolution, which would put
# a pass a hair before the switch it is meant for. Ten days after the epoch keeps it exact.
T0 = 10 * 86400.0
HOUR = 3600.0


@dataclass(frozen=True)
class Case:
    kind: JobKind
    profile: str  # "nbody10k" or "amdahl:<serial fraction>"
    min_servers: int
    max_servers: int
    length_h: float
    deadline_slots: int
    overhead_s: float = 0.0
    safety_margin: float = 0.05
    replan_threshold: float = 0.05
    profile_error: float = 0.0
    pause_mode: str = "Delete"
    forecast_error: float = 0.0  # uniform noise on the pushed forecasts (0: the future itself)
    seed: int = 0  # the executor's seed for the profile error

    @property
    def rate_factor(self) -> float:
        """The real throughput over the profile's, as the executor draws it for one run."""
        if self.profile_error == 0:
            return 1.0
        rng = np.random.default_rng([self.seed, 1])
        return 1.0 + float(rng.uniform(-self.profile_error, self.profile_error, 1)[0])

    @property
    def forecast(self) -> ForecastSpec:
        if self.forecast_error == 0:
            return ForecastSpec()
        return ForecastSpec(ForecastModel.UNIFORM, self.forecast_error, seed=7)

    @property
    def conditions(self) -> Conditions:
        return Conditions(
            forecast=self.forecast,
            profile_error=self.profile_error,
            rescale_overhead_s=self.overhead_s,
            safety_margin=self.safety_margin,
            replan_threshold=self.replan_threshold,
            seed=self.seed,
        )


CASES = {
    "mpi-nbody": Case(MPI, "nbody10k", 1, 7, 10, 18),
    "mpi-nbody-overhead": Case(MPI, "nbody10k", 1, 7, 10, 18, overhead_s=90),
    "mpi-nbody-faster": Case(MPI, "nbody10k", 2, 7, 8, 14, overhead_s=60, profile_error=0.3),
    "mpi-nbody-slower": Case(
        MPI, "nbody10k", 1, 7, 8, 16, overhead_s=60, profile_error=0.3, seed=3
    ),
    "pytorch-amdahl": Case(PYTORCH, "amdahl:0.05", 2, 8, 12, 24, safety_margin=0.0),
    "pytorch-amdahl-overhead": Case(PYTORCH, "amdahl:0.1", 1, 8, 12, 20, overhead_s=120),
    "pytorch-suspend-faster": Case(
        PYTORCH,
        "amdahl:0.02",
        1,
        6,
        16,
        30,
        overhead_s=30,
        profile_error=0.25,
        replan_threshold=0.1,
        pause_mode="Suspend",
    ),
    "mpi-nbody-noisy-forecast": Case(
        MPI, "nbody10k", 1, 7, 10, 20, overhead_s=45, forecast_error=0.3
    ),
}


def make_profile(shared_dir: Path, name: str) -> ScalingProfile:
    if name == "nbody10k":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ProfileWarning)  # not concave; greedy is used anyway
            return load_profile(shared_dir / "profiles" / "nbody10k.csv")
    return amdahl_profile(8, float(name.split(":")[1]))


def resource(case: Case, job: Job) -> dict[str, Any]:
    container = {"name": "worker", "image": "carbonscaler:dev"}
    template = {"template": {"spec": {"containers": [container]}}}
    if case.kind is MPI:
        spec: dict[str, Any] = {
            "mpiReplicaSpecs": {
                "Launcher": {"replicas": 1, **template},
                "Worker": {"replicas": 1, **template},
            }
        }
    else:
        spec = {
            "elasticPolicy": {"rdzvBackend": "c10d"},
            "pytorchReplicaSpecs": {"Worker": {"replicas": 1, **template}},
        }
    return {
        "apiVersion": "carbonscaler.io/v1",
        "kind": case.kind.kind,
        "metadata": {
            "name": "job",
            "namespace": "jobs",
            "uid": "uid-1",
            "creationTimestamp": "1970-01-11T00:00:00Z",  # T0
        },
        "spec": spec,
        "carbonScalerSpec": {
            "minReplicas": case.min_servers,
            "maxReplicas": case.max_servers,
            "deadline": case.deadline_slots,
            "progress": 0,
            "profileName": "profile",
            "policy": "scaler",
            "work": job.work,
            "rescaleOverheadSeconds": case.overhead_s,
            "safetyMargin": case.safety_margin,
            "replanThreshold": case.replan_threshold,
            "pauseMode": case.pause_mode,
        },
    }


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeCluster:
    """The resource, its Kubeflow job (a simulated workload) and the carbon service."""

    def __init__(
        self, case: Case, job: Job, trace: FloatArray, start: int, rate_factor: float
    ) -> None:
        self.case, self.job, self.trace, self.start = case, job, trace, start
        self.kind = case.kind
        self.clock = VirtualClock(T0)
        self.backend = SimulatedBackend(
            job.profile,
            job.work,
            self.clock,
            seconds_per_slot=HOUR,
            slot_hours=1.0,
            restart_overhead_s=case.overhead_s,
            rate_factor=rate_factor,
        )
        self.resource = resource(case, job)
        self.child: dict[str, Any] | None = None
        self.timeline: list[tuple[float, int]] = [(0.0, 0)]  # (job hours, workers) from then
        self.completion_h: float | None = None
        self.passes = 0

    @property
    def hours(self) -> float:
        return (self.clock.now() - T0) / HOUR

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.resource.get("status") or {})

    def snapshot(self) -> CarbonSnapshot:
        """The carbon service's push at the current slot: its actual value and a forecast to
        the deadline issued then (the future itself, or the executor's noisy forecast)."""
        slot, _ = slot_of(self.hours, 1.0)
        at = self.start + slot
        horizon = max(self.case.deadline_slots - slot, 1)
        future = issue_forecasts(self.case.forecast, self.trace, [at], horizon, 1.0)[0]
        return CarbonSnapshot(float(self.trace[at]), tuple(future), T0 + slot * HOUR, "trace")

    def child_state(self) -> ChildState | None:
        if self.child is None:
            return None
        return ChildState.from_body(self.kind, self.child, "uid-1")

    def step(self) -> Decision:
        self.passes += 1
        self.resource["carbonScalerSpec"]["progress"] = self.backend.progress_pct()
        if self.child is not None and self.backend.poll() is WorkloadState.DONE:
            self.child["status"] = {"conditions": [{"type": "Succeeded", "status": "True"}]}
            self.completion_h = self.hours
        decision = reconcile(
            Observation(
                kind=self.kind,
                resource=copy.deepcopy(self.resource),
                now=self.clock.now(),
                child=self.child_state(),
                carbon=self.snapshot(),
                profile=self.job.profile,
            )
        )
        for op in decision.operations:
            self.apply(op)
        self.resource["status"] = copy.deepcopy(decision.status)
        workers = 0 if self.completion_h is not None else self.backend.workers
        if workers != self.timeline[-1][1]:
            self.timeline.append((self.hours, workers))
        return decision

    def apply(self, op: CreateChild | PatchChild | DeleteChild) -> None:
        key = self.kind.replica_specs_key
        if isinstance(op, CreateChild):
            assert self.child is None
            self.child = copy.deepcopy(op.body)
            self.backend.start(int(self.child["spec"][key]["Worker"]["replicas"]))
        elif isinstance(op, PatchChild):
            assert self.child is not None
            merge(self.child, op.patch)
            spec = op.patch["spec"]
            if (spec.get("runPolicy") or {}).get("suspend"):
                self.backend.stop()
            else:
                self.backend.rescale(int(spec[key]["Worker"]["replicas"]))
        else:
            # Foreground deletion: the pods checkpoint and stop, then the job is gone (here at
            # once, so an MPI relaunch is the next pass at the same instant).
            assert self.child is not None
            self.backend.stop()
            self.child = None

    def next_pass_h(self) -> float:
        """The next slot boundary, planned change or completion."""
        hours = self.hours
        slot, _ = slot_of(hours, 1.0)
        candidates = [slot + 1.0]
        plans = Plans.from_dict(self.status["plan"])
        change = next_change_h(plans, 0, hours, self.backend.workers, self.job)
        if change is not None:
            candidates.append(change)
        eta = self.backend.eta_s()
        if eta is not None:
            candidates.append(hours + eta / HOUR)
        return min(candidates)

    def run(self) -> None:
        while True:
            for _ in range(5):  # repeat at the same instant while the pass acts
                if not self.step().operations:
                    break
            else:
                pytest.fail(f"passes at {self.hours:.6f} h never settle")
            if self.status.get("phase") in ("Succeeded", "Failed"):
                return
            assert self.passes < 10_000
            target = T0 + self.next_pass_h() * HOUR
            assert target > self.clock.now(), "the next pass must be later"
            self.clock.advance(target - self.clock.now())

    def servers_by_slot(self, slots: int) -> FloatArray:
        """Mean workers in each of the first ``slots`` slots, from the timeline."""
        points = [*self.timeline, (np.inf, 0)]
        mean = np.zeros(slots)
        for (begin, workers), (end, _) in itertools.pairwise(points):
            for i in range(slots):
                overlap = min(end, i + 1.0) - max(begin, float(i))
                if overlap > 0:
                    mean[i] += workers * overlap
        return mean


def controller_run(case: Case, job: Job, trace: FloatArray, start: int) -> RunReport:
    """The local controller on a virtual clock, against the same world as the cluster."""
    spec = JobSpec.model_validate(
        {
            "name": "equivalence",
            "workload": {"command": "true"},
            "profile": case.profile,
            "minReplicas": case.min_servers,
            "maxReplicas": case.max_servers,
            "work": job.work,
            "deadline": case.deadline_slots,
            "carbon": {"trace": "the-fixture-trace.csv", "start": "2022-01-01T00:00Z"},
            "checkpoint_dir": "unused",
            "safety_margin": case.safety_margin,
            "replan_threshold": case.replan_threshold,
            "rescale_overhead_s": case.overhead_s,
        }
    )
    wanted = case.forecast
    if wanted.model is ForecastModel.PERFECT:
        forecaster = make_forecaster(ForecastModel.PERFECT)
    else:
        forecaster = make_forecaster(wanted.model, error=wanted.error, seed=wanted.seed)
    clock = VirtualClock(T0)
    backend = SimulatedBackend(
        job.profile,
        job.work,
        clock,
        seconds_per_slot=HOUR,
        slot_hours=1.0,
        restart_overhead_s=case.overhead_s,
        rate_factor=case.rate_factor,
    )
    feed = ReplayFeed(trace, start, forecaster, "NL 2022")
    controller = Controller(
        spec,
        backend,
        feed,
        job.profile,
        job.work,
        StateStore(":memory:"),
        clock=clock,
        measure_overhead=False,  # plan with the stated overhead, as the operator does
    )
    return controller.run()


@pytest.fixture(scope="module")
def nl_trace(shared_dir: Path) -> FloatArray:
    path = shared_dir / "traces" / "electricitymaps-fedstale" / "NL_2022_hourly.csv"
    return np.asarray(load_trace(path).values, dtype=np.float64)


@pytest.mark.parametrize("name", list(CASES))
def test_the_operator_runs_a_job_as_the_executor_simulates_it(
    name: str, nl_trace: FloatArray, shared_dir: Path
) -> None:
    case = CASES[name]
    profile = make_profile(shared_dir, case.profile)
    job = Job.from_length(profile, case.length_h, case.min_servers, case.max_servers)
    rng = np.random.default_rng(sum(map(ord, name)))
    starts = rng.integers(0, len(nl_trace) - 3 * case.deadline_slots, size=3)
    conditions = case.conditions
    assert (case.rate_factor > 1) == ("faster" in name) and (case.rate_factor < 1) == (
        "slower" in name
    )
    for start in starts:
        expected = simulate_policy(
            "carbonscaler",
            job,
            nl_trace,
            np.array([start]),
            case.deadline_slots,
            conditions,
            record_slots=case.deadline_slots,
        )
        cluster = FakeCluster(case, job, nl_trace, int(start), case.rate_factor)
        cluster.run()
        status = cluster.status
        where = f"{name}, start {start}"
        assert status["phase"] == "Succeeded", where
        assert cluster.completion_h is not None
        assert abs(cluster.completion_h - expected.completion_hours[0]) < 0.01, where
        assert status["emissionsG"] == pytest.approx(expected.emissions_g[0], rel=1e-3), where
        assert status["energyKWh"] == pytest.approx(expected.energy_kwh[0], rel=1e-3), where
        assert int(status.get("rescales", 0)) == expected.rescales[0], where
        assert int(status.get("replans", 0)) == expected.replans[0], where
        assert expected.servers_by_slot is not None
        np.testing.assert_allclose(
            cluster.servers_by_slot(case.deadline_slots),
            expected.servers_by_slot[0],
            rtol=0,
            atol=1e-6,
            err_msg=where,
        )
        local = controller_run(case, job, nl_trace, int(start))
        assert local.completion_hours is not None
        assert abs(local.completion_hours - expected.completion_hours[0]) < 0.01, where
        assert local.emissions_g == pytest.approx(expected.emissions_g[0], rel=1e-3), where
        assert local.rescales == expected.rescales[0], where
        assert local.replans == expected.replans[0], where
        np.testing.assert_allclose(
            local.servers_by_slot[: case.deadline_slots],
            expected.servers_by_slot[0],
            rtol=0,
            atol=1e-6,
            err_msg=f"controller: {where}",
        )


def test_the_cases_cover_rescales_replans_and_both_kinds(
    nl_trace: FloatArray, shared_dir: Path
) -> None:
    """The comparison above is not vacuous: the executor's runs rescale, re-plan, pause."""
    rescales = replans = 0
    for name, case in CASES.items():
        profile = make_profile(shared_dir, case.profile)
        job = Job.from_length(profile, case.length_h, case.min_servers, case.max_servers)
        rng = np.random.default_rng(sum(map(ord, name)))
        starts = rng.integers(0, len(nl_trace) - 3 * case.deadline_slots, size=3)
        outcome = simulate_policy(
            "carbonscaler",
            job,
            nl_trace,
            starts,
            case.deadline_slots,
            case.conditions,
        )
        rescales += int(outcome.rescales.sum())
        replans += int(outcome.replans.sum())
    assert rescales > 50 and replans > 6
    assert {c.kind for c in CASES.values()} == {MPI, PYTORCH}
