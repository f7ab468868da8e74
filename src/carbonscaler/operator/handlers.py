"""The kopf handlers: thin shells that observe, call :func:`reconcile`, and execute.

Every handler is a plain ``async`` function (callable directly in tests) taking kopf's keyword
arguments; :func:`register` attaches them to a kopf registry for both kinds:

* ``on.create`` / ``on.resume`` (operator restart) / ``on.update`` (a spec edit or a progress
  report) and a ``timer`` every ``tick`` seconds (slot boundaries, planned changes, carbon
  updates) all run the same pass: read the Kubeflow job, read the profile ConfigMap if the
  status holds no profile yet, take the latest carbon snapshot, :func:`reconcile`, then perform
  its operations, post its Events and merge-patch the status — through the official client.
* ``on.delete`` deletes the Kubeflow job in the foreground, so the workload checkpoints before
  its pods go (the owner reference would get it collected anyway).

Passes over one resource are serialised, and the status each pass wrote is kept, so a pass
never works from a status older than the previous pass's (kopf's copy may lag by a watch
event). The blocking client runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf

from carbonscaler.backends.base import BackendError
from carbonscaler.backends.kubernetes import KubeflowApi, ProfileUnavailable
from carbonscaler.kube.crd import GROUP, KINDS, VERSION, JobKind
from carbonscaler.operator.carbon import CarbonBoard
from carbonscaler.operator.reconcile import Decision, DeleteChild, EventNote, Observation, reconcile
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
    child = ctx.api.child_state(kind, namespace, name, uid)
    profile: ScalingProfile | None = None
    profile_error = None
    if not status.get("profile") and settings.get("profileName"):
        try:
            profile = ctx.api.read_profile(namespace, str(settings["profileName"]))
        except ProfileUnavailable as exc:
            profile_error = str(exc)
    now = ctx.clock()
    decision = reconcile(
        Observation(
            kind=kind,
            resource=resource,
            now=now,
            child=child,
            carbon=ctx.board.get(settings.get("carbonZone")),
            profile=profile,
            profile_error=profile_error,
        )
    )
    for operation in decision.operations:
        ctx.api.apply(kind, namespace, operation)
    for note in decision.events:
        ctx.api.post_event(resource, note, now)
        log.info("%s/%s %s: %s", namespace, name, note.reason, note.message)
    if decision.status_patch:
        ctx.api.patch_status(kind, namespace, name, decision.status_patch)
    return decision


async def _pass(body: Any, memo: OperatorContext) -> None:
    resource = _plain(body)
    uid = resource["metadata"]["uid"]
    lock = memo.locks.setdefault(uid, asyncio.Lock())
    async with lock:
        mine = memo.statuses.get(uid)
        theirs = resource.get("status") or {}
        if mine is not None and int(mine.get("revision", 0)) > int(theirs.get("revision", 0)):
            resource["status"] = mine
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


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings: our own finalizer and annotation keys, so kopf writes nothing into our
    status schema; only explicit Events are posted."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.peering.stealth = True


def register(registry: kopf.OperatorRegistry, *, tick_s: float = 10.0) -> None:
    """Attach the handlers for both kinds to ``registry``."""
    for kind in KINDS.values():
        resource = (GROUP, VERSION, kind.plural)
        kopf.on.create(*resource, registry=registry)(on_create)
        kopf.on.resume(*resource, registry=registry)(on_resume)
        kopf.on.update(*resource, registry=registry)(on_update)
        kopf.on.delete(*resource, registry=registry)(on_delete)
        kopf.timer(*resource, interval=tick_s, sharp=True, registry=registry)(on_timer)


def instance_name() -> str:
    """This operator's name in Events (the pod's hostname)."""
    with contextlib.suppress(OSError):
        return socket.gethostname()
    return "carbonscaler-operator"
