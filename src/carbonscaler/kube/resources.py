"""The objects the operator creates: Kubeflow MPIJob / PyTorchJob bodies, their patches, Events.

Pure functions from a CarbonScaler resource to request bodies, so the exact bodies the API
server receives can be checked without a cluster.

A child is named like its owner and carries an owner reference to it (``controller: true``,
``blockOwnerDeletion: true``): deleting a CarbonScaler job makes the garbage collector delete
the Kubeflow job and its pods. MPI cannot change its world size, so an MPIJob is always built
whole at one worker count: ``Worker.replicas = k`` and ``WORKERS=k`` in every container of the
launcher (the reference's mechanism; the launcher starts ``mpirun -np $WORKERS``) — created so,
or, suspended, patched so before it resumes (:func:`resize_patch`). A PyTorchJob changes size in
place through its ``elasticPolicy``.

The operator owns the child's lifecycle: ``runPolicy.suspend`` and
``runPolicy.ttlSecondsAfterFinished`` are left out of the child (a suspension is the operator's
to make; a finished child deleted by its TTL before the operator saw it finish would look like
one that was never started). A job reports its progress through a ConfigMap of its own
(:func:`progress_configmap_body`), the only object its pods may write.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from carbonscaler.kube.crd import GROUP, MPI, JobKind

__all__ = [
    "LABEL_JOB",
    "LABEL_KIND",
    "PROGRESS_KEY",
    "child_body",
    "event_body",
    "owner_reference",
    "progress_configmap_body",
    "progress_configmap_name",
    "replicas_patch",
    "resize_patch",
    "suspend_patch",
]

LABEL_JOB = f"{GROUP}/job"
LABEL_KIND = f"{GROUP}/kind"
WORKERS_ENV = "WORKERS"
COMPONENT = "carbonscaler-operator"
PROGRESS_KEY = "progress"
# What the operator, not the user, decides about the child (see the module docstring).
_OPERATOR_RUN_POLICY = ("suspend", "ttlSecondsAfterFinished")


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """The owner reference that ties a child to its CarbonScaler resource."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    env = [e for e in container.get("env", []) if e.get("name") != name]
    env.append({"name": name, "value": value})
    container["env"] = env


def _set_workers(replica_specs: dict[str, Any], workers: int) -> None:
    """An MPIJob's launcher at ``workers``: one replica, ``WORKERS`` in every container."""
    launcher = replica_specs["Launcher"]
    launcher["replicas"] = 1
    for container in launcher["template"].get("spec", {}).get("containers", []):
        _set_env(container, WORKERS_ENV, str(workers))


def child_body(
    kind: JobKind,
    *,
    name: str,
    namespace: str,
    spec: dict[str, Any],
    workers: int,
    owner: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    elastic_bounds: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The Kubeflow job at ``workers`` workers.

    Args:
        kind: the CarbonScaler kind (it names the Kubeflow kind).
        name: the Kubeflow job's name.
        namespace: its namespace.
        spec: the Kubeflow job's spec (the CarbonScaler resource's ``spec``); not modified.
        workers: worker replicas (at least 1).
        owner: the CarbonScaler resource that owns the job, if any.
        labels: extra labels (the owner's, usually).
        elastic_bounds: for PyTorch, the ``(minReplicas, maxReplicas)`` to write into
            ``elasticPolicy`` where the user left them out.
    """
    spec = copy.deepcopy(spec)
    run_policy = spec.get("runPolicy")
    if isinstance(run_policy, dict):
        for key in _OPERATOR_RUN_POLICY:
            run_policy.pop(key, None)
    replica_specs = spec[kind.replica_specs_key]
    replica_specs["Worker"]["replicas"] = workers
    if kind is MPI:
        _set_workers(replica_specs, workers)
    elif elastic_bounds is not None:
        elastic = spec.setdefault("elasticPolicy", {})
        elastic.setdefault("minReplicas", elastic_bounds[0])
        elastic.setdefault("maxReplicas", elastic_bounds[1])
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {**(labels or {}), LABEL_JOB: name, LABEL_KIND: kind.kind},
    }
    if owner is not None:
        metadata["ownerReferences"] = [owner_reference(owner)]
    return {
        "apiVersion": kind.child_api_version,
        "kind": kind.child_kind,
        "metadata": metadata,
        "spec": spec,
    }


def replicas_patch(kind: JobKind, workers: int, *, resume: bool = False) -> dict[str, Any]:
    """A merge patch setting the worker replicas of a PyTorchJob; ``resume`` also lifts a
    suspension (only then, since training-operator releases before 1.7 lack the field)."""
    spec: dict[str, Any] = {kind.replica_specs_key: {"Worker": {"replicas": workers}}}
    if resume:
        spec["runPolicy"] = {"suspend": False}
    return {"spec": spec}


def resize_patch(
    kind: JobKind, spec: dict[str, Any], workers: int, *, resume: bool = False
) -> dict[str, Any]:
    """A merge patch bringing a Kubeflow job to ``workers``: for a PyTorchJob its
    ``Worker.replicas`` (:func:`replicas_patch`); for a (suspended) MPIJob also its launcher
    with ``WORKERS`` set, whole (a merge patch replaces the container list), from the
    resource's current ``spec``. ``resume`` lifts the suspension in the same patch."""
    if kind is not MPI:
        return replicas_patch(kind, workers, resume=resume)
    replica_specs = copy.deepcopy(spec[kind.replica_specs_key])
    _set_workers(replica_specs, workers)
    patch = replicas_patch(kind, workers, resume=resume)
    patch["spec"][kind.replica_specs_key]["Launcher"] = replica_specs["Launcher"]
    return patch


def suspend_patch() -> dict[str, Any]:
    """A merge patch that suspends a Kubeflow job (training-operator >= 1.7): its pods go, the
    job and its checkpoints stay."""
    return {"spec": {"runPolicy": {"suspend": True}}}


def progress_configmap_name(kind: JobKind, name: str) -> str:
    """The ConfigMap a job's pods report progress to: ``<job>-<short kind>-progress``
    (``nbody-csmpi-progress``, ``resnet18-cspt-progress``)."""
    return f"{name}-{kind.short_names[-1]}-progress"


def progress_configmap_body(kind: JobKind, owner: dict[str, Any]) -> dict[str, Any]:
    """The (empty) progress ConfigMap of ``owner``, owned by it (deleted with it). The job's
    progress reporter writes ``data.progress`` (percent done); the operator reads it."""
    meta = owner["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": progress_configmap_name(kind, meta["name"]),
            "namespace": meta["namespace"],
            "labels": {LABEL_JOB: meta["name"], LABEL_KIND: kind.kind},
            "ownerReferences": [owner_reference(owner)],
        },
        "data": {},
    }


def event_body(
    owner: dict[str, Any],
    *,
    type_: str,
    reason: str,
    message: str,
    now: datetime,
    instance: str,
) -> dict[str, Any]:
    """A core/v1 Event about ``owner`` (shown by ``kubectl describe`` and ``get events``)."""
    meta = owner["metadata"]
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": type_,
        "reason": reason,
        # The API server rejects event messages over 1 KiB.
        "message": message if len(message) <= 1024 else message[:1021] + "...",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "source": {"component": COMPONENT},
        "reportingComponent": f"{GROUP}/operator",
        "reportingInstance": instance,
    }
