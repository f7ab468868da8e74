"""The accounting service for real on 127.0.0.1: the API and its 4xx answers, CSV and
metrics, a real power server as the node, the carbon service's pushes, a schemathesis fuzz,
and kill -9 of the accounting process mid-sampling followed by a restart on the same DB."""

from __future__ import annotations

import csv
import io
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
import typer
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance
from typer.testing import CliRunner

from _servers import Measured, ServiceThread
from carbonscaler.accounting import TrackerConfig
from carbonscaler.cli.accounting import accounting_command
from carbonscaler.profile import ScalingProfile
from carbonscaler.providers import ManualClock, TraceReplay
from carbonscaler.services.accounting import AccountingConfig, create_app
from carbonscaler.services.carbon import CarbonServiceConfig
from carbonscaler.services.carbon import create_app as carbon_app
from carbonscaler.services.power import PowerServerConfig
from carbonscaler.services.power import create_app as power_app
from carbonscaler.trace import from_values

pytestmark = pytest.mark.integration  # starts real processes or servers


def trace_csv(path: Path, values: list[float]) -> Path:
    rows = [
        f"{datetime.fromtimestamp(1640995200 + 3600 * i, UTC):%Y-%m-%dT%H:%M:%SZ},{v}"
        for i, v in enumerate(values)
    ]
    path.write_text("timestamp,carbon_intensity\n" + "\n".join(rows) + "\n")
    return path


def config(tmp: Path, **options: Any) -> AccountingConfig:
    (tmp / "progress").mkdir(exist_ok=True)
    defaults: dict[str, Any] = {
        "db_path": tmp / "acct.db",
        "carbon_trace": trace_csv(tmp / "trace.csv", [200.0, 400.0] * 12),
        "tracker": TrackerConfig(
            sample_interval_s=0.1,
            request_timeout_s=0.5,
            allowed_hosts=frozenset({"127.0.0.1"}),
            progress_root=tmp / "progress",
        ),
    }
    return AccountingConfig(**{**defaults, **options})


def wait(predicate: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


# -- kill -9 mid-sampling, then a restart on the same ledger ----------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_accounting(db: Path, trace: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-c", "from carbonscaler.cli import main; main()", "accounting",
            "--db-path", str(db), "--carbon-trace", str(trace), "--speed", "1",
            "--sample-interval", "0.2", "--port", str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            return httpx.get(url + "/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait(up, timeout_s=30)
    return proc, url


def ledger_rows(db: Path) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        samples = con.execute(
            "SELECT seq, start_s, end_s, energy_j, measured_j, emissions_g FROM samples"
            " WHERE job_id = 'nbody' ORDER BY seq"
        ).fetchall()
        totals = con.execute(
            "SELECT samples, last_end_s, energy_j, measured_j, emissions_g FROM jobs"
            " WHERE job_id = 'nbody'"
        ).fetchone()
    finally:
        con.close()
    return samples, totals


def assert_consistent(samples: list[tuple[Any, ...]], totals: tuple[Any, ...]) -> None:
    assert [s[0] for s in samples] == list(range(1, len(samples) + 1))
    assert all(samples[i][1] == samples[i - 1][2] for i in range(1, len(samples)))
    assert totals[0] == len(samples) and totals[1] == samples[-1][2]
    for column, total in ((3, totals[2]), (4, totals[3]), (5, totals[4])):
        assert total == pytest.approx(sum(s[column] for s in samples), rel=1e-12)


def test_kill_9_mid_sampling_then_restart_continues_exactly(tmp_path: Path) -> None:
    # First in the module, with its own node, so no other service competes for the CPU.
    node_cfg = PowerServerConfig(gpu=False, sample_interval_s=0.1, meters=[Measured(80.0)])
    with ServiceThread(power_app(node_cfg)) as node_svc:
        run_kill_9(node_svc.url, tmp_path)


def run_kill_9(node: str, tmp_path: Path) -> None:
    db = tmp_path / "acct.db"
    trace = trace_csv(tmp_path / "trace.csv", [100.0, 300.0, 500.0] * 20)
    proc, url = start_accounting(db, trace)
    try:
        body = {"job_id": "nbody", "nodes": [node], "watts_per_server": 60.0}
        assert httpx.post(url + "/v1/jobs", json=body).status_code == 201
        wait(lambda: len(ledger_rows(db)[0]) >= 8)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    before, totals_before = ledger_rows(db)
    assert_consistent(before, totals_before)  # nothing half-written
    time.sleep(0.5)  # the node keeps measuring while the accounting is down

    proc, url = start_accounting(db, trace)
    try:
        wait(lambda: len(ledger_rows(db)[0]) >= len(before) + 5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    after, totals_after = ledger_rows(db)
    assert after[: len(before)] == before  # nothing lost, nothing rewritten
    assert_consistent(after, totals_after)  # no gap, no overlap, no double count
    gap = after[len(before)]
    assert gap[1] == before[-1][2]  # the restart picks up exactly where the last sample ended
    assert gap[2] - gap[1] >= 0.5
    # The downtime is measured, not lost: the power server kept its readings.
    assert gap[4] == pytest.approx(gap[3]) and gap[3] == pytest.approx(
        80 * (gap[2] - gap[1]), rel=0.1
    )
    assert totals_after[2] > totals_before[2] and totals_after[4] > totals_before[4]


@pytest.fixture(scope="module")
def node() -> Iterator[str]:
    cfg = PowerServerConfig(gpu=False, sample_interval_s=0.05, meters=[Measured(80.0)])
    with ServiceThread(power_app(cfg)) as svc:
        yield svc.url


@pytest.fixture(scope="module")
def acct_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("acct")


@pytest.fixture(scope="module")
def acct(acct_dir: Path) -> Iterator[str]:
    with ServiceThread(create_app(config(acct_dir))) as svc:
        yield svc.url


def profile_csv(path: Path) -> str:
    ScalingProfile(np.array([0.0, 10, 19]), np.array([0.0, 60.0, 120.0]), "p").to_csv(path)
    return str(path)


def test_measured_job_totals_progress_csv_and_metrics(acct: str, node: str, tmp_path: Path) -> None:
    body = {"job_id": "train-1", "nodes": [node], "servers": 1, "watts_per_server": 60.0}
    created = httpx.post(acct + "/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["samples"] == 0
    job = wait(lambda: (j := httpx.get(acct + "/v1/jobs/train-1").json())["samples"] >= 3 and j)
    assert job["measured_energy_share"] == pytest.approx(1.0)
    assert job["last_watts"] == pytest.approx(80.0, rel=0.05)
    assert job["last_power_source"] == "measured:rapl"
    # The replayed trace alternates 200 and 400 g/kWh: the energy-weighted mean lies between.
    assert job["emissions_g"] > 0
    assert 200.0 - 1e-9 <= job["mean_intensity_g_per_kwh"] <= 400.0 + 1e-9
    assert httpx.post(acct + "/v1/jobs/train-1/progress", json={"percent": 25}).status_code == 200
    job = httpx.get(acct + "/v1/jobs/train-1").json()
    assert job["progress_pct"] == 25.0
    assert job["g_per_percent"] == pytest.approx(job["emissions_g"] / 25)
    rows = list(csv.DictReader(io.StringIO(httpx.get(acct + "/v1/jobs/train-1/samples.csv").text)))
    assert len(rows) >= 3 and rows[0]["seq"] == "1" and rows[0]["power_source"] == "measured:rapl"
    assert all(rows[i]["start"] == rows[i - 1]["end"] for i in range(1, len(rows)))
    metrics = httpx.get(acct + "/metrics").text
    for name in (
        "carbonscaler_job_emissions_grams_total",
        "carbonscaler_job_energy_kwh_total",
        "carbonscaler_job_power_watts",
        "carbonscaler_job_servers",
        "carbonscaler_job_progress_percent",
        "carbonscaler_job_carbon_intensity_g_per_kwh",
        "carbonscaler_job_measured_energy_ratio",
    ):
        assert f'{name}{{job="train-1"}}' in metrics
    assert [j["job_id"] for j in httpx.get(acct + "/v1/jobs").json()].count("train-1") == 1


def test_dead_node_is_estimated_from_the_profile_and_labelled(acct: str, tmp_path: Path) -> None:
    body = {
        "job_id": "dead-node",
        "nodes": ["http://127.0.0.1:9"],
        "servers": 2,
        "profile_path": profile_csv(tmp_path / "p.csv"),
    }
    assert httpx.post(acct + "/v1/jobs", json=body).status_code == 201
    job = wait(lambda: (j := httpx.get(acct + "/v1/jobs/dead-node").json())["samples"] >= 2 and j)
    assert job["energy_kwh"] > 0  # never zero
    assert job["measured_energy_share"] == 0.0
    assert job["last_watts"] == pytest.approx(120.0)  # P(2) from the profile
    assert job["last_power_source"] == "estimated:profile"
    assert "unreachable" in job["last_note"]


def test_rescale_and_stop(acct: str, tmp_path: Path) -> None:
    body = {"job_id": "elastic", "servers": 1, "profile_path": profile_csv(tmp_path / "p.csv")}
    assert httpx.post(acct + "/v1/jobs", json=body).status_code == 201
    assert httpx.patch(acct + "/v1/jobs/elastic", json={"servers": 2}).json()["servers"] == 2
    wait(lambda: httpx.get(acct + "/v1/jobs/elastic").json()["last_watts"] == 120.0)
    stopped = httpx.post(acct + "/v1/jobs/elastic/stop").json()
    assert stopped["active"] is False
    time.sleep(0.3)
    assert httpx.get(acct + "/v1/jobs/elastic").json()["samples"] == stopped["samples"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/jobs", {"job_id": "x"}, 422),  # no way to estimate gaps
        ("POST", "/v1/jobs", {"job_id": "../x", "watts_per_server": 5}, 422),
        ("POST", "/v1/jobs", {"job_id": "x", "watts_per_server": -5}, 422),
        ("POST", "/v1/jobs", {"job_id": "x", "watts_per_server": 5, "extra": 1}, 422),
        ("POST", "/v1/jobs", {"job_id": "x", "nodes": ["ftp://n"], "watts_per_server": 5}, 422),
        (
            "POST",
            "/v1/jobs",
            {"job_id": "x", "nodes": ["http://evil:1"], "watts_per_server": 5},
            422,
        ),
        ("POST", "/v1/jobs", {"job_id": "x", "pods": ["NoSlash"], "watts_per_server": 5}, 422),
        ("POST", "/v1/jobs", {"job_id": "x", "profile_path": "/nope.csv"}, 422),
        ("POST", "/v1/jobs", {"job_id": "x", "watts_per_server": 5, "progress_path": "rel"}, 422),
        ("POST", "/v1/jobs", [1, 2], 422),
        ("POST", "/v1/jobs", "not json", 422),
        ("POST", "/v1/jobs/train-0/progress", {"percent": 101}, 422),
        ("POST", "/v1/jobs/train-0/progress", {"percent": "lots"}, 422),
        ("POST", "/v1/jobs/nobody/progress", {"percent": 5}, 404),
        ("PATCH", "/v1/jobs/train-0", {"servers": -1}, 422),
        ("PATCH", "/v1/jobs/nobody", {"servers": 1}, 404),
        ("GET", "/v1/jobs/nobody", None, 404),
        ("GET", "/v1/jobs/nobody/samples.csv", None, 404),
        ("GET", "/v1/jobs/bad%20id", None, 422),
        ("POST", "/v1/jobs/nobody/stop", None, 404),
    ],
)
def test_bad_input_is_4xx(acct: str, method: str, path: str, body: Any, status: int) -> None:
    httpx.post(acct + "/v1/jobs", json={"job_id": "train-0", "watts_per_server": 5})
    if isinstance(body, str):
        answer = httpx.request(method, acct + path, content=body)
    else:
        answer = httpx.request(method, acct + path, json=body)
    assert answer.status_code == status, answer.text
    assert "detail" in answer.json()


def test_duplicate_is_409(acct: str) -> None:
    body = {"job_id": "twice", "watts_per_server": 5}
    assert httpx.post(acct + "/v1/jobs", json=body).status_code == 201
    assert httpx.post(acct + "/v1/jobs", json=body).status_code == 409


def test_file_progress_and_its_errors(acct: str, acct_dir: Path) -> None:
    progress = acct_dir / "progress" / "progress.csv"  # under the service's progress root
    progress.write_text("step,percent\n1,10\n2,20\n")
    body = {"job_id": "filed", "watts_per_server": 5, "progress_path": str(progress)}
    assert httpx.post(acct + "/v1/jobs", json=body).status_code == 201
    wait(lambda: httpx.get(acct + "/v1/jobs/filed").json()["progress_pct"] == 20.0)
    progress.write_text("step,percent\n1,10\n2,20\n3,garbage\n")
    job = wait(lambda: (j := httpx.get(acct + "/v1/jobs/filed").json())["progress_error"] and j)
    assert "is not a number" in job["progress_error"] and job["progress_pct"] == 20.0
    assert "garbage" not in job["progress_error"]  # the file's content is never echoed
    progress.write_text("step,percent\n1,10\n2,20\n3,30\n")
    wait(lambda: httpx.get(acct + "/v1/jobs/filed").json()["progress_pct"] == 30.0)
    assert httpx.get(acct + "/v1/jobs/filed").json()["progress_error"] is None
    posted = httpx.post(acct + "/v1/jobs/filed/progress", json={"percent": 5})
    assert posted.status_code == 422 and "progress_path" in posted.json()["detail"]


class ServeOn:
    """An app on a port chosen beforehand (the carbon service must know where to push)."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.app = app

    def start(self, app: Any) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        wait(lambda: self.server.started)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def test_carbon_service_pushes_drive_the_intensity(tmp_path: Path) -> None:
    start = datetime(2022, 1, 1, tzinfo=UTC)
    replay = TraceReplay(from_values([111.0] * 48, start="2022-01-01"), clock=ManualClock(start))
    carbon_cfg = CarbonServiceConfig(
        db_path=tmp_path / "carbon.db",
        provider=replay,
        update_interval_s=0.2,
        allowed_hosts=frozenset({"127.0.0.1"}),
    )
    with ServiceThread(carbon_app(carbon_cfg)) as carbon:
        place = ServeOn(None)
        cfg = config(
            tmp_path,
            carbon_trace=None,
            carbon_service_url=carbon.url,
            public_url=place.url,
        )
        place.start(create_app(cfg))
        try:
            body = {"job_id": "pushed", "watts_per_server": 100.0}
            assert httpx.post(place.url + "/v1/jobs", json=body).status_code == 201
            job = wait(
                lambda: (j := httpx.get(place.url + "/v1/jobs/pushed").json())["samples"] and j
            )
            assert job["last_intensity_g_per_kwh"] == pytest.approx(111.0)
            subs = httpx.get(carbon.url + "/v1/subscriptions").json()
            assert subs[0]["address"] == place.url + "/carbon"
            bad = httpx.post(place.url + "/carbon", json={"carbon_intensity": -3})
            assert bad.status_code == 422
        finally:
            place.stop()


# -- fuzzing the API from its own OpenAPI document -------------------------------------------


@pytest.fixture(scope="module")
def fuzz_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # No sampling round runs, and nodes must be on 127.0.0.1: a rescale or stop samples at
    # once, and fuzzed node URLs must never send traffic anywhere else.
    tracker = TrackerConfig(sample_interval_s=3600, allowed_hosts=frozenset({"127.0.0.1"}))
    cfg = config(tmp_path_factory.mktemp("fuzz"), tracker=tracker)
    with ServiceThread(create_app(cfg)) as svc:
        yield svc.url


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=str)
def test_fuzz_api_from_its_openapi_document(
    fuzz_url: str, mode: schemathesis.GenerationMode
) -> None:
    # Driven here rather than by schemathesis' pytest plugin, whose lazy schema loading does
    # not work with pytest 9 (as in test_carbon_service.py); the checks are schemathesis' own.
    schema = schemathesis.openapi.from_url(fuzz_url + "/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the served OpenAPI document has invalid parts"
    failures: list[str] = []
    for operation in operations:

        @settings(
            max_examples=6, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            # Schema-valid bodies may still name missing files or omit both estimate sources:
            # those must be refused (4xx), so only "schema-valid means accepted" is waived.
            case.call_and_validate(base_url=fuzz_url, excluded_checks=[positive_data_acceptance])

        try:
            run()
        except Unsatisfiable:
            assert mode is schemathesis.GenerationMode.NEGATIVE  # nothing to break: no inputs
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_cli_needs_one_carbon_source(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(accounting_command)
    runner = CliRunner()
    none = runner.invoke(app, ["--db-path", str(tmp_path / "a.db")])
    assert none.exit_code == 2 and "give a carbon source" in none.output
    trace = str(trace_csv(tmp_path / "t.csv", [1.0]))
    both = runner.invoke(
        app,
        ["--db-path", str(tmp_path / "a.db"), "--carbon-trace", trace,
         "--carbon-service", "http://127.0.0.1:9"],
    )  # fmt: skip
    assert both.exit_code == 2 and "exactly one carbon source" in both.output
