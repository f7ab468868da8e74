"""Compiled row loops for the batch greedy (numba), loaded on first use.

One row of the batch greedy is a small problem — ``n`` slots, ``J`` ladder steps — and numpy
pays its per-call overhead on every one of its many passes. These loops do each row in one go:

* per step ``j``, the slots in descending score ``e_j / c_i`` (ties by slot), from one stable
  sort of the intensities and an insertion pass that repairs the rare floating-point ties;
* a ``J``-way merge of those lists (ties by flat index ``i·J + j``, as a stable sort of all
  ``n·J`` scores would give) that stops at the completing increment — the physical floor of the
  greedy, fewer than ``n·J`` steps and no sort of the increments;
* for a rescale overhead, the work the plan's own rescales lose, re-planned until it settles
  (at most ``rounds`` times, as :func:`~carbonscaler.planner.batch.batch_greedy_with_overhead`
  documents; a round whose losses repeat the last would give the same plan, so it stops there).

The numpy-free single plan (:mod:`carbonscaler.planner.greedy`) is the reference the tests
compare against. Compiled code is cached on disk (numba's ``cache=True``), so only the first run
on a machine pays for compilation. Importing this module imports numba: the planner imports it
when it first plans a batch, never at package import.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = ["greedy_rows", "losses_rows"]

_jit = numba.njit(cache=True, nogil=True)


@_jit
def _score(e: float, c: float) -> float:
    s = e / c if c != 0.0 else (np.inf if e > 0.0 else np.nan)
    return np.inf if np.isnan(s) else s


@_jit
def _lists(carbon: Any, efficiency: Any, by_carbon: Any, lists: Any, scores: Any) -> None:
    n, steps = carbon.shape[0], efficiency.shape[0]
    for j in range(steps):
        for k in range(n):
            i = by_carbon[k]
            s = _score(efficiency[j], carbon[i])
            # Insertion: descending score, ties by slot. Starting from the intensity order
            # it is linear unless division rounds two intensities to one score.
            p = k
            while p > 0 and (
                scores[j, p - 1] < s or (scores[j, p - 1] == s and lists[j, p - 1] > i)
            ):
                scores[j, p] = scores[j, p - 1]
                lists[j, p] = lists[j, p - 1]
                p -= 1
            scores[j, p] = s
            lists[j, p] = i


@_jit
def _merge(
    target: float,
    d_work: Any,
    levels: Any,
    lists: Any,
    scores: Any,
    heads: Any,
    counts: Any,
    servers: Any,
    fraction: Any,
    after: Any,
) -> bool:
    """Take increments in score order until ``target`` is covered; False if it cannot be."""
    steps, n = lists.shape
    heads[:] = 0
    counts[:] = 0
    goal = target * (1 - 1e-12)
    cumulative = 0.0
    feasible = False
    slot, step, before = -1, -1, 0.0
    for _ in range(n * steps):
        best = -1
        for j in range(steps):
            h = heads[j]
            if h >= n:
                continue
            if best < 0:
                best = j
                continue
            s, b = scores[j, h], scores[best, heads[best]]
            if s > b or (
                s == b and lists[j, h] * steps + j < lists[best, heads[best]] * steps + best
            ):
                best = j
        slot = lists[best, heads[best]]
        heads[best] += 1
        counts[slot] += 1
        before = cumulative
        cumulative += d_work[best]
        step = best
        if cumulative >= goal:
            feasible = True
            break
    for i in range(n):
        fraction[i] = 1.0
    if not feasible:
        servers[:] = 0
        after[:] = 0
        return False
    for i in range(n):
        servers[i] = levels[counts[i]]
        after[i] = servers[i]
    share = (target - before) / d_work[step]
    if share < 1 - 1e-12:
        fraction[slot] = min(max(share, 0.0), 1.0)
        after[slot] = levels[counts[slot] - 1]
    return True


@_jit
def _losses(
    servers: Any,
    fraction: Any,
    after: Any,
    throughput: Any,
    overhead_h: float,
    slot_hours: float,
    previous: int,
    started: bool,
) -> float:
    """Work the plan loses to rescaling, in work / slot-hour units (see rescale_losses)."""
    n = servers.shape[0]
    last = previous
    first = not started
    lost = 0.0
    for k in range(2 * n):
        i = k // 2
        if k % 2 == 0:
            level, duration = servers[i], fraction[i] * slot_hours
        else:
            level, duration = after[i], (1.0 - fraction[i]) * slot_hours
        if duration <= 1e-12:
            continue
        if level != last and level > 0:
            if first:
                first = False
            else:
                lost += throughput[level] * min(overhead_h, duration)
        last = level
    return lost / slot_hours


@_jit
def greedy_rows(
    carbon: Any,
    targets: Any,
    efficiency: Any,
    d_work: Any,
    levels: Any,
    throughput: Any,
    overhead_h: float,
    slot_hours: float,
    previous: Any,
    started: Any,
    rounds: int,
    servers: Any,
    fraction: Any,
    after: Any,
    feasible: Any,
) -> None:
    rows, n = carbon.shape
    steps = efficiency.shape[0]
    lists = np.empty((steps, n), dtype=np.int64)
    scores = np.empty((steps, n))
    heads = np.empty(steps, dtype=np.int64)
    counts = np.empty(n, dtype=np.int64)
    for r in range(rows):
        row = carbon[r]
        _lists(row, efficiency, np.argsort(row, kind="mergesort"), lists, scores)
        base = targets[r]
        ok = _merge(
            base,
            d_work,
            levels,
            lists,
            scores,
            heads,
            counts,
            servers[r],
            fraction[r],
            after[r],
        )
        if overhead_h > 0.0:
            last_loss = 0.0
            for _ in range(rounds):
                loss = _losses(
                    servers[r],
                    fraction[r],
                    after[r],
                    throughput,
                    overhead_h,
                    slot_hours,
                    previous[r],
                    started[r],
                )
                if loss == last_loss:
                    break
                last_loss = loss
                ok = _merge(
                    base + loss,
                    d_work,
                    levels,
                    lists,
                    scores,
                    heads,
                    counts,
                    servers[r],
                    fraction[r],
                    after[r],
                )
        feasible[r] = ok


@_jit
def losses_rows(
    servers: Any,
    fraction: Any,
    after: Any,
    throughput: Any,
    overhead_h: float,
    slot_hours: float,
    previous: Any,
    started: Any,
    out: Any,
) -> None:
    for r in range(servers.shape[0]):
        out[r] = _losses(
            servers[r],
            fraction[r],
            after[r],
            throughput,
            overhead_h,
            slot_hours,
            previous[r],
            started[r],
        )
