"""How the operator writes times and plans into statuses, Events and messages (one way, for the
per-job reconcile and the shared cluster's decisions alike)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

__all__ = ["compact", "iso", "iso_precise", "parse_time"]


def iso(t: float) -> str:
    """Epoch seconds as ISO 8601 UTC, to the second (as Kubernetes writes times)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_precise(t: float) -> str:
    """:func:`iso` to the microsecond, for the accounting's saved point (passes land
    mid-second)."""
    moment = datetime.fromtimestamp(t, UTC)
    if moment.microsecond == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: object) -> float | None:
    """An ISO 8601 time as epoch seconds; None for none (or a value that is not text)."""
    if not text or not isinstance(text, str):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def compact(servers: Sequence[int]) -> str:
    """``0×3 2×2 1`` — a plan as runs of equal worker counts."""
    runs: list[str] = []
    i = 0
    while i < len(servers):
        j = i
        while j < len(servers) and servers[j] == servers[i]:
            j += 1
        runs.append(f"{servers[i]}×{j - i}" if j - i > 1 else str(servers[i]))
        i = j
    return " ".join(runs)
