"""The kopf handlers: thin shells that observe, call :func:`reconcile`, and execute.

Every handler is a plain ``async`` function (callable directly in tests) taking kopf's keyword
arguments; :func:`register` attaches them to a kopf registry for both kinds:

* ``on.create`` / ``on.resume`` (operator restart) / ``on.update`` (a spec edit, or a progress
  report in ``carbonScalerSpec.progress``) and a ``timer`` every ``tick`` seconds (slot
  boundaries, planned changes, carbon updates, progress reports) all run the same pass: make
  sure the job's progress ConfigMap exists, read the Kubeflow job and the reported progress,
  read the profile ConfigMap if the status holds no profile yet, take the latest carbon
  snapshot, :func:`reconcile`, then perform its operations, post its Events and merge-patch the
  status — through the official client.
* What the API server answers is fed back to :func:`reconcile` as an observation: a permanent
  refusal of the Kubeflow job (:class:`~carbonscaler.backends.kubernetes.ChildRejected`)
  becomes ``Observation.child_error`` in a second call, and after a patch of the Kubeflow job
  the job is read back and reconciled once more at the same instant — which is how a
  suspension the training operator pruned is noticed at once.
* A finished job (``Succeeded``, or ``Failed`` for its current spec) is not polled: the timer
  is filtered out for it and a pass returns before any API call.
* ``on.delete`` deletes the Kubeflow job in the foreground, so the workload checkpoints before
  its pods go (the owner reference would get it collected anyway).

Passes over one resource are serialised, and the status each pass wrote is kept, so a pass
never works from a status older than the previous pass's (kopf's copy may lag by a watch
event). The blocking client runs in a worker thread; every call has a request timeout, and
:func:`configure` gives kopf's own calls and watches theirs.

**Shared clusters** (``CarbonScalerCluster``): one pass per cluster decides and runs all its
members — it lists the jobs that name the cluster, calls
:func:`~carbonscaler.operator.cluster.decide_cluster`, writes the cluster's status, then runs
each member's pass (:func:`reconcile_resource` with its
:class:`~carbonscaler.operator.reconcile.Membership`) in
:func:`~carbonscaler.operator.cluster.pass_order`, those giving servers back first. The
cluster's create, resume, update and timer run it, and so do a member's create and update (a
new job is admitted and, under ``joint``, re-planned with the others at once) and a member's
resume and timer while no pass of its cluster runs here (a missing cluster: the member
waits). All passes of one cluster and its members hold one lock,
so no two passes ever write a member's status at once, and each works from the statuses the
previous one wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from carbonscaler.backends.base import BackendError
from carbonscaler.backends.kubernetes import ChildRejected, KubeflowApi, ProfileUnavailable
from carbonscaler.kube.crd import CLUSTER, GROUP, KINDS, VERSION, JobKind
from carbonscaler.kube.operations import ChildError
from carbonscaler.operator.carbon import CarbonBoard
from carbonscaler.operator.cluster import (
    ClusterDecision,
    ClusterObservation,
    Member,
    decide_cluster,
    others_held,
    pass_order,
)
from carbonscaler.operator.reconcile import (
    Decision,
    DeleteChild,
    EventNote,
    Membership,
    Observation,
    PatchChild,
    job_finished,
    reconcile,
)
from carbonscaler.profile import ScalingProfile

__all__ = [
    "OperatorContext",
    "on_cluster_create",
    "on_cluster_delete",
    "on_cluster_resume",
    "on_cluster_timer",
    "on_cluster_update",
    "on_create",
    "on_delete",
    "on_resume",
    "on_timer",
    "on_update",
    "reconcile_resource",
    "register",
    "run_cluster_pass",
]

log = logging.getLogger("carbonscaler.operator")


@dataclass
class OperatorContext:
    """What the handlers share (passed to kopf as ``memo``; kopf's per-object shallow copies
    share these members).

    Args:
        api: the API calls (official client).
        board: the latest carbon data.
        clock: epoch seconds (replaceable in tests).
    """

    api: KubeflowApi
    board: CarbonBoard
    clock: Callable[[], float] = time.time
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    channels: set[str] = field(default_factory=set)  # jobs whose progress ConfigMap exists
    clusters: set[str] = field(default_factory=set)  # "<ns>/<name>" of the clusters run here


TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def finished(resource: dict[str, Any]) -> bool:
    """Whether nothing is left to do for the job: it succeeded, or it failed for its current
    spec (an edit of the spec retries it)."""
    return job_finished(resource)


def active(status: kopf.Status, **_: Any) -> bool:
    """kopf filter for the timer: a job still to run (not Succeeded or Failed)."""
    return status.get("phase") not in TERMINAL_PHASES


def _kind(body: Any) -> JobKind:
    kind = KINDS.get(str(body.get("kind")))
    if kind is None:
        raise kopf.PermanentError(f"not a CarbonScaler kind: {body.get('kind')!r}")
    return kind


def _plain(body: Any) -> dict[str, Any]:
    """A plain-dict copy of a kopf body (or any mapping)."""
    return {
        key: (_plain(value) if hasattr(value, "items") else value)
        for key, value in dict(body).items()
    }


def _ensure_channel(ctx: OperatorContext, kind: JobKind, resource: dict[str, Any]) -> None:
    """Create the job's progress ConfigMap once per operator run; a failure is logged and
    retried after a restart (the job runs without reports meanwhile)."""
    uid = resource["metadata"]["uid"]
    if uid in ctx.channels:
        return
    ctx.channels.add(uid)
    try:
        ctx.api.ensure_progress_channel(kind, resource)
    except BackendError as exc:
        log.warning("no progress ConfigMap for %s: %s", resource["metadata"]["name"], exc)


def reconcile_resource(
    ctx: OperatorContext, resource: dict[str, Any], cluster: Membership | None = None
) -> Decision:
    """One full pass for one resource (blocking: runs in a worker thread).

    Args:
        ctx: the operator's context.
        resource: the job (with the freshest status known).
        cluster: for a member of a shared cluster, what the cluster's pass decided for it.

    Raises:
        BackendError: if an API call fails (kopf retries the handler).
    """
    kind = _kind(resource)
    meta = resource["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    status = resource.get("status") or {}
    settings = resource.get("carbonScalerSpec") or {}
    _ensure_channel(ctx, kind, resource)
    child = ctx.api.child_state(kind, namespace, name, uid)
    reported = ctx.api.read_progress(kind, namespace, name)
    profile: ScalingProfile | None = None
    profile_error = None
    if not status.get("profile") and settings.get("profileName"):
        try:
            profile = ctx.api.read_profile(namespace, str(settings["profileName"]))
        except ProfileUnavailable as exc:
            profile_error = str(exc)
    now = ctx.clock()
    observation = Observation(
        kind=kind,
        resource=resource,
        now=now,
        child=child,
        carbon=ctx.board.get(settings.get("carbonZone")),
        profile=profile,
        profile_error=profile_error,
        reported_progress=reported,
        cluster=cluster,
    )
    decision, error = _perform(ctx, observation)
    if error is not None:
        # Refused for good: reconcile decides what that means for the job (it fails).
        decision, _ = _perform(ctx, replace(observation, child_error=error))
        events, patch = decision.events, decision.status_patch
    elif any(isinstance(op, PatchChild) for op in decision.operations):
        # Read the patched job back and reconcile once more at the same instant: a change the
        # API server dropped (a suspension pruned by an older CRD) is acted on at once.
        again = replace(
            observation,
            resource={**resource, "status": decision.status},
            child=ctx.api.child_state(kind, namespace, name, uid),
            profile=None,
        )
        second, error = _perform(ctx, again)
        if error is not None:
            second, _ = _perform(ctx, replace(again, child_error=error))
        events = decision.events + second.events
        patch = {**decision.status_patch, **second.status_patch}
        decision = Decision(second.operations, events, patch, second.status)
    else:
        events, patch = decision.events, decision.status_patch
    for note in events:
        ctx.api.post_event(resource, note, now)
        log.info("%s/%s %s: %s", namespace, name, note.reason, note.message)
    if patch:
        ctx.api.patch_status(kind, namespace, name, patch)
    return decision


def _perform(ctx: OperatorContext, observation: Observation) -> tuple[Decision, ChildError | None]:
    """Decide, and perform the decision's operations in order; the API server's permanent
    refusal of one stops there and is returned (the decision's Events and status are then
    void: what they announce did not happen)."""
    decision = reconcile(observation)
    meta = observation.resource["metadata"]
    for operation in decision.operations:
        try:
            ctx.api.apply(observation.kind, meta["namespace"], operation)
        except ChildRejected as exc:
            log.warning("%s/%s: %s", meta["namespace"], meta["name"], exc)
            return decision, exc.error
    return decision, None


def _freshest(ctx: OperatorContext, resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` with the status this operator last wrote, where that is newer."""
    uid = resource["metadata"].get("uid")
    mine = ctx.statuses.get(uid) if uid else None
    theirs = resource.get("status") or {}
    if mine is not None and int(mine.get("revision", 0)) > int(theirs.get("revision", 0)):
        resource["status"] = mine
    return resource


def _cluster_of(resource: dict[str, Any]) -> str | None:
    """The shared cluster a job names, if any."""
    name = (resource.get("carbonScalerSpec") or {}).get("cluster")
    return str(name) if name else None


async def _pass(body: Any, memo: OperatorContext, *, periodic: bool = False) -> None:
    resource = _plain(body)
    cluster = _cluster_of(resource)
    if cluster is not None:
        namespace = resource["metadata"]["namespace"]
        if periodic and f"{namespace}/{cluster}" in memo.clusters:
            return  # the cluster's own passes run this job
        if not finished(_freshest(memo, resource)):
            await _cluster_pass(memo, namespace, cluster, None)
        return
    uid = resource["metadata"]["uid"]
    lock = memo.locks.setdefault(uid, asyncio.Lock())
    async with lock:
        _freshest(memo, resource)
        if finished(resource):
            return  # nothing to poll: not even the Kubeflow job is read
        try:
            decision = await asyncio.to_thread(reconcile_resource, memo, resource)
        except BackendError as exc:
            raise kopf.TemporaryError(str(exc), delay=15) from None
        memo.statuses[uid] = decision.status


async def on_create(body: kopf.Body, memo: OperatorContext, **_: Any) -> None:
    """A new job: validate, plan, start the Kubeflow job if the plan runs now."""
    await _pass(body, memo)


async def on_resume(body: kopf.Body, memo: OperatorContext, **_: Any) -> None:
    """The operator (re)started and found the job: continue from its status."""
    await _pass(body, memo, periodic=True)


async def on_update(body: kopf.Body, memo: OperatorContext, **_: Any) -> None:
    """The spec changed: a progress report, or an edit of the settings (re-plans)."""
    await _pass(body, memo)


async def on_timer(body: kopf.Body, memo: OperatorContext, **_: Any) -> None:
    """Periodic pass: slot boundaries, planned changes, carbon updates, the job's state."""
    await _pass(body, memo, periodic=True)


async def on_delete(body: kopf.Body, memo: OperatorContext, **_: Any) -> None:
    """Stop the Kubeflow job in the foreground so the workload checkpoints first."""
    resource = _plain(body)
    kind = _kind(resource)
    meta = resource["metadata"]

    def stop() -> None:
        memo.api.apply(kind, meta["namespace"], DeleteChild(meta["name"]))
        memo.api.post_event(
            resource,
            EventNote("Normal", "Deleted", f"deleted {kind.child_kind} {meta['name']}"),
            memo.clock(),
        )

    try:
        await asyncio.to_thread(stop)
    except BackendError as exc:
        raise kopf.TemporaryError(str(exc), delay=15) from None
    memo.statuses.pop(meta["uid"], None)
    memo.locks.pop(meta["uid"], None)
    memo.channels.discard(meta["uid"])


# -- shared clusters ---------------------------------------------------------------------------


def _api_call(what: str, call: Callable[[], Any]) -> Any:
    """Run one official-client call, its failures as a :class:`BackendError`."""
    try:
        return call()
    except ApiException as exc:
        hint = ""
        if exc.status == 403:
            hint = " — the service account lacks a permission; apply deploy/operator/rbac.yaml"
        raise BackendError(f"{what}: HTTP {exc.status} {exc.reason}{hint}") from None
    except urllib3.exceptions.HTTPError as exc:
        raise BackendError(
            f"{what}: the API server did not answer ({type(exc).__name__}: {exc}); retrying "
            "on the next pass"
        ) from None


def _listed(ctx: OperatorContext, namespace: str, plural: str, kind: str) -> list[dict[str, Any]]:
    """Every object of one of our kinds in ``namespace`` (a list: what kopf's watch needs
    anyway, so no ``get`` is granted)."""
    api = ctx.api
    found = _api_call(
        f"listing {plural} in {namespace}",
        lambda: api.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, _request_timeout=api.timeout
        ),
    )
    items = found.get("items", []) if isinstance(found, dict) else []
    out = []
    for item in items:
        if isinstance(item, dict):
            item.setdefault("apiVersion", f"{GROUP}/{VERSION}")
            item.setdefault("kind", kind)
            out.append(_plain(item))
    return out


def read_cluster(ctx: OperatorContext, namespace: str, name: str) -> dict[str, Any] | None:
    """The CarbonScalerCluster ``name``, or None if there is none (or it is being deleted).

    Raises:
        BackendError: on an API error.
    """
    for item in _listed(ctx, namespace, CLUSTER.plural, CLUSTER.kind):
        meta = item.get("metadata") or {}
        if meta.get("name") == name and not meta.get("deletionTimestamp"):
            return item
    return None


def list_members(ctx: OperatorContext, namespace: str, name: str) -> list[tuple[JobKind, Any]]:
    """Every job in ``namespace`` that names cluster ``name``, with its kind.

    Raises:
        BackendError: on an API error.
    """
    members = []
    for kind in KINDS.values():
        for item in _listed(ctx, namespace, kind.plural, kind.kind):
            if _cluster_of(item) == name:
                members.append((kind, item))
    return members


def patch_cluster_status(
    ctx: OperatorContext, namespace: str, name: str, patch: dict[str, Any]
) -> None:
    """Merge-patch a CarbonScalerCluster's ``status``.

    Raises:
        BackendError: on an API error.
    """
    api = ctx.api
    _api_call(
        f"patching the status of {CLUSTER.kind} {namespace}/{name}",
        lambda: api.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            CLUSTER.plural,
            name,
            {"status": patch},
            _request_timeout=api.timeout,
        ),
    )


def run_cluster_pass(
    ctx: OperatorContext, namespace: str, name: str, body: dict[str, Any] | None = None
) -> ClusterDecision | None:
    """One pass over a shared cluster and its members (blocking: runs in a worker thread):
    decide for the cluster, write its status and Events, then run each member's pass with
    what the cluster decided for it, those giving servers back first, each told what the
    others hold as they go. Without the cluster, each member's pass runs alone (it waits, or
    keeps its level).

    Args:
        ctx: the operator's context.
        namespace: the cluster's namespace.
        name: the cluster's name.
        body: the cluster as kopf gave it; None reads it.

    Returns:
        The cluster's decision, or None without the cluster.

    Raises:
        BackendError: if an API call fails (kopf retries the handler).
    """
    where = f"{namespace}/{name}"
    cluster = body if body is not None else read_cluster(ctx, namespace, name)
    members = [(kind, _freshest(ctx, item)) for kind, item in list_members(ctx, namespace, name)]
    if cluster is None or (cluster.get("metadata") or {}).get("deletionTimestamp"):
        ctx.clusters.discard(where)
        for _, item in members:
            if not finished(item):
                alone = reconcile_resource(ctx, item, Membership(name))
                ctx.statuses[item["metadata"]["uid"]] = alone.status
        return None
    ctx.clusters.add(where)
    cluster = _freshest(ctx, cluster)
    views = []
    for kind, item in members:
        profile = None
        settings = item.get("carbonScalerSpec") or {}
        if not finished(item) and not (item.get("status") or {}).get("profile"):
            with contextlib.suppress(ProfileUnavailable):
                profile = ctx.api.read_profile(namespace, str(settings.get("profileName", "")))
        views.append(Member(kind, item, profile))
    zone = (cluster.get("spec") or {}).get("carbonZone")
    now = ctx.clock()
    decision = decide_cluster(ClusterObservation(cluster, now, views, ctx.board.get(zone)))
    for note in decision.events:
        ctx.api.post_event(cluster, note, now)
        log.info("%s %s: %s", where, note.reason, note.message)
    if decision.status_patch:
        patch_cluster_status(ctx, namespace, name, decision.status_patch)
    ctx.statuses[cluster["metadata"]["uid"]] = decision.status
    by_key = {view.key: view for view in views}
    for key, notes in decision.member_events.items():
        member = by_key.get(key)
        if member is None:
            continue
        for note in notes:
            ctx.api.post_event(member.resource, note, now)
            log.info("%s/%s %s: %s", namespace, member.name, note.reason, note.message)
    held = {
        view.key: int((view.status.get("cluster") or {}).get("held", 0))
        for view in views
        if not finished(view.resource)
    }
    for key in pass_order(decision.memberships, held):
        view = by_key.get(key)
        if view is None or finished(view.resource):
            continue
        membership = replace(decision.memberships[key], others_held=others_held(held, key))
        done = reconcile_resource(ctx, view.resource, membership)
        ctx.statuses[view.resource["metadata"]["uid"]] = done.status
        if finished({**view.resource, "status": done.status}):
            held.pop(key, None)
        else:
            held[key] = int((done.status.get("cluster") or {}).get("held", 0))
    return decision


async def _cluster_pass(
    memo: OperatorContext, namespace: str, name: str, body: dict[str, Any] | None
) -> None:
    """:func:`run_cluster_pass` under the cluster's lock (its members' passes hold it too)."""
    lock = memo.locks.setdefault(f"cluster:{namespace}/{name}", asyncio.Lock())
    async with lock:
        try:
            await asyncio.to_thread(run_cluster_pass, memo, namespace, name, body)
        except BackendError as exc:
            raise kopf.TemporaryError(str(exc), delay=15) from None


async def _cluster_handler(body: Any, memo: OperatorContext) -> None:
    resource = _plain(body)
    meta = resource["metadata"]
    await _cluster_pass(memo, meta["namespace"], meta["name"], resource)


async def on_cluster_create(body: kopf.Body, memo: OperatorContext, **_: Any) -> None:
    """A new shared cluster: admit and plan the jobs that already name it."""
    await _cluster_handler(body, memo)


async def on_cluster_resume(body: kopf.Body, memo: OperatorContext, **_: Any) -> None:
    """The operator (re)started: continue the cluster from its status."""
    await _cluster_handler(body, memo)


async def on_cluster_update(body: kopf.Body, memo: OperatorContext, **_: Any) -> None:
    """The cluster's spec changed (capacity, policy): decide with it."""
    await _cluster_handler(body, memo)


async def on_cluster_timer(body: kopf.Body, memo: OperatorContext, **_: Any) -> None:
    """Periodic pass: slot boundaries, and every member's own pass."""
    await _cluster_handler(body, memo)


async def on_cluster_delete(body: kopf.Body, memo: OperatorContext, **_: Any) -> None:
    """The cluster is gone: its members' own timers take over (they wait, or keep their
    level)."""
    meta = _plain(body)["metadata"]
    memo.clusters.discard(f"{meta['namespace']}/{meta['name']}")
    memo.statuses.pop(meta.get("uid"), None)


WATCH_SERVER_TIMEOUT_S = 300
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 60.0
TIMER_EXIT_POLL_S = 2.0


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings: our own finalizer and annotation keys, so kopf writes nothing into our
    status schema; only explicit Events are posted."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.peering.stealth = True
    # Timeouts on every call kopf makes, so a half-open connection never wedges it: a watch is
    # closed by the server after server_timeout and by kopf after client_timeout (and, in
    # kopf >= 1.44, re-opened after watching.inactivity_timeout without any event); every
    # other call gives up after request_timeout.
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_SERVER_TIMEOUT_S + 30
    settings.watching.connect_timeout = CONNECT_TIMEOUT_S
    settings.networking.request_timeout = REQUEST_TIMEOUT_S
    settings.networking.connect_timeout = CONNECT_TIMEOUT_S
    # A job deleted while its timer runs a pass: kopf removes the finalizer once the timer has
    # exited, and checks for that every cancellation_polling seconds (default 60).
    settings.background.cancellation_polling = TIMER_EXIT_POLL_S


def register(registry: kopf.OperatorRegistry, *, tick_s: float = 10.0) -> None:
    """Attach the handlers for both job kinds and the shared clusters to ``registry``."""
    for kind in KINDS.values():
        resource = (GROUP, VERSION, kind.plural)
        kopf.on.create(*resource, registry=registry)(on_create)
        kopf.on.resume(*resource, registry=registry)(on_resume)
        kopf.on.update(*resource, registry=registry)(on_update)
        kopf.on.delete(*resource, registry=registry)(on_delete)
        kopf.timer(*resource, interval=tick_s, sharp=True, when=active, registry=registry)(on_timer)
    cluster = (GROUP, VERSION, CLUSTER.plural)
    kopf.on.create(*cluster, registry=registry)(on_cluster_create)
    kopf.on.resume(*cluster, registry=registry)(on_cluster_resume)
    kopf.on.update(*cluster, registry=registry)(on_cluster_update)
    kopf.on.delete(*cluster, registry=registry)(on_cluster_delete)
    kopf.timer(*cluster, interval=tick_s, sharp=True, registry=registry)(on_cluster_timer)


def instance_name() -> str:
    """This operator's name in Events (the pod's hostname)."""
    with contextlib.suppress(OSError):
        return socket.gethostname()
    return "carbonscaler-operator"
