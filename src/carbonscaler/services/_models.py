"""Response models every service shares."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["ErrorOut"]


class ErrorOut(BaseModel):
    """An error and what to do about it: a message, or the list of field errors when the
    request is invalid."""

    detail: str | list[dict[str, Any]]
