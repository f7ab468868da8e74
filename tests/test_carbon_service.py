"""The carbon service, started for real with uvicorn on a free 127.0.0.1 port.

Subscribers are real HTTP servers; pushes, restarts, auth, hostile input and a schemathesis
fuzz of the served OpenAPI document all go over loopback.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance
from typer.testing import CliRunner

from _servers import Answer, FakeAPI, Receiver, ServiceThread
from carbonscaler.cli.carbon_service import carbon_service_command
from carbonscaler.forecast import FORECASTERS
from carbonscaler.providers import (
    CachedProvider,
    CarbonProvider,
    FallbackChain,
    Forecast,
    IntensityReading,
    IntensitySeries,
    ManualClock,
    ProviderUnavailable,
    TraceReplay,
    UKCarbonIntensity,
)
from carbonscaler.security import DestinationPolicy, parse_networks
from carbonscaler.services import CarbonServiceConfig, create_app
from carbonscaler.services._push import PushClient, PushProtocolError
from carbonscaler.services.carbon import ADDRESS_PATTERN, ForecasterName
from carbonscaler.trace import TraceError, TraceWarning, from_values, load_trace

pytestmark = pytest.mark.integration  # starts real processes or servers

VALUES = [100.0 + 10 * i for i in range(48)]  # two days, hourly, rising
HOSTILE = "x'); DROP TABLE subscribers;--"
TOKEN = "s3cret-token"


def replay(values: list[float] = VALUES, start: str = "2022-01-01") -> TraceReplay:
    return TraceReplay(from_values(values, start=start), clock=ManualClock(start))


def config(tmp_path: Path, **options: Any) -> CarbonServiceConfig:
    defaults: dict[str, Any] = {
        "db_path": tmp_path / "reg.db",
        "provider": replay(),
        "update_interval_s": 0.2,
        "prediction_window": 6,
        "percentile_window": 4,
        "push_timeout_s": 1.0,
        "push_backoff_s": 0.05,
        "allowed_hosts": frozenset({"127.0.0.1"}),
    }
    return CarbonServiceConfig(**{**defaults, **options})


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = Receiver(slow_s=3.0)
    yield server
    server.close()


def test_register_then_receive_a_push_every_update(tmp_path: Path, receiver: Receiver) -> None:
    with ServiceThread(create_app(config(tmp_path))) as svc:
        answer = httpx.post(
            svc.url + "/", json={"app_name": "scaler", "address": receiver.url + "/a"}
        )
        assert answer.status_code == 200
        body = answer.json()
        assert set(body) >= {"carbon_intensity", "carbon_percentile", "prediction"}
        assert len(body["prediction"]) == 6 and body["stale"] is False
        pushes = receiver.wait_for("/a", 3)
    # One slot per update, as the reference: consecutive pushes step through the trace.
    values = [p["carbon_intensity"] for p in pushes]
    assert values[1] - values[0] == 10.0 and values[2] - values[1] == 10.0
    first = pushes[0]
    start = VALUES.index(first["carbon_intensity"])
    assert first["prediction"] == VALUES[start : start + 6]
    # The reference's percentile: share of the previous 4 slots (wrapping around the start
    # of the trace) at or below the current one.
    window = [VALUES[(start - k) % len(VALUES)] for k in range(4, 0, -1)]
    expected = sum(v <= first["carbon_intensity"] for v in window) / 4
    assert first["carbon_percentile"] == expected


def test_slow_and_dead_subscribers_delay_nobody(tmp_path: Path, receiver: Receiver) -> None:
    cfg = config(tmp_path, max_failures=2, update_interval_s=0.25)
    with ServiceThread(create_app(cfg)) as svc:
        for name, address in [
            ("slow", receiver.url + "/slow"),
            ("dead", "http://127.0.0.1:9/gone"),
            ("failing", receiver.url + "/fail"),
            ("fast", receiver.url + "/fast"),
        ]:
            r = httpx.post(
                svc.url + "/v1/subscriptions", json={"app_name": name, "address": address}
            )
            assert r.status_code == 201 and r.json()["key"]
        started = time.monotonic()
        receiver.wait_for("/fast", 6, timeout_s=5)
        # Six updates at 0.25 s while /slow takes 3 s per push: the fast one never waited.
        assert time.monotonic() - started < 2.5
        subs = {s["app_name"]: s for s in httpx.get(svc.url + "/v1/subscriptions").json()}
        assert subs["fast"]["active"] and subs["fast"]["failures"] == 0
        assert subs["fast"]["pushes_ok"] >= 4  # outcomes are stored once per interval
        for name in ("dead", "failing"):
            assert not subs[name]["active"], subs[name]
            assert subs[name]["last_error"]
        assert subs["failing"]["last_error"] == "HTTP 500"
        # The slow one times out (1 s) on each push until it too is marked inactive.
        deadline = time.monotonic() + 5
        while subs["slow"]["active"] and time.monotonic() < deadline:
            time.sleep(0.1)
            subs = {s["app_name"]: s for s in httpx.get(svc.url + "/v1/subscriptions").json()}
        assert not subs["slow"]["active"], str(subs["slow"])
        assert subs["slow"]["last_error"] == "timed out after 1 s"
        metrics = httpx.get(svc.url + "/metrics").text
        assert 'carbonscaler_subscribers{state="inactive"} 3.0' in metrics
        # Registering again revives an inactive subscriber.
        again = httpx.post(
            svc.url + "/v1/subscriptions",
            json={"app_name": "dead", "address": "http://127.0.0.1:9/gone"},
        ).json()
        assert again["active"] and again["failures"] == 0 and again["key"] is None


def test_restart_keeps_subscribers_and_the_replay_position(tmp_path: Path) -> None:
    cfg = config(tmp_path, update_interval_s=3600)
    with ServiceThread(create_app(cfg)) as svc:
        for i, name in enumerate(["one", HOSTILE, "three"]):
            address = f"http://127.0.0.1:9/{i}"
            r = httpx.post(svc.url + "/", json={"app_name": name, "address": address})
            assert r.status_code == 200
        assert httpx.post(svc.url + "/set_index", data={"idx": "7"}).status_code == 200
        before = httpx.get(svc.url + "/v1/subscriptions").json()
    # The injection attempt is stored as plain text and the table is intact.
    with sqlite3.connect(tmp_path / "reg.db") as db:
        names = [r[0] for r in db.execute("SELECT app_name FROM subscribers ORDER BY id")]
    assert names == ["one", HOSTILE, "three"]
    with ServiceThread(create_app(config(tmp_path, update_interval_s=3600))) as svc:
        after = httpx.get(svc.url + "/v1/subscriptions").json()
        assert [s["app_name"] for s in after] == [s["app_name"] for s in before]
        current = httpx.get(svc.url + "/v1/intensity/current").json()
        assert current["value_g_per_kwh"] == VALUES[7]


def test_reference_database_is_imported(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "reg.db") as db:
        db.execute("CREATE TABLE registration (app_name TEXT, address TEXT UNIQUE)")
        db.execute("INSERT INTO registration VALUES ('CarbonScaler', 'http://127.0.0.1:8899')")
    with ServiceThread(create_app(config(tmp_path, update_interval_s=3600))) as svc:
        (sub,) = httpx.get(svc.url + "/v1/subscriptions").json()
    assert (sub["app_name"], sub["address"]) == ("CarbonScaler", "http://127.0.0.1:8899")


def test_admin_endpoints_need_the_token(tmp_path: Path, receiver: Receiver) -> None:
    cfg = config(tmp_path, token=TOKEN, update_interval_s=30)
    admin = {"Authorization": f"Bearer {TOKEN}"}
    with ServiceThread(create_app(cfg)) as svc:
        # With a token set, registering needs it too (issue 16, item 5).
        me = {"app_name": "me", "address": receiver.url + "/me"}
        for path in ("/", "/v1/subscriptions"):
            assert httpx.post(svc.url + path, json=me).status_code == 401
        mine = httpx.post(svc.url + "/v1/subscriptions", json=me, headers=admin).json()
        theirs = httpx.post(
            svc.url + "/v1/subscriptions",
            json={"app_name": "t", "address": receiver.url + "/t"},
            headers=admin,
        ).json()
        r = httpx.post(svc.url + "/set_index", data={"idx": "20"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        wrong = {"Authorization": "Bearer nope"}
        assert (
            httpx.post(svc.url + "/set_index", data={"idx": "20"}, headers=wrong).status_code == 401
        )
        assert (
            httpx.post(svc.url + "/set_index", data={"idx": "20"}, headers=admin).status_code == 200
        )
        # set_index pushes the new position at once.
        push = receiver.wait_for("/me", 1)[-1]
        assert push["carbon_intensity"] == VALUES[20]
        delete = svc.url + "/v1/subscriptions/{}"
        own_key = {"Authorization": f"Bearer {mine['key']}"}
        assert httpx.delete(delete.format(theirs["id"]), headers=own_key).status_code == 401
        assert httpx.delete(delete.format(theirs["id"])).status_code == 401
        assert httpx.delete(delete.format(mine["id"]), headers=own_key).status_code == 204
        assert httpx.delete(delete.format(theirs["id"]), headers=admin).status_code == 204
        assert httpx.delete(delete.format(theirs["id"]), headers=admin).status_code == 404
        assert httpx.get(svc.url + "/v1/subscriptions").json() == []


@pytest.mark.parametrize(
    ("request_kwargs", "reason"),
    [
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, "json"),
        ({"json": {"app_name": "a"}}, "address"),
        ({"json": {"app_name": "a", "address": "ftp://127.0.0.1/x"}}, "http"),
        ({"json": {"app_name": "a", "address": "http://127.0.0.1:70000/"}}, "1-65535"),
        ({"json": {"app_name": "a", "address": "javascript:alert(1)"}}, "http"),
        ({"json": {"app_name": "a", "address": "http://evil.example/"}}, "not allowed"),
        ({"json": {"app_name": 5, "address": "http://127.0.0.1/"}}, "string"),
        ({"json": {"app_name": "", "address": "http://127.0.0.1/"}}, "at least 1"),
        ({"json": [1, 2]}, "dict"),
        ({"content": b"\xff\xfe", "headers": {"Content-Type": "application/json"}}, "json"),
    ],
)
def test_bad_bodies_get_4xx_with_a_reason(
    strict_url: str, request_kwargs: dict[str, Any], reason: str
) -> None:
    for path in ("/", "/v1/subscriptions"):
        r = httpx.post(strict_url + path, **request_kwargs)
        assert r.status_code == 422, r.text
        assert reason in r.text.lower()


def test_bad_queries_and_paths(service_url: str) -> None:
    checks = {
        "/v1/intensity/forecast?horizon=0": 422,
        "/v1/intensity/forecast?horizon=abc": 422,
        "/v1/intensity/forecast?method=magic": 422,
        "/v1/intensity/current?zone=DE": 404,
        "/v1/intensity/forecast?zone=DE": 404,
        f"/v1/subscriptions/{2**70}": 422,
        f"/v1/subscriptions/{10**15}": 404,
    }
    for path, status in checks.items():
        assert httpx.get(service_url + path).status_code == status, path
    r = httpx.post(service_url + "/set_index", data={"idx": "4800"})
    assert r.status_code == 422 and "less than or equal to 47" in r.text


def test_v1_api_zones_forecast_health_and_metrics(service_url: str) -> None:
    assert httpx.get(service_url + "/v1/zones").json() == {
        "zones": ["synthetic"],
        "default": "synthetic",
    }
    forecast = httpx.get(service_url + "/v1/intensity/forecast?horizon=30&method=uniform").json()
    assert len(forecast["values_g_per_kwh"]) == 30 and forecast["method"] == "uniform"
    assert forecast["step_s"] == 3600
    # The reference's names are aliases: REAL is the perfect forecast.
    for method in ("REAL", "real", "perfect"):
        perfect = httpx.get(service_url + f"/v1/intensity/forecast?horizon=5&method={method}")
        assert perfect.status_code == 200 and perfect.json()["method"] == "perfect", perfect.text
    health = httpx.get(service_url + "/healthz").json()
    assert health["status"] == "ok" and health["provider"] == "replay"
    metrics = httpx.get(service_url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in (
        'carbonscaler_carbon_intensity_g_per_kwh{zone="synthetic"}',
        "carbonscaler_pushes_sent_total",
        "carbonscaler_push_failures_total",
        'carbonscaler_subscribers{state="active"}',
        "carbonscaler_push_fanout_seconds_bucket",
    ):
        assert name in metrics.text
    doc = httpx.get(service_url + "/openapi.json").json()
    assert {"/", "/set_index", "/v1/intensity/current", "/v1/subscriptions"} <= set(doc["paths"])
    address = doc["components"]["schemas"]["Registration"]["properties"]["address"]
    assert address["pattern"] == ADDRESS_PATTERN


def test_forecaster_names_in_the_schema_match_the_library() -> None:
    model = get_args(ForecasterName)[0]
    assert tuple(model) == FORECASTERS


class Failing(CarbonProvider):
    """A live provider that never answers."""

    name = "down"

    def __init__(self) -> None:
        super().__init__("XX")

    def current(self, zone: str | None = None) -> IntensityReading:
        raise ProviderUnavailable(self.name, "upstream is down")

    def history(self, start: datetime, end: datetime, zone: str | None = None) -> IntensitySeries:
        raise ProviderUnavailable(self.name, "upstream is down")

    def forecast(self, horizon_slots: int, zone: str | None = None) -> Forecast:
        raise ProviderUnavailable(self.name, "upstream is down")

    def zones(self) -> list[str]:
        raise ProviderUnavailable(self.name, "upstream is down")


def test_a_live_provider_outage_is_reported_not_crashed(tmp_path: Path) -> None:
    cfg = config(tmp_path, provider=Failing(), update_interval_s=3600)
    with ServiceThread(create_app(cfg)) as svc:
        r = httpx.post(svc.url + "/", json={"app_name": "a", "address": "http://127.0.0.1:9/"})
        assert r.status_code == 503 and "upstream is down" in r.text
        assert httpx.get(svc.url + "/v1/zones").status_code == 503
        health = httpx.get(svc.url + "/healthz").json()
        assert health["status"] == "degraded" and "upstream is down" in health["last_error"]
        assert httpx.get(svc.url + "/set_index").status_code == 404  # no replay: no set_index


def test_cli_reports_bad_options_clearly(tmp_path: Path) -> None:
    import typer

    app = typer.Typer()
    app.command()(carbon_service_command)
    runner = CliRunner()
    trace = tmp_path / "trace.csv"
    trace.write_text("time,value\n2022-01-01 00:00,100\n2022-01-01 01:00,200\n")
    # Every case must fail before the server would start (it would block the test).
    cases = [
        (["--db-path", str(tmp_path / "x.db")], "--carbon-path"),
        (["--carbon-path", str(tmp_path / "missing.csv")], "no such file"),
        (["--zone", "DE", "--db-path", str(tmp_path / "x.db")], "ELECTRICITYMAPS_API_KEY"),
        (["--zone", "ukgrid:GB", "--db-path", str(tmp_path / "no" / "x.db")], "does not exist"),
        (["-f", str(trace), "--db-path", str(tmp_path / "no" / "x.db")], "does not exist"),
        (["-f", str(trace), "--update-interval", "0"], "update interval"),
        (["-f", str(trace), "--prediction-method", "magic"], "unknown forecaster"),
        (["-f", str(trace), "--start", "2030-01-01"], "outside the trace"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args, env={"ELECTRICITYMAPS_API_KEY": ""})
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())


def test_service_replays_the_reference_sample(shared_dir: Path, tmp_path: Path) -> None:
    from carbonscaler.services.carbon import CarbonService

    path = shared_dir / "traces" / "upstream-sample" / "data-sample.csv"
    # The sample's 53-day hole is more than loading fills unasked (an error naming it);
    # loaded with the gap allowed, it replays.
    with pytest.raises(TraceError, match="1286 hourly values"):
        CarbonService(
            CarbonServiceConfig(db_path=tmp_path / "r.db", carbon_path=path, start="2020-01-01")
        )
    with pytest.warns(TraceWarning, match="longest gap: 1286 hourly values"):
        trace = load_trace(path, max_gap=None)
    service = CarbonService(
        CarbonServiceConfig(db_path=tmp_path / "r.db", trace=trace, start="2020-01-01T05:00")
    )
    snapshot = service.compute_snapshot()
    assert snapshot.reading.zone == "US-CAL-CISO" and snapshot.reading.value_g_per_kwh == 355.73
    assert snapshot.body["timestamp"] == "2020-01-01T05:00:00Z"
    service.store.close()


# -- fuzzing the served OpenAPI document ---------------------------------------------------


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz")

    # A long interval: the fuzzer registers arbitrary addresses, and nothing may be pushed
    # to them (only ever 127.0.0.1 traffic from tests). set_index pushes at once, so the
    # destinations are loopback only, and every name "resolves" to 127.0.0.1 without DNS.
    async def loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    only_loopback = DestinationPolicy(
        allow=parse_networks(["127.0.0.0/8", "::1/128"]), resolver=loopback
    )
    cfg = config(tmp, update_interval_s=3600, allowed_hosts=None, destinations=only_loopback)
    svc = ServiceThread(create_app(cfg))
    yield svc.url
    svc.stop()


@pytest.fixture(scope="module")
def strict_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    svc = ServiceThread(create_app(config(tmp_path_factory.mktemp("strict"))))
    yield svc.url
    svc.stop()


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=str)
def test_fuzz_api_from_its_openapi_document(
    service_url: str, mode: schemathesis.GenerationMode
) -> None:
    # The operations are driven here rather than by schemathesis' pytest plugin, whose lazy
    # schema loading does not work with pytest 9; the checks are schemathesis' own.
    schema = schemathesis.openapi.from_url(service_url + "/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the served OpenAPI document has invalid parts"
    assert len(operations) >= 10
    failures: list[str] = []
    for operation in operations:

        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            # A schema-valid address may still name a refused destination (link-local,
            # cloud metadata, IPv4 written as one number: issue 16, item 6), which is a 422:
            # only "schema-valid means accepted" is waived.
            case.call_and_validate(base_url=service_url, excluded_checks=[positive_data_acceptance])

        try:
            run()
        except Unsatisfiable:
            assert mode is schemathesis.GenerationMode.NEGATIVE  # nothing to break: no inputs
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_push_client_handles_every_response_framing() -> None:
    async def main() -> None:
        accepted = 0
        bodies: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    bodies.append(await reader.readexactly(length))
                    path = head.split(b" ")[1]
                    if path == b"/chunked":
                        writer.write(
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"3\r\nabc\r\n0\r\n\r\n"
                        )
                    elif path == b"/length":
                        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok")
                    elif path == b"/close":
                        writer.write(b"HTTP/1.1 500 Oops\r\n\r\nbody until close")
                        writer.close()
                        return
                    else:
                        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = PushClient()
        url = f"http://127.0.0.1:{port}"
        assert await client.post(url + "/chunked", b'{"a": 1}') == 200
        assert await client.post(url + "/length", b"{}") == 202
        assert accepted == 1  # both on one keep-alive connection
        assert await client.post(url + "/close", b"{}") == 500
        assert await client.post(url + "/length", b"{}") == 202
        assert accepted == 2  # a fresh connection after the server closed the old one
        with pytest.raises(PushProtocolError, match=r"no valid HTTP/1\.x response"):
            await client.post(url + "/ssh", b"{}")
        with pytest.raises(ValueError, match="not an http"):
            await client.post("ftp://127.0.0.1/", b"{}")
        with pytest.raises(OSError):
            await client.post("http://127.0.0.1:9/", b"{}")
        assert bodies[0] == b'{"a": 1}'
        await client.aclose()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_live_provider_service_marks_fallback_data_stale(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

    def half_hours(n: int) -> list[dict[str, Any]]:
        return [
            {
                "from": (now + timedelta(minutes=30 * i)).strftime("%Y-%m-%dT%H:%MZ"),
                "intensity": {"forecast": 100 + i, "actual": None, "index": "low"},
            }
            for i in range(n)
        ]

    api = FakeAPI()
    api.routes["/intensity"] = [Answer(body={"data": half_hours(1)})]
    api.routes["/intensity/*"] = lambda r: Answer(body={"data": half_hours(96)})
    uk = UKCarbonIntensity(base_url=api.url, max_retries=0)
    chain = FallbackChain([CachedProvider(uk, current_ttl_s=0, forecast_ttl_s=0)])
    cfg = config(tmp_path, provider=chain, prediction_method="PRED", update_interval_s=0.2)
    try:
        with ServiceThread(create_app(cfg)) as svc:
            body = httpx.post(
                svc.url + "/", json={"app_name": "a", "address": "http://127.0.0.1:9/"}
            ).json()
            # Hourly slots from the half-hourly API: the observed value, then hourly means.
            assert body["prediction"] == [100.0, 102.5, 104.5, 106.5, 108.5, 110.5]
            assert body["stale"] is False and body["zone"] == "GB"
            assert httpx.get(svc.url + "/v1/intensity/forecast?method=real").status_code == 422
            api.routes["/intensity"] = [Answer(503, {"error": "down"})]
            api.routes["/intensity/*"] = [Answer(503, {"error": "down"})]
            deadline = time.monotonic() + 5
            current = httpx.get(svc.url + "/v1/intensity/current").json()
            while not current["stale"] and time.monotonic() < deadline:
                time.sleep(0.05)
                current = httpx.get(svc.url + "/v1/intensity/current").json()
            assert current["stale"] and current["source"] == "ukgrid (last known)"
            assert current["value_g_per_kwh"] == 100.0
            assert (
                'carbonscaler_carbon_data_stale{zone="GB"} 1.0'
                in httpx.get(svc.url + "/metrics").text
            )
    finally:
        api.close()
