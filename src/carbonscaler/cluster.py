"""The decision core of a shared cluster: many elastic jobs, one capacity, online.

Jobs arrive over time and share ``K[i]`` servers in slot ``i``. At the start of every slot
:meth:`ClusterCore.decide` admits the jobs that have arrived, decides which plans to remake, and
grants each job what it may run in the slot. Everything a single job decides — the planning
targets (observed pace, safety margin), the re-plan triggers, the running rules (the top level
past the deadline, an overrun keeps its level) and the plans themselves — is
:mod:`carbonscaler.decision`'s; this module adds only what a capacity brings:

* **Policies.** ``joint`` plans every active job together with
  :func:`~carbonscaler.planner.cluster.plan_cluster` (least total carbon within the capacity and
  every deadline) whenever a job arrives, a job finishes (freeing servers), or a job's own
  trigger fires (behind, ahead, forecast drift), and when the capacity changed (a core restored
  with another capacity than it saved). A per-job policy (``carbonscaler``,
  ``suspend-resume``, ``agnostic``, ``exact``) plans and re-plans each job alone, as if it owned
  the cluster, and is then queued: what CarbonScaler does on a shared cluster without this
  module.
* **The queue.** In every slot the jobs are served in order of arrival (then of input): a job
  gets the servers its plan asks for while they fit; the first job that does not fit gets the
  highest level of its ladder that does (possibly none), and every job after it waits — strict
  first come, first served, so a waiting job is never starved by later ones. A job held below
  its plan falls behind it, and its own triggers re-plan it. Carbon-agnostic under this queue
  is :func:`~carbonscaler.planner.cluster.plan_cluster_agnostic`.
* **Infeasible sets.** When the joint plan cannot fit every job with its safety margin, the
  bare work is planned; when even that cannot fit, the jobs the planner names as unable to
  finish run at their top level (``OUT_OF_REACH``, as a single job does) and the rest are
  planned in the capacity left.

Nothing here does I/O or reads a clock: a world — simulated (:mod:`carbonscaler.advisor.cluster`)
or real — reports each job's progress at every slot boundary and runs what it is granted.
Slots are absolute (from the cluster's start); each job's plan is kept in its own slots from
its arrival, as :mod:`carbonscaler.decision` keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from carbonscaler.decision import (
    Plans,
    Progress,
    Reason,
    Rules,
    Targets,
    adopt_rows,
    first_plans,
    level_stretch,
    plan_targets,
    review_rows,
    switched,
    top_level,
    triggers_rows,
)
from carbonscaler.planner.batch import BatchPlan, plans_from_schedules, rescale_losses
from carbonscaler.planner.cluster import (
    ClusterInfeasibleError,
    ClusterJob,
    ClusterPlan,
    plan_cluster,
)
from carbonscaler.planner.model import FloatArray, IntArray, PlanningError
from carbonscaler.planner.policies import Policy

__all__ = ["CLUSTER_POLICIES", "JOINT", "ClusterCore", "Grant"]

JOINT = "joint"
"""The policy that plans all active jobs of the cluster together."""
CLUSTER_POLICIES = (JOINT, "carbonscaler", "suspend-resume", "agnostic", "exact")
"""Policies a shared cluster can run: ``joint``, or a single-job policy per job, queued."""
_ONE = np.zeros(1, dtype=np.int64)


@dataclass(frozen=True)
class Grant:
    """What one job runs in a slot: ``first`` servers for ``fraction`` of it, then ``then``.

    ``reasons`` says why the levels are what they are where that is not simply the plan:
    ``LATE``, ``OVERRUN`` (the running rules) or ``QUEUED`` (held back by the capacity).
    """

    first: int
    fraction: float
    then: int
    reasons: Reason = Reason.NONE

    def level(self, into: float) -> int:
        """The level ``into`` (0..1) the slot."""
        return self.then if switched(into, self.fraction) else self.first

    @property
    def held(self) -> int:
        """Servers held through the slot (a partly used slot holds its higher level)."""
        return max(self.first, self.then) if self.fraction < 1.0 else self.first


@dataclass
class _Member:
    """One admitted job: its plan (in its own slots from arrival) and what happened to it."""

    spec: ClusterJob
    plans: Plans
    finished: bool = False
    replans: int = 0
    events: list[tuple[int, Reason]] = field(default_factory=list)

    @property
    def window(self) -> int:
        return self.spec.window_slots

    def relative(self, slot: int) -> int:
        return slot - self.spec.arrival_slot


class ClusterCore:
    """The online decisions of one shared cluster (see the module docstring).

    Args:
        jobs: every job that will arrive, with absolute arrival and deadline slots and the
            same slot length; they are admitted when their arrival slot starts.
        capacity: servers per slot from the cluster's start; the last value holds after it.
        policy: ``joint`` or a single-job policy applied to each job (:data:`CLUSTER_POLICIES`).
        rules: the re-plan threshold and safety margin (its policy is replaced by ``policy``;
            ``joint`` plans with CarbonScaler's rules).
        overhead_h: job hours of work a rescale loses, which plans reserve.
        time_limit_s: seconds one joint plan may take (the fast solver's local search, and
            HiGHS when the fast construction cannot place every job); online, a good plan
            now beats a better one later.

    Raises:
        PlanningError: for an unknown policy, repeated job names, mixed slot lengths or an
            empty or negative capacity.
    """

    def __init__(
        self,
        jobs: Sequence[ClusterJob],
        capacity: int | Sequence[int] | IntArray,
        *,
        policy: str = JOINT,
        rules: Rules = Rules(),
        overhead_h: float = 0.0,
        time_limit_s: float = 2.0,
    ) -> None:
        per_job = Policy.CARBONSCALER
        if policy != JOINT:
            try:
                per_job = Policy.parse(policy)
            except ValueError:
                per_job = Policy.STATIC  # not runnable: refused below
            if per_job.value not in CLUSTER_POLICIES:
                raise PlanningError(
                    f"policy {policy!r} cannot run a shared cluster; use one of "
                    f"{', '.join(CLUSTER_POLICIES)}"
                )
            policy = per_job.value
        names = [j.name for j in jobs]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise PlanningError(f"job names must be unique; repeated: {', '.join(repeated)}")
        if len({j.job.slot_hours for j in jobs}) > 1:
            raise PlanningError("every job of a shared cluster needs the same slot length")
        cap = np.atleast_1d(np.asarray(capacity, dtype=np.int64))
        if cap.ndim != 1 or not len(cap) or (cap < 0).any():
            raise PlanningError("capacity: one or more server counts, none negative")
        self.policy = policy
        self.rules = replace(rules, policy=per_job)
        self.overhead_h = overhead_h
        self.time_limit_s = time_limit_s
        self._capacity = cap
        # The queue: order of arrival, then of input.
        self._pending = sorted(jobs, key=lambda j: j.arrival_slot)
        self._members: dict[str, _Member] = {}
        self._cause = Reason.NONE  # a re-plan owed at the next decision (a new capacity)

    # -- what the world asks -------------------------------------------------------------

    def capacity_at(self, slot: int) -> int:
        """Servers available in ``slot`` (the last given value holds after the list)."""
        return int(self._capacity[min(slot, len(self._capacity) - 1)])

    def plans(self, name: str) -> Plans:
        """The plan in force for job ``name`` (its own slots from arrival).

        Raises:
            KeyError: if the job has not been admitted.
        """
        return self._members[name].plans

    def replans(self, name: str) -> int:
        """How many times job ``name`` was re-planned after its first plan."""
        return self._members[name].replans

    def events(self, name: str) -> list[tuple[int, Reason]]:
        """Job ``name``'s plans: the slot each was made at and why."""
        return list(self._members[name].events)

    @property
    def done(self) -> bool:
        """Whether every job has arrived and finished."""
        return not self._pending and all(m.finished for m in self._members.values())

    def admitted(self) -> list[str]:
        """The jobs admitted so far, in queue order."""
        return list(self._members)

    def finished(self, name: str) -> bool:
        """Whether job ``name`` has done its work."""
        return self._members[name].finished

    # -- saving and restoring ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything decided so far, JSON-ready: what a restarted controller or operator
        needs (with the same jobs and settings) to continue where this core was.

        Plans are kept, not recomputed: a joint plan made under a time limit depends on the
        machine's speed at the time.
        """
        return {
            "policy": self.policy,
            "capacity": [int(k) for k in self._capacity],
            "members": {
                name: {
                    "plans": m.plans.to_dict(),
                    "finished": m.finished,
                    "replans": m.replans,
                    "events": [[s, int(why)] for s, why in m.events],
                }
                for name, m in self._members.items()
            },
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from :meth:`to_dict`'s form, on a core built with the same jobs.

        A core built with another capacity than the saved one re-plans its jobs together at
        its next decision (``CAPACITY``).

        Raises:
            PlanningError: if the saved core ran another policy or names a job this core
                does not have.
        """
        if saved.get("policy") != self.policy:
            raise PlanningError(
                f"the saved cluster ran policy {saved.get('policy')!r}, not {self.policy!r}; "
                "continue it with the same policy, or start afresh"
            )
        members: Mapping[str, Any] = saved.get("members", {})
        specs = {j.name: j for j in self._pending}
        specs.update({name: m.spec for name, m in self._members.items()})
        unknown = sorted(set(members) - set(specs))
        if unknown:
            raise PlanningError(
                f"the saved cluster has jobs {', '.join(unknown)} that this one does not; "
                "continue it with the same jobs, or start afresh"
            )
        self._members = {}
        for spec in sorted(specs.values(), key=lambda j: j.arrival_slot):
            data = members.get(spec.name)
            if data is None:
                continue
            plans = Plans.from_dict(data["plans"])
            if plans.slots != spec.window_slots:
                raise PlanningError(
                    f"job {spec.name!r}: the saved plan covers {plans.slots} slots but its "
                    f"window now has {spec.window_slots}; the job changed since it was saved"
                )
            self._members[spec.name] = _Member(
                spec,
                plans,
                finished=bool(data["finished"]),
                replans=int(data["replans"]),
                events=[(int(s), Reason(int(why))) for s, why in data["events"]],
            )
        self._pending = [j for j in self._pending if j.name not in self._members]
        if "capacity" in saved and list(saved["capacity"]) != [int(k) for k in self._capacity]:
            self._cause |= Reason.CAPACITY

    def decide(
        self, slot: int, forecast: FloatArray, progress: Mapping[str, Progress]
    ) -> dict[str, Grant]:
        """Admit, re-plan and grant at the start of ``slot``.

        Args:
            slot: the slot starting, from the cluster's start (never earlier than the last).
            forecast: intensity forecast issued now for slots ``slot, slot + 1, ...``; it must
                reach the latest deadline of the admitted jobs (gCO2eq/kWh).
            progress: each admitted job's progress so far, by name (a job missing here has
                not run yet). A job whose work is done is finished and gets nothing more.

        Returns:
            A grant for every admitted, unfinished job, in queue order.

        Raises:
            PlanningError: if the forecast is too short.
        """
        forecast = np.asarray(forecast, dtype=np.float64)
        arrived = self._admit(slot, forecast)
        departed = self._settle(progress)
        active = [m for m in self._members.values() if not m.finished]
        if self.policy == JOINT:
            cause, self._cause = self._cause, Reason.NONE
            if arrived:
                cause |= Reason.ARRIVAL
            if departed:
                cause |= Reason.DEPARTURE
            drifting = {} if cause else self._joint_triggers(active, slot, forecast, progress)
            if drifting and not self._replan_drifting(active, drifting, slot, forecast, progress):
                cause = Reason.NONE
                for why in drifting.values():
                    cause |= why
            if cause:
                self._plan_jointly(active, active, slot, forecast, progress, cause)
        else:
            for member in active:
                if member.spec.arrival_slot < slot:
                    self._review_alone(member, slot, forecast, progress)
        return self._grants(active, slot, progress)

    # -- admission and departure ---------------------------------------------------------

    def _admit(self, slot: int, forecast: FloatArray) -> list[_Member]:
        arrived = []
        while self._pending and self._pending[0].arrival_slot <= slot:
            spec = self._pending.pop(0)
            plans = Plans.empty(1, spec.window_slots)
            member = _Member(spec, plans)
            self._members[spec.name] = member
            arrived.append(member)
            if self.policy != JOINT:
                window = self._window_forecast(member, slot, forecast)
                member.plans, reasons = first_plans(
                    spec.job, self.rules, window[None, :], overhead_h=self.overhead_h
                )
                member.events.append((slot, Reason(int(reasons[0]))))
        return arrived

    def _settle(self, progress: Mapping[str, Progress]) -> bool:
        """Mark jobs whose work is done; whether any left the cluster."""
        departed = False
        for name, member in self._members.items():
            seen = progress.get(name)
            if member.finished or seen is None:
                continue
            if seen.work_done >= member.spec.job.work * (1 - 1e-9):
                member.finished = True
                departed = True
        return departed

    # -- planning ------------------------------------------------------------------------

    def _window_forecast(self, member: _Member, slot: int, forecast: FloatArray) -> FloatArray:
        """The forecast for the rest of ``member``'s window, from ``slot``."""
        need = member.window - member.relative(slot)
        if len(forecast) < need:
            raise PlanningError(
                f"the forecast issued at slot {slot} has {len(forecast)} slots; job "
                f"{member.spec.name!r} needs {need} (to its deadline)"
            )
        return forecast[:need]

    def _review_alone(
        self, member: _Member, slot: int, forecast: FloatArray, progress: Mapping[str, Progress]
    ) -> None:
        r = member.relative(slot)
        if r >= member.window:
            return
        seen = progress.get(member.spec.name, Progress())
        again, reasons = review_rows(
            member.plans,
            member.spec.job,
            self.rules,
            _ONE,
            r,
            work_done=np.array([seen.work_done]),
            nominal_work=np.array([seen.nominal_work]),
            running=np.array([seen.running], dtype=np.int64),
            started=np.array([seen.started]),
            forecast=self._window_forecast(member, slot, forecast)[None, :],
            overhead_h=self.overhead_h,
        )
        if len(again):
            member.replans += 1
            member.events.append((slot, Reason(int(reasons[0]))))

    def _joint_triggers(
        self,
        active: Sequence[_Member],
        slot: int,
        forecast: FloatArray,
        progress: Mapping[str, Progress],
    ) -> dict[str, Reason]:
        """The single-job triggers that fire, by job."""
        fired: dict[str, Reason] = {}
        for member in active:
            r = member.relative(slot)
            if member.spec.arrival_slot == slot or r >= member.window:
                continue
            seen = progress.get(member.spec.name, Progress())
            reasons = triggers_rows(
                member.plans,
                member.spec.job,
                self.rules,
                _ONE,
                r,
                np.array([seen.work_done]),
                self._window_forecast(member, slot, forecast)[None, :],
            )
            if reasons[0]:
                fired[member.spec.name] = Reason(int(reasons[0]))
        return fired

    def _replan_drifting(
        self,
        active: Sequence[_Member],
        drifting: Mapping[str, Reason],
        slot: int,
        forecast: FloatArray,
        progress: Mapping[str, Progress],
    ) -> bool:
        """Re-plan each drifting job alone in the capacity the others' plans leave (the
        others keep theirs: a drifting job does not reshuffle the cluster); False if one of
        them cannot fit there, and the whole set must be planned again."""
        for member in active:
            why = drifting.get(member.spec.name)
            if why is None:
                continue
            others = [m for m in active if m is not member]
            if not self._plan_jointly(others, [member], slot, forecast, progress, why):
                return False
        return True

    def _plan_jointly(
        self,
        active: Sequence[_Member],
        planned: Sequence[_Member],
        slot: int,
        forecast: FloatArray,
        progress: Mapping[str, Progress],
        cause: Reason,
    ) -> bool:
        """One plan for the ``planned`` jobs inside their windows, in the capacity left by
        the other ``active`` jobs: those past their deadlines (which run at their top level,
        first in the queue) and, when only some jobs are planned, the others' plans in force.

        Returns:
            False, changing nothing, when only some jobs are planned and they cannot all
            finish in what is left; True otherwise (a whole set that cannot fit falls back as
            the module docstring says).
        """
        inside = [m for m in planned if m.relative(slot) < m.window]
        if not inside:
            return True
        partial = any(m not in planned for m in active)
        targets = {
            m.spec.name: plan_targets(
                m.spec.job,
                self.rules,
                np.array([progress.get(m.spec.name, Progress()).work_done]),
                np.array([progress.get(m.spec.name, Progress()).nominal_work]),
            )
            for m in inside
        }
        horizon = max(m.window - m.relative(slot) for m in inside)
        if len(forecast) < horizon:
            raise PlanningError(
                f"the forecast issued at slot {slot} has {len(forecast)} slots; the jobs need "
                f"{horizon} (to the latest deadline)"
            )
        capacity = self._capacity_left(active, inside, slot, horizon, progress)
        made = self._joint_plans(
            inside, slot, forecast[:horizon], capacity, targets, progress, strict=partial
        )
        if made is None:
            return False
        for member in inside:
            r = member.relative(slot)
            first_plan = not member.events
            reasons = adopt_rows(
                member.plans,
                member.spec.job,
                self.rules,
                _ONE,
                r,
                made[member.spec.name],
                self._window_forecast(member, slot, forecast)[None, :],
                np.array([progress.get(member.spec.name, Progress()).work_done]),
                targets[member.spec.name],
            )
            why = cause | Reason(int(reasons[0])) | (Reason.FIRST if first_plan else Reason.NONE)
            member.events.append((slot, why))
            if not first_plan:
                member.replans += 1
        return True

    def _capacity_left(
        self,
        active: Sequence[_Member],
        planned: Sequence[_Member],
        slot: int,
        horizon: int,
        progress: Mapping[str, Progress],
    ) -> IntArray:
        """Capacity per slot from ``slot`` for the ``planned`` jobs: the cluster's, minus what
        the other active jobs hold — a job inside its window what its plan in force holds, a
        late job its top level until it is done (at the pace observed so far)."""
        cap = np.array([self.capacity_at(slot + i) for i in range(horizon)], dtype=np.int64)
        for member in active:
            if member in planned:
                continue
            r = member.relative(slot)
            if r < member.window:
                plans = member.plans
                held = np.where(
                    plans.fraction[0, r:] < 1.0,
                    np.maximum(plans.servers[0, r:], plans.after[0, r:]),
                    plans.servers[0, r:],
                )[:horizon]
                cap[: len(held)] -= held
                continue
            job = member.spec.job
            top = top_level(job, self.rules)
            seen = progress.get(member.spec.name, Progress())
            targets = plan_targets(
                job, self.rules, np.array([seen.work_done]), np.array([seen.nominal_work])
            )
            per_slot = float(job.profile.throughput[top]) * job.slot_hours
            slots = int(np.ceil(targets.bare[0] / per_slot - 1e-9)) if per_slot > 0 else horizon
            cap[: min(slots, horizon)] -= top
        return np.maximum(cap, 0)

    def _joint_plans(
        self,
        inside: Sequence[_Member],
        slot: int,
        forecast: FloatArray,
        capacity: IntArray,
        targets: Mapping[str, Targets],
        progress: Mapping[str, Progress],
        *,
        strict: bool,
    ) -> dict[str, BatchPlan] | None:
        """Each job's part of the joint plan as a one-row plan from now to its deadline;
        with ``strict``, None where not every job fits even without its margin.

        Like a single job's plan, it covers the work its own rescales will lose: the set is
        planned once more with each job's target raised by its plan's losses, kept if it fits.
        """
        extra = dict.fromkeys((m.spec.name for m in inside), 0.0)

        def cluster_jobs(work: str, leave_out: frozenset[str]) -> list[ClusterJob]:
            return [
                ClusterJob(
                    m.spec.name,
                    m.spec.job.with_work(
                        max(
                            float(getattr(targets[m.spec.name], work)[0]) + extra[m.spec.name],
                            m.spec.job.work * 1e-9,
                        )
                    ),
                    0,
                    m.window - m.relative(slot),
                    m.spec.weight,
                )
                for m in inside
                if m.spec.name not in leave_out
            ]

        def attempt(jobs: list[ClusterJob], *, late: bool = False) -> ClusterPlan:
            # Only the bare work's fallback needs to know which jobs are late; the searches
            # for a capacity or an extension that would fit are of no use online.
            try:
                return plan_cluster(
                    jobs,
                    forecast,
                    capacity,
                    time_limit_s=self.time_limit_s,
                    explain="late" if late else "none",
                )
            except ClusterInfeasibleError:
                raise
            except PlanningError as trouble:  # out of time, undecided: as if it did not fit
                raise ClusterInfeasibleError(
                    str(trouble),
                    late_jobs=(),
                    work_required={},
                    work_possible={},
                    capacity_needed=None,
                    deadline_extension_hours=None,
                ) from trouble

        fell_back = False
        out_of_reach: frozenset[str] = frozenset()
        plan: ClusterPlan | None
        try:
            plan = attempt(cluster_jobs("work", out_of_reach))
            if self.overhead_h > 0:
                extra.update(self._losses(inside, slot, plan, progress))
                if any(extra.values()):
                    try:
                        plan = attempt(cluster_jobs("work", out_of_reach))
                    except ClusterInfeasibleError:
                        extra = dict.fromkeys(extra, 0.0)  # the losses do not fit: keep it
        except ClusterInfeasibleError:
            if strict:
                return None
            fell_back = True
            plan = None
            # The bare work; then without the jobs the planner names as unable to finish,
            # until the rest fits (each round drops at least one job).
            while plan is None:
                rest = cluster_jobs("bare", out_of_reach)
                if not rest:
                    break
                try:
                    plan = attempt(rest, late=True)
                except ClusterInfeasibleError as err:
                    out_of_reach |= frozenset(err.late_jobs) or {rest[-1].name}
        made: dict[str, BatchPlan] = {}
        for member in inside:
            name = member.spec.name
            slots = member.window - member.relative(slot)
            if plan is None or name in out_of_reach:
                rows = plans_from_schedules([None], slots)
            else:
                rows = plans_from_schedules([plan.job(name).schedule], slots)
            made[name] = replace(rows, fell_back=np.array([fell_back]))
        return made

    def _losses(
        self,
        inside: Sequence[_Member],
        slot: int,
        plan: ClusterPlan,
        progress: Mapping[str, Progress],
    ) -> dict[str, float]:
        """Work each job's part of ``plan`` would lose to its rescales (profile units)."""
        out = {}
        for member in inside:
            name, job = member.spec.name, member.spec.job
            rows = plans_from_schedules(
                [plan.job(name).schedule], member.window - member.relative(slot)
            )
            seen = progress.get(name, Progress())
            lost = rescale_losses(
                rows,
                job.profile.throughput,
                self.overhead_h,
                job.slot_hours,
                np.array([seen.running], dtype=np.int64),
                np.array([seen.started]),
            )
            out[name] = float(lost[0]) * job.slot_hours
        return out

    # -- the queue -----------------------------------------------------------------------

    def _grants(
        self, active: Sequence[_Member], slot: int, progress: Mapping[str, Progress]
    ) -> dict[str, Grant]:
        free = self.capacity_at(slot)
        blocked = False
        grants: dict[str, Grant] = {}
        for member in active:  # admitted in queue order
            job = member.spec.job
            r = member.relative(slot)
            seen = progress.get(member.spec.name, Progress())
            levels, reasons = level_stretch(
                member.plans,
                job,
                self.rules,
                _ONE,
                r,
                1,
                np.array([seen.running], dtype=np.int64),
            )
            fraction = float(member.plans.fraction[0, r]) if r < member.window else 1.0
            why = Reason(int(reasons[0, 0]) | int(reasons[0, 1]))
            wanted = Grant(int(levels[0, 0]), fraction, int(levels[0, 1]), why)
            if not blocked and wanted.held <= free:
                grant = wanted
            else:
                ladder = self.rules.planning_job(job).ladder().levels
                room = 0 if blocked else free
                fits = int(ladder[ladder <= room].max())
                grant = Grant(
                    min(wanted.first, fits),
                    fraction,
                    min(wanted.then, fits),
                    why | Reason.QUEUED,
                )
                blocked = True
            free -= grant.held
            grants[member.spec.name] = grant
        return grants
