"""Power meters: RAPL on real file trees, NVML absent and doubled, Kepler against a local
Prometheus-format server, the composite's fallback, the node history, the remote client."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _servers import Answer, FakeAPI, Request
from carbonscaler.power import (
    CompositeMeter,
    ConstantMeter,
    KeplerMeter,
    MeterError,
    MeterUnavailable,
    NvmlMeter,
    PowerEntry,
    PowerHistory,
    PowerMeter,
    PowerReading,
    PowerServerClient,
    PowerServerError,
    ProfileMeter,
    RaplMeter,
    find_domains,
)
from carbonscaler.power.sampler import NodeSampler
from carbonscaler.profile import ScalingProfile

pytestmark = pytest.mark.integration  # starts real processes or servers


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- RAPL on a powercap tree laid out like /sys ---------------------------------------------

MAX_UJ = 262_143_328_850  # a typical max_energy_range_uj


def zone(root: Path, rel: str, name: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    """A zone folder in the device tree, linked flat from the class folder as /sys does."""
    device = root / "devices" / "intel-rapl" / rel
    device.mkdir(parents=True)
    (device / "name").write_text(name + "\n")
    (device / "energy_uj").write_text(f"{energy_uj}\n")
    (device / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (root / "class" / device.name).symlink_to(device, target_is_directory=True)
    return device


def set_uj(zone_dir: Path, energy_uj: int) -> None:
    (zone_dir / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    """Two sockets with core/uncore/dram subzones, psys, and an mmio twin of package-0."""
    (tmp_path / "class").mkdir()
    z = {
        "pkg0": zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000),
        "core0": zone(tmp_path, "intel-rapl:0/intel-rapl:0:0", "core", 500_000),
        "uncore0": zone(tmp_path, "intel-rapl:0/intel-rapl:0:1", "uncore", 100_000),
        "dram0": zone(tmp_path, "intel-rapl:0/intel-rapl:0:2", "dram", 200_000),
        "pkg1": zone(tmp_path, "intel-rapl:1", "package-1", 5_000_000),
        "psys": zone(tmp_path, "intel-rapl:2", "psys", 9_000_000),
    }
    mmio = tmp_path / "class" / "intel-rapl-mmio:0"
    mmio.mkdir()
    (mmio / "name").write_text("package-0\n")
    (mmio / "energy_uj").write_text("123\n")
    (mmio / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
    z["root"] = tmp_path / "class"
    return z


def test_rapl_counts_each_package_once_never_its_subzones(tree: dict[str, Path]) -> None:
    clock = Clock()
    meter = RaplMeter(tree["root"], monotonic=clock)
    assert [d.name for d in meter.domains] == ["package-0", "package-1"]
    clock.t += 2.0
    set_uj(tree["pkg0"], 1_000_000 + 60_000_000)  # 60 J in 2 s: 30 W
    set_uj(tree["pkg1"], 5_000_000 + 40_000_000)  # 20 W
    set_uj(tree["core0"], 500_000 + 50_000_000)  # inside package-0: must not add
    set_uj(tree["uncore0"], 100_000 + 5_000_000)
    set_uj(tree["dram0"], 200_000 + 16_000_000)  # 8 W of memory
    set_uj(tree["psys"], 9_000_000 + 200_000_000)  # the platform: contains the packages
    reading = meter.read()
    assert reading.watts == pytest.approx(50.0)
    assert reading.interval_s == pytest.approx(2.0)
    assert reading.energy_j == pytest.approx(100.0)
    assert reading.source == "measured:rapl" and reading.measured
    # The reference summed every zone it found: 30 + 20 + 25 + 2.5 + 8 + 100 W.


def test_rapl_dram_is_opt_in_because_the_package_excludes_memory(tree: dict[str, Path]) -> None:
    clock = Clock()
    meter = RaplMeter(tree["root"], include_dram=True, monotonic=clock)
    assert [d.name for d in meter.domains] == ["package-0", "dram", "package-1"]
    clock.t += 2.0
    set_uj(tree["pkg0"], 61_000_000)
    set_uj(tree["dram0"], 16_200_000)
    assert meter.read().watts == pytest.approx((60 + 16) / 2)


def test_rapl_also_reads_the_device_tree_layout(tree: dict[str, Path]) -> None:
    device_root = tree["root"].parent / "devices"
    assert [d.name for d in find_domains(device_root)] == ["package-0", "package-1"]


def test_rapl_counter_wraparound(tmp_path: Path) -> None:
    (tmp_path / "class").mkdir()
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 95_000_000, max_uj=100_000_000)
    clock = Clock()
    meter = RaplMeter(tmp_path / "class", monotonic=clock)
    clock.t += 1.0
    set_uj(pkg, 5_000_000)  # wrapped: 5 J to the top, 5 J after
    assert meter.read().watts == pytest.approx(10.0)
    clock.t += 1.0
    set_uj(pkg, 17_000_000)
    assert meter.read().watts == pytest.approx(12.0)


def test_rapl_counter_reset_is_an_error_then_reading_resumes(tmp_path: Path) -> None:
    (tmp_path / "class").mkdir()
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 200_000_000_000)
    clock = Clock()
    meter = RaplMeter(tmp_path / "class", monotonic=clock)
    clock.t += 1.0
    set_uj(pkg, 1_000_000)  # as a wrap this would be 62 kJ in 1 s: a reset
    with pytest.raises(MeterError, match="reset"):
        meter.read()
    clock.t += 1.0
    set_uj(pkg, 41_000_000)
    assert meter.read().watts == pytest.approx(40.0)


def test_rapl_absent_or_unreadable_is_unavailable(
    tmp_path: Path, tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MeterUnavailable, match="no RAPL package zone"):
        RaplMeter(tmp_path / "empty")
    original = Path.read_text

    def root_only(self: Path, *args: Any, **kwargs: Any) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", root_only)
    with pytest.raises(MeterUnavailable, match="root"):
        RaplMeter(tree["root"])


def test_rapl_garbage_counter_is_an_error(tree: dict[str, Path]) -> None:
    meter = RaplMeter(tree["root"], monotonic=Clock())
    (tree["pkg0"] / "energy_uj").write_text("not-a-number\n")
    with pytest.raises(MeterError, match="whole number"):
        meter.read()


# -- NVML -----------------------------------------------------------------------------------


def test_nvml_without_the_package_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    with pytest.raises(MeterUnavailable, match="nvidia-ml-py"):
        NvmlMeter()


def test_nvml_without_a_driver_is_unavailable() -> None:
    pytest.importorskip("pynvml")
    with pytest.raises(MeterUnavailable, match="NVML cannot start"):
        NvmlMeter()  # this machine has the bindings but no NVIDIA driver


class FakeNvml(types.ModuleType):
    """The calls of ``pynvml`` the meter makes, on two GPUs: a counter one and a power one."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.energy_mj = [1_000_000.0, None]
        self.power_mw = [250_000.0, 100_000.0]
        self.initialised = False
        self.fail_init = False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> float:
        value = self.energy_mj[handle]
        if value is None:
            raise self.NVMLError("Not Supported")
        return value

    def nvmlDeviceGetPowerUsage(self, handle: int) -> float:
        return self.power_mw[handle]


def test_nvml_energy_counter_or_sampled_power_per_gpu() -> None:
    nvml, clock = FakeNvml(), Clock()
    meter = NvmlMeter(module=nvml, monotonic=clock)
    assert meter.uses_counters == [True, False]
    clock.t += 2.0
    nvml.energy_mj[0] = 1_000_000.0 + 500_000.0  # 500 J in 2 s: 250 W
    nvml.power_mw[1] = 140_000.0  # 100 W then 140 W: trapezoid 120 W
    reading = meter.read()
    assert reading.watts == pytest.approx(250.0 + 120.0)
    assert reading.source == "measured:nvml"
    nvml.energy_mj[0] = 10.0  # driver reloaded
    clock.t += 1.0
    with pytest.raises(MeterError, match="reloaded"):
        meter.read()
    meter.close()
    assert not nvml.initialised


def test_nvml_double_without_driver_and_missing_gpu() -> None:
    nvml = FakeNvml()
    nvml.fail_init = True
    with pytest.raises(MeterUnavailable, match="Driver Not Loaded"):
        NvmlMeter(module=nvml)
    with pytest.raises(MeterUnavailable, match="no NVIDIA GPU"):
        NvmlMeter([5], module=FakeNvml())


# -- Kepler through a Prometheus-format server ----------------------------------------------


def vector(value: float | None, t: float = 1_700_000_000.0) -> dict[str, Any]:
    result = [] if value is None else [{"metric": {}, "value": [t, repr(value)]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.fixture()
def prometheus() -> Iterator[FakeAPI]:
    api = FakeAPI()
    yield api
    api.close()


def serve_metrics(api: FakeAPI, watts_by_metric: dict[str, float]) -> None:
    def answer(request: Request) -> Answer:
        query = request.query.get("query", "")
        for metric, watts in watts_by_metric.items():
            if f"rate({metric}{{" in query:
                return Answer(200, vector(watts))
        return Answer(200, vector(None))

    api.routes["/api/v1/query"] = answer


def test_kepler_newer_pod_metric(prometheus: FakeAPI) -> None:
    serve_metrics(prometheus, {"kepler_pod_cpu_joules_total": 42.5})
    with KeplerMeter(prometheus.url, pod="ml/train-0", monotonic=Clock()) as meter:
        reading = meter.read()
    assert reading.watts == 42.5 and reading.source == "measured:kepler"
    query = prometheus.calls("/api/v1/query")[0].query["query"]
    assert query == (
        'sum(rate(kepler_pod_cpu_joules_total{pod_namespace="ml",pod_name="train-0",'
        'zone="package"}[1m]))'
    )


def test_kepler_falls_back_to_the_older_names_and_remembers(prometheus: FakeAPI) -> None:
    serve_metrics(prometheus, {"kepler_container_joules_total": 17.0})
    meter = KeplerMeter(prometheus.url, pod="ml/train-0", window="2m", monotonic=Clock())
    assert meter.read().watts == 17.0
    assert meter.read().watts == 17.0
    queries = [r.query["query"] for r in prometheus.calls("/api/v1/query")]
    assert len(queries) == 3  # newer (empty), older; then the older one only
    assert 'container_namespace="ml",pod_name="train-0"}[2m]' in queries[1]
    meter.close()


def test_kepler_node_metrics_new_and_old(prometheus: FakeAPI) -> None:
    serve_metrics(prometheus, {"kepler_node_cpu_joules_total": 88.0})
    assert KeplerMeter(prometheus.url, node="n1").read().watts == 88.0
    serve_metrics(prometheus, {"kepler_node_package_joules_total": 77.0})
    assert KeplerMeter(prometheus.url, node="n1").read().watts == 77.0
    assert 'instance="n1"' in prometheus.requests[-1].query["query"]


def test_kepler_errors_are_clear(prometheus: FakeAPI) -> None:
    serve_metrics(prometheus, {})
    with pytest.raises(MeterError, match="no Kepler series for pod ml/x"):
        KeplerMeter(prometheus.url, pod="ml/x").read()
    prometheus.routes["/api/v1/query"] = [
        Answer(400, {"status": "error", "errorType": "bad_data", "error": "parse error"})
    ]
    with pytest.raises(MeterError, match="bad_data: parse error"):
        KeplerMeter(prometheus.url, pod="ml/x").read()
    prometheus.routes["/api/v1/query"] = [Answer(503, b"down")]
    with pytest.raises(MeterError, match="HTTP 503"):
        KeplerMeter(prometheus.url, pod="ml/x").read()
    with pytest.raises(MeterError, match="unreachable"):
        KeplerMeter("http://127.0.0.1:9", pod="ml/x", timeout_s=0.5).read()


def test_kepler_label_values_are_quoted_and_arguments_checked(prometheus: FakeAPI) -> None:
    serve_metrics(prometheus, {})
    with pytest.raises(MeterError):
        KeplerMeter(prometheus.url, node='n"}) or vector(1) #').read()
    assert 'node_name="n\\"}) or vector(1) #"' in prometheus.requests[0].query["query"]
    for kwargs in (
        {},
        {"pod": "a/b", "node": "n"},
        {"pod": "nobody"},
        {"node": "n", "window": "x"},
    ):
        with pytest.raises(ValueError):
            KeplerMeter(prometheus.url, **kwargs)  # type: ignore[arg-type]


# -- estimates, constants and the composite -------------------------------------------------


def profile() -> ScalingProfile:
    return ScalingProfile(np.array([0.0, 10, 19, 27]), np.array([0.0, 60, 115, 165]), "p")


def test_profile_meter_is_p_of_k_and_follows_rescaling() -> None:
    servers = [2]
    clock = Clock()
    meter = ProfileMeter(profile(), lambda: servers[0], monotonic=clock)
    clock.t += 10
    reading = meter.read()
    assert (reading.watts, reading.energy_j, reading.source) == (115.0, 1150.0, "estimated:profile")
    assert not reading.measured
    servers[0] = 3
    assert ProfileMeter(profile(), 3, per_server=True).watts() == pytest.approx(55.0)
    assert meter.read().watts == 165.0
    servers[0] = 9
    with pytest.raises(MeterError, match="outside profile"):
        meter.read()
    with pytest.raises(ValueError, match="outside profile"):
        ProfileMeter(profile(), 4)


def test_constant_meter_is_never_measured() -> None:
    assert ConstantMeter(10.0).read().source == "constant"
    assert not ConstantMeter(10.0).read().measured
    with pytest.raises(ValueError, match="not a measurement"):
        ConstantMeter(10.0, source="measured:rapl")
    with pytest.raises(ValueError):
        ConstantMeter(-1.0)
    with pytest.raises(ValueError):
        PowerReading(float("nan"), 1.0, "constant")


class Scripted(PowerMeter):
    """Answers from a script: a reading's watts, or an exception to raise."""

    def __init__(self, source: str, script: list[float | Exception], clock: Clock) -> None:
        self.source = source
        self.script = script
        self.clock = clock
        self.last_ok = clock()
        self.closed = False

    def read(self) -> PowerReading:
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        interval, self.last_ok = self.clock() - self.last_ok, self.clock()
        return PowerReading(step, interval, self.source)

    def close(self) -> None:
        self.closed = True


def test_composite_falls_back_and_never_counts_a_second_twice() -> None:
    clock = Clock()
    rapl = Scripted("measured:rapl", [50.0, MeterError("blip"), 70.0], clock)
    gone = Scripted("measured:nvml", [MeterUnavailable("no driver")], clock)
    estimate = ConstantMeter(30.0, source="estimated:nominal", monotonic=clock)
    meter = CompositeMeter([gone, rapl, estimate], monotonic=clock)
    clock.t += 1
    first = meter.read()
    assert (first.source, first.watts, first.interval_s) == ("measured:rapl", 50.0, 1.0)
    assert meter.unavailable == {"measured:nvml": "no driver"}
    clock.t += 1
    second = meter.read()
    assert (second.source, second.watts, second.interval_s) == ("estimated:nominal", 30.0, 1.0)
    clock.t += 1
    third = meter.read()  # RAPL's own interval is 2 s; the estimate already covered one
    assert (third.source, third.watts, third.interval_s) == ("measured:rapl", 70.0, 1.0)
    assert meter.source == "measured:rapl"
    meter.close()
    assert rapl.closed and gone.closed


def test_composite_with_nothing_left_says_why() -> None:
    clock = Clock()
    meter = CompositeMeter([Scripted("measured:rapl", [MeterUnavailable("no RAPL")], clock)])
    with pytest.raises(MeterUnavailable, match="no RAPL"):
        meter.read()
    with pytest.raises(ValueError):
        CompositeMeter([])


# -- the node's history and sampler ---------------------------------------------------------


def test_history_energy_is_the_overlap_of_each_reading() -> None:
    history = PowerHistory(keep_s=3600, hold_s=2.0)
    history.add(PowerEntry(0.0, 1.0, 10.0, 10.0, "measured:rapl"))
    history.add(PowerEntry(1.0, 2.0, 20.0, 0.0, "estimated:profile"))
    history.add(PowerEntry(2.0, 3.0, 30.0, 30.0, "measured:rapl"))
    w = history.window(0.5, 2.5)
    assert (w.energy_j, w.measured_j, w.covered_s, w.samples) == (5 + 20 + 15, 5 + 15, 2.0, 3)
    assert w.source == "measured:rapl" and w.watts == pytest.approx(20.0)
    held = history.window(2.0, 4.0)  # one second past the newest reading: held
    assert (held.energy_j, held.covered_s) == (60.0, 2.0)
    gap = history.window(2.0, 9.0)  # far past it: only the readings count
    assert (gap.energy_j, gap.covered_s) == (30.0, 1.0)
    assert history.window(-10, -5).covered_s == 0 and history.window(-10, -5).watts is None
    assert history.drain() == [10.0, 20.0, 30.0] and history.drain() == []


def test_history_forgets_old_readings() -> None:
    history = PowerHistory(keep_s=100)
    for i in range(1000):
        history.add(PowerEntry(float(i), float(i + 1), 1.0, 1.0, "measured:rapl"))
    assert len(history) < 300
    assert history.window(0, 1000).covered_s < 300


def test_sampler_adds_meters_and_labels_the_mix() -> None:
    clock = Clock(1000.0)
    cpu = CompositeMeter([ConstantMeter(40.0, source="estimated:nominal", monotonic=clock)])
    gpu = Scripted("measured:nvml", [200.0, MeterError("blip"), 210.0], clock)
    sampler = NodeSampler([cpu, gpu], wall=clock)
    sampler._last_end_s = clock()
    clock.t += 1
    entry = sampler.sample()
    assert entry is not None
    assert (entry.watts, entry.measured_w, entry.source) == (
        240.0,
        200.0,
        "estimated:nominal+measured:nvml",
    )
    clock.t += 1
    partial = sampler.sample()
    assert (
        partial is not None
        and partial.watts == 40.0
        and sampler.errors == {"measured:nvml": "blip"}
    )
    clock.t += 1
    last = sampler.sample()
    assert last is not None and last.start_s == partial.end_s and sampler.errors == {}


# -- the remote client ----------------------------------------------------------------------


def test_client_estimates_a_down_server_and_labels_it() -> None:
    async def go() -> Any:
        client = PowerServerClient(timeout_s=0.5)
        try:
            return await client.energy_or_estimate(
                "http://127.0.0.1:9", 0.0, 10.0, 55.0, "estimated:profile"
            )
        finally:
            await client.aclose()

    got = asyncio.run(go())
    assert got.energy_j == 550.0 and got.measured_j == 0.0
    assert got.source == "estimated:profile" and "unreachable" in got.note


def test_client_fills_what_the_server_does_not_cover(prometheus: FakeAPI) -> None:
    prometheus.routes["/v1/energy"] = [
        Answer(
            200,
            {"energy_j": 300.0, "measured_j": 300.0, "covered_s": 6.0, "source": "measured:rapl"},
        ),
        Answer(200, {"energy_j": "lots"}),
    ]

    async def go() -> Any:
        client = PowerServerClient()
        full = await client.energy_or_estimate(prometheus.url, 0.0, 10.0, 20.0, "estimated:profile")
        bad = await client.energy_or_estimate(prometheus.url, 0.0, 10.0, 20.0, "estimated:profile")
        return full, bad

    full, bad = asyncio.run(go())
    assert (full.energy_j, full.measured_j, full.source) == (380.0, 300.0, "measured:rapl")
    assert "covered 6.0 of 10.0 s" in full.note
    assert bad.energy_j == 200.0 and "without energy figures" in bad.note
    assert prometheus.calls("/v1/energy")[0].query == {"start": "0.0", "end": "10.0"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x", r"not an http\(s\) URL"),
        ("http://host:99999/", "not a usable"),
        ("http://hôst/", "not a usable"),
    ],
)
def test_client_refuses_unusable_urls(url: str, message: str) -> None:
    with pytest.raises(PowerServerError, match=message):
        asyncio.run(PowerServerClient().get_json(url, {}))


def test_client_times_out_and_reads_statuses(prometheus: FakeAPI) -> None:
    prometheus.routes["/slow"] = [Answer(200, {"ok": True}, delay_s=1.0)]
    prometheus.routes["/text"] = [Answer(200, b"plain words")]
    client = PowerServerClient(timeout_s=0.2)
    with pytest.raises(PowerServerError, match=r"within 0\.2 s"):
        asyncio.run(client.get_json(prometheus.url + "/slow", {}))
    with pytest.raises(PowerServerError, match="without a JSON body"):
        asyncio.run(client.get_json(prometheus.url + "/text", {}))
    status, body = asyncio.run(client.get_json(prometheus.url + "/missing", {"a": "b c"}))
    assert status == 404 and "no route" in body["error"]
    assert prometheus.calls("/missing")[0].query == {"a": "b c"}
