"""The web dashboard: CarbonAdvisor's what-if in the browser, and the local runtime's jobs.

``carbonscaler ui`` serves :func:`create_app`; see ``docs/dashboard.md``. The pages are a thin
shell: the numbers are CarbonAdvisor's (:mod:`carbonscaler.advisor`) and the controller's
(:mod:`carbonscaler.control`), read through :mod:`carbonscaler.ui.advisor` and
:mod:`carbonscaler.ui.jobs`; what may be named in a query is :mod:`carbonscaler.ui.catalog`'s.
"""

from typing import TYPE_CHECKING

from carbonscaler._lazy import lazy_exports

if TYPE_CHECKING:
    from carbonscaler.ui.app import DashboardConfig, create_app
else:
    __getattr__, __dir__ = lazy_exports(
        __name__, {"carbonscaler.ui.app": ("DashboardConfig", "create_app")}
    )

__all__ = ["DashboardConfig", "create_app"]
