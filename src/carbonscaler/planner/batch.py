"""The greedy for many plans at once: one row per start time (or per re-plan).

CarbonAdvisor sweeps a year of start times and re-plans every run at every slot boundary when
forecasts drift, so this is the planner's hot path. Each row is planned by a compiled loop
(:mod:`carbonscaler.planner._kernels`): the slots in intensity order, merged over the ladder's
steps until the completing increment — no sort of the ``n·J`` increments.

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
    "IncrementOrder",
    "batch_greedy",
    "batch_greedy_with_overhead",
    "increment_order",
    "plans_from_schedules",
    "rescale_losses",
]


@dataclass(frozen=True)
class BatchPlan:
    """Plans for B rows over n slots, in the executor's per-slot form.

    In slot ``t`` of row ``b`` the job runs ``servers[b, t]`` servers for ``fraction[b, t]`` of
    the slot and ``after[b, t]`` servers for the rest (fraction is 1 except in a row's partial
    slot). ``feasible[b]`` is False where the work cannot fit; such rows hold all-zero plans.
    ``fell_back[b]`` is True where the target did not fit and the row was planned for its
    fallback target instead (None when no fallback was asked for).
    """

    servers: IntArray
    fraction: FloatArray
    after: IntArray
    feasible: NDArray[np.bool_]
    fell_back: NDArray[np.bool_] | None = None

    @property
    def rows(self) -> int:
        return int(self.servers.shape[0])


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
    return _greedy(ladder, carbon, target, None, None, 0.0, 1.0, None, None, 0, None)


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
    ``overhead_h`` hours of work at the new level (checkpoint, stop, restart). A level that
    runs for no time (an empty tail of a slot) is not a change.

    Args:
        plans: the plans.
        throughput: the profile's throughput per server count.
        overhead_h: hours lost per change.
        slot_hours: slot length.
        previous: ``(B,)`` server count running before the plan's first slot.
        started: ``(B,)`` whether each job has already run (so its next start is a resume).
    """
    out = np.empty(plans.rows)
    from carbonscaler.planner import _kernels  # numba: imported when first needed

    _kernels.losses_rows(
        plans.servers,
        plans.fraction,
        plans.after,
        np.ascontiguousarray(throughput, dtype=np.float64),
        float(overhead_h),
        float(slot_hours),
        np.ascontiguousarray(previous, dtype=np.int64),
        np.ascontiguousarray(started, dtype=np.bool_),
        out,
    )
    return out


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
    fallback: FloatArray | None = None,
    order: IncrementOrder | None = None,
) -> BatchPlan:
    """:func:`batch_greedy` that also covers the work each plan will lose to rescaling.

    A plan with more rescales needs more work; the target is raised by the losses of the
    previous round's plan (:func:`rescale_losses`), at most ``rounds`` times, stopping early
    where the losses repeat (the losses settle quickly). Without overhead this is exactly
    :func:`batch_greedy`. Rows whose target cannot fit are planned for their ``fallback``
    target instead, where one is given (the result's ``fell_back`` marks them).

    ``order`` (optional) saves each row's sort and merge: its increments in the greedy's
    order, from :func:`increment_order` of a ``w``-slot row (``w >= n``) that begins with the
    row (the same issue's forecast over a longer horizon), or only their first increments
    (``IncrementOrder.slots``: a row that needs more is sorted and merged). The plans are the
    same with or without it.
    """
    return _greedy(
        ladder,
        carbon,
        target,
        fallback,
        throughput,
        overhead_h,
        slot_hours,
        previous,
        started,
        rounds,
        order,
    )


def _greedy(
    ladder: Ladder,
    carbon: FloatArray,
    target: FloatArray | float,
    fallback: FloatArray | None,
    throughput: FloatArray | None,
    overhead_h: float,
    slot_hours: float,
    previous: IntArray | None,
    started: NDArray[np.bool_] | None,
    rounds: int,
    order: IncrementOrder | None,
) -> BatchPlan:
    carbon = np.ascontiguousarray(carbon, dtype=np.float64)
    rows, n = carbon.shape
    targets = np.ascontiguousarray(np.broadcast_to(np.asarray(target, dtype=np.float64), (rows,)))
    servers = np.empty((rows, n), dtype=np.int64)
    fraction = np.empty((rows, n))
    after = np.empty((rows, n), dtype=np.int64)
    feasible = np.empty(rows, dtype=np.bool_)
    fell_back = np.empty(rows, dtype=np.bool_)
    fallbacks = np.full(rows, np.nan) if fallback is None else np.asarray(fallback, np.float64)
    if overhead_h > 0 and throughput is None:
        raise ValueError("a rescale overhead needs the profile's throughput")
    steps = len(ladder.efficiency)
    if order is None:
        order = IncrementOrder(np.empty((1, 0), dtype=np.int32), np.zeros(rows, dtype=np.int64))
    elif (
        len(order.rows) != rows
        or (order.slots < n if order.slots is not None else order.table.shape[1] < n * steps)
        or (rows and not 0 <= order.rows.min() <= order.rows.max() < len(order.table))
    ):
        raise ValueError(f"an order needs {rows} rows of at least {n} slots × {steps} steps")
    from carbonscaler.planner import _kernels  # numba: imported when first needed

    _kernels.greedy_rows(
        carbon,
        targets,
        np.ascontiguousarray(np.broadcast_to(fallbacks, (rows,))),
        np.ascontiguousarray(ladder.efficiency, dtype=np.float64),
        np.ascontiguousarray(ladder.d_work, dtype=np.float64),
        np.ascontiguousarray(ladder.levels, dtype=np.int64),
        np.ascontiguousarray(
            ladder.throughput if throughput is None else throughput, dtype=np.float64
        ),
        float(max(overhead_h, 0.0)),
        float(slot_hours),
        np.zeros(rows, dtype=np.int64)
        if previous is None
        else np.ascontiguousarray(previous, dtype=np.int64),
        np.zeros(rows, dtype=np.bool_)
        if started is None
        else np.ascontiguousarray(started, dtype=np.bool_),
        int(rounds),
        np.ascontiguousarray(order.table, dtype=np.int32),
        np.ascontiguousarray(order.rows, dtype=np.int64),
        servers,
        fraction,
        after,
        feasible,
        fell_back,
    )
    return BatchPlan(servers, fraction, after, feasible, None if fallback is None else fell_back)


@dataclass(frozen=True)
class IncrementOrder:
    """Rows of an :func:`increment_order` table: row ``b`` of a batch takes its increments
    in the order of ``table[rows[b]]`` (the rows are not copied; indexing picks rows).

    ``slots``: where the table holds only the first increments of each order (its ``limit``),
    the slots of the rows it was made from; a row that needs more increments than it holds is
    planned without it (the plans are the same). None: the table is complete.
    """

    table: NDArray[np.int32]
    rows: IntArray
    slots: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: IntArray | slice) -> IncrementOrder:
        return IncrementOrder(self.table, self.rows[index], self.slots)


def increment_order(
    ladder: Ladder, carbon: FloatArray, limit: int | None = None
) -> NDArray[np.int32]:
    """Each row's increments (``slot·J + step``) in the order the greedy takes them
    (descending ``efficiency / intensity``, ties by that index): the ``table`` of an
    :class:`IncrementOrder` for any row that begins a row of ``carbon``, whose increments come
    in the same order. With ``limit``, only the first ``limit`` of each row (a plan seldom
    needs them all; the merge stops there): an order with ``slots`` set to the rows' width."""
    carbon = np.ascontiguousarray(carbon, dtype=np.float64)
    steps = len(ladder.efficiency)
    if carbon.shape[1] * steps >= 2**31:
        raise ValueError("a row has too many increments for an order")
    width = carbon.shape[1] * steps
    if limit is not None:
        width = min(width, max(int(limit), 0))
    out = np.empty((carbon.shape[0], width), dtype=np.int32)
    from carbonscaler.planner import _kernels  # numba: imported when first needed

    _kernels.orders_rows(
        carbon,
        np.ascontiguousarray(ladder.efficiency, dtype=np.float64),
        np.ascontiguousarray(ladder.d_work, dtype=np.float64),
        out,
    )
    return out


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
