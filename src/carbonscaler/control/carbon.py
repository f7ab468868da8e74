"""Carbon feeds: what the controller asks of its carbon source, slot by slot.

A feed answers two questions about *job slots* (slot 0 starts at the job's arrival): the actual
intensity of a slot, which the emissions are accounted at, and a forecast issued at the start of
a slot for the slots that follow, which plans are made on. Feeds wrap the providers and
forecasters of :mod:`carbonscaler.providers` and :mod:`carbonscaler.forecast`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from carbonscaler.forecast import Forecaster
from carbonscaler.planner.model import FloatArray
from carbonscaler.providers import CarbonProvider, CarbonUnavailable, ProviderError

__all__ = ["CarbonFeed", "CarbonUnavailable", "ProviderFeed", "ReplayFeed"]


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
