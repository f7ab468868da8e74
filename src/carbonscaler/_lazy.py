"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package that re-exports names from heavy modules (numpy, scipy, matplotlib, FastAPI...)
imports them on first use instead of when the package is imported, so that importing one light
module of it (``carbonscaler.planner.names``, say) or the command line stays fast::

    if TYPE_CHECKING:  # the real imports, for mypy and IDEs
        from carbonscaler.planner.policies import plan
    else:
        __getattr__, __dir__ = lazy_exports(__name__, {"carbonscaler.planner.policies": ("plan",)})

The names stay those of ``__all__``; ``tests/test_cli_startup.py`` checks every lazy package
resolves each name to the object of its home module.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A module ``__getattr__`` and ``__dir__`` for ``package`` that import each exported name
    from its module on first access (then keep it on the package).

    Args:
        package: the package's ``__name__``.
        exports: module name -> the names it provides.
    """
    home = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> object:
        module = home.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *home})

    return __getattr__, __dir__
