"""Joint planning of many elastic jobs that share a cluster's capacity (issue #12).

Every job is planned in the single-job model (:mod:`carbonscaler.planner.model`): in each slot
of its window ``[arrival, deadline)`` it runs a level of its ladder (``{0} ∪ {m..M}``, dominated
levels skipped), climbing one increment at a time, and its completing increment may run for part
of its slot (prorated work and emissions). What is new is the coupling: in slot ``i`` the jobs
together may use at most ``K[i]`` servers. A slot whose completing increment runs only part of
the slot counts its *higher* level against the capacity (the servers are held for the slot).

The objective is the total emissions ``Σ_jobs Σ_i c_i · P_j(S_j[i]) · Δ / 1000`` (grams), subject
to the capacity and every job's deadline.

Two solvers:

* :func:`plan_cluster` with ``solver="exact"``: a mixed-integer program solved by HiGHS
  (``scipy.optimize.milp``), the multi-job form of :mod:`carbonscaler.planner.exact`. For each
  job, slot and ladder step, ``x ∈ [0, 1]`` is the used share of the step and a binary ``u`` says
  whether the step is held at all: ``x ≤ u`` and ``u[s] ≤ x[s-1]`` (a step is held only once the
  step below it is used in full — the "m-step first" coupling, needed for non-concave ladders
  and for counting servers in whole numbers); one work row per job; one capacity row per slot,
  ``Σ_jobs Σ_s Δlevel_s · u ≤ K[i]``. The solution is polished so that each job has at most one
  partly used step (its prorated completing increment), and it is never kept if costlier than
  the fast plan.
* ``solver="fast"`` (the default, for production): combinatorial, no LP solver.

  1. Every job planned alone (:func:`~carbonscaler.planner.greedy.select_increments`). If these
     independent plans fit the capacity they are returned unchanged — so with ``K ≥ Σ M`` the
     joint plan *is* the independent plans.
  2. Otherwise the jobs are inserted one by one, the one with the least room left first (work
     that still fits in its window over its work). A job is inserted by a *priced best
     response*: its single-job greedy where each increment costs its carbon plus, where the
     capacity is taken, the price of displacing other jobs' increments — what those jobs would
     pay in carbon to make up the lost work in their next-cheapest increments, less what the
     displaced increment itself costs. Steps are priced along each slot's ladder by the
     lower convex hull (a displacing first step is priced with the cheap steps above it), and
     the completing increment is chosen knowing that a displacement is paid in full however
     little of the slot is used. Displaced jobs re-plan in the capacity left (their own
     greedy, capped per slot).
  3. Local search, each move kept only if the total emissions fall: priced best responses of
     each job (again whenever a plan in its window changes; a response that does not pay off
     is retried without displacing where it did); the best exchange of two slots' plans
     between all jobs that may run in both (scored for all pairs of slots at once); then
     pairs of conflicting jobs taken out and inserted again in either order or swapping a
     slot each, and groups of three inserted again in every order (within a budget).

  If the insertion cannot place every job, the exact solver decides (it either finds a plan or
  proves that none exists). On concave profiles the fast plan is within 1 % of the exact one on
  random instances (``tests/test_cluster_plan.py``); ``benchmarks/bench_cluster.py`` measures the
  gap and the speed at 50 jobs × 72 slots.

When the set cannot fit, :class:`ClusterInfeasibleError` names the jobs that cannot finish (the
largest total weight of jobs that can all finish is kept; ``weight`` is the priority), the work
that fits for those jobs, the capacity that would make the whole set fit and the deadline
extension that would.

Baselines: :func:`plan_cluster_agnostic` (every job at ``m`` servers from arrival, first come
first served under the capacity) and :func:`plan_cluster_independent` (every job planned alone,
ignoring the capacity) with :func:`overcommit` (how far that exceeds the capacity).

Everything here is pure: arrays in, plans out, no I/O.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from carbonscaler.planner.greedy import Selection, schedule_from_selection, select_increments
from carbonscaler.planner.model import (
    FloatArray,
    IntArray,
    Job,
    Ladder,
    PlanningError,
    Schedule,
    realise,
)

__all__ = [
    "ClusterInfeasibleError",
    "ClusterJob",
    "ClusterJobPlan",
    "ClusterPlan",
    "JobPlans",
    "Overcommit",
    "overcommit",
    "plan_cluster",
    "plan_cluster_agnostic",
    "plan_cluster_independent",
]

Solver = Literal["fast", "exact"]
Explain = Literal["all", "late", "none"]

# Relative tolerance on work: a job whose plan covers work·(1 - _TOL) is done (as the greedy).
_TOL = 1e-12
# A step HiGHS used to at least this share counts as used in full when polishing.
_FULL = 1.0 - 1e-6
# Relative nudge of a slot's carbon by how much the jobs want it (ties only).
_TIE = 1e-7
# A move of the local search is kept only if it lowers the total by more than this share.
_IMPROVE = 1e-9
# Moves the local search makes at most, per job.
_MAX_MOVES_PER_JOB = 200
# A priced move that displaces others in several slots is also tried displacing in one slot
# only, for at most this many of those slots.
_VARIANTS = 4
# A priced move that does not pay off is tried again without displacing in the slots it
# displaced in, this many times in all.
_ROUNDS = 3
# Moves on pairs of jobs (taken out and inserted again, or swapping slots) the local search
# tries at most per plan: this divided by the number of jobs (each move costs about as much
# as there are jobs).
_PAIR_WORK = 1_000


class _SolverTrouble(Exception):
    """HiGHS gave no usable answer (time limit, tolerance): not a verdict on the input."""


class ClusterInfeasibleError(PlanningError):
    """The jobs cannot all finish by their deadlines under the capacity.

    Attributes:
        late_jobs: names of the jobs that cannot finish (while the others do).
        work_required: work units each late job needs, by name.
        work_possible: the most of its work that fits for each late job, by name.
        capacity_needed: the smallest capacity that makes the whole set fit: servers per slot
            for a scalar capacity, or servers to add to every slot of a per-slot capacity;
            None if no capacity helps (a deadline is too short even with every server).
        deadline_extension_hours: the smallest extension of the late jobs' deadlines (the same
            for each) that makes the set fit at the given capacity, or None if the carbon
            forecast is too short to find one.
    """

    def __init__(
        self,
        message: str,
        *,
        late_jobs: tuple[str, ...],
        work_required: dict[str, float],
        work_possible: dict[str, float],
        capacity_needed: int | None,
        deadline_extension_hours: float | None,
    ) -> None:
        super().__init__(message)
        self.late_jobs = late_jobs
        self.work_required = work_required
        self.work_possible = work_possible
        self.capacity_needed = capacity_needed
        self.deadline_extension_hours = deadline_extension_hours


@dataclass(frozen=True)
class ClusterJob:
    """One job of a cluster plan: a planner :class:`Job` with its name and window.

    Args:
        name: unique label used in plans and errors.
        job: profile, work, server bounds and slot length.
        arrival_slot: first slot the job may run in, counted from the planning start.
        deadline_slot: the slot by whose start the work must be done (exclusive end of the
            window), counted from the planning start.
        weight: priority when the set cannot fit: the diagnosis keeps the largest total weight
            of jobs finishing. It does not change a plan that fits (emissions are emissions).

    Raises:
        PlanningError: on an empty name, a negative arrival, an empty window or a
            non-positive weight.
    """

    name: str
    job: Job
    arrival_slot: int
    deadline_slot: int
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.name:
            raise PlanningError("every cluster job needs a name")
        if self.arrival_slot < 0:
            raise PlanningError(f"job {self.name!r}: arrival cannot be before the start")
        if self.deadline_slot <= self.arrival_slot:
            raise PlanningError(
                f"job {self.name!r}: the deadline (slot {self.deadline_slot}) must come after "
                f"the arrival (slot {self.arrival_slot}); give at least one slot"
            )
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise PlanningError(f"job {self.name!r}: weight must be positive, got {self.weight}")

    @property
    def window_slots(self) -> int:
        """Slots between arrival and deadline."""
        return self.deadline_slot - self.arrival_slot


@dataclass(frozen=True, eq=False)
class ClusterJobPlan:
    """One job's part of a cluster plan.

    Attributes:
        name: the job's name.
        arrival_slot: first slot of its window (from the planning start).
        deadline_slot: end of its window (from the planning start, exclusive).
        schedule: its schedule, slot 0 being the arrival slot (as a single-job plan made at
            arrival: ``schedule.completion_hours`` counts from arrival).
    """

    name: str
    arrival_slot: int
    deadline_slot: int
    schedule: Schedule

    def servers_on(self, horizon: int) -> IntArray:
        """Servers per slot from the planning start, 0 outside what the schedule covers.

        Args:
            horizon: number of slots to return.
        """
        out = np.zeros(horizon, dtype=np.int64)
        part = self.schedule.servers[: max(horizon - self.arrival_slot, 0)]
        out[self.arrival_slot : self.arrival_slot + len(part)] = part
        return out

    @property
    def emissions_g(self) -> float:
        return self.schedule.emissions_g

    @property
    def completion_hours(self) -> float:
        """Hours from the planning start until the job's work is done."""
        return self.arrival_slot * self.schedule.slot_hours + self.schedule.completion_hours

    @property
    def deadline_met(self) -> bool:
        return self.schedule.deadline_met

    @property
    def last_slot_fraction(self) -> float:
        """Share of the partly used slot run at its higher level (1.0 if none)."""
        return self.schedule.last_slot_fraction

    @property
    def partial_slot(self) -> int | None:
        """The partly used slot, from the planning start, or None."""
        p = self.schedule.partial_slot
        return None if p is None else self.arrival_slot + p


_JobPlanT = TypeVar("_JobPlanT", bound=ClusterJobPlan)


class JobPlans(Generic[_JobPlanT]):
    """What a plan of several jobs says of them all: totals and each job by name (one cluster's
    plan, or several regions')."""

    jobs: tuple[_JobPlanT, ...]

    @property
    def emissions_g(self) -> float:
        """Total emissions of all jobs, in grams CO2eq."""
        return float(sum(j.emissions_g for j in self.jobs))

    @property
    def energy_kwh(self) -> float:
        """Total energy of all jobs, in kWh."""
        return float(sum(j.schedule.energy_kwh for j in self.jobs))

    @property
    def deadlines_met(self) -> int:
        """How many jobs finish by their deadlines."""
        return sum(j.deadline_met for j in self.jobs)

    def job(self, name: str) -> _JobPlanT:
        """The plan of the job called ``name``.

        Raises:
            KeyError: if there is no such job.
        """
        for plan in self.jobs:
            if plan.name == name:
                return plan
        raise KeyError(name)


@dataclass(frozen=True, eq=False)
class ClusterPlan(JobPlans[ClusterJobPlan]):
    """Plans of all jobs of a cluster and the capacity they share.

    Attributes:
        solver: ``fast``, ``exact``, ``agnostic`` or ``independent``.
        jobs: one plan per job, in the input order.
        capacity: servers available per slot from the planning start.
        servers_used: servers the jobs hold per slot (a partly used slot counts its higher
            level); may exceed ``capacity`` only for the ``independent`` baseline.
        slot_hours: slot length in hours.
        solve_ms: time spent planning, in milliseconds.
        notes: anything worth knowing (solver fallbacks, jobs not done).
    """

    solver: str
    jobs: tuple[ClusterJobPlan, ...]
    capacity: IntArray
    servers_used: IntArray
    slot_hours: float
    solve_ms: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def horizon(self) -> int:
        """Slots the plan covers from the planning start."""
        return len(self.servers_used)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: per job servers per slot (from the start), totals, capacity."""
        horizon = self.horizon
        return {
            "solver": self.solver,
            "slot_hours": self.slot_hours,
            "capacity": [int(k) for k in self.capacity[:horizon]],
            "servers_used": [int(s) for s in self.servers_used],
            "emissions_g": self.emissions_g,
            "energy_kwh": self.energy_kwh,
            "solve_ms": self.solve_ms,
            "notes": list(self.notes),
            "jobs": [
                {
                    "name": j.name,
                    "arrival_hours": j.arrival_slot * self.slot_hours,
                    "deadline_hours": j.deadline_slot * self.slot_hours,
                    "servers": [int(s) for s in j.servers_on(horizon)],
                    "partial_slot": j.partial_slot,
                    "last_slot_fraction": j.last_slot_fraction,
                    "partial_servers_after": j.schedule.partial_servers_after,
                    "work_required": j.schedule.work_required,
                    "work_done": j.schedule.work_done,
                    "energy_kwh": j.schedule.energy_kwh,
                    "emissions_g": j.emissions_g,
                    "completion_hours": j.completion_hours,
                    "deadline_met": j.deadline_met,
                    "server_hours": j.schedule.server_hours,
                    "rescales": j.schedule.rescales,
                }
                for j in self.jobs
            ],
        }


@dataclass(frozen=True)
class Overcommit:
    """How far a plan's servers exceed the capacity.

    Attributes:
        max_servers: the largest excess in any slot (servers over capacity), 0 if none.
        server_hours: the excess summed over slots, in server-hours.
        slots: how many slots are over capacity.
    """

    max_servers: int
    server_hours: float
    slots: int


# ----------------------------------------------------------------------------------------------
# The prepared instance


@dataclass(frozen=True, eq=False)
class _Instance:
    jobs: tuple[ClusterJob, ...]
    ladders: tuple[Ladder, ...]
    targets: FloatArray  # work / slot_hours, in ladder.d_work units
    carbon: FloatArray  # per slot up to the horizon (the latest deadline)
    capacity: IntArray  # per slot up to the horizon
    slot_hours: float

    @property
    def horizon(self) -> int:
        return len(self.carbon)

    @functools.cached_property
    def pressure(self) -> FloatArray:
        """How much the jobs want each slot, from 0 to 1: the servers each job would hold on
        average over its window at its top level, summed over the jobs that may run there."""
        demand = np.zeros(self.horizon)
        for j, (c, lad) in enumerate(zip(self.jobs, self.ladders, strict=True)):
            slots_needed = self.targets[j] / lad.max_throughput
            demand[self.window(j)] += slots_needed * float(lad.levels[-1]) / c.window_slots
        top = float(demand.max())
        return demand / top if top > 0 else demand

    def tie(self, j: int) -> FloatArray:
        """Multipliers (just above 1) of job ``j``'s carbon per slot of its window that break
        ties between equally clean slots in favour of the less wanted ones, so a job does not
        take, among equals, the slot another job cannot do without."""
        return 1.0 + _TIE * self.pressure[self.window(j)]

    def window(self, j: int) -> slice:
        job = self.jobs[j]
        return slice(job.arrival_slot, job.deadline_slot)

    def with_capacity(self, capacity: IntArray) -> _Instance:
        return _Instance(
            self.jobs, self.ladders, self.targets, self.carbon, capacity, self.slot_hours
        )

    def with_deadlines(self, deadlines: dict[int, int], carbon: FloatArray) -> _Instance:
        """The instance with some jobs' deadline slots moved (carbon covering the new horizon)."""
        jobs = tuple(
            ClusterJob(c.name, c.job, c.arrival_slot, deadlines.get(j, c.deadline_slot), c.weight)
            for j, c in enumerate(self.jobs)
        )
        horizon = max(c.deadline_slot for c in jobs)
        cap = _extend(self.capacity, horizon)
        return _Instance(
            jobs, self.ladders, self.targets, carbon[:horizon], cap[:horizon], self.slot_hours
        )


def _extend(values: IntArray, length: int) -> IntArray:
    """``values`` to ``length`` slots, repeating the last value."""
    if len(values) >= length:
        return values
    return np.concatenate([values, np.full(length - len(values), values[-1], dtype=np.int64)])


def _capacity_array(capacity: int | Sequence[int] | IntArray, length: int) -> IntArray:
    arr = np.asarray(capacity)
    if arr.ndim == 0:
        value = float(arr)
        if not (math.isfinite(value) and value == int(value) and value >= 0):
            raise PlanningError(f"capacity must be a whole number of servers >= 0, got {value}")
        return np.full(length, int(value), dtype=np.int64)
    if arr.ndim != 1 or len(arr) == 0:
        raise PlanningError("a per-slot capacity must be a non-empty 1-D sequence of servers")
    values = arr.astype(np.float64)
    if not (np.all(np.isfinite(values)) and np.all(values >= 0) and np.all(values % 1 == 0)):
        raise PlanningError("a per-slot capacity must be whole numbers of servers >= 0")
    if len(arr) < length:
        raise PlanningError(
            f"the per-slot capacity covers {len(arr)} slots but the latest deadline is "
            f"{length} slots from the start; give a value for every slot"
        )
    return values.astype(np.int64)


def _prepare(
    jobs: Sequence[ClusterJob],
    carbon: Sequence[float] | FloatArray,
    capacity: int | Sequence[int] | IntArray,
) -> _Instance:
    if not jobs:
        raise PlanningError("a cluster plan needs at least one job")
    names = [c.name for c in jobs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PlanningError(f"job names must be unique; repeated: {', '.join(dupes)}")
    slot_hours = jobs[0].job.slot_hours
    if any(abs(c.job.slot_hours - slot_hours) > 1e-12 for c in jobs):
        raise PlanningError("all jobs of a cluster plan must use the same slot length")
    values = np.asarray(carbon, dtype=np.float64)
    if values.ndim != 1:
        raise PlanningError("the carbon forecast must be a 1-D sequence of intensities")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise PlanningError("carbon intensities must be finite and non-negative (gCO2eq/kWh)")
    horizon = max(c.deadline_slot for c in jobs)
    if len(values) < horizon:
        raise PlanningError(
            f"the latest deadline is {horizon} slots from the start but the forecast has only "
            f"{len(values)}; give a forecast that reaches every deadline"
        )
    cap = _capacity_array(capacity, horizon)
    return _Instance(
        jobs=tuple(jobs),
        ladders=tuple(c.job.ladder() for c in jobs),
        targets=np.array([c.job.work / slot_hours for c in jobs], dtype=np.float64),
        carbon=values[:horizon].copy(),
        capacity=cap[:horizon].copy(),
        slot_hours=slot_hours,
    )


# ----------------------------------------------------------------------------------------------
# Single-job pieces: cost, capped greedy, the priced greedy


def _levels_of(ladder: Ladder, sel: Selection) -> IntArray:
    return ladder.levels[sel.steps]


def _rate(ladder: Ladder, carbon: FloatArray, sel: Selection) -> float:
    """Σ c_i · P_i of a selection (grams = this × slot_hours / 1000), partial slot prorated."""
    power = np.concatenate([[0.0], np.cumsum(ladder.d_power_w)])[sel.steps]
    if sel.partial_slot is not None:
        j = sel.steps[sel.partial_slot] - 1
        power[sel.partial_slot] -= (1 - sel.fraction) * ladder.d_power_w[j]
    return float(power @ carbon)


def _max_steps(ladder: Ladder, cap: IntArray) -> IntArray:
    """Steps a slot may climb with ``cap`` servers available."""
    return (np.searchsorted(ladder.levels, cap, side="right") - 1).astype(np.int64)


def _work_within(ladder: Ladder, max_steps: IntArray) -> float:
    """The most work (``d_work`` units) the job can do with these step limits."""
    return float(ladder.throughput[max_steps].sum())


def _unit_cost(ladder: Ladder, carbon: FloatArray) -> FloatArray:
    """Carbon per unit of work of every (slot, step), as the greedy climbs (running max)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = carbon[:, None] / ladder.efficiency[None, :]
    unit[np.isnan(unit)] = 0.0
    return unit


def _hull_unit(cost: FloatArray, d_work: FloatArray) -> FloatArray:
    """Cost per unit of work of each step as a slot climbs its ladder: the slopes of the lower
    convex hull of cumulative cost over cumulative work, per slot.

    Where a step is dearer per unit than the steps above it (displacing another job makes the
    first step of a slot dear), the steps are priced together at their average, so the greedy
    sees what climbing them is worth; the slopes never fall along the steps.
    """
    n, steps = cost.shape
    cum_cost = np.concatenate([np.zeros((n, 1)), np.cumsum(cost, axis=1)], axis=1)
    cum_work = np.concatenate([[0.0], np.cumsum(d_work)])
    # slope[i, r, t] between points r < t; the hull slope of step s (from s to s + 1) is
    # max over r <= s of min over t > s of slope[r, t].
    dw = cum_work[None, :] - cum_work[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (cum_cost[:, None, :] - cum_cost[:, :, None]) / dw[None, :, :]
    r = np.arange(steps + 1)
    upper = r[None, :] > r[:, None]  # t > r
    slope = np.where(upper[None, :, :], slope, np.inf)
    out = np.empty((n, steps))
    for s in range(steps):
        out[:, s] = np.max(np.min(slope[:, : s + 1, s + 1 :], axis=2), axis=1)
    return out


def _greedy_by_unit(
    unit: FloatArray,
    d_work: FloatArray,
    target: float,
    max_steps: IntArray,
    fixed: tuple[FloatArray, FloatArray] | None = None,
) -> Selection | None:
    """Cheapest-first steps (climbing each slot's ladder) covering ``target``; None if short.

    Args:
        unit: cost per unit of work of every (slot, step); it must not fall along the steps
            (a running maximum), so sorting by it climbs.
        d_work: work of each step.
        target: work to cover.
        max_steps: steps each slot may climb.
        fixed: ``(variable, fixed)`` costs of each step when part of its cost does not shrink
            with the share used (capacity taken from other jobs is taken for the whole slot):
            the completing increment is then the next step of any slot that is cheapest for
            the residual work, ``residual · variable / d_work + fixed``.
    """
    n, steps = unit.shape
    allowed = np.flatnonzero((np.arange(steps)[None, :] < max_steps[:, None]).ravel())
    if len(allowed) == 0:
        return None
    order = allowed[np.argsort(unit.ravel()[allowed], kind="stable")]
    work = d_work[order % steps]
    cumulative = np.cumsum(work)
    if cumulative[-1] < target * (1 - _TOL):
        return None
    last = min(int(np.searchsorted(cumulative, target * (1 - _TOL), side="left")), len(order) - 1)
    steps_per_slot = np.bincount(order[: last + 1] // steps, minlength=n).astype(np.int64)
    before = float(cumulative[last - 1]) if last > 0 else 0.0
    fraction = (target - before) / float(work[last])
    if fraction >= 1.0 - 1e-12:
        return Selection(steps_per_slot, None, 1.0)
    slot = int(order[last] // steps)
    if fixed is not None:
        prefix = steps_per_slot.copy()
        prefix[slot] -= 1
        return _complete(prefix, max_steps, d_work, target - before, fixed)
    return Selection(steps_per_slot, slot, float(max(fraction, 0.0)))


def _complete(
    prefix: IntArray,
    max_steps: IntArray,
    d_work: FloatArray,
    residual: float,
    fixed: tuple[FloatArray, FloatArray],
) -> Selection:
    """The cheapest completion of ``prefix`` (steps used in full) by ``residual`` work when
    part of each step's cost is fixed (it does not shrink with the share used).

    Either one more step ``q`` is used in part (``residual`` of it), or ``q`` is used in full
    and the top step ``p`` of another slot gives back the excess — chosen as the step with the
    highest variable cost per unit of work, which saves the most.
    """
    variable, fixed_cost = fixed
    open_slots = np.flatnonzero(prefix < max_steps)
    nxt = prefix[open_slots]
    fits = d_work[nxt] >= residual * (1 - 1e-12)
    open_slots, nxt = open_slots[fits], nxt[fits]
    q_var = variable[open_slots, nxt]
    q_fixed = fixed_cost[open_slots, nxt]
    q_work = d_work[nxt]
    partial_cost = residual * q_var / q_work + q_fixed
    best = int(np.argmin(partial_cost))
    choice = (float(partial_cost[best]), int(open_slots[best]), int(open_slots[best]), 0.0)
    top_slots = np.flatnonzero(prefix > 0)
    if len(top_slots):
        top_steps = prefix[top_slots] - 1
        top_work = d_work[top_steps]
        top_unit = variable[top_slots, top_steps] / top_work
        by_unit = np.argsort(-top_unit, kind="stable")
        for q in range(len(open_slots)):
            excess = float(q_work[q]) - residual
            usable = (top_slots[by_unit] != open_slots[q]) & (
                top_work[by_unit] >= excess * (1 + 1e-12)
            )
            if not np.any(usable):
                continue
            p = int(by_unit[int(np.argmax(usable))])
            cost = float(q_var[q] + q_fixed[q]) - excess * float(top_unit[p])
            if cost < choice[0]:
                choice = (cost, int(open_slots[q]), int(top_slots[p]), excess / float(top_work[p]))
    _, q_slot, p_slot, give_back = choice
    steps_per_slot = prefix.copy()
    steps_per_slot[q_slot] += 1
    if q_slot == p_slot:  # q itself used in part
        step = int(steps_per_slot[q_slot]) - 1
        fraction = residual / float(d_work[step])
    else:
        fraction = 1.0 - give_back
    if fraction >= 1.0 - 1e-12:
        return Selection(steps_per_slot, None, 1.0)
    return Selection(steps_per_slot, p_slot, float(max(fraction, 0.0)))


def _capped_greedy(
    ladder: Ladder, unit: FloatArray, target: float, cap: IntArray
) -> Selection | None:
    """The single-job greedy with at most ``cap[i]`` servers in slot ``i``; None if short.

    Args:
        ladder: the job's ladder.
        unit: carbon per unit of work of each (slot, step), as :func:`_unit_cost` (with the
            instance's tie-breaking).
        target: work to cover.
        cap: servers the job may hold per slot.
    """
    max_steps = _max_steps(ladder, cap)
    if _work_within(ladder, max_steps) < target * (1 - _TOL):
        return None
    return _greedy_by_unit(unit, ladder.d_work, target, max_steps)


# ----------------------------------------------------------------------------------------------
# The fast solver


class _Curve:
    """A job's untaken increments in the order it would take them: carbon per unit of work
    (ascending), slot (from the start) and work of each (plain lists: read a few at a time)."""

    def __init__(self, unit: FloatArray, slot: IntArray, work: FloatArray) -> None:
        self.unit: list[float] = unit.tolist()
        self.slot: list[int] = slot.tolist()
        self.work: list[float] = work.tolist()

    def cost(self, amount: float, skip: int) -> float:
        """Carbon (rate units) to do ``amount`` more work outside slot ``skip``; inf if it
        does not fit."""
        total = 0.0
        left = amount * (1 - 1e-9)
        for unit, slot, work in zip(self.unit, self.slot, self.work, strict=True):
            if left <= 0:
                break
            if slot == skip:
                continue
            take = min(work, left)
            total += unit * take
            left -= take
        return total if left <= 0 else math.inf


class _Curves(dict[int, _Curve]):
    """Curves of a state's jobs, computed on first use; with ``absent``, as if that job's
    servers were free."""

    def __init__(self, state: _State, absent: int | None = None) -> None:
        super().__init__()
        self.state = state
        self.absent = absent

    def __missing__(self, k: int) -> _Curve:
        if self.absent is None:
            curve = self.state.curve(k)
        else:
            curve = self.state.curve_without(k, self.absent)
        self[k] = curve
        return curve


class _State:
    """A joint allocation: each job's selection over its window and the servers per slot."""

    def __init__(self, inst: _Instance) -> None:
        self.inst = inst
        self.sel: list[Selection | None] = [None] * len(inst.jobs)
        self.rates = np.zeros(len(inst.jobs))
        self.load = np.zeros(inst.horizon, dtype=np.int64)
        self._unit = [
            _unit_cost(lad, inst.carbon[inst.window(j)]) * inst.tie(j)[:, None]
            for j, lad in enumerate(inst.ladders)
        ]
        # Caches, shared with copies until either changes (set() starts new ones).
        self._without: dict[int, _Curves] = {}
        self._curves: _Curves | None = None

    def copy(self) -> _State:
        other = _State.__new__(_State)
        other.inst = self.inst
        other.sel = list(self.sel)
        other.rates = self.rates.copy()
        other.load = self.load.copy()
        other._unit = self._unit
        other._without = self._without
        other._curves = self._curves
        return other

    def curves(self) -> _Curves:
        """The jobs' curves in this state (cached until it changes; computed on a snapshot, so
        copies sharing the cache keep correct curves whichever of them changes later)."""
        if self._curves is None:
            snapshot = self.copy()
            self._curves = snapshot._curves = _Curves(snapshot)
        return self._curves

    def curves_without(self, j: int) -> _Curves:
        """The other jobs' curves as if job ``j``'s servers were free (it is re-planning from
        scratch); cached until this state changes."""
        if j not in self._without:
            snapshot = self.copy()
            snapshot._curves = self.curves()
            self._without[j] = _Curves(snapshot, absent=j)
        return self._without[j]

    def curve_without(self, k: int, j: int) -> _Curve:
        """Job ``k``'s curve with, in addition, the steps job ``j``'s servers would let it climb."""
        base = self.curves()[k]
        inst = self.inst
        sel = self.sel[k]
        if sel is None:
            return base
        lo = max(inst.jobs[j].arrival_slot, inst.jobs[k].arrival_slot)
        hi = min(inst.jobs[j].deadline_slot, inst.jobs[k].deadline_slot)
        if lo >= hi:
            return base
        aj, ak = inst.jobs[j].arrival_slot, inst.jobs[k].arrival_slot
        held = self.levels(j)[lo - aj : hi - aj]
        slots = np.flatnonzero(held > 0)
        if len(slots) == 0:
            return base
        lad = inst.ladders[k]
        local = slots + lo - ak
        free = inst.capacity[slots + lo] - self.load[slots + lo] + self.levels(k)[local]
        start = np.maximum(_max_steps(lad, free), sel.steps[local])
        stop = _max_steps(lad, free + held[slots])
        count = np.maximum(stop - start, 0)
        if not count.any():
            return base
        rows = np.repeat(local, count)
        offsets = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        cols = np.repeat(start, count) + offsets
        unit = np.concatenate([base.unit, self._unit[k][rows, cols]])
        slot = np.concatenate([base.slot, ak + rows])
        work = np.concatenate([base.work, lad.d_work[cols]])
        order = np.lexsort((slot, unit))[: 2 * lad.steps + 2 + len(base.unit)]
        return _Curve(unit[order], slot[order].astype(np.int64), work[order])

    def levels(self, j: int) -> IntArray:
        sel = self.sel[j]
        n = self.inst.jobs[j].window_slots
        return np.zeros(n, dtype=np.int64) if sel is None else _levels_of(self.inst.ladders[j], sel)

    def set(self, j: int, sel: Selection | None) -> None:
        self._without = {}
        self._curves = None
        window = self.inst.window(j)
        self.load[window] -= self.levels(j)
        self.sel[j] = sel
        self.load[window] += self.levels(j)
        lad = self.inst.ladders[j]
        self.rates[j] = 0.0 if sel is None else _rate(lad, self.inst.carbon[window], sel)

    def free_for(self, j: int) -> IntArray:
        """Servers job ``j`` may hold per slot of its window, given the others."""
        window = self.inst.window(j)
        return self.inst.capacity[window] - self.load[window] + self.levels(j)

    def replan(self, j: int) -> bool:
        """Job ``j``'s greedy in the capacity the others leave; False if it cannot finish."""
        sel = _capped_greedy(
            self.inst.ladders[j], self._unit[j], self.inst.targets[j], self.free_for(j)
        )
        if sel is None:
            return False
        self.set(j, sel)
        return True

    def curve(self, j: int) -> _Curve:
        """How job ``j`` would make up lost work: its cheapest untaken increments, in order.

        Only the cheapest few (enough for two slots at its top level) are listed: a job gives
        up at most one slot's steps at a time.
        """
        sel = self.sel[j]
        lad = self.inst.ladders[j]
        if sel is None:
            return _Curve(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0))
        steps = lad.steps
        max_steps = _max_steps(lad, self.free_for(j))
        grid = np.arange(steps)[None, :]
        mask = (grid >= sel.steps[:, None]) & (grid < max_steps[:, None])
        units = np.where(mask, self._unit[j], np.inf).ravel()
        keep = 2 * steps + 2
        idx = np.argpartition(units, keep)[:keep] if len(units) > keep else np.arange(len(units))
        idx = idx[np.isfinite(units[idx])]
        cand_unit = units[idx]
        cand_slot = idx // steps
        cand_work = lad.d_work[idx % steps]
        if sel.partial_slot is not None:
            p = sel.partial_slot
            s = int(sel.steps[p]) - 1
            cand_unit = np.concatenate([cand_unit, [self._unit[j][p, s]]])
            cand_slot = np.concatenate([cand_slot, [p]])
            cand_work = np.concatenate([cand_work, [(1 - sel.fraction) * lad.d_work[s]]])
        order = np.lexsort((cand_slot, cand_unit))
        a = self.inst.jobs[j].arrival_slot
        return _Curve(cand_unit[order], a + cand_slot[order].astype(np.int64), cand_work[order])

    def marginal(self, j: int) -> float:
        """Job ``j``'s carbon per unit of work for a little more work."""
        curve = self.curve(j)
        return float(curve.unit[0]) if len(curve.unit) else math.inf

    def owners(self, t: int, exclude: int) -> list[int]:
        inst = self.inst
        return [
            k
            for k, c in enumerate(inst.jobs)
            if k != exclude
            and c.arrival_slot <= t < c.deadline_slot
            and (s := self.sel[k]) is not None
            and s.steps[t - c.arrival_slot] > 0
        ]


def _displacement(
    state: _State, t: int, exclude: int, need: int, curves: _Curves
) -> tuple[list[tuple[float, int]], list[tuple[int, int]]]:
    """Cheapest way to free ``need`` servers in slot ``t`` from the jobs other than ``exclude``.

    Other jobs give up their top steps (top down), the lowest value per server first; a step's
    value is what its job loses: the carbon of making up its work elsewhere (the job's
    :class:`_Curve` outside slot ``t``), less the carbon the step itself costs.

    Returns:
        ``(prices, cuts)``: ``prices[r]`` = (value of the first ``r + 1`` steps given up,
        servers they free), and ``cuts`` = (job, steps kept in slot t) after all of them.
    """
    inst = state.inst
    c_t = float(inst.carbon[t])
    heap: list[tuple[float, int, int, float]] = []
    kept: dict[int, int] = {}
    lost: dict[int, float] = {}

    def push(k: int, step_count: int) -> None:
        if step_count == 0:
            return
        lad = inst.ladders[k]
        sel = state.sel[k]
        assert sel is not None
        s = step_count - 1
        share = 1.0
        local = t - inst.jobs[k].arrival_slot
        if sel.partial_slot == local and step_count == sel.steps[local]:
            share = sel.fraction
        amount = share * float(lad.d_work[s])
        curve = curves[k]
        value = (
            curve.cost(lost[k] + amount, t)
            - curve.cost(lost[k], t)
            - share * c_t * float(lad.d_power_w[s])
        )
        size = int(lad.levels[step_count] - lad.levels[step_count - 1])
        per_server = max(value, 0.0) / size if math.isfinite(value) else math.inf
        heapq.heappush(heap, (per_server, k, step_count, amount))

    for k in state.owners(t, exclude):
        sel = state.sel[k]
        assert sel is not None
        count = int(sel.steps[t - inst.jobs[k].arrival_slot])
        kept[k] = count
        lost[k] = 0.0
        push(k, count)
    prices: list[tuple[float, int]] = []
    total, freed = 0.0, 0
    while heap and freed < need:
        per_server, k, step_count, amount = heapq.heappop(heap)
        if math.isinf(per_server):
            break
        lad = inst.ladders[k]
        size = int(lad.levels[step_count] - lad.levels[step_count - 1])
        total += per_server * size
        freed += size
        kept[k] = step_count - 1
        lost[k] += amount
        prices.append((total, freed))
        push(k, step_count - 1)
    return prices, [(k, c) for k, c in kept.items()]


def _priced_response(
    state: _State,
    j: int,
    allow: Collection[int] | None = None,
    forbid: Collection[int] = (),
) -> Selection | None:
    """Job ``j``'s greedy where taken capacity costs what the displaced jobs lose.

    Args:
        state: the current allocation (not changed).
        j: the job.
        allow: the slots of its window (from its arrival) where it may displace others;
            None for every slot.
        forbid: slots of its window where it may not displace others.

    Returns:
        The selection (:func:`_apply_priced` installs it and makes the cuts), or None if the
        job cannot finish even by displacing others.
    """
    inst = state.inst
    lad = inst.ladders[j]
    window = inst.window(j)
    a = inst.jobs[j].arrival_slot
    carbon = inst.carbon[window]
    free = state.free_for(j)
    top = int(lad.levels[-1])
    extra = np.zeros((len(carbon), lad.steps))
    max_steps = np.full(len(carbon), lad.steps, dtype=np.int64)
    short = np.flatnonzero(free < top)
    if len(short):
        # The others are priced as if j's current servers were free: it re-plans from scratch.
        curves = state.curves_without(j)
        free_steps = _max_steps(lad, free)
        # A step dearer in carbon alone than the dearest the job now takes is never chosen:
        # its current steps stay free to it.
        raw = carbon[:, None] * lad.d_power_w[None, :] / lad.d_work[None, :]
        current = state.sel[j]
        dearest = math.inf
        if current is not None and np.any(current.steps > 0):
            taken = np.flatnonzero(current.steps > 0)
            dearest = float(raw[taken, current.steps[taken] - 1].max())
        for i in short:
            first = int(free_steps[i])
            if (
                (allow is not None and int(i) not in allow)
                or int(i) in forbid
                or first >= lad.steps
                or raw[i, first] > dearest * (1 + 1e-9)
            ):
                max_steps[i] = first
                continue
            need = top - int(free[i])
            prices, _ = _displacement(state, a + int(i), j, need, curves)
            # Price of reaching each level: the cheapest prefix freeing enough servers.
            for s in range(1, lad.steps + 1):
                over = int(lad.levels[s]) - int(free[i])
                if over <= 0:
                    continue
                cost = next((p for p, f in prices if f >= over), None)
                if cost is None:
                    max_steps[i] = s - 1
                    break
                below = int(lad.levels[s - 1]) - int(free[i])
                before = 0.0 if below <= 0 else next(p for p, f in prices if f >= below)
                extra[i, s - 1] = cost - before
    variable = (carbon * inst.tie(j))[:, None] * lad.d_power_w[None, :]
    unit = _hull_unit(variable + extra, lad.d_work)
    return _greedy_by_unit(unit, lad.d_work, float(inst.targets[j]), max_steps, (variable, extra))


def _apply_priced(state: _State, j: int, sel: Selection) -> bool:
    """Install ``sel`` for job ``j``, cutting and re-planning the jobs it displaces.

    Returns False (the state is then unusable) if a displaced job cannot finish.
    """
    inst = state.inst
    a = inst.jobs[j].arrival_slot
    new_levels = _levels_of(inst.ladders[j], sel)
    free = state.free_for(j)
    over = np.flatnonzero(new_levels > free)
    displaced: set[int] = set()
    if len(over):
        curves = state.curves_without(j)
        for i in over:
            t = a + int(i)
            need = int(new_levels[i] - free[i])
            prices, cuts = _displacement(state, t, j, need, curves)
            if not prices or prices[-1][1] < need:
                return False
            for k, count in cuts:
                old = state.sel[k]
                assert old is not None
                local = t - inst.jobs[k].arrival_slot
                if count == old.steps[local]:
                    continue
                steps = old.steps.copy()
                steps[local] = count
                partial = old.partial_slot
                if partial == local:
                    partial = None
                state.set(k, Selection(steps, partial, old.fraction if partial is not None else 1))
                displaced.add(k)
    state.set(j, sel)
    order = sorted(displaced, key=lambda k: _room(state, k))
    return all(state.replan(k) for k in order)


def _room(state: _State, j: int) -> float:
    """Work that still fits in job ``j``'s window over its work (the tightest goes first)."""
    lad = state.inst.ladders[j]
    return _work_within(lad, _max_steps(lad, state.free_for(j))) / float(state.inst.targets[j])


def _insert(state: _State, j: int) -> _State | None:
    """``state`` with job ``j`` (not yet placed) inserted by a priced best response, or by its
    greedy in the capacity left if displacing fails; None if neither places it."""
    trial = state.copy()
    response = _priced_response(trial, j)
    if response is not None and _apply_priced(trial, j, response):
        return trial
    trial = state.copy()
    return trial if trial.replan(j) else None


def _construct(inst: _Instance) -> _State | None:
    """Insert the jobs one by one, the one with the least room first; None if one cannot fit."""
    state: _State | None = _State(inst)
    left = set(range(len(inst.jobs)))
    while left and state is not None:
        current = state
        j = min(left, key=lambda k: (_room(current, k), -inst.jobs[k].weight, k))
        left.remove(j)
        state = _insert(current, j)
    return state


def _reinserted(state: _State, order: Sequence[int]) -> _State | None:
    """``state`` with the jobs of ``order`` taken out and inserted again in that order."""
    trial: _State | None = state.copy()
    assert trial is not None
    for j in order:
        trial.set(j, None)
    for j in order:
        if trial is None:
            return None
        trial = _insert(trial, j)
    return trial


def _conflicts(state: _State) -> list[tuple[int, int]]:
    """Pairs of jobs whose windows share a slot with too little capacity left for one of
    them to climb to its top level there."""
    inst = state.inst
    free = inst.capacity - state.load
    tops = [int(lad.levels[-1]) for lad in inst.ladders]
    pairs = []
    for j in range(len(inst.jobs)):
        for k in range(j + 1, len(inst.jobs)):
            lo = max(inst.jobs[j].arrival_slot, inst.jobs[k].arrival_slot)
            hi = min(inst.jobs[j].deadline_slot, inst.jobs[k].deadline_slot)
            if lo < hi and bool(np.any(free[lo:hi] < max(tops[j], tops[k]))):
                pairs.append((j, k))
    return pairs


def _triples(pairs: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Groups of three jobs in which one conflicts with both others."""
    linked: dict[int, set[int]] = {}
    for j, k in pairs:
        linked.setdefault(j, set()).add(k)
        linked.setdefault(k, set()).add(j)
    groups = {
        tuple(sorted((hub, a, b)))
        for hub, others in linked.items()
        for a, b in itertools.combinations(sorted(others), 2)
    }
    return sorted(groups)  # type: ignore[arg-type]


def _swapped(state: _State, j: int, k: int, t1: int, t2: int) -> _State | None:
    """Job ``j`` leaves slot ``t1`` to job ``k``, which leaves slot ``t2`` (slots from the
    start); both then re-plan (``k`` first) in the capacity left. None if one cannot finish."""
    inst = state.inst
    trial = state.copy()
    aj, ak = inst.jobs[j].arrival_slot, inst.jobs[k].arrival_slot
    for job, slot, a in ((j, t1, aj), (k, t2, ak)):
        sel = trial.sel[job]
        assert sel is not None
        steps = sel.steps.copy()
        steps[slot - a] = 0
        partial = None if sel.partial_slot == slot - a else sel.partial_slot
        trial.set(job, Selection(steps, partial, sel.fraction if partial is not None else 1.0))
    for job, banned, a in ((k, t2, ak), (j, t1, aj)):
        cap = trial.free_for(job)
        cap[banned - a] = 0
        sel = _capped_greedy(inst.ladders[job], trial._unit[job], float(inst.targets[job]), cap)
        if sel is None:
            return None
        trial.set(job, sel)
    return trial


def _swaps(state: _State, j: int, k: int) -> list[tuple[int, int]]:
    """Slots ``(t1, t2)`` where ``j`` holds ``t1`` in ``k``'s window and ``k`` holds ``t2``
    in ``j``'s, ``k`` not at ``t1`` and ``j`` not at ``t2``."""
    inst = state.inst
    horizon = inst.horizon
    held_j = np.zeros(horizon, dtype=bool)
    held_k = np.zeros(horizon, dtype=bool)
    held_j[inst.window(j)] = state.levels(j) > 0
    held_k[inst.window(k)] = state.levels(k) > 0
    in_j = np.zeros(horizon, dtype=bool)
    in_k = np.zeros(horizon, dtype=bool)
    in_j[inst.window(j)] = True
    in_k[inst.window(k)] = True
    ones = np.flatnonzero(held_j & ~held_k & in_k)
    twos = np.flatnonzero(held_k & ~held_j & in_j)
    return [(int(t1), int(t2)) for t1 in ones for t2 in twos]


def _moves(state: _State, j: int) -> list[_State]:
    """Job ``j``'s priced best responses, each installed in a copy of ``state`` (those that
    leave a job unfinished dropped).

    The prices are estimates, so a response that does not pay off is tried again without
    displacing anyone in the slots it displaced in (up to :data:`_ROUNDS` times); one that
    displaces in several slots is also tried displacing in each of them alone.
    """
    out: list[_State] = []
    free = state.free_for(j)
    total = float(state.rates.sum())
    forbid: set[int] = set()
    for round_no in range(_ROUNDS):
        response = _priced_response(state, j, forbid=forbid)
        if response is None:
            break
        over = {int(i) for i in np.flatnonzero(_levels_of(state.inst.ladders[j], response) > free)}
        trial = state.copy()
        if _apply_priced(trial, j, response):
            out.append(trial)
            if float(trial.rates.sum()) < total * (1 - _IMPROVE) - 1e-12:
                break
        if round_no == 0 and len(over) > 1:
            for i in sorted(over)[:_VARIANTS]:
                variant = _priced_response(state, j, allow=(i,))
                trial = state.copy()
                if variant is not None and _apply_priced(trial, j, variant):
                    out.append(trial)
        if not over:
            break
        forbid |= over
    return out


def _slot_exchange(state: _State) -> _State | None:
    """The best exchange of two slots' plans: every job whose window holds both slots swaps
    its levels (and partial share) between them; None if no exchange fits and pays off.

    All pairs of slots are scored at once: the change is ``(c[t2] - c[t1]) · Σ_j (P_j[t1] -
    P_j[t2])`` over those jobs, and the loads after the exchange must fit the capacity.
    """
    inst = state.inst
    n_jobs, horizon = len(inst.jobs), inst.horizon
    levels = np.zeros((n_jobs, horizon))
    power = np.zeros((n_jobs, horizon))
    inside = np.zeros((n_jobs, horizon), dtype=bool)
    for j, lad in enumerate(inst.ladders):
        sel = state.sel[j]
        assert sel is not None
        window = inst.window(j)
        inside[j, window] = True
        levels[j, window] = lad.levels[sel.steps]
        used = lad.power_w[sel.steps].copy()
        if sel.partial_slot is not None:
            top = int(sel.steps[sel.partial_slot]) - 1
            used[sel.partial_slot] -= (1 - sel.fraction) * lad.d_power_w[top]
        power[j, window] = used
    both = inside[:, :, None] & inside[:, None, :]  # job, t1, t2
    d_power = np.einsum("jab,ja->ab", both, power) - np.einsum("jab,jb->ab", both, power)
    change = (inst.carbon[None, :] - inst.carbon[:, None]) * d_power
    d_load = np.einsum("jab,jb->ab", both, levels) - np.einsum("jab,ja->ab", both, levels)
    fits = (state.load[:, None] + d_load <= inst.capacity[:, None]) & (
        state.load[None, :] - d_load <= inst.capacity[None, :]
    )
    total = float(state.rates.sum())
    change = np.where(fits, change, np.inf)
    np.fill_diagonal(change, np.inf)
    best = int(np.argmin(change))
    t1, t2 = divmod(best, horizon)
    if not change[t1, t2] < -(total * _IMPROVE + 1e-12):
        return None
    trial = state.copy()
    for moved in np.flatnonzero(both[:, t1, t2]):
        k = int(moved)
        sel = trial.sel[k]
        assert sel is not None
        a = inst.jobs[k].arrival_slot
        i1, i2 = t1 - a, t2 - a
        steps = sel.steps.copy()
        steps[i1], steps[i2] = sel.steps[i2], sel.steps[i1]
        partial = {i1: i2, i2: i1}.get(sel.partial_slot, sel.partial_slot)  # type: ignore[arg-type]
        trial.set(k, Selection(steps, partial, sel.fraction))
    return trial


def _affected(old: _State, new: _State) -> set[int]:
    """Jobs whose windows hold a slot where some job's servers or partial share changed from
    ``old`` to ``new``."""
    inst = old.inst
    changed = np.zeros(inst.horizon, dtype=bool)
    for k in range(len(inst.jobs)):
        before, after = old.sel[k], new.sel[k]
        if after is before:
            continue
        window = inst.window(k)
        changed[window] |= old.levels(k) != new.levels(k)
        for sel in (before, after):
            if sel is not None and sel.partial_slot is not None:
                changed[inst.jobs[k].arrival_slot + sel.partial_slot] = True
    count = np.concatenate([[0], np.cumsum(changed)])
    return {
        j for j, c in enumerate(inst.jobs) if count[c.deadline_slot] - count[c.arrival_slot] > 0
    }


def _better(candidates: Sequence[_State | None], total: float) -> _State | None:
    """The cheapest candidate if it lowers ``total`` by more than the noise, else None."""
    best = min(
        (c for c in candidates if c is not None), key=lambda c: float(c.rates.sum()), default=None
    )
    if best is not None and float(best.rates.sum()) < total * (1 - _IMPROVE) - 1e-12:
        return best
    return None


def _improve(state: _State, deadline_s: float) -> _State:
    """Local search; every move is kept only if it lowers the total emissions.

    Moves, cheapest first: the priced best responses of each job (again for a job whenever a
    plan in its window changed), the best exchange of two slots' plans, then pairs of
    conflicting jobs — taken out and inserted again in either order, or swapping a slot each —
    and then groups of three taken out and inserted again in every order, within a budget of
    :data:`_PAIR_WORK` divided by the number of jobs.
    """
    n_jobs = len(state.inst.jobs)
    budget = _PAIR_WORK // n_jobs
    dirty = set(range(n_jobs))
    for _ in range(_MAX_MOVES_PER_JOB * n_jobs):
        if time.perf_counter() > deadline_s:
            break
        if dirty:
            j = min(dirty)
            dirty.discard(j)
            best = _better(_moves(state, j), float(state.rates.sum()))
            if best is not None:
                dirty |= _affected(state, best)
                state = best
            continue
        best = _slot_exchange(state)
        pairs = _conflicts(state) if best is None and budget > 0 else []
        for j, k in pairs:
            trials = [_reinserted(state, (j, k)), _reinserted(state, (k, j))]
            trials += [_swapped(state, j, k, t1, t2) for t1, t2 in _swaps(state, j, k)]
            budget -= len(trials)
            best = _better(trials, float(state.rates.sum()))
            if best is not None or budget <= 0 or time.perf_counter() > deadline_s:
                break
        if best is None and budget > 0:
            for group in _triples(pairs):
                trials = [_reinserted(state, order) for order in itertools.permutations(group)]
                budget -= len(trials)
                best = _better(trials, float(state.rates.sum()))
                if best is not None or budget <= 0 or time.perf_counter() > deadline_s:
                    break
        if best is None:
            break
        dirty |= _affected(state, best)
        state = best
    return state


def _independent(inst: _Instance) -> list[Selection]:
    """Every job's greedy plan alone; raises if one cannot fit its window at all."""
    out = []
    for j, lad in enumerate(inst.ladders):
        window = inst.window(j)
        carbon = inst.carbon[window]
        if _work_within(lad, np.full(len(carbon), lad.steps)) < inst.targets[j] * (1 - _TOL):
            raise _alone_error(inst, [j])
        out.append(select_increments(lad, carbon, float(inst.targets[j])))
    return out


def _valid(inst: _Instance, sels: Sequence[Selection]) -> bool:
    """Whether selections fit the capacity and cover every job's work."""
    load = np.zeros(inst.horizon, dtype=np.int64)
    for j, (lad, sel) in enumerate(zip(inst.ladders, sels, strict=True)):
        load[inst.window(j)] += _levels_of(lad, sel)
        work = float(lad.throughput[sel.steps].sum())
        if sel.partial_slot is not None:
            top = int(sel.steps[sel.partial_slot]) - 1
            work -= (1 - sel.fraction) * float(lad.d_work[top])
        if work < inst.targets[j] * (1 - 1e-9):
            return False
    return bool(np.all(load <= inst.capacity))


def _fast(inst: _Instance, time_budget_s: float) -> tuple[list[Selection], str] | None:
    """The fast solver's selections and a note; None if it found no plan."""
    alone = _independent(inst)
    if _valid(inst, alone):
        return alone, "the jobs' independent plans fit the capacity"
    deadline_s = time.perf_counter() + time_budget_s
    state = _construct(inst)
    if state is None:
        return None
    state = _improve(state, deadline_s)
    sels = [s for s in state.sel if s is not None]
    if len(sels) != len(inst.jobs) or not _valid(inst, sels):  # pragma: no cover - a bug
        return None
    return sels, ""


# ----------------------------------------------------------------------------------------------
# The exact solver


@dataclass(frozen=True)
class _Layout:
    offsets: IntArray  # start of job j's x block; its u block follows at offset + size
    sizes: IntArray  # n_j · S_j
    n_vars: int


def _layout(inst: _Instance, extra: int = 0) -> _Layout:
    sizes = np.array(
        [c.window_slots * lad.steps for c, lad in zip(inst.jobs, inst.ladders, strict=True)],
        dtype=np.int64,
    )
    offsets = np.concatenate([[0], np.cumsum(2 * sizes)[:-1]]).astype(np.int64)
    return _Layout(offsets, sizes, int(2 * sizes.sum()) + extra)


def _milp_rows(inst: _Instance, lay: _Layout) -> tuple[Any, FloatArray, FloatArray, FloatArray]:
    """Rows shared by every MILP here: x ≤ u, u[s] ≤ x[s-1], capacity. Returns
    (matrix, lower, upper, work coefficients per variable)."""
    from scipy.sparse import coo_array

    rows: list[IntArray] = []
    cols: list[IntArray] = []
    vals: list[FloatArray] = []
    lower: list[FloatArray] = []
    upper: list[FloatArray] = []
    work = np.zeros(lay.n_vars)
    n_rows = 0
    cap_rows = np.arange(inst.horizon)
    cap_entries: list[tuple[IntArray, IntArray, FloatArray]] = []
    for j, (c, lad) in enumerate(zip(inst.jobs, inst.ladders, strict=True)):
        n, steps = c.window_slots, lad.steps
        size = int(lay.sizes[j])
        x0 = int(lay.offsets[j])
        u0 = x0 + size
        idx = np.arange(size)
        # x - u <= 0
        r = n_rows + idx
        rows += [r, r]
        cols += [x0 + idx, u0 + idx]
        vals += [np.ones(size), -np.ones(size)]
        n_rows += size
        # u[i, s] - x[i, s-1] <= 0 for s >= 1
        grid = idx.reshape(n, steps)[:, 1:].ravel()
        r = n_rows + np.arange(len(grid))
        rows += [r, r]
        cols += [u0 + grid, x0 + grid - 1]
        vals += [np.ones(len(grid)), -np.ones(len(grid))]
        n_rows += len(grid)
        work[x0 : x0 + size] = np.tile(lad.d_work, n)
        # capacity entries: slot a + i, coefficient Δlevel_s on u
        slots = c.arrival_slot + idx // steps
        d_level = np.diff(lad.levels).astype(np.float64)
        cap_entries.append((slots, u0 + idx, d_level[idx % steps]))
    lower.append(np.full(n_rows, -np.inf))
    upper.append(np.zeros(n_rows))
    for slots, col, val in cap_entries:
        rows.append(n_rows + slots)
        cols.append(col)
        vals.append(val)
    lower.append(np.full(inst.horizon, -np.inf))
    upper.append(inst.capacity.astype(np.float64))
    n_rows += len(cap_rows)
    matrix = coo_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_rows, lay.n_vars),
    ).tocsr()
    return matrix, np.concatenate(lower), np.concatenate(upper), work


def _work_rows(
    inst: _Instance, lay: _Layout, work: FloatArray, z_offset: int | None
) -> tuple[Any, FloatArray, FloatArray]:
    """One work row per job: Σ d_work · x ≥ target (or ≥ target · z, ≤ target with z)."""
    from scipy.sparse import coo_array

    rows, cols, vals = [], [], []
    for j in range(len(inst.jobs)):
        x0, size = int(lay.offsets[j]), int(lay.sizes[j])
        rows.append(np.full(size, j))
        cols.append(np.arange(x0, x0 + size))
        vals.append(work[x0 : x0 + size])
        if z_offset is not None:
            rows.append(np.array([j]))
            cols.append(np.array([z_offset + j]))
            vals.append(np.array([-float(inst.targets[j])]))
    matrix = coo_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(inst.jobs), lay.n_vars),
    ).tocsr()
    if z_offset is None:
        return matrix, inst.targets * (1 - _TOL), np.full(len(inst.jobs), np.inf)
    # with z: Σ work - target·z >= 0, and Σ work <= target (the second row block)
    return matrix, np.zeros(len(inst.jobs)), np.full(len(inst.jobs), np.inf)


def _run_milp(
    inst: _Instance,
    lay: _Layout,
    cost: FloatArray,
    z_offset: int | None,
    time_limit_s: float,
) -> FloatArray | None:
    from scipy.optimize import LinearConstraint
    from scipy.sparse import coo_array

    matrix, lower, upper, work = _milp_rows(inst, lay)
    w_matrix, w_lower, w_upper = _work_rows(inst, lay, work, z_offset)
    constraints = [
        LinearConstraint(matrix, lower, upper),
        LinearConstraint(w_matrix, w_lower, w_upper),
    ]
    if z_offset is not None:
        rows, cols = [], []
        for j in range(len(inst.jobs)):
            x0, size = int(lay.offsets[j]), int(lay.sizes[j])
            rows.append(np.full(size, j))
            cols.append(np.arange(x0, x0 + size))
        cols_all = np.concatenate(cols)
        done = coo_array(
            (work[cols_all], (np.concatenate(rows), cols_all)),
            shape=(len(inst.jobs), lay.n_vars),
        ).tocsr()
        constraints.append(LinearConstraint(done, -np.inf, inst.targets))
    integrality = np.zeros(lay.n_vars)
    for j in range(len(inst.jobs)):
        u0 = int(lay.offsets[j] + lay.sizes[j])
        integrality[u0 : u0 + int(lay.sizes[j])] = 1
    if z_offset is not None:
        integrality[z_offset : z_offset + len(inst.jobs)] = 1
    return _highs(cost, constraints, integrality, time_limit_s)


def _highs(
    cost: FloatArray, constraints: list[Any], integrality: FloatArray, time_limit_s: float
) -> FloatArray | None:
    """Solve a MILP over variables in ``[0, 1]`` with HiGHS: the solution, or None if it is
    proven infeasible.

    Raises:
        _SolverTrouble: if HiGHS gives no answer (time limit, numerical trouble).
    """
    from scipy.optimize import Bounds, milp

    result = milp(
        cost,
        constraints=constraints,
        integrality=integrality,
        bounds=Bounds(np.zeros(len(cost)), np.ones(len(cost))),
        options={"time_limit": time_limit_s, "mip_rel_gap": 1e-7},
    )
    if result.x is None:
        if result.status == 2:  # proven infeasible
            return None
        raise _SolverTrouble(f"HiGHS found no solution ({result.message})")
    return np.asarray(result.x, dtype=np.float64)


def _polish(inst: _Instance, lay: _Layout, solution: FloatArray) -> list[Selection] | None:
    """Each job: steps used in full kept; its residual work in the steps HiGHS held (cheapest
    per unit of work first), so at most one step is used in part. None if it does not add up."""
    out = []
    load = np.zeros(inst.horizon, dtype=np.int64)
    held: list[IntArray] = []
    for j, (c, lad) in enumerate(zip(inst.jobs, inst.ladders, strict=True)):
        n, steps = c.window_slots, lad.steps
        x0, size = int(lay.offsets[j]), int(lay.sizes[j])
        u = solution[x0 + size : x0 + 2 * size].reshape(n, steps) > 0.5
        count = np.cumprod(u, axis=1).sum(axis=1).astype(np.int64)
        held.append(count)
        load[inst.window(j)] += lad.levels[count]
    if np.any(load > inst.capacity):
        return None
    for j, (c, lad) in enumerate(zip(inst.jobs, inst.ladders, strict=True)):
        n, steps = c.window_slots, lad.steps
        x0, size = int(lay.offsets[j]), int(lay.sizes[j])
        x = solution[x0 : x0 + size].reshape(n, steps)
        count = held[j]
        full = np.cumprod(x >= _FULL, axis=1).sum(axis=1).astype(np.int64)
        full = np.minimum(full, count)
        # Steps HiGHS held beyond the full ones may take the residual; capped by what it held.
        sel = _greedy_by_unit(
            _unit_cost(lad, inst.carbon[inst.window(j)]) + _mask_below(full, steps),
            lad.d_work,
            float(inst.targets[j]),
            count,
        )
        if sel is None:
            return None
        out.append(sel)
    return out


def _mask_below(full: IntArray, steps: int) -> FloatArray:
    """-inf cost on the steps already used in full, so the greedy takes them first."""
    return np.where(np.arange(steps)[None, :] < full[:, None], -np.inf, 0.0)


def _exact(inst: _Instance, time_limit_s: float) -> list[Selection] | None:
    """The least-carbon selections (HiGHS, polished); None if HiGHS finds none in time or
    proves there is none."""
    lay = _layout(inst)
    cost = np.zeros(lay.n_vars)
    for j, lad in enumerate(inst.ladders):
        x0, size = int(lay.offsets[j]), int(lay.sizes[j])
        carbon = inst.carbon[inst.window(j)]
        cost[x0 : x0 + size] = (carbon[:, None] * lad.d_power_w[None, :]).ravel()
    solution = _run_milp(inst, lay, cost, None, time_limit_s)
    if solution is None:
        return None
    polished = _polish(inst, lay, solution)
    if polished is None:
        raise _SolverTrouble("HiGHS's solution did not add up within tolerance")
    return polished


def _feasible(inst: _Instance, time_limit_s: float) -> bool:
    """Whether every job fits: the fast construction, else a MILP feasibility check."""
    try:
        if _fast_construct_only(inst) is not None:
            return True
    except ClusterInfeasibleError:
        return False
    lay = _layout(inst)
    try:
        return _run_milp(inst, lay, np.zeros(lay.n_vars), None, time_limit_s) is not None
    except _SolverTrouble:
        return False


def _fast_construct_only(inst: _Instance) -> _State | None:
    alone = _independent(inst)
    if _valid(inst, alone):
        state = _State(inst)
        for j, sel in enumerate(alone):
            state.set(j, sel)
        return state
    return _construct(inst)


# ----------------------------------------------------------------------------------------------
# Infeasibility: who cannot finish, what fits, what would make it fit


def _alone_error(inst: _Instance, late: list[int]) -> ClusterInfeasibleError:
    """Jobs that cannot finish even with every server they may use in every slot."""
    parts = []
    required, possible = {}, {}
    for j in late:
        c, lad = inst.jobs[j], inst.ladders[j]
        per_slot = lad.max_throughput * inst.slot_hours
        fits = per_slot * c.window_slots
        need = math.ceil(c.job.work / per_slot * (1 - _TOL))
        required[c.name] = c.job.work
        possible[c.name] = fits
        parts.append(
            f"{c.name} needs {c.job.work:.6g} work units but at most {fits:.6g} fit in its "
            f"{c.window_slots * inst.slot_hours:g} h window at {int(lad.levels[-1])} servers "
            f"(the shortest deadline that works is {need * inst.slot_hours:g} h after arrival)"
        )
    return ClusterInfeasibleError(
        "cluster plan: " + "; ".join(parts) + " — extend the deadline or raise the server limit",
        late_jobs=tuple(inst.jobs[j].name for j in late),
        work_required=required,
        work_possible=possible,
        capacity_needed=None,
        deadline_extension_hours=None,
    )


def _max_weight(inst: _Instance, time_limit_s: float) -> tuple[list[int], dict[int, float]] | None:
    """The largest total weight of jobs that can all finish; for the others the most of their
    work that fits meanwhile (share of work maximised). Returns (late jobs, work that fits)."""
    n_jobs = len(inst.jobs)
    lay0 = _layout(inst)
    lay = _layout(inst, extra=n_jobs)
    z_offset = lay0.n_vars
    weights = np.array([c.weight for c in inst.jobs])
    # Lexicographic: the total weight of the jobs finishing first; among sets of equal weight,
    # the earlier-listed jobs; then the work shares of the others (each at most 1).
    order_unit = n_jobs + 1.0  # above any sum of work shares
    order_bonus = order_unit * (n_jobs - np.arange(n_jobs))
    weight_unit = (float(order_bonus.sum()) + order_unit) / float(weights.min())
    cost = np.zeros(lay.n_vars)
    for j in range(n_jobs):
        x0, size = int(lay.offsets[j]), int(lay.sizes[j])
        lad = inst.ladders[j]
        cost[x0 : x0 + size] = -np.tile(lad.d_work, inst.jobs[j].window_slots) / inst.targets[j]
        cost[z_offset + j] = -(weight_unit * weights[j] + order_bonus[j])
    try:
        solution = _run_milp(inst, lay, cost, z_offset, time_limit_s)
    except _SolverTrouble:
        return None
    if solution is None:
        return None
    late = [j for j in range(n_jobs) if solution[z_offset + j] < 0.5]
    fits = {}
    for j in late:
        x0, size = int(lay.offsets[j]), int(lay.sizes[j])
        lad = inst.ladders[j]
        done = float(np.tile(lad.d_work, inst.jobs[j].window_slots) @ solution[x0 : x0 + size])
        fits[j] = min(done, float(inst.targets[j])) * inst.slot_hours
    return late, fits


def _smallest(most: int, fits: Callable[[int], bool]) -> int | None:
    """The smallest ``k`` in ``1..most`` for which ``fits(k)`` (monotone; ``fits(0)`` is known
    false), or None if not even ``most`` fits: a bisection, each step one ``fits``."""
    if not fits(most):
        return None
    lo, hi = 0, most  # does not fit at lo, fits at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _late_message(late: int, jobs: int, fixes: Sequence[str]) -> str:
    """How a diagnosis ends: which of the other jobs finish, and what would make all fit."""
    others = jobs - late
    finish = (
        ""
        if not others
        else ", while the other job finishes"
        if others == 1
        else f", while the other {others} jobs finish"
    )
    return f"{finish}; it fits with {' or with '.join(fixes)}"


def _diagnose(
    inst: _Instance,
    carbon_all: FloatArray,
    scalar_capacity: bool,
    time_limit_s: float,
    explain: Explain = "all",
) -> ClusterInfeasibleError:
    """Build the error for a set that does not fit (the caller knows it does not), as far as
    ``explain`` asks (:func:`plan_cluster`)."""
    if explain == "none":
        return ClusterInfeasibleError(
            f"cluster plan: the {len(inst.jobs)} jobs cannot all finish by their deadlines "
            "under the capacity",
            late_jobs=(),
            work_required={},
            work_possible={},
            capacity_needed=None,
            deadline_extension_hours=None,
        )
    # Jobs that cannot fit their window with the capacity to themselves.
    alone_short = []
    for j, lad in enumerate(inst.ladders):
        cap = inst.capacity[inst.window(j)]
        if _work_within(lad, _max_steps(lad, cap)) < inst.targets[j] * (1 - _TOL):
            alone_short.append(j)
    found = _max_weight(inst, time_limit_s)
    if found is None or not found[0]:
        late, fits = alone_short, {j: 0.0 for j in alone_short}
    else:
        late, fits = found
    if not late:
        late = list(range(len(inst.jobs)))
        fits = {j: 0.0 for j in late}
    names = [inst.jobs[j].name for j in late]

    # Capacity: the smallest addition to every slot that lets the whole set fit.
    top = int(sum(int(lad.levels[-1]) for lad in inst.ladders))
    capacity_needed: int | None = None
    searched = explain == "all"
    added = (
        _smallest(top, lambda k: _feasible(inst.with_capacity(inst.capacity + k), time_limit_s))
        if searched
        else None
    )
    if added is not None:
        capacity_needed = int(inst.capacity.max()) + added if scalar_capacity else added

    # Deadlines: the smallest extension of the late jobs' deadlines (all by the same slots).
    room = len(carbon_all) - max(inst.jobs[j].deadline_slot for j in late)
    extension: int | None = None

    def extended(e: int) -> _Instance:
        return inst.with_deadlines({j: inst.jobs[j].deadline_slot + e for j in late}, carbon_all)

    if searched and room > 0:
        extension = _smallest(room, lambda e: _feasible(extended(e), time_limit_s))

    dt = inst.slot_hours
    details = ", ".join(
        f"{inst.jobs[j].name} (needs {inst.jobs[j].job.work:.6g} work units, {fits[j]:.6g} fit)"
        for j in late
    )
    fixes = []
    if capacity_needed is not None:
        if scalar_capacity:
            fixes.append(f"a capacity of {capacity_needed} servers per slot")
        else:
            fixes.append(f"{capacity_needed} more servers in every slot")
    if extension is not None:
        fixes.append(
            f"the deadline{'s' if len(late) > 1 else ''} of {', '.join(names)} extended by "
            f"{extension * dt:g} h"
        )
    if not fixes:
        fixes.append(
            "longer deadlines than the carbon forecast covers"
            if searched
            else "more capacity or longer deadlines"
        )
    top_capacity = int(inst.capacity.max())
    message = (
        f"cluster plan: {len(late)} of {len(inst.jobs)} jobs cannot finish by their deadlines "
        f"under the capacity (at most {top_capacity} server{'s' if top_capacity != 1 else ''} "
        f"per slot): {details}" + _late_message(len(late), len(inst.jobs), fixes)
    )
    return ClusterInfeasibleError(
        message,
        late_jobs=tuple(names),
        work_required={inst.jobs[j].name: inst.jobs[j].job.work for j in late},
        work_possible={inst.jobs[j].name: fits[j] for j in late},
        capacity_needed=capacity_needed,
        deadline_extension_hours=None if extension is None else extension * dt,
    )


# ----------------------------------------------------------------------------------------------
# Public entry points


def _plan_from(
    inst: _Instance, sels: Sequence[Selection], solver: str, started: float, notes: tuple[str, ...]
) -> ClusterPlan:
    plans = []
    used = np.zeros(inst.horizon, dtype=np.int64)
    for j, (c, lad, sel) in enumerate(zip(inst.jobs, inst.ladders, sels, strict=True)):
        window = inst.window(j)
        schedule = schedule_from_selection(
            solver,
            c.job,
            lad,
            inst.carbon[window],
            sel,
            deadline_slots=c.window_slots,
            started=started,
        )
        used[window] += schedule.servers
        plans.append(ClusterJobPlan(c.name, c.arrival_slot, c.deadline_slot, schedule))
    return ClusterPlan(
        solver=solver,
        jobs=tuple(plans),
        capacity=inst.capacity,
        servers_used=used,
        slot_hours=inst.slot_hours,
        solve_ms=(time.perf_counter() - started) * 1e3,
        notes=notes,
    )


def _total_rate(inst: _Instance, sels: Sequence[Selection]) -> float:
    return sum(
        _rate(lad, inst.carbon[inst.window(j)], sel)
        for j, (lad, sel) in enumerate(zip(inst.ladders, sels, strict=True))
    )


def plan_cluster(
    jobs: Sequence[ClusterJob],
    carbon: Sequence[float] | FloatArray,
    capacity: int | Sequence[int] | IntArray,
    *,
    solver: Solver = "fast",
    time_limit_s: float = 60.0,
    explain: Explain = "all",
) -> ClusterPlan:
    """Plan all ``jobs`` together: least total emissions within the capacity and deadlines.

    Args:
        jobs: the jobs, with unique names and the same slot length.
        carbon: intensity per slot from the planning start (gCO2eq/kWh); it must reach the
            latest deadline. Values past it are used only to find a deadline extension when the
            set does not fit.
        capacity: servers per slot: one number, or one per slot up to the latest deadline.
        solver: ``fast`` (the default) or ``exact`` (HiGHS; never worse than ``fast``).
        time_limit_s: HiGHS time limit (exact solver, and the diagnosis of a set that does not
            fit); also bounds the fast solver's local search.
        explain: how much a set that does not fit is diagnosed: ``all`` (the late jobs, the
            work that fits, the capacity and the deadline extension that would make it fit),
            ``late`` (the late jobs and the work that fits), ``none`` (only that it does not
            fit: for a caller with a fallback of its own, such as the online core). The
            searches for a capacity and an extension solve a MILP at every step.

    Returns:
        The plan: each job's schedule, servers used per slot, total emissions, solve time.

    Raises:
        ClusterInfeasibleError: if the jobs cannot all finish by their deadlines; the message
            names the jobs that cannot, the work that fits, and the capacity or deadline
            extension that would make the set fit.
        PlanningError: on malformed input (empty set, repeated names, a forecast or capacity
            that does not reach the latest deadline, mixed slot lengths, unknown solver).
    """
    started = time.perf_counter()
    if solver not in ("fast", "exact"):
        raise PlanningError(f"unknown cluster solver {solver!r}; use 'fast' or 'exact'")
    inst = _prepare(jobs, carbon, capacity)
    carbon_all = np.asarray(carbon, dtype=np.float64)
    scalar = np.ndim(capacity) == 0
    fast = _fast(inst, time_limit_s)
    notes: tuple[str, ...] = ()
    if fast is not None and fast[1]:
        notes = (fast[1],)
    if solver == "fast" and fast is not None:
        return _plan_from(inst, fast[0], "fast", started, notes)
    try:
        exact = _exact(inst, time_limit_s)
    except _SolverTrouble as trouble:
        if fast is not None:
            note = f"{trouble}; kept the fast plan"
            return _plan_from(inst, fast[0], solver, started, (*notes, note))
        raise PlanningError(
            f"cluster plan: the fast solver could not place every job and {trouble}; "
            f"raise the time limit (now {time_limit_s:g} s) or the capacity"
        ) from None
    if exact is None:
        raise _diagnose(inst, carbon_all, scalar, time_limit_s, explain)
    if solver == "fast":
        note = "the fast construction could not place every job; the exact solver did"
        return _plan_from(inst, exact, "fast", started, (note,))
    if fast is not None and _total_rate(inst, fast[0]) < _total_rate(inst, exact):
        note = "HiGHS returned a costlier plan than the fast solver (tolerance or time limit)"
        return _plan_from(inst, fast[0], "exact", started, (note,))
    return _plan_from(inst, exact, "exact", started, ())


def plan_cluster_independent(
    jobs: Sequence[ClusterJob],
    carbon: Sequence[float] | FloatArray,
    capacity: int | Sequence[int] | IntArray,
) -> ClusterPlan:
    """Every job planned alone with the ``carbonscaler`` greedy, ignoring the capacity.

    The result's ``servers_used`` may exceed ``capacity``; see :func:`overcommit`.

    Raises:
        ClusterInfeasibleError: if a job cannot finish in its window even alone.
        PlanningError: on malformed input (as :func:`plan_cluster`).
    """
    started = time.perf_counter()
    inst = _prepare(jobs, carbon, capacity)
    return _plan_from(inst, _independent(inst), "independent", started, ())


def overcommit(plan: ClusterPlan) -> Overcommit:
    """How far ``plan``'s servers exceed its capacity (the independent baseline's cost)."""
    excess = np.maximum(plan.servers_used - plan.capacity[: plan.horizon], 0)
    return Overcommit(
        max_servers=int(excess.max()) if len(excess) else 0,
        server_hours=float(excess.sum()) * plan.slot_hours,
        slots=int(np.count_nonzero(excess)),
    )


def plan_cluster_agnostic(
    jobs: Sequence[ClusterJob],
    carbon: Sequence[float] | FloatArray,
    capacity: int | Sequence[int] | IntArray,
) -> ClusterPlan:
    """Carbon-agnostic first come, first served: each job runs ``m`` servers from arrival.

    In every slot the unfinished jobs that have arrived are served in order of arrival (then
    of input): each gets its ``m`` servers while they fit; the first that does not fit waits,
    and so do all after it (no overtaking). With a constant capacity a started job therefore
    runs to the end; a per-slot capacity that drops pauses the latest started. A job stops
    part-way through the slot its work completes in (prorated). Jobs may finish after their
    deadlines and use carbon data past the latest deadline; if the forecast ends first the
    job is reported incomplete.

    A job whose ``m`` exceeds the capacity of every slot never starts (and does not hold up
    the queue); the plan's notes say so.

    Raises:
        PlanningError: on malformed input (as :func:`plan_cluster`).
    """
    started = time.perf_counter()
    inst = _prepare(jobs, carbon, capacity)
    values = np.asarray(carbon, dtype=np.float64)
    length = len(values)
    cap = _extend(_capacity_array(capacity, inst.horizon), length)[:length]
    order = sorted(range(len(jobs)), key=lambda j: (jobs[j].arrival_slot, j))
    never = {j for j in order if jobs[j].job.min_servers > int(cap.max())}
    order = [j for j in order if j not in never]
    remaining = [c.job.work for c in jobs]
    runs: list[list[int]] = [[] for _ in jobs]  # servers per slot from arrival
    finish: dict[int, tuple[int, float]] = {}  # job -> (slot from arrival, fraction)
    used = np.zeros(length, dtype=np.int64)
    for t in range(length):
        free = int(cap[t])
        blocked = False
        for j in order:
            c = jobs[j]
            if c.arrival_slot > t or j in finish:
                continue
            m = c.job.min_servers
            run = 0
            if not blocked and m <= free:
                run = m
                free -= m
            else:
                blocked = True
            runs[j].append(run)
            if run:
                used[t] += run
                per_slot = float(c.job.profile.throughput[m]) * c.job.slot_hours
                if remaining[j] <= per_slot * (1 + _TOL):
                    finish[j] = (t - c.arrival_slot, remaining[j] / per_slot)
                    remaining[j] = 0.0
                else:
                    remaining[j] -= per_slot
        if len(finish) == len(order):
            used = used[: t + 1]
            break
    plans, notes = [], []
    for j, c in enumerate(jobs):
        servers = np.asarray(runs[j], dtype=np.int64)
        job_carbon = values[c.arrival_slot : c.arrival_slot + len(servers)]
        if j in finish:
            slot, fraction = finish[j]
            partial = slot if fraction < 1 - 1e-12 else None
            schedule = realise(
                "agnostic",
                c.job,
                job_carbon,
                servers,
                partial_slot=partial,
                fraction=min(fraction, 1.0),
                servers_after=0,
                deadline_slots=c.window_slots,
            )
        else:
            notes.append(
                f"{c.name}: its {c.job.min_servers} servers never fit the capacity"
                if j in never
                else f"{c.name}: not done when the carbon data ends"
            )
            schedule = realise(
                "agnostic",
                c.job,
                job_carbon,
                servers,
                partial_slot=None,
                fraction=1.0,
                servers_after=0,
                deadline_slots=c.window_slots,
            )
        plans.append(ClusterJobPlan(c.name, c.arrival_slot, c.deadline_slot, schedule))
    return ClusterPlan(
        solver="agnostic",
        jobs=tuple(plans),
        capacity=cap,
        servers_used=used,
        slot_hours=inst.slot_hours,
        solve_ms=(time.perf_counter() - started) * 1e3,
        notes=tuple(notes),
    )
