"""The Kubernetes operator: CarbonScaler jobs over the Kubeflow training operator.

:mod:`carbonscaler.kube` (shared with the Kubernetes backend) defines the custom resources
(``CarbonScalerMPIJob``, ``CarbonScalerPyTorchJob``), builds the Kubeflow jobs and Events and
names the API operations; ``reconcile`` decides — purely — what to do with a job now,
``cluster`` decides — purely — for a shared ``CarbonScalerCluster`` and its member jobs,
``carbon`` receives and polls carbon data, ``handlers`` are the kopf handlers that execute the
decisions through :class:`carbonscaler.backends.kubernetes.KubeflowApi`, and ``progress`` is
the small reporter a job runs to raise its resource's ``progress``. Only the pure parts are
imported here: kopf and the kubernetes client are needed only to run.
"""

from carbonscaler.kube.crd import GROUP, KINDS, MPI, PYTORCH, VERSION, JobKind, crd_manifest
from carbonscaler.operator.cluster import ClusterDecision, ClusterObservation, decide_cluster
from carbonscaler.operator.reconcile import (
    CarbonSnapshot,
    ChildError,
    ChildState,
    CreateChild,
    Decision,
    DeleteChild,
    EventNote,
    Membership,
    Observation,
    PatchChild,
    Settings,
    SettingsError,
    reconcile,
)

__all__ = [
    "GROUP",
    "KINDS",
    "MPI",
    "PYTORCH",
    "VERSION",
    "CarbonSnapshot",
    "ChildError",
    "ChildState",
    "ClusterDecision",
    "ClusterObservation",
    "CreateChild",
    "Decision",
    "DeleteChild",
    "EventNote",
    "JobKind",
    "Membership",
    "Observation",
    "PatchChild",
    "Settings",
    "SettingsError",
    "crd_manifest",
    "decide_cluster",
    "reconcile",
]
