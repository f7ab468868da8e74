"""Compiled row loops for the batch greedy (numba), loaded on first use.

One row of the batch greedy is a small problem — ``n`` slots, ``J`` ladder steps — and numpy
pays its per-call overhead on every one of its many passes. These loops do each row in one go:

* per step ``j``, the slots in descending score ``e_j / c_i`` (ties by slot): one sort, then
  linear insertion passes that repair the rare floating-point ties between steps. Where a row
  is the last row one slot later — the forecasts of consecutive start times, as a sweep of
  every start plans them — the lists slide instead: the leaving slot out, the new one in, a
  move of the entries between the two places (:func:`_slide`) rather than a sort;
* a ``J``-way merge of those lists (ties by flat index ``i·J + j``, as a stable sort of all
  ``n·J`` scores would give) that stops at the completing increment — the physical floor of the
  greedy, fewer than ``n·J`` steps and no sort of the increments;
* where the caller has the merge order of a longer row that begins with the row (the same
  issue's forecast to a later deadline: :func:`orders_rows`), no lists and no merge — the
  row's increments are read off it in its order, those of later slots skipped. The order may
  be only its first increments (a plan seldom reads deep): a row that runs out of them is
  planned again from its lists;
* for a rescale overhead, the work the plan's own rescales lose, re-planned until it settles
  (at most ``rounds`` times, as :func:`~carbonscaler.planner.batch.batch_greedy_with_overhead`
  documents; a round whose losses repeat the last would give the same plan, so it stops there).
  The merge order does not depend on the target, so each round resumes the logged merge
  rather than starting again; a round that ends at the last round's completing pick, with
  each part of that slot at least the overhead long either way, loses what the last did, so
  it stops without summing the losses again.

Beside the greedy, the decision core's per-row rules for many runs at once, compiled: its
re-plan triggers (:func:`trigger_rows`) and its running rules (:func:`running_rows`, and
:func:`stretch_rows` through a stretch of slots), each in one place (:func:`_running`).

The numpy-free single plan (:mod:`carbonscaler.planner.greedy`) is the reference the tests
compare against. Compiled code is cached on disk (numba's ``cache=True``), so only the first run
on a machine pays for compilation. Importing this module imports numba: the planner imports it
when it first plans a batch, never at package import.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = [
    "greedy_rows",
    "install_rows",
    "losses_rows",
    "orders_rows",
    "running_rows",
    "stretch_rows",
    "trigger_rows",
]

_jit = numba.njit(cache=True, nogil=True)
_inline = numba.njit(cache=True, nogil=True, inline="always")
"""For the steps of a row's plan: inlined where called (numba IR), so a call neither passes
its arrays nor counts their references — a round costs less than calling its parts."""


@_jit
def _score(e: float, c: float) -> float:
    s = e / c if c != 0.0 else (np.inf if e > 0.0 else np.nan)
    return np.inf if np.isnan(s) else s


@_jit
def _lists(carbon: Any, efficiency: Any, lists: Any, scores: Any) -> None:
    """Per ladder step ``j``, the slots by descending score ``e_j / c_i``, ties by slot.

    Insertion sorts: step 0 from slot order; every later step from step 0's order, which is
    already its order (the scores of one step are the intensities' order) unless division
    rounds two intensities to one score — so those passes are linear. Long horizons sort
    step 0 with a merge sort instead.
    """
    n, steps = carbon.shape[0], efficiency.shape[0]
    if n > 64:
        for k in range(n):
            scores[0, k] = -_score(efficiency[0], carbon[k])
        lists[0, :] = np.argsort(scores[0], kind="mergesort")
    for j in range(steps):
        if j == 0 and n > 64:
            for k in range(n):
                scores[0, k] = _score(efficiency[0], carbon[lists[0, k]])
            continue
        for k in range(n):
            i = k if j == 0 else lists[j - 1, k]
            s = _score(efficiency[j], carbon[i])
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
def _shifted(previous: Any, row: Any) -> bool:
    """Whether ``row`` is ``previous`` one slot later: the windows of one trace at consecutive
    starts (a year of hourly starts, a forecast issued at every slot)."""
    n = row.shape[0]
    same: bool = n > 0
    i = 0
    while same and i < n - 1:
        same = row[i] == previous[i + 1]
        i += 1
    return same


@_jit
def _count_above(values: Any, bound: float, inclusive: bool) -> int:
    """How many of the non-increasing ``values`` are ``> bound`` (``>=`` with ``inclusive``):
    a binary search."""
    low, high = 0, values.shape[0]
    while low < high:
        mid = (low + high) // 2
        if values[mid] > bound or (inclusive and values[mid] == bound):
            low = mid + 1
        else:
            high = mid
    return low


@_jit
def _slide(
    leaving: float, entering: float, efficiency: Any, lists: Any, scores: Any, base: int
) -> None:
    """:func:`_lists` for the next window, from the last window's (see :func:`_shifted`).

    Each list is sorted by descending score, ties by slot, and a score depends only on its
    slot's intensity, so one slot later every list is the last one without its first slot
    (the leaving intensity) and with the new last slot inserted: a move of the entries between
    the two places, instead of a sort. Entries are stored as ``slot + base``, so the slots of
    those that stay need no rewriting (the caller raises ``base`` by one per slide).
    """
    steps, n = lists.shape
    for j in range(steps):
        old = _score(efficiency[j], leaving)
        new = _score(efficiency[j], entering)
        sc, li = scores[j], lists[j]
        # The leaving slot is the first of its score (the lowest slot of any tie).
        gone = _count_above(sc, old, False)
        place = _count_above(sc, new, True)  # after every entry scoring >= new
        if gone < place:
            place -= 1
            for p in range(gone, place):
                sc[p] = sc[p + 1]
                li[p] = li[p + 1]
        else:
            for p in range(gone, place, -1):
                sc[p] = sc[p - 1]
                li[p] = li[p - 1]
        sc[place] = new
        li[place] = n - 1 + base


@_inline
def _extend(
    goal: float,
    d_work: Any,
    lists: Any,
    scores: Any,
    heads: Any,
    log: Any,
    base: int,
    seq: Any,
    stop: int,
) -> int:
    """Merge further, logging picks, until the cumulative work reaches ``goal`` or ``stop``
    increments are taken; returns how many picks are logged.

    ``log`` holds, per pick, its slot, step and cumulative work (as float); ``heads[j]`` is
    how far list ``j`` is merged; the lists hold ``slot + base`` (see :func:`_slide`: an
    offset that keeps their order). The merge order does not depend on the target, so a
    larger target continues where a smaller one stopped.

    Where ``seq`` is not empty it is the merge order itself (:func:`orders_rows` of a longer
    row that begins with this one): the picks are its increments of this row's slots, in its
    order, and ``heads`` holds how far it is read and how many picks are logged. Where ``seq``
    is only the first increments of that order and runs out before the goal, ``heads[0]`` is
    left past its end (the caller plans the row without it).
    """
    steps, n = lists.shape
    if seq.shape[0] > 0:
        at, made = heads[0], heads[1]
        cumulative = log[made - 1, 2] if made > 0 else 0.0
        limit = n * steps  # the increments of slots >= n
        width = seq.shape[0]
        while made < limit and cumulative < goal:
            if at >= width:
                at = width + 1  # a prefix of the order, run out
                break
            flat = seq[at]
            at += 1
            if flat >= limit:
                continue
            slot = flat // steps
            step = flat - slot * steps
            cumulative += d_work[step]
            log[made, 0] = slot
            log[made, 1] = step
            log[made, 2] = cumulative
            made += 1
        heads[0], heads[1] = at, made
        return int(made)
    made = heads[:steps].sum()
    cumulative = log[made - 1, 2] if made > 0 else 0.0
    while made < stop and cumulative < goal:
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
        cumulative += d_work[best]
        log[made, 0] = lists[best, heads[best]] - base
        log[made, 1] = best
        log[made, 2] = cumulative
        heads[best] += 1
        made += 1
    return int(made)


@_inline
def _select(
    target: float,
    d_work: Any,
    levels: Any,
    lists: Any,
    scores: Any,
    base: int,
    heads: Any,
    log: Any,
    counts: Any,
    servers: Any,
    fraction: Any,
    after: Any,
    seq: Any,
) -> int:
    """Take increments in score order until ``target`` is covered; returns the completing
    pick's place in ``log``, or -1 if ``target`` cannot be covered (an all-zero plan).

    ``counts[:n]`` holds how many of the first ``counts[n]`` logged picks fall in each slot,
    and ``counts[n + 1]`` the partial slot of the plan in ``servers``, ``fraction`` and
    ``after`` (-1: none). A later round of the row (the log only grows) moves only the picks
    between the two completing picks; ``counts[n] = -1`` starts the plan afresh.
    """
    n = lists.shape[1]
    goal = target * (1 - 1e-12)
    made = _extend(goal, d_work, lists, scores, heads, log, base, seq, n * lists.shape[0])
    if made == 0 or log[made - 1, 2] < goal:
        servers[:] = 0
        after[:] = 0
        fraction[:] = 1.0
        counts[n] = -1
        return -1
    # The completing pick: the first whose cumulative work reaches the goal.
    low, high = 0, made - 1
    while low < high:
        mid = (low + high) // 2
        if log[mid, 2] >= goal:
            high = mid
        else:
            low = mid + 1
    counted = counts[n]
    if counted < 0:
        counted = 0
        for i in range(n):
            counts[i] = 0
            servers[i] = after[i] = levels[0]
            fraction[i] = 1.0
    elif counts[n + 1] >= 0:
        fraction[counts[n + 1]] = 1.0
        after[counts[n + 1]] = servers[counts[n + 1]]
    while counted <= low:
        i = int(log[counted, 0])
        counts[i] += 1
        servers[i] = after[i] = levels[counts[i]]
        counted += 1
    while counted > low + 1:
        counted -= 1
        i = int(log[counted, 0])
        counts[i] -= 1
        servers[i] = after[i] = levels[counts[i]]
    counts[n], counts[n + 1] = counted, -1
    slot, step = int(log[low, 0]), int(log[low, 1])
    before = log[low - 1, 2] if low > 0 else 0.0
    share = (target - before) / d_work[step]
    if share < 1 - 1e-12:
        fraction[slot] = min(max(share, 0.0), 1.0)
        after[slot] = levels[counts[slot] - 1]
        counts[n + 1] = slot
    return low


@_inline
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


@_inline
def _plan_row(
    work: float,
    d_work: Any,
    levels: Any,
    lists: Any,
    scores: Any,
    base: int,
    heads: Any,
    log: Any,
    counts: Any,
    throughput: Any,
    overhead_h: float,
    slot_hours: float,
    previous: int,
    started: bool,
    rounds: int,
    servers: Any,
    fraction: Any,
    after: Any,
    seq: Any,
) -> bool:
    """One row's plan for ``work``, covering its own rescale losses; False if it cannot fit.

    Round 0 plans ``work``; each later round (at most ``rounds``) plans ``work`` plus the last
    plan's losses, until the losses repeat. A round that completes at the same pick as the
    last differs from its plan only in the completing slot's split; where both splits leave
    each part of that slot at least the overhead long (:func:`_overhead_fits`), every rescale
    loses exactly what it lost in the last plan, so the losses repeat without being summed.
    """
    loss = 0.0
    pick, split = -1, 1.0
    for round_ in range(rounds + 1):
        last_pick, last_split = pick, split
        pick = _select(
            work + loss,
            d_work,
            levels,
            lists,
            scores,
            base,
            heads,
            log,
            counts,
            servers,
            fraction,
            after,
            seq,
        )
        if overhead_h <= 0.0 or round_ == rounds:
            break
        split = fraction[int(log[pick, 0])] if pick >= 0 else 1.0
        if (
            pick >= 0
            and pick == last_pick
            and (
                split == last_split
                or (
                    _overhead_fits(split, overhead_h, slot_hours)
                    and _overhead_fits(last_split, overhead_h, slot_hours)
                )
            )
        ):
            break
        last_loss = loss
        loss = _losses(
            servers, fraction, after, throughput, overhead_h, slot_hours, previous, started
        )
        if loss == last_loss:
            break
    return pick >= 0


@_inline
def _overhead_fits(split: float, overhead_h: float, slot_hours: float) -> bool:
    """Whether both parts of a slot split at ``split`` run (as :func:`_losses` times them) at
    least ``overhead_h``: a rescale at the start of either loses ``overhead_h`` exactly."""
    shorter = min(split * slot_hours, (1.0 - split) * slot_hours)
    return shorter >= overhead_h and shorter > 1e-12


@_jit
def greedy_rows(
    carbon: Any,
    targets: Any,
    fallbacks: Any,
    efficiency: Any,
    d_work: Any,
    levels: Any,
    throughput: Any,
    overhead_h: float,
    slot_hours: float,
    previous: Any,
    started: Any,
    rounds: int,
    order_table: Any,
    order_rows: Any,
    servers: Any,
    fraction: Any,
    after: Any,
    feasible: Any,
    fell_back: Any,
) -> None:
    """Plan every row for its target or, where that cannot fit, its fallback (NaN: none).

    ``order_table[order_rows[r]]`` (``w·J`` wide, ``w`` = 0 for none) is row ``r``'s merge
    order, as :func:`orders_rows` gives it for a row of ``w`` slots that begins with the row:
    the lists are then neither sorted nor merged. It may hold only the first increments of
    that order: a row that needs more is planned again without it.
    """
    rows, n = carbon.shape
    steps = efficiency.shape[0]
    lists = np.empty((steps, n), dtype=np.int64)
    scores = np.empty((steps, n))
    heads = np.empty(steps + 1, dtype=np.int64)  # a merge order's use needs two
    counts = np.empty(n + 2, dtype=np.int64)  # and the picks counted, the partial slot
    log = np.empty((n * steps, 3))
    base = 0
    ordered = order_table.shape[1] > 0
    none = np.empty(0, dtype=order_table.dtype)
    for r in range(rows):
        use_order = ordered
        for _ in range(2):
            if use_order:
                base = 0  # the lists are not used
            elif not ordered and r > 0 and _shifted(carbon[r - 1], carbon[r]):
                base += 1
                _slide(carbon[r - 1, 0], carbon[r, n - 1], efficiency, lists, scores, base)
            else:
                base = 0
                _lists(carbon[r], efficiency, lists, scores)
            seq = order_table[order_rows[r]] if use_order else none
            heads[:] = 0
            counts[n] = -1
            fell_back[r] = False
            ok = False
            for attempt in range(2):
                work = targets[r] if attempt == 0 else fallbacks[r]
                if attempt == 1:
                    if np.isnan(work):
                        break
                    fell_back[r] = True
                ok = _plan_row(
                    work,
                    d_work,
                    levels,
                    lists,
                    scores,
                    base,
                    heads,
                    log,
                    counts,
                    throughput,
                    overhead_h,
                    slot_hours,
                    previous[r],
                    started[r],
                    rounds,
                    servers[r],
                    fraction[r],
                    after[r],
                    seq,
                )
                if ok:
                    break
            feasible[r] = ok
            if not use_order or heads[0] <= seq.shape[0]:
                break
            use_order = False  # the order's prefix ran out: plan the row from its lists


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


@_jit
def install_rows(
    rows: Any,
    first: int,
    servers: Any,
    fraction: Any,
    after: Any,
    feasible: Any,
    top: int,
    forecast: Any,
    throughput: Any,
    slot_hours: float,
    start_work: Any,
    pace: Any,
    plan_servers: Any,
    plan_fraction: Any,
    plan_after: Any,
    plan_forecast: Any,
    planned_done: Any,
    end_slot: Any,
) -> None:
    """Write row ``r`` of the plans made into row ``rows[r]`` of a plan table from slot
    ``first`` on (:func:`carbonscaler.decision.adopt_rows`): infeasible rows run at ``top``;
    ``planned_done`` gets ``start_work`` plus the cumulative work of each slot at the profile's
    ``throughput`` times ``pace``, and ``end_slot`` where the last planned server stops."""
    width = servers.shape[1]
    for r in range(servers.shape[0]):
        row = rows[r]
        ok = feasible[r]
        start = start_work[r]
        p = pace[r]
        planned_done[row, first] = start
        cumulative = 0.0
        last = -1
        for i in range(width):
            k = servers[r, i] if ok else top
            share = fraction[r, i] if ok else 1.0
            tail = after[r, i] if ok else top
            plan_servers[row, first + i] = k
            plan_fraction[row, first + i] = share
            plan_after[row, first + i] = tail
            plan_forecast[row, first + i] = forecast[r, i]
            low = throughput[tail]
            cumulative += (low + (throughput[k] - low) * share) * slot_hours * p
            planned_done[row, first + i + 1] = start + cumulative
            if k > 0 or tail > 0:
                last = i
        if last < 0:
            end_slot[row] = float(first)
        else:
            share = fraction[r, last] if ok else 1.0
            tail = after[r, last] if ok else top
            inside = tail == 0 and share < 1.0
            end_slot[row] = float(first + last) + (share if inside else 1.0)


@_jit
def orders_rows(carbon: Any, efficiency: Any, d_work: Any, out: Any) -> None:
    """Each row's merge order: every increment ``slot·J + step`` in the order the greedy takes
    them (descending score, ties by that flat index), or its first ``out.shape[1]``. Any row
    that begins a row of ``carbon`` takes its own increments in the same order, so this is
    ``greedy_rows``' ``order`` for it.
    """
    rows, n = carbon.shape
    steps = efficiency.shape[0]
    lists = np.empty((steps, n), dtype=np.int64)
    scores = np.empty((steps, n))
    heads = np.zeros(steps + 1, dtype=np.int64)
    log = np.empty((n * steps, 3))
    none = np.empty(0, dtype=out.dtype)
    for r in range(rows):
        _lists(carbon[r], efficiency, lists, scores)
        heads[:] = 0
        _extend(np.inf, d_work, lists, scores, heads, log, 0, none, out.shape[1])
        for k in range(out.shape[1]):
            out[r, k] = int(log[k, 0]) * steps + int(log[k, 1])


@_jit
def trigger_rows(
    planned_done: Any,
    made_at: Any,
    margin: Any,
    rows: Any,
    slot: int,
    work_done: Any,
    behind: float,
    ahead: float,
    forecast: Any,
    planned: Any,
    threshold: float,
    floor: float,
    bits: Any,
    out: Any,
) -> None:
    """:func:`carbonscaler.decision.triggers_rows` for row ``r``, of plan row ``rows[r]`` at
    the start of ``slot``: ``bits[0]`` where the work done trails the plan's progress by more
    than ``-behind``; ``bits[1]`` where it leads the plan's own pace (its progress without the
    margin) by more than ``ahead``; ``bits[2]`` where row ``r`` of ``forecast`` (none where it
    has no columns) differs from ``planned`` (from ``slot`` on) anywhere by more than
    ``threshold`` relative to the planned value (at least ``floor``), a row stopping at its
    first drift. A NaN on either side is no drift."""
    for r in range(rows.shape[0]):
        row = rows[r]
        done_now = planned_done[row, slot]
        start_work = planned_done[row, made_at[row]]
        own_pace = start_work + (done_now - start_work) * margin[row]
        reasons = 0
        if work_done[r] - done_now < behind:
            reasons |= bits[0]
        if work_done[r] - own_pace > ahead:
            reasons |= bits[1]
        for i in range(forecast.shape[1]):
            expected = planned[row, slot + i]
            scale = expected if (expected >= floor or expected != expected) else floor
            if abs(forecast[r, i] - expected) > threshold * scale:
                reasons |= bits[2]
                break
        out[r] = reasons


@_inline
def _running(
    planned: Any,
    inside: Any,
    at: Any,
    end: float,
    running: int,
    top: int,
    late: int,
    overrun_bit: int,
    level: Any,
    reasons: Any,
) -> None:
    """:func:`carbonscaler.decision.level_rows`' running rules for one row's moments ``k``
    (``at[k]`` slots since arrival): the plan's level ``planned[k]`` where ``inside[k]`` (the
    deadline), else ``top`` (reason ``late``); a moment inside, at level 0, at or after the
    plan's ``end`` is an overrun: every overrun moment keeps the level of the moment before
    the first (``running`` before the first moment), ``overrun_bit`` where that is not 0."""
    moments = planned.shape[0]
    first = -1
    for k in range(moments):
        if inside[k]:
            level[k] = planned[k]
            reasons[k] = 0
            if first < 0 and planned[k] == 0 and at[k] >= end - 1e-9:
                first = k
        else:
            level[k] = top
            reasons[k] = late
    if first < 0:
        return
    before = level[first - 1] if first > 0 else running
    for k in range(first, moments):
        if inside[k] and level[k] == 0 and at[k] >= end - 1e-9:
            level[k] = before
            if before > 0:
                reasons[k] |= overrun_bit


@_jit
def running_rows(
    planned: Any,
    inside: Any,
    at: Any,
    end_slot: Any,
    rows: Any,
    running: Any,
    top: int,
    late: int,
    overrun_bit: int,
    level: Any,
    reasons: Any,
) -> None:
    """:func:`_running` for each row ``r`` of ``(R, K)`` moments, of plan row ``rows[r]``."""
    for r in range(planned.shape[0]):
        _running(
            planned[r],
            inside[r],
            at[r],
            end_slot[rows[r]],
            running[r],
            top,
            late,
            overrun_bit,
            level[r],
            reasons[r],
        )


@_jit
def stretch_rows(
    servers: Any,
    fraction: Any,
    after: Any,
    end_slot: Any,
    rows: Any,
    first: int,
    span: int,
    eps: float,
    running: Any,
    top: int,
    late: int,
    overrun_bit: int,
    level: Any,
    reasons: Any,
) -> None:
    """:func:`running_rows` through slots ``first .. first+span-1`` of plan rows ``rows``
    (:func:`carbonscaler.decision.level_stretch`): two moments per slot, its start (the plan's
    ``servers``, or ``after`` where the first part is empty) and its switch point (``after``
    at ``fraction`` into the slot); past the plan's ``n`` slots, the slot's start twice."""
    n = servers.shape[1]
    inside_slots = max(min(first + span, n) - first, 0)
    planned = np.zeros(2 * span, dtype=np.int64)
    inside = np.zeros(2 * span, dtype=np.bool_)
    at = np.empty(2 * span)
    for i in range(span):
        at[2 * i] = at[2 * i + 1] = float(first + i)
    for r in range(rows.shape[0]):
        row = rows[r]
        for i in range(inside_slots):
            s = first + i
            f = fraction[row, s]
            tail = after[row, s]
            planned[2 * i] = servers[row, s] if f > eps else tail
            planned[2 * i + 1] = tail
            inside[2 * i] = inside[2 * i + 1] = True
            at[2 * i + 1] = float(s) + f
        _running(
            planned,
            inside,
            at,
            end_slot[row],
            running[r],
            top,
            late,
            overrun_bit,
            level[r],
            reasons[r],
        )
