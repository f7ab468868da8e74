"""`carbonscaler cluster run --simulate` and `carbonscaler advise-cluster` on real traces."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carbonscaler.cli import app
from carbonscaler.control.cluster_spec import generate_cluster_spec, load_jobs_csv
from carbonscaler.control.spec import SpecError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cluster" / "jobs.yaml"
runner = CliRunner()


@pytest.fixture
def de_trace(shared_dir: Path) -> list[str]:
    path = shared_dir / "traces" / "electricitymaps-fedstale" / "DE_2022_hourly.csv"
    return ["--trace", str(path)]


def test_cluster_run_simulates_the_example_online(de_trace: list[str]) -> None:
    args = ["cluster", "run", str(EXAMPLE), *de_trace, "--start", "2022-06-01T00:00Z"]
    result = runner.invoke(app, [*args, "--simulate", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["policy"] == "joint" and out["simulated"] is True
    assert out["deadline_misses"] == 0
    assert max(out["servers_used"]) <= 12 + 1e-9
    assert out["emissions_g"] < out["agnostic_emissions_g"]
    assert out["savings_vs_agnostic_pct"] == pytest.approx(
        100 * (1 - out["emissions_g"] / out["agnostic_emissions_g"])
    )
    names = [job["name"] for job in out["jobs"]]
    assert names[0] == "resnet18" and all(job["deadline_met"] for job in out["jobs"])
    table = runner.invoke(app, [*args, "--simulate", "--policy", "carbonscaler"])
    assert table.exit_code == 0, table.output
    assert "carbonscaler (simulated)" in table.stdout


def test_a_real_cluster_run_needs_each_jobs_file(de_trace: list[str], tmp_path: Path) -> None:
    state = ["--dir", str(tmp_path / "state")]
    result = runner.invoke(
        app,
        ["cluster", "run", str(EXAMPLE), *de_trace, "--start", "2022-06-01", *state],
    )
    assert result.exit_code == 2
    assert "needs its job file" in result.stderr and "add --simulate" in result.stderr
    assert "without one: resnet18, efficientnet" in " ".join(result.stderr.split())
    result = runner.invoke(
        app,
        ["cluster", "run", str(EXAMPLE), *de_trace, "--start", "2022-06-01", "--simulate", *state],
    )
    assert result.exit_code == 2 and "keeps no state" in result.stderr


def test_advise_cluster_compares_policies_on_a_generated_stream(de_trace: list[str]) -> None:
    args = [
        "advise-cluster",
        "--generate",
        "30",
        "--rate",
        "1.5",
        "--length",
        "2,10",
        "--max",
        "4",
        "--capacity",
        "10",
        *de_trace,
        "--start",
        "2022-03-01",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["jobs"] == 30 and out["capacity"] == 10
    policies = [row["policy"] for row in out["summary"]]
    assert sorted(policies) == ["agnostic", "carbonscaler", "joint", "suspend-resume"]
    joint = next(row for row in out["summary"] if row["policy"] == "joint")
    assert joint["deadline_misses"] == 0 and joint["savings_vs_agnostic_pct"] > 0
    # Deadline-meeting policies are ranked first.
    misses = [row["deadline_misses"] > 0 for row in out["summary"]]
    assert misses == sorted(misses)
    for outcome in out["policies"].values():
        assert max(outcome["servers_used"]) <= 10 + 1e-9
    # The same seed, the same stream and results.
    again = json.loads(runner.invoke(app, args).stdout)
    assert again["summary"] == out["summary"]


def test_advise_cluster_reads_a_jobs_csv(tmp_path: Path, de_trace: list[str]) -> None:
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(
        "name,arrival_hours,length_hours,profile,min,max,slack\n"
        "a,0,6,amdahl:0.05,1,4,1.5\n"
        "b,1,4,linear,1,2,2\n"
        "c,3,8,amdahl:0.1,1,4,1.5\n"
    )
    result = runner.invoke(
        app,
        ["advise-cluster", str(jobs), "--capacity", "4", *de_trace, "--start", "2022-01-10"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "3 jobs" in result.stdout and "joint" in result.stdout


def test_jobs_csv_and_generation_are_validated(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("name,arrival_hours,length_hours,profile,min,max,slack\nx,0,6,linear,3,2,1.5\n")
    with pytest.raises(SpecError, match=r"bad.csv: jobs.0 \(x\)"):
        load_jobs_csv(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("name,arrival_hours\n")
    with pytest.raises(SpecError, match="no jobs"):
        load_jobs_csv(empty)
    spec = generate_cluster_spec(
        5,
        rate_per_h=2,
        length_hours=(2, 6),
        slack=1.5,
        profiles=["linear"],
        min_servers=1,
        max_servers=2,
        seed=4,
    )
    arrivals = [job.arrival_hours for job in spec.jobs]
    assert arrivals[0] == 0.0 and arrivals == sorted(arrivals)
    assert all(2 <= job.length_hours <= 6 for job in spec.jobs if job.length_hours)
    with pytest.raises(SpecError, match="shortest <= longest"):
        generate_cluster_spec(
            2,
            rate_per_h=1,
            length_hours=(6, 2),
            slack=1.5,
            profiles=["linear"],
            min_servers=1,
            max_servers=2,
        )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give the jobs"),
        (["--generate", "3", "--length", "x"], "give LO,HI"),
        (["--generate", "3"], "no capacity"),
        (["--generate", "3", "--capacity", "4", "--policy", "static"], "unknown cluster policies"),
    ],
)
def test_advise_cluster_bad_input_is_one_clear_line(
    extra: list[str], message: str, de_trace: list[str]
) -> None:
    result = runner.invoke(app, ["advise-cluster", *extra, *de_trace])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_advise_cluster_writes_a_figure_and_a_report(tmp_path: Path, de_trace: list[str]) -> None:
    plot, report = tmp_path / "servers.png", tmp_path / "report.html"
    args = ["advise-cluster", "--generate", "12", "--length", "2,8", "--max", "4"]
    args += ["--capacity", "6", *de_trace, "--start", "2022-03-01"]
    result = runner.invoke(app, [*args, "--plot", str(plot), "--report", str(report)])
    assert result.exit_code == 0, result.output
    headline = result.stdout.splitlines()[0]
    assert headline.startswith(("Best policy that meets every deadline", "No policy meets"))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = report.read_text()
    assert html.escape(headline, quote=False) in page
    assert "<h1>CarbonAdvisor: a shared cluster</h1>" in page and "data:image/png;base64," in page
    assert "12 jobs on 6 servers per slot" in page
    for policy in ("agnostic", "suspend-resume", "carbonscaler", "joint"):
        assert f"<td>{policy}</td>" in page
    # An output that cannot be written fails before any simulation.
    bad = runner.invoke(app, [*args, "--report", str(tmp_path / "missing" / "r.html")])
    assert bad.exit_code == 2 and "--report" in bad.stderr


def test_the_cluster_headline_names_the_best_policy_and_the_misses() -> None:
    from carbonscaler.advisor.cluster import cluster_headline

    rows = [
        {"policy": "joint", "deadline_misses": 0, "savings_vs_agnostic_pct": 12.34},
        {"policy": "carbonscaler", "deadline_misses": 3, "savings_vs_agnostic_pct": 20.0},
    ]
    assert cluster_headline(rows, 10) == (
        "Best policy that meets every deadline: joint, which saved 12.3 % against "
        "carbon-agnostic. carbonscaler misses 3 of 10 deadlines."
    )
    assert cluster_headline(rows[1:], 10).startswith("No policy meets every deadline.")
