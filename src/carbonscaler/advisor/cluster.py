"""CarbonAdvisor for shared clusters: a stream of jobs over a real trace, under a capacity.

:func:`simulate_cluster` runs one policy of :mod:`carbonscaler.cluster` slot by slot: the
cluster core admits, plans and grants; the world is the advisor's own
(:func:`carbonscaler.advisor._world.advance`: each job's progress at its actual throughput —
the profile's times a per-job error — the work each rescale loses, and the energy and carbon
charged through the accounting's ``charge``). Forecasts are issued every slot from the trace by
the conditions' forecast model, as for single jobs. :func:`compare_cluster_policies` runs
several policies on the same stream and :func:`cluster_summary` tabulates them: emissions,
savings against carbon-agnostic first come first served, deadline misses, turnaround and
utilisation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from carbonscaler.advisor.executor import Conditions
from carbonscaler.cluster import CLUSTER_POLICIES, JOINT, ClusterCore
from carbonscaler.decision import Progress
from carbonscaler.forecast import issue_forecasts
from carbonscaler.planner.cluster import ClusterJob
from carbonscaler.planner.model import FloatArray, IntArray, PlanningError
from carbonscaler.wording import grams, saving

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ClusterJobOutcome",
    "ClusterOutcome",
    "cluster_figure",
    "cluster_headline",
    "cluster_summary",
    "compare_cluster_policies",
    "simulate_cluster",
    "write_cluster_report",
]


@dataclass(frozen=True)
class ClusterJobOutcome:
    """What one job of the stream did.

    Attributes:
        name: the job's name.
        arrival_slot: its arrival, in slots from the trace's first slot given.
        deadline_slot: its deadline, likewise.
        emissions_g: gCO2eq charged to it.
        energy_kwh: energy it used.
        completion_hours: hours from arrival until its work was done (NaN if never).
        deadline_met: whether it finished by its deadline.
        rescales: changes of its server count after it first started.
        replans: plans made after its first.
        server_hours: servers × hours it held.
    """

    name: str
    arrival_slot: int
    deadline_slot: int
    emissions_g: float
    energy_kwh: float
    completion_hours: float
    deadline_met: bool
    rescales: int
    replans: int
    server_hours: float


@dataclass(frozen=True, eq=False)
class ClusterOutcome:
    """One policy's run of a job stream on a shared cluster.

    Attributes:
        policy: the policy.
        jobs: one outcome per job, in the input order.
        servers: ``(J, slots)`` mean servers of each job per slot of the trace.
        capacity: servers available per slot of the trace.
        slot_hours: slot length.
    """

    policy: str
    jobs: tuple[ClusterJobOutcome, ...]
    servers: FloatArray
    capacity: IntArray
    slot_hours: float

    @property
    def emissions_g(self) -> float:
        return float(sum(j.emissions_g for j in self.jobs))

    @property
    def energy_kwh(self) -> float:
        return float(sum(j.energy_kwh for j in self.jobs))

    @property
    def deadline_misses(self) -> int:
        return sum(not j.deadline_met for j in self.jobs)

    @property
    def servers_used(self) -> FloatArray:
        """Mean servers held per slot, all jobs together."""
        return np.asarray(self.servers.sum(axis=0))

    @property
    def span(self) -> slice:
        """The slots from the first arrival to the last slot any job ran in."""
        used = np.flatnonzero(self.servers_used > 1e-12)
        first = min(j.arrival_slot for j in self.jobs)
        return slice(first, int(used[-1]) + 1 if len(used) else first)

    @property
    def utilisation(self) -> float:
        """Share of the capacity used over :attr:`span` (0 when nothing ran)."""
        span = self.span
        available = float(self.capacity[span].sum())
        return float(self.servers_used[span].sum()) / available if available else 0.0

    @property
    def mean_completion_hours(self) -> float:
        """Mean turnaround, arrival to completion, of the jobs that finished (NaN if none)."""
        done = [j.completion_hours for j in self.jobs if math.isfinite(j.completion_hours)]
        return float(np.mean(done)) if done else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: totals, and per job its outcome and servers per slot of :attr:`span`."""
        span = self.span
        return {
            "policy": self.policy,
            "emissions_g": self.emissions_g,
            "energy_kwh": self.energy_kwh,
            "deadline_misses": self.deadline_misses,
            "mean_completion_hours": _finite_or_none(self.mean_completion_hours),
            "utilisation": self.utilisation,
            "first_slot": span.start,
            "capacity": [int(k) for k in self.capacity[span]],
            "servers_used": [round(float(s), 6) for s in self.servers_used[span]],
            "jobs": [
                {
                    "name": j.name,
                    "arrival_hours": j.arrival_slot * self.slot_hours,
                    "deadline_hours": j.deadline_slot * self.slot_hours,
                    "emissions_g": j.emissions_g,
                    "energy_kwh": j.energy_kwh,
                    "completion_hours": _finite_or_none(j.completion_hours),
                    "deadline_met": j.deadline_met,
                    "rescales": j.rescales,
                    "replans": j.replans,
                    "server_hours": j.server_hours,
                    "servers": [round(float(s), 6) for s in self.servers[i, span]],
                }
                for i, j in enumerate(self.jobs)
            ],
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def simulate_cluster(
    jobs: Sequence[ClusterJob],
    trace: FloatArray,
    capacity: int | Sequence[int] | IntArray,
    policy: str = JOINT,
    cond: Conditions = Conditions(),
) -> ClusterOutcome:
    """Run a stream of jobs on a shared cluster under ``policy``, slot by slot.

    Args:
        jobs: the jobs, with arrival and deadline slots counted from ``trace[0]`` and one
            slot length.
        trace: actual intensity per slot (gCO2eq/kWh), at the jobs' slot length; it must
            reach the latest deadline. Late jobs may run on past it, up to its end.
        capacity: servers per slot from ``trace[0]`` (the last value holds after).
        policy: one of :data:`carbonscaler.cluster.CLUSTER_POLICIES`.
        cond: forecast model, profile error, rescale overhead, re-plan threshold and safety
            margin (as for single jobs; the fixed-rule settings do not apply).

    Raises:
        ValueError: if there are no jobs or the trace ends before a deadline.
        PlanningError: for an unknown policy or inconsistent jobs (see
            :class:`~carbonscaler.cluster.ClusterCore`).
    """
    from carbonscaler.advisor import _world  # numba: imported when first needed

    if not jobs:
        raise ValueError("a cluster simulation needs at least one job")
    trace = np.asarray(trace, dtype=np.float64)
    latest = max(j.deadline_slot for j in jobs)
    if latest > len(trace):
        raise ValueError(
            f"the trace has {len(trace)} slots but a deadline falls at slot {latest}; use a "
            "longer trace or an earlier start"
        )
    core = ClusterCore(
        jobs,
        capacity,
        policy=policy,
        rules=cond.rules("carbonscaler"),
        overhead_h=cond.rescale_overhead_s / 3600.0,
    )
    count, slots = len(jobs), len(trace)
    dt = jobs[0].job.slot_hours
    overhead_h = core.overhead_h
    rng = np.random.default_rng([cond.seed, 2])
    rate_factor = 1.0 + (
        rng.uniform(-cond.profile_error, cond.profile_error, count)
        if cond.profile_error > 0
        else np.zeros(count)
    )
    done, nominal = np.zeros(count), np.zeros(count)
    previous = np.zeros(count, dtype=np.int64)
    started = np.zeros(count, dtype=bool)
    completion = np.full(count, np.nan)
    rescales = np.zeros(count, dtype=np.int64)
    energy, emissions, server_hours = np.zeros(count), np.zeros(count), np.zeros(count)
    servers = np.zeros((count, slots))
    status = np.empty(1, dtype=np.int8)
    index = {j.name: i for i, j in enumerate(jobs)}
    arrived: set[str] = set()

    for t in range(min(j.arrival_slot for j in jobs), slots):
        if core.done:
            break
        arrived.update(j.name for j in jobs if j.arrival_slot <= t)
        horizon = max(1, max(jobs[index[n]].deadline_slot for n in arrived) - t)
        horizon = min(horizon, slots - t)
        forecast = issue_forecasts(cond.forecast, trace, [t], horizon, dt)[0]
        progress = {
            name: Progress(float(done[i]), float(nominal[i]), int(previous[i]), bool(started[i]))
            for name in arrived
            for i in (index[name],)
        }
        grants = core.decide(t, forecast, progress)
        for name, grant in grants.items():
            i = index[name]
            job = jobs[i]
            r = t - job.arrival_slot
            begin = np.array([[r * dt, (r + grant.fraction) * dt]])
            width = np.array([[grant.fraction * dt, (1.0 - grant.fraction) * dt]])
            _world.advance(
                np.array([i]),
                t,
                np.array([[grant.first, grant.then]], dtype=np.int64),
                begin,
                width,
                np.full((1, 2), trace[t]),
                job.job.profile.throughput,
                job.job.profile.power_w,
                rate_factor,
                overhead_h,
                float(job.job.work),
                dt,
                done,
                nominal,
                previous,
                started,
                completion,
                rescales,
                energy,
                emissions,
                server_hours,
                servers,
                status,
            )

    outcomes = tuple(
        ClusterJobOutcome(
            name=j.name,
            arrival_slot=j.arrival_slot,
            deadline_slot=j.deadline_slot,
            emissions_g=float(emissions[i]),
            energy_kwh=float(energy[i]),
            completion_hours=float(completion[i]),
            deadline_met=bool(completion[i] <= j.window_slots * dt + 1e-9),
            rescales=int(rescales[i]),
            replans=core.replans(j.name) if j.name in arrived else 0,
            server_hours=float(server_hours[i]),
        )
        for i, j in enumerate(jobs)
    )
    cap = np.array([core.capacity_at(t) for t in range(slots)], dtype=np.int64)
    return ClusterOutcome(core.policy, outcomes, servers, cap, dt)


def compare_cluster_policies(
    jobs: Sequence[ClusterJob],
    trace: FloatArray,
    capacity: int | Sequence[int] | IntArray,
    policies: Sequence[str] = ("agnostic", "suspend-resume", "carbonscaler", JOINT),
    cond: Conditions = Conditions(),
) -> list[ClusterOutcome]:
    """:func:`simulate_cluster` for each policy on the same stream, trace and conditions.

    Raises:
        ValueError, PlanningError: as :func:`simulate_cluster`; an unknown policy before any
            simulation runs.
    """
    unknown = [p for p in policies if p != JOINT and p not in CLUSTER_POLICIES]
    if unknown:
        raise PlanningError(
            f"unknown cluster policies {unknown}; use some of {', '.join(CLUSTER_POLICIES)}"
        )
    return [simulate_cluster(jobs, trace, capacity, p, cond) for p in policies]


def cluster_summary(outcomes: Sequence[ClusterOutcome]) -> list[dict[str, Any]]:
    """One row per policy: emissions, savings against carbon-agnostic first come first served
    (when it is among the outcomes), deadline misses, mean turnaround and utilisation —
    deadline-meeting policies first, then by emissions."""
    agnostic = next((o for o in outcomes if o.policy == "agnostic"), None)
    rows = []
    for o in outcomes:
        saved = (
            100.0 * (1.0 - o.emissions_g / agnostic.emissions_g)
            if agnostic is not None and agnostic.emissions_g > 0
            else None
        )
        rows.append(
            {
                "policy": o.policy,
                "emissions_g": o.emissions_g,
                "energy_kwh": o.energy_kwh,
                "savings_vs_agnostic_pct": saved,
                "deadline_misses": o.deadline_misses,
                "jobs": len(o.jobs),
                "mean_completion_hours": _finite_or_none(o.mean_completion_hours),
                "utilisation": o.utilisation,
            }
        )
    return sorted(rows, key=lambda r: (r["deadline_misses"] > 0, r["emissions_g"]))


def cluster_headline(rows: Sequence[Mapping[str, Any]], jobs: int) -> str:
    """One sentence for :func:`cluster_summary`'s rows: the best policy that meets every
    deadline and what it saved, and how many deadlines the others miss."""
    best = next((r for r in rows if r["deadline_misses"] == 0), None)
    missing = [r for r in rows if r["deadline_misses"]]
    parts = []
    if best is None:
        parts.append("No policy meets every deadline.")
    else:
        saved = best["savings_vs_agnostic_pct"]
        parts.append(
            f"Best policy that meets every deadline: {best['policy']}"
            + ("" if saved is None else f", which {saving(saved)} against carbon-agnostic")
            + "."
        )
    for row in missing:
        parts.append(f"{row['policy']} misses {row['deadline_misses']} of {jobs} deadlines.")
    return " ".join(parts)


def cluster_figure(outcomes: Sequence[ClusterOutcome], carbon: FloatArray) -> Figure:
    """Servers held per slot under each policy (one panel each, the capacity dashed) below the
    carbon intensity, over the slots from the first arrival to the last work done."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    first = min(o.span.start for o in outcomes)
    last = max(o.span.stop for o in outcomes)
    hours = (np.arange(first, last) - first) * outcomes[0].slot_hours
    fig, axes = plt.subplots(
        len(outcomes) + 1, 1, figsize=(10, 1.9 * (len(outcomes) + 1)), sharex=True
    )
    top = axes[0]
    top.step(hours, carbon[first:last], where="post", color="#333333", label="carbon intensity")
    top.set_ylabel("gCO2eq/kWh")
    top.legend(loc="upper right", fontsize=8)
    for ax, outcome in zip(axes[1:], outcomes, strict=True):
        ax.step(
            hours,
            outcome.servers_used[first:last],
            where="post",
            color="#4c9a2a",
            label=f"{outcome.policy}: servers held",
        )
        ax.step(
            hours,
            outcome.capacity[first:last],
            where="post",
            color="#b22222",
            ls="--",
            lw=1,
            label="capacity",
        )
        ax.set_ylabel("servers")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("hours since the first arrival")
    fig.tight_layout()
    return fig


def write_cluster_report(
    outcomes: Sequence[ClusterOutcome],
    carbon: FloatArray,
    path: str | os.PathLike[str],
    *,
    zone: str,
    source: str,
    start: str,
    capacity: int | Sequence[int],
    cond: Conditions,
    command: str = "",
) -> None:
    """A self-contained HTML page: the headline, the policies' table and the figure.

    Raises:
        OutputError: if the file cannot be written.
    """
    import base64
    import io

    import matplotlib.pyplot as plt

    from carbonscaler.outputs import atomic_write
    from carbonscaler.templating import render

    rows = cluster_summary(outcomes)
    jobs = len(outcomes[0].jobs)
    fig = cluster_figure(outcomes, carbon)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, format="png")
    plt.close(fig)
    shown = [
        {
            "policy": r["policy"],
            "emissions": grams(r["emissions_g"]),
            "saved": "—"
            if r["savings_vs_agnostic_pct"] is None
            else saving(r["savings_vs_agnostic_pct"]),
            "misses": r["deadline_misses"],
            "turnaround": "—"
            if r["mean_completion_hours"] is None
            else f"{r['mean_completion_hours']:.1f} h",
            "utilisation": f"{100 * r['utilisation']:.0f} %",
        }
        for r in rows
    ]
    page = render(
        "cluster_report.html.j2",
        headline=cluster_headline(rows, jobs),
        best=next((r for r in rows if r["deadline_misses"] == 0), None),
        rows=shown,
        jobs=jobs,
        capacity=capacity if isinstance(capacity, int) else "per slot",
        zone=zone,
        source=source,
        start=start,
        conditions=cond,
        command=command,
        figure=base64.b64encode(buffer.getvalue()).decode(),
    )
    atomic_write(path, page, "--report")
