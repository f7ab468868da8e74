"""A shared cluster on Kubernetes: a ``CarbonScalerCluster``'s decisions, as a pure function.

Jobs join a cluster by naming it (``carbonScalerSpec.cluster``, same namespace). The cluster's
pass calls :func:`decide_cluster` with the cluster resource, its member jobs (their resources
and status), the clock and the latest carbon data; it returns the cluster's status patch, the
Events, and for every member a :class:`~carbonscaler.operator.reconcile.Membership` — its
plan and its grant for the current slot — which the member's own
:func:`~carbonscaler.operator.reconcile.reconcile` then runs (create, rescale, pause, resume
its Kubeflow job; account; finish). No I/O happens here.

**Every decision is :class:`carbonscaler.cluster.ClusterCore`'s** — the cluster core the
advisor's what-if simulation and the local runtime run: admission, the joint plan, re-plans
on arrival, departure and drift, and the first-come-first-served queue under the capacity.
This module only maps the resources onto it:

* **Slots** are the cluster's: slot 0 starts at its creation (``status.epoch``), each
  ``spec.slotSeconds`` long; member jobs must have the same ``slotSeconds``.
* **Arrival.** A job arrives in the slot it was created in (or the cluster's slot 0, if it is
  older than the cluster); its deadline counts from its creation and is rounded *down* to a
  slot start (never later than the job asked). Its first decision is made at once, in the
  pass its creation triggers, not at the next slot boundary: a new job is admitted mid-slot
  and, under ``joint``, every active job is re-planned with it. The slot it arrives in is
  planned as a whole slot although part of it has passed; a job that falls behind for it is
  re-planned at the next boundary (the core's ``behind`` trigger).
* **When it decides**: at the first pass in each new slot, and mid-slot when a job arrives,
  leaves (finished, failed, deleted, or its spec edited — it is then admitted again with its
  new spec and its progress so far) or the cluster's spec changes — one decision at the
  current slot, with every job's progress at the slot's start: after a gap (the
  operator was down), the missed boundaries are history, and deciding them now with today's
  progress would only fire spurious triggers. Between decisions the grants stand.
* **Progress** is each member's own record (``status.workDone``/``nominalWork``), carried
  (at the profile's rate for the workers it runs) to the start of the slot decided for: a
  member's status may lag its work by a pass, and a plan re-made mid-slot covers the whole
  slot.
* **Departures.** A member that leaves while the core still plans it (deleted, failed, or
  edited) is fed to the core once more as done, so the core re-plans the others in the
  servers it frees (``departure``).
* **Admission.** A job that could not finish even alone on the whole cluster (its deadline
  passed, ``minReplicas`` above the capacity, or too little time at the servers there are)
  is refused: it fails with the planner's explanation, rather than block the queue.
* **State** lives in the cluster's status: the core's saved form (``status.core``, every
  active job's plan), one record per admitted job (``status.jobs``: window, identity, grant)
  and the last forecast. Every pass rebuilds the core from them
  (:meth:`~carbonscaler.cluster.ClusterCore.restore`), so a restarted operator continues
  exactly where the last pass left off.

Execution order (the handlers, :func:`pass_order`): members that must give servers back go
first; a member raises its workers only when the servers are free — the capacity less what the
other members' Kubeflow jobs may still hold (:func:`others_held`). So the Kubeflow jobs never
hold more than the capacity, and a job over it waits without a Kubeflow job: no pending pods.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from carbonscaler.cluster import ClusterCore, Grant
from carbonscaler.decision import Plans, Progress, Reason, Rules
from carbonscaler.kube.crd import CarbonScalerClusterSpec, JobKind
from carbonscaler.kube.operations import EventNote
from carbonscaler.operator._format import compact, iso, parse_time
from carbonscaler.operator.reconcile import (
    CarbonSnapshot,
    Membership,
    Settings,
    SettingsError,
    job_finished,
    job_of,
    settings_digest,
)
from carbonscaler.planner.cluster import ClusterJob
from carbonscaler.planner.model import FloatArray, Job, PlanningError, check_feasible
from carbonscaler.profile import ProfileError, ScalingProfile, linear_profile

__all__ = [
    "ClusterDecision",
    "ClusterObservation",
    "Member",
    "decide_cluster",
    "member_key",
    "member_progress",
    "others_held",
    "pass_order",
]

_EPS = 1e-9


def member_key(kind: JobKind, name: str) -> str:
    """A member's name in the cluster: ``<csmpi|cspt>/<job>`` (the two kinds may share names)."""
    return f"{kind.short_names[-1]}/{name}"


@dataclass(frozen=True)
class Member:
    """One job that names the cluster, as the cluster's pass read it.

    Args:
        kind: its kind.
        resource: the resource (metadata, spec, carbonScalerSpec, status).
        profile: its scaling profile from its ConfigMap, needed only until its status holds
            one (its first pass saves it).
    """

    kind: JobKind
    resource: dict[str, Any]
    profile: ScalingProfile | None = None

    @property
    def name(self) -> str:
        return str(self.resource["metadata"]["name"])

    @property
    def key(self) -> str:
        return member_key(self.kind, self.name)

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.resource.get("status") or {})


@dataclass(frozen=True)
class ClusterObservation:
    """Everything :func:`decide_cluster` looks at.

    Args:
        resource: the ``CarbonScalerCluster`` (metadata, spec, status).
        now: the time (epoch seconds).
        members: every job in its namespace that names it.
        carbon: the latest carbon data for its zone, or None.
    """

    resource: dict[str, Any]
    now: float
    members: Sequence[Member] = ()
    carbon: CarbonSnapshot | None = None


@dataclass
class ClusterDecision:
    """What the cluster's pass does: the cluster's status patch (a JSON merge patch, removed
    keys as None) and Events, each member's Events (by :func:`member_key`), and what each
    member's pass needs (its :class:`Membership`, in queue order)."""

    events: list[EventNote] = field(default_factory=list)
    member_events: dict[str, list[EventNote]] = field(default_factory=dict)
    status_patch: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    memberships: dict[str, Membership] = field(default_factory=dict)


# -- helpers ---------------------------------------------------------------------------------


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``: changed keys, nested
    objects diffed, removed keys as None."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = merge_patch(before, value)
            if inner:
                patch[key] = inner
        elif key not in old or before != value:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def member_progress(status: Mapping[str, Any], job: Job, at: float) -> Progress:
    """A member's progress at time ``at``, from its status: the work it reported (or,
    without reports, the work its server time promises) and the nominal work, both carried
    from its last accounting to ``at`` (forwards or back) at the profile's rate for the
    workers it runs; the level running and whether it started.

    The cluster decides with the progress at the start of the slot it decides for: a plan
    re-made mid-slot (a job arrived or left) covers the whole slot, so the work already done
    in it counts as the slot's, not before it.

    Without reports, a job whose server time covers its work counts as done for the cluster
    (its plan is over, the others are re-planned in the servers it frees); it keeps the
    workers it runs until its Kubeflow job ends — as a single job overrunning its plan does —
    and the others raise theirs only into servers it has released."""
    replicas = int(status.get("replicas", 0) or 0)
    level = min(replicas, job.profile.max_servers)
    nominal = float(status.get("nominalWork", 0.0) or 0.0)
    since = parse_time(status.get("accountedUntil"))
    carried = 0.0
    if since is not None and level > 0:
        carried = float(job.profile.throughput[level]) * (at - since) / 3600.0
        carried = max(carried, -nominal)
    started = int((status.get("child") or {}).get("launches", 0) or 0) > 0
    if status.get("progressSource") == "reported":
        done = max(float(status.get("workDone", 0.0) or 0.0) + min(carried, 0.0), 0.0)
        return Progress(done, nominal + carried, replicas, started)
    return Progress(min(nominal + carried, job.work), 0.0, replicas, started)


def others_held(held: Mapping[str, int], key: str) -> int:
    """Servers the members other than ``key`` may hold now."""
    return sum(count for other, count in held.items() if other != key)


def pass_order(memberships: Mapping[str, Membership], held: Mapping[str, int]) -> list[str]:
    """The order the members' passes run in: those granted fewer servers than they hold
    first (they free servers), then the others in queue order."""
    keys = list(memberships)

    def frees(key: str) -> bool:
        grant = memberships[key].grant
        return grant is not None and grant.held < held.get(key, 0)

    return [k for k in keys if frees(k)] + [k for k in keys if not frees(k)]


def _placeholder(key: str, arrival: int, deadline: int, slot_hours: float) -> ClusterJob:
    """A member that left, fed to the core once more as done so it re-plans the others."""
    return ClusterJob(key, Job(linear_profile(1), 1.0, 1, 1, slot_hours), arrival, deadline)


# -- the decision ----------------------------------------------------------------------------


class _ClusterRun:
    """One pass over a cluster: a working copy of its status and what to emit."""

    def __init__(self, obs: ClusterObservation) -> None:
        self.obs = obs
        self.meta = obs.resource["metadata"]
        self.name = str(self.meta["name"])
        self.old: dict[str, Any] = dict(obs.resource.get("status") or {})
        self.status: dict[str, Any] = {**self.old}
        self.decision = ClusterDecision()

    def event(self, type_: str, reason: str, message: str) -> None:
        self.decision.events.append(EventNote(type_, reason, message))

    def member_event(self, key: str, type_: str, reason: str, message: str) -> None:
        self.decision.member_events.setdefault(key, []).append(EventNote(type_, reason, message))

    def finish(self) -> ClusterDecision:
        patch = merge_patch(self.old, self.status)
        if patch:
            self.status["revision"] = int(self.old.get("revision", 0) or 0) + 1
            patch["revision"] = self.status["revision"]
        self.decision.status_patch = patch
        self.decision.status = self.status
        return self.decision

    def invalid(self, message: str) -> ClusterDecision:
        """The cluster cannot decide (its spec): say so once; its jobs wait, and those
        running keep their level."""
        if self.old.get("message") != message:
            self.event("Warning", "InvalidSpec", message)
        self.status.update(phase="Failed", message=message)
        for member in self.obs.members:
            self.decision.memberships[member.key] = Membership(
                self.name, found=True, waiting=f"its spec is invalid: {message}"
            )
        return self.finish()


@dataclass
class _Entry:
    """A member the cluster can plan: its settings, job and identity."""

    member: Member
    settings: Settings
    job: Job
    digest: str
    created: float


def decide_cluster(obs: ClusterObservation) -> ClusterDecision:
    """Decide for one shared cluster now. Pure: see the module docstring.

    Args:
        obs: the cluster, its members, the clock and the carbon data.

    Returns:
        The cluster's status patch and Events, each member's Events and Membership.
    """
    run = _ClusterRun(obs)
    status = run.status
    try:
        spec = CarbonScalerClusterSpec.model_validate(obs.resource.get("spec") or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"spec{''.join(f'.{p}' for p in err['loc'])}: "
            f"{str(err['msg']).removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        return run.invalid(problems)
    slot_s = spec.slot_seconds
    saved_pace = status.get("slotSeconds")
    if saved_pace is not None and int(saved_pace) != slot_s:
        return run.invalid(
            f"slotSeconds cannot change once the cluster has planned (it plans in slots of "
            f"{saved_pace} s); set it back, or create a new cluster"
        )
    epoch = (
        parse_time(status.get("epoch")) or parse_time(run.meta.get("creationTimestamp")) or obs.now
    )
    slot = max(math.floor((obs.now - epoch) / slot_s + _EPS), 0)
    slot_start = max(epoch + slot * slot_s, min(obs.now, epoch))
    slot_hours = slot_s / 3600.0
    status.update(
        epoch=iso(epoch),
        slotSeconds=slot_s,
        policy=spec.policy,
        phase="Ready",
        capacity=spec.capacity_at(slot),
    )

    records: dict[str, dict[str, Any]] = {
        k: dict(v) for k, v in (status.get("jobs") or {}).items() if isinstance(v, dict)
    }
    saved = status.get("core") if isinstance(status.get("core"), dict) else None
    saved_members: dict[str, Any] = dict((saved or {}).get("members") or {})
    if saved is not None and saved.get("policy") != spec.policy:
        run.event(
            "Normal",
            "PolicyChanged",
            f"policy {saved.get('policy')} → {spec.policy}: every active job is planned afresh",
        )
        saved_members = {}
        records = {k: r for k, r in records.items() if r.get("finished")}

    # The members the cluster can plan (the others' own passes say what is wrong with them).
    entries: list[_Entry] = []
    for member in obs.members:
        resource = member.resource
        if job_finished(resource):
            continue
        try:
            settings = Settings.from_resource(member.kind, resource)
        except SettingsError:
            continue
        if settings.cluster != run.name or settings.slot_seconds != slot_s:
            continue
        saved_profile = member.status.get("profile")
        profile = member.profile
        try:
            if saved_profile:
                profile = ScalingProfile(
                    np.asarray(saved_profile["throughput"], dtype=np.float64),
                    np.asarray(saved_profile["powerW"], dtype=np.float64),
                    name=str(saved_profile.get("name", settings.profile_name)),
                )
            if profile is None:
                continue
            job = job_of(settings, profile)
        except (ProfileError, PlanningError, KeyError, TypeError, ValueError):
            continue
        created = parse_time(resource["metadata"].get("creationTimestamp")) or obs.now
        entries.append(_Entry(member, settings, job, settings_digest(resource), created))
    entries.sort(key=lambda e: (e.created, e.member.key))

    # Who continues, who arrives, who is already done, who left.
    continuing: list[ClusterJob] = []
    arriving: list[ClusterJob] = []
    done: set[str] = set()
    refused: dict[str, str] = {}
    progress: dict[str, Progress] = {}
    by_key: dict[str, _Entry] = {}
    for entry in entries:
        key = entry.member.key
        by_key[key] = entry
        record = records.get(key)
        same = (
            record is not None
            and record.get("uid") == entry.member.resource["metadata"].get("uid")
            and record.get("digest") == entry.digest
        )
        if same and record is not None and record.get("finished"):
            done.add(key)
            continue
        seen = member_progress(entry.member.status, entry.job, slot_start)
        if same and record is not None and key in saved_members:
            arrival, deadline = int(record["arrivalSlot"]), int(record["deadlineSlot"])
            continuing.append(ClusterJob(key, entry.job, arrival, deadline))
            progress[key] = seen
            continue
        # New, or changed since it was admitted: (re-)admitted now with its progress so far.
        records.pop(key, None)
        saved_members.pop(key, None)
        arrival, deadline = _window(entry, epoch, slot_s)
        problem = _admission_problem(run.name, spec, entry, seen, arrival, deadline, slot)
        if problem is not None:
            refused[key] = problem
            continue
        arriving.append(ClusterJob(key, entry.job, arrival, deadline))
        progress[key] = seen
    planned = {j.name for j in continuing} | {j.name for j in arriving}
    leaving: list[ClusterJob] = []
    for key, data in saved_members.items():
        if key in planned or not isinstance(data, dict) or data.get("finished"):
            continue
        record = records.get(key) or {}
        slots = len((data.get("plans") or {}).get("servers") or [])
        arrival = int(record.get("arrivalSlot", 0))
        if slots <= 0:
            continue
        leaving.append(_placeholder(key, arrival, arrival + slots, slot_hours))
        progress[key] = Progress(work_done=1.0)
    records = {k: r for k, r in records.items() if k in planned or k in done}

    # A spec edit (the capacity) decides at once too: the queue holds the grants to it.
    digest = hashlib.sha256(
        json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()[:16]
    edited = status.get("specDigest") not in (None, digest)
    last = status.get("slot")
    due = last is None or slot > int(last) or bool(arriving) or bool(leaving) or edited
    jobs = continuing + arriving + leaving
    core_out: dict[str, Any] | None = {"policy": spec.policy, "members": {}}
    if due and jobs:
        decided = _decide(
            run,
            spec,
            epoch,
            slot,
            jobs,
            saved_members,
            progress,
            arriving,
            leaving,
            records,
            planned_capacity=(saved or {}).get("capacity"),
        )
        if decided is None:
            core_out = {"policy": spec.policy, "members": saved_members}
        else:
            core_out = decided
            status.update(slot=slot, specDigest=digest)
    else:
        assert core_out is not None
        core_out["members"] = {k: v for k, v in saved_members.items() if k in planned}
        if due:
            status.update(slot=slot, specDigest=digest)
    status["core"] = core_out
    status["jobs"] = records

    # What each member's pass needs, in queue order.
    grants_now = {
        k: _grant(r.get("grant"))
        for k, r in records.items()
        if (r.get("grant") or {}).get("slot") == slot
    }
    granted = sum(g.held for g in grants_now.values() if g is not None)
    queued = sum(1 for g in grants_now.values() if g is not None and Reason.QUEUED in g.reasons)
    active = sum(1 for r in records.values() if not r.get("finished"))
    forecast_time = parse_time((status.get("forecast") or {}).get("time"))
    base: dict[str, Any] = {
        "cluster": run.name,
        "found": True,
        "slot_seconds": slot_s,
        "epoch": epoch,
        "policy": spec.policy,
        "capacity": spec.capacity_at(slot),
    }
    members_out = (core_out or {}).get("members") or {}
    for key, record in records.items():
        grant_data = record.get("grant") or {}
        plan = (members_out.get(key) or {}).get("plans")
        run.decision.memberships[key] = Membership(
            **base,
            arrival_slot=int(record["arrivalSlot"]),
            deadline_slot=int(record["deadlineSlot"]),
            grant=_grant(grant_data),
            grant_slot=int(grant_data["slot"]) if "slot" in grant_data else None,
            plan=plan if not record.get("finished") else None,
            forecast_time=forecast_time,
            replans=int(record.get("replans", 0)),
            finished=bool(record.get("finished")),
        )
    for member in obs.members:
        key = member.key
        if key in run.decision.memberships:
            continue
        run.decision.memberships[key] = Membership(**base, refused=refused.get(key))
    status.update(
        granted=granted,
        queued=queued,
        active=active,
        message=f"slot {slot}: {active} jobs, {granted} of {spec.capacity_at(slot)} servers "
        f"granted{f', {queued} queued' if queued else ''}",
    )
    return run.finish()


def _window(entry: _Entry, epoch: float, slot_s: int) -> tuple[int, int]:
    """A job's arrival and deadline slots: the slot it was created in (slot 0 if it is older
    than the cluster), and its deadline from its creation rounded down to a slot start."""
    since = max(entry.created, epoch)
    arrival = math.floor((since - epoch) / slot_s + _EPS)
    end = entry.created + entry.settings.deadline_slots * slot_s
    deadline = math.floor((end - epoch) / slot_s + _EPS)
    return arrival, deadline


def _admission_problem(
    cluster: str,
    spec: CarbonScalerClusterSpec,
    entry: _Entry,
    seen: Progress,
    arrival: int,
    deadline: int,
    slot: int,
) -> str | None:
    """Why the cluster cannot take a job even alone, or None."""
    begin = max(arrival, slot)
    if deadline <= begin:
        return (
            f"its deadline (cluster slot {deadline}) leaves no slot in cluster {cluster} (now "
            f"slot {slot}); raise carbonScalerSpec.deadline"
        )
    job = entry.job
    top = max(spec.capacity_at(i) for i in range(begin, deadline))
    if job.min_servers > top:
        return (
            f"minReplicas ({job.min_servers}) is more than cluster {cluster} ever has before "
            f"the deadline ({top} servers): the job could never run; lower minReplicas or "
            "raise the cluster's capacity"
        )
    if spec.policy == "agnostic":
        return None  # carbon-agnostic does not look at the deadline (as a single job)
    high = job.min_servers if spec.policy == "suspend-resume" else min(job.max_servers, top)
    remaining = max(job.work - seen.work_done, job.work * 1e-9)
    alone = job.with_bounds(job.min_servers, high).with_work(remaining)
    try:
        check_feasible(alone, alone.ladder(), deadline - begin, policy=f"cluster {cluster}")
    except PlanningError as exc:
        return f"{exc} (at most {top} servers in cluster {cluster})"
    return None


def _grant(data: Any) -> Grant | None:
    if not isinstance(data, dict) or "first" not in data:
        return None
    reasons = Reason.from_words(data.get("reasons") or [])
    return Grant(int(data["first"]), float(data["fraction"]), int(data["then"]), reasons)


def _forecast(
    run: _ClusterRun, spec: CarbonScalerClusterSpec, epoch: float, slot: int, horizon: int
) -> FloatArray:
    """The forecast for ``horizon`` slots from ``slot``: the latest carbon data at the
    cluster's pace; else the last forecast planned on, carried on; else a flat one
    (``degraded``, earliest slots first — the next decision with data re-plans on it)."""
    status = run.status
    carbon = run.obs.carbon
    slot_s = spec.slot_seconds
    pace = None if carbon is None else carbon.slot_seconds
    if pace is not None and not math.isclose(pace, slot_s, rel_tol=1e-6):
        message = (
            f"the carbon data advance one slot every {pace:g} s but the cluster's slotSeconds "
            f"is {slot_s}: it plans without them (SLOT_SECONDS in deploy/slot.yaml)"
        )
        if status.get("carbonPaceMismatch") != message:
            run.event("Warning", "CarbonPaceMismatch", message)
        status["carbonPaceMismatch"] = message
        carbon = None
    else:
        status.pop("carbonPaceMismatch", None)
    if carbon is not None:
        values = carbon.ahead(run.obs.now, epoch, slot_s, horizon)
        status["forecast"] = {
            "fromSlot": slot,
            "values": [float(x) for x in values],
            "time": iso(carbon.received),
        }
        status["degraded"] = False
        return values
    status["degraded"] = True
    saved = status.get("forecast") or {}
    known = [float(x) for x in saved.get("values") or []]
    if not known:
        return np.ones(horizon)
    known = known[min(max(slot - int(saved.get("fromSlot", slot)), 0), len(known) - 1) :]
    known += [known[-1]] * max(horizon - len(known), 0)
    return np.asarray(known[:horizon], dtype=np.float64)


def _decide(
    run: _ClusterRun,
    spec: CarbonScalerClusterSpec,
    epoch: float,
    slot: int,
    jobs: list[ClusterJob],
    saved_members: Mapping[str, Any],
    progress: Mapping[str, Progress],
    arriving: Sequence[ClusterJob],
    leaving: Sequence[ClusterJob],
    records: dict[str, dict[str, Any]],
    *,
    planned_capacity: Any = None,
) -> dict[str, Any] | None:
    """Rebuild the core from the saved state, decide at ``slot``, and update the records and
    Events; the core's new saved form (finished jobs left out), or None if it could not
    decide (then nothing changes, and the next pass tries again). A capacity other than the
    one the saved plans were made in (``planned_capacity``) re-plans every job together."""
    horizon = max(1, max(j.deadline_slot for j in jobs) - slot)
    forecast = _forecast(run, spec, epoch, slot, horizon)
    names = {j.name for j in jobs}
    gone = {j.name for j in leaving}
    try:
        core = ClusterCore(
            jobs,
            spec.capacities,
            policy=spec.policy,
            rules=Rules(replan_threshold=spec.replan_threshold, safety_margin=spec.safety_margin),
            overhead_h=spec.overhead_s() / 3600.0,
            time_limit_s=spec.time_limit_s,
        )
        saved: dict[str, Any] = {
            "policy": core.policy,
            "members": {k: v for k, v in saved_members.items() if k in names},
        }
        if planned_capacity is not None:
            saved["capacity"] = planned_capacity
        core.restore(saved)
        finished_before = {k for k in core.admitted() if core.finished(k)}
        grants = core.decide(slot, forecast, progress)
    except PlanningError as exc:
        message = f"slot {slot}: no decision ({exc}); the grants in force stand"
        if run.old.get("message") != message:
            run.event("Warning", "PlanningFailed", message)
        run.status["message"] = message
        return None
    by_key = {j.name: j for j in jobs}
    arrived = [j.name for j in arriving]
    left = sorted(gone | {k for k in core.admitted() if core.finished(k)} - finished_before)
    joint_names: list[str] = []
    resized = False
    for key in core.admitted():
        if key in gone:
            continue
        job = by_key[key]
        entry_record = records.get(key)
        record: dict[str, Any] = dict(entry_record or {})
        previous = int(record.get("plans", 0)) if entry_record is not None else 0
        events = core.events(key)
        plans = core.plans(key)
        for made_at, why in events[previous:]:
            joint_names.append(key)
            resized = resized or Reason.CAPACITY in why
            _announce(run, key, job, plans, made_at, why)
        record.update(
            arrivalSlot=job.arrival_slot,
            deadlineSlot=job.deadline_slot,
            finished=core.finished(key),
            replans=core.replans(key),
            plans=len(events),
        )
        grant = grants.get(key)
        if grant is None:
            record.pop("grant", None)
        else:
            record["grant"] = {
                "slot": slot,
                "first": grant.first,
                "fraction": grant.fraction,
                "then": grant.then,
                "reasons": grant.reasons.words,
            }
        records[key] = record
    _identify(run, records)
    if arrived or left or resized:
        _announce_cluster(run, spec, slot, arrived, left, sorted(set(joint_names)), resized)
    saved = core.to_dict()
    saved["members"] = {
        k: v for k, v in saved["members"].items() if k not in gone and not core.finished(k)
    }
    return saved


def _identify(run: _ClusterRun, records: dict[str, dict[str, Any]]) -> None:
    """Each record names its member (kind, name, uid, the digest of its settings)."""
    for member in run.obs.members:
        record = records.get(member.key)
        if record is None:
            continue
        record.update(
            kind=member.kind.kind,
            name=member.name,
            uid=member.resource["metadata"].get("uid"),
            digest=settings_digest(member.resource),
        )


def _announce(
    run: _ClusterRun, key: str, job: ClusterJob, plans: Plans, made_at: int, why: Reason
) -> None:
    """A member's Event for a plan the cluster made for it."""
    r = made_at - job.arrival_slot
    servers = [int(x) for x in plans.servers[0, r:]]
    notes = ""
    if Reason.NO_MARGIN in why:
        notes += "; no room for the safety margin: the bare work is planned"
    if Reason.OUT_OF_REACH in why:
        notes += "; out of reach in the capacity left: top level until done"
    cluster = run.name
    words = ", ".join(w for w in why.words if w != "first") or "first plan"
    message = (
        f"cluster {cluster}, slot {made_at} ({words}): workers per slot from its slot {r}: "
        f"{compact(servers)}{notes}"
    )
    reason = "Planned" if Reason.FIRST in why else "Replanned"
    run.member_event(key, "Normal", reason, message)
    if Reason.OUT_OF_REACH in why:
        run.member_event(
            key,
            "Warning",
            "Behind",
            f"cluster {cluster}, slot {made_at}: the deadline is out of reach in the capacity "
            "left; running at its top level when granted until done",
        )


def _announce_cluster(
    run: _ClusterRun,
    spec: CarbonScalerClusterSpec,
    slot: int,
    arrived: list[str],
    left: list[str],
    planned: list[str],
    resized: bool = False,
) -> None:
    """The cluster's Event for a job arriving or leaving, or a new capacity."""
    what = []
    if resized:
        what.append("the capacity changed")
    if arrived:
        what.append(f"{', '.join(arrived)} arrived")
    if left:
        what.append(f"{', '.join(left)} left")
    capacity = spec.capacity_at(slot)
    if spec.policy == "joint" and planned:
        run.event(
            "Normal",
            "Replanned",
            f"slot {slot}: {'; '.join(what)}: {', '.join(planned)} planned together in "
            f"{capacity} servers",
        )
    elif arrived:
        run.event(
            "Normal",
            "Admitted",
            f"slot {slot}: {'; '.join(what)} (policy {spec.policy}: each job planned alone, "
            f"queued first come, first served in {capacity} servers)",
        )
    else:
        run.event("Normal", "Released", f"slot {slot}: {'; '.join(what)}, freeing its servers")
