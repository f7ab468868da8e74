"""One entry point for every policy, and re-planning from current progress.

The policy names (:class:`Policy`, :data:`POLICIES`, ...) live in the light
:mod:`carbonscaler.planner.names` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from carbonscaler.planner.baselines import (
    plan_agnostic,
    plan_static,
    plan_static_best,
    plan_suspend_resume,
    plan_threshold,
)
from carbonscaler.planner.exact import plan_exact
from carbonscaler.planner.greedy import plan_greedy
from carbonscaler.planner.model import FloatArray, Job, PlanningError, Schedule
from carbonscaler.planner.names import (
    DEADLINE_AWARE,
    POLICIES,
    RUNNABLE_POLICIES,
    RUNNABLE_POLICY_NAMES,
    Policy,
)

__all__ = [
    "DEADLINE_AWARE",
    "POLICIES",
    "RUNNABLE_POLICIES",
    "RUNNABLE_POLICY_NAMES",
    "Policy",
    "compare",
    "plan",
    "replan",
    "savings_pct",
]


def plan(
    policy: str,
    job: Job,
    carbon: Sequence[float] | FloatArray,
    *,
    deadline_slots: int | None = None,
    static_servers: int | None = None,
    threshold_percentile: float = 25.0,
    history: Sequence[float] | FloatArray | None = None,
    time_limit_s: float = 60.0,
) -> Schedule:
    """Plan ``job`` with ``policy`` over a carbon forecast.

    Args:
        policy: one of :data:`POLICIES`.
        job: the job (profile, work, server bounds, slot length).
        carbon: intensity per slot (gCO2eq/kWh) from the planning start. Deadline-aware
            policies use the first ``deadline_slots`` values; the others may run past it.
        deadline_slots: slots until the deadline; defaults to ``len(carbon)``.
        static_servers: ``k`` for the ``static`` policy (default ``2·m``).
        threshold_percentile: percentile for ``suspend-resume-threshold``.
        history: recent intensity for the threshold percentile (default: the forecast).
        time_limit_s: solver time limit for ``exact``.

    Raises:
        PlanningError: unknown policy, bad forecast, or (as InfeasibleError) a deadline that
            cannot be met.
    """
    values = np.asarray(carbon, dtype=np.float64)
    if values.ndim != 1:
        raise PlanningError("the carbon forecast must be a 1-D sequence of intensities")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise PlanningError("carbon intensities must be finite and non-negative (gCO2eq/kWh)")
    deadline = len(values) if deadline_slots is None else int(deadline_slots)
    if deadline > len(values):
        raise PlanningError(
            f"the deadline is {deadline} slots away but the forecast has only {len(values)}; "
            "give a forecast that reaches the deadline"
        )
    window = values[:deadline]
    if policy == "carbonscaler":
        return plan_greedy(job, window)
    if policy == "exact":
        return plan_exact(job, window, time_limit_s=time_limit_s)
    if policy == "suspend-resume":
        return plan_suspend_resume(job, window)
    if policy == "static-best":
        return plan_static_best(job, values, deadline_slots=deadline)
    if policy == "agnostic":
        return plan_agnostic(job, values, deadline_slots=deadline)
    if policy == "static":
        return plan_static(job, values, deadline_slots=deadline, servers=static_servers)
    if policy == "suspend-resume-threshold":
        hist = None if history is None else np.asarray(history, dtype=np.float64)
        return plan_threshold(
            job, values, deadline_slots=deadline, percentile=threshold_percentile, history=hist
        )
    raise PlanningError(f"unknown policy {policy!r}; choose one of: {', '.join(POLICIES)}")


def replan(
    policy: str,
    job: Job,
    carbon: Sequence[float] | FloatArray,
    work_done: float,
    **options: object,
) -> Schedule:
    """Plan the rest of a job from its true progress.

    The same call as :func:`plan`, made at a later slot with the forecast from that slot on
    and the work still to do.

    Raises:
        PlanningError: if ``work_done`` is negative or already covers the job.
    """
    if work_done < 0:
        raise PlanningError(f"work done cannot be negative, got {work_done}")
    remaining = job.work - work_done
    if remaining <= job.work * 1e-12:
        raise PlanningError("the job's work is already done; nothing to re-plan")
    return plan(policy, job.with_work(remaining), carbon, **options)  # type: ignore[arg-type]


def compare(
    job: Job,
    carbon: Sequence[float] | FloatArray,
    *,
    deadline_slots: int | None = None,
    policies: Sequence[str] = POLICIES,
    **options: object,
) -> dict[str, Schedule | PlanningError]:
    """Plan the same job with several policies; a policy that cannot plan maps to its error."""
    results: dict[str, Schedule | PlanningError] = {}
    for name in policies:
        try:
            results[name] = plan(
                name,
                job,
                carbon,
                deadline_slots=deadline_slots,
                **options,  # type: ignore[arg-type]
            )
        except PlanningError as exc:
            results[name] = exc
    return results


def savings_pct(emissions_g: float, baseline_g: float) -> float:
    """Percent less carbon than ``baseline_g`` (negative when worse); NaN without a baseline."""
    if baseline_g <= 0:
        return float("nan")
    return 100.0 * (1.0 - emissions_g / baseline_g)
