"""The decision core: its rules by hand, and the batched form equal to the scalar form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbonscaler.decision import (
    BEHIND_SHARE,
    Plans,
    Progress,
    Reason,
    Rules,
    first_plan,
    first_plans,
    level_rows,
    next_change_h,
    observed_rate,
    review,
    review_rows,
    servers_now,
    top_level,
)
from carbonscaler.planner import InfeasibleError, Job, PlanningError, plan
from carbonscaler.planner.policies import Policy
from carbonscaler.profile import ScalingProfile, amdahl_profile, linear_profile

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The paper's worked example: 1..3 servers, concave throughput, equal power per server.
PAPER = ScalingProfile(np.array([0.0, 1.0, 1.8, 2.4]), np.array([0.0, 10.0, 20.0, 30.0]))


def paper_job(work: float = 3.0) -> Job:
    return Job(PAPER, work, 1, 3)


def test_first_plan_without_margin_is_the_greedy_plan() -> None:
    carbon = np.array([100.0, 400.0, 200.0, 300.0])
    made = first_plan(paper_job(), Rules(safety_margin=0.0), carbon)
    greedy = plan("carbonscaler", paper_job(), carbon)
    assert made.servers[: len(greedy.servers)] == greedy.servers.tolist()
    assert made.reasons == Reason.FIRST
    plans = made.plans
    # The promised progress is the plan's own work, slot by slot.
    assert plans.planned_done[0].tolist() == pytest.approx(
        [0.0, *np.cumsum(greedy.work_per_slot).tolist()] + [3.0] * (4 - len(greedy.servers))
    )
    assert plans.margin[0] == 1.0 and plans.made_at[0] == 0


def test_margin_is_covered_where_it_fits_and_dropped_where_it_does_not() -> None:
    carbon = np.array([100.0, 400.0, 200.0, 300.0])
    roomy = first_plan(paper_job(3.0), Rules(safety_margin=0.1), carbon)
    work = PAPER.throughput[np.asarray(roomy.servers)].sum()
    assert work >= 3.3 - 1e-9  # the plan covers the margin ...
    assert roomy.plans.planned_done[0, -1] == pytest.approx(3.0)  # ... the pace is the bare work
    assert roomy.plans.margin[0] == pytest.approx(1.1)
    # 9.6 units fit at most (4 slots at 2.4): 9.0 fits, 9.9 with the margin does not.
    tight = first_plan(paper_job(9.0), Rules(safety_margin=0.1), carbon)
    assert Reason.NO_MARGIN in tight.reasons
    assert tight.plans.margin[0] == 1.0
    assert tight.plans.planned_done[0, -1] == pytest.approx(9.0)


def test_an_impossible_deadline_is_refused_with_what_would_work() -> None:
    with pytest.raises(InfeasibleError, match="shortest deadline that works is 5 h"):
        first_plan(paper_job(10.0), Rules(), np.full(4, 100.0))
    # Carbon-agnostic does not look at the deadline: it runs m servers until done.
    agnostic = first_plan(paper_job(10.0), Rules(Policy.AGNOSTIC), np.full(4, 100.0))
    assert agnostic.servers == [1, 1, 1, 1]
    assert Reason.OUT_OF_REACH in agnostic.reasons


def test_rules_refuse_policies_a_job_cannot_run() -> None:
    with pytest.raises(PlanningError, match="cannot run a job"):
        Rules(Policy.STATIC)
    with pytest.raises(PlanningError, match="unknown policy"):
        Rules("crystal-ball")  # type: ignore[arg-type]
    assert Rules("scaler").policy is Policy.CARBONSCALER  # type: ignore[arg-type]
    assert Rules("fixed").policy is Policy.AGNOSTIC  # type: ignore[arg-type]


def _planned(carbon: list[float], work: float = 3.0, **rules: float) -> tuple[Plans, Rules]:
    r = Rules(**rules)  # type: ignore[arg-type]
    return first_plan(paper_job(work), r, np.array(carbon)).plans, r


def test_review_triggers() -> None:
    carbon = [100.0, 400.0, 200.0, 300.0, 500.0]
    job = paper_job()
    plans, rules = _planned(carbon, safety_margin=0.0)
    on_plan = float(plans.planned_done[0, 1])
    same = np.array(carbon[1:])
    # On plan, same forecast: nothing to do.
    progress = Progress(on_plan, on_plan, int(plans.servers[0, 0]), True)
    assert review(plans, job, rules, 1, progress, same) is Reason.NONE
    # A hair behind is noise; more than BEHIND_SHARE of the work is behind.
    hair = Progress(on_plan - 0.5 * BEHIND_SHARE * 3.0, on_plan, 3, True)
    assert review(plans, job, rules, 1, hair, same) is Reason.NONE
    behind = Progress(on_plan - 2 * BEHIND_SHARE * 3.0, on_plan, 3, True)
    assert Reason.BEHIND in review(plans.__class__(**vars(plans)), job, rules, 1, behind, same)
    # Ahead only counts beyond the threshold.
    plans, rules = _planned(carbon, safety_margin=0.0)
    ahead = Progress(on_plan + 0.04 * 3.0, on_plan, 3, True)
    assert review(plans, job, rules, 1, ahead, same) is Reason.NONE
    far_ahead = Progress(on_plan + 0.06 * 3.0, on_plan, 3, True)
    assert review(plans, job, rules, 1, far_ahead, same) == Reason.AHEAD
    # A forecast that moved more than the threshold in any slot re-plans.
    plans, rules = _planned(carbon, safety_margin=0.0)
    moved = same.copy()
    moved[-1] *= 1.06
    assert review(plans, job, rules, 1, progress, moved * 1.0) == Reason.FORECAST
    plans, rules = _planned(carbon, safety_margin=0.0)
    assert review(plans, job, rules, 1, progress, same * 1.04) is Reason.NONE


def test_a_replan_starts_from_true_progress_and_keeps_the_past() -> None:
    carbon = np.array([100.0, 400.0, 200.0, 300.0, 500.0, 350.0])
    job = paper_job()
    rules = Rules(safety_margin=0.0)
    plans = first_plan(job, rules, carbon).plans
    before = plans.servers[0, :1].copy()
    # Nothing was done in slot 0 (the job could not start): re-plan the whole work from 1.
    reasons = review(plans, job, rules, 1, Progress(0.0, 0.0, 0, False), carbon[1:])
    assert Reason.BEHIND in reasons
    assert plans.servers[0, :1].tolist() == before.tolist()
    assert plans.made_at[0] == 1
    assert plans.planned_done[0, 1] == 0.0
    expected = plan("carbonscaler", job, carbon[1:])
    assert plans.servers[0, 1 : 1 + len(expected.servers)].tolist() == expected.servers.tolist()


def test_observed_throughput_corrects_the_plan() -> None:
    assert observed_rate(np.array([0.0, 5.0, 1.0]), np.array([0.0, 10.0, 100.0])).tolist() == [
        1.0,
        0.5,
        0.25,  # bounded: one odd reading cannot wreck a plan
    ]
    carbon = np.array([100.0, 400.0, 200.0, 300.0, 150.0, 350.0])
    job = paper_job()
    rules = Rules(safety_margin=0.0)
    plans = first_plan(job, rules, carbon).plans
    # The job ran at 3 servers in slot 0 (2.4 units promised) but did only 1.2: half speed.
    review(plans, job, rules, 1, Progress(1.2, 2.4, 3, True), carbon[1:])
    tp = PAPER.throughput
    planned_units = (
        tp[plans.after[0, 1:]] + (tp[plans.servers[0, 1:]] - tp[plans.after[0, 1:]])
    ) * plans.fraction[0, 1:]
    # The rest (1.8 units at half speed) is planned as 3.6 profile units.
    assert planned_units.sum() == pytest.approx(3.6)
    assert plans.planned_done[0, -1] == pytest.approx(3.0)


def test_out_of_reach_runs_at_the_top_level_and_late_too() -> None:
    carbon = np.array([100.0, 400.0, 200.0])
    job = paper_job(5.0)
    rules = Rules(safety_margin=0.0)
    plans = first_plan(job, rules, carbon).plans
    reasons = review(plans, job, rules, 1, Progress(0.0, 0.0, 0, False), carbon[1:])
    assert Reason.OUT_OF_REACH in reasons and Reason.BEHIND in reasons
    assert plans.servers[0, 1:].tolist() == [3, 3]
    assert servers_now(plans, job, rules, 3.5, 3) == (3, Reason.LATE)
    assert top_level(job, rules) == 3
    assert top_level(job, Rules(Policy.AGNOSTIC)) == 1
    assert top_level(job, Rules(Policy.SUSPEND_RESUME)) == 1


def test_levels_follow_the_plan_then_overrun() -> None:
    carbon = np.array([100.0, 400.0, 200.0, 300.0])
    job = paper_job()
    rules = Rules(safety_margin=0.0)
    plans = first_plan(job, rules, carbon).plans
    # 3 servers in the cleanest slot (2.4 units), the rest (0.6) at 1 server in slot 2.
    assert plans.servers[0, :3].tolist() == [3, 0, 1]
    assert plans.fraction[0, 2] == pytest.approx(0.6) and plans.after[0, 2] == 0
    assert plans.end_slot[0] == pytest.approx(2.6)
    assert servers_now(plans, job, rules, 0.5, 0) == (3, Reason.NONE)
    assert servers_now(plans, job, rules, 1.5, 3) == (0, Reason.NONE)
    assert servers_now(plans, job, rules, 2.3, 0) == (1, Reason.NONE)
    assert next_change_h(plans, 0, 0.5, 3, job) == 1.0
    assert next_change_h(plans, 0, 1.5, 0, job) == 2.0
    assert next_change_h(plans, 0, 2.3, 1, job) == pytest.approx(2.6)
    # Past the plan's end the job should be done; if it still runs, it keeps running ...
    assert servers_now(plans, job, rules, 2.8, 1) == (1, Reason.OVERRUN)
    assert servers_now(plans, job, rules, 3.5, 1) == (1, Reason.OVERRUN)
    # ... but a paused job is not started by it (the next boundary re-plans it).
    assert servers_now(plans, job, rules, 3.5, 0) == (0, Reason.NONE)


def test_a_job_whose_work_is_done_keeps_running_until_it_ends() -> None:
    carbon = np.array([100.0, 400.0, 200.0, 300.0])
    job = paper_job()
    rules = Rules(safety_margin=0.0)
    plans = first_plan(job, rules, carbon).plans
    before = plans.to_dict()
    # Done by slot 3 (its runtime has not seen it exit yet), and the forecast moved: no re-plan.
    done = Progress(job.work, job.work, 1, True)
    assert review(plans, job, rules, 3, done, carbon[3:] * 2) is Reason.NONE
    assert plans.to_dict() == before
    assert servers_now(plans, job, rules, 3.2, 1) == (1, Reason.OVERRUN)


def test_agnostic_never_replans() -> None:
    carbon = np.array([100.0, 400.0, 200.0, 300.0, 100.0])
    job = paper_job()
    rules = Rules(Policy.AGNOSTIC)
    plans = first_plan(job, rules, carbon).plans
    assert plans.servers[0].tolist() == [1, 1, 1, 0, 0]
    assert review(plans, job, rules, 1, Progress(0.0, 0.0, 0, True), carbon[1:] * 3) is Reason.NONE


def test_plans_round_trip_through_json() -> None:
    plans = first_plan(paper_job(), Rules(), np.array([100.0, 400.0, 200.0, 300.0])).plans
    back = Plans.from_dict(plans.to_dict())
    for name, value in vars(plans).items():
        assert np.array_equal(getattr(back, name), value), name
    broken = plans.to_dict()
    broken["fraction"] = broken["fraction"][:-1]
    with pytest.raises(PlanningError, match="disagree in length"):
        Plans.from_dict(broken)


# -- batched == scalar ---------------------------------------------------------------------

PROFILES = [
    PAPER,
    amdahl_profile(6, 0.1),
    linear_profile(4),
    # Non-concave (a communication plateau): the exact policy uses the MILP here.
    ScalingProfile(np.array([0.0, 1.0, 1.3, 2.6, 2.7]), np.array([0.0, 10.0, 20.0, 30.0, 40.0])),
]


@st.composite
def cases(draw: st.DrawFn) -> tuple[Job, Rules, np.ndarray, float]:
    profile = draw(st.sampled_from(PROFILES))
    m = draw(st.integers(1, profile.max_servers))
    top = draw(st.integers(m, profile.max_servers))
    n = draw(st.integers(2, 14))
    rows = draw(st.integers(1, 5))
    carbon = np.array(
        draw(st.lists(st.floats(20.0, 700.0), min_size=rows * n, max_size=rows * n))
    ).reshape(rows, n)
    job = Job(profile, 1.0, m, top)
    fill = draw(st.floats(0.05, 0.9))
    best = float(job.ladder().max_throughput)
    job = job.with_work(fill * best * n)
    policy = draw(st.sampled_from(["carbonscaler", "exact", "suspend-resume", "agnostic"]))
    rules = Rules(
        Policy(policy),
        draw(st.floats(0.01, 0.3)),
        draw(st.sampled_from([0.0, 0.05, 0.2])),
    )
    overhead_h = draw(st.sampled_from([0.0, 0.01, 0.2]))
    return job, rules, carbon, overhead_h


@SETTINGS
@given(cases(), st.data())
def test_batched_decisions_equal_scalar_ones(
    case: tuple[Job, Rules, np.ndarray, float], data: st.DataObject
) -> None:
    job, rules, carbon, overhead_h = case
    rows, n = carbon.shape
    batch, reasons = first_plans(job, rules, carbon, overhead_h=overhead_h)
    singles = []
    for r in range(rows):
        one, why = first_plans(job, rules, carbon[r : r + 1], overhead_h=overhead_h)
        singles.append(one)
        assert int(why[0]) == int(reasons[r])
        for name in vars(one):
            assert np.array_equal(getattr(one, name)[0], getattr(batch, name)[r]), name
    # A boundary later: random progress and a new forecast, for a random subset of rows.
    slot = data.draw(st.integers(1, n - 1))
    subset = np.array(
        sorted(data.draw(st.sets(st.integers(0, rows - 1), min_size=1))), dtype=np.int64
    )
    done = np.array([data.draw(st.floats(0.0, job.work * 0.9)) for _ in subset])
    nominal = done * np.array([data.draw(st.floats(0.5, 2.0)) for _ in subset])
    running = np.array(
        [data.draw(st.sampled_from([0, job.min_servers, job.max_servers])) for _ in subset]
    )
    started = np.array([data.draw(st.booleans()) for _ in subset])
    noise = np.array(
        [data.draw(st.floats(0.8, 1.2)) for _ in range(len(subset) * (n - slot))]
    ).reshape(len(subset), n - slot)
    forecast = batch.forecast[subset, slot:] * noise
    again, why = review_rows(
        batch,
        job,
        rules,
        subset,
        slot,
        work_done=done,
        nominal_work=nominal,
        running=running,
        started=started,
        forecast=forecast,
        overhead_h=overhead_h,
    )
    why_by_row = dict(zip(again.tolist(), why.tolist(), strict=True))
    for i, r in enumerate(subset):
        one = singles[r]
        reason = review(
            one,
            job,
            rules,
            slot,
            Progress(float(done[i]), float(nominal[i]), int(running[i]), bool(started[i])),
            forecast[i],
            overhead_h=overhead_h,
        )
        assert int(reason) == why_by_row.get(int(r), 0)
        for name in vars(one):
            assert np.array_equal(getattr(one, name)[0], getattr(batch, name)[r]), name
    # The level at random moments, batched and one by one.
    hours = np.array([data.draw(st.floats(0.0, n + 1.5)) for _ in range(rows)])
    run_now = np.array([data.draw(st.integers(0, job.max_servers)) for _ in range(rows)])
    slots = np.floor(hours).astype(np.int64)
    levels, level_why = level_rows(
        batch, job, rules, np.arange(rows), slots, hours - slots, run_now
    )
    for r in range(rows):
        level, reason = servers_now(singles[r], job, rules, float(hours[r]), int(run_now[r]))
        assert (level, int(reason)) == (int(levels[r]), int(level_why[r]))
