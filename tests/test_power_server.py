"""The power server, served for real on 127.0.0.1: reference GET /, /v1, metrics, bad input,
a RAPL tree whose counters advance in real time, and the CLI as a real process."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from _servers import ServiceThread
from carbonscaler.cli.power_server import power_server_command
from carbonscaler.power import ConstantMeter, PowerMeter, PowerReading
from carbonscaler.services.power import PowerServerConfig, create_app

pytestmark = pytest.mark.integration  # starts real processes or servers


class LiveRapl:
    """A powercap tree whose package counter advances at ``watts`` in real time."""

    def __init__(self, root: Path, watts: float) -> None:
        self.zone = root / "intel-rapl:0"
        self.zone.mkdir(parents=True)
        (self.zone / "name").write_text("package-0\n")
        (self.zone / "max_energy_range_uj").write_text("262143328850\n")
        self.watts = watts
        self.t0 = time.monotonic()
        self._write()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _write(self) -> None:
        energy_uj = int((time.monotonic() - self.t0) * self.watts * 1e6)
        tmp = self.zone / "energy_uj.tmp"
        tmp.write_text(f"{energy_uj}\n")
        os.replace(tmp, self.zone / "energy_uj")  # a reader never sees a half-written number

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self._write()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture()
def rapl(tmp_path: Path) -> Iterator[LiveRapl]:
    tree = LiveRapl(tmp_path / "powercap", 50.0)
    yield tree
    tree.stop()


def config(root: Path, **options: object) -> PowerServerConfig:
    defaults: dict[str, object] = {"powercap_root": root, "gpu": False, "sample_interval_s": 0.05}
    return PowerServerConfig(**{**defaults, **options})  # type: ignore[arg-type]


def test_reference_get_returns_readings_since_the_previous_call(rapl: LiveRapl) -> None:
    with ServiceThread(create_app(config(rapl.zone.parent))) as svc:
        time.sleep(0.5)
        first = httpx.get(svc.url + "/").json()
        assert isinstance(first, list) and len(first) >= 5
        assert all(isinstance(w, float) for w in first)
        assert sum(first[1:]) / len(first[1:]) == pytest.approx(50.0, rel=0.25)
        time.sleep(0.2)
        second = httpx.get(svc.url + "/").json()
        assert 1 <= len(second) <= 8  # only the new ones: the first call took the rest


def test_v1_power_and_energy_say_measured_rapl(rapl: LiveRapl) -> None:
    with ServiceThread(create_app(config(rapl.zone.parent))) as svc:
        time.sleep(0.6)
        power = httpx.get(svc.url + "/v1/power", params={"window_s": 0.4}).json()
        assert power["source"] == "measured:rapl"
        assert power["watts"] == pytest.approx(50.0, rel=0.2)
        assert power["measured_j"] == pytest.approx(power["energy_j"])
        end = time.time() - 0.05
        energy = httpx.get(svc.url + "/v1/energy", params={"start": end - 0.4, "end": end}).json()
        assert energy["covered_s"] == pytest.approx(0.4, abs=1e-6)
        assert energy["energy_j"] == pytest.approx(20.0, rel=0.2)
        health = httpx.get(svc.url + "/healthz").json()
        assert health["status"] == "ok" and health["sources"] == ["measured:rapl"]
        metrics = httpx.get(svc.url + "/metrics").text
        assert 'carbonscaler_node_power_watts{source="measured:rapl"}' in metrics
        assert 'carbonscaler_node_energy_joules_total{source="measured:rapl"}' in metrics


def test_no_source_is_reported_not_invented(tmp_path: Path) -> None:
    with ServiceThread(create_app(config(tmp_path / "nothing"))) as svc:
        time.sleep(0.2)
        assert httpx.get(svc.url + "/").json() == []
        answer = httpx.get(svc.url + "/v1/power")
        assert answer.status_code == 503 and "--estimate-watts" in answer.json()["detail"]
        health = httpx.get(svc.url + "/healthz").json()
        assert health["status"] == "no-source"
        assert "measured:rapl" in health["unavailable"]


def test_estimate_is_labelled(tmp_path: Path) -> None:
    cfg = config(tmp_path / "nothing", estimate_watts=60.0)
    with ServiceThread(create_app(cfg)) as svc:
        time.sleep(0.3)
        power = httpx.get(svc.url + "/v1/power", params={"window_s": 0.2}).json()
        assert (power["source"], power["measured_j"]) == ("estimated:nominal", 0.0)
        assert power["watts"] == pytest.approx(60.0)
        assert httpx.get(svc.url + "/healthz").json()["status"] == "estimating"


def test_profile_estimate_is_the_nodes_share(tmp_path: Path, shared_dir: Path) -> None:
    profile = shared_dir / "profiles" / "nbody10k.csv"
    cfg = config(tmp_path / "nothing", profile_path=profile, servers=2)
    with ServiceThread(create_app(cfg)) as svc:
        time.sleep(0.3)
        power = httpx.get(svc.url + "/v1/power", params={"window_s": 0.2}).json()
        assert power["source"] == "estimated:profile"
        assert power["watts"] == pytest.approx(104.8738026807935 / 2)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/energy", {"start": "10", "end": "5"}),
        ("/v1/energy", {"start": "10"}),
        ("/v1/energy", {"start": "x", "end": "5"}),
        ("/v1/energy", {"start": "nan", "end": "5"}),
        ("/v1/energy", {"start": "-1", "end": "5"}),
        ("/v1/energy", {"start": "0", "end": "9e9"}),
        ("/v1/power", {"window_s": "0"}),
        ("/v1/power", {"window_s": "inf"}),
        ("/v1/power", {"window_s": "abc"}),
    ],
)
def test_bad_input_is_4xx(tmp_path: Path, path: str, params: dict[str, str]) -> None:
    cfg = config(tmp_path / "nothing", meters=[ConstantMeter(5.0)])
    with ServiceThread(create_app(cfg)) as svc:
        answer = httpx.get(svc.url + path, params=params)
        assert 400 <= answer.status_code < 500, answer.text


def test_several_apps_in_one_process_have_their_own_metrics(tmp_path: Path) -> None:
    class Fixed(PowerMeter):
        source = "measured:test"

        def __init__(self, watts: float) -> None:
            self.watts = watts

        def read(self) -> PowerReading:
            return PowerReading(self.watts, 0.05, self.source)

    one = ServiceThread(create_app(config(tmp_path, meters=[Fixed(1.0)])))
    two = ServiceThread(create_app(config(tmp_path, meters=[Fixed(2.0)])))
    try:
        time.sleep(0.2)
        assert 'source="measured:test"} 1.0' in httpx.get(one.url + "/metrics").text
        assert 'source="measured:test"} 2.0' in httpx.get(two.url + "/metrics").text
    finally:
        one.stop()
        two.stop()


def test_cli_rejects_half_an_estimate(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(power_server_command)
    done = CliRunner().invoke(app, ["--powercap-root", str(tmp_path), "--servers", "2"])
    assert done.exit_code == 2 and "--profile and --servers" in done.output
