"""A shared cluster in the real kopf loop, end to end, against kmock's Kubernetes emulator.

The operator as its pod runs it (the package's handlers, kopf's watches, finalizers, timers)
with the emulator of ``tests/test_operator_kopf.py`` serving one more kind, the
``CarbonScalerCluster``. Two jobs of two workers each share a capacity of two: the first
runs, the second — created mid-slot — is admitted and planned with it at once (Events), and
waits without an MPIJob while the first uses the servers; when the first finishes, the second
runs. A watcher samples the emulator's MPIJobs all along: their workers never sum above the
capacity; and an operator restarted mid-run continues from the statuses. Time: the
handlers' clock is virtual, moved slot by slot (60-second slots); kopf's
timer ticks in real time every 0.25 s, so every step is waited for as an event.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

kmock = pytest.importorskip("kmock")
pytest.importorskip("kopf")
pytest.importorskip("kubernetes")

from carbonscaler.kube.crd import CLUSTER, MPI  # noqa: E402
from test_operator_kopf import (  # noqa: E402
    NS,
    SLOT,
    T0,
    WAIT,
    Clock,
    Cluster,
    Job,
    Operator,
    _iso,
    declare,
    job,
    until,
)

pytestmark = pytest.mark.integration

CAPACITY = 2
CLUSTERS = f"/apis/carbonscaler.io/v1/namespaces/{NS}/{CLUSTER.plural}"


@asynccontextmanager
async def running() -> AsyncIterator[tuple[Cluster, Operator]]:
    async with Cluster() as k8s, kmock.Server(k8s):
        declare(k8s)
        clock = Clock()
        clock.now = T0  # the cluster and the first job are created now: slot 0 begins
        operator = Operator(k8s, clock)
        operator.carbon()
        await operator.start()
        try:
            yield k8s, operator
        finally:
            if operator.thread is not None:
                await operator.stop()


class Capacity:
    """Samples the MPIJobs' workers all along (a succeeded or suspended job holds none)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs
        self.peak = 0
        self.samples = 0
        self.task: asyncio.Task[None] | None = None

    def held(self) -> int:
        total = 0
        for one in self.jobs:
            child = one.child
            if child is None:
                continue
            conditions = (child.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Succeeded" and c["status"] == "True" for c in conditions):
                continue
            total += one.workers() or 0
        return total

    async def _watch(self) -> None:
        while True:
            self.peak = max(self.peak, self.held())
            self.samples += 1
            await asyncio.sleep(0.01)

    def __enter__(self) -> Capacity:
        self.task = asyncio.get_running_loop().create_task(self._watch())
        return self

    def __exit__(self, *_: Any) -> None:
        assert self.task is not None
        self.task.cancel()


def member(name: str, created: float, **settings: Any) -> dict[str, Any]:
    """A two-worker MPI job of three one-minute slots that names the cluster."""
    body = job(
        MPI,
        name,
        cluster="shared",
        minReplicas=2,
        maxReplicas=2,
        lengthHours=0.05,
        **settings,
    )
    body["metadata"]["creationTimestamp"] = _iso(created)
    return body


async def succeed(k8s: Cluster, one: Job) -> None:
    """The training operator reports the MPIJob done."""
    await k8s.patch(
        one.child_path, json={"status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}
    )
    await until(f"{one.name} Succeeded", lambda: one.status.get("phase") == "Succeeded")


async def steps(k8s: Cluster, operator: Operator, restarted: list[Operator]) -> None:
    """The scenario; ``restarted`` holds the operator running now (stopped at the end)."""
    a = Job(k8s, operator, MPI, "a")
    b = Job(k8s, operator, MPI, "b")
    shared = {
        "apiVersion": "carbonscaler.io/v1",
        "kind": CLUSTER.kind,
        "metadata": {"name": "shared", "namespace": NS, "creationTimestamp": _iso(T0)},
        "spec": {
            "capacity": CAPACITY,
            "slotSeconds": SLOT,
            "safetyMargin": 0,
            "rescaleOverheadSeconds": 0,
            "timeLimitSeconds": 30,
        },
    }

    def cluster_status() -> dict[str, Any]:
        found = k8s.get(f"carbonscaler.io/v1/{CLUSTER.plural}", "shared")
        return dict((found or {}).get("status") or {})

    with Capacity([a, b]) as capacity:
        response = await k8s.post(CLUSTERS, json=shared)
        assert response.status in (200, 201), await response.text()
        # a has four slots for three slots of work: it starts at once.
        response = await k8s.post(a.cr_collection, json=member("a", T0, deadline=4))
        assert response.status in (200, 201), await response.text()
        await a.expect(2, "Running")
        assert a.status["plan"]["servers"] == [2, 2, 2, 0]
        assert a.status["cluster"]["arrivalSlot"] == 0
        assert "Replanned" in k8s.reasons("shared")

        # b arrives 20 s into slot 1 and is planned with a at once, mid-slot.
        operator.clock.now = T0 + SLOT + 20
        operator.carbon()
        body = member("b", operator.clock.now, deadline=7)
        response = await k8s.post(b.cr_collection, json=copy.deepcopy(body))
        assert response.status in (200, 201), await response.text()
        await until("b planned", lambda: "plan" in b.status)
        await until(
            "the joint re-plan on b's arrival",
            lambda: k8s.reasons("shared").count("Replanned") == 2,
        )
        (replanned,) = [
            e["message"]
            for e in k8s.events
            if e["involvedObject"]["name"] == "shared"
            and "arrived" in e["message"]
            and "csmpi/b" in e["message"]
        ]
        assert replanned == (
            "slot 1: csmpi/b arrived: csmpi/a, csmpi/b planned together in 2 servers"
        )
        assert k8s.reasons("a") == ["Planned", "Started", "Replanned"]
        assert b.status["cluster"]["arrivalSlot"] == 1
        assert b.status["deadlineTime"] == _iso(T0 + 8 * SLOT)  # 7 slots from 1:20
        # b waits while a uses the servers: no MPIJob, no pod.
        assert b.status["phase"] == "Pending" and b.child is None
        assert a.workers() == 2

        operator.clock.now = T0 + 2 * SLOT + 5
        operator.carbon()
        await until("slot 2", lambda: cluster_status().get("slot") == 2)
        await until("a's pass in slot 2", lambda: a.status.get("slot") == 2)
        assert a.workers() == 2 and b.child is None and b.status["phase"] == "Pending"

        # The operator restarts (a new pod, no memory): it continues from the
        # statuses — nothing re-planned, a's MPIJob neither stopped nor re-created.
        await operator.stop()
        before = cluster_status()
        creates = k8s.requests_to("POST", a.child_collection)
        gets = k8s.requests_to("GET", a.child_path)
        replans = k8s.reasons("shared").count("Replanned")
        operator = restarted[0] = Operator(k8s, operator.clock)
        a.operator = b.operator = operator
        operator.carbon()
        await operator.start()
        await until(
            "the resumed cluster's passes",
            lambda: k8s.requests_to("GET", a.child_path) > gets + 2,
        )
        assert cluster_status()["core"] == before["core"]
        assert cluster_status()["jobs"] == before["jobs"]
        assert k8s.requests_to("POST", a.child_collection) == creates
        assert k8s.requests_to("DELETE", a.child_path) == 0
        assert k8s.reasons("shared").count("Replanned") == replans
        assert a.workers() == 2 and b.child is None

        # a finishes: b gets the servers in its planned slots.
        await succeed(k8s, a)
        operator.clock.now = T0 + 3 * SLOT + 5
        operator.carbon()
        await until("a left", lambda: "csmpi/a" not in cluster_status().get("jobs", {}))
        first = b.status["plan"]["servers"].index(2)
        operator.clock.now = T0 + (1 + first) * SLOT + 5
        operator.carbon()
        await b.expect(2, "Running")
        await succeed(k8s, b)
        await until("the cluster idle", lambda: cluster_status().get("active") == 0)

    assert capacity.samples > 20
    assert capacity.peak == CAPACITY, "the MPIJobs held more than the capacity"
    reasons = k8s.reasons("b")
    assert reasons[0] == "Planned" and "Started" in reasons and reasons[-1] == "Succeeded"
    assert "Queued" not in reasons  # planned into free slots, never queued
    final = cluster_status()
    assert final["jobs"] == {} and final["core"]["members"] == {}
    assert final["phase"] == "Ready" and final["granted"] == 0


def test_jobs_share_the_capacity_in_the_kopf_loop() -> None:
    async def scenario() -> None:
        async with running() as (k8s, operator):
            restarted = [operator]
            try:
                await steps(k8s, operator, restarted)
            finally:
                if restarted[0].thread is not None:
                    await restarted[0].stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=6 * WAIT))
