"""HTTP services, each a thin FastAPI shell over the library.

The names are imported on first use (FastAPI).
"""

from typing import TYPE_CHECKING

from carbonscaler._lazy import lazy_exports

if TYPE_CHECKING:
    from carbonscaler.services.carbon import CarbonService, CarbonServiceConfig, create_app
else:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "carbonscaler.services.carbon": ("CarbonService", "CarbonServiceConfig", "create_app"),
        },
    )

__all__ = ["CarbonService", "CarbonServiceConfig", "create_app"]
