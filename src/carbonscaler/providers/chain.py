"""Fallback chain: primary → secondary → ... → last known value.

Each call goes to the providers in order and returns the first answer. When all of them
fail, the chain answers with the last value it obtained for the same question, flagged
``stale`` and with ``(last known)`` appended to its source, so a controller keeps planning
through an outage and knows it is doing so on old data. With a disk
:class:`~carbonscaler.providers.cache.TTLCache` the last known values survive a restart.
Only when nothing was ever obtained does the chain raise, listing every provider's error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from carbonscaler.providers.base import (
    CarbonProvider,
    Forecast,
    IntensityReading,
    IntensitySeries,
    ProviderConfigError,
    ProviderError,
    ProviderUnavailable,
)
from carbonscaler.providers.cache import CachedProvider, TTLCache
from carbonscaler.providers.electricitymaps import ENV_API_KEY, ElectricityMaps
from carbonscaler.providers.ukgrid import UKCarbonIntensity
from carbonscaler.providers.watttime import WattTime

__all__ = ["FallbackChain", "live_provider"]

T = TypeVar("T", IntensityReading, IntensitySeries, Forecast)


class FallbackChain(CarbonProvider):
    """Providers tried in order, then the last known answer.

    Args:
        providers: Primary first. A ``zone`` of None in a call means each provider's own
            default zone, so providers with different zone names can back each other up.
        cache: Where last known answers are kept beyond memory (e.g. on disk).

    Raises:
        ValueError: If ``providers`` is empty.
    """

    def __init__(self, providers: Sequence[CarbonProvider], *, cache: TTLCache | None = None):
        if not providers:
            raise ValueError("a fallback chain needs at least one provider")
        super().__init__(providers[0].zone)
        self.providers = list(providers)
        self.name = "chain(" + ",".join(p.name for p in providers) + ")"
        self.step_s = providers[0].step_s
        self.cache = cache if cache is not None else TTLCache(max_entries=256)
        self.last_errors: list[str] = []
        """Errors of the providers skipped by the latest call (empty when the primary answered)."""

    def current(self, zone: str | None = None) -> IntensityReading:
        return self._first(f"current|{zone}", lambda p: p.current(zone), IntensityReading.from_json)

    def history(self, start: datetime, end: datetime, zone: str | None = None) -> IntensitySeries:
        # No last known value here: each window is a different question, and an answer for
        # another window would be wrong rather than old.
        errors: list[str] = []
        for provider in self.providers:
            try:
                series = provider.history(start, end, zone)
            except ProviderError as exc:
                errors.append(str(exc))
                continue
            self.last_errors = errors
            return series
        self.last_errors = errors
        raise ProviderUnavailable(self.name, "every provider failed: " + "; ".join(errors))

    def forecast(self, horizon_slots: int, zone: str | None = None) -> Forecast:
        key = f"forecast|{zone}|{horizon_slots}"
        return self._first(key, lambda p: p.forecast(horizon_slots, zone), Forecast.from_json)

    def zones(self) -> list[str]:
        found: set[str] = set()
        errors = []
        for provider in self.providers:
            try:
                found.update(provider.zones())
            except ProviderError as exc:
                errors.append(str(exc))
        if not found and errors:
            raise ProviderUnavailable(self.name, "no provider listed zones: " + "; ".join(errors))
        return sorted(found)

    def close(self) -> None:
        for provider in self.providers:
            provider.close()

    def _first(
        self,
        key: str,
        call: Callable[[CarbonProvider], T],
        from_json: Callable[[dict[str, Any]], T],
    ) -> T:
        errors: list[str] = []
        for provider in self.providers:
            try:
                value = call(provider)
            except ProviderError as exc:
                errors.append(str(exc))
                continue
            self.last_errors = errors
            self._remember(key, value.to_json())
            return value
        self.last_errors = errors
        known = self._recall(key)
        if known is not None:
            return from_json(known).as_stale("last known")
        raise ProviderUnavailable(
            self.name, "every provider failed and no earlier value is known: " + "; ".join(errors)
        )

    def _remember(self, key: str, value: dict[str, Any]) -> None:
        self.cache.put(f"{self.name}|known|{key}", value, math.inf)

    def _recall(self, key: str) -> dict[str, Any] | None:
        entry = self.cache.get_any(f"{self.name}|known|{key}")
        return entry.value if entry is not None and isinstance(entry.value, dict) else None


_BUILDERS: dict[str, Callable[[str], CarbonProvider]] = {
    "electricitymaps": lambda zone: ElectricityMaps(zone),
    "em": lambda zone: ElectricityMaps(zone),
    "watttime": lambda zone: WattTime(zone),
    "wt": lambda zone: WattTime(zone),
    "ukgrid": lambda zone: UKCarbonIntensity(zone),
    "uk": lambda zone: UKCarbonIntensity(zone),
}


def live_provider(spec: str, *, cache: TTLCache | None = None) -> FallbackChain:
    """A cached fallback chain of live providers from a spec such as ``"em:GB,uk:GB"``.

    Each comma-separated item is ``PROVIDER:ZONE`` (``electricitymaps``/``em``,
    ``watttime``/``wt``, ``ukgrid``/``uk``) or a bare ``ZONE``, which means Electricity
    Maps when ``$ELECTRICITYMAPS_API_KEY`` is set, backed by the UK API for GB zones.
    Every provider is wrapped in a :class:`~carbonscaler.providers.cache.CachedProvider`.

    Args:
        spec: The providers, primary first.
        cache: Shared by the providers' caches and the chain's last known values; pass a
            disk-backed one to survive restarts.

    Raises:
        ProviderConfigError: If an item names no known provider, lacks credentials, or a
            bare zone has no provider that can serve it.
        UnknownZoneError: If the UK API is asked for a zone it does not have.
    """
    providers: list[CarbonProvider] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, sep, zone = item.partition(":")
        if sep:
            builder = _BUILDERS.get(name.strip().lower())
            if builder is None or not zone.strip():
                raise ProviderConfigError(
                    "carbon-service",
                    f"cannot read {item!r}; use PROVIDER:ZONE with PROVIDER one of"
                    f" {', '.join(sorted(_BUILDERS))}, e.g. ukgrid:GB",
                )
            providers.append(builder(zone.strip()))
            continue
        found: list[CarbonProvider] = []
        if os.environ.get(ENV_API_KEY):
            found.append(ElectricityMaps(item))
        if item.upper() == "GB" or item.upper().startswith("GB-"):
            found.append(UKCarbonIntensity(item))
        if not found:
            raise ProviderConfigError(
                "carbon-service",
                f"no live provider for zone {item!r}: set ${ENV_API_KEY} for Electricity"
                " Maps, or name one, e.g. watttime:CAISO_NORTH (needs $WATTTIME_USER and"
                " $WATTTIME_PASSWORD) or ukgrid:GB",
            )
        providers.extend(found)
    if not providers:
        raise ProviderConfigError("carbon-service", f"no provider in {spec!r}")
    shared = cache if cache is not None else TTLCache(max_entries=256)
    return FallbackChain([CachedProvider(p, shared) for p in providers], cache=shared)
