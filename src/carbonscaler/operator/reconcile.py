"""The operator's decisions, as a pure function: what to do with one CarbonScaler job now.

:func:`reconcile` takes everything the operator observed — the resource (its spec, settings
and status), the clock, the latest carbon snapshot, the Kubeflow job it created (if any) and,
on first sight, the scaling profile — and returns a :class:`Decision`: the API operations to
perform on the Kubeflow job, the Events to post and the merge patch for the resource's status.
No I/O happens here, so every transition is unit-testable and the handlers stay thin.

**All state lives in the status**: the arrival time, the plan (the decision core's
:class:`~carbonscaler.decision.Plans` in its saved form, absolute slots from arrival), the
profile the plan was made with, progress, accounting, the intensity seen in every slot and the
counters. An operator that restarts reads it back and continues every job where it was.

**Every decision is the decision core's** (:mod:`carbonscaler.decision`), the code the local
controller and CarbonAdvisor's what-if executor run too — nothing here re-implements it:

* the first plan (and the plan after a spec edit, for the remaining work from the current slot)
  is :func:`~carbonscaler.decision.first_plan`; an infeasible deadline fails the job;
* re-plans happen only at slot boundaries (the first pass in a new slot), where
  :func:`~carbonscaler.decision.review` checks the plan against the true progress and the
  latest forecast; a carbon update between boundaries is used at the next boundary;
* the level to run is :func:`~carbonscaler.decision.servers_now`: the plan's, the top level
  past the deadline, or the level running when the job overruns its plan.

What the operator observed besides the resource is fed back in as observations, and decided
here: the API server's permanent refusal of a Kubeflow job (``Observation.child_error``: the job
fails with the server's message), the progress the job's pods reported
(``Observation.reported_progress``), and carbon data whose slots are not the job's
(``CarbonSnapshot.slot_seconds``: a job not yet planned waits, a planned one keeps its plan).

**A member of a shared cluster** (``carbonScalerSpec.cluster``) is planned by its cluster
(:func:`carbonscaler.operator.cluster.decide_cluster`): ``Observation.cluster`` (a
:class:`Membership`) brings its plan and its grant for the current slot, and the job makes no
plan or review of its own. Its slots are the cluster's from its arrival; it runs its grant
(``first`` workers for ``fraction`` of the slot, then ``then``), raising its workers only into
servers the other members do not hold (``status.cluster.held`` says what its Kubeflow job may
hold); a job held below its plan by the capacity is ``Queued``, and waits in ``Pending``
without a Kubeflow job if it has not started. Everything else — accounting, progress,
execution, the end — is the same code.

Time is *job hours* since ``startTime``. Energy and emissions are the profile's power ``P(k)``
over the time the workers ran, split at slot edges so each part is charged its own slot's
intensity (:func:`~carbonscaler.accounting.integrate.charge_slots`; ``status.carbonBySlot``
keeps the intensity seen in each slot), labelled ``estimated:profile``; the accounting service
measures.

Execution on Kubeflow:

* **MPIJob** — cannot change its world size: a new worker count deletes the MPIJob
  (foreground, so its pods are gone — checkpoint written — before it is), then creates it again
  with ``Worker.replicas`` and the launcher's ``WORKERS`` updated. Pausing deletes it. With
  ``pauseMode: Suspend`` (training-operator >= 1.7) it is suspended instead, and a rescale
  suspends it, waits for its pods to stop, then patches the worker count and ``WORKERS`` and
  resumes it in one patch.
* **PyTorchJob** (elastic) — a new count patches ``Worker.replicas`` in place; torchrun's
  agents re-form the group and resume from the checkpoint. Pausing deletes the job (or, with
  ``pauseMode: Suspend``, sets ``runPolicy.suspend``): scaling a Worker-only PyTorchJob to 0
  replicas would make the training operator mark it Succeeded.
* A suspension that did not take — the field pruned by an older training operator's CRD, read
  back right after the patch, or the job still ``Running`` long after — is reported (Warning
  ``SuspendUnsupported``) and the job falls back to deletion and re-creation for good.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import ValidationError

from carbonscaler.accounting.integrate import charge_slots
from carbonscaler.cluster import Grant
from carbonscaler.decision import (
    Plans,
    Progress,
    Reason,
    Rules,
    next_change_h,
    plan_from,
    review,
    servers_now,
    slot_of,
)
from carbonscaler.kube.crd import MPI, PYTORCH, CarbonScalerSpec, JobKind
from carbonscaler.kube.operations import (
    ChildError,
    ChildState,
    CreateChild,
    DeleteChild,
    EventNote,
    Operation,
    PatchChild,
)
from carbonscaler.kube.resources import child_body, resize_patch, suspend_patch
from carbonscaler.operator._format import compact, iso, iso_precise, parse_time
from carbonscaler.planner.model import FloatArray, Job, PlanningError
from carbonscaler.planner.policies import Policy
from carbonscaler.profile import ProfileError, ScalingProfile

__all__ = [
    "CarbonSnapshot",
    "ChildError",
    "ChildState",
    "CreateChild",
    "Decision",
    "DeleteChild",
    "EventNote",
    "Membership",
    "Observation",
    "PatchChild",
    "Settings",
    "SettingsError",
    "held_workers",
    "job_finished",
    "job_of",
    "reconcile",
]

# Status fields that change on every tick; alone, they are written at most this often.
# The policy names a job may give: the reference's two and every runnable policy's own.
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
ACCOUNTING_WRITE_S = 60.0
# A job that exits 0 below this reported progress was stopped, not finished.
_DONE_PCT = 99.5
_ESTIMATE_CAP_PCT = 99.0
# A suspended Kubeflow job still Running (and not Suspended) this long after the patch: the
# training operator ignores the suspension.
SUSPEND_GRACE_S = 120.0


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
    # Where ``work`` came from when the settings gave no size (the reference's env sizing).
    work_source: str | None = None
    # The CarbonScalerCluster whose capacity the job shares (None: planned alone).
    cluster: str | None = None

    @property
    def slot_hours(self) -> float:
        return self.slot_seconds / 3600.0

    @classmethod
    def from_resource(cls, kind: JobKind, resource: dict[str, Any]) -> Settings:
        """Read and check the settings of a CarbonScaler resource through the one settings
        model (:class:`~carbonscaler.kube.crd.CarbonScalerSpec`, which the CRD is generated
        from) — the API server checks most of it, this checks all of it.

        A resource written as the reference's, without ``lengthHours`` or ``work``, is sized
        as the reference sized it: work = ``BODIES`` × ``ITERATIONS`` (in the profile's
        units), from the env of the launcher's (MPI) or worker's (PyTorch) container.

        Raises:
            SettingsError: naming the field and what to change.
        """
        cs = resource.get("carbonScalerSpec")
        spec = resource.get("spec")
        if not isinstance(cs, dict) or not isinstance(spec, dict):
            raise SettingsError("the resource needs both spec and carbonScalerSpec")
        try:
            parsed = CarbonScalerSpec.model_validate(cs)
        except ValidationError as exc:
            problems = "; ".join(
                f"carbonScalerSpec{''.join(f'.{p}' for p in err['loc'])}: "
                f"{str(err['msg']).removeprefix('Value error, ')}"
                for err in exc.errors()
            )
            raise SettingsError(problems) from None
        settings = cls(
            min_replicas=parsed.min_replicas,
            max_replicas=parsed.max_replicas,
            deadline_slots=parsed.deadline_slots,
            progress_pct=parsed.progress,
            profile_name=parsed.profile,
            policy=parsed.policy_name,
            slot_seconds=parsed.slot_seconds,
            zone=parsed.carbon_zone,
            length_hours=parsed.length_hours,
            work=parsed.work,
            replan_threshold=parsed.replan_threshold,
            safety_margin=parsed.safety_margin,
            overhead_s=parsed.overhead_s(),
            max_relaunches=parsed.max_relaunches,
            pause_mode=parsed.pause_mode,
            cluster=parsed.cluster,
        )
        settings._check(kind, spec)
        if settings.length_hours is None and settings.work is None:
            work, source = _work_from_env(kind, spec)
            settings = replace(settings, work=work, work_source=source)
        return settings

    def _check(self, kind: JobKind, spec: dict[str, Any]) -> None:
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
        """The policy's one name (``scaler`` → ``carbonscaler``, ``fixed`` → ``agnostic``)."""
        return self.policy


_ENV_SIZE = ("BODIES", "ITERATIONS")


def _work_from_env(kind: JobKind, spec: dict[str, Any]) -> tuple[float, str]:
    """The reference's job size: ``BODIES`` × ``ITERATIONS`` from the env of the main
    replica's (MPI: Launcher, PyTorch: Worker) first container that sets them; the work and
    where it came from.

    Raises:
        SettingsError: saying exactly what to add where the env does not size the job.
    """
    where = f"spec.{kind.replica_specs_key}.{kind.main_replica}"
    add = (
        "add carbonScalerSpec.lengthHours (hours at minReplicas) or carbonScalerSpec.work (the "
        "profile's throughput units × hours), or set BODIES and ITERATIONS in the env of "
        f"{where}'s container (the reference's sizing: work = BODIES × ITERATIONS in the "
        "profile's units)"
    )
    template = spec[kind.replica_specs_key][kind.main_replica].get("template")
    pod = template.get("spec") if isinstance(template, dict) else None
    containers = pod.get("containers") if isinstance(pod, dict) else None
    for container in containers if isinstance(containers, list) else []:
        if not isinstance(container, dict) or not isinstance(container.get("env"), list):
            continue
        env = {e.get("name"): e for e in container["env"] if isinstance(e, dict)}
        named = [name for name in _ENV_SIZE if name in env]
        if not named:
            continue
        label = f"{where} container {container.get('name', '?')}"
        if len(named) < len(_ENV_SIZE):
            missing = next(name for name in _ENV_SIZE if name not in env)
            raise SettingsError(
                f"the job has no size: {label} sets {named[0]} but not {missing}; {add}"
            )
        values = []
        for name in _ENV_SIZE:
            raw = env[name].get("value")
            try:
                value = float(str(raw).strip())
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and value > 0):
                raise SettingsError(
                    f"the job has no size: {label} env {name} is {raw!r}, not a positive number "
                    f"(a literal value, not valueFrom); {add}"
                )
            values.append(value)
        bodies, iterations = values
        source = f"BODIES × ITERATIONS = {bodies:g} × {iterations:g} from {label}'s env"
        return bodies * iterations, source
    raise SettingsError(f"the job has no size: {add}")


def job_finished(resource: dict[str, Any]) -> bool:
    """Whether nothing is left to do for a job: it succeeded, or it failed for its current
    spec (an edit of the spec retries it)."""
    status = resource.get("status") or {}
    phase = status.get("phase")
    if phase == "Succeeded":
        return True
    return phase == "Failed" and status.get("settingsDigest") == settings_digest(resource)


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
        slot_seconds: the carbon source's pace — wall-clock seconds per forecast entry (the
            carbon service's ``--speed``, the operator's ``--slot-seconds``); None if unknown
            (then taken to be the job's). A job whose ``slotSeconds`` differs is not planned on
            it.
    """

    intensity: float
    forecast: tuple[float, ...]
    received: float
    source: str = "carbon"
    slot_seconds: float | None = None

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
class Membership:
    """What a member job of a shared cluster (``carbonScalerSpec.cluster``) learns from its
    cluster's pass (:func:`carbonscaler.operator.cluster.decide_cluster`): the cluster plans
    it, and the job runs what it is granted.

    Args:
        cluster: the CarbonScalerCluster's name.
        found: whether it exists.
        slot_seconds: its slot length (the job's ``slotSeconds`` must be the same).
        epoch: when its slot 0 began (epoch seconds).
        arrival_slot: the job's first slot, in the cluster's slots (None: not admitted).
        deadline_slot: the end of its window (exclusive), in the cluster's slots.
        grant: what it may run in ``grant_slot`` (None: nothing granted yet).
        grant_slot: the cluster slot the grant is for.
        plan: its plan (:meth:`~carbonscaler.decision.Plans.to_dict`, its own slots from
            arrival).
        policy: the cluster's policy (saved with the plan).
        forecast_time: when the forecast the plan was made on was issued (epoch seconds).
        replans: plans made for it after its first.
        capacity: the cluster's servers in the current slot.
        others_held: servers the other members' Kubeflow jobs may hold now (their
            ``status.cluster.held``): the job raises its workers only into what is free.
        finished: the cluster counts its work as done (it keeps its workers until its
            Kubeflow job ends).
        refused: why the cluster cannot take the job (it fails with this message).
        waiting: why the cluster cannot decide for now (the job waits).
    """

    cluster: str
    found: bool = False
    slot_seconds: int | None = None
    epoch: float | None = None
    arrival_slot: int | None = None
    deadline_slot: int | None = None
    grant: Grant | None = None
    grant_slot: int | None = None
    plan: dict[str, Any] | None = None
    policy: str = "joint"
    forecast_time: float | None = None
    replans: int = 0
    capacity: int = 0
    others_held: int = 0
    finished: bool = False
    refused: str | None = None
    waiting: str | None = None


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
        child_error: the API server's permanent refusal of the last operation on the
            Kubeflow job, if it refused one (the job fails with its message).
        reported_progress: the percent done the job's pods reported in its progress
            ConfigMap, if any (with ``carbonScalerSpec.progress``, the larger counts).
        cluster: for a member of a shared cluster, what its cluster decided for it (a
            member without one waits as if its cluster were missing).
    """

    kind: JobKind
    resource: dict[str, Any]
    now: float
    child: ChildState | None = None
    carbon: CarbonSnapshot | None = None
    profile: ScalingProfile | None = None
    profile_error: str | None = None
    child_error: ChildError | None = None
    reported_progress: float | None = None
    cluster: Membership | None = None


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


def _rules(settings: Settings) -> Rules:
    """The decision core's rules for these settings."""
    return Rules(Policy.parse(settings.policy), settings.replan_threshold, settings.safety_margin)


def _overhead_h(settings: Settings) -> float:
    """Job hours of work a rescale loses, as the plans reserve it."""
    return settings.overhead_s / 3600.0


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
        self.membership: Membership | None = None  # set for a member of a shared cluster

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
                    c["lastTransitionTime"] = iso(self.now)
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
                "lastTransitionTime": iso(self.now),
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
        if self.membership is not None:
            # What this job's Kubeflow job may hold now, for the other members' passes.
            block = self.status.setdefault("cluster", {"name": self.membership.cluster})
            block["held"] = (
                0
                if self.status.get("phase") == "Succeeded"
                else held_workers(self.kind, self.obs.child, self.decision.operations)
            )
        old, new = self.old, self.status
        changed = {k for k in new if new[k] != old.get(k)} | {k for k in old if k not in new}
        if changed and changed <= _ACCOUNTING_FIELDS:
            last = parse_time(old.get("accountedUntil"))
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
    if obs.child_error is not None:
        status["settingsDigest"] = digest
        return run.fail("ChildRejected", _rejected(obs.kind, run.meta["name"], obs.child_error))
    try:
        settings = Settings.from_resource(obs.kind, obs.resource)
    except SettingsError as exc:
        status["settingsDigest"] = digest
        return run.fail("InvalidSpec", str(exc))
    membership: Membership | None = None
    if settings.cluster is not None:
        membership = obs.cluster
        if membership is None or membership.cluster != settings.cluster:
            membership = Membership(settings.cluster)
        run.membership = membership
        problem = _membership_problem(settings, membership)
        if problem is not None:
            status["settingsDigest"] = digest
            return run.fail(*problem)
        _member_carbon(run, settings)
    elif not _carbon_pace(run, settings):
        return run.finish()
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
        rules = _rules(settings)
    except (ProfileError, PlanningError) as exc:
        status["settingsDigest"] = digest
        return run.fail("InvalidSpec", str(exc))

    plans: Plans | None
    if membership is not None:
        placed = _placement(run, membership)
        if placed is None:
            return _await_cluster(run, membership)
        start, plans = placed
        # The job's slots are the cluster's from its arrival; its window is the plan's.
        settings = replace(settings, deadline_slots=plans.slots)
        status["startTime"] = iso(start)
    else:
        start = _start_time(run)
        status.setdefault("startTime", iso(start))
        plans = _saved_plan(status)
    n = settings.deadline_slots
    status["deadlineTime"] = iso(start + n * settings.slot_seconds)
    status["slotSeconds"] = settings.slot_seconds
    status["workRequired"] = job.work
    hours = max(obs.now - start, 0.0) / 3600.0  # job hours since arrival
    slot, _ = slot_of(hours, job.slot_hours)

    _record_carbon(run, settings, start, slot)
    _account(run, profile, settings, start, plans)
    done_pct = _progress(run, settings, job)
    work_done = done_pct / 100.0 * job.work
    running = 0 if child is None or child.deleting or child.suspended else child.workers
    started = int((status.get("child") or {}).get("launches", 0)) > 0

    if membership is not None:
        assert plans is not None  # placed
        _follow_cluster(run, membership, digest)
    elif plans is None or status.get("settingsDigest") != digest:
        replanning = "plan" in status
        try:
            progress = Progress(work_done, _nominal(status), running, started)
            plans = _first_plan(run, settings, job, rules, start, slot, progress, plans)
        except PlanningError as exc:
            status["settingsDigest"] = digest
            message = str(exc)
            if settings.work_source:
                message += (
                    f" (the work, {job.work:g}, is {settings.work_source}: the profile's "
                    "throughput must be in those units per hour, else set lengthHours)"
                )
            return run.fail("Infeasible", message)
        status["settingsDigest"] = digest
        if replanning:
            status["replans"] = int(status.get("replans", 0)) + 1
    elif slot > int(status.get("slot", 0)):
        _review(run, settings, job, rules, plans, start, slot, work_done, running, started)
    status["slot"] = slot
    if membership is not None:
        planned_by = f"planned by cluster {membership.cluster} (policy {membership.policy})"
        run.condition("Created", True, "Planned", planned_by)
    else:
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
            _next_change(run, plans, job, rules, start, hours, 0)
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

    wait_note = None
    if membership is not None:
        desired, queued, wait_note = _granted(run, membership, job, hours, running)
        # Late or overrunning at this moment (the grant's reasons cover its whole slot).
        _, now_why = servers_now(plans, job, rules, hours, running)
        why = (now_why & (Reason.LATE | Reason.OVERRUN)) | queued
    else:
        desired, why = servers_now(plans, job, rules, hours, running)
    if Reason.LATE in why and not status.get("pastDeadline"):
        status["pastDeadline"] = True
        run.event(
            "Warning",
            "DeadlineMissed",
            f"the deadline ({status['deadlineTime']}) passed at {done_pct:.1f} %; running at "
            f"{desired} workers until done",
        )
    if Reason.OVERRUN in why and not status.get("overrun"):
        # The plan's work is done but the job is not: it is slower than its profile. Stopping
        # it now would leave it paused with nothing planned; it finishes at its size.
        status["overrun"] = True
        run.event(
            "Warning",
            "Overrun",
            f"the planned work is done but the job is not ({done_pct:.1f} %); keeping "
            f"{running} workers until it finishes — report progress for better plans",
        )
    status["desiredReplicas"] = desired
    _execute(run, settings, child, desired, slot)
    if membership is not None:
        planned, _ = servers_now(plans, job, rules, hours, running)
        _member_status(run, membership, hours, job, why, desired, planned, started, wait_note)
    _next_change(run, plans, job, rules, start, hours, desired, overrun=Reason.OVERRUN in why)
    return run.finish()


def _rejected(kind: JobKind, name: str, error: ChildError) -> str:
    verb = "create" if error.operation == "CreateChild" else "change"
    return (
        f"the API server refused to {verb} {kind.child_kind} {name} (HTTP {error.code}): "
        f"{error.message}; fix the job's spec (editing it retries)"
    )


def _carbon_pace(run: _Run, settings: Settings) -> bool:
    """Check the carbon data's pace against the job's slot length; False if the job must wait.

    Carbon data whose forecast entries are not the job's slots (``slot_seconds`` differs from
    ``slotSeconds``) would plan the job on a stretched or compressed trace. A job without a
    plan waits (``Pending``, Warning ``CarbonPaceMismatch``) until the two agree; a planned
    one keeps its plan and is told once, and the data are not used for it.
    """
    carbon = run.obs.carbon
    status = run.status
    pace = None if carbon is None else carbon.slot_seconds
    if pace is None or math.isclose(pace, settings.slot_seconds, rel_tol=1e-6):
        status.pop("carbonPaceMismatch", None)
        return True
    message = (
        f"the carbon data advance one slot every {pace:g} s but carbonScalerSpec.slotSeconds "
        f"is {settings.slot_seconds}: set slotSeconds: {pace:g}, or run the carbon service "
        "and the operator at this job's pace (SLOT_SECONDS in deploy/slot.yaml)"
    )
    if _saved_plan(status) is None:
        if run.old.get("message") != message:
            run.event("Warning", "CarbonPaceMismatch", message)
        run.phase("Pending", "CarbonPaceMismatch", message)
        run.condition("Created", False, "CarbonPaceMismatch", message)
        return False
    if status.get("carbonPaceMismatch") != message:
        run.event("Warning", "CarbonPaceMismatch", f"{message}; the plan stands without them")
    status["carbonPaceMismatch"] = message
    run.obs = replace(run.obs, carbon=None)
    return True


# -- a member of a shared cluster ------------------------------------------------------------


def held_workers(kind: JobKind, child: ChildState | None, operations: list[Operation]) -> int:
    """The workers a job's Kubeflow job may hold once ``operations`` are sent: the workers it
    had (a job being deleted, or suspended with its pods not yet stopped, still holds them;
    a finished one holds none), or the count just created or patched in, if larger — a
    shrinking job counts as large until a later pass sees it smaller."""
    held = 0
    if child is not None and not child.succeeded and not (child.suspended and child.pods_stopped):
        held = child.workers
    for operation in operations:
        replicas: Any = None
        if isinstance(operation, CreateChild):
            spec = operation.body.get("spec") or {}
            replicas = ((spec.get(kind.replica_specs_key) or {}).get("Worker") or {}).get(
                "replicas"
            )
        elif isinstance(operation, PatchChild):
            spec = operation.patch.get("spec") or {}
            replicas = ((spec.get(kind.replica_specs_key) or {}).get("Worker") or {}).get(
                "replicas"
            )
        if isinstance(replicas, int):
            held = max(held, replicas)
    return held


def _membership_problem(settings: Settings, membership: Membership) -> tuple[str, str] | None:
    """Why a member job cannot run in its cluster at all (it fails), or None."""
    if membership.refused is not None:
        return "Infeasible", membership.refused
    pace = membership.slot_seconds
    if pace is not None and pace != settings.slot_seconds:
        return (
            "InvalidSpec",
            f"carbonScalerSpec.slotSeconds is {settings.slot_seconds} but cluster "
            f"{membership.cluster} plans in slots of {pace} s; set slotSeconds: {pace}",
        )
    return None


def _member_carbon(run: _Run, settings: Settings) -> None:
    """A member's carbon data serve only its accounting (its cluster plans it, and reports a
    pace mismatch): data at another pace are not used."""
    carbon = run.obs.carbon
    pace = None if carbon is None else carbon.slot_seconds
    if pace is not None and not math.isclose(pace, settings.slot_seconds, rel_tol=1e-6):
        run.obs = replace(run.obs, carbon=None)


def _placement(run: _Run, membership: Membership) -> tuple[float, Plans] | None:
    """A member's start (its arrival slot's start) and plan: its cluster's; without a
    decision from the cluster now (missing, invalid, or counting the job as done), the start
    and plan it was given before; None if it never had one."""
    m = membership
    if (
        m.plan is not None
        and m.arrival_slot is not None
        and m.epoch is not None
        and m.slot_seconds is not None
    ):
        return m.epoch + m.arrival_slot * m.slot_seconds, Plans.from_dict(m.plan)
    plans = _saved_plan(run.status)
    start = parse_time(run.status.get("startTime"))
    if plans is None or start is None or "cluster" not in run.status:
        return None
    return start, plans


def _await_cluster(run: _Run, membership: Membership) -> Decision:
    """A member its cluster has not planned (missing, invalid, or not yet decided): it waits
    in Pending, nothing is created."""
    m = membership
    namespace = run.meta.get("namespace", "")
    if m.waiting is not None:
        message = f"waiting for cluster {m.cluster}: {m.waiting}"
    elif not m.found:
        message = (
            f"waiting for CarbonScalerCluster {m.cluster} in namespace {namespace}: it does not "
            "exist; create it, or remove carbonScalerSpec.cluster to plan the job alone"
        )
    else:
        message = f"waiting for cluster {m.cluster} to plan it"
    if run.old.get("message") != message:
        run.event("Warning" if not m.found or m.waiting else "Normal", "WaitingForCluster", message)
    run.status["replicas"] = 0
    run.phase("Pending", "WaitingForCluster", message)
    run.condition("Created", False, "WaitingForCluster", message)
    return run.finish()


def _follow_cluster(run: _Run, membership: Membership, digest: str) -> None:
    """Show the plan the cluster made for the job in its status (the cluster's Events
    announce it), with the cluster's count of re-plans."""
    m = membership
    status = run.status
    if m.plan is not None:
        plan: dict[str, Any] = {**m.plan, "policy": m.policy}
        if m.forecast_time is not None:
            plan["forecastTime"] = iso(m.forecast_time)
        status["plan"] = plan
        status["replans"] = m.replans
    status["settingsDigest"] = digest


def _granted(
    run: _Run, membership: Membership, job: Job, hours: float, running: int
) -> tuple[int, Reason, str | None]:
    """A member's level now: its grant for the current slot (``first`` for ``fraction`` of
    it, then ``then``), raised only into servers the other members do not hold; with no grant
    for this slot, the level running (never raised). Returns the level, ``QUEUED`` if the
    capacity holds the job below its plan, and what the job waits for, if it waits."""
    m = membership
    slot, into = slot_of(hours, job.slot_hours)
    arrival = m.arrival_slot
    if arrival is None:
        arrival = int((run.status.get("cluster") or {}).get("arrivalSlot", 0))
    absolute = arrival + slot
    grant = m.grant
    if grant is None or m.grant_slot != absolute:
        note = None
        if not m.finished:
            note = f"cluster {m.cluster} has not decided slot {absolute}: keeping {running} workers"
        return running, Reason.NONE, note
    level = grant.first if into < grant.fraction - 1e-9 else grant.then
    queued = grant.reasons & Reason.QUEUED
    free = m.capacity - m.others_held
    if level > running and level > free:
        return (
            running,
            queued,
            f"waiting for {level - max(free, running)} of cluster {m.cluster}'s servers that "
            f"other jobs are releasing ({m.others_held} of {m.capacity} held by them)",
        )
    return level, queued, None


def _member_status(
    run: _Run,
    membership: Membership,
    hours: float,
    job: Job,
    why: Reason,
    desired: int,
    planned: int,
    started: bool,
    wait_note: str | None,
) -> None:
    """A member's ``status.cluster`` and what it waits for: a job held below its plan by the
    capacity is ``Queued`` (condition and Event), and waits in ``Pending`` when it has not
    started — without a Kubeflow job, so no pod waits for servers."""
    m = membership
    status = run.status
    before = status.get("cluster") or {}
    slot, _ = slot_of(hours, job.slot_hours)
    arrival = m.arrival_slot if m.arrival_slot is not None else before.get("arrivalSlot", 0)
    deadline = m.deadline_slot if m.deadline_slot is not None else before.get("deadlineSlot")
    absolute = int(arrival) + slot
    queued = Reason.QUEUED in why
    status["cluster"] = {
        "name": m.cluster,
        "slot": absolute,
        "granted": desired,
        "queued": queued,
        "arrivalSlot": int(arrival),
        **({} if deadline is None else {"deadlineSlot": int(deadline)}),
        "held": int(before.get("held", 0)),
    }
    if queued:
        message = (
            f"slot {absolute}: waiting for capacity: cluster {m.cluster}'s {m.capacity} servers "
            f"are granted to jobs queued before it (its plan: {planned} workers now, granted "
            f"{desired})"
        )
        if not before.get("queued"):
            run.event("Normal", "Queued", message)
        run.condition("Queued", True, "WaitingForCapacity", message)
        if desired == 0 and not started:
            run.phase("Pending", "WaitingForCapacity", message)
    else:
        run.condition("Queued", False, "Granted", "")
    if wait_note is not None:
        if desired == 0 and not started:
            run.phase("Pending", "WaitingForServers", wait_note)
        else:
            status["message"] = wait_note


def _start_time(run: _Run) -> float:
    """The job's arrival: the saved start, else the resource's creation, else now."""
    for text in (run.status.get("startTime"), run.meta.get("creationTimestamp")):
        at = parse_time(text)
        if at is not None:
            return at
    return run.now


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


def job_of(settings: Settings, profile: ScalingProfile) -> Job:
    """The planner's job for these settings and this profile (what the operator plans).

    Raises:
        ProfileError: if ``minReplicas`` is beyond the profile.
        PlanningError: on a job the planner cannot take (no work, a bad slot length).
    """
    return _job(settings, profile)


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


# -- carbon and accounting -------------------------------------------------------------------


def _record_carbon(run: _Run, settings: Settings, start: float, slot: int) -> None:
    """Keep the intensity of ``slot`` the first time a pass sees it with carbon data: the
    snapshot's current value, or — for a snapshot from an earlier slot — its forecast for
    this one."""
    carbon = run.obs.carbon
    if carbon is None:
        return
    seen: dict[str, float] = run.status.setdefault("carbonBySlot", {})
    if str(slot) in seen:
        return
    issued = math.floor((carbon.received - start) / settings.slot_seconds + 1e-9)
    if issued == slot:
        seen[str(slot)] = float(carbon.intensity)
    else:
        seen[str(slot)] = float(carbon.ahead(run.now, start, settings.slot_seconds, 1)[0])


def _account(
    run: _Run, profile: ScalingProfile, settings: Settings, start: float, plans: Plans | None
) -> None:
    """Energy and carbon since the last pass at the workers that ran (profile estimate),
    split at slot edges: each part at its slot's intensity as seen (``carbonBySlot``), or the
    plan's forecast for a slot no pass saw with carbon data."""
    status = run.status
    since = parse_time(status.get("accountedUntil"))
    status["accountedUntil"] = iso_precise(run.now)
    status.setdefault("emissionsG", 0.0)
    status.setdefault("energyKWh", 0.0)
    status.setdefault("nominalWork", 0.0)
    k = min(int(status.get("replicas", 0)), profile.max_servers)
    if since is None or k <= 0 or run.now <= since:
        return
    seen = status.get("carbonBySlot") or {}
    forecast = plans.forecast[0] if plans is not None and plans.slots else np.zeros(1)

    def intensity(slot: int) -> float:
        value = seen.get(str(slot))
        if value is not None:
            return float(value)
        return float(forecast[min(max(slot, 0), len(forecast) - 1)])

    start_h, end_h = (since - start) / 3600.0, (run.now - start) / 3600.0
    watts = float(profile.power_w[k])
    energy = emissions = 0.0
    for part in charge_slots(start_h, end_h, settings.slot_hours, watts, intensity):
        energy += part.energy_kwh
        emissions += part.emissions_g
    status["energyKWh"] = float(status["energyKWh"]) + energy
    status["emissionsG"] = float(status["emissionsG"]) + emissions
    status["nominalWork"] = float(status["nominalWork"]) + float(profile.throughput[k]) * (
        end_h - start_h
    )
    status["powerSource"] = "estimated:profile"


def _progress(run: _Run, settings: Settings, job: Job) -> float:
    """Percent done: as the job reported it (``carbonScalerSpec.progress`` or its progress
    ConfigMap, the larger), else estimated from the profile's rate."""
    status = run.status
    reported = max(settings.progress_pct, run.obs.reported_progress or 0.0)
    if reported > 0 or status.get("progressSource") == "reported":
        status["progressSource"] = "reported"
        pct = reported
    else:
        status["progressSource"] = "estimated"
        pct = min(100.0 * float(status.get("nominalWork", 0.0)) / job.work, _ESTIMATE_CAP_PCT)
    status["progress"] = round(pct, 3)
    status["workDone"] = pct / 100.0 * job.work
    return pct


# -- plans -----------------------------------------------------------------------------------


def _saved_plan(status: dict[str, Any]) -> Plans | None:
    """The plan in the status, or None where there is none (or one an older operator saved
    without the core's fields: it is re-made from the current slot, as after a spec edit)."""
    saved = status.get("plan")
    if not saved or "endSlot" not in saved:
        return None
    try:
        return Plans.from_dict(saved)
    except (KeyError, TypeError, ValueError):
        return None


def _save_plan(run: _Run, plans: Plans, rules: Rules) -> None:
    carbon = run.obs.carbon
    run.status["plan"] = {
        **plans.to_dict(),
        "policy": str(rules.policy),
        "forecastTime": iso(carbon.received if carbon is not None else run.now),
    }


def _forecast(
    run: _Run, settings: Settings, start: float, slot: int, horizon: int, old: Plans | None
) -> tuple[FloatArray, bool]:
    """The forecast for ``horizon`` slots from ``slot``, and whether it is a stand-in.

    Without carbon data the old plan's forecast stands in (after a spec edit); with no plan
    either, a flat one (earliest slots first) — the next slot boundary with data re-plans.
    """
    carbon = run.obs.carbon
    if carbon is not None:
        return carbon.ahead(run.now, start, settings.slot_seconds, horizon), False
    known = [] if old is None else [float(x) for x in old.forecast[0, slot : slot + horizon]]
    if not known:
        return np.ones(horizon), True
    known += [known[-1]] * (horizon - len(known))
    return np.asarray(known, dtype=np.float64), True


def _first_plan(
    run: _Run,
    settings: Settings,
    job: Job,
    rules: Rules,
    start: float,
    slot: int,
    progress: Progress,
    old: Plans | None,
) -> Plans:
    """The core's first plan of the work still to do over the slots still left (from arrival,
    or after a spec edit from the current slot); saved in the status and announced.

    Raises:
        InfeasibleError: if the deadline cannot be met even at maxReplicas.
        PlanningError: if the deadline has passed.
    """
    n = settings.deadline_slots
    horizon = n - slot
    if horizon <= 0:
        raise PlanningError(
            f"the deadline ({n} slots) has already passed; raise carbonScalerSpec.deadline"
        )
    forecast, degraded = _forecast(run, settings, start, slot, horizon, old)
    made = plan_from(old, job, rules, slot, progress, forecast, overhead_h=_overhead_h(settings))
    plans = made.plans
    _save_plan(run, plans, rules)
    run.status["degraded"] = degraded
    notes = ""
    if Reason.NO_MARGIN in made.reasons:
        notes += "; no room for the safety margin: the bare work is planned"
    if Reason.OUT_OF_REACH in made.reasons:
        notes += "; out of reach with the rescales it needs: top level until done"
    if degraded:
        notes += " (no carbon data yet: planned on a flat forecast)"
    if settings.work_source:
        notes += f"; work {job.work:g}: {settings.work_source}"
    run.event(
        "Normal",
        "Planned",
        f"{settings.policy}: workers per slot from slot {slot}: "
        f"{compact(made.servers[slot:])}; deadline {run.status['deadlineTime']}{notes}",
    )
    return plans


def _nominal(status: dict[str, Any]) -> float:
    """The work the profile promised for the server-time run — where progress is reported;
    an estimate is made from it, so it says nothing about the job's real speed (0: unknown)."""
    if status.get("progressSource") != "reported":
        return 0.0
    return float(status.get("nominalWork", 0.0))


def _review(
    run: _Run,
    settings: Settings,
    job: Job,
    rules: Rules,
    plans: Plans,
    start: float,
    slot: int,
    work_done: float,
    running: int,
    started: bool,
) -> None:
    """The first pass in a new slot: the core reviews the plan against the true progress and
    the latest forecast (none without carbon data: the plan stands) and may re-plan."""
    status = run.status
    n = settings.deadline_slots
    if slot >= n:
        return  # past the deadline nothing is planned: the top level runs until done
    carbon = run.obs.carbon
    forecast = (
        None if carbon is None else carbon.ahead(run.now, start, settings.slot_seconds, n - slot)
    )
    status["degraded"] = carbon is None
    if status.get("progressSource") == "reported":
        progress = Progress(work_done, _nominal(status), running, started)
    else:
        # An estimate follows the plan by construction: only forecast changes can re-plan.
        progress = Progress(float(plans.planned_done[0, slot]), 0.0, running, started)
    reasons = review(plans, job, rules, slot, progress, forecast, overhead_h=_overhead_h(settings))
    if not reasons:
        return
    _save_plan(run, plans, rules)
    status["replans"] = int(status.get("replans", 0)) + 1
    servers = [int(x) for x in plans.servers[0, slot:]]
    if Reason.OUT_OF_REACH in reasons:
        run.event(
            "Warning",
            "Behind",
            f"slot {slot}: the deadline is out of reach at the planned pace "
            f"({status['progress']:.1f} % done); running at {servers[0]} workers until done",
        )
    run.event(
        "Normal",
        "Replanned",
        f"slot {slot} ({', '.join(reasons.words)}; {status['progress']:.1f} % done): workers "
        f"per slot from slot {slot}: {compact(servers)}",
    )


def _next_change(
    run: _Run,
    plans: Plans,
    job: Job,
    rules: Rules,
    start: float,
    hours: float,
    current: int,
    *,
    overrun: bool = False,
) -> None:
    """The next planned change of worker count (for ``kubectl get`` and the user); none past
    the deadline or while the job overruns its plan (it runs until done)."""
    at = None if overrun else next_change_h(plans, 0, hours, current, job)
    if at is None:
        run.status.pop("nextChange", None)
        return
    level, _ = servers_now(plans, job, rules, at, 0)  # the plan's level then
    run.status["nextChange"] = {"time": iso(start + at * 3600.0), "replicas": level}


# -- execution -------------------------------------------------------------------------------


def _suspend_failure(run: _Run, child: ChildState | None, info: dict[str, Any]) -> str | None:
    """Why a suspension this operator asked for did not take, or None: the field was pruned
    (read back without ``runPolicy.suspend``: a training operator before v1.7), or the job is
    still ``Running`` and not ``Suspended`` :data:`SUSPEND_GRACE_S` after the patch."""
    if not info.get("suspended") or child is None or child.deleting:
        return None
    what = f"{run.kind.child_kind} {child.name}"
    if not child.suspend_field:
        return (
            f"the training operator dropped spec.runPolicy.suspend from {what} (its CRD "
            "predates training-operator v1.7)"
        )
    since = parse_time(info.get("suspendedAt"))
    if (
        child.suspended
        and child.running_condition
        and not child.suspended_condition
        and since is not None
        and run.now - since > SUSPEND_GRACE_S
    ):
        return (
            f"{what} is still Running {run.now - since:.0f} s after it was suspended (the "
            "training operator ignores spec.runPolicy.suspend for it)"
        )
    return None


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
    suspended = child is not None and child.suspended
    # A suspension that did not take: say so once, and delete/recreate from now on. The pause
    # or rescale it was for was counted and announced when it was asked for.
    failure = _suspend_failure(run, child, info)
    if failure is not None:
        info.update(suspendUnsupported=True, suspended=False)
        info.pop("suspendedAt", None)
        suspended = False
        run.event(
            "Warning",
            "SuspendUnsupported",
            f"{failure}: pausing and rescaling by deleting and re-creating it instead; set "
            "pauseMode: Delete, or install training-operator v1.7 or newer",
        )
    # Redoing that pause or rescale by deletion: it was counted and announced already.
    retry = failure is not None and (desired == 0 or status.get("phase") == "Rescaling")
    use_suspend = settings.pause_mode == "Suspend" and not info.get("suspendUnsupported")
    running = 0 if child is None or suspended else child.workers
    if desired == 0:
        status["replicas"] = 0
        if running > 0:
            assert child is not None
            if use_suspend:
                run.op(PatchChild(child.name, suspend_patch()))
                info.update(suspended=True, suspendedAt=iso(run.now))
            else:
                run.op(DeleteChild(child.name))
            if not retry:
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
        info.pop("suspendedAt", None)
        status["replicas"] = desired
        run.phase("Running", reason, message)
        return
    if suspended:
        if pending and not child.pods_stopped:
            # An MPI rescale through a suspension: the new size is patched in once the old
            # pods are gone (the training operator says Suspended).
            status["replicas"] = 0
            run.phase("Rescaling", "Stopping", f"waiting for {child.name}'s pods to stop")
            return
        run.op(
            PatchChild(child.name, resize_patch(kind, run.resource["spec"], desired, resume=True))
        )
        if pending:
            reason = "Rescaled"
            message = f"slot {slot}: resumed with WORKERS={desired}"
        else:
            status["rescales"] = int(status.get("rescales", 0)) + 1
            reason, message = "Resumed", f"slot {slot}: 0 → {desired} workers (resumed)"
        run.event("Normal", reason, message)
        info.update(replicas=desired, suspended=False)
        info.pop("suspendedAt", None)
        status["replicas"] = desired
        run.phase("Running", reason, message)
        return
    if running != desired:
        if not retry:
            status["rescales"] = int(status.get("rescales", 0)) + 1
        if kind is MPI:
            if use_suspend:
                run.op(PatchChild(child.name, suspend_patch()))
                info.update(suspended=True, suspendedAt=iso(run.now))
                how = "suspending the MPIJob to resume it"
            else:
                run.op(DeleteChild(child.name))
                how = "stopping the MPIJob to relaunch it"
            message = f"slot {slot}: {running} → {desired} workers: {how} with WORKERS={desired}"
            if not retry:
                run.event("Normal", "Rescaling", message)
            info["replicas"] = desired
            status["replicas"] = 0
            run.phase("Rescaling", "Rescaling", message)
            return
        run.op(PatchChild(child.name, resize_patch(kind, run.resource["spec"], desired)))
        message = f"slot {slot}: {running} → {desired} workers (elastic)"
        run.event("Normal", "Rescaled", message)
        info["replicas"] = desired
        status["replicas"] = desired
        run.phase("Running", "Rescaled", message)
        return
    status["replicas"] = running
    if status.get("phase") != "Running":
        run.phase("Running", "Running", f"running at {running} workers")


def _succeeded(run: _Run, settings: Settings, start: float) -> Decision:
    status = run.status
    status.update(progress=100.0, replicas=0, desiredReplicas=0)
    status["workDone"] = status.get("workRequired", status.get("workDone", 0.0))
    status["completionTime"] = iso(run.now)
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
