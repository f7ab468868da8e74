"""Every manifest in deploy/ is valid: Kubernetes objects against the API's OpenAPI schemas
(1.27, the reference's, and the newest the validator ships), the CRDs are structural and
current, the example jobs satisfy our CRDs and the operator, and the containers' arguments
parse with the CLI they run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")

from carbonscaler.kube.crd import (  # noqa: E402
    CLUSTER,
    KINDS,
    CarbonScalerClusterSpec,
    cluster_crd_manifest,
    crd_manifest,
)
from carbonscaler.operator.reconcile import Settings  # noqa: E402

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
VERSIONS = ("1.27", kubernetes_validate.latest_version())
OURS = set(KINDS)  # the job kinds
SHARED = {CLUSTER.kind}  # the shared-capacity kind


def documents() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                found.append((path, doc))
    return found


DOCS = documents()
K8S_DOCS = [
    (p, d) for p, d in DOCS if d["kind"] not in OURS | SHARED | {"Kustomization"}
]  # fmt: skip


def doc_id(item: tuple[Path, dict[str, Any]]) -> str:
    path, doc = item
    return f"{path.relative_to(DEPLOY)}:{doc['kind']}/{doc['metadata']['name']}"


def test_deploy_has_every_part() -> None:
    kinds = {d["kind"] for _, d in DOCS}
    assert {
        "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "ServiceAccount",
        "Deployment", "Service", "PersistentVolumeClaim", "DaemonSet", "ConfigMap",
        "CarbonScalerMPIJob", "CarbonScalerPyTorchJob", "Role", "CarbonScalerCluster",
    } <= kinds  # fmt: skip
    # kopf runs standalone: no peering CRD or object to apply (tests/test_k8s_install.py).
    assert not any(d["apiVersion"].startswith("kopf.dev/") for _, d in DOCS)
    assert (DEPLOY / "Dockerfile").is_file()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("item", K8S_DOCS, ids=[doc_id(i) for i in K8S_DOCS])
def test_kubernetes_objects_validate(item: tuple[Path, dict[str, Any]], version: str) -> None:
    kubernetes_validate.validate(item[1], version, strict=True)


# -- kustomize ------------------------------------------------------------------------------


def test_kustomizations_reference_every_manifest_once() -> None:
    referenced: list[Path] = []
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        for entry in yaml.safe_load(kustomization.read_text())["resources"]:
            target = (kustomization.parent / entry).resolve()
            assert target.exists(), f"{kustomization}: {entry} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").is_file(), target
            else:
                referenced.append(target)
    manifests = [p.resolve() for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml"]
    assert sorted(referenced) == sorted(manifests)


# -- CRDs -----------------------------------------------------------------------------------


def crds() -> dict[str, dict[str, Any]]:
    return {
        d["spec"]["names"]["kind"]: d for _, d in DOCS if d["kind"] == "CustomResourceDefinition"
    }


def test_crd_files_are_generated_from_the_code() -> None:
    for kind in KINDS.values():
        on_disk = yaml.safe_load((DEPLOY / "crds" / f"{kind.plural}.yaml").read_text())
        assert on_disk == crd_manifest(kind), "run: python -m carbonscaler.kube.crd deploy/crds"
    on_disk = yaml.safe_load((DEPLOY / "crds" / f"{CLUSTER.plural}.yaml").read_text())
    assert on_disk == cluster_crd_manifest(), "run: python -m carbonscaler.kube.crd deploy/crds"


_FORBIDDEN_IN_JUNCTORS = {"type", "description", "default", "additionalProperties", "nullable"}


def structural_problems(node: dict[str, Any], where: str, *, root: bool = False) -> list[str]:
    """The rules of a structural schema (apiextensions.k8s.io/v1), for our CRDs' features."""
    problems = []
    opaque = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
        "x-kubernetes-int-or-string"
    )
    if not node.get("type") and not opaque:
        problems.append(f"{where}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{where}: both properties and additionalProperties")
    for junctor in ("allOf", "anyOf", "oneOf", "not"):
        branches = node.get(junctor, [])
        for branch in branches if isinstance(branches, list) else [branches]:
            bad = (_FORBIDDEN_IN_JUNCTORS | {k for k in branch if k.startswith("x-")}) & set(branch)
            if bad:
                problems.append(f"{where}.{junctor}: {sorted(bad)} not allowed")
    if not root and where.endswith(".metadata") and set(node) - {"type"}:
        problems.append(f"{where}: only the root metadata may be specified")
    for name, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{where}.{name}")
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{where}[]")
    for rule in node.get("x-kubernetes-validations", []):
        assert set(rule) <= {"rule", "message", "messageExpression", "reason", "fieldPath"}
    if node.get("x-kubernetes-list-type") == "map":
        keys = node["x-kubernetes-list-map-keys"]
        assert set(keys) <= set(node["items"].get("required", [])), f"{where}: map keys required"
    return problems


@pytest.mark.parametrize("kind", sorted(crds()))
def test_crds_are_structural(kind: str) -> None:
    crd = crds()[kind]
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        assert structural_problems(schema, kind, root=True) == []
        if kind in OURS:
            assert version["subresources"] == {"status": {}}
            columns = {c["name"] for c in version["additionalPrinterColumns"]}
            assert {"Phase", "Replicas", "Progress", "Deadline", "Age"} <= columns
        if kind in SHARED:
            assert version["subresources"] == {"status": {}}
            columns = {c["name"] for c in version["additionalPrinterColumns"]}
            assert {"Capacity", "Granted", "Jobs", "Queued", "Age"} <= columns


def validator(kind: str) -> Any:
    schema = crds()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # OpenAPI v3.0's boolean exclusiveMinimum/Maximum are Draft 4's.
    return jsonschema.Draft4Validator(schema)


EXAMPLES = [(p, d) for p, d in DOCS if d["kind"] in OURS]


@pytest.mark.parametrize("item", EXAMPLES, ids=[doc_id(i) for i in EXAMPLES])
def test_example_jobs_validate_against_our_crds(item: tuple[Path, dict[str, Any]]) -> None:
    _, doc = item
    errors = sorted(str(e.message) for e in validator(doc["kind"]).iter_errors(doc))
    assert errors == []
    settings = Settings.from_resource(KINDS[doc["kind"]], doc)  # the operator accepts it too
    assert settings.min_replicas <= settings.max_replicas
    kind = KINDS[doc["kind"]]
    for replica in doc["spec"][kind.replica_specs_key].values():
        template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
        template["template"] = replica["template"]
        for version in VERSIONS:
            kubernetes_validate.validate(template, version, strict=True)
    profiles = {d["metadata"]["name"] for _, d in DOCS if d["kind"] == "ConfigMap"}
    assert doc["carbonScalerSpec"]["profileName"] in profiles


CLUSTERS = [(p, d) for p, d in DOCS if d["kind"] in SHARED]


def cel_failures(schema: dict[str, Any], value: Any, old: Any = None) -> list[str]:
    """The messages of the CEL rules on ``schema`` (one node) that ``value`` breaks, with
    cel-python, defaults applied as the API server does; a transition rule (``oldSelf``)
    only when there is an ``old`` value (an update)."""
    import celpy

    def defaults(doc: dict[str, Any]) -> dict[str, Any]:
        out = dict(doc)
        for name, prop in schema["properties"].items():
            if name not in out and "default" in prop:
                out[name] = prop["default"]
        return out

    env = celpy.Environment()
    failures = []
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"] and old is None:
            continue
        activation = {"self": celpy.json_to_cel(defaults(value))}
        if old is not None:
            activation["oldSelf"] = celpy.json_to_cel(defaults(old))
        if not env.program(env.compile(rule["rule"])).evaluate(activation):
            failures.append(rule["message"])
    return failures


@pytest.mark.parametrize("item", CLUSTERS, ids=[doc_id(i) for i in CLUSTERS])
def test_example_clusters_validate_against_their_crd(item: tuple[Path, dict[str, Any]]) -> None:
    _, doc = item
    errors = sorted(str(e.message) for e in validator(doc["kind"]).iter_errors(doc))
    assert errors == []
    spec_schema = cluster_crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["spec"]
    assert cel_failures(spec_schema, doc["spec"]) == []
    spec = CarbonScalerClusterSpec.model_validate(doc["spec"])  # the operator accepts it too
    # Its jobs name it, in the same file, and share its slots.
    members = [d for p, d in DOCS if (d.get("carbonScalerSpec") or {}).get("cluster")]
    assert {d["carbonScalerSpec"]["cluster"] for d in members} == {doc["metadata"]["name"]}
    for member in members:
        assert Settings.from_resource(KINDS[member["kind"]], member).slot_seconds == (
            spec.slot_seconds
        )


@pytest.mark.parametrize(
    ("spec", "old", "broken"),
    [
        ({"capacity": 4}, None, None),
        ({"capacitySchedule": [4, 2, 8]}, None, None),
        ({}, None, "exactly one of capacity"),
        ({"capacity": 4, "capacitySchedule": [4]}, None, "exactly one of capacity"),
        ({"capacity": 6}, {"capacity": 4}, None),  # the capacity may change
        ({"capacity": 4, "slotSeconds": 60}, {"capacity": 4}, "slotSeconds cannot change"),
    ],
)
def test_the_cluster_crd_takes_one_capacity_and_keeps_its_slots(
    spec: dict[str, Any], old: dict[str, Any] | None, broken: str | None
) -> None:
    schema = cluster_crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    failures = cel_failures(schema["properties"]["spec"], spec, old)
    if broken is None:
        assert failures == []
        CarbonScalerClusterSpec.model_validate(spec)
    else:
        assert any(broken in f for f in failures), failures
    assert cel_failures(schema["properties"]["spec"], {"capacitySchedule": [4]}) == []
    bad = {"apiVersion": "carbonscaler.io/v1", "kind": CLUSTER.kind, "metadata": {}}
    check = validator(CLUSTER.kind)
    assert not check.is_valid({**bad, "spec": {"capacity": -1}})
    assert not check.is_valid({**bad, "spec": {"capacity": 4, "policy": "fastest"}})
    assert not check.is_valid({**bad, "spec": {"capacitySchedule": []}})


def test_crd_schema_rejects_bad_settings() -> None:
    doc = next(d for _, d in EXAMPLES if d["kind"] == "CarbonScalerMPIJob")
    check = validator("CarbonScalerMPIJob")
    bad = {**doc, "carbonScalerSpec": {**doc["carbonScalerSpec"], "minReplicas": 0}}
    assert not check.is_valid(bad)
    bad = {**doc, "carbonScalerSpec": {**doc["carbonScalerSpec"], "progress": 101}}
    assert not check.is_valid(bad)
    # Rules across fields (exactly one deadline, one size) are CEL: see tests/test_settings.py.
    launcher = doc["spec"]["mpiReplicaSpecs"]["Launcher"]
    bad_spec = {"mpiReplicaSpecs": {"Launcher": {**launcher, "replicas": 2}, "Worker": launcher}}
    assert not check.is_valid({**doc, "spec": bad_spec})


def test_example_profiles_are_valid_profiles() -> None:
    pytest.importorskip("kubernetes")
    from carbonscaler.backends.kubernetes import profile_from_csv

    for _, doc in DOCS:
        if doc["kind"] == "ConfigMap" and "profile.csv" in doc.get("data", {}):
            profile = profile_from_csv(doc["metadata"]["name"], doc["data"]["profile.csv"])
            assert profile.max_servers >= 4


# -- RBAC and containers ----------------------------------------------------------------------


def test_operator_rbac_is_least_privilege() -> None:
    role = next(d for _, d in DOCS if d["kind"] == "ClusterRole")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not any("*" in item for g in granted for item in g)
    kubeflow = {(g, r, v) for g, r, v in granted if g == "kubeflow.org"}
    assert {v for _, _, v in kubeflow} == {"get", "create", "patch", "delete"}
    assert ("", "configmaps", "get") in granted and ("", "configmaps", "list") not in granted
    assert ("", "configmaps", "patch") not in granted  # only the jobs' own pods write progress
    assert ("carbonscaler.io", "carbonscalermpijobs/status", "patch") in granted
    assert ("carbonscaler.io", "carbonscalerclusters/status", "patch") in granted
    assert ("carbonscaler.io", "carbonscalerclusters", "get") not in granted  # lists suffice
    assert not any(r in {"secrets", "pods"} for _, r, _ in granted)


def env_value(entry: dict[str, Any], namespace: str) -> str:
    """An env entry's value: literal, or from a ConfigMap key of these manifests."""
    if "value" in entry:
        return str(entry["value"])
    ref = entry["valueFrom"]["configMapKeyRef"]
    (cm,) = [
        d
        for _, d in DOCS
        if d["kind"] == "ConfigMap"
        and d["metadata"]["name"] == ref["name"]
        and d["metadata"].get("namespace") == namespace
    ]
    return str(cm["data"][ref["key"]])


def expanded_args(container: dict[str, Any], namespace: str) -> list[str]:
    """The container's args with ``$(VAR)`` expanded from its env, as the kubelet does; a
    reference to an env var that is not defined fails."""
    env = {
        e["name"]: e
        for e in container.get("env", [])
        if "value" in e or "configMapKeyRef" in e.get("valueFrom", {})
    }

    def value(match: re.Match[str]) -> str:
        assert match.group(1) in env, f"$({match.group(1)}) is not in the container's env"
        return env_value(env[match.group(1)], namespace)

    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value, arg) for arg in container["args"]]


def container_args() -> list[tuple[str, list[str]]]:
    found = []
    for _, doc in DOCS:
        if doc["kind"] in {"Deployment", "DaemonSet"}:
            namespace = doc["metadata"]["namespace"]
            for container in doc["spec"]["template"]["spec"]["containers"]:
                found.append((doc["metadata"]["name"], expanded_args(container, namespace)))
    return found


@pytest.mark.parametrize(("name", "args"), container_args(), ids=[n for n, _ in container_args()])
def test_container_arguments_parse_with_the_cli(name: str, args: list[str]) -> None:
    import typer.main

    from carbonscaler.cli import app

    group = typer.main.get_command(app)
    command = group.commands[args[0]]  # type: ignore[attr-defined]
    context = command.make_context(args[0], list(args[1:]))
    assert context.params  # parsed without error


def test_one_slot_length_paces_the_carbon_service_the_operator_and_the_jobs() -> None:
    """The carbon service replays one trace slot every SLOT_SECONDS (--speed) and the operator
    plans on that pace (--slot-seconds): both from the one key in deploy/slot.yaml, which is
    also the jobs' default slotSeconds and every example job's slot."""
    import typer.main

    from carbonscaler.cli import app
    from carbonscaler.kube.crd import CarbonScalerSpec

    group = typer.main.get_command(app)
    paces = {}
    for name, args in container_args():
        command = group.commands[args[0]]  # type: ignore[attr-defined]
        params = command.make_context(args[0], list(args[1:])).params
        if name == "carbon-service":
            paces[name] = params["speed"]
        elif name == "carbonscaler-operator":
            paces[name] = params["slot_seconds"]
    (slot,) = [d for p, d in DOCS if p.name == "slot.yaml"]
    pace = float(slot["data"]["slotSeconds"])
    assert paces == {"carbon-service": pace, "carbonscaler-operator": pace}
    deployments = [d for _, d in DOCS if d["kind"] == "Deployment"]
    for container in [c for d in deployments for c in d["spec"]["template"]["spec"]["containers"]]:
        if any("SLOT_SECONDS" in a for a in container["args"]):
            (entry,) = [e for e in container["env"] if e["name"] == "SLOT_SECONDS"]
            assert entry["valueFrom"]["configMapKeyRef"]["name"] == "carbonscaler-slot"
    assert CarbonScalerSpec.model_fields["slot_seconds"].default == pace
    for _, doc in DOCS:
        if doc["kind"] in OURS:
            assert doc["carbonScalerSpec"].get("slotSeconds", pace) == pace, doc["metadata"]
        if doc["kind"] in SHARED:
            assert doc["spec"].get("slotSeconds", pace) == pace, doc["metadata"]
    assert CarbonScalerClusterSpec.model_fields["slot_seconds"].default == pace


def test_dockerfile_copies_what_exists() -> None:
    root = DEPLOY.parent
    text = (DEPLOY / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (root / source).exists(), source
    assert 'ENTRYPOINT ["carbonscaler"]' in text
