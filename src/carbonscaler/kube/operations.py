"""The Kubernetes API operations on a Kubeflow job, as values.

:func:`carbonscaler.operator.reconcile.reconcile` decides in these terms and
:class:`carbonscaler.backends.kubernetes.KubeflowApi` executes them: what the operator knows of
the Kubeflow job it created (:class:`ChildState`), the operations on it (:class:`CreateChild`,
:class:`PatchChild`, :class:`DeleteChild`) and the Events to post (:class:`EventNote`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from carbonscaler.kube.crd import JobKind

__all__ = [
    "ChildState",
    "CreateChild",
    "DeleteChild",
    "EventNote",
    "Operation",
    "PatchChild",
]


@dataclass(frozen=True)
class ChildState:
    """What the operator needs to know about the Kubeflow job it created."""

    name: str
    workers: int
    deleting: bool = False
    suspended: bool = False
    succeeded: bool = False
    failed: bool = False
    owned: bool = True

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
        return cls(
            name=str(meta.get("name", "")),
            workers=int(worker.get("replicas", 1)),
            deleting=bool(meta.get("deletionTimestamp")),
            suspended=bool((spec.get("runPolicy") or {}).get("suspend")),
            succeeded=conditions.get("Succeeded", False),
            failed=conditions.get("Failed", False),
            owned=any(o.get("uid") == owner_uid for o in owners),
        )


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
