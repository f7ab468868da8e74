"""The engine-agnostic controller: run one job to its plan, re-plan, account, persist.

The controller is a thin loop around the decision core (:mod:`carbonscaler.decision`), which
makes every decision — the first plan, re-plans, the level to run — exactly as CarbonAdvisor's
what-if simulation and the Kubernetes operator make them. What the controller adds is I/O: a
clock (wall time, or virtual for ``run --simulate`` and tests), a backend that runs the workload
(local processes, or simulated), a carbon feed, power readings and a state store.

Time is *job time*: hours since the job's arrival, clock seconds scaled by the spec's time scale
(``time_scale_s`` wall seconds per slot; real time when 0). At every tick the controller

1. accounts the energy and carbon of the time since the last tick at the servers that were
   running, split at slot boundaries (:func:`~carbonscaler.accounting.integrate.charge_slots`);
2. reads the workload's progress and state; a crashed workload is restarted from its checkpoint;
3. at each slot boundary takes a new forecast and lets the core review the plan;
4. sets the server count the core asks for now (rescaling through the backend);
5. writes its whole state in one SQLite transaction.

A controller killed at any point and started again loads that state, re-attaches to the
workload if it kept running, accounts the gap at the servers it had, and continues.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from carbonscaler.accounting.integrate import charge, charge_slots
from carbonscaler.backends.base import Backend, WorkloadState
from carbonscaler.clock import ControlClock, WallClock
from carbonscaler.control.carbon import CarbonFeed, CarbonUnavailable
from carbonscaler.control.spec import JobSpec
from carbonscaler.control.state import ControllerState, Event, StateStore
from carbonscaler.decision import (
    Plans,
    Progress,
    Reason,
    first_plan,
    next_change_h,
    observed_rate,
    review,
    servers_now,
    slot_of,
)
from carbonscaler.planner.model import Job, PlanningError
from carbonscaler.profile import ScalingProfile

__all__ = ["Controller", "RunReport", "agnostic_by_slot"]

PowerFunction = Callable[[int], tuple[float, str]]


def agnostic_by_slot(
    job: Job, profile: ScalingProfile, state: ControllerState, carbon: Callable[[int], float]
) -> list[float]:
    """Carbon-agnostic's emissions per slot for a run's work: ``m`` servers from arrival until
    done, charged at ``carbon(slot)`` — the run's baseline, written once for the run's report
    and for the dashboard following it.

    The profile's speed is corrected by the speed the job actually ran at, and its power by
    how measured power compared with it, so that the saving reflects the schedule, not how
    well the profile guessed the machine.
    """
    m = job.min_servers
    observed = float(observed_rate(np.array(state.work_done), np.array(state.nominal_work)))
    rate = profile.throughput[m] * observed
    slots_needed = job.work / (rate * job.slot_hours)
    # Measured power (RAPL) and the profile's estimate can differ in level; scale the
    # profile's P(m) by how the two compared over this run.
    scale = 1.0
    if state.profile_energy_kwh > 0:
        scale = state.energy_kwh / state.profile_energy_kwh
    watts = float(profile.power_w[m]) * scale
    out = []
    for i in range(math.ceil(slots_needed - 1e-12)):
        share = min(1.0, slots_needed - i)
        _, emissions_g = charge(watts, share * job.slot_hours, carbon(i))
        out.append(float(emissions_g))
    return out


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
    unobserved_slots: list[int]
    notes: list[str]
    # Added later, with defaults: a report made without them still reads.
    progress_pct: float = 0.0
    slot_hours: float = 1.0
    start_utc: str | None = None  # the job's arrival (trace time on a replay), ISO 8601 UTC
    # Job hours spent at each server count (0: suspended), arrival to completion (or to the
    # last step of an unfinished run); exact, not inferred from the per-slot means.
    hours_by_servers: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``hours_by_servers`` keyed by the count as text)."""
        out = dict(self.__dict__)
        out["hours_by_servers"] = {str(k): v for k, v in sorted(self.hours_by_servers.items())}
        return out


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
        tick_s: the longest wall time between steps (default 0.25 s; unbounded on a virtual
            clock); steps also fall on every slot boundary, planned change and — where the
            backend can tell — the workload's completion.
        clock: the time and the waiting (default: wall time).
        on_step: called after every step with the state (for live views).
        profile_source: how the profile was obtained, for the report.
        workload_env: the workload's environment, saved so a restart launches the same job.
        measure_overhead: measure what each rescale costs and plan with that (real runs);
            off, plans reserve the spec's stated or assumed overhead throughout (a simulated
            workload loses exactly that).
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
        clock: ControlClock | None = None,
        on_step: Callable[[ControllerState], None] | None = None,
        profile_source: str = "",
        workload_env: dict[str, str] | None = None,
        measure_overhead: bool = True,
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
        self.rules = spec.rules()
        self.power = power or (lambda k: (float(profile.power_w[k]), "estimated:profile"))
        self.clock = clock or WallClock()
        self.tick_s = tick_s or (math.inf if self.clock.virtual else 0.25)
        self.on_step = on_step
        self._pending: list[Event] = []
        self.state: ControllerState | None = None
        self.plans: Plans | None = None
        self.profile_source = profile_source
        self.save_every_s = 1.0
        self._saved_at = -math.inf
        self.workload_env = dict(workload_env or {})
        self.measure_overhead = measure_overhead

    # -- time ----------------------------------------------------------------------------

    def job_hours(self, state: ControllerState) -> float:
        elapsed_s = self.clock.now() - state.wall_start
        return elapsed_s / self.spec.seconds_per_slot * self.spec.slot_hours

    def _event(self, kind: str, hours: float, **detail: Any) -> None:
        self._pending.append(Event(kind, hours, detail, wall_time=self.clock.now()))

    # -- planning ------------------------------------------------------------------------

    def _overhead_s(self) -> float:
        """Wall seconds of work a rescale loses: measured, else assumed."""
        if self.state is not None and self.state.rescale_seconds:
            return float(np.mean(self.state.rescale_seconds[-10:]))
        return self.spec.restart_overhead_s

    def overhead_h(self) -> float:
        """Job hours of work a rescale loses, as the plans reserve it."""
        return self._overhead_s() / self.spec.seconds_per_slot * self.spec.slot_hours

    def _measure_overhead(self, state: ControllerState) -> None:
        """Once work flows after a rescale, record the wall time it cost.

        The cost is the time from the change until now, less the time the work done since
        would take at the new level's profiled rate.
        """
        if state.change_wall is None or state.servers == 0:
            return
        gained = state.work_done - state.change_work
        if gained <= 0:
            return
        # At the speed the job has shown (the profile can be off), not the profile's alone.
        observed = float(observed_rate(np.array(state.change_work), np.array(state.change_nominal)))
        rate_per_wall_s = (
            float(self.profile.throughput[state.servers])
            * observed
            * self.spec.slot_hours
            / self.spec.seconds_per_slot
        )
        lost = (self.clock.now() - state.change_wall) - gained / rate_per_wall_s
        state.rescale_seconds.append(max(lost, 0.0))
        state.change_wall = None

    def progress(self, state: ControllerState) -> Progress:
        """What the decision core needs to know of the job's progress."""
        return Progress(state.work_done, state.nominal_work, state.servers, state.started)

    def prepare(self) -> ControllerState:
        """Load the job's state, or plan it from scratch.

        Raises:
            InfeasibleError: if the deadline cannot be met even at maxReplicas — before
                anything starts.
            PlanningError: if there is no carbon forecast to plan on.
        """
        loaded = self.store.load(self.spec.name)
        if loaded is not None:
            self.state = loaded[1]
            self.plans = Plans.from_dict(self.state.plan)
            self._event(
                "resumed",
                self.job_hours(self.state),
                slot=self.state.slot,
                progress_pct=self.state.progress_pct,
            )
            return self.state
        n = self.spec.deadline_slots
        try:
            forecast = self.feed.forecast(0, n)
        except CarbonUnavailable as exc:
            raise PlanningError(f"no carbon forecast to plan on: {exc}") from exc
        decision = first_plan(self.job, self.rules, forecast, overhead_h=self.overhead_h())
        state = self._begin(decision.plans, self.clock.now())
        self._event(
            "planned",
            0.0,
            servers=decision.servers,
            policy=str(self.rules.policy),
            reasons=decision.reasons.words,
            forecast=[round(x, 2) for x in forecast.tolist()],
        )
        self._save()
        return state

    def _begin(self, plans: Plans, wall_start: float) -> ControllerState:
        """A fresh state for the job, arrived at ``wall_start`` with ``plans`` in force."""
        self.plans = plans
        self.state = ControllerState(
            wall_start=wall_start,
            work_required=self.job.work,
            deadline_slots=plans.slots,  # the plan runs from arrival to the deadline
            plan=plans.to_dict(),
            profile_throughput=self.profile.throughput.tolist(),
            profile_power_w=self.profile.power_w.tolist(),
            profile_source=self.profile_source,
            workload_env=self.workload_env,
        )
        return self.state

    # -- one step ------------------------------------------------------------------------

    def intensity_seen(self, slot: int) -> float | None:
        """The intensity ``slot`` is charged at, once the slot has been seen."""
        if self.state is None:
            return None
        return self.state.carbon_by_slot.get(str(slot))

    def _fallback_intensity(self, slot: int) -> float:
        """For a slot the source could not tell: the last value known before it, else the
        plan's forecast for it."""
        state = self.state
        assert state is not None
        earlier = [int(k) for k in state.carbon_by_slot if int(k) < slot]
        if earlier:
            return state.carbon_by_slot[str(max(earlier))]
        forecast = state.plan["forecast"]
        return float(forecast[min(slot, len(forecast) - 1)])

    def _carbon(self, slot: int) -> float:
        """The intensity ``slot`` is charged at: the source's actual value, fixed at its first
        use; while the source is down, the fallback, and the slot is marked unobserved."""
        state = self.state
        assert state is not None
        key = str(slot)
        if key in state.carbon_by_slot:
            return state.carbon_by_slot[key]
        try:
            value = float(self.feed.actual(slot))
        except CarbonUnavailable as exc:
            if not state.degraded:
                self._event("degraded", slot * self.spec.slot_hours, reason=str(exc))
            state.degraded = True
            value = self._fallback_intensity(slot)
            state.unobserved_slots.append(slot)
        state.carbon_by_slot[key] = value
        return value

    def _account(self, state: ControllerState, until_h: float) -> None:
        """Energy and carbon from ``state.accounted_hours`` to ``until_h`` at ``state.servers``."""
        start = state.accounted_hours
        if until_h <= start:
            return
        k = state.servers
        watts, source = self.power(k) if k > 0 else (0.0, "")
        if k > 0:
            state.power_source = source
        hours = until_h - start
        state.nominal_work += float(self.profile.throughput[k]) * hours
        state.hours_by_servers[str(k)] = state.hours_by_servers.get(str(k), 0.0) + hours
        state.profile_energy_kwh += float(self.profile.power_w[k]) * hours / 1000
        for part in charge_slots(start, until_h, self.spec.slot_hours, watts, self._carbon):
            state.energy_kwh += part.energy_kwh
            state.emissions_g += part.emissions_g
            key = str(part.slot)
            state.emissions_by_slot[key] = state.emissions_by_slot.get(key, 0.0) + part.emissions_g
            state.servers_by_slot[key] = (
                state.servers_by_slot.get(key, 0.0) + k * part.hours / self.spec.slot_hours
            )
        state.accounted_hours = until_h

    def _review(self, state: ControllerState, slot: int, hours: float) -> None:
        """At a slot boundary: a new forecast, and the core's review of the plan."""
        plans = self.plans
        assert plans is not None
        n = state.deadline_slots
        if slot >= n:
            return
        forecast: np.ndarray | None
        try:
            forecast = self.feed.forecast(slot, n - slot)
            if state.degraded:
                self._event("recovered", hours)
            state.degraded = False
        except CarbonUnavailable as exc:
            if not state.degraded:
                self._event("degraded", hours, reason=str(exc))
            state.degraded = True
            forecast = None  # plan on the last forecast
        reasons = review(
            plans,
            self.job,
            self.rules,
            slot,
            self.progress(state),
            forecast,
            overhead_h=self.overhead_h(),
        )
        if not reasons:
            return
        state.plan = plans.to_dict()
        state.replans += 1
        if Reason.OUT_OF_REACH in reasons:
            top = int(plans.servers[0, slot])
            state.notes.append(f"behind at slot {slot}: running at {top} servers until done")
            self._event("behind", hours, remaining=state.work_required - state.work_done)
        self._event(
            "replanned",
            hours,
            slot=slot,
            reasons=reasons.words,
            servers=state.plan["servers"][slot:],
            observed_rate=round(
                float(observed_rate(np.array(state.work_done), np.array(state.nominal_work))), 4
            ),
        )

    def step(self) -> bool:
        """One tick; True once the job is done."""
        status = self.observe()
        if status is None:
            assert self.state is not None
            return self.state.completed
        self.act(status)
        return False

    def observe(self) -> WorkloadState | None:
        """The first half of a tick: account the time since the last one, read the
        workload's progress and state, and settle completion and crashes.

        Returns:
            The workload's state, or None when there is nothing to decide: the job is done
            (``state.completed``), or has done its work and is being let exit.
        """
        state, plans = self.state, self.plans
        assert state is not None and plans is not None, "call prepare() first"
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
                return None
            state.completed = True
            state.completion_hours = hours
            state.servers = 0
            self._event("done", hours, emissions_g=state.emissions_g)
            self._save()
            return None
        if status is WorkloadState.CRASHED:
            state.restarts += 1
            self._event("crashed", hours, servers=state.servers)
            state.servers = 0
        return status

    def level(self, hours: float, running: int) -> tuple[int, Reason]:
        """The server count to run at job time ``hours`` and why (the decision core's
        :func:`~carbonscaler.decision.servers_now` on the plan in force)."""
        assert self.plans is not None
        return servers_now(self.plans, self.job, self.rules, hours, running)

    def act(self, status: WorkloadState) -> None:
        """The second half of a tick: at a slot boundary the plan's review, then the level to
        run now, set through the backend (``status`` is what :meth:`observe` returned)."""
        state = self.state
        assert state is not None
        hours = self.job_hours(state)
        slot, _ = slot_of(hours, self.spec.slot_hours)
        if slot > state.slot:
            state.slot = slot
            self._review(state, slot, hours)
        desired, why = self.level(hours, state.servers)
        if int(why) != state.level_reason:
            state.level_reason = int(why)
            if why:  # late, overrunning the plan, queued: said once when it starts
                self._event(why.words[0], hours, servers=desired)
        running = self.backend.workers
        if status is WorkloadState.CRASHED and desired > 0:
            self.backend.start(desired)  # resumes from the last checkpoint
            self._event("restarted", hours, servers=desired)
            state.servers = desired
        elif desired != running:
            began = self.clock.now()
            if state.started and desired > 0 and self.measure_overhead:
                state.change_wall, state.change_work = began, state.work_done
                state.change_nominal = state.nominal_work
            self.backend.rescale(desired)
            took = self.clock.now() - began
            if state.started:
                state.rescales += 1
            state.started = state.started or desired > 0
            self._event("rescaled", hours, frm=running, to=desired, seconds=round(took, 3))
            state.servers = desired
        state.backend = self.backend.handle()
        # Accounting is an integral over time, so a restart recomputes the gap since the
        # last save; between events a save a second is enough and keeps the overhead small.
        if self._pending or self.clock.now() - self._saved_at >= self.save_every_s:
            self._save()
        elif self.on_step is not None:
            self.on_step(state)

    def _save(self) -> None:
        self.store.save(*self.to_save())
        if self.on_step is not None:
            assert self.state is not None
            self.on_step(self.state)

    def to_save(self) -> tuple[str, dict[str, Any], ControllerState, list[Event]]:
        """What :meth:`_save` writes — name, spec, state, the events since the last save —
        taken as saved (for a caller that writes it in a transaction of its own)."""
        assert self.state is not None
        self._saved_at = self.clock.now()
        events, self._pending = self._pending, []
        return self.spec.name, self.spec.model_dump(mode="json"), self.state, events

    def run(self) -> RunReport:
        """Run the job to completion (or until interrupted) and report."""
        state = self.prepare()
        self.reattach(state)
        while not state.completed:
            if self.step():
                break
            self.clock.sleep(self.wait_s(state))
        return self.report()

    def reattach(self, state: ControllerState) -> None:
        """After a restart: take over the workload if it kept running, else account the time
        it ran unwatched (:meth:`_settle_gap`)."""
        if not state.backend or state.completed:
            return
        if self.backend.attach(state.backend):
            self._event("attached", self.job_hours(state), **state.backend)
        else:
            self._settle_gap(state)
            state.servers = 0

    def _settle_gap(self, state: ControllerState) -> None:
        """The workload ended while no controller watched: account the time it really ran
        (until its last record — the completion marker, or its last progress line) at the
        servers it had, and date its completion when it really finished."""
        record = self.backend.exit_record()
        if record is None or state.servers == 0:
            return
        now_h = self.job_hours(state)
        ran_h = (record.at_s - state.wall_start) / self.spec.seconds_per_slot
        until_h = min(max(ran_h * self.spec.slot_hours, state.accounted_hours), now_h)
        self._account(state, until_h)
        pct = self.backend.progress_pct()
        if pct is not None:
            state.progress_pct = pct
            state.work_done = pct / 100.0 * state.work_required
        self._event("settled", now_h, until_hours=until_h, finished=record.finished)
        if record.finished or state.progress_pct >= 100.0:
            state.completed = True
            state.completion_hours = until_h
            self._event("done", until_h, emissions_g=state.emissions_g)
        self._save()

    def wait_s(self, state: ControllerState) -> float:
        """Until the next tick, or sooner if a slot boundary, a planned change or the
        workload's completion comes first."""
        assert self.plans is not None
        slot_h = self.spec.slot_hours
        hours = self.job_hours(state)
        slot, _ = slot_of(hours, slot_h)
        next_h = (slot + 1) * slot_h
        change = next_change_h(self.plans, 0, hours, state.servers, self.job)
        if change is not None:
            next_h = min(next_h, change)
        wall = (next_h - hours) / slot_h * self.spec.seconds_per_slot
        eta = self.backend.eta_s()
        if eta is not None:
            wall = min(wall, eta)
        if self.clock.virtual:
            # Land exactly on the event: a virtual clock loses nothing by not overshooting.
            return max(min(self.tick_s, wall), 1e-9)
        return max(0.002, min(self.tick_s, wall + 0.001))

    # -- reporting -----------------------------------------------------------------------

    def report(self) -> RunReport:
        state = self.state
        assert state is not None
        slots = max([int(k) + 1 for k in state.servers_by_slot] + [state.deadline_slots])
        agnostic = self._agnostic_emissions()
        # The baseline may have needed slots the run never charged: they are in the map now.
        slots = max(slots, max((int(k) + 1 for k in state.carbon_by_slot), default=0))
        carbon = [state.carbon_by_slot.get(str(i), float("nan")) for i in range(slots)]
        deadline_h = state.deadline_slots * self.spec.slot_hours
        completed = state.completed
        done_h = state.completion_hours
        met = completed and done_h is not None and done_h <= deadline_h + 1e-9
        savings = 100.0 * (1 - state.emissions_g / agnostic) if agnostic > 0 else float("nan")
        notes = list(state.notes)
        by_level = {int(k): h for k, h in state.hours_by_servers.items()}
        if abs(sum(by_level.values()) - state.accounted_hours) > 1e-6:
            # A run resumed from a state saved before hours were kept per level.
            by_level = {}
            notes.append("hours per server count not recorded (the run began on an older version)")
        unused = self._unused_top_note(by_level) if completed else None
        if unused is not None:
            notes.append(unused)
        if state.unobserved_slots:
            notes.append(
                f"{len(state.unobserved_slots)} slot(s) not observed (the carbon source was "
                "down): charged at the last known intensity, in the run and the baseline alike"
            )
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
            unobserved_slots=sorted(set(state.unobserved_slots)),
            notes=notes,
            progress_pct=state.progress_pct,
            slot_hours=self.spec.slot_hours,
            start_utc=self._start_utc(),
            hours_by_servers=by_level,
        )

    def _unused_top_note(self, by_level: dict[int, float]) -> str | None:
        """Why a run that could scale never did: its top level against ``m`` as profiled.

        None when the top level ran, when there is nothing to scale, or when the hours per
        level are unknown.
        """
        m, top = self.spec.min_replicas, self.job.max_servers
        if top <= m or not by_level or by_level.get(top, 0.0) > 0.0:
            return None
        tp, power = self.profile.throughput, self.profile.power_w
        if tp[m] <= 0 or power[m] <= 0:
            return None
        work, watts = tp[top] / tp[m], power[top] / power[m]
        measured = f"{top} do {work:.2f}× the work of {m} for {watts:.2f}× the power"
        if work <= watts:
            return (
                f"never ran at {top} servers: as profiled, {measured} (more carbon per unit "
                "of work), and the deadline did not need them"
            )
        return (
            f"never ran at {top} servers although, as profiled, {measured}: the cleanest "
            f"slots at {m} were enough to finish in time"
        )

    def _start_utc(self) -> str | None:
        """When the job arrived, ISO 8601 UTC: the replayed trace's start (the time the carbon
        is of), else the wall time it began; None on a virtual clock with a live source."""
        state = self.state
        assert state is not None
        if self.spec.carbon.is_replay and self.spec.carbon.start:
            text = self.spec.carbon.start.replace("Z", "+00:00")
            try:
                start = datetime.fromisoformat(text)
            except ValueError:
                return self.spec.carbon.start
            start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
            return start.isoformat()
        if self.clock.virtual:
            return None
        return datetime.fromtimestamp(state.wall_start, UTC).isoformat()

    def _agnostic_emissions(self) -> float:
        """The same work at minReplicas from arrival (:func:`agnostic_by_slot`), charged at
        the same intensity per slot as the run (:meth:`_carbon`: observed, or the same
        fallback, marked unobserved)."""
        assert self.state is not None
        return float(sum(agnostic_by_slot(self.job, self.profile, self.state, self._carbon)))
