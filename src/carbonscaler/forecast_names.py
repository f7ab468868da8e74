"""The forecast models' names: :class:`ForecastModel`, its aliases and lists, and
:class:`ForecastError` for a name that is none of them.

Light on purpose (no numpy): the command line names the models in its help, and must not
import the models to do so. :mod:`carbonscaler.forecast` (the models themselves, and the
module docstring that describes each) re-exports all of it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "FORECASTERS",
    "FORECAST_ALIASES",
    "FORECAST_MODELS",
    "ForecastError",
    "ForecastModel",
]


class ForecastError(ValueError):
    """A forecast cannot be made as asked; the message says why and what to change."""


class ForecastModel(StrEnum):
    """How a forecast is made: from the actual values, with noise, or from the past."""

    PERFECT = "perfect"
    UNIFORM = "uniform"
    GAUSSIAN = "gaussian"
    PERSISTENCE = "persistence"
    SEASONAL = "seasonal"
    LEARNED = "learned"
    PROVIDER = "provider"

    @classmethod
    def parse(cls, name: str) -> ForecastModel:
        """The model called ``name`` (case-insensitive; ``real`` and ``pred`` are aliases).

        Raises:
            ForecastError: If no model has that name.
        """
        if isinstance(name, cls):
            return name
        if not isinstance(name, str):
            raise ForecastError(f"a forecast model is named by a string, not {name!r}")
        key = name.strip().lower()
        model = FORECAST_ALIASES.get(key)
        if model is not None:
            return model
        try:
            return cls(key)
        except ValueError:
            aliases = ", ".join(f"{a} = {m}" for a, m in FORECAST_ALIASES.items())
            raise ForecastError(
                f"unknown forecaster {name!r}; use one of {', '.join(cls)} (aliases: {aliases})"
            ) from None

    @classmethod
    def from_name(cls, name: str) -> ForecastModel:
        """Same as :meth:`parse`."""
        return cls.parse(name)

    @property
    def is_noisy(self) -> bool:
        """``uniform`` or ``gaussian``: the actual values with seeded noise."""
        return self in (ForecastModel.UNIFORM, ForecastModel.GAUSSIAN)

    @property
    def is_periodic(self) -> bool:
        """``persistence`` or ``seasonal``: past values repeated."""
        return self in (ForecastModel.PERSISTENCE, ForecastModel.SEASONAL)

    @property
    def period_days(self) -> int:
        """Days per period of a history model (0 for the others)."""
        return {ForecastModel.PERSISTENCE: 1, ForecastModel.SEASONAL: 7}.get(self, 0)


FORECAST_ALIASES: dict[str, ForecastModel] = {
    "real": ForecastModel.PERFECT,
    "pred": ForecastModel.PROVIDER,
}
"""Other names accepted for models: the reference carbon service's ``REAL`` and ``PRED``."""

FORECASTERS: tuple[ForecastModel, ...] = tuple(ForecastModel)
"""Every model, as accepted by :func:`make_forecaster`."""

FORECAST_MODELS: tuple[ForecastModel, ...] = tuple(
    m for m in ForecastModel if m is not ForecastModel.PROVIDER
)
"""The models that forecast from a trace's values alone (:func:`issue_forecasts`)."""
