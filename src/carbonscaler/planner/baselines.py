"""The paper's baselines: carbon-agnostic, suspend-resume (deadline and threshold), static scale.

Policies that ignore the deadline (carbon-agnostic, threshold suspend-resume, static scale) run
in time order until the work is done and may use carbon data past the deadline; the schedule
then reports ``deadline_met = False``. They stop mid-slot when the work is done.
"""

from __future__ import annotations

import math
import time

import numpy as np

from carbonscaler.planner.greedy import plan_greedy
from carbonscaler.planner.model import (
    FloatArray,
    IntArray,
    Job,
    PlanningError,
    Schedule,
    realise,
)

__all__ = [
    "plan_agnostic",
    "plan_static",
    "plan_static_best",
    "plan_suspend_resume",
    "plan_threshold",
]


def _run_in_order(
    policy: str,
    job: Job,
    carbon: FloatArray,
    run_servers: IntArray,
    deadline_slots: int,
    started: float,
    notes: tuple[str, ...] = (),
) -> Schedule:
    """Run ``run_servers[i]`` in each slot, in time order, stopping when the work is done.

    If the carbon data ends first, the schedule is returned incomplete with a note.
    """
    tp = job.profile.throughput
    work_per_slot = tp[run_servers] * job.slot_hours
    cumulative = np.cumsum(work_per_slot)
    target = job.work * (1 - 1e-12)
    if len(cumulative) == 0 or cumulative[-1] < target:
        done = float(cumulative[-1]) if len(cumulative) else 0.0
        note = (
            f"carbon data ended after {len(carbon)} slots with {done:.6g} of {job.work:.6g} "
            "work units done; give a longer trace to see when it finishes"
        )
        return realise(
            policy,
            job,
            carbon,
            run_servers,
            partial_slot=None,
            fraction=1.0,
            servers_after=0,
            deadline_slots=deadline_slots,
            solve_ms=(time.perf_counter() - started) * 1e3,
            notes=(*notes, note),
        )
    last = int(np.searchsorted(cumulative, target, side="left"))
    before = float(cumulative[last - 1]) if last > 0 else 0.0
    fraction = (job.work - before) / float(work_per_slot[last])
    servers = run_servers[: last + 1].copy()
    partial = last if fraction < 1 - 1e-12 else None
    return realise(
        policy,
        job,
        carbon,
        servers,
        partial_slot=partial,
        fraction=min(fraction, 1.0),
        servers_after=0,
        deadline_slots=deadline_slots,
        solve_ms=(time.perf_counter() - started) * 1e3,
        notes=notes,
    )


def _require_slots(policy: str, job: Job, servers: int, carbon: FloatArray) -> None:
    needed = math.ceil(job.work / (job.profile.throughput[servers] * job.slot_hours) - 1e-9)
    if len(carbon) < needed:
        raise PlanningError(
            f"{policy}: the job needs {needed} slots at {servers} servers but the carbon data "
            f"has only {len(carbon)} from the start; use a longer trace or an earlier start"
        )


def plan_agnostic(job: Job, carbon: FloatArray, *, deadline_slots: int) -> Schedule:
    """Carbon-agnostic: ``m`` servers from arrival until done."""
    started = time.perf_counter()
    _require_slots("agnostic", job, job.min_servers, carbon)
    run = np.full(len(carbon), job.min_servers, dtype=np.int64)
    return _run_in_order("agnostic", job, carbon, run, deadline_slots, started)


def plan_static(
    job: Job, carbon: FloatArray, *, deadline_slots: int, servers: int | None = None
) -> Schedule:
    """Static scale: ``k`` servers (default ``2·m``, capped by the profile) from arrival."""
    started = time.perf_counter()
    k = servers if servers is not None else min(2 * job.min_servers, job.profile.max_servers)
    job.profile.check_bounds(k, k)
    _require_slots("static", job, k, carbon)
    run = np.full(len(carbon), k, dtype=np.int64)
    return _run_in_order("static", job, carbon, run, deadline_slots, started, (f"k={k}",))


def plan_static_best(job: Job, carbon: FloatArray, *, deadline_slots: int) -> Schedule:
    """Oracle best static scale: the ``k`` in ``m..M`` with least carbon that meets the deadline.

    Raises:
        PlanningError: if no static scale meets the deadline.
    """
    started = time.perf_counter()
    best: Schedule | None = None
    for k in range(job.min_servers, job.max_servers + 1):
        needed = math.ceil(job.work / (job.profile.throughput[k] * job.slot_hours) - 1e-9)
        if needed > min(len(carbon), deadline_slots):
            continue
        run = np.full(needed, k, dtype=np.int64)
        s = _run_in_order("static-best", job, carbon, run, deadline_slots, started, (f"k={k}",))
        if s.deadline_met and (best is None or s.emissions_g < best.emissions_g):
            best = s
    if best is None:
        raise PlanningError(
            f"static-best: no static scale in {job.min_servers}..{job.max_servers} servers "
            f"finishes within {deadline_slots} slots; extend the deadline or raise the limit"
        )
    return realise(
        "static-best",
        job,
        carbon,
        best.servers,
        partial_slot=best.partial_slot,
        fraction=best.last_slot_fraction,
        servers_after=0,
        deadline_slots=deadline_slots,
        solve_ms=(time.perf_counter() - started) * 1e3,
        notes=best.notes,
    )


def plan_suspend_resume(job: Job, carbon: FloatArray) -> Schedule:
    """Deadline-based suspend-resume (Wait Awhile): ``m`` servers in the cleanest slots.

    This is CarbonScaler with ``M = m``.
    """
    return plan_greedy(
        job.with_bounds(job.min_servers, job.min_servers), carbon, policy="suspend-resume"
    )


def plan_threshold(
    job: Job,
    carbon: FloatArray,
    *,
    deadline_slots: int,
    percentile: float = 25.0,
    history: FloatArray | None = None,
) -> Schedule:
    """Threshold suspend-resume: run at ``m`` only while intensity is below a percentile.

    Deadline-unaware: it may finish late or, if the carbon data ends, not at all.

    Args:
        job: the job.
        carbon: intensity per slot from the start, possibly past the deadline.
        deadline_slots: the deadline, only for reporting.
        percentile: threshold percentile of ``history`` (0-100).
        history: recent intensity the percentile is taken over; defaults to the forecast
            up to the deadline.
    """
    started = time.perf_counter()
    if not 0.0 <= percentile <= 100.0:
        raise PlanningError(f"threshold percentile must be within 0..100, got {percentile}")
    window = carbon[:deadline_slots] if history is None else np.asarray(history, dtype=np.float64)
    if len(window) == 0:
        raise PlanningError("threshold suspend-resume needs a non-empty intensity history")
    threshold = float(np.percentile(window, percentile))
    run = np.where(carbon <= threshold, job.min_servers, 0).astype(np.int64)
    note = f"threshold={threshold:.4g} gCO2eq/kWh (p{percentile:g})"
    return _run_in_order(
        "suspend-resume-threshold", job, carbon, run, deadline_slots, started, (note,)
    )
