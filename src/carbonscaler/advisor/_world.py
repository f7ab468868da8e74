"""The advisor's world, compiled: how far each run gets through a stretch of sub-intervals.

Progress is sequential — a run stops the moment its work is done, and each rescale depends on
the level that ran before — so it is a loop over time per run, compiled here with numba (cached
on disk; the executor imports this module when it first runs). One run's way through its
sub-intervals (:func:`_through`) is the only place the executor's physics lives, whether it
advances one slot (between re-plans) or a stretch of levels the decision core chose
(:func:`advance`), or runs a first plan straight from the planner where nothing can re-plan
(:func:`follow`). Energy and emissions are charged by the accounting's own
:func:`~carbonscaler.accounting.integrate.charge`, compiled with it.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from carbonscaler.accounting.integrate import charge

__all__ = ["RUNNING", "TRACE_ENDED", "WORK_DONE", "advance", "advance_slots", "follow"]

RUNNING, WORK_DONE, TRACE_ENDED = 0, 1, 2
"""A run's status after a stretch: still running, finished, or past the end of the trace."""

_EPS = 1e-12
_SLIVER = 1e-6
"""Slots: :func:`follow` leaves plans with an idle moment shorter than this to the caller."""
_charge = numba.njit(cache=True)(charge)


@numba.njit(cache=True, nogil=True, inline="always")
def _through(
    run: int,
    first_slot: int,
    levels: Any,
    begin_h: Any,
    duration_h: Any,
    carbon: Any,
    throughput: Any,
    power_w: Any,
    rate_factor: float,
    overhead_h: float,
    work: float,
    slot_hours: float,
    done: Any,
    nominal: Any,
    previous: Any,
    started: Any,
    completion: Any,
    rescales: Any,
    energy_kwh: Any,
    emissions_g: Any,
    server_hours: Any,
    by_slot: Any,
) -> int:
    """Run ``run`` through its sub-intervals (see :func:`advance`); returns its status.

    One call per run, not per sub-interval: a compiled call that passes the state arrays
    costs more than a sub-interval's physics, and inlined where it is called (numba IR), so
    not even that.
    """
    for k in range(levels.shape[0]):
        if np.isnan(carbon[k]):
            return TRACE_ENDED
        duration = duration_h[k]
        if duration <= _EPS:
            continue
        level = levels[k]
        change = level != previous[run]
        lost = 0.0
        if change and started[run]:
            rescales[run] += 1
            if level > 0:
                lost = min(overhead_h, duration)
        rate = throughput[level] * rate_factor
        need = lost + ((work - done[run]) / rate if rate > 0 else np.inf)
        ends = level > 0 and need <= duration + _EPS
        spent = need if ends else duration
        kwh, grams = _charge(power_w[level], spent, carbon[k])
        energy_kwh[run] += kwh
        emissions_g[run] += grams
        server_hours[run] += level * spent
        slot = first_slot + k // 2
        if slot < by_slot.shape[1]:
            by_slot[run, slot] += level * spent / slot_hours
        nominal[run] += throughput[level] * spent
        previous[run] = level
        if level > 0:
            started[run] = True
        if ends:
            done[run] = work
            completion[run] = begin_h[k] + need
            return WORK_DONE
        done[run] += rate * max(spent - lost, 0.0)
    return RUNNING


@numba.njit(cache=True, nogil=True)
def advance(
    live: Any,
    first_slot: int,
    levels: Any,
    begin_h: Any,
    duration_h: Any,
    carbon: Any,
    throughput: Any,
    power_w: Any,
    rate_factor: Any,
    overhead_h: float,
    work: float,
    slot_hours: float,
    done: Any,
    nominal: Any,
    previous: Any,
    started: Any,
    completion: Any,
    rescales: Any,
    energy_kwh: Any,
    emissions_g: Any,
    server_hours: Any,
    by_slot: Any,
    status: Any,
) -> None:
    """Advance each live run through a stretch of sub-intervals.

    Runs each live run ``r`` (a row index into the per-run state arrays) through its
    sub-intervals ``k`` (two per slot, from ``first_slot``): ``levels[r, k]`` servers from job
    hour ``begin_h[r, k]`` for ``duration_h[r, k]`` hours, at actual throughput
    ``throughput[level] · rate_factor[run]``, charged at ``carbon[r, k]``; ``by_slot`` (runs ×
    recorded slots) adds the mean servers.

    A change of level that really runs, after the run's first start, is a rescale and loses
    ``overhead_h`` of work (at most the sub-interval) at a non-zero level. A NaN intensity
    marks the trace's end: the run stops there, before that sub-interval. State arrays are
    updated in place; ``status[r]`` gets the outcome.
    """
    for r in range(levels.shape[0]):
        run = live[r]
        status[r] = _through(
            run,
            first_slot,
            levels[r],
            begin_h[r],
            duration_h[r],
            carbon[r],
            throughput,
            power_w,
            rate_factor[run],
            overhead_h,
            work,
            slot_hours,
            done,
            nominal,
            previous,
            started,
            completion,
            rescales,
            energy_kwh,
            emissions_g,
            server_hours,
            by_slot,
        )


@numba.njit(cache=True, nogil=True)
def advance_slots(
    live: Any,
    starts: Any,
    first_slot: int,
    inside: int,
    levels: Any,
    switch: Any,
    padded: Any,
    throughput: Any,
    power_w: Any,
    rate_factor: Any,
    overhead_h: float,
    work: float,
    slot_hours: float,
    done: Any,
    nominal: Any,
    previous: Any,
    started: Any,
    completion: Any,
    rescales: Any,
    energy_kwh: Any,
    emissions_g: Any,
    server_hours: Any,
    by_slot: Any,
    status: Any,
) -> None:
    """:func:`advance` through the slots ``first_slot ..`` of a stretch (``levels`` holds two
    per slot), its sub-intervals made here: in slot ``s`` of run ``run = live[r]``,
    ``levels[r, 2i]`` up to the switch point ``switch[run, s]`` (for the first ``inside``
    slots of the stretch; 1, the slot's end, after them), then ``levels[r, 2i + 1]``, charged
    at ``padded[starts[run] + s]`` (the trace, its last value NaN: indices past it read that).
    """
    rows, width = levels.shape
    span = width // 2
    last = padded.shape[0] - 1
    begin_h = np.empty(width)
    duration_h = np.empty(width)
    carbon = np.empty(width)
    for r in range(rows):
        run = live[r]
        for i in range(span):
            slot = first_slot + i
            f = switch[run, slot] if i < inside else 1.0
            begin_h[2 * i] = float(slot) * slot_hours
            begin_h[2 * i + 1] = (slot + f) * slot_hours
            duration_h[2 * i] = f * slot_hours
            duration_h[2 * i + 1] = (1.0 - f) * slot_hours
            carbon[2 * i] = carbon[2 * i + 1] = padded[min(starts[run] + slot, last)]
        status[r] = _through(
            run,
            first_slot,
            levels[r],
            begin_h,
            duration_h,
            carbon,
            throughput,
            power_w,
            rate_factor[run],
            overhead_h,
            work,
            slot_hours,
            done,
            nominal,
            previous,
            started,
            completion,
            rescales,
            energy_kwh,
            emissions_g,
            server_hours,
            by_slot,
        )


@numba.njit(cache=True, nogil=True)
def follow(
    starts: Any,
    trace: Any,
    servers: Any,
    fraction: Any,
    after: Any,
    feasible: Any,
    throughput: Any,
    power_w: Any,
    work: float,
    slot_hours: float,
    done: Any,
    nominal: Any,
    previous: Any,
    started: Any,
    completion: Any,
    rescales: Any,
    energy_kwh: Any,
    emissions_g: Any,
    server_hours: Any,
    by_slot: Any,
    status: Any,
) -> None:
    """Run each feasible plan (the planner's per-slot form) from its arrival, with neither
    profile error nor overhead, as :func:`advance` runs the levels
    :func:`carbonscaler.decision.level_stretch` gives for it within the deadline: in slot ``i``
    the plan's ``servers`` for ``fraction`` of it (``after`` where that part is empty), then
    ``after``, charged at ``trace[starts[r] + i]``.

    ``status[r]`` is WORK_DONE where the plan did the work. Elsewhere the decision core's
    running rules could give other levels than the plan's — a plan that cannot fit runs at the
    top level, a run that outlasts its plan keeps its level — so those rows get RUNNING, and
    the caller runs them by the reference path: infeasible rows (left untouched), runs the plan
    did not finish, and plans with an idle moment shorter than :data:`_SLIVER` slots (only
    through one could a run meet its plan's end, where the overrun rule applies, and still
    finish by the plan).
    """
    rows, n = servers.shape
    levels = np.empty(2 * n, dtype=np.int64)
    begin_h = np.empty(2 * n)
    duration_h = np.empty(2 * n)
    carbon = np.empty(2 * n)
    for r in range(rows):
        status[r] = RUNNING
        if not feasible[r]:
            continue
        sliver = False
        for i in range(n):
            f = fraction[r, i]
            levels[2 * i] = servers[r, i] if f > _EPS else after[r, i]
            levels[2 * i + 1] = after[r, i]
            begin_h[2 * i] = float(i) * slot_hours
            begin_h[2 * i + 1] = (i + f) * slot_hours
            duration_h[2 * i] = f * slot_hours
            duration_h[2 * i + 1] = (1.0 - f) * slot_hours
            carbon[2 * i] = carbon[2 * i + 1] = trace[starts[r] + i]
            for k in range(2 * i, 2 * i + 2):
                if levels[k] == 0 and _EPS < duration_h[k] < _SLIVER * slot_hours:
                    sliver = True
        if sliver:
            continue
        status[r] = _through(
            r,
            0,
            levels,
            begin_h,
            duration_h,
            carbon,
            throughput,
            power_w,
            1.0,
            0.0,
            work,
            slot_hours,
            done,
            nominal,
            previous,
            started,
            completion,
            rescales,
            energy_kwh,
            emissions_g,
            server_hours,
            by_slot,
        )
