"""A shared cluster's decisions on Kubernetes, pure (no I/O, no kopf): the cluster's pass
(:func:`~carbonscaler.operator.cluster.decide_cluster`) and its members' passes
(:func:`~carbonscaler.operator.reconcile.reconcile` with a ``Membership``) on a virtual clock,
with simulated Kubeflow jobs, in the order the handlers run them."""

from __future__ import annotations

import copy
import datetime
import json
from dataclasses import replace
from typing import Any

import pytest

from carbonscaler.cluster import ClusterCore, Grant
from carbonscaler.decision import Progress, Reason, Rules
from carbonscaler.kube.crd import MPI, PYTORCH, CarbonScalerClusterSpec, JobKind
from carbonscaler.operator import cluster as cluster_module
from carbonscaler.operator.cluster import (
    ClusterDecision,
    ClusterObservation,
    Member,
    decide_cluster,
    member_key,
    merge_patch,
    others_held,
    pass_order,
)
from carbonscaler.operator.reconcile import CarbonSnapshot, CreateChild, job_finished
from carbonscaler.profile import linear_profile
from test_operator_reconcile import Cluster as JobSim
from test_operator_reconcile import merge, mpi_resource, pytorch_resource

T0 = 1_700_000_000.0  # the cluster's creation: its slot 0 starts here
HOUR = 3600.0
# Two clean slots (2, 3), two cleaner ones (6, 7), dirty elsewhere.
CARBON = (500.0, 480.0, 100.0, 110.0, 520.0, 510.0, 90.0, 95.0) + (530.0,) * 8
PROFILE = linear_profile(4)
CAPACITY = 4


def iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def carbon(at: float) -> CarbonSnapshot:
    slot = int((at - T0) // HOUR)
    return CarbonSnapshot(CARBON[slot], CARBON[slot:], at, source="test")


def cluster_resource(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "carbonscaler.io/v1",
        "kind": "CarbonScalerCluster",
        "metadata": {
            "name": "shared",
            "namespace": "jobs",
            "uid": "uid-shared",
            "creationTimestamp": iso(T0),
        },
        "spec": {
            "capacity": CAPACITY,
            "safetyMargin": 0.0,
            "rescaleOverheadSeconds": 0,
            "timeLimitSeconds": 60,  # a loaded machine must not cut a joint plan short
            **spec,
        },
    }


def workers(sim: JobSim) -> int:
    """Workers a simulated Kubeflow job holds (a suspended or succeeded one's pods are
    gone)."""
    if sim.child is None or (sim.child["spec"].get("runPolicy") or {}).get("suspend"):
        return 0
    conditions = (sim.child.get("status") or {}).get("conditions") or []
    if any(c["type"] == "Succeeded" for c in conditions):
        return 0
    return sim.workers()


class World:
    """A cluster, its members and their Kubeflow jobs, stepped as the operator's cluster pass
    runs them: decide, then each member's pass in :func:`pass_order`, each told what the
    others hold. The statuses are kept as the API server keeps them: the cluster's by its
    merge patches, round-tripped through JSON."""

    def __init__(self, **spec: Any) -> None:
        self.cluster = cluster_resource(**spec)
        self.sims: dict[str, JobSim] = {}
        self.decisions: list[ClusterDecision] = []
        self.peak = 0  # most workers the Kubeflow jobs held together after any pass

    def add(self, name: str, at: float, kind: JobKind = MPI, **settings: Any) -> JobSim:
        make = mpi_resource if kind is MPI else pytorch_resource
        resource = make(cluster="shared", **settings)
        resource["metadata"].update(name=name, uid=f"uid-{name}", creationTimestamp=iso(at))
        sim = JobSim(kind, resource, PROFILE)
        self.sims[member_key(kind, name)] = sim
        return sim

    def job(self, name: str, kind: JobKind = MPI) -> JobSim:
        return self.sims[member_key(kind, name)]

    def held(self) -> int:
        return sum(workers(sim) for sim in self.sims.values())

    def _finish_done(self, at: float) -> None:
        """The training operator: a job whose server time covers its work has succeeded."""
        for sim in self.sims.values():
            status = sim.resource.get("status") or {}
            if sim.child is None or sim.deleting or "accountedUntil" not in status:
                continue
            since = datetime.datetime.fromisoformat(status["accountedUntil"]).timestamp()
            nominal = float(status["nominalWork"]) + sim.workers() * (at - since) / HOUR
            if nominal >= float(status["workRequired"]) - 1e-9:
                sim.child["status"] = {"conditions": [{"type": "Succeeded", "status": "True"}]}

    def step(self, at: float) -> ClusterDecision:
        for sim in self.sims.values():
            if sim.deleting:
                sim.gone()  # a deleted Kubeflow job's pods have stopped by the next pass
        self._finish_done(at)
        members = [Member(s.kind, copy.deepcopy(s.resource), PROFILE) for s in self.sims.values()]
        observed = ClusterObservation(copy.deepcopy(self.cluster), at, members, carbon(at))
        decision = decide_cluster(observed)
        old = self.cluster.get("status") or {}
        stored = copy.deepcopy(old)
        merge(stored, json.loads(json.dumps(decision.status_patch)))
        assert stored == decision.status  # the merge patch is the whole change
        self.cluster["status"] = stored
        self.decisions.append(decision)
        granted = sum(
            m.grant.held for m in decision.memberships.values() if m.grant and m.grant_slot
        )
        assert granted <= CAPACITY
        held = {
            key: int(((sim.resource.get("status") or {}).get("cluster") or {}).get("held", 0))
            for key, sim in self.sims.items()
            if not job_finished(sim.resource)
        }
        for key in pass_order(decision.memberships, held):
            sim = self.sims[key]
            if job_finished(sim.resource):
                continue
            membership = replace(decision.memberships[key], others_held=others_held(held, key))
            done = sim.step(at, snapshot=carbon(at), cluster=membership)
            held[key] = int((done.status.get("cluster") or {}).get("held", 0))
            self.peak = max(self.peak, self.held())
            assert self.held() <= CAPACITY, f"{at}: {self.held()} workers after {key}'s pass"
        return decision

    def run(self, hours: list[float]) -> None:
        """Two passes a slot (a minute into it and a minute later), as the timer ticks."""
        for h in hours:
            for offset in (60.0, 120.0):
                self.step(T0 + h * HOUR + offset)


def events(decision: ClusterDecision, key: str | None = None) -> list[tuple[str, str]]:
    notes = decision.events if key is None else decision.member_events.get(key, [])
    return [(e.reason, e.message) for e in notes]


def status(sim: JobSim) -> dict[str, Any]:
    return dict(sim.resource.get("status") or {})


def conditions(sim: JobSim) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status(sim).get("conditions", [])}


# -- joint planning --------------------------------------------------------------------------


def test_a_new_job_is_planned_with_the_others_at_once_mid_slot() -> None:
    """b arrives half-way through slot 1: the pass its creation triggers admits it and plans
    every job together — a's plan changes (it gives the cleanest slot to b) — instead of
    waiting for the next slot boundary."""
    world = World()
    a = world.add("a", T0)  # 4 h at one worker, 8 slots
    first = world.step(T0 + 60)
    assert events(first) == [
        ("Replanned", "slot 0: csmpi/a arrived: csmpi/a planned together in 4 servers")
    ]
    assert events(first, "csmpi/a") == [
        (
            "Planned",
            "cluster shared, slot 0 (arrival): workers per slot from its slot 0: 0×6 4 0",
        )
    ]
    assert status(a)["plan"]["servers"] == [0, 0, 0, 0, 0, 0, 4, 0]
    assert status(a)["phase"] == "Pending" and a.child is None
    world.step(T0 + HOUR + 60)  # a boundary with nothing new: the plans stand
    assert world.decisions[-1].events == [] and status(a).get("replans", 0) == 0

    b = world.add("b", T0 + 1.5 * HOUR, deadline=6)  # due 7.5 h after the cluster's start
    joint = world.step(T0 + 1.5 * HOUR + 1)
    assert events(joint) == [
        (
            "Replanned",
            "slot 1: csmpi/b arrived: csmpi/a, csmpi/b planned together in 4 servers",
        )
    ]
    assert events(joint, "csmpi/a") == [
        (
            "Replanned",
            "cluster shared, slot 1 (arrival): workers per slot from its slot 1: 0×6 4",
        )
    ]
    assert status(a)["plan"]["servers"] == [0, 0, 0, 0, 0, 0, 0, 4]
    assert status(a)["replans"] == 1
    # b arrives in the slot it was created in, its deadline rounded down to a slot start.
    assert status(b)["plan"]["servers"] == [0, 0, 0, 0, 0, 4]
    assert status(b)["startTime"] == iso(T0 + HOUR)
    assert status(b)["deadlineTime"] == iso(T0 + 7 * HOUR)
    assert status(b)["cluster"] == {
        "name": "shared",
        "slot": 1,
        "granted": 0,
        "queued": False,
        "arrivalSlot": 1,
        "deadlineSlot": 7,
        "held": 0,
    }
    saved = world.cluster["status"]
    assert saved["jobs"]["csmpi/b"]["arrivalSlot"] == 1
    assert saved["core"]["policy"] == "joint" and set(saved["core"]["members"]) == {
        "csmpi/a",
        "csmpi/b",
    }


def test_three_jobs_above_the_capacity_never_hold_more_than_it() -> None:
    """Three jobs of up to 4 workers each on 4 servers: every grant and every Kubeflow job
    stays within the capacity at every pass, a job that must give servers back does so
    before another raises into them, and every job finishes by its deadline."""
    world = World(safetyMargin=0.05)
    world.add("a", T0)
    world.add("b", T0 + HOUR, PYTORCH, deadline=6, pauseMode="Suspend")
    world.add("c", T0 + 2 * HOUR, deadline=6, lengthHours=5)
    world.run([h for h in range(0, 12)])
    assert world.peak == CAPACITY  # the capacity was used in full, never more
    for key, sim in world.sims.items():
        final = status(sim)
        assert final["phase"] == "Succeeded", (key, final["message"])
        # Done by the deadline: seen so at the first pass after it, never late.
        assert final["completionTime"] <= iso(iso_epoch(final["deadlineTime"]) + 60), key
        assert not any(e.reason == "DeadlineMissed" for d in sim.decisions for e in d.events)
    # The three were planned together on each arrival, and re-planned when one left.
    reasons = [e.reason for d in world.decisions for e in d.events]
    assert reasons.count("Replanned") >= 3
    assert world.cluster["status"]["jobs"] == {} and world.cluster["status"]["active"] == 0


def test_a_job_raises_its_workers_only_into_servers_others_have_released() -> None:
    """Slot 6 moves c's two servers to a and b. c's pass goes first (it gives servers back):
    its MPIJob is deleted, but its pods still hold the servers until they stop. a raises into
    the two that are free; b, whose turn comes next, waits for c's, then starts at the next
    pass, once they are gone — the Kubeflow jobs never hold more than the capacity."""
    world = World(safetyMargin=0.05)
    a = world.add("a", T0)
    b = world.add("b", T0 + HOUR, deadline=6)
    c = world.add("c", T0 + 2 * HOUR, deadline=6, lengthHours=5)
    world.run([0, 1, 2, 3, 4, 5])
    assert [workers(a), workers(b), workers(c)] == [0, 0, 2]
    decision = world.step(T0 + 6 * HOUR + 60)
    grants = {k: (m.grant.first, m.grant.then) for k, m in decision.memberships.items() if m.grant}
    assert grants == {"csmpi/a": (2, 2), "csmpi/b": (2, 1), "csmpi/c": (0, 0)}
    assert c.deleting and status(c)["cluster"]["held"] == 2  # stopping: still holding
    assert workers(a) == 2 and b.child is None
    assert status(b)["message"] == (
        "waiting for 2 of cluster shared's servers that other jobs are releasing (4 of 4 held "
        "by them)"
    )
    world.step(T0 + 6 * HOUR + 120)
    assert [workers(a), workers(b), workers(c)] == [2, 2, 0]
    assert status(b)["phase"] == "Running" and status(c)["cluster"]["held"] == 0


# -- the queue -------------------------------------------------------------------------------


def test_a_job_over_the_capacity_waits_without_a_kubeflow_job() -> None:
    """Per-job plans (policy carbonscaler: each job planned alone, as without a cluster) all
    want slot 6: a (first come) gets its 4 workers, b and c are queued: Pending, condition
    Queued, an Event, and no Kubeflow job — so no pod waits for servers."""
    world = World(policy="carbonscaler")
    a = world.add("a", T0)
    b = world.add("b", T0 + 1.5 * HOUR, deadline=6)
    c = world.add("c", T0 + 2 * HOUR, deadline=6, lengthHours=5)
    world.step(T0 + 60)
    world.step(T0 + 1.5 * HOUR + 1)
    world.step(T0 + 2 * HOUR + 1)
    assert [e.reason for d in world.decisions for e in d.events] == ["Admitted"] * 3
    for h in range(2, 6):
        world.step(T0 + h * HOUR + 60)
    assert status(b)["plan"]["servers"] == [0, 0, 0, 0, 0, 4]  # slot 6, as a's
    assert status(c)["plan"]["servers"] == [0, 0, 0, 0, 4, 1]
    decision = world.step(T0 + 6 * HOUR + 60)
    assert {k: m.grant for k, m in decision.memberships.items()} == {
        "csmpi/a": Grant(4, 1.0, 4),
        "csmpi/b": Grant(0, 1.0, 0, Reason.QUEUED),
        "csmpi/c": Grant(0, 1.0, 0, Reason.QUEUED),
    }
    assert workers(a) == 4 and status(a)["phase"] == "Running"
    for sim in (b, c):
        current = status(sim)
        assert sim.child is None
        assert not any(isinstance(op, CreateChild) for d in sim.decisions for op in d.operations)
        assert current["phase"] == "Pending"
        assert current["message"] == (
            "slot 6: waiting for capacity: cluster shared's 4 servers are granted to jobs "
            "queued before it (its plan: 4 workers now, granted 0)"
        )
        queued = {c["type"]: c for c in current["conditions"]}["Queued"]
        assert (queued["status"], queued["reason"]) == ("True", "WaitingForCapacity")
        assert current["cluster"]["queued"] is True and current["cluster"]["granted"] == 0
        assert [e.reason for e in sim.decisions[-1].events] == ["Queued"]
    assert world.cluster["status"]["queued"] == 2
    assert world.cluster["status"]["granted"] == 4
    assert world.cluster["status"]["message"] == (
        "slot 6: 3 jobs, 4 of 4 servers granted, 2 queued"
    )


def test_a_smaller_capacity_applies_at_once() -> None:
    """The capacity is edited down mid-slot: the cluster decides at once, the queue holds
    the grants to it, and the job over it gives the servers back in the same pass."""
    world = World(policy="carbonscaler")
    a = world.add("a", T0)
    world.run([0, 1, 2, 3, 4, 5, 6])
    assert workers(a) == 4
    world.cluster["spec"]["capacity"] = 2
    decision = world.step(T0 + 6.5 * HOUR)
    assert decision.memberships["csmpi/a"].grant == Grant(2, 1.0, 2, Reason.QUEUED)
    assert a.deleting or workers(a) <= 2  # MPI: stopped, relaunched at 2 next pass
    world.step(T0 + 6.5 * HOUR + 60)
    assert workers(a) == 2 and world.cluster["status"]["capacity"] == 2


# -- departures, refusals, restarts ----------------------------------------------------------


def test_a_member_that_is_deleted_frees_its_servers_at_once() -> None:
    world = World()
    a = world.add("a", T0)
    world.add("b", T0 + 1.5 * HOUR, deadline=6)
    world.step(T0 + 60)
    world.step(T0 + 1.5 * HOUR + 1)
    assert status(a)["plan"]["servers"] == [0, 0, 0, 0, 0, 0, 0, 4]
    del world.sims["csmpi/b"]
    left = world.step(T0 + 1.7 * HOUR)
    assert events(left) == [
        ("Replanned", "slot 1: csmpi/b left: csmpi/a planned together in 4 servers")
    ]
    assert status(a)["plan"]["servers"] == [0, 0, 0, 0, 0, 0, 4, 0]  # the cleanest slot again
    assert set(world.cluster["status"]["jobs"]) == {"csmpi/a"}
    assert set(world.cluster["status"]["core"]["members"]) == {"csmpi/a"}


def test_a_job_the_cluster_could_never_run_fails_instead_of_blocking_the_queue() -> None:
    world = World(capacity=2)
    big = world.add("big", T0, minReplicas=3)
    late = world.add("late", T0, lengthHours=20, maxReplicas=2)
    world.step(T0 + 60)
    assert status(big)["phase"] == "Failed"
    assert "minReplicas (3) is more than cluster shared ever has" in status(big)["message"]
    assert status(late)["phase"] == "Failed"
    assert "(at most 2 servers in cluster shared)" in status(late)["message"]
    assert {c["reason"] for c in status(late)["conditions"] if c["type"] == "Failed"} == {
        "Infeasible"
    }
    assert world.cluster["status"]["jobs"] == {}


def test_a_member_waits_for_a_missing_cluster_and_must_share_its_slot_length() -> None:
    world = World()
    odd = world.add("odd", T0, slotSeconds=1800)
    world.step(T0 + 60)
    assert status(odd)["phase"] == "Failed"
    assert "cluster shared plans in slots of 3600 s" in status(odd)["message"]
    alone = JobSim(MPI, mpi_resource(cluster="elsewhere"), PROFILE)
    decision = alone.step(T0 + 60, snapshot=carbon(T0 + 60))
    assert decision.operations == [] and decision.status["phase"] == "Pending"
    assert (
        "CarbonScalerCluster elsewhere in namespace jobs: it does not exist"
        in (decision.status["message"])
    )
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "WaitingForCluster")]


def test_the_cluster_spec_takes_one_capacity() -> None:
    assert CarbonScalerClusterSpec.model_validate({"capacity": 4}).capacities == 4
    schedule = CarbonScalerClusterSpec.model_validate({"capacitySchedule": [4, 2, 6]})
    assert [schedule.capacity_at(i) for i in (0, 1, 2, 9)] == [4, 2, 6, 6]
    for bad in ({}, {"capacity": 4, "capacitySchedule": [4]}, {"capacitySchedule": [-1]}):
        with pytest.raises(ValueError):
            CarbonScalerClusterSpec.model_validate(bad)
    world = World(capacity=None, capacitySchedule=[4, 4], policy="nope")
    world.add("a", T0)
    decision = world.step(T0 + 60)
    assert [e.reason for e in decision.events] == ["InvalidSpec"]
    assert world.cluster["status"]["phase"] == "Failed"
    assert "spec.policy" in world.cluster["status"]["message"]
    assert status(world.job("a"))["phase"] == "Pending"


def test_rebuilt_from_the_status_at_every_pass_the_cluster_decides_as_one_core_kept() -> None:
    """The operator keeps no memory: each pass rebuilds the cluster core from the cluster's
    status (as the API server stores it, after the merge patches and a JSON round trip). Its
    grants and plans are those of one core kept in memory through the whole run, fed the
    same forecasts and progress — so an operator restarted at any pass continues exactly."""
    calls: list[tuple[int, list[float], dict[str, Progress], set[str], dict[str, Any]]] = []
    jobs: dict[str, Any] = {}
    stand_ins: list[Any] = []  # the stand-ins of jobs that left (fed to the core as done)
    decide = ClusterCore.decide
    placeholder = cluster_module._placeholder

    def recording(self: ClusterCore, slot: int, forecast: Any, progress: Any) -> Any:
        specs = [*self._pending, *(m.spec for m in self._members.values())]
        left = {spec.name for spec in specs if any(spec is s for s in stand_ins)}
        for spec in specs:
            if spec.name not in left:
                jobs.setdefault(spec.name, spec)
        grants = decide(self, slot, forecast, progress)
        made = {name: (grant, self.plans(name).to_dict()) for name, grant in grants.items()}
        calls.append((slot, [float(x) for x in forecast], dict(progress), left, made))
        return grants

    def standing_in(key: str, arrival: int, deadline: int, slot_hours: float) -> Any:
        stand_ins.append(placeholder(key, arrival, deadline, slot_hours))
        return stand_ins[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cluster_module.ClusterCore, "decide", recording)
        patch.setattr(cluster_module, "_placeholder", standing_in)
        world = World(safetyMargin=0.05)
        world.add("a", T0)
        world.add("b", T0 + HOUR, deadline=6)
        world.add("c", T0 + 2 * HOUR, deadline=6, lengthHours=5)
        world.run(list(range(12)))
    assert len(calls) >= 8 and set(jobs) == {"csmpi/a", "csmpi/b", "csmpi/c"}
    spec = CarbonScalerClusterSpec.model_validate(world.cluster["spec"])
    rules = Rules(replan_threshold=spec.replan_threshold, safety_margin=spec.safety_margin)
    kept = ClusterCore(list(jobs.values()), CAPACITY, rules=rules, time_limit_s=60.0)
    for slot, forecast, progress, left, made in calls:
        seen = {
            name: Progress(jobs[name].job.work) if name in left else p
            for name, p in progress.items()
        }
        grants = kept.decide(slot, forecast, seen)
        assert grants == {name: grant for name, (grant, _) in made.items()}, slot
        for name, (_, plan) in made.items():
            assert kept.plans(name).to_dict() == plan, (slot, name)


def test_merge_patch_removes_what_is_gone() -> None:
    old = {"jobs": {"a": {"x": 1}, "b": {"x": 2}}, "slot": 3, "gone": True}
    new = {"jobs": {"a": {"x": 1}}, "slot": 4}
    patch = merge_patch(old, new)
    assert patch == {"jobs": {"b": None}, "slot": 4, "gone": None}
    merged = copy.deepcopy(old)
    merge(merged, patch)
    assert merged == new


def test_a_new_capacity_plans_every_job_again_under_joint() -> None:
    world = World(capacity=8)
    a = world.add("a", T0)
    b = world.add("b", T0, deadline=6)
    world.step(T0 + 60)
    assert status(a)["plan"]["servers"] == [0, 0, 0, 0, 0, 0, 4, 0]
    assert status(b)["plan"]["servers"] == [0, 0, 4, 0, 0, 0]
    world.cluster["spec"]["capacity"] = 2
    edited = world.step(T0 + 0.5 * HOUR)
    assert events(edited) == [
        (
            "Replanned",
            "slot 0: the capacity changed: csmpi/a, csmpi/b planned together in 2 servers",
        )
    ]
    assert status(a)["plan"]["servers"] == [0, 0, 0, 0, 0, 0, 2, 2]
    assert status(b)["plan"]["servers"] == [0, 0, 2, 2, 0, 0]
    assert world.cluster["status"]["core"]["capacity"] == [2]
    calm = world.step(T0 + 0.6 * HOUR)  # planned in this capacity: nothing more to say
    assert events(calm) == []
