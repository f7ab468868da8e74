"""The exact optimum of the planning model, as a mixed-integer program solved by HiGHS.

Variables: ``x[i, j] ∈ [0, 1]``, the used share of step ``j`` of slot ``i``'s ladder. A step may
be used only once the step below it is used in full; where the ladder is concave this follows by
itself from ``x[i, j] <= x[i, j-1]`` (a cheaper-per-work step is always filled first), elsewhere
a binary ``y[i, j]`` enforces it: ``x[i, j] <= y[i, j] <= x[i, j-1]``. One knapsack row asks for
the work; the objective is the carbon. With one coupling row, a vertex optimum has at most one
fractional step — the model's partly used final increment.

HiGHS works to a feasibility tolerance (~1e-7), so the solution is *polished*: the steps it used
in full are kept exactly, and the little work left is covered by the greedy rule over each slot's
next steps, which is optimal for that residual. The result is never worse than the greedy plan:
if the solver (time limit, tolerance) returns something costlier, the greedy plan is kept and the
schedule says so in its notes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from carbonscaler.planner.greedy import (
    Selection,
    schedule_from_selection,
    select_increments,
)
from carbonscaler.planner.model import (
    FloatArray,
    IntArray,
    Job,
    Ladder,
    PlanningError,
    Schedule,
    check_feasible,
)

if TYPE_CHECKING:
    from scipy.sparse import csr_array

__all__ = ["plan_exact"]

_FULL = 1.0 - 1e-6


def _precedence_rows(n: int, steps: int, binary_steps: IntArray) -> tuple[csr_array, int]:
    """Rows ``x[i,j] - x[i,j-1] <= 0`` (concave steps) or the y-linked pair (other steps).

    Variables are laid out as x (n·steps, slot-major) followed by one y per slot and binary step.
    Each row has one +1 and one -1 entry.
    """
    from scipy.sparse import coo_array, csr_array

    nx = n * steps
    n_bin = len(binary_steps)
    y_of = {int(j): b for b, j in enumerate(binary_steps)}
    plus: list[IntArray] = []
    minus: list[IntArray] = []
    slots = np.arange(n)
    for j in range(1, steps):
        xj = slots * steps + j
        if j in y_of:
            yj = nx + slots * n_bin + y_of[j]
            plus += [xj, yj]  # x[i,j] - y[i,j] <= 0 and y[i,j] - x[i,j-1] <= 0
            minus += [yj, xj - 1]
        else:
            plus.append(xj)
            minus.append(xj - 1)
    if not plus:
        return csr_array((0, nx + n * n_bin)), 0
    pos, neg = np.concatenate(plus), np.concatenate(minus)
    count = len(pos)
    row_ids = np.arange(count)
    matrix = coo_array(
        (
            np.concatenate([np.ones(count), -np.ones(count)]),
            (np.concatenate([row_ids, row_ids]), np.concatenate([pos, neg])),
        ),
        shape=(count, nx + n * n_bin),
    ).tocsr()
    return matrix, count


def _solve(ladder: Ladder, carbon: FloatArray, target: float, time_limit_s: float) -> FloatArray:
    # scipy is imported when a MILP is solved: every command imports this module, few solve.
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_array

    n, steps = len(carbon), ladder.steps
    raw = ladder.d_work / np.where(ladder.d_power_w > 0, ladder.d_power_w, np.nan)
    rising = np.flatnonzero(np.nan_to_num(np.diff(raw), nan=1.0) > 1e-12 * np.nan_to_num(raw[:-1]))
    binary_steps = (rising + 1).astype(np.int64)  # step j whose efficiency exceeds step j-1's
    nx = n * steps
    nvar = nx + n * len(binary_steps)
    cost = np.zeros(nvar)
    cost[:nx] = (carbon[:, None] * ladder.d_power_w[None, :]).ravel()
    work_row = np.zeros(nvar)
    work_row[:nx] = np.tile(ladder.d_work, n)
    precedence, n_prec = _precedence_rows(n, steps, binary_steps)
    constraints = [
        LinearConstraint(csr_array(work_row.reshape(1, -1)), lb=target, ub=np.inf),
    ]
    if n_prec:
        constraints.append(LinearConstraint(precedence, lb=-np.inf, ub=0.0))
    integrality = np.zeros(nvar)
    integrality[nx:] = 1
    result = milp(
        cost,
        constraints=constraints,
        integrality=integrality,
        bounds=Bounds(np.zeros(nvar), np.ones(nvar)),
        options={"time_limit": time_limit_s, "mip_rel_gap": 1e-9},
    )
    if result.x is None:
        raise PlanningError(f"exact planner: HiGHS found no solution ({result.message})")
    return np.asarray(result.x[:nx], dtype=np.float64).reshape(n, steps)


def _polish(ladder: Ladder, carbon: FloatArray, target: float, x: FloatArray) -> Selection:
    """Keep the fully used steps exactly; cover the residual greedily over the next steps."""
    full = x >= _FULL
    # Steps count only while every step below is full (precedence).
    steps_full = np.cumprod(full, axis=1).sum(axis=1).astype(np.int64)
    done = float((np.cumsum(np.concatenate([[0.0], ladder.d_work]))[steps_full]).sum())
    residual = target - done
    if residual <= target * 1e-12:
        return Selection(steps_full, None, 1.0)
    # A vertex optimum leaves at most one step partly used, so the residual fits in one
    # slot's next step: take the cheapest per unit of work among those that can hold it.
    open_slots = np.flatnonzero(steps_full < ladder.steps)
    nxt = steps_full[open_slots]
    fits = ladder.d_work[nxt] >= residual
    if not np.any(fits):
        return select_increments(ladder, carbon, target)
    candidates, nxt = open_slots[fits], nxt[fits]
    unit_cost = ladder.d_power_w[nxt] * carbon[candidates] / ladder.d_work[nxt]
    pick = int(np.argmin(unit_cost))
    slot, step = int(candidates[pick]), int(nxt[pick])
    steps = steps_full.copy()
    steps[slot] += 1
    fraction = residual / float(ladder.d_work[step])
    if fraction >= 1 - 1e-12:
        return Selection(steps, None, 1.0)
    return Selection(steps, slot, fraction)


def _cost(ladder: Ladder, carbon: FloatArray, sel: Selection) -> float:
    energy = np.concatenate([[0.0], np.cumsum(ladder.d_power_w)])[sel.steps]
    if sel.partial_slot is not None:
        j = sel.steps[sel.partial_slot] - 1
        energy[sel.partial_slot] -= (1 - sel.fraction) * ladder.d_power_w[j]
    return float(energy @ carbon)


def plan_exact(
    job: Job, carbon: FloatArray, *, policy: str = "exact", time_limit_s: float = 60.0
) -> Schedule:
    """The minimum-carbon schedule of the planning model, for any profile.

    Args:
        job: the job.
        carbon: forecast intensity per slot (gCO2eq/kWh) until the deadline.
        policy: name recorded in the schedule.
        time_limit_s: HiGHS time limit; on expiry the best solution found is used.

    Raises:
        InfeasibleError: if the work cannot fit before the deadline.
    """
    started = time.perf_counter()
    carbon = np.asarray(carbon, dtype=np.float64)
    ladder = job.ladder()
    check_feasible(job, ladder, len(carbon), policy=policy)
    target = job.work / job.slot_hours
    x = _solve(ladder, carbon, target, time_limit_s)
    selection = _polish(ladder, carbon, target, x)
    greedy = select_increments(ladder, carbon, target)
    notes: tuple[str, ...] = ()
    if _cost(ladder, carbon, greedy) < _cost(ladder, carbon, selection):
        selection = greedy
        notes = (
            "HiGHS returned a costlier plan than greedy (tolerance or time limit); kept greedy",
        )
    return schedule_from_selection(
        policy,
        job,
        ladder,
        carbon,
        selection,
        deadline_slots=len(carbon),
        started=started,
        notes=notes,
    )
