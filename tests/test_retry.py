"""The one retry policy (carbonscaler._retry): exponential backoff with jitter, on tenacity.

Delays are exact when the random source is fixed, and within their bounds with real jitter;
the sleep function records instead of sleeping. No servers here: the providers' and the
deliveries' use of the policy is tested against real servers in test_providers.py and
test_push_fanout.py.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from carbonscaler._retry import Backoff, retrying


class Sleeps(list[float]):
    """A sleep function that records instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class Flaky(Exception):
    def __init__(self, retry_after_s: float | None = None) -> None:
        super().__init__("flaky")
        self.retry_after_s = retry_after_s


class Fatal(Exception):
    pass


def exact(first_s: float = 0.5, max_s: float = 30.0) -> Backoff:
    return Backoff(first_s, max_s, jitter=0.5, rng=lambda: 0.0)


def test_delays_double_up_to_the_cap_when_the_jitter_is_fixed() -> None:
    backoff = exact(0.5, 4.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.delay(10_000) == 4.0  # no overflow, however many failures
    # The largest draw takes `jitter` of each wait off.
    most = Backoff(0.5, 4.0, jitter=0.5, rng=lambda: 1.0)
    assert [most.delay(n) for n in range(1, 5)] == [0.25, 0.5, 1.0, 2.0]
    assert [Backoff(1.0, 8.0, jitter=0.0).delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_real_jitter_stays_within_its_bounds_and_varies() -> None:
    backoff = Backoff(1.0, 60.0, jitter=0.5, rng=random.Random(7).random)
    for failures in range(1, 8):
        full = min(2.0 ** (failures - 1), 60.0)
        delays = [backoff.delay(failures) for _ in range(200)]
        assert all(full * 0.5 <= d <= full for d in delays), (failures, min(delays), max(delays))
        assert len(set(delays)) > 100  # spread out, not one value


def test_a_wait_asked_for_is_a_floor_and_the_cap_still_holds() -> None:
    backoff = exact(0.5, 30.0)
    assert backoff.delay(1, at_least_s=3.0) == 3.0
    assert backoff.delay(4, at_least_s=1.0) == 4.0  # the backoff is longer
    assert backoff.delay(1, at_least_s=300.0) == 30.0
    assert Backoff(0.5, 30.0, rng=lambda: 0.99).delay(1, at_least_s=3.0) == 3.0  # not jittered


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"first_s": -1.0, "max_s": 1.0}, "waits"),
        ({"first_s": 1.0, "max_s": float("nan")}, "waits"),
        ({"first_s": 1.0, "max_s": 1.0, "jitter": 1.5}, "jitter"),
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)


def test_failures_count_from_one_and_retries_from_zero() -> None:
    with pytest.raises(ValueError, match="failures"):
        exact().delay(0)
    with pytest.raises(ValueError, match="retries"):
        retrying(exact(), retries=-1, retry_on=Flaky)


def test_retrying_retries_only_what_it_is_told_and_sleeps_the_policy() -> None:
    calls: list[int] = []

    def attempt(answers: list[Exception | str]) -> str:
        calls.append(1)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    sleeps = Sleeps()
    retry = retrying(exact(), retries=3, retry_on=Flaky, sleep=sleeps)
    assert retry(attempt, [Flaky(), Flaky(), "ok"]) == "ok"
    assert sleeps == [0.5, 1.0] and len(calls) == 3

    sleeps.clear()
    calls.clear()
    with pytest.raises(Flaky):  # the last failure, as it was raised
        retrying(exact(), retries=2, retry_on=Flaky, sleep=sleeps)(attempt, [Flaky()] * 5)
    assert sleeps == [0.5, 1.0] and len(calls) == 3

    sleeps.clear()
    calls.clear()
    with pytest.raises(Fatal):  # not retried, no sleep
        retrying(exact(), retries=3, retry_on=Flaky, sleep=sleeps)(attempt, [Fatal(), "ok"])
    assert sleeps == [] and len(calls) == 1


def test_retrying_honours_the_wait_an_error_asks_for() -> None:
    answers: list[Exception | str] = [Flaky(retry_after_s=3.0), Flaky(), "ok"]

    def attempt() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    sleeps = Sleeps()
    assert retrying(exact(), retries=2, retry_on=Flaky, sleep=sleeps)(attempt) == "ok"
    assert sleeps == [3.0, 1.0]  # the asked-for wait once, then the backoff again


def test_retrying_with_real_jitter_sleeps_within_bounds() -> None:
    sleeps = Sleeps()
    backoff = Backoff(0.5, 30.0, rng=random.Random(3).random)

    def always() -> None:
        raise Flaky()

    with pytest.raises(Flaky):
        retrying(backoff, retries=5, retry_on=(Flaky, OSError), sleep=sleeps)(always)
    assert len(sleeps) == 5
    for n, slept in enumerate(sleeps):
        assert 0.5 * 2**n * 0.5 <= slept <= 0.5 * 2**n
