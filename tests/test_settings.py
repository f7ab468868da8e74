"""One settings model for the local job spec and the CRD's carbonScalerSpec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from pydantic import ValidationError

from carbonscaler.control.spec import JobSpec
from carbonscaler.kube.crd import KINDS, CarbonScalerSpec, crd_manifest
from carbonscaler.planner.policies import Policy
from carbonscaler.settings import JobSettings

CRD_SPEC = crd_manifest(KINDS["CarbonScalerMPIJob"])["spec"]["versions"][0]["schema"][
    "openAPIV3Schema"
]["properties"]["carbonScalerSpec"]
EXAMPLES = Path(__file__).resolve().parents[1] / "deploy" / "examples"


def local(tmp_path: Path, **over: Any) -> JobSpec:
    data: dict[str, Any] = {
        "name": "job",
        "workload": {"command": "true"},
        "profile": "amdahl:0.05",
        "maxReplicas": 4,
        "carbon": {"dataset_zone": "DE", "start": "2020-03-02T00:00Z"},
        "checkpoint_dir": str(tmp_path),
        **over,
    }
    return JobSpec.model_validate(data)


def test_the_job_spec_is_the_shared_settings_plus_how_to_run_here(tmp_path: Path) -> None:
    assert issubclass(JobSpec, JobSettings) and issubclass(CarbonScalerSpec, JobSettings)
    # camelCase (the CRD's) and snake_case (earlier job files) name the same fields.
    camel = local(tmp_path, lengthHours=24, slack=1.5, safetyMargin=0.1, slotSeconds=1800)
    snake = local(tmp_path, length_hours=24, slack=1.5, safety_margin=0.1, slot_seconds=1800)
    assert camel.model_dump() == snake.model_dump()
    assert camel.deadline_slots == 72 and camel.slot_hours == 0.5
    # Earlier spellings keep working.
    legacy = local(
        tmp_path,
        length_hours=24,
        slack=1.5,
        slot_minutes=30,
        workload={"command": "true", "restart_overhead_s": 12},
        policy="scaler",
    )
    assert legacy.slot_seconds == 1800 and legacy.slot_minutes == 30
    assert legacy.rescale_overhead_s == 12 and legacy.restart_overhead_s == 12
    assert legacy.policy is Policy.CARBONSCALER
    assert local(tmp_path, work=5, deadline=3, policy="fixed").rules().policy is Policy.AGNOSTIC


def test_the_rescale_overhead_assumed_until_measured(tmp_path: Path) -> None:
    hourly = local(tmp_path, work=5, deadline=3)
    assert hourly.restart_overhead_s == 30.0  # 5 % of an hour, capped at the paper's 30 s
    fast = local(tmp_path, work=5, deadline=3, time_scale_s=3)
    assert fast.restart_overhead_s == 0.5  # 5 % of a 3 s slot is less than a process start
    assert local(tmp_path, work=5, deadline=3, time_scale_s=200).restart_overhead_s == 10.0


def test_the_crd_schema_is_generated_from_the_model() -> None:
    props = CRD_SPEC["properties"]
    aliases = {f.alias or name for name, f in CarbonScalerSpec.model_fields.items()}
    assert set(props) == aliases
    assert set(CRD_SPEC["required"]) == {"maxReplicas", "profileName"}
    assert props["safetyMargin"] == {
        "default": 0.05,
        "description": CarbonScalerSpec.model_fields["safety_margin"].description,
        "maximum": 1,
        "exclusiveMaximum": True,
        "minimum": 0,
        "type": "number",
    }
    assert props["policy"]["enum"] == [
        "carbonscaler",
        "exact",
        "suspend-resume",
        "agnostic",
        "scaler",
        "fixed",
    ]
    text = repr(CRD_SPEC)
    assert "$ref" not in text and "anyOf" not in text and "title" not in text


def _with_defaults(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    for name, prop in schema["properties"].items():
        if name not in out and "default" in prop:
            out[name] = prop["default"]
    return out


def crd_accepts(doc: dict[str, Any]) -> bool:
    """What the API server would say: the structural schema (types, bounds, required; with
    defaults applied) and then the CEL rules, evaluated with cel-python."""
    import jsonschema

    schema = dict(CRD_SPEC)
    rules = schema.pop("x-kubernetes-validations")
    draft4 = {
        **schema,
        "properties": {
            k: {
                key: value
                for key, value in v.items()
                if key not in ("default", "description", "x-kubernetes-preserve-unknown-fields")
            }
            for k, v in schema["properties"].items()
        },
    }
    if not jsonschema.Draft4Validator(draft4).is_valid(doc):
        return False
    env = celpy.Environment()
    activation = {"self": celpy.json_to_cel(_with_defaults(schema, doc))}
    return all(bool(env.program(env.compile(r["rule"])).evaluate(activation)) for r in rules)


def model_accepts(doc: dict[str, Any]) -> bool:
    try:
        CarbonScalerSpec.model_validate(doc)
    except ValidationError:
        return False
    return True


BASE = {"minReplicas": 1, "maxReplicas": 4, "profileName": "nbody", "lengthHours": 24}


@pytest.mark.parametrize(
    "doc",
    [
        {**BASE, "deadline": 36},
        {**BASE, "slack": 1.5},
        {**BASE, "deadlineHours": 30.0},
        {**BASE, "deadline": 36, "slack": 1.5},  # two deadlines
        BASE,  # no deadline
        {**BASE, "deadline": 36, "work": 5.0},  # two sizes
        {**{k: v for k, v in BASE.items() if k != "lengthHours"}, "deadline": 3},  # no size
        {**BASE, "deadline": 36, "minReplicas": 5},
        {**BASE, "deadline": 36, "minReplicas": 0},
        {**BASE, "deadline": 36, "progress": 101},
        {**BASE, "deadline": 36, "policy": "fixed", "pauseMode": "Suspend"},
        {**BASE, "deadline": 36, "policy": "static"},
        {**BASE, "deadline": 36, "safetyMargin": 1.0},
        {**BASE, "deadline": 36, "slotSeconds": 5},
        {**{k: v for k, v in BASE.items() if k != "profileName"}, "deadline": 3},
    ],
)
def test_the_crd_and_the_model_accept_the_same_settings(doc: dict[str, Any]) -> None:
    assert crd_accepts(doc) == model_accepts(doc)


# -- the CEL rules, evaluated on valid and invalid objects -----------------------------------

# A CarbonScalerMPIJob written as the reference documents it: its five carbonScalerSpec fields,
# no lengthHours or work (the operator sizes it from BODIES × ITERATIONS in the launcher's env).
REFERENCE_JOB = yaml.safe_load((EXAMPLES / "nbody-reference.yaml").read_text(encoding="utf-8"))
REFERENCE = REFERENCE_JOB["carbonScalerSpec"]


def cel_failures(schema: dict[str, Any], value: Any, where: str = "") -> list[str]:
    """The messages of every CEL rule (``x-kubernetes-validations``) anywhere in ``schema``
    that ``value`` breaks, each evaluated with cel-python on ``self`` = the value at its node,
    defaults applied, as the API server does after structural validation."""
    failures: list[str] = []
    if not isinstance(value, dict):
        return failures
    properties = schema.get("properties", {})
    if properties:
        value = _with_defaults(schema, value)
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations", []):
        result = env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(value)})
        if not isinstance(result, celpy.celtypes.BoolType):
            raise AssertionError(f"{where}: rule {rule['rule']!r} gave {result!r}, not a bool")
        if not result:
            failures.append(rule["message"])
    for name, sub in properties.items():
        if name in value:
            failures += cel_failures(sub, value[name], f"{where}.{name}")
    return failures


def test_the_crds_cel_rules_are_where_the_settings_are() -> None:
    for kind in KINDS.values():
        schema = crd_manifest(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        spec = schema["properties"]["carbonScalerSpec"]
        assert spec["x-kubernetes-validations"] == CarbonScalerSpec.cel_rules
        env = celpy.Environment()
        for rule in spec["x-kubernetes-validations"]:
            env.compile(rule["rule"])  # every rule compiles


def test_a_reference_style_job_passes_the_crd_schema_and_the_cel_rules() -> None:
    import jsonschema

    assert set(REFERENCE) == {"minReplicas", "maxReplicas", "deadline", "progress", "profileName"}
    schema = crd_manifest(KINDS[REFERENCE_JOB["kind"]])["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]
    doc = {**REFERENCE_JOB, "metadata": {"name": "nbody-reference", "namespace": "default"}}
    assert sorted(e.message for e in jsonschema.Draft4Validator(schema).iter_errors(doc)) == []
    assert cel_failures(schema, doc) == []
    assert crd_accepts(REFERENCE) and model_accepts(REFERENCE)
    # The reference's own example (jobs/mpi_job.yaml: one node, a one-slot deadline) too.
    reference_example = {
        "minReplicas": 1,
        "maxReplicas": 1,
        "deadline": 1,
        "progress": 0,
        "profileName": "nbody100k",
    }
    assert crd_accepts(reference_example) and model_accepts(reference_example)


NO_SIZE = {k: v for k, v in REFERENCE.items() if k != "deadline"}


@pytest.mark.parametrize(
    ("doc", "broken"),
    [
        (REFERENCE, None),
        ({**REFERENCE, "lengthHours": 6}, None),
        ({**REFERENCE, "work": 6e7}, None),
        ({**NO_SIZE, "deadlineHours": 12.0}, None),
        ({**NO_SIZE, "lengthHours": 6, "slack": 2.0}, None),
        ({"maxReplicas": 2, "profileName": "p", "deadline": 3}, None),  # minReplicas defaults
        ({**REFERENCE, "lengthHours": 6, "work": 6e7}, "at most one of lengthHours"),
        ({**REFERENCE, "minReplicas": 3, "maxReplicas": 2}, "at least minReplicas"),
        ({"maxReplicas": 0, "profileName": "p", "deadline": 3}, "at least minReplicas"),
        (NO_SIZE, "exactly one of deadline"),
        ({**REFERENCE, "deadlineHours": 12.0}, "exactly one of deadline"),
        ({**NO_SIZE, "slack": 2.0}, "slack needs lengthHours"),
        ({**NO_SIZE, "work": 6e7, "slack": 2.0}, "slack needs lengthHours"),
    ],
)
def test_cel_rules_on_valid_and_invalid_objects(doc: dict[str, Any], broken: str | None) -> None:
    failures = cel_failures(CRD_SPEC, doc)
    if broken is None:
        assert failures == []
    else:
        assert any(broken in message for message in failures), failures
    # The model checks the same (the operator reads resources through it).
    assert model_accepts(doc) == (broken is None)


def test_only_the_resource_may_leave_the_size_to_its_env(tmp_path: Path) -> None:
    spec = CarbonScalerSpec.model_validate(REFERENCE)
    assert spec.length_hours is None and spec.work is None and spec.deadline_slots == 12
    with pytest.raises(ValidationError, match="at most one of lengthHours"):
        CarbonScalerSpec.model_validate({**REFERENCE, "lengthHours": 6, "work": 6e7})
    # A local job spec has nothing else to size it by: it still needs one of them.
    with pytest.raises(ValidationError, match="give exactly one of lengthHours"):
        local(tmp_path, deadline=12)
    with pytest.raises(ValidationError, match="give exactly one of lengthHours"):
        local(tmp_path, deadline=12, lengthHours=6, work=6.0)
    assert JobSpec.size_required and JobSettings.size_required
    assert not CarbonScalerSpec.size_required
    assert local(tmp_path, deadline=12, work=6.0).work == 6.0
