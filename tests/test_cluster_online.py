"""A shared cluster online: the cluster core's decisions in the advisor's world.

Exact assertions on small instances: carbon-agnostic under the queue is the offline
first-come-first-served baseline; a per-job policy on an uncontended cluster is the single-job
advisor's run of each job; no policy exceeds the capacity; the joint planner keeps deadlines
that per-job plans, queued, miss.
"""

from __future__ import annotations

import numpy as np
import pytest

from carbonscaler.advisor import Conditions, ForecastSpec, simulate_policy
from carbonscaler.advisor.cluster import (
    cluster_summary,
    compare_cluster_policies,
    simulate_cluster,
)
from carbonscaler.cluster import CLUSTER_POLICIES, JOINT, ClusterCore
from carbonscaler.decision import Progress, Reason
from carbonscaler.planner.cluster import ClusterJob, plan_cluster_agnostic
from carbonscaler.planner.model import Job, PlanningError
from carbonscaler.profile import ScalingProfile, amdahl_profile, linear_profile


def _diurnal(days: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hours = np.arange(24 * days)
    return np.clip(
        300 + 150 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 25, len(hours)), 20, None
    )


def _stream(count: int, seed: int, top: int = 6) -> list[ClusterJob]:
    rng = np.random.default_rng(seed)
    jobs = []
    for k in range(count):
        arrival = int(rng.integers(0, 48))
        length = float(rng.integers(3, 12))
        job = Job.from_length(amdahl_profile(8, float(rng.uniform(0.0, 0.2))), length, 1, top)
        jobs.append(ClusterJob(f"j{k}", job, arrival, arrival + int(np.ceil(1.5 * length)) + 1))
    return jobs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("capacity", [3, 8, 100])
def test_agnostic_online_is_the_offline_first_come_first_served(seed: int, capacity: int) -> None:
    jobs = _stream(10, seed)
    trace = _diurnal(8, seed)
    online = simulate_cluster(jobs, trace, capacity, "agnostic")
    offline = plan_cluster_agnostic(jobs, trace, capacity)
    assert online.emissions_g == pytest.approx(offline.emissions_g, rel=1e-9)
    for ran, planned in zip(online.jobs, offline.jobs, strict=True):
        assert ran.completion_hours == pytest.approx(planned.schedule.completion_hours)
        assert ran.deadline_met == planned.deadline_met


@pytest.mark.parametrize("policy", ["carbonscaler", "suspend-resume"])
def test_a_per_job_policy_without_contention_is_the_single_job_advisor(policy: str) -> None:
    jobs = _stream(8, 3)
    trace = _diurnal(8, 3)
    cond = Conditions(rescale_overhead_s=60.0, safety_margin=0.05)
    outcome = simulate_cluster(jobs, trace, 1000, policy, cond)
    for job, ran in zip(jobs, outcome.jobs, strict=True):
        alone = simulate_policy(
            policy, job.job, trace, np.array([job.arrival_slot]), job.window_slots, cond
        )
        assert ran.emissions_g == pytest.approx(float(alone.emissions_g[0]), rel=1e-9)
        assert ran.completion_hours == pytest.approx(float(alone.completion_hours[0]))
        assert ran.rescales == int(alone.rescales[0])


@pytest.mark.parametrize("policy", CLUSTER_POLICIES)
def test_no_policy_holds_more_than_the_capacity(policy: str) -> None:
    jobs = _stream(12, 4)
    capacity = [5] * 30 + [2] * 10 + [7]
    outcome = simulate_cluster(jobs, _diurnal(10, 4), capacity, policy)
    assert (outcome.servers_used <= outcome.capacity + 1e-9).all()
    assert outcome.capacity[35] == 2 and outcome.capacity[200] == 7


def test_joint_keeps_deadlines_that_queued_per_job_plans_miss() -> None:
    # Two jobs want the same clean hours; together they exceed the capacity there.
    carbon = np.array([500.0, 500, 500, 100, 100, 500, 500, 500, 500, 500, 500, 500])
    linear = linear_profile(4)
    jobs = [
        ClusterJob("a", Job.from_length(linear, 8, 1, 4), 0, 6),
        ClusterJob("b", Job.from_length(linear, 8, 1, 4), 1, 6),
    ]
    queued = simulate_cluster(jobs, carbon, 4, "carbonscaler")
    joint = simulate_cluster(jobs, carbon, 4, JOINT)
    assert queued.deadline_misses >= 1
    assert joint.deadline_misses == 0
    assert (joint.servers_used <= 4 + 1e-9).all()


def test_joint_without_contention_is_close_to_per_job_plans() -> None:
    jobs = _stream(10, 5)
    trace = _diurnal(8, 5)
    joint, alone = compare_cluster_policies(jobs, trace, 1000, [JOINT, "carbonscaler"])
    assert joint.deadline_misses == alone.deadline_misses == 0
    assert joint.emissions_g == pytest.approx(alone.emissions_g, rel=0.02)


def test_a_set_that_cannot_fit_runs_the_rest_and_reports_misses() -> None:
    linear = linear_profile(2)
    # Three jobs of 6 server-hours each in a 4-slot window, 2 servers: only one fits.
    jobs = [ClusterJob(f"j{k}", Job.from_length(linear, 6, 1, 2), 0, 4) for k in range(3)]
    outcome = simulate_cluster(jobs, np.full(20, 200.0), 2, JOINT)
    assert outcome.deadline_misses == 2
    assert all(np.isfinite(j.completion_hours) for j in outcome.jobs)  # late, but done
    assert (outcome.servers_used <= 2 + 1e-9).all()


def test_noisy_worlds_are_deterministic_and_summarised() -> None:
    jobs = _stream(8, 6)
    trace = _diurnal(8, 6)
    cond = Conditions(
        forecast=ForecastSpec("uniform", 0.1, seed=3), profile_error=0.05, rescale_overhead_s=30
    )
    first = compare_cluster_policies(jobs, trace, 6, cond=cond)
    again = compare_cluster_policies(jobs, trace, 6, cond=cond)
    assert [o.emissions_g for o in first] == [o.emissions_g for o in again]
    rows = cluster_summary(first)
    assert {r["policy"] for r in rows} == {"agnostic", "suspend-resume", "carbonscaler", JOINT}
    agnostic = next(r for r in rows if r["policy"] == "agnostic")
    assert agnostic["savings_vs_agnostic_pct"] == 0.0
    # Deadline-meeting policies come first.
    misses = [r["deadline_misses"] > 0 for r in rows]
    assert misses == sorted(misses)
    joint = next(o for o in first if o.policy == JOINT)
    assert sum(j.replans for j in joint.jobs) > 0  # arrivals and departures re-plan the set


def test_the_core_refuses_bad_input() -> None:
    job = ClusterJob("a", Job.from_length(linear_profile(2), 2, 1, 2), 0, 4)
    with pytest.raises(PlanningError, match="cannot run a shared cluster"):
        ClusterCore([job], 2, policy="static")
    with pytest.raises(PlanningError, match="repeated: a"):
        ClusterCore([job, job], 2)
    with pytest.raises(PlanningError, match="none negative"):
        ClusterCore([job], [-1])
    core = ClusterCore([job], 2)
    with pytest.raises(PlanningError, match="has 2 slots; the jobs need 4"):
        core.decide(0, np.full(2, 100.0), {})
    with pytest.raises(ValueError, match="deadline falls at slot 4"):
        simulate_cluster([job], np.full(3, 100.0), 2)


def test_the_core_says_why_it_planned() -> None:
    linear = linear_profile(2)
    jobs = [
        ClusterJob("a", Job.from_length(linear, 6, 1, 2), 0, 10),
        ClusterJob("b", Job.from_length(linear, 2, 1, 2), 2, 10),
    ]
    core = ClusterCore(jobs, 2)
    carbon = np.full(12, 100.0)

    def on_plan(slot: int) -> Progress:
        # Progress exactly as planned, at the level the grant ran.
        done = float(core.plans("a").planned_done[0, slot])
        return Progress(done, done, grants["a"].first, done > 0)

    grants = core.decide(0, carbon[:10], {})
    grants = core.decide(1, carbon[1:10], {"a": on_plan(1)})
    core.decide(2, carbon[2:10], {"a": on_plan(2)})
    (slot, why), *_ = core.events("a")
    assert slot == 0 and Reason.FIRST in why and Reason.ARRIVAL in why
    assert [s for s, _ in core.events("a")] == [0, 2]  # b's arrival re-planned a
    assert core.replans("a") == 1 and core.replans("b") == 0


def test_a_measured_profile_with_idle_power_plans_and_runs() -> None:
    # A node-power profile (idle once + per worker) is not concave; the cluster still runs it.
    profile = ScalingProfile(np.array([0.0, 1.0, 1.8]), np.array([0.0, 45.0, 60.0]), name="node")
    jobs = [ClusterJob(f"n{k}", Job.from_length(profile, 4, 1, 2), k, k + 8) for k in range(4)]
    outcome = simulate_cluster(jobs, _diurnal(3, 7), 3, JOINT)
    assert outcome.deadline_misses == 0


@pytest.mark.parametrize("policy", [JOINT, "carbonscaler"])
def test_a_restored_core_continues_exactly_where_the_saved_one_was(policy: str) -> None:
    import json

    jobs = _stream(8, 5)
    trace = _diurnal(6, 5)
    horizon = max(j.deadline_slot for j in jobs)
    slow = {j.name: 0.8 + 0.05 * k for k, j in enumerate(jobs)}  # every job drifts

    def run(core: ClusterCore, slots: range, seen: dict[str, Progress]) -> list[dict[str, tuple]]:
        out = []
        for slot in slots:
            grants = core.decide(slot, trace[slot:horizon], seen)
            out.append(
                {n: (g.first, g.fraction, g.then, int(g.reasons)) for n, g in grants.items()}
            )
            for name, g in grants.items():
                job = next(j for j in jobs if j.name == name).job
                tp = job.profile.throughput
                nominal = g.fraction * tp[g.first] + (1 - g.fraction) * tp[g.then]
                was = seen.get(name, Progress())
                done = min(was.work_done + slow[name] * nominal, job.work)
                seen[name] = Progress(
                    done, was.nominal_work + nominal, g.then, was.started or g.held > 0
                )
        return out

    # A generous time limit: a joint plan cut short by a loaded machine may differ.
    whole = run(ClusterCore(jobs, 4, policy=policy, time_limit_s=60.0), range(horizon), {})
    first = ClusterCore(jobs, 4, policy=policy, time_limit_s=60.0)
    seen: dict[str, Progress] = {}
    before = run(first, range(20), seen)
    saved = json.loads(json.dumps(first.to_dict()))
    again = ClusterCore(jobs, 4, policy=policy, time_limit_s=60.0)
    again.restore(saved)
    assert again.admitted() == first.admitted()
    after = run(again, range(20, horizon), dict(seen))
    assert before + after == whole
    assert [again.replans(n) for n in again.admitted()] == [
        len(again.events(n)) - 1 for n in again.admitted()
    ]


def test_a_saved_core_is_refused_by_another_cluster() -> None:
    jobs = _stream(3, 6)
    core = ClusterCore(jobs, 4)
    core.decide(50, _diurnal(6, 6)[50:], {})
    saved = core.to_dict()
    with pytest.raises(PlanningError, match="ran policy 'joint', not 'agnostic'"):
        ClusterCore(jobs, 4, policy="agnostic").restore(saved)
    with pytest.raises(PlanningError, match=f"jobs {jobs[0].name} that this one does not"):
        ClusterCore(jobs[1:], 4).restore(saved)


def test_a_core_restored_with_another_capacity_plans_its_jobs_again() -> None:
    linear = linear_profile(4)
    jobs = [
        ClusterJob("a", Job.from_length(linear, 6, 1, 4), 0, 12),
        ClusterJob("b", Job.from_length(linear, 4, 1, 4), 0, 12),
    ]
    carbon = _diurnal(1, 9)
    core = ClusterCore(jobs, 6, time_limit_s=60.0)
    core.decide(0, carbon[:12], {})
    saved = core.to_dict()
    same = ClusterCore(jobs, 6, time_limit_s=60.0)
    same.restore(saved)
    on_plan: dict[str, Progress] = {}
    for name in "ab":  # progress exactly as planned: no trigger fires
        done = float(core.plans(name).planned_done[0, 1])
        on_plan[name] = Progress(done, done, int(core.plans(name).servers[0, 0]), done > 0)
    same.decide(1, carbon[1:12], on_plan)
    assert [len(same.events(n)) for n in "ab"] == [1, 1]
    smaller = ClusterCore(jobs, 2, time_limit_s=60.0)
    smaller.restore(saved)
    grants = smaller.decide(1, carbon[1:12], on_plan)
    for name in "ab":
        slot, why = smaller.events(name)[-1]
        assert slot == 1 and Reason.CAPACITY in why
    held = sum(
        np.where(
            smaller.plans(n).fraction[0, 1:] < 1,
            np.maximum(smaller.plans(n).servers[0, 1:], smaller.plans(n).after[0, 1:]),
            smaller.plans(n).servers[0, 1:],
        )
        for n in "ab"
    )
    assert (held <= 2).all() and sum(g.held for g in grants.values()) <= 2
