"""Property tests over random profiles and traces (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from carbonscaler.planner import InfeasibleError, Job, plan, replan
from carbonscaler.profile import ScalingProfile

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def concave_profiles(draw: st.DrawFn, max_servers: int = 8) -> ScalingProfile:
    """Marginal work per marginal watt strictly falls with every added server."""
    n = draw(st.integers(1, max_servers))
    power = np.array(draw(st.lists(st.floats(5, 300), min_size=n, max_size=n)))
    ratios = draw(st.lists(st.floats(0.3, 0.99), min_size=n, max_size=n))
    eff = 10.0 * np.cumprod(ratios)  # strictly decreasing efficiency
    d_work = eff * power
    return ScalingProfile(
        np.concatenate([[0.0], np.cumsum(d_work)]), np.concatenate([[0.0], np.cumsum(power)])
    )


@st.composite
def any_profiles(draw: st.DrawFn, max_servers: int = 6) -> ScalingProfile:
    """Real-looking curves of any shape: plateaus, bumps, even falling throughput."""
    n = draw(st.integers(1, max_servers))
    d_power = np.array(draw(st.lists(st.floats(5, 300), min_size=n, max_size=n)))
    d_work = np.array(draw(st.lists(st.floats(-0.5, 3.0), min_size=n, max_size=n)))
    d_work[0] = abs(d_work[0]) + 0.1
    throughput = np.maximum(np.cumsum(d_work), 0.05)
    return ScalingProfile(
        np.concatenate([[0.0], throughput]), np.concatenate([[0.0], np.cumsum(d_power)])
    )


@st.composite
def jobs_and_traces(
    draw: st.DrawFn, profiles: st.SearchStrategy[ScalingProfile], unique: bool = False
) -> tuple[Job, np.ndarray]:
    profile = draw(profiles)
    carbon = np.array(draw(st.lists(st.floats(1.0, 800.0), min_size=1, max_size=40, unique=unique)))
    m = draw(st.integers(1, profile.max_servers))
    top = draw(st.integers(m, profile.max_servers))
    fill = draw(st.floats(0.01, 1.0))  # share of the most work that fits
    best = float(profile.throughput[m : top + 1].max())
    work = fill * best * len(carbon)
    return Job(profile, work, m, top), carbon


def check_schedule(job: Job, carbon: np.ndarray, policy: str) -> float:
    s = plan(policy, job, carbon)
    assert s.work_done == pytest.approx(job.work, rel=1e-9)
    assert len(s.servers) <= len(carbon)
    active = s.servers[s.servers > 0]
    assert np.all(active >= job.min_servers) and np.all(active <= job.max_servers)
    assert s.deadline_met
    assert 0.0 < s.last_slot_fraction <= 1.0
    assert s.emissions_g >= 0
    return s.emissions_g


@SETTINGS
@given(jobs_and_traces(concave_profiles()))
def test_greedy_equals_exact_on_concave_profiles(case: tuple[Job, np.ndarray]) -> None:
    job, carbon = case
    greedy = check_schedule(job, carbon, "carbonscaler")
    exact = check_schedule(job, carbon, "exact")
    assert exact == pytest.approx(greedy, rel=1e-9, abs=1e-12)


@SETTINGS
@given(jobs_and_traces(any_profiles()))
def test_exact_never_worse_than_greedy(case: tuple[Job, np.ndarray]) -> None:
    job, carbon = case
    greedy = check_schedule(job, carbon, "carbonscaler")
    exact = check_schedule(job, carbon, "exact")
    assert exact <= greedy * (1 + 1e-9) + 1e-12


@SETTINGS
@given(jobs_and_traces(any_profiles()))
def test_suspend_resume_is_carbonscaler_with_m_equal_max(case: tuple[Job, np.ndarray]) -> None:
    job, carbon = case
    fixed = job.with_bounds(job.min_servers, job.min_servers)
    try:
        sr = plan("suspend-resume", job, carbon)
    except InfeasibleError:
        with pytest.raises(InfeasibleError):
            plan("carbonscaler", fixed, carbon)
        return
    cs = plan("carbonscaler", fixed, carbon)
    assert sr.servers.tolist() == cs.servers.tolist()
    assert sr.emissions_g == pytest.approx(cs.emissions_g, rel=1e-12)
    # Scaling can only help: CarbonScaler with M >= m is never worse than suspend-resume.
    assert plan("exact", job, carbon).emissions_g <= sr.emissions_g * (1 + 1e-9) + 1e-12


@SETTINGS
@given(jobs_and_traces(any_profiles()))
def test_agnostic_closed_form(case: tuple[Job, np.ndarray]) -> None:
    job, carbon = case
    length = job.length_hours
    longer = np.concatenate([carbon, np.full(int(length) + 2, 123.0)])
    s = plan("agnostic", job, longer, deadline_slots=len(carbon))
    whole = int(np.floor(length + 1e-12))
    frac = length - whole
    p_m = job.profile.power_w[job.min_servers]
    expected = (longer[:whole].sum() + (longer[whole] * frac if frac > 1e-12 else 0.0)) * p_m
    assert s.emissions_g == pytest.approx(expected / 1000, rel=1e-9)
    assert s.completion_hours == pytest.approx(length, rel=1e-9)


@SETTINGS
@given(jobs_and_traces(concave_profiles(), unique=True), st.data())
def test_replan_reproduces_rest_of_plan(case: tuple[Job, np.ndarray], data: st.DataObject) -> None:
    job, carbon = case
    assume(len(carbon) >= 2)
    full = plan("carbonscaler", job, carbon)
    j = data.draw(st.integers(1, len(carbon) - 1))
    done = float(full.work_per_slot[:j].sum())
    assume(job.work - done > job.work * 1e-6)
    rest = replan("carbonscaler", job, carbon[j:], done)
    tail = full.servers[j:]
    assert rest.servers.tolist() == tail[: len(rest.servers)].tolist()
    assert np.all(tail[len(rest.servers) :] == 0)
    assert rest.emissions_g == pytest.approx(full.emissions_g_per_slot[j:].sum(), rel=1e-7)
