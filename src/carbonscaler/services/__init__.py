"""HTTP services, each a thin FastAPI shell over the library."""

from carbonscaler.services.carbon import CarbonService, CarbonServiceConfig, create_app

__all__ = ["CarbonService", "CarbonServiceConfig", "create_app"]
