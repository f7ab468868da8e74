"""The planning model: a job, the ladder of server levels it may use, and a schedule.

Everything here is pure: arrays in, arrays out, no I/O.

The model (CONTEXT §2): slots of ``slot_hours`` each; in every slot the job runs a whole number
of servers from ``{0} ∪ {m..M}``; it must do ``work`` units before the deadline; emissions are
``Σ c_i · P(S_i) · Δ / 1000`` grams. A slot is raised one *increment* at a time — the first
takes it from 0 to ``m`` servers as one block — and the increment that completes the job may run
for only part of its slot: for that fraction ``f`` the slot runs at the higher level, for the rest
at the level below it, and its work and emissions are prorated accordingly.

Levels that are *dominated* — another allowed level does at least as much work for no more
power, as when throughput falls with more servers — are never worth running, so the ladder
skips them (going e.g. from 4 straight to 6 servers).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from carbonscaler.profile import ScalingProfile

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

__all__ = [
    "InfeasibleError",
    "Job",
    "Ladder",
    "PlanningError",
    "Schedule",
    "realise",
]


class PlanningError(ValueError):
    """The planner cannot produce a schedule for this input; the message says why."""


class InfeasibleError(PlanningError):
    """The work cannot be done before the deadline, even at the most productive level.

    Attributes:
        work_required: work units the job needs.
        work_possible: the most work that fits before the deadline.
        shortest_deadline_hours: the shortest deadline (whole slots) that would work.
    """

    def __init__(
        self,
        message: str,
        *,
        work_required: float,
        work_possible: float,
        shortest_deadline_hours: float,
    ) -> None:
        super().__init__(message)
        self.work_required = work_required
        self.work_possible = work_possible
        self.shortest_deadline_hours = shortest_deadline_hours


@functools.lru_cache(maxsize=512)
def _cached_ladder(profile: ScalingProfile, min_servers: int, max_servers: int) -> Ladder:
    # Profiles are immutable and hash by identity, so a ladder can be reused across the many
    # plans a sweep or a controller makes for the same job.
    return Ladder.build(profile, min_servers, max_servers)


@dataclass(frozen=True)
class Job:
    """What the planner needs to know about an elastic batch job.

    Args:
        profile: throughput and power per server count.
        work: total work units (same unit as the profile's throughput × hours).
        min_servers: ``m``, the fewest servers the job runs on (>= 1).
        max_servers: ``M``, the most servers the job may use.
        slot_hours: slot length Δ in hours.

    Raises:
        PlanningError: on non-positive work or slot length.
        ProfileError: if ``m..M`` is outside the profile.
    """

    profile: ScalingProfile
    work: float
    min_servers: int
    max_servers: int
    slot_hours: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.work) and self.work > 0):
            raise PlanningError(f"work must be a positive number, got {self.work}")
        if not (math.isfinite(self.slot_hours) and self.slot_hours > 0):
            raise PlanningError(f"slot length must be positive, got {self.slot_hours} h")
        self.profile.check_bounds(self.min_servers, self.max_servers)

    @classmethod
    def from_length(
        cls,
        profile: ScalingProfile,
        length_hours: float,
        min_servers: int,
        max_servers: int,
        slot_hours: float = 1.0,
    ) -> Job:
        """A job stated by its length: hours it takes at ``min_servers`` (W = l · R(m))."""
        if not (math.isfinite(length_hours) and length_hours > 0):
            raise PlanningError(f"job length must be positive, got {length_hours} h")
        profile.check_bounds(min_servers, max_servers)
        work = length_hours * float(profile.throughput[min_servers])
        return cls(profile, work, min_servers, max_servers, slot_hours)

    @property
    def length_hours(self) -> float:
        """Hours the job takes at ``min_servers``."""
        return self.work / float(self.profile.throughput[self.min_servers])

    def with_bounds(self, min_servers: int, max_servers: int) -> Job:
        """The same job with other server bounds (same work)."""
        return Job(self.profile, self.work, min_servers, max_servers, self.slot_hours)

    def with_work(self, work: float) -> Job:
        """The same job with a different amount of work (e.g. what remains)."""
        return Job(self.profile, work, self.min_servers, self.max_servers, self.slot_hours)

    def ladder(self) -> Ladder:
        """The non-dominated levels in ``m..M`` and the increments between them."""
        return _cached_ladder(self.profile, self.min_servers, self.max_servers)


@dataclass(frozen=True, eq=False)
class Ladder:
    """Allowed server levels (ascending, starting at 0) and their per-step increments.

    ``levels[0] == 0`` and ``levels[1]`` is ``m`` unless a higher level does more work for
    the same power; ``d_work[j]``/``d_power_w[j]`` take a slot
    from ``levels[j]`` to ``levels[j + 1]``. ``efficiency`` is the running minimum of marginal
    work per marginal watt: the order in which a greedy that must climb one step at a time
    would reach each step (see :mod:`carbonscaler.planner.greedy`).
    """

    levels: IntArray
    throughput: FloatArray
    power_w: FloatArray
    d_work: FloatArray
    d_power_w: FloatArray
    efficiency: FloatArray
    concave: bool

    @classmethod
    def build(cls, profile: ScalingProfile, min_servers: int, max_servers: int) -> Ladder:
        profile.check_bounds(min_servers, max_servers)
        tp, pw = profile.throughput, profile.power_w
        span = np.arange(min_servers, max_servers + 1)
        # A level is worth running only if it does more work than every lower allowed level
        # (power never falls, so a lower level with as much work is at least as cheap) ...
        best_below = np.maximum.accumulate(np.concatenate([[-np.inf], tp[span][:-1]]))
        records = span[tp[span] > best_below]
        # ... and the next such level does not do more work for the same power.
        keep = np.append(pw[records][:-1] < pw[records][1:], True)
        levels = np.concatenate([[0], records[keep]])
        lv = levels.astype(np.int64)
        d_work = np.diff(tp[lv])
        d_power = np.diff(pw[lv])
        with np.errstate(divide="ignore"):
            raw = np.where(d_power > 0, d_work / np.where(d_power > 0, d_power, 1.0), np.inf)
        eff = np.minimum.accumulate(raw)
        concave = bool(np.all(np.diff(raw) <= 1e-12 * np.abs(raw[:-1])))
        return cls(lv, tp[lv].copy(), pw[lv].copy(), d_work, d_power, eff, concave)

    @property
    def steps(self) -> int:
        """Number of increments (levels above 0)."""
        return len(self.d_work)

    @property
    def max_throughput(self) -> float:
        """Throughput at the most productive allowed level."""
        return float(self.throughput[-1])


@dataclass(frozen=True, eq=False)
class Schedule:
    """A plan: servers per slot and what it costs.

    ``servers[i]`` servers run in slot ``i``, except in ``partial_slot`` where they run for
    ``last_slot_fraction`` of the slot and ``partial_servers_after`` run for the rest (the job's
    last increment is only partly needed). Per-slot work, energy and emissions are prorated.

    Attributes:
        policy: policy name.
        servers: servers per slot from the planning start (length = slots used or planned).
        slot_hours: slot length in hours.
        partial_slot: index of the slot whose top increment is only partly used, or None.
        last_slot_fraction: fraction of ``partial_slot`` run at ``servers[partial_slot]``.
        partial_servers_after: servers for the rest of ``partial_slot``.
        work_per_slot: work units done in each slot.
        energy_kwh_per_slot: energy per slot in kWh.
        emissions_g_per_slot: emissions per slot in grams, at the planning carbon intensity.
        work_required: work units the schedule had to cover.
        deadline_slots: slots until the deadline, counted from the planning start.
        solve_ms: time spent planning, in milliseconds.
        notes: anything the policy wants the user to know (e.g. missed deadline).
    """

    policy: str
    servers: IntArray
    slot_hours: float
    partial_slot: int | None
    last_slot_fraction: float
    partial_servers_after: int
    work_per_slot: FloatArray
    energy_kwh_per_slot: FloatArray
    emissions_g_per_slot: FloatArray
    work_required: float
    deadline_slots: int
    solve_ms: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def work_done(self) -> float:
        return float(self.work_per_slot.sum())

    @property
    def energy_kwh(self) -> float:
        return float(self.energy_kwh_per_slot.sum())

    @property
    def emissions_g(self) -> float:
        return float(self.emissions_g_per_slot.sum())

    @property
    def completed(self) -> bool:
        """Whether the schedule covers all the work (up to rounding)."""
        return self.work_done >= self.work_required * (1 - 1e-9)

    @property
    def last_active_slot(self) -> int | None:
        active = np.flatnonzero(self.servers > 0)
        return int(active[-1]) if len(active) else None

    @property
    def completion_hours(self) -> float:
        """Hours from the planning start until the job's work is done."""
        last = self.last_active_slot
        if last is None:
            return 0.0
        if last == self.partial_slot and self.partial_servers_after == 0:
            return (last + self.last_slot_fraction) * self.slot_hours
        return (last + 1) * self.slot_hours

    @property
    def deadline_met(self) -> bool:
        return (
            self.completed and self.completion_hours <= self.deadline_slots * self.slot_hours + 1e-9
        )

    @property
    def server_hours(self) -> float:
        """Compute cost: server-hours used, with the partial slot prorated."""
        hours = self.servers.astype(np.float64) * self.slot_hours
        if self.partial_slot is not None:
            f = self.last_slot_fraction
            s = self.servers[self.partial_slot]
            hours[self.partial_slot] = (
                s * f + self.partial_servers_after * (1 - f)
            ) * self.slot_hours
        return float(hours.sum())

    @property
    def rescales(self) -> int:
        """Changes of server count while the job lives (suspend and resume count; the first
        start and the final stop do not)."""
        seq = self.servers
        if self.partial_slot is not None:
            seq = np.insert(seq, self.partial_slot + 1, self.partial_servers_after)
        changes = int(np.count_nonzero(np.diff(np.concatenate([[0], seq, [0]]))))
        return max(changes - 2, 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the CLI's ``--json`` contract)."""
        return {
            "policy": self.policy,
            "servers": [int(s) for s in self.servers],
            "slot_hours": self.slot_hours,
            "partial_slot": self.partial_slot,
            "last_slot_fraction": self.last_slot_fraction,
            "partial_servers_after": self.partial_servers_after,
            "work_required": self.work_required,
            "work_done": self.work_done,
            "energy_kwh": self.energy_kwh,
            "emissions_g": self.emissions_g,
            "completion_hours": self.completion_hours,
            "deadline_hours": self.deadline_slots * self.slot_hours,
            "completed": self.completed,
            "deadline_met": self.deadline_met,
            "server_hours": self.server_hours,
            "rescales": self.rescales,
            "solve_ms": self.solve_ms,
            "notes": list(self.notes),
        }


def realise(
    policy: str,
    job: Job,
    carbon: FloatArray,
    servers: IntArray,
    *,
    partial_slot: int | None,
    fraction: float,
    servers_after: int,
    deadline_slots: int,
    solve_ms: float = 0.0,
    notes: tuple[str, ...] = (),
) -> Schedule:
    """Compute a schedule's per-slot work, energy and emissions from its server counts.

    Args:
        policy: name recorded in the schedule.
        job: the job (profile and slot length).
        carbon: intensity per slot in gCO2eq/kWh, at least ``len(servers)`` long.
        servers: servers per slot.
        partial_slot: slot whose top level runs only ``fraction`` of the slot, or None.
        fraction: that fraction, in (0, 1].
        servers_after: servers for the remainder of the partial slot.
        deadline_slots: slots until the deadline.
    """
    servers = np.asarray(servers, dtype=np.int64)
    n = len(servers)
    tp, pw = job.profile.throughput, job.profile.power_w
    dt = job.slot_hours
    work = tp[servers] * dt
    power = pw[servers].copy()
    if partial_slot is not None:
        k, lo = servers[partial_slot], servers_after
        work[partial_slot] = (tp[lo] + (tp[k] - tp[lo]) * fraction) * dt
        power[partial_slot] = pw[lo] + (pw[k] - pw[lo]) * fraction
    energy_kwh = power * dt / 1000.0
    emissions = energy_kwh * np.asarray(carbon[:n], dtype=np.float64)
    return Schedule(
        policy=policy,
        servers=servers,
        slot_hours=dt,
        partial_slot=partial_slot,
        last_slot_fraction=float(fraction) if partial_slot is not None else 1.0,
        partial_servers_after=int(servers_after) if partial_slot is not None else 0,
        work_per_slot=work,
        energy_kwh_per_slot=energy_kwh,
        emissions_g_per_slot=emissions,
        work_required=job.work,
        deadline_slots=deadline_slots,
        solve_ms=solve_ms,
        notes=notes,
    )


def check_feasible(job: Job, ladder: Ladder, deadline_slots: int, *, policy: str) -> None:
    """Raise :class:`InfeasibleError` if the work cannot fit before the deadline.

    The most work that fits is every slot at the ladder's top level.
    """
    if deadline_slots <= 0:
        raise PlanningError(
            "the carbon forecast is empty: give at least one slot before the deadline"
        )
    per_slot = ladder.max_throughput * job.slot_hours
    possible = deadline_slots * per_slot
    if job.work > possible * (1 + 1e-12):
        need_slots = math.ceil(job.work / per_slot * (1 - 1e-12))
        top = int(ladder.levels[-1])
        raise InfeasibleError(
            f"{policy}: the job needs {job.work:.6g} work units but at most {possible:.6g} fit "
            f"in {deadline_slots} slots ({deadline_slots * job.slot_hours:g} h) at {top} "
            f"servers; the shortest deadline that works is {need_slots * job.slot_hours:g} h "
            f"({need_slots} slots) — extend the deadline or raise the server limit",
            work_required=job.work,
            work_possible=possible,
            shortest_deadline_hours=need_slots * job.slot_hours,
        )
