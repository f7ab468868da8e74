"""The Kubernetes API operations on a Kubeflow job, as values.

:func:`carbonscaler.operator.reconcile.reconcile` decides in these terms and
:class:`carbonscaler.backends.kubernetes.KubeflowApi` executes them: what the operator knows of
the Kubeflow job it created (:class:`ChildState`), the operations on it (:class:`CreateChild`,
:class:`PatchChild`, :class:`DeleteChild`), the API server's refusal of one of them
(:class:`ChildError`) and the Events to post (:class:`EventNote`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from carbonscaler.kube.crd import JobKind

__all__ = [
    "ChildError",
    "ChildState",
    "CreateChild",
    "DeleteChild",
    "EventNote",
    "Operation",
    "PatchChild",
]


@dataclass(frozen=True)
class ChildState:
    """What the operator needs to know about the Kubeflow job it created.

    ``suspended`` is the job's ``spec.runPolicy.suspend``; ``suspend_field`` whether the field
    is there at all (a training operator whose CRD predates v1.7 prunes it, so a suspension
    asked for and read back without it did not happen); ``running_condition`` and
    ``suspended_condition`` are the training operator's ``Running`` and ``Suspended``
    conditions (v1.7+ sets ``Suspended`` once it has stopped a suspended job's pods).
    """

    name: str
    workers: int
    deleting: bool = False
    suspended: bool = False
    succeeded: bool = False
    failed: bool = False
    owned: bool = True
    suspend_field: bool = False
    running_condition: bool = False
    suspended_condition: bool = False

    @property
    def pods_stopped(self) -> bool:
        """Whether a suspended job's pods are gone: the training operator says ``Suspended``,
        or at least no longer ``Running``."""
        return self.suspended and (self.suspended_condition or not self.running_condition)

    @classmethod
    def from_body(cls, kind: JobKind, body: dict[str, Any], owner_uid: str) -> ChildState:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        worker = (spec.get(kind.replica_specs_key) or {}).get("Worker") or {}
        conditions = {
            c.get("type"): c.get("status") == "True"
            for c in (body.get("status") or {}).get("conditions") or []
        }
        owners = meta.get("ownerReferences") or []
        run_policy = spec.get("runPolicy") or {}
        return cls(
            name=str(meta.get("name", "")),
            workers=int(worker.get("replicas", 1)),
            deleting=bool(meta.get("deletionTimestamp")),
            suspended=bool(run_policy.get("suspend")),
            succeeded=conditions.get("Succeeded", False),
            failed=conditions.get("Failed", False),
            owned=any(o.get("uid") == owner_uid for o in owners),
            suspend_field="suspend" in run_policy,
            running_condition=conditions.get("Running", False),
            suspended_condition=conditions.get("Suspended", False),
        )


@dataclass(frozen=True)
class ChildError:
    """The API server refused an operation on the Kubeflow job for good: a 4xx that retrying
    cannot fix (400/422 invalid, an admission webhook's or policy's denial, ...).

    Args:
        operation: what was refused (``CreateChild``, ``PatchChild``).
        code: the HTTP status.
        message: the server's message (the Status ``message``).
    """

    operation: str
    code: int
    message: str


@dataclass(frozen=True)
class CreateChild:
    """Create the Kubeflow job (``POST``)."""

    body: dict[str, Any]


@dataclass(frozen=True)
class PatchChild:
    """Merge-patch the Kubeflow job (``PATCH``, ``application/merge-patch+json``)."""

    name: str
    patch: dict[str, Any]


@dataclass(frozen=True)
class DeleteChild:
    """Delete the Kubeflow job; foreground, so it goes only once its pods have stopped."""

    name: str
    propagation: str = "Foreground"


Operation = CreateChild | PatchChild | DeleteChild


@dataclass(frozen=True)
class EventNote:
    """A Kubernetes Event to post about the resource."""

    type: str  # Normal | Warning
    reason: str
    message: str
