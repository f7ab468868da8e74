"""The planner: worked example, errors, baselines, and the greedy's two selection paths."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from carbonscaler.planner import (
    InfeasibleError,
    Job,
    PlanningError,
    compare,
    plan,
    replan,
    savings_pct,
)
from carbonscaler.planner.greedy import _select_sorted, _select_threshold
from carbonscaler.profile import (
    ProfileError,
    ScalingProfile,
    amdahl_profile,
    linear_profile,
    load_profile,
)


def paper_profile() -> ScalingProfile:
    """The paper's worked example: marginal capacity (1, 0.7), equal power per server."""
    return ScalingProfile(np.array([0.0, 1.0, 1.7]), np.array([0.0, 1.0, 2.0]), "paper")


def test_paper_worked_example() -> None:
    job = Job.from_length(paper_profile(), 2.0, 1, 2)
    carbon = [10.0, 100.0, 20.0]
    greedy = plan("carbonscaler", job, carbon)
    assert greedy.servers.tolist() == [2, 0, 1]
    assert greedy.partial_slot == 2
    assert greedy.last_slot_fraction == pytest.approx(0.3)
    # Power of 1 W per server: grams are 1/1000 of the paper's "units".
    assert greedy.emissions_g * 1000 == pytest.approx(26.0)
    assert greedy.work_done == pytest.approx(2.0)
    assert greedy.completion_hours == pytest.approx(2.3)
    agnostic = plan("agnostic", job, carbon)
    assert agnostic.servers.tolist() == [1, 1]
    assert agnostic.emissions_g * 1000 == pytest.approx(110.0)
    exact = plan("exact", job, carbon)
    assert exact.emissions_g == pytest.approx(greedy.emissions_g, rel=1e-12)
    # The paper charges the whole last slot: 10·2 + 20·1 = 40 units.
    whole_last_slot = sum(c * s for c, s in zip(carbon, greedy.servers, strict=True))
    assert whole_last_slot == pytest.approx(40.0)


def test_infeasible_deadline_explains_what_fits() -> None:
    job = Job.from_length(linear_profile(4, power_per_server_w=50), 10.0, 1, 2)
    with pytest.raises(InfeasibleError) as info:
        plan("carbonscaler", job, np.full(4, 100.0))
    err = info.value
    assert err.work_required == pytest.approx(10.0)
    assert err.work_possible == pytest.approx(8.0)  # 4 slots at 2 servers
    assert err.shortest_deadline_hours == pytest.approx(5.0)
    text = str(err)
    assert "needs 10 work units" in text and "at most 8 fit" in text and "5 h" in text


def test_infeasible_suspend_resume_uses_m_only() -> None:
    job = Job.from_length(linear_profile(4), 5.0, 1, 4)
    plan("carbonscaler", job, np.full(3, 100.0))  # fits at 4 servers
    with pytest.raises(InfeasibleError, match="shortest deadline that works is 5 h"):
        plan("suspend-resume", job, np.full(3, 100.0))


def test_profile_too_small_and_empty_forecast() -> None:
    with pytest.raises(ProfileError, match=r"describes 1\.\.4 servers"):
        Job.from_length(linear_profile(4), 5.0, 1, 8)
    job = Job.from_length(linear_profile(4), 5.0, 1, 4)
    with pytest.raises(PlanningError, match="forecast is empty"):
        plan("carbonscaler", job, [])
    with pytest.raises(PlanningError, match="non-negative"):
        plan("carbonscaler", job, [1.0, -2.0, 3.0])
    with pytest.raises(PlanningError, match="unknown policy 'fastest'"):
        plan("fastest", job, [1.0] * 10)
    with pytest.raises(PlanningError, match="forecast has only 3"):
        plan("carbonscaler", job, [1.0] * 3, deadline_slots=5)


def test_agnostic_matches_closed_form() -> None:
    profile = amdahl_profile(8, 0.1, power_per_server_w=60)
    rng = np.random.default_rng(3)
    carbon = rng.uniform(50, 400, 48)
    job = Job.from_length(profile, 7.4, 2, 8)
    s = plan("agnostic", job, carbon, deadline_slots=12)
    whole, frac = 7, 0.4
    expected = (carbon[:whole].sum() + carbon[whole] * frac) * profile.power_w[2] / 1000
    assert s.emissions_g == pytest.approx(expected, rel=1e-12)
    assert s.completion_hours == pytest.approx(7.4)
    assert s.deadline_met
    assert s.rescales == 0


def test_static_and_static_best() -> None:
    profile = amdahl_profile(8, 0.05)
    carbon = np.random.default_rng(4).uniform(50, 400, 72)
    job = Job.from_length(profile, 24.0, 1, 8)
    static = plan("static", job, carbon, deadline_slots=36)
    assert set(static.servers.tolist()) == {2}
    assert static.work_done == pytest.approx(job.work)
    best = plan("static-best", job, carbon, deadline_slots=36)
    for k in range(1, 9):
        other = plan("static", job, carbon, deadline_slots=36, static_servers=k)
        if other.deadline_met:
            assert best.emissions_g <= other.emissions_g + 1e-9


def test_threshold_runs_only_in_clean_slots_and_may_be_late() -> None:
    job = Job.from_length(linear_profile(2), 3.0, 1, 2)
    carbon = np.array([100, 10, 100, 100, 20, 100, 100, 5, 100, 100], dtype=float)
    s = plan("suspend-resume-threshold", job, carbon, deadline_slots=4, threshold_percentile=25)
    # p25 of the first 4 slots is 77.5: slots 1, 4 and 7 are below it.
    assert s.servers.tolist() == [0, 1, 0, 0, 1, 0, 0, 1]
    assert s.completed and not s.deadline_met
    assert s.completion_hours == pytest.approx(8.0)
    short = plan("suspend-resume-threshold", job, carbon[:5], deadline_slots=4)
    assert not short.completed
    assert any("carbon data ended" in n for n in short.notes)


def test_suspend_resume_takes_cleanest_slots() -> None:
    job = Job.from_length(linear_profile(4), 2.5, 1, 4)
    carbon = np.array([50.0, 10.0, 30.0, 20.0, 40.0])
    s = plan("suspend-resume", job, carbon)
    assert s.servers.tolist() == [0, 1, 1, 1, 0]
    assert s.partial_slot == 2 and s.last_slot_fraction == pytest.approx(0.5)


def test_greedy_is_not_optimal_on_non_concave_but_exact_is() -> None:
    # Marginal capacity 1, 0.2, 1.8: the third server is worth much more than the second.
    profile = ScalingProfile(np.array([0.0, 1.0, 1.2, 3.0]), np.array([0.0, 1.0, 2.0, 3.0]))
    job = Job(profile, work=3.0, min_servers=1, max_servers=3)
    carbon = [10.0, 10.5]
    greedy = plan("carbonscaler", job, carbon)
    exact = plan("exact", job, carbon)
    assert exact.servers.tolist() == [3, 0]
    assert exact.emissions_g == pytest.approx(30.0 / 1000)
    assert greedy.emissions_g > exact.emissions_g * 1.1


def test_block_start_for_m_greater_than_one() -> None:
    # m = 2: the first increment of a slot is 0 -> 2 servers, scored as one block.
    profile = linear_profile(4, power_per_server_w=10)
    job = Job.from_length(profile, 3.0, 2, 4)  # 6 units of work
    s = plan("carbonscaler", job, [5.0, 50.0, 7.0])
    assert set(s.servers.tolist()) <= {0, 2, 3, 4}
    assert s.servers.tolist()[1] == 0
    assert s.work_done == pytest.approx(6.0)


def test_dominated_levels_are_skipped() -> None:
    # Throughput falls at 3 servers: the ladder goes 2 -> 4.
    profile = ScalingProfile(
        np.array([0.0, 1.0, 1.8, 1.7, 2.6]), np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    )
    job = Job(profile, 20.0, 1, 4)
    assert job.ladder().levels.tolist() == [0, 1, 2, 4]
    s = plan("carbonscaler", job, np.linspace(10, 100, 12))
    assert 3 not in s.servers.tolist()
    e = plan("exact", job, np.linspace(10, 100, 12))
    assert e.emissions_g <= s.emissions_g * (1 + 1e-9)


def test_replan_from_true_progress_reproduces_the_rest() -> None:
    profile = amdahl_profile(8, 0.05)
    carbon = np.random.default_rng(7).uniform(50, 400, 36)
    job = Job.from_length(profile, 24.0, 1, 8)
    full = plan("carbonscaler", job, carbon)
    for j in (5, 12, 20):
        done = float(full.work_per_slot[:j].sum())
        rest = replan("carbonscaler", job, carbon[j:], done)
        assert rest.servers.tolist() == full.servers[j:].tolist()
        assert rest.emissions_g == pytest.approx(full.emissions_g_per_slot[j:].sum(), rel=1e-9)
    with pytest.raises(PlanningError, match="already done"):
        replan("carbonscaler", job, carbon, job.work)


def test_selection_paths_agree_on_large_inputs() -> None:
    rng = np.random.default_rng(11)
    for trial in range(12):
        n = int(rng.integers(2_000, 9_000))
        top = int(rng.integers(8, 65))
        m = int(rng.integers(1, 4))
        profile = amdahl_profile(top, float(rng.uniform(0.0, 0.3)))
        carbon = rng.uniform(5, 600, n)
        if trial % 3 == 0:
            carbon = np.round(carbon)  # many ties
        job = Job.from_length(profile, float(rng.uniform(1, n / 2)), m, top)
        ladder = job.ladder()
        a = _select_sorted(ladder, carbon, job.work)
        b = _select_threshold(ladder, carbon, job.work)
        energy = np.concatenate([[0.0], np.cumsum(ladder.d_power_w)])
        cost_a = energy[a.steps] @ carbon
        cost_b = energy[b.steps] @ carbon
        assert cost_a == pytest.approx(cost_b, rel=1e-9)
        if trial % 3:
            assert np.array_equal(a.steps, b.steps)
            assert a.partial_slot == b.partial_slot
            assert a.fraction == pytest.approx(b.fraction, abs=1e-9)


def test_zero_carbon_slots_are_free() -> None:
    job = Job.from_length(linear_profile(4), 4.0, 1, 4)
    s = plan("carbonscaler", job, [0.0, 100.0, 0.0, 50.0])
    assert s.emissions_g == 0.0
    assert s.work_done == pytest.approx(4.0)


def test_compare_and_savings(shared_dir: Path) -> None:
    profile = load_profile(shared_dir / "profiles" / "nbody100k.csv")
    carbon = np.random.default_rng(5).uniform(50, 400, 100)
    job = Job.from_length(profile, 24.0, 1, 7)
    results = compare(job, carbon, deadline_slots=36)
    assert set(results) >= {"carbonscaler", "exact", "agnostic", "suspend-resume"}
    cs, ag, sr = results["carbonscaler"], results["agnostic"], results["suspend-resume"]
    assert not isinstance(cs, PlanningError)
    assert not isinstance(ag, PlanningError)
    assert not isinstance(sr, PlanningError)
    assert cs.emissions_g < sr.emissions_g < ag.emissions_g
    assert savings_pct(cs.emissions_g, ag.emissions_g) > 0
    assert math.isnan(savings_pct(1.0, 0.0))
    # The MILP result equals the greedy (nbody100k is concave).
    ex = results["exact"]
    assert not isinstance(ex, PlanningError)
    assert ex.emissions_g == pytest.approx(cs.emissions_g, rel=1e-9)


def test_schedule_json_contract() -> None:
    job = Job.from_length(paper_profile(), 2.0, 1, 2)
    d = plan("carbonscaler", job, [10.0, 100.0, 20.0]).to_dict()
    for key in (
        "policy",
        "servers",
        "last_slot_fraction",
        "work_done",
        "energy_kwh",
        "emissions_g",
        "completion_hours",
        "solve_ms",
    ):
        assert key in d
    assert d["servers"] == [2, 0, 1]
    assert d["rescales"] == 2  # 2 -> 0 (suspend) and 0 -> 1 (resume)
