"""The fast paths give the reference paths' results on random instances.

* The compiled batch greedy (:mod:`carbonscaler.planner._kernels`) against the single-plan greedy
  (:func:`carbonscaler.planner.greedy.select_increments`), with ties, zero carbon and non-concave
  ladders; with a rescale overhead, against the rounds written out here in plain Python (and
  exactly, where a round stops because its losses would repeat); and
  its sliding lists (rows that are the last row one slot later) against sorting every row,
  and its orders made once per issue slot (``increment_order`` of a longer forecast) likewise.
* The executor's forecasts issued once per issue slot and cut, against issuing each.
* The compiled triggers (forecast, behind, ahead) and running rules (late, overrun: levels
  through a stretch and at one moment) against the rules written out in numpy.
* The executor's one-stretch path (plans followed to the deadline at once where nothing can
  re-plan, fixed-rule policies in stretches) and its first-plan path (plans straight from the
  planner into the compiled world where runs go as planned) against advancing one slot at a
  time, including the rows it hands back (infeasible plans, runs that outlast their plans).
* ``exact`` on a concave ladder decides as ``carbonscaler`` (one simulation serves both).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonscaler.advisor import Conditions, ForecastSpec, _world, simulate_policy
from carbonscaler.advisor.executor import _Issuer
from carbonscaler.decision import (
    Plans,
    Reason,
    Rules,
    deciding_policy,
    level_rows,
    level_stretch,
    triggers_rows,
)
from carbonscaler.forecast import issue_forecasts
from carbonscaler.planner import Job
from carbonscaler.planner.batch import (
    BatchPlan,
    IncrementOrder,
    batch_greedy,
    batch_greedy_with_overhead,
    increment_order,
)
from carbonscaler.planner.greedy import select_increments
from carbonscaler.planner.model import Ladder
from carbonscaler.planner.policies import Policy
from carbonscaler.profile import ScalingProfile, amdahl_profile, power_law_profile


def _profile(kind: int, servers: int) -> ScalingProfile:
    if kind == 0:
        return amdahl_profile(servers, 0.07)
    if kind == 1:
        return power_law_profile(servers, 0.8)
    # Non-concave: a super-linear step in the middle.
    throughput = np.concatenate([[0.0], np.cumsum([1.0, 0.6, 1.4, 0.5, 0.9, 0.3, 0.2, 0.1])])
    return ScalingProfile(throughput[: servers + 1], np.arange(servers + 1) * 100.0, name="bumpy")


def _carbon(rng: np.random.Generator, rows: int, n: int, ties: bool) -> np.ndarray:
    values = rng.uniform(20, 600, (rows, n))
    if ties:  # integer intensities, so many slots tie; and a few free slots
        values = np.round(values / 50) * 50
        values[rng.random((rows, n)) < 0.05] = 0.0
    return values


def _single(ladder: Ladder, carbon: np.ndarray, target: float) -> BatchPlan | None:
    """One row by the single-plan greedy, in the batch form; None if it cannot fit."""
    if target * (1 - 1e-12) > ladder.d_work.sum() * len(carbon):
        return None
    chosen = select_increments(ladder, carbon, target)
    servers = ladder.levels[chosen.steps]
    fraction = np.ones(len(carbon))
    after = servers.copy()
    if chosen.partial_slot is not None:
        fraction[chosen.partial_slot] = chosen.fraction
        after[chosen.partial_slot] = ladder.levels[chosen.steps[chosen.partial_slot] - 1]
    return BatchPlan(servers[None], fraction[None], after[None], np.array([True]))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    kind=st.integers(0, 2),
    servers=st.integers(1, 8),
    low=st.integers(1, 3),
    n=st.integers(1, 40),
    share=st.floats(0.05, 1.1),
    ties=st.booleans(),
)
def test_compiled_greedy_equals_single_plans(
    seed: int, kind: int, servers: int, low: int, n: int, share: float, ties: bool
) -> None:
    low = min(low, servers)
    ladder = Job.from_length(_profile(kind, servers), 1.0, low, servers).ladder()
    rng = np.random.default_rng(seed)
    carbon = _carbon(rng, 6, n, ties)
    targets = share * ladder.d_work.sum() * n * rng.uniform(0.5, 1.0, 6)
    batch = batch_greedy(ladder, carbon, targets)
    for row in range(6):
        single = _single(ladder, carbon[row], float(targets[row]))
        assert batch.feasible[row] == (single is not None)
        if single is None:
            assert not batch.servers[row].any()
            continue
        assert batch.servers[row].tolist() == single.servers[0].tolist()
        assert batch.after[row].tolist() == single.after[0].tolist()
        np.testing.assert_allclose(batch.fraction[row], single.fraction[0], rtol=1e-9)


def _losses_by_hand(
    plan: BatchPlan, row: int, throughput: np.ndarray, overhead_h: float, previous: int
) -> float:
    """The work a fresh job's plan loses to rescaling, walked through in plain Python."""
    last, first, lost = previous, True, 0.0
    for i in range(plan.servers.shape[1]):
        f = float(plan.fraction[row, i])
        for level, hours in ((int(plan.servers[row, i]), f), (int(plan.after[row, i]), 1 - f)):
            if hours <= 1e-12:
                continue
            if level != last and level > 0:
                if first:
                    first = False
                else:
                    lost += float(throughput[level]) * min(overhead_h, hours)
            last = level
    return lost


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(4, 36), overhead_s=st.sampled_from([30, 600]))
def test_compiled_overhead_rounds_equal_the_rounds_by_hand(
    seed: int, n: int, overhead_s: int
) -> None:
    job = Job.from_length(amdahl_profile(6, 0.05), 1.0, 1, 6)
    ladder, throughput = job.ladder(), job.profile.throughput
    rng = np.random.default_rng(seed)
    carbon = _carbon(rng, 5, n, ties=bool(seed % 2))
    base = 0.4 * ladder.d_work.sum() * n * rng.uniform(0.3, 1.0, 5)
    overhead_h = overhead_s / 3600
    fast = batch_greedy_with_overhead(
        ladder, carbon, base, throughput=throughput, overhead_h=overhead_h, slot_hours=1.0
    )
    for row in range(5):
        # The documented rule: re-plan for base + the last plan's losses, at most 3 rounds.
        plan = batch_greedy(ladder, carbon[row : row + 1], base[row])
        for _ in range(3):
            losses = _losses_by_hand(plan, 0, throughput, overhead_h, 0)
            plan = batch_greedy(ladder, carbon[row : row + 1], base[row] + losses)
        assert fast.feasible[row] == plan.feasible[0]
        assert fast.servers[row].tolist() == plan.servers[0].tolist()
        np.testing.assert_allclose(fast.fraction[row], plan.fraction[0], rtol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    kind=st.integers(0, 2),
    n=st.integers(2, 36),
    overhead_s=st.sampled_from([30, 600, 1800, 3600]),
    rounds=st.integers(1, 4),
)
def test_overhead_rounds_stop_where_the_losses_repeat(
    seed: int, kind: int, n: int, overhead_s: int, rounds: int
) -> None:
    """The compiled rounds give exactly the rule with its early stop, written out here: a
    round that completes where the last did, with both parts of that slot at least the
    overhead long, stops without summing its losses — only where they would repeat."""
    job = Job.from_length(_profile(kind, 6), 1.0, 1, 6)
    ladder, throughput = job.ladder(), job.profile.throughput
    rng = np.random.default_rng(seed)
    carbon = _carbon(rng, 8, n, ties=bool(seed % 2))
    base = 0.4 * ladder.d_work.sum() * n * rng.uniform(0.3, 2.6, 8)  # a few cannot fit
    overhead_h = overhead_s / 3600
    fast = batch_greedy_with_overhead(
        ladder,
        carbon,
        base,
        throughput=throughput,
        overhead_h=overhead_h,
        slot_hours=1.0,
        rounds=rounds,
    )
    for row in range(8):
        loss = 0.0
        for round_ in range(rounds + 1):
            plan = batch_greedy(ladder, carbon[row : row + 1], base[row] + loss)
            if round_ == rounds:
                break
            last, loss = loss, _losses_by_hand(plan, 0, throughput, overhead_h, 0)
            if loss == last:
                break
        assert fast.feasible[row] == plan.feasible[0]
        assert fast.servers[row].tolist() == plan.servers[0].tolist()
        assert fast.after[row].tolist() == plan.after[0].tolist()
        assert fast.fraction[row].tolist() == plan.fraction[0].tolist()


def _outcomes_equal(a: object, b: object) -> None:
    for field in dataclasses.fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, field.name), getattr(b, field.name)
        if x is None:
            assert y is None
            continue
        if np.asarray(x).dtype.kind in "biu":
            assert np.array_equal(x, y), field.name
        else:
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-9, err_msg=field.name)


CONDITIONS = [
    Conditions(),
    Conditions(profile_error=0.1, seed=3),
    Conditions(rescale_overhead_s=120),
    Conditions(forecast=ForecastSpec("uniform", 0.2, seed=5), safety_margin=0.0),
]


@pytest.mark.parametrize("policy", [p.value for p in Policy if p is not Policy.STATIC_BEST])
@pytest.mark.parametrize("cond", CONDITIONS, ids=["exact", "profile", "overhead", "noise"])
@pytest.mark.parametrize("seed", [0, 1])
def test_one_stretch_equals_slot_by_slot(policy: str, cond: Conditions, seed: int) -> None:
    rng = np.random.default_rng(seed)
    trace = rng.uniform(50, 500, 400)
    trace[rng.random(400) < 0.2] = 200.0  # ties
    servers = 6 if seed else 4
    job = Job.from_length(amdahl_profile(servers, 0.1), 10.0, 1 + seed, servers)
    starts = np.arange(0, 400 - 16, 7)
    fast = simulate_policy(policy, job, trace, starts, 16, cond, record_slots=12)
    slow = simulate_policy(policy, job, trace, starts, 16, cond, record_slots=12, stepwise=True)
    _outcomes_equal(fast, slow)


def test_runs_past_the_trace_end_stop_alike() -> None:
    trace = np.linspace(100, 400, 60)
    job = Job.from_length(amdahl_profile(4, 0.1), 30.0, 1, 4)
    starts = np.arange(0, 60 - 20)
    for policy in ("static", "suspend-resume-threshold", "carbonscaler"):
        fast = simulate_policy(policy, job, trace, starts, 20)
        slow = simulate_policy(policy, job, trace, starts, 20, stepwise=True)
        _outcomes_equal(fast, slow)
    # A rising trace is never below its past percentile: the threshold runs never finish.
    assert np.isnan(fast.completion_hours).sum() == 0
    stalled = simulate_policy("suspend-resume-threshold", job, trace, starts, 20)
    assert np.isnan(stalled.completion_hours).any()


def test_exact_decides_as_carbonscaler_only_on_concave_ladders() -> None:
    concave = Job.from_length(amdahl_profile(6, 0.05), 10, 1, 6)
    bumpy = Job.from_length(_profile(2, 6), 10, 1, 6)
    assert concave.ladder().concave and not bumpy.ladder().concave
    assert deciding_policy(Policy.EXACT, concave) is Policy.CARBONSCALER
    assert deciding_policy(Policy.EXACT, bumpy) is Policy.EXACT
    assert deciding_policy(Policy.SUSPEND_RESUME, concave) is Policy.SUSPEND_RESUME
    trace = np.random.default_rng(4).uniform(50, 500, 200)
    starts = np.arange(0, 180, 5)
    cond = Conditions(forecast=ForecastSpec("uniform", 0.1, seed=2), profile_error=0.05)
    _outcomes_equal(
        simulate_policy("exact", concave, trace, starts, 16, cond),
        simulate_policy("carbonscaler", concave, trace, starts, 16, cond),
    )


def _windows(rng: np.random.Generator, rows: int, n: int, ties: bool) -> np.ndarray:
    """Forecast rows as a sweep plans them: windows of one trace at mostly consecutive starts,
    with jumps and repeats (so the kernel both slides and sorts afresh)."""
    trace = _carbon(rng, 1, rows + n + 20, ties)[0]
    steps = rng.choice([0, 1, 1, 1, 1, 1, 1, 3], size=rows)
    starts = np.minimum(np.cumsum(steps), rows + 20)
    return np.lib.stride_tricks.sliding_window_view(trace, n)[starts]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    kind=st.integers(0, 2),
    servers=st.integers(1, 8),
    low=st.integers(1, 3),
    n=st.sampled_from([1, 2, 5, 17, 36, 70]),
    ties=st.booleans(),
    overhead_s=st.sampled_from([0, 120]),
)
def test_sliding_lists_plan_as_sorting_every_row(
    seed: int, kind: int, servers: int, low: int, n: int, ties: bool, overhead_s: int
) -> None:
    low = min(low, servers)
    job = Job.from_length(_profile(kind, servers), 1.0, low, servers)
    ladder = job.ladder()
    rng = np.random.default_rng(seed)
    carbon = _windows(rng, 30, n, ties)
    targets = rng.uniform(0.05, 1.1, 30) * ladder.d_work.sum() * n
    fallback = targets * rng.uniform(0.5, 1.0, 30)
    tp, overhead_h = job.profile.throughput, overhead_s / 3600
    batch = batch_greedy_with_overhead(
        ladder,
        carbon,
        targets,
        throughput=tp,
        overhead_h=overhead_h,
        slot_hours=1.0,
        fallback=fallback,
    )
    for row in range(30):
        alone = batch_greedy_with_overhead(
            ladder,
            carbon[row : row + 1].copy(),
            targets[row],
            throughput=tp,
            overhead_h=overhead_h,
            slot_hours=1.0,
            fallback=fallback[row : row + 1],
        )
        assert batch.feasible[row] == alone.feasible[0]
        assert batch.fell_back is not None and alone.fell_back is not None
        assert batch.fell_back[row] == alone.fell_back[0]
        assert batch.servers[row].tolist() == alone.servers[0].tolist()
        assert batch.after[row].tolist() == alone.after[0].tolist()
        assert batch.fraction[row].tolist() == alone.fraction[0].tolist()
        if overhead_s == 0 and batch.feasible[row] and not batch.fell_back[row]:
            single = _single(ladder, carbon[row], float(targets[row]))
            assert single is not None
            assert batch.servers[row].tolist() == single.servers[0].tolist()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    kind=st.integers(0, 2),
    servers=st.integers(1, 8),
    low=st.integers(1, 3),
    n=st.sampled_from([1, 2, 5, 17, 36, 70]),
    extra=st.sampled_from([0, 1, 9]),
    ties=st.booleans(),
    overhead_s=st.sampled_from([0, 120]),
)
def test_orders_of_longer_rows_plan_as_sorting_every_row(
    seed: int, kind: int, servers: int, low: int, n: int, extra: int, ties: bool, overhead_s: int
) -> None:
    low = min(low, servers)
    job = Job.from_length(_profile(kind, servers), 1.0, low, servers)
    ladder = job.ladder()
    rng = np.random.default_rng(seed)
    longer = _carbon(rng, 30, n + extra, ties)
    longer[:10] = _windows(rng, 10, n + extra, ties)  # some rows slide instead
    carbon = longer[:, :n].copy()
    perm = rng.permutation(30)  # the table's rows in another order
    targets = rng.uniform(0.05, 1.1, 30) * ladder.d_work.sum() * n
    fallback = targets * rng.uniform(0.5, 1.0, 30)
    settings_ = dict(
        throughput=job.profile.throughput,
        overhead_h=overhead_s / 3600,
        slot_hours=1.0,
        fallback=fallback,
    )
    plain = batch_greedy_with_overhead(ladder, carbon, targets, **settings_)  # type: ignore[arg-type]
    ordered = batch_greedy_with_overhead(
        ladder,
        carbon,
        targets,
        order=IncrementOrder(increment_order(ladder, longer[perm]), np.argsort(perm)),
        **settings_,  # type: ignore[arg-type]
    )
    for name in ("servers", "fraction", "after", "feasible", "fell_back"):
        assert np.array_equal(getattr(plain, name), getattr(ordered, name)), name
    # Only the first increments of each order: rows that need more plan without it.
    limit = int(rng.integers(0, (n + extra) * len(ladder.efficiency) + 1))
    prefix = batch_greedy_with_overhead(
        ladder,
        carbon,
        targets,
        order=IncrementOrder(
            increment_order(ladder, longer[perm], limit), np.argsort(perm), n + extra
        ),
        **settings_,  # type: ignore[arg-type]
    )
    for name in ("servers", "fraction", "after", "feasible", "fell_back"):
        assert np.array_equal(getattr(plain, name), getattr(prefix, name)), name
    with pytest.raises(ValueError, match="order"):
        batch_greedy_with_overhead(
            ladder,
            carbon,
            targets,
            order=IncrementOrder(
                increment_order(ladder, longer)[:, : n * len(ladder.efficiency) - 1],
                np.arange(30),
            ),
            **settings_,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize("model", ["uniform", "gaussian", "persistence", "seasonal", "perfect"])
@pytest.mark.parametrize("dense", [True, False])
def test_forecasts_issued_once_equal_issuing_each(model: str, dense: bool) -> None:
    rng = np.random.default_rng(4)
    trace = rng.uniform(0, 500, 300)
    trace[rng.random(300) < 0.2] = 200.0
    spec = (
        ForecastSpec(model, 0.2, seed=7)
        if model in ("uniform", "gaussian")
        else ForecastSpec(model)
    )
    starts = np.arange(0, 300 - 20, 1 if dense else 40)
    ladder = Job.from_length(amdahl_profile(5, 0.1), 8.0, 1, 5).ladder()
    issue = _Issuer(spec, trace, starts, 20, 0.5, ladder)
    assert (issue.table is not None) == dense
    for t in range(20):
        each = issue_forecasts(spec, trace, starts + t, 20 - t, 0.5)
        assert np.array_equal(issue(starts, t), each, equal_nan=True)
        order = issue.order(starts, t)
        assert (order is None) == (not dense)
        if order is not None:
            steps = len(ladder.efficiency)
            kept = [order.table[i][order.table[i] // steps < 20 - t] for i in order.rows]
            # The first increments of the longer order (all but its deepest): a prefix.
            assert order.table.shape[1] < 20 * steps
            for mine, theirs in zip(kept, increment_order(ladder, each), strict=True):
                assert np.array_equal(mine, theirs[: len(mine)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_forecast_trigger_equals_the_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, n, slot = 200, 12, 3
    plans = Plans.empty(rows, n)
    plans.forecast[:] = np.round(rng.uniform(0, 400, (rows, n)) / 50) * 50
    plans.forecast[rng.random((rows, n)) < 0.05] = np.nan
    factor = 1 + rng.choice(
        [0.0, 0.05, 0.1, -0.05, -0.2], (rows, n - slot), p=[0.9, 0.04, 0.02, 0.02, 0.02]
    )
    forecast = plans.forecast[:, slot:] * factor
    forecast[rng.random((rows, n - slot)) < 0.02] = np.nan
    forecast[rng.random((rows, n - slot)) < 0.02] = 1e-13
    job = Job.from_length(amdahl_profile(4, 0.1), 4.0, 1, 4)
    rules = Rules(Policy.CARBONSCALER, 0.05, 0.0)
    index = rng.permutation(rows)[:150]
    done = np.zeros(150)
    fired = triggers_rows(plans, job, rules, index, slot, done, forecast[index])
    expected = plans.forecast[index, slot:]
    rule = (np.abs(forecast[index] - expected) > 0.05 * np.maximum(expected, 1e-12)).any(axis=1)
    assert np.array_equal((fired & Reason.FORECAST) > 0, rule)
    assert 0 < rule.sum() < 150


def _random_plans(rng: np.random.Generator, rows: int, n: int) -> Plans:
    """Plans with partial slots, idle slots, ends inside the plan and progress promised."""
    plans = Plans.empty(rows, n)
    plans.servers[:] = rng.integers(0, 5, (rows, n))
    plans.after[:] = np.where(rng.random((rows, n)) < 0.8, plans.servers, rng.integers(0, 5))
    plans.fraction[:] = np.where(
        rng.random((rows, n)) < 0.7, 1.0, rng.choice([0.0, 1e-13, 0.25, 0.5, 1.0], (rows, n))
    )
    end = rng.integers(0, n + 1, rows)
    for r in range(rows):  # after its end a plan has only zeros
        plans.servers[r, end[r] :] = plans.after[r, end[r] :] = 0
    plans.end_slot[:] = end - rng.choice([0.0, 0.5, 1e-10], rows)
    plans.planned_done[:] = np.cumsum(rng.uniform(0, 1, (rows, n + 1)), axis=1)
    plans.made_at[:] = rng.integers(0, n, rows)
    plans.margin[:] = rng.choice([1.0, 1.1], rows)
    return plans


def _running_rules_by_hand(
    plans: Plans,
    top: int,
    rows: np.ndarray,
    planned: np.ndarray,
    inside: np.ndarray,
    at: np.ndarray,
    running: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The running rules written out in numpy: top level (late) past the deadline; an overrun
    (inside, level 0, at or after the plan's end) keeps the level before the first."""
    level = np.where(inside, planned, top).astype(np.int64)
    reasons = np.broadcast_to(np.where(inside, 0, int(Reason.LATE)), level.shape).copy()
    overrun = inside & (level == 0) & (at >= plans.end_slot[rows][:, None] - 1e-9)
    start = np.argmax(overrun, axis=1)
    before = np.where(start > 0, level[np.arange(len(rows)), np.maximum(start - 1, 0)], running)
    level = np.where(overrun, before[:, None], level)
    reasons[overrun & (before[:, None] > 0)] |= Reason.OVERRUN
    return level, reasons


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_running_rules_equal_the_rules(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, n = 300, 8
    plans = _random_plans(rng, rows, n)
    job = Job.from_length(amdahl_profile(4, 0.1), 4.0, 1, 4)
    rules = Rules(Policy.CARBONSCALER, 0.05, 0.0)
    index = rng.permutation(rows)[:200]
    running = rng.integers(0, 5, 200)
    for first, span in ((0, 1), (3, 1), (2, 4), (5, 6), (n, 2), (0, n + 3)):
        level, reasons = level_stretch(plans, job, rules, index, first, span, running)
        slots = np.repeat(np.arange(first, first + span), 2)
        inside = slots < n
        s = np.minimum(slots, n - 1)
        fraction, after = plans.fraction[index][:, s], plans.after[index][:, s]
        planned = np.where(inside, after, 0)
        planned[:, 0::2] = np.where(
            inside[0::2],
            np.where(fraction[:, 0::2] > 1e-12, plans.servers[index][:, s[0::2]], after[:, 0::2]),
            0,
        )
        at = np.broadcast_to(slots.astype(float), planned.shape).copy()
        at[:, 1::2] += np.where(inside[1::2], fraction[:, 1::2], 0.0)
        want = _running_rules_by_hand(plans, 4, index, planned, inside[None, :], at, running)
        assert np.array_equal(level, want[0]), (first, span)
        assert np.array_equal(reasons, want[1]), (first, span)
    slot = rng.integers(-1, n + 2, 200)
    into = rng.choice([0.0, 1e-13, 0.25, 0.5, 0.99], 200)
    level1, reasons1 = level_rows(plans, job, rules, index, slot, into, running)
    s1 = np.minimum(slot, n - 1)
    planned1 = np.where(
        into < plans.fraction[index, s1] - 1e-12, plans.servers[index, s1], plans.after[index, s1]
    )
    want1 = _running_rules_by_hand(
        plans, 4, index, planned1[:, None], (slot < n)[:, None], (slot + into)[:, None], running
    )
    assert np.array_equal(level1, want1[0][:, 0])
    assert np.array_equal(reasons1, want1[1][:, 0])
    assert (reasons & Reason.OVERRUN).any() and (reasons & Reason.LATE).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_progress_triggers_equal_the_rules(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, n, slot = 300, 10, 4
    plans = _random_plans(rng, rows, n)
    job = Job.from_length(amdahl_profile(4, 0.1), 4.0, 1, 4)
    rules = Rules(Policy.CARBONSCALER, 0.05, 0.0)
    index = rng.permutation(rows)[:200]
    done_now = plans.planned_done[index, slot]
    done = done_now + rng.uniform(-0.1, 0.4, 200) * job.work
    fired = triggers_rows(plans, job, rules, index, slot, done, None)
    start = plans.planned_done[index, plans.made_at[index]]
    own_pace = start + (done_now - start) * plans.margin[index]
    behind = done - done_now < -0.01 * job.work
    ahead = done - own_pace > 0.05 * job.work
    assert np.array_equal((fired & Reason.BEHIND) > 0, behind)
    assert np.array_equal((fired & Reason.AHEAD) > 0, ahead)
    assert not (fired & Reason.FORECAST).any()
    assert 0 < behind.sum() < 200 and 0 < ahead.sum() < 200


RUNNABLE = ["carbonscaler", "suspend-resume", "agnostic", "exact"]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    kind=st.integers(0, 2),
    servers=st.integers(1, 6),
    low=st.integers(1, 2),
    length=st.sampled_from([1.0, 4.0, 7.5, 12.0]),
    slack=st.sampled_from([0.5, 1.0, 1.3, 2.0]),
    margin=st.sampled_from([0.0, 0.05, 0.3]),
    ties=st.booleans(),
    policy=st.sampled_from(RUNNABLE),
    slot_hours=st.sampled_from([1.0, 0.25, 1 / 3]),
)
def test_first_plans_followed_equal_slot_by_slot(
    seed: int,
    kind: int,
    servers: int,
    low: int,
    length: float,
    slack: float,
    margin: float,
    ties: bool,
    policy: str,
    slot_hours: float,
) -> None:
    """Runs that go as planned are their first plans: straight from the planner into the
    compiled world, the same numbers as stepping through every slot. Deadlines shorter than the
    job (slack < 1) leave plans that cannot fit, which run at the top level past the deadline."""
    low = min(low, servers)
    job = Job.from_length(_profile(kind, servers), length, low, servers, slot_hours)
    rng = np.random.default_rng(seed)
    deadline = max(1, round(slack * length / slot_hours))
    trace = _carbon(rng, 1, 120 + deadline, ties)[0]
    count = 12 if policy == "exact" and not job.ladder().concave else 120
    starts = np.arange(count)
    if seed % 3 == 0:
        starts = np.sort(rng.choice(120, size=40))
    cond = Conditions(safety_margin=margin)
    fast = simulate_policy(policy, job, trace, starts, deadline, cond, record_slots=deadline + 4)
    slow = simulate_policy(
        policy, job, trace, starts, deadline, cond, record_slots=deadline + 4, stepwise=True
    )
    _outcomes_equal_exactly(fast, slow)


def _outcomes_equal_exactly(a: object, b: object) -> None:
    for field in dataclasses.fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, field.name), getattr(b, field.name)
        if x is None:
            assert y is None
            continue
        assert np.array_equal(x, y, equal_nan=np.asarray(x).dtype.kind == "f"), field.name


def test_followed_plans_hand_back_what_the_running_rules_decide() -> None:
    """The rows the compiled world leaves to the reference path: a plan that cannot fit, a
    run its plan does not finish, and a plan with an idle sliver (where a run could reach the
    plan's end and the overrun rule)."""
    profile = amdahl_profile(3, 0.1)
    work = 2.5 * float(profile.throughput[1])
    trace = np.array([100.0, 200.0, 300.0, 400.0, 500.0, 600.0])
    servers = np.array([[1, 1, 1], [1, 0, 0], [1, 0, 1], [1, 1, 1]])
    fraction = np.ones((4, 3))
    fraction[0, 2] = 0.5  # does the work at the switch point
    fraction[2, 0] = 1 - 1e-9  # an idle sliver before the last slot
    after = servers.copy()
    after[0, 2] = after[2, 0] = 0
    feasible = np.array([True, True, True, False])
    state = [np.zeros(4) for _ in range(2)]
    status = np.full(4, -1, dtype=np.int8)
    outputs = [np.zeros(4, dtype=np.int64), np.zeros(4, dtype=bool), np.full(4, np.nan)]
    totals = [np.zeros(4, dtype=np.int64), *(np.zeros(4) for _ in range(3))]
    _world.follow(
        np.zeros(4, dtype=np.int64),
        trace,
        servers,
        fraction,
        after,
        feasible,
        profile.throughput,
        profile.power_w,
        work,
        1.0,
        *state,
        *outputs,
        *totals,
        np.zeros((4, 0)),
        status,
    )
    assert status.tolist() == [_world.WORK_DONE, _world.RUNNING, _world.RUNNING, _world.RUNNING]
    assert outputs[2][0] == pytest.approx(2.5)
