"""Shared fixtures.

The real traces live next to the repository in ``../shared/traces`` (they are not copied into
the project); tests that need them skip with a reason when that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared`` folder beside the repository (holds ``traces/``)."""
    if not (SHARED / "traces").is_dir():
        pytest.skip(f"real traces not found: {SHARED / 'traces'} is missing")
    return SHARED
