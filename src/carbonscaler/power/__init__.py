"""Power meters: RAPL, NVML, Kepler, profile estimates, and the node sampler.

Example:
    >>> from carbonscaler.power import CompositeMeter, ConstantMeter, MeterUnavailable, RaplMeter
    >>> meters = []
    >>> try:
    ...     meters.append(RaplMeter())
    ... except MeterUnavailable:
    ...     pass
    >>> node = CompositeMeter([*meters, ConstantMeter(60.0, source="estimated:nominal")])
    >>> node.read().source  # doctest: +SKIP
    'estimated:nominal'

Every reading says how it was obtained (``measured:...``, ``estimated:...``, ``constant``);
see docs/power-accounting.md.

The names are imported on first use (Kepler's client needs httpx), so a single meter
module stays light.
"""

from typing import TYPE_CHECKING

from carbonscaler._lazy import lazy_exports

if TYPE_CHECKING:
    from carbonscaler.power.client import (
        NodeAnswer,
        NodeEnergy,
        PowerServerClient,
        PowerServerError,
    )
    from carbonscaler.power.kepler import KeplerMeter
    from carbonscaler.power.meter import (
        MEASURED_PREFIX,
        CompositeMeter,
        ConstantMeter,
        MeterError,
        MeterUnavailable,
        PowerMeter,
        PowerReading,
        ProfileMeter,
        is_measured,
    )
    from carbonscaler.power.nvml import NvmlMeter
    from carbonscaler.power.rapl import DEFAULT_POWERCAP_ROOT, RaplDomain, RaplMeter, find_domains
    from carbonscaler.power.sampler import EnergyWindow, NodeSampler, PowerEntry, PowerHistory
else:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "carbonscaler.power.client": (
                "NodeAnswer",
                "NodeEnergy",
                "PowerServerClient",
                "PowerServerError",
            ),
            "carbonscaler.power.kepler": ("KeplerMeter",),
            "carbonscaler.power.meter": (
                "MEASURED_PREFIX",
                "CompositeMeter",
                "ConstantMeter",
                "MeterError",
                "MeterUnavailable",
                "PowerMeter",
                "PowerReading",
                "ProfileMeter",
                "is_measured",
            ),
            "carbonscaler.power.nvml": ("NvmlMeter",),
            "carbonscaler.power.rapl": (
                "DEFAULT_POWERCAP_ROOT",
                "RaplDomain",
                "RaplMeter",
                "find_domains",
            ),
            "carbonscaler.power.sampler": (
                "EnergyWindow",
                "NodeSampler",
                "PowerEntry",
                "PowerHistory",
            ),
        },
    )

__all__ = [
    "DEFAULT_POWERCAP_ROOT",
    "MEASURED_PREFIX",
    "CompositeMeter",
    "ConstantMeter",
    "EnergyWindow",
    "KeplerMeter",
    "MeterError",
    "MeterUnavailable",
    "NodeAnswer",
    "NodeEnergy",
    "NodeSampler",
    "NvmlMeter",
    "PowerEntry",
    "PowerHistory",
    "PowerMeter",
    "PowerReading",
    "PowerServerClient",
    "PowerServerError",
    "ProfileMeter",
    "RaplDomain",
    "RaplMeter",
    "find_domains",
    "is_measured",
]
