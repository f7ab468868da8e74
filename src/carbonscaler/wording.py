"""How every report says its numbers: rounding, units, savings and deadline verdicts.

One place, so that the terminal, the HTML pages and the figures say the same thing the same
way, and so that a rounded number never contradicts the verdict beside it: a job that finished
at 36.004 h reads "36.004 h, 15 s after the 36 h deadline", never "36.00 h (deadline 36 h,
MISSED)". Pure functions of plain numbers; nothing here imports the rest of the package.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

__all__ = [
    "ON_TIME_S",
    "at_time",
    "clock",
    "duration",
    "finish_margin",
    "grams",
    "hours",
    "hours_beside",
    "level_hours",
    "percent",
    "saving",
    "servers",
    "span",
]

ON_TIME_S = 0.5
"""A finish within this many seconds of the deadline (and not after it) is "at the deadline"."""

_SAME_H = 1e-9  # the controller's tolerance: a completion this close to the deadline met it


def percent(pct: float, digits: int = 1) -> str:
    """``"7.2 %"``; ``"n/a"`` for a number that is not one."""
    return f"{pct:.{digits}f} %" if math.isfinite(pct) else "n/a"


def saving(pct: float, *, past: bool = True) -> str:
    """A saving as words: ``"saved 7.2 %"``, ``"emitted 5.0 % more"`` (``"emits"`` when not
    ``past``), ``"saved nothing"`` (under 0.05 % either way), ``"saving unknown"``."""
    if not math.isfinite(pct):
        return "saving unknown"
    if round(pct, 1) == 0:
        return "saved nothing"
    if pct > 0:
        return f"saved {pct:.1f} %"
    return f"{'emitted' if past else 'emits'} {-pct:.1f} % more"


def grams(g: float, like: float | None = None) -> str:
    """A mass of CO2eq with its unit: ``"481.9 g"``, ``"4.23 g"``, ``"12.35 kg"``.

    ``like`` is a second mass said in the same sentence: both take the unit the larger needs,
    so that "9,999.9 g instead of 10.20 kg" cannot happen.
    """
    if not math.isfinite(g):
        return "n/a"
    scale = max(abs(g), abs(like) if like is not None and math.isfinite(like) else 0.0)
    if scale >= 10_000:
        return f"{g / 1000:,.2f} kg"
    return f"{g:,.2f} g" if scale < 10 else f"{g:,.1f} g"


def hours(h: float) -> str:
    """A length of time in hours as a bound is said: ``"36 h"``, ``"1.5 h"``."""
    return f"{h:g} h"


def hours_beside(value: float, reference: float) -> str:
    """``value`` hours with as many decimals as it takes (one at least, six at most) for the
    rounded figure to stand on the same side of ``reference`` as the exact one: 34.8 h before
    a 36 h deadline is ``"34.8 h"``, 35.96 h is ``"35.96 h"`` (not "36.0 h"), 36.004 h is
    ``"36.004 h"`` (not "36.00 h")."""
    actual = _side(value - reference)
    for digits in range(1, 7):
        text = f"{value:.{digits}f}"
        if _side(float(text) - reference) == actual:
            return f"{text} h"
    return f"{value:.6f} h"


def _side(diff: float) -> int:
    return 0 if abs(diff) <= _SAME_H else (1 if diff > 0 else -1)


def duration(h: float) -> str:
    """A span in the unit that reads best: ``"1.2 h"``, ``"14 min"``, ``"15 s"``, ``"under a
    second"``; never rounded up into the next unit's territory ("60 min" reads "1.0 h")."""
    seconds = abs(h) * 3600.0
    if seconds < 0.5:
        return "under a second"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    if seconds < 59.5 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def finish_margin(completion_h: float, deadline_h: float, met: bool) -> str:
    """How a finish stood to its deadline: ``"1.2 h before the deadline"``, ``"right at the
    deadline"``, ``"15 s after the deadline"``.

    ``met`` is the verdict (the controller's); a finish on the deadline within its tolerance
    is "right at" it, met. A missed deadline is never said to be met, however small the gap.
    """
    gap = deadline_h - completion_h
    if met:
        if gap * 3600.0 < ON_TIME_S:
            return "right at the deadline"
        return f"{duration(gap)} before the deadline"
    return f"{duration(gap)} after the deadline"


def servers(k: int) -> str:
    """``"1 server"``, ``"2 servers"``, ``"0 servers (suspended)"``."""
    if k == 0:
        return "0 servers (suspended)"
    return f"{k} server" if k == 1 else f"{k} servers"


def level_hours(by_level: dict[int, float]) -> list[str]:
    """Each server level and the hours run at it, lowest level first: ``["0 servers
    (suspended): 11.4 h", "1 server: 18.0 h", ...]``. Levels never used are left out."""
    return [
        f"{servers(k)}: {span(by_level[k])}"
        for k in sorted(by_level)
        if by_level[k] * 3600.0 >= ON_TIME_S
    ]


def span(h: float) -> str:
    """Hours to one decimal, or a shorter span in its own unit: ``"12.0 h"``, ``"3 min"``."""
    return f"{h:.1f} h" if h >= 0.05 else duration(h)


def at_time(start_iso: str | None, offset_h: float) -> str | None:
    """The UTC time ``offset_h`` hours after ``start_iso`` (ISO 8601; naive means UTC), as
    ``"2020-03-03 12:00 UTC"``; None without a start or with one that does not parse."""
    if not start_iso:
        return None
    try:
        start = datetime.fromisoformat(start_iso)
    except ValueError:
        return None
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    return f"{start + timedelta(hours=offset_h):%Y-%m-%d %H:%M} UTC"


def clock(seconds: float) -> str:
    """A wall-clock span as a timer shows it: ``"0:42"``, ``"12:05"``, ``"1:02:03"``."""
    total = max(round(seconds), 0)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
