"""Sweeps: every policy × trace × slack × server bounds, over many start times.

A sweep returns two tables: one row per simulated run, and one row per scenario and policy with
the statistics a user decides on (mean, median, 5th/95th percentile emissions, savings against
carbon-agnostic and suspend-resume, completion, compute-hour change, rescales, deadline misses)
and each policy's rank in its scenario: those that meet every deadline first
(:func:`rank_policies`). The two baselines are always simulated, requested or not, because
every saving is measured against them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from carbonscaler.advisor.executor import Conditions, Outcome, simulate_policy
from carbonscaler.decision import deciding_policy
from carbonscaler.planner.model import FloatArray, IntArray, Job, PlanningError
from carbonscaler.planner.policies import POLICIES, Policy
from carbonscaler.profile import ScalingProfile
from carbonscaler.trace import CarbonTrace

__all__ = [
    "MAX_SWEEP_CELLS",
    "Scenario",
    "SweepResult",
    "SweepSpec",
    "default_jobs",
    "rank_policies",
    "resolve_starts",
    "run_sweep",
]

MAX_SWEEP_CELLS = 3_000_000
"""Most (start, slot) cells one scenario may simulate (about 350 bytes each at the peak):
bounds the memory a command line can make the advisor use."""

BASELINES = ("agnostic", "suspend-resume")
ProgressCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Scenario:
    """One combination of trace, slack and server bounds."""

    trace: CarbonTrace
    slack: float
    min_servers: int
    max_servers: int

    @property
    def label(self) -> str:
        return (
            f"{self.trace.zone} slack {self.slack:g} {self.min_servers}..{self.max_servers} servers"
        )


@dataclass(frozen=True)
class SweepSpec:
    """What to simulate.

    Args:
        traces: carbon traces (any step; resampled to ``slot_minutes``).
        profile: the job's scaling profile.
        length_hours: hours the job takes at its minimum server count.
        slacks: deadline = slack × length, one scenario per value (>= 1).
        min_servers: ``m`` values; max_servers: ``M`` values (pairs with m > M are skipped).
        policies: policies to report (default: all).
        starts: ``"all"`` (every slot with room for the deadline), an int N (N evenly spaced
            starts), or a list of ISO 8601 times.
        conditions: forecast, profile error, overhead and re-planning settings.
        slot_minutes: slot length.
        price_per_server_hour: optional price to report compute cost.
    """

    traces: Sequence[CarbonTrace]
    profile: ScalingProfile
    length_hours: float
    slacks: Sequence[float] = (1.5,)
    min_servers: Sequence[int] = (1,)
    max_servers: Sequence[int] = (8,)
    policies: Sequence[str] = POLICIES
    starts: str | int | Sequence[str] = "all"
    conditions: Conditions = field(default_factory=Conditions)
    slot_minutes: int = 60
    price_per_server_hour: float | None = None

    def __post_init__(self) -> None:
        if not self.traces:
            raise PlanningError("give at least one carbon trace to simulate on")
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown:
            raise PlanningError(f"unknown policies {unknown}; choose from {', '.join(POLICIES)}")
        if any(not (math.isfinite(s) and s >= 1.0) for s in self.slacks):
            raise PlanningError(
                f"slack factors must be >= 1 (deadline = slack × length), got {list(self.slacks)}"
            )
        if not (math.isfinite(self.length_hours) and self.length_hours > 0):
            raise PlanningError(f"job length must be positive, got {self.length_hours} h")

    def job(self, scenario: Scenario) -> Job:
        """The job ``scenario`` simulates: this spec's profile and length at its bounds.

        Raises:
            ProfileError: if the bounds do not fit the profile.
        """
        return Job.from_length(
            self.profile,
            self.length_hours,
            scenario.min_servers,
            scenario.max_servers,
            self.slot_minutes / 60.0,
        )

    def deadline_slots(self, scenario: Scenario) -> int:
        """Slots from arrival to ``scenario``'s deadline (slack × length, whole slots)."""
        return math.floor(scenario.slack * self.length_hours / (self.slot_minutes / 60.0) + 1e-9)

    def scenarios(self) -> list[Scenario]:
        return [
            Scenario(trace, slack, m, top)
            for trace in self.traces
            for slack in self.slacks
            for m in self.min_servers
            for top in self.max_servers
            if m <= top
        ]


@dataclass(frozen=True)
class SweepResult:
    """The runs (one row per start × scenario × policy) and their summary."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    spec: SweepSpec


def resolve_starts(
    trace: CarbonTrace, starts: str | int | Sequence[str], deadline_slots: int
) -> np.ndarray:
    """Start slots in ``trace`` that leave room for the deadline.

    Raises:
        PlanningError: if no start fits or a given time is outside the trace.
    """
    last = len(trace.series) - deadline_slots
    if last < 0:
        raise PlanningError(
            f"trace {trace.zone} has {len(trace.series)} slots, fewer than the deadline's "
            f"{deadline_slots}; use a longer trace or a shorter job/slack"
        )
    if isinstance(starts, str) and starts == "all":
        return np.arange(last + 1)
    if isinstance(starts, int):
        if starts <= 0:
            raise PlanningError(f"the number of starts must be positive, got {starts}")
        return np.unique(np.linspace(0, last, min(starts, last + 1)).round().astype(np.int64))
    indices = []
    for text in starts:
        index = trace.index_of(text)
        if index > last:
            raise PlanningError(
                f"start {text} leaves only {len(trace.series) - index} slots of trace "
                f"{trace.zone}; the deadline needs {deadline_slots}"
            )
        indices.append(index)
    return np.array(sorted(set(indices)), dtype=np.int64)


@dataclass(frozen=True)
class _Savings:
    """Per run, percent against the scenario's baselines at the same start."""

    vs_agnostic: FloatArray
    server_hours_change: FloatArray
    vs_suspend_resume: FloatArray

    @classmethod
    def of(cls, outcome: Outcome, agnostic: Outcome, suspend_resume: Outcome) -> _Savings:
        with np.errstate(divide="ignore", invalid="ignore"):
            return cls(
                100.0 * (1.0 - outcome.emissions_g / agnostic.emissions_g),
                100.0 * (outcome.server_hours / agnostic.server_hours - 1),
                100.0 * (1.0 - outcome.emissions_g / suspend_resume.emissions_g),
            )


def _frame(
    outcome: Outcome,
    savings: _Savings,
    scenario: Scenario,
    policy: str,
    starts: np.ndarray,
    trace: CarbonTrace,
    price: float | None,
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trace": trace.source,
            "zone": trace.zone,
            "slack": scenario.slack,
            "min_servers": scenario.min_servers,
            "max_servers": scenario.max_servers,
            "policy": policy,
            "start": trace.series.index[starts],
            "emissions_g": outcome.emissions_g,
            "energy_kwh": outcome.energy_kwh,
            "completion_hours": outcome.completion_hours,
            "deadline_met": outcome.deadline_met,
            "completed": ~np.isnan(outcome.completion_hours),
            "rescales": outcome.rescales,
            "replans": outcome.replans,
            "server_hours": outcome.server_hours,
            **({} if price is None else {"cost": outcome.server_hours * price}),
            "savings_vs_agnostic_pct": savings.vs_agnostic,
            "server_hours_change_pct": savings.server_hours_change,
            "savings_vs_suspend_resume_pct": savings.vs_suspend_resume,
        }
    )


@dataclass(frozen=True)
class _Task:
    """One simulation a sweep needs: a scenario's deciding policy over all its starts."""

    scenario: int
    policy: str
    job: Job
    trace: FloatArray
    starts: IntArray
    deadline_slots: int
    conditions: Conditions


def _simulate(task: _Task) -> Outcome:
    return simulate_policy(
        task.policy, task.job, task.trace, task.starts, task.deadline_slots, task.conditions
    )


def default_jobs() -> int:
    """Every core this process may use (``--jobs``' default)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_sweep(
    spec: SweepSpec, progress: ProgressCallback | None = None, *, jobs: int = 1
) -> SweepResult:
    """Simulate every scenario and policy of ``spec``.

    Args:
        spec: the sweep.
        progress: called as ``progress(done, total, label)`` after each policy run (in the
            order they finish).
        jobs: threads for the independent (scenario, policy) simulations; 1 runs them one
            after the other. The numbers are the same either way (only the order of the
            progress calls differs).

    Raises:
        PlanningError: on infeasible scenarios (e.g. a trace shorter than the deadline).
    """
    if jobs < 1:
        raise PlanningError(f"--jobs must be at least 1, not {jobs}")
    scenarios = spec.scenarios()
    if not scenarios:
        raise PlanningError("no scenario has min servers <= max servers; check --min/--max")
    policies = list(dict.fromkeys([*BASELINES, *spec.policies]))
    total = len(scenarios) * len(policies)
    # Every scenario is checked before anything is simulated, so a bad one fails at once.
    prepared: list[tuple[Scenario, CarbonTrace, IntArray]] = []
    tasks: list[_Task] = []
    deciders: list[dict[str, str]] = []  # per scenario: policy -> the policy simulated for it
    served: dict[tuple[int, str], list[str]] = {}  # simulation -> the policies it reports
    for number, scenario in enumerate(scenarios):
        trace = scenario.trace.resample(spec.slot_minutes)
        job = spec.job(scenario)
        deadline_slots = spec.deadline_slots(scenario)
        starts = resolve_starts(trace, spec.starts, deadline_slots)
        cells = len(starts) * deadline_slots
        if cells > MAX_SWEEP_CELLS:
            fit = max(1, MAX_SWEEP_CELLS // max(deadline_slots, 1))
            raise PlanningError(
                f"{scenario.label}: {len(starts):,} starts x {deadline_slots:,} slots to the"
                f" deadline is {cells:,} simulated slots, more than the {MAX_SWEEP_CELLS:,} one"
                f" sweep may hold (about 1 GB); use --starts {fit} (evenly spaced) or longer"
                " --slot-minutes"
            )
        prepared.append((scenario, trace, starts))
        decides: dict[str, str] = {}
        for policy in policies:
            # Policies that decide alike for this job (exact on a concave ladder) share a run.
            parsed = Policy.parse(policy)
            twin = str(deciding_policy(parsed, job)) if parsed.runnable else policy
            decides[policy] = twin
            if (number, twin) not in served:
                served[number, twin] = []
                values = np.asarray(trace.values)
                tasks.append(
                    _Task(number, twin, job, values, starts, deadline_slots, spec.conditions)
                )
            served[number, twin].append(policy)
        deciders.append(decides)

    count = 0

    def finished(task: _Task) -> None:
        nonlocal count
        for policy in served[task.scenario, task.policy]:
            count += 1
            if progress is not None:
                progress(count, total, f"{scenarios[task.scenario].label}: {policy}")

    outcomes = _run_tasks(tasks, jobs, finished)
    # Report the policies asked for, in that order, scenario by scenario; every saving is
    # against the baselines of the same scenario and start (the runs share their starts).
    rank = {name: i for i, name in enumerate(spec.policies)}
    reported = sorted(dict.fromkeys(spec.policies), key=rank.__getitem__)
    cv = {t.source: t.stats().cv for t in spec.traces}
    price = spec.price_per_server_hour
    frames: list[pd.DataFrame] = []
    rows: list[dict[str, Any]] = []
    emissions: list[np.ndarray] = []
    for number, (scenario, trace, starts) in enumerate(prepared):
        ran = {policy: outcomes[number, deciders[number][policy]] for policy in policies}
        for policy in reported:
            outcome = ran[policy]
            savings = _Savings.of(outcome, ran["agnostic"], ran["suspend-resume"])
            frames.append(_frame(outcome, savings, scenario, policy, starts, trace, price))
            rows.append(_summary_row(outcome, savings, scenario, policy, trace, cv, price))
            emissions.append(outcome.emissions_g)
    if not frames:  # nothing asked for: the tables, empty
        scenario, trace, starts = prepared[0]
        none = outcomes[0, deciders[0]["agnostic"]]
        empty = _frame(none, _Savings.of(none, none, none), scenario, "", starts, trace, price)
        frames.append(empty.iloc[:0])
    runs = pd.concat(frames, ignore_index=True)
    return SweepResult(runs, _summary(rows, emissions), spec)


def _run_tasks(
    tasks: list[_Task], jobs: int, finished: Callable[[_Task], None]
) -> dict[tuple[int, str], Outcome]:
    """Every task's outcome, here one by one or on ``jobs`` threads.

    Threads, not processes: the compiled loops (the batch greedy, the world) release the GIL
    and numpy does in its large operations, so threads overlap well, and they start at once,
    share the trace and need nothing pickled. Measured on 2 cores they were the fastest: well
    ahead of a forkserver process pool, level with or ahead of fork (see docs/advisor.md).
    """
    outcomes: dict[tuple[int, str], Outcome] = {}
    workers = min(jobs, len(tasks))
    if workers <= 1:
        for task in tasks:
            outcomes[task.scenario, task.policy] = _simulate(task)
            finished(task)
        return outcomes
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sweep")
    try:
        futures = {pool.submit(_simulate, task): task for task in tasks}
        order = {future: i for i, future in enumerate(futures)}
        for future in as_completed(futures):
            if future.exception() is not None:
                raise _first_error(order)
            task = futures[future]
            outcomes[task.scenario, task.policy] = future.result()
            finished(task)
    finally:
        # On an error or Ctrl-C the waiting tasks are dropped; a running one ends its run.
        pool.shutdown(wait=False, cancel_futures=True)
    return outcomes


def _first_error(order: dict[Future[Outcome], int]) -> BaseException:
    """The error a serial sweep would have raised: that of the first failed task in sweep
    order. Tasks start in order, so once those not yet started are cancelled, every task
    before the first failure among those that ran has run."""
    for future in order:
        future.cancel()
    ran = [future for future in order if not future.cancelled()]
    wait(ran)
    failed = min((f for f in ran if f.exception() is not None), key=order.__getitem__)
    error = failed.exception()
    assert error is not None
    return error


def _mean(values: np.ndarray) -> float:
    """The mean of the values that are not NaN (NaN if none), summed as pandas'
    ``Series.mean`` sums them."""
    count = len(values)
    if values.dtype.kind == "f":
        missing = np.isnan(values)
        if missing.any():
            values = np.where(missing, 0.0, values)
            count -= int(missing.sum())
    return float(values.sum(dtype=np.float64) / count) if count else float("nan")


def _median(values: np.ndarray) -> float:
    """The median of the values that are not NaN (NaN if none): pandas' ``Series.median``."""
    present = values[~np.isnan(values)]
    return float(np.median(present)) if len(present) else float("nan")


def _summary_row(
    outcome: Outcome,
    savings: _Savings,
    scenario: Scenario,
    policy: str,
    trace: CarbonTrace,
    cv: dict[str, float],
    price: float | None,
) -> dict[str, Any]:
    """One scenario's statistics of one policy (a row of the summary)."""
    emissions = outcome.emissions_g
    runs = len(emissions)
    misses = int((~outcome.deadline_met).sum())
    row: dict[str, Any] = {
        "trace": trace.source,
        "zone": trace.zone,
        "slack": float(scenario.slack),
        "min_servers": int(scenario.min_servers),
        "max_servers": int(scenario.max_servers),
        "policy": policy,
        "runs": runs,
        "mean_emissions_g": float(np.mean(emissions)),
        "median_emissions_g": float(np.median(emissions)),
        "p5_emissions_g": float(np.percentile(emissions, 5)),
        "p95_emissions_g": float(np.percentile(emissions, 95)),
        "mean_savings_vs_agnostic_pct": _mean(savings.vs_agnostic),
        "median_savings_vs_agnostic_pct": _median(savings.vs_agnostic),
        "mean_savings_vs_suspend_resume_pct": _mean(savings.vs_suspend_resume),
        "deadline_misses": misses,
        "deadline_miss_pct": 100.0 * misses / runs,
        "mean_completion_hours": _mean(outcome.completion_hours),
        "mean_server_hours": _mean(outcome.server_hours),
        "server_hours_change_pct": _mean(savings.server_hours_change),
        "mean_rescales": _mean(outcome.rescales),
        "mean_replans": _mean(outcome.replans),
        "not_completed": int(np.isnan(outcome.completion_hours).sum()),
        "trace_cv": cv.get(trace.source, float("nan")),
    }
    if price is not None:
        row["mean_cost"] = _mean(outcome.server_hours * price)
    return row


def _summary(rows: list[dict[str, Any]], emissions: list[np.ndarray]) -> pd.DataFrame:
    """The summary table of :func:`_summary_row` rows, each with its ``rank`` in its scenario
    (see :func:`rank_policies`) and the policy whose runs it repeats (``same_as``)."""
    summary = pd.DataFrame(rows)
    if summary.empty:
        return summary
    summary.insert(list(summary.columns).index("policy") + 1, "rank", rank_policies(summary))
    summary["same_as"] = _same_as(summary, emissions)
    return summary


SCENARIO_KEYS = ["trace", "zone", "slack", "min_servers", "max_servers"]


def _scenario_numbers(summary: pd.DataFrame) -> np.ndarray:
    """Each row's scenario, numbered in order of first appearance (as
    ``groupby(SCENARIO_KEYS, sort=False).ngroup()`` numbers them, without a groupby's cost)."""
    numbers: dict[tuple[Any, ...], int] = {}
    keys = zip(*(summary[key].tolist() for key in SCENARIO_KEYS), strict=True)
    return np.array([numbers.setdefault(key, len(numbers)) for key in keys], dtype=np.int64)


def rank_policies(summary: pd.DataFrame) -> pd.Series:
    """Each policy's rank within its scenario (1 = best).

    A policy that misses even one deadline ranks below every policy that meets them all:
    policies that meet every deadline come first, by mean saving against carbon-agnostic
    (highest first); then those that miss some, fewest misses first, then by saving. Equal
    results share a rank (``exact`` and ``carbonscaler`` on a concave profile).
    """
    scenario = _scenario_numbers(summary)
    misses = summary["deadline_miss_pct"].to_numpy(dtype=float)
    lost = -summary["mean_savings_vs_agnostic_pct"].to_numpy(dtype=float)
    lost[np.isnan(lost)] = np.inf
    ranks = np.zeros(len(summary), dtype=np.int64)
    for group in np.unique(scenario):
        rows = np.flatnonzero(scenario == group)
        ordered = rows[np.lexsort((lost[rows], misses[rows]))]  # stable: ties keep their order
        rank, previous = 0, (np.nan, np.nan)
        for position, row in enumerate(ordered, start=1):
            current = (misses[row], lost[row])
            if current != previous:
                rank, previous = position, current
            ranks[row] = rank
    return pd.Series(ranks, index=summary.index)


def _same_as(summary: pd.DataFrame, emissions: list[np.ndarray]) -> pd.Series:
    """For each policy, the first policy listed before it in its scenario whose every run
    emitted, finished and rescaled alike (``exact`` = ``carbonscaler`` on a concave ladder),
    or ``None``."""
    same: list[str | None] = [None] * len(summary)
    scenario = _scenario_numbers(summary)
    stats = summary[["deadline_misses", "mean_completion_hours", "mean_rescales"]].to_numpy()
    for i in range(len(summary)):
        for j in range(i):
            if (
                scenario[j] == scenario[i]
                and same[j] is None
                and np.array_equal(emissions[i], emissions[j])
                and np.array_equal(stats[i], stats[j], equal_nan=True)
            ):
                same[i] = str(summary["policy"].iloc[j])
                break
    return pd.Series(same, index=summary.index, dtype=object)
