"""Carbon-intensity providers: one interface, trace replay, live APIs, fallback and cache.

Example:
    >>> from carbonscaler.providers import CachedProvider, FallbackChain, UKCarbonIntensity
    >>> live = FallbackChain([CachedProvider(UKCarbonIntensity("GB"))])  # doctest: +SKIP
    >>> live.current().value_g_per_kwh  # doctest: +SKIP

API keys come from arguments or environment variables: ``ELECTRICITYMAPS_API_KEY``;
``WATTTIME_USER`` and ``WATTTIME_PASSWORD``. The UK API needs none.

The names are imported on first use (the live providers need httpx).
"""

from typing import TYPE_CHECKING

from carbonscaler._lazy import lazy_exports

if TYPE_CHECKING:
    from carbonscaler.providers.base import (
        CarbonProvider,
        CarbonUnavailable,
        Forecast,
        ForecastUnavailable,
        IntensityReading,
        IntensitySeries,
        ProviderAuthError,
        ProviderConfigError,
        ProviderError,
        ProviderRateLimited,
        ProviderRequestError,
        ProviderResponseError,
        ProviderUnavailable,
        UnknownZoneError,
        series_from_points,
    )
    from carbonscaler.providers.cache import CachedProvider, TTLCache
    from carbonscaler.providers.chain import FallbackChain, live_provider
    from carbonscaler.providers.electricitymaps import ElectricityMaps
    from carbonscaler.providers.replay import (
        Clock,
        ManualClock,
        ReplayClock,
        SimulatedClock,
        SystemClock,
        TraceReplay,
    )
    from carbonscaler.providers.ukgrid import UKCarbonIntensity
    from carbonscaler.providers.watttime import WattTime
else:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "carbonscaler.providers.base": (
                "CarbonProvider",
                "CarbonUnavailable",
                "Forecast",
                "ForecastUnavailable",
                "IntensityReading",
                "IntensitySeries",
                "ProviderAuthError",
                "ProviderConfigError",
                "ProviderError",
                "ProviderRateLimited",
                "ProviderRequestError",
                "ProviderResponseError",
                "ProviderUnavailable",
                "UnknownZoneError",
                "series_from_points",
            ),
            "carbonscaler.providers.cache": ("CachedProvider", "TTLCache"),
            "carbonscaler.providers.chain": ("FallbackChain", "live_provider"),
            "carbonscaler.providers.electricitymaps": ("ElectricityMaps",),
            "carbonscaler.providers.replay": (
                "Clock",
                "ManualClock",
                "ReplayClock",
                "SimulatedClock",
                "SystemClock",
                "TraceReplay",
            ),
            "carbonscaler.providers.ukgrid": ("UKCarbonIntensity",),
            "carbonscaler.providers.watttime": ("WattTime",),
        },
    )

__all__ = [
    "CachedProvider",
    "CarbonProvider",
    "CarbonUnavailable",
    "Clock",
    "ElectricityMaps",
    "FallbackChain",
    "Forecast",
    "ForecastUnavailable",
    "IntensityReading",
    "IntensitySeries",
    "ManualClock",
    "ProviderAuthError",
    "ProviderConfigError",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderRequestError",
    "ProviderResponseError",
    "ProviderUnavailable",
    "ReplayClock",
    "SimulatedClock",
    "SystemClock",
    "TTLCache",
    "TraceReplay",
    "UKCarbonIntensity",
    "UnknownZoneError",
    "WattTime",
    "live_provider",
    "series_from_points",
]
