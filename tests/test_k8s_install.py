"""The first install and the operator's permissions, checked without a cluster.

* The kustomize builds (a small resolver over ``kustomization.yaml``: ``resources`` and
  ``namespace``, nothing else): no custom resource is applied in the same step as its CRD, the
  first apply (``kubectl apply -k deploy/``) holds none at all, and the quickstart in
  docs/kubernetes.md applies everything in that order.
* RBAC: every API call the operator makes — recorded at the HTTP layer of the official client
  while each :class:`~carbonscaler.backends.kubernetes.KubeflowApi` method runs — plus what
  kopf does on its own and the ``update`` on the owner's finalizers that an owner reference
  with ``blockOwnerDeletion: true`` needs, is granted by the ClusterRole, which grants nothing
  else; the progress reporter's calls are granted by the examples' Role, on its job's progress
  ConfigMap only. Every one of those calls carries a request timeout.
* Exactly one active operator: one replica, ``Recreate``, kopf standalone (no peering).
* The image: a pinned base, one install, non-root, and a ``.dockerignore``.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")
pytest.importorskip("kubernetes")

import urllib3  # noqa: E402
from kubernetes import client  # noqa: E402

from carbonscaler.backends.kubernetes import KubeflowApi  # noqa: E402
from carbonscaler.kube.crd import CLUSTER, GROUP, KINDS, MPI, PYTORCH, VERSION  # noqa: E402
from carbonscaler.kube.operations import (  # noqa: E402
    CreateChild,
    DeleteChild,
    EventNote,
    PatchChild,
)
from carbonscaler.kube.resources import (  # noqa: E402
    child_body,
    progress_configmap_name,
    replicas_patch,
    resize_patch,
    suspend_patch,
)
from carbonscaler.operator.progress import ProgressReporter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
QUICKSTART_DOC = ROOT / "docs" / "kubernetes.md"

# -- kustomize ---------------------------------------------------------------------------------

# What this resolver applies; a kustomization using anything else fails the test until the
# resolver learns it (so a patch or generator is never silently ignored here).
_KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "namespace"}
_CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def kustomize_build(folder: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k folder`` sends (kustomize's ``resources`` and
    ``namespace``), in the order the kustomizations list them."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - _KUSTOMIZE_FIELDS
    assert not unknown, f"{folder}: this resolver does not apply {sorted(unknown)}; extend it"
    documents: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        target = (folder / entry).resolve()
        assert target.exists(), f"{folder}/kustomization.yaml: {entry} does not exist"
        documents += kustomize_build(target) if target.is_dir() else yaml_documents(target)
    namespace = kustomization.get("namespace")
    if namespace:
        cluster_kinds = {
            d["spec"]["names"]["kind"]
            for d in documents
            if d["kind"] == "CustomResourceDefinition" and d["spec"]["scope"] == "Cluster"
        }
        for doc in documents:
            if doc["kind"] not in _CLUSTER_SCOPED | cluster_kinds:
                doc["metadata"]["namespace"] = namespace
    return documents


def group_of(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def is_builtin(api_version: str, kind: str) -> bool:
    """Whether Kubernetes 1.27 serves this kind itself (it has an OpenAPI schema for it)."""
    try:
        kubernetes_validate.validate({"apiVersion": api_version, "kind": kind}, "1.27")
    except kubernetes_validate.SchemaNotFoundError:
        return False
    except kubernetes_validate.ValidationError:
        return True
    return True


def crd_kinds(documents: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        (d["spec"]["group"], d["spec"]["names"]["kind"])
        for d in documents
        if d["kind"] == "CustomResourceDefinition"
    }


# What the quickstart installs first from elsewhere: the Kubeflow training operator's kinds.
TRAINING_OPERATOR = {("kubeflow.org", kind) for kind in ("MPIJob", "PyTorchJob", "TFJob")}


def ordering_problems(
    steps: list[tuple[str, list[dict[str, Any]]]], installed: set[tuple[str, str]]
) -> list[str]:
    """Custom resources applied in the same step as their CRD, or before it."""
    known = set(installed)
    problems = []
    for name, documents in steps:
        defined_here = crd_kinds(documents)
        for doc in documents:
            key = (group_of(doc["apiVersion"]), doc["kind"])
            if doc["kind"] == "CustomResourceDefinition" or is_builtin(doc["apiVersion"], key[1]):
                continue
            if key in defined_here:
                problems.append(f"{name}: {doc['kind']} is applied with its own CRD")
            elif key not in known:
                problems.append(f"{name}: {doc['kind']} comes before its CRD")
        known |= defined_here
    return problems


FIRST_APPLY = kustomize_build(DEPLOY)
EXAMPLES_APPLY = kustomize_build(DEPLOY / "examples")


def test_the_first_apply_holds_no_custom_resource() -> None:
    """``kubectl apply -k deploy/`` on an empty cluster: CRDs and built-in objects only, so no
    object waits for a CRD sent in the same request batch ("ensure CRDs are installed
    first")."""
    custom = [
        f"{d['kind']}/{d['metadata']['name']}"
        for d in FIRST_APPLY
        if d["kind"] != "CustomResourceDefinition" and not is_builtin(d["apiVersion"], d["kind"])
    ]
    assert custom == []
    assert crd_kinds(FIRST_APPLY) == {(GROUP, kind) for kind in KINDS} | {(GROUP, CLUSTER.kind)}
    assert not any(group_of(d["apiVersion"]) == "kopf.dev" for d in FIRST_APPLY)


def test_no_custom_resource_is_applied_with_its_crd() -> None:
    steps = [("deploy/", FIRST_APPLY), ("deploy/examples/", EXAMPLES_APPLY)]
    assert ordering_problems(steps, TRAINING_OPERATOR) == []
    # The check itself: the examples in the same apply as the CRDs would be refused.
    assert ordering_problems([("both", FIRST_APPLY + EXAMPLES_APPLY)], TRAINING_OPERATOR)
    assert ordering_problems([("examples first", EXAMPLES_APPLY)], TRAINING_OPERATOR)
    # Every manifest is in one of the two applies.
    applied = {(d["kind"], d["metadata"]["name"]) for d in FIRST_APPLY + EXAMPLES_APPLY}
    on_disk = {
        (d["kind"], d["metadata"]["name"])
        for path in DEPLOY.rglob("*.yaml")
        if path.name != "kustomization.yaml"
        for d in yaml_documents(path)
    }
    assert applied == on_disk


def quickstart_steps() -> Iterator[tuple[str, list[dict[str, Any]] | None]]:
    """The ``kubectl apply`` commands of the quickstart in docs/kubernetes.md, in order, with
    what they apply (None for something from outside the repository)."""
    text = QUICKSTART_DOC.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    for line in block.splitlines():
        command = line.split("#", 1)[0].strip()
        if not command.startswith("kubectl apply"):
            continue
        words = shlex.split(command)
        if "-k" in words:
            target = words[words.index("-k") + 1]
            if target.startswith(("github.com", "https://")):
                yield command, None
            else:
                yield command, kustomize_build(ROOT / target)
        else:
            files = [words[i + 1] for i, word in enumerate(words) if word == "-f"]
            yield command, [doc for f in files for doc in yaml_documents(ROOT / f)]


def test_the_quickstart_applies_in_an_order_that_works() -> None:
    steps = list(quickstart_steps())
    outside = [command for command, documents in steps if documents is None]
    assert len(outside) == 1 and "training-operator" in outside[0]
    assert steps[0][1] is None  # the training operator comes first
    ours = [(command, documents) for command, documents in steps if documents is not None]
    assert ordering_problems(ours, TRAINING_OPERATOR) == []
    assert any(command == "kubectl apply -k deploy/" for command, _ in ours)
    kinds = [doc["kind"] for _, documents in ours for doc in documents]
    assert "CarbonScalerMPIJob" in kinds and "ConfigMap" in kinds
    # The profile ConfigMap the example job names is applied before the job.
    profiles = [
        doc["metadata"]["name"] for _, docs in ours for doc in docs if doc["kind"] == "ConfigMap"
    ]
    job = next(doc for _, docs in ours for doc in docs if doc["kind"] == "CarbonScalerMPIJob")
    assert job["carbonScalerSpec"]["profileName"] in profiles
    assert "lengthHours" not in job["carbonScalerSpec"]  # the reference's way of writing it


# -- RBAC: what the operator calls -----------------------------------------------------------

Permission = tuple[str, str, str]  # (API group, resource[/subresource], verb)


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    timeout: Any = None


class _Response:
    def __init__(self, status: int, payload: Any) -> None:
        self.status = status
        self.reason = {200: "OK", 201: "Created", 404: "Not Found"}.get(status, "Error")
        self.data = json.dumps(payload).encode()
        self.headers = {"content-type": "application/json"}

    def release_conn(self) -> None:
        pass


class RecordingPool:
    """In place of urllib3's pool manager under the official client: records every request
    (method, path, query, JSON body) and answers like an API server keeping objects in
    memory, so the requests are exactly those a real server would receive."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.objects: dict[str, Any] = {}

    def request(
        self, method: str, url: str, body: Any = None, timeout: Any = None, **_: Any
    ) -> _Response:
        parts = urlsplit(url)
        payload = json.loads(body) if isinstance(body, str | bytes) and body else None
        self.calls.append(Call(method, parts.path, parse_qs(parts.query), payload, timeout))
        path = parts.path
        if method == "POST":
            name = (payload.get("metadata") or {}).get("name") or "generated"
            self.objects[f"{path}/{name}"] = payload
            return _Response(201, payload)
        if method == "GET":
            found = self.objects.get(path)
            if found is None:
                return _Response(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            return _Response(200, found)
        if method == "DELETE":
            self.objects.pop(path, None)
            return _Response(200, {"kind": "Status", "status": "Success"})
        return _Response(200, self.objects.get(path.removesuffix("/status"), {}))


def recording_client() -> tuple[client.ApiClient, RecordingPool]:
    configuration = client.Configuration()
    configuration.host = "https://kubernetes.test"
    api = client.ApiClient(configuration)
    pool = RecordingPool()
    api.rest_client.pool_manager = pool
    return api, pool


def permission(call: Call) -> Permission:
    """The RBAC (group, resource, verb) a request needs."""
    parts = call.path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]  # namespaced: /namespaces/{ns}/{resource}/...
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    verb = {
        "GET": "get" if named else ("watch" if call.query.get("watch") else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }[call.method]
    return group, resource, verb


def owner_permissions(call: Call) -> set[Permission]:
    """An object created with an owner reference that blocks the owner's deletion needs
    ``update`` on the owner's ``finalizers`` (OwnerReferencesPermissionEnforcement)."""
    needed = set()
    if call.method == "POST" and isinstance(call.body, dict):
        for owner in (call.body.get("metadata") or {}).get("ownerReferences") or []:
            if owner.get("blockOwnerDeletion"):
                plural = KINDS[owner["kind"]].plural
                needed.add((group_of(owner["apiVersion"]), f"{plural}/finalizers", "update"))
    return needed


def resource_with_status(kind_name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind_name,
        "metadata": {"name": "job", "namespace": "jobs", "uid": "uid-1"},
        "spec": {},
        "carbonScalerSpec": {"profileName": "profile"},
    }


SPECS = {
    MPI.kind: {
        "mpiReplicaSpecs": {
            "Launcher": {"template": {"spec": {"containers": [{"name": "mpi"}]}}},
            "Worker": {"template": {"spec": {"containers": [{"name": "mpi"}]}}},
        }
    },
    PYTORCH.kind: {
        "elasticPolicy": {"rdzvBackend": "c10d"},
        "pytorchReplicaSpecs": {
            "Worker": {"template": {"spec": {"containers": [{"name": "pytorch"}]}}}
        },
    },
}
PROFILE_CM = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "profile", "namespace": "jobs"},
    "data": {"profile.csv": "nodes,throughput,power\n0,0,0\n1,1,60\n2,2,120\n"},
}


class Tracking:
    """A proxy that notes which of its target's methods were called."""

    def __init__(self, target: KubeflowApi) -> None:
        self._target = target
        self.ran: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if callable(value):
            self.ran.add(name)
        return value


def operator_calls() -> tuple[list[Call], set[str]]:
    """Every request the operator's API layer makes, each KubeflowApi method run for both
    kinds and every operation; and the names of the methods run."""
    api, pool = recording_client()
    kubeflow: Any = Tracking(KubeflowApi(api, instance="test"))
    pool.objects["/api/v1/namespaces/jobs/configmaps/profile"] = PROFILE_CM
    for kind in KINDS.values():
        owner = resource_with_status(kind.kind)
        body = child_body(
            kind,
            name="job",
            namespace="jobs",
            spec=copy.deepcopy(SPECS[kind.kind]),
            workers=2,
            owner=owner,
            elastic_bounds=(1, 4),
        )
        assert kubeflow.get_child(kind, "jobs", "job") is None
        assert kubeflow.child_state(kind, "jobs", "job", "uid-1") is None
        kubeflow.apply(kind, "jobs", CreateChild(body))
        state = kubeflow.child_state(kind, "jobs", "job", "uid-1")
        assert state is not None and state.owned
        kubeflow.apply(kind, "jobs", PatchChild("job", replicas_patch(kind, 3)))
        kubeflow.apply(kind, "jobs", PatchChild("job", suspend_patch()))
        spec = SPECS[kind.kind]
        kubeflow.apply(kind, "jobs", PatchChild("job", resize_patch(kind, spec, 2, resume=True)))
        kubeflow.apply(kind, "jobs", DeleteChild("job"))
        kubeflow.patch_status(kind, "jobs", "job", {"phase": "Running"})
        kubeflow.post_event(owner, EventNote("Normal", "Planned", "planned"), 1_700_000_000.0)
        assert kubeflow.read_profile("jobs", "profile").max_servers == 2
        assert kubeflow.read_progress(kind, "jobs", "job") is None
        kubeflow.ensure_progress_channel(kind, owner)
        assert kubeflow.read_progress(kind, "jobs", "job") is None  # created empty
    # A shared cluster's pass: it lists the namespace's clusters and jobs, patches the
    # cluster's status (the rest goes through the KubeflowApi methods above).
    from carbonscaler.operator import handlers
    from carbonscaler.operator.carbon import CarbonBoard

    for plural in [CLUSTER.plural, *(kind.plural for kind in KINDS.values())]:
        pool.objects[f"/apis/{GROUP}/{VERSION}/namespaces/jobs/{plural}"] = {"items": []}
    context = handlers.OperatorContext(api=kubeflow._target, board=CarbonBoard())
    assert handlers.read_cluster(context, "jobs", "shared") is None
    assert handlers.list_members(context, "jobs", "shared") == []
    handlers.patch_cluster_status(context, "jobs", "shared", {"phase": "Ready"})
    return pool.calls, kubeflow.ran


# What kopf does by itself, run standalone (no peering) and cluster-wide: list and watch the
# handled kinds, patch them (its finalizer and its annotations: progress and diff-base
# storage), list and watch CRDs (resource discovery), list and watch namespaces (only when
# given namespace patterns instead of --all-namespaces), and post Events (handler errors).
KOPF_NEEDS: set[Permission] = {
    *((GROUP, kind.plural, verb) for kind in KINDS.values() for verb in ("list", "watch", "patch")),
    *((GROUP, CLUSTER.plural, verb) for verb in ("list", "watch", "patch")),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    ("", "events", "create"),
}


def granted(role: dict[str, Any]) -> set[Permission]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def only(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [d for d in documents if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return found


def test_every_kubeflow_api_method_is_exercised() -> None:
    public = {
        name
        for name in vars(KubeflowApi)
        if not name.startswith("_") and callable(getattr(KubeflowApi, name))
    }
    _, ran = operator_calls()
    assert public == ran, "a new KubeflowApi method: run it in operator_calls()"


def test_the_cluster_role_grants_every_call_the_operator_makes_and_nothing_else() -> None:
    calls, _ = operator_calls()
    needed = {permission(call) for call in calls}
    for call in calls:
        needed |= owner_permissions(call)
    # What the recording saw: the Kubeflow jobs, the status, Events, profiles, finalizers.
    assert {
        ("kubeflow.org", "mpijobs", "create"),
        ("kubeflow.org", "pytorchjobs", "patch"),
        ("kubeflow.org", "mpijobs", "delete"),
        ("kubeflow.org", "mpijobs", "get"),
        (GROUP, "carbonscalermpijobs/status", "patch"),
        (GROUP, "carbonscalerclusters/status", "patch"),
        (GROUP, "carbonscalerclusters", "list"),
        (GROUP, "carbonscalerpytorchjobs", "list"),
        (GROUP, "carbonscalermpijobs/finalizers", "update"),
        (GROUP, "carbonscalerpytorchjobs/finalizers", "update"),
        ("", "events", "create"),
        ("", "configmaps", "get"),
        ("", "configmaps", "create"),
    } <= needed
    needed |= KOPF_NEEDS
    role = only(FIRST_APPLY, "ClusterRole", "carbonscaler-operator")
    have = granted(role)
    assert sorted(needed - have) == [], "missing from deploy/operator/rbac.yaml"
    assert sorted(have - needed) == [], "granted but never used (least privilege)"


def test_every_api_call_has_a_request_timeout() -> None:
    """A half-open connection cannot wedge a pass: every request the operator's API layer
    makes (each KubeflowApi method, for both kinds) carries a finite connect and read timeout
    (the progress reporter's: in the examples' Role test)."""
    calls, _ = operator_calls()
    assert len(calls) > 20
    for call in calls:
        assert isinstance(call.timeout, urllib3.Timeout), (call.method, call.path)
        assert call.timeout.connect_timeout is not None and call.timeout.connect_timeout > 0
        assert call.timeout.read_timeout is not None and call.timeout.read_timeout > 0


def test_a_silent_api_server_fails_the_call_within_its_timeout() -> None:
    """A server that accepts the connection and never answers (a half-open connection): the
    call fails with a BackendError within the read timeout instead of hanging the pass."""
    import socket
    import time

    from carbonscaler.backends.base import BackendError

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{listener.getsockname()[1]}"
        configuration.retries = False
        api = KubeflowApi(client.ApiClient(configuration), timeout=(1.0, 0.5))
        started = time.monotonic()
        with pytest.raises(BackendError, match="did not answer"):
            api.get_child(MPI, "jobs", "job")
        with pytest.raises(BackendError, match="did not answer"):
            api.apply(MPI, "jobs", DeleteChild("job"))
        assert time.monotonic() - started < 20


def test_the_operators_service_account_holds_the_cluster_role() -> None:
    deployment = only(FIRST_APPLY, "Deployment", "carbonscaler-operator")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    namespace = deployment["metadata"]["namespace"]
    assert only(FIRST_APPLY, "ServiceAccount", account)["metadata"]["namespace"] == namespace
    binding = only(FIRST_APPLY, "ClusterRoleBinding", "carbonscaler-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "carbonscaler-operator",
    }
    assert {"kind": "ServiceAccount", "name": account, "namespace": namespace} in binding[
        "subjects"
    ]


def test_the_examples_role_grants_what_the_progress_reporter_calls(tmp_path: Path) -> None:
    """The reporter only patches its job's progress ConfigMap, and the examples' Role grants
    exactly that: ``patch`` on those ConfigMaps by name — nothing on the CarbonScaler jobs (a
    patch of a job could rewrite its pod templates)."""
    role = only(EXAMPLES_APPLY, "Role", "carbonscaler-progress")
    binding = only(EXAMPLES_APPLY, "RoleBinding", "carbonscaler-progress")
    (subject,) = binding["subjects"]
    assert granted(role) == {("", "configmaps", "patch")}
    (rule,) = role["rules"]
    reporting = 0
    for doc in EXAMPLES_APPLY:
        if doc["kind"] not in KINDS:
            continue
        kind = KINDS[doc["kind"]]
        for replica in doc["spec"][kind.replica_specs_key].values():
            pod = replica["template"]["spec"]
            for container in pod["containers"]:
                if "carbonscaler.operator.progress" not in " ".join(container.get("command", [])):
                    continue
                reporting += 1
                # The example pods that run the reporter use that service account ...
                assert pod["serviceAccountName"] == subject["name"]
                # ... and report for their own job, whose ConfigMap the Role names.
                args = dict(a.split("=", 1) for a in container["command"] if "=" in a)
                assert args["--kind"] == doc["kind"]
                assert args["--name"] == doc["metadata"]["name"]
                progress = tmp_path / "progress.csv"
                progress.write_text("step,percent\n1,12.5\n")
                api, pool = recording_client()
                reporter = ProgressReporter(
                    client.CoreV1Api(api), kind, "default", args["--name"], progress, tmp_path / "D"
                )
                reporter.once()
                (call,) = pool.calls
                assert permission(call) == ("", "configmaps", "patch")
                name = progress_configmap_name(kind, doc["metadata"]["name"])
                assert call.path == f"/api/v1/namespaces/default/configmaps/{name}"
                assert name in rule["resourceNames"]
                assert isinstance(call.timeout, urllib3.Timeout)
    assert reporting, "no example runs the progress reporter"


# -- exactly one active operator ---------------------------------------------------------------


def expanded(container: dict[str, Any], namespace: str) -> list[str]:
    """A container's args with ``$(VAR)`` expanded from its env (literal values, or keys of
    ConfigMaps in the first apply), as the kubelet does."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        elif "configMapKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["configMapKeyRef"]
            cm = only(FIRST_APPLY, "ConfigMap", ref["name"])
            assert cm["metadata"]["namespace"] == namespace
            env[entry["name"]] = str(cm["data"][ref["key"]])
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in container["args"]]


def test_exactly_one_operator_runs_standalone() -> None:
    import typer.main

    from carbonscaler.cli import app

    deployment = only(FIRST_APPLY, "Deployment", "carbonscaler-operator")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}  # the old pod stops before the new starts
    (container,) = spec["template"]["spec"]["containers"]
    args = expanded(container, deployment["metadata"]["namespace"])
    assert args[0] == "operator"
    # Without --peering the command runs kopf standalone: it never waits on a peering object.
    assert not any(a.startswith(("--peering", "--priority")) for a in args)
    command = typer.main.get_command(app).commands["operator"]  # type: ignore[attr-defined]
    params = command.make_context("operator", list(args[1:])).params
    assert params["peering"] is None and params["all_namespaces"]


# -- the image -------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_the_base_image_is_pinned() -> None:
    (base,) = [args for instruction, args in dockerfile() if instruction == "FROM"]
    image, _, digest = base.partition("@")
    name, _, tag = image.partition(":")
    assert name == "python"
    # An exact version tag (python:3.11.9-slim-bookworm), or a digest; never a moving tag.
    assert re.fullmatch(r"\d+\.\d+\.\d+-slim-[a-z]+", tag), base
    assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), base


def test_the_image_installs_once_and_runs_as_non_root() -> None:
    steps = dockerfile()
    runs = [args for instruction, args in steps if instruction == "RUN"]
    installs = [args for args in runs if "pip install" in args]
    assert len(installs) == 1, installs
    words = shlex.split(installs[0])
    targets = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
    assert targets == [".[k8s]"]  # the package and its extra, nothing listed again by hand
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    last_user = max(i for i, (instruction, _) in enumerate(steps) if instruction == "USER")
    assert all(instruction != "RUN" for instruction, _ in steps[last_user:])
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").split("\nFROM", 1)[0]
    header = " ".join(line.lstrip("# ") for line in text.splitlines())
    for part in ("operator", "carbon service", "power server", "accounting", "examples"):
        assert part in header, f"the header should say the image holds the {part}"


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's matching, enough for these patterns: a path is out if it or a parent matches
    (a leading ``**/`` matches at any depth); a later ``!pattern`` takes it back in."""
    pieces = path.split("/")
    parents = ["/".join(pieces[: i + 1]) for i in range(len(pieces))]
    out = False
    for raw in patterns:
        pattern = raw.removeprefix("!").strip("/")
        if pattern.startswith("**/"):
            names = [parent.rsplit("/", 1)[-1] for parent in parents]
            hit = any(fnmatch.fnmatchcase(name, pattern[3:]) for name in names + parents)
        else:
            hit = any(fnmatch.fnmatchcase(parent, pattern) for parent in parents)
        if hit:
            out = not raw.startswith("!")
    return out


def test_the_dockerignore_keeps_the_context_small_and_the_sources_in() -> None:
    patterns = dockerignore()
    for path in (".venv/bin/python", ".git/HEAD", "runs/job/state.db", ".mypy_cache/x"):
        assert ignored(path, patterns), path
    for path in ("tests/test_settings.py", "src/carbonscaler/__pycache__/x.pyc"):
        assert ignored(path, patterns), path
    for path in (".ruff_cache/x", ".pytest_cache/x", ".hypothesis/x", "examples/nbody/runs/a"):
        assert ignored(path, patterns), path
    copied = [
        source
        for instruction, args in dockerfile()
        if instruction == "COPY"
        for source in args.split()[:-1]
        if not source.startswith("--")
    ]
    assert copied
    for source in copied:
        assert not ignored(source, patterns), f"{source} is copied but .dockerignore drops it"
    for path in ("src/carbonscaler/cli/__init__.py", "examples/nbody/job.yaml", "pyproject.toml"):
        assert not ignored(path, patterns), path
