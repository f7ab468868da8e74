"""Per-job carbon accounting: power × carbon intensity, integrated and kept in a ledger.

Example:
    >>> from carbonscaler.accounting import Ledger, TrackedJob, ProviderIntensityFeed, Tracker
    >>> tracker = Tracker(Ledger("acct.db"), ProviderIntensityFeed(replay))  # doctest: +SKIP
    >>> tracker.register(TrackedJob("train-1", nodes=("http://node1:8000",),
    ...                          profile_path="/profiles/resnet.csv"))  # doctest: +SKIP

See docs/power-accounting.md for the maths and the ledger's crash guarantees.

The names are imported on first use (the tracker needs httpx and numpy).
"""

from typing import TYPE_CHECKING

from carbonscaler._lazy import lazy_exports

if TYPE_CHECKING:
    from carbonscaler.accounting.feeds import (
        CarbonUnavailable,
        IntensityFeed,
        ProviderIntensityFeed,
        PushedFeed,
        TimeMap,
    )
    from carbonscaler.accounting.integrate import (
        J_PER_KWH,
        IntensitySegment,
        IntervalEmissions,
        energy_piecewise_j,
        energy_trapezoid_j,
        interval_emissions,
        j_to_kwh,
        measured_share,
    )
    from carbonscaler.accounting.ledger import (
        SCHEMA_VERSION,
        JobRecord,
        Ledger,
        LedgerError,
        SampleRecord,
    )
    from carbonscaler.accounting.progress import (
        ApiProgress,
        CsvProgress,
        ProgressError,
        ProgressSource,
        parse_percent,
    )
    from carbonscaler.accounting.tracker import (
        JobExistsError,
        JobStatus,
        TrackedJob,
        Tracker,
        TrackerConfig,
        TrackerError,
        UnknownJobError,
    )
else:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "carbonscaler.accounting.feeds": (
                "CarbonUnavailable",
                "IntensityFeed",
                "ProviderIntensityFeed",
                "PushedFeed",
                "TimeMap",
            ),
            "carbonscaler.accounting.integrate": (
                "J_PER_KWH",
                "IntensitySegment",
                "IntervalEmissions",
                "energy_piecewise_j",
                "energy_trapezoid_j",
                "interval_emissions",
                "j_to_kwh",
                "measured_share",
            ),
            "carbonscaler.accounting.ledger": (
                "SCHEMA_VERSION",
                "JobRecord",
                "Ledger",
                "LedgerError",
                "SampleRecord",
            ),
            "carbonscaler.accounting.progress": (
                "ApiProgress",
                "CsvProgress",
                "ProgressError",
                "ProgressSource",
                "parse_percent",
            ),
            "carbonscaler.accounting.tracker": (
                "JobExistsError",
                "JobStatus",
                "TrackedJob",
                "Tracker",
                "TrackerConfig",
                "TrackerError",
                "UnknownJobError",
            ),
        },
    )

__all__ = [
    "J_PER_KWH",
    "SCHEMA_VERSION",
    "ApiProgress",
    "CarbonUnavailable",
    "CsvProgress",
    "IntensityFeed",
    "IntensitySegment",
    "IntervalEmissions",
    "JobExistsError",
    "JobRecord",
    "JobStatus",
    "Ledger",
    "LedgerError",
    "ProgressError",
    "ProgressSource",
    "ProviderIntensityFeed",
    "PushedFeed",
    "SampleRecord",
    "TimeMap",
    "TrackedJob",
    "Tracker",
    "TrackerConfig",
    "TrackerError",
    "UnknownJobError",
    "energy_piecewise_j",
    "energy_trapezoid_j",
    "interval_emissions",
    "j_to_kwh",
    "measured_share",
    "parse_percent",
]
