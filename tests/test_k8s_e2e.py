"""End to end on a real cluster: runs only when ``KUBECONFIG`` points to a reachable one with
the Kubeflow training operator installed; otherwise it reports itself skipped, with the reason.

It installs the CRDs, runs the operator in this process against the cluster, submits a small
CarbonScalerMPIJob (10-second slots) and checks that the operator plans it, creates the owned
MPIJob with ``WORKERS`` set, writes the status and posts Events, and that deleting the job
deletes the MPIJob. The job's pods need not get far: the image may be absent from the cluster.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

kopf = pytest.importorskip("kopf")
kubernetes = pytest.importorskip("kubernetes")

from kubernetes import client, config  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

pytestmark = pytest.mark.integration  # starts real processes or servers

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROFILE = "nodes,throughput,power\n0,0,0\n1,1,60\n2,1.9,120\n3,2.7,180\n"


def _cluster() -> client.ApiClient:
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        pytest.skip("no cluster: KUBECONFIG is not set (point it to a kind/minikube cluster)")
    if not all(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p):
        pytest.skip(f"no cluster: KUBECONFIG={kubeconfig} does not exist")
    configuration = client.Configuration()
    try:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        api = client.ApiClient(configuration)
        client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as exc:  # any failure to reach it means: no cluster to test on
        pytest.skip(f"no cluster: {kubeconfig} is not reachable ({exc})")
    try:
        client.ApiextensionsV1Api(api).read_custom_resource_definition("mpijobs.kubeflow.org")
    except ApiException:
        pytest.skip("the Kubeflow training operator is not installed (no mpijobs.kubeflow.org)")
    return api


@pytest.fixture(scope="module")
def cluster() -> Iterator[client.ApiClient]:
    api = _cluster()
    extensions = client.ApiextensionsV1Api(api)
    for path in sorted((DEPLOY / "crds").glob("carbonscaler*.yaml")):
        body = yaml.safe_load(path.read_text())
        try:
            extensions.create_custom_resource_definition(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            extensions.patch_custom_resource_definition(body["metadata"]["name"], body)
    time.sleep(2)  # the new kinds become servable
    yield api


@pytest.fixture
def namespace(cluster: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(cluster)
    name = f"cs-e2e-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(
        name, {"metadata": {"name": "e2e-profile"}, "data": {"profile.csv": PROFILE}}
    )
    yield name
    core.delete_namespace(name)


def _job(namespace: str) -> dict[str, Any]:
    container = {"name": "mpi", "image": "busybox:1.36", "command": ["sleep", "3600"]}
    return {
        "apiVersion": "carbonscaler.io/v1",
        "kind": "CarbonScalerMPIJob",
        "metadata": {"name": "e2e", "namespace": namespace},
        "spec": {
            "mpiReplicaSpecs": {
                "Launcher": {"replicas": 1, "template": {"spec": {"containers": [container]}}},
                "Worker": {"replicas": 1, "template": {"spec": {"containers": [container]}}},
            }
        },
        "carbonScalerSpec": {
            "minReplicas": 1,
            "maxReplicas": 3,
            "deadline": 30,
            "profileName": "e2e-profile",
            "lengthHours": 0.01,
            "slotSeconds": 10,
            "policy": "fixed",  # carbon-agnostic: starts at once, whatever the carbon data
        },
    }


def _run_operator(api: client.ApiClient, namespace: str, stop: threading.Event) -> None:
    from carbonscaler.backends.kubernetes import KubeflowApi
    from carbonscaler.operator import handlers
    from carbonscaler.operator.carbon import CarbonBoard

    registry = kopf.OperatorRegistry()
    handlers.register(registry, tick_s=2)
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    memo = handlers.OperatorContext(api=KubeflowApi(api, instance="e2e"), board=CarbonBoard())

    async def main() -> None:
        await kopf.operator(
            registry=registry,
            settings=settings,
            memo=memo,
            namespaces=[namespace],
            standalone=True,
            stop_flag=stop,
        )

    asyncio.run(main())


def _wait(check: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:g} s")


def test_operator_runs_a_job_on_the_cluster(cluster: client.ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(cluster)
    stop = threading.Event()
    operator = threading.Thread(target=_run_operator, args=(cluster, namespace, stop), daemon=True)
    operator.start()
    try:
        custom.create_namespaced_custom_object(
            "carbonscaler.io", "v1", namespace, "carbonscalermpijobs", _job(namespace)
        )

        def mpijob() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = custom.get_namespaced_custom_object(
                    "kubeflow.org", "v1", namespace, "mpijobs", "e2e"
                )
                return found
            except ApiException:
                return None

        child = _wait(mpijob)
        owner = child["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "CarbonScalerMPIJob" and owner["controller"] is True
        launcher = child["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
        assert {"name": "WORKERS", "value": "1"} in launcher["containers"][0]["env"]
        status = _wait(
            lambda: custom.get_namespaced_custom_object(
                "carbonscaler.io", "v1", namespace, "carbonscalermpijobs", "e2e"
            ).get("status")
        )
        assert status["phase"] in {"Running", "Succeeded"}
        assert status["plan"]["policy"] == "agnostic"
        events = client.CoreV1Api(cluster).list_namespaced_event(namespace)
        assert "Planned" in {e.reason for e in events.items}
        custom.delete_namespaced_custom_object(
            "carbonscaler.io", "v1", namespace, "carbonscalermpijobs", "e2e"
        )
        _wait(lambda: mpijob() is None)
    finally:
        stop.set()
        operator.join(timeout=30)
