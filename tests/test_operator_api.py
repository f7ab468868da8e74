"""The handlers through every transition, checked at the HTTP level.

The official kubernetes client is pointed at a recording API server on 127.0.0.1 that keeps
objects in memory and answers like the real one (201 on create, 404 for missing objects, 409
for existing ones, foreground deletion that waits for dependents); the tests assert on the
method, path, query, content type and JSON body of every request the operator made.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

pytest.importorskip("kopf")
kubernetes = pytest.importorskip("kubernetes")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from kubernetes import client  # noqa: E402

from carbonscaler.backends.base import WorkloadState  # noqa: E402
from carbonscaler.backends.kubernetes import KubeflowApi, KubernetesBackend  # noqa: E402
from carbonscaler.kube.crd import MPI, PYTORCH  # noqa: E402
from carbonscaler.operator import handlers  # noqa: E402
from carbonscaler.operator.carbon import CarbonBoard, snapshot_from_push, webhook_app  # noqa: E402
from carbonscaler.operator.progress import ProgressReporter  # noqa: E402
from carbonscaler.operator.reconcile import CarbonSnapshot  # noqa: E402

pytestmark = pytest.mark.integration  # starts real processes or servers

T0 = 1_700_000_000.0
HOUR = 3600.0
CARBON = (500.0, 480.0, 100.0, 110.0, 520.0, 510.0, 530.0, 540.0)
PROFILE_CSV = (
    "nodes,throughput,power\n0,0.0,0.0\n1,1.0,60.0\n2,2.0,120.0\n3,3.0,180.0\n4,4.0,240.0\n"
)
CR_PATH = "/apis/carbonscaler.io/v1/namespaces/jobs/{plural}/{name}"
PROGRESS_CM = "/api/v1/namespaces/jobs/configmaps/nbody-csmpi-progress"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    body: Any


class FakeApiServer:
    """An in-memory Kubernetes API (the few paths CarbonScaler uses) that records requests."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[Request] = []
        self.uids = 0
        self.forbidden: set[str] = set()  # path parts answered with 403
        # (method, path part) answered with (code, reason, message): an admission refusal
        self.refusals: dict[tuple[str, str], tuple[int, str, str]] = {}
        # A training operator before v1.7: its CRDs prune spec.runPolicy.suspend
        self.prune_suspend = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                request = Request(
                    self.command,
                    url.path,
                    parse_qs(url.query),
                    self.headers.get("Content-Type"),
                    json.loads(raw) if raw else None,
                )
                server.requests.append(request)
                code, answer = server.answer(request)
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "reason": reason, "message": message, "code": code}  # fmt: skip

    def answer(self, req: Request) -> tuple[int, dict[str, Any]]:
        path = req.path
        if any(part in path for part in self.forbidden):
            return self._status(403, "Forbidden", f"cannot {req.method} {path}")
        for (method, part), (code, reason, message) in self.refusals.items():
            if req.method == method and part in path:
                return self._status(code, reason, message)
        if req.method == "POST":
            body = copy.deepcopy(req.body)
            meta = body.setdefault("metadata", {})
            if "generateName" in meta and "name" not in meta:
                self.uids += 1
                meta["name"] = f"{meta['generateName']}{self.uids:05d}"
            key = f"{path}/{meta['name']}"
            if key in self.objects:
                return self._status(409, "AlreadyExists", f"{meta['name']} already exists")
            self.uids += 1
            meta.setdefault("uid", f"uid-{self.uids}")
            meta["resourceVersion"] = str(self.uids)
            self.objects[key] = body
            return 201, body
        sub_status = path.endswith("/status")
        key = path[: -len("/status")] if sub_status else path
        found = self.objects.get(key)
        if found is None:
            return self._status(404, "NotFound", f"{key} not found")
        if req.method == "GET":
            return 200, found
        if req.method == "PATCH":
            assert req.content_type == "application/merge-patch+json", req.content_type
            patch = req.body if not sub_status else {"status": req.body["status"]}
            _merge(found, patch)
            if self.prune_suspend and "/kubeflow.org/" in path:
                (found.get("spec") or {}).get("runPolicy", {}).pop("suspend", None)
            return 200, found
        if req.method == "DELETE":
            policy = (req.body or {}).get("propagationPolicy") or req.query.get(
                "propagationPolicy", [None]
            )[0]
            if policy == "Foreground":
                found["metadata"]["deletionTimestamp"] = "2023-11-14T22:13:20Z"
                found["metadata"]["finalizers"] = ["foregroundDeletion"]
                return 200, found
            del self.objects[key]
            return 200, found
        return self._status(405, "MethodNotAllowed", req.method)

    # -- helpers for the tests

    def put(self, path: str, obj: dict[str, Any]) -> None:
        self.objects[path] = copy.deepcopy(obj)

    def finish_deletion(self, path: str) -> None:
        """The garbage collector removed the dependents; the object goes."""
        assert self.objects[path]["metadata"].get("deletionTimestamp")
        del self.objects[path]

    def take(self) -> list[Request]:
        taken, self.requests = self.requests, []
        return taken


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    yield fake
    fake.close()


class Clock:
    def __init__(self) -> None:
        self.now = T0 + 1

    def __call__(self) -> float:
        return self.now


def make_context(server: FakeApiServer, clock: Clock) -> handlers.OperatorContext:
    configuration = client.Configuration()
    configuration.host = server.url
    api = KubeflowApi(client.ApiClient(configuration), instance="operator-0")
    board = CarbonBoard(clock)
    return handlers.OperatorContext(api=api, board=board, clock=clock)


def mpi_resource() -> dict[str, Any]:
    container = {
        "name": "mpi",
        "image": "carbonscaler:dev",
        "command": ["python", "/app/examples/nbody/nbody.py"],
        "env": [{"name": "BODIES", "value": "2000"}],
    }
    return {
        "apiVersion": "carbonscaler.io/v1",
        "kind": "CarbonScalerMPIJob",
        "metadata": {
            "name": "nbody",
            "namespace": "jobs",
            "uid": "cr-uid",
            "creationTimestamp": "2023-11-14T22:13:20Z",
            "labels": {"team": "sim"},
        },
        "spec": {
            "slotsPerWorker": 1,
            "runPolicy": {"cleanPodPolicy": "Running"},
            "mpiReplicaSpecs": {
                "Launcher": {"replicas": 1, "template": {"spec": {"containers": [container]}}},
                "Worker": {"replicas": 1, "template": {"spec": {"containers": [container]}}},
            },
        },
        "carbonScalerSpec": {
            "minReplicas": 1,
            "maxReplicas": 4,
            "deadline": 8,
            "progress": 0,
            "profileName": "linear4",
            "lengthHours": 4,
            "rescaleOverheadSeconds": 0,
            "safetyMargin": 0,
        },
    }


def pytorch_resource() -> dict[str, Any]:
    body = mpi_resource()
    body["kind"] = "CarbonScalerPyTorchJob"
    body["metadata"]["name"] = "resnet"
    body["spec"] = {
        "elasticPolicy": {"rdzvBackend": "c10d", "maxRestarts": 100},
        "pytorchReplicaSpecs": {
            "Worker": {
                "replicas": 1,
                "restartPolicy": "OnFailure",
                "template": {"spec": {"containers": [{"name": "pytorch", "image": "x:1"}]}},
            }
        },
    }
    return body


def cr_path(resource: dict[str, Any]) -> str:
    plural = MPI.plural if resource["kind"] == MPI.kind else PYTORCH.plural
    return CR_PATH.format(plural=plural, name=resource["metadata"]["name"])


def child_path(kind: Any, name: str) -> str:
    return f"/apis/kubeflow.org/v1/namespaces/jobs/{kind.child_plural}/{name}"


class Harness:
    """A resource in the fake API, the operator's context, and a way to run one handler."""

    def __init__(self, server: FakeApiServer, resource: dict[str, Any]) -> None:
        self.server = server
        self.clock = Clock()
        self.ctx = make_context(server, self.clock)
        self.path = cr_path(resource)
        server.put(self.path, resource)
        server.put(
            "/api/v1/namespaces/jobs/configmaps/linear4",
            {"metadata": {"name": "linear4"}, "data": {"profile.csv": PROFILE_CSV}},
        )
        self.carbon(CARBON)

    def carbon(self, values: tuple[float, ...], zone: str | None = None) -> None:
        slot = int((self.clock.now - T0) // HOUR)
        self.ctx.board.update(
            CarbonSnapshot(values[slot], values[slot:], self.clock.now, source="test"), zone
        )

    @property
    def resource(self) -> dict[str, Any]:
        return copy.deepcopy(self.server.objects[self.path])

    def run(self, handler: Any, at: float | None = None) -> list[Request]:
        if at is not None:
            self.clock.now = at
        self.server.take()
        asyncio.run(handler(body=self.resource, memo=self.ctx))
        return self.server.take()


def calls(requests: list[Request]) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in requests]


def events(requests: list[Request]) -> list[dict[str, Any]]:
    return [r.body for r in requests if r.path.endswith("/events")]


def status_patch(requests: list[Request]) -> dict[str, Any]:
    (patch,) = [r.body for r in requests if r.path.endswith("/status")]
    return dict(patch["status"])


def validate_child(body: dict[str, Any]) -> None:
    """The pod templates of a Kubeflow job body are valid core/v1 PodTemplateSpecs."""
    key = "mpiReplicaSpecs" if body["kind"] == "MPIJob" else "pytorchReplicaSpecs"
    for spec in body["spec"][key].values():
        template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
        template["template"] = spec["template"]
        kubernetes_validate.validate(template, "1.27", strict=True)


# -- the transitions -------------------------------------------------------------------------


def test_create_reads_profile_plans_posts_event_and_patches_status(server: FakeApiServer) -> None:
    h = Harness(server, mpi_resource())
    requests = h.run(handlers.on_create)
    assert calls(requests) == [
        ("POST", "/api/v1/namespaces/jobs/configmaps"),  # the job's progress ConfigMap
        ("GET", child_path(MPI, "nbody")),
        ("GET", PROGRESS_CM),
        ("GET", "/api/v1/namespaces/jobs/configmaps/linear4"),
        ("POST", "/api/v1/namespaces/jobs/events"),
        ("PATCH", "/apis/carbonscaler.io/v1/namespaces/jobs/carbonscalermpijobs/nbody/status"),
    ]
    channel = requests[0].body
    assert channel["metadata"]["name"] == "nbody-csmpi-progress"
    assert channel["metadata"]["ownerReferences"][0]["uid"] == "cr-uid"
    kubernetes_validate.validate(channel, "1.27", strict=True)
    (event,) = events(requests)
    assert event["involvedObject"] == {
        "apiVersion": "carbonscaler.io/v1",
        "kind": "CarbonScalerMPIJob",
        "name": "nbody",
        "namespace": "jobs",
        "uid": "cr-uid",
    }
    assert event["reason"] == "Planned" and event["type"] == "Normal"
    assert event["metadata"] == {"generateName": "nbody.", "namespace": "jobs"}
    kubernetes_validate.validate(event, "1.27", strict=True)
    status = status_patch(requests)
    assert status["phase"] == "Pending"
    assert status["plan"]["servers"][:2] == [0, 0]
    assert status["profile"]["powerW"] == [0.0, 60.0, 120.0, 180.0, 240.0]
    assert h.resource["status"]["revision"] == 1


def test_scale_up_creates_the_mpijob_with_owner_reference(server: FakeApiServer) -> None:
    h = Harness(server, mpi_resource())
    h.run(handlers.on_create)
    requests = h.run(handlers.on_timer, at=T0 + 2 * HOUR + 5)
    assert calls(requests)[:3] == [
        ("GET", child_path(MPI, "nbody")),
        ("GET", PROGRESS_CM),
        ("POST", "/apis/kubeflow.org/v1/namespaces/jobs/mpijobs"),
    ]
    body = requests[2].body
    workers = h.resource["status"]["plan"]["servers"][2]
    assert body["metadata"] == {
        "name": "nbody",
        "namespace": "jobs",
        "labels": {
            "team": "sim",
            "carbonscaler.io/job": "nbody",
            "carbonscaler.io/kind": "CarbonScalerMPIJob",
        },
        "ownerReferences": [
            {
                "apiVersion": "carbonscaler.io/v1",
                "kind": "CarbonScalerMPIJob",
                "name": "nbody",
                "uid": "cr-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    assert body["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"] == workers
    launcher = body["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    assert launcher["env"] == [
        {"name": "BODIES", "value": "2000"},
        {"name": "WORKERS", "value": str(workers)},
    ]
    validate_child(body)
    assert [e["reason"] for e in events(requests)] == ["Started"]
    assert status_patch(requests)["phase"] == "Running"


def test_mpi_scale_down_deletes_in_foreground_then_recreates(server: FakeApiServer) -> None:
    h = Harness(server, mpi_resource())
    h.run(handlers.on_create)
    h.run(handlers.on_timer, at=T0 + 2 * HOUR + 5)
    # Make slot 3 a 2-worker slot in the saved plan (as a re-plan would).
    resource = h.resource
    resource["status"]["plan"]["servers"][3] = resource["status"]["plan"]["after"][3] = 2
    server.put(h.path, resource)
    h.ctx.statuses.clear()
    requests = h.run(handlers.on_timer, at=T0 + 3 * HOUR + 5)
    delete = [r for r in requests if r.method == "DELETE"]
    assert len(delete) == 1 and delete[0].path == child_path(MPI, "nbody")
    assert delete[0].body == {"propagationPolicy": "Foreground"}
    assert [e["reason"] for e in events(requests)] == ["Rescaling"]
    # Still terminating: nothing is done but waiting.
    waiting = h.run(handlers.on_timer, at=T0 + 3 * HOUR + 15)
    assert not [r for r in waiting if "/mpijobs" in r.path and r.method != "GET"]
    server.finish_deletion(child_path(MPI, "nbody"))
    relaunch = h.run(handlers.on_timer, at=T0 + 3 * HOUR + 25)
    posts = [r for r in relaunch if r.path.endswith("/mpijobs")]
    assert posts[0].body["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"] == 2
    assert [e["reason"] for e in events(relaunch)] == ["Rescaled"]


def test_pytorch_scale_is_a_merge_patch_of_worker_replicas(server: FakeApiServer) -> None:
    h = Harness(server, pytorch_resource())
    h.run(handlers.on_create)
    created = h.run(handlers.on_timer, at=T0 + 2 * HOUR + 5)
    body = next(r.body for r in created if r.path.endswith("/pytorchjobs"))
    assert body["spec"]["elasticPolicy"] == {
        "rdzvBackend": "c10d",
        "maxRestarts": 100,
        "minReplicas": 1,
        "maxReplicas": 4,
    }
    validate_child(body)
    resource = h.resource
    resource["status"]["plan"]["servers"][3] = resource["status"]["plan"]["after"][3] = 3
    server.put(h.path, resource)
    h.ctx.statuses.clear()
    requests = h.run(handlers.on_timer, at=T0 + 3 * HOUR + 5)
    (patch,) = [r for r in requests if r.method == "PATCH" and "/pytorchjobs/" in r.path]
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body == {"spec": {"pytorchReplicaSpecs": {"Worker": {"replicas": 3}}}}
    child = server.objects[child_path(PYTORCH, "resnet")]
    assert child["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3


def test_pause_and_resume(server: FakeApiServer) -> None:
    h = Harness(server, mpi_resource())
    h.run(handlers.on_create)
    h.run(handlers.on_timer, at=T0 + 2 * HOUR + 5)
    resource = h.resource
    plan = resource["status"]["plan"]
    plan["servers"][3] = plan["after"][3] = 0
    plan["servers"][4] = plan["after"][4] = 1
    plan["endSlot"] = 5.0  # the forged plan's last server stops at the end of slot 4
    server.put(h.path, resource)
    h.ctx.statuses.clear()
    paused = h.run(handlers.on_timer, at=T0 + 3 * HOUR + 5)
    assert ("DELETE", child_path(MPI, "nbody")) in calls(paused)
    assert [e["reason"] for e in events(paused)] == ["Paused"]
    server.finish_deletion(child_path(MPI, "nbody"))
    h.run(handlers.on_timer, at=T0 + 3 * HOUR + 100)
    assert h.resource["status"]["phase"] == "Paused"
    resumed = h.run(handlers.on_timer, at=T0 + 4 * HOUR + 5)
    assert ("POST", "/apis/kubeflow.org/v1/namespaces/jobs/mpijobs") in calls(resumed)
    assert [e["reason"] for e in events(resumed)] == ["Resumed"]


def test_progress_update_replans_from_the_reported_progress(server: FakeApiServer) -> None:
    h = Harness(server, mpi_resource())
    h.run(handlers.on_create)
    h.run(handlers.on_timer, at=T0 + 2 * HOUR + 5)
    # The job reports progress far behind the plan (as the reporter would: a spec patch).
    resource = h.resource
    resource["carbonScalerSpec"]["progress"] = 5.0
    server.put(h.path, resource)
    requests = h.run(handlers.on_update, at=T0 + 3 * HOUR + 5)
    status = status_patch(requests)
    assert status["progressSource"] == "reported" and status["progress"] == 5.0
    assert [e["reason"] for e in events(requests)] == ["Replanned"]
    assert status["replans"] == 1 and status["plan"]["madeAtSlot"] == 3


def test_progress_reporter_merge_patches_the_progress_configmap(
    server: FakeApiServer, tmp_path: Path
) -> None:
    h = Harness(server, mpi_resource())
    h.run(handlers.on_create)  # the operator creates the job's progress ConfigMap
    progress, done = tmp_path / "progress.csv", tmp_path / "DONE"
    reporter = ProgressReporter(
        client.CoreV1Api(h.ctx.api.core.api_client), MPI, "jobs", "nbody", progress, done
    )
    assert reporter.once() is False and server.take() == []  # nothing reported yet
    progress.write_text("step,percent\n10,12.5\n")
    assert reporter.once() is False
    (request,) = server.take()
    assert (request.method, request.path) == ("PATCH", PROGRESS_CM)
    assert request.content_type == "application/merge-patch+json"
    assert request.body == {"data": {"progress": "12.5"}}
    progress.write_text("step,percent\n10,12.5\n11,13.0\n")
    reporter.once()
    assert server.take() == []  # below the 1-point step
    # The operator's next pass reads it: the job's progress is reported, not estimated.
    requests = h.run(handlers.on_timer, at=T0 + 2 * HOUR + 5)
    assert ("GET", PROGRESS_CM) in calls(requests)
    status = h.resource["status"]
    assert status["progressSource"] == "reported" and status["progress"] == 12.5
    done.write_text("")
    assert reporter.once() is True
    assert server.take()[0].body == {"data": {"progress": "100"}}
    assert server.objects[PROGRESS_CM]["data"] == {"progress": "100"}
    assert h.resource["carbonScalerSpec"]["progress"] == 0  # its pods never write the job


def test_progress_reporter_backs_off_and_gives_up(
    server: FakeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reporter refused (403: no Role on its ConfigMap) waits longer after each failure and
    gives up after max_failures in a row, saying what to fix — it never retries forever."""
    Harness(server, mpi_resource())
    server.forbidden.add("/configmaps/nbody-csmpi-progress")
    progress = tmp_path / "progress.csv"
    progress.write_text("step,percent\n10,12.5\n")
    configuration = client.Configuration()
    configuration.host = server.url
    reporter = ProgressReporter(
        client.CoreV1Api(client.ApiClient(configuration)),
        MPI,
        "jobs",
        "nbody",
        progress,
        tmp_path / "DONE",
        max_failures=5,
        backoff_s=1.0,
        max_backoff_s=4.0,
        rng=lambda: 0.0,  # the jitter's random draw fixed: exact waits
    )
    slept: list[float] = []
    with caplog.at_level("WARNING", logger="carbonscaler.progress"):
        assert reporter.run(0.5, sleep=slept.append) is False
    assert slept == [1.0, 2.0, 4.0, 4.0]  # doubling, capped; no sleep after the last failure
    assert len(server.take()) == 5
    assert "giving up after 5 failed reports" in caplog.text
    assert "resourceName" in caplog.text  # the fix: a Role on that ConfigMap


def test_finish_marks_succeeded_without_touching_the_job(server: FakeApiServer) -> None:
    h = Harness(server, mpi_resource())
    h.run(handlers.on_create)
    h.run(handlers.on_timer, at=T0 + 2 * HOUR + 5)
    server.objects[child_path(MPI, "nbody")]["status"] = {
        "conditions": [{"type": "Succeeded", "status": "True"}]
    }
    requests = h.run(handlers.on_timer, at=T0 + 3 * HOUR)
    assert [e["reason"] for e in events(requests)] == ["Succeeded"]
    status = status_patch(requests)
    assert status["phase"] == "Succeeded" and status["progress"] == 100.0
    later = h.run(handlers.on_timer, at=T0 + 4 * HOUR)
    assert calls(later) == []  # a finished job is not polled: not even its Kubeflow job


def test_delete_stops_the_job_in_the_foreground(server: FakeApiServer) -> None:
    h = Harness(server, mpi_resource())
    h.run(handlers.on_create)
    h.run(handlers.on_timer, at=T0 + 2 * HOUR + 5)
    requests = h.run(handlers.on_delete)
    assert calls(requests) == [
        ("DELETE", child_path(MPI, "nbody")),
        ("POST", "/api/v1/namespaces/jobs/events"),
    ]
    assert requests[0].body == {"propagationPolicy": "Foreground"}
    # Deleting again (a retried handler) is not an error: the job is already going.
    server.finish_deletion(child_path(MPI, "nbody"))
    again = h.run(handlers.on_delete)
    assert [r.method for r in again] == ["DELETE", "POST"]


def test_operator_restart_mid_job_resumes_without_touching_the_job(
    server: FakeApiServer,
) -> None:
    h = Harness(server, mpi_resource())
    h.run(handlers.on_create)
    h.run(handlers.on_timer, at=T0 + 2 * HOUR + 5)
    before = h.resource["status"]
    # A new operator process: nothing in memory, no carbon data yet.
    h.ctx = make_context(server, h.clock)
    requests = h.run(handlers.on_resume, at=T0 + 2 * HOUR + 15)
    assert calls(requests) == [
        ("POST", "/api/v1/namespaces/jobs/configmaps"),  # exists already: 409, fine
        ("GET", child_path(MPI, "nbody")),
        ("GET", PROGRESS_CM),
    ]
    assert h.resource["status"] == before
    later = h.run(handlers.on_timer, at=T0 + 2 * HOUR + 200)
    assert [m for m, _ in calls(later)] == ["GET", "GET", "PATCH"]  # accounting only
    assert status_patch(later)["emissionsG"] > 0


def test_kopf_lagging_body_does_not_undo_the_last_pass(server: FakeApiServer) -> None:
    h = Harness(server, mpi_resource())
    stale = h.resource
    h.run(handlers.on_create)
    h.clock.now = T0 + 2 * HOUR + 5
    server.take()
    asyncio.run(handlers.on_timer(body=stale, memo=h.ctx))  # kopf had not seen our patch yet
    requests = server.take()
    assert "Planned" not in [e["reason"] for e in events(requests)]


def test_api_errors_become_temporary_errors_with_the_fix(server: FakeApiServer) -> None:
    import kopf

    h = Harness(server, mpi_resource())
    server.forbidden.add("/mpijobs/")
    with pytest.raises(kopf.TemporaryError, match="lacks a permission; apply deploy/operator/rbac"):
        h.run(handlers.on_create)


@pytest.mark.parametrize(
    ("code", "reason", "message"),
    [
        (422, "Invalid", 'MPIJob.kubeflow.org "nbody" is invalid: spec.slotsPerWorker: Invalid'),
        (400, "BadRequest", "the body of the request was in an unknown format"),
        (
            403,
            "Forbidden",
            'admission webhook "quota.example.com" denied the request: at most 2 workers',
        ),
    ],
)
def test_a_refused_child_fails_the_job_with_the_servers_message(
    server: FakeApiServer, code: int, reason: str, message: str
) -> None:
    h = Harness(server, mpi_resource())
    h.run(handlers.on_create)
    server.refusals[("POST", "/mpijobs")] = (code, reason, message)
    requests = h.run(handlers.on_timer, at=T0 + 2 * HOUR + 5)
    # One creation attempt, then the job is Failed with the server's own words; no retry.
    assert [c for c in calls(requests) if c[1].endswith("/mpijobs")] == [
        ("POST", "/apis/kubeflow.org/v1/namespaces/jobs/mpijobs")
    ]
    (event,) = events(requests)
    assert (event["type"], event["reason"]) == ("Warning", "ChildRejected")
    assert message in event["message"] and f"HTTP {code}" in event["message"]
    status = h.resource["status"]
    assert status["phase"] == "Failed" and message in status["message"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "ChildRejected"
    assert h.run(handlers.on_timer, at=T0 + 2 * HOUR + 15) == []  # not polled any more
    # Editing the spec retries it.
    resource = h.resource
    resource["carbonScalerSpec"]["maxReplicas"] = 2
    server.put(h.path, resource)
    del server.refusals[("POST", "/mpijobs")]
    retried = h.run(handlers.on_update, at=T0 + 2 * HOUR + 25)
    assert ("POST", "/apis/kubeflow.org/v1/namespaces/jobs/mpijobs") in calls(retried)
    assert h.resource["status"]["phase"] == "Running"


def test_rbac_and_quota_refusals_stay_temporary(server: FakeApiServer) -> None:
    """A 403 that is not an admission denial (RBAC, a quota) and a 429 are fixed outside the
    job: the pass is retried (kopf TemporaryError), the job is not failed."""
    import kopf

    h = Harness(server, mpi_resource())
    h.run(handlers.on_create)
    for code, reason, message in [
        (403, "Forbidden", 'mpijobs.kubeflow.org is forbidden: User "x" cannot create'),
        (403, "Forbidden", "exceeded quota: compute, requested: pods=5, limited: pods=4"),
        (429, "TooManyRequests", "slow down"),
    ]:
        server.refusals[("POST", "/mpijobs")] = (code, reason, message)
        with pytest.raises(kopf.TemporaryError, match=f"HTTP {code}"):
            h.run(handlers.on_timer, at=T0 + 2 * HOUR + 5)
        assert h.resource["status"]["phase"] == "Pending"


def test_a_pruned_suspension_falls_back_to_deletion_in_the_same_pass(
    server: FakeApiServer,
) -> None:
    """pauseMode: Suspend on a training operator whose CRD lacks runPolicy.suspend (v1.6):
    the patch 'succeeds' but the field is pruned. The handler reads the job back, and the
    same pass deletes it instead, with a Warning; later pauses delete directly."""
    resource = pytorch_resource()
    resource["carbonScalerSpec"]["pauseMode"] = "Suspend"
    h = Harness(server, resource)
    server.prune_suspend = True
    h.run(handlers.on_create)
    h.run(handlers.on_timer, at=T0 + 2 * HOUR + 5)
    forged = h.resource
    plan = forged["status"]["plan"]
    plan["servers"][3] = plan["after"][3] = 0
    plan["servers"][4] = plan["after"][4] = 1
    plan["endSlot"] = 5.0
    server.put(h.path, forged)
    h.ctx.statuses.clear()
    paused = h.run(handlers.on_timer, at=T0 + 3 * HOUR + 5)
    path = child_path(PYTORCH, "resnet")
    assert [c for c in calls(paused) if c[1] == path] == [
        ("GET", path),
        ("PATCH", path),  # suspend: pruned by the old CRD
        ("GET", path),  # read back: no runPolicy.suspend
        ("DELETE", path),  # the fallback
    ]
    assert [(e["type"], e["reason"]) for e in events(paused)] == [
        ("Normal", "Paused"),
        ("Warning", "SuspendUnsupported"),
    ]
    assert "training-operator v1.7" in events(paused)[1]["message"]
    status = h.resource["status"]
    assert status["phase"] == "Paused" and status["rescales"] == 1
    assert status["child"]["suspendUnsupported"] is True
    server.finish_deletion(path)
    resumed = h.run(handlers.on_timer, at=T0 + 4 * HOUR + 5)
    assert ("POST", "/apis/kubeflow.org/v1/namespaces/jobs/pytorchjobs") in calls(resumed)


def test_mpi_suspend_mode_rescales_through_a_suspension(server: FakeApiServer) -> None:
    """pauseMode: Suspend on an MPIJob (training-operator >= 1.7): a rescale suspends the
    MPIJob, waits until the training operator says its pods are gone (Suspended), then patches
    the worker count and the launcher's WORKERS and resumes it in one patch — no deletion."""
    resource = mpi_resource()
    resource["carbonScalerSpec"]["pauseMode"] = "Suspend"
    h = Harness(server, resource)
    h.run(handlers.on_create)
    h.run(handlers.on_timer, at=T0 + 2 * HOUR + 5)
    path = child_path(MPI, "nbody")
    server.objects[path]["status"] = {"conditions": [{"type": "Running", "status": "True"}]}
    forged = h.resource
    forged["status"]["plan"]["servers"][3] = forged["status"]["plan"]["after"][3] = 2
    server.put(h.path, forged)
    h.ctx.statuses.clear()
    suspending = h.run(handlers.on_timer, at=T0 + 3 * HOUR + 5)
    (patch,) = [r for r in suspending if r.method == "PATCH" and r.path == path]
    assert patch.body == {"spec": {"runPolicy": {"suspend": True}}}
    assert not [r for r in suspending if r.method in ("DELETE", "POST") and "mpijobs" in r.path]
    assert [e["reason"] for e in events(suspending)] == ["Rescaling"]
    assert h.resource["status"]["phase"] == "Rescaling"
    # Still Running: the pods have not stopped yet; nothing to do but wait.
    waiting = h.run(handlers.on_timer, at=T0 + 3 * HOUR + 15)
    assert not [r for r in waiting if r.method != "GET" and "mpijobs" in r.path]
    server.objects[path]["status"] = {
        "conditions": [
            {"type": "Running", "status": "False"},
            {"type": "Suspended", "status": "True"},
        ]
    }
    resumed = h.run(handlers.on_timer, at=T0 + 3 * HOUR + 25)
    (patch,) = [r for r in resumed if r.method == "PATCH" and r.path == path]
    spec = patch.body["spec"]
    assert spec["runPolicy"] == {"suspend": False}
    assert spec["mpiReplicaSpecs"]["Worker"] == {"replicas": 2}
    launcher = spec["mpiReplicaSpecs"]["Launcher"]
    assert launcher["replicas"] == 1
    assert {"name": "WORKERS", "value": "2"} in launcher["template"]["spec"]["containers"][0]["env"]
    validate_child(server.objects[path])
    assert [e["reason"] for e in events(resumed)] == ["Rescaled"]
    status = h.resource["status"]
    assert status["phase"] == "Running" and status["replicas"] == 2 and status["rescales"] == 1


def test_the_operator_owns_suspend_and_ttl_so_a_finished_job_is_never_recreated(
    server: FakeApiServer,
) -> None:
    """ttlSecondsAfterFinished (and suspend) in the job's runPolicy are not passed to the
    Kubeflow job: the training operator never deletes a finished job before the operator has
    seen it finish. And once Succeeded, a job whose Kubeflow job is gone stays Succeeded: no
    pass reads or creates it again."""
    resource = mpi_resource()
    resource["spec"]["runPolicy"] = {
        "cleanPodPolicy": "Running",
        "ttlSecondsAfterFinished": 0,
        "suspend": True,
    }
    h = Harness(server, resource)
    h.run(handlers.on_create)
    created = h.run(handlers.on_timer, at=T0 + 2 * HOUR + 5)
    body = next(r.body for r in created if r.path.endswith("/mpijobs"))
    assert body["spec"]["runPolicy"] == {"cleanPodPolicy": "Running"}
    path = child_path(MPI, "nbody")
    server.objects[path]["status"] = {"conditions": [{"type": "Succeeded", "status": "True"}]}
    h.run(handlers.on_timer, at=T0 + 3 * HOUR)
    assert h.resource["status"]["phase"] == "Succeeded"
    del server.objects[path]  # deleted later, by hand or by a TTL of another tool
    for at in (T0 + 3 * HOUR + 10, T0 + 5 * HOUR):
        assert h.run(handlers.on_timer, at=at) == []
        assert h.run(handlers.on_resume, at=at) == []
    assert path not in server.objects


def test_register_attaches_every_handler_for_both_kinds() -> None:
    import kopf

    registry = kopf.OperatorRegistry()
    handlers.register(registry, tick_s=5)
    shared = "carbonscalerclusters"  # the shared clusters' own handlers
    names = {
        (h.fn.__name__, getattr(h, "reason", None) or type(h).__name__)
        for h in registry._changing.get_all_handlers()
        if h.selector.any_name != shared
    }
    assert {n for n, _ in names} == {"on_create", "on_resume", "on_update", "on_delete"}
    assert {
        h.fn.__name__
        for h in registry._changing.get_all_handlers()
        if h.selector.any_name == shared
    } == {"on_cluster_create", "on_cluster_resume", "on_cluster_update", "on_cluster_delete"}
    timers = [t for t in registry._spawning.get_all_handlers() if t.selector.any_name != shared]
    assert len(timers) == 2 and all(t.interval == 5 for t in timers)
    # Finished jobs are not polled: the timer is filtered out for them.
    assert all(t.when is handlers.active for t in timers)
    assert handlers.active(status={"phase": "Running"}) is True
    assert handlers.active(status={}) is True
    assert handlers.active(status={"phase": "Succeeded"}) is False
    assert handlers.active(status={"phase": "Failed"}) is False
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    assert settings.persistence.finalizer == "carbonscaler.io/finalizer"
    # Every call kopf makes has a timeout.
    assert settings.networking.request_timeout and settings.networking.connect_timeout
    assert settings.watching.server_timeout and settings.watching.connect_timeout
    assert settings.watching.client_timeout > settings.watching.server_timeout


# -- the carbon webhook ----------------------------------------------------------------------


def test_webhook_accepts_the_carbon_service_push() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    board = CarbonBoard(lambda: T0)

    async def scenario() -> tuple[int, int, dict[str, Any]]:
        async with TestClient(TestServer(webhook_app(board))) as web:
            good = await web.post(
                "/",
                json={"carbon_intensity": 210.5, "carbon_percentile": 0.4,
                      "prediction": [210.5, 190.0], "zone": "DE"},
            )  # fmt: skip
            bad = await web.post("/", json={"intensity": 1})
            health = await (await web.get("/healthz")).json()
            return good.status, bad.status, health

    good, bad, health = asyncio.run(scenario())
    assert (good, bad) == (200, 422)
    snapshot = board.get("de")
    assert snapshot is not None and snapshot.forecast == (210.5, 190.0)
    assert board.get() == snapshot  # the service's zone is the default one
    assert health["status"] == "ok"


def test_push_body_validation() -> None:
    with pytest.raises(ValueError, match="carbon_intensity"):
        snapshot_from_push({"prediction": []}, T0)
    with pytest.raises(ValueError, match="finite"):
        snapshot_from_push({"carbon_intensity": -1}, T0)
    snapshot, zone = snapshot_from_push({"carbon_intensity": 5, "prediction": []}, T0)
    assert zone is None and snapshot.forecast == ()


# -- the controller's backend over the same API ----------------------------------------------


def test_kubernetes_backend_drives_a_kubeflow_job(server: FakeApiServer) -> None:
    h = Harness(server, pytorch_resource())
    spec = pytorch_resource()["spec"]
    backend = KubernetesBackend(h.ctx.api, PYTORCH, "jobs", "train", spec, poll_s=0.01)
    server.take()
    backend.start(2)
    (create,) = server.take()
    assert (create.method, create.path) == (
        "POST",
        "/apis/kubeflow.org/v1/namespaces/jobs/pytorchjobs",
    )
    assert "ownerReferences" not in create.body["metadata"]
    assert backend.poll() is WorkloadState.RUNNING
    backend.rescale(3)  # elastic: patched in place
    requests = server.take()
    assert [(r.method, r.body) for r in requests if r.method == "PATCH"] == [
        ("PATCH", {"spec": {"pytorchReplicaSpecs": {"Worker": {"replicas": 3}}}})
    ]
    assert backend.handle() == {
        "kind": "CarbonScalerPyTorchJob",
        "namespace": "jobs",
        "name": "train",
        "workers": 3,
    }
    other = KubernetesBackend(h.ctx.api, PYTORCH, "jobs", "train", spec)
    assert other.attach(backend.handle()) and other.workers == 3
    path = child_path(PYTORCH, "train")
    threading.Timer(0.05, server.finish_deletion, args=(path,)).start()
    backend.stop()
    assert backend.workers == 0 and backend.poll() is WorkloadState.STOPPED
    assert not other.attach(backend.handle())


def test_service_poller_and_subscription_use_the_v1_api() -> None:
    import httpx

    from carbonscaler.operator.carbon import ServicePoller, subscribe

    seen: list[tuple[str, str, bytes]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url), request.content))
        if request.url.path == "/v1/intensity/current":
            return httpx.Response(200, json={"value_g_per_kwh": 321.0})
        if request.url.path == "/v1/intensity/forecast":
            return httpx.Response(200, json={"values_g_per_kwh": [321.0, 300.0]})
        if request.url.path == "/v1/subscriptions":
            return httpx.Response(404)  # an older service: the reference's POST / instead
        return httpx.Response(200, json={"carbon_intensity": 321.0, "prediction": []})

    async def scenario() -> CarbonSnapshot:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
            snapshot = await ServicePoller(http, "http://carbon:7777/", horizon=12).fetch("DE", T0)
            await subscribe(http, "http://carbon:7777", "http://operator:8899/")
            return snapshot

    snapshot = asyncio.run(scenario())
    assert snapshot.intensity == 321.0 and snapshot.forecast == (321.0, 300.0)
    assert [(m, u) for m, u, _ in seen] == [
        ("GET", "http://carbon:7777/v1/intensity/current?zone=DE"),
        ("GET", "http://carbon:7777/v1/intensity/forecast?zone=DE&horizon=12"),
        ("POST", "http://carbon:7777/v1/subscriptions"),
        ("POST", "http://carbon:7777/"),
    ]
    assert json.loads(seen[-1][2]) == {
        "app_name": "carbonscaler-operator",
        "address": "http://operator:8899/",
    }
