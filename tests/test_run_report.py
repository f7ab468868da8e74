"""A run's report reads right (issue #15): a headline sentence, a verdict whose rounding agrees
with it, the hours run at each server count, the trace's dates, the advisor's prediction beside
the measurement, whole servers on the figure and every line in its legend; progress while it
runs (a line per slot without a terminal); and a finished job is not run again."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
from matplotlib.lines import Line2D
from rich.console import Console
from typer.testing import CliRunner

from _jobs import spec_for
from carbonscaler.cli import app
from carbonscaler.cli._progress import ProgressDisplay
from carbonscaler.cli._runner import build_simulation, state_path
from carbonscaler.control import RunReport, StateStore
from carbonscaler.control.report import (
    deadline_verdict,
    headline,
    prediction_note,
    prediction_rows,
    run_figure,
    summary_rows,
    write_run_report,
)
from carbonscaler.wording import duration, grams, hours_beside, level_hours, saving

runner = CliRunner()


def report(**over: Any) -> RunReport:
    """A 36 h-deadline run that saved 7.5 % (481.9 g instead of 521.2 g), finished at 34.8 h."""
    base = RunReport(
        name="job",
        completed=True,
        deadline_met=True,
        completion_hours=34.8,
        deadline_hours=36.0,
        emissions_g=481.9,
        energy_kwh=1.234,
        agnostic_emissions_g=521.2,
        savings_pct=100 * (1 - 481.9 / 521.2),
        rescales=3,
        replans=1,
        restarts=0,
        degraded=False,
        power_source="estimated:profile",
        carbon_source="DE (ENTSO-E)",
        profile_source="file:p.csv",
        mean_rescale_s=2.5,
        servers_by_slot=[0.0, 1.0, 2.0, 0.8] + [0.0] * 32,
        emissions_by_slot=[0.0, 100.0, 300.0, 81.9] + [0.0] * 32,
        carbon_by_slot=[400.0, 300.0, 100.0, 150.0] + [350.0] * 32,
        unobserved_slots=[],
        notes=[],
        progress_pct=100.0,
        slot_hours=1.0,
        start_utc="2020-03-02T00:00:00+00:00",
        hours_by_servers={0: 31.0, 1: 1.8, 2: 2.0},
    )
    return dataclasses.replace(base, **over)


# -- the words -----------------------------------------------------------------------------


def test_headline_sentence() -> None:
    assert headline(report()) == (
        "saved 7.5 % — 481.9 g instead of 521.2 g — finishing 1.2 h before the deadline"
    )
    assert headline(report(completion_hours=36.0)) == (
        "saved 7.5 % — 481.9 g instead of 521.2 g — finishing right at the deadline"
    )
    late = report(completion_hours=36.004, deadline_met=False)
    assert headline(late) == (
        "saved 7.5 % — 481.9 g instead of 521.2 g — missing the deadline by 14 s"
    )
    more = report(emissions_g=537.0, savings_pct=100 * (1 - 537.0 / 521.2))
    assert headline(more).startswith("emitted 3.0 % more — 537.0 g instead of 521.2 g — ")
    unfinished = report(completed=False, deadline_met=False, completion_hours=None)
    unfinished = dataclasses.replace(unfinished, progress_pct=99.96)
    assert headline(unfinished) == "not finished — 99.9 % done after 34.8 h, 481.9 g so far"
    big = report(emissions_g=9_999.9, agnostic_emissions_g=10_200.0, savings_pct=2.0)
    assert "10.00 kg instead of 10.20 kg" in headline(big)  # one unit in one sentence


def test_rounding_and_verdict_agree() -> None:
    """Never "36.00 h (deadline 36 h, MISSED)": the figure shows as many decimals as it takes
    to stand on its side of the deadline."""
    assert deadline_verdict(report()) == "finished at 34.8 h, 1.2 h before the deadline (36 h)"
    late = report(completion_hours=36.004, deadline_met=False)
    assert deadline_verdict(late) == (
        "finished at 36.004 h, 14 s after the deadline (36 h): missed"
    )
    assert deadline_verdict(report(completion_hours=35.96)) == (
        "finished at 35.96 h, 2 min before the deadline (36 h)"
    )
    assert deadline_verdict(report(completion_hours=36.0)) == (
        "finished at 36.0 h, right at the deadline (36 h)"
    )
    unfinished = report(completed=False, deadline_met=False, completion_hours=None)
    assert deadline_verdict(unfinished) == (
        "not finished: 100.0 % done after 34.8 h (deadline 36 h)"
    )
    # Around the deadline, the number shown never contradicts the verdict.
    for done in (35.94, 35.9951, 35.99999, 36.0, 36.00001, 36.0004, 36.004, 36.04, 36.5):
        met = done <= 36.0 + 1e-9
        text = deadline_verdict(report(completion_hours=done, deadline_met=met))
        shown = float(re.match(r"finished at ([\d.]+) h", text).group(1))  # type: ignore[union-attr]
        assert (shown <= 36.0) if met else (shown > 36.0), text
        assert text.endswith(": missed") != met
        assert "36.00 h" not in text


def test_wording_helpers() -> None:
    assert hours_beside(34.8, 36) == "34.8 h"
    assert hours_beside(36.004, 36) == "36.004 h"
    assert hours_beside(35.999, 36) == "35.999 h"
    assert duration(1.2) == "1.2 h"
    assert duration(0.999) == "1.0 h"  # not "60 min"
    assert duration(0.25) == "15 min"
    assert duration(0.004) == "14 s"
    assert duration(1e-5) == "under a second"
    assert saving(7.24) == "saved 7.2 %" and saving(0.01) == "saved nothing"
    assert saving(-5.0) == "emitted 5.0 % more" and saving(-5.0, past=False) == "emits 5.0 % more"
    assert grams(4.234) == "4.23 g" and grams(481.94) == "481.9 g"
    assert level_hours({0: 12.0, 1: 22.04, 3: 0.05, 2: 0.0}) == [
        "0 servers (suspended): 12.0 h",
        "1 server: 22.0 h",
        "3 servers: 0.1 h",
    ]


def test_report_states_hours_at_each_level_and_dates() -> None:
    rows = dict(summary_rows(report()))
    assert rows["hours at each level"] == (
        "0 servers (suspended): 31.0 h; 1 server: 1.8 h; 2 servers: 2.0 h"
    )
    assert rows["server-hours"] == "5.8"
    assert rows["dates"] == (
        "arrived 2020-03-02 00:00 UTC, deadline 2020-03-03 12:00 UTC, finished 2020-03-03 10:48 UTC"
    )
    assert rows["outcome"] == deadline_verdict(report())
    assert rows["rescales / re-plans / restarts"] == "3 / 1 / 0 (a rescale took 2.5 s on average)"
    # JSON: the counts as keys, the new fields beside the old ones.
    data = json.loads(json.dumps(report().to_dict()))
    assert data["hours_by_servers"] == {"0": 31.0, "1": 1.8, "2": 2.0}
    assert data["start_utc"] == "2020-03-02T00:00:00+00:00"


def test_simulated_run_hours_per_level_are_exact(shared_dir: Path, tmp_path: Path) -> None:
    result = build_simulation(spec_for(shared_dir, tmp_path)).run()
    assert result.completed and result.completion_hours is not None
    by_level = result.hours_by_servers
    assert sum(by_level.values()) == pytest.approx(result.completion_hours, abs=1e-9)
    # The same server-time as the per-slot means.
    server_h = sum(k * h for k, h in by_level.items())
    assert server_h == pytest.approx(sum(result.servers_by_slot) * result.slot_hours, rel=1e-9)
    assert by_level[0] > 0  # suspended while dirty
    assert result.start_utc == "2022-03-01T00:00:00+00:00"


def test_prediction_beside_the_measurement() -> None:
    prediction = {
        "advisor_emissions_g": 470.0,
        "advisor_agnostic_emissions_g": 500.0,
        "advisor_savings_pct": 6.0,
        "savings_vs_advisor_pct_points": 1.54,
    }
    rows = prediction_rows(report(), prediction)
    assert rows[0] == ("emissions", "481.9 g", "470.0 g", "2.5 % more")
    assert rows[2] == ("saving", "saved 7.5 %", "saved 6.0 %", "1.5 points more")
    assert prediction_note(report(), prediction) == (
        "The run saved 1.5 points more than predicted: the advisor simulates the same decisions "
        "at the profiled speed, while here the job ran about 4 % slower than profiled, and its "
        "3 rescales took 2.5 s each."
    )
    close = {**prediction, "advisor_savings_pct": 7.3}
    assert "within half a point" in prediction_note(report(), close)


# -- the figure and the page --------------------------------------------------------------


def test_run_figure_whole_servers_and_every_line_in_the_legend() -> None:
    fig = run_figure(report(servers_by_slot=[0.0, 1.0, 2.5, 0.8] + [0.0] * 32))
    try:
        ax = fig.axes[0]
        low, high = ax.get_ylim()
        ticks = [t for t in ax.get_yticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks)
        legend = ax.get_legend()
        assert legend is not None
        entries = [t.get_text() for t in legend.get_texts()]
        assert entries == [
            "servers (mean over the slot)",
            "carbon intensity (gCO2eq/kWh)",
            "deadline (36 h)",
            "finished (34.8 h)",
        ]
        lines = [
            str(line.get_label())
            for a in fig.axes
            for line in a.get_lines()
            if isinstance(line, Line2D) and not str(line.get_label()).startswith("_")
        ]
        assert set(lines) <= set(entries)
        title = ax.get_title()
        assert "saved 7.5 %" in title and "(+" not in title
        assert ax.get_xlabel() == "hours from 2020-03-02 00:00 UTC"
    finally:
        plt.close(fig)


def test_html_report_is_rendered_from_the_template(tmp_path: Path) -> None:
    prediction = {
        "advisor_emissions_g": 470.0,
        "advisor_agnostic_emissions_g": 500.0,
        "advisor_savings_pct": 6.0,
        "savings_vs_advisor_pct_points": 1.54,
    }
    written = write_run_report(report(name="<job>"), tmp_path, prediction=prediction)
    assert [p.name for p in written] == ["report.json", "report.png", "report.html"]
    page = (tmp_path / "report.html").read_text()
    assert '<p class="headline">saved 7.5 % — 481.9 g instead of 521.2 g — finishing 1.2 h' in page
    assert "<h1>CarbonScaler run: &lt;job&gt;</h1>" in page  # escaped
    assert "<h2>Hours at each server count</h2>" in page
    assert '<td class="name">0 (suspended)</td><td>31.0 h</td><td>89 %</td>' in page
    assert "<th>advisor predicted</th>" in page and "1.5 points more" in page
    assert "2020-03-03 10:48 UTC" in page
    assert page.count('<div class="wide">') >= 3  # wide tables scroll inside the page
    assert "(+" not in page
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["advisor_savings_pct"] == 6.0 and saved["completion_hours"] == 34.8


# -- progress --------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=200), out


def test_progress_without_a_terminal_prints_lines() -> None:
    clock = FakeClock()
    console, out = plain_console()
    with ProgressDisplay("simulating", unit=" runs", every_s=5, console=console, now=clock) as p:
        assert not p.terminal
        p.update(1, total=40, detail="NL slack 1")  # the first: a line
        clock.t += 1
        p.update(2, detail="NL slack 1")  # too soon: none
        clock.t += 5
        p.update(10, detail="NL slack 1.5")  # five seconds on: a line
        clock.t += 1
        p.update(11, milestone=True)  # a milestone: a line, whenever
        clock.t += 1
    lines = out.getvalue().splitlines()
    assert lines == [
        "simulating: 1/40 runs (2 %), 0:00 elapsed, ~0:00 left — NL slack 1",
        "simulating: 10/40 runs (25 %), 0:06 elapsed, ~0:18 left — NL slack 1.5",
        "simulating: 11/40 runs (28 %), 0:07 elapsed, ~0:18 left — NL slack 1.5",
        "simulating: done in 0:08",
    ]


def test_progress_takes_the_callers_eta_and_percentages() -> None:
    clock = FakeClock()
    console, out = plain_console()
    with ProgressDisplay("job", total=100, unit="%", console=console, now=clock) as p:
        p.update(23.45, detail="slot 5/36, 2 servers", eta_s=72, milestone=True)
    assert out.getvalue().splitlines()[0] == (
        "job: 23.4 % done, 0:00 elapsed, ~1:12 left — slot 5/36, 2 servers"
    )


def test_progress_on_a_terminal_draws_a_bar_not_lines() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with ProgressDisplay("profiling", console=console) as p:
        assert p.terminal
        p.update(1, total=2, detail="2 of 2 workers", eta_s=5, above="a table")
    text = out.getvalue()
    assert "profiling" in text and "~0:05 left" in text and "a table" in text
    assert "done in" not in text  # the bar is transient; no plain lines


# -- a finished job is not run again ------------------------------------------------------


def job_yaml(shared: Path, tmp_path: Path) -> Path:
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: sim\nworkload: {command: 'false'}\n"
        f"profile: {shared / 'profiles' / 'nbody10k.csv'}\n"
        "minReplicas: 1\nmaxReplicas: 7\nlength_hours: 24\nslack: 1.5\n"
        f"carbon: {{trace: {shared / 'traces' / 'electricitymaps-fedstale/NL_2022_hourly.csv'}, "
        "start: '2022-03-01T00:00Z'}\n"
        f"checkpoint_dir: {tmp_path / 'run'}\n"
    )
    return job


def test_rerunning_a_finished_job_says_so(shared_dir: Path, tmp_path: Path) -> None:
    """Finished on a virtual clock into the job's own state; ``run`` then starts nothing."""
    spec = spec_for(shared_dir, tmp_path)
    store = StateStore(state_path(spec))
    controller = build_simulation(spec, store=store)
    finished = controller.run()
    store.close()
    folder = Path(spec.checkpoint_dir)
    write_run_report(finished, folder)
    job = job_yaml(shared_dir, tmp_path)
    result = runner.invoke(app, ["run", str(job)])
    assert result.exit_code == 0, result.output
    message = " ".join(result.stderr.split())
    assert message.startswith(
        f"sim is already complete: {deadline_verdict(finished)} on 1970-01-0"
    ), message
    assert f"Report: {folder / 'report.html'}." in message
    assert f"Delete {folder} to run it again." in message
    assert not (folder / "workload").exists()  # nothing was started
    as_json = runner.invoke(app, ["run", str(job), "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout)["emissions_g"] == pytest.approx(finished.emissions_g)
