"""The real kopf operator loop, end to end, against a Kubernetes-aware mock API (kmock).

kopf runs as it does in the operator's pod — the handlers the package registers
(``handlers.register``), its watches of both CarbonScaler kinds, its finalizer, the timers,
kopf's own patches and our status writes — against ``kmock.KubernetesEmulator``, an in-memory
API server that serves discovery, list, watch, create, merge-patch and delete over HTTP. The
emulator here (:class:`Cluster`) also plays the parts of the API server and the training
operator the lifecycles need: uids, creation times and resource versions; a name for
``generateName``; a refusal (admission webhook) of a request; and the Kubeflow job's
conditions on suspension (training-operator v1.7), or the pruning of ``runPolicy.suspend``
(v1.6).

Time: the handlers' clock (``OperatorContext.clock``) is virtual and the tests move it from
slot to slot (60-second slots); kopf's timer ticks in real time every fraction of a second,
so each step is waited for as an event (with generous timeouts), never slept for.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

kmock = pytest.importorskip("kmock")
kopf = pytest.importorskip("kopf")
pytest.importorskip("kubernetes")

from kubernetes import client  # noqa: E402

from carbonscaler.backends.kubernetes import KubeflowApi  # noqa: E402
from carbonscaler.kube.crd import CLUSTER, KINDS, MPI, PYTORCH, JobKind  # noqa: E402
from carbonscaler.operator import handlers  # noqa: E402
from carbonscaler.operator.carbon import CarbonBoard  # noqa: E402
from carbonscaler.operator.progress import ProgressReporter  # noqa: E402
from carbonscaler.operator.reconcile import CarbonSnapshot  # noqa: E402

pytestmark = pytest.mark.integration

NS = "jobs"
SLOT = 60  # seconds per slot: the carbon data's pace and the jobs' slotSeconds
T0 = 1_700_000_000.0  # the jobs' creation
TICK = 0.25  # kopf's timer, real seconds
WAIT = 45.0  # the longest any one step may take (a loaded 2-core machine)
# Dirty, clean, middling, dirty, clean, then dirty: with the profile below the plan is
# 0 | 4 | 1 for 40 % of the slot, then 0 | 0 | 3 | 0 ...: start, scale down, pause, resume.
CARBON = (500.0, 100.0, 200.0, 600.0, 150.0, 700.0, 700.0, 700.0)
PLAN = [0, 4, 1, 0, 3, 0, 0, 0]
PROFILE_CSV = "nodes,throughput,power\n0,0,0\n1,1.0,100\n2,1.9,190\n3,2.6,270\n4,3.0,340\n"
KUBEFLOW = {MPI.kind: "kubeflow.org/v1/mpijobs", PYTORCH.kind: "kubeflow.org/v1/pytorchjobs"}


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cluster(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock's emulator, with what a real API server and training operator add here."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.versions = itertools.count(1)
        self.refusals: dict[tuple[str, str], tuple[int, str, str]] = {}
        self.training_operator = "v1.7"  # "v1.6": runPolicy.suspend is pruned
        self.events: list[dict[str, Any]] = []

    async def _handle(self, request: Any) -> Any:
        data = request.data if isinstance(request.data, dict) else None
        resource = request.resource
        plural = "" if resource is None else str(resource.plural)
        refusal = self.refusals.get((request.method.value, plural))
        if refusal is not None:
            code, reason, message = refusal
            raise kmock.KubernetesError(status=code, reason=reason, message=message)
        if resource is not None and data is not None:
            meta = data.setdefault("metadata", {})
            if request.action == kmock.action.CREATE:
                if meta.get("generateName") and not meta.get("name"):
                    meta["name"] = f"{meta['generateName']}{next(self.versions):05d}"
                meta.setdefault("uid", f"uid-{next(self.versions)}")
                meta.setdefault("creationTimestamp", _iso(time.time()))
                if plural == "events":
                    self.events.append(copy.deepcopy(data))
            if request.action in (kmock.action.CREATE, kmock.action.UPDATE):
                meta["resourceVersion"] = str(next(self.versions))
            if str(resource.group) == "kubeflow.org":
                self._train(request.action, data)
        return await super()._handle(request)

    def _train(self, action: Any, data: dict[str, Any]) -> None:
        """The training operator's visible part: conditions, and suspend as its CRD has it."""
        spec = data.get("spec") or {}
        policy = spec.get("runPolicy")
        if self.training_operator == "v1.6":
            if isinstance(policy, dict):
                policy.pop("suspend", None)
            if action == kmock.action.CREATE:
                data["status"] = {"conditions": [{"type": "Running", "status": "True"}]}
            return
        suspend = policy.get("suspend") if isinstance(policy, dict) else None
        if action == kmock.action.CREATE or suspend is False:
            data["status"] = {"conditions": [{"type": "Running", "status": "True"}]}
        elif suspend is True:
            data["status"] = {
                "conditions": [
                    {"type": "Running", "status": "False"},
                    {"type": "Suspended", "status": "True"},
                ]
            }

    # -- reading the cluster

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.objects[resource, NS, name]
        except KeyError:
            return None
        return None if found.deleted else copy.deepcopy(found.raw)

    def requests_to(self, method: str, path: str) -> int:
        return sum(1 for r in self._requests if r.method.value == method and r.url.path == path)

    def reasons(self, name: str) -> list[str]:
        return [
            e["reason"]
            for e in self.events
            if e["involvedObject"]["name"] == name
            and e.get("reportingComponent") == "carbonscaler.io/operator"
        ]


def declare(k8s: Cluster) -> None:
    """What discovery serves: our kinds (watchable, patchable, with a status subresource),
    the Kubeflow kinds, ConfigMaps, Events, and what kopf itself looks for."""
    for kind in (*KINDS.values(), CLUSTER):
        k8s.resources[f"carbonscaler.io/v1/{kind.plural}"] = kmock.ResourceInfo(
            kind=kind.kind,
            singular=kind.singular,
            shortnames=set(kind.short_names),
            namespaced=True,
            verbs={"get", "list", "watch", "patch", "create", "delete"},
            subresources={"status"},
        )
    for kind in KINDS.values():
        k8s.resources[KUBEFLOW[kind.kind]] = kmock.ResourceInfo(
            kind=kind.child_kind,
            singular=kind.child_kind.lower(),
            namespaced=True,
            verbs={"get", "create", "patch", "delete"},
        )
    for plural, kind, namespaced in [
        ("configmaps", "ConfigMap", True),
        ("events", "Event", True),
        ("namespaces", "Namespace", False),
    ]:
        k8s.resources[f"v1/{plural}"] = kmock.ResourceInfo(
            kind=kind,
            singular=kind.lower(),
            namespaced=namespaced,
            verbs={"get", "list", "watch", "create", "patch"},
        )
    k8s.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition",
        singular="customresourcedefinition",
        namespaced=False,
        verbs={"list", "watch"},
    )
    k8s.objects["v1/configmaps", NS, "curve4"] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "curve4", "namespace": NS},
        "data": {"profile.csv": PROFILE_CSV},
    }


class Clock:
    """The handlers' (virtual) clock."""

    def __init__(self) -> None:
        self.now = T0 + 1

    def __call__(self) -> float:
        return self.now


class Operator:
    """The operator as its pod runs it: kopf with the package's handlers and settings, on an
    event loop of its own (in a thread, as ``kopf run`` would be a process of its own)."""

    def __init__(self, k8s: Cluster, clock: Clock) -> None:
        self.k8s = k8s
        self.clock = clock
        self.board = CarbonBoard(clock, slot_seconds=SLOT)
        self.thread: threading.Thread | None = None
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None

    async def start(self) -> None:
        url = str(self.k8s.url).rstrip("/")
        configuration = client.Configuration()
        configuration.host = url
        api = KubeflowApi(client.ApiClient(configuration), instance="operator-test")
        context = handlers.OperatorContext(api=api, board=self.board, clock=self.clock)
        registry = kopf.OperatorRegistry()
        handlers.register(registry, tick_s=TICK)

        @kopf.on.login(registry=registry)  # type: ignore[untyped-decorator]
        def login(**_: Any) -> Any:
            return kopf.ConnectionInfo(server=url)

        settings = kopf.OperatorSettings()
        handlers.configure(settings)
        settings.posting.enabled = False
        ready = threading.Event()
        self.stop_flag = threading.Event()

        def run() -> None:
            try:
                asyncio.run(
                    kopf.operator(
                        registry=registry,
                        settings=settings,
                        memo=context,
                        clusterwide=True,
                        standalone=True,
                        stop_flag=self.stop_flag,
                        ready_flag=ready,
                    )
                )
            except BaseException as exc:  # reported by stop()
                self.error = exc

        self.thread = threading.Thread(target=run, name="kopf", daemon=True)
        self.thread.start()
        assert await asyncio.to_thread(ready.wait, WAIT), "kopf did not get ready"

    async def stop(self) -> None:
        assert self.thread is not None
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, WAIT)
        assert not self.thread.is_alive(), "kopf did not stop"
        self.thread = None
        assert self.error is None, repr(self.error)

    def carbon(self) -> None:
        """A push from the carbon service: the current slot's value and the forecast on."""
        slot = min(int((self.clock.now - T0) // SLOT), len(CARBON) - 1)
        self.board.update(CarbonSnapshot(CARBON[slot], CARBON[slot:], self.clock.now))


@asynccontextmanager
async def running() -> AsyncIterator[tuple[Cluster, Operator]]:
    async with Cluster() as k8s, kmock.Server(k8s):
        declare(k8s)
        operator = Operator(k8s, Clock())
        operator.carbon()
        await operator.start()
        try:
            yield k8s, operator
        finally:
            if operator.thread is not None:
                await operator.stop()


async def until(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Wait for ``check()`` to hold (polling the emulator's state), or fail saying what."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def job(kind: JobKind, name: str, **settings: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "carbonscaler:dev", "command": ["sleep", "1"]}
    pod = {"template": {"spec": {"containers": [container]}}}
    spec: dict[str, Any]
    if kind is MPI:
        spec = {"slotsPerWorker": 1, "mpiReplicaSpecs": {"Launcher": pod, "Worker": pod}}
    else:
        spec = {
            "elasticPolicy": {"rdzvBackend": "c10d", "maxRestarts": 100},
            "pytorchReplicaSpecs": {"Worker": {**pod, "restartPolicy": "OnFailure"}},
        }
    return {
        "apiVersion": "carbonscaler.io/v1",
        "kind": kind.kind,
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": _iso(T0)},
        "spec": copy.deepcopy(spec),
        "carbonScalerSpec": {
            "minReplicas": 1,
            "maxReplicas": 4,
            "deadline": 8,
            "progress": 0,
            "profileName": "curve4",
            "lengthHours": 0.1,  # six 1-worker slots of a minute
            "slotSeconds": SLOT,
            "rescaleOverheadSeconds": 0,
            "safetyMargin": 0,
            **settings,
        },
    }


class Job:
    """One CarbonScaler job in the emulator, and the steps of its life."""

    def __init__(self, k8s: Cluster, operator: Operator, kind: JobKind, name: str) -> None:
        self.k8s = k8s
        self.operator = operator
        self.kind = kind
        self.name = name
        self.cr = f"carbonscaler.io/v1/{kind.plural}"
        self.cr_collection = f"/apis/carbonscaler.io/v1/namespaces/{NS}/{kind.plural}"
        self.cr_path = f"{self.cr_collection}/{name}"
        self.child_resource = KUBEFLOW[kind.kind]
        self.child_collection = f"/apis/kubeflow.org/v1/namespaces/{NS}/{kind.child_plural}"
        self.child_path = f"{self.child_collection}/{name}"

    async def create(self, **settings: Any) -> None:
        body = job(self.kind, self.name, **settings)
        response = await self.k8s.post(self.cr_collection, json=body)
        assert response.status in (200, 201), await response.text()

    @property
    def resource(self) -> dict[str, Any]:
        found = self.k8s.get(self.cr, self.name)
        assert found is not None, f"{self.name} is gone"
        return found

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.resource.get("status") or {})

    @property
    def child(self) -> dict[str, Any] | None:
        return self.k8s.get(self.child_resource, self.name)

    def workers(self) -> int | None:
        """The Kubeflow job's workers: None without one, 0 while suspended."""
        child = self.child
        if child is None:
            return None
        spec = child["spec"]
        if (spec.get("runPolicy") or {}).get("suspend"):
            return 0
        return int(spec[self.kind.replica_specs_key]["Worker"]["replicas"])

    async def at(self, slot: int, offset: float = 5.0) -> None:
        """Move the clock to ``offset`` seconds into ``slot`` (with a carbon push) and wait for
        a pass to see it."""
        self.operator.clock.now = T0 + slot * SLOT + offset
        self.operator.carbon()
        await until(
            f"{self.name}: a pass in slot {slot}",
            lambda: (
                self.status.get("slot") == slot
                and self.status.get("accountedUntil", "") >= _iso(self.operator.clock.now)
            ),
        )

    async def expect(self, workers: int | None, phase: str) -> None:
        await until(
            f"{self.name}: {phase} with {workers} workers (have {self.workers()}, "
            f"{self.status.get('phase')})",
            lambda: self.workers() == workers and self.status.get("phase") == phase,
        )


# -- lifecycles ------------------------------------------------------------------------------


@pytest.mark.parametrize("pause_mode", ["Delete", "Suspend"])
def test_mpi_job_lifecycle_in_the_kopf_loop(pause_mode: str) -> None:
    """create → planned, waiting → MPIJob at 4 → rescaled to 1 (deleted and re-created, or
    suspended, resized and resumed) → paused → resumed at 3 → Succeeded, and then left alone:
    no more polling, no re-creation when the finished MPIJob disappears."""

    async def scenario() -> None:
        async with running() as (k8s, operator):
            nbody = Job(k8s, operator, MPI, "nbody")
            await nbody.create(pauseMode=pause_mode)
            await until("the first plan", lambda: "plan" in nbody.status)
            status = nbody.status
            assert status["plan"]["servers"] == PLAN and status["phase"] == "Pending"
            assert "carbonscaler.io/finalizer" in nbody.resource["metadata"]["finalizers"]
            # The progress ConfigMap, owned by the job.
            progress = k8s.get("v1/configmaps", "nbody-csmpi-progress")
            assert progress is not None
            assert (
                progress["metadata"]["ownerReferences"][0]["uid"]
                == nbody.resource["metadata"]["uid"]
            )

            await nbody.at(1)
            await nbody.expect(4, "Running")
            child = nbody.child
            assert child is not None
            launcher = child["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
            assert {"name": "WORKERS", "value": "4"} in launcher["containers"][0]["env"]
            deletes_before = k8s.requests_to("DELETE", nbody.child_path)

            await nbody.at(2)
            await nbody.expect(1, "Running")
            child = nbody.child
            assert child is not None
            launcher = child["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
            assert {"name": "WORKERS", "value": "1"} in launcher["containers"][0]["env"]
            deleted = k8s.requests_to("DELETE", nbody.child_path) - deletes_before
            assert deleted == (1 if pause_mode == "Delete" else 0)

            await nbody.at(2, offset=30)  # past the slot's 40 %: pause
            await nbody.expect(None if pause_mode == "Delete" else 0, "Paused")
            await nbody.at(3)
            await nbody.expect(None if pause_mode == "Delete" else 0, "Paused")
            await nbody.at(4)
            await nbody.expect(3, "Running")

            # The training operator reports success.
            await k8s.patch(
                nbody.child_path,
                json={"status": {"conditions": [{"type": "Succeeded", "status": "True"}]}},
            )
            await until("Succeeded", lambda: nbody.status.get("phase") == "Succeeded")
            reasons = k8s.reasons("nbody")
            expected = ["Planned", "Started", "Rescaling", "Rescaled", "Paused", "Resumed"]
            assert reasons == [*expected, "Succeeded"], reasons
            final = nbody.status
            assert final["rescales"] == 3 and final.get("replans", 0) == 0
            assert final["progress"] == 100.0 and final["emissionsG"] > 0

            # Finished: the timer stops; a later deletion of the MPIJob (a TTL) changes
            # nothing, and nothing is ever created again.
            gets = k8s.requests_to("GET", nbody.child_path)
            await k8s.delete(nbody.child_path)
            operator.clock.now = T0 + 5 * SLOT
            await asyncio.sleep(8 * TICK)
            assert k8s.requests_to("GET", nbody.child_path) == gets
            assert nbody.child is None and nbody.status["phase"] == "Succeeded"

    asyncio.run(scenario())


def test_pytorch_job_lifecycle_with_suspend_and_progress_reports(tmp_path: Path) -> None:
    """An elastic PyTorchJob: created at 4, patched to 1 in place, suspended and resumed at 3
    (pauseMode: Suspend, training-operator v1.7), its progress reported through its
    ConfigMap by the progress reporter, then Succeeded."""

    async def scenario() -> None:
        async with running() as (k8s, operator):
            resnet = Job(k8s, operator, PYTORCH, "resnet")
            await resnet.create(pauseMode="Suspend")
            await until("the first plan", lambda: "plan" in resnet.status)
            await resnet.at(1)
            await resnet.expect(4, "Running")
            posts = k8s.requests_to("POST", resnet.child_collection)
            await resnet.at(2)
            await resnet.expect(1, "Running")
            await resnet.at(2, offset=30)
            await resnet.expect(0, "Paused")  # suspended, not deleted
            child = resnet.child
            assert child is not None
            conditions = {c["type"]: c["status"] for c in child["status"]["conditions"]}
            assert conditions["Suspended"] == "True"

            # The reporter writes 40 % into the job's ConfigMap; the next pass reads it.
            progress_file = tmp_path / "progress.csv"
            progress_file.write_text("step,percent\n4,40.0\n")
            configuration = client.Configuration()
            configuration.host = str(k8s.url).rstrip("/")
            reporter = ProgressReporter(
                client.CoreV1Api(client.ApiClient(configuration)),
                PYTORCH,
                NS,
                "resnet",
                progress_file,
                tmp_path / "DONE",
            )
            assert await asyncio.to_thread(reporter.once) is False
            assert reporter.failures == 0
            await until(
                "the reported progress",
                lambda: (
                    resnet.status.get("progressSource") == "reported"
                    and resnet.status.get("progress") == 40.0
                ),
            )
            # 40 % is behind the plan's pace: the next slot boundary re-plans from it (the
            # decision core's "behind"), and the job resumes at the new plan's level.
            await resnet.at(4)
            await until("the re-plan", lambda: resnet.status.get("replans") == 1)
            level = resnet.status["plan"]["servers"][4]
            assert level > PLAN[4]
            await resnet.expect(level, "Running")
            # Never re-created: scaled, suspended and resumed in place.
            assert k8s.requests_to("POST", resnet.child_collection) == posts
            assert k8s.requests_to("DELETE", resnet.child_path) == 0
            await k8s.patch(
                resnet.child_path,
                json={"status": {"conditions": [{"type": "Succeeded", "status": "True"}]}},
            )
            (tmp_path / "DONE").write_text("")
            assert await asyncio.to_thread(reporter.once) is True
            await until("Succeeded", lambda: resnet.status.get("phase") == "Succeeded")
            assert k8s.reasons("resnet") == [
                "Planned",
                "Started",
                "Rescaled",
                "Paused",
                "Replanned",
                "Resumed",
                "Succeeded",
            ]

    asyncio.run(scenario())


def test_a_suspension_pruned_by_an_old_training_operator_falls_back_to_deletion() -> None:
    """training-operator v1.6: its CRD drops runPolicy.suspend. The pass that suspends reads
    the MPIJob back, sees the field gone and deletes it instead (Warning); later rescales and
    pauses delete and re-create directly."""

    async def scenario() -> None:
        async with running() as (k8s, operator):
            k8s.training_operator = "v1.6"
            nbody = Job(k8s, operator, MPI, "nbody")
            await nbody.create(pauseMode="Suspend")
            await until("the first plan", lambda: "plan" in nbody.status)
            await nbody.at(1)
            await nbody.expect(4, "Running")
            await nbody.at(2)
            await nbody.expect(1, "Running")
            assert nbody.status["child"]["suspendUnsupported"] is True
            assert "SuspendUnsupported" in k8s.reasons("nbody")
            await nbody.at(2, offset=30)
            await nbody.expect(None, "Paused")  # deleted: no suspension on v1.6
            await nbody.at(4)
            await nbody.expect(3, "Running")
            assert k8s.reasons("nbody").count("SuspendUnsupported") == 1

    asyncio.run(scenario())


# -- refusals, restarts, deletion --------------------------------------------------------------


def test_a_child_refused_by_an_admission_webhook_fails_the_job() -> None:
    async def scenario() -> None:
        async with running() as (k8s, operator):
            denial = 'admission webhook "policy.example.com" denied the request: no MPI here'
            k8s.refusals[("POST", "mpijobs")] = (403, "Forbidden", denial)
            nbody = Job(k8s, operator, MPI, "nbody")
            await nbody.create()
            await until("the first plan", lambda: "plan" in nbody.status)
            operator.clock.now = T0 + SLOT + 5
            operator.carbon()
            await until("Failed", lambda: nbody.status.get("phase") == "Failed")
            status = nbody.status
            assert denial in status["message"]
            failed = {c["type"]: c for c in status["conditions"]}["Failed"]
            assert failed["status"] == "True" and failed["reason"] == "ChildRejected"
            (warning,) = [e for e in k8s.events if e["reason"] == "ChildRejected"]
            assert warning["type"] == "Warning" and denial in warning["message"]
            # Not retried: the timer stops for a failed job.
            assert k8s.requests_to("POST", nbody.child_collection) == 1
            gets = k8s.requests_to("GET", nbody.child_path)
            operator.clock.now = T0 + 2 * SLOT + 5
            await asyncio.sleep(8 * TICK)
            assert k8s.requests_to("POST", nbody.child_collection) == 1
            assert k8s.requests_to("GET", nbody.child_path) == gets

    asyncio.run(scenario())


def test_an_operator_restarted_mid_job_continues_from_the_status() -> None:
    async def scenario() -> None:
        async with running() as (k8s, operator):
            nbody = Job(k8s, operator, MPI, "nbody")
            await nbody.create()
            await until("the first plan", lambda: "plan" in nbody.status)
            await nbody.at(1)
            await nbody.expect(4, "Running")
            await operator.stop()
            before = nbody.status
            creates = k8s.requests_to("POST", nbody.child_collection)
            gets = k8s.requests_to("GET", nbody.child_path)

            # A new operator process: new memory, no carbon data until the next push.
            again = Operator(k8s, operator.clock)
            nbody.operator = again
            await again.start()
            await until(
                "the resumed passes", lambda: k8s.requests_to("GET", nbody.child_path) > gets + 2
            )
            status = nbody.status
            assert status["plan"] == before["plan"] and status["phase"] == "Running"
            assert status["child"] == before["child"]
            assert k8s.requests_to("POST", nbody.child_collection) == creates
            assert k8s.requests_to("DELETE", nbody.child_path) == 0
            # It carries on with the plan: scaled down in slot 2.
            await nbody.at(2)
            await nbody.expect(1, "Running")
            assert nbody.status["rescales"] == 1 and nbody.status["revision"] > before["revision"]
            await again.stop()

    asyncio.run(scenario())


def test_a_job_deleted_mid_run_stops_its_kubeflow_job_and_goes() -> None:
    async def scenario() -> None:
        async with running() as (k8s, operator):
            nbody = Job(k8s, operator, MPI, "nbody")
            await nbody.create()
            await until("the first plan", lambda: "plan" in nbody.status)
            await nbody.at(1)
            await nbody.expect(4, "Running")
            response = await k8s.delete(nbody.cr_path)
            assert response.status == 200
            # kopf runs on_delete (the MPIJob goes, in the foreground), then drops the
            # finalizer and the resource is gone.
            await until("the MPIJob deleted", lambda: nbody.child is None)
            await until("the job gone", lambda: k8s.get(nbody.cr, "nbody") is None)
            assert "Deleted" in k8s.reasons("nbody")

    asyncio.run(scenario())
