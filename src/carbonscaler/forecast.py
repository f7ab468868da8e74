"""Forecasters: carbon intensity for the next slots, from a trace or any provider.

Names (see :data:`FORECASTERS`):

- ``real``: the future of the trace itself, perfect foresight (the reference's ``REAL``);
- ``uniform`` / ``gaussian``: ``real`` with multiplicative noise, ``U(-x, x)`` or
  ``N(0, x)`` with ``x = error_pct / 100``, seeded, clipped at 0;
- ``persistence``: the same slot yesterday;
- ``seasonal``: the same slot last week (seasonal naive);
- ``provider``: the provider's own forecast (for a trace replay this is the trace future).

Every forecast covers the slots ``index .. index + horizon - 1``: slot 0 is the current
slot, whose intensity is observed, so every forecaster returns the observed value there
and predicts the rest. The array functions are pure (:func:`forecast_at`, which the what-if
simulator calls in batch); :meth:`Forecaster.predict` applies them to a provider. Noise is
drawn from a generator seeded by ``(seed, index)``, so a forecast at a given slot is the
same whatever was asked before, in the service and in batch alike.

On a live provider, ``uniform``/``gaussian`` perturb the provider's forecast (the best
known future) and ``persistence``/``seasonal`` read the provider's history; ``real`` needs
a trace.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import numpy as np

from carbonscaler.providers.base import CarbonProvider, Forecast, ForecastUnavailable
from carbonscaler.providers.replay import TraceReplay

__all__ = [
    "FORECASTERS",
    "ForecastError",
    "Forecaster",
    "GaussianForecaster",
    "PersistenceForecaster",
    "ProviderForecaster",
    "RealForecaster",
    "SeasonalForecaster",
    "UniformForecaster",
    "carbon_percentile",
    "forecast_at",
    "forecaster_from_spec",
    "make_forecaster",
]


class ForecastError(ValueError):
    """A forecast cannot be made as asked; the message says why and what to change."""


def _check(values: np.ndarray, index: int, horizon: int) -> None:
    if values.ndim != 1 or values.size == 0:
        raise ForecastError(f"values must be a non-empty 1-D array, got shape {values.shape}")
    if isinstance(horizon, bool) or horizon < 1:
        raise ForecastError(f"horizon must be at least 1 slot, not {horizon}")
    if not 0 <= index < values.size:
        raise ForecastError(f"index {index} is outside the {values.size} values")


def _take(values: np.ndarray, positions: np.ndarray, *, wrap: bool, what: str) -> np.ndarray:
    if wrap:
        return values.take(positions, mode="wrap")
    if positions.min() < 0:
        raise ForecastError(
            f"{what} needs {-int(positions.min())} more slots of history before this index;"
            " start later or use wrap=True"
        )
    if positions.max() >= values.size:
        raise ForecastError(
            f"{what} runs {int(positions.max()) - values.size + 1} slots past the end of the"
            " values; shorten the horizon or use wrap=True"
        )
    out: np.ndarray = values[positions].astype(np.float64, copy=True)
    return out


class Forecaster(ABC):
    """Predicts the next slots from past values (or the provider's future)."""

    name: ClassVar[str]

    @abstractmethod
    def predict_array(
        self, values: np.ndarray, index: int, horizon: int, *, wrap: bool = False
    ) -> np.ndarray:
        """Forecast for slots ``index .. index + horizon - 1`` of ``values`` (pure).

        Args:
            values: gCO2eq/kWh per slot; the forecaster may only look at what it may know.
            index: Current slot.
            horizon: Number of slots, at least 1.
            wrap: Read past either end of ``values`` cyclically (a looping replay).

        Raises:
            ForecastError: On bad arguments, or too little history/future without ``wrap``.
        """

    def predict(
        self,
        provider: CarbonProvider,
        horizon: int,
        *,
        zone: str | None = None,
        slot_s: int | None = None,
    ) -> Forecast:
        """Forecast ``horizon`` slots from the provider's current slot.

        Args:
            provider: Where the data comes from.
            horizon: Number of slots, at least 1.
            zone: Zone to forecast; default the provider's.
            slot_s: Slot length; default the provider's native slots.

        Raises:
            ForecastError: On bad arguments.
            ForecastUnavailable: If this forecaster cannot work on this provider.
            ProviderError: If the provider cannot answer.
        """
        if isinstance(horizon, bool) or horizon < 1:
            raise ForecastError(f"horizon must be at least 1 slot, not {horizon}")
        step_s = slot_s or provider.step_s
        if isinstance(provider, TraceReplay) and step_s == provider.step_s:
            provider.check_zone(zone)
            values = self._replay_array(
                provider.trace.values, provider.index, horizon, wrap=provider.wrap, slot_s=step_s
            )
            return Forecast(
                zone=provider.zone,
                start=provider.slot_start(),
                step_s=step_s,
                values_g_per_kwh=tuple(values.tolist()),
                source=f"{provider.source} {self.name}",
            )
        return self._predict_live(provider, horizon, zone, step_s)

    def _replay_array(
        self, values: np.ndarray, index: int, horizon: int, *, wrap: bool, slot_s: int
    ) -> np.ndarray:
        """The forecast over a replayed trace's values (slot length known)."""
        return self.predict_array(values, index, horizon, wrap=wrap)

    def _predict_live(
        self, provider: CarbonProvider, horizon: int, zone: str | None, slot_s: int
    ) -> Forecast:
        raise ForecastUnavailable(
            provider.name,
            f"the {self.name!r} forecaster needs the future of a trace; live providers have"
            " none: use 'provider', 'uniform', 'gaussian', 'persistence' or 'seasonal'",
        )


class RealForecaster(Forecaster):
    """The actual future values (perfect foresight)."""

    name = "real"

    def predict_array(
        self, values: np.ndarray, index: int, horizon: int, *, wrap: bool = False
    ) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        _check(values, index, horizon)
        return _take(values, np.arange(index, index + horizon), wrap=wrap, what="'real'")


class ProviderForecaster(Forecaster):
    """The provider's own forecast, re-slotted, with the observed current value first."""

    name = "provider"

    def predict_array(
        self, values: np.ndarray, index: int, horizon: int, *, wrap: bool = False
    ) -> np.ndarray:
        raise ForecastError(
            "'provider' forecasts come from a provider, not from an array; use 'real' or a"
            " noisy forecaster for arrays"
        )

    def predict(
        self,
        provider: CarbonProvider,
        horizon: int,
        *,
        zone: str | None = None,
        slot_s: int | None = None,
    ) -> Forecast:
        if isinstance(provider, TraceReplay):
            return RealForecaster().predict(provider, horizon, zone=zone, slot_s=slot_s)
        return super().predict(provider, horizon, zone=zone, slot_s=slot_s)

    def _predict_live(
        self, provider: CarbonProvider, horizon: int, zone: str | None, slot_s: int
    ) -> Forecast:
        reading = provider.current(zone)
        slot0 = _slot_floor(reading.timestamp, slot_s)
        values = [reading.value_g_per_kwh]
        stale, source = reading.stale, reading.source
        if horizon > 1:
            native = math.ceil(horizon * slot_s / provider.step_s) + 1
            upstream = provider.forecast(native, zone).to_slots(slot_s)
            values.extend(upstream.window(slot0 + timedelta(seconds=slot_s), horizon - 1))
            stale, source = stale or upstream.stale, upstream.source
        return Forecast(
            zone=reading.zone,
            start=slot0,
            step_s=slot_s,
            values_g_per_kwh=tuple(values),
            source=source,
            stale=stale,
        )


class _NoisyForecaster(Forecaster):
    """The real future (or a live provider's forecast) times ``1 + noise``."""

    def __init__(self, error_pct: float = 10.0, seed: int = 0) -> None:
        if not (math.isfinite(error_pct) and error_pct >= 0):
            raise ForecastError(f"error_pct must be a percentage >= 0, not {error_pct}")
        self.error_pct = float(error_pct)
        self.seed = int(seed)

    @abstractmethod
    def _noise(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Relative errors for ``size`` slots."""

    def perturb(self, truth: np.ndarray, index: int) -> np.ndarray:
        """``truth`` (slot 0 observed, left as is) with this forecaster's noise for ``index``."""
        rng = np.random.default_rng([self.seed, index])
        factors = 1.0 + self._noise(rng, truth.size)
        factors[0] = 1.0
        return np.clip(truth * factors, 0.0, None)

    def predict_array(
        self, values: np.ndarray, index: int, horizon: int, *, wrap: bool = False
    ) -> np.ndarray:
        truth = RealForecaster().predict_array(values, index, horizon, wrap=wrap)
        return self.perturb(truth, index)

    def _predict_live(
        self, provider: CarbonProvider, horizon: int, zone: str | None, slot_s: int
    ) -> Forecast:
        base = ProviderForecaster().predict(provider, horizon, zone=zone, slot_s=slot_s)
        slot_number = int(base.start.timestamp()) // slot_s
        noisy = self.perturb(base.as_array(), slot_number)
        return Forecast(
            zone=base.zone,
            start=base.start,
            step_s=base.step_s,
            values_g_per_kwh=tuple(noisy.tolist()),
            source=f"{base.source} {self.name}",
            stale=base.stale,
        )


class UniformForecaster(_NoisyForecaster):
    """Uniform relative error in ``±error_pct`` %.

    Args:
        error_pct: Half-width of the error band, percent.
        seed: Seed of the noise.
    """

    name = "uniform"

    def _noise(self, rng: np.random.Generator, size: int) -> np.ndarray:
        x = self.error_pct / 100
        return rng.uniform(-x, x, size)


class GaussianForecaster(_NoisyForecaster):
    """Gaussian relative error with a standard deviation of ``error_pct`` %.

    Args:
        error_pct: Standard deviation of the error, percent.
        seed: Seed of the noise.
    """

    name = "gaussian"

    def _noise(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.normal(0.0, self.error_pct / 100, size)


class _PeriodicForecaster(Forecaster):
    """The value one period before, repeated: slot ``index + h`` takes the value of slot
    ``index + h - k * period`` with the smallest ``k`` that lands on a known slot."""

    days: ClassVar[int]

    def __init__(self, slots_per_day: int | None = None) -> None:
        if slots_per_day is not None and slots_per_day < 1:
            raise ForecastError(f"slots_per_day must be >= 1, not {slots_per_day}")
        self.slots_per_day = slots_per_day

    def period(self, slot_s: int | None = None) -> int:
        """Slots per period for slots of ``slot_s`` seconds (24 per day by default)."""
        per_day = self.slots_per_day
        if per_day is None:
            per_day = 86400 // slot_s if slot_s else 24
        return max(1, per_day) * self.days

    def predict_array(
        self, values: np.ndarray, index: int, horizon: int, *, wrap: bool = False
    ) -> np.ndarray:
        return self._periodic(values, index, horizon, self.period(), wrap=wrap)

    def _periodic(
        self, values: np.ndarray, index: int, horizon: int, period: int, *, wrap: bool
    ) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        _check(values, index, horizon)
        h = np.arange(horizon)
        back = -(-h // period) * period  # ceil(h / period) periods back; 0 for the current slot
        return _take(values, index + h - back, wrap=wrap, what=repr(self.name))

    def _replay_array(
        self, values: np.ndarray, index: int, horizon: int, *, wrap: bool, slot_s: int
    ) -> np.ndarray:
        return self._periodic(values, index, horizon, self.period(slot_s), wrap=wrap)

    def _predict_live(
        self, provider: CarbonProvider, horizon: int, zone: str | None, slot_s: int
    ) -> Forecast:
        period = self.period(slot_s)
        reading = provider.current(zone)
        slot0 = _slot_floor(reading.timestamp, slot_s)
        step = timedelta(seconds=slot_s)
        past = provider.history(slot0 - period * step, slot0, zone).to_slots(slot_s)
        known = past.window(slot0 - period * step, period)
        if len(known) < period:
            raise ForecastUnavailable(
                provider.name,
                f"{self.name!r} needs {period} slots of history; the provider returned"
                f" {len(known)}",
            )
        values = np.array([*known, reading.value_g_per_kwh])
        forecast = self._periodic(values, period, horizon, period, wrap=False)
        return Forecast(
            zone=reading.zone,
            start=slot0,
            step_s=slot_s,
            values_g_per_kwh=tuple(forecast.tolist()),
            source=f"{reading.source} {self.name}",
            stale=reading.stale or past.stale,
        )


class PersistenceForecaster(_PeriodicForecaster):
    """The same slot yesterday.

    Args:
        slots_per_day: Slots in a day; default from the slot length (24 for arrays).
    """

    name = "persistence"
    days = 1


class SeasonalForecaster(_PeriodicForecaster):
    """The same slot last week (seasonal naive).

    Args:
        slots_per_day: Slots in a day; default from the slot length (24 for arrays).
    """

    name = "seasonal"
    days = 7


_CLASSES: dict[str, type[Forecaster]] = {
    cls.name: cls
    for cls in (
        RealForecaster,
        UniformForecaster,
        GaussianForecaster,
        PersistenceForecaster,
        SeasonalForecaster,
        ProviderForecaster,
    )
}
FORECASTERS: tuple[str, ...] = tuple(_CLASSES)
"""Names accepted by :func:`make_forecaster`."""


def make_forecaster(name: str, **options: Any) -> Forecaster:
    """A forecaster by name.

    Args:
        name: One of :data:`FORECASTERS` (case-insensitive).
        **options: ``error_pct`` and ``seed`` for ``uniform``/``gaussian``;
            ``slots_per_day`` for ``persistence``/``seasonal``.

    Raises:
        ForecastError: If the name or an option is unknown or invalid.
    """
    cls = _CLASSES.get(name.strip().lower())
    if cls is None:
        raise ForecastError(f"unknown forecaster {name!r}; use one of {', '.join(FORECASTERS)}")
    try:
        return cls(**options)
    except TypeError:
        raise ForecastError(
            f"forecaster {cls.name!r} does not take options {sorted(options)}"
        ) from None


def forecaster_from_spec(spec: str, *, seed: int = 0) -> Forecaster:
    """A forecaster from a command-line spec.

    ``REAL`` and ``PRED`` are the reference service's methods (the trace future, and the
    provider's own forecast); a forecaster name may carry its error, e.g. ``uniform:30``.

    Raises:
        ForecastError: If the spec is not understood.
    """
    name, _, arg = spec.strip().partition(":")
    key = {"real": "real", "pred": "provider"}.get(name.lower(), name.lower())
    options: dict[str, Any] = {}
    if arg:
        if key not in ("uniform", "gaussian"):
            raise ForecastError(f"only uniform:PCT and gaussian:PCT take a value, not {spec!r}")
        try:
            options["error_pct"] = float(arg)
        except ValueError:
            raise ForecastError(f"{arg!r} in {spec!r} is not a percentage") from None
    if key in ("uniform", "gaussian"):
        options["seed"] = seed
    return make_forecaster(key, **options)


def forecast_at(
    values: Sequence[float] | np.ndarray,
    index: int,
    horizon: int,
    method: str = "real",
    *,
    wrap: bool = False,
    **options: Any,
) -> np.ndarray:
    """Forecast ``horizon`` slots of ``values`` from slot ``index`` (pure; for batch use).

    Args:
        values: gCO2eq/kWh per slot, e.g. ``trace.values``.
        index: Current slot.
        horizon: Number of slots, at least 1.
        method: Forecaster name (not ``provider``).
        wrap: Read cyclically past either end.
        **options: Forecaster options (see :func:`make_forecaster`).

    Raises:
        ForecastError: On bad arguments or too little history/future.
    """
    array = np.asarray(values, dtype=np.float64)
    return make_forecaster(method, **options).predict_array(array, index, horizon, wrap=wrap)


def carbon_percentile(window: Sequence[float] | np.ndarray, value: float) -> float | None:
    """Share of ``window`` at or below ``value`` (0..1), as the reference reports it.

    Returns None for an empty window.
    """
    array = np.asarray(window, dtype=np.float64)
    if array.size == 0:
        return None
    return float(np.mean(array <= value))


def _slot_floor(t: datetime, slot_s: int) -> datetime:
    epoch = int(t.timestamp())
    return datetime.fromtimestamp(epoch - epoch % slot_s, UTC)
