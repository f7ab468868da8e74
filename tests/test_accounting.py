"""Accounting maths against hand-computed values, the ledger's guarantees, progress files,
carbon feeds, and the tracker over a carbon change and a dead power server."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _servers import Answer, FakeAPI, Request
from carbonscaler.accounting import (
    SCHEMA_VERSION,
    ApiProgress,
    CarbonUnavailable,
    CsvProgress,
    IntensitySegment,
    Ledger,
    LedgerError,
    ProgressError,
    ProviderIntensityFeed,
    PushedFeed,
    SampleRecord,
    TimeMap,
    TrackedJob,
    Tracker,
    TrackerConfig,
    TrackerError,
    energy_piecewise_j,
    energy_trapezoid_j,
    interval_emissions,
    j_to_kwh,
)
from carbonscaler.profile import ScalingProfile
from carbonscaler.providers import ManualClock, TraceReplay
from carbonscaler.trace import from_values

pytestmark = pytest.mark.integration  # starts real processes or servers

T0 = datetime(2022, 1, 1, tzinfo=UTC).timestamp()  # a slot boundary of the hourly trace

# -- integration maths ----------------------------------------------------------------------


def test_piecewise_energy_is_exact_for_interval_averages() -> None:
    times = [0.0, 10.0, 15.0, 35.0]
    watts = [999.0, 100.0, 200.0, 50.0]  # the first value's interval is before t=0
    assert energy_piecewise_j(times, watts) == 100 * 10 + 200 * 5 + 50 * 20
    assert energy_trapezoid_j([0.0, 10.0, 20.0], [0.0, 100.0, 100.0]) == 500 + 1000
    with pytest.raises(ValueError):
        energy_piecewise_j([0.0, 1.0], [1.0])
    with pytest.raises(ValueError):
        energy_piecewise_j([1.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError):
        energy_trapezoid_j([0.0, 1.0], [1.0, -1.0])


def test_emissions_split_at_the_carbon_slot_boundary() -> None:
    # 100 W from 10:59:30 to 11:00:30; 200 g/kWh until 11:00, 400 after.
    # Hand: 100 W * 30 s = 3000 J = 1/1200 kWh -> 1/6 g at 200 and 1/3 g at 400: 0.5 g.
    segments = [IntensitySegment(0, 3600, 200.0), IntensitySegment(3600, 7200, 400.0)]
    got = interval_emissions(3570, 3630, 6000.0, segments)
    assert got.emissions_g == pytest.approx(0.5)
    assert got.intensity_g_per_kwh == pytest.approx(300.0)
    assert got.parts == ((3570, 3600, 200.0), (3600, 3630, 400.0)) and not got.stale
    # Without the split (intensity at the start) it would be 1/3 g; at the end 2/3 g.


def test_emissions_hold_over_gaps_and_flag_them_stale() -> None:
    segments = [IntensitySegment(100, 200, 300.0), IntensitySegment(250, 400, 100.0)]
    # 36 W for 100..300 s = 7200 J = 0.002 kWh; 300 g/kWh held over the gap 200..250.
    got = interval_emissions(100, 300, 7200.0, segments)
    assert got.emissions_g == pytest.approx(36 * 150 / 3.6e6 * 300 + 36 * 50 / 3.6e6 * 100)
    assert got.stale
    before = interval_emissions(0, 50, 3600.0, segments)  # before the first: its value
    assert before.emissions_g == pytest.approx(0.3) and before.stale
    assert interval_emissions(10, 10, 0.0, segments).emissions_g == 0.0
    with pytest.raises(ValueError):
        interval_emissions(0, 10, 1.0, [])
    assert j_to_kwh(3.6e6) == 1.0


# -- the ledger -----------------------------------------------------------------------------


def sample(seq: int, start: float, end: float, energy: float = 3600.0, **kw: Any) -> SampleRecord:
    fields: dict[str, Any] = {
        "job_id": "j1",
        "seq": seq,
        "start_s": start,
        "end_s": end,
        "watts": energy / (end - start),
        "energy_j": energy,
        "measured_j": energy / 2,
        "emissions_g": 0.2,
        "intensity_g_per_kwh": 200.0,
        "carbon_stale": False,
        "servers": 1,
        "progress_pct": None,
        "power_source": "measured:rapl+estimated:profile",
        "carbon_source": "replay:test",
    }
    return SampleRecord(**{**fields, **kw})


def test_ledger_totals_move_with_samples_and_replays_are_refused(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "acct.db")
    ledger.add_job("j1", {"job_id": "j1"}, servers=1, start_s=0.0)
    assert ledger.record([sample(1, 0.0, 5.0), sample(2, 5.0, 10.0, progress_pct=12.5)]) == 2
    # A replayed round (same keys), a gap and an overlap: none counted.
    assert ledger.record([sample(2, 5.0, 10.0), sample(3, 11.0, 15.0), sample(3, 9.0, 15.0)]) == 0
    job = ledger.job("j1")
    assert job is not None
    assert (job.samples, job.last_end_s, job.energy_j, job.measured_j) == (2, 10.0, 7200, 3600)
    assert job.emissions_g == pytest.approx(0.4) and job.measured_g == pytest.approx(0.2)
    assert job.progress_pct == 12.5 and job.progress_s == 10.0
    assert [s.seq for s in ledger.samples("j1")] == [1, 2]
    with pytest.raises(LedgerError, match="exists"):
        ledger.add_job("j1", {}, servers=1, start_s=0.0)
    with pytest.raises(LedgerError, match="unknown job"):
        ledger.record([sample(1, 0.0, 1.0, job_id="nobody")])
    assert ledger.job("j1") == job  # the failed transaction changed nothing
    ledger.close()


def test_ledger_is_wal_versioned_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "acct.db"
    Ledger(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="newer"):
        Ledger(path)
    with pytest.raises(LedgerError, match="does not exist"):
        Ledger(tmp_path / "no" / "acct.db")
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(LedgerError, match="cannot use"):
        Ledger(tmp_path / "junk.db")


def test_hostile_ids_are_data_not_sql(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "acct.db")
    hostile = "x'); DROP TABLE jobs;--"
    ledger.add_job(hostile, {"job_id": hostile}, servers=1, start_s=0.0)
    assert ledger.job(hostile) is not None and len(ledger.jobs()) == 1


# -- progress -------------------------------------------------------------------------------


def test_progress_csv_second_column_latest_complete_row(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    reader = CsvProgress(path)
    assert reader.read() is None  # not started
    path.write_text("iteration,progress\n")
    assert reader.read() is None  # a header only
    path.write_text("iteration,progress\n10,5.0\n20,10.5\n30,1")  # the last line is half-written
    assert reader.read() == 10.5
    path.write_text("0,0\n" + "".join(f"{i},{i / 100:.2f}\n" for i in range(1, 9000)))
    assert reader.read() == pytest.approx(89.99)  # only the tail is read


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1,5\n2,abc\n", "is not a number"),
        ("1,5\n2,150\n", "outside 0-100"),
        ("1,5\n7\n", "no second column"),
        ("1,5\n2,nan\n", "outside 0-100"),
    ],
)
def test_malformed_progress_rows_say_where(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "progress.csv"
    path.write_text(content)
    with pytest.raises(ProgressError, match=message) as caught:
        CsvProgress(path).read()
    assert str(path) in str(caught.value)
    # Where and what is wrong, never the row itself (issue 16: a file's content leaked).
    last_row = content.splitlines()[-1]
    assert last_row not in str(caught.value).replace(str(path), "")


def test_api_progress() -> None:
    progress = ApiProgress(20.0)
    assert progress.read() == 20.0
    assert progress.post("42.5") == 42.5 and progress.read() == 42.5
    with pytest.raises(ProgressError):
        progress.post(-1)


# -- feeds ----------------------------------------------------------------------------------


def replay(values: list[float]) -> TraceReplay:
    start = datetime(2022, 1, 1, tzinfo=UTC)
    return TraceReplay(from_values(values, start="2022-01-01"), clock=ManualClock(start))


def test_provider_feed_maps_wall_time_onto_a_fast_replay() -> None:
    # 1 wall second = 1 replay hour: the wall interval 0.5..2.5 s spans three slots.
    sim0 = datetime(2022, 1, 1, tzinfo=UTC)
    feed = ProviderIntensityFeed(
        replay([100.0, 200.0, 300.0, 400.0]), time_map=TimeMap(0.0, sim0, 3600)
    )
    segments = feed.segments(0.5, 2.5)
    assert [(s.start_s, s.end_s, s.g_per_kwh) for s in segments] == [
        (0.0, 1.0, 100.0),
        (1.0, 2.0, 200.0),
        (2.0, 3.0, 300.0),
    ]
    got = interval_emissions(0.5, 2.5, 7200.0, segments)  # 3600 W: 1/1800 kWh per 0.5 s
    assert got.emissions_g == pytest.approx((0.5 * 100 + 200 + 0.5 * 300) / 1000)


def test_pushed_feed_values_hold_until_the_next_push(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "acct.db")
    feed = PushedFeed(ledger)
    with pytest.raises(CarbonUnavailable):
        feed.segments(0, 10)
    feed.push(5.0, 100.0)
    feed.push(15.0, 300.0, stale=True)
    segments = feed.segments(10.0, 20.0)
    assert [(s.start_s, s.end_s, s.g_per_kwh, s.stale) for s in segments] == [
        (5.0, 15.0, 100.0, False),
        (15.0, 20.0, 300.0, True),
    ]
    again = PushedFeed(ledger)  # a restarted process still knows
    assert again.segments(10.0, 20.0) == segments
    again.forget_before(16.0)
    assert [s.g_per_kwh for s in again.segments(16.0, 20.0)] == [300.0]


# -- the tracker ----------------------------------------------------------------------------


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def power_server(watts: float) -> FakeAPI:
    """A node's power server answering /v1/energy at a constant measured power."""
    api = FakeAPI()

    def energy(request: Request) -> Answer:
        span = float(request.query["end"]) - float(request.query["start"])
        return Answer(
            200,
            {
                "energy_j": watts * span,
                "measured_j": watts * span,
                "covered_s": span,
                "source": "measured:rapl",
            },
        )

    api.routes["/v1/energy"] = energy
    return api


def profile_csv(tmp_path: Path) -> str:
    path = tmp_path / "profile.csv"
    ScalingProfile(np.array([0.0, 10, 19]), np.array([0.0, 60.0, 120.0]), "p").to_csv(path)
    return str(path)


def test_tracker_hand_computed_over_a_carbon_change_and_a_dead_node(tmp_path: Path) -> None:
    node = power_server(100.0)
    ledger = Ledger(tmp_path / "acct.db")
    feed = ProviderIntensityFeed(
        replay([200.0, 400.0, 600.0]), time_map=TimeMap(T0, datetime.fromtimestamp(T0, UTC))
    )
    wall = Wall(T0 + 3570)
    tracker = Tracker(ledger, feed, TrackerConfig(request_timeout_s=0.5), clock=wall)
    dead = "http://127.0.0.1:9"
    spec = TrackedJob(
        "nbody", nodes=(node.url, dead), servers=2, profile_path=profile_csv(tmp_path)
    )
    tracker.register(spec)

    async def rounds() -> list[list[SampleRecord]]:
        out = [await tracker.sample_round(T0 + 3630)]  # 10:59:30 .. 11:00:30
        wall.t = T0 + 3690
        out.append(await tracker.sample_round())
        await tracker.stop()
        return out

    try:
        first, second = asyncio.run(rounds())
    finally:
        node.close()
    # Node 1 measured 100 W; node 2 is down: its share of P(2) = 120 W / 2 = 60 W, estimated.
    # Energy 160 W * 60 s = 9600 J; 6000 J measured. Carbon: 30 s at 200, 30 s at 400 g/kWh.
    s = first[0]
    assert (s.seq, s.start_s, s.end_s) == (1, T0 + 3570, T0 + 3630)
    assert s.energy_j == pytest.approx(9600.0) and s.measured_j == pytest.approx(6000.0)
    assert s.emissions_g == pytest.approx(160 * 30 / 3.6e6 * 200 + 160 * 30 / 3.6e6 * 400)
    assert s.power_source == "measured:rapl+estimated:profile"
    assert "127.0.0.1:9/v1/energy unreachable" in s.note
    assert second[0].start_s == s.end_s and second[0].intensity_g_per_kwh == pytest.approx(400.0)
    job = ledger.job("nbody")
    assert job is not None and job.samples == 2
    assert job.energy_j == pytest.approx(2 * 9600.0)
    assert job.emissions_g == pytest.approx(0.8 + 160 * 60 / 3.6e6 * 400)
    assert job.measured_g / job.emissions_g == pytest.approx(100 / 160)


def test_tracker_resumes_from_the_ledger_without_gaps_or_double_counts(tmp_path: Path) -> None:
    path = tmp_path / "acct.db"

    def tracker(wall: Wall) -> Tracker:
        feed = ProviderIntensityFeed(
            replay([300.0] * 3), time_map=TimeMap(T0, datetime.fromtimestamp(T0, UTC))
        )
        return Tracker(Ledger(path), feed, clock=wall)

    wall = Wall(T0 + 10)
    first = tracker(wall)
    first.register(TrackedJob("est", servers=3, watts_per_server=50.0))
    asyncio.run(first.sample_round(T0 + 20))
    again = tracker(wall)  # a restart: the same ledger, a new process
    assert list(again.jobs) == ["est"]
    got = asyncio.run(again.sample_round(T0 + 50))
    assert (got[0].seq, got[0].start_s, got[0].end_s) == (2, T0 + 20, T0 + 50)
    assert got[0].power_source == "estimated:nominal" and got[0].measured_j == 0
    job = again.ledger.job("est")
    assert job is not None and job.energy_j == pytest.approx(150.0 * 40)


def test_tracker_rejects_bad_registrations(tmp_path: Path) -> None:
    feed = ProviderIntensityFeed(replay([300.0]))
    tracker = Tracker(Ledger(tmp_path / "acct.db"), feed)
    with pytest.raises(TrackerError, match="profile_path"):
        TrackedJob("j")
    with pytest.raises(TrackerError, match="job id"):
        TrackedJob("../etc", watts_per_server=1.0)
    with pytest.raises(TrackerError, match="twice"):
        TrackedJob("j", nodes=("http://a:1", "http://a:1"), watts_per_server=1.0)
    with pytest.raises(TrackerError, match="--kepler-url"):
        tracker.register(TrackedJob("j", pods=("ml/p",), watts_per_server=1.0))
    with pytest.raises(TrackerError, match="cannot use its profile"):
        tracker.register(TrackedJob("j", profile_path=str(tmp_path / "missing.csv")))
    tracker.register(TrackedJob("j", watts_per_server=1.0))
    with pytest.raises(TrackerError, match="exists"):
        tracker.register(TrackedJob("j", watts_per_server=1.0))
    with pytest.raises(TrackerError, match="no tracked job"):
        tracker.post_progress("nobody", 5)


def test_rescale_and_stop_account_up_to_the_moment_they_happen(tmp_path: Path) -> None:
    feed = ProviderIntensityFeed(
        replay([360.0] * 3), time_map=TimeMap(T0, datetime.fromtimestamp(T0, UTC))
    )
    wall = Wall(T0)
    tracker = Tracker(Ledger(tmp_path / "acct.db"), feed, clock=wall)
    tracker.register(TrackedJob("elastic", servers=1, watts_per_server=50.0))

    async def story() -> None:
        wall.t = T0 + 10
        await tracker.update("elastic", servers=3)  # 10 s at 1 server charged first
        wall.t = T0 + 20
        await tracker.sample_round()
        wall.t = T0 + 25
        await tracker.stop_tracking("elastic")  # the last 5 s at 3 servers, then stop
        wall.t = T0 + 60
        assert await tracker.sample_round() == []

    asyncio.run(story())
    samples = list(tracker.ledger.samples("elastic"))
    assert [(s.end_s - T0, s.energy_j, s.servers) for s in samples] == [
        (10, 500.0, 1),
        (20, 1500.0, 3),
        (25, 750.0, 3),
    ]
    job = tracker.ledger.job("elastic")
    assert job is not None and not job.active
    assert job.emissions_g == pytest.approx(2750 / 3.6e6 * 360)


def test_a_restart_resumes_a_job_whose_profile_vanished(tmp_path: Path) -> None:
    path = tmp_path / "acct.db"
    profile = profile_csv(tmp_path)
    feed = ProviderIntensityFeed(
        replay([100.0] * 3), time_map=TimeMap(T0, datetime.fromtimestamp(T0, UTC))
    )
    wall = Wall(T0)
    first = Tracker(Ledger(path), feed, clock=wall)
    first.register(TrackedJob("lost", servers=2, profile_path=profile))
    asyncio.run(first.sample_round(T0 + 10))
    Path(profile).unlink()
    again = Tracker(Ledger(path), feed, clock=wall)
    assert "cannot use its profile" in (again.jobs["lost"].last_error or "")
    got = asyncio.run(again.sample_round(T0 + 20))
    assert got[0].power_source == "estimated:last-known" and got[0].energy_j == 1200.0
