"""The dashboard's cluster page without a browser (issue #13): the route and its API answer,
bad input gets a 4xx that says what is wrong (never a 500), no query reaches a file it was not
offered, the page's numbers are ``carbonscaler advise-cluster --json``'s for the same query, and
the URL carries the whole state.

The browser test is tests/test_ui_cluster_browser.py.
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from carbonscaler.cli import app as cli_app
from carbonscaler.ui import DashboardConfig, create_app
from carbonscaler.ui.advisor import SweepCancelled
from carbonscaler.ui.catalog import Catalog
from carbonscaler.ui.cluster import (
    MAX_JOBS,
    ClusterCache,
    ClusterQuery,
    parse_cluster_query,
    prepare_cluster,
)
from carbonscaler.wording import percent
from test_ui import write_trace

# A small stream: a dozen jobs on a two-week synthetic trace, a tight capacity.
SMALL = "trace=short&jobs=12&rate=2&shortest=4&longest=16&slack=1.5&min=1&max=6&capacity=8"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ui-cluster")
    traces = root / "traces"
    traces.mkdir()
    write_trace(traces / "short.csv")
    outside = root / "secret"
    outside.mkdir()
    write_trace(outside / "outside.csv")
    profiles = root / "profiles"
    profiles.mkdir()
    (profiles / "measured.csv").write_text(
        "nodes,throughput,power\n1,1.0,60\n2,1.9,120\n3,2.7,180\n4,3.4,240\n"
    )
    return {"root": root, "traces": traces, "profiles": profiles}


@pytest.fixture(scope="module")
def client(folders: dict[str, Path]) -> Iterator[TestClient]:
    config = DashboardConfig(
        trace_folders=(folders["traces"],),
        runs=folders["root"] / "runs",
        profile_folders=(folders["profiles"],),
        warm_up=False,
    )
    with TestClient(create_app(config), raise_server_exceptions=False) as test_client:
        yield test_client


def stream_events(client: TestClient, query: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/cluster/stream?{query}")
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def test_the_page_and_its_api_answer(client: TestClient) -> None:
    page = client.get(f"/cluster?{SMALL}")
    assert page.status_code == 200
    assert 'href="/cluster" aria-current="page"' in page.text
    assert 'data-ready="1"' in page.text and "/static/cluster.js" in page.text
    assert "carbonscaler advise-cluster --generate 12" in page.text
    assert 'value="2022-03-08T00:00Z"' in page.text  # the default start: a week in
    events = stream_events(client, SMALL)
    assert events[-1]["event"] == "result", events[-1]
    labels = [e["label"] for e in events if e["event"] == "progress"]
    assert any("joint" in label for label in labels)
    result = events[-1]
    assert 'data-testid="cluster-saving-joint"' in result["html"]
    charts = result["charts"]
    assert charts["policy"] == "joint" and len(charts["jobs"]) == 12
    slots = len(charts["capacity"])
    assert slots == len(charts["carbon"]) and all(
        len(j["servers"]) == slots for j in charts["jobs"]
    )
    assert all(k == 8 for k in charts["capacity"])
    assert {s["name"] for s in charts["used"]} == {
        "agnostic",
        "suspend-resume",
        "carbonscaler",
        "joint",
    }
    for i in range(slots):  # each job's share adds up to the servers in use
        total = sum(j["servers"][i] for j in charts["jobs"])
        used = next(s for s in charts["used"] if s["name"] == "joint")["values"][i]
        assert total == pytest.approx(used, abs=1e-3)
        assert total <= 8 + 1e-6
    # A default page (no query) answers too, and the nav links to it from every page.
    assert client.get("/cluster").status_code == 200
    assert 'href="/cluster"' in client.get("/advisor").text


def test_another_policy_only_changes_the_chart(client: TestClient) -> None:
    joint = client.get(f"/api/cluster?{SMALL}").json()
    agnostic = client.get(f"/api/cluster?{SMALL}&show=agnostic").json()
    assert joint["summary"] == agnostic["summary"]
    assert agnostic["charts"]["policy"] == "agnostic"
    assert joint["charts"]["jobs"] != agnostic["charts"]["jobs"]


BAD = [
    ("trace=nope", 404, "unknown trace 'nope'"),
    (f"{SMALL}&slack=0.5", 422, "slack (deadline = slack × length): must be at least 1"),
    (f"{SMALL}&jobs=many", 422, "jobs (jobs in the stream): must be a number, not 'many'"),
    (f"{SMALL}&jobs={MAX_JOBS + 1}", 422, f"must be at least 1 and at most {MAX_JOBS}"),
    (f"{SMALL}&capacity=0", 422, "capacity (servers the cluster has per slot): must be at least 1"),
    (f"{SMALL}&capacity=2.5", 422, "capacity (servers the cluster has per slot): must be a whole"),
    (f"{SMALL}&rate=0", 422, "rate (mean arrivals per hour): must be more than 0"),
    (f"{SMALL}&min=5&max=2", 422, "min servers (5) must not exceed max servers (2)"),
    (f"{SMALL}&shortest=20&longest=4", 422, "the shortest job (20 h) must not be longer"),
    (f"{SMALL}&forecast=crystal", 422, "'crystal' is not a forecast model"),
    (f"{SMALL}&show=best", 422, "'best' is not a cluster policy"),
    (f"{SMALL}&start=soon", 422, "start: 'soon' is not a time"),
    (f"{SMALL}&start=2030-01-01T00:00Z", 422, "is outside the trace"),
    (f"{SMALL}&start=2022-03-14T00:00Z", 422, "choose an earlier start"),
    (f"{SMALL}&profile=amdahl:7", 422, "profile 'amdahl:7': serial fraction"),
    (f"{SMALL}&profile=csv:1,1,60", 422, "an uploaded profile is not offered for clusters"),
]


@pytest.mark.parametrize(("query", "status", "says"), BAD, ids=[b[0][-28:] for b in BAD])
def test_bad_input_says_what_is_wrong(
    client: TestClient, query: str, status: int, says: str
) -> None:
    for path in ("/api/cluster", "/api/cluster/stream"):
        answer = client.get(f"{path}?{query}")
        assert answer.status_code == status, (path, answer.text[:300])
        assert says in json.dumps(answer.json()["detail"], ensure_ascii=False), answer.text
    page = client.get(f"/cluster?{query}")
    assert page.status_code == status
    assert 'data-testid="problems"' in page.text and 'data-ready="0"' in page.text
    assert html.escape(says, quote=False).replace("'", "&#39;") in page.text


@pytest.mark.parametrize(
    "name", ["../secret/outside", "/etc/passwd", "outside", str(Path(__file__))]
)
def test_no_query_reaches_a_file_it_was_not_offered(client: TestClient, name: str) -> None:
    answer = client.get("/api/cluster", params={"trace": name, "jobs": 2})
    assert answer.status_code == 404 and "unknown trace" in answer.json()["detail"]
    for profile in (name, "/etc/passwd", "../profiles/measured.csv", "measured.csv"):
        refused = client.get("/api/cluster", params={"trace": "short", "profile": profile})
        assert refused.status_code == 422, refused.text
        assert "root:" not in refused.text


def test_a_profile_file_offered_is_used_by_name(
    client: TestClient, folders: dict[str, Path]
) -> None:
    answer = client.get(f"/api/cluster?{SMALL}&profile=measured&max=4")
    assert answer.status_code == 200, answer.text
    command = answer.json()["command"]
    assert command[command.index("--profile") + 1] == str(folders["profiles"] / "measured.csv")


@pytest.mark.parametrize(
    "extra",
    [
        "",
        # Forecast errors make every policy re-plan: fewer jobs keep it quick.
        "&jobs=5&forecast=uniform&error=0.2&overhead=120&seed=3&capacity=6"
        + "&start=2022-03-05T06:00Z",
        "&trace=DE:2020&jobs=6",
    ],
    ids=["defaults", "conditions", "dataset"],
)
def test_the_numbers_equal_advise_cluster_json(client: TestClient, extra: str) -> None:
    query = SMALL + extra
    if "DE:2020" in extra:
        from carbonscaler import datasets

        if not datasets.available():
            pytest.skip("the offline dataset is not installed")
    answer = client.get(f"/api/cluster?{query}").json()
    page = stream_events(client, query)[-1]["html"]
    done = CliRunner().invoke(cli_app, [*answer["command"][1:], "--json"])
    assert done.exit_code == 0, done.output
    printed = json.loads(done.stdout)
    assert printed["summary"] == answer["summary"]
    for key in ("trace", "zone", "start", "capacity", "jobs"):
        assert printed[key] == answer[key], key
    for row in printed["summary"]:
        policy = row["policy"]
        shown = re.search(rf'data-testid="cluster-saving-{policy}"[^>]*>([^<]*)<', page)
        assert shown is not None and shown.group(1) == percent(row["savings_vs_agnostic_pct"])
        misses = re.search(rf'data-testid="cluster-misses-{policy}"[^>]*>([^<]*)<', page)
        assert misses is not None
        assert misses.group(1) == (
            f"{row['deadline_misses']} of {row['jobs']}" if row["deadline_misses"] else "0"
        )
        if row["deadline_misses"]:
            assert f'data-testid="cluster-missed-{policy}"' in page
    # The per-slot charts are the command's per-policy records.
    joint = printed["policies"]["joint"]
    charts = answer["charts"]
    offset = joint["first_slot"] - round(charts["offset_hours"] / charts["slot_hours"])
    for job, shown_job in zip(joint["jobs"], charts["jobs"], strict=True):
        assert shown_job["name"] == job["name"]
        got = shown_job["servers"][offset : offset + len(job["servers"])]
        assert got == pytest.approx(job["servers"], abs=1e-4)


def test_the_url_carries_the_whole_state(client: TestClient) -> None:
    query = SMALL + "&jobs=4&forecast=uniform&error=0.1&overhead=60&seed=2&show=carbonscaler"
    query += "&profile=linear&start=2022-03-04T00:00Z"
    answer = client.get(f"/api/cluster?{query}").json()
    given = dict(parse_qsl(query))
    assert {k: v for k, v in answer["query"].items() if k in given} == given
    link = re.search(r'href="(/cluster\?[^"]*)"', stream_events(client, query)[-1]["html"])
    assert link is not None
    again = client.get(f"/api/cluster?{html.unescape(link.group(1)).split('?', 1)[1]}").json()
    assert again["query"] == answer["query"] and again["summary"] == answer["summary"]
    params: dict[str, list[str]] = {}
    for key, value in ClusterQuery(**_fields(answer["query"])).params():
        params.setdefault(key, []).append(value)
    assert parse_cluster_query(params, None).params() == list(answer["query"].items())


def _fields(query: dict[str, str]) -> dict[str, Any]:
    names = {"min": "min_servers", "max": "max_servers"}
    params = {k: [v] for k, v in query.items()}
    parsed = parse_cluster_query(params, None)
    return {names.get(k, k): getattr(parsed, names.get(k, k)) for k in query}


def test_a_run_can_be_cancelled(folders: dict[str, Path]) -> None:
    catalog = Catalog((folders["traces"],), dataset=False)
    query = parse_cluster_query({"jobs": ["3"]}, "short")
    prepared = prepare_cluster(query, catalog)
    cancelled = threading.Event()
    cancelled.set()
    cache = ClusterCache()
    with pytest.raises(SweepCancelled):
        cache.run(query, prepared, lambda *_: None, cancelled)
    assert cache.get(query.key()) is None
    seen: list[str] = []
    outcomes = cache.run(query, prepared, lambda d, t, label: seen.append(label), threading.Event())
    assert [o.policy for o in outcomes] == ["agnostic", "suspend-resume", "carbonscaler", "joint"]
    assert cache.get(query.key()) is outcomes and "simulating joint" in seen
