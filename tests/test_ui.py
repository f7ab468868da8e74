"""The dashboard's routes without a browser (issue #13): every page and API answers, bad input
gets a 4xx that says what is wrong (never a 500), no query reaches a file it was not offered,
uploads are bounded, run folders are only read, and every service's ``/docs`` is offline.

The browser tests (tests/test_ui_browser.py) check what a person sees; these check the server.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from carbonscaler.cli import app as cli_app
from carbonscaler.ui import DashboardConfig, create_app
from carbonscaler.ui.advisor import AdvisorQuery, SweepCache, SweepCancelled, build_spec
from carbonscaler.ui.catalog import Catalog
from carbonscaler.ui.jobs import list_runs, run_view
from carbonscaler.wording import percent

NL = "NL_2022_hourly"
# A short query: two weeks of synthetic trace, a 6 h job, a handful of starts.
SMALL = "trace=short&profile=amdahl:0.05&length=6&slack=1.5&min=1&max=4&starts=5"


def write_trace(path: Path, hours: int = 24 * 14, start: str = "2022-03-01") -> Path:
    """A plain trace file: a daily swing between about 150 and 450 gCO2eq/kWh."""
    times = np.datetime64(start) + np.arange(hours).astype("timedelta64[h]")
    values = 300 + 150 * np.sin(np.arange(hours) * 2 * np.pi / 24)
    lines = ["timestamp,carbon_intensity"]
    lines += [f"{t}Z,{v:.2f}" for t, v in zip(times, values, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def simulate_run(runs: Path, name: str = "sim", *, report: bool = True) -> Path:
    """A finished run under ``runs``, as the local runtime leaves it: the controller's state
    (the real controller on a virtual clock, on the offline dataset) and its report."""
    from carbonscaler.cli._runner import build_simulation, state_path
    from carbonscaler.control import JobSpec
    from carbonscaler.control.report import write_run_report
    from carbonscaler.control.state import StateStore

    spec = JobSpec.model_validate(
        {
            "name": name,
            "workload": {"command": "true"},
            "profile": "amdahl:0.05",
            "minReplicas": 1,
            "maxReplicas": 6,
            "length_hours": 12,
            "slack": 2,
            "carbon": {"dataset_zone": "DE", "year": 2020, "start": "2020-03-02T00:00Z"},
            "checkpoint_dir": str(runs / name),
        }
    )
    store = StateStore(state_path(spec))
    try:
        result = build_simulation(spec, store=store).run()
    finally:
        store.close()
    if report:
        write_run_report(result, Path(spec.checkpoint_dir), spec.slot_hours)
    return Path(spec.checkpoint_dir)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ui")
    traces = root / "traces"
    (traces / "nested").mkdir(parents=True)
    write_trace(traces / "short.csv")
    write_trace(traces / "nested" / "other.csv", start="2022-06-01")
    outside = root / "secret"
    outside.mkdir()
    write_trace(outside / "outside.csv")
    (traces / "leak.csv").symlink_to(outside / "outside.csv")  # must not be offered
    profiles = root / "profiles"
    profiles.mkdir()
    (profiles / "measured.csv").write_text(
        "nodes,throughput,power\n1,1.0,60\n2,1.9,120\n3,2.7,180\n4,3.4,240\n"
    )
    runs = root / "runs"
    runs.mkdir()
    simulate_run(runs, "done")
    simulate_run(runs, "noreport", report=False)
    (runs / "broken").mkdir()
    (runs / "broken" / "controller.db").write_bytes(b"not a database at all" * 100)
    return {"root": root, "traces": traces, "profiles": profiles, "runs": runs}


@pytest.fixture(scope="module")
def client(folders: dict[str, Path]) -> Iterator[TestClient]:
    config = DashboardConfig(
        trace_folders=(folders["traces"],),
        runs=folders["runs"],
        profile_folders=(folders["profiles"],),
        warm_up=False,
    )
    with TestClient(create_app(config), raise_server_exceptions=False) as test_client:
        yield test_client


def stream_events(client: TestClient, query: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/advisor/stream?{query}")
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


# -- every route answers ---------------------------------------------------------------------


def test_pages_and_api_answer(client: TestClient) -> None:
    home = client.get("/", follow_redirects=False)
    assert home.status_code == 307 and home.headers["location"] == "/advisor"
    page = client.get(f"/advisor?{SMALL}")
    assert page.status_code == 200
    assert 'data-ready="1"' in page.text and 'value="short" selected' in page.text
    assert "carbonscaler advise --trace" in page.text  # the same numbers on the command line
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/healthz").json() == {"status": "ok"}
    for asset in ("dashboard.css", "charts.js", "advisor.js", "jobs.js", "favicon.svg"):
        assert client.get(f"/static/{asset}").status_code == 200, asset
    schema = client.get("/openapi.json").json()
    assert {"/api/advisor", "/api/advisor/stream", "/api/jobs"} <= set(schema["paths"])


def test_traces_and_profiles_offered_by_name(client: TestClient) -> None:
    names = {t["name"]: t for t in client.get("/api/traces").json()}
    assert {"short", "other"} <= set(names)
    assert "leak" not in names and "outside" not in names  # a link out of the folder
    assert any(t["group"].startswith("offline dataset") for t in names.values())
    profiles = client.get("/api/profiles").json()
    assert profiles["files"] == ["measured"]
    assert any(p["profile"] == "amdahl:0.05" for p in profiles["presets"])


def test_what_if_api_stream_and_schedule(client: TestClient) -> None:
    answer = client.get(f"/api/advisor?{SMALL}").json()
    summary = answer["summary"]
    assert {r["policy"] for r in summary} >= {"carbonscaler", "agnostic", "suspend-resume"}
    assert answer["command"][:2] == ["carbonscaler", "advise"]
    events = stream_events(client, SMALL)
    assert events[-1]["event"] == "result"
    html = events[-1]["html"]
    for row in summary:
        saving = percent(row["mean_savings_vs_agnostic_pct"])
        assert f'data-testid="saving-{row["policy"]}"' in html
        assert re.search(rf'data-testid="saving-{row["policy"]}"[^>]*>{re.escape(saving)}<', html)
    charts = events[-1]["charts"]
    assert {d["policy"] for d in charts["distribution"]} >= {"carbonscaler", "exact"}
    assert len(charts["by_hour"]["labels"]) == 24 and len(charts["by_month"]["labels"]) == 12
    schedule = client.get(f"/api/advisor/schedule?{SMALL}&show=suspend-resume").json()
    assert schedule["policy"] == "suspend-resume" and schedule["deadline_hours"] == 9
    assert len(schedule["servers"]) == len(schedule["carbon"]) >= 9
    chosen = client.get(f"/api/advisor/schedule?{SMALL}&start=2022-03-05T07:00Z").json()
    assert chosen["start"].startswith("2022-03-0")  # the sweep's nearest start


def test_a_missed_deadline_is_flagged_beside_its_saving(client: TestClient) -> None:
    # The threshold policy ignores deadlines: with no slack it misses some.
    events = stream_events(client, "trace=short&length=12&slack=1&max=4&starts=6")
    html = events[-1]["html"]
    row = re.search(
        r'<tr class="missed" data-policy="suspend-resume-threshold">.*?</tr>', html, re.S
    )
    assert row is not None
    assert 'data-testid="missed-suspend-resume-threshold"' in row.group(0)
    assert "of deadlines" in row.group(0)


def test_uploaded_profile_travels_in_the_query(client: TestClient) -> None:
    csv = b"nodes,throughput,power\n0,0,0\n1,1.0,60\n2,1.8,118\n3,2.5,175\n"
    answer = client.post("/api/profiles", files={"file": ("mine.csv", csv, "text/csv")})
    assert answer.status_code == 200, answer.text
    spec = answer.json()["profile"]
    assert spec == "csv:1,1,60;2,1.8,118;3,2.5,175"
    result = client.get(
        "/api/advisor",
        params={"trace": "short", "profile": spec, "max": 3, "length": 6, "starts": 3},
    )
    assert result.status_code == 200, result.text
    by_name = client.get(
        "/api/advisor",
        params={"trace": "short", "profile": "measured", "max": 4, "length": 6, "starts": 3},
    )
    assert by_name.status_code == 200, by_name.text


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"nodes,throughput,power\n" + b"1,1.0,60\n" * 1000, 413, "at most 8,192 bytes"),
        (b"nodes,throughput,power\n" + b"1,1.0,60\n" * 50_000, 413, "body is larger than"),
        (b"nodes,throughput\n1,1\n", 422, "header must contain"),
        (b"nodes,throughput,power\n1,1,60\n3,2,120\n", 422, "without gaps"),
        (b"\xff\xfe\x00bad", 422, "UTF-8"),
    ],
    ids=["too-large", "far-too-large", "no-power-column", "gap", "not-text"],
)
def test_bad_uploads_are_refused(client: TestClient, body: bytes, status: int, says: str) -> None:
    answer = client.post("/api/profiles", files={"file": ("p.csv", body, "text/csv")})
    assert answer.status_code == status, answer.text
    assert says in answer.json()["detail"]


# -- bad input: a 4xx that says what is wrong ---------------------------------------------------

BAD = [
    ("trace=nope", 404, "unknown trace 'nope'"),
    ("trace=short&slack=0.5", 422, "slack"),
    ("trace=short&length=abc", 422, "must be a number, not 'abc'"),
    ("trace=short&min=x", 422, "min"),
    ("trace=short&min=5&max=4", 422, "must not exceed"),
    ("trace=short&max=9&profile=amdahl:0.05,servers=8", 422, "describes 1..8 servers"),
    ("trace=short&length=300", 422, "fewer than the deadline"),  # an infeasible job
    ("trace=short&forecast=crystal-ball", 422, "not a forecast model"),
    ("trace=short&starts=many", 422, "starts"),
    ("trace=short&error=2", 422, "forecast error"),
    ("trace=short&show=greedy", 422, "not a policy"),
    ("trace=short&profile=amdahl:2", 422, "serial fraction"),
    ("trace=short&profile=csv:1,1,60;3,2,120", 422, "without gaps"),
]


@pytest.mark.parametrize(("query", "status", "says"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_says_what_is_wrong(
    client: TestClient, query: str, status: int, says: str
) -> None:
    for path in ("/api/advisor", "/api/advisor/stream", "/api/advisor/schedule"):
        answer = client.get(f"{path}?{query}")
        assert answer.status_code == status, (path, answer.text[:300])
        assert says in json.dumps(answer.json()["detail"], ensure_ascii=False), answer.text
    page = client.get(f"/advisor?{query}")
    assert page.status_code == status
    assert 'data-testid="problems"' in page.text and 'data-ready="0"' in page.text
    assert says.replace("'", "&#39;") in page.text


@pytest.mark.parametrize(
    "name",
    [
        "../secret/outside",
        "/etc/passwd",
        "leak",
        "outside",
        "nested/../../secret/outside",
        str(Path(__file__)),
    ],
)
def test_no_query_reaches_a_file_outside_the_folders(client: TestClient, name: str) -> None:
    answer = client.get("/api/advisor", params={"trace": name, "length": 6})
    assert answer.status_code == 404 and "unknown trace" in answer.json()["detail"]
    for profile in (name, "/etc/passwd", "../profiles/measured.csv"):
        refused = client.get("/api/advisor", params={"trace": "short", "profile": profile})
        assert refused.status_code in (404, 422), refused.text
        assert "root:" not in refused.text


# -- the jobs pages ----------------------------------------------------------------------------


def test_jobs_list_and_run_pages(client: TestClient, folders: dict[str, Path]) -> None:
    from carbonscaler.control.controller import RunReport
    from carbonscaler.control.report import headline

    listed = {(r["folder"], r["name"]): r for r in client.get("/api/jobs").json()}
    assert listed["done", "done"]["status"] == "finished"
    assert listed["noreport", "noreport"]["status"] == "finished"  # its state says done
    assert ("broken", "broken") in listed
    page = client.get("/jobs")
    assert page.status_code == 200 and "/jobs/done/done" in page.text
    assert client.get("/jobs/live").json()["html"].count("<tr data-run=") == 3
    run = client.get("/jobs/done/done")
    assert run.status_code == 200
    view = client.get("/api/jobs/done/done").json()
    data = json.loads((folders["runs"] / "done" / "report.json").read_text())
    report = RunReport(
        **{
            **{k: v for k, v in data.items() if k in RunReport.__dataclass_fields__},
            "hours_by_servers": {int(k): v for k, v in data["hours_by_servers"].items()},
        }
    )
    assert view["report"]["headline"] == headline(report)
    assert view["report"]["savings_pct"] == pytest.approx(data["savings_pct"], abs=1e-3)
    state = view["state"]
    assert state["completed"] and state["progress_pct"] == 100.0
    assert state["chart"]["deadline_hours"] == 24
    assert state["agnostic_total_g"] > state["emissions_g"] > 0
    assert [e["kind"] for e in state["events"]][:1] == ["planned"]
    assert any(e["kind"] == "rescaled" and "→" in e["text"] for e in state["events"])
    live = client.get("/jobs/done/done/live").json()
    assert "report-headline" in live["details"] and live["view"]["live"] is False
    assert client.get("/jobs/done/done/report.png").headers["content-type"] == "image/png"
    assert client.get("/jobs/done/done/report.html").status_code == 200


def test_a_broken_or_missing_run_is_a_page_not_a_500(client: TestClient) -> None:
    broken = client.get("/jobs/broken/broken")
    assert broken.status_code == 200 and "cannot be read" in broken.text
    assert client.get("/api/jobs/broken/broken").json()["status"] == "unreadable"
    for path in ("/jobs/nope/nope", "/jobs/done/other", "/jobs/..%2F..%2Fetc/passwd"):
        answer = client.get(path)
        assert answer.status_code == 404, path
    assert client.get("/api/jobs/nope/nope").status_code == 404
    for file in ("controller.db", "report.json", "..%2Freport.html", "%2Fetc%2Fpasswd"):
        assert client.get(f"/jobs/done/done/{file}").status_code == 404, file
    assert client.get("/no/such/page").status_code == 404


def test_run_folders_are_only_read(client: TestClient, folders: dict[str, Path]) -> None:
    def snapshot() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(folders["runs"])): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folders["runs"].rglob("*")
        }

    before = snapshot()
    for _ in range(2):
        client.get("/jobs")
        client.get("/api/jobs")
        client.get("/jobs/done/done")
        client.get("/jobs/noreport/noreport/live")
        client.get("/api/jobs/broken/broken")
    assert snapshot() == before  # no -wal/-shm left, nothing changed


def test_a_run_under_way_and_one_not_saved_for_a_while(tmp_path: Path) -> None:
    from carbonscaler.cli._runner import build_simulation, state_path
    from carbonscaler.control import JobSpec
    from carbonscaler.control.state import StateStore

    spec = JobSpec.model_validate(
        {
            "name": "halfway",
            "workload": {"command": "true"},
            "profile": "amdahl:0.05",
            "minReplicas": 1,
            "maxReplicas": 2,
            "length_hours": 12,
            "slack": 2,
            "carbon": {"dataset_zone": "DE", "year": 2020, "start": "2020-03-02T00:00Z"},
            "checkpoint_dir": str(tmp_path / "halfway"),
        }
    )
    store = StateStore(state_path(spec))
    controller = build_simulation(spec, store=store)
    controller.prepare()
    for _ in range(3):  # three slots of the job, then the controller is gone
        controller.step()
        controller.clock.sleep(3600)
    controller.step()
    store.close()
    ref = next(r for r in list_runs(tmp_path) if r.name == "halfway")
    now = run_view(ref)
    assert now["status"] == "running" and now["live"] is True
    assert 0 < now["state"]["progress_pct"] < 100
    assert now["state"]["agnostic_so_far_g"] > 0
    assert now["state"]["planned_pct_now"] is not None
    later = run_view(ref, now=time.time() + 3600)
    assert later["status"] == "stopped" and later["live"] is False


# -- the numbers are carbonscaler advise's ------------------------------------------------------


def test_dashboard_numbers_equal_the_cli(client: TestClient, shared_dir: Path) -> None:
    config = DashboardConfig(trace_folders=(shared_dir / "traces",), warm_up=False)
    query = f"trace={NL}&profile=amdahl:0.05&length=24&slack=1.5&min=1&max=8&starts=40"
    with TestClient(create_app(config)) as shared:
        answer = shared.get(f"/api/advisor?{query}").json()
        html = stream_events(shared, query)[-1]["html"]
    done = CliRunner().invoke(cli_app, [*answer["command"][1:], "--json"])
    assert done.exit_code == 0, done.output
    printed = json.loads(done.stdout)
    assert printed == answer["summary"]
    for row in printed:
        shown = re.search(rf'data-testid="saving-{row["policy"]}"[^>]*>([^<]*)<', html)
        assert shown is not None and shown.group(1) == percent(row["mean_savings_vs_agnostic_pct"])


def test_a_sweep_can_be_cancelled(folders: dict[str, Path]) -> None:
    catalog = Catalog([folders["traces"]], dataset=False)
    query = AdvisorQuery(traces=("short",), length=6, starts="8")
    spec, _ = build_spec(query, catalog)
    cache = SweepCache()
    cancelled = threading.Event()
    seen: list[int] = []

    def progress(done: int, total: int, label: str) -> None:
        seen.append(done)
        if done >= 1:
            cancelled.set()  # the page went away after the first policy

    with pytest.raises(SweepCancelled):
        cache.run(query.sweep_key(), spec, progress, cancelled)
    assert cache.get(query.sweep_key()) is None and max(seen) < 7
    result = cache.run(query.sweep_key(), spec, lambda *a: None, threading.Event())
    assert cache.get(query.sweep_key()) is result


# -- /docs works offline, for every service ------------------------------------------------------


def _service_apps(tmp: Path) -> dict[str, FastAPI]:
    from carbonscaler.accounting.tracker import TrackerConfig
    from carbonscaler.power import ConstantMeter
    from carbonscaler.providers import ManualClock, TraceReplay
    from carbonscaler.services import CarbonServiceConfig
    from carbonscaler.services import create_app as carbon_app
    from carbonscaler.services.accounting import AccountingConfig
    from carbonscaler.services.accounting import create_app as accounting_app
    from carbonscaler.services.power import PowerServerConfig
    from carbonscaler.services.power import create_app as power_app
    from carbonscaler.trace import from_values

    trace = from_values([100.0 + i for i in range(48)], start="2022-01-01")
    return {
        "carbon": carbon_app(
            CarbonServiceConfig(
                db_path=tmp / "reg.db",
                provider=TraceReplay(trace, clock=ManualClock("2022-01-01")),
                update_interval_s=3600,
            )
        ),
        "power": power_app(PowerServerConfig(meters=[ConstantMeter(10.0)], sample_interval_s=1)),
        "accounting": accounting_app(
            AccountingConfig(
                db_path=tmp / "acct.db",
                trace=from_values([200.0] * 48, start="2022-01-01"),
                tracker=TrackerConfig(sample_interval_s=3600),
            )
        ),
        "dashboard": create_app(DashboardConfig(runs=tmp / "runs", warm_up=False)),
    }


def test_every_services_docs_use_only_local_assets(tmp_path: Path) -> None:
    for name, service in _service_apps(tmp_path).items():
        with TestClient(service) as api:
            page = api.get("/docs")
            assert page.status_code == 200, name
            urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
            urls += re.findall(r"url: '([^']+)'", page.text)
            assert len(urls) >= 4, (name, urls)
            assert all(u.startswith("/") and not u.startswith("//") for u in urls), (name, urls)
            assert "http" not in page.text.replace("http-equiv", ""), name
            for url in urls:
                asset = api.get(url)
                assert asset.status_code == 200, (name, url)
            assert (
                api.get("/docs/assets/swagger-ui-bundle.js")
                .headers["content-type"]
                .startswith(("application/javascript", "text/javascript"))
            )
            assert api.get("/redoc").status_code == 404, name  # it would load from a CDN
