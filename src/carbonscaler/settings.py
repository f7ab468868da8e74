"""A job's carbon-aware settings: one model for the local job spec and the Kubernetes resources.

The same fields, with the same names, configure a job run by ``carbonscaler run`` (YAML, see
:mod:`carbonscaler.control.spec`) and a ``CarbonScalerMPIJob``/``CarbonScalerPyTorchJob``'s
``carbonScalerSpec`` (the CRD schema is generated from this model, see
:mod:`carbonscaler.kube.crd`). Names are the reference's camelCase (``minReplicas``,
``deadline``, ``profileName``, ``progress``) and ours in the same style (``lengthHours``,
``safetyMargin``, ...); the snake_case spelling of every field (``length_hours``) is accepted too,
so existing job files keep working.

The decision rules a job runs by (:class:`carbonscaler.decision.Rules`) come from here, so the
local controller, the operator and CarbonAdvisor read them the same way.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from carbonscaler.decision import Rules
from carbonscaler.planner.model import PlanningError
from carbonscaler.planner.policies import RUNNABLE_POLICY_NAMES, Policy

__all__ = ["RUNNABLE_POLICY_NAMES", "JobSettings", "cel_rules_for"]


def _assumed_overhead_s(seconds_per_slot: float) -> float:
    # A process start (interpreter, imports, checkpoint load) rarely takes less than half a
    # second; the paper measured 20-40 s per rescale, which 5 % of a short slot may undercut.
    return min(max(0.05 * seconds_per_slot, 0.5), 30.0)


_SIZES = "lengthHours (hours at minReplicas) or work (the profile's throughput units × hours)"


def cel_rules_for(*, size_required: bool) -> list[dict[str, str]]:
    """The CEL rules (``x-kubernetes-validations``) of a settings object: those across fields,
    the same as :meth:`JobSettings._consistent` checks.

    Args:
        size_required: whether exactly one of lengthHours/work must be given (local job
            specs), or at most one (Kubernetes resources, which may be sized from their env).
    """
    if size_required:
        size = {
            "rule": "has(self.lengthHours) != has(self.work)",
            "message": f"give exactly one of {_SIZES}",
        }
    else:
        size = {
            "rule": "!(has(self.lengthHours) && has(self.work))",
            "message": f"give at most one of {_SIZES}; with neither, the job is sized from "
            "BODIES × ITERATIONS in its launcher's (MPI) or worker's (PyTorch) env",
        }
    return [
        {
            "rule": "self.minReplicas <= self.maxReplicas",
            "message": "maxReplicas must be at least minReplicas",
        },
        size,
        {
            "rule": "[has(self.deadline), has(self.deadlineHours), has(self.slack)]"
            ".exists_one(x, x)",
            "message": "give exactly one of deadline (slots), deadlineHours, or slack "
            "(deadline = slack × lengthHours)",
        },
        {
            "rule": "!has(self.slack) || has(self.lengthHours)",
            "message": "slack needs lengthHours (the deadline is slack × lengthHours); or give "
            "deadline (slots) or deadlineHours",
        },
    ]


class JobSettings(BaseModel):
    """How a job is sized, bounded, given a deadline, planned and re-planned.

    Exactly one of ``lengthHours`` (hours at ``minReplicas``) or ``work`` sizes the job (at
    most one where :attr:`size_required` is false: the Kubernetes resources, which the operator
    may size from their workload's env); exactly one of ``deadline`` (slots, the reference's),
    ``deadlineHours`` or ``slack`` (deadline = slack × length) sets its deadline.
    """

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, alias_generator=to_camel, use_enum_values=False
    )
    # Whether the settings alone must size the job (lengthHours or work). A local job spec
    # must: nothing else says how big it is. A Kubernetes resource need not: with neither, the
    # operator sizes it from its workload's env as the reference did (BODIES × ITERATIONS).
    size_required: ClassVar[bool] = True
    # CEL rules the CRD carries for what one field's schema cannot say (kept in step with
    # :meth:`_consistent`, which checks the same); see :func:`cel_rules_for`.
    cel_rules: ClassVar[list[dict[str, str]]] = cel_rules_for(size_required=True)

    min_replicas: int = Field(1, ge=1, description="Fewest workers the job runs on (m).")
    max_replicas: int = Field(ge=1, description="Most workers the job may use (M).")
    profile: str = Field(
        "auto",
        alias="profileName",
        validation_alias=AliasChoices("profileName", "profile"),
        min_length=1,
        max_length=253,
        description="The scaling profile: locally a CSV (nodes,throughput,power), a "
        "parametric shape such as 'amdahl:0.05', or 'auto' (measure it); on Kubernetes the "
        "ConfigMap in the job's namespace that holds the CSV.",
    )
    length_hours: float | None = Field(
        None, gt=0, description="Job length: hours it takes at minReplicas."
    )
    work: float | None = Field(
        None, gt=0, description="Total work in the profile's units (throughput × hours)."
    )
    deadline: int | None = Field(
        None, ge=1, description="Completion deadline in slots from arrival (the reference's)."
    )
    deadline_hours: float | None = Field(
        None, gt=0, description="Completion deadline in hours from arrival."
    )
    slack: float | None = Field(
        None, ge=1, description="Deadline as a multiple of lengthHours (1.5 = 50 % slack)."
    )
    progress: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Percent done, raised by the job as it runs (the reference's field).",
    )
    policy: Policy = Field(
        Policy.CARBONSCALER,
        description="carbonscaler (the greedy), exact, suspend-resume or agnostic; the "
        "reference's scaler and fixed are accepted for carbonscaler and agnostic.",
        json_schema_extra={"enum": list(RUNNABLE_POLICY_NAMES)},
    )
    slot_seconds: int = Field(
        3600, ge=10, le=86400, description="Slot length (the reference: one hour)."
    )
    replan_threshold: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Re-plan when the forecast, or progress ahead of plan, drifts beyond this "
        "share.",
    )
    safety_margin: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Extra share of the remaining work each plan covers where the deadline "
        "leaves room, so a slower-than-profiled stretch does not cost the deadline.",
    )
    rescale_overhead_s: float | None = Field(
        None,
        ge=0,
        alias="rescaleOverheadSeconds",
        validation_alias=AliasChoices("rescaleOverheadSeconds", "rescale_overhead_s"),
        description="Seconds of work a rescale loses (checkpoint, stop, restart), which "
        "plans reserve until it is measured; default 5 % of a slot, at least 0.5 s and at "
        "most 30 s.",
    )

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("policy"), str):
            data = dict(data)
            try:
                data["policy"] = Policy.parse(data["policy"]).value
            except PlanningError:
                raise ValueError(
                    f"policy {data['policy']!r} is unknown; use one of "
                    f"{', '.join(RUNNABLE_POLICY_NAMES)}"
                ) from None
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"maxReplicas ({self.max_replicas}) is below minReplicas ({self.min_replicas})"
            )
        if not self.policy.runnable:
            raise ValueError(
                f"policy {self.policy} cannot run a job; use one of "
                f"{', '.join(RUNNABLE_POLICY_NAMES)}"
            )
        if self.length_hours is not None and self.work is not None:
            how_many = "exactly" if self.size_required else "at most"
            raise ValueError(f"give {how_many} one of {_SIZES}, not both")
        if self.size_required and self.length_hours is None and self.work is None:
            raise ValueError(f"give exactly one of {_SIZES}")
        deadlines = [x for x in (self.deadline_hours, self.slack, self.deadline) if x is not None]
        if len(deadlines) != 1:
            raise ValueError(
                "give exactly one of deadline (slots), deadlineHours, or slack (deadline = "
                "slack × lengthHours)"
            )
        if self.slack is not None and self.length_hours is None:
            raise ValueError("slack needs lengthHours (the deadline is slack × length)")
        return self

    @property
    def slot_hours(self) -> float:
        return self.slot_seconds / 3600.0

    @property
    def deadline_slots(self) -> int:
        """Slots from arrival to the deadline (whole slots)."""
        if self.deadline is not None:
            return self.deadline
        hours = self.deadline_hours
        if hours is None:
            assert self.slack is not None and self.length_hours is not None  # by validation
            hours = self.slack * self.length_hours
        return max(math.floor(hours / self.slot_hours + 1e-9), 1)

    @property
    def policy_name(self) -> str:
        """The policy's one name (the reference's ``fixed`` is ``agnostic``)."""
        return str(self.policy)

    def rules(self) -> Rules:
        """The decision rules this job runs by (policy, re-plan threshold, safety margin)."""
        return Rules(self.policy, self.replan_threshold, self.safety_margin)

    def overhead_s(self, seconds_per_slot: float | None = None) -> float:
        """Seconds of work a rescale loses until measured: stated, else assumed.

        Args:
            seconds_per_slot: clock seconds per slot (an accelerated local run's time
                scale); default the slot's real length.
        """
        if self.rescale_overhead_s is not None:
            return self.rescale_overhead_s
        return _assumed_overhead_s(seconds_per_slot or float(self.slot_seconds))
