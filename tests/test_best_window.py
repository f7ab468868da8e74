"""The best window for a fixed-length job: the maths, the command line and the carbon service."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from _servers import ServiceThread
from carbonscaler.cli.window import best_window_command
from carbonscaler.planner import PlanningError
from carbonscaler.planner.window import best_window
from carbonscaler.providers import ManualClock, TraceReplay
from carbonscaler.services import CarbonServiceConfig, create_app
from carbonscaler.trace import from_values

runner = CliRunner()


def test_whole_and_partial_lengths_by_hand() -> None:
    carbon = np.array([5.0, 4.0, 3.0, 1.0, 1.0, 9.0, 1.0])
    two = best_window(carbon, 2)
    assert (two.start_slot, two.mean_g_per_kwh, two.now_g_per_kwh) == (3, 1.0, 4.5)
    # 2.5 slots from slot 2: 3 + 1 + 0.5·1 = 4.5 over 2.5 slots.
    part = best_window(carbon, 2.5)
    assert part.start_slot == 2 and part.mean_g_per_kwh == pytest.approx(1.8)
    assert part.saving_pct == pytest.approx(100 * (1 - 1.8 / 4.2))
    assert best_window(carbon, 0.5).start_slot == 3  # the first of the 1.0 slots


def test_the_earliest_of_equal_windows_and_now_when_now_is_best() -> None:
    assert best_window(np.array([2.0, 1.0, 1.0, 2.0, 1.0, 1.0]), 2).start_slot == 1
    flat = best_window(np.full(10, 300.0), 3)
    assert flat.start_slot == 0 and flat.saving_pct == 0.0


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(1, 1000), min_size=1, max_size=60),
    duration=st.floats(0.1, 60),
)
def test_no_start_is_cleaner_than_the_best(values: list[float], duration: float) -> None:
    carbon = np.array(values)
    if np.ceil(duration - 1e-9) > len(carbon):
        with pytest.raises(PlanningError, match="does not fit"):
            best_window(carbon, duration)
        return
    found = best_window(carbon, duration)
    whole = int(np.floor(duration + 1e-9))
    part = duration - whole if duration - whole > 1e-9 else 0.0
    span = whole + (part > 0)
    for start in range(len(carbon) - span + 1):
        total = carbon[start : start + whole].sum() + (part * carbon[start + whole] if part else 0)
        assert found.mean_g_per_kwh <= total / duration * (1 + 1e-12)


def test_bad_questions_say_what_to_change() -> None:
    with pytest.raises(PlanningError, match="positive"):
        best_window(np.ones(4), 0)
    with pytest.raises(PlanningError, match="at least 5 slots"):
        best_window(np.ones(4), 4.5)
    with pytest.raises(PlanningError, match="gaps"):
        best_window(np.array([1.0, np.nan, 2.0]), 1)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("best-window")(best_window_command)
    app.command("unused")(lambda: None)  # two commands, so typer keeps the name
    return app


def test_cli_on_a_trace_file(tmp_path: Path) -> None:
    csv = tmp_path / "trace.csv"
    hours = [f"2022-06-01T{h:02d}:00Z" for h in range(24)]
    values = [300, 280, 260, 120, 100, 110, 250] + [290] * 17
    csv.write_text(
        "datetime,carbon_intensity_avg\n"
        + "".join(f"{t},{v}\n" for t, v in zip(hours, values, strict=True))
    )
    args = ["best-window", "--trace", str(csv), "--duration-h", "3", "--within-h", "12"]
    result = runner.invoke(_app(), [*args, "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["start"].startswith("2022-06-01T03:00")
    assert answer["end"].startswith("2022-06-01T06:00")
    assert answer["mean_g_per_kwh"] == pytest.approx(110.0)
    assert answer["now_g_per_kwh"] == pytest.approx(280.0)
    text = runner.invoke(_app(), args)
    assert text.exit_code == 0 and "saving 60.7 %" in text.output
    late = runner.invoke(_app(), [*args[:-1], "30", "--start", "2022-06-01T00:00Z"])
    assert late.exit_code == 2 and "runs past it" in late.output
    longer = runner.invoke(_app(), [*args[:4], "2", "--within-h", "1"])
    assert longer.exit_code == 2 and "cannot finish within" in longer.output


@pytest.mark.integration
def test_carbon_service_answers_from_its_forecast(tmp_path: Path) -> None:
    values = [300.0, 280.0, 260.0, 120.0, 100.0, 110.0, 250.0] + [290.0] * 41
    replay = TraceReplay(from_values(values, start="2022-01-01"), clock=ManualClock("2022-01-01"))
    config = CarbonServiceConfig(
        db_path=tmp_path / "reg.db",
        provider=replay,
        update_interval_s=60.0,  # the replay stays on one slot during the test
        allowed_hosts=frozenset({"127.0.0.1"}),
    )
    with ServiceThread(create_app(config)) as svc:
        forecast = httpx.get(f"{svc.url}/v1/intensity/forecast", params={"horizon": 12}).json()
        reply = httpx.get(f"{svc.url}/v1/best-window", params={"duration_h": 3, "within_h": 12})
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        expected = best_window(np.array(forecast["values_g_per_kwh"]), 3)
        assert answer["mean_g_per_kwh"] == pytest.approx(expected.mean_g_per_kwh)
        assert answer["saving_pct"] == pytest.approx(expected.saving_pct)
        bad = httpx.get(f"{svc.url}/v1/best-window", params={"duration_h": 5, "within_h": 2})
        assert bad.status_code == 422 and "cannot finish within" in bad.json()["detail"]
        junk = httpx.get(f"{svc.url}/v1/best-window", params={"duration_h": "x", "within_h": 2})
        assert junk.status_code == 422
        app = _app()
        via = runner.invoke(
            app,
            [
                "best-window",
                "--carbon-service",
                svc.url,
                "--duration-h",
                "3",
                "--within-h",
                "12",
                "--json",
            ],
        )
        assert via.exit_code == 0, via.output
        assert json.loads(via.output) == answer  # the command prints the service's answer
    down = runner.invoke(
        _app(), ["best-window", "--carbon-service", svc.url, "--duration-h", "1", "--within-h", "2"]
    )
    assert down.exit_code == 2 and "did not answer" in down.output
