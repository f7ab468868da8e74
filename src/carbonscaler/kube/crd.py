"""The custom resources: names, and the CRDs with their structural OpenAPI schemas.

Two job kinds in group ``carbonscaler.io``, version ``v1``. Each holds a Kubeflow training-job
spec under ``spec`` (as the reference did) and the carbon-aware settings under
``carbonScalerSpec``; the operator writes everything it knows under ``status``. A third kind,
``CarbonScalerCluster`` (:data:`CLUSTER`), is a shared capacity: the jobs that name it in
``carbonScalerSpec.cluster`` are planned together under its ``spec.capacity``
(:class:`CarbonScalerClusterSpec`; see :mod:`carbonscaler.operator.cluster`). The CRD documents in
``deploy/crds/`` are generated from :func:`crd_manifest` and :func:`cluster_crd_manifest`
(``python -m carbonscaler.kube.crd deploy/crds``), and a test checks that they are current.

The Kubeflow pod templates are kept as opaque objects (``x-kubernetes-preserve-unknown-fields``)
so any training-operator release's fields pass through; the parts the operator reads or sets
(replica counts, ``elasticPolicy``, the settings) are typed and bounded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from carbonscaler.settings import JobSettings, _assumed_overhead_s, cel_rules_for

__all__ = [
    "CLUSTER",
    "GROUP",
    "KINDS",
    "MPI",
    "PYTORCH",
    "VERSION",
    "CarbonScalerClusterSpec",
    "JobKind",
    "ResourceKind",
    "cluster_crd_manifest",
    "crd_manifest",
    "write_manifests",
]

GROUP = "carbonscaler.io"
VERSION = "v1"
KUBEFLOW_GROUP = "kubeflow.org"
KUBEFLOW_VERSION = "v1"


@dataclass(frozen=True)
class ResourceKind:
    """One CarbonScaler kind: its names in the API."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{VERSION}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


@dataclass(frozen=True)
class JobKind(ResourceKind):
    """One CarbonScaler job kind and the Kubeflow kind it drives."""

    child_kind: str
    child_plural: str
    replica_specs_key: str  # mpiReplicaSpecs / pytorchReplicaSpecs
    main_replica: str  # the replica type whose pod runs the job's main process
    framework: str

    @property
    def child_api_version(self) -> str:
        return f"{KUBEFLOW_GROUP}/{KUBEFLOW_VERSION}"


MPI = JobKind(
    kind="CarbonScalerMPIJob",
    plural="carbonscalermpijobs",
    singular="carbonscalermpijob",
    short_names=("csmpijob", "csmpi"),
    child_kind="MPIJob",
    child_plural="mpijobs",
    replica_specs_key="mpiReplicaSpecs",
    main_replica="Launcher",
    framework="mpi",
)
PYTORCH = JobKind(
    kind="CarbonScalerPyTorchJob",
    plural="carbonscalerpytorchjobs",
    singular="carbonscalerpytorchjob",
    short_names=("cspytorchjob", "cspt"),
    child_kind="PyTorchJob",
    child_plural="pytorchjobs",
    replica_specs_key="pytorchReplicaSpecs",
    main_replica="Worker",
    framework="pytorch",
)
KINDS: dict[str, JobKind] = {MPI.kind: MPI, PYTORCH.kind: PYTORCH}


CLUSTER = ResourceKind(
    kind="CarbonScalerCluster",
    plural="carbonscalerclusters",
    singular="carbonscalercluster",
    short_names=("cscluster", "csc"),
)

# Queued: a member job of a shared cluster held below its plan by the capacity.
CONDITION_TYPES = ("Created", "Running", "Paused", "Rescaling", "Succeeded", "Failed", "Queued")
PHASES = ("Pending", "Running", "Paused", "Rescaling", "Succeeded", "Failed")

_OPAQUE: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
# A Kubernetes object name (RFC 1123 subdomain).
_DNS_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


def _int(minimum: int | None = None, maximum: int | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", **extra}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def _replica_spec(description: str, *, max_replicas: int | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["template"],
        "properties": {
            "replicas": _int(0, max_replicas),
            "restartPolicy": {
                "type": "string",
                "enum": ["Always", "OnFailure", "Never", "ExitCode"],
            },
            "template": {**_OPAQUE, "description": "A core/v1 PodTemplateSpec."},
        },
    }


def _run_policy() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Kubeflow RunPolicy (cleanPodPolicy, backoffLimit, ...), passed through.",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "cleanPodPolicy": {"type": "string", "enum": ["All", "Running", "None"]},
            "backoffLimit": _int(0),
            "activeDeadlineSeconds": _int(1, format="int64"),
            "ttlSecondsAfterFinished": _int(0),
            "suspend": {"type": "boolean"},
        },
    }


def _mpi_spec() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A Kubeflow MPIJobSpec (kubeflow.org/v1); the operator sets the "
        "Worker replicas and the launcher's WORKERS.",
        "required": ["mpiReplicaSpecs"],
        "properties": {
            "slotsPerWorker": _int(1),
            "cleanPodPolicy": {"type": "string", "enum": ["All", "Running", "None"]},
            "mainContainer": {"type": "string"},
            "runPolicy": _run_policy(),
            "mpiReplicaSpecs": {
                "type": "object",
                "required": ["Launcher", "Worker"],
                "properties": {
                    "Launcher": _replica_spec("The launcher (one pod).", max_replicas=1),
                    "Worker": _replica_spec("The workers; replicas are set by the operator."),
                },
            },
        },
    }


def _pytorch_spec() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A Kubeflow PyTorchJobSpec (kubeflow.org/v1) with elasticPolicy; the "
        "operator sets the Worker replicas within the elastic bounds.",
        "required": ["pytorchReplicaSpecs", "elasticPolicy"],
        "properties": {
            "runPolicy": _run_policy(),
            "nprocPerNode": {"type": "string"},
            "elasticPolicy": {
                "type": "object",
                "properties": {
                    "minReplicas": _int(1),
                    "maxReplicas": _int(1),
                    "rdzvBackend": {"type": "string", "enum": ["c10d", "etcd", "etcd-v2"]},
                    "rdzvPort": _int(1, 65535),
                    "rdzvHost": {"type": "string"},
                    "rdzvId": {"type": "string"},
                    "rdzvConf": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "key": {"type": "string"},
                                "value": {"type": "string"},
                            },
                        },
                    },
                    "standalone": {"type": "boolean"},
                    "nProcPerNode": _int(1),
                    "maxRestarts": _int(0),
                    "metrics": {
                        "type": "array",
                        "description": "Not allowed here: an HPA would fight the operator.",
                        "maxItems": 0,
                        "items": _OPAQUE,
                    },
                },
            },
            "pytorchReplicaSpecs": {
                "type": "object",
                "required": ["Worker"],
                "properties": {
                    "Master": _replica_spec("Optional rank-0 pod (exactly one).", max_replicas=1),
                    "Worker": _replica_spec("The elastic workers; replicas set by the operator."),
                },
            },
        },
    }


class CarbonScalerSpec(JobSettings):
    """A resource's ``carbonScalerSpec``: the job settings shared with local job specs, and
    what only the operator needs.

    Unlike a local job spec it may leave out the job's size (``lengthHours`` and ``work``), as
    the reference's resources do: the operator then sizes the job from its workload's env,
    ``BODIES`` × ``ITERATIONS`` in the profile's units (see
    :meth:`carbonscaler.operator.reconcile.Settings.from_resource`).
    """

    size_required: ClassVar[bool] = False
    cel_rules: ClassVar[list[dict[str, str]]] = cel_rules_for(size_required=False)

    profile: str = Field(
        alias="profileName",
        min_length=1,
        max_length=253,
        description="ConfigMap in the job's namespace with the scaling profile (CSV "
        "nodes,throughput,power).",
    )
    carbon_zone: str | None = Field(
        None, max_length=64, description="Grid zone to plan on; default the carbon source's."
    )
    max_relaunches: int = Field(3, ge=0, description="Relaunches after the Kubeflow job failed.")
    pause_mode: Literal["Delete", "Suspend"] = Field(
        "Delete",
        description="How the Kubeflow job pauses (and an MPIJob rescales): Delete and "
        "re-create it (any training-operator v1), or Suspend it with runPolicy.suspend and "
        "resume it (training-operator >= 1.7; an MPIJob is resized while suspended). A "
        "suspension the training operator drops or ignores falls back to Delete.",
    )
    cluster: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        pattern=_DNS_NAME,
        description="The CarbonScalerCluster in the job's namespace whose capacity the job "
        "shares: the cluster plans it together with its other jobs and grants it servers "
        "slot by slot (the cluster's policy, replanThreshold, safetyMargin and "
        "rescaleOverheadSeconds apply, not the job's; its slotSeconds must be the "
        "cluster's). Without it the job is planned alone.",
    )


_CLUSTER_POLICIES = ("joint", "carbonscaler", "suspend-resume", "agnostic", "exact")
ClusterPolicy = Literal["joint", "carbonscaler", "suspend-resume", "agnostic", "exact"]


class CarbonScalerClusterSpec(BaseModel):
    """A ``CarbonScalerCluster``'s ``spec``: the capacity its member jobs share and how the
    cluster plans them (:class:`carbonscaler.cluster.ClusterCore`'s settings).

    Exactly one of ``capacity`` (servers in every slot) or ``capacitySchedule`` (servers per
    slot from the cluster's slot 0, the slot it was created in; the last value holds after).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)
    cel_rules: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "has(self.capacity) != has(self.capacitySchedule)",
            "message": "give exactly one of capacity (servers in every slot) or "
            "capacitySchedule (servers per slot from the cluster's creation)",
        },
        {
            # A transition rule: checked on updates only (oldSelf is the stored spec).
            "rule": "self.slotSeconds == oldSelf.slotSeconds",
            "message": "slotSeconds cannot change once the cluster exists (its plans are in "
            "its slots); create a new cluster",
        },
    ]

    capacity: int | None = Field(
        None, ge=0, le=100_000, description="Servers the member jobs may hold together."
    )
    capacity_schedule: list[Annotated[int, Field(ge=0, le=100_000)]] | None = Field(
        None,
        min_length=1,
        max_length=10_000,
        description="Servers per slot from the cluster's slot 0 (the slot it was created "
        "in); the last value holds after the list.",
    )
    slot_seconds: int = Field(
        3600,
        ge=10,
        le=86400,
        description="Slot length: the member jobs' slotSeconds and the carbon data's pace.",
    )
    policy: ClusterPolicy = Field(
        "joint",
        description="joint (every active job planned together, re-planned when a job arrives "
        "or leaves) or a single-job policy applied to each job alone and queued first come, "
        "first served: carbonscaler, suspend-resume, agnostic, exact.",
    )
    carbon_zone: str | None = Field(
        None, max_length=64, description="Grid zone to plan on; default the carbon source's."
    )
    replan_threshold: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Re-plan a job when the forecast, or its progress ahead of plan, drifts "
        "beyond this share.",
    )
    safety_margin: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Extra share of each job's remaining work its plan covers where it fits.",
    )
    rescale_overhead_s: float | None = Field(
        None,
        ge=0,
        alias="rescaleOverheadSeconds",
        description="Seconds of work a rescale loses, which plans reserve; default 5 % of a "
        "slot, at least 0.5 s and at most 30 s (as for a single job).",
    )
    time_limit_s: float = Field(
        2.0,
        gt=0,
        le=120,
        alias="timeLimitSeconds",
        description="Seconds one joint plan may take (online, a good plan now beats a "
        "better one later).",
    )

    @model_validator(mode="after")
    def _one_capacity(self) -> CarbonScalerClusterSpec:
        if (self.capacity is None) == (self.capacity_schedule is None):
            raise ValueError(
                "give exactly one of capacity (servers in every slot) or capacitySchedule "
                "(servers per slot from the cluster's creation)"
            )
        return self

    @property
    def capacities(self) -> int | list[int]:
        """The capacity as :class:`~carbonscaler.cluster.ClusterCore` takes it."""
        if self.capacity_schedule is not None:
            return list(self.capacity_schedule)
        assert self.capacity is not None  # by validation
        return self.capacity

    def capacity_at(self, slot: int) -> int:
        """Servers in ``slot`` (from the cluster's slot 0; the last value holds after)."""
        if self.capacity_schedule is not None:
            return self.capacity_schedule[min(max(slot, 0), len(self.capacity_schedule) - 1)]
        assert self.capacity is not None
        return self.capacity

    def overhead_s(self) -> float:
        """Seconds of work a rescale loses until measured: stated, else assumed."""
        if self.rescale_overhead_s is not None:
            return self.rescale_overhead_s
        return _assumed_overhead_s(float(self.slot_seconds))


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A structural OpenAPI v3 schema (as CRDs need) for a pydantic model's JSON form.

    Pydantic writes JSON Schema 2020-12; CRDs take OpenAPI 3.0's dialect: optional fields as
    plain types (not ``anyOf`` with ``null``), boolean ``exclusiveMinimum``, no ``$ref``, no
    ``title``. The model's ``cel_rules`` become ``x-kubernetes-validations``.
    """
    source = model.model_json_schema(by_alias=True)
    defs = source.get("$defs", {})

    def convert(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node and "enum" not in node:
            node = {**defs[node["$ref"].rsplit("/", 1)[-1]], **node}
        variants = [v for v in node.get("anyOf", []) if v.get("type") != "null"]
        if len(variants) == 1:  # an optional field: its one real type
            node = {**variants[0], **node}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("title", "$ref", "anyOf", "$defs", "additionalProperties"):
                continue
            if key == "default" and value is None:
                continue
            if key in ("exclusiveMinimum", "exclusiveMaximum"):
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                out[key] = True
                continue
            if key == "properties":
                out[key] = {name: convert(sub) for name, sub in value.items()}
                continue
            out.setdefault(key, value)
        if "enum" in out and "type" not in out:
            out["type"] = "string"
        return out

    schema = convert(source)
    rules = getattr(model, "cel_rules", None)
    if rules:
        schema["x-kubernetes-validations"] = list(rules)
    return schema


def _carbon_scaler_spec() -> dict[str, Any]:
    schema = openapi_schema(CarbonScalerSpec)
    schema["description"] = (
        "The carbon-aware settings: carbonscaler.settings.JobSettings (the same fields as a "
        "local job spec) and the operator's own."
    )
    return schema


def _status() -> dict[str, Any]:
    number = {"type": "number"}
    integer = {"type": "integer"}
    text = {"type": "string"}
    time = {"type": "string", "format": "date-time"}
    return {
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": list(PHASES)},
            "message": text,
            "revision": integer,
            "conditions": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "required": ["type", "status"],
                    "properties": {
                        "type": {"type": "string", "enum": list(CONDITION_TYPES)},
                        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                        "reason": text,
                        "message": text,
                        "lastTransitionTime": time,
                    },
                },
            },
            "startTime": time,
            "deadlineTime": time,
            "completionTime": time,
            "slotSeconds": integer,
            "slot": integer,
            "replicas": integer,
            "desiredReplicas": integer,
            "progress": number,
            "progressSource": {"type": "string", "enum": ["reported", "estimated"]},
            "workRequired": number,
            "workDone": number,
            "nominalWork": number,
            "emissionsG": number,
            "energyKWh": number,
            "accountedUntil": time,
            "powerSource": text,
            "replans": integer,
            "rescales": integer,
            "relaunches": integer,
            "settingsDigest": text,
            "degraded": {"type": "boolean"},
            "carbonPaceMismatch": text,
            "pastDeadline": {"type": "boolean"},
            "overrun": {"type": "boolean"},
            "nextChange": {
                "type": "object",
                "properties": {"time": time, "replicas": integer},
            },
            "plan": {
                "type": "object",
                "properties": {
                    "policy": text,
                    "servers": {"type": "array", "items": integer},
                    "fraction": {"type": "array", "items": number},
                    "after": {"type": "array", "items": integer},
                    "forecast": {"type": "array", "items": number},
                    "plannedDone": {"type": "array", "items": number},
                    "margin": number,
                    "madeAtSlot": integer,
                    "endSlot": number,
                    "forecastTime": time,
                },
            },
            "carbonBySlot": {
                "type": "object",
                "description": "gCO2eq/kWh seen in each slot (by slot number), for accounting.",
                "additionalProperties": number,
            },
            "profile": {
                "type": "object",
                "properties": {
                    "name": text,
                    "throughput": {"type": "array", "items": number},
                    "powerW": {"type": "array", "items": number},
                },
            },
            "child": {
                "type": "object",
                "properties": {
                    "apiVersion": text,
                    "kind": text,
                    "name": text,
                    "replicas": integer,
                    "launches": integer,
                    "suspended": {"type": "boolean"},
                    "suspendedAt": time,
                    "suspendUnsupported": {"type": "boolean"},
                },
            },
        },
    }


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
        {"name": "Progress", "type": "number", "jsonPath": ".status.progress"},
        {
            "name": "Next",
            "type": "integer",
            "jsonPath": ".status.nextChange.replicas",
            "description": "Replicas at the next planned change",
        },
        {"name": "At", "type": "date", "jsonPath": ".status.nextChange.time"},
        {"name": "Deadline", "type": "date", "jsonPath": ".status.deadlineTime"},
        {
            "name": "gCO2",
            "type": "number",
            "jsonPath": ".status.emissionsG",
            "description": "Emissions so far (profile estimate)",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def crd_manifest(kind: JobKind) -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) of one kind."""
    spec = _mpi_spec() if kind is MPI else _pytorch_spec()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "carbonscaler"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["carbonscaler"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": f"A Kubeflow {kind.child_kind} run carbon-aware by "
                            "CarbonScaler.",
                            "required": ["spec", "carbonScalerSpec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "carbonScalerSpec": _carbon_scaler_spec(),
                                "status": _status(),
                            },
                        }
                    },
                }
            ],
        },
    }


def _cluster_status() -> dict[str, Any]:
    number = {"type": "number"}
    integer = {"type": "integer"}
    text = {"type": "string"}
    time = {"type": "string", "format": "date-time"}
    return {
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": ["Ready", "Failed"]},
            "message": text,
            "revision": integer,
            "epoch": {**time, "description": "When the cluster's slot 0 began."},
            "slot": {**integer, "description": "The slot the cluster last decided in."},
            "policy": text,
            "capacity": {**integer, "description": "Servers in the current slot."},
            "granted": {**integer, "description": "Servers granted in the current slot."},
            "active": {**integer, "description": "Jobs admitted and not finished."},
            "queued": {**integer, "description": "Jobs held below their plan."},
            "degraded": {"type": "boolean"},
            "carbonPaceMismatch": text,
            "slotSeconds": integer,
            "specDigest": text,
            "forecast": {
                "type": "object",
                "description": "The last carbon forecast planned on (gCO2eq/kWh per slot).",
                "properties": {
                    "fromSlot": integer,
                    "values": {"type": "array", "items": number},
                    "time": time,
                },
            },
            "jobs": {
                "type": "object",
                "description": "Every member job the cluster admitted, by <csmpi|cspt>/<name>.",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "kind": text,
                        "name": text,
                        "uid": text,
                        "digest": text,
                        "arrivalSlot": integer,
                        "deadlineSlot": integer,
                        "finished": {"type": "boolean"},
                        "replans": integer,
                        "plans": {**integer, "description": "Plans made for it so far."},
                        "grant": {
                            "type": "object",
                            "properties": {
                                "slot": integer,
                                "first": integer,
                                "fraction": number,
                                "then": integer,
                                "reasons": {"type": "array", "items": text},
                            },
                        },
                    },
                },
            },
            "core": {
                **_OPAQUE,
                "description": "The saved decisions (carbonscaler.cluster.ClusterCore.to_dict): "
                "every active job's plan, so a restarted operator continues them.",
            },
        },
    }


def cluster_crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) of ``CarbonScalerCluster``."""
    spec = openapi_schema(CarbonScalerClusterSpec)
    spec["description"] = (
        "The capacity the member jobs share and how they are planned together "
        "(carbonscaler.kube.crd.CarbonScalerClusterSpec)."
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CLUSTER.crd_name,
            "labels": {"app.kubernetes.io/part-of": "carbonscaler"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": CLUSTER.kind,
                "listKind": f"{CLUSTER.kind}List",
                "plural": CLUSTER.plural,
                "singular": CLUSTER.singular,
                "shortNames": list(CLUSTER.short_names),
                "categories": ["carbonscaler"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Capacity", "type": "integer", "jsonPath": ".status.capacity"},
                        {"name": "Granted", "type": "integer", "jsonPath": ".status.granted"},
                        {"name": "Jobs", "type": "integer", "jsonPath": ".status.active"},
                        {"name": "Queued", "type": "integer", "jsonPath": ".status.queued"},
                        {"name": "Policy", "type": "string", "jsonPath": ".status.policy"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A capacity shared by CarbonScaler jobs (those that "
                            "name it in carbonScalerSpec.cluster), planned together.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": _cluster_status(),
                            },
                        }
                    },
                }
            ],
        },
    }


def write_manifests(folder: Path) -> list[Path]:
    """Write one YAML file per CRD into ``folder``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    manifests = [(kind.plural, crd_manifest(kind)) for kind in KINDS.values()]
    manifests.append((CLUSTER.plural, cluster_crd_manifest()))
    for plural, manifest in manifests:
        path = folder / f"{plural}.yaml"
        text = "# Generated by `python -m carbonscaler.kube.crd deploy/crds`; do not edit.\n"
        text += yaml.safe_dump(manifest, sort_keys=False, width=100)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    for written_path in write_manifests(Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/crds")):
        print(written_path)
