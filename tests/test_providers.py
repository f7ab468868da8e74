"""Providers against real local HTTP servers that answer in each API's formats."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from _servers import Answer, FakeAPI
from carbonscaler.providers import (
    CachedProvider,
    CarbonProvider,
    ElectricityMaps,
    FallbackChain,
    Forecast,
    IntensityReading,
    IntensitySeries,
    ManualClock,
    ProviderAuthError,
    ProviderConfigError,
    ProviderRateLimited,
    ProviderRequestError,
    ProviderResponseError,
    ProviderUnavailable,
    ReplayClock,
    TraceReplay,
    TTLCache,
    UKCarbonIntensity,
    UnknownZoneError,
    WattTime,
    live_provider,
    series_from_points,
)
from carbonscaler.providers._http import retry_after_s
from carbonscaler.providers.watttime import LBS_PER_MWH_IN_G_PER_KWH
from carbonscaler.trace import from_values

pytestmark = pytest.mark.integration  # starts real processes or servers


@pytest.fixture()
def api() -> Iterator[FakeAPI]:
    server = FakeAPI()
    yield server
    server.close()


class Sleeps(list[float]):
    """A sleep function that records instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def hour_floor(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


NOW = hour_floor(datetime.now(UTC))


def em(api: FakeAPI, **kwargs: object) -> ElectricityMaps:
    return ElectricityMaps("DE", api_key="secret", base_url=api.url, **kwargs)  # type: ignore[arg-type]


# -- Electricity Maps ----------------------------------------------------------------------


def test_electricitymaps_latest_sends_token_and_reads_value(api: FakeAPI) -> None:
    api.routes["/carbon-intensity/latest"] = [
        Answer(
            body={"zone": "DE", "carbonIntensity": 302, "datetime": iso(NOW), "isEstimated": True}
        )
    ]
    reading = em(api).current()
    assert reading == IntensityReading(
        "DE", 302.0, NOW, "electricitymaps", stale=False, fetched_at=reading.fetched_at
    )
    (call,) = api.calls("/carbon-intensity/latest")
    assert call.headers["auth-token"] == "secret"
    assert call.query == {"zone": "DE", "emissionFactorType": "direct"}


def test_electricitymaps_flags_old_values_stale(api: FakeAPI) -> None:
    old = NOW - timedelta(hours=5)
    api.routes["/carbon-intensity/latest"] = [
        Answer(body={"zone": "DE", "carbonIntensity": 300, "datetime": iso(old)})
    ]
    assert em(api).current().stale


def test_electricitymaps_history_forecast_and_zones(api: FakeAPI) -> None:
    hours = [NOW - timedelta(hours=h) for h in range(5, 0, -1)]
    api.routes["/carbon-intensity/history"] = [
        Answer(
            body={
                "zone": "DE",
                "history": [
                    {"carbonIntensity": 100 + i, "datetime": iso(t)} for i, t in enumerate(hours)
                ]
                + [{"carbonIntensity": None, "datetime": iso(NOW)}],  # an hour without data
            }
        )
    ]
    series = em(api).history(NOW - timedelta(hours=4), NOW)
    assert series.values_g_per_kwh == (101.0, 102.0, 103.0, 104.0)
    assert series.start == NOW - timedelta(hours=4) and series.step_s == 3600

    api.routes["/carbon-intensity/forecast"] = [
        Answer(
            body={
                "zone": "DE",
                "forecast": [
                    {"carbonIntensity": 200 + h, "datetime": iso(NOW + timedelta(hours=h))}
                    for h in range(72)
                ],
                "updatedAt": iso(NOW),
            }
        )
    ]
    forecast = em(api, emission_factor="lifecycle").forecast(3)
    assert isinstance(forecast, Forecast)
    assert forecast.values_g_per_kwh == (200.0, 201.0, 202.0)
    assert api.calls("/carbon-intensity/forecast")[0].query["emissionFactorType"] == "lifecycle"

    api.routes["/zones"] = [Answer(body={"FR": {"zoneName": "France"}, "DE": {"zoneName": "DE"}})]
    assert em(api).zones() == ["DE", "FR"]


def test_electricitymaps_past_range_for_old_windows(api: FakeAPI) -> None:
    start = datetime(2023, 3, 1, tzinfo=UTC)
    api.routes["/carbon-intensity/past-range"] = [
        Answer(
            body={
                "zone": "DE",
                "data": [
                    {"carbonIntensity": 50 * (h + 1), "datetime": iso(start + timedelta(hours=h))}
                    for h in range(3)
                ],
            }
        )
    ]
    series = em(api).history(start, start + timedelta(hours=3))
    assert series.values_g_per_kwh == (50.0, 100.0, 150.0)
    query = api.calls("/carbon-intensity/past-range")[0].query
    assert query["start"] == "2023-03-01T00:00:00Z" and query["end"] == "2023-03-01T03:00:00Z"


def test_electricitymaps_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELECTRICITYMAPS_API_KEY", raising=False)
    with pytest.raises(ProviderConfigError, match="ELECTRICITYMAPS_API_KEY"):
        ElectricityMaps("DE")
    monkeypatch.setenv("ELECTRICITYMAPS_API_KEY", "from-env")
    assert ElectricityMaps("DE")._headers == {"auth-token": "from-env"}


def test_401_is_an_auth_error_and_not_retried(api: FakeAPI) -> None:
    api.routes["/carbon-intensity/latest"] = [Answer(401, {"message": "Invalid auth-token"})]
    with pytest.raises(ProviderAuthError, match=r"Invalid auth-token.*ELECTRICITYMAPS_API_KEY"):
        em(api).current()
    assert len(api.calls("/carbon-intensity/latest")) == 1


def test_429_honours_retry_after_then_succeeds(api: FakeAPI) -> None:
    ok = Answer(body={"zone": "DE", "carbonIntensity": 10, "datetime": iso(NOW)})
    api.routes["/carbon-intensity/latest"] = [
        Answer(429, {"error": "slow down"}, {"Retry-After": "3"}),
        ok,
    ]
    sleeps = Sleeps()
    assert em(api, sleep=sleeps).current().value_g_per_kwh == 10.0
    assert sleeps == [3.0]


def test_429_with_a_long_retry_after_fails_fast_until_then(api: FakeAPI) -> None:
    api.routes["/carbon-intensity/latest"] = [Answer(429, {}, {"Retry-After": "3600"})]
    provider = em(api, sleep=Sleeps())
    with pytest.raises(ProviderRateLimited) as caught:
        provider.current()
    assert caught.value.retry_after_s == 3600
    with pytest.raises(ProviderRateLimited, match="not calling again"):
        provider.current()
    assert len(api.calls("/carbon-intensity/latest")) == 1  # the second call stayed local


def test_5xx_retries_with_exponential_backoff_then_gives_up(api: FakeAPI) -> None:
    api.routes["/carbon-intensity/latest"] = [Answer(503, {"error": "maintenance"})]
    sleeps = Sleeps()
    with pytest.raises(ProviderUnavailable, match=r"HTTP 503.*maintenance"):
        # The jitter's random draw fixed at 0: the delays are the backoff itself.
        em(api, sleep=sleeps, max_retries=3, backoff_s=0.5, rng=lambda: 0.0).current()
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(api.calls("/carbon-intensity/latest")) == 4


def test_backoff_has_jitter_within_bounds(api: FakeAPI) -> None:
    api.routes["/carbon-intensity/latest"] = [Answer(502, b"bad gateway")]
    sleeps = Sleeps()
    provider = em(api, sleep=sleeps, max_retries=4, backoff_s=1.0, max_wait_s=5.0)
    with pytest.raises(ProviderUnavailable, match="HTTP 502"):
        provider.current()
    assert len(sleeps) == 4
    for slept, full in zip(sleeps, [1.0, 2.0, 4.0, 5.0], strict=True):
        assert full / 2 <= slept <= full, sleeps  # the default jitter takes off up to half
    fixed = Sleeps()
    with pytest.raises(ProviderUnavailable):
        em(api, sleep=fixed, max_retries=2, backoff_s=1.0, jitter=0.5, rng=lambda: 1.0).current()
    assert fixed == [0.5, 1.0]  # the largest draw: exactly half of each


def test_429s_and_timeouts_are_retried_and_4xx_are_not(api: FakeAPI) -> None:
    ok = Answer(body={"zone": "DE", "carbonIntensity": 5, "datetime": iso(NOW)})
    api.routes["/carbon-intensity/latest"] = [
        Answer(429, {"error": "slow down"}, {"Retry-After": "2"}),
        Answer(200, {}, delay_s=1.0),  # times out
        ok,
    ]
    sleeps = Sleeps()
    provider = em(api, sleep=sleeps, timeout_s=0.3, rng=lambda: 0.0)
    assert provider.current().value_g_per_kwh == 5.0
    assert sleeps == [2.0, 1.0]  # as asked, then the backoff's second step
    assert len(api.calls("/carbon-intensity/latest")) == 3
    for status in (400, 401, 403, 404, 422):
        api.requests.clear()
        api.routes["/carbon-intensity/latest"] = [Answer(status, {"error": "no"}), ok]
        with pytest.raises(
            (ProviderRequestError, ProviderAuthError, UnknownZoneError), match=f"HTTP {status}"
        ):
            em(api, sleep=sleeps).current()
        assert len(api.calls("/carbon-intensity/latest")) == 1, status
    assert sleeps == [2.0, 1.0]  # none of those slept
    refused = Sleeps()  # nothing listens on port 9: connection errors are retried too
    dead = ElectricityMaps(
        "DE", api_key="k", base_url="http://127.0.0.1:9", sleep=refused, rng=lambda: 0.0
    )
    with pytest.raises(ProviderUnavailable, match="cannot reach"):
        dead.current()
    assert refused == [0.5, 1.0]


def test_429s_until_the_retries_run_out_are_unavailable(api: FakeAPI) -> None:
    api.routes["/carbon-intensity/latest"] = [Answer(429, {"error": "busy"}, {"Retry-After": "1"})]
    sleeps = Sleeps()
    with pytest.raises(ProviderUnavailable, match=r"HTTP 429.*busy.*after 2 retries") as caught:
        em(api, sleep=sleeps, rng=lambda: 0.0).current()
    assert not isinstance(caught.value, ProviderRateLimited)  # a fallback may answer
    assert sleeps == [1.0, 1.0]
    assert len(api.calls("/carbon-intensity/latest")) == 3


def test_5xx_then_success(api: FakeAPI) -> None:
    ok = Answer(body={"zone": "DE", "carbonIntensity": 7, "datetime": iso(NOW)})
    api.routes["/carbon-intensity/latest"] = [Answer(500, b"oops"), ok]
    assert em(api, sleep=Sleeps()).current().value_g_per_kwh == 7.0


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (Answer(200, b"<html>not json</html>"), "non-JSON"),
        (Answer(200, {"zone": "DE"}), "carbonIntensity"),
        (Answer(200, {"carbonIntensity": "high", "datetime": "2024-01-01T00:00Z"}), "number"),
        (Answer(200, {"carbonIntensity": -5, "datetime": "2024-01-01T00:00Z"}), "impossible"),
        (Answer(200, {"carbonIntensity": 5, "datetime": "yesterday"}), "ISO 8601"),
        (Answer(200, [1, 2]), "unexpected response"),
    ],
)
def test_malformed_bodies_are_response_errors(api: FakeAPI, answer: Answer, message: str) -> None:
    api.routes["/carbon-intensity/latest"] = [answer]
    with pytest.raises(ProviderResponseError, match=message):
        em(api).current()


def test_other_4xx_and_404(api: FakeAPI) -> None:
    api.routes["/carbon-intensity/latest"] = [Answer(400, {"error": "zone is required"})]
    with pytest.raises(ProviderRequestError, match="zone is required"):
        em(api).current()
    api.routes["/carbon-intensity/latest"] = [Answer(404, {"error": "Zone 'XX' does not exist"})]
    with pytest.raises(UnknownZoneError, match="XX"):
        em(api).current("XX")


def test_timeouts_and_unreachable_servers_are_unavailable(api: FakeAPI) -> None:
    api.routes["/carbon-intensity/latest"] = [Answer(200, {}, delay_s=1.0)]
    with pytest.raises(ProviderUnavailable, match=r"timed out after 0\.2 s"):
        em(api, timeout_s=0.2, max_retries=0).current()
    dead = ElectricityMaps("DE", api_key="k", base_url="http://127.0.0.1:9", max_retries=0)
    with pytest.raises(ProviderUnavailable, match="cannot reach"):
        dead.current()


def test_retry_after_parsing() -> None:
    now = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after_s("120") == 120.0
    assert retry_after_s("Mon, 01 Jan 2024 12:00:30 GMT", now=now) == 30.0
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None


# -- WattTime ------------------------------------------------------------------------------


def watttime_routes(api: FakeAPI, units: str = "lbs_co2_per_mwh") -> None:
    api.routes["/login"] = lambda r: Answer(body={"token": f"tok{len(api.calls('/login'))}"})
    points = [
        {"point_time": iso(NOW + timedelta(minutes=5 * i)), "value": 1000.0 + i} for i in range(24)
    ]
    meta = {"region": "CAISO_NORTH", "signal_type": "co2_moer", "units": units}
    api.routes["/v3/forecast"] = [
        Answer(body={"data": points, "meta": {**meta, "generated_at": iso(NOW)}})
    ]
    api.routes["/v3/historical"] = [Answer(body={"data": points[:12], "meta": meta})]
    api.routes["/v3/signal-index"] = [
        Answer(body={"data": [{"point_time": iso(NOW), "value": 57.0}], "meta": meta})
    ]
    api.routes["/v3/my-access"] = [
        Answer(
            body={
                "signal_types": [
                    {
                        "signal_type": "co2_moer",
                        "regions": [{"region": "CAISO_NORTH"}, {"region": "PJM_DC"}],
                    },
                    {"signal_type": "health_damage", "regions": [{"region": "OTHER"}]},
                ]
            }
        )
    ]


def wt(api: FakeAPI) -> WattTime:
    return WattTime("CAISO_NORTH", username="ann", password="pw", base_url=api.url)


def test_watttime_logs_in_once_and_converts_lbs_per_mwh(api: FakeAPI) -> None:
    watttime_routes(api)
    provider = wt(api)
    forecast = provider.forecast(6)
    assert forecast.step_s == 300 and len(forecast) == 6
    assert forecast.values_g_per_kwh[0] == pytest.approx(1000 * LBS_PER_MWH_IN_G_PER_KWH)
    assert api.calls("/v3/forecast")[0].query == {
        "region": "CAISO_NORTH",
        "signal_type": "co2_moer",
        "horizon_hours": "1",
    }
    reading = provider.current()
    assert reading.value_g_per_kwh == pytest.approx(1011 * LBS_PER_MWH_IN_G_PER_KWH)
    assert provider.signal_index() == (NOW, 57.0)
    assert provider.zones() == ["CAISO_NORTH", "PJM_DC"]
    (login,) = api.calls("/login")
    assert login.headers["authorization"] == "Basic " + base64.b64encode(b"ann:pw").decode()
    assert {r.headers["authorization"] for r in api.calls("/v3/*")} == {"Bearer tok1"}


def test_watttime_logs_in_again_when_the_token_is_refused(api: FakeAPI) -> None:
    watttime_routes(api)
    good = api.routes["/v3/forecast"]
    assert isinstance(good, list)
    api.routes["/v3/forecast"] = [Answer(401, {"error": "token expired"}), good[0]]
    assert len(wt(api).forecast(2)) == 2
    assert len(api.calls("/login")) == 2


def test_watttime_bad_login_and_units(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    api.routes["/login"] = [Answer(403, {"error": "Unauthorized"})]
    with pytest.raises(ProviderAuthError, match="WATTTIME_USER"):
        wt(api).forecast(1)
    api.routes["/login"] = [Answer(body={"token": "t"})]
    watttime_routes(api, units="furlongs")
    api.routes["/login"] = [Answer(body={"token": "t"})]
    with pytest.raises(ProviderResponseError, match="unknown units"):
        wt(api).forecast(1)
    monkeypatch.delenv("WATTTIME_USER", raising=False)
    monkeypatch.delenv("WATTTIME_PASSWORD", raising=False)
    with pytest.raises(ProviderConfigError, match="WATTTIME_PASSWORD"):
        WattTime("CAISO_NORTH")


# -- UK Carbon Intensity API ---------------------------------------------------------------


def half_hours(n: int, start: datetime, actual: bool = True) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(n):
        t = start + timedelta(minutes=30 * i)
        out.append(
            {
                "from": t.strftime("%Y-%m-%dT%H:%MZ"),
                "to": (t + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%MZ"),
                "intensity": {
                    "forecast": 100 + i,
                    "actual": 90 + i if actual else None,
                    "index": "low",
                },
            }
        )
    return out


def test_uk_national_current_prefers_actual(api: FakeAPI) -> None:
    api.routes["/intensity"] = [Answer(body={"data": half_hours(1, NOW)})]
    reading = UKCarbonIntensity(base_url=api.url).current()
    assert (reading.zone, reading.value_g_per_kwh, reading.timestamp) == ("GB", 90.0, NOW)
    api.routes["/intensity"] = [Answer(body={"data": half_hours(1, NOW, actual=False)})]
    assert UKCarbonIntensity(base_url=api.url).current().value_g_per_kwh == 100.0


def test_uk_regional_current_and_forecast(api: FakeAPI) -> None:
    region = {"regionid": 13, "dnoregion": "UKPN London", "shortname": "London"}
    api.routes["/regional/regionid/13"] = [
        Answer(body={"data": [{**region, "data": half_hours(1, NOW, actual=False)}]})
    ]
    api.routes["/regional/intensity/*"] = [
        Answer(body={"data": {**region, "data": half_hours(96, NOW, actual=False)}})
    ]
    provider = UKCarbonIntensity("London", base_url=api.url)
    assert provider.current().zone == "GB-13"
    forecast = provider.forecast(4)
    assert forecast.values_g_per_kwh == (100.0, 101.0, 102.0, 103.0)
    assert forecast.step_s == 1800
    (call,) = api.calls("/regional/intensity/*")
    assert call.path.endswith("/fw48h/regionid/13")
    hourly = forecast.to_slots(3600)
    assert hourly.values_g_per_kwh == (100.5, 102.5) and hourly.start == NOW


def test_uk_national_forecast_and_history_in_chunks(api: FakeAPI) -> None:
    api.routes["/intensity/*"] = lambda r: Answer(
        body={"data": half_hours(96, NOW, actual=False)}
        if r.path.endswith("fw48h")
        else {"data": half_hours(4, datetime(2024, 1, 1, tzinfo=UTC))}
    )
    provider = UKCarbonIntensity(base_url=api.url)
    assert len(provider.forecast(96)) == 96
    start = datetime(2024, 1, 1, tzinfo=UTC)
    series = provider.history(start, start + timedelta(days=20))
    assert series.values_g_per_kwh == (90.0, 91.0, 92.0, 93.0)
    spans = [r.path for r in api.calls("/intensity/*") if not r.path.endswith("fw48h")]
    assert spans == ["/intensity/2024-01-01T00:00Z/2024-01-15T00:00Z",
                     "/intensity/2024-01-15T00:00Z/2024-01-21T00:00Z"]  # fmt: skip


def test_uk_errors(api: FakeAPI) -> None:
    with pytest.raises(UnknownZoneError, match=r"GB-1 \.\. GB-17"):
        UKCarbonIntensity("Atlantis")
    api.routes["/intensity"] = [
        Answer(400, {"error": {"code": "400 Bad Request", "message": "Invalid date"}})
    ]
    with pytest.raises(ProviderRequestError, match="Invalid date"):
        UKCarbonIntensity(base_url=api.url).current()
    assert UKCarbonIntensity().zones()[:3] == ["GB", "GB-1", "GB-2"]


# -- cache, chain, staleness ---------------------------------------------------------------


class Stub(CarbonProvider):
    """A provider answering from a list of values, or failing, counting calls."""

    name = "stub"

    def __init__(self, zone: str = "Z", value: float = 100.0, fail: bool = False) -> None:
        super().__init__(zone)
        self.value, self.fail, self.calls = value, fail, 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.fail:
            raise ProviderUnavailable(self.name, f"{self.zone} is down")

    def current(self, zone: str | None = None) -> IntensityReading:
        self._maybe_fail()
        return IntensityReading(self._zone(zone), self.value, NOW, f"stub-{self.zone}")

    def history(self, start: datetime, end: datetime, zone: str | None = None) -> IntensitySeries:
        self._maybe_fail()
        return IntensitySeries(self._zone(zone), start, 3600, (self.value,), "stub")

    def forecast(self, horizon_slots: int, zone: str | None = None) -> Forecast:
        self._maybe_fail()
        return Forecast(self._zone(zone), NOW, 3600, (self.value,) * horizon_slots, "stub")

    def zones(self) -> list[str]:
        self._maybe_fail()
        return [self.zone]


class FakeTime:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_cache_hits_within_ttl_and_refetches_after(tmp_path: Path) -> None:
    clock = FakeTime()
    inner = Stub()
    cached = CachedProvider(inner, TTLCache(tmp_path, clock=clock), current_ttl_s=60)
    first = cached.current()
    assert cached.current() == first and inner.calls == 1
    assert cached.cache.hits == 1 and cached.cache.misses == 1
    cached.forecast(3)
    cached.forecast(3)
    assert inner.calls == 2
    clock.t += 61
    cached.current()
    assert inner.calls == 3


def test_disk_cache_survives_a_restart_and_ignores_corrupt_files(tmp_path: Path) -> None:
    clock = FakeTime()
    TTLCache(tmp_path, clock=clock).put("k", {"a": 1}, 60)
    assert TTLCache(tmp_path, clock=clock).get("k") is not None  # a new process finds it
    assert not list(tmp_path.glob(".tmp-*"))  # written then renamed: no temporary left
    for path in tmp_path.glob("*.json"):
        path.write_text("{half a")
    assert TTLCache(tmp_path, clock=clock).get("k") is None
    cache = TTLCache(tmp_path, clock=clock)
    cache.put("old", 1, 10)
    clock.t += 11
    assert cache.get("old") is None and cache.get_any("old") is not None
    assert cache.prune() == 1


def test_chain_uses_the_first_provider_that_answers() -> None:
    primary, secondary = Stub("A", 1.0), Stub("B", 2.0)
    chain = FallbackChain([primary, secondary])
    assert chain.current().value_g_per_kwh == 1.0 and secondary.calls == 0
    primary.fail = True
    reading = chain.current()
    assert reading.value_g_per_kwh == 2.0 and not reading.stale
    assert chain.last_errors == ["stub: A is down"]
    assert chain.zones() == ["B"]
    assert chain.history(NOW, NOW + timedelta(hours=1)).values_g_per_kwh == (2.0,)


def test_chain_falls_back_to_the_last_known_value_flagged_stale(tmp_path: Path) -> None:
    primary, secondary = Stub("A", 1.0), Stub("B", 2.0)
    chain = FallbackChain([primary, secondary], cache=TTLCache(tmp_path))
    chain.current()
    chain.forecast(2)
    primary.fail = secondary.fail = True
    reading = chain.current()
    assert reading.value_g_per_kwh == 1.0 and reading.stale
    assert reading.source == "stub-A (last known)"
    assert chain.forecast(2).stale
    with pytest.raises(ProviderUnavailable, match="A is down; stub: B is down"):
        chain.forecast(5)  # never obtained: nothing to fall back on
    with pytest.raises(ProviderUnavailable):
        chain.history(NOW, NOW + timedelta(hours=1))
    # A restarted process with the same disk cache still knows the last value.
    again = FallbackChain([Stub("A", fail=True), Stub("B", fail=True)], cache=TTLCache(tmp_path))
    assert again.current().stale and again.current().value_g_per_kwh == 1.0


def test_chain_of_real_clients_falls_back_in_order(api: FakeAPI) -> None:
    api.routes["/carbon-intensity/latest"] = [Answer(500, {"error": "down"})]
    api.routes["/intensity"] = [Answer(body={"data": half_hours(1, NOW)})]
    chain = FallbackChain(
        [em(api, max_retries=0), CachedProvider(UKCarbonIntensity(base_url=api.url))]
    )
    reading = chain.current()
    assert reading.source == "ukgrid" and reading.value_g_per_kwh == 90.0
    assert "HTTP 500" in chain.last_errors[0]
    assert [r.path for r in api.requests] == ["/carbon-intensity/latest", "/intensity"]


def test_live_provider_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELECTRICITYMAPS_API_KEY", raising=False)
    chain = live_provider("ukgrid:GB-13")
    assert chain.name == "chain(ukgrid)" and chain.zone == "GB-13"
    with pytest.raises(ProviderConfigError, match="ELECTRICITYMAPS_API_KEY"):
        live_provider("DE")
    with pytest.raises(ProviderConfigError, match="PROVIDER:ZONE"):
        live_provider("nope:DE")
    monkeypatch.setenv("ELECTRICITYMAPS_API_KEY", "k")
    assert live_provider("GB").name == "chain(electricitymaps,ukgrid)"


def test_series_helpers() -> None:
    pts = [(NOW + timedelta(minutes=30 * i), float(i)) for i in (0, 1, 3)]  # one gap
    series = series_from_points(IntensitySeries, pts, zone="Z", source="s")
    assert series.step_s == 1800 and series.values_g_per_kwh == (0.0, 1.0, 1.0, 3.0)
    assert IntensitySeries.from_json(json.loads(json.dumps(series.to_json()))) == series
    with pytest.raises(ValueError, match="finite"):
        IntensitySeries("Z", NOW, 60, (-1.0,), "s")


# -- trace replay and clocks ---------------------------------------------------------------


def test_replay_clock_accelerates() -> None:
    wall = [0.0]
    clock = ReplayClock.per_slot(
        "2022-01-01", slot_s=3600, seconds_per_slot=0.5, monotonic=lambda: wall[0]
    )
    wall[0] = 1.25
    assert clock.now() == datetime(2022, 1, 1, 2, 30, tzinfo=UTC)
    clock.seek(datetime(2022, 1, 5, tzinfo=UTC))
    wall[0] = 1.75
    assert clock.now() == datetime(2022, 1, 5, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="positive"):
        ReplayClock("2022-01-01", speedup=0)


def test_trace_replay_serves_the_slot_its_clock_points_to() -> None:
    trace = from_values([10.0, 20.0, 30.0, 40.0], start="2022-01-01")
    clock = ManualClock("2022-01-01")
    replay = TraceReplay(trace, clock=clock)
    assert replay.current().value_g_per_kwh == 10.0
    clock.advance(timedelta(hours=1, minutes=59))
    assert replay.current().value_g_per_kwh == 20.0 and replay.index == 1
    assert replay.forecast(5).values_g_per_kwh == (20.0, 30.0, 40.0, 10.0, 20.0)  # wraps
    history = replay.history(
        datetime(2022, 1, 1, tzinfo=UTC), datetime(2022, 1, 1, 1, 30, tzinfo=UTC)
    )
    assert history.values_g_per_kwh == (10.0, 20.0)
    clock.advance(timedelta(hours=3))
    assert replay.current().value_g_per_kwh == 10.0  # wrapped to the first slot
    assert replay.current().timestamp == datetime(2022, 1, 1, 4, tzinfo=UTC)  # time goes on
    replay.seek(2)
    assert replay.current().value_g_per_kwh == 30.0
    with pytest.raises(ProviderRequestError, match="outside the trace"):
        replay.seek(4)
    with pytest.raises(UnknownZoneError, match="synthetic"):
        replay.current("DE")


def test_trace_replay_without_wrap_and_start_checks() -> None:
    trace = from_values([1.0, 2.0], start="2022-01-01")
    replay = TraceReplay(
        trace, start="2022-01-01T01:00", clock=ManualClock("2000-01-01"), wrap=False
    )
    assert replay.current().value_g_per_kwh == 2.0
    with pytest.raises(ProviderRequestError, match="wrap=True"):
        replay.forecast(3)
    with pytest.raises(ProviderRequestError, match="outside the trace"):
        TraceReplay(trace, start="2023-01-01")


def test_trace_replay_of_a_real_file_in_accelerated_time(shared_dir: Path) -> None:
    path = shared_dir / "traces" / "electricitymaps-fedstale" / "NL_2022_hourly.csv"
    replay = TraceReplay.from_file(path, start="2022-06-01", seconds_per_slot=0.01)
    assert replay.zone == "NL" and replay.source == "replay:NL_2022_hourly.csv"
    first = replay.index
    assert first == replay.trace.index_of("2022-06-01")
    assert isinstance(replay.clock, ReplayClock) and replay.clock.speedup == 360000
    forecast = replay.forecast(24)
    assert list(forecast.values_g_per_kwh) == pytest.approx(
        replay.trace.values[forecast_start(replay, forecast) :][:24].tolist()
    )


def forecast_start(replay: TraceReplay, forecast: Forecast) -> int:
    return replay.trace.index_of(forecast.start.replace(tzinfo=None))


def test_http_clients_always_have_a_timeout(api: FakeAPI) -> None:
    for provider in (em(api), wt(api), UKCarbonIntensity(base_url=api.url)):
        timeout = provider._client.timeout
        assert isinstance(timeout, httpx.Timeout)
        assert None not in (timeout.connect, timeout.read, timeout.write, timeout.pool)
