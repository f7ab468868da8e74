"""Execute plans against the actual trace, for many start times at once.

Every run steps through its slots in lockstep with all the others (numpy over runs, a Python loop
over slots). In each slot a run executes its current plan — ``servers`` for ``fraction`` of the
slot, then ``after`` — at its *actual* throughput (the profile times ``1 + ε`` for a profile error
``ε``), paying the *actual* carbon. It stops the moment its work is done. Each change of server
count to a non-zero level, other than the first start, loses ``rescale_overhead_s`` seconds of
work (checkpoint, stop, restart) while still drawing power.

Planned policies (``carbonscaler``, ``exact``, ``suspend-resume``) re-plan at slot boundaries,
as the runtime will, from the true progress with a freshly issued forecast, whenever the realised
carbon of the slot deviated from its forecast, or the work done from the plan's, by more than the
threshold (default 5 %). A run still unfinished at its deadline runs at the top level until done
and counts as a deadline miss. The other policies follow fixed rules and never re-plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from carbonscaler.advisor.forecasts import ForecastSpec, issue_forecasts
from carbonscaler.planner.batch import (
    BatchPlan,
    batch_greedy_with_overhead,
    plans_from_schedules,
)
from carbonscaler.planner.exact import plan_exact
from carbonscaler.planner.model import (
    FloatArray,
    IntArray,
    Job,
    Ladder,
    PlanningError,
    Schedule,
)

__all__ = ["PLANNED_POLICIES", "Conditions", "Outcome", "simulate_policy"]

PLANNED_POLICIES = frozenset({"carbonscaler", "exact", "suspend-resume"})
_EPS = 1e-12


@dataclass(frozen=True)
class Conditions:
    """What the world does to a plan.

    Args:
        forecast: how forecasts are made (perfect by default).
        profile_error: the real throughput is the profile's times ``1 + ε``, ``ε ~ U(-x, x)``
            drawn once per run.
        rescale_overhead_s: seconds of work lost at each change of server count.
        replan_threshold: relative deviation (carbon or progress) that triggers a re-plan.
        threshold_percentile: percentile for ``suspend-resume-threshold``.
        history_hours: how much past intensity the threshold percentile looks at.
        static_servers: ``k`` for the ``static`` policy (default ``2·m``, capped by the profile).
        seed: seed for the profile error.
    """

    forecast: ForecastSpec = field(default_factory=ForecastSpec)
    profile_error: float = 0.0
    rescale_overhead_s: float = 0.0
    replan_threshold: float = 0.05
    threshold_percentile: float = 25.0
    history_hours: float = 168.0
    static_servers: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.profile_error < 1.0:
            raise ValueError(f"profile error must be within [0, 1), got {self.profile_error}")
        if self.rescale_overhead_s < 0:
            raise ValueError("rescale overhead cannot be negative")
        if self.replan_threshold <= 0:
            raise ValueError("the re-planning threshold must be positive")


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


def _plan_rows(
    policy: str,
    job: Job,
    ladder: Ladder,
    forecast: FloatArray,
    targets: FloatArray,
    overhead_h: float,
    previous: IntArray,
    started: NDArray[np.bool_],
) -> BatchPlan:
    """Plans for each row: batch greedy, or the MILP where greedy is not provably optimal.

    The greedy plans also cover the work their own rescales will lose.
    """
    if policy != "exact" or ladder.concave:
        # On a concave ladder the exact optimum equals the greedy's (the paper's theorem,
        # checked by the property tests), so the batch greedy serves for `exact` too.
        return batch_greedy_with_overhead(
            ladder,
            forecast,
            targets,
            throughput=job.profile.throughput,
            overhead_h=overhead_h,
            slot_hours=job.slot_hours,
            previous=previous,
            started=started,
        )
    schedules: list[Schedule | None] = []
    for row, target in zip(forecast, targets, strict=True):
        try:
            schedules.append(plan_exact(job.with_work(float(target) * job.slot_hours), row))
        except PlanningError:
            schedules.append(None)
    return plans_from_schedules(schedules, forecast.shape[1])


def simulate_policy(
    policy: str,
    job: Job,
    trace: FloatArray,
    starts: IntArray,
    deadline_slots: int,
    cond: Conditions = Conditions(),
) -> Outcome:
    """Simulate ``policy`` for a job arriving at each of ``starts`` (absolute slots of ``trace``).

    Args:
        policy: a policy name (``static-best`` is the per-run best of the ``static`` runs).
        job: the job, with its nominal profile, work, bounds and slot length.
        trace: actual intensity per slot (gCO2eq/kWh), already at the job's slot length.
        starts: ``(B,)`` arrival slots; each needs ``deadline_slots`` of trace after it.
        deadline_slots: slots from arrival to the deadline.
        cond: forecast, profile error, overhead and re-planning settings.

    Raises:
        ValueError: for an unknown policy or starts too close to the trace's end.
    """
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) and (starts.min() < 0 or starts.max() + deadline_slots > len(trace)):
        raise ValueError(
            f"every start needs {deadline_slots} slots of trace after it; the trace has "
            f"{len(trace)} slots"
        )
    if policy == "static-best":
        return _static_best(job, trace, starts, deadline_slots, cond)
    rows = len(starts)
    dt = job.slot_hours
    tp, power = job.profile.throughput, job.profile.power_w
    ladder = job.ladder()
    top = int(ladder.levels[-1])
    planned = policy in PLANNED_POLICIES
    plan_job = (
        job.with_bounds(job.min_servers, job.min_servers) if policy == "suspend-resume" else job
    )
    # Deadline-unaware policies may run until the trace ends; padding marks the end.
    padded = np.concatenate([trace, [np.nan]])
    last_index = len(trace)

    levels = np.zeros((rows, deadline_slots), dtype=np.int64)
    fraction = np.ones((rows, deadline_slots))
    after = np.zeros((rows, deadline_slots), dtype=np.int64)
    forecast = np.zeros((rows, deadline_slots))
    planned_done = np.zeros((rows, deadline_slots + 1))
    fixed_level = 0
    threshold = np.zeros(rows)
    overhead_h = cond.rescale_overhead_s / 3600.0
    if planned:
        forecast = issue_forecasts(cond.forecast, trace, starts, deadline_slots, dt, draw=0)
        plans = _plan_rows(
            policy,
            plan_job,
            plan_job.ladder(),
            forecast,
            np.full(rows, job.work / dt),
            overhead_h,
            np.zeros(rows, dtype=np.int64),
            np.zeros(rows, dtype=bool),
        )
        _install(
            plans,
            levels,
            fraction,
            after,
            planned_done,
            tp,
            dt,
            0,
            deadline_slots,
            np.zeros(rows),
            top,
            np.arange(rows),
        )
    elif policy == "agnostic":
        fixed_level = job.min_servers
    elif policy == "static":
        fixed_level = cond.static_servers or min(2 * job.min_servers, job.profile.max_servers)
        job.profile.check_bounds(fixed_level, fixed_level)
    elif policy == "suspend-resume-threshold":
        threshold = _thresholds(job, trace, starts, deadline_slots, cond)
    else:
        raise ValueError(f"unknown policy {policy!r}")

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
    live = np.arange(rows)  # runs neither finished nor past the trace's end

    t = 0
    while len(live):
        carbon = padded[np.minimum(starts[live] + t, last_index)]
        live = live[~np.isnan(carbon)]  # the trace ended before these finished
        carbon = carbon[~np.isnan(carbon)]
        if not len(live):
            break
        segments: tuple[tuple[IntArray, FloatArray], ...]
        if planned and t < deadline_slots:
            segments = (
                (levels[live, t], fraction[live, t]),
                (after[live, t], 1.0 - fraction[live, t]),
            )
        elif planned:
            segments = ((np.full(len(live), top), np.ones(len(live))),)
        elif policy == "suspend-resume-threshold":
            lvl = np.where(carbon <= threshold[live], job.min_servers, 0)
            segments = ((lvl, np.ones(len(live))),)
        else:
            segments = ((np.full(len(live), fixed_level), np.ones(len(live))),)
        offset = np.zeros(len(live))
        run_done, run_prev, run_started = done[live], previous[live], started[live]
        run_nominal = nominal[live]
        ending = np.zeros(len(live), dtype=bool)
        for level, share in segments:
            duration = share * dt
            runs = ~ending & (duration > _EPS)
            change = runs & (level != run_prev)
            rescales[live] += change & run_started
            lost = np.where(
                change & run_started & (level > 0), np.minimum(overhead_h, duration), 0.0
            )
            rate = tp[level] * rate_factor[live]
            with np.errstate(divide="ignore", invalid="ignore"):
                need = lost + np.where(rate > 0, (job.work - run_done) / rate, np.inf)
            ends = runs & (level > 0) & (need <= duration + _EPS)
            used = np.where(runs, np.where(ends, need, duration), 0.0)
            gained = rate * np.maximum(used - lost, 0.0)
            run_done = np.where(ends, job.work, run_done + gained)
            run_nominal = run_nominal + tp[level] * used
            watts = np.where(runs, power[level], 0.0)
            energy[live] += watts * used / 1000.0
            emissions[live] += watts * used * carbon / 1000.0
            server_hours[live] += level * used
            completion[live] = np.where(ends, t * dt + offset + need, completion[live])
            ending |= ends
            run_prev = np.where(runs, level, run_prev)
            run_started |= runs & (level > 0)
            offset = offset + duration
        done[live], previous[live], started[live] = run_done, run_prev, run_started
        nominal[live] = run_nominal
        finished[live] |= ending
        live = live[~ending]
        if planned and t + 1 < deadline_slots and len(live):
            limit = cond.replan_threshold
            gap = done[live] - planned_done[live, t + 1]
            # Behind plan by any amount threatens the deadline; ahead only matters past the
            # threshold (re-planning for tiny gains would only churn).
            drift = (gap < -1e-9 * job.work) | (np.abs(gap) > limit * job.work)
            if not cond.forecast.is_perfect:
                expected = forecast[live, t]
                seen = carbon[~ending]
                drift |= np.abs(seen - expected) > limit * np.maximum(expected, _EPS)
            again = live[drift]
            if len(again):
                new_forecast = issue_forecasts(
                    cond.forecast,
                    trace,
                    starts[again] + t + 1,
                    deadline_slots - t - 1,
                    dt,
                    draw=t + 1,
                )
                forecast[again, t + 1 :] = new_forecast
                # Plan the rest in the planned profile's units, corrected by the throughput
                # actually observed (profile error, time lost to rescaling).
                observed = np.where(
                    nominal[again] > 0, done[again] / np.maximum(nominal[again], _EPS), 1.0
                )
                remaining = (job.work - done[again]) / np.maximum(observed, 1e-3)
                plans = _plan_rows(
                    policy,
                    plan_job,
                    plan_job.ladder(),
                    new_forecast,
                    remaining / dt,
                    overhead_h,
                    previous[again],
                    started[again],
                )
                _install(
                    plans,
                    levels,
                    fraction,
                    after,
                    planned_done,
                    tp,
                    dt,
                    t + 1,
                    deadline_slots,
                    done[again],
                    top,
                    again,
                    observed,
                )
                replans[again] += 1
        t += 1

    met = finished & (completion <= deadline_slots * dt + 1e-9)
    return Outcome(emissions, energy, completion, met, rescales, replans, server_hours, done)


def _thresholds(
    job: Job, trace: FloatArray, starts: IntArray, deadline_slots: int, cond: Conditions
) -> FloatArray:
    """Per run, the percentile of the intensity in the history window before its start."""
    history = max(round(cond.history_hours / job.slot_hours), 1)
    padded = np.concatenate([np.full(history, np.nan), trace])
    windows = np.lib.stride_tricks.sliding_window_view(padded, history)[starts].copy()
    empty = np.all(np.isnan(windows), axis=1)
    if np.any(empty):
        # No history before the trace begins: use the forecast window instead.
        span = min(deadline_slots, history)
        offsets = starts[empty, None] + np.arange(span)[None, :]
        windows[empty, :span] = trace[offsets]
    return np.asarray(np.nanpercentile(windows, cond.threshold_percentile, axis=1))


def _install(
    plans: BatchPlan,
    levels: IntArray,
    fraction: FloatArray,
    after: IntArray,
    planned_done: FloatArray,
    tp: FloatArray,
    dt: float,
    first: int,
    deadline: int,
    done: FloatArray,
    top: int,
    rows: IntArray,
    observed: FloatArray | None = None,
) -> None:
    """Write plans for ``rows`` into slots ``first..deadline-1``; infeasible rows run at top.

    ``planned_done`` gets the progress the plan expects, in actual work units (the planned
    profile's work times the ``observed`` throughput ratio).
    """
    servers = np.where(plans.feasible[:, None], plans.servers, top)
    share = np.where(plans.feasible[:, None], plans.fraction, 1.0)
    tail = np.where(plans.feasible[:, None], plans.after, top)
    levels[rows, first:deadline] = servers
    fraction[rows, first:deadline] = share
    after[rows, first:deadline] = tail
    work = (tp[tail] + (tp[servers] - tp[tail]) * share) * dt
    if observed is not None:
        work = work * observed[:, None]
    planned_done[rows, first] = done
    planned_done[rows, first + 1 :] = done[:, None] + np.cumsum(work, axis=1)


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
