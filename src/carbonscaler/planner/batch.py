"""The greedy for many plans at once: one row per start time (or per re-plan).

CarbonAdvisor sweeps a year of start times; planning each in a Python loop would spend most of
its time in interpreter overhead. Here every row of a ``(B, n)`` carbon matrix is planned in one
pass of numpy operations: score all ``n·J`` increments per row, sort each row once (stable, so
ties keep ladder order), and find each row's completing increment from the cumulative work.

The result equals :func:`carbonscaler.planner.greedy.plan_greedy` row by row (tests check it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from carbonscaler.planner.model import FloatArray, IntArray, Ladder, Schedule

__all__ = [
    "BatchPlan",
    "batch_greedy",
    "batch_greedy_with_overhead",
    "plans_from_schedules",
    "rescale_losses",
]


@dataclass(frozen=True)
class BatchPlan:
    """Plans for B rows over n slots, in the executor's per-slot form.

    In slot ``t`` of row ``b`` the job runs ``servers[b, t]`` servers for ``fraction[b, t]`` of
    the slot and ``after[b, t]`` servers for the rest (fraction is 1 except in a row's partial
    slot). ``feasible[b]`` is False where the work cannot fit; such rows hold all-zero plans.
    """

    servers: IntArray
    fraction: FloatArray
    after: IntArray
    feasible: NDArray[np.bool_]

    @property
    def rows(self) -> int:
        return int(self.servers.shape[0])


# Rows up to this many candidates are ordered by sorting packed integer keys (see below).
_PACKED_LIMIT = 1 << 12
_INF_BITS = np.int64(0x7FF0000000000000)


def _order_rows(scores: FloatArray) -> IntArray:
    """Per row, candidate indices by descending score, ties in index (slot, then step) order.

    Scores are non-negative (or +inf), so their IEEE-754 bit patterns sort like the values. For
    short rows the index is packed into the low bits of the (descending) key and the keys are
    sorted as plain integers — several times faster than a stable argsort. The packing drops
    the last ``log2(width)`` bits of the 52-bit mantissa, so scores within ~1e-12 of each other
    count as ties; their plans differ in carbon by less than that.
    """
    width = scores.shape[1]
    if width > _PACKED_LIMIT:
        return np.argsort(-scores, axis=1, kind="stable")
    shift = max(int(width - 1).bit_length(), 1)
    # In-place integer ops: these arrays are large and fresh allocations dominate otherwise.
    keys = np.subtract(_INF_BITS, np.ascontiguousarray(scores).view(np.int64))
    np.right_shift(keys, shift, out=keys)
    np.left_shift(keys, shift, out=keys)
    keys |= np.arange(width, dtype=np.int64)[None, :]
    keys.sort(axis=1)
    np.bitwise_and(keys, (1 << shift) - 1, out=keys)
    return keys


def batch_greedy(ladder: Ladder, carbon: FloatArray, target: FloatArray | float) -> BatchPlan:
    """Greedy plans for every row of ``carbon``.

    Args:
        ladder: the job's allowed levels and increments (``Job.ladder()``).
        carbon: ``(B, n)`` forecast intensity, gCO2eq/kWh, one row per plan.
        target: work to cover per row, in ``ladder.d_work`` units (work / slot hours);
            a scalar or a ``(B,)`` array.

    Returns:
        The plans; rows whose target exceeds ``n`` slots at the top level are infeasible.
    """
    carbon = np.asarray(carbon, dtype=np.float64)
    rows, n = carbon.shape
    steps = ladder.steps
    targets = np.broadcast_to(np.asarray(target, dtype=np.float64), (rows,))
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = ladder.efficiency[None, None, :] / carbon[:, :, None]
    scores[np.isnan(scores)] = np.inf
    order = _order_rows(scores.reshape(rows, n * steps))
    work = ladder.d_work[order % steps]
    cumulative = np.cumsum(work, axis=1)
    goal = targets * (1 - 1e-12)
    feasible = cumulative[:, -1] >= goal
    last = np.argmax(cumulative >= goal[:, None], axis=1)
    taken_sorted = np.arange(n * steps)[None, :] <= last[:, None]
    taken_sorted &= feasible[:, None]
    taken = np.zeros_like(taken_sorted)
    np.put_along_axis(taken, order, taken_sorted, axis=1)
    step_counts = taken.reshape(rows, n, steps).sum(axis=2)
    servers = ladder.levels[step_counts]
    fraction = np.ones((rows, n))
    after = servers.copy()
    # The completing increment of each feasible row runs only the share of its slot it needs.
    row_ids = np.flatnonzero(feasible)
    completing = order[row_ids, last[row_ids]]
    before = np.where(last[row_ids] > 0, cumulative[row_ids, np.maximum(last[row_ids] - 1, 0)], 0.0)
    share = (targets[row_ids] - before) / ladder.d_work[completing % steps]
    partial = share < 1 - 1e-12
    rp, slot = row_ids[partial], (completing // steps)[partial]
    fraction[rp, slot] = np.clip(share[partial], 0.0, 1.0)
    after[rp, slot] = ladder.levels[step_counts[rp, slot] - 1]
    return BatchPlan(servers.astype(np.int64), fraction, after.astype(np.int64), feasible)


def rescale_losses(
    plans: BatchPlan,
    throughput: FloatArray,
    overhead_h: float,
    slot_hours: float,
    previous: IntArray,
    started: NDArray[np.bool_],
) -> FloatArray:
    """Work each plan loses to rescaling, in ``ladder.d_work`` units (work / slot hours).

    Every change to a non-zero server count, other than a job's very first start, costs
    ``overhead_h`` hours of work at the new level (checkpoint, stop, restart).

    Args:
        plans: the plans.
        throughput: the profile's throughput per server count.
        overhead_h: hours lost per change.
        slot_hours: slot length.
        previous: ``(B,)`` server count running before the plan's first slot.
        started: ``(B,)`` whether each job has already run (so its next start is a resume).
    """
    rows, n = plans.servers.shape
    # The executed sequence interleaves each slot's level and its tail level.
    sequence = np.empty((rows, 2 * n + 1), dtype=np.int64)
    sequence[:, 0] = previous
    sequence[:, 1::2] = plans.servers
    sequence[:, 2::2] = plans.after
    durations = np.empty((rows, 2 * n))
    durations[:, 0::2] = plans.fraction * slot_hours
    durations[:, 1::2] = (1.0 - plans.fraction) * slot_hours
    new = sequence[:, 1:]
    real = durations > 1e-12
    # Carry the last level that really ran, so a zero-length tail is not a change.
    ran = np.where(real, new, -1)
    carried = np.concatenate([sequence[:, :1], ran], axis=1)
    idx = np.where(carried >= 0, np.arange(2 * n + 1)[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    last_level = np.take_along_axis(carried, idx, axis=1)[:, :-1]
    change = real & (new != last_level) & (new > 0)
    # The first start of a job that has never run is not a rescale.
    first_run = np.argmax(change, axis=1)
    fresh = ~started & change.any(axis=1)
    change[np.flatnonzero(fresh), first_run[fresh]] = False
    lost_hours = np.minimum(overhead_h, durations)
    return np.asarray((change * throughput[new] * lost_hours).sum(axis=1) / slot_hours)


def batch_greedy_with_overhead(
    ladder: Ladder,
    carbon: FloatArray,
    target: FloatArray | float,
    *,
    throughput: FloatArray,
    overhead_h: float,
    slot_hours: float,
    previous: IntArray | None = None,
    started: NDArray[np.bool_] | None = None,
    rounds: int = 3,
) -> BatchPlan:
    """:func:`batch_greedy` that also covers the work each plan will lose to rescaling.

    A plan with more rescales needs more work; the target is raised by the losses of the
    previous round's plan, a few rounds (the losses settle quickly). Without overhead this is
    exactly :func:`batch_greedy`.
    """
    rows = carbon.shape[0]
    base = np.broadcast_to(np.asarray(target, dtype=np.float64), (rows,))
    plans = batch_greedy(ladder, carbon, base)
    if overhead_h <= 0:
        return plans
    prev = np.zeros(rows, dtype=np.int64) if previous is None else previous
    begun = np.zeros(rows, dtype=bool) if started is None else started
    for _ in range(rounds):
        losses = rescale_losses(plans, throughput, overhead_h, slot_hours, prev, begun)
        plans = batch_greedy(ladder, carbon, base + losses)
    return plans


def plans_from_schedules(schedules: Sequence[Schedule | None], slots: int) -> BatchPlan:
    """Single-plan schedules in the per-slot form, cut or padded to ``slots`` slots.

    ``None`` marks a row that could not be planned (infeasible).
    """
    rows = len(schedules)
    servers = np.zeros((rows, slots), dtype=np.int64)
    fraction = np.ones((rows, slots))
    after = np.zeros((rows, slots), dtype=np.int64)
    feasible = np.zeros(rows, dtype=bool)
    for r, schedule in enumerate(schedules):
        if schedule is None:
            continue
        k = min(len(schedule.servers), slots)
        servers[r, :k] = schedule.servers[:k]
        after[r, :k] = schedule.servers[:k]
        partial = schedule.partial_slot
        if partial is not None and partial < slots:
            fraction[r, partial] = schedule.last_slot_fraction
            after[r, partial] = schedule.partial_servers_after
        feasible[r] = True
    return BatchPlan(servers, fraction, after, feasible)
