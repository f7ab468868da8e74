"""The operator's decisions, as a pure function: what to do with one CarbonScaler job now.

:func:`reconcile` takes everything the operator observed — the resource (its spec, settings
and status), the clock, the latest carbon snapshot, the Kubeflow job it created (if any) and,
on first sight, the scaling profile — and returns a :class:`Decision`: the API operations to
perform on the Kubeflow job, the Events to post and the merge patch for the resource's status.
No I/O happens here, so every transition is unit-testable and the handlers stay thin.

**All state lives in the status**: the arrival time, the plan (absolute slots from arrival),
the profile the plan was made with, progress, accounting and counters. An operator that
restarts reads it back and continues every job where it was.

The planning maths is the local controller's (:mod:`carbonscaler.control.controller`): a greedy
plan that reserves the work rescales lose, covers a safety margin where the deadline leaves
room, and is re-made from the true progress at slot boundaries when the forecast or the progress
drifted beyond the threshold, or the job is behind. A carbon update between boundaries re-plans
only the slots after the current one (a rescale costs tens of seconds of work, so the current
slot keeps its level). Emissions are the profile's power ``P(k)`` times the intensity, labelled
``estimated:profile``; the accounting service measures.

Execution on Kubeflow:

* **MPIJob** — cannot change its world size: a new worker count deletes the MPIJob
  (foreground, so its pods are gone — checkpoint written — before it is), then creates it again
  with ``Worker.replicas`` and the launcher's ``WORKERS`` updated. Pausing deletes it.
* **PyTorchJob** (elastic) — a new count patches ``Worker.replicas`` in place; torchrun's
  agents re-form the group and resume from the checkpoint. Pausing deletes the job (or, with
  ``pauseMode: Suspend``, sets ``runPolicy.suspend``): scaling a Worker-only PyTorchJob to 0
  replicas would make the training operator mark it Succeeded.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from carbonscaler.kube.crd import MPI, PYTORCH, JobKind
from carbonscaler.kube.operations import (
    ChildState,
    CreateChild,
    DeleteChild,
    EventNote,
    Operation,
    PatchChild,
)
from carbonscaler.kube.resources import child_body, replicas_patch, suspend_patch
from carbonscaler.planner.batch import BatchPlan, batch_greedy_with_overhead
from carbonscaler.planner.exact import plan_exact
from carbonscaler.planner.model import FloatArray, Job, PlanningError, check_feasible
from carbonscaler.profile import ProfileError, ScalingProfile

__all__ = [
    "CarbonSnapshot",
    "ChildState",
    "CreateChild",
    "Decision",
    "DeleteChild",
    "EventNote",
    "Observation",
    "PatchChild",
    "Settings",
    "SettingsError",
    "reconcile",
]

# The reference's policy names and the local runtime's, mapped to the planner's.
_POLICY = {
    "scaler": "carbonscaler",
    "carbonscaler": "carbonscaler",
    "fixed": "agnostic",
    "agnostic": "agnostic",
    "exact": "exact",
    "suspend-resume": "suspend-resume",
}
# Status fields that change on every tick; alone, they are written at most this often.
_ACCOUNTING_FIELDS = frozenset(
    {
        "accountedUntil",
        "emissionsG",
        "energyKWh",
        "nominalWork",
        "workDone",
        "progress",
        "powerSource",
    }
)
# Behind the planned progress by more than this share of the work re-plans at a boundary;
# passes come every few seconds, so a job is always a hair behind a plan that started on time.
_BEHIND_SHARE = 0.01
ACCOUNTING_WRITE_S = 60.0
# A job that exits 0 below this reported progress was stopped, not finished.
_DONE_PCT = 99.5
_ESTIMATE_CAP_PCT = 99.0


class SettingsError(ValueError):
    """The resource's settings cannot be used; the message names the field and the fix."""


# -- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """``carbonScalerSpec``, validated (the CRD schema checks bounds; this checks the rest)."""

    min_replicas: int
    max_replicas: int
    deadline_slots: int
    progress_pct: float
    profile_name: str
    policy: str
    slot_seconds: int
    zone: str | None
    length_hours: float | None
    work: float | None
    replan_threshold: float
    safety_margin: float
    overhead_s: float
    max_relaunches: int
    pause_mode: str

    @property
    def slot_hours(self) -> float:
        return self.slot_seconds / 3600.0

    @classmethod
    def from_resource(cls, kind: JobKind, resource: dict[str, Any]) -> Settings:
        """Read and check the settings of a CarbonScaler resource.

        Raises:
            SettingsError: naming the field and what to change.
        """
        cs = resource.get("carbonScalerSpec")
        spec = resource.get("spec")
        if not isinstance(cs, dict) or not isinstance(spec, dict):
            raise SettingsError("the resource needs both spec and carbonScalerSpec")
        try:
            settings = cls(
                min_replicas=int(cs["minReplicas"]),
                max_replicas=int(cs["maxReplicas"]),
                deadline_slots=int(cs["deadline"]),
                progress_pct=float(cs.get("progress", 0.0)),
                profile_name=str(cs["profileName"]),
                policy=str(cs.get("policy", "scaler")),
                slot_seconds=int(cs.get("slotSeconds", 3600)),
                zone=str(cs["carbonZone"]) if cs.get("carbonZone") else None,
                length_hours=None if cs.get("lengthHours") is None else float(cs["lengthHours"]),
                work=None if cs.get("work") is None else float(cs["work"]),
                replan_threshold=float(cs.get("replanThreshold", 0.05)),
                safety_margin=float(cs.get("safetyMargin", 0.05)),
                overhead_s=float(cs.get("rescaleOverheadSeconds", 30.0)),
                max_relaunches=int(cs.get("maxRelaunches", 3)),
                pause_mode=str(cs.get("pauseMode", "Delete")),
            )
        except KeyError as exc:
            raise SettingsError(f"carbonScalerSpec.{exc.args[0]} is required") from None
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"carbonScalerSpec has a malformed value: {exc}") from None
        settings._check(kind, spec)
        return settings

    def _check(self, kind: JobKind, spec: dict[str, Any]) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise SettingsError(
                f"carbonScalerSpec: need 1 <= minReplicas <= maxReplicas, got "
                f"{self.min_replicas} and {self.max_replicas}"
            )
        if self.deadline_slots < 1:
            raise SettingsError("carbonScalerSpec.deadline must be at least 1 slot")
        if (self.length_hours is None) == (self.work is None):
            raise SettingsError(
                "carbonScalerSpec: give exactly one of lengthHours (hours at minReplicas) or "
                "work (the profile's throughput units × hours)"
            )
        if (self.length_hours or self.work or 0.0) <= 0:
            raise SettingsError("carbonScalerSpec: lengthHours or work must be positive")
        if self.policy not in _POLICY:
            raise SettingsError(
                f"carbonScalerSpec.policy {self.policy!r} is unknown; use one of "
                f"{', '.join(_POLICY)}"
            )
        if self.slot_seconds < 10:
            raise SettingsError("carbonScalerSpec.slotSeconds must be at least 10")
        if not 0 < self.replan_threshold < 1 or not 0 <= self.safety_margin < 1:
            raise SettingsError("carbonScalerSpec: replanThreshold in (0, 1), safetyMargin [0, 1)")
        if self.pause_mode not in ("Delete", "Suspend"):
            raise SettingsError("carbonScalerSpec.pauseMode must be Delete or Suspend")
        specs = spec.get(kind.replica_specs_key)
        if not isinstance(specs, dict) or not isinstance(specs.get("Worker"), dict):
            raise SettingsError(f"spec.{kind.replica_specs_key}.Worker is required")
        if kind is MPI and not isinstance(specs.get("Launcher"), dict):
            raise SettingsError("spec.mpiReplicaSpecs.Launcher is required")
        if kind is PYTORCH:
            self._check_elastic(spec.get("elasticPolicy"))

    def _check_elastic(self, elastic: Any) -> None:
        if not isinstance(elastic, dict):
            raise SettingsError(
                "spec.elasticPolicy is required: CarbonScaler rescales a PyTorchJob through "
                "torchrun's elastic rendezvous (e.g. elasticPolicy: {rdzvBackend: c10d})"
            )
        if elastic.get("metrics"):
            raise SettingsError(
                "spec.elasticPolicy.metrics would create an HPA that fights CarbonScaler over "
                "the replicas; remove it"
            )
        low = int(elastic.get("minReplicas", self.min_replicas))
        high = int(elastic.get("maxReplicas", self.max_replicas))
        if low > self.min_replicas or high < self.max_replicas:
            raise SettingsError(
                f"spec.elasticPolicy allows {low}..{high} workers but carbonScalerSpec asks "
                f"for {self.min_replicas}..{self.max_replicas}; widen elasticPolicy or narrow "
                "minReplicas/maxReplicas"
            )

    @property
    def planner_policy(self) -> str:
        return _POLICY[self.policy]


def settings_digest(resource: dict[str, Any]) -> str:
    """A fingerprint of what the plan depends on: the spec and the settings, less progress
    (which the job raises as it runs)."""
    cs = dict(resource.get("carbonScalerSpec") or {})
    cs.pop("progress", None)
    text = json.dumps([cs, resource.get("spec")], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CarbonSnapshot:
    """The latest carbon data: the current intensity and a forecast from the current slot.

    Args:
        intensity: gCO2eq/kWh now.
        forecast: gCO2eq/kWh per slot, from the current slot on (the reference's
            ``prediction``); taken to be at the job's slot length.
        received: when it arrived (epoch seconds).
        source: where it came from, for the status.
    """

    intensity: float
    forecast: tuple[float, ...]
    received: float
    source: str = "carbon"

    def ahead(self, now: float, start: float, slot_seconds: int, horizon: int) -> FloatArray:
        """``horizon`` values from the job slot (slots of ``slot_seconds`` from ``start``) that
        contains ``now``; a snapshot from an earlier slot is shifted by the slots since, and
        the last value is held past its end."""
        values = list(self.forecast) or [self.intensity]
        skip = max(
            math.floor((now - start) / slot_seconds)
            - math.floor((self.received - start) / slot_seconds),
            0,
        )
        values = values[min(skip, len(values) - 1) :]
        values += [values[-1]] * max(horizon - len(values), 0)
        return np.asarray(values[:horizon], dtype=np.float64)


@dataclass(frozen=True)
class Observation:
    """Everything :func:`reconcile` looks at.

    Args:
        kind: the resource's kind.
        resource: the CarbonScaler resource (metadata, spec, carbonScalerSpec, status).
        now: the time (epoch seconds).
        child: the Kubeflow job it owns, or None if there is none.
        carbon: the latest carbon data for the job's zone, or None.
        profile: the scaling profile from its ConfigMap — needed only until the status holds
            one (the first plan stores it).
        profile_error: why the profile could not be read, if it could not.
    """

    kind: JobKind
    resource: dict[str, Any]
    now: float
    child: ChildState | None = None
    carbon: CarbonSnapshot | None = None
    profile: ScalingProfile | None = None
    profile_error: str | None = None


# -- outputs ---------------------------------------------------------------------------------


@dataclass
class Decision:
    """What to do: operations on the Kubeflow job (in order), Events, and the status patch
    (a JSON merge patch of ``status``; empty when nothing worth writing changed)."""

    operations: list[Operation] = field(default_factory=list)
    events: list[EventNote] = field(default_factory=list)
    status_patch: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)


# -- helpers ---------------------------------------------------------------------------------


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _compact(servers: list[int]) -> str:
    """``0×3 2×2 1`` — a plan as runs of equal worker counts."""
    runs: list[str] = []
    i = 0
    while i < len(servers):
        j = i
        while j < len(servers) and servers[j] == servers[i]:
            j += 1
        runs.append(f"{servers[i]}×{j - i}" if j - i > 1 else str(servers[i]))
        i = j
    return " ".join(runs)


def _plan_work(
    settings: Settings,
    job: Job,
    profile: ScalingProfile,
    forecast: FloatArray,
    target: float,
    *,
    previous: int,
    started: bool,
) -> BatchPlan:
    """The policy's plan for ``target`` work over ``forecast`` (as the local controller)."""
    policy = settings.planner_policy
    if policy == "suspend-resume":
        job = job.with_bounds(job.min_servers, job.min_servers)
    ladder = job.ladder()
    if policy == "exact" and not ladder.concave:
        s = plan_exact(job.with_work(target), forecast)
        n = len(forecast)
        servers = np.zeros((1, n), dtype=np.int64)
        servers[0, : len(s.servers)] = s.servers
        fraction, after = np.ones((1, n)), servers.copy()
        if s.partial_slot is not None:
            fraction[0, s.partial_slot] = s.last_slot_fraction
            after[0, s.partial_slot] = s.partial_servers_after
        return BatchPlan(servers, fraction, after, np.array([True]))
    return batch_greedy_with_overhead(
        ladder,
        forecast[None, :],
        np.array([target / job.slot_hours]),
        throughput=profile.throughput,
        overhead_h=settings.overhead_s / 3600.0,
        slot_hours=job.slot_hours,
        previous=np.array([previous]),
        started=np.array([started]),
    )


def _agnostic_plan(job: Job, work: float, slots: int) -> BatchPlan:
    """minReplicas from now until done (the reference's ``fixed``)."""
    m = job.min_servers
    need = work / (float(job.profile.throughput[m]) * job.slot_hours)
    servers = np.zeros((1, slots), dtype=np.int64)
    servers[0, : min(math.ceil(need - 1e-12), slots)] = m
    fraction = np.ones((1, slots))
    after = servers.copy()
    whole = math.floor(need)
    if whole < slots and need - whole > 1e-12:
        fraction[0, whole] = need - whole
        after[0, whole] = 0
    return BatchPlan(servers, fraction, after, np.array([True]))


def _fastest(job: Job) -> int:
    return int(job.ladder().levels[-1])


class _Run:
    """One reconcile pass: mutable working copy of the status plus what to emit."""

    def __init__(self, obs: Observation) -> None:
        self.obs = obs
        self.kind = obs.kind
        self.resource = obs.resource
        self.meta = obs.resource["metadata"]
        self.old = copy.deepcopy(obs.resource.get("status") or {})
        self.status = copy.deepcopy(self.old)
        self.decision = Decision()
        self.now = obs.now

    # -- emitting

    def event(self, type_: str, reason: str, message: str) -> None:
        self.decision.events.append(EventNote(type_, reason, message))

    def op(self, operation: Operation) -> None:
        self.decision.operations.append(operation)

    def condition(self, type_: str, true: bool, reason: str, message: str = "") -> None:
        conditions: list[dict[str, Any]] = self.status.setdefault("conditions", [])
        value = "True" if true else "False"
        for c in conditions:
            if c["type"] == type_:
                if c["status"] != value:
                    c["lastTransitionTime"] = _iso(self.now)
                c.update(status=value, reason=reason, message=message)
                return
        if not true and type_ not in ("Created",):
            return  # a condition that never held is left out rather than listed as False
        conditions.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": _iso(self.now),
            }
        )

    def phase(self, phase: str, reason: str, message: str) -> None:
        self.status["phase"] = phase
        self.status["message"] = message
        for type_ in ("Running", "Paused", "Rescaling"):
            self.condition(type_, phase == type_, reason, message if phase == type_ else "")
        if phase == "Succeeded":
            self.condition("Succeeded", True, reason, message)
        if phase == "Failed":
            self.condition("Failed", True, reason, message)
        elif any(c["type"] == "Failed" for c in self.status.get("conditions", [])):
            self.condition("Failed", False, reason, "")

    def fail(self, reason: str, message: str) -> Decision:
        """Mark the job Failed (once per distinct message) and stop what runs."""
        repeated = self.old.get("phase") == "Failed" and self.old.get("message") == message
        if not repeated:
            self.event("Warning", reason, message)
        child = self.obs.child
        if child is not None and child.owned and not child.deleting:
            self.op(DeleteChild(child.name))
            self.event("Normal", "Stopped", f"stopped {self.kind.child_kind} {child.name}")
        self.status["replicas"] = 0
        self.status["desiredReplicas"] = 0
        self.phase("Failed", reason, message)
        return self.finish()

    def finish(self) -> Decision:
        old, new = self.old, self.status
        changed = {k for k in new if new[k] != old.get(k)} | {k for k in old if k not in new}
        if changed and changed <= _ACCOUNTING_FIELDS:
            last = _epoch(old.get("accountedUntil"))
            if last is not None and self.now - last < ACCOUNTING_WRITE_S:
                changed = set()  # the next pass integrates from the saved point again
        if changed:
            new["revision"] = int(old.get("revision", 0)) + 1
            changed.add("revision")
            self.decision.status_patch = {k: new.get(k) for k in sorted(changed)}
        self.decision.status = new if changed else old
        return self.decision


# -- the decision ----------------------------------------------------------------------------


def reconcile(obs: Observation) -> Decision:
    """Decide what to do with one CarbonScaler job now. Pure: see the module docstring."""
    run = _Run(obs)
    status = run.status
    if status.get("phase") == "Succeeded":
        return run.finish()
    digest = settings_digest(obs.resource)
    if status.get("phase") == "Failed" and status.get("settingsDigest") == digest:
        return run.finish()  # failed for these settings; an edit of the spec retries
    try:
        settings = Settings.from_resource(obs.kind, obs.resource)
    except SettingsError as exc:
        status["settingsDigest"] = digest
        return run.fail("InvalidSpec", str(exc))
    child = obs.child
    if child is not None and not child.owned:
        status["settingsDigest"] = digest
        return run.fail(
            "NameConflict",
            f"a {obs.kind.child_kind} named {child.name} already exists and is not owned by "
            "this job; delete it or rename this job",
        )

    profile = _profile(run, settings)
    if profile is None:
        return run.finish()
    try:
        job = _job(settings, profile)
    except (ProfileError, PlanningError) as exc:
        status["settingsDigest"] = digest
        return run.fail("InvalidSpec", str(exc))

    start = _epoch(status.get("startTime")) or _epoch(run.meta.get("creationTimestamp")) or obs.now
    n = settings.deadline_slots
    status.setdefault("startTime", _iso(start))
    status["deadlineTime"] = _iso(start + n * settings.slot_seconds)
    status["slotSeconds"] = settings.slot_seconds
    status["workRequired"] = job.work
    slot = max(math.floor((obs.now - start) / settings.slot_seconds + 1e-9), 0)
    into = (obs.now - start) / settings.slot_seconds - slot

    _account(run, profile, settings)
    done_pct = _progress(run, settings, job)
    work_done = done_pct / 100.0 * job.work

    if "plan" not in status or status.get("settingsDigest") != digest:
        replanning = "plan" in status
        try:
            _first_plan(run, settings, job, profile, slot, work_done)
        except PlanningError as exc:
            status["settingsDigest"] = digest
            return run.fail("Infeasible", str(exc))
        status["settingsDigest"] = digest
        if replanning:
            status["replans"] = int(status.get("replans", 0)) + 1
    else:
        if slot > int(status.get("slot", 0)):
            _maybe_replan(run, settings, job, profile, slot, 0.0, work_done, boundary=True)
        elif obs.carbon is not None and obs.carbon.received > (
            _epoch(status["plan"].get("forecastTime")) or 0.0
        ):
            _maybe_replan(run, settings, job, profile, slot, into, work_done, boundary=False)
    status["slot"] = slot
    run.condition("Created", True, "Planned", f"planned with policy {settings.policy}")

    if child is not None and not child.deleting and child.succeeded:
        if status.get("progressSource") == "reported" and done_pct < _DONE_PCT:
            run.op(DeleteChild(child.name))
            run.event(
                "Warning",
                "Interrupted",
                f"{obs.kind.child_kind} {child.name} exited successfully at {done_pct:.1f} % "
                "(stopped from outside); relaunching it from its checkpoint",
            )
            status["replicas"] = 0
            run.phase("Rescaling", "Interrupted", "relaunching after an outside stop")
            _next_change(run, settings, start, slot, into, 0)
            return run.finish()
        return _succeeded(run, settings, start)
    if child is not None and not child.deleting and child.failed:
        relaunches = int(status.get("relaunches", 0)) + 1
        status["relaunches"] = relaunches
        if relaunches > settings.max_relaunches:
            status["replicas"] = 0
            message = (
                f"{obs.kind.child_kind} {child.name} failed {relaunches} times (maxRelaunches "
                f"{settings.max_relaunches}); see `kubectl describe {obs.kind.child_plural} "
                f"{child.name}` and its pods' logs"
            )
            run.event("Warning", "JobFailed", message)
            run.phase("Failed", "JobFailed", message)
            return run.finish()
        run.op(DeleteChild(child.name))
        run.event(
            "Warning",
            "Relaunching",
            f"{obs.kind.child_kind} {child.name} failed; relaunching from its checkpoint "
            f"({relaunches}/{settings.max_relaunches})",
        )
        status["replicas"] = 0
        run.phase("Rescaling", "Relaunching", "relaunching after a failure")
        return run.finish()

    desired = _desired(status, slot, into, n, job)
    if slot >= n and not status.get("pastDeadline"):
        status["pastDeadline"] = True
        run.event(
            "Warning",
            "DeadlineMissed",
            f"the deadline ({status['deadlineTime']}) passed at {done_pct:.1f} %; running at "
            f"{desired} workers until done",
        )
    running = 0 if child is None or child.deleting or child.suspended else child.workers
    if desired == 0 and running > 0 and slot < n and not any(status["plan"]["servers"][slot + 1 :]):
        # The plan's work is done but the job is not: it is slower than its profile. Stopping
        # it now would leave it paused with nothing planned; let it finish at its size.
        desired = running
        if not status.get("overrun"):
            status["overrun"] = True
            run.event(
                "Warning",
                "Overrun",
                f"the planned work is done but the job is not ({done_pct:.1f} %); keeping "
                f"{running} workers until it finishes — report progress for better plans",
            )
    status["desiredReplicas"] = desired
    _execute(run, settings, child, desired, slot)
    _next_change(run, settings, start, slot, into, desired)
    return run.finish()


def _profile(run: _Run, settings: Settings) -> ScalingProfile | None:
    """The profile saved in the status, or the one just read (saved for next time)."""
    saved = run.status.get("profile")
    if saved:
        return ScalingProfile(
            np.asarray(saved["throughput"], dtype=np.float64),
            np.asarray(saved["powerW"], dtype=np.float64),
            name=str(saved.get("name", settings.profile_name)),
        )
    profile = run.obs.profile
    if profile is None:
        message = run.obs.profile_error or f"profile ConfigMap {settings.profile_name} not read"
        if run.old.get("message") != message:
            run.event("Warning", "ProfileUnavailable", message)
        run.phase("Pending", "ProfileUnavailable", message)
        run.condition("Created", False, "ProfileUnavailable", message)
        return None
    run.status["profile"] = {
        "name": profile.name,
        "throughput": [float(x) for x in profile.throughput],
        "powerW": [float(x) for x in profile.power_w],
    }
    return profile


def _job(settings: Settings, profile: ScalingProfile) -> Job:
    if settings.min_replicas > profile.max_servers:
        raise ProfileError(
            f"profile {profile.name!r} describes 1..{profile.max_servers} workers but "
            f"minReplicas is {settings.min_replicas}; lower minReplicas or profile the job at "
            "more workers"
        )
    # As the local controller: counts above the profile's are never planned.
    top = min(settings.max_replicas, profile.max_servers)
    if settings.work is not None:
        return Job(profile, settings.work, settings.min_replicas, top, settings.slot_hours)
    assert settings.length_hours is not None  # by Settings._check
    return Job.from_length(
        profile, settings.length_hours, settings.min_replicas, top, settings.slot_hours
    )


def _account(run: _Run, profile: ScalingProfile, settings: Settings) -> None:
    """Energy and carbon since the last pass at the workers that ran (profile estimate)."""
    status = run.status
    since = _epoch(status.get("accountedUntil"))
    status["accountedUntil"] = _iso(run.now)
    status.setdefault("emissionsG", 0.0)
    status.setdefault("energyKWh", 0.0)
    status.setdefault("nominalWork", 0.0)
    k = int(status.get("replicas", 0))
    if since is None or k <= 0 or run.now <= since:
        return
    hours = (run.now - since) / 3600.0
    energy = float(profile.power_w[min(k, profile.max_servers)]) * hours / 1000.0
    carbon = run.obs.carbon
    if carbon is not None:
        intensity = carbon.intensity
    else:
        plan = status.get("plan") or {}
        forecast = plan.get("forecast") or [0.0]
        intensity = float(forecast[min(int(status.get("slot", 0)), len(forecast) - 1)])
    status["energyKWh"] = float(status["energyKWh"]) + energy
    status["emissionsG"] = float(status["emissionsG"]) + energy * intensity
    status["nominalWork"] = (
        float(status["nominalWork"])
        + float(profile.throughput[min(k, profile.max_servers)]) * hours
    )
    status["powerSource"] = "estimated:profile"


def _progress(run: _Run, settings: Settings, job: Job) -> float:
    """Percent done: as the job reported it, else estimated from the profile's rate."""
    status = run.status
    if settings.progress_pct > 0 or status.get("progressSource") == "reported":
        status["progressSource"] = "reported"
        pct = settings.progress_pct
    else:
        status["progressSource"] = "estimated"
        pct = min(100.0 * float(status.get("nominalWork", 0.0)) / job.work, _ESTIMATE_CAP_PCT)
    status["progress"] = round(pct, 3)
    status["workDone"] = pct / 100.0 * job.work
    return pct


def _observed_rate(status: dict[str, Any], work_done: float) -> float:
    """Reported work per work the profile promised for the server-time so far (bounded)."""
    nominal = float(status.get("nominalWork", 0.0))
    if status.get("progressSource") != "reported" or nominal <= 0 or work_done <= 0:
        return 1.0
    return float(min(max(work_done / nominal, 0.25), 4.0))


def _forecast(run: _Run, settings: Settings, slot: int, horizon: int) -> tuple[FloatArray, bool]:
    """The forecast for ``horizon`` slots from ``slot``, and whether it is a stand-in.

    Without carbon data the last plan's forecast stands in; with no plan either, a flat one
    (earliest slots first) — a job re-plans as soon as data arrive rather than let its
    deadline run out waiting.
    """
    carbon = run.obs.carbon
    if carbon is not None:
        start = _epoch(run.status.get("startTime")) or run.now
        return carbon.ahead(run.now, start, settings.slot_seconds, horizon), False
    known = list((run.status.get("plan") or {}).get("forecast") or [])[slot : slot + horizon]
    if not known:
        return np.ones(horizon), True
    known += [known[-1]] * (horizon - len(known))
    return np.asarray(known, dtype=np.float64), True


def _install(
    run: _Run,
    settings: Settings,
    job: Job,
    first: int,
    plans: BatchPlan,
    forecast: FloatArray,
    *,
    start_work: float,
    observed: float,
    degraded: bool,
) -> None:
    n = settings.deadline_slots
    plan = run.status.setdefault("plan", {})
    for key, fill in (("servers", 0), ("fraction", 1.0), ("after", 0), ("forecast", 0.0)):
        values = list(plan.get(key) or [])
        plan[key] = (values + [fill] * n)[:n]
    done = list(plan.get("plannedDone") or [])
    plan["plannedDone"] = (done + [0.0] * (n + 1))[: n + 1]
    tp = job.profile.throughput
    servers, fraction, after = plans.servers[0], plans.fraction[0], plans.after[0]
    for i in range(first, n):
        j = i - first
        plan["servers"][i] = int(servers[j])
        plan["fraction"][i] = float(fraction[j])
        plan["after"][i] = int(after[j])
        plan["forecast"][i] = float(forecast[j])
    work = (tp[after] + (tp[servers] - tp[after]) * fraction) * job.slot_hours * observed
    cumulative = start_work + np.cumsum(work)
    plan["plannedDone"][first] = start_work
    plan["plannedDone"][first + 1 : n + 1] = [float(x) for x in cumulative[: n - first]]
    plan["policy"] = settings.planner_policy
    plan["madeAtSlot"] = first
    carbon = run.obs.carbon
    plan["forecastTime"] = _iso(carbon.received if carbon is not None else run.now)
    run.status["degraded"] = degraded


def _first_plan(
    run: _Run,
    settings: Settings,
    job: Job,
    profile: ScalingProfile,
    slot: int,
    work_done: float,
) -> None:
    """Plan (or, after a spec edit, re-plan) the whole remaining job from ``slot``.

    Raises:
        InfeasibleError: if the deadline cannot be met even at maxReplicas.
    """
    n = settings.deadline_slots
    horizon = n - slot
    remaining = job.work - work_done
    if horizon <= 0:
        raise PlanningError(
            f"the deadline ({n} slots) has already passed; raise carbonScalerSpec.deadline"
        )
    policy = settings.planner_policy
    check_job = job.with_work(remaining)
    if policy == "suspend-resume":
        check_job = check_job.with_bounds(job.min_servers, job.min_servers)
    if policy != "agnostic":
        check_feasible(check_job, check_job.ladder(), horizon, policy=settings.policy)
    forecast, degraded = _forecast(run, settings, slot, horizon)
    started = int((run.status.get("child") or {}).get("launches", 0)) > 0
    previous = int(run.status.get("replicas", 0))
    if policy == "agnostic":
        plans = _agnostic_plan(job, remaining, horizon)
        margin = 1.0
    else:
        margin = 1.0 + settings.safety_margin
        plans = _plan_work(
            settings, job, profile, forecast, remaining * margin, previous=previous, started=started
        )
        if not plans.feasible[0]:  # no room for the margin: plan the bare work
            margin = 1.0
            plans = _plan_work(
                settings, job, profile, forecast, remaining, previous=previous, started=started
            )
    _install(
        run,
        settings,
        job,
        slot,
        plans,
        forecast,
        start_work=work_done,
        observed=1.0 / margin,
        degraded=degraded,
    )
    servers = run.status["plan"]["servers"][slot:]
    note = " (no carbon data yet: planned on a flat forecast)" if degraded else ""
    run.event(
        "Normal",
        "Planned",
        f"{settings.policy}: workers per slot from slot {slot}: {_compact(servers)}; "
        f"deadline {run.status['deadlineTime']}{note}",
    )


def _maybe_replan(
    run: _Run,
    settings: Settings,
    job: Job,
    profile: ScalingProfile,
    slot: int,
    into: float,
    work_done: float,
    *,
    boundary: bool,
) -> None:
    """Re-plan from true progress when the forecast or progress drifted (see module doc)."""
    status = run.status
    plan = status["plan"]
    n = settings.deadline_slots
    if settings.planner_policy == "agnostic" or slot >= n:
        return
    first = slot if boundary else slot + 1
    if first >= n:
        return
    horizon = n - first
    forecast_now, degraded = _forecast(run, settings, slot, n - slot)
    forecast = forecast_now[first - slot :]
    expected = np.asarray(plan["forecast"][first:], dtype=np.float64)
    threshold = settings.replan_threshold
    # An estimated progress follows the plan by construction: only reports can show drift.
    reported = status.get("progressSource") == "reported"
    gap = work_done - float(plan["plannedDone"][slot]) if boundary and reported else 0.0
    behind = boundary and gap < -_BEHIND_SHARE * job.work
    drift = boundary and abs(gap) > threshold * job.work
    changed = not degraded and (
        bool(status.get("degraded"))
        or bool(np.any(np.abs(forecast - expected) > threshold * np.maximum(expected, 1e-9)))
    )
    if not (behind or drift or changed):
        if run.obs.carbon is not None:
            plan["forecastTime"] = _iso(run.obs.carbon.received)
        return
    level = int(status.get("desiredReplicas", 0))
    observed = _observed_rate(status, work_done)
    # Mid-slot, the rest of this slot keeps its level; credit the work it will still do.
    credit = 0.0 if boundary else float(job.profile.throughput[level]) * job.slot_hours * (1 - into)
    credit *= observed
    remaining = max(job.work - work_done - credit, job.work * 1e-6)
    margin = 1.0 + settings.safety_margin
    started = int((status.get("child") or {}).get("launches", 0)) > 0
    plans = _plan_work(
        settings, job, profile, forecast, remaining / observed * margin, previous=level,
        started=started,
    )  # fmt: skip
    if not plans.feasible[0]:
        margin = 1.0
        plans = _plan_work(
            settings, job, profile, forecast, remaining / observed, previous=level,
            started=started,
        )  # fmt: skip
    behind_note = ""
    if not plans.feasible[0]:
        top = _fastest(job)
        plans = BatchPlan(
            np.full((1, horizon), top),
            np.ones((1, horizon)),
            np.full((1, horizon), top),
            np.array([True]),
        )
        behind_note = f"; behind: running at {top} workers until done"
        run.event(
            "Warning", "Behind", f"the deadline is out of reach at the planned pace{behind_note}"
        )
    _install(
        run,
        settings,
        job,
        first,
        plans,
        forecast,
        start_work=work_done + credit,
        observed=observed / margin,
        degraded=degraded,
    )
    status["replans"] = int(status.get("replans", 0)) + 1
    why = [w for w, hit in (("behind", behind), ("drift", drift), ("forecast", changed)) if hit]
    run.event(
        "Normal",
        "Replanned",
        f"slot {slot} ({', '.join(why)}; {run.status['progress']:.1f} % done): workers per "
        f"slot from slot {first}: {_compact(run.status['plan']['servers'][first:])}",
    )


def _desired(status: dict[str, Any], slot: int, into: float, n: int, job: Job) -> int:
    if slot >= n:
        return _fastest(job)  # late: finish as fast as possible
    plan = status["plan"]
    if into < float(plan["fraction"][slot]):
        return int(plan["servers"][slot])
    return int(plan["after"][slot])


def _execute(
    run: _Run, settings: Settings, child: ChildState | None, desired: int, slot: int
) -> None:
    """Bring the Kubeflow job to ``desired`` workers."""
    kind, status = run.kind, run.status
    meta = run.meta
    info = status.setdefault(
        "child",
        {
            "apiVersion": kind.child_api_version,
            "kind": kind.child_kind,
            "name": meta["name"],
            "launches": 0,
        },
    )
    started = int(info.get("launches", 0)) > 0
    pending = int(info.get("replicas", 0)) if status.get("phase") == "Rescaling" else 0
    if child is not None and child.deleting:
        status["replicas"] = 0
        if desired > 0:
            run.phase("Rescaling", "Stopping", f"waiting for {child.name} to stop")
        else:
            run.phase("Paused", "Stopping", f"waiting for {child.name} to stop")
        return
    running = 0 if child is None or child.suspended else child.workers
    if desired == 0:
        status["replicas"] = 0
        if running > 0:
            assert child is not None
            if kind is PYTORCH and settings.pause_mode == "Suspend":
                run.op(PatchChild(child.name, suspend_patch()))
                info["suspended"] = True
            else:
                run.op(DeleteChild(child.name))
            status["rescales"] = int(status.get("rescales", 0)) + 1
            run.event(
                "Normal",
                "Paused",
                f"slot {slot}: {running} → 0 workers (paused; checkpoints stay on the volume)",
            )
        if started:
            run.phase("Paused", "Planned", f"paused in slot {slot} (carbon-intensive)")
        else:
            run.phase("Pending", "Waiting", f"waiting for the first planned slot (now slot {slot})")
        return
    if child is None:
        body = child_body(
            kind,
            name=meta["name"],
            namespace=meta["namespace"],
            spec=run.resource["spec"],
            workers=desired,
            owner=run.resource,
            labels=meta.get("labels") or {},
            elastic_bounds=(settings.min_replicas, settings.max_replicas),
        )
        run.op(CreateChild(body))
        if not started:
            reason, message = "Started", f"slot {slot}: started at {desired} workers"
        elif pending:
            reason = "Rescaled"
            message = f"slot {slot}: relaunched with WORKERS={desired}"
        else:
            status["rescales"] = int(status.get("rescales", 0)) + 1
            reason, message = "Resumed", f"slot {slot}: 0 → {desired} workers (resumed)"
        run.event("Normal", reason, message)
        info["launches"] = int(info.get("launches", 0)) + 1
        info.update(replicas=desired, suspended=False)
        status["replicas"] = desired
        run.phase("Running", reason, message)
        return
    if child.suspended:
        run.op(PatchChild(child.name, replicas_patch(kind, desired, resume=True)))
        status["rescales"] = int(status.get("rescales", 0)) + 1
        message = f"slot {slot}: 0 → {desired} workers (resumed)"
        run.event("Normal", "Resumed", message)
        info.update(replicas=desired, suspended=False)
        status["replicas"] = desired
        run.phase("Running", "Resumed", message)
        return
    if running != desired:
        status["rescales"] = int(status.get("rescales", 0)) + 1
        if kind is MPI:
            run.op(DeleteChild(child.name))
            message = (
                f"slot {slot}: {running} → {desired} workers: stopping the MPIJob to relaunch "
                f"it with WORKERS={desired}"
            )
            run.event("Normal", "Rescaling", message)
            info["replicas"] = desired
            status["replicas"] = 0
            run.phase("Rescaling", "Rescaling", message)
            return
        run.op(PatchChild(child.name, replicas_patch(kind, desired)))
        message = f"slot {slot}: {running} → {desired} workers (elastic)"
        run.event("Normal", "Rescaled", message)
        info["replicas"] = desired
        status["replicas"] = desired
        run.phase("Running", "Rescaled", message)
        return
    status["replicas"] = running
    if status.get("phase") != "Running":
        run.phase("Running", "Running", f"running at {running} workers")


def _next_change(
    run: _Run, settings: Settings, start: float, slot: int, into: float, current: int
) -> None:
    """The next planned change of worker count (for ``kubectl get`` and the user)."""
    plan = run.status["plan"]
    n = settings.deadline_slots
    found: dict[str, Any] | None = None
    for i in range(slot, n):
        points = [(float(i), int(plan["servers"][i]))]
        if float(plan["fraction"][i]) < 1.0:
            points.append((i + float(plan["fraction"][i]), int(plan["after"][i])))
        for at, level in points:
            if at < slot + into - 1e-9 and i == slot:
                continue
            if level != current:
                found = {"time": _iso(start + at * settings.slot_seconds), "replicas": level}
                break
        if found:
            break
    if found is None:
        run.status.pop("nextChange", None)
    else:
        run.status["nextChange"] = found


def _succeeded(run: _Run, settings: Settings, start: float) -> Decision:
    status = run.status
    status.update(progress=100.0, replicas=0, desiredReplicas=0)
    status["workDone"] = status.get("workRequired", status.get("workDone", 0.0))
    status["completionTime"] = _iso(run.now)
    status.pop("nextChange", None)
    hours = (run.now - start) / 3600.0
    deadline_h = settings.deadline_slots * settings.slot_seconds / 3600.0
    message = (
        f"done in {hours:.2f} h (deadline {deadline_h:.2f} h), "
        f"{float(status.get('emissionsG', 0.0)):.1f} gCO2eq (profile estimate), "
        f"{int(status.get('rescales', 0))} rescales, {int(status.get('replans', 0))} re-plans"
    )
    run.event("Normal", "Succeeded", message)
    run.phase("Succeeded", "Succeeded", message)
    return run.finish()
