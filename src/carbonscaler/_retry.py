"""One retry policy for the HTTP clients: exponential backoff with jitter, on tenacity.

After ``n`` failures in a row the wait is ``first_s * 2**(n-1)``, at most ``max_s``, shortened
by a random fraction of at most ``jitter`` of it (with the default 0.5: between half and all
of it), so clients that failed together do not all come back at the same instant. A wait the
other side asked for (``Retry-After``, carried by the exception as ``retry_after_s``) is a
floor: never less than asked, never more than ``max_s``. Whether to wait that long at all
is the caller's decision (the providers fail fast on a longer ``Retry-After``).

Users: the live carbon providers retry a request with :func:`retrying` (tenacity), and the
carbon service's deliveries space the pushes to a failing subscriber with
:meth:`Backoff.delay` (their "retry" is the newest update, not the same request). Tests
make the delays exact by fixing the random source (``rng``) and the sleep function.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import tenacity

__all__ = ["Backoff", "retrying"]

_MAX_DOUBLINGS = 64  # 2**64 times any positive first_s is past every sensible max_s


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter.

    Args:
        first_s: The wait after one failure, before jitter.
        max_s: The longest wait, whatever the failures, jitter or a ``Retry-After``.
        jitter: Largest fraction of a wait that randomness takes off (0: exact waits).
        rng: Returns a number in [0, 1); tests fix it.

    Raises:
        ValueError: If a wait is negative or ``jitter`` is outside [0, 1].
    """

    first_s: float
    max_s: float
    jitter: float = 0.5
    rng: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.first_s >= 0 and self.max_s >= 0):
            raise ValueError(f"waits must be >= 0, not {self.first_s} and {self.max_s}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], not {self.jitter}")

    def delay(self, failures: int, *, at_least_s: float | None = None) -> float:
        """Seconds to wait after ``failures`` failures in a row.

        Args:
            failures: Consecutive failures so far (1 for the first).
            at_least_s: A wait the other side asked for (a floor, still capped at ``max_s``).

        Raises:
            ValueError: If ``failures`` is below 1.
        """
        if failures < 1:
            raise ValueError(f"failures must be >= 1, not {failures}")
        base = min(self.first_s * 2.0 ** min(failures - 1, _MAX_DOUBLINGS), self.max_s)
        wait = base * (1.0 - self.jitter * self.rng())
        if at_least_s is not None:
            wait = max(wait, at_least_s)
        return min(wait, self.max_s)


class _Wait(tenacity.wait.wait_base):
    """tenacity's wait strategy for a :class:`Backoff`, honouring ``retry_after_s``."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        asked = getattr(error, "retry_after_s", None)
        floor = float(asked) if isinstance(asked, int | float) else None
        return self.backoff.delay(retry_state.attempt_number, at_least_s=floor)


def retrying(
    backoff: Backoff,
    *,
    retries: int,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    sleep: Callable[[float], None] = time.sleep,
) -> tenacity.Retrying:
    """A tenacity controller: call it with a function (and its arguments) to retry it.

    Args:
        backoff: The waits between attempts; an exception's ``retry_after_s`` (seconds) is
            a floor for the wait that follows it.
        retries: Attempts after the first.
        retry_on: Exceptions worth another attempt; any other one propagates at once.
        sleep: The sleep function (tests record instead of sleeping).

    Returns:
        A :class:`tenacity.Retrying` that re-raises the last exception when attempts run
        out.

    Raises:
        ValueError: If ``retries`` is negative.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, not {retries}")
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(retries + 1),
        wait=_Wait(backoff),
        retry=tenacity.retry_if_exception_type(retry_on),
        sleep=sleep,
        reraise=True,
    )
