"""The CarbonScaler greedy (the paper's Algorithm 1), vectorised.

Every (slot i, step j) increment is scored by marginal work per marginal gram,
``ΔR_j / (ΔP_j · c_i)``; increments are taken best first until the work is covered, a slot
climbing its ladder one step at a time (the first step, 0 → m servers, is one block).

Climbing one step at a time is what a heap of "next step per slot" would do. Such a heap takes a
step as soon as it becomes available whenever it scores better than its predecessor, so the
order it produces equals a plain sort by the *running minimum* of the scores along each slot's
ladder (``Ladder.efficiency``). Because that running minimum is the same for every slot up to the
factor ``1 / c_i``, the sorted order of all n·J scores is a merge of J lists that are each the
slots in order of carbon intensity. Two selections exploit this:

* :func:`_select_sorted` sorts all n·J scores once (stable, so ties keep ladder order). It is the
  reference and handles every corner (zero carbon, free increments).
* :func:`_select_threshold` finds the score of the completing increment by bisection over counts
  from ``searchsorted`` on the sorted intensities — O(n log n + J log n · iterations) — and sorts
  only the few increments near that score. It is what makes year-long horizons cheap.

Both give the same schedule; tests check this.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from carbonscaler.planner.model import (
    FloatArray,
    IntArray,
    Job,
    Ladder,
    Schedule,
    check_feasible,
    realise,
)

__all__ = ["Selection", "plan_greedy", "select_increments"]

# Below this many candidate increments a full sort is faster than bisection overheads.
_SORT_LIMIT = 4_096
# Relative margin that keeps floating-point rounding at the threshold out of the classification.
_MARGIN = 1e-9
# Bisection stops once this few increments sit between the bounds.
_BAND = 2_048


@dataclass(frozen=True)
class Selection:
    """Which increments a greedy took: ladder step count per slot and the partial one."""

    steps: IntArray  # number of ladder steps taken in each slot (0 = suspended)
    partial_slot: int | None
    fraction: float  # share of the partial slot's top step that is used


def select_increments(ladder: Ladder, carbon: FloatArray, target: float) -> Selection:
    """Greedy choice of ladder steps covering ``target`` (work per slot-hour units).

    Args:
        ladder: allowed levels and their increments.
        carbon: forecast intensity per slot (gCO2eq/kWh), non-negative.
        target: work to cover divided by the slot length (so ``ladder.d_work`` units).

    Returns:
        The selection; the caller has checked that the target is reachable.
    """
    n, steps = len(carbon), ladder.steps
    finite = bool(np.all(np.isfinite(ladder.efficiency)) and np.all(carbon > 0))
    if n * steps <= _SORT_LIMIT or not finite:
        return _select_sorted(ladder, carbon, target)
    return _select_threshold(ladder, carbon, target)


def _scores(ladder: Ladder, carbon: FloatArray) -> FloatArray:
    """Score of every (slot, step): running-min efficiency / intensity; zero carbon is free."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = ladder.efficiency[None, :] / carbon[:, None]
    scores[np.isnan(scores)] = np.inf
    return scores


def _finish(
    steps_per_slot: IntArray, slot: int, step_work: float, before: float, target: float
) -> Selection:
    """Selection from step counts and the completing increment (slot, its work, work before)."""
    fraction = (target - before) / step_work
    if fraction >= 1.0 - 1e-12:
        return Selection(steps_per_slot, None, 1.0)
    return Selection(steps_per_slot, slot, float(min(max(fraction, 0.0), 1.0)))


def _select_sorted(ladder: Ladder, carbon: FloatArray, target: float) -> Selection:
    n, steps = len(carbon), ladder.steps
    order = np.argsort(-_scores(ladder, carbon).ravel(), kind="stable")
    work = ladder.d_work[order % steps]
    cumulative = np.cumsum(work)
    last = int(np.searchsorted(cumulative, target * (1 - 1e-12), side="left"))
    last = min(last, len(order) - 1)
    taken_slots = order[: last + 1] // steps
    steps_per_slot = np.bincount(taken_slots, minlength=n).astype(np.int64)
    before = float(cumulative[last - 1]) if last > 0 else 0.0
    return _finish(steps_per_slot, int(taken_slots[-1]), float(work[last]), before, target)


def _select_threshold(ladder: Ladder, carbon: FloatArray, target: float) -> Selection:
    n, steps = len(carbon), ladder.steps
    eff, d_work = ladder.efficiency, ladder.d_work
    by_carbon = np.argsort(carbon, kind="stable")
    c_sorted = carbon[by_carbon]

    def counts_at(score: float) -> IntArray:
        # How many slots take step j at this score: those with c_i <= eff_j / score.
        return np.searchsorted(c_sorted, eff / score, side="right").astype(np.int64)

    def work_at(score: float) -> float:
        return float(d_work @ counts_at(score))

    # Bracket the completing score: work_at(hi) < target <= work_at(lo).
    hi = float(eff[0] / c_sorted[0]) * 2.0
    lo = float(eff[-1] / c_sorted[-1]) / 2.0
    while True:
        mid = float(np.sqrt(lo * hi))
        upper, lower = counts_at(hi * (1 + _MARGIN)), counts_at(lo * (1 - _MARGIN))
        if int((lower - upper).sum()) <= _BAND or not lo < mid < hi:
            break
        if work_at(mid) >= target:
            lo = mid
        else:
            hi = mid
    # Steps certainly above the band, and the band itself enumerated exactly.
    band_j = np.repeat(np.arange(steps), lower - upper)
    band_rank = np.concatenate([np.arange(u, w) for u, w in zip(upper, lower, strict=True)])
    band_slot = by_carbon[band_rank]
    band_score = eff[band_j] / carbon[band_slot]
    order = np.lexsort((band_j, band_slot, -band_score))
    band_work = np.cumsum(d_work[band_j[order]])
    base = float(d_work @ upper)
    last = int(np.searchsorted(band_work, (target - base) * (1 - 1e-12), side="left"))
    last = min(last, len(order) - 1)
    # Step counts per slot: ranks below upper[j] take step j, plus the band's taken steps.
    per_rank = steps - np.cumsum(np.bincount(upper, minlength=n + 1))[:n]
    steps_per_slot = np.empty(n, dtype=np.int64)
    steps_per_slot[by_carbon] = per_rank
    steps_per_slot += np.bincount(band_slot[order[: last + 1]], minlength=n)
    before = base + (float(band_work[last - 1]) if last > 0 else 0.0)
    completing = order[last]
    return _finish(
        steps_per_slot,
        int(band_slot[completing]),
        float(d_work[band_j[completing]]),
        before,
        target,
    )


def schedule_from_selection(
    policy: str,
    job: Job,
    ladder: Ladder,
    carbon: FloatArray,
    selection: Selection,
    *,
    deadline_slots: int,
    started: float,
    notes: tuple[str, ...] = (),
) -> Schedule:
    """Turn ladder step counts into a :class:`Schedule` (servers, prorated partial slot)."""
    servers = ladder.levels[selection.steps]
    after = 0
    if selection.partial_slot is not None:
        after = int(ladder.levels[selection.steps[selection.partial_slot] - 1])
    return realise(
        policy,
        job,
        carbon,
        servers,
        partial_slot=selection.partial_slot,
        fraction=selection.fraction,
        servers_after=after,
        deadline_slots=deadline_slots,
        solve_ms=(time.perf_counter() - started) * 1e3,
        notes=notes,
    )


def plan_greedy(job: Job, carbon: FloatArray, *, policy: str = "carbonscaler") -> Schedule:
    """Plan ``job`` over the forecast ``carbon`` (one value per slot up to the deadline).

    Args:
        job: the job; its ``min_servers``/``max_servers`` bound every slot.
        carbon: forecast intensity per slot in gCO2eq/kWh; its length is the deadline.
        policy: name recorded in the schedule.

    Raises:
        InfeasibleError: if the work cannot fit before the deadline.
    """
    started = time.perf_counter()
    carbon = np.asarray(carbon, dtype=np.float64)
    ladder = job.ladder()
    check_feasible(job, ladder, len(carbon), policy=policy)
    selection = select_increments(ladder, carbon, job.work / job.slot_hours)
    return schedule_from_selection(
        policy, job, ladder, carbon, selection, deadline_slots=len(carbon), started=started
    )
