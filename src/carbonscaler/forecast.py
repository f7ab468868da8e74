"""Forecasts of carbon intensity: one set of models, one implementation, for one run or many.

Models (:class:`ForecastModel`; names are case-insensitive, and the reference carbon service's
``REAL`` and ``PRED`` are accepted as aliases of ``perfect`` and ``provider``):

- ``perfect``: the future of the trace itself, perfect foresight (the reference's ``REAL``);
- ``uniform`` / ``gaussian``: ``perfect`` times ``1 + ε`` with ``ε ~ U(-x, x)`` or
  ``N(0, x)``, where ``x`` is the relative ``error`` as a *fraction* (0.1 = ±10 %); seeded,
  clipped at 0;
- ``persistence``: the same slot yesterday (a day is ``round(24 h / slot length)`` slots);
- ``seasonal``: the same slot last week (seasonal naive, seven such days);
- ``learned``: a rolling regression trained on the trace's own past, with conformal quantiles
  (:mod:`carbonscaler.learned`);
- ``provider``: the provider's own forecast (for a trace replay, the trace future).

A forecast issued at absolute trace slot ``a`` covers slots ``a .. a + horizon - 1``. Slot
``a`` itself is observed, not forecast: every model returns its actual value there. The
history models take slot ``a + h`` from ``a + h - ceil(h / P) · P`` (``P`` the period); near
the start of a trace, where that history is missing, they fall back to the earliest values
(positions are clipped at 0).

Noise is a pure function of ``(seed, a, h)`` for the forecast issued at absolute slot ``a``
for offset ``h``: a counter-based hash (splitmix64) of the three, turned into a uniform in
``[0, 1)`` (and, for ``gaussian``, into a normal by Box–Muller from two hashed uniforms of
different streams). So a forecast does not depend on what was asked before, on how many slots
are asked, nor on which other runs share a batch: :func:`issue_forecasts` (many runs at once,
as CarbonAdvisor issues them) and :meth:`Forecaster.predict_array` (one run, as the runtime
issues them; it calls :func:`issue_forecasts` with one row) give identical values for the
same trace, issue slot, horizon, model, error and seed. Every re-issue at a later slot sees
fresh noise, since ``a`` changed.

On a live provider, ``uniform``/``gaussian`` perturb the provider's forecast (the best known
future; ``a`` is the slot number since the Unix epoch) and ``persistence``/``seasonal`` read
the provider's history; ``perfect`` and ``learned`` need a trace (on a live source, run the
carbon service over a trace, or use ``persistence``).
"""

from __future__ import annotations

import math
from abc import ABC
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BeforeValidator

from carbonscaler.forecast_names import (
    FORECAST_ALIASES,
    FORECAST_MODELS,
    FORECASTERS,
    ForecastError,
    ForecastModel,
)
from carbonscaler.learned import QUANTILES, learned_model
from carbonscaler.providers.base import CarbonProvider, Forecast, ForecastUnavailable
from carbonscaler.providers.replay import TraceReplay

__all__ = [
    "FORECASTERS",
    "FORECAST_ALIASES",
    "FORECAST_MODELS",
    "ForecastError",
    "ForecastModel",
    "ForecastModelName",
    "ForecastSpec",
    "Forecaster",
    "GaussianForecaster",
    "PerfectForecaster",
    "PersistenceForecaster",
    "ProviderForecaster",
    "SeasonalForecaster",
    "UniformForecaster",
    "carbon_percentile",
    "forecast_at",
    "forecast_noise",
    "forecaster_from_spec",
    "issue_forecasts",
    "make_forecaster",
]

_Floats = NDArray[np.float64]


def _coerce_model(value: object) -> object:
    return ForecastModel.parse(value) if isinstance(value, str) else value


ForecastModelName = Annotated[ForecastModel, BeforeValidator(_coerce_model)]
"""A :class:`ForecastModel` field for pydantic that also accepts aliases, in any case."""


@dataclass(frozen=True)
class ForecastSpec:
    """How forecasts are made from a trace.

    Args:
        model: one of :data:`FORECAST_MODELS` (a name or alias is parsed).
        error: relative error ``x`` of the noise models, as a fraction (0.1 = ±10 %).
        seed: seed of the noise models.
        quantile: for ``learned``, the quantile to forecast (0.5, the median; 0.9 plans on
            a cautious, dirtier future): one of :data:`carbonscaler.learned.QUANTILES`.

    Raises:
        ForecastError: On an unknown model, ``provider`` (which needs a provider, not a
            trace), or an error that is not a finite fraction >= 0.
    """

    model: ForecastModel = ForecastModel.PERFECT
    error: float = 0.0
    seed: int = 0
    quantile: float = 0.5

    def __post_init__(self) -> None:
        model = ForecastModel.parse(self.model)
        if self.quantile not in QUANTILES:
            raise ForecastError(
                f"a forecast quantile is one of {', '.join(map(str, QUANTILES))}, not "
                f"{self.quantile}"
            )
        if model is ForecastModel.PROVIDER:
            raise ForecastError(
                "'provider' forecasts come from a live provider, not from a trace; use"
                f" one of {', '.join(FORECAST_MODELS)}"
            )
        if not (math.isfinite(self.error) and self.error >= 0):
            raise ForecastError(
                f"forecast error must be a fraction >= 0 (0.1 = ±10 %), not {self.error}"
            )
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "error", float(self.error))
        object.__setattr__(self, "seed", int(self.seed))

    @property
    def is_perfect(self) -> bool:
        """Forecasts equal the actual values."""
        return self.model is ForecastModel.PERFECT or (self.model.is_noisy and self.error == 0.0)

    @classmethod
    def from_options(
        cls, model: str | None, error: float = 0.0, seed: int = 0, quantile: float = 0.5
    ) -> ForecastSpec:
        """The command line's rule: the model named, else ``uniform`` when an error is given,
        else ``perfect``.

        Raises:
            ForecastError: as the constructor.
        """
        if model:
            chosen = ForecastModel.parse(model)
        else:
            chosen = ForecastModel.UNIFORM if error > 0 else ForecastModel.PERFECT
        return cls(chosen, error, seed, quantile=quantile)


# --- noise: a counter-based hash of (seed, issue slot, offset) --------------------------------

_MASK64 = (1 << 64) - 1
_STREAM_UNIFORM = 0x5EED_0001
_STREAM_GAUSS_RADIUS = 0x5EED_0002
_STREAM_GAUSS_ANGLE = 0x5EED_0003


def _splitmix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """The splitmix64 step (wrapping uint64 arithmetic), elementwise."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: NDArray[np.uint64] = z ^ (z >> np.uint64(31))
    return out


def _hashed_uniform(
    seed: int, stream: int, issued_at: NDArray[np.uint64], ahead: NDArray[np.uint64]
) -> _Floats:
    """Uniforms in ``[0, 1)``, one per (issue, offset): ``(B, 1)`` and ``(1, H)`` broadcast."""
    key = _splitmix64(np.array([(seed & _MASK64) ^ stream], dtype=np.uint64))
    row = _splitmix64(key ^ issued_at)
    z = _splitmix64(row ^ ahead)
    out: _Floats = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return out


def forecast_noise(
    model: ForecastModel | str,
    error: float,
    seed: int,
    issued_at: Sequence[int] | NDArray[np.integer[Any]],
    horizon: int,
) -> _Floats:
    """Relative errors ``ε`` of forecasts issued at absolute slots ``issued_at``.

    Entry ``[b, h]`` is a pure function of ``(seed, issued_at[b], h)``; column 0 (the observed
    current slot) is 0. Models other than ``uniform``/``gaussian`` have no noise.

    Args:
        model: the forecast model.
        error: half-width (``uniform``) or standard deviation (``gaussian``), a fraction.
        seed: seed of the noise.
        issued_at: ``(B,)`` absolute slot of each issue.
        horizon: slots per forecast.

    Returns:
        ``(B, horizon)`` relative errors.
    """
    model = ForecastModel.parse(model)
    at = np.asarray(issued_at, dtype=np.int64).reshape(-1)
    noise: _Floats = np.zeros((at.size, horizon))
    if not model.is_noisy or horizon < 2 or at.size == 0:
        return noise
    rows = at.astype(np.uint64)[:, None]
    ahead = np.arange(horizon, dtype=np.uint64)[None, :]
    if model is ForecastModel.UNIFORM:
        u = _hashed_uniform(seed, _STREAM_UNIFORM, rows, ahead)
        noise = error * (2.0 * u - 1.0)
    else:
        u1 = 1.0 - _hashed_uniform(seed, _STREAM_GAUSS_RADIUS, rows, ahead)  # in (0, 1]
        u2 = _hashed_uniform(seed, _STREAM_GAUSS_ANGLE, rows, ahead)
        noise = error * (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2))
    noise[:, 0] = 0.0  # the current slot is observed
    return noise


def _slots_per_day(slot_hours: float) -> int:
    return max(round(24.0 / slot_hours), 1)


def issue_forecasts(
    spec: ForecastSpec,
    trace: Sequence[float] | _Floats,
    issued_at: Sequence[int] | NDArray[np.integer[Any]],
    horizon: int,
    slot_hours: float,
    *,
    wrap: bool = False,
) -> _Floats:
    """Forecasts issued at absolute slots ``issued_at`` for the next ``horizon`` slots.

    The one implementation of the trace models: :meth:`Forecaster.predict_array` calls it with
    one row. A row depends only on the trace, its issue slot, the horizon and ``spec``; but for
    ``learned`` (whose model depends on the horizon) it is the first ``horizon`` entries of
    the same issue slot's row over any longer horizon (the advisor issues each slot's
    forecast once and cuts it).

    Args:
        spec: the forecast model, its error and seed.
        trace: the actual intensity of the whole trace (gCO2eq/kWh).
        issued_at: ``(B,)`` absolute slot of each issue, within the trace.
        horizon: slots to forecast (the issue slot included).
        slot_hours: slot length; a day of the history models is ``round(24 / slot_hours)``
            slots.
        wrap: read cyclically past either end of the trace (a looping replay) instead of
            returning NaN past its end and clipping history at its start.

    Returns:
        ``(B, horizon)`` forecasts, non-negative; past the trace's end (without ``wrap``)
        ``perfect``/``uniform``/``gaussian`` give NaN.

    Raises:
        ForecastError: On an issue slot outside the trace, a negative horizon, or a
            non-positive slot length.
    """
    values = np.asarray(trace, dtype=np.float64)
    at = np.asarray(issued_at, dtype=np.int64).reshape(-1)
    if isinstance(horizon, bool) or horizon < 0:
        raise ForecastError(f"horizon must be a number of slots >= 0, not {horizon}")
    if not (math.isfinite(slot_hours) and slot_hours > 0):
        raise ForecastError(f"slot_hours must be > 0, not {slot_hours}")
    size = values.size
    if at.size and (size == 0 or at.min() < 0 or at.max() >= size):
        raise ForecastError(f"issue slots must lie within the trace's {size} slots")
    if spec.model is ForecastModel.LEARNED:
        # It only looks back, and predicts past the trace's end: a looping replay needs nothing
        # more (its history before the first slot is taken as the first value).
        if at.size == 0 or horizon == 0:
            return np.zeros((at.size, horizon))
        model = learned_model(values, slot_hours, horizon=horizon)
        learned: _Floats = model.predict(values, at, horizon, quantile=spec.quantile)
        return learned
    ahead = np.arange(horizon, dtype=np.int64)[None, :]
    positions = at[:, None] + ahead
    if spec.model.is_periodic:
        period = _slots_per_day(slot_hours) * spec.model.period_days
        positions = positions - (-(-ahead // period) * period)  # 0 periods for the current slot
        if wrap:
            return values.take(positions, mode="wrap")
        periodic: _Floats = values[np.clip(positions, 0, size - 1)]
        return periodic
    if wrap:
        actual: _Floats = values.take(positions, mode="wrap")
    else:
        padded = np.concatenate([values, [np.nan]])
        actual = padded[np.minimum(positions, size)]
    if not spec.model.is_noisy:
        return actual
    noise = forecast_noise(spec.model, spec.error, spec.seed, at, horizon)
    noisy: _Floats = np.maximum(actual * (1.0 + noise), 0.0)
    return noisy


# --- one run: the forecasters -----------------------------------------------------------------


def _check(values: np.ndarray, index: int, horizon: int) -> None:
    if values.ndim != 1 or values.size == 0:
        raise ForecastError(f"values must be a non-empty 1-D array, got shape {values.shape}")
    if isinstance(horizon, bool) or horizon < 1:
        raise ForecastError(f"horizon must be at least 1 slot, not {horizon}")
    if not 0 <= index < values.size:
        raise ForecastError(f"index {index} is outside the {values.size} values")


class Forecaster(ABC):
    """Predicts the next slots from past values (or the provider's future)."""

    name: ClassVar[ForecastModel]

    def predict_array(
        self, values: np.ndarray, index: int, horizon: int, *, wrap: bool = False
    ) -> np.ndarray:
        """Forecast for slots ``index .. index + horizon - 1`` of ``values`` (pure).

        The same as row 0 of :func:`issue_forecasts` issued at ``index``.

        Args:
            values: gCO2eq/kWh per slot; the forecaster may only look at what it may know.
            index: Current slot (its absolute position in ``values``).
            horizon: Number of slots, at least 1.
            wrap: Read past either end of ``values`` cyclically (a looping replay).

        Raises:
            ForecastError: On bad arguments, or a horizon past the end of ``values`` without
                ``wrap`` (history models instead fall back to the earliest values).
        """
        return self._array(values, index, horizon, wrap=wrap, slot_s=None)

    def _array(
        self, values: np.ndarray, index: int, horizon: int, *, wrap: bool, slot_s: int | None
    ) -> np.ndarray:
        raise ForecastError(
            f"{self.name!r} forecasts come from a provider, not from an array; use 'perfect'"
            " or a noisy forecaster for arrays"
        )

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
            values = self._array(
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

    def _predict_live(
        self, provider: CarbonProvider, horizon: int, zone: str | None, slot_s: int
    ) -> Forecast:
        raise ForecastUnavailable(
            provider.name,
            f"the {self.name!r} forecaster needs the future of a trace; live providers have"
            " none: use 'provider', 'uniform', 'gaussian', 'persistence' or 'seasonal'",
        )


class _TraceForecaster(Forecaster):
    """A forecaster over a trace's values, by :func:`issue_forecasts`."""

    spec: ForecastSpec

    def _slot_hours(self, slot_s: int | None) -> float:
        return 1.0 if slot_s is None else slot_s / 3600

    def _array(
        self, values: np.ndarray, index: int, horizon: int, *, wrap: bool, slot_s: int | None
    ) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        _check(values, index, horizon)
        if not wrap and index + horizon > values.size and not self.spec.model.is_periodic:
            raise ForecastError(
                f"{self.name!r} runs {index + horizon - values.size} slots past the end of the"
                " values; shorten the horizon or use wrap=True"
            )
        row: np.ndarray = issue_forecasts(
            self.spec, values, np.array([index]), horizon, self._slot_hours(slot_s), wrap=wrap
        )[0]
        return row


class PerfectForecaster(_TraceForecaster):
    """The actual future values (perfect foresight; the reference's ``REAL``)."""

    name = ForecastModel.PERFECT

    def __init__(self) -> None:
        self.spec = ForecastSpec(ForecastModel.PERFECT)


class ProviderForecaster(Forecaster):
    """The provider's own forecast, re-slotted, with the observed current value first."""

    name = ForecastModel.PROVIDER

    def predict(
        self,
        provider: CarbonProvider,
        horizon: int,
        *,
        zone: str | None = None,
        slot_s: int | None = None,
    ) -> Forecast:
        if isinstance(provider, TraceReplay):
            return PerfectForecaster().predict(provider, horizon, zone=zone, slot_s=slot_s)
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


class _NoisyForecaster(_TraceForecaster):
    """The real future (or a live provider's forecast) times ``1 + noise``.

    Args:
        error: Relative error, a fraction (0.1 = ±10 %).
        seed: Seed of the noise.
    """

    def __init__(self, error: float = 0.1, seed: int = 0) -> None:
        if isinstance(error, bool) or not (math.isfinite(error) and error >= 0):
            raise ForecastError(f"error must be a fraction >= 0 (0.1 = ±10 %), not {error}")
        self.spec = ForecastSpec(self.name, error, seed)

    @property
    def error(self) -> float:
        """Relative error, a fraction."""
        return self.spec.error

    @property
    def seed(self) -> int:
        """Seed of the noise."""
        return self.spec.seed

    def perturb(self, truth: np.ndarray, index: int) -> np.ndarray:
        """``truth`` (slot 0 observed, left as is) with the noise of a forecast issued at
        absolute slot ``index``."""
        truth = np.asarray(truth, dtype=np.float64)
        noise = forecast_noise(self.name, self.error, self.seed, [index], truth.size)[0]
        noisy: _Floats = np.maximum(truth * (1.0 + noise), 0.0)
        return noisy

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
    """Uniform relative error in ``±error``.

    Args:
        error: Half-width of the error band, a fraction (0.1 = ±10 %).
        seed: Seed of the noise.
    """

    name = ForecastModel.UNIFORM


class GaussianForecaster(_NoisyForecaster):
    """Gaussian relative error with a standard deviation of ``error``.

    Args:
        error: Standard deviation of the error, a fraction (0.1 = 10 %).
        seed: Seed of the noise.
    """

    name = ForecastModel.GAUSSIAN


class _PeriodicForecaster(_TraceForecaster):
    """The value one period before, repeated: slot ``index + h`` takes the value of slot
    ``index + h - k * period`` with ``k = ceil(h / period)``; before the first value, the
    first value."""

    def __init__(self, slots_per_day: int | None = None) -> None:
        if slots_per_day is not None and (isinstance(slots_per_day, bool) or slots_per_day < 1):
            raise ForecastError(f"slots_per_day must be >= 1, not {slots_per_day}")
        self.slots_per_day = slots_per_day
        self.spec = ForecastSpec(self.name)

    def _per_day(self, slot_s: int | None) -> int:
        if self.slots_per_day is not None:
            return self.slots_per_day
        return max(round(86400 / slot_s), 1) if slot_s else 24

    def _slot_hours(self, slot_s: int | None) -> float:
        return 24.0 / self._per_day(slot_s)

    def period(self, slot_s: int | None = None) -> int:
        """Slots per period for slots of ``slot_s`` seconds (24 per day by default)."""
        return self._per_day(slot_s) * self.name.period_days

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
        forecast = self._array(values, period, horizon, wrap=False, slot_s=slot_s)
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

    name = ForecastModel.PERSISTENCE


class SeasonalForecaster(_PeriodicForecaster):
    """The same slot last week (seasonal naive).

    Args:
        slots_per_day: Slots in a day; default from the slot length (24 for arrays).
    """

    name = ForecastModel.SEASONAL


class LearnedForecaster(_TraceForecaster):
    """A model trained on the trace's own past (no look-ahead; see :mod:`carbonscaler.learned`).

    Args:
        quantile: the quantile to forecast (0.5, the median; e.g. 0.9 for a cautious plan).
        slots_per_day: Slots in a day; default from the slot length (24 for arrays).
    """

    name = ForecastModel.LEARNED

    def __init__(self, quantile: float = 0.5, slots_per_day: int | None = None) -> None:
        self.spec = ForecastSpec(ForecastModel.LEARNED, quantile=quantile)
        self.slots_per_day = slots_per_day

    def _slot_hours(self, slot_s: int | None) -> float:
        if self.slots_per_day is not None:
            return 24.0 / self.slots_per_day
        return super()._slot_hours(slot_s)

    def _array(
        self, values: np.ndarray, index: int, horizon: int, *, wrap: bool, slot_s: int | None
    ) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        _check(values, index, horizon)
        row: np.ndarray = issue_forecasts(
            self.spec, values, np.array([index]), horizon, self._slot_hours(slot_s), wrap=wrap
        )[0]
        return row


_CLASSES: dict[ForecastModel, type[Forecaster]] = {
    cls.name: cls
    for cls in (
        PerfectForecaster,
        UniformForecaster,
        GaussianForecaster,
        PersistenceForecaster,
        SeasonalForecaster,
        LearnedForecaster,
        ProviderForecaster,
    )
}


def make_forecaster(name: ForecastModel | str, **options: Any) -> Forecaster:
    """A forecaster by model name.

    Args:
        name: One of :data:`FORECASTERS` or an alias (case-insensitive).
        **options: ``error`` (a fraction, 0.1 = ±10 %) and ``seed`` for
            ``uniform``/``gaussian``; ``slots_per_day`` for ``persistence``/``seasonal``/
            ``learned``; ``quantile`` for ``learned``.

    Raises:
        ForecastError: If the name or an option is unknown or invalid.
    """
    cls = _CLASSES[ForecastModel.parse(name)]
    try:
        return cls(**options)
    except TypeError:
        raise ForecastError(
            f"forecaster {cls.name!r} does not take options {sorted(options)}"
        ) from None


def forecaster_from_spec(spec: str, *, seed: int = 0) -> Forecaster:
    """A forecaster from a command-line spec: a model name or alias (``REAL``, ``PRED``),
    for the noisy models optionally with their error in *percent*: ``uniform:30`` is ±30 %
    (``error=0.3``), kept in percent for compatibility with existing command lines.

    Raises:
        ForecastError: If the spec is not understood.
    """
    name, _, arg = spec.strip().partition(":")
    model = ForecastModel.parse(name)
    options: dict[str, Any] = {}
    if arg:
        if not model.is_noisy:
            raise ForecastError(f"only uniform:PCT and gaussian:PCT take a value, not {spec!r}")
        try:
            percent = float(arg)
        except ValueError:
            raise ForecastError(f"{arg!r} in {spec!r} is not a percentage") from None
        options["error"] = percent / 100.0
    if model.is_noisy:
        options["seed"] = seed
    return make_forecaster(model, **options)


def forecast_at(
    values: Sequence[float] | np.ndarray,
    index: int,
    horizon: int,
    method: ForecastModel | str = ForecastModel.PERFECT,
    *,
    wrap: bool = False,
    **options: Any,
) -> np.ndarray:
    """Forecast ``horizon`` slots of ``values`` from slot ``index`` (pure).

    Args:
        values: gCO2eq/kWh per slot, e.g. ``trace.values``.
        index: Current slot.
        horizon: Number of slots, at least 1.
        method: Forecast model (not ``provider``).
        wrap: Read cyclically past either end.
        **options: Forecaster options (see :func:`make_forecaster`).

    Raises:
        ForecastError: On bad arguments or a horizon past the end without ``wrap``.
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
