"""What the services trust, served for real on 127.0.0.1 (issue 16, items 5-8 and the
subscription listing of item 12): tokens on every state-changing endpoint, destinations
refused before any connection and pinned when allowed, progress files under a root, admin
calls that do not hold up the regular updates, and the accounting service subscribing
again after its subscription was deleted.

No request leaves loopback: names are resolved by a stand-in resolver (to 127.0.0.1, or to
a refused address, which is then never connected to), refused literals are refused before
any connection, and the command-line checks stop before a server would start.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import uvicorn
from typer.testing import CliRunner

from _servers import Measured, Receiver, ServiceThread
from carbonscaler.accounting import TrackerConfig
from carbonscaler.providers import ManualClock, TraceReplay
from carbonscaler.security import DestinationPolicy, parse_networks, push_key
from carbonscaler.services.accounting import AccountingConfig
from carbonscaler.services.accounting import create_app as accounting_app
from carbonscaler.services.carbon import CarbonServiceConfig
from carbonscaler.services.carbon import create_app as carbon_app
from carbonscaler.services.power import PowerServerConfig
from carbonscaler.services.power import create_app as power_app
from carbonscaler.trace import from_values

pytestmark = pytest.mark.integration  # starts real servers

TOKEN = "admin-token-0123"
ACCT_TOKEN = "acct-token-4567"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ACCT = {"Authorization": f"Bearer {ACCT_TOKEN}"}
VALUES = [100.0 + 10 * i for i in range(48)]


class FakeDNS:
    """A stand-in resolver: each name answers its lists of addresses in turn (the last one
    repeats); unknown names do not resolve. Nothing is ever asked of real DNS."""

    def __init__(self, answers: dict[str, list[list[str]]] | None = None) -> None:
        self.answers = answers or {}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        queue = self.answers.get(host)
        if not queue:
            raise OSError(f"{host} does not resolve")
        return queue.pop(0) if len(queue) > 1 else queue[0]


def wait(predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")


def replay() -> TraceReplay:
    return TraceReplay(from_values(VALUES, start="2022-01-01"), clock=ManualClock("2022-01-01"))


def carbon_config(tmp: Path, dns: FakeDNS | None = None, **options: Any) -> CarbonServiceConfig:
    defaults: dict[str, Any] = {
        "db_path": tmp / "carbon.db",
        "provider": replay(),
        "update_interval_s": 30.0,
        "prediction_window": 6,
        "percentile_window": 4,
        "push_timeout_s": 2.0,
        "destinations": DestinationPolicy(resolver=dns or FakeDNS(), what="subscriber address"),
    }
    return CarbonServiceConfig(**{**defaults, **options})


def trace_csv(path: Path) -> Path:
    rows = [
        f"{datetime.fromtimestamp(1640995200 + 3600 * i, UTC):%Y-%m-%dT%H:%M:%SZ},{v}"
        for i, v in enumerate([200.0, 400.0] * 12)
    ]
    path.write_text("timestamp,carbon_intensity\n" + "\n".join(rows) + "\n")
    return path


def accounting_config(
    tmp: Path, dns: FakeDNS | None = None, progress_root: Path | None = None, **options: Any
) -> AccountingConfig:
    defaults: dict[str, Any] = {
        "db_path": tmp / "acct.db",
        "carbon_trace": trace_csv(tmp / "trace.csv"),
        "token": ACCT_TOKEN,
        "tracker": TrackerConfig(
            sample_interval_s=0.2,
            request_timeout_s=2.0,
            node_policy=DestinationPolicy(resolver=dns or FakeDNS(), what="node URL"),
            progress_root=progress_root,
        ),
    }
    return AccountingConfig(**{**defaults, **options})


class ServeOn:
    """An app on a port bound beforehand (the carbon service must know where to push)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def start(self, app: Any) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        wait(lambda: self.server.started, what="the server to start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = Receiver(slow_s=3.0)
    yield server
    server.close()


# -- the carbon service -----------------------------------------------------------------------


def test_carbon_service_token_guards_registration_admin_and_addresses(
    tmp_path: Path, receiver: Receiver
) -> None:
    with ServiceThread(carbon_app(carbon_config(tmp_path, token=TOKEN))) as svc:
        body = {"app_name": "scaler", "address": receiver.url + "/a"}
        # Registration needs the token when one is set (reference and v1 endpoints).
        assert httpx.post(svc.url + "/", json=body).status_code == 401
        assert httpx.post(svc.url + "/v1/subscriptions", json=body).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert httpx.post(svc.url + "/", json=body, headers=wrong).status_code == 401
        assert httpx.post(svc.url + "/", json=body, headers=ADMIN).status_code == 200
        other = {"app_name": "other", "address": receiver.url + "/b"}
        created = httpx.post(svc.url + "/v1/subscriptions", json=other, headers=ADMIN).json()
        assert created["key"] and created["address"] == receiver.url + "/b"
        # Nobody without the token learns where subscribers live (issue 16, item 12).
        listed = httpx.get(svc.url + "/v1/subscriptions").json()
        assert len(listed) == 2
        assert all(s["address"] is None and s["last_error"] is None for s in listed)
        assert receiver.url not in httpx.get(svc.url + "/v1/subscriptions").text
        shown = httpx.get(svc.url + "/v1/subscriptions", headers=ADMIN).json()
        assert {s["address"] for s in shown} == {receiver.url + "/a", receiver.url + "/b"}
        one = svc.url + f"/v1/subscriptions/{created['id']}"
        assert httpx.get(one).json()["address"] is None
        own = {"Authorization": f"Bearer {created['key']}"}
        assert httpx.get(one, headers=own).json()["address"] == receiver.url + "/b"
        # Admin calls and deletion (issue 16, item 8).
        assert httpx.post(svc.url + "/set_index", data={"idx": "3"}).status_code == 401
        assert httpx.delete(one).status_code == 401
        assert httpx.delete(one, headers=wrong).status_code == 401
        assert httpx.delete(one, headers=own).status_code == 204
        # Read-only endpoints stay open.
        for path in ("/v1/intensity/current", "/v1/intensity/forecast", "/healthz", "/metrics"):
            assert httpx.get(svc.url + path).status_code == 200, path


def test_without_a_token_the_reference_endpoints_stay_open(tmp_path: Path) -> None:
    with ServiceThread(carbon_app(carbon_config(tmp_path))) as svc:
        body = {"app_name": "scaler", "address": "http://127.0.0.1:9/x"}
        assert httpx.post(svc.url + "/", json=body).status_code == 200
        assert httpx.post(svc.url + "/set_index", data={"idx": "3"}).status_code == 200
        (sub,) = httpx.get(svc.url + "/v1/subscriptions").json()
        assert sub["address"] == "http://127.0.0.1:9/x"


REFUSED_SUBSCRIBERS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]:8899/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata/",
    "http://2852039166/",
    "http://0xA9FEA9FE/",
    "http://0251.0376.0251.0376/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://0.0.0.0:8899/",
    "http://evil.example/",  # resolves to the metadata address
    "http://rebind.example/",  # resolves to loopback and to the metadata address
]


def test_subscriber_destinations_are_refused_before_any_connection(tmp_path: Path) -> None:
    dns = FakeDNS(
        {
            "evil.example": [["169.254.169.254"]],
            "rebind.example": [["127.0.0.1", "169.254.169.254"]],
        }
    )
    with ServiceThread(carbon_app(carbon_config(tmp_path, dns))) as svc:
        for address in REFUSED_SUBSCRIBERS:
            for path in ("/", "/v1/subscriptions"):
                answer = httpx.post(svc.url + path, json={"app_name": "x", "address": address})
                assert answer.status_code == 422, (address, answer.text)
        assert httpx.get(svc.url + "/v1/subscriptions").json() == []
    restricted = carbon_config(
        tmp_path / "r",
        destinations=DestinationPolicy(allow=parse_networks(["10.0.0.0/8"])),
    )
    (tmp_path / "r").mkdir()
    with ServiceThread(carbon_app(restricted)) as svc:
        answer = httpx.post(svc.url + "/", json={"app_name": "x", "address": "http://127.0.0.1:9/"})
        assert answer.status_code == 422 and "outside the networks allowed" in answer.text


def test_pushes_go_to_the_checked_address_with_the_original_host(
    tmp_path: Path, receiver: Receiver
) -> None:
    port = receiver.api.port
    dns = FakeDNS(
        {
            "subscriber.test": [["127.0.0.1"]],
            # Harmless when registering, the metadata service when pushing (DNS rebinding).
            "rebind.test": [["127.0.0.1"], ["169.254.169.254"]],
        }
    )
    cfg = carbon_config(tmp_path, dns, update_interval_s=0.3)
    with ServiceThread(carbon_app(cfg)) as svc:
        for name in ("subscriber", "rebind"):
            address = f"http://{name}.test:{port}/{name}"
            r = httpx.post(
                svc.url + "/v1/subscriptions", json={"app_name": name, "address": address}
            )
            assert r.status_code == 201, r.text
        (pushed, *_) = wait(lambda: receiver.api.calls("/subscriber"), what="a pinned push")
        assert pushed.headers["host"] == f"subscriber.test:{port}"  # the name, not the IP

        def rebind_failed() -> dict[str, Any] | None:
            subs = {s["app_name"]: s for s in httpx.get(svc.url + "/v1/subscriptions").json()}
            return subs["rebind"] if subs["rebind"]["last_error"] else None

        failed = wait(rebind_failed, what="the rebound push to fail")
        assert "refused" in failed["last_error"] and "169.254.169.254" in failed["last_error"]
        assert receiver.api.calls("/rebind") == []


def test_admin_calls_do_not_hold_up_the_regular_updates(tmp_path: Path, receiver: Receiver) -> None:
    # Issue 16, item 8: each set_index call postponed the next regular update by a whole
    # interval, so calls every 2 s against a 30 s interval silenced the updates for good.
    # Here: calls every ~0.2 s against a 3 s interval; each one moves the replay back to
    # slot 5, and only a regular update moves it on to slot 6.
    cfg = carbon_config(tmp_path, update_interval_s=3.0)
    with ServiceThread(carbon_app(cfg)) as svc:
        address = receiver.url + "/sub"
        assert httpx.post(svc.url + "/", json={"app_name": "s", "address": address}).is_success
        deadline = time.monotonic() + 60
        calls = 0
        while time.monotonic() < deadline:
            assert httpx.post(svc.url + "/set_index", data={"idx": "5"}).status_code == 200
            calls += 1
            values = [b["carbon_intensity"] for b in receiver.bodies("/sub")]
            if VALUES[5] in values and VALUES[6] in values[values.index(VALUES[5]) :]:
                break  # a regular update came between the calls
            time.sleep(0.2)
        else:
            raise AssertionError(f"no regular update in 60 s of set_index calls ({calls} calls)")


# -- the accounting service -------------------------------------------------------------------


def test_accounting_state_changes_need_the_token(tmp_path: Path) -> None:
    with ServiceThread(accounting_app(accounting_config(tmp_path))) as svc:
        job = {"job_id": "j1", "watts_per_server": 50.0}
        assert httpx.post(svc.url + "/v1/jobs", json=job).status_code == 401
        wrong = {"Authorization": "Bearer nope-nope-nope"}
        assert httpx.post(svc.url + "/v1/jobs", json=job, headers=wrong).status_code == 401
        assert httpx.post(svc.url + "/v1/jobs", json=job, headers=ACCT).status_code == 201
        guarded = [
            ("PATCH", "/v1/jobs/j1", {"servers": 2}),
            ("POST", "/v1/jobs/j1/progress", {"percent": 50}),
            ("POST", "/v1/jobs/j1/stop", None),
        ]
        for method, path, body in guarded:
            answer = httpx.request(method, svc.url + path, json=body)
            assert answer.status_code == 401, (method, path)
            assert answer.headers["www-authenticate"] == "Bearer"
        assert httpx.get(svc.url + "/v1/jobs/j1").json()["active"] is True
        for method, path, body in guarded:
            assert httpx.request(method, svc.url + path, json=body, headers=ACCT).is_success
        for path in ("/v1/jobs", "/v1/jobs/j1", "/v1/jobs/j1/samples.csv", "/healthz", "/metrics"):
            assert httpx.get(svc.url + path).status_code == 200, path


def test_node_urls_are_refused_before_any_connection(tmp_path: Path) -> None:
    dns = FakeDNS({"evil.node": [["169.254.169.254"]]})
    with ServiceThread(accounting_app(accounting_config(tmp_path, dns))) as svc:
        assert httpx.post(
            svc.url + "/v1/jobs", json={"job_id": "ok", "watts_per_server": 5}, headers=ACCT
        ).is_success
        for node in [
            "http://169.254.169.254",
            "http://2852039166",
            "http://[fd00:ec2::254]:80",
            "http://[::ffff:169.254.169.254]",
            "http://metadata.google.internal",
            "http://evil.node:8000",
        ]:
            body = {"job_id": "bad", "nodes": [node], "watts_per_server": 5}
            answer = httpx.post(svc.url + "/v1/jobs", json=body, headers=ACCT)
            assert answer.status_code == 422, (node, answer.text)
            patched = httpx.patch(svc.url + "/v1/jobs/ok", json={"nodes": [node]}, headers=ACCT)
            assert patched.status_code == 422, (node, patched.text)
        assert httpx.get(svc.url + "/v1/jobs/ok").json()["nodes"] == []


def test_node_requests_go_to_the_checked_address(tmp_path: Path) -> None:
    node_cfg = PowerServerConfig(gpu=False, sample_interval_s=0.05, meters=[Measured(80.0)])
    with ServiceThread(power_app(node_cfg)) as node:
        dns = FakeDNS({"node1.test": [["127.0.0.1"]]})
        cfg = accounting_config(tmp_path, dns)
        with ServiceThread(accounting_app(cfg)) as svc:
            nodes = [f"http://node1.test:{node.port}"]
            body = {"job_id": "pinned", "nodes": nodes, "watts_per_server": 10.0}
            assert httpx.post(svc.url + "/v1/jobs", json=body, headers=ACCT).status_code == 201
            job = wait(
                lambda: (j := httpx.get(svc.url + "/v1/jobs/pinned").json())["samples"] >= 2 and j,
                what="measured samples",
            )
            assert job["last_power_source"] == "measured:rapl"
            assert "node1.test" in dns.asked


def test_progress_files_only_under_the_root_regular_and_never_echoed(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    secret = tmp_path / "secret.csv"
    secret.write_text("name,value\nroot,0:0:secret-line\n")
    (root / "escape.csv").symlink_to(secret)
    (root / "zero.csv").symlink_to("/dev/zero")
    os.mkfifo(root / "fifo.csv")
    cfg = accounting_config(tmp_path, progress_root=root)
    with ServiceThread(accounting_app(cfg)) as svc:

        def register(job_id: str, path: Path | str) -> httpx.Response:
            body = {"job_id": job_id, "watts_per_server": 5, "progress_path": str(path)}
            return httpx.post(svc.url + "/v1/jobs", json=body, headers=ACCT)

        refused = {
            "passwd": ("/etc/passwd", "outside the progress root"),
            "secret": (secret, "outside the progress root"),
            "escape": (root / "escape.csv", "outside the progress root"),
            "zero": (root / "zero.csv", "outside the progress root"),
            "devzero": ("/dev/zero", "outside the progress root"),
            "fifo": (root / "fifo.csv", "not a regular file"),
            "dotdot": (f"{root}/../secret.csv", "outside the progress root"),
        }
        for job_id, (path, reason) in refused.items():
            answer = register(job_id, path)
            assert answer.status_code == 422 and reason in answer.text, (job_id, answer.text)
            assert "secret-line" not in answer.text
        # A file that appears later as a FIFO is refused at the read, without blocking the
        # service: rounds go on and other requests are answered.
        late = root / "late" / "progress.csv"
        late.parent.mkdir()
        assert register("late", late).status_code == 201
        os.mkfifo(late)
        job = wait(
            lambda: (j := httpx.get(svc.url + "/v1/jobs/late").json())["progress_error"] and j,
            what="the FIFO to be refused",
        )
        assert "not a regular file" in job["progress_error"]
        rounds = httpx.get(svc.url + "/healthz").json()["rounds"]
        wait(lambda: httpx.get(svc.url + "/healthz").json()["rounds"] > rounds, what="rounds")
        # A link swapped in after registration is refused too, and its target not echoed.
        swapped = root / "swapped.csv"
        swapped.write_text("1,10\n")
        assert register("swapped", swapped).status_code == 201
        wait(lambda: httpx.get(svc.url + "/v1/jobs/swapped").json()["progress_pct"] == 10.0)
        swapped.unlink()
        swapped.symlink_to(secret)
        job = wait(
            lambda: (j := httpx.get(svc.url + "/v1/jobs/swapped").json())["progress_error"] and j,
            what="the swapped link to be refused",
        )
        assert "outside the progress root" in job["progress_error"]
        assert "secret-line" not in job["progress_error"]
    # Without a progress root, progress files are refused altogether.
    (tmp_path / "none").mkdir()
    with ServiceThread(accounting_app(accounting_config(tmp_path / "none"))) as svc:
        good = root / "good.csv"
        good.write_text("1,5\n")
        body = {"job_id": "g", "watts_per_server": 5, "progress_path": str(good)}
        answer = httpx.post(svc.url + "/v1/jobs", json=body, headers=ACCT)
        assert answer.status_code == 422 and "--progress-root" in answer.text


def test_profile_paths_are_read_as_untrusted_files(tmp_path: Path) -> None:
    fifo = tmp_path / "profile.csv"
    os.mkfifo(fifo)
    with ServiceThread(accounting_app(accounting_config(tmp_path))) as svc:
        for path, reason in [
            ("/etc/passwd", "not a scaling profile"),
            (str(fifo), "not a regular file"),
            ("/dev/zero", "not a regular file"),
        ]:
            body = {"job_id": "p", "profile_path": path}
            answer = httpx.post(svc.url + "/v1/jobs", json=body, headers=ACCT, timeout=30)
            assert answer.status_code == 422 and reason in answer.text, (path, answer.text)
            assert "root:" not in answer.text


def test_accounting_subscribes_again_after_its_subscription_is_deleted(tmp_path: Path) -> None:
    carbon_cfg = carbon_config(tmp_path, token=TOKEN, update_interval_s=0.3)
    with ServiceThread(carbon_app(carbon_cfg)) as carbon:
        place = ServeOn()
        cfg = accounting_config(
            tmp_path,
            carbon_trace=None,
            carbon_service_url=carbon.url,
            public_url=place.url,
            carbon_service_token=TOKEN,
            resubscribe_after_s=1.5,
        )
        place.start(accounting_app(cfg))
        try:
            address = f"{place.url}/carbon?key={push_key(ACCT_TOKEN)}"

            def subscription() -> dict[str, Any] | None:
                subs = httpx.get(carbon.url + "/v1/subscriptions", headers=ADMIN).json()
                mine = [s for s in subs if s["address"] == address and s["pushes_ok"] >= 2]
                return mine[0] if mine else None

            first = wait(subscription, what="pushes accepted with the push key")
            # Without the token or the push key, nobody else can post carbon values.
            push = {"carbon_intensity": 9999.0}
            assert httpx.post(place.url + "/carbon", json=push).status_code == 401
            bad_key = httpx.post(place.url + "/carbon?key=0000", json=push)
            assert bad_key.status_code == 401
            assert httpx.post(place.url + "/carbon", json=push, headers=ADMIN).status_code == 401
            # Deleted by an admin: the accounting notices the silence and registers again.
            deleted = carbon.url + f"/v1/subscriptions/{first['id']}"
            assert httpx.delete(deleted, headers=ADMIN).status_code == 204
            again = wait(
                lambda: (s := subscription()) and s["id"] != first["id"] and s,
                what="a new subscription",
            )
            assert again["active"]
        finally:
            place.stop()


def test_a_subscription_aimed_at_the_accounting_cannot_stop_jobs(tmp_path: Path) -> None:
    # Issue 16, item 6: the carbon service POSTs to any address it is given, so a subscriber
    # pointing at /v1/jobs/{id}/stop would stop that job; the accounting's token stops it.
    (tmp_path / "carbon").mkdir()
    carbon_cfg = carbon_config(tmp_path / "carbon", update_interval_s=0.3)
    with ServiceThread(accounting_app(accounting_config(tmp_path))) as acct:
        body = {"job_id": "victim", "watts_per_server": 5.0}
        assert httpx.post(acct.url + "/v1/jobs", json=body, headers=ACCT).status_code == 201
        with ServiceThread(carbon_app(carbon_cfg)) as carbon:
            evil = {"app_name": "evil", "address": acct.url + "/v1/jobs/victim/stop"}
            assert httpx.post(carbon.url + "/v1/subscriptions", json=evil).status_code == 201

            def refused() -> bool:
                (sub,) = httpx.get(carbon.url + "/v1/subscriptions").json()
                return "401" in (sub["last_error"] or "")

            wait(refused, what="the push to be refused")
        assert httpx.get(acct.url + "/v1/jobs/victim").json()["active"] is True


# -- the power server -------------------------------------------------------------------------


def test_power_server_reference_drain_needs_the_token(tmp_path: Path) -> None:
    cfg = PowerServerConfig(gpu=False, sample_interval_s=0.05, meters=[Measured(30.0)], token=TOKEN)
    with ServiceThread(power_app(cfg)) as node:
        assert httpx.get(node.url + "/").status_code == 401
        assert httpx.get(node.url + "/", headers=ADMIN).status_code == 200
        wait(lambda: httpx.get(node.url + "/v1/power?window_s=1").status_code == 200)
        now = time.time()
        energy = httpx.get(node.url + "/v1/energy", params={"start": now - 5, "end": now})
        assert energy.status_code == 200


# -- the operator's carbon webhook ------------------------------------------------------------


def test_operator_webhook_needs_the_token_or_the_push_key() -> None:
    pytest.importorskip("aiohttp")
    from aiohttp.test_utils import TestClient, TestServer

    from carbonscaler.operator.carbon import CarbonBoard, subscribe, webhook_app

    board = CarbonBoard(lambda: 1_700_000_000.0)
    push = {"carbon_intensity": 210.5, "prediction": [210.5, 190.0]}

    async def scenario() -> list[int]:
        async with TestClient(TestServer(webhook_app(board, TOKEN))) as web:
            return [
                (await web.post("/", json=push)).status,
                (await web.post("/?key=wrong", json=push)).status,
                (await web.post("/", json=push, headers={"Authorization": "Bearer x"})).status,
                (await web.post(f"/?key={push_key(TOKEN)}", json=push)).status,
                (await web.post("/carbon", json=push, headers=ADMIN)).status,
                (await web.get("/healthz")).status,
            ]

    assert asyncio.run(scenario()) == [401, 401, 401, 200, 200, 200]
    assert board.get() is not None

    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={})

    async def register() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            await subscribe(client, "http://carbon:7777", "http://op:8899/?key=k", TOKEN)

    asyncio.run(register())
    assert seen[0].headers["authorization"] == f"Bearer {TOKEN}"


# -- the command lines: no open service beyond loopback ---------------------------------------


NO_TOKEN_ENV: dict[str, str | None] = {
    "CARBONSCALER_TOKEN": None,
    "CARBONSCALER_TOKEN_FILE": None,
    "CARBONSCALER_CARBON_SERVICE_TOKEN": None,
    "CARBONSCALER_CARBON_SERVICE_TOKEN_FILE": None,
}


def command(function: Callable[..., None]) -> typer.Typer:
    app = typer.Typer()
    app.command()(function)
    return app


def cli_cases(tmp_path: Path) -> list[tuple[str, Callable[..., None], list[str]]]:
    from carbonscaler.cli.accounting import accounting_command
    from carbonscaler.cli.carbon_service import carbon_service_command
    from carbonscaler.cli.power_server import power_server_command

    trace = trace_csv(tmp_path / "trace.csv")
    return [
        (
            "carbon service",
            carbon_service_command,
            ["--trace", str(trace), "--db-path", str(tmp_path / "c.db")],
        ),
        (
            "accounting service",
            accounting_command,
            ["--trace", str(trace), "--db-path", str(tmp_path / "a.db")],
        ),
        ("power server", power_server_command, ["--no-gpu", "--estimate-watts", "10"]),
    ]


def test_services_refuse_to_listen_beyond_loopback_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append((app, kw)))
    runner = CliRunner()
    token_file = tmp_path / "token"
    token_file.write_text("file-token-89ab\n")
    for service, function, args in cli_cases(tmp_path):
        app = command(function)
        before = len(started)
        result = runner.invoke(app, [*args, "--host", "0.0.0.0"], env=NO_TOKEN_ENV)
        output = " ".join(result.output.split())
        assert result.exit_code == 2, (service, result.output)
        assert f"refusing to start the {service} on 0.0.0.0 without a token" in output
        assert "--token-file" in output and "--insecure" in output
        assert len(started) == before  # refused before the server would start
        result = runner.invoke(app, [*args, "--host", "0.0.0.0", "--insecure"], env=NO_TOKEN_ENV)
        assert result.exit_code == 0, (service, result.output)
        env = {**NO_TOKEN_ENV, "CARBONSCALER_TOKEN_FILE": str(token_file)}
        result = runner.invoke(app, [*args, "--host", "0.0.0.0"], env=env)
        assert result.exit_code == 0, (service, result.output)
        result = runner.invoke(app, args, env=NO_TOKEN_ENV)  # loopback: tokens are opt-in
        assert result.exit_code == 0, (service, result.output)
        env = {**NO_TOKEN_ENV, "CARBONSCALER_TOKEN": "short"}
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 2 and "at least 8" in " ".join(result.output.split())
    assert len(started) == 9
    # The token from the file is the one the service requires.
    carbon = started[1][0]
    assert carbon.state.service.config.token == "file-token-89ab"


def test_operator_webhook_refuses_to_listen_open(tmp_path: Path) -> None:
    pytest.importorskip("kopf")
    pytest.importorskip("kubernetes")
    from carbonscaler.cli.operator import operator_command

    result = CliRunner().invoke(command(operator_command), [], env=NO_TOKEN_ENV)
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "refusing to start the operator's carbon webhook on 0.0.0.0 without a token" in output
