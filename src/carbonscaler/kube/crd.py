"""The custom resources: names, and the CRDs with their structural OpenAPI schemas.

Two kinds in group ``carbonscaler.io``, version ``v1``. Each holds a Kubeflow training-job spec
under ``spec`` (as the reference did) and the carbon-aware settings under ``carbonScalerSpec``;
the operator writes everything it knows under ``status``. The CRD documents in
``deploy/crds/`` are generated from :func:`crd_manifest` (``python -m
carbonscaler.kube.crd deploy/crds``), and a test checks that they are current.

The Kubeflow pod templates are kept as opaque objects (``x-kubernetes-preserve-unknown-fields``)
so any training-operator release's fields pass through; the parts the operator reads or sets
(replica counts, ``elasticPolicy``, the settings) are typed and bounded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, Field

from carbonscaler.settings import JobSettings, cel_rules_for

__all__ = [
    "GROUP",
    "KINDS",
    "MPI",
    "PYTORCH",
    "VERSION",
    "JobKind",
    "crd_manifest",
    "write_manifests",
]

GROUP = "carbonscaler.io"
VERSION = "v1"
KUBEFLOW_GROUP = "kubeflow.org"
KUBEFLOW_VERSION = "v1"


@dataclass(frozen=True)
class JobKind:
    """One CarbonScaler kind and the Kubeflow kind it drives."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    child_kind: str
    child_plural: str
    replica_specs_key: str  # mpiReplicaSpecs / pytorchReplicaSpecs
    main_replica: str  # the replica type whose pod runs the job's main process
    framework: str

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{VERSION}"

    @property
    def child_api_version(self) -> str:
        return f"{KUBEFLOW_GROUP}/{KUBEFLOW_VERSION}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


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

CONDITION_TYPES = ("Created", "Running", "Paused", "Rescaling", "Succeeded", "Failed")
PHASES = ("Pending", "Running", "Paused", "Rescaling", "Succeeded", "Failed")

_OPAQUE: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


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


def write_manifests(folder: Path) -> list[Path]:
    """Write one YAML file per CRD into ``folder``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS.values():
        path = folder / f"{kind.plural}.yaml"
        text = "# Generated by `python -m carbonscaler.kube.crd deploy/crds`; do not edit.\n"
        text += yaml.safe_dump(crd_manifest(kind), sort_keys=False, width=100)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    for written_path in write_manifests(Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/crds")):
        print(written_path)
