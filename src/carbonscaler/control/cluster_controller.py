"""Run many jobs for real on one shared capacity: the local runtime of a shared cluster.

Every decision is :class:`~carbonscaler.cluster.ClusterCore`'s — the code CarbonAdvisor's
cluster simulation runs — and every job is run by the single-job
:class:`~carbonscaler.control.controller.Controller` (its accounting, progress, crash restarts,
rescales and saved state), as a :class:`ClusterMember` whose level is the cluster's grant
instead of its own plan's. What this module adds is the loop that ties them:

1. every tick, each admitted job observes (accounts the time since its last tick, reads its
   workload's progress, settles completion and crashes: :meth:`Controller.observe`);
2. at the start of every slot of the cluster, a job arriving in it is admitted (its state
   begins at the slot's start), the cluster's carbon forecast is taken, and the core decides:
   it re-plans the set when a job arrives, finishes or drifts and grants each job its servers
   for the slot (first come, first served under the capacity);
3. each job acts on its grant (:meth:`Controller.act`: rescaling through its backend);
4. the cluster's own state — the core's decisions, the grants in force, the last slot decided
   — is written in one transaction, beside each job's own state in the same SQLite file.

Killed at any point and started again, it loads the core and every job's state, re-attaches to
the workloads still running (or accounts the time until they ended), and continues: a slot
already decided keeps its grants; the next slot is decided as it would have been.

Slots are the cluster's, from its start; a job's own time (its controller's job hours, its
plan) counts from its arrival, which falls on a slot boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from carbonscaler.backends.base import WorkloadState
from carbonscaler.clock import ControlClock, WallClock
from carbonscaler.cluster import ClusterCore, Grant
from carbonscaler.control.carbon import CarbonFeed, CarbonUnavailable
from carbonscaler.control.controller import Controller, RunReport
from carbonscaler.control.state import ControllerState, StateStore
from carbonscaler.decision import Plans, Reason, observed_rate, slot_of
from carbonscaler.planner.cluster import ClusterJob, ClusterPlan, plan_cluster_agnostic
from carbonscaler.planner.model import FloatArray, PlanningError

__all__ = ["ClusterController", "ClusterMember", "ClusterRunReport", "ShiftedFeed"]


class ShiftedFeed(CarbonFeed):
    """The cluster's carbon feed seen from a job that arrived ``offset`` slots after the
    cluster's start: the job's slot ``i`` is the cluster's slot ``offset + i``."""

    def __init__(self, feed: CarbonFeed, offset: int) -> None:
        self.feed = feed
        self.offset = offset
        self.source = feed.source

    def actual(self, slot: int) -> float:
        return self.feed.actual(self.offset + slot)

    def forecast(self, slot: int, horizon: int) -> FloatArray:
        return self.feed.forecast(self.offset + slot, horizon)


class ClusterMember(Controller):
    """One job of a shared cluster: a :class:`Controller` that runs the cluster's grant.

    It makes no plan of its own and reviews none: the cluster core plans it with the others,
    and :attr:`grant` — ``first`` servers for ``fraction`` of the slot, then ``then`` — is the
    level it runs. Everything else (accounting, progress, crashes, rescales, saved state,
    report) is the single-job controller's.

    Args:
        arrival_slot: the cluster slot the job arrives in.
        *args, **kwargs: as for :class:`Controller`; its feed must be the cluster's as seen
            from the job's arrival (:class:`ShiftedFeed`).
    """

    def __init__(self, *args: Any, arrival_slot: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrival_slot = arrival_slot
        self.grant: Grant | None = None

    def begin(self, window_slots: int, wall_start: float) -> ControllerState:
        """Start the job's state at its arrival, ``wall_start``, before the cluster plans it
        (its plan is empty until then; the cluster saves it with its decision)."""
        return self._begin(Plans.empty(1, window_slots), wall_start)

    def adopt(
        self, plans: Plans, grant: Grant, replans: int, made: Sequence[tuple[int, Reason]]
    ) -> None:
        """Take the cluster's decision for this slot: the job's plan in force, its grant, its
        re-plan count, and an event for each plan made since the last decision (``made``:
        cluster slot and reasons)."""
        state = self.state
        assert state is not None
        self.plans = plans
        self.grant = grant
        state.plan = plans.to_dict()
        state.replans = replans
        for slot, why in made:
            hours = (slot - self.arrival_slot) * self.spec.slot_hours
            kind = "planned" if Reason.FIRST in why else "replanned"
            self._event(
                kind,
                hours,
                slot=slot - self.arrival_slot,
                reasons=why.words,
                servers=state.plan["servers"][slot - self.arrival_slot :],
            )

    def level(self, hours: float, running: int) -> tuple[int, Reason]:
        """The grant's level at job time ``hours``: ``first`` for its ``fraction`` of the
        slot, then ``then``; nothing before the cluster's first decision."""
        grant = self.grant
        if grant is None:
            return 0, Reason.NONE
        _, into = slot_of(hours, self.spec.slot_hours)
        return grant.level(into), grant.reasons

    def _review(self, state: ControllerState, slot: int, hours: float) -> None:
        """The cluster reviews every job's plan together; a member reviews nothing alone."""


@dataclass(frozen=True)
class ClusterRunReport:
    """The outcome of a shared cluster's run: each job's report and the capacity they shared.

    Attributes:
        policy: the cluster's policy.
        jobs: each admitted job's report (its emissions, and its own baseline: the job
            alone at ``m`` servers from its arrival).
        agnostic_emissions_g: the cluster's baseline: carbon-agnostic first come, first
            served under the same capacity (every job at ``m`` servers from its arrival,
            waiting its turn), at the speed each job was seen to run and the intensity each
            slot was charged at.
        agnostic_deadlines_met: how many jobs that baseline finishes by their deadlines.
        capacity: servers available per slot from the cluster's start.
        servers_by_slot: mean servers all jobs held per slot (a change takes effect at the
            first tick of a slot, and a finished job holds its servers until it exits).
        granted_by_slot: servers the cluster granted per slot, all jobs together.
        slot_hours: slot length.
        completed: whether every job arrived and finished.
    """

    policy: str
    jobs: tuple[RunReport, ...]
    agnostic_emissions_g: float
    agnostic_deadlines_met: int
    capacity: tuple[int, ...]
    servers_by_slot: tuple[float, ...]
    granted_by_slot: tuple[int, ...]
    slot_hours: float
    completed: bool

    @property
    def emissions_g(self) -> float:
        return float(sum(j.emissions_g for j in self.jobs))

    @property
    def deadlines_met(self) -> int:
        return sum(j.deadline_met for j in self.jobs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the totals and every job's report."""
        agnostic = self.agnostic_emissions_g
        return {
            "policy": self.policy,
            "completed": self.completed,
            "emissions_g": self.emissions_g,
            "agnostic_emissions_g": agnostic,
            "agnostic_deadlines_met": self.agnostic_deadlines_met,
            "savings_pct": 100.0 * (1 - self.emissions_g / agnostic) if agnostic > 0 else None,
            "deadlines_met": self.deadlines_met,
            "slot_hours": self.slot_hours,
            "capacity": list(self.capacity),
            "servers_by_slot": [round(s, 6) for s in self.servers_by_slot],
            "granted_by_slot": list(self.granted_by_slot),
            "jobs": [j.to_dict() for j in self.jobs],
        }


class ClusterController:
    """Runs the jobs of a shared cluster (see the module docstring).

    Args:
        name: the cluster's name (its row in the state store).
        core: the decisions; built with the same jobs (:attr:`ClusterJob.job` the members'
            own :attr:`Controller.job`) and the capacity.
        jobs: the planner's view of each job, by name, with its arrival and deadline slots.
        members: each job's controller, by name.
        feed: the cluster's carbon feed, slot 0 being the cluster's start.
        store: where the cluster's state goes (the members' store).
        seconds_per_slot: wall seconds per slot (every member's).
        clock: the time and the waiting (default: wall time).
        on_step: called after every tick (for live views).

    Raises:
        PlanningError: if the jobs and members differ, or a member's slot length or time
            scale differs from the cluster's.
    """

    def __init__(
        self,
        name: str,
        core: ClusterCore,
        jobs: Sequence[ClusterJob],
        members: Mapping[str, ClusterMember],
        feed: CarbonFeed,
        store: StateStore,
        *,
        seconds_per_slot: float,
        clock: ControlClock | None = None,
        on_step: Callable[[ClusterController], None] | None = None,
    ) -> None:
        if sorted(j.name for j in jobs) != sorted(members):
            raise PlanningError("every job of the cluster needs its controller, and no other")
        for job in jobs:
            member = members[job.name]
            if member.job is not job.job:
                raise PlanningError(f"job {job.name!r}: plan and run it as the same job")
            if not math.isclose(member.spec.seconds_per_slot, seconds_per_slot):
                raise PlanningError(
                    f"job {job.name!r} runs {member.spec.seconds_per_slot:g} wall seconds per "
                    f"slot, the cluster {seconds_per_slot:g}: give every job the same "
                    "slot_seconds and time_scale_s"
                )
        self.name = name
        self.core = core
        self.jobs = {j.name: j for j in jobs}
        self.members = dict(members)
        self.feed = feed
        self.store = store
        self.seconds_per_slot = seconds_per_slot
        self.clock = clock or WallClock()
        self.on_step = on_step
        self.wall_start = self.clock.now()
        self.slot = -1  # the last slot decided
        self._forecast: FloatArray | None = None  # the last forecast, from self.slot
        # Servers granted in each slot decided (all jobs together; never above the capacity).
        self.granted_by_slot: dict[str, int] = {}
        self._latest = max(j.deadline_slot for j in jobs)

    # -- state ---------------------------------------------------------------------------

    def _save(self, decided: Sequence[ClusterMember] = ()) -> None:
        """Write the cluster's state, and with it the ``decided`` jobs' (one transaction)."""
        grants = {
            name: [m.grant.first, m.grant.fraction, m.grant.then, int(m.grant.reasons)]
            for name, m in self.members.items()
            if m.grant is not None
        }
        forecast = None if self._forecast is None else self._forecast.tolist()
        self.store.save_cluster(
            self.name,
            {
                "wall_start": self.wall_start,
                "slot": self.slot,
                "core": self.core.to_dict(),
                "grants": grants,
                "forecast": forecast,
                "granted_by_slot": self.granted_by_slot,
            },
            [member.to_save() for member in decided],
        )

    def prepare(self) -> None:
        """Load the cluster's state (and every admitted job's), or start afresh.

        Raises:
            PlanningError: if the saved cluster ran another policy or other jobs.
        """
        saved = self.store.load_cluster(self.name)
        if saved is None:
            self.wall_start = self.clock.now()
            self._save()
            return
        self.wall_start = float(saved["wall_start"])
        self.slot = int(saved["slot"])
        self.granted_by_slot = {k: int(v) for k, v in saved.get("granted_by_slot", {}).items()}
        self.core.restore(saved["core"])
        if saved.get("forecast") is not None:
            self._forecast = np.asarray(saved["forecast"], dtype=np.float64)
        for name in self.core.admitted():
            member = self.members[name]
            state = member.prepare()  # loads the job's state: it began when admitted
            if name in saved["grants"]:
                first, fraction, then, why = saved["grants"][name]
                member.grant = Grant(int(first), float(fraction), int(then), Reason(int(why)))
            member.plans = self.core.plans(name)
            member.reattach(state)

    # -- the loop ------------------------------------------------------------------------

    def current_slot(self) -> int:
        """The cluster's slot now."""
        return math.floor((self.clock.now() - self.wall_start) / self.seconds_per_slot + 1e-9)

    def _admitted(self) -> list[ClusterMember]:
        return [self.members[name] for name in self.core.admitted()]

    def _decide(self, slot: int) -> None:
        """Admit the jobs arriving by ``slot``, take a forecast and let the core decide."""
        for job in self.jobs.values():
            member = self.members[job.name]
            if job.arrival_slot <= slot and member.state is None:
                member.begin(
                    job.window_slots, self.wall_start + job.arrival_slot * self.seconds_per_slot
                )
        horizon = max(self._latest - slot, 1)
        try:
            forecast = self.feed.forecast(slot, horizon)
        except CarbonUnavailable:
            if self._forecast is None:
                raise
            # The last forecast, moved on to now, its last value held: plan on what was known.
            old = self._forecast[min(slot - self.slot, len(self._forecast) - 1) :]
            forecast = np.concatenate([old, np.full(max(horizon - len(old), 0), old[-1])])
        progress = {
            m.spec.name: m.progress(m.state) for m in self._admitted() if m.state is not None
        }
        before = {name: len(self.core.events(name)) for name in self.core.admitted()}
        grants = self.core.decide(slot, forecast, progress)
        self.slot = slot
        self._forecast = np.asarray(forecast, dtype=np.float64)
        for name, grant in grants.items():
            events = self.core.events(name)
            self.members[name].adopt(
                self.core.plans(name), grant, self.core.replans(name), events[before.get(name, 0) :]
            )
        for member in self._admitted():
            if member.spec.name not in grants:
                member.grant = Grant(0, 1.0, 0)
        self.granted_by_slot[str(slot)] = sum(g.held for g in grants.values())
        self._save([self.members[name] for name in grants])

    def step(self) -> bool:
        """One tick of every job; True once every job has arrived and finished."""
        seen: dict[str, WorkloadState] = {}
        for member in self._admitted():
            assert member.state is not None
            if member.state.completed:
                continue
            status = member.observe()
            if status is not None:
                seen[member.spec.name] = status
        slot = self.current_slot()
        if slot > self.slot:
            before = set(self.core.admitted())
            self._decide(slot)
            for name in set(self.core.admitted()) - before:
                status = self.members[name].observe()
                if status is not None:
                    seen[name] = status
        # Servers given back before any are taken: the jobs together never hold more than
        # the capacity while they change.
        for name in sorted(seen, key=self._change):
            self.members[name].act(seen[name])
        if self.on_step is not None:
            self.on_step(self)
        return self.done

    def _change(self, name: str) -> int:
        """How many servers job ``name`` is about to take (negative: give back)."""
        member = self.members[name]
        assert member.state is not None
        wanted, _ = member.level(member.job_hours(member.state), member.state.servers)
        return wanted - member.backend.workers

    @property
    def done(self) -> bool:
        """Every job has arrived and finished."""
        return len(self.core.admitted()) == len(self.jobs) and all(
            m.state is not None and m.state.completed for m in self.members.values()
        )

    def _sleep_s(self) -> float:
        """Until the next tick: the soonest of the jobs' own next steps and the next slot."""
        next_slot = self.wall_start + (self.current_slot() + 1) * self.seconds_per_slot
        wait = next_slot - self.clock.now()
        for member in self._admitted():
            if member.state is not None and not member.state.completed:
                wait = min(wait, member.wait_s(member.state))
        if self.clock.virtual:
            return max(wait, 1e-9)
        return max(0.002, wait + 0.001)

    def run(self) -> ClusterRunReport:
        """Run every job to completion (or until interrupted) and report."""
        self.prepare()
        while not self.step():
            self.clock.sleep(self._sleep_s())
        return self.report()

    # -- reporting -----------------------------------------------------------------------

    def report(self) -> ClusterRunReport:
        """Each admitted job's report, and the servers all held per cluster slot."""
        reports = []
        slots = self._latest
        used: dict[int, float] = {}
        for member in self._admitted():
            report = member.report()
            reports.append(report)
            for i, servers in enumerate(report.servers_by_slot):
                slot = member.arrival_slot + i
                used[slot] = used.get(slot, 0.0) + servers
                slots = max(slots, slot + 1 if servers > 0 else slots)
        baseline = self._agnostic()
        return ClusterRunReport(
            policy=self.core.policy,
            jobs=tuple(reports),
            agnostic_emissions_g=baseline.emissions_g,
            agnostic_deadlines_met=baseline.deadlines_met,
            capacity=tuple(self.core.capacity_at(i) for i in range(slots)),
            servers_by_slot=tuple(used.get(i, 0.0) for i in range(slots)),
            granted_by_slot=tuple(self.granted_by_slot.get(str(i), 0) for i in range(slots)),
            slot_hours=next(iter(self.members.values())).spec.slot_hours,
            completed=self.done,
        )

    def _agnostic(self) -> ClusterPlan:
        """Carbon-agnostic first come, first served under the capacity, for the work each
        job did at the speed it ran (as each job's own baseline corrects its profile), on
        the intensity the run was charged at (the slots it never reached: the feed's)."""
        jobs = []
        slots = self._latest
        for job in self.jobs.values():
            member = self.members[job.name]
            state = member.state
            observed = 1.0
            if state is not None:
                observed = float(
                    observed_rate(np.array(state.work_done), np.array(state.nominal_work))
                )
            work = job.job.work / observed
            jobs.append(replace(job, job=job.job.with_work(work)))
            per_slot = float(job.job.profile.throughput[job.job.min_servers]) * job.job.slot_hours
            slots += math.ceil(work / per_slot) if per_slot > 0 else 0
        charged = {
            m.arrival_slot + int(k): v
            for m in self._admitted()
            if m.state is not None
            for k, v in m.state.carbon_by_slot.items()
        }
        carbon = []
        for slot in range(slots):
            if slot in charged:
                carbon.append(charged[slot])
                continue
            try:
                carbon.append(float(self.feed.actual(slot)))
            except CarbonUnavailable:
                break
        capacity = [self.core.capacity_at(i) for i in range(len(carbon))]
        return plan_cluster_agnostic(jobs, np.array(carbon), capacity)
