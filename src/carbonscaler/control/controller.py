"""The engine-agnostic controller: run one job to its plan, re-plan, account, persist.

Time is *job time*: hours since the job's arrival, wall seconds scaled by the spec's time scale
(``time_scale_s`` wall seconds per slot; real time when 0). At every tick the controller

1. accounts the energy and carbon of the time since the last tick at the servers that were
   running (power from the meter, or the profile's ``P(k)`` labelled as an estimate), splitting
   at slot boundaries so each slot is charged its own intensity;
2. reads the workload's progress and state; a crashed workload is restarted from its checkpoint;
3. at each slot boundary takes a new forecast and re-plans from the true progress when the
   forecast or the progress drifted from the plan beyond the threshold, or whenever the job is
   behind — if even the top level cannot meet the deadline any more it runs at the top level
   and says so;
4. sets the server count the plan asks for now (rescaling through the backend);
5. writes its whole state in one SQLite transaction.

A controller killed at any point and started again loads that state, re-attaches to the
workload if it kept running, accounts the gap at the servers it had, and continues.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from carbonscaler.control.backend import Backend, WorkloadState
from carbonscaler.control.carbon import CarbonFeed, CarbonUnavailable
from carbonscaler.control.spec import JobSpec
from carbonscaler.control.state import ControllerState, Event, StateStore
from carbonscaler.planner.baselines import plan_agnostic
from carbonscaler.planner.batch import (
    BatchPlan,
    batch_greedy_with_overhead,
    plans_from_schedules,
)
from carbonscaler.planner.exact import plan_exact
from carbonscaler.planner.model import Job, PlanningError, check_feasible
from carbonscaler.profile import ScalingProfile

__all__ = ["Controller", "RunReport"]

PowerFunction = Callable[[int], tuple[float, str]]


@dataclass(frozen=True)
class RunReport:
    """The outcome of a run, with the same work run carbon-agnostic for comparison."""

    name: str
    completed: bool
    deadline_met: bool
    completion_hours: float | None
    deadline_hours: float
    emissions_g: float
    energy_kwh: float
    agnostic_emissions_g: float
    savings_pct: float
    rescales: int
    replans: int
    restarts: int
    degraded: bool
    power_source: str
    carbon_source: str
    profile_source: str
    mean_rescale_s: float
    servers_by_slot: list[float]
    emissions_by_slot: list[float]
    carbon_by_slot: list[float]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Controller:
    """Runs one job.

    Args:
        spec: the job spec.
        backend: where the workload runs.
        feed: the carbon source.
        profile: the job's scaling profile (work units per job-hour and watts per count).
        work: the job's work in the profile's units.
        store: persisted state.
        power: watts and a source label at ``k`` servers; default the profile's ``P(k)``,
            labelled ``estimated:profile``.
        tick_s: the longest wall time between steps (default 0.25 s); steps also fall on
            every slot boundary and planned change.
        clock: wall-clock seconds (``time.time``), replaceable in tests.
        on_step: called after every step with the state (for live views).
        profile_source: how the profile was obtained, for the report.
        workload_env: the workload's environment, saved so a restart launches the same job.
    """

    def __init__(
        self,
        spec: JobSpec,
        backend: Backend,
        feed: CarbonFeed,
        profile: ScalingProfile,
        work: float,
        store: StateStore,
        *,
        power: PowerFunction | None = None,
        tick_s: float | None = None,
        clock: Callable[[], float] = time.time,
        on_step: Callable[[ControllerState], None] | None = None,
        profile_source: str = "",
        workload_env: dict[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.backend = backend
        self.feed = feed
        self.profile = profile
        self.store = store
        self.job = Job(
            profile,
            work,
            spec.min_replicas,
            min(spec.max_replicas, profile.max_servers),
            spec.slot_hours,
        )
        self.power = power or (lambda k: (float(profile.power_w[k]), "estimated:profile"))
        self.tick_s = tick_s or 0.25
        self.clock = clock
        self.on_step = on_step
        self._pending: list[Event] = []
        self._carbon_cache: dict[int, float] = {}
        self.state: ControllerState | None = None
        self.profile_source = profile_source
        self.save_every_s = 1.0
        self._saved_at = 0.0
        self.workload_env = dict(workload_env or {})

    # -- time ----------------------------------------------------------------------------

    def job_hours(self, state: ControllerState) -> float:
        return (self.clock() - state.wall_start) / self.spec.seconds_per_slot * self.spec.slot_hours

    def _event(self, kind: str, hours: float, **detail: Any) -> None:
        self._pending.append(Event(kind, hours, detail))

    # -- planning ------------------------------------------------------------------------

    def _plan(
        self, forecast: np.ndarray, target_work: float, previous: int, started: bool
    ) -> BatchPlan:
        policy = self.spec.policy_name
        job = self.job
        if policy == "suspend-resume":
            job = job.with_bounds(job.min_servers, job.min_servers)
        ladder = job.ladder()
        target = np.array([target_work / job.slot_hours])
        if policy == "exact" and not ladder.concave:
            return plans_from_schedules(
                [plan_exact(job.with_work(target_work), forecast)], len(forecast)
            )
        overhead_h = self._overhead_s() / self.spec.seconds_per_slot * self.spec.slot_hours
        return batch_greedy_with_overhead(
            ladder,
            forecast[None, :],
            target,
            throughput=self.profile.throughput,
            overhead_h=overhead_h,
            slot_hours=job.slot_hours,
            previous=np.array([previous]),
            started=np.array([started]),
        )

    def _fastest(self) -> int:
        """The most productive server count (more can be slower when throughput falls)."""
        return int(self.job.ladder().levels[-1])

    def _overhead_s(self) -> float:
        """Wall seconds of work a start or rescale loses: measured, else assumed."""
        if self.state is not None and self.state.rescale_seconds:
            return float(np.mean(self.state.rescale_seconds[-10:]))
        assumed = self.spec.workload.restart_overhead_s
        if assumed is not None:
            return assumed
        # Until measured: a process start (interpreter, imports, checkpoint load) rarely takes
        # less than half a second, and a slot's 5 % covers slow restarts of long slots.
        return max(0.05 * self.spec.seconds_per_slot, 0.5)

    def _measure_overhead(self, state: ControllerState) -> None:
        """Once work flows after a change, record the wall time it cost.

        The cost is the time from the change until now, less the time the work done since
        would take at the new level's profiled rate.
        """
        if state.change_wall is None or state.servers == 0:
            return
        gained = state.work_done - state.change_work
        if gained <= 0:
            return
        rate_per_wall_s = (
            float(self.profile.throughput[state.servers])
            * self.spec.slot_hours
            / self.spec.seconds_per_slot
        )
        lost = (self.clock() - state.change_wall) - gained / rate_per_wall_s
        state.rescale_seconds.append(max(lost, 0.0))
        state.change_wall = None

    def _agnostic_plan(self, slots: int) -> BatchPlan:
        """``m`` servers from arrival until done (the reference's ``fixed`` policy)."""
        needed = math.ceil(self.job.length_hours / self.job.slot_hours) + 1
        # Carbon-agnostic ignores intensity: any values of the right length will do.
        schedule = plan_agnostic(self.job, np.ones(max(needed, slots)), deadline_slots=slots)
        return plans_from_schedules([schedule], slots)

    def _install(
        self,
        state: ControllerState,
        first: int,
        plans: BatchPlan,
        forecast: np.ndarray,
        observed: float,
    ) -> None:
        """Write a plan for slots ``first..`` into the state (absolute slots).

        ``planned_done`` gets the progress the plan promises, its work scaled by ``observed``
        (the throughput seen so far, less the safety margin).
        """
        n = state.deadline_slots
        tp = self.profile.throughput
        servers = plans.servers[0]
        fraction = plans.fraction[0]
        after = plans.after[0]
        for i in range(first, n):
            j = i - first
            state.plan_servers[i] = int(servers[j])
            state.plan_fraction[i] = float(fraction[j])
            state.plan_after[i] = int(after[j])
            state.plan_forecast[i] = float(forecast[j])
        work = (tp[after] + (tp[servers] - tp[after]) * fraction) * self.job.slot_hours * observed
        state.planned_done[first] = state.work_done
        state.planned_done[first + 1 : n + 1] = (state.work_done + np.cumsum(work)).tolist()

    def prepare(self) -> ControllerState:
        """Load the job's state, or plan it from scratch.

        Raises:
            InfeasibleError: if the deadline cannot be met even at maxReplicas — before
                anything starts.
        """
        loaded = self.store.load(self.spec.name)
        if loaded is not None:
            self.state = loaded[1]
            self._event(
                "resumed",
                self.job_hours(self.state),
                slot=self.state.slot,
                progress_pct=self.state.progress_pct,
            )
            return self.state
        n = self.spec.deadline_slots
        if self.spec.policy_name != "agnostic":
            # Refuse an impossible deadline with the planner's explanation.
            job = self.job
            if self.spec.policy_name == "suspend-resume":
                job = job.with_bounds(job.min_servers, job.min_servers)
            check_feasible(job, job.ladder(), n, policy=self.spec.policy_name)
        try:
            forecast = self.feed.forecast(0, n)
            degraded = False
        except CarbonUnavailable as exc:
            raise PlanningError(f"no carbon forecast to plan on: {exc}") from exc
        state = ControllerState(
            wall_start=self.clock(),
            work_required=self.job.work,
            deadline_slots=n,
            plan_servers=[0] * n,
            plan_fraction=[1.0] * n,
            plan_after=[0] * n,
            plan_forecast=[0.0] * n,
            planned_done=[0.0] * (n + 1),
            degraded=degraded,
            profile_throughput=self.profile.throughput.tolist(),
            profile_power_w=self.profile.power_w.tolist(),
            profile_source=self.profile_source,
            workload_env=self.workload_env,
        )
        self.state = state
        if self.spec.policy_name == "agnostic":
            plans = self._agnostic_plan(n)
        else:
            plans = self._plan(forecast, self.job.work * (1.0 + self.spec.safety_margin), 0, False)
            if not plans.feasible[0]:  # no room for the margin: plan the bare work
                plans = self._plan(forecast, self.job.work, 0, False)
        self._install(state, 0, plans, forecast, 1.0 / (1.0 + self.spec.safety_margin))
        self._event(
            "planned",
            0.0,
            servers=state.plan_servers,
            policy=self.spec.policy_name,
            forecast=[round(x, 2) for x in forecast.tolist()],
        )
        self._save()
        return state

    # -- one step ------------------------------------------------------------------------

    def intensity_seen(self, slot: int) -> float | None:
        """The actual intensity accounted for ``slot`` so far, if the slot has been seen."""
        return self._carbon_cache.get(slot)

    def _carbon(self, slot: int, state: ControllerState) -> float:
        if slot not in self._carbon_cache:
            try:
                self._carbon_cache[slot] = self.feed.actual(slot)
            except CarbonUnavailable as exc:
                fallback = self._carbon_cache.get(slot - 1)
                if fallback is None:
                    fallback = state.plan_forecast[min(slot, len(state.plan_forecast) - 1)]
                if not state.degraded:
                    self._event("degraded", slot * self.spec.slot_hours, reason=str(exc))
                state.degraded = True
                return float(fallback)
        return self._carbon_cache[slot]

    def _account(self, state: ControllerState, until_h: float) -> None:
        """Energy and carbon from ``state.accounted_hours`` to ``until_h`` at ``state.servers``."""
        slot_h = self.spec.slot_hours
        start = state.accounted_hours
        if until_h <= start:
            return
        watts, source = self.power(state.servers) if state.servers > 0 else (0.0, "")
        if state.servers > 0:
            state.power_source = source
        while start < until_h - 1e-12:
            slot = math.floor(start / slot_h + 1e-12)
            end = min(until_h, (slot + 1) * slot_h)
            hours = end - start
            energy = watts * hours / 1000.0
            state.nominal_work += float(self.profile.throughput[state.servers]) * hours
            state.profile_energy_kwh += float(self.profile.power_w[state.servers]) * hours / 1000
            carbon = self._carbon(slot, state)
            state.energy_kwh += energy
            state.emissions_g += energy * carbon
            key = str(slot)
            state.emissions_by_slot[key] = state.emissions_by_slot.get(key, 0.0) + energy * carbon
            state.servers_by_slot[key] = (
                state.servers_by_slot.get(key, 0.0) + state.servers * hours / slot_h
            )
            start = end
        state.accounted_hours = until_h

    def _desired(self, state: ControllerState, hours: float) -> int:
        slot_h = self.spec.slot_hours
        slot = math.floor(hours / slot_h + 1e-12)
        if slot >= state.deadline_slots:
            return self._fastest()  # late: finish as fast as possible
        into = hours / slot_h - slot
        if into < state.plan_fraction[slot]:
            return state.plan_servers[slot]
        return state.plan_after[slot]

    def _maybe_replan(self, state: ControllerState, slot: int, hours: float) -> None:
        n = state.deadline_slots
        if slot >= n or self.spec.policy_name == "agnostic":
            return
        horizon = n - slot
        try:
            forecast = self.feed.forecast(slot, horizon)
            if state.degraded:
                self._event("recovered", hours)
            state.degraded = False
        except CarbonUnavailable as exc:
            if not state.degraded:
                self._event("degraded", hours, reason=str(exc))
            state.degraded = True
            forecast = np.array(state.plan_forecast[slot:], dtype=np.float64)
        expected = np.array(state.plan_forecast[slot:], dtype=np.float64)
        threshold = self.spec.replan_threshold
        gap = state.work_done - state.planned_done[slot]
        behind = gap < -1e-9 * state.work_required
        drift = abs(gap) > threshold * state.work_required
        changed = bool(np.any(np.abs(forecast - expected) > threshold * np.maximum(expected, 1e-9)))
        if not (behind or drift or changed):
            return
        remaining = state.work_required - state.work_done
        if remaining <= 0:
            return
        # Plan in the profile's units, corrected by the throughput actually observed.
        observed = self._observed_rate(state)
        margin = 1.0 + self.spec.safety_margin
        plans = self._plan(forecast, remaining / observed * margin, state.servers, state.started)
        if not plans.feasible[0]:  # no room for the margin: plan the bare work
            margin = 1.0
            plans = self._plan(forecast, remaining / observed, state.servers, state.started)
        if not plans.feasible[0]:
            top = self._fastest()
            plans = BatchPlan(
                np.full((1, horizon), top),
                np.ones((1, horizon)),
                np.full((1, horizon), top),
                np.array([True]),
            )
            state.notes.append(f"behind at slot {slot}: running at {top} servers until done")
            self._event("behind", hours, remaining=remaining)
        # Progress is checked against the pace the bare work needs, not the margin's.
        self._install(state, slot, plans, forecast, observed / margin)
        state.replans += 1
        self._event(
            "replanned",
            hours,
            slot=slot,
            behind=behind,
            drift=drift,
            forecast_changed=changed,
            servers=state.plan_servers[slot:],
            observed_rate=round(observed, 4),
        )

    @staticmethod
    def _observed_rate(state: ControllerState) -> float:
        """Work done per work the profile promised for the server-time run so far.

        Below 1 when the profile overstates the job's speed or rescales cost time; bounded
        so one odd reading cannot wreck a plan.
        """
        if state.nominal_work <= 0 or state.work_done <= 0:
            return 1.0
        return float(min(max(state.work_done / state.nominal_work, 0.25), 4.0))

    def step(self) -> bool:
        """One tick; True once the job is done."""
        state = self.state
        assert state is not None, "call prepare() first"
        hours = self.job_hours(state)
        self._account(state, hours)
        pct = self.backend.progress_pct()
        if pct is not None:
            state.progress_pct = pct
            state.work_done = pct / 100.0 * state.work_required
        self._measure_overhead(state)
        status = self.backend.poll()
        if status is WorkloadState.DONE or state.progress_pct >= 100.0:
            if status is WorkloadState.RUNNING:
                # Finished its work; let it write its result and exit.
                self._save()
                return False
            state.completed = True
            state.completion_hours = hours
            state.servers = 0
            self._event("done", hours, emissions_g=state.emissions_g)
            self._save()
            return True
        if status is WorkloadState.CRASHED:
            state.restarts += 1
            self._event("crashed", hours, servers=state.servers)
            state.servers = 0
        slot = math.floor(hours / self.spec.slot_hours + 1e-12)
        if slot > state.slot:
            state.slot = slot
            self._maybe_replan(state, slot, hours)
        desired = self._desired(state, hours)
        running = self.backend.workers
        if status is WorkloadState.CRASHED and desired > 0:
            self.backend.start(desired)  # resumes from the last checkpoint
            self._event("restarted", hours, servers=desired)
            state.servers = desired
        elif desired != running:
            began = time.monotonic()
            state.change_wall, state.change_work = self.clock(), state.work_done
            self.backend.rescale(desired)
            took = time.monotonic() - began
            if state.started:
                state.rescales += 1
            state.started = state.started or desired > 0
            self._event("rescaled", hours, frm=running, to=desired, seconds=round(took, 3))
            state.servers = desired
        state.backend = self.backend.handle()
        # Accounting is an integral over time, so a restart recomputes the gap since the
        # last save; between events a save a second is enough and keeps the overhead small.
        if self._pending or self.clock() - self._saved_at >= self.save_every_s:
            self._save()
        elif self.on_step is not None:
            self.on_step(state)
        return False

    def _save(self) -> None:
        assert self.state is not None
        self._saved_at = self.clock()
        self.store.save(
            self.spec.name, self.spec.model_dump(mode="json"), self.state, self._pending
        )
        self._pending = []
        if self.on_step is not None:
            self.on_step(self.state)

    def run(self) -> RunReport:
        """Run the job to completion (or until interrupted) and report."""
        state = self.prepare()
        if state.backend and not state.completed:
            if self.backend.attach(state.backend):
                self._event("attached", self.job_hours(state), **state.backend)
            else:
                state.servers = 0
        while not state.completed:
            if self.step():
                break
            time.sleep(self._sleep_s(state))
        return self.report()

    def _sleep_s(self, state: ControllerState) -> float:
        """Until the next tick, or sooner if a slot boundary or planned change comes first."""
        slot_h = self.spec.slot_hours
        hours = self.job_hours(state)
        slot = math.floor(hours / slot_h + 1e-12)
        next_h = (slot + 1) * slot_h
        if slot < state.deadline_slots and state.plan_fraction[slot] < 1.0:
            switch_h = (slot + state.plan_fraction[slot]) * slot_h
            if switch_h > hours:
                next_h = min(next_h, switch_h)
        wall = (next_h - hours) / slot_h * self.spec.seconds_per_slot
        return max(0.002, min(self.tick_s, wall + 0.001))

    # -- reporting -----------------------------------------------------------------------

    def report(self) -> RunReport:
        state = self.state
        assert state is not None
        slots = max([int(k) + 1 for k in state.servers_by_slot] + [state.deadline_slots])
        carbon = []
        for i in range(slots):
            try:
                carbon.append(self.feed.actual(i))
            except CarbonUnavailable:
                carbon.append(float("nan"))
        agnostic = self._agnostic_emissions(np.array(carbon))
        deadline_h = state.deadline_slots * self.spec.slot_hours
        completed = state.completed
        done_h = state.completion_hours
        met = completed and done_h is not None and done_h <= deadline_h + 1e-9
        savings = 100.0 * (1 - state.emissions_g / agnostic) if agnostic > 0 else float("nan")
        return RunReport(
            name=self.spec.name,
            completed=completed,
            deadline_met=met,
            completion_hours=done_h,
            deadline_hours=deadline_h,
            emissions_g=state.emissions_g,
            energy_kwh=state.energy_kwh,
            agnostic_emissions_g=agnostic,
            savings_pct=savings,
            rescales=state.rescales,
            replans=state.replans,
            restarts=state.restarts,
            degraded=state.degraded,
            power_source=state.power_source,
            carbon_source=self.feed.source,
            profile_source=state.profile_source,
            mean_rescale_s=float(np.mean(state.rescale_seconds)) if state.rescale_seconds else 0.0,
            servers_by_slot=[state.servers_by_slot.get(str(i), 0.0) for i in range(slots)],
            emissions_by_slot=[state.emissions_by_slot.get(str(i), 0.0) for i in range(slots)],
            carbon_by_slot=carbon,
            notes=list(state.notes),
        )

    def _agnostic_emissions(self, carbon: np.ndarray) -> float:
        """The same work at minReplicas from arrival on the same actual trace and profile.

        The profile's speed is corrected by the speed the job actually ran at, and its power by
        how measured power compared with it, so that the saving reflects the schedule, not how
        well the profile guessed the machine.
        """
        m = self.job.min_servers
        observed = self._observed_rate(self.state) if self.state is not None else 1.0
        rate = self.profile.throughput[m] * observed
        slots_needed = self.job.work / (rate * self.job.slot_hours)
        # Measured power (RAPL) and the profile's estimate can differ in level; scale the
        # profile's P(m) by how the two compared over this run.
        scale = 1.0
        if self.state is not None and self.state.profile_energy_kwh > 0:
            scale = self.state.energy_kwh / self.state.profile_energy_kwh
        watts = float(self.profile.power_w[m]) * scale
        total = 0.0
        for i in range(math.ceil(slots_needed - 1e-12)):
            share = min(1.0, slots_needed - i)
            value = (
                carbon[i]
                if i < len(carbon) and not math.isnan(carbon[i])
                else carbon[~np.isnan(carbon)][-1]
            )
            total += watts * share * self.job.slot_hours / 1000.0 * float(value)
        return total
