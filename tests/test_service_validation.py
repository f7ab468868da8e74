"""Hostile request input gets a 4xx from every service, never a 500 (issue 16, items 10, 12).

FastAPI's own 422 handler failed to serialise the input it rejected when that input held
NaN, Infinity, 1e400 or a lone surrogate; bodies could be any size. The services share one
request-validation setup (``services/_validation.py``); these tests drive each service with
the hostile bodies through Starlette's TestClient (no real server needed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonscaler.accounting.tracker import TrackerConfig
from carbonscaler.power import ConstantMeter
from carbonscaler.providers import ManualClock, TraceReplay
from carbonscaler.services import CarbonServiceConfig
from carbonscaler.services import create_app as carbon_app
from carbonscaler.services._validation import (
    HTTP_URL_PATTERN,
    check_http_url,
    install_request_validation,
    sanitise,
)
from carbonscaler.services.accounting import AccountingConfig
from carbonscaler.services.accounting import create_app as accounting_app
from carbonscaler.services.carbon import ADDRESS_PATTERN
from carbonscaler.services.power import PowerServerConfig
from carbonscaler.services.power import create_app as power_app
from carbonscaler.trace import from_values

JSON = {"Content-Type": "application/json"}

# Bodies that are not valid, finite JSON text (raw bytes, as an attacker sends them).
HOSTILE_JSON = {
    "nan": b'{"x": NaN}',
    "infinity": b'{"x": Infinity}',
    "minus-infinity": b'{"x": -Infinity}',
    "overflow": b'{"x": 1e400}',
    "long-integer": b'{"x": ' + b"9" * 5000 + b"}",
    "surrogate-value": b'{"x": "\\ud800"}',
    "surrogate-key": b'{"\\udfff": 1}',
    "invalid-utf8": b'{"x": "\xff\xfe"}',
    "utf8-encoded-surrogate": b'{"x": "\xed\xa0\x80"}',
    "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
    "not-json": b"{not json",
}


def parse(response: Any) -> Any:
    """The response's JSON (every answer must be valid JSON text)."""
    return json.loads(response.content.decode("utf-8"))


def assert_4xx(response: Any, *statuses: int) -> Any:
    assert response.status_code in (statuses or (422,)), response.text[:300]
    return parse(response)


# -- the three services ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def carbon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("carbon")
    trace = from_values([100.0 + i for i in range(48)], start="2022-01-01")
    cfg = CarbonServiceConfig(
        db_path=tmp / "reg.db",
        provider=TraceReplay(trace, clock=ManualClock("2022-01-01")),
        update_interval_s=3600,
        allowed_hosts=frozenset({"127.0.0.1", "::1"}),
    )
    with TestClient(carbon_app(cfg), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def accounting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("accounting")
    cfg = AccountingConfig(
        db_path=tmp / "acct.db",
        trace=from_values([200.0] * 48, start="2022-01-01"),
        tracker=TrackerConfig(sample_interval_s=3600),
    )
    with TestClient(accounting_app(cfg), raise_server_exceptions=False) as client:
        assert client.post("/v1/jobs", json={"job_id": "j1", "watts_per_server": 10}).is_success
        yield client


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An accounting service fed by the carbon service's pushes (``POST /carbon``)."""
    tmp = tmp_path_factory.mktemp("pushed")
    cfg = AccountingConfig(
        db_path=tmp / "acct.db",
        carbon_service_url="http://127.0.0.1:9",  # never answers: no subscription happens
        public_url="http://127.0.0.1:9",
        tracker=TrackerConfig(sample_interval_s=3600),
    )
    with TestClient(accounting_app(cfg), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def power() -> Iterator[TestClient]:
    cfg = PowerServerConfig(meters=[ConstantMeter(10.0)], sample_interval_s=0.1)
    with TestClient(power_app(cfg), raise_server_exceptions=False) as client:
        yield client


BODY_ENDPOINTS = [
    ("carbon", "POST", "/"),
    ("carbon", "POST", "/v1/subscriptions"),
    ("accounting", "POST", "/v1/jobs"),
    ("accounting", "PATCH", "/v1/jobs/j1"),
    ("accounting", "POST", "/v1/jobs/j1/progress"),
    ("pushed", "POST", "/carbon"),
]


@pytest.mark.parametrize(("service", "method", "path"), BODY_ENDPOINTS)
@pytest.mark.parametrize("kind", list(HOSTILE_JSON))
def test_hostile_json_bodies_get_422_everywhere(
    request: pytest.FixtureRequest, service: str, method: str, path: str, kind: str
) -> None:
    client: TestClient = request.getfixturevalue(service)
    r = client.request(method, path, content=HOSTILE_JSON[kind], headers=JSON)
    detail = assert_4xx(r)["detail"]
    assert isinstance(detail, list) and detail[0]["msg"], detail
    # Nothing invalid is echoed back: the answer is plain ASCII-safe JSON.
    assert "\\ud800" not in r.text and "NaN" not in r.text.replace("NaN is not", "")


@pytest.mark.parametrize(("service", "method", "path"), BODY_ENDPOINTS)
def test_bodies_are_bounded(
    request: pytest.FixtureRequest, service: str, method: str, path: str
) -> None:
    client: TestClient = request.getfixturevalue(service)
    huge = b'{"x": "' + b"a" * (3 * 1024 * 1024) + b'"}'
    r = client.request(method, path, content=huge, headers=JSON)
    assert "larger than" in assert_4xx(r, 413)["detail"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream"])
def test_non_json_bodies_with_invalid_bytes_get_422(carbon: TestClient, content_type: str) -> None:
    r = carbon.post(
        "/v1/subscriptions", content=b"\xff\xfe\xed\xa0\x80", headers={"Content-Type": content_type}
    )
    assert_4xx(r)


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/v1/jobs", {"job_id": "a", "watts_per_server": True}, "valid number"),
        ("/v1/jobs", {"job_id": "a", "watts_per_server": "5"}, "valid number"),
        ("/v1/jobs", {"job_id": "a", "watts_per_server": 1e308}, "less than or equal"),
        ("/v1/jobs", {"job_id": "a", "servers": True}, "valid integer"),
        ("/v1/jobs", {"job_id": "a", "servers": 1.5}, "valid integer"),
        ("/v1/jobs/j1/progress", {"percent": True}, "valid number"),
        ("/v1/jobs/j1/progress", {"percent": "50"}, "valid number"),
        ("/v1/jobs/j1/progress", {"percent": 101}, "less than or equal"),
    ],
)
def test_accounting_numbers_are_strict_and_bounded(
    accounting: TestClient, path: str, body: dict[str, Any], reason: str
) -> None:
    r = accounting.post(path, json=body)
    assert reason in str(assert_4xx(r)["detail"])


@pytest.mark.parametrize("url", ["http://[da]/", "http://[:::::]:1/", "http://a b/", "ftp://x/"])
def test_node_urls_are_parsed_not_only_matched(accounting: TestClient, url: str) -> None:
    r = accounting.post("/v1/jobs", json={"job_id": "nodes", "nodes": [url]})
    assert "node URL" in str(assert_4xx(r, 422)["detail"])
    r = accounting.patch("/v1/jobs/j1", json={"nodes": [url]})
    assert_4xx(r, 404, 422)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(True, False), ("100", False), (float("nan"), False), (1e5, False), (-1, False), (250, True)],
)
def test_the_operator_webhook_takes_only_real_intensities(value: Any, accepted: bool) -> None:
    from carbonscaler.operator.carbon import snapshot_from_push

    body = {"carbon_intensity": value, "prediction": [value]}
    if accepted:
        snapshot, _ = snapshot_from_push(body, 0.0)
        assert snapshot.intensity == value and snapshot.forecast == (value,)
    else:
        with pytest.raises(ValueError, match="gCO2eq/kWh"):
            snapshot_from_push(body, 0.0)


def test_accounting_patch_is_strict(accounting: TestClient) -> None:
    r = accounting.patch("/v1/jobs/j1", json={"servers": True})
    assert "valid integer" in str(assert_4xx(r)["detail"])


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (True, 422),  # not 1.0 g/kWh
        ("100", 422),
        (-1, 422),
        (1e308, 422),
        (10_000.5, 422),
        (10_000, 200),
        (0, 200),
        (420.5, 200),
    ],
)
def test_pushed_intensity_is_a_finite_number_in_range(
    pushed: TestClient, value: Any, status: int
) -> None:
    r = pushed.post("/carbon", json={"carbon_intensity": value})
    assert r.status_code == status, r.text


def test_pushed_stale_flag_is_a_boolean(pushed: TestClient) -> None:
    r = pushed.post("/carbon", json={"carbon_intensity": 100, "stale": "yes"})
    assert_4xx(r)


@pytest.mark.parametrize(
    "query",
    [
        "window_s=5e-324",
        "window_s=0",
        "window_s=0.0009",
        "window_s=nan",
        "window_s=inf",
        "window_s=-inf",
        "window_s=1e400",
    ],
)
def test_power_window_must_be_a_usable_number(power: TestClient, query: str) -> None:
    detail = assert_4xx(power.get("/v1/power?" + query))["detail"]
    assert any("0.001" in str(d) or "finite" in str(d) for d in detail), detail


def test_power_window_at_the_minimum_is_answered(power: TestClient) -> None:
    # The smallest window allowed is answered (with the power held from the last reading),
    # not refused as "no readings" (503).
    deadline = time.monotonic() + 30
    while not power.get("/v1/power?window_s=1").is_success and time.monotonic() < deadline:
        time.sleep(0.05)
    r = power.get("/v1/power?window_s=0.001")
    assert r.status_code == 200, r.text
    assert parse(r)["watts"] == pytest.approx(10.0)


@pytest.mark.parametrize(
    "query",
    [
        "start=nan&end=1",
        "start=0&end=inf",
        "start=0&end=1e400",
        "start=10&end=5",
        "start=0&end=1e6",
    ],
)
def test_power_energy_times_are_checked(power: TestClient, query: str) -> None:
    assert_4xx(power.get("/v1/energy?" + query))


def test_power_energy_range_limit_is_in_the_schema(power: TestClient) -> None:
    doc = power.get("/openapi.json").json()
    op = doc["paths"]["/v1/energy"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert "604800" in params["end"]["description"]
    assert "604800" in op["responses"]["422"]["description"]
    window = {p["name"]: p for p in doc["paths"]["/v1/power"]["get"]["parameters"]}["window_s"]
    assert window["schema"]["minimum"] == 0.001


# -- 405 and Allow ---------------------------------------------------------------------------

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PATH_VALUES = {"subscription_id": "1", "job_id": "j1"}


@pytest.mark.parametrize("service", ["carbon", "accounting", "pushed", "power"])
def test_every_405_lists_every_allowed_method(request: pytest.FixtureRequest, service: str) -> None:
    client: TestClient = request.getfixturevalue(service)
    paths = client.get("/openapi.json").json()["paths"]
    checked = 0
    for template, operations in paths.items():
        path = template.format(**PATH_VALUES)
        declared = sorted(m.upper() for m in operations)
        for method in METHODS:
            if method in declared:
                continue
            r = client.request(method, path)
            assert r.status_code == 405, (method, path, r.status_code)
            assert r.headers["allow"] == ", ".join(declared), (method, path)
            checked += 1
    assert checked >= 10


# -- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "http://[da]/",
        "http://[:::::]:1/",
        "http://[::1",
        "http://[fe80::1%25eth0]/",
        "http://a..b/",
        "http://-a.example/",
        "http://" + "a" * 64 + ".example/",
        "http://" + ".".join(["a" * 60] * 5) + "/",
        "http://127.0.0.1:0/",
        "http://127.0.0.1:65536/",
        "http://user@127.0.0.1/",
        "http://127.0.0.1 /",
        "ftp://127.0.0.1/",
    ],
)
def test_subscriber_addresses_are_parsed_not_only_matched(carbon: TestClient, address: str) -> None:
    for path in ("/", "/v1/subscriptions"):
        r = carbon.post(path, json={"app_name": "a", "address": address})
        assert "address must be" in str(assert_4xx(r)["detail"]), address


@pytest.mark.parametrize("address", ["http://127.0.0.1:8899/", "http://[::1]:8899/x?y=1"])
def test_valid_addresses_are_accepted(carbon: TestClient, address: str) -> None:
    r = carbon.post("/v1/subscriptions", json={"app_name": "a", "address": address})
    assert r.status_code == 201, r.text


@settings(max_examples=300, deadline=None)
@given(st.from_regex(HTTP_URL_PATTERN.removesuffix("$") + r"\Z"))
def test_every_address_the_schema_admits_parses(address: str) -> None:
    # The schema's pattern and the parsing check agree, so a client generating addresses
    # from the OpenAPI document (or a fuzzer) is never refused one the schema allows,
    # unless the host name is longer than DNS allows.
    try:
        check_http_url(address)
    except ValueError as exc:
        assert "longer than 253" in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=6))
def test_every_ipv6_literal_is_accepted(ip: Any) -> None:
    for text in (ip.compressed, ip.exploded):
        assert check_http_url(f"http://[{text}]:80/") == f"http://[{text}]:80/"


# -- the error handler -----------------------------------------------------------------------


def test_validation_errors_are_serialised_safely() -> None:
    app = FastAPI()
    install_request_validation(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RequestValidationError(
            [
                {
                    "type": "x",
                    "loc": ["body", "\udc80"],
                    "msg": "bad",
                    "input": {"a": float("nan"), "b": [float("inf")] * 100, "c": b"\xff"},
                    "ctx": {"error": ValueError("\ud800")},
                }
            ]
        )

    with TestClient(app) as client:
        r = client.get("/boom")
    body = assert_4xx(r)
    (error,) = body["detail"]
    assert error["input"]["a"] == "nan" and error["input"]["c"] == "\\xff"
    assert len(error["input"]["b"]) == 65  # cut, with a note of how many more
    assert error["ctx"]["error"] == "\\ud800" and error["loc"] == ["body", "\\udc80"]


def test_sanitise_keeps_plain_values() -> None:
    value = {"a": 1, "b": [1.5, "x", None, True], "c": {"d": "é"}}
    assert sanitise(value) == value
    assert sanitise("x" * 1000).endswith("...")


def test_the_carbon_service_documents_the_pattern_it_checks() -> None:
    assert ADDRESS_PATTERN == HTTP_URL_PATTERN


DEVELOPER_MARKUP = (":mod:", ":func:", ":class:", ":meth:", "``", "Args:", "Raises:", "Returns:")


def _texts(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _texts(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _texts(value, f"{path}[{i}]")
    elif isinstance(node, str) and path.rsplit("/", 1)[-1] in ("description", "summary"):
        yield path, node


@pytest.mark.parametrize("service", ["carbon", "accounting", "power"])
def test_openapi_documents_are_written_for_users(
    service: str, request: pytest.FixtureRequest
) -> None:
    client: TestClient = request.getfixturevalue(service)
    document = client.get("/openapi.json").json()
    texts = list(_texts(document))
    assert texts, "the document has descriptions"
    leaks = [(path, text[:80]) for path, text in texts if any(m in text for m in DEVELOPER_MARKUP)]
    assert leaks == []
    assert "Bearer" in document["info"]["description"]  # says how to authenticate
