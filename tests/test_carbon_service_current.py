"""The carbon service's current value agrees with its forecast and replay index at any pace."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from _servers import ServiceThread
from carbonscaler.providers import TraceReplay
from carbonscaler.providers.replay import ReplayClock
from carbonscaler.services import CarbonServiceConfig, create_app
from carbonscaler.trace import from_values

pytestmark = pytest.mark.integration  # starts a real server

VALUES = [100.0 + 10 * i for i in range(48)]


def test_current_follows_a_replay_running_at_its_own_pace(tmp_path: Path) -> None:
    wall = [0.0]  # the replay's wall clock, moved by the test: one second is one hourly slot
    clock = ReplayClock("2022-01-01", speedup=3600.0, monotonic=lambda: wall[0])
    replay = TraceReplay(from_values(VALUES, start="2022-01-01"), clock=clock, wrap=True)
    config = CarbonServiceConfig(
        db_path=tmp_path / "reg.db",
        provider=replay,
        update_interval_s=60.0,  # no update during the test: only the replay moves
        allowed_hosts=frozenset({"127.0.0.1"}),
    )
    with ServiceThread(create_app(config)) as svc:

        def views() -> tuple[float, float, int]:
            current = httpx.get(f"{svc.url}/v1/intensity/current").json()
            forecast = httpx.get(f"{svc.url}/v1/intensity/forecast", params={"horizon": 3})
            health = httpx.get(f"{svc.url}/healthz").json()
            return (
                current["value_g_per_kwh"],
                forecast.json()["values_g_per_kwh"][0],
                health["replay_index"],
            )

        assert views() == (100.0, 100.0, 0)
        wall[0] = 2.5  # two and a half slots later, between updates
        assert views() == (120.0, 120.0, 2)
        wall[0] = 7.0
        assert views() == (170.0, 170.0, 7)
