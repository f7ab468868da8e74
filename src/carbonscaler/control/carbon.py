"""Carbon feeds: what the controller asks of its carbon source, slot by slot.

A feed answers two questions about *job slots* (slot 0 starts at the job's arrival): the actual
intensity of a slot, which the emissions are accounted at, and a forecast issued at the start of
a slot for the slots that follow, which plans are made on. Feeds wrap the providers and
forecasters of :mod:`carbonscaler.providers` and :mod:`carbonscaler.forecast`.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

import numpy as np

from carbonscaler.forecast import Forecaster
from carbonscaler.planner.model import FloatArray
from carbonscaler.providers import CarbonProvider, CarbonUnavailable, ProviderError

__all__ = ["BackgroundFeed", "CarbonFeed", "CarbonUnavailable", "ProviderFeed", "ReplayFeed"]

_T = TypeVar("_T")


class CarbonFeed(ABC):
    """Actual intensity per job slot and forecasts for the slots ahead (gCO2eq/kWh)."""

    source: str = "carbon"

    @abstractmethod
    def actual(self, slot: int) -> float:
        """Intensity during job slot ``slot`` (known once the slot has begun).

        Raises:
            CarbonUnavailable: if the source cannot answer.
        """

    @abstractmethod
    def forecast(self, slot: int, horizon: int) -> FloatArray:
        """Forecast issued at the start of ``slot`` for slots ``slot .. slot+horizon-1``.

        Raises:
            CarbonUnavailable: if the source cannot answer.
        """

    def known(self, slots: int) -> FloatArray:
        """Actual intensity of the first ``slots`` job slots (for reports)."""
        return np.array([self.actual(i) for i in range(slots)], dtype=np.float64)


class ReplayFeed(CarbonFeed):
    """A trace replayed from ``start_index``; forecasts come from a forecaster over it.

    Args:
        values: the whole trace at the job's slot length (history before the start is what
            the persistence and seasonal forecasters look at).
        start_index: the trace slot of the job's arrival.
        forecaster: how forecasts are made from the trace.
        source: label for reports.
    """

    def __init__(
        self, values: FloatArray, start_index: int, forecaster: Forecaster, source: str
    ) -> None:
        self.values = np.asarray(values, dtype=np.float64)
        self.start_index = start_index
        self.forecaster = forecaster
        self.source = source

    def actual(self, slot: int) -> float:
        index = self.start_index + slot
        if index >= len(self.values):
            raise CarbonUnavailable(
                f"the trace {self.source} ends {len(self.values) - self.start_index} slots "
                "after the job's start"
            )
        return float(self.values[index])

    def forecast(self, slot: int, horizon: int) -> FloatArray:
        index = self.start_index + slot
        available = len(self.values) - index
        if available < 1:
            raise CarbonUnavailable(f"the trace {self.source} has no data for job slot {slot}")
        ahead = self.forecaster.predict_array(self.values, index, min(horizon, available))
        if len(ahead) < horizon:  # past the trace's end, assume the last value holds
            ahead = np.concatenate([ahead, np.full(horizon - len(ahead), ahead[-1])])
        return np.asarray(ahead, dtype=np.float64)


class ProviderFeed(CarbonFeed):
    """A live provider: the current value is the actual one; forecasts from the provider
    (``provider`` forecaster) or from a forecaster over the provider's history.

    Actual values are remembered per slot, so a slot is accounted at one value even if the
    provider is asked again.
    """

    def __init__(self, provider: CarbonProvider, forecaster: Forecaster | None) -> None:
        self.provider = provider
        self.forecaster = forecaster
        self.source = provider.name
        self._seen: dict[int, float] = {}

    def actual(self, slot: int) -> float:
        if slot not in self._seen:
            try:
                self._seen[slot] = self.provider.current().value_g_per_kwh
            except ProviderError as exc:
                raise CarbonUnavailable(str(exc)) from exc
        return self._seen[slot]

    def forecast(self, slot: int, horizon: int) -> FloatArray:
        try:
            if self.forecaster is None:
                result = self.provider.forecast(horizon)
            else:
                result = self.forecaster.predict(self.provider, horizon)
        except ProviderError as exc:
            raise CarbonUnavailable(str(exc)) from exc
        values = np.asarray(result.values_g_per_kwh, dtype=np.float64)
        if len(values) == 0:
            raise CarbonUnavailable(f"{self.source} returned an empty forecast")
        if len(values) < horizon:  # beyond the provider's horizon, assume the last value holds
            values = np.concatenate([values, np.full(horizon - len(values), values[-1])])
        return values[:horizon]


class BackgroundFeed(CarbonFeed):
    """A feed whose source may hang, asked on background threads so the control loop never
    waits long for it.

    Each question (a slot's intensity, a forecast) runs on a daemon thread; the caller waits
    at most ``wait_s`` for the answer and otherwise gets :class:`CarbonUnavailable` at once —
    the controller then carries on with what it last had (degraded) and the question keeps
    running, so a late answer is used when the same question comes again. A question already
    under way is never asked twice. Within ``tick_budget_s`` of wall time the waits add up to at
    most that budget, so a dead source costs each controller step a bounded delay.

    Args:
        inner: the feed that talks to the source.
        wait_s: the longest wait for one answer.
        tick_budget_s: the longest total wait within any window of this length.
        monotonic: wall-time source, replaceable in tests.
    """

    def __init__(
        self,
        inner: CarbonFeed,
        *,
        wait_s: float = 0.25,
        tick_budget_s: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.source = inner.source
        self.wait_s = wait_s
        self.tick_budget_s = tick_budget_s
        self._monotonic = monotonic
        self._pending: dict[tuple[object, ...], Future[object]] = {}
        self._lock = threading.Lock()
        self._window_start = -float("inf")
        self._waited_s = 0.0

    def _budget(self) -> float:
        now = self._monotonic()
        if now - self._window_start >= self.tick_budget_s:
            self._window_start, self._waited_s = now, 0.0
        return max(min(self.wait_s, self.tick_budget_s - self._waited_s), 0.0)

    def _ask(self, key: tuple[object, ...], question: Callable[[], _T]) -> _T:
        with self._lock:
            future = self._pending.get(key)
            if future is None:
                future = Future()
                self._pending[key] = future
                threading.Thread(target=self._answer, args=(future, question), daemon=True).start()
        wait = self._budget()
        began = self._monotonic()
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        answered = done.wait(wait)
        # A wait that ran out used all it was given; an answer, only the time it took.
        self._waited_s += (self._monotonic() - began) if answered else wait
        if not answered:
            raise CarbonUnavailable(
                f"{self.source} did not answer within {wait:.2f} s; carrying on with the last "
                "known values while it is asked again"
            )
        with self._lock:
            self._pending.pop(key, None)
        return future.result()  # type: ignore[return-value]

    @staticmethod
    def _answer(future: Future[object], question: Callable[[], object]) -> None:
        try:
            future.set_result(question())
        except BaseException as exc:  # handed to the asker, who re-raises it
            future.set_exception(exc)

    def actual(self, slot: int) -> float:
        return self._ask(("actual", slot), lambda: self.inner.actual(slot))

    def forecast(self, slot: int, horizon: int) -> FloatArray:
        return self._ask(("forecast", slot, horizon), lambda: self.inner.forecast(slot, horizon))
