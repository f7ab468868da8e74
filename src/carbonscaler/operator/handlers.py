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

from carbonscaler.backends.base import BackendError
from carbonscaler.backends.kubernetes import ChildRejected, KubeflowApi, ProfileUnavailable
from carbonscaler.kube.crd import GROUP, KINDS, VERSION, JobKind
from carbonscaler.kube.operations import ChildError
from carbonscaler.operator.carbon import CarbonBoard
from carbonscaler.operator.reconcile import (
    Decision,
    DeleteChild,
    EventNote,
    Observation,
    PatchChild,
    reconcile,
    settings_digest,
)
from carbonscaler.profile import ScalingProfile

__all__ = [
    "OperatorContext",
    "on_create",
    "on_delete",
    "on_resume",
    "on_timer",
    "on_update",
    "reconcile_resource",
    "register",
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


TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def finished(resource: dict[str, Any]) -> bool:
    """Whether nothing is left to do for the job: it succeeded, or it failed for its current
    spec (an edit of the spec retries it)."""
    status = resource.get("status") or {}
    phase = status.get("phase")
    if phase == "Succeeded":
        return True
    return phase == "Failed" and status.get("settingsDigest") == settings_digest(resource)


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


def reconcile_resource(ctx: OperatorContext, resource: dict[str, Any]) -> Decision:
    """One full pass for one resource (blocking: runs in a worker thread).

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


async def _pass(body: Any, memo: OperatorContext) -> None:
    resource = _plain(body)
    uid = resource["metadata"]["uid"]
    lock = memo.locks.setdefault(uid, asyncio.Lock())
    async with lock:
        mine = memo.statuses.get(uid)
        theirs = resource.get("status") or {}
        if mine is not None and int(mine.get("revision", 0)) > int(theirs.get("revision", 0)):
            resource["status"] = mine
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
    await _pass(body, memo)


async def on_update(body: kopf.Body, memo: OperatorContext, **_: Any) -> None:
    """The spec changed: a progress report, or an edit of the settings (re-plans)."""
    await _pass(body, memo)


async def on_timer(body: kopf.Body, memo: OperatorContext, **_: Any) -> None:
    """Periodic pass: slot boundaries, planned changes, carbon updates, the job's state."""
    await _pass(body, memo)


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
    """Attach the handlers for both kinds to ``registry``."""
    for kind in KINDS.values():
        resource = (GROUP, VERSION, kind.plural)
        kopf.on.create(*resource, registry=registry)(on_create)
        kopf.on.resume(*resource, registry=registry)(on_resume)
        kopf.on.update(*resource, registry=registry)(on_update)
        kopf.on.delete(*resource, registry=registry)(on_delete)
        kopf.timer(*resource, interval=tick_s, sharp=True, when=active, registry=registry)(on_timer)


def instance_name() -> str:
    """This operator's name in Events (the pod's hostname)."""
    with contextlib.suppress(OSError):
        return socket.gethostname()
    return "carbonscaler-operator"
