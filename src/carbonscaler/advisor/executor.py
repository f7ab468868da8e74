"""Execute plans against the actual trace, for many start times at once.

Every run steps through its slots in lockstep with all the others (numpy over runs, a Python loop
over slots). This is the *world*: in each slot a run executes the level the decision core
(:mod:`carbonscaler.decision`) chooses — the plan's ``servers`` for ``fraction`` of the slot,
then ``after`` — at its *actual* throughput (the profile times ``1 + ε`` for a profile error
``ε``), paying the *actual* carbon. It stops the moment its work is done. Each change of server
count to a non-zero level, other than the first start, loses ``rescale_overhead_s`` seconds of
work (checkpoint, stop, restart) while still drawing power.

The decisions — the first plan, re-plans at slot boundaries, the safety margin, the top level
when late — are the decision core's, exactly as the local controller and the Kubernetes
operator make them, so a what-if row describes what a real run would do. The policies that
follow fixed rules (static, threshold, static-best) never re-plan.

Where runs go exactly as planned (:attr:`Conditions.exact_world`: perfect forecasts, no profile
error, no overhead) no re-plan can fire, so a run is its first plan: the world runs the
planner's plans in one compiled call, and only the runs whose plan leaves a say to the running
rules (top level, overrun) step through the slots (see :func:`_follow_first_plans`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from carbonscaler.decision import (
    Rules,
    deciding_policy,
    first_plans,
    level_stretch,
    review_rows,
    targeted_plans,
)
from carbonscaler.forecast import ForecastModel, ForecastSpec, issue_forecasts
from carbonscaler.planner.batch import IncrementOrder, increment_order
from carbonscaler.planner.model import FloatArray, IntArray, Job, Ladder, PlanningError
from carbonscaler.planner.policies import Policy

__all__ = ["Conditions", "Outcome", "simulate_policy"]

_EPS = 1e-12
_ORDER_CELLS = 16_000_000
"""At most this many increments (4 bytes each) in the greedy's orders made once per issue slot."""
_ORDER_PREFIX = 4
"""Increments per slot an issue slot's order keeps (at most all ``J`` per slot): its first
``4·w`` of ``w·J``, which nearly every plan reads no further than."""


@dataclass(frozen=True)
class Conditions:
    """What the world does to a plan, and the rules the runtime plans by.

    Args:
        forecast: how forecasts are made (perfect by default).
        profile_error: the real throughput is the profile's times ``1 + ε``, ``ε ~ U(-x, x)``
            drawn once per run.
        rescale_overhead_s: seconds of work lost at each change of server count.
        replan_threshold: relative deviation (forecast, or progress ahead) that re-plans.
        safety_margin: extra share of the remaining work each plan covers where it fits (the
            job spec's default).
        threshold_percentile: percentile for ``suspend-resume-threshold``.
        history_hours: how much past intensity the threshold percentile looks at.
        static_servers: ``k`` for the ``static`` policy (default ``2·m``, capped by the profile).
        seed: seed for the profile error.
    """

    forecast: ForecastSpec = field(default_factory=ForecastSpec)
    profile_error: float = 0.0
    rescale_overhead_s: float = 0.0
    replan_threshold: float = 0.05
    safety_margin: float = 0.05
    threshold_percentile: float = 25.0
    history_hours: float = 168.0
    static_servers: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.profile_error < 1.0:
            raise ValueError(f"profile error must be within [0, 1), got {self.profile_error}")
        if not (math.isfinite(self.rescale_overhead_s) and self.rescale_overhead_s >= 0):
            raise ValueError(
                f"rescale overhead must be a finite number of seconds >= 0, not"
                f" {self.rescale_overhead_s}"
            )
        if self.seed < 0:
            raise ValueError(f"the seed must be >= 0, not {self.seed}")
        if not 0 < self.replan_threshold < 1:
            raise ValueError("the re-planning threshold must be in (0, 1)")
        if not 0 <= self.safety_margin < 1:
            raise ValueError("the safety margin must be in [0, 1)")

    @classmethod
    def from_options(
        cls,
        *,
        forecast_model: str | None = None,
        forecast_error: float = 0.0,
        forecast_quantile: float = 0.5,
        seed: int = 0,
        **settings: Any,
    ) -> Conditions:
        """Conditions as the command line and the dashboard name them: the forecast model
        (the one named, else ``uniform`` with an error, else ``perfect``:
        :meth:`ForecastSpec.from_options`), the seed of every error, and the other fields as
        given.

        Raises:
            PlanningError: for a value out of range, saying which.
        """
        try:
            forecast = ForecastSpec.from_options(
                forecast_model, forecast_error, seed, forecast_quantile
            )
            return cls(forecast=forecast, seed=seed, **settings)
        except ValueError as exc:
            raise PlanningError(str(exc)) from None

    def rules(self, policy: str) -> Rules:
        """The decision rules a running job with ``policy`` follows under these conditions."""
        return Rules(Policy.parse(policy), self.replan_threshold, self.safety_margin)

    @property
    def exact_world(self) -> bool:
        """Whether runs go exactly as planned: perfect forecasts, no profile error and no
        overhead, so no re-plan can fire and the plan made at arrival is what runs."""
        return self.forecast.is_perfect and self.profile_error == 0 and self.rescale_overhead_s == 0


@dataclass(frozen=True)
class Outcome:
    """Per-run results of one policy (arrays of length B, one per start)."""

    emissions_g: FloatArray
    energy_kwh: FloatArray
    completion_hours: FloatArray  # NaN where the trace ended before the work was done
    deadline_met: NDArray[np.bool_]
    rescales: IntArray
    replans: IntArray
    server_hours: FloatArray
    work_done: FloatArray
    servers_by_slot: FloatArray | None = None  # (B, record_slots) mean servers, if recorded


def simulate_policy(
    policy: str,
    job: Job,
    trace: FloatArray,
    starts: IntArray,
    deadline_slots: int,
    cond: Conditions = Conditions(),
    *,
    record_slots: int = 0,
    stepwise: bool = False,
) -> Outcome:
    """Simulate ``policy`` for a job arriving at each of ``starts`` (absolute slots of ``trace``).

    Args:
        policy: a policy name (``static-best`` is the per-run best of the ``static`` runs).
        job: the job, with its nominal profile, work, bounds and slot length.
        trace: actual intensity per slot (gCO2eq/kWh), already at the job's slot length.
        starts: ``(B,)`` arrival slots; each needs ``deadline_slots`` of trace after it.
        deadline_slots: slots from arrival to the deadline.
        cond: forecast, profile error, overhead and re-planning settings.
        record_slots: also return the mean servers of each run's first ``record_slots`` slots.
        stepwise: advance one slot at a time even where nothing can re-plan (the reference
            path the tests hold the fast paths to).

    Raises:
        ValueError: for an unknown policy or starts too close to the trace's end.
    """
    starts = np.asarray(starts, dtype=np.int64)
    trace = np.asarray(trace, dtype=np.float64)
    if len(starts) and (starts.min() < 0 or starts.max() + deadline_slots > len(trace)):
        raise ValueError(
            f"every start needs {deadline_slots} slots of trace after it; the trace has "
            f"{len(trace)} slots"
        )
    name = Policy.parse(policy)
    if name is Policy.STATIC_BEST:
        return _static_best(job, trace, starts, deadline_slots, cond)
    if name.runnable and cond.exact_world and not stepwise:
        return _follow_first_plans(name, job, trace, starts, deadline_slots, cond, record_slots)
    return _run_slots(name, job, trace, starts, deadline_slots, cond, record_slots, stepwise)


def _follow_first_plans(
    name: Policy,
    job: Job,
    trace: FloatArray,
    starts: IntArray,
    deadline_slots: int,
    cond: Conditions,
    record_slots: int,
) -> Outcome:
    """:func:`simulate_policy` of a runnable policy where runs go exactly as planned
    (:attr:`Conditions.exact_world`): each run is its first plan, straight from the planner.

    The decision core plans every start at once (:func:`~carbonscaler.decision.targeted_plans`,
    as its first plans are made) and the world
    runs each plan in one compiled call (:func:`_world.follow`), with no per-slot numpy: no
    plan to install, no levels of a stretch. The rows where the decision core's running rules
    could say more than the plan — a plan that cannot fit (top level), a run that outlasts its
    plan (overrun, late) — are run by the reference path (:func:`_run_slots`) instead.
    """
    from carbonscaler.advisor import _world  # numba: imported when first needed

    rows = len(starts)
    rules = cond.rules(name)
    # A perfect forecast is the trace itself (ForecastSpec.is_perfect).
    forecast = np.lib.stride_tricks.sliding_window_view(trace, deadline_slots)[starts]
    # The plans first_plans makes, without installing them.
    nothing = np.zeros(rows)
    _, made = targeted_plans(
        job,
        rules,
        forecast,
        nothing,
        nothing,
        np.zeros(rows, dtype=np.int64),
        np.zeros(rows, dtype=bool),
        0.0,
    )
    done, nominal = np.zeros(rows), np.zeros(rows)
    previous, started = np.zeros(rows, dtype=np.int64), np.zeros(rows, dtype=bool)
    emissions, energy, server_hours = np.zeros(rows), np.zeros(rows), np.zeros(rows)
    completion = np.full(rows, np.nan)
    rescales = np.zeros(rows, dtype=np.int64)
    by_slot = np.zeros((rows, record_slots))
    status = np.empty(rows, dtype=np.int8)
    _world.follow(
        starts,
        trace,
        made.servers,
        made.fraction,
        made.after,
        made.feasible,
        job.profile.throughput,
        job.profile.power_w,
        float(job.work),
        job.slot_hours,
        done,
        nominal,
        previous,
        started,
        completion,
        rescales,
        energy,
        emissions,
        server_hours,
        by_slot,
        status,
    )
    met = (status == _world.WORK_DONE) & (completion <= deadline_slots * job.slot_hours + 1e-9)
    outcome = Outcome(
        emissions,
        energy,
        completion,
        met,
        rescales,
        np.zeros(rows, dtype=np.int64),
        server_hours,
        done,
        by_slot if record_slots else None,
    )
    rest = np.flatnonzero(status != _world.WORK_DONE)
    if len(rest):
        again = _run_slots(
            name, job, trace, starts[rest], deadline_slots, cond, record_slots, stepwise=False
        )
        for mine, theirs in zip(_fields(outcome), _fields(again), strict=True):
            mine[rest] = theirs
        if record_slots:
            by_slot[rest] = again.servers_by_slot
    return outcome


def _run_slots(
    name: Policy,
    job: Job,
    trace: FloatArray,
    starts: IntArray,
    deadline_slots: int,
    cond: Conditions,
    record_slots: int,
    stepwise: bool,
) -> Outcome:
    """:func:`simulate_policy` by stepping through the slots in stretches (one slot at a time
    where a run may re-plan, or with ``stepwise``), asking the decision core for the levels."""
    rows = len(starts)
    dt = job.slot_hours
    tp, power = job.profile.throughput, job.profile.power_w
    planned = name.runnable
    # Deadline-unaware policies may run until the trace ends; padding marks the end.
    padded = np.concatenate([trace, [np.nan]])
    last_index = len(trace)
    overhead_h = cond.rescale_overhead_s / 3600.0

    fixed_level = 0
    threshold = np.zeros(rows)
    if planned:
        rules = cond.rules(name)
        # The greedy plans (not carbon-agnostic, nor exact on a non-concave ladder): each
        # issue slot's order of the slots is made once with its forecast.
        greedy = name is not Policy.AGNOSTIC and deciding_policy(name, job) is not Policy.EXACT
        issue = _Issuer(
            cond.forecast,
            trace,
            starts,
            deadline_slots,
            dt,
            rules.planning_job(job).ladder() if greedy else None,
        )
        plans, _ = first_plans(
            job, rules, issue(starts, 0), overhead_h=overhead_h, order=issue.order(starts, 0)
        )
    elif name is Policy.STATIC:
        fixed_level = cond.static_servers or min(2 * job.min_servers, job.profile.max_servers)
        job.profile.check_bounds(fixed_level, fixed_level)
    elif name is Policy.SUSPEND_RESUME_THRESHOLD:
        threshold = _thresholds(job, trace, starts, deadline_slots, cond)

    rng = np.random.default_rng([cond.seed, 1])
    rate_factor = 1.0 + (
        rng.uniform(-cond.profile_error, cond.profile_error, rows)
        if cond.profile_error > 0
        else np.zeros(rows)
    )

    done = np.zeros(rows)
    nominal = np.zeros(rows)  # work the planned profile would have done in the same time
    finished = np.zeros(rows, dtype=bool)
    started = np.zeros(rows, dtype=bool)
    previous = np.zeros(rows, dtype=np.int64)
    emissions = np.zeros(rows)
    energy = np.zeros(rows)
    server_hours = np.zeros(rows)
    completion = np.full(rows, np.nan)
    rescales = np.zeros(rows, dtype=np.int64)
    replans = np.zeros(rows, dtype=np.int64)
    by_slot = np.zeros((rows, record_slots))
    live = np.arange(rows)  # runs neither finished nor past the trace's end
    # Re-plans are possible only where the world can drift from the plan (carbon-agnostic never
    # re-plans); elsewhere a plan is followed to the deadline in one stretch, and fixed-rule
    # policies run in stretches to the end. The decisions are the same either way.
    drifts = planned and (stepwise or (name is not Policy.AGNOSTIC and not cond.exact_world))
    chunk = max(deadline_slots, 24)
    from carbonscaler.advisor import _world  # numba: imported when first needed

    t = 0
    while len(live):
        if (drifts and t + 1 < deadline_slots) or stepwise:
            span = 1
        elif planned and t < deadline_slots:
            span = deadline_slots - t
        else:
            span = chunk
        # Two sub-intervals per slot: the plan's level up to its switch point (its fraction,
        # within the deadline), then the next; the world makes their times and intensities.
        inside = min(deadline_slots, t + span) - t if planned else 0
        if planned:
            level, _ = level_stretch(plans, job, rules, live, t, span, previous[live])
        elif name is Policy.SUSPEND_RESUME_THRESHOLD:
            slots = t + np.arange(span)
            carbon = padded[np.minimum(starts[live, None] + slots[None, :], last_index)]
            level = np.where(carbon <= threshold[live, None], job.min_servers, 0).repeat(2, axis=1)
        else:
            level = np.full((len(live), 2 * span), fixed_level, dtype=np.int64)
        status = np.empty(len(live), dtype=np.int8)
        _world.advance_slots(
            live,
            starts,
            t,
            inside,
            np.ascontiguousarray(level, dtype=np.int64),
            plans.fraction if planned else _NO_SWITCH,
            padded,
            tp,
            power,
            rate_factor,
            overhead_h,
            float(job.work),
            dt,
            done,
            nominal,
            previous,
            started,
            completion,
            rescales,
            energy,
            emissions,
            server_hours,
            by_slot,
            status,
        )
        finished[live] |= status == _world.WORK_DONE
        live = live[status == _world.RUNNING]
        t += span
        if drifts and t < deadline_slots and len(live):
            issued, order = None, None
            if not cond.forecast.is_perfect:
                issued, order = issue(starts[live], t), issue.order(starts[live], t)
            again, _ = review_rows(
                plans,
                job,
                rules,
                live,
                t,
                work_done=done[live],
                nominal_work=nominal[live],
                running=previous[live],
                started=started[live],
                forecast=issued,
                overhead_h=overhead_h,
                order=order,
            )
            replans[again] += 1

    met = finished & (completion <= deadline_slots * dt + 1e-9)
    return Outcome(
        emissions,
        energy,
        completion,
        met,
        rescales,
        replans,
        server_hours,
        done,
        by_slot if record_slots else None,
    )


_NO_SWITCH = np.ones((1, 1))
"""The switch points of a policy without plans: none (``advance_slots`` reads none)."""


class _Issuer:
    """The forecasts runs arriving at ``starts`` are issued ``t`` slots after arrival, for the
    slots left to the deadline: :func:`issue_forecasts`, issued once per issue slot.

    A run re-plans at nearly every slot when forecasts are noisy, and the run that arrived
    one slot later is issued the same forecast one slot earlier. Where the model's forecasts
    of one issue slot are prefixes of each other (every model but ``learned``, see
    :func:`issue_forecasts`) and the starts are dense, each issue slot's forecast to the
    furthest deadline is made once and cut; elsewhere each call issues its own. With the
    planning ``ladder``, so is each issue slot's order of its increments for the greedy
    (:func:`~carbonscaler.planner.batch.increment_order`: a cut takes its increments in the
    same order), up to :data:`_ORDER_CELLS` increments in all.
    """

    def __init__(
        self,
        spec: ForecastSpec,
        trace: FloatArray,
        starts: IntArray,
        deadline_slots: int,
        slot_hours: float,
        ladder: Ladder | None = None,
    ) -> None:
        self.spec, self.trace, self.slot_hours = spec, trace, slot_hours
        self.deadline_slots = deadline_slots
        self.first = int(starts.min()) if len(starts) else 0
        span = (int(starts.max()) - self.first + deadline_slots) if len(starts) else 0
        self.table: FloatArray | None = None
        if spec.model is not ForecastModel.LEARNED and 0 < span <= 2 * len(starts):
            self.table = issue_forecasts(
                spec, trace, np.arange(self.first, self.first + span), deadline_slots, slot_hours
            )
        self.orders: NDArray[np.int32] | None = None
        if self.table is not None and ladder is not None:
            # What is stored: the first increments of each order (a run's plan seldom reaches
            # deep); the rare row that needs more is planned without the order.
            kept = min(_ORDER_PREFIX, len(ladder.efficiency))
            if self.table.size * kept <= _ORDER_CELLS:
                self.orders = increment_order(
                    ladder, self.table, _ORDER_PREFIX * self.table.shape[1]
                )

    def __call__(self, starts: IntArray, t: int) -> FloatArray:
        """The forecasts issued at ``starts + t`` for the ``deadline_slots - t`` slots left."""
        horizon = self.deadline_slots - t
        if self.table is None:
            return issue_forecasts(self.spec, self.trace, starts + t, horizon, self.slot_hours)
        return self.table[starts + (t - self.first), :horizon]

    def order(self, starts: IntArray, t: int) -> IncrementOrder | None:
        """The greedy's order of the increments of each forecast ``self(starts, t)``, or
        None."""
        if self.orders is None:
            return None
        return IncrementOrder(self.orders, starts + (t - self.first), self.deadline_slots)


def _thresholds(
    job: Job, trace: FloatArray, starts: IntArray, deadline_slots: int, cond: Conditions
) -> FloatArray:
    """Per run, the percentile of the intensity in the history window before its start."""
    history = max(round(cond.history_hours / job.slot_hours), 1)
    padded = np.concatenate([np.full(history, np.nan), trace])
    # Indexing by ``starts`` copies the windows: they are this function's to change.
    windows = np.lib.stride_tricks.sliding_window_view(padded, history)[starts]
    empty = np.all(np.isnan(windows), axis=1)
    if np.any(empty):
        # No history before the trace begins: use the forecast window instead.
        span = min(deadline_slots, history)
        offsets = starts[empty, None] + np.arange(span)[None, :]
        windows[empty, :span] = trace[offsets]
    # nanpercentile is many times slower than percentile: use it only where history is missing.
    gaps = np.isnan(windows).any(axis=1)
    # The windows (and selections of them) are copies: percentile may partition them in place.
    if not gaps.any():
        return np.asarray(
            np.percentile(windows, cond.threshold_percentile, axis=1, overwrite_input=True),
            dtype=np.float64,
        )
    thresholds = np.empty(len(starts))
    thresholds[~gaps] = np.percentile(
        windows[~gaps], cond.threshold_percentile, axis=1, overwrite_input=True
    )
    thresholds[gaps] = np.nanpercentile(
        windows[gaps], cond.threshold_percentile, axis=1, overwrite_input=True
    )
    return thresholds


def _static_best(
    job: Job, trace: FloatArray, starts: IntArray, deadline_slots: int, cond: Conditions
) -> Outcome:
    """Per run, the static scale with least carbon among those meeting the deadline."""
    best: Outcome | None = None
    for k in range(job.min_servers, job.max_servers + 1):
        run = simulate_policy(
            "static", job, trace, starts, deadline_slots, replace(cond, static_servers=k)
        )
        if best is None:
            best = run
            continue
        score_new = np.where(run.deadline_met, run.emissions_g, np.inf)
        score_old = np.where(best.deadline_met, best.emissions_g, np.inf)
        # Where no k meets the deadline, prefer the one that finishes first.
        neither = ~run.deadline_met & ~best.deadline_met
        take = (score_new < score_old) | (
            neither
            & (
                np.nan_to_num(run.completion_hours, nan=np.inf)
                < np.nan_to_num(best.completion_hours, nan=np.inf)
            )
        )
        best = Outcome(
            *(
                np.where(take, new, old)
                for new, old in zip(_fields(run), _fields(best), strict=True)
            )
        )
    if best is None:
        raise ValueError("static-best needs at least one server count in min..max")
    return best


def _fields(o: Outcome) -> tuple[np.ndarray, ...]:
    return (
        o.emissions_g,
        o.energy_kwh,
        o.completion_hours,
        o.deadline_met,
        o.rescales,
        o.replans,
        o.server_hours,
        o.work_done,
    )
