"""``carbonscaler plan --csv``: the plan slot by slot, and ``--max`` following the profile."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carbonscaler.cli import app
from carbonscaler.cli.plan import CSV_COLUMNS

runner = CliRunner()


def hourly_trace(path: Path, hours: int = 72) -> Path:
    """A plain trace with a daily cycle (clean at night), UTC timestamps."""
    rows = "".join(
        f"2022-01-{1 + h // 24:02d}T{h % 24:02d}:00Z,"
        f"{300 + 150 * math.cos(2 * math.pi * (h % 24) / 24):.3f}\n"
        for h in range(hours)
    )
    path.write_text("time,value\n" + rows)
    return path


def plan_args(trace: Path, *extra: str) -> list[str]:
    return [
        "plan",
        "--trace",
        str(trace),
        "--start",
        "2022-01-01T00:00Z",
        "--length",
        "10.5",
        "--deadline",
        "36",
        "--profile",
        "linear,power=100",
        "--max",
        "3",
        *extra,
    ]


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_file_matches_the_json_plan(tmp_path: Path) -> None:
    trace = hourly_trace(tmp_path / "trace.csv")
    out = tmp_path / "plan.csv"
    result = runner.invoke(app, plan_args(trace, "--json", "--csv", str(out)))
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    text = out.read_text()
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    rows = read_csv(text)
    assert [int(r["servers"]) for r in rows] == plan["servers"]
    assert [float(r["carbon_intensity_g_per_kwh"]) for r in rows] == pytest.approx(
        plan["carbon_intensity"]
    )
    assert sum(float(r["emissions_g"]) for r in rows) == pytest.approx(plan["emissions_g"])
    assert sum(float(r["energy_kwh"]) for r in rows) == pytest.approx(plan["energy_kwh"])
    assert sum(float(r["work"]) for r in rows) == pytest.approx(plan["work_done"])
    # Slot starts: ISO 8601 in UTC, one hour apart from the job's arrival.
    starts = [datetime.fromisoformat(r["start"]) for r in rows]
    assert starts[0] == datetime.fromisoformat("2022-01-01T00:00:00+00:00")
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(starts))
    assert all(r["start"].endswith("+00:00") for r in rows)
    assert [int(r["slot"]) for r in rows] == list(range(len(rows)))


def test_csv_row_energy_follows_servers_and_fraction(tmp_path: Path) -> None:
    # 10.5 h of work at one 100 W server: the plan ends part-way through a slot.
    trace = hourly_trace(tmp_path / "trace.csv")
    result = runner.invoke(app, plan_args(trace, "--csv", "-"))
    assert result.exit_code == 0, result.output
    rows = read_csv(result.stdout)
    fractions = [float(r["fraction"]) for r in rows]
    assert any(0 < f < 1 for f in fractions)
    for row, fraction in zip(rows, fractions, strict=True):
        servers, after = int(row["servers"]), int(row["servers_after"])
        if fraction == 1:
            assert after == servers
        watts = 100 * (servers * fraction + after * (1 - fraction))
        assert float(row["energy_kwh"]) == pytest.approx(watts / 1000)
        assert float(row["emissions_g"]) == pytest.approx(
            float(row["energy_kwh"]) * float(row["carbon_intensity_g_per_kwh"])
        )


def test_csv_to_stdout_replaces_the_table(tmp_path: Path) -> None:
    trace = hourly_trace(tmp_path / "trace.csv")
    result = runner.invoke(app, plan_args(trace, "--csv", "-"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("slot,start,servers,")
    assert "┃" not in result.stdout and "gCO2eq," not in result.stdout


def test_csv_file_beside_the_table(tmp_path: Path) -> None:
    trace = hourly_trace(tmp_path / "trace.csv")
    out = tmp_path / "plan.csv"
    result = runner.invoke(app, plan_args(trace, "--csv", str(out)))
    assert result.exit_code == 0, result.output
    assert "carbonscaler plan" in result.stdout and f"written to {out}" in result.stdout
    assert read_csv(out.read_text())


def test_csv_errors_come_before_any_work(tmp_path: Path) -> None:
    trace = hourly_trace(tmp_path / "trace.csv")
    missing = tmp_path / "no-such-folder" / "plan.csv"
    result = runner.invoke(app, plan_args(trace, "--csv", str(missing)))
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, plan_args(trace, "--csv", str(tmp_path)))
    assert result.exit_code == 2 and "is a folder" in result.output
    for other in ("--json", "--compare"):
        result = runner.invoke(app, plan_args(trace, "--csv", "-", other))
        assert result.exit_code == 2
        assert "--csv PATH" in result.output, result.output
    assert not list(tmp_path.glob(".plan.csv.*"))  # no temporary left behind


def test_max_defaults_to_the_profiles_largest_count(tmp_path: Path) -> None:
    trace = hourly_trace(tmp_path / "trace.csv")
    profile = tmp_path / "profile.csv"
    profile.write_text("nodes,throughput,power\n0,0,0\n1,10,50\n2,19,100\n3,27,150\n")
    args = [a for a in plan_args(trace, "--json") if a not in ("--max", "3")]
    args[args.index("linear,power=100")] = str(profile)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["max_servers"] == 3
    # A parametric shape without --max describes 1..8 servers.
    args[args.index(str(profile))] = "amdahl:0.05"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["max_servers"] == 8
    # An explicit --max above the profile is still refused, with the way out.
    args[args.index("amdahl:0.05")] = str(profile)
    result = runner.invoke(app, [*args, "--max", "4"])
    assert result.exit_code == 2 and "lower --max to 3" in result.output
