"""Power in a measured profile: the machine's meter over each count's window, else the node
estimate (idle power once while running, plus a dynamic share per worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from carbonscaler.backends.profiler import profile_workload
from carbonscaler.power.meter import (
    DEFAULT_IDLE_W,
    DEFAULT_WORKER_W,
    MeterError,
    PowerMeter,
    PowerReading,
    estimated_power,
)

ROOT = Path(__file__).resolve().parents[1]
COUNTER = f"{{python}} {ROOT / 'tests/workloads/counter.py'}"
COUNTER_ENV = {"TOTAL_STEPS": "100000", "STEP_S": "0.02"}


def test_node_estimate_pays_idle_once_and_nothing_when_suspended() -> None:
    power = estimated_power(30.0, 15.0)
    assert power(0) == (0.0, "estimated:30W-idle+15W-per-worker")
    assert power(1)[0] == 45.0
    assert power(2)[0] == 60.0
    # The second worker costs only its dynamic share: energy per worker falls as k grows.
    assert power(2)[0] / 2 < power(1)[0]
    assert estimated_power()(1)[0] == DEFAULT_IDLE_W + DEFAULT_WORKER_W


@pytest.mark.parametrize(("idle", "dynamic"), [(-1.0, 15.0), (30.0, -1.0), (0.0, 0.0)])
def test_node_estimate_refuses_impossible_figures(idle: float, dynamic: float) -> None:
    with pytest.raises(ValueError, match="idle_w >= 0 and per_worker_w >= 0"):
        estimated_power(idle, dynamic)


class ScriptedMeter(PowerMeter):
    """Answers each read from a script: a wattage, or an exception to raise."""

    source = "measured:test"

    def __init__(self, script: list[float | MeterError]) -> None:
        self.script = list(script)
        self.reads = 0

    def read(self) -> PowerReading:
        self.reads += 1
        answer = self.script.pop(0)
        if isinstance(answer, MeterError):
            raise answer
        return PowerReading(answer, 1.0, self.source)


@pytest.mark.integration
def test_profile_reads_the_meter_over_each_window_and_falls_back_per_count(
    tmp_path: Path,
) -> None:
    # Count 1: window start read (discarded), window end 70 W. Count 2: a reset at the start
    # is harmless, but the window's own read fails too, so count 2 uses the estimate.
    meter = ScriptedMeter([999.0, 70.0, MeterError("reset"), MeterError("reset")])
    result = profile_workload(
        COUNTER,
        tmp_path / "scratch",
        max_workers=2,
        seconds_each=0.5,
        seconds_per_slot=3600.0,
        slot_hours=1.0,
        env=COUNTER_ENV,
        size_env=None,
        power=estimated_power(10.0, 5.0),
        meter=meter,
    )
    if result.profile.max_servers < 2:
        pytest.skip("needs 2 cores to profile 2 workers")  # the profiler caps at the cores
    assert meter.reads == 4
    assert list(result.profile.power_w) == [0.0, 70.0, 70.0]  # 20 W estimate, made monotone
    assert result.power_source == "estimated:10W-idle+5W-per-worker,measured:test"


@pytest.mark.integration
def test_profile_without_a_meter_is_labelled_an_estimate(tmp_path: Path) -> None:
    result = profile_workload(
        COUNTER,
        tmp_path / "scratch",
        max_workers=1,
        seconds_each=0.5,
        seconds_per_slot=3600.0,
        slot_hours=1.0,
        env=COUNTER_ENV,
    )
    assert list(result.profile.power_w) == [0.0, DEFAULT_IDLE_W + DEFAULT_WORKER_W]
    assert result.power_source.startswith("estimated:")
