"""The operator's pure decisions, transition by transition (no I/O, no kopf)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from carbonscaler.kube.crd import MPI, PYTORCH, JobKind
from carbonscaler.operator.reconcile import (
    ACCOUNTING_WRITE_S,
    SUSPEND_GRACE_S,
    CarbonSnapshot,
    ChildError,
    ChildState,
    CreateChild,
    Decision,
    DeleteChild,
    Observation,
    PatchChild,
    Settings,
    SettingsError,
    reconcile,
)
from carbonscaler.profile import ScalingProfile, linear_profile

T0 = 1_700_000_000.0  # creation time (epoch s); slots are an hour long
HOUR = 3600.0
# Dirty for two slots, clean for two, dirty again: the work belongs in slots 2 and 3.
CARBON = (500.0, 480.0, 100.0, 110.0, 520.0, 510.0, 530.0, 540.0)
PROFILE = linear_profile(4)


def mpi_resource(**settings: Any) -> dict[str, Any]:
    cs = {
        "minReplicas": 1,
        "maxReplicas": 4,
        "deadline": 8,
        "progress": 0,
        "profileName": "linear4",
        "lengthHours": 4,
        "rescaleOverheadSeconds": 0,
        "safetyMargin": 0.0,
        **settings,
    }
    container = {
        "name": "mpi",
        "image": "carbonscaler:dev",
        "env": [{"name": "BODIES", "value": "9"}],
    }
    return {
        "apiVersion": "carbonscaler.io/v1",
        "kind": "CarbonScalerMPIJob",
        "metadata": {
            "name": "nbody",
            "namespace": "jobs",
            "uid": "uid-1",
            "creationTimestamp": "2023-11-14T22:13:20Z",
        },
        "spec": {
            "slotsPerWorker": 1,
            "mpiReplicaSpecs": {
                "Launcher": {"replicas": 1, "template": {"spec": {"containers": [container]}}},
                "Worker": {"replicas": 1, "template": {"spec": {"containers": [container]}}},
            },
        },
        "carbonScalerSpec": cs,
    }


def pytorch_resource(**settings: Any) -> dict[str, Any]:
    body = mpi_resource(**settings)
    container = {"name": "pytorch", "image": "carbonscaler:dev"}
    body["kind"] = "CarbonScalerPyTorchJob"
    body["spec"] = {
        "elasticPolicy": {"rdzvBackend": "c10d", "maxRestarts": 100},
        "pytorchReplicaSpecs": {
            "Worker": {"replicas": 1, "template": {"spec": {"containers": [container]}}}
        },
    }
    return body


def carbon(at: float, values: tuple[float, ...] = CARBON) -> CarbonSnapshot:
    """A snapshot received at ``at``: the forecast from the slot containing ``at``."""
    slot = int((at - T0) // HOUR)
    return CarbonSnapshot(values[slot], values[slot:], at, source="test")


class Cluster:
    """Applies decisions to a resource and a simulated Kubeflow job, like the API would."""

    def __init__(
        self, kind: JobKind, resource: dict[str, Any], profile: ScalingProfile = PROFILE
    ) -> None:
        self.kind = kind
        self.resource = resource
        self.profile = profile
        self.child: dict[str, Any] | None = None
        self.deleting = False
        self.decisions: list[Decision] = []

    def state(self) -> ChildState | None:
        if self.child is None:
            return None
        state = ChildState.from_body(self.kind, self.child, self.resource["metadata"]["uid"])
        return ChildState(**{**state.__dict__, "deleting": self.deleting})

    def step(self, at: float, *, snapshot: CarbonSnapshot | None = None, **extra: Any) -> Decision:
        obs = Observation(
            kind=self.kind,
            resource=copy.deepcopy(self.resource),
            now=at,
            child=self.state(),
            carbon=snapshot if snapshot is not None else carbon(at),
            profile=self.profile,
            **extra,
        )
        decision = reconcile(obs)
        for op in decision.operations:
            if isinstance(op, CreateChild):
                assert self.child is None
                self.child = copy.deepcopy(op.body)
            elif isinstance(op, PatchChild):
                assert self.child is not None
                merge(self.child, op.patch)
            else:
                assert self.child is not None
                self.deleting = True
        self.resource["status"] = copy.deepcopy(decision.status)
        self.decisions.append(decision)
        return decision

    def gone(self) -> None:
        """The deleted Kubeflow job's pods have stopped; it disappears."""
        self.child, self.deleting = None, False

    def workers(self) -> int:
        assert self.child is not None
        return int(self.child["spec"][self.kind.replica_specs_key]["Worker"]["replicas"])


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        elif value is None:
            target.pop(key, None)
        else:
            target[key] = value


def reasons(decision: Decision) -> list[str]:
    return [e.reason for e in decision.events]


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status.get("conditions", [])}


# -- create ----------------------------------------------------------------------------------


def test_create_plans_and_waits_for_the_clean_slots() -> None:
    cluster = Cluster(MPI, mpi_resource())
    decision = cluster.step(T0 + 1)
    assert decision.operations == []
    assert reasons(decision) == ["Planned"]
    status = decision.status
    assert status["plan"]["servers"][:2] == [0, 0]
    assert sum(status["plan"]["servers"][2:4]) > 0  # the clean slots carry the work
    assert status["phase"] == "Pending"
    assert status["startTime"] == "2023-11-14T22:13:20Z"
    assert status["deadlineTime"] == "2023-11-15T06:13:20Z"
    assert status["workRequired"] == pytest.approx(4.0)
    assert status["profile"]["throughput"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert status["nextChange"]["time"] == "2023-11-15T00:13:20Z"  # slot 2
    assert conditions(status)["Created"] == "True"
    assert decision.status_patch["revision"] == 1


def test_create_starts_when_the_plan_runs_now() -> None:
    flat = (100.0,) * 8
    cluster = Cluster(MPI, mpi_resource())
    decision = cluster.step(T0 + 1, snapshot=carbon(T0 + 1, flat))
    assert reasons(decision) == ["Planned", "Started"]
    (op,) = decision.operations
    assert isinstance(op, CreateChild)
    body = op.body
    assert body["apiVersion"] == "kubeflow.org/v1" and body["kind"] == "MPIJob"
    assert body["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "carbonscaler.io/v1",
            "kind": "CarbonScalerMPIJob",
            "name": "nbody",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    workers = body["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]
    launcher = body["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    assert {"name": "WORKERS", "value": str(workers)} in launcher["env"]
    assert {"name": "BODIES", "value": "9"} in launcher["env"]
    assert decision.status["phase"] == "Running"
    assert decision.status["replicas"] == workers


def test_infeasible_deadline_is_rejected_with_the_planners_explanation() -> None:
    cluster = Cluster(MPI, mpi_resource(deadline=1, lengthHours=10))
    decision = cluster.step(T0 + 1)
    assert decision.operations == []
    (event,) = decision.events
    assert event.type == "Warning" and event.reason == "Infeasible"
    assert "shortest deadline that works is 3 h" in event.message
    status = decision.status
    assert status["phase"] == "Failed"
    assert conditions(status)["Failed"] == "True"
    again = cluster.step(T0 + 20)
    assert again.events == [] and again.status_patch == {}  # reported once, not every tick


def test_fixing_the_deadline_retries_a_failed_job() -> None:
    cluster = Cluster(MPI, mpi_resource(deadline=1, lengthHours=10))
    cluster.step(T0 + 1)
    cluster.resource["carbonScalerSpec"]["deadline"] = 8
    cluster.resource["carbonScalerSpec"]["lengthHours"] = 4
    decision = cluster.step(T0 + 30)
    assert "Planned" in reasons(decision)
    assert conditions(decision.status)["Failed"] == "False"


def test_invalid_settings_fail_with_the_field_to_fix() -> None:
    resource = pytorch_resource()
    del resource["spec"]["elasticPolicy"]
    decision = Cluster(PYTORCH, resource).step(T0 + 1)
    assert decision.status["phase"] == "Failed"
    assert "spec.elasticPolicy is required" in decision.events[0].message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"maxReplicas": 0, "minReplicas": 1}, "maxReplicas: Input should be greater than"),
        ({"maxReplicas": 2, "minReplicas": 3}, "maxReplicas (2) is below minReplicas (3)"),
        ({"policy": "static"}, "policy static cannot run a job"),
        ({"work": 3.0}, "at most one of lengthHours"),
        ({"policy": "greenest"}, "policy 'greenest' is unknown"),
        ({"minReplicas": 5, "maxReplicas": 9}, "describes 1..4 workers"),
    ],
)
def test_settings_errors(change: dict[str, Any], message: str) -> None:
    decision = Cluster(MPI, mpi_resource(**change)).step(T0 + 1)
    assert decision.status["phase"] == "Failed"
    assert message in decision.status["message"]


def test_elastic_bounds_must_cover_the_carbonscaler_bounds() -> None:
    resource = pytorch_resource()
    resource["spec"]["elasticPolicy"]["maxReplicas"] = 2
    with pytest.raises(SettingsError, match="widen elasticPolicy"):
        Settings.from_resource(PYTORCH, resource)
    resource["spec"]["elasticPolicy"].update(maxReplicas=4, metrics=[{"type": "Resource"}])
    with pytest.raises(SettingsError, match="HPA"):
        Settings.from_resource(PYTORCH, resource)


def test_missing_profile_waits_and_warns_once() -> None:
    resource = mpi_resource()
    obs = Observation(
        MPI, resource, T0 + 1, profile_error="profile ConfigMap jobs/linear4 not found"
    )
    first = reconcile(obs)
    assert first.status["phase"] == "Pending" and reasons(first) == ["ProfileUnavailable"]
    assert conditions(first.status)["Created"] == "False"
    resource["status"] = first.status
    second = reconcile(Observation(MPI, resource, T0 + 11, profile_error=obs.profile_error))
    assert second.events == [] and second.operations == []


def test_a_foreign_job_with_the_same_name_is_not_touched() -> None:
    cluster = Cluster(MPI, mpi_resource())
    cluster.child = {"metadata": {"name": "nbody", "ownerReferences": []}, "spec": {}}
    decision = cluster.step(T0 + 1)
    assert decision.operations == []
    assert decision.status["phase"] == "Failed"
    assert "not owned by this job" in decision.status["message"]


# -- running ---------------------------------------------------------------------------------


def run_to_slot2() -> Cluster:
    cluster = Cluster(MPI, mpi_resource())
    cluster.step(T0 + 1)
    cluster.step(T0 + HOUR + 5)
    decision = cluster.step(T0 + 2 * HOUR + 5)
    assert "Started" in reasons(decision)
    return cluster


def test_mpi_rescale_relaunches_with_the_new_workers() -> None:
    cluster = run_to_slot2()
    plan = cluster.resource["status"]["plan"]
    first = cluster.workers()
    assert first == plan["servers"][2]
    # Force a different level for slot 3 to see the MPI relaunch sequence.
    plan["servers"][3] = plan["after"][3] = 2 if first != 2 else 3
    target = plan["servers"][3]
    decision = cluster.step(T0 + 3 * HOUR + 5, snapshot=carbon(T0 + 2 * HOUR + 5))
    assert decision.operations == [DeleteChild("nbody")]
    assert reasons(decision) == ["Rescaling"]
    assert decision.status["phase"] == "Rescaling" and decision.status["replicas"] == 0
    waiting = cluster.step(T0 + 3 * HOUR + 15, snapshot=carbon(T0 + 2 * HOUR + 5))
    assert waiting.operations == [] and waiting.status["phase"] == "Rescaling"
    cluster.gone()
    relaunch = cluster.step(T0 + 3 * HOUR + 25, snapshot=carbon(T0 + 2 * HOUR + 5))
    (op,) = relaunch.operations
    assert isinstance(op, CreateChild)
    assert cluster.workers() == target
    assert reasons(relaunch) == ["Rescaled"]
    assert relaunch.status["rescales"] == 1
    assert relaunch.status["child"]["launches"] == 2


def test_pytorch_rescale_patches_replicas_in_place() -> None:
    cluster = Cluster(PYTORCH, pytorch_resource())
    cluster.step(T0 + 1)
    cluster.step(T0 + 2 * HOUR + 5)
    created = cluster.child
    assert created is not None
    assert created["spec"]["elasticPolicy"]["minReplicas"] == 1
    assert created["spec"]["elasticPolicy"]["maxReplicas"] == 4
    plan = cluster.resource["status"]["plan"]
    plan["servers"][3] = plan["after"][3] = 1 if cluster.workers() != 1 else 2
    decision = cluster.step(T0 + 3 * HOUR + 5, snapshot=carbon(T0 + 2 * HOUR + 5))
    assert decision.operations == [
        PatchChild(
            "nbody", {"spec": {"pytorchReplicaSpecs": {"Worker": {"replicas": plan["servers"][3]}}}}
        )
    ]
    assert reasons(decision) == ["Rescaled"]


def test_pause_deletes_and_resume_recreates() -> None:
    cluster = run_to_slot2()
    plan = cluster.resource["status"]["plan"]
    plan["servers"][3] = plan["after"][3] = 0
    plan["servers"][4] = plan["after"][4] = 1
    plan["endSlot"] = 5.0  # the forged plan's last server stops at the end of slot 4
    paused = cluster.step(T0 + 3 * HOUR + 5, snapshot=carbon(T0 + 2 * HOUR + 5))
    assert paused.operations == [DeleteChild("nbody")]
    assert reasons(paused) == ["Paused"]
    cluster.gone()
    idle = cluster.step(T0 + 3 * HOUR + 30, snapshot=carbon(T0 + 2 * HOUR + 5))
    assert idle.operations == [] and idle.status["phase"] == "Paused"
    assert conditions(idle.status)["Paused"] == "True"
    assert conditions(idle.status)["Running"] == "False"
    resumed = cluster.step(T0 + 4 * HOUR + 5, snapshot=carbon(T0 + 2 * HOUR + 5))
    assert isinstance(resumed.operations[0], CreateChild)
    assert reasons(resumed) == ["Resumed"]
    assert cluster.workers() == 1
    assert resumed.status["rescales"] == 2  # the pause and the resume


def test_pytorch_suspend_mode_pauses_without_deleting() -> None:
    cluster = Cluster(PYTORCH, pytorch_resource(pauseMode="Suspend"))
    cluster.step(T0 + 1)
    cluster.step(T0 + 2 * HOUR + 5)
    plan = cluster.resource["status"]["plan"]
    plan["servers"][3] = plan["after"][3] = 0
    plan["servers"][4] = plan["after"][4] = 2
    plan["endSlot"] = 5.0
    paused = cluster.step(T0 + 3 * HOUR + 5, snapshot=carbon(T0 + 2 * HOUR + 5))
    assert paused.operations == [PatchChild("nbody", {"spec": {"runPolicy": {"suspend": True}}})]
    resumed = cluster.step(T0 + 4 * HOUR + 5, snapshot=carbon(T0 + 2 * HOUR + 5))
    assert resumed.operations == [
        PatchChild(
            "nbody",
            {
                "spec": {
                    "pytorchReplicaSpecs": {"Worker": {"replicas": 2}},
                    "runPolicy": {"suspend": False},
                }
            },
        )
    ]


def test_progress_behind_at_a_boundary_replans() -> None:
    cluster = run_to_slot2()  # 4 workers in slot 2: the plan promises all 4 units by slot 3
    cluster.resource["carbonScalerSpec"]["progress"] = 5.0  # far behind the plan
    decision = cluster.step(T0 + 3 * HOUR + 5)
    assert reasons(decision) == ["Replanned"]
    assert decision.status["progressSource"] == "reported"
    assert decision.status["replans"] == 1
    (event,) = decision.events
    assert event.message == "slot 3 (behind; 5.0 % done): workers per slot from slot 3: 4×4 0"
    # 0.2 units done for 4 the profile promised: the rate (bounded at 0.25) stretches the
    # remaining 3.8 units to 15.2 units of the profile's, four slots at 4 workers.
    plan = decision.status["plan"]
    assert plan["servers"] == [0, 0, 4, 4, 4, 4, 4, 0]
    assert plan["madeAtSlot"] == 3
    assert plan["plannedDone"][3] == pytest.approx(0.2)
    assert decision.operations == [] and decision.status["desiredReplicas"] == 4


def test_estimated_progress_follows_the_plan_and_never_replans() -> None:
    cluster = run_to_slot2()  # no progress reports: the estimate follows the plan
    plan = cluster.resource["status"]["plan"]
    decision = cluster.step(T0 + 3 * HOUR + 5)
    assert "Replanned" not in reasons(decision)
    assert decision.status["progressSource"] == "estimated"
    assert decision.status["plan"] == plan


def test_out_of_reach_runs_at_the_top_level_and_warns() -> None:
    cluster = run_to_slot2()
    cluster.resource["carbonScalerSpec"]["progress"] = 5.0
    # The operator was away for four slots; 0.2 of 4 units done, two slots left.
    decision = cluster.step(T0 + 6 * HOUR + 5)
    assert reasons(decision) == ["Behind", "Replanned"]
    behind, replanned = decision.events
    assert behind.type == "Warning"
    assert behind.message == (
        "slot 6: the deadline is out of reach at the planned pace (5.0 % done); running at 4 "
        "workers until done"
    )
    assert replanned.message.startswith("slot 6 (behind, out-of-reach; 5.0 % done)")
    assert decision.status["plan"]["servers"][6:] == [4, 4]
    assert decision.status["desiredReplicas"] == 4 and decision.operations == []


def test_a_carbon_update_mid_slot_is_used_at_the_next_boundary() -> None:
    cluster = Cluster(MPI, mpi_resource())
    planned = cluster.step(T0 + 1).status["plan"]
    assert planned["servers"] == [0, 0, 4, 0, 0, 0, 0, 0]
    # A new forecast half-way through slot 0: slot 5 became the clean one.
    news = (500.0, 480.0, 600.0, 610.0, 520.0, 50.0, 60.0, 540.0)
    mid = cluster.step(T0 + 1800, snapshot=carbon(T0 + 1800, news))
    assert mid.events == [] and mid.operations == []
    assert mid.status["plan"] == planned  # no re-plan between boundaries
    boundary = cluster.step(T0 + HOUR + 5, snapshot=carbon(T0 + HOUR + 5, news))
    assert reasons(boundary) == ["Replanned"]
    assert boundary.events[0].message == (
        "slot 1 (forecast; 0.0 % done): workers per slot from slot 1: 0×4 4 0×2"
    )
    plan = boundary.status["plan"]
    assert plan["servers"] == [0, 0, 0, 0, 0, 4, 0, 0]
    assert plan["forecast"][1:] == list(news[1:]) and plan["madeAtSlot"] == 1
    assert boundary.status["replans"] == 1
    again = cluster.step(T0 + HOUR + 600, snapshot=carbon(T0 + HOUR + 5, news))
    assert again.events == [] and again.status["plan"] == plan


def test_no_carbon_data_plans_flat_and_replans_at_the_next_boundary_with_data() -> None:
    cluster = Cluster(MPI, mpi_resource(lengthHours=8))
    obs = Observation(MPI, copy.deepcopy(cluster.resource), T0 + 1, profile=PROFILE)
    first = reconcile(obs)
    assert first.status["degraded"] is True
    assert first.status["plan"]["servers"] == [4, 4, 0, 0, 0, 0, 0, 0]  # earliest slots first
    assert first.events[0].message.endswith("(no carbon data yet: planned on a flat forecast)")
    cluster.resource["status"] = first.status
    (create,) = first.operations
    assert isinstance(create, CreateChild)
    cluster.child = copy.deepcopy(create.body)
    # Data arrive mid-slot: the plan stands until the boundary.
    mid = cluster.step(T0 + 60)
    assert "Replanned" not in reasons(mid) and mid.status["degraded"] is True
    # Slot 1: the estimate follows the plan, so only the forecast can re-plan, and it changed.
    later = cluster.step(T0 + HOUR + 5)
    assert reasons(later) == ["Replanned", "Paused"]  # the rest goes to clean slot 2
    assert later.events[0].message == (
        "slot 1 (forecast; 50.1 % done): workers per slot from slot 1: 0 4 0×5"
    )
    assert later.status["plan"]["servers"] == [4, 0, 4, 0, 0, 0, 0, 0]
    assert later.status["degraded"] is False


def test_a_job_done_by_the_estimate_is_not_replanned_and_keeps_running() -> None:
    cluster = Cluster(MPI, mpi_resource())
    flat = (100.0,) * 8
    cluster.step(T0 + 1, snapshot=carbon(T0 + 1, flat))  # 4 workers in slot 0: all the work
    # Slot 1, a changed forecast: the plan's work is done by the estimate, not the job's.
    news = (100.0, 300.0, 50.0, 100.0, 100.0, 100.0, 100.0, 100.0)
    decision = cluster.step(T0 + HOUR + 5, snapshot=carbon(T0 + HOUR + 5, news))
    assert reasons(decision) == ["Overrun"]
    assert decision.status["progress"] == 99.0 and decision.operations == []
    assert decision.status["desiredReplicas"] == 4


def test_accounting_uses_profile_power_and_is_written_at_most_every_minute() -> None:
    flat = (200.0,) * 8
    cluster = Cluster(MPI, mpi_resource())
    cluster.step(T0 + 1, snapshot=carbon(T0 + 1, flat))
    workers = cluster.workers()
    quiet = cluster.step(T0 + 11, snapshot=carbon(T0 + 1, flat))
    assert quiet.status_patch == {} and quiet.operations == []
    later = cluster.step(T0 + 1 + 2 * ACCOUNTING_WRITE_S, snapshot=carbon(T0 + 1, flat))
    hours = 2 * ACCOUNTING_WRITE_S / HOUR
    energy = 60.0 * workers * hours / 1000.0
    assert later.status["energyKWh"] == pytest.approx(energy)
    assert later.status["emissionsG"] == pytest.approx(energy * 200.0)
    assert later.status["powerSource"] == "estimated:profile"
    assert set(later.status_patch) <= {
        "accountedUntil", "emissionsG", "energyKWh", "nominalWork", "workDone", "progress",
        "revision", "powerSource",
    }  # fmt: skip


def test_accounting_splits_at_slot_edges_at_each_slots_intensity() -> None:
    cluster = run_to_slot2()  # 4 workers (240 W) from T0 + 2 h + 5 s; slot 2 seen at 100
    assert cluster.resource["status"]["carbonBySlot"] == {"0": 500.0, "1": 480.0, "2": 100.0}
    # The next pass comes 600 s into slot 3 with slot 3's snapshot (110).
    decision = cluster.step(T0 + 3 * HOUR + 600)
    in_slot2, in_slot3 = (HOUR - 5) / HOUR, 600 / HOUR
    assert decision.status["energyKWh"] == pytest.approx(0.24 * (in_slot2 + in_slot3))
    assert decision.status["emissionsG"] == pytest.approx(
        0.24 * (in_slot2 * 100.0 + in_slot3 * 110.0)
    )
    assert decision.status["nominalWork"] == pytest.approx(4.0 * (in_slot2 + in_slot3))
    assert decision.status["carbonBySlot"]["3"] == 110.0


def test_accounting_falls_back_to_the_plans_forecast_for_unseen_slots() -> None:
    cluster = run_to_slot2()
    # No pass in slots 3 and 4 (the operator was down); slot 5 seen at 510.
    decision = cluster.step(T0 + 5 * HOUR)
    status = decision.status
    assert status["carbonBySlot"] == {"0": 500.0, "1": 480.0, "2": 100.0, "5": 510.0}
    plan_forecast = status["plan"]["forecast"]  # 110 and 520 for slots 3 and 4
    expected = 0.24 * ((HOUR - 5) / HOUR * 100.0 + plan_forecast[3] + plan_forecast[4])
    assert status["emissionsG"] == pytest.approx(expected)


def test_a_stale_snapshot_records_its_forecast_for_the_slot() -> None:
    cluster = run_to_slot2()
    stale = CarbonSnapshot(100.0, (100.0, 111.0, 520.0), T0 + 2 * HOUR + 5)
    decision = cluster.step(T0 + 3 * HOUR + 5, snapshot=stale)
    assert decision.status["carbonBySlot"]["3"] == 111.0


def test_a_spec_edit_mid_run_replans_the_remaining_work_from_the_current_slot() -> None:
    cluster = run_to_slot2()
    cluster.resource["carbonScalerSpec"]["progress"] = 50.0
    cluster.resource["carbonScalerSpec"]["deadline"] = 7
    decision = cluster.step(T0 + 3 * HOUR + 5)
    assert reasons(decision) == ["Planned"]
    assert decision.events[0].message == (
        "carbonscaler: workers per slot from slot 3: 4 0×3; deadline 2023-11-15T05:13:20Z"
    )
    plan = decision.status["plan"]
    # Slots 0-2 as they were. The job reported 2 units done after 4 workers ran slot 2 (the
    # profile promised 4): at the speed it showed, the 2 units left take 4 profile units —
    # 4 workers through slot 3, the cleanest left (110).
    assert plan["servers"] == [0, 0, 4, 4, 0, 0, 0]
    assert plan["madeAtSlot"] == 3 and plan["plannedDone"][3:5] == pytest.approx([2.0, 4.0])
    assert plan["endSlot"] == pytest.approx(4.0)
    assert decision.status["replans"] == 1
    assert decision.status["desiredReplicas"] == 4
    assert decision.operations == []  # 4 already run: nothing to relaunch


def test_every_status_field_is_declared_in_the_crd() -> None:
    """A structural schema prunes undeclared fields: everything written must be declared."""
    from carbonscaler.kube.crd import crd_manifest

    schema = crd_manifest(MPI)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    status_schema = schema["properties"]["status"]

    def undeclared(value: Any, node: dict[str, Any], path: str) -> list[str]:
        if isinstance(value, dict):
            if node.get("x-kubernetes-preserve-unknown-fields"):
                return []
            if "additionalProperties" in node:
                extra = node["additionalProperties"]
                return [p for k, v in value.items() for p in undeclared(v, extra, f"{path}.{k}")]
            props = node.get("properties", {})
            missing = [f"{path}.{k}" for k in value if k not in props]
            return missing + [
                p for k, v in value.items() if k in props
                for p in undeclared(v, props[k], f"{path}.{k}")
            ]  # fmt: skip
        if isinstance(value, list) and "items" in node:
            return [p for v in value for p in undeclared(v, node["items"], f"{path}[]")]
        return []

    cluster = run_to_slot2()
    cluster.resource["carbonScalerSpec"]["progress"] = 5.0
    status = cluster.step(T0 + 6 * HOUR + 5).status
    assert undeclared(status, status_schema, "status") == []
    # And what the suspension and the carbon pace write.
    suspended = Cluster(PYTORCH, pytorch_resource(pauseMode="Suspend"))
    suspended.step(T0 + 1)
    suspended.step(T0 + 2 * HOUR + 5)
    plan = suspended.resource["status"]["plan"]
    plan["servers"][3] = plan["after"][3] = 0
    plan["servers"][4] = plan["after"][4] = 2
    plan["endSlot"] = 5.0
    status = suspended.step(T0 + 3 * HOUR + 5, snapshot=carbon(T0 + 2 * HOUR + 5)).status
    assert status["child"]["suspended"] and status["child"]["suspendedAt"]
    paced = suspended.step(T0 + 3 * HOUR + 9, snapshot=paced_carbon(T0 + 3 * HOUR, 60.0))
    assert paced.status["carbonPaceMismatch"]
    assert undeclared(paced.status, status_schema, "status") == []


def test_operator_restart_continues_from_the_status_alone() -> None:
    cluster = run_to_slot2()
    before = copy.deepcopy(cluster.resource)
    # A new operator: nothing in memory, the same resource and Kubeflow job.
    again = reconcile(
        Observation(MPI, before, T0 + 2 * HOUR + 15, child=cluster.state(), carbon=None)
    )
    assert again.operations == [] and again.events == []
    assert again.status["plan"] == before["status"]["plan"]


def test_finish_marks_succeeded_and_stops_acting() -> None:
    cluster = run_to_slot2()
    assert cluster.child is not None
    cluster.child["status"] = {"conditions": [{"type": "Succeeded", "status": "True"}]}
    cluster.resource["carbonScalerSpec"]["progress"] = 100
    done = cluster.step(T0 + 3 * HOUR + 100)
    assert done.operations == [] and reasons(done) == ["Succeeded"]
    assert done.status["phase"] == "Succeeded" and done.status["progress"] == 100.0
    assert conditions(done.status)["Succeeded"] == "True"
    assert "completionTime" in done.status and "nextChange" not in done.status
    after = cluster.step(T0 + 5 * HOUR)
    assert after.operations == [] and after.events == [] and after.status_patch == {}


def test_exit_zero_below_done_is_an_interruption() -> None:
    cluster = run_to_slot2()
    assert cluster.child is not None
    cluster.child["status"] = {"conditions": [{"type": "Succeeded", "status": "True"}]}
    cluster.resource["carbonScalerSpec"]["progress"] = 40
    decision = cluster.step(T0 + 2 * HOUR + 600)
    assert decision.operations == [DeleteChild("nbody")]
    assert reasons(decision) == ["Interrupted"]


def test_failed_job_is_relaunched_then_given_up() -> None:
    cluster = run_to_slot2()
    for attempt in range(1, 5):
        assert cluster.child is not None
        cluster.child["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
        decision = cluster.step(T0 + 2 * HOUR + 60 * attempt)
        if attempt <= 3:
            assert decision.operations == [DeleteChild("nbody")]
            assert reasons(decision) == ["Relaunching"]
            cluster.gone()
            relaunch = cluster.step(T0 + 2 * HOUR + 60 * attempt + 30)
            assert isinstance(relaunch.operations[0], CreateChild)
        else:
            assert decision.operations == []
            assert reasons(decision) == ["JobFailed"]
            assert decision.status["phase"] == "Failed"


def test_past_the_deadline_runs_flat_out_and_warns_once() -> None:
    cluster = Cluster(MPI, mpi_resource(deadline=2, lengthHours=1))
    cluster.step(T0 + 1)
    late = cluster.step(T0 + 2 * HOUR + 5, snapshot=CarbonSnapshot(500.0, (500.0,), T0 + 2 * HOUR))
    assert reasons(late) == ["DeadlineMissed", "Started"]
    assert late.events[0].message == (
        "the deadline (2023-11-15T00:13:20Z) passed at 0.0 %; running at 4 workers until done"
    )
    assert late.status["desiredReplicas"] == 4
    assert "nextChange" not in late.status
    again = cluster.step(
        T0 + 2 * HOUR + 15, snapshot=CarbonSnapshot(500.0, (500.0,), T0 + 2 * HOUR)
    )
    assert "DeadlineMissed" not in reasons(again)


def test_reference_fixed_policy_runs_at_min_replicas_from_arrival() -> None:
    cluster = Cluster(MPI, mpi_resource(policy="fixed"))
    decision = cluster.step(T0 + 1)
    assert decision.status["plan"]["servers"][:4] == [1, 1, 1, 1]
    assert decision.status["plan"]["policy"] == "agnostic"
    assert cluster.workers() == 1


def test_snapshot_ahead_shifts_an_old_forecast_and_holds_its_last_value() -> None:
    snap = CarbonSnapshot(10.0, (10.0, 20.0, 30.0), T0 + 1800)
    assert snap.ahead(T0 + 1810, T0, 3600, 5).tolist() == [10.0, 20.0, 30.0, 30.0, 30.0]
    assert snap.ahead(T0 + HOUR + 1, T0, 3600, 2).tolist() == [20.0, 30.0]
    assert np.array_equal(CarbonSnapshot(7.0, (), T0).ahead(T0, T0, 3600, 2), [7.0, 7.0])


def test_a_job_slower_than_its_profile_keeps_running_past_its_plan() -> None:
    cluster = run_to_slot2()  # the plan puts all the work in slot 2
    plan = cluster.resource["status"]["plan"]
    assert not any(plan["servers"][3:])
    decision = cluster.step(T0 + 3 * HOUR + 5)  # not done yet (no Succeeded condition)
    assert decision.operations == []
    assert reasons(decision) == ["Overrun"]
    assert decision.status["desiredReplicas"] == cluster.workers()
    again = cluster.step(T0 + 3 * HOUR + 600)
    assert again.events == [] and again.operations == []


# -- the reference's own jobs: sized by BODIES × ITERATIONS ----------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "deploy" / "examples"


def reference_job() -> tuple[dict[str, Any], ScalingProfile]:
    """deploy/examples/nbody-reference.yaml as the API server stores it, and its profile."""
    doc = yaml.safe_load((EXAMPLES / "nbody-reference.yaml").read_text(encoding="utf-8"))
    doc["metadata"].update(
        namespace="default", uid="uid-ref", creationTimestamp="2023-11-14T22:13:20Z"
    )
    name = doc["carbonScalerSpec"]["profileName"]
    for cm in yaml.safe_load_all((EXAMPLES / "profiles.yaml").read_text(encoding="utf-8")):
        if cm["metadata"]["name"] == name:
            rows = [line.split(",") for line in cm["data"]["profile.csv"].split()[1:]]
            assert [int(r[0]) for r in rows] == list(range(len(rows)))  # 0, 1, ..., M
            columns = np.asarray(rows, dtype=np.float64).T
            return doc, ScalingProfile(columns[1], columns[2], name=name)
    raise AssertionError(f"no profile ConfigMap {name}")


def test_a_reference_job_is_sized_by_bodies_times_iterations_and_runs_carbon_scaled() -> None:
    resource, profile = reference_job()
    cs = resource["carbonScalerSpec"]
    assert set(cs) == {"minReplicas", "maxReplicas", "deadline", "progress", "profileName"}
    settings = Settings.from_resource(MPI, resource)
    assert settings.work == 20000 * 3000 and settings.length_hours is None
    assert settings.deadline_slots == 12 and settings.slot_seconds == 3600

    cluster = Cluster(MPI, resource, profile)
    # Dirty for two slots, clean for two, dirty after: a carbon-scaled plan, not a flat one.
    values = (500.0, 480.0, 100.0, 110.0, 90.0, 120.0, 520.0, 510.0) + (530.0,) * 4
    first = cluster.step(T0 + 1, snapshot=carbon(T0 + 1, values))
    assert reasons(first) == ["Planned"]
    assert "work 6e+07: BODIES × ITERATIONS = 20000 × 3000" in first.events[0].message
    status = first.status
    assert status["workRequired"] == pytest.approx(6e7)
    servers = status["plan"]["servers"]
    assert servers[:2] == [0, 0] and len(servers) == 12
    assert max(servers) > 1  # scaled up in the clean slots
    assert sum(profile.throughput[k] for k in servers) >= 6e7  # covers the work
    assert status["phase"] == "Pending"

    start = 2 + next(i for i, k in enumerate(servers[2:]) if k > 0)
    decision = cluster.step(T0 + start * HOUR + 5, snapshot=carbon(T0 + start * HOUR + 5, values))
    assert "Started" in reasons(decision)
    (op,) = decision.operations
    assert isinstance(op, CreateChild)
    launcher = op.body["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in launcher["env"]}
    workers = cluster.workers()
    assert workers == servers[start] and env["WORKERS"] == str(workers)
    assert env["BODIES"] == "20000" and env["ITERATIONS"] == "3000"
    assert decision.status["phase"] == "Running"
    assert decision.status["replicas"] == workers


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ([], "the job has no size"),
        ([{"name": "BODIES", "value": "20000"}], "sets BODIES but not ITERATIONS"),
        (
            [{"name": "BODIES", "value": "20000"}, {"name": "ITERATIONS", "value": "many"}],
            "env ITERATIONS is 'many', not a positive number",
        ),
        (
            [
                {"name": "BODIES", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "b"}}},
                {"name": "ITERATIONS", "value": "10"},
            ],
            "env BODIES is None",
        ),
    ],
)
def test_a_job_without_a_size_fails_saying_what_to_add(
    env: list[dict[str, Any]], expected: str
) -> None:
    resource, profile = reference_job()
    launcher = resource["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
    launcher["containers"][0]["env"] = env
    decision = Cluster(MPI, resource, profile).step(T0 + 1)
    status = decision.status
    assert decision.operations == []
    assert status["phase"] == "Failed" and conditions(status)["Failed"] == "True"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec"
    for text in (expected, "carbonScalerSpec.lengthHours", "carbonScalerSpec.work"):
        assert text in status["message"] and text in failed["message"]
    assert "BODIES and ITERATIONS in the env of spec.mpiReplicaSpecs.Launcher" in status["message"]
    (event,) = decision.events
    assert event.type == "Warning" and event.message == status["message"]
    # Adding the size (here lengthHours) is an edit of the spec: the job is retried.
    cluster = Cluster(MPI, resource, profile)
    cluster.step(T0 + 1)
    cluster.resource["carbonScalerSpec"]["lengthHours"] = 6
    assert "Planned" in reasons(cluster.step(T0 + 30))


def test_a_pytorch_job_is_sized_from_its_workers_env() -> None:
    resource = pytorch_resource()
    del resource["carbonScalerSpec"]["lengthHours"]
    worker = resource["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    worker["containers"][0]["env"] = [
        {"name": "BODIES", "value": "2"},
        {"name": "ITERATIONS", "value": "2"},
    ]
    settings = Settings.from_resource(PYTORCH, resource)
    assert settings.work == 4.0
    assert settings.work_source is not None and "pytorchReplicaSpecs.Worker" in settings.work_source
    decision = Cluster(PYTORCH, resource).step(T0 + 1)
    assert decision.status["workRequired"] == pytest.approx(4.0)
    del worker["containers"][0]["env"]
    with pytest.raises(SettingsError, match=r"env of spec\.pytorchReplicaSpecs\.Worker"):
        Settings.from_resource(PYTORCH, resource)


def test_env_sizing_in_other_units_than_the_profiles_says_so_when_infeasible() -> None:
    resource, _ = reference_job()
    decision = Cluster(MPI, resource, PROFILE).step(T0 + 1)  # a profile in job-hours per hour
    assert decision.status["phase"] == "Failed"
    message = decision.status["message"]
    assert "BODIES × ITERATIONS" in message and "else set lengthHours" in message


def test_explicit_sizes_still_win_over_the_env() -> None:
    resource, _ = reference_job()
    resource["carbonScalerSpec"]["lengthHours"] = 2
    settings = Settings.from_resource(MPI, resource)
    assert settings.length_hours == 2 and settings.work is None and settings.work_source is None


# -- what the API server answered, fed back as observations ------------------------------------


def test_a_child_refused_for_good_fails_the_job_with_the_servers_message() -> None:
    cluster = Cluster(MPI, mpi_resource())
    cluster.step(T0 + 1)
    error = ChildError("CreateChild", 422, 'MPIJob.kubeflow.org "nbody" is invalid: spec.x')
    decision = cluster.step(T0 + 2 * HOUR + 5, child_error=error)
    assert decision.operations == []  # nothing to stop: it was never created
    assert reasons(decision) == ["ChildRejected"]
    (event,) = decision.events
    assert event.type == "Warning"
    assert event.message == (
        "the API server refused to create MPIJob nbody (HTTP 422): MPIJob.kubeflow.org "
        '"nbody" is invalid: spec.x; fix the job\'s spec (editing it retries)'
    )
    assert decision.status["phase"] == "Failed"
    assert conditions(decision.status)["Failed"] == "True"
    # The same spec stays failed without another word; an edit retries.
    assert cluster.step(T0 + 2 * HOUR + 15).events == []
    cluster.resource["carbonScalerSpec"]["maxReplicas"] = 3
    retried = cluster.step(T0 + 2 * HOUR + 25)
    assert isinstance(retried.operations[-1], CreateChild)
    assert retried.status["phase"] == "Running"


def test_a_refused_patch_stops_the_running_child() -> None:
    cluster = run_to_slot2()
    error = ChildError("PatchChild", 403, 'admission webhook "x" denied the request: no')
    decision = cluster.step(T0 + 2 * HOUR + 15, child_error=error)
    assert decision.operations == [DeleteChild("nbody")]
    assert reasons(decision) == ["ChildRejected", "Stopped"]
    assert "refused to change MPIJob nbody (HTTP 403)" in decision.events[0].message


def test_reported_progress_in_the_progress_configmap_counts() -> None:
    cluster = run_to_slot2()
    decision = cluster.step(T0 + 2 * HOUR + 70, reported_progress=30.0)
    assert decision.status["progressSource"] == "reported"
    assert decision.status["progress"] == 30.0
    # The larger of the ConfigMap's and carbonScalerSpec.progress counts.
    cluster.resource["carbonScalerSpec"]["progress"] = 40.0
    later = cluster.step(T0 + 2 * HOUR + 140, reported_progress=35.0)
    assert later.status["progress"] == 40.0


def paced_carbon(at: float, slot_seconds: float) -> CarbonSnapshot:
    snapshot = carbon(at)
    return CarbonSnapshot(
        snapshot.intensity, snapshot.forecast, at, source="test", slot_seconds=slot_seconds
    )


def test_carbon_data_at_another_pace_than_the_jobs_slots_is_refused() -> None:
    """The carbon source advances one forecast entry every 60 s, the job plans in hours: a new
    job waits (Pending, one Warning) instead of planning on a compressed trace; once the pace
    agrees it plans."""
    cluster = Cluster(MPI, mpi_resource())
    waiting = cluster.step(T0 + 1, snapshot=paced_carbon(T0 + 1, 60.0))
    assert waiting.operations == [] and "plan" not in waiting.status
    assert reasons(waiting) == ["CarbonPaceMismatch"]
    assert waiting.status["phase"] == "Pending"
    assert "set slotSeconds: 60" in waiting.events[0].message
    assert conditions(waiting.status)["Created"] == "False"
    again = cluster.step(T0 + 11, snapshot=paced_carbon(T0 + 11, 60.0))
    assert again.events == [] and again.status_patch == {}
    planned = cluster.step(T0 + 21, snapshot=paced_carbon(T0 + 21, HOUR))
    assert reasons(planned) == ["Planned"] and "plan" in planned.status
    assert "carbonPaceMismatch" not in planned.status


def test_a_planned_job_keeps_its_plan_when_the_carbon_pace_changes() -> None:
    cluster = run_to_slot2()
    plan = copy.deepcopy(cluster.resource["status"]["plan"])
    dirty = CarbonSnapshot(900.0, (900.0,) * 8, T0 + 3 * HOUR + 5, slot_seconds=60.0)
    decision = cluster.step(T0 + 3 * HOUR + 5, snapshot=dirty)
    assert "CarbonPaceMismatch" in reasons(decision)
    assert "Replanned" not in reasons(decision)  # not on the foreign forecast
    assert decision.status["plan"] == plan
    assert decision.status["degraded"] is True
    assert cluster.step(T0 + 3 * HOUR + 15, snapshot=dirty).events == []  # said once


def test_an_mpi_suspend_mode_rescale_suspends_waits_and_resizes() -> None:
    cluster = Cluster(MPI, mpi_resource(pauseMode="Suspend"))
    cluster.step(T0 + 1)
    cluster.step(T0 + HOUR + 5)
    cluster.step(T0 + 2 * HOUR + 5)
    assert cluster.child is not None
    cluster.child["status"] = {"conditions": [{"type": "Running", "status": "True"}]}
    plan = cluster.resource["status"]["plan"]
    target = 2 if cluster.workers() != 2 else 3
    plan["servers"][3] = plan["after"][3] = target
    old = carbon(T0 + 2 * HOUR + 5)
    suspending = cluster.step(T0 + 3 * HOUR + 5, snapshot=old)
    assert suspending.operations == [
        PatchChild("nbody", {"spec": {"runPolicy": {"suspend": True}}})
    ]
    assert reasons(suspending) == ["Rescaling"]
    waiting = cluster.step(T0 + 3 * HOUR + 15, snapshot=old)  # still Running: wait
    assert waiting.operations == [] and waiting.status["phase"] == "Rescaling"
    cluster.child["status"] = {"conditions": [{"type": "Suspended", "status": "True"}]}
    resumed = cluster.step(T0 + 3 * HOUR + 25, snapshot=old)
    (op,) = resumed.operations
    assert isinstance(op, PatchChild)
    assert op.patch["spec"]["runPolicy"] == {"suspend": False}
    assert cluster.workers() == target
    launcher = cluster.child["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
    assert {"name": "WORKERS", "value": str(target)} in launcher["containers"][0]["env"]
    assert reasons(resumed) == ["Rescaled"] and resumed.status["rescales"] == 1


def test_a_suspension_the_training_operator_ignores_falls_back_to_deletion() -> None:
    """The field is kept but the job stays Running (a training operator that does not
    implement suspend for this kind): after SUSPEND_GRACE_S it is deleted instead, once."""
    cluster = Cluster(PYTORCH, pytorch_resource(pauseMode="Suspend"))
    cluster.step(T0 + 1)
    cluster.step(T0 + 2 * HOUR + 5)
    assert cluster.child is not None
    cluster.child["status"] = {"conditions": [{"type": "Running", "status": "True"}]}
    plan = cluster.resource["status"]["plan"]
    plan["servers"][3] = plan["after"][3] = 0
    plan["servers"][4] = plan["after"][4] = 2
    plan["endSlot"] = 5.0
    old = carbon(T0 + 2 * HOUR + 5)
    paused = cluster.step(T0 + 3 * HOUR + 5, snapshot=old)
    assert isinstance(paused.operations[0], PatchChild)
    early = cluster.step(T0 + 3 * HOUR + 5 + SUSPEND_GRACE_S - 1, snapshot=old)
    assert early.operations == []
    late = cluster.step(T0 + 3 * HOUR + 5 + SUSPEND_GRACE_S + 1, snapshot=old)
    assert late.operations == [DeleteChild("nbody")]
    assert reasons(late) == ["SuspendUnsupported"]
    assert late.status["child"]["suspendUnsupported"] is True
    assert late.status["rescales"] == 1  # the pause was counted once
