"""The decision core: every decision a running job needs, written once.

The local controller, the Kubernetes operator and CarbonAdvisor's what-if executor all run a
job the same way, so they all call this module — nothing here does I/O, reads a clock or sleeps.
Times are *job hours* since the job's arrival; slot ``i`` covers ``[i·Δ, (i+1)·Δ)``; the deadline
is ``n`` slots after arrival.

**A plan** (:class:`Plans`, one row per job) is absolute: for every slot from arrival to the
deadline the servers to run, the partial slot's fraction and the level after it, the forecast it
was made on, and the progress it promises at each slot boundary.

**Planning** (:func:`plan_rows`) covers the work still to do, in the profile's units corrected by
the throughput observed so far (:func:`observed_rate`), plus a *safety margin* where the deadline
leaves room for it (else the bare work), plus the work the plan's own rescales will lose (the
rescale-overhead reservation). Where even the bare work no longer fits, the job runs at its top
level until done — as it does past the deadline. Carbon-agnostic runs ``m`` servers throughout.

**Re-planning** (:func:`review_rows`) happens only at slot boundaries, from the true progress,
when one of three triggers fires (:class:`Reason`):

* *behind* — the work done trails the plan's bare pace by more than :data:`BEHIND_SHARE` of the
  job (a job is always a hair behind a plan that started on time; less is noise);
* *ahead* — the work done leads the plan's own pace by more than the re-plan threshold;
* *forecast* — the forecast now issued for any remaining slot differs from the one the plan was
  made on by more than the threshold (relative). The current slot is observed, so this includes
  the realised intensity of the slot that is starting.

**Running** (:func:`level_rows`): the plan's level for the moment, the top level past the
deadline, and — when the plan has nothing left but the work is not done (the job ran slower
than planned) — the level already running, rather than stopping a job that is nearly finished.

Every function works on many jobs at once (numpy rows), which CarbonAdvisor uses; the scalar
forms (:func:`first_plan`, :func:`review`, :func:`servers_now`) are the same code with one row,
so the runtimes and the advisor cannot disagree.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from carbonscaler.planner.batch import (
    BatchPlan,
    IncrementOrder,
    batch_greedy_with_overhead,
    plans_from_schedules,
)
from carbonscaler.planner.exact import plan_exact
from carbonscaler.planner.model import (
    FloatArray,
    IntArray,
    Job,
    PlanningError,
    Schedule,
    check_feasible,
)
from carbonscaler.planner.policies import RUNNABLE_POLICIES, Policy

__all__ = [
    "BEHIND_SHARE",
    "NewPlan",
    "Plans",
    "Progress",
    "Reason",
    "Rules",
    "Targets",
    "adopt_rows",
    "deciding_policy",
    "first_plan",
    "level_rows",
    "level_stretch",
    "next_change_h",
    "observed_rate",
    "plan_from",
    "plan_rows",
    "plan_targets",
    "review",
    "review_rows",
    "servers_now",
    "slot_of",
    "targeted_plans",
    "top_level",
    "triggers_rows",
]

BEHIND_SHARE = 0.01
"""Behind the plan's pace by more than this share of the job's work re-plans at a boundary."""
OBSERVED_RATE_BOUNDS = (0.25, 4.0)
"""One odd progress reading must not wreck a plan: the throughput correction stays in here."""
_EPS = 1e-12
BoolArray = NDArray[np.bool_]


_NO_FORECAST = np.empty((1, 0))


class Reason(enum.IntFlag):
    """Why a plan was (re-)made or a level chosen; several may hold at once."""

    NONE = 0
    FIRST = enum.auto()  # the job's first plan
    BEHIND = enum.auto()  # progress trails the plan's pace
    AHEAD = enum.auto()  # progress leads the plan beyond the threshold
    FORECAST = enum.auto()  # the forecast changed beyond the threshold
    OUT_OF_REACH = enum.auto()  # even the bare work no longer fits: top level until done
    NO_MARGIN = enum.auto()  # the safety margin did not fit: the bare work is planned
    LATE = enum.auto()  # past the deadline: top level until done
    OVERRUN = enum.auto()  # the plan is used up but the work is not: keep running
    QUEUED = enum.auto()  # held below its plan by a shared cluster's capacity
    ARRIVAL = enum.auto()  # a job joined the shared cluster: its jobs are planned together
    DEPARTURE = enum.auto()  # a job left the shared cluster, freeing capacity
    CAPACITY = enum.auto()  # the shared cluster's capacity changed: its jobs are planned again

    @property
    def words(self) -> list[str]:
        """The reasons as lower-case words, for events and reports."""
        return [r.name.lower().replace("_", "-") for r in Reason if r and r in self and r.name]

    @classmethod
    def from_words(cls, words: Iterable[str]) -> Reason:
        """The reasons :attr:`words` wrote (unknown words are ignored: a newer writer's)."""
        reasons = cls.NONE
        for word in words:
            reasons |= cls.__members__.get(str(word).upper().replace("-", "_"), cls.NONE)
        return reasons


@dataclass(frozen=True)
class Rules:
    """How a job is planned and re-planned.

    Args:
        policy: a runnable policy (carbonscaler, exact, suspend-resume, agnostic).
        replan_threshold: relative deviation (forecast, or progress ahead) that re-plans.
        safety_margin: extra share of the remaining work each plan covers, where it fits.

    Raises:
        PlanningError: for a policy a running job cannot follow, or values out of range.
    """

    policy: Policy = Policy.CARBONSCALER
    replan_threshold: float = 0.05
    safety_margin: float = 0.05

    def __post_init__(self) -> None:
        policy = Policy.parse(self.policy)
        object.__setattr__(self, "policy", policy)
        if not policy.runnable:
            raise PlanningError(
                f"policy {policy} follows fixed rules and cannot run a job; use one of "
                f"{', '.join(RUNNABLE_POLICIES)}"
            )
        if not 0 < self.replan_threshold < 1:
            raise PlanningError(
                f"the re-plan threshold must be in (0, 1), got {self.replan_threshold}"
            )
        if not 0 <= self.safety_margin < 1:
            raise PlanningError(f"the safety margin must be in [0, 1), got {self.safety_margin}")

    def planning_job(self, job: Job) -> Job:
        """The job as this policy plans it (suspend-resume never scales above ``m``)."""
        if self.policy is Policy.SUSPEND_RESUME:
            return job.with_bounds(job.min_servers, job.min_servers)
        return job


def deciding_policy(policy: Policy, job: Job) -> Policy:
    """The policy whose decisions ``policy`` makes for ``job``: on a concave ladder the exact
    optimum is the greedy's (the paper's theorem, checked by the property tests), so there
    ``exact`` decides exactly as ``carbonscaler`` and one simulation serves both."""
    if policy is Policy.EXACT and job.ladder().concave:
        return Policy.CARBONSCALER
    return policy


def top_level(job: Job, rules: Rules) -> int:
    """The level a job runs at when it must finish as fast as it can (late, out of reach):
    the most productive level, or ``m`` for carbon-agnostic (which never scales)."""
    if rules.policy is Policy.AGNOSTIC:
        return job.min_servers
    return int(rules.planning_job(job).ladder().levels[-1])


_TRIGGER_BITS = np.array([Reason.BEHIND, Reason.AHEAD, Reason.FORECAST], dtype=np.int64)
"""The re-plan triggers' bits, in the order :func:`triggers_rows`' compiled pass takes them."""


# -- the plan ------------------------------------------------------------------------------


@dataclass
class Plans:
    """Plans of ``B`` jobs over ``n`` absolute slots (arrival to deadline), one row each.

    In slot ``i`` row ``b`` runs ``servers[b, i]`` for ``fraction[b, i]`` of the slot and
    ``after[b, i]`` for the rest. ``planned_done[b, i]`` is the work the plan promises by the
    start of slot ``i`` at the bare pace (its own work divided by ``margin[b]``, the safety
    factor it was made with); ``forecast`` is what it was made on; ``made_at`` the slot it was
    made in; ``end_slot`` when its last planned server stops, in slots from arrival.
    """

    servers: IntArray
    fraction: FloatArray
    after: IntArray
    forecast: FloatArray
    planned_done: FloatArray
    margin: FloatArray
    made_at: IntArray
    end_slot: FloatArray

    @classmethod
    def empty(cls, rows: int, slots: int) -> Plans:
        return cls(
            servers=np.zeros((rows, slots), dtype=np.int64),
            fraction=np.ones((rows, slots)),
            after=np.zeros((rows, slots), dtype=np.int64),
            forecast=np.zeros((rows, slots)),
            planned_done=np.zeros((rows, slots + 1)),
            margin=np.ones(rows),
            made_at=np.zeros(rows, dtype=np.int64),
            end_slot=np.zeros(rows),
        )

    @property
    def rows(self) -> int:
        return int(self.servers.shape[0])

    @property
    def slots(self) -> int:
        return int(self.servers.shape[1])

    def to_dict(self, row: int = 0) -> dict[str, Any]:
        """One row as JSON-ready lists (the controller's saved state, the operator's status)."""
        return {
            "servers": [int(x) for x in self.servers[row]],
            "fraction": [float(x) for x in self.fraction[row]],
            "after": [int(x) for x in self.after[row]],
            "forecast": [float(x) for x in self.forecast[row]],
            "plannedDone": [float(x) for x in self.planned_done[row]],
            "margin": float(self.margin[row]),
            "madeAtSlot": int(self.made_at[row]),
            "endSlot": float(self.end_slot[row]),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plans:
        """A one-row plan from :meth:`to_dict`'s form.

        Raises:
            PlanningError: if the lists disagree in length.
        """
        servers = np.asarray(data["servers"], dtype=np.int64)[None, :]
        n = servers.shape[1]
        plans = cls(
            servers=servers,
            fraction=np.asarray(data["fraction"], dtype=np.float64)[None, :],
            after=np.asarray(data["after"], dtype=np.int64)[None, :],
            forecast=np.asarray(data["forecast"], dtype=np.float64)[None, :],
            planned_done=np.asarray(data["plannedDone"], dtype=np.float64)[None, :],
            margin=np.array([float(data.get("margin", 1.0))]),
            made_at=np.array([int(data.get("madeAtSlot", 0))], dtype=np.int64),
            end_slot=np.array([float(data.get("endSlot", 0.0))]),
        )
        shapes = {a.shape[1] for a in (plans.fraction, plans.after, plans.forecast)} | {
            plans.planned_done.shape[1] - 1
        }
        if shapes != {n}:
            raise PlanningError(f"a saved plan's lists disagree in length ({sorted(shapes)})")
        return plans


def observed_rate(work_done: FloatArray, nominal_work: FloatArray) -> FloatArray:
    """Work done per work the profile promised for the server-time run so far, bounded.

    Below 1 when the profile overstates the job's speed or rescales cost time; 1 until both
    are known.
    """
    done = np.asarray(work_done, dtype=np.float64)
    nominal = np.asarray(nominal_work, dtype=np.float64)
    known = (nominal > 0) & (done > 0)
    ratio = np.divide(done, nominal, out=np.ones_like(done), where=known)
    return np.clip(ratio, *OBSERVED_RATE_BOUNDS)


def plan_rows(
    job: Job,
    rules: Rules,
    forecast: FloatArray,
    target_work: FloatArray,
    *,
    overhead_h: float,
    previous: IntArray,
    started: BoolArray,
    fallback_work: FloatArray | None = None,
    order: IncrementOrder | None = None,
) -> BatchPlan:
    """The policy's plans for ``target_work`` over each row's ``forecast`` (relative slots).

    Carbon-agnostic runs ``m`` from the first slot; the others use the greedy, which also
    covers the work its own rescales lose (``overhead_h`` hours per change), or the MILP for
    ``exact`` where the greedy is not provably optimal (a non-concave profile). Rows whose
    target cannot fit are planned for ``fallback_work`` instead, where given (``fell_back``).

    Args:
        job: the job (its profile, bounds and slot length; its work is not used).
        rules: the policy.
        forecast: ``(B, h)`` intensity per slot, gCO2eq/kWh.
        target_work: ``(B,)`` work to cover, in the profile's units.
        overhead_h: job hours of work lost per change of level.
        previous: ``(B,)`` level running before the first slot.
        started: ``(B,)`` whether the job has run before (so its next start is a rescale).
        fallback_work: ``(B,)`` work to cover where ``target_work`` cannot fit, or None.
        order: each row's increments in the greedy's order, to save its sort and merge
            (:class:`~carbonscaler.planner.batch.IncrementOrder`; the plans are the same), or
            None.
    """
    horizon = forecast.shape[1]
    dt = job.slot_hours
    target = np.asarray(target_work, dtype=np.float64) / dt
    fallback = None if fallback_work is None else np.asarray(fallback_work, np.float64) / dt
    planning = rules.planning_job(job)
    if rules.policy is Policy.AGNOSTIC:
        made = _agnostic_rows(job, target, horizon)
    elif deciding_policy(rules.policy, job) is Policy.EXACT:
        schedules: list[Schedule | None] = []
        for row, units in zip(forecast, target, strict=True):
            try:
                schedules.append(plan_exact(planning.with_work(float(units) * dt), row))
            except PlanningError:
                schedules.append(None)
        made = plans_from_schedules(schedules, horizon)
    else:
        # The compiled greedy tries the fallback itself, reusing the row's merge.
        return batch_greedy_with_overhead(
            planning.ladder(),
            forecast,
            target,
            throughput=job.profile.throughput,
            overhead_h=overhead_h,
            slot_hours=dt,
            previous=previous,
            started=started,
            fallback=fallback,
            order=order,
        )
    if fallback_work is None:
        return made
    retry = np.flatnonzero(~made.feasible)
    fell_back = np.zeros(len(target), dtype=bool)
    fell_back[retry] = True
    if len(retry):
        again = plan_rows(
            job,
            rules,
            forecast[retry],
            np.asarray(fallback_work, np.float64)[retry],
            overhead_h=overhead_h,
            previous=previous[retry],
            started=started[retry],
        )
        made = _merge(made, retry, again)
    return replace(made, fell_back=fell_back)


def _agnostic_rows(job: Job, target: FloatArray, horizon: int) -> BatchPlan:
    """``m`` servers from the first slot until ``target`` (work / slot hours) is covered."""
    m = job.min_servers
    need = target / float(job.profile.throughput[m])
    rows = len(target)
    slot = np.arange(horizon)[None, :]
    servers = np.where(slot < np.ceil(need - _EPS)[:, None], m, 0).astype(np.int64)
    fraction = np.ones((rows, horizon))
    after = servers.copy()
    whole = np.floor(need).astype(np.int64)
    partial = (need - whole > _EPS) & (whole < horizon)
    r = np.flatnonzero(partial)
    fraction[r, whole[r]] = (need - whole)[r]
    after[r, whole[r]] = 0
    return BatchPlan(servers, fraction, after, need <= horizon + _EPS)


def _install(
    plans: Plans,
    job: Job,
    rules: Rules,
    rows: IntArray,
    first: int,
    made: BatchPlan,
    forecast: FloatArray,
    start_work: FloatArray,
    pace: FloatArray,
    margin: FloatArray,
) -> None:
    """Write ``made`` into ``rows`` from slot ``first`` on; infeasible rows run at the top.

    ``planned_done`` gets the work each plan promises at the bare pace: its own work in the
    profile's units, times ``pace`` (the observed throughput over the margin factor).
    """
    width = plans.slots - first
    if made.servers.shape != (len(rows), width) or np.shape(forecast) != (len(rows), width):
        raise ValueError(f"{len(rows)} plans of {width} slots from slot {first} expected")
    from carbonscaler.planner import _kernels  # numba: imported when first needed

    # One compiled pass per row: the plan's levels, the forecast, the promised progress and
    # where the plan ends, written straight into the table (no temporaries per field).
    _kernels.install_rows(
        np.ascontiguousarray(rows, dtype=np.int64),
        int(first),
        np.ascontiguousarray(made.servers, dtype=np.int64),
        np.ascontiguousarray(made.fraction, dtype=np.float64),
        np.ascontiguousarray(made.after, dtype=np.int64),
        np.ascontiguousarray(made.feasible, dtype=np.bool_),
        top_level(job, rules),
        np.ascontiguousarray(forecast, dtype=np.float64),
        np.ascontiguousarray(job.profile.throughput, dtype=np.float64),
        float(job.slot_hours),
        np.ascontiguousarray(start_work, dtype=np.float64),
        np.ascontiguousarray(pace, dtype=np.float64),
        plans.servers,
        plans.fraction,
        plans.after,
        plans.forecast,
        plans.planned_done,
        plans.end_slot,
    )
    plans.margin[rows] = margin
    plans.made_at[rows] = first


@dataclass(frozen=True)
class Targets:
    """What a (re-)plan covers for each row, in the profile's units (see module doc).

    Attributes:
        work: the remaining work at the observed pace, times the safety margin.
        bare: the same without the margin: planned instead where ``work`` cannot fit.
        observed: the observed-throughput correction (:func:`observed_rate`).
        factor: the margin factor (1 for carbon-agnostic, which runs until done whatever it
            plans).
    """

    work: FloatArray
    bare: FloatArray
    observed: FloatArray
    factor: float


def plan_targets(
    job: Job, rules: Rules, work_done: FloatArray, nominal_work: FloatArray
) -> Targets:
    """The work each row's next plan covers: what is left, corrected by the pace observed so
    far, with the safety margin (the bare work where that cannot fit)."""
    observed = observed_rate(work_done, nominal_work)
    bare = np.maximum(job.work - work_done, 0.0) / observed
    factor = 1.0 if rules.policy is Policy.AGNOSTIC else 1.0 + rules.safety_margin
    return Targets(bare * factor, bare, observed, factor)


def adopt_rows(
    plans: Plans,
    job: Job,
    rules: Rules,
    rows: IntArray,
    first: int,
    made: BatchPlan,
    forecast: FloatArray,
    work_done: FloatArray,
    targets: Targets,
) -> NDArray[np.int64]:
    """Install plans made for ``targets`` into ``rows`` from slot ``first`` on — by this core's
    planner or by another (the joint planner of a shared cluster) — and say why they were made
    as they are: ``NO_MARGIN`` where only the bare work was planned (``made.fell_back``),
    ``OUT_OF_REACH`` where not even that fits (those rows run at the top level).
    """
    margin = np.full(len(rows), targets.factor)
    reasons = np.zeros(len(rows), dtype=np.int64)
    if made.fell_back is not None:
        margin[made.fell_back] = 1.0
        reasons[made.fell_back] |= Reason.NO_MARGIN
    reasons[~made.feasible] |= Reason.OUT_OF_REACH
    margin[~made.feasible] = 1.0
    _install(
        plans, job, rules, rows, first, made, forecast, work_done, targets.observed / margin, margin
    )
    return reasons


def _plan_and_install(
    plans: Plans,
    job: Job,
    rules: Rules,
    rows: IntArray,
    first: int,
    forecast: FloatArray,
    work_done: FloatArray,
    nominal_work: FloatArray,
    previous: IntArray,
    started: BoolArray,
    overhead_h: float,
    order: IncrementOrder | None = None,
) -> NDArray[np.int64]:
    """Plan the rest of each row's job from ``first`` and install it; the reasons it adds."""
    targets, made = targeted_plans(
        job, rules, forecast, work_done, nominal_work, previous, started, overhead_h, order=order
    )
    return adopt_rows(plans, job, rules, rows, first, made, forecast, work_done, targets)


def targeted_plans(
    job: Job,
    rules: Rules,
    forecast: FloatArray,
    work_done: FloatArray,
    nominal_work: FloatArray,
    previous: IntArray,
    started: BoolArray,
    overhead_h: float,
    *,
    order: IncrementOrder | None = None,
) -> tuple[Targets, BatchPlan]:
    """The plans the core makes for each row — the remaining work at the observed pace plus
    the safety margin (the bare work where the margin does not fit) over its forecast row —
    before they are installed, and the targets they were made for (``order``: see
    :func:`plan_rows`)."""
    targets = plan_targets(job, rules, work_done, nominal_work)
    made = plan_rows(
        job,
        rules,
        forecast,
        targets.work,
        overhead_h=overhead_h,
        previous=previous,
        started=started,
        # No room for the margin: plan the bare work.
        fallback_work=targets.bare if targets.factor > 1.0 else None,
        order=order,
    )
    return targets, made


def _merge(base: BatchPlan, rows: IntArray, other: BatchPlan) -> BatchPlan:
    servers, fraction = base.servers.copy(), base.fraction.copy()
    after, feasible = base.after.copy(), base.feasible.copy()
    servers[rows], fraction[rows] = other.servers, other.fraction
    after[rows], feasible[rows] = other.after, other.feasible
    return BatchPlan(servers, fraction, after, feasible)


def first_plans(
    job: Job,
    rules: Rules,
    forecast: FloatArray,
    *,
    overhead_h: float = 0.0,
    order: IncrementOrder | None = None,
) -> tuple[Plans, NDArray[np.int64]]:
    """Plans for ``B`` jobs arriving now, each over its ``(n,)`` forecast row.

    Rows whose work cannot fit before the deadline run at the top level (reason
    ``OUT_OF_REACH``); :func:`first_plan` refuses them instead. ``order``: see
    :func:`plan_rows`.
    """
    rows, n = forecast.shape
    plans = Plans.empty(rows, n)
    index = np.arange(rows)
    zeros = np.zeros(rows)
    reasons = _plan_and_install(
        plans,
        job,
        rules,
        index,
        0,
        forecast,
        zeros,
        zeros,
        np.zeros(rows, dtype=np.int64),
        np.zeros(rows, dtype=bool),
        overhead_h,
        order,
    )
    return plans, reasons | Reason.FIRST


def review_rows(
    plans: Plans,
    job: Job,
    rules: Rules,
    rows: IntArray,
    slot: int,
    *,
    work_done: FloatArray,
    nominal_work: FloatArray,
    running: IntArray,
    started: BoolArray,
    forecast: FloatArray | None,
    overhead_h: float,
    order: IncrementOrder | None = None,
) -> tuple[IntArray, NDArray[np.int64]]:
    """At the start of ``slot``, re-plan the ``rows`` whose triggers fire (see module doc).

    Args:
        plans: every job's plan; re-planned rows are rewritten in place from ``slot`` on.
        job: the job (all rows share its profile, bounds, work and slot length).
        rules: policy, threshold and margin.
        rows: ``(R,)`` rows to review (jobs not yet done).
        slot: the slot now starting (before the deadline; later slots are never re-planned).
        work_done: ``(R,)`` work done so far, in the profile's units.
        nominal_work: ``(R,)`` work the profile promised for the server-time run so far.
        running: ``(R,)`` level running now.
        started: ``(R,)`` whether each job has run before.
        forecast: ``(R, n - slot)`` forecast issued now, or None when it cannot have changed
            (perfect foresight) or is unavailable (the runtime keeps the last one).
        overhead_h: job hours of work lost per change of level.
        order: each row's increments in the greedy's order, to save its sort (see
            :func:`plan_rows`), or None.

    Returns:
        The rows re-planned and, for each, why (:class:`Reason` bits).
    """
    n = plans.slots
    if rules.policy is Policy.AGNOSTIC or slot >= n or not len(rows):
        return rows[:0], np.zeros(0, dtype=np.int64)
    # A job whose work is done (it is finishing, or its runtime has yet to see it end) has
    # nothing left to plan: it keeps its level until it ends.
    open_ = work_done < job.work * (1 - 1e-9)
    if not open_.all():
        keep = np.flatnonzero(open_)
        rows, work_done, nominal_work = rows[keep], work_done[keep], nominal_work[keep]
        running, started = running[keep], started[keep]
        forecast = None if forecast is None else forecast[keep]
        order = None if order is None else order[keep]
        if not len(rows):
            return rows, np.zeros(0, dtype=np.int64)
    reasons = triggers_rows(plans, job, rules, rows, slot, work_done, forecast)
    again = np.flatnonzero(reasons)
    if not len(again):
        return rows[:0], np.zeros(0, dtype=np.int64)
    # Under noisy forecasts nearly every row re-plans: then the forecasts are not copied.
    pick: IntArray | slice = slice(None) if len(again) == len(rows) else again
    issued = plans.forecast[rows[again], slot:] if forecast is None else forecast[pick]
    added = _plan_and_install(
        plans,
        job,
        rules,
        rows[again],
        slot,
        issued,
        work_done[again],
        nominal_work[again],
        running[again],
        started[again],
        overhead_h,
        None if order is None or forecast is None else order[pick],
    )
    return rows[again], reasons[again] | added


def triggers_rows(
    plans: Plans,
    job: Job,
    rules: Rules,
    rows: IntArray,
    slot: int,
    work_done: FloatArray,
    forecast: FloatArray | None,
) -> NDArray[np.int64]:
    """Which re-plan triggers fire for each of ``rows`` at the start of ``slot`` (``BEHIND``,
    ``AHEAD``, ``FORECAST``; 0 where none), without re-planning — :func:`review_rows` re-plans
    the rows it returns; a shared cluster re-plans all its jobs together instead.

    Args:
        plans: the plans in force.
        job: the job (its work sets the thresholds' scale).
        rules: the re-plan threshold.
        rows: ``(R,)`` rows to check, their work not yet done.
        slot: the slot now starting (before the deadline).
        work_done: ``(R,)`` work done so far, in the profile's units.
        forecast: ``(R, n - slot)`` forecast issued now, or None when it cannot have changed.
    """
    from carbonscaler.planner import _kernels  # numba: imported when first needed

    threshold = rules.replan_threshold
    width = plans.slots - slot if forecast is not None else 0
    issued = np.broadcast_to(forecast if forecast is not None else _NO_FORECAST, (len(rows), width))
    # Compiled, one pass per row: the progress triggers against the plan's promised progress,
    # then the forecast's, which stops at the row's first drift (most rows drift early under
    # noise).
    reasons = np.empty(len(rows), dtype=np.int64)
    _kernels.trigger_rows(
        plans.planned_done,
        plans.made_at,
        plans.margin,
        np.ascontiguousarray(rows, dtype=np.int64),
        int(slot),
        np.ascontiguousarray(work_done, dtype=np.float64),
        -BEHIND_SHARE * job.work,
        threshold * job.work,
        np.ascontiguousarray(issued, dtype=np.float64),
        plans.forecast,
        float(threshold),
        _EPS,
        _TRIGGER_BITS,
        reasons,
    )
    return reasons


def slot_of(hours: float, slot_hours: float) -> tuple[int, float]:
    """The slot containing job hour ``hours`` and how far into it (0 ≤ into < 1)."""
    slot = math.floor(hours / slot_hours + _EPS)
    return slot, max(hours / slot_hours - slot, 0.0)


def level_rows(
    plans: Plans,
    job: Job,
    rules: Rules,
    rows: IntArray,
    slot: IntArray,
    into: FloatArray,
    running: IntArray,
) -> tuple[IntArray, NDArray[np.int64]]:
    """The level each of ``rows`` runs at ``into`` (0..1) of its ``slot``, and why.

    The plan's level; past the deadline the top level (``LATE``); where the plan has no more
    servers but the job still runs, the level running (``OVERRUN``).
    """
    n = plans.slots
    inside = slot < n
    s = np.minimum(slot, n - 1)
    planned = np.where(  # not yet :func:`switched`: the slot's first level
        into < plans.fraction[rows, s] - _EPS, plans.servers[rows, s], plans.after[rows, s]
    )
    level, reasons = _running_rules(
        plans, job, rules, rows, planned[:, None], inside[:, None], (slot + into)[:, None], running
    )
    return level[:, 0], reasons[:, 0]


def switched(into: float, fraction: float) -> bool:
    """Whether a slot's switch point ``fraction`` is reached ``into`` (0..1) the slot: the one
    rule by which a partly used slot changes level, for plans and for a cluster's grants."""
    return into >= fraction - _EPS


def level_stretch(
    plans: Plans,
    job: Job,
    rules: Rules,
    rows: IntArray,
    first: int,
    span: int,
    running: IntArray,
) -> tuple[IntArray, NDArray[np.int64]]:
    """:func:`level_rows` through a stretch without re-plans: slots ``first .. first+span-1``.

    Returns ``(R, 2·span)`` levels and reasons: for each slot, the level from its start and
    the level from its switch point (``fraction``; past the deadline, the slot's end). An
    overrun keeps the level of the moment before it (``running`` before the first).
    """
    from carbonscaler.planner import _kernels  # numba: imported when first needed

    # Compiled: each row's moments and the running rules in one pass (no (R, 2·span)
    # temporaries per step of a stretch).
    level = np.empty((len(rows), 2 * span), dtype=np.int64)
    reasons = np.empty((len(rows), 2 * span), dtype=np.int64)
    _kernels.stretch_rows(
        plans.servers,
        plans.fraction,
        plans.after,
        plans.end_slot,
        np.ascontiguousarray(rows, dtype=np.int64),
        int(first),
        int(span),
        _EPS,
        np.ascontiguousarray(running, dtype=np.int64),
        top_level(job, rules),
        int(Reason.LATE),
        int(Reason.OVERRUN),
        level,
        reasons,
    )
    return level, reasons


def _running_rules(
    plans: Plans,
    job: Job,
    rules: Rules,
    rows: IntArray,
    planned: IntArray,
    inside: BoolArray,
    at: FloatArray,
    running: IntArray,
) -> tuple[IntArray, NDArray[np.int64]]:
    """The plan's ``(R, K)`` levels at successive moments ``at`` (slots since arrival) with the
    running rules applied: top level past the deadline, and an overrun keeps the level before.

    The rules are compiled (:func:`carbonscaler.planner._kernels.running_rows`), the one
    place they live: :func:`level_stretch` applies them through the same code.
    """
    from carbonscaler.planner import _kernels  # numba: imported when first needed

    shape = np.broadcast_shapes(np.shape(planned), np.shape(inside), np.shape(at))
    level = np.empty(shape, dtype=np.int64)
    reasons = np.empty(shape, dtype=np.int64)
    _kernels.running_rows(
        np.ascontiguousarray(np.broadcast_to(planned, shape), dtype=np.int64),
        np.ascontiguousarray(np.broadcast_to(inside, shape), dtype=np.bool_),
        np.ascontiguousarray(np.broadcast_to(at, shape), dtype=np.float64),
        plans.end_slot,
        np.ascontiguousarray(rows, dtype=np.int64),
        np.ascontiguousarray(running, dtype=np.int64),
        top_level(job, rules),
        int(Reason.LATE),
        int(Reason.OVERRUN),
        level,
        reasons,
    )
    return level, reasons


def next_change_h(plans: Plans, row: int, hours: float, current: int, job: Job) -> float | None:
    """The next job hour after ``hours`` at which the plan of ``row`` changes level from
    ``current`` (a slot boundary or a partial slot's switch point), or None before the deadline.
    """
    dt = job.slot_hours
    slot = math.floor(hours / dt + _EPS)
    for i in range(max(slot, 0), plans.slots):
        points = [(float(i), int(plans.servers[row, i]))]
        if plans.fraction[row, i] < 1.0:
            points.append((i + float(plans.fraction[row, i]), int(plans.after[row, i])))
        for at, level in points:
            if at * dt <= hours + _EPS * dt:
                continue
            if level != current:
                return at * dt
    return None


# -- one job -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What a running job's runtime observed, in the profile's units.

    Args:
        work_done: work done so far.
        nominal_work: work the profile promises for the server-time run so far.
        running: the level running now.
        started: whether the job has run before (its next start is a rescale).
    """

    work_done: float = 0.0
    nominal_work: float = 0.0
    running: int = 0
    started: bool = False


@dataclass(frozen=True)
class NewPlan:
    """A (re-)plan: the new plan and why it was made."""

    plans: Plans
    reasons: Reason

    @property
    def servers(self) -> list[int]:
        return [int(x) for x in self.plans.servers[0]]


def first_plan(job: Job, rules: Rules, forecast: FloatArray, *, overhead_h: float = 0.0) -> NewPlan:
    """The first plan of one job over its ``(n,)`` forecast (``n`` = slots to the deadline).

    Raises:
        InfeasibleError: if the work cannot fit before the deadline even at the top level,
            saying what fits and what deadline would work (not for carbon-agnostic, which
            does not look at the deadline).
    """
    forecast = np.asarray(forecast, dtype=np.float64)
    return plan_from(None, job, rules, 0, Progress(), forecast, overhead_h=overhead_h)


def plan_from(
    plans: Plans | None,
    job: Job,
    rules: Rules,
    slot: int,
    progress: Progress,
    forecast: FloatArray,
    *,
    overhead_h: float = 0.0,
) -> NewPlan:
    """A plan for one job made at ``slot`` whatever the triggers say: its first plan (slot 0,
    no plan yet), or a new one after its settings changed mid-run (the deadline may have
    moved: the plan spans ``slot + len(forecast)`` slots, the old plan's earlier slots kept).

    Raises:
        InfeasibleError: if the remaining work cannot fit before the deadline even at the top
            level (not for carbon-agnostic).
    """
    forecast = np.asarray(forecast, dtype=np.float64)
    remaining = job.work - progress.work_done
    if rules.policy is not Policy.AGNOSTIC:
        planning = rules.planning_job(job).with_work(max(remaining, job.work * 1e-9))
        check_feasible(planning, planning.ladder(), len(forecast), policy=str(rules.policy))
    made = Plans.empty(1, slot + len(forecast))
    if plans is not None:
        past = min(slot, plans.slots)
        for name in ("servers", "fraction", "after", "forecast"):
            getattr(made, name)[0, :past] = getattr(plans, name)[0, :past]
        made.planned_done[0, :past] = plans.planned_done[0, :past]
    reasons = _plan_and_install(
        made,
        job,
        rules,
        np.zeros(1, dtype=np.int64),
        slot,
        forecast[None, :],
        np.array([progress.work_done]),
        np.array([progress.nominal_work]),
        np.array([progress.running], dtype=np.int64),
        np.array([progress.started]),
        overhead_h,
    )
    return NewPlan(made, Reason(int(reasons[0])) | Reason.FIRST)


def review(
    plans: Plans,
    job: Job,
    rules: Rules,
    slot: int,
    progress: Progress,
    forecast: FloatArray | None,
    *,
    overhead_h: float = 0.0,
) -> Reason:
    """Review one job's plan at the start of ``slot`` (see :func:`review_rows`).

    Returns:
        Why it was re-planned (the plan is rewritten in place), or ``Reason.NONE``.
    """
    done, reasons = review_rows(
        plans,
        job,
        rules,
        np.zeros(1, dtype=np.int64),
        slot,
        work_done=np.array([progress.work_done]),
        nominal_work=np.array([progress.nominal_work]),
        running=np.array([progress.running], dtype=np.int64),
        started=np.array([progress.started]),
        forecast=None if forecast is None else np.asarray(forecast, dtype=np.float64)[None, :],
        overhead_h=overhead_h,
    )
    return Reason(int(reasons[0])) if len(done) else Reason.NONE


def servers_now(
    plans: Plans, job: Job, rules: Rules, hours: float, running: int
) -> tuple[int, Reason]:
    """The level one job runs at job hour ``hours`` and why (see :func:`level_rows`)."""
    slot, into = slot_of(hours, job.slot_hours)
    level, reasons = level_rows(
        plans,
        job,
        rules,
        np.zeros(1, dtype=np.int64),
        np.array([slot], dtype=np.int64),
        np.array([into]),
        np.array([running], dtype=np.int64),
    )
    return int(level[0]), Reason(int(reasons[0]))
