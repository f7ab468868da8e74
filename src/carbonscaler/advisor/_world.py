"""The advisor's world, compiled: how far each run gets through a stretch of sub-intervals.

Progress is sequential — a run stops the moment its work is done, and each rescale depends on
the level that ran before — so it is a loop over time per run, compiled here with numba (cached
on disk; the executor imports this module when it first runs). It is the only place the
executor's physics lives, whether it advances one slot (between re-plans) or the rest of a plan
at once. Energy and emissions are charged by the accounting's own
:func:`~carbonscaler.accounting.integrate.charge`, compiled with it.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from carbonscaler.accounting.integrate import charge

__all__ = ["RUNNING", "TRACE_ENDED", "WORK_DONE", "advance"]

RUNNING, WORK_DONE, TRACE_ENDED = 0, 1, 2
"""A run's status after a stretch: still running, finished, or past the end of the trace."""

_EPS = 1e-12
_charge = numba.njit(cache=True)(charge)


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
    rows, width = levels.shape
    for r in range(rows):
        run = live[r]
        status[r] = RUNNING
        for k in range(width):
            if np.isnan(carbon[r, k]):
                status[r] = TRACE_ENDED
                break
            duration = duration_h[r, k]
            if duration <= _EPS:
                continue
            level = levels[r, k]
            change = level != previous[run]
            lost = 0.0
            if change and started[run]:
                rescales[run] += 1
                if level > 0:
                    lost = min(overhead_h, duration)
            rate = throughput[level] * rate_factor[run]
            need = lost + ((work - done[run]) / rate if rate > 0 else np.inf)
            ends = level > 0 and need <= duration + _EPS
            spent = need if ends else duration
            kwh, grams = _charge(power_w[level], spent, carbon[r, k])
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
                completion[run] = begin_h[r, k] + need
                status[r] = WORK_DONE
                break
            done[run] += rate * max(spent - lost, 0.0)
