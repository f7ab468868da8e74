"""CarbonAdvisor's results read honestly (issue #15): deadline misses stand beside savings in
every view, a policy that misses deadlines never ranks above one that meets them, coinciding
policies are both visible, and ``advise --jobs N`` gives the serial numbers exactly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.lines import Line2D
from matplotlib.text import Text
from typer.testing import CliRunner

from carbonscaler.advisor import (
    Conditions,
    ForecastModel,
    ForecastSpec,
    SweepResult,
    SweepSpec,
    figures,
    ranked_summary,
    run_sweep,
    write_csv,
    write_html,
    write_summary_csv,
)
from carbonscaler.cli import app
from carbonscaler.planner.model import PlanningError
from carbonscaler.profile import ProfileError, amdahl_profile
from carbonscaler.trace import CarbonTrace, load_trace

runner = CliRunner()
FEDSTALE = ("traces", "electricitymaps-fedstale")


@pytest.fixture(scope="module")
def nl(shared_dir: Path) -> CarbonTrace:
    return load_trace(shared_dir.joinpath(*FEDSTALE, "NL_2022_hourly.csv"))


@pytest.fixture(scope="module")
def on(shared_dir: Path) -> CarbonTrace:
    return load_trace(shared_dir.joinpath(*FEDSTALE, "CA-ON_2022_hourly.csv"))


@pytest.fixture(scope="module")
def tight(nl: CarbonTrace) -> SweepResult:
    """A deadline as long as the job and real throughput ±10 % off the profile: the threshold
    policy misses nearly every deadline, carbon-agnostic and suspend-resume about half."""
    spec = SweepSpec(
        traces=[nl],
        profile=amdahl_profile(8, 0.05),
        length_hours=24,
        slacks=[1.0, 1.5],
        starts=300,
        conditions=Conditions(profile_error=0.1, seed=2),
    )
    return run_sweep(spec)


def test_misses_are_counted_beside_savings(tight: SweepResult) -> None:
    summary = tight.summary
    columns = list(summary.columns)
    saved = columns.index("mean_savings_vs_suspend_resume_pct")
    assert columns[saved + 1 : saved + 3] == ["deadline_misses", "deadline_miss_pct"]
    assert columns[columns.index("policy") + 1] == "rank"
    assert np.allclose(summary["deadline_miss_pct"], 100 * summary["deadline_misses"] / 300)
    threshold = summary[summary["policy"] == "suspend-resume-threshold"]
    assert (threshold["deadline_miss_pct"] > 80).all()
    # The threshold policy saves the most of all, and that is why it must not top the list.
    for _, scenario in summary.groupby("slack"):
        best_saver = scenario.sort_values("mean_savings_vs_agnostic_pct")["policy"].iloc[-1]
        assert best_saver == "suspend-resume-threshold"


def test_a_policy_that_misses_never_ranks_above_one_that_meets(tight: SweepResult) -> None:
    summary = tight.summary
    some_missed = False
    for _, scenario in summary.groupby("slack"):
        met = scenario[scenario["deadline_misses"] == 0]
        missed = scenario[scenario["deadline_misses"] > 0]
        assert len(met) and len(missed)
        some_missed = True
        assert missed["rank"].min() > met["rank"].max()
        # Among those that meet them: by saving; among those that miss: fewest misses first.
        by_rank = met.sort_values("rank")
        assert by_rank["mean_savings_vs_agnostic_pct"].is_monotonic_decreasing
        assert missed.sort_values("rank")["deadline_miss_pct"].is_monotonic_increasing
        last = scenario.sort_values("rank", kind="stable")["policy"].iloc[-1]
        assert last == "suspend-resume-threshold"
    assert some_missed
    # exact decides as carbonscaler on this concave profile: the same rank, said to be equal.
    for _, scenario in summary.groupby("slack"):
        exact = scenario[scenario["policy"] == "exact"].iloc[0]
        scaler = scenario[scenario["policy"] == "carbonscaler"].iloc[0]
        assert exact["rank"] == scaler["rank"] and exact["same_as"] == "carbonscaler"
        assert scaler["same_as"] is None
    # The displays sort by rank, scenario by scenario; --json keeps the order asked for.
    ranked = ranked_summary(tight)
    for _, scenario in ranked.groupby("slack", sort=False):
        assert scenario["rank"].is_monotonic_increasing
    assert list(summary["policy"][:3]) == list(tight.spec.policies[:3])


def test_csvs_put_misses_beside_savings(tight: SweepResult, tmp_path: Path) -> None:
    write_csv(tight, tmp_path / "runs.csv")
    runs = pd.read_csv(tmp_path / "runs.csv")
    columns = list(runs.columns)
    assert columns[0] == "trace"
    saved = columns.index("savings_vs_agnostic_pct")
    assert columns[saved + 1 : saved + 3] == ["savings_vs_suspend_resume_pct", "deadline_met"]
    write_summary_csv(tight, tmp_path / "summary.csv")
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert {"deadline_misses", "deadline_miss_pct", "rank"} <= set(summary.columns)
    for _, scenario in summary.groupby("slack", sort=False):
        assert scenario["rank"].is_monotonic_increasing


def test_html_report_shows_misses_and_ranks(tight: SweepResult, tmp_path: Path) -> None:
    write_html(tight, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert "<th>deadline misses</th>" in page
    assert '<tr class="missed">' in page
    assert "misses any deadline ranks below" in page
    assert re.search(r"suspend-resume-threshold<br><span class=\"note\">misses \d+ %", page)
    assert 'exact <span class="same">(= carbonscaler)</span>' in page
    assert "(+" not in page  # savings read "12.3 %", never "(+12.3 %)"
    # Within each scenario's table the policies that miss come after those that meet.
    for table in page.split("<h3>")[1:]:
        rows = re.findall(r"<tr( class=\"missed\")?><td>(\d+)</td>", table)
        flags = [bool(missed) for missed, _ in rows]
        assert flags == sorted(flags)
        assert [int(rank) for _, rank in rows] == sorted(int(rank) for _, rank in rows)


def _texts(fig: object) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]  # type: ignore[attr-defined]


def test_figures_mark_misses_and_show_coinciding_lines(tight: SweepResult) -> None:
    import matplotlib.pyplot as plt

    drawn = figures(tight)
    try:
        everything = [text for fig in drawn.values() for text in _texts(fig)]
        assert not any(re.search(r"\(\+\d", text) for text in everything)
        assert any(re.fullmatch(r"saved \d+\.\d %", text) for text in everything)
        # Box plot: the threshold policy's box is labelled with its misses.
        labels = _texts(drawn["savings_distribution"])
        assert any(
            t.startswith("suspend-resume-threshold\nmisses") and "of deadlines" in t for t in labels
        )
        # Savings vs slack: every policy in the legend, exact and carbonscaler both visible.
        fig = drawn["savings_vs_slack"]
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        for policy in tight.spec.policies:
            if policy != "agnostic":
                assert any(entry.startswith(policy) for entry in legend), (policy, legend)
        assert any(entry.startswith("exact (= carbonscaler)") for entry in legend)
        assert any(entry.startswith("carbon-agnostic (0 %)") for entry in legend)
        assert "misses deadlines" in legend
        lines = {
            str(line.get_label()): line
            for line in fig.axes[0].get_lines()
            if not str(line.get_label()).startswith("_")
        }
        exact = next(v for k, v in lines.items() if k.startswith("exact"))
        scaler = next(v for k, v in lines.items() if k.startswith("carbonscaler"))
        assert np.array_equal(exact.get_ydata(), scaler.get_ydata())
        assert (exact.get_linestyle(), exact.get_marker()) != (
            scaler.get_linestyle(),
            scaler.get_marker(),
        )
        # The example schedule: whole servers on the axis, and every line in the legend.
        ax = drawn["example_schedule"].axes[0]
        ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert all(float(t).is_integer() for t in ticks)
        box = ax.get_legend()
        assert box is not None
        entries = [t.get_text() for t in box.get_texts()]
        assert len(entries) == 3 and entries[1].startswith("carbon intensity")
        assert all(isinstance(h, Line2D) for h in box.legend_handles[1:])
    finally:
        for fig in drawn.values():
            plt.close(fig)


def test_example_schedule_is_the_simulated_run(tight: SweepResult) -> None:
    """The figure re-simulates the median run (with the profile error drawn as in the sweep):
    its title's grams are the runs table's."""
    import matplotlib.pyplot as plt

    from carbonscaler.advisor.report import _example_run

    run, policy = _example_run(tight)
    fig = figures(tight)["example_schedule"]
    try:
        title = fig.axes[0].get_title()
    finally:
        plt.close("all")
    assert policy == "carbonscaler"
    assert title.startswith(f"carbonscaler on NL, median run: {run['emissions_g']:.0f} g, saved")


def _spec(traces: list[CarbonTrace], **conditions: object) -> SweepSpec:
    return SweepSpec(
        traces=traces,
        profile=amdahl_profile(8, 0.05),
        length_hours=24,
        slacks=[1.5, 2.0],
        starts=150,
        conditions=Conditions(**conditions),  # type: ignore[arg-type]
    )


def test_parallel_sweep_equals_serial(nl: CarbonTrace, on: CarbonTrace) -> None:
    spec = _spec(
        [nl, on],
        forecast=ForecastSpec(ForecastModel.UNIFORM, 0.1, seed=3),
        profile_error=0.05,
        rescale_overhead_s=30,
        seed=1,
    )
    serial_calls: list[tuple[int, int, str]] = []
    parallel_calls: list[tuple[int, int, str]] = []
    serial = run_sweep(spec, lambda *a: serial_calls.append(a), jobs=1)
    parallel = run_sweep(spec, lambda *a: parallel_calls.append(a), jobs=2)
    pd.testing.assert_frame_equal(parallel.runs, serial.runs, check_exact=True)
    pd.testing.assert_frame_equal(parallel.summary, serial.summary, check_exact=True)
    # Every finished run is reported, counting up to the total.
    total = 2 * 2 * len(spec.policies)
    for calls in (serial_calls, parallel_calls):
        assert [done for done, _, _ in calls] == list(range(1, total + 1))
        assert {t for _, t, _ in calls} == {total}
    assert sorted(label for *_, label in parallel_calls) == sorted(
        label for *_, label in serial_calls
    )


def test_errors_in_workers_read_as_serially(nl: CarbonTrace) -> None:
    spec = _spec([nl], static_servers=20)  # the profile describes 1..8 servers
    with pytest.raises(ProfileError) as serial:
        run_sweep(spec, jobs=1)
    with pytest.raises(ProfileError) as parallel:
        run_sweep(spec, jobs=2)
    assert str(parallel.value) == str(serial.value)
    assert "describes 1..8 servers" in str(serial.value)
    with pytest.raises(PlanningError, match="--jobs must be at least 1"):
        run_sweep(spec, jobs=0)


def test_advise_cli_table_shows_misses_and_ranks(shared_dir: Path, tmp_path: Path) -> None:
    trace = shared_dir.joinpath(*FEDSTALE, "NL_2022_hourly.csv")
    result = runner.invoke(
        app,
        [
            "advise",
            "--trace",
            str(trace),
            "--profile",
            "amdahl:0.05",
            "--length",
            "24",
            "--slack",
            "1",
            "--starts",
            "100",
            "--profile-error",
            "0.1",
            "--jobs",
            "2",
            "--summary-csv",
            str(tmp_path / "summary.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = "\n".join(lines[:8])
    assert "deadline" in header and "misses" in header
    rows = {
        m.group(2): (int(m.group(1)), line)
        for line in lines
        if (m := re.match(r"\W+(\d+) \W+([a-z-]+)", line))
    }
    rank, threshold = rows["suspend-resume-threshold"]
    assert re.search(r"\d+ \((\d+|>99) %\)", threshold), threshold  # count (share)
    assert rank == max(r for r, _ in rows.values())
    _, static = rows["static-best"]
    assert re.search(r"│\s+0 │", static)  # static-best meets every deadline here
    assert "misses any deadline ranks below" in result.stdout
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["rank"].is_monotonic_increasing


def test_headline_names_the_best_deadline_meeting_policy(
    tight: SweepResult, tmp_path: Path
) -> None:
    from carbonscaler.advisor.report import headline

    text = headline(tight)
    best = re.match(
        r"Best policy that meets every deadline: ([a-z-]+)( \(= [a-z-]+\))?, which saved "
        r"\d+\.\d % on average vs carbon-agnostic\. ",
        text,
    )
    assert best, text
    summary = tight.summary
    met = summary.groupby("policy")["deadline_misses"].sum() == 0
    assert met[best.group(1)]
    # Those that saved more only by missing deadlines are named with their misses, once each.
    assert re.search(
        r"suspend-resume-threshold saved \d+\.\d % but misses \d+ % of deadlines", text
    )
    assert text.count("exact") <= 1
    assert text.endswith("Carbon-agnostic itself misses 27 % of deadlines.")
    write_html(tight, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert f'<p class="headline">{text}</p>' in page
    assert page.count('<div class="wide"><table class="summary">') == 2  # tables scroll
    # Two scenarios: each says its own verdict under its title.
    assert page.count("<p>Best policy that meets every deadline: ") == 2


def test_advise_without_a_terminal_prints_progress_lines(shared_dir: Path) -> None:
    trace = shared_dir.joinpath(*FEDSTALE, "NL_2022_hourly.csv")
    result = runner.invoke(
        app,
        ["advise", "--trace", str(trace), "--profile", "amdahl:0.05", "--length", "24",
         "--starts", "20", "--policy", "carbonscaler", "--policy", "agnostic", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert re.fullmatch(r"simulating: \d/\d runs \(\d+ %\), 0:0\d elapsed.* — NL .+", lines[0])
    assert lines[-1].startswith("simulating: done in ")
    assert json.loads(result.stdout)  # standard output holds the JSON alone
