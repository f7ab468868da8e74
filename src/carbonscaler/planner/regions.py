"""Where as well as when: jobs planned over several clusters (regions) (issue #12).

Every region has its own carbon forecast (on the same slot grid, from the same start) and its
own capacity; every job may run in a set of the regions (by default all). A plan gives each job
a region and a schedule there: within a region the jobs are planned exactly as by
:func:`~carbonscaler.planner.cluster.plan_cluster` (the same model: levels of each job's ladder,
a prorated completing increment that holds its servers for the slot, the region's capacity per
slot). A job does not change region while it runs unless it allows it (``migrate``): such a job
may run in a different region in each slot (at most one region per slot; the servers it holds in
a slot count against that region's capacity, its emissions at that region's carbon). The
objective is the total emissions over all regions.

Two solvers:

* ``solver="exact"``: one mixed-integer program over region × job × slot solved by HiGHS, the
  regional form of the cluster MILP (its rows are built by the cluster planner's own
  ``_milp_rows`` on the regions laid end to end): each (job, allowed region) pair has the
  cluster model's step variables; one work row per job over all its regions; a job that stays
  in one region has a binary per allowed region (exactly one chosen; its steps are held only
  there); a job that migrates holds its first step in at most one region per slot. The result
  is polished as the cluster's (at most one partly used step per job) and never kept if
  costlier than the fast plan.
* ``solver="fast"`` (the default): combinatorial, built of the cluster planner's pieces. The
  jobs that stay in one region are one cluster instance with the regions laid end to end
  (:func:`_staying_state`), planned around the migrating jobs' servers.

  1. Every job planned alone in its cleanest region (a migrating job in the cleanest region of
     each slot). If these plans fit every region's capacity they are returned unchanged.
  2. Otherwise the jobs that stay are placed one by one (fewest allowed regions first, then the
     largest regret: what the next-best region would cost more), each in the region where it
     is cheapest alone among those where it still fits (the cluster planner's priced
     insertion); then the migrating jobs, each by a *best response*: its single-job greedy
     where a level in a slot costs its power at the cleanest allowed region with room for it
     (steps priced along the ladder by the lower convex hull). With migrating jobs, the plan
     in which every job stays in one region is one more start.
  3. Local search, each move kept only if the total emissions fall, within a budget of
     configurations evaluated (:data:`_SEARCH_WORK` over the number of jobs) and the time
     limit: best responses of each migrating job — priced by the cluster planner's
     displacement prices, or taking the capacity of the jobs that stay, of the other
     migrating jobs, of every job's top step or of every job, everywhere, in one region or in
     one slot — the jobs it displaces planned again (again for a job whenever a slot of its
     window changed); a job that stays moved to another region (pushing one in its way to a
     third), two swapped, or claiming its priced best response, the migrating jobs around it
     responding after each; pairs and triples of migrating jobs in conflict placed again in
     every order. When the jobs that stay have at most :data:`_ASSIGNMENTS` assignments, every
     one is tried (each region planned by the cluster planner's fast solver, cached). The
     migrating jobs are then placed again in two orders and the search run once more; the
     cluster planner's local search polishes the jobs that stay.

  If the construction cannot place every job the exact solver decides.

When the set cannot fit, :class:`RegionalInfeasibleError` names the jobs that cannot finish
(the largest total weight of jobs finishing is kept), those that fit in none of their regions
even alone, the work that fits, the servers to add to every region that would make the set fit
and the deadline extension that would.

Baselines: :func:`plan_regions_agnostic` (every job in its first allowed region, first come
first served at ``m`` servers) and :func:`plan_regions_independent` (every job planned alone in
its cleanest region, ignoring the capacities).

Everything here is pure: arrays in, plans out, no I/O.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from carbonscaler.planner.cluster import (
    _FULL,
    _TOL,
    ClusterInfeasibleError,
    ClusterJob,
    ClusterJobPlan,
    ClusterPlan,
    JobPlans,
    _alone_error,
    _better,
    _capacity_array,
    _displacement,
    _extend,
    _fast,
    _greedy_by_unit,
    _highs,
    _hull_unit,
    _improve,
    _insert,
    _Instance,
    _late_message,
    _Layout,
    _layout,
    _mask_below,
    _max_steps,
    _milp_rows,
    _moves,
    _prepare,
    _priced_response,
    _rate,
    _room,
    _smallest,
    _SolverTrouble,
    _State,
    _total_rate,
    _unit_cost,
    _work_within,
    plan_cluster_agnostic,
)
from carbonscaler.planner.greedy import Selection, schedule_from_selection, select_increments
from carbonscaler.planner.model import FloatArray, IntArray, Ladder, PlanningError, realise

__all__ = [
    "Region",
    "RegionalInfeasibleError",
    "RegionalJob",
    "RegionalJobPlan",
    "RegionalPlan",
    "plan_regions",
    "plan_regions_agnostic",
    "plan_regions_independent",
]

Solver = Literal["fast", "exact"]

# A move of the local search is kept only if it lowers the total by more than this share.
_IMPROVE = 1e-9
# Swaps of two jobs' regions the local search evaluates at most per round (best estimates first).
_SWAPS_PER_ROUND = 200
# Configurations the local search evaluates at most: this divided by the number of jobs (an
# evaluation costs about as much as there are jobs), but at least _MIN_SEARCH.
_SEARCH_WORK = 25_000
_MIN_SEARCH = 100
# Sets of at most this many jobs get the dearer moves always (see _Search.place).
_SMALL = 12
# Assignments of the jobs that stay to their regions tried one by one when there are at most
# this many (each region planned by the cluster planner, cached).
_ASSIGNMENTS = 243
# Best responses of a migrating job evaluated per turn, at most: this divided by the number of
# jobs (each costs about as much as there are jobs), but at least _MIN_RESPONSES.
_RESPONSE_WORK = 200
_MIN_RESPONSES = 5
# Best responses of a migrating job taking one (region, slot) from the others: at most this many
# (the cleanest).
_SLOT_VARIANTS = 8
# Claims of jobs that stay and groups of migrating jobs taken out and placed again (in every
# order) the local search evaluates per round, at most: this divided by the number of jobs.
_GROUP_WORK = 1_000
# Cost standing for "this level does not fit in any allowed region" (finite, so that the hull
# of a slot's steps stays well defined; such steps are never taken).
_NO_ROOM = 1e250


class RegionalInfeasibleError(ClusterInfeasibleError):
    """The jobs cannot all finish by their deadlines in the regions they may use.

    Attributes:
        late_jobs: names of the jobs that cannot finish (while the others do).
        unplaceable: the late jobs that fit in none of their regions even alone (their window
            is too short at their top level, or each region's capacity is below their
            minimum in too many slots).
        work_required: work units each late job needs, by name.
        work_possible: the most of its work that fits for each late job, by name.
        capacity_needed: the fewest servers to add to every slot of every region that make
            the whole set fit; None if no capacity helps (a deadline is too short even with
            every server).
        deadline_extension_hours: the smallest extension of the late jobs' deadlines (the same
            for each) that makes the set fit, or None if the carbon forecasts are too short
            to find one.
    """

    def __init__(
        self,
        message: str,
        *,
        late_jobs: tuple[str, ...],
        unplaceable: tuple[str, ...],
        work_required: dict[str, float],
        work_possible: dict[str, float],
        capacity_needed: int | None,
        deadline_extension_hours: float | None,
    ) -> None:
        super().__init__(
            message,
            late_jobs=late_jobs,
            work_required=work_required,
            work_possible=work_possible,
            capacity_needed=capacity_needed,
            deadline_extension_hours=deadline_extension_hours,
        )
        self.unplaceable = unplaceable


@dataclass(frozen=True, eq=False)
class Region:
    """One cluster: its name, carbon forecast and capacity.

    Args:
        name: unique label used in plans and errors.
        carbon: intensity per slot from the planning start (gCO2eq/kWh), on the same slot
            grid as every other region's; it must reach the latest deadline. Values past it
            are used by the carbon-agnostic baseline and to find a deadline extension.
        capacity: servers per slot: one number, or one per slot up to the latest deadline.

    Raises:
        PlanningError: on an empty name or a carbon forecast that is not a 1-D sequence of
            finite, non-negative intensities.
    """

    name: str
    carbon: FloatArray
    capacity: int | Sequence[int] | IntArray

    def __post_init__(self) -> None:
        if not self.name:
            raise PlanningError("every region needs a name")
        values = np.asarray(self.carbon, dtype=np.float64)
        if values.ndim != 1 or len(values) == 0:
            raise PlanningError(
                f"region {self.name!r}: the carbon forecast must be a non-empty 1-D sequence"
            )
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise PlanningError(
                f"region {self.name!r}: carbon intensities must be finite and non-negative"
            )
        object.__setattr__(self, "carbon", values)


@dataclass(frozen=True)
class RegionalJob:
    """A cluster job and where it may run.

    Args:
        job: the job (name, profile, work, window, weight).
        regions: names of the regions it may run in; empty for every region.
        migrate: whether it may change region at slot boundaries (its work then adds up over
            the regions it runs in). A job that may run in one region only never migrates.
    """

    job: ClusterJob
    regions: tuple[str, ...] = ()
    migrate: bool = False

    @property
    def name(self) -> str:
        return self.job.name


@dataclass(frozen=True, eq=False)
class RegionalJobPlan(ClusterJobPlan):
    """One job's part of a regional plan: its whole schedule (the emissions of each slot at
    the carbon of the region it runs in there) and where it runs.

    Attributes:
        region: the region it runs in (a migrating job: where it starts).
        slot_regions: per slot from the planning start up to the plan's horizon, the region
            where it holds servers, None where it holds none.
        migrate: whether it was allowed to change region.
    """

    region: str = ""
    slot_regions: tuple[str | None, ...] = ()
    migrate: bool = False

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions it runs in, in the order it first runs in each."""
        return tuple(dict.fromkeys(r for r in self.slot_regions if r is not None))

    @property
    def moves(self) -> int:
        """How many times it changes region between the slots it runs in."""
        active = [r for r in self.slot_regions if r is not None]
        return sum(a != b for a, b in itertools.pairwise(active))


@dataclass(frozen=True, eq=False)
class RegionalPlan(JobPlans[RegionalJobPlan]):
    """Plans of all jobs over the regions.

    Attributes:
        solver: ``fast``, ``exact``, ``agnostic`` or ``independent``.
        jobs: one plan per job, in the input order.
        regions: per region (in the input order) its cluster plan: the jobs that run there
            (a migrating job's part in that region, its ``work_required`` the work it does
            there), the region's capacity and the servers used per slot.
        slot_hours: slot length in hours.
        solve_ms: time spent planning, in milliseconds.
        notes: anything worth knowing (solver fallbacks, jobs not done).
    """

    solver: str
    jobs: tuple[RegionalJobPlan, ...]
    regions: Mapping[str, ClusterPlan]
    slot_hours: float
    solve_ms: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def horizon(self) -> int:
        """Slots the plan covers from the planning start."""
        return max(p.horizon for p in self.regions.values())

    @property
    def servers_used(self) -> IntArray:
        """Servers held per slot, summed over the regions."""
        total: IntArray = np.sum([p.servers_used for p in self.regions.values()], axis=0)
        return total.astype(np.int64)

    def region_of(self, name: str) -> str:
        """The region the job called ``name`` runs in (a migrating job: where it starts).

        Raises:
            KeyError: if there is no such job.
        """
        return self.job(name).region

    def combined(self) -> ClusterPlan:
        """All regions as one cluster plan: the whole jobs, capacity and servers summed."""
        horizon = self.horizon
        capacity = np.sum([p.capacity[:horizon] for p in self.regions.values()], axis=0)
        return ClusterPlan(
            solver=self.solver,
            jobs=self.jobs,
            capacity=capacity.astype(np.int64),
            servers_used=self.servers_used,
            slot_hours=self.slot_hours,
            solve_ms=self.solve_ms,
            notes=self.notes,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: the cluster plan's (capacity and servers summed over the
        regions), each job with its ``region``, ``migrate`` and ``regions_per_slot``, and per
        region its capacity, servers used, emissions and jobs."""
        out = self.combined().to_dict()
        for entry, job in zip(out["jobs"], self.jobs, strict=True):
            entry["region"] = job.region
            entry["migrate"] = job.migrate
            entry["regions_per_slot"] = list(job.slot_regions)
        out["regions"] = [
            {
                "name": name,
                "capacity": [int(k) for k in plan.capacity[: plan.horizon]],
                "servers_used": [int(s) for s in plan.servers_used],
                "emissions_g": plan.emissions_g,
                "energy_kwh": plan.energy_kwh,
                "jobs": [j.name for j in plan.jobs],
            }
            for name, plan in self.regions.items()
        ]
        return out


# ----------------------------------------------------------------------------------------------
# The prepared instance


@dataclass(frozen=True, eq=False)
class _Prep:
    jobs: tuple[ClusterJob, ...]
    names: tuple[str, ...]  # region names
    allowed: tuple[tuple[int, ...], ...]  # per job, region indices (in the job's order)
    migrate: tuple[bool, ...]  # per job (False where it may run in one region only)
    ladders: tuple[Ladder, ...]
    targets: FloatArray  # work / slot_hours, in ladder.d_work units
    carbon: FloatArray  # region × slot, up to the horizon
    capacity: IntArray  # region × slot, up to the horizon
    carbon_all: tuple[FloatArray, ...]  # per region, as given
    slot_hours: float

    @property
    def horizon(self) -> int:
        return int(self.carbon.shape[1])

    @property
    def n_regions(self) -> int:
        return len(self.names)

    def window(self, j: int) -> slice:
        return slice(self.jobs[j].arrival_slot, self.jobs[j].deadline_slot)

    def changed(self, *, add: int = 0, deadlines: Mapping[int, int] | None = None) -> _Prep:
        """The instance with ``add`` servers more in every slot of every region and some
        jobs' deadline slots moved (the forecasts must reach them)."""
        moved = deadlines or {}
        jobs = tuple(
            ClusterJob(c.name, c.job, c.arrival_slot, moved.get(j, c.deadline_slot), c.weight)
            for j, c in enumerate(self.jobs)
        )
        horizon = max(c.deadline_slot for c in jobs)
        carbon = np.stack([c[:horizon] for c in self.carbon_all])
        capacity = np.stack([_extend(k, horizon)[:horizon] for k in self.capacity]) + add
        return dataclasses.replace(self, jobs=jobs, carbon=carbon, capacity=capacity)


def _prepare_regions(
    jobs: Sequence[RegionalJob | ClusterJob], regions: Sequence[Region]
) -> tuple[_Prep, tuple[RegionalJob, ...]]:
    """Check and index the input.

    Raises:
        PlanningError: on no region or job, repeated names, an unknown or repeated region of
            a job, mixed slot lengths, a forecast or capacity that does not reach the latest
            deadline.
    """
    if not regions:
        raise PlanningError("a regional plan needs at least one region")
    if not jobs:
        raise PlanningError("a cluster plan needs at least one job")
    rjobs = tuple(j if isinstance(j, RegionalJob) else RegionalJob(j) for j in jobs)
    names = tuple(r.name for r in regions)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PlanningError(f"region names must be unique; repeated: {', '.join(dupes)}")
    index = {name: i for i, name in enumerate(names)}
    allowed = []
    for rj in rjobs:
        unknown = [r for r in rj.regions if r not in index]
        if unknown:
            raise PlanningError(
                f"job {rj.name!r}: unknown region{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(u) for u in unknown)}; the regions are {', '.join(names)}"
            )
        if len(set(rj.regions)) != len(rj.regions):
            raise PlanningError(f"job {rj.name!r}: a region is listed twice in its regions")
        allowed.append(tuple(index[r] for r in rj.regions) or tuple(range(len(names))))
    cluster_jobs = [rj.job for rj in rjobs]
    # The cluster planner's checks of the jobs (names, slot lengths), on the first region.
    horizon = max(c.deadline_slot for c in cluster_jobs)
    carbon_rows, capacity_rows = [], []
    for region in regions:
        if len(region.carbon) < horizon:
            raise PlanningError(
                f"region {region.name!r}: the latest deadline is {horizon} slots from the start "
                f"but its forecast has only {len(region.carbon)}; give forecasts that reach "
                "every deadline"
            )
        try:
            inst = _prepare(cluster_jobs, region.carbon, region.capacity)
        except PlanningError as exc:
            raise PlanningError(f"region {region.name!r}: {exc}") from None
        carbon_rows.append(inst.carbon)
        capacity_rows.append(inst.capacity)
    prep = _Prep(
        jobs=tuple(cluster_jobs),
        names=names,
        allowed=tuple(allowed),
        migrate=tuple(rj.migrate and len(a) > 1 for rj, a in zip(rjobs, allowed, strict=True)),
        ladders=inst.ladders,
        targets=inst.targets,
        carbon=np.stack(carbon_rows),
        capacity=np.stack(capacity_rows),
        carbon_all=tuple(r.carbon for r in regions),
        slot_hours=inst.slot_hours,
    )
    return prep, rjobs


# ----------------------------------------------------------------------------------------------
# A solution: per job its region per slot of its window and its selection there


@dataclass(frozen=True, eq=False)
class _Solution:
    rho: tuple[IntArray, ...]  # per job, region index per slot of its window
    sels: tuple[Selection, ...]

    def rate(self, prep: _Prep) -> float:
        """Σ c · P over all jobs (grams = this × slot_hours / 1000)."""
        return float(sum(_job_rate(prep, j, r, s) for j, (r, s) in enumerate(self.pairs())))

    def pairs(self) -> Iterator[tuple[IntArray, Selection]]:
        return zip(self.rho, self.sels, strict=True)


def _effective(prep: _Prep, j: int, rho: IntArray) -> FloatArray:
    """Job ``j``'s carbon per slot of its window, in the region of each slot."""
    a = prep.jobs[j].arrival_slot
    return prep.carbon[rho, a + np.arange(len(rho))]


def _job_rate(prep: _Prep, j: int, rho: IntArray, sel: Selection) -> float:
    return _rate(prep.ladders[j], _effective(prep, j, rho), sel)


def _load(
    prep: _Prep, j: int, rho: IntArray, sel: Selection, *, below_top: bool = False
) -> IntArray:
    """Servers job ``j`` holds per region and slot (one step lower with ``below_top``)."""
    out = np.zeros((prep.n_regions, prep.horizon), dtype=np.int64)
    a = prep.jobs[j].arrival_slot
    steps = np.maximum(sel.steps - 1, 0) if below_top else sel.steps
    out[rho, a + np.arange(len(rho))] = prep.ladders[j].levels[steps]
    return out


def _valid(prep: _Prep, sol: _Solution) -> bool:
    """Whether a solution covers every job's work in its allowed regions, keeps a job that
    does not migrate in one region, and fits every capacity."""
    load = np.zeros_like(prep.capacity)
    for j, (rho, sel) in enumerate(sol.pairs()):
        lad = prep.ladders[j]
        active = sel.steps > 0
        regions = set(rho[active].tolist())
        if not regions <= set(prep.allowed[j]) or (not prep.migrate[j] and len(regions) > 1):
            return False
        work = float(lad.throughput[sel.steps].sum())
        if sel.partial_slot is not None:
            work -= (1 - sel.fraction) * float(lad.d_work[int(sel.steps[sel.partial_slot]) - 1])
        if work < prep.targets[j] * (1 - 1e-9):
            return False
        load += _load(prep, j, rho, sel)
    return bool(np.all(load <= prep.capacity))


# ----------------------------------------------------------------------------------------------
# Single jobs: alone in one region, and the migrating job's best response


def _alone(prep: _Prep, j: int, r: int) -> Selection | None:
    """Job ``j``'s greedy in region ``r`` with at most the region's capacity; None if short."""
    lad = prep.ladders[j]
    window = prep.window(j)
    cap = prep.capacity[r, window]
    max_steps = _max_steps(lad, cap)
    if _work_within(lad, max_steps) < prep.targets[j] * (1 - _TOL):
        return None
    unit = _unit_cost(lad, prep.carbon[r, window])
    return _greedy_by_unit(unit, lad.d_work, float(prep.targets[j]), max_steps)


def _respond(prep: _Prep, j: int, free: IntArray) -> tuple[IntArray, Selection] | None:
    """A migrating job's plan when ``free[r, t]`` servers are left to it in region ``r`` and
    slot ``t``: its greedy where holding a level in a slot costs that level's power at the
    cleanest allowed region with room for it; None if it cannot finish.

    Along a slot's ladder the cleanest region with room can only get dirtier, so the steps'
    costs may rise faster than the single-region ladder's; they are priced by the lower convex
    hull (:func:`~carbonscaler.planner.cluster._hull_unit`). The completing increment runs in
    the region of the level it reaches (its whole slot in one region).
    """
    lad = prep.ladders[j]
    a, d = prep.jobs[j].arrival_slot, prep.jobs[j].deadline_slot
    n, steps = d - a, lad.steps
    regions = np.asarray(prep.allowed[j], dtype=np.int64)
    room = free[regions, a:d][:, :, None] >= lad.levels[1:][None, None, :]  # region, slot, step
    carbon = np.where(room, prep.carbon[regions, a:d][:, :, None], np.inf)
    best = np.argmin(carbon, axis=0)  # slot, step
    cleanest = np.min(carbon, axis=0)
    max_steps = np.cumprod(np.isfinite(cleanest), axis=1).sum(axis=1).astype(np.int64)
    if _work_within(lad, max_steps) < prep.targets[j] * (1 - _TOL):
        return None
    usable = np.arange(steps)[None, :] < max_steps[:, None]
    level_cost = np.where(usable, np.cumsum(lad.d_power_w)[None, :] * cleanest, 0.0)
    below = np.concatenate([np.zeros((n, 1)), level_cost[:, :-1]], axis=1)
    variable = np.where(usable, level_cost - below, _NO_ROOM)
    unit = _hull_unit(variable, lad.d_work)
    sel = _greedy_by_unit(unit, lad.d_work, float(prep.targets[j]), max_steps)
    if sel is None:
        return None
    top = np.maximum(sel.steps - 1, 0)
    rho = regions[best[np.arange(n), top]]
    rho = np.where(sel.steps > 0, rho, regions[0]).astype(np.int64)
    return rho, sel


def _virtual(
    prep: _Prep, config: _Config, skip: int, extra: tuple[int, int] | None = None
) -> _State | None:
    """``config`` as one cluster instance with the regions laid end to end (slot ``t`` of
    region ``r`` is slot ``r · horizon + t``): every job but ``skip`` that stays in one
    region is one job there, every migrating one is one job per allowed region (its part in
    that region); with ``extra`` = (job, region), that job is added last, unplanned. None if
    there is no job."""
    horizon = prep.horizon
    parts: list[tuple[int, int, Selection | None]] = []  # (job, region, selection there)
    for k, r in enumerate(config.home):
        if k == skip:
            continue
        if r >= 0:
            parts.append((k, r, config.sels[k]))
        elif k in config.moving:
            where, plan = config.moving[k]
            for region in prep.allowed[k]:
                here = where == region
                partial = plan.partial_slot
                inside = partial is not None and bool(here[partial])
                held = np.where(here, plan.steps, 0).astype(np.int64)
                parts.append(
                    (k, region, Selection(held, partial if inside else None, plan.fraction))
                )
    if extra is not None:
        parts.append((extra[0], extra[1], None))
    if not parts:
        return None
    inst = _Instance(
        jobs=tuple(
            ClusterJob(
                f"{prep.jobs[k].name}@{prep.names[r]}",
                prep.jobs[k].job,
                r * horizon + prep.jobs[k].arrival_slot,
                r * horizon + prep.jobs[k].deadline_slot,
            )
            for k, r, _ in parts
        ),
        ladders=tuple(prep.ladders[k] for k, _, _ in parts),
        targets=np.array([prep.targets[k] for k, _, _ in parts]),
        carbon=prep.carbon.ravel(),
        capacity=prep.capacity.ravel(),
        slot_hours=prep.slot_hours,
    )
    state = _State(inst)
    for v, (_, _, part) in enumerate(parts):
        if part is not None:
            state.set(v, part)
    return state


def _claim(prep: _Prep, config: _Config, j: int, r: int) -> Selection | None:
    """The priced best response of job ``j`` (one that stays in one region) in region ``r``
    against every other job (the cluster planner's ``_priced_response`` on :func:`_virtual`):
    its greedy where capacity others hold costs what displacing them does. None if it
    cannot finish even so."""
    state = _virtual(prep, config, j, (j, r))
    assert state is not None  # it holds j
    return _priced_response(state, len(state.inst.jobs) - 1)


def _priced(prep: _Prep, config: _Config, j: int) -> tuple[IntArray, Selection] | None:
    """Migrating job ``j``'s priced best response: as :func:`_respond`, where a level that
    needs servers others hold also costs what displacing them does — what those jobs would
    pay to make up the lost work in their next-cheapest increments, less what the displaced
    increments cost (the cluster planner's ``_displacement`` on :func:`_virtual`). None if it
    cannot finish even so.
    """
    horizon = prep.horizon
    state = _virtual(prep, config, j)
    free = (
        prep.capacity.copy()
        if state is None
        else (state.inst.capacity - state.load).reshape(prep.capacity.shape)
    )
    lad = prep.ladders[j]
    a, d = prep.jobs[j].arrival_slot, prep.jobs[j].deadline_slot
    n, steps = d - a, lad.steps
    regions = prep.allowed[j]
    level_power = np.cumsum(lad.d_power_w)
    variable = np.full((len(regions), n, steps), np.inf)
    fixed = np.zeros((len(regions), n, steps))
    top = int(lad.levels[-1])
    for x, r in enumerate(regions):
        for i in range(n):
            t = a + i
            room = int(free[r, t])
            prices: list[tuple[float, int]] = []
            if room < top and state is not None:
                prices, _ = _displacement(state, r * horizon + t, -1, top - room, state.curves())
            for s in range(steps):
                level = int(lad.levels[s + 1])
                if level > room:
                    cost = next((p for p, f in prices if f >= level - room), None)
                    if cost is None:
                        break
                    fixed[x, i, s] = cost
                variable[x, i, s] = prep.carbon[r, t] * level_power[s]
    total = variable + fixed
    best = np.argmin(total, axis=0)  # slot, step
    rows = np.arange(n)[:, None]
    cols = np.arange(steps)[None, :]
    var_best = variable[best, rows, cols]
    fix_best = fixed[best, rows, cols]
    max_steps = np.cumprod(np.isfinite(var_best), axis=1).sum(axis=1).astype(np.int64)
    if _work_within(lad, max_steps) < prep.targets[j] * (1 - _TOL):
        return None
    usable = np.arange(steps)[None, :] < max_steps[:, None]
    var_best = np.where(usable, var_best, 0.0)
    fix_best = np.where(usable, fix_best, 0.0)
    d_var = np.diff(var_best, axis=1, prepend=0.0)
    d_fix = np.diff(fix_best, axis=1, prepend=0.0)
    unit = _hull_unit(np.where(usable, d_var + d_fix, _NO_ROOM), lad.d_work)
    sel = _greedy_by_unit(
        unit, lad.d_work, float(prep.targets[j]), max_steps, (np.maximum(d_var, 0.0), d_fix)
    )
    if sel is None:
        return None
    chosen = np.asarray(regions, dtype=np.int64)[best[np.arange(n), np.maximum(sel.steps - 1, 0)]]
    rho = np.where(sel.steps > 0, chosen, regions[0]).astype(np.int64)
    return rho, sel


def _key(rho: IntArray, sel: Selection) -> tuple[bytes, bytes, int | None, float]:
    """A migrating job's plan as a hashable value."""
    return rho.tobytes(), sel.steps.tobytes(), sel.partial_slot, round(sel.fraction, 12)


# ----------------------------------------------------------------------------------------------
# The fast solver


@dataclass(frozen=True, eq=False)
class _Config:
    """A state of the search: the region of each job that stays in one (-1 for the migrating
    ones), the migrating jobs' plans, the other jobs' selections and the total rate."""

    home: tuple[int, ...]
    moving: Mapping[int, tuple[IntArray, Selection]]
    sels: Mapping[int, Selection]
    total: float

    def solution(self, prep: _Prep) -> _Solution:
        rho, sels = [], []
        for j, r in enumerate(self.home):
            if r < 0:
                rho.append(self.moving[j][0])
                sels.append(self.moving[j][1])
            else:
                rho.append(np.full(prep.jobs[j].window_slots, r, dtype=np.int64))
                sels.append(self.sels[j])
        return _Solution(tuple(rho), tuple(sels))

    def load(
        self,
        prep: _Prep,
        *,
        skip: int = -1,
        staying: bool = True,
        moving: bool = True,
        below_top: bool = False,
    ) -> IntArray:
        """Servers per region and slot of every job but ``skip``: of those that stay in one
        region and of the migrating ones, as asked; one step lower with ``below_top``."""
        out = np.zeros_like(prep.capacity)
        for j, r in enumerate(self.home):
            if j == skip:
                continue
            if r < 0:
                if moving and j in self.moving:  # (not yet placed while constructing)
                    out += _load(prep, j, *self.moving[j], below_top=below_top)
            elif staying:
                rho = np.full(prep.jobs[j].window_slots, r)
                out += _load(prep, j, rho, self.sels[j], below_top=below_top)
        return out


_RegionResult = tuple[float, tuple[Selection, ...]] | None


class _Search:
    """The fast solver: region plans by the cluster planner (cached), moves between regions."""

    def __init__(self, prep: _Prep, deadline_s: float) -> None:
        self.prep = prep
        self.deadline_s = deadline_s
        self._cache: dict[tuple[int, tuple[int, ...], bytes], _RegionResult] = {}
        self._alone: dict[tuple[int, int], float] = {}
        self.evaluations = 0
        self.budget = max(_SEARCH_WORK // len(prep.jobs), _MIN_SEARCH)

    def out_of_time(self) -> bool:
        """Whether the search must stop: the time limit, or :data:`_SEARCH_WORK` divided by
        the number of jobs evaluations spent (so the result does not depend on the machine)."""
        return self.evaluations > self.budget or time.perf_counter() > self.deadline_s

    def region(self, r: int, members: tuple[int, ...], cap: IntArray) -> _RegionResult:
        """The cluster planner's fast plan of ``members`` in region ``r`` with ``cap``
        servers per slot: (rate, selections), or None if it finds none."""
        if not members:
            return 0.0, ()
        key = (r, members, cap.tobytes())
        if key not in self._cache:
            prep = self.prep
            result: _RegionResult = None
            try:
                inst = _prepare([prep.jobs[j] for j in members], prep.carbon[r], cap)
                budget = max(self.deadline_s - time.perf_counter(), 0.0)
                found = _fast(inst, budget)
                if found is not None:
                    result = (_total_rate(inst, found[0]), tuple(found[0]))
            except ClusterInfeasibleError:
                result = None
            self._cache[key] = result
        return self._cache[key]

    def evaluate(
        self,
        home: tuple[int, ...],
        moving: Mapping[int, tuple[IntArray, Selection]],
        base: _Config | None = None,
        claims: Mapping[int, Selection] | None = None,
        priced: bool = True,
    ) -> _Config | None:
        """The configuration with the jobs that stay planned around the migrating jobs'
        plans; None if they cannot all be placed.

        Without ``base`` every region is planned from scratch by the cluster planner. With
        it, incrementally: a job that stays keeps its plan in ``base`` (or in ``claims``) if
        it is in the same region and fits; the others are inserted by the cluster planner's
        priced insertion (``_insert``), the least room first, on the regions laid end to end
        (:func:`_staying_state`); then every job whose window holds a region and slot where
        servers were freed, cleaner than the dirtiest it runs in, makes its priced best
        responses (the cluster planner's ``_moves``; without ``priced``, its greedy in the
        capacity left) if they pay off.
        """
        prep = self.prep
        self.evaluations += 1
        total = 0.0
        busy = np.zeros_like(prep.capacity)
        for j, (rho, sel) in moving.items():
            busy += _load(prep, j, rho, sel)
            total += _job_rate(prep, j, rho, sel)
        if np.any(busy > prep.capacity):
            return None
        if base is None:
            sels: dict[int, Selection] = {}
            for r in range(prep.n_regions):
                group = tuple(j for j, h in enumerate(home) if h == r)
                found = self.region(r, group, prep.capacity[r] - busy[r])
                if found is None:
                    return None
                total += found[0]
                sels.update(zip(group, found[1], strict=True))
            return _Config(home, dict(moving), sels, total)
        members = [j for j, r in enumerate(home) if r >= 0]
        if not members:
            return _Config(home, dict(moving), {}, total)
        state = _staying_state(prep, home, members, busy)
        claimed = claims or {}
        for v, j in enumerate(members):
            kept = claimed.get(j) or (base.sels.get(j) if base.home[j] == home[j] else None)
            if kept is not None:
                state.set(v, kept)
        over = state.load > state.inst.capacity
        if np.any(over):
            for v, j in enumerate(members):
                if j not in claimed and np.any(over[state.inst.window(v)] & (state.levels(v) > 0)):
                    state.set(v, None)
            if np.any(state.load > state.inst.capacity):
                return None
        unplaced = [v for v in range(len(members)) if state.sel[v] is None]
        for v in sorted(unplaced, key=lambda v: (_room(state, v), v)):
            inserted = _insert(state, v)
            if inserted is None:
                return None
            state = inserted
        freed = base.load(prep) > busy + state.load.reshape(busy.shape)
        for v, j in enumerate(members):
            placed = state.sel[v]
            assert placed is not None
            carbon = prep.carbon[home[j], prep.window(j)]
            dearest = float(carbon[placed.steps > 0].max(initial=0.0))
            if not np.any(freed[home[j], prep.window(j)] & (carbon < dearest)):
                continue
            if priced:
                better = _better(_moves(state, v), float(state.rates.sum()))
                state = state if better is None else better
            else:
                trial = state.copy()
                if trial.replan(v) and trial.rates.sum() < state.rates.sum() * (1 - _IMPROVE):
                    state = trial
        sels = {j: sel for j, sel in zip(members, state.sel, strict=True) if sel is not None}
        return _Config(home, dict(moving), sels, total + float(state.rates.sum()))

    def polish(self, config: _Config) -> _Config:
        """``config`` with the jobs that stay improved by the cluster planner's local search
        (on the regions laid end to end), or planned per region from scratch, whichever is
        cheaper."""
        prep = self.prep
        members = [j for j, r in enumerate(config.home) if r >= 0]
        best = config
        if members:
            busy = config.load(prep, staying=False)
            state = _staying_state(prep, config.home, members, busy)
            for v, j in enumerate(members):
                state.set(v, config.sels[j])
            state = _improve(state, self.deadline_s)
            moving_rate = config.total - sum(
                _job_rate(prep, j, np.full(prep.jobs[j].window_slots, config.home[j]), sel)
                for j, sel in config.sels.items()
            )
            sels = {j: sel for j, sel in zip(members, state.sel, strict=True) if sel is not None}
            if len(sels) == len(members):
                improved = _Config(
                    config.home, config.moving, sels, moving_rate + float(state.rates.sum())
                )
                if improved.total < best.total:
                    best = improved
        scratch = self.evaluate(config.home, config.moving)
        if scratch is not None and scratch.total < best.total * (1 - _IMPROVE):
            best = scratch
        return best

    # -- construction

    def independent(self) -> tuple[_Config, bool] | None:
        """Every job in its cleanest region alone (a migrating job: its plan with every
        server free). Returns the configuration and whether those plans fit as they are (then
        no plan is cheaper); if they do not, the jobs that stay are inserted in those regions
        one by one. None if that fails."""
        prep = self.prep
        home, moving = [], {}
        for j in range(len(prep.jobs)):
            if prep.migrate[j]:
                response = _respond(prep, j, prep.capacity)
                if response is None:
                    return None
                home.append(-1)
                moving[j] = response
            else:
                costs = [self.alone_cost(j, r) for r in prep.allowed[j]]
                home.append(prep.allowed[j][int(np.argmin(costs))])
        sels: dict[int, Selection] = {}
        for j, r in enumerate(home):
            if r >= 0:
                window = prep.window(j)
                sels[j] = select_increments(
                    prep.ladders[j], prep.carbon[r, window], float(prep.targets[j])
                )
        alone = _Config(tuple(home), moving, sels, 0.0)
        if np.all(alone.load(prep) <= prep.capacity):
            solution = alone.solution(prep)
            return dataclasses.replace(alone, total=solution.rate(prep)), True
        empty = _Config(tuple(-1 for _ in home), {}, {}, 0.0)
        placed = self.evaluate(tuple(home), moving, base=empty)
        return None if placed is None else (placed, False)

    def alone_cost(self, j: int, r: int) -> float:
        """Job ``j``'s rate alone in region ``r`` (capacity-capped), inf if it does not fit."""
        if (j, r) not in self._alone:
            sel = _alone(self.prep, j, r)
            window = self.prep.window(j)
            self._alone[j, r] = (
                math.inf
                if sel is None
                else _rate(self.prep.ladders[j], self.prep.carbon[r, window], sel)
            )
        return self._alone[j, r]

    def construct(self) -> _Config | None:
        """Place the jobs that stay one by one, then the migrating ones; None if one cannot
        be placed."""
        prep = self.prep
        n_jobs = len(prep.jobs)
        staying = [j for j in range(n_jobs) if not prep.migrate[j]]
        costs = {j: {r: self.alone_cost(j, r) for r in prep.allowed[j]} for j in staying}

        def regret(j: int) -> float:
            ordered = sorted(costs[j].values())
            return ordered[1] - ordered[0] if len(ordered) > 1 else math.inf

        config = _Config(tuple(-1 for _ in range(n_jobs)), {}, {}, 0.0)
        order = sorted(staying, key=lambda j: (len(prep.allowed[j]), -regret(j), j))
        for j in order:
            for r in sorted(prep.allowed[j], key=lambda r: (costs[j][r], r)):
                if costs[j][r] == math.inf:
                    continue
                home = list(config.home)
                home[j] = r
                placed = self.evaluate(tuple(home), {}, base=config)
                if placed is not None:
                    config = placed
                    break
            else:
                return None
        moving_jobs = [j for j in range(n_jobs) if prep.migrate[j]]
        for j in sorted(moving_jobs, key=lambda j: (self.room(j), j)):
            options = [c for c in self.responses(config, j) if c is not None]
            if not options:
                return None
            config = min(options, key=lambda c: c.total)
        return config

    # -- moves

    def responses(self, config: _Config, j: int) -> Iterator[_Config | None]:
        """Migrating job ``j``'s best responses: in the capacity the others leave, or taking
        capacity from the jobs that stay, from the other migrating jobs, from every job's top
        step or from every job — everywhere, in one region, or in one (region, slot) of the
        cleanest few where it cannot reach its top level — while yielding elsewhere. The jobs
        it displaces are planned again around it (:meth:`install`)."""
        prep = self.prep
        cap = prep.capacity
        moving = config.load(prep, skip=j, staying=False)
        staying = config.load(prep, skip=j, moving=False)
        below_top = config.load(prep, skip=j, below_top=True)
        left = cap - moving - staying
        takes = [cap - moving, cap - staying, cap]
        frees = [left, cap - below_top, *takes]
        for r in prep.allowed[j]:
            for taken in takes:
                free = left.copy()
                free[r] = taken[r]
                frees.append(free)
        top = int(prep.ladders[j].levels[-1])
        regions = np.asarray(prep.allowed[j], dtype=np.int64)
        window = prep.window(j)
        short = left[regions, window] < top
        carbon = np.where(short, prep.carbon[regions, window], np.inf).ravel()
        for flat in np.argsort(carbon, kind="stable")[:_SLOT_VARIANTS]:
            if not np.isfinite(carbon[flat]):
                break
            r, i = divmod(int(flat), prep.jobs[j].window_slots)
            cell = (int(regions[r]), window.start + i)
            for taken in takes[1:]:
                free = left.copy()
                free[cell] = taken[cell]
                frees.append(free)
        priced = _priced(prep, config, j)
        if priced is not None:
            yield self.install(config, config.home, j, priced)
        seen = {_key(*config.moving[j])} if j in config.moving else set()
        budget = max(_RESPONSE_WORK // len(prep.jobs), _MIN_RESPONSES)
        for free in frees[:budget]:
            response = _respond(prep, j, free)
            if response is None or _key(*response) in seen:
                continue
            seen.add(_key(*response))
            yield self.install(config, config.home, j, response)

    def install(
        self,
        config: _Config,
        home: tuple[int, ...],
        j: int | None,
        response: tuple[IntArray, Selection] | None,
        claims: Mapping[int, Selection] | None = None,
    ) -> _Config | None:
        """``config`` with the jobs that stay in ``home`` and migrating job ``j``'s plan
        replaced by ``response`` (if given), the cheaper of: the other migrating jobs kept
        and the jobs that stay planned again around them (:meth:`settle`); or the migrating
        jobs that no longer fit (where the jobs that stay, as they are planned now, and the
        migrating ones exceed the capacity) responding again, the least room first, yielding
        to the jobs that stay if they can, and then the jobs that stay planned again. A job
        that stays counts with its selection in ``claims`` if it has one, else as planned
        alone if it is in another region than in ``config``. None if neither places every
        job."""
        prep = self.prep
        cap = prep.capacity
        moving = dict(config.moving)
        if j is not None and response is not None:
            moving[j] = response
        staying = np.zeros_like(cap)
        for k, r in enumerate(home):
            if r >= 0:
                current = (
                    claims[k]
                    if claims and k in claims
                    else config.sels[k]
                    if config.home[k] == r
                    else _alone(prep, k, r)
                )
                if current is not None:
                    rho = np.full(prep.jobs[k].window_slots, r)
                    staying += _load(prep, k, rho, current)
        loads = {k: _load(prep, k, *plan) for k, plan in moving.items()}
        # The other migrating jobs kept, the jobs that stay planned around them ...
        kept = None
        if np.all(sum(loads.values(), np.zeros_like(cap)) <= cap):
            kept = self.settle(home, moving, config, claims, priced=False)
        over = sum(loads.values(), staying) > cap
        displaced = [k for k in moving if k != j and np.any((loads[k] > 0) & over)]
        if not displaced:
            return kept
        # ... or those in the way of the jobs that stay responding again.
        for k in displaced:
            del moving[k], loads[k]
        for k in sorted(displaced, key=lambda k: (self.room(k), k)):
            used = sum(loads.values(), np.zeros_like(cap))
            again = _respond(prep, k, cap - used - staying) or _respond(prep, k, cap - used)
            if again is None:
                return kept
            moving[k] = again
            loads[k] = _load(prep, k, *again)
        moved = self.settle(home, moving, config, claims, priced=False)
        options = [c for c in (kept, moved) if c is not None]
        return min(options, key=lambda c: c.total, default=None)

    def room(self, j: int) -> float:
        """Work that fits in migrating job ``j``'s window (the roomiest region of each slot)
        over its work: the tightest is placed first."""
        prep = self.prep
        lad = prep.ladders[j]
        cap = prep.capacity[list(prep.allowed[j]), prep.window(j)].max(axis=0)
        return _work_within(lad, _max_steps(lad, cap)) / float(prep.targets[j])

    def settle(
        self,
        home: tuple[int, ...],
        moving: Mapping[int, tuple[IntArray, Selection]],
        base: _Config,
        claims: Mapping[int, Selection] | None = None,
        priced: bool = True,
    ) -> _Config | None:
        """:meth:`evaluate` from ``base``, and if the jobs that stay cannot all be placed
        around the migrating jobs, the cheapest of moving one of those in their way to
        another allowed region; None if neither works."""
        config = self.evaluate(home, moving, base, claims, priced)
        if config is not None:
            return config
        prep = self.prep
        busy = sum(
            (_load(prep, k, *plan) for k, plan in moving.items()), np.zeros_like(prep.capacity)
        )
        if np.any(busy > prep.capacity):
            return None
        options = []
        for j, r in enumerate(home):
            if r < 0 or (claims and j in claims) or j not in base.sels or base.home[j] != r:
                continue
            rho = np.full(prep.jobs[j].window_slots, r)
            if not np.any((_load(prep, j, rho, base.sels[j]) > 0) & (busy > 0)):
                continue
            for other in prep.allowed[j]:
                if other != r:
                    moved = list(home)
                    moved[j] = other
                    options.append(self.evaluate(tuple(moved), moving, base, claims, priced))
        return min((c for c in options if c is not None), key=lambda c: c.total, default=None)

    def moves(self, config: _Config) -> Iterator[_Config | None]:
        """Candidate neighbours of ``config`` but the migrating jobs' responses, the most
        promising first: moving a job that stays to another region, swapping two, a job that
        stays claiming its priced best response, groups of migrating jobs placed again."""
        prep = self.prep
        staying = [j for j, r in enumerate(config.home) if r >= 0]
        relocations = [
            (self.alone_cost(j, r) - self.alone_cost(j, config.home[j]), j, r)
            for j in staying
            for r in prep.allowed[j]
            if r != config.home[j]
        ]
        ejections = max(_GROUP_WORK // len(prep.jobs), 1)
        for _, j, r in sorted(relocations):
            home = list(config.home)
            home[j] = r
            moved = self.place(config, tuple(home))
            yield moved
            if moved is not None:
                continue
            # A job of that region in its way moves to another region of its own.
            for k in staying:
                if config.home[k] != r or not self.overlap(j, k):
                    continue
                for other in prep.allowed[k]:
                    if other == r or ejections <= 0:
                        continue
                    ejections -= 1
                    chain = list(home)
                    chain[k] = other
                    yield self.place(config, tuple(chain))
        swaps = []
        for x, j in enumerate(staying):
            for k in staying[x + 1 :]:
                a, b = config.home[j], config.home[k]
                if a != b and b in prep.allowed[j] and a in prep.allowed[k]:
                    gain = (
                        self.alone_cost(j, b)
                        + self.alone_cost(k, a)
                        - self.alone_cost(j, a)
                        - self.alone_cost(k, b)
                    )
                    swaps.append((gain, j, k))
        for _, j, k in sorted(swaps)[:_SWAPS_PER_ROUND]:
            home = list(config.home)
            home[j], home[k] = home[k], home[j]
            yield self.place(config, tuple(home))
        budget = max(_GROUP_WORK // len(prep.jobs), 1)
        short = self.short(config)
        for j in staying:
            for r in prep.allowed[j]:
                if budget <= 0 or not self.contested(config, short, j, r):
                    continue
                claim = _claim(prep, config, j, r)
                if claim is not None:
                    budget -= 1
                    home = list(config.home)
                    home[j] = r
                    yield self.install(config, tuple(home), None, None, {j: claim})
        for group in self.groups(config, short):
            for order in itertools.permutations(group):
                if budget <= 0:
                    return
                budget -= 1
                yield self.reinsert(config, order)

    def place(
        self, config: _Config, home: tuple[int, ...], scratch: bool = False
    ) -> _Config | None:
        """``config`` with the jobs that stay in the regions of ``home``: planned around the
        migrating jobs (:meth:`evaluate`, incrementally or with ``scratch`` from scratch), or
        with the migrating jobs in their way stepping aside (:meth:`install`; on sets of more
        than :data:`_SMALL` jobs only if the first fails), whichever is cheaper; then the
        migrating jobs whose windows changed respond (:meth:`follow`)."""
        options = [self.evaluate(home, config.moving, None if scratch else config)]
        if config.moving and (options[0] is None or len(self.prep.jobs) <= _SMALL):
            options.append(self.install(config, home, None, None))
        found = min((c for c in options if c is not None), key=lambda c: c.total, default=None)
        return found if found is None or not config.moving else self.follow(config, found)

    def follow(self, old: _Config, new: _Config) -> _Config:
        """``new`` after each migrating job whose window holds a slot whose servers changed
        from ``old`` made its best response in the capacity the others leave, where that pays
        off."""
        prep = self.prep
        for j in sorted(self.affected(old, new)):
            response = _respond(prep, j, prep.capacity - new.load(prep, skip=j))
            if response is None or _key(*response) == _key(*new.moving[j]):
                continue
            moved = self.settle(new.home, {**new.moving, j: response}, new, priced=False)
            if moved is not None and self.pays(new, moved):
                new = moved
        return new

    def assignments(self, config: _Config) -> _Config:
        """The best of every assignment of the jobs that stay to their regions (each region
        planned by the cluster planner, around the migrating jobs' plans in ``config``) if
        there are at most :data:`_ASSIGNMENTS`; else ``config``."""
        prep = self.prep
        staying = [j for j, r in enumerate(config.home) if r >= 0]
        if math.prod(len(prep.allowed[j]) for j in staying) > _ASSIGNMENTS:
            return config
        best = config
        for choice in itertools.product(*(prep.allowed[j] for j in staying)):
            if self.out_of_time():
                break
            home = list(config.home)
            for j, r in zip(staying, choice, strict=True):
                home[j] = r
            found = self.place(config, tuple(home), scratch=True)
            if found is not None and self.pays(best, found):
                best = found
        return best

    def short(self, config: _Config) -> IntArray:
        """Servers free per region and slot."""
        return self.prep.capacity - config.load(self.prep)

    def contested(self, config: _Config, free: IntArray, j: int, r: int) -> bool:
        """Whether job ``j`` cannot reach its top level in some slot of its window in region
        ``r`` where a migrating job other than ``j`` may run too."""
        prep = self.prep
        top = int(prep.ladders[j].levels[-1])
        mine = np.zeros_like(prep.capacity)
        if config.home[j] == r:
            rho = np.full(prep.jobs[j].window_slots, r)
            mine = _load(prep, j, rho, config.sels[j])
        elif j in config.moving:
            mine = _load(prep, j, *config.moving[j])
        window = prep.window(j)
        tight = (free + mine)[r, window] < top
        return bool(np.any(tight)) and any(
            k != j and r in prep.allowed[k] and self.overlap(j, k) for k in config.moving
        )

    def overlap(self, j: int, k: int) -> bool:
        a, b = self.prep.jobs[j], self.prep.jobs[k]
        return max(a.arrival_slot, b.arrival_slot) < min(a.deadline_slot, b.deadline_slot)

    def groups(self, config: _Config, free: IntArray) -> list[tuple[int, ...]]:
        """Pairs of migrating jobs in conflict (one cannot reach its top level in a region
        and slot where the other may run), then triples (one in conflict with both)."""
        moving = sorted(config.moving)
        conflict = {
            (j, k)
            for j, k in itertools.combinations(moving, 2)
            if self.overlap(j, k)
            and any(
                self.contested(config, free, x, r)
                for x, y in ((j, k), (k, j))
                for r in set(self.prep.allowed[x]) & set(self.prep.allowed[y])
            )
        }
        linked: dict[int, set[int]] = {}
        for j, k in conflict:
            linked.setdefault(j, set()).add(k)
            linked.setdefault(k, set()).add(j)
        triples = {
            tuple(sorted((hub, a, b)))
            for hub, others in linked.items()
            for a, b in itertools.combinations(sorted(others), 2)
        }
        return [*sorted(conflict), *sorted(triples)]

    def reinsert(self, config: _Config, order: Sequence[int]) -> _Config | None:
        """``config`` with the migrating jobs of ``order`` taken out and placed again in
        that order, each by its priced best response (or, failing that, in the capacity
        left); None if one cannot be placed."""
        moving = {k: plan for k, plan in config.moving.items() if k not in order}
        current = self.settle(config.home, moving, config)
        for j in order:
            if current is None:
                return None
            response = _priced(self.prep, current, j)
            placed = None if response is None else self.install(current, current.home, j, response)
            if placed is None:
                left = self.prep.capacity - current.load(self.prep, skip=j)
                fallback = _respond(self.prep, j, left)
                placed = (
                    None
                    if fallback is None
                    else self.settle(current.home, {**current.moving, j: fallback}, current)
                )
            current = placed
        return current

    def improve(self, config: _Config) -> _Config:
        """Local search, every move kept only if it lowers the total, until none does or the
        time is up: first the best of each migrating job's responses (again for a job
        whenever the servers in a slot of its window changed), then the first of the other
        :meth:`moves` that pays off."""
        dirty = set(config.moving)
        while not self.out_of_time():
            if dirty:
                j = min(dirty)
                dirty.discard(j)
                found = [c for c in self.responses(config, j) if c is not None]
                best = min(found, key=lambda c: c.total, default=None)
                if best is not None and self.pays(config, best):
                    dirty |= self.affected(config, best)
                    config = best
                continue
            for candidate in self.moves(config):
                if self.out_of_time():
                    return config
                if candidate is not None and self.pays(config, candidate):
                    dirty |= self.affected(config, candidate)
                    config = candidate
                    break
            else:
                return config
        return config

    @staticmethod
    def pays(old: _Config, new: _Config) -> bool:
        return new.total < old.total * (1 - _IMPROVE) - 1e-12

    def affected(self, old: _Config, new: _Config) -> set[int]:
        """The migrating jobs whose windows hold a slot where the servers of a region
        changed from ``old`` to ``new``."""
        prep = self.prep
        changed = np.any(old.load(prep) != new.load(prep), axis=0)
        count = np.concatenate([[0], np.cumsum(changed)])
        return {
            j
            for j in new.moving
            if count[prep.jobs[j].deadline_slot] > count[prep.jobs[j].arrival_slot]
        }


def _fast_regions(prep: _Prep, time_limit_s: float) -> tuple[_Solution, str] | None:
    """The fast solver's solution and a note; None if its construction placed not every job.

    With migrating jobs, the plan in which every job stays in one region (this solver, with
    half the time) is one of the starts: a plan without moves is one a migrating job may
    follow, so migrating can only make the plan cheaper.
    """
    started = time.perf_counter()
    search = _Search(prep, started + time_limit_s)
    found = search.independent()
    if found is not None and found[1]:
        return found[0].solution(prep), "every job's plan alone in its cleanest region fits"
    starts = [c for c in (None if found is None else found[0], search.construct()) if c]
    if any(prep.migrate):
        staying = _fast_regions(
            dataclasses.replace(prep, migrate=tuple(False for _ in prep.jobs)), time_limit_s / 2
        )
        if staying is not None:
            starts.append(_as_config(prep, staying[0]))
    if not starts:
        return None
    best = search.improve(min(starts, key=lambda c: c.total))
    assigned = search.assignments(best)
    if assigned is not best:
        best = search.improve(assigned)
    # Kicks: the migrating jobs taken out and placed again, the tightest or the loosest
    # first, and the search run again; the best local optimum is kept.
    moving = sorted(best.moving, key=lambda j: (search.room(j), j))
    for order in (moving, moving[::-1]) if len(moving) > 1 else ():
        if search.out_of_time():
            break
        kicked = search.reinsert(best, order)
        if kicked is not None:
            kicked = search.improve(kicked)
            if kicked.total < best.total * (1 - _IMPROVE) - 1e-12:
                best = kicked
    solution = search.polish(best).solution(prep)
    if not _valid(prep, solution):  # pragma: no cover - a bug
        return None
    return solution, ""


def _as_config(prep: _Prep, solution: _Solution) -> _Config:
    """A solution as a configuration of the search (a migrating job with its region per slot,
    the others with their region)."""
    home = []
    moving: dict[int, tuple[IntArray, Selection]] = {}
    sels: dict[int, Selection] = {}
    for j, (rho, sel) in enumerate(solution.pairs()):
        if prep.migrate[j]:
            home.append(-1)
            moving[j] = (rho, sel)
        else:
            home.append(int(rho[0]))
            sels[j] = sel
    return _Config(tuple(home), moving, sels, solution.rate(prep))


def _staying_state(
    prep: _Prep, home: tuple[int, ...], members: Sequence[int], busy: IntArray
) -> _State:
    """The jobs ``members`` (that stay in one region, in ``home``) as one cluster instance
    with the regions laid end to end, in the capacity the migrating jobs (``busy``) leave;
    nothing planned yet."""
    horizon = prep.horizon
    inst = _Instance(
        jobs=tuple(
            ClusterJob(
                f"{prep.jobs[j].name}@{prep.names[home[j]]}",
                prep.jobs[j].job,
                home[j] * horizon + prep.jobs[j].arrival_slot,
                home[j] * horizon + prep.jobs[j].deadline_slot,
                prep.jobs[j].weight,
            )
            for j in members
        ),
        ladders=tuple(prep.ladders[j] for j in members),
        targets=np.array([prep.targets[j] for j in members]),
        carbon=prep.carbon.ravel(),
        capacity=(prep.capacity - busy).ravel(),
        slot_hours=prep.slot_hours,
    )
    return _State(inst)


# ----------------------------------------------------------------------------------------------
# The exact solver: one MILP over region × job × slot


@dataclass(frozen=True, eq=False)
class _Milp:
    inst: _Instance  # the regions laid end to end, one virtual job per (job, allowed region)
    pairs: tuple[tuple[int, int], ...]  # (job, region) of each virtual job
    offsets: IntArray  # x block of each virtual job (its u block follows)
    sizes: IntArray
    y_offset: int  # assignment binaries of the pairs whose job does not migrate
    y_index: Mapping[int, int]  # virtual job -> its y variable
    z_offset: int  # "finishes" binaries per job (diagnosis only)
    n_vars: int


def _milp_model(prep: _Prep, with_z: bool) -> _Milp:
    horizon = prep.horizon
    pairs = tuple((j, r) for j in range(len(prep.jobs)) for r in prep.allowed[j])
    virtual = tuple(
        ClusterJob(
            f"{prep.jobs[j].name}@{prep.names[r]}",
            prep.jobs[j].job,
            r * horizon + prep.jobs[j].arrival_slot,
            r * horizon + prep.jobs[j].deadline_slot,
        )
        for j, r in pairs
    )
    inst = _Instance(
        jobs=virtual,
        ladders=tuple(prep.ladders[j] for j, _ in pairs),
        targets=np.array([prep.targets[j] for j, _ in pairs]),
        carbon=prep.carbon.ravel(),
        capacity=prep.capacity.ravel(),
        slot_hours=prep.slot_hours,
    )
    y_index = {
        v: i for i, v in enumerate(v for v, (j, _) in enumerate(pairs) if not prep.migrate[j])
    }
    base = _layout(inst)
    n_z = len(prep.jobs) if with_z else 0
    lay = _layout(inst, extra=len(y_index) + n_z)
    return _Milp(
        inst=inst,
        pairs=pairs,
        offsets=lay.offsets,
        sizes=lay.sizes,
        y_offset=base.n_vars,
        y_index=y_index,
        z_offset=base.n_vars + len(y_index),
        n_vars=lay.n_vars,
    )


def _run_regional_milp(
    prep: _Prep, model: _Milp, cost: FloatArray, with_z: bool, time_limit_s: float
) -> FloatArray | None:
    """Solve the regional MILP; None if HiGHS proves it infeasible.

    Raises:
        _SolverTrouble: if HiGHS gives no usable answer in time.
    """
    from scipy.optimize import LinearConstraint
    from scipy.sparse import coo_array

    lay = _Layout(model.offsets, model.sizes, model.n_vars)
    matrix, lower, upper, work = _milp_rows(model.inst, lay)
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    vals: list[FloatArray] = []
    lo: list[FloatArray] = []
    hi: list[FloatArray] = []

    def add_rows(row: IntArray, col: IntArray, val: FloatArray, low: float, high: float) -> None:
        """Rows numbered ``row`` (0.. in this block, each used at least once)."""
        count = int(row.max()) + 1
        start = sum(len(x) for x in lo)
        rows.append(start + row)
        cols.append(col)
        vals.append(val)
        lo.append(np.full(count, low))
        hi.append(np.full(count, high))

    n_jobs = len(prep.jobs)
    by_job: list[list[int]] = [[] for _ in range(n_jobs)]
    for v, (j, _) in enumerate(model.pairs):
        by_job[j].append(v)
    for j in range(n_jobs):
        xs = np.concatenate(
            [np.arange(model.offsets[v], model.offsets[v] + model.sizes[v]) for v in by_job[j]]
        )
        one = np.zeros(len(xs), dtype=np.int64)
        target = float(prep.targets[j])
        if with_z:
            # Σ work − target · z ≥ 0 and Σ work ≤ target.
            add_rows(
                np.append(one, 0),
                np.append(xs, model.z_offset + j),
                np.append(work[xs], -target),
                0.0,
                np.inf,
            )
            add_rows(one, xs, work[xs], -np.inf, target)
        else:
            add_rows(one, xs, work[xs], target * (1 - _TOL), np.inf)
        steps = prep.ladders[j].steps
        slots = np.arange(prep.jobs[j].window_slots, dtype=np.int64)
        firsts = [model.offsets[v] + model.sizes[v] + slots * steps for v in by_job[j]]
        if not prep.migrate[j]:
            ys = np.array([model.y_offset + model.y_index[v] for v in by_job[j]], dtype=np.int64)
            add_rows(np.zeros(len(ys), dtype=np.int64), ys, np.ones(len(ys)), 1.0, 1.0)
            for u_first, y in zip(firsts, ys, strict=True):
                # The first step of every slot held only in the chosen region: u − y ≤ 0.
                add_rows(
                    np.concatenate([slots, slots]),
                    np.concatenate([u_first, np.full(len(slots), y)]),
                    np.concatenate([np.ones(len(slots)), -np.ones(len(slots))]),
                    -np.inf,
                    0.0,
                )
        else:
            # At most one region per slot: Σ_regions u[first step] ≤ 1.
            add_rows(
                np.tile(slots, len(firsts)),
                np.concatenate(firsts),
                np.ones(len(slots) * len(firsts)),
                -np.inf,
                1.0,
            )
    lower_extra, upper_extra = np.concatenate(lo), np.concatenate(hi)
    extra = coo_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(lower_extra), model.n_vars),
    ).tocsr()
    integrality = np.zeros(model.n_vars)
    for v in range(len(model.pairs)):
        u0 = int(model.offsets[v] + model.sizes[v])
        integrality[u0 : u0 + int(model.sizes[v])] = 1
    integrality[model.y_offset :] = 1
    constraints = [
        LinearConstraint(matrix, lower, upper),
        LinearConstraint(extra, lower_extra, upper_extra),
    ]
    return _highs(cost, constraints, integrality, time_limit_s)


def _emission_costs(prep: _Prep, model: _Milp) -> FloatArray:
    cost = np.zeros(model.n_vars)
    for v, (j, r) in enumerate(model.pairs):
        x0, size = int(model.offsets[v]), int(model.sizes[v])
        carbon = prep.carbon[r, prep.window(j)]
        cost[x0 : x0 + size] = (carbon[:, None] * prep.ladders[j].d_power_w[None, :]).ravel()
    return cost


def _polish(prep: _Prep, model: _Milp, solution: FloatArray) -> _Solution:
    """Per job: the steps HiGHS held (in the one region holding each slot), those it used in
    full kept, the residual work in the held steps cheapest first (at most one partly used).

    Raises:
        _SolverTrouble: if the solution does not add up within tolerance.
    """
    rhos, sels = [], []
    for j in range(len(prep.jobs)):
        lad = prep.ladders[j]
        n, steps = prep.jobs[j].window_slots, lad.steps
        count = np.zeros(n, dtype=np.int64)
        full = np.zeros(n, dtype=np.int64)
        rho = np.full(n, prep.allowed[j][0], dtype=np.int64)
        for v, (k, r) in enumerate(model.pairs):
            if k != j:
                continue
            x0, size = int(model.offsets[v]), int(model.sizes[v])
            u = solution[x0 + size : x0 + 2 * size].reshape(n, steps) > 0.5
            held = np.cumprod(u, axis=1).sum(axis=1).astype(np.int64)
            x = solution[x0 : x0 + size].reshape(n, steps)
            used = np.minimum(np.cumprod(x >= _FULL, axis=1).sum(axis=1), held)
            here = held > 0
            if np.any(count[here] > 0):
                raise _SolverTrouble("HiGHS held a job in two regions in one slot")
            count[here], full[here] = held[here], used[here]
            if not prep.migrate[j] and v in model.y_index:
                if solution[model.y_offset + model.y_index[v]] > 0.5:
                    rho[:] = r
            else:
                rho[here] = r
        unit = _unit_cost(lad, _effective(prep, j, rho)) + _mask_below(full, steps)
        sel = _greedy_by_unit(unit, lad.d_work, float(prep.targets[j]), count)
        if sel is None:
            raise _SolverTrouble("HiGHS's solution did not add up within tolerance")
        rhos.append(rho)
        sels.append(sel)
    out = _Solution(tuple(rhos), tuple(sels))
    if not _valid(prep, out):
        raise _SolverTrouble("HiGHS's solution did not fit the capacities within tolerance")
    return out


def _exact_regions(prep: _Prep, time_limit_s: float) -> _Solution | None:
    """The least-carbon solution (HiGHS, polished); None if HiGHS proves there is none.

    Raises:
        _SolverTrouble: if HiGHS gives no usable answer in time.
    """
    model = _milp_model(prep, with_z=False)
    solution = _run_regional_milp(prep, model, _emission_costs(prep, model), False, time_limit_s)
    return None if solution is None else _polish(prep, model, solution)


# ----------------------------------------------------------------------------------------------
# A set that cannot fit


def _fits_alone(prep: _Prep, j: int) -> bool:
    """Whether job ``j`` fits its window in one of its regions with the capacity to itself
    (a migrating job: in the roomiest allowed region of each slot)."""
    lad = prep.ladders[j]
    window = prep.window(j)
    target = float(prep.targets[j]) * (1 - _TOL)
    caps = prep.capacity[list(prep.allowed[j]), window]
    if prep.migrate[j]:
        return _work_within(lad, _max_steps(lad, caps.max(axis=0))) >= target
    return any(_work_within(lad, _max_steps(lad, cap)) >= target for cap in caps)


def _feasible(prep: _Prep, time_limit_s: float) -> bool:
    """Whether every job fits: the fast construction, else a MILP feasibility check."""
    if not all(_fits_alone(prep, j) for j in range(len(prep.jobs))):
        return False
    if _Search(prep, time.perf_counter() + time_limit_s).construct() is not None:
        return True
    model = _milp_model(prep, with_z=False)
    try:
        return (
            _run_regional_milp(prep, model, np.zeros(model.n_vars), False, time_limit_s) is not None
        )
    except _SolverTrouble:
        return False


def _max_weight(prep: _Prep, time_limit_s: float) -> tuple[list[int], dict[int, float]] | None:
    """The largest total weight of jobs that can all finish (then the earlier-listed ones);
    for the others the most of their work that fits meanwhile. Returns (late jobs, work that
    fits), or None if HiGHS gives no answer."""
    n_jobs = len(prep.jobs)
    model = _milp_model(prep, with_z=True)
    weights = np.array([c.weight for c in prep.jobs])
    order_unit = n_jobs + 1.0  # above any sum of work shares
    order_bonus = order_unit * (n_jobs - np.arange(n_jobs))
    weight_unit = (float(order_bonus.sum()) + order_unit) / float(weights.min())
    cost = np.zeros(model.n_vars)
    for v, (j, _) in enumerate(model.pairs):
        x0, size = int(model.offsets[v]), int(model.sizes[v])
        lad = prep.ladders[j]
        cost[x0 : x0 + size] = -np.tile(lad.d_work, prep.jobs[j].window_slots) / prep.targets[j]
    for j in range(n_jobs):
        cost[model.z_offset + j] = -(weight_unit * weights[j] + order_bonus[j])
    try:
        solution = _run_regional_milp(prep, model, cost, True, time_limit_s)
    except _SolverTrouble:
        return None
    if solution is None:
        return None
    late = [j for j in range(n_jobs) if solution[model.z_offset + j] < 0.5]
    fits = {}
    for j in late:
        done = 0.0
        for v, (k, _) in enumerate(model.pairs):
            if k == j:
                x0, size = int(model.offsets[v]), int(model.sizes[v])
                tiles = np.tile(prep.ladders[j].d_work, prep.jobs[j].window_slots)
                done += float(tiles @ solution[x0 : x0 + size])
        fits[j] = min(done, float(prep.targets[j])) * prep.slot_hours
    return late, fits


def _alone_work(prep: _Prep, j: int) -> float:
    """The most of job ``j``'s work that fits in its window in one of its regions alone."""
    lad = prep.ladders[j]
    caps = prep.capacity[list(prep.allowed[j]), prep.window(j)]
    if prep.migrate[j]:
        caps = caps.max(axis=0, keepdims=True)
    best = max(_work_within(lad, _max_steps(lad, cap)) for cap in caps)
    return min(best, float(prep.targets[j])) * prep.slot_hours


def _diagnose(prep: _Prep, time_limit_s: float) -> RegionalInfeasibleError:
    """The error for a set that does not fit (the caller knows it does not)."""
    n_jobs = len(prep.jobs)
    nowhere = [j for j in range(n_jobs) if not _fits_alone(prep, j)]
    found = _max_weight(prep, time_limit_s)
    if found is None or not found[0]:
        late = nowhere or list(range(n_jobs))
        fits = {j: _alone_work(prep, j) if j in nowhere else 0.0 for j in late}
    else:
        late, fits = found
    names = [prep.jobs[j].name for j in late]

    top = int(sum(int(lad.levels[-1]) for lad in prep.ladders))
    capacity_needed = _smallest(top, lambda k: _feasible(prep.changed(add=k), time_limit_s))

    shortest = min(len(c) for c in prep.carbon_all)
    room = shortest - max(prep.jobs[j].deadline_slot for j in late)
    extension: int | None = None

    def extended(e: int) -> _Prep:
        return prep.changed(deadlines={j: prep.jobs[j].deadline_slot + e for j in late})

    if room > 0:
        extension = _smallest(room, lambda e: _feasible(extended(e), time_limit_s))

    dt = prep.slot_hours
    details = ", ".join(
        f"{prep.jobs[j].name} (needs {prep.jobs[j].job.work:.6g} work units, {fits[j]:.6g} fit"
        + (
            f"; it fits in none of its regions "
            f"({', '.join(prep.names[r] for r in prep.allowed[j])}) even alone"
            if j in nowhere
            else ""
        )
        + ")"
        for j in late
    )
    fixes = []
    if capacity_needed is not None:
        fixes.append(f"{capacity_needed} more servers in every slot of every region")
    if extension is not None:
        fixes.append(
            f"the deadline{'s' if len(late) > 1 else ''} of {', '.join(names)} extended by "
            f"{extension * dt:g} h"
        )
    if not fixes:
        fixes.append("longer deadlines than the carbon forecasts cover")
    capacities = ", ".join(
        f"{name}: at most {int(prep.capacity[r].max())}" for r, name in enumerate(prep.names)
    )
    message = (
        f"cluster plan: {len(late)} of {n_jobs} jobs cannot finish by their deadlines in the "
        f"regions they may use ({capacities} servers per slot): {details}"
        + _late_message(len(late), n_jobs, fixes)
    )
    return RegionalInfeasibleError(
        message,
        late_jobs=tuple(names),
        unplaceable=tuple(prep.jobs[j].name for j in late if j in nowhere),
        work_required={prep.jobs[j].name: prep.jobs[j].job.work for j in late},
        work_possible={prep.jobs[j].name: fits[j] for j in late},
        capacity_needed=capacity_needed,
        deadline_extension_hours=None if extension is None else extension * dt,
    )


# ----------------------------------------------------------------------------------------------
# Plans from solutions


def _assemble(
    prep: _Prep, solution: _Solution, solver: str, started: float, notes: tuple[str, ...]
) -> RegionalPlan:
    """The regional plan of a solution: whole jobs, and per region the parts run there."""
    horizon = prep.horizon
    whole: list[RegionalJobPlan] = []
    parts: list[list[ClusterJobPlan]] = [[] for _ in prep.names]
    used = np.zeros((prep.n_regions, horizon), dtype=np.int64)
    for j, (rho, sel) in enumerate(solution.pairs()):
        c = prep.jobs[j]
        window = prep.window(j)
        schedule = schedule_from_selection(
            solver,
            c.job,
            prep.ladders[j],
            _effective(prep, j, rho),
            sel,
            deadline_slots=c.window_slots,
            started=started,
        )
        active = schedule.servers > 0
        slot_regions: list[str | None] = [None] * horizon
        for i in np.flatnonzero(active):
            slot_regions[c.arrival_slot + int(i)] = prep.names[int(rho[i])]
        first = int(np.argmax(active)) if np.any(active) else 0
        whole.append(
            RegionalJobPlan(
                c.name,
                c.arrival_slot,
                c.deadline_slot,
                schedule,
                region=prep.names[int(rho[first])],
                slot_regions=tuple(slot_regions),
                migrate=prep.migrate[j],
            )
        )
        regions = sorted(set(rho[active].tolist())) if prep.migrate[j] else [int(rho[first])]
        for r in regions:
            if not prep.migrate[j]:
                part = schedule
            else:
                here = active & (rho == r)
                p = schedule.partial_slot
                inside = p is not None and bool(here[p])
                piece = realise(
                    solver,
                    c.job,
                    prep.carbon[r, window],
                    np.where(here, schedule.servers, 0),
                    partial_slot=p if inside else None,
                    fraction=schedule.last_slot_fraction if inside else 1.0,
                    servers_after=schedule.partial_servers_after if inside else 0,
                    deadline_slots=c.window_slots,
                    solve_ms=schedule.solve_ms,
                )
                part = dataclasses.replace(piece, work_required=piece.work_done)
            parts[r].append(ClusterJobPlan(c.name, c.arrival_slot, c.deadline_slot, part))
            used[r, window] += part.servers
    solve_ms = (time.perf_counter() - started) * 1e3
    plans = {
        name: ClusterPlan(
            solver=solver,
            jobs=tuple(parts[r]),
            capacity=prep.capacity[r],
            servers_used=used[r],
            slot_hours=prep.slot_hours,
            solve_ms=solve_ms,
        )
        for r, name in enumerate(prep.names)
    }
    return RegionalPlan(solver, tuple(whole), plans, prep.slot_hours, solve_ms, notes)


# ----------------------------------------------------------------------------------------------
# Public entry points


def plan_regions(
    jobs: Sequence[RegionalJob | ClusterJob],
    regions: Sequence[Region],
    *,
    solver: Solver = "fast",
    time_limit_s: float = 60.0,
) -> RegionalPlan:
    """Plan all ``jobs`` over the ``regions``: each job a region (or, if it may migrate, a
    region per slot) and a schedule, least total emissions within every region's capacity and
    every deadline.

    Args:
        jobs: the jobs (a plain :class:`ClusterJob` may run in every region and does not
            migrate), with unique names and the same slot length.
        regions: the regions, with unique names, forecasts on the same slot grid from the
            same start that reach the latest deadline.
        solver: ``fast`` (the default) or ``exact`` (HiGHS; never worse than ``fast``).
        time_limit_s: HiGHS time limit (exact solver, and the diagnosis of a set that does
            not fit); also bounds the fast solver's search.

    Returns:
        The plan: each job's region and schedule, per region its cluster plan, the totals.

    Raises:
        RegionalInfeasibleError: if the jobs cannot all finish by their deadlines; the
            message names the jobs that cannot (and those that fit in none of their regions
            even alone), the work that fits, and the servers or deadline extension that
            would make the set fit.
        PlanningError: on malformed input (no region or job, repeated names, an unknown
            region, a forecast or capacity that does not reach the latest deadline, mixed
            slot lengths, an unknown solver).
    """
    started = time.perf_counter()
    if solver not in ("fast", "exact"):
        raise PlanningError(f"unknown cluster solver {solver!r}; use 'fast' or 'exact'")
    prep, _ = _prepare_regions(jobs, regions)
    if not all(_fits_alone(prep, j) for j in range(len(prep.jobs))):
        raise _diagnose(prep, time_limit_s)
    fast = _fast_regions(prep, time_limit_s)
    notes: tuple[str, ...] = (fast[1],) if fast is not None and fast[1] else ()
    if solver == "fast" and fast is not None:
        return _assemble(prep, fast[0], "fast", started, notes)
    try:
        exact = _exact_regions(prep, time_limit_s)
    except _SolverTrouble as trouble:
        if fast is not None:
            return _assemble(
                prep, fast[0], solver, started, (*notes, f"{trouble}; kept the fast plan")
            )
        raise PlanningError(
            f"cluster plan: the fast solver could not place every job and {trouble}; "
            f"raise the time limit (now {time_limit_s:g} s) or the capacities"
        ) from None
    if exact is None:
        raise _diagnose(prep, time_limit_s)
    if solver == "fast":
        note = "the fast construction could not place every job; the exact solver did"
        return _assemble(prep, exact, "fast", started, (note,))
    if fast is not None and fast[0].rate(prep) < exact.rate(prep):
        note = "HiGHS returned a costlier plan than the fast solver (tolerance or time limit)"
        return _assemble(prep, fast[0], "exact", started, (note,))
    return _assemble(prep, exact, "exact", started, ())


def plan_regions_independent(
    jobs: Sequence[RegionalJob | ClusterJob], regions: Sequence[Region]
) -> RegionalPlan:
    """Every job planned alone with the ``carbonscaler`` greedy in its cleanest allowed region
    (a migrating job: in the cleanest allowed region of each slot), ignoring the capacities.

    A region's ``servers_used`` may exceed its capacity; see
    :func:`~carbonscaler.planner.cluster.overcommit`.

    Raises:
        ClusterInfeasibleError: if a job cannot finish in its window even alone.
        PlanningError: on malformed input (as :func:`plan_regions`).
    """
    started = time.perf_counter()
    prep, _ = _prepare_regions(jobs, regions)
    rhos, sels = [], []
    for j, c in enumerate(prep.jobs):
        lad = prep.ladders[j]
        window = prep.window(j)
        if _work_within(lad, np.full(c.window_slots, lad.steps)) < prep.targets[j] * (1 - _TOL):
            inst = _prepare([c], prep.carbon[0], 0)
            raise _alone_error(inst, [0])
        allowed = np.asarray(prep.allowed[j], dtype=np.int64)
        carbon = prep.carbon[allowed, window]
        target = float(prep.targets[j])
        if prep.migrate[j]:
            rho = allowed[np.argmin(carbon, axis=0)]
            sel = select_increments(lad, carbon.min(axis=0), target)
        else:
            options = [select_increments(lad, row, target) for row in carbon]
            costs = [_rate(lad, row, s) for row, s in zip(carbon, options, strict=True)]
            best = int(np.argmin(costs))
            rho = np.full(c.window_slots, allowed[best], dtype=np.int64)
            sel = options[best]
        rhos.append(rho.astype(np.int64))
        sels.append(sel)
    return _assemble(prep, _Solution(tuple(rhos), tuple(sels)), "independent", started, ())


def plan_regions_agnostic(
    jobs: Sequence[RegionalJob | ClusterJob], regions: Sequence[Region]
) -> RegionalPlan:
    """Carbon-agnostic: every job in its first allowed region (it never migrates), where the
    jobs are served first come, first served at ``m`` servers from arrival
    (:func:`~carbonscaler.planner.cluster.plan_cluster_agnostic`, per region).

    Jobs may finish after their deadlines, using each region's carbon past the latest
    deadline; the plans' notes say which are not done when a forecast ends.

    Raises:
        PlanningError: on malformed input (as :func:`plan_regions`).
    """
    started = time.perf_counter()
    prep, _ = _prepare_regions(jobs, regions)
    members: list[list[int]] = [[] for _ in prep.names]
    for j in range(len(prep.jobs)):
        members[prep.allowed[j][0]].append(j)
    plans: dict[str, ClusterPlan] = {}
    by_job: dict[int, tuple[int, ClusterJobPlan]] = {}
    notes: list[str] = []
    for r, (name, region) in enumerate(zip(prep.names, regions, strict=True)):
        if not members[r]:
            continue
        plan = plan_cluster_agnostic(
            [prep.jobs[j] for j in members[r]], region.carbon, region.capacity
        )
        plans[name] = plan
        notes += [f"{name}: {note}" for note in plan.notes]
        for j, part in zip(members[r], plan.jobs, strict=True):
            by_job[j] = (r, part)
    horizon = max([prep.horizon, *(p.horizon for p in plans.values())])
    padded: dict[str, ClusterPlan] = {}
    for name, region in zip(prep.names, regions, strict=True):
        cap = _extend(_capacity_array(region.capacity, prep.horizon), horizon)
        if name not in plans:
            used = np.zeros(horizon, dtype=np.int64)
            padded[name] = ClusterPlan("agnostic", (), cap, used, prep.slot_hours, 0.0)
            continue
        plan = plans[name]
        used = np.zeros(horizon, dtype=np.int64)
        used[: plan.horizon] = plan.servers_used
        padded[name] = dataclasses.replace(plan, capacity=cap, servers_used=used)
    whole = []
    for j in range(len(prep.jobs)):
        r, part = by_job[j]
        servers = part.servers_on(horizon)
        slot_regions = tuple(prep.names[r] if s > 0 else None for s in servers)
        whole.append(
            RegionalJobPlan(
                part.name,
                part.arrival_slot,
                part.deadline_slot,
                part.schedule,
                region=prep.names[r],
                slot_regions=slot_regions,
                migrate=prep.migrate[j],
            )
        )
    solve_ms = (time.perf_counter() - started) * 1e3
    return RegionalPlan("agnostic", tuple(whole), padded, prep.slot_hours, solve_ms, tuple(notes))
