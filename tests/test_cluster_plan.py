"""The joint cluster planner (issue #12): many jobs under one capacity.

By hand on tiny instances; properties on random ones (the fast solver within 1 % of the exact
one on concave profiles, the independent plans when the capacity does not bind, capacity and
deadlines always kept); the error for a set that cannot fit; the cluster file and the
``cluster plan`` command.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from carbonscaler.cli.cluster import app as cluster_app
from carbonscaler.control.cluster_spec import load_cluster_spec
from carbonscaler.control.spec import SpecError
from carbonscaler.planner import PlanningError, plan
from carbonscaler.planner.cluster import (
    ClusterInfeasibleError,
    ClusterJob,
    ClusterPlan,
    overcommit,
    plan_cluster,
    plan_cluster_agnostic,
    plan_cluster_independent,
)
from carbonscaler.planner.model import Job
from carbonscaler.profile import (
    ScalingProfile,
    amdahl_profile,
    linear_profile,
    power_law_profile,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ONE = linear_profile(1)  # one server, 1 work unit per hour, 60 W


def rigid(name: str, hours: float, arrival: int, deadline: int, weight: float = 1.0) -> ClusterJob:
    """A job on exactly one server (60 W) for ``hours``."""
    return ClusterJob(name, Job.from_length(ONE, hours, 1, 1), arrival, deadline, weight)


def assert_sound(result: ClusterPlan, jobs: list[ClusterJob]) -> None:
    """Within the capacity, every job done by its deadline, inside its window, levels allowed."""
    assert np.all(result.servers_used <= result.capacity[: result.horizon])
    total = np.zeros(result.horizon, dtype=np.int64)
    for job, part in zip(jobs, result.jobs, strict=True):
        assert part.name == job.name
        assert part.deadline_met and part.schedule.completed
        servers = part.servers_on(result.horizon)
        assert not servers[: job.arrival_slot].any() and not servers[job.deadline_slot :].any()
        allowed = {0, *job.job.ladder().levels.tolist()}
        assert set(servers.tolist()) <= allowed
        total += servers
    assert total.tolist() == result.servers_used.tolist()


# ------------------------------------------------------------------------------------------
# By hand


def test_a_tight_job_gets_the_clean_slot_it_cannot_do_without() -> None:
    # One server. "wide" may run in slots 0-2, "tight" only in 0-1; slot 0 is the cleanest.
    carbon = np.array([10.0, 100.0, 20.0])
    jobs = [rigid("wide", 1, 0, 3), rigid("tight", 1, 0, 2)]
    for solver in ("fast", "exact"):
        result = plan_cluster(jobs, carbon, 1, solver=solver)  # type: ignore[arg-type]
        assert result.job("tight").servers_on(3).tolist() == [1, 0, 0]
        assert result.job("wide").servers_on(3).tolist() == [0, 0, 1]
        assert result.servers_used.tolist() == [1, 0, 1]
        assert result.emissions_g == pytest.approx((10 + 20) * 60 / 1000)
        assert result.job("wide").completion_hours == 3.0
        assert result.job("tight").completion_hours == 1.0
    # Alone, both would take slot 0: 2 servers where there is 1.
    alone = plan_cluster_independent(jobs, carbon, 1)
    assert alone.servers_used.tolist() == [2, 0, 0]
    assert alone.emissions_g == pytest.approx(2 * 10 * 60 / 1000)
    assert overcommit(alone).max_servers == 1
    assert overcommit(alone).server_hours == 1.0 and overcommit(alone).slots == 1
    # First come, first served at m: "wide" (listed first) runs in slot 0, "tight" waits.
    agnostic = plan_cluster_agnostic(jobs, carbon, 1)
    assert agnostic.job("wide").servers_on(3).tolist() == [1, 0, 0]
    assert agnostic.job("tight").servers_on(3).tolist() == [0, 1, 0]
    assert agnostic.emissions_g == pytest.approx((10 + 100) * 60 / 1000)


def test_concave_jobs_share_the_clean_slot_by_marginal_value() -> None:
    # Two identical jobs of 1..2 servers whose second server adds only half as much work:
    # in the clean slot each gets one server rather than one job getting both.
    profile = ScalingProfile(np.array([0.0, 1.0, 1.5]), np.array([0.0, 50.0, 100.0]))
    jobs = [ClusterJob(n, Job(profile, 2.0, 1, 2), 0, 2) for n in ("a", "b")]
    carbon = np.array([100.0, 400.0])
    for solver in ("fast", "exact"):
        result = plan_cluster(jobs, carbon, 2, solver=solver)  # type: ignore[arg-type]
        assert [j.servers_on(2).tolist() for j in result.jobs] == [[1, 1], [1, 1]]
        # 1 unit in each slot at 1 server, for 50 W: (100 + 400) · 50 / 1000 per job.
        assert result.emissions_g == pytest.approx(2 * 500 * 50 / 1000)


def test_the_completing_increment_is_prorated_and_holds_its_servers() -> None:
    # 2.5 units on one server: two full slots and half of a third; the cleanest two go whole.
    jobs = [rigid("a", 2.5, 0, 4)]
    carbon = np.array([300.0, 100.0, 200.0, 400.0])
    result = plan_cluster(jobs, carbon, 1)
    part = result.job("a")
    assert part.servers_on(4).tolist() == [1, 1, 1, 0]
    assert part.partial_slot == 0 and part.last_slot_fraction == pytest.approx(0.5)
    assert result.emissions_g == pytest.approx((0.5 * 300 + 100 + 200) * 60 / 1000)
    assert result.servers_used.tolist() == [1, 1, 1, 0]  # the partial slot holds its server


def test_per_slot_capacity_and_arrivals() -> None:
    carbon = np.array([10.0, 20.0, 30.0, 40.0])
    jobs = [rigid("early", 2, 0, 4), rigid("late", 1, 2, 4)]
    result = plan_cluster(jobs, carbon, [0, 1, 1, 1])
    # No server in slot 0; "late" takes slot 2 or 3 (the same total), "early" the others.
    assert result.servers_used.tolist() == [0, 1, 1, 1]
    assert result.job("early").servers_on(4)[1] == 1
    assert result.job("late").servers_on(4)[:2].tolist() == [0, 0]
    assert result.emissions_g == pytest.approx((20 + 30 + 40) * 60 / 1000)
    with pytest.raises(PlanningError, match="per-slot capacity covers 2 slots"):
        plan_cluster(jobs, carbon, [1, 1])


def test_malformed_input_is_refused() -> None:
    carbon = np.ones(4)
    with pytest.raises(PlanningError, match="at least one job"):
        plan_cluster([], carbon, 1)
    with pytest.raises(PlanningError, match="unique; repeated: a"):
        plan_cluster([rigid("a", 1, 0, 2), rigid("a", 1, 0, 2)], carbon, 1)
    with pytest.raises(PlanningError, match="forecast has only 4"):
        plan_cluster([rigid("a", 1, 0, 6)], carbon, 1)
    with pytest.raises(PlanningError, match="must come after the arrival"):
        rigid("a", 1, 3, 3)
    with pytest.raises(PlanningError, match="whole number of servers"):
        plan_cluster([rigid("a", 1, 0, 2)], carbon, 1.5)  # type: ignore[arg-type]
    with pytest.raises(PlanningError, match="unknown cluster solver"):
        plan_cluster([rigid("a", 1, 0, 2)], carbon, 1, solver="magic")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# A set that cannot fit


def test_the_error_names_who_cannot_finish_and_what_would_fit() -> None:
    # "pair" needs both servers in both slots; "solo" needs one server in one of them.
    pair = ClusterJob("pair", Job.from_length(linear_profile(2), 2, 2, 2), 0, 2)
    jobs = [pair, rigid("solo", 1, 0, 2), rigid("other", 1, 2, 4)]
    carbon = np.array([100.0, 200.0, 300.0, 400.0, 500.0])
    with pytest.raises(ClusterInfeasibleError) as caught:
        plan_cluster(jobs, carbon, 2)
    err = caught.value
    # Either of the first two could finish; equal weights keep the one listed first.
    assert err.late_jobs == ("solo",)
    assert err.work_required == {"solo": 1.0} and err.work_possible == {"solo": 0.0}
    assert err.capacity_needed == 3
    assert err.deadline_extension_hours == 1.0
    message = str(err)
    assert "1 of 3 jobs cannot finish" in message and "solo (needs 1 work units, 0 fit)" in message
    assert "capacity of 3 servers per slot" in message
    assert "deadline of solo extended by 1 h" in message
    # A heavier weight keeps "solo" instead.
    jobs[1] = rigid("solo", 1, 0, 2, weight=2.0)
    with pytest.raises(ClusterInfeasibleError) as caught:
        plan_cluster(jobs, carbon, 2, solver="exact")
    assert caught.value.late_jobs == ("pair",)
    assert caught.value.work_possible == {"pair": pytest.approx(2.0)}  # one slot of the two


def test_a_job_that_cannot_fit_even_alone_is_named_with_its_shortest_deadline() -> None:
    jobs = [rigid("fine", 1, 0, 3), rigid("long", 5, 0, 3)]
    with pytest.raises(ClusterInfeasibleError, match="long needs 5 work units") as caught:
        plan_cluster(jobs, np.ones(6), 4)
    assert caught.value.late_jobs == ("long",)
    assert "shortest deadline that works is 5 h" in str(caught.value)


def test_a_per_slot_capacity_short_of_m_asks_for_more_servers() -> None:
    job = ClusterJob("wide", Job.from_length(linear_profile(4), 2, 3, 4), 0, 3)
    with pytest.raises(ClusterInfeasibleError, match="1 more servers in every slot"):
        plan_cluster([job], np.ones(3), [2, 2, 2])


# ------------------------------------------------------------------------------------------
# Properties on random instances


@st.composite
def instances(draw: st.DrawFn, *, roomy: bool = False) -> tuple[list[ClusterJob], list[float], int]:
    """Small random sets of jobs with concave profiles over a random forecast."""
    n_slots = draw(st.integers(4, 12))
    carbon = draw(st.lists(st.floats(20, 600), min_size=n_slots, max_size=n_slots))
    jobs = []
    for i in range(draw(st.integers(2, 4))):
        top = draw(st.integers(1, 4))
        low = draw(st.integers(1, min(top, 2)))
        watts = draw(st.floats(30, 250))
        shape = draw(st.sampled_from(["linear", "amdahl", "powerlaw"]))
        if shape == "linear":
            profile = linear_profile(top, power_per_server_w=watts)
        elif shape == "amdahl":
            profile = amdahl_profile(top, draw(st.floats(0, 0.5)), power_per_server_w=watts)
        else:
            profile = power_law_profile(top, draw(st.floats(0.3, 1)), power_per_server_w=watts)
        arrival = draw(st.integers(0, n_slots - 2))
        deadline = draw(st.integers(arrival + 1, n_slots))
        # Up to 80 % of what fits in the window at the top level, in hours at m.
        share = draw(st.floats(0.1, 0.8))
        hours = share * (deadline - arrival) * profile.throughput[top] / profile.throughput[low]
        jobs.append(
            ClusterJob(f"j{i}", Job.from_length(profile, hours, low, top), arrival, deadline)
        )
    everything = sum(j.job.max_servers for j in jobs)
    capacity = (
        everything if roomy else draw(st.integers(max(j.job.min_servers for j in jobs), everything))
    )
    return jobs, carbon, capacity


@SETTINGS
@given(instances())
def test_fast_is_within_one_percent_of_exact_on_concave_profiles(
    case: tuple[list[ClusterJob], list[float], int],
) -> None:
    jobs, carbon, capacity = case
    try:
        exact = plan_cluster(jobs, carbon, capacity, solver="exact")
    except ClusterInfeasibleError as err:
        # The fast solver gives the same verdict (it asks the exact one when it cannot place all).
        with pytest.raises(ClusterInfeasibleError) as fast_err:
            plan_cluster(jobs, carbon, capacity)
        assert fast_err.value.late_jobs == err.late_jobs
        assert set(err.late_jobs) <= {j.name for j in jobs}
        return
    fast = plan_cluster(jobs, carbon, capacity)
    assert_sound(exact, jobs)
    assert_sound(fast, jobs)
    assert exact.emissions_g <= fast.emissions_g * (1 + 1e-9)
    assert fast.emissions_g <= exact.emissions_g * 1.01


@SETTINGS
@given(instances(roomy=True))
def test_with_room_for_everyone_the_plan_is_the_independent_plans(
    case: tuple[list[ClusterJob], list[float], int],
) -> None:
    jobs, carbon, capacity = case
    result = plan_cluster(jobs, carbon, capacity)
    assert_sound(result, jobs)
    for job, part in zip(jobs, result.jobs, strict=True):
        alone = plan(
            "carbonscaler", job.job, carbon[job.arrival_slot :], deadline_slots=job.window_slots
        )
        assert part.schedule.servers.tolist() == alone.servers.tolist()
        assert part.schedule.partial_slot == alone.partial_slot
        assert part.schedule.last_slot_fraction == alone.last_slot_fraction
        assert part.emissions_g == alone.emissions_g
    assert result.emissions_g == pytest.approx(
        plan_cluster_independent(jobs, carbon, capacity).emissions_g
    )


@SETTINGS
@given(instances())
def test_first_come_first_served_keeps_the_capacity_and_the_order(
    case: tuple[list[ClusterJob], list[float], int],
) -> None:
    jobs, carbon, capacity = case
    # Long enough for every job to finish at m after waiting for all the others.
    longer = carbon + [300.0] * int(sum(j.job.length_hours + 1 for j in jobs) + 1)
    result = plan_cluster_agnostic(jobs, longer, capacity)
    assert np.all(result.servers_used <= capacity)
    starts = []
    for job, part in zip(jobs, result.jobs, strict=True):
        servers = part.servers_on(result.horizon)
        assert set(servers.tolist()) <= {0, job.job.min_servers}
        assert part.schedule.completed
        running = np.flatnonzero(servers)
        # Runs without a break once started (constant capacity).
        assert running.tolist() == list(range(running[0], running[-1] + 1))
        starts.append((job.arrival_slot, int(running[0])))
    # No job starts before one that arrived earlier.
    ordered = sorted(range(len(jobs)), key=lambda i: (jobs[i].arrival_slot, i))
    begun = [starts[i][1] for i in ordered]
    assert begun == sorted(begun)


# ------------------------------------------------------------------------------------------
# The cluster file and the command


def cli() -> typer.Typer:
    root = typer.Typer(rich_markup_mode=None)

    @root.callback()
    def _root() -> None:
        """carbonscaler"""

    root.add_typer(cluster_app, name="cluster")
    return root


runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A trace (hourly, 2022-06-01, a clean noon), a profile CSV and a cluster file."""
    hours = np.arange(48)
    values = 300 - 200 * np.exp(-(((hours % 24) - 12) ** 2) / 18)
    lines = [f"2022-06-01T{h % 24:02d}:00:00Z" for h in hours]
    days = ["01" if h < 24 else "02" for h in hours]
    rows = [line.replace("-01T", f"-{d}T") for line, d in zip(lines, days, strict=True)]
    text = "datetime,carbon_intensity_avg\n" + "".join(
        f"{r},{v:.1f}\n" for r, v in zip(rows, values, strict=True)
    )
    (tmp_path / "trace.csv").write_text(text)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "mpi.csv").write_text(
        "nodes,throughput,power\n1,1.0,60\n2,1.9,120\n3,2.7,180\n4,3.4,240\n"
    )
    (tmp_path / "jobs.yaml").write_text(
        "capacity: 4\n"
        "jobs:\n"
        "  - name: resnet\n"
        "    profile: amdahl:0.05\n"
        "    minReplicas: 1\n"
        "    maxReplicas: 4\n"
        "    length_hours: 6\n"
        "    arrival_hours: 0\n"
        "    deadline_hours: 20\n"
        "  - name: mpi\n"
        "    profile: profiles/mpi.csv\n"
        "    minReplicas: 2\n"
        "    maxReplicas: 4\n"
        "    work: 8\n"
        "    arrivalHours: 4\n"
        "    deadlineHours: 12\n"
    )
    return tmp_path


def test_the_cluster_file_reads_into_planner_jobs(workdir: Path) -> None:
    spec = load_cluster_spec(workdir / "jobs.yaml")
    assert spec.capacity == 4 and spec.slot_minutes == 60
    jobs = spec.cluster_jobs()
    assert [(j.name, j.arrival_slot, j.deadline_slot) for j in jobs] == [
        ("resnet", 0, 20),
        ("mpi", 4, 16),
    ]
    assert jobs[0].job.work == pytest.approx(6.0)
    assert jobs[1].job.profile.max_servers == 4 and jobs[1].job.min_servers == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "capacity: -1\njobs: [{name: a, profile: linear, maxReplicas: 1, work: 1, "
            "deadline: 2}]",
            "capacity: servers per slot cannot be negative",
        ),
        (
            "jobs: [{name: a, profile: linear, maxReplicas: 1, work: 1, deadline: 2, "
            "policy: exact}]",
            "jobs.0 (a): policy configures a running job",
        ),
        (
            "jobs: [{name: a, maxReplicas: 1, work: 1, deadline: 2}]",
            "profile 'auto' measures a running job",
        ),
        (
            "jobs: [{name: a, profile: linear, maxReplicas: 1, length_hours: 1, work: 1, "
            "deadline: 2}]",
            "not both",
        ),
        (
            "jobs: [{name: a, profile: linear, maxReplicas: 1, work: 1, deadline: 2}, "
            "{name: a, profile: linear, maxReplicas: 1, work: 1, deadline: 2}]",
            "repeated: a",
        ),
        (
            "jobs: [{name: a, profile: linear, maxReplicas: 1, work: 1, deadline: 2, "
            "slot_seconds: 60}]",
            "slot_minutes at the top level",
        ),
        (
            "jobs: [{name: a, profile: linear, maxReplicas: 1, work: 1, deadline: 2, colour: red}]",
            "jobs.0 (a).colour: Extra inputs",
        ),
        ("- just a list", "a YAML mapping"),
    ],
)
def test_a_bad_cluster_file_names_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=r"bad\.yaml: .*" + re.escape(expected)):
        load_cluster_spec(path)


def test_cluster_plan_json_contract(workdir: Path) -> None:
    args = ["cluster", "plan", str(workdir / "jobs.yaml"), "--trace", str(workdir / "trace.csv")]
    result = runner.invoke(cli(), [*args, "--start", "2022-06-01T00:00Z", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in (
        "capacity",
        "jobs",
        "servers_used",
        "emissions_g",
        "agnostic_emissions_g",
        "independent_emissions_g",
        "independent_overcommit",
        "solve_ms",
    ):
        assert key in out, key
    assert out["capacity"] == 4
    horizon = len(out["servers_used"])
    assert horizon == 20
    assert all(used <= 4 for used in out["servers_used"])
    per_slot = np.zeros(horizon, dtype=int)
    for job in out["jobs"]:
        for key in ("name", "servers", "last_slot_fraction", "emissions_g", "completion_hours"):
            assert key in job
        assert job["deadline_met"] is True
        assert len(job["servers"]) == horizon
        per_slot += job["servers"]
    assert per_slot.tolist() == out["servers_used"]
    mpi = next(j for j in out["jobs"] if j["name"] == "mpi")
    assert not any(mpi["servers"][:4]) and not any(mpi["servers"][16:])  # outside its window: 0
    assert out["emissions_g"] == pytest.approx(sum(j["emissions_g"] for j in out["jobs"]))
    assert out["emissions_g"] < out["agnostic_emissions_g"]
    assert out["independent_overcommit"] >= 0
    # --capacity overrides the file.
    roomy = runner.invoke(
        cli(), [*args, "--start", "2022-06-01T00:00Z", "--capacity", "8", "--json"]
    )
    assert roomy.exit_code == 0, roomy.output
    assert json.loads(roomy.stdout)["capacity"] == 8


def test_cluster_plan_prints_a_table_and_a_capacity_chart(workdir: Path) -> None:
    args = ["cluster", "plan", str(workdir / "jobs.yaml"), "--trace", str(workdir / "trace.csv")]
    result = runner.invoke(cli(), [*args, "--start", "2022-06-01T00:00Z", "--solver", "exact"])
    assert result.exit_code == 0, result.output
    assert "resnet" in result.stdout and "mpi" in result.stdout
    assert "servers per slot" in result.stdout
    assert "06-01 12:00" in result.stdout and "/4" in result.stdout
    assert "carbon-agnostic FIFO" in result.stdout


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--capacity", "1"], "mpi (needs 8 work units"),
        (["--start", "2022-06-02T12:00Z"], "latest deadline is 20 slots away"),
        (["--solver", "magic"], "use fast or exact"),
    ],
)
def test_cluster_plan_bad_input_is_one_clear_error(
    workdir: Path, extra: list[str], expected: str
) -> None:
    args = ["cluster", "plan", str(workdir / "jobs.yaml"), "--trace", str(workdir / "trace.csv")]
    if "--start" not in extra:
        extra = [*extra, "--start", "2022-06-01T00:00Z"]
    result = runner.invoke(cli(), [*args, *extra])
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_cluster_plan_without_a_capacity_or_a_file(workdir: Path) -> None:
    (workdir / "open.yaml").write_text(
        "jobs: [{name: a, profile: linear, maxReplicas: 1, work: 1, deadline: 2}]\n"
    )
    trace = ["--trace", str(workdir / "trace.csv"), "--start", "2022-06-01T00:00Z"]
    result = runner.invoke(cli(), ["cluster", "plan", str(workdir / "open.yaml"), *trace])
    assert result.exit_code == 2 and "no capacity" in result.output
    result = runner.invoke(cli(), ["cluster", "plan", str(workdir / "nope.yaml"), *trace])
    assert result.exit_code == 2 and "cluster file not found" in result.output


def test_the_example_cluster_file_plans(shared_dir: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "cluster" / "jobs.yaml"
    trace = shared_dir / "traces" / "electricitymaps-fedstale" / "DE_2022_hourly.csv"
    result = runner.invoke(
        cli(),
        [
            "cluster",
            "plan",
            str(example),
            "--trace",
            str(trace),
            "--start",
            "2022-06-01T00:00Z",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert all(job["deadline_met"] for job in out["jobs"])
    assert out["emissions_g"] < out["agnostic_emissions_g"]
