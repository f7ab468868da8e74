"""Grid carbon-intensity traces: loading, validation, resampling and slicing.

Every format quirk (non-ASCII headers, CRLF line endings, naive timestamps, empty rows,
gaps) is handled here, at the edge. Everything downstream sees a :class:`CarbonTrace`: a
regular, gap-free series in gCO2eq/kWh on a tz-aware UTC index.

Nothing is invented silently: short gaps (up to :data:`DEFAULT_MAX_GAP` values) are
interpolated and said so in :attr:`CarbonTrace.notes`; a longer gap is a :class:`TraceError`
naming it unless the caller allows it (``max_gap=``). Naive timestamps are read in ``tz=``,
or taken as UTC with a note saying so.

Example:
    >>> trace = load_trace("NL_2022_hourly.csv", signal="direct")  # doctest: +SKIP
    >>> trace.window("2022-06-01", 24)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import warnings
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Literal, cast

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import Tick

__all__ = [
    "DEFAULT_MAX_GAP",
    "FORMATS",
    "MAX_SLOTS",
    "MIN_STEP",
    "SIGNALS",
    "CarbonTrace",
    "Gap",
    "TraceError",
    "TraceStats",
    "TraceWarning",
    "from_series",
    "from_values",
    "load_trace",
]


class TraceError(ValueError):
    """A trace could not be read or used; the message says what is wrong and how to fix it."""


class TraceWarning(UserWarning):
    """A trace was loaded, but with repairs or assumptions (interpolated gaps, timestamps
    taken as UTC) the user should know of; the same text is in :attr:`CarbonTrace.notes`."""


# Accepted file formats and the header that identifies each; the order is the detection order.
_FORMAT_HEADERS: dict[str, str] = {
    "electricitymaps": "'Datetime (UTC)' + 'Carbon Intensity gCO₂eq/kWh (direct)' and/or '(LCA)'",
    "reference": "'carbon_intensity_avg' + 'datetime' or 'timestamp' (unix seconds)",
    "eia": "'timestamp' + 'avg_CI'",
    "plain": "a time column (time/timestamp/datetime/date) + 'value'/'carbon_intensity'/'ci'",
    "vessim": "a time column + one column per zone, e.g. 'time,DE'",
}
FORMATS: tuple[str, ...] = tuple(_FORMAT_HEADERS)
"""Names of the accepted trace file formats."""

SIGNALS: tuple[str, ...] = ("direct", "lca", "avg")
MIN_STEP = pd.Timedelta(minutes=1)
"""Shortest step a trace may have: planning slots are whole minutes."""

DEFAULT_MAX_GAP = 3
"""Longest run of consecutive missing or empty values (at the file's own step) that loading
interpolates unless told otherwise: 3 hours of an hourly file, 45 minutes of a 15-minute one."""

MAX_SLOTS = 5_000_000
"""Most slots a trace may span, gaps included (9.5 years of 1-minute steps, 570 years of
hourly ones): bounds the memory and time any file can make a command spend."""

_TIME_RANGE = (pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC"))
_TIME_RANGE_TEXT = "1677-09-22 .. 2262-04-11"
"""Signal names: Electricity Maps' direct and life-cycle columns, or a file's only signal."""

_TIME_NAMES = frozenset(
    {"time", "timestamp", "datetime", "date", "date_time", "datetime (utc)", "time (utc)", "utc"}
)
_VALUE_NAMES = frozenset(
    {
        "value",
        "values",
        "ci",
        "intensity",
        "carbon_intensity",
        "carbon intensity",
        "carbonintensity",
        "co2_intensity",
        "gco2/kwh",
        "gco2eq/kwh",
    }
)
_EM_SIGNAL = re.compile(r"carbon intensity.*\((direct|lca)\)")
_OFFSET = re.compile(r"(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?", re.IGNORECASE)
_TZ_HINT = (
    "pass --tz ZONE (carbon: tz: in a job spec, tz= in Python), e.g. --tz Europe/Berlin, if "
    "they are local time"
)


@dataclass(frozen=True)
class Gap:
    """A run of consecutive missing or empty values in a trace file."""

    start: pd.Timestamp
    """Start of the first missing slot (UTC)."""
    values: int
    """How many consecutive values are missing."""
    step: pd.Timedelta
    """The trace's step."""

    @property
    def last(self) -> pd.Timestamp:
        """Start of the last missing slot (UTC)."""
        return self.start + (self.values - 1) * self.step

    @property
    def duration(self) -> pd.Timedelta:
        """Time the gap spans."""
        return self.values * self.step

    def describe(self) -> str:
        """E.g. ``720 hourly values (720 h = 30 days) from 2022-06-01 00:00 UTC through
        2022-06-30 23:00 UTC``."""
        kind = "hourly" if self.step == pd.Timedelta(hours=1) else f"{_minutes(self.step)}-minute"
        noun = "value" if self.values == 1 else "values"
        when = (
            f"at {_fmt(self.start)}"
            if self.values == 1
            else f"from {_fmt(self.start)} through {_fmt(self.last)}"
        )
        return f"{self.values} {kind} {noun} ({_duration(self.duration)}) {when}"


@dataclass(frozen=True)
class TraceStats:
    """Summary statistics of a trace (gCO2eq/kWh unless stated otherwise).

    Daily figures use complete UTC calendar days only, so a trace that starts at 23:00
    does not contribute a one-hour "day"; they are NaN when no day is complete.
    """

    zone: str
    start: pd.Timestamp
    """First slot start (UTC)."""
    end: pd.Timestamp
    """Last slot start (UTC)."""
    n: int
    step_minutes: float
    mean: float
    min: float
    max: float
    std: float
    """Population standard deviation."""
    cv: float
    """Coefficient of variation std/mean (0 for an all-zero trace)."""
    daily_swing_mean: float
    """Mean over complete UTC days of (daily max - daily min)."""
    daily_swing_ratio_mean: float
    """Mean over complete UTC days with min > 0 of daily max/min."""
    filled: int

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly view: ISO timestamps, NaN as None."""
        out: dict[str, object] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, pd.Timestamp):
                out[key] = value.isoformat()
            elif isinstance(value, float) and np.isnan(value):
                out[key] = None
            else:
                out[key] = value
        return out


@dataclass(frozen=True, eq=False)  # eq=False: comparing Series fields element-wise is ambiguous
class CarbonTrace:
    """A regular, gap-free carbon-intensity time series.

    Build one with :func:`load_trace`, :func:`from_values` or :func:`from_series`; the
    constructor only validates.

    Args:
        series: float64 gCO2eq/kWh on a tz-aware UTC DatetimeIndex, strictly increasing at a
            regular step, without NaN or negative values.
        zone: Grid zone, e.g. ``"NL"``, ``"US-CAL-CISO"``, ``"PJM"``.
        signal: ``"direct"`` or ``"lca"`` (Electricity Maps columns) or ``"avg"`` (the only
            signal of the other formats and of the offline dataset's files).
        source: File path or dataset name, for reports.
        fmt: Format the trace came from (see :data:`FORMATS`; ``"entsoe-dataset"`` for the
            offline dataset).
        filled: How many values were interpolated when loading, counted at the source
            resolution (resampling does not change it).
        notes: What loading repaired or assumed, one sentence each (interpolated gaps with
            the longest one, timestamps taken as UTC, ...): for reports and ``--json``.
        longest_gap: The longest run of values interpolated when loading, if any.

    Raises:
        TraceError: If the series breaks any of the rules above.
    """

    series: pd.Series
    zone: str
    signal: str
    source: str
    fmt: str
    filled: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    longest_gap: Gap | None = None

    def __post_init__(self) -> None:
        s = self.series
        index = s.index
        if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
            raise TraceError("a trace needs a tz-aware DatetimeIndex; build it with from_series()")
        if len(s) == 0:
            raise TraceError("a trace needs at least one value")
        if s.dtype != np.float64:
            raise TraceError(f"trace values must be float64, not {s.dtype}")
        values = s.to_numpy()
        if not np.isfinite(values).all() or (values < 0).any():
            raise TraceError("trace values must be finite and non-negative")
        if self.signal not in SIGNALS:
            raise TraceError(f"unknown signal {self.signal!r}; use one of {', '.join(SIGNALS)}")
        if self.filled < 0:
            raise TraceError("filled must be >= 0")
        notes = tuple(self.notes)
        if not all(isinstance(note, str) for note in notes):
            raise TraceError("trace notes must be strings")
        object.__setattr__(self, "notes", notes)
        index = index.tz_convert("UTC")
        if len(index) >= 2:
            diffs = np.diff(index.asi8)
            if diffs[0] <= 0 or (diffs != diffs[0]).any():
                raise TraceError("trace timestamps must be strictly increasing at a regular step")
            freq = to_offset(pd.Timedelta(int(diffs[0]), unit=index.unit))
        elif isinstance(index.freq, Tick):
            freq = index.freq
        else:
            raise TraceError("a one-value trace needs an index with a fixed-length freq (its step)")
        # The index freq is how `step` is known, so every stored series carries one.
        index = pd.DatetimeIndex(index, freq=freq)
        object.__setattr__(self, "series", pd.Series(values, index=index, name=s.name))

    def __len__(self) -> int:
        return len(self.series)

    @property
    def step(self) -> pd.Timedelta:
        """Time between consecutive values."""
        freq = self.index.freq
        assert isinstance(freq, Tick)  # guaranteed by __post_init__
        return pd.Timedelta(freq)

    @property
    def index(self) -> pd.DatetimeIndex:
        """Slot starts (UTC), typed as the DatetimeIndex it always is."""
        return cast(pd.DatetimeIndex, self.series.index)

    @property
    def values(self) -> np.ndarray:
        """The values as a read-only float64 view (no copy)."""
        view = self.series.to_numpy().view()
        view.flags.writeable = False
        return view

    @property
    def start(self) -> pd.Timestamp:
        """Start of the first slot (UTC)."""
        return pd.Timestamp(self.series.index[0])

    @property
    def end(self) -> pd.Timestamp:
        """Start of the last slot (UTC)."""
        return pd.Timestamp(self.series.index[-1])

    def resample(self, slot_minutes: int) -> CarbonTrace:
        """Return the trace at another slot length.

        Downsampling averages the values of each slot (labelled by its start, slots aligned
        to UTC midnight); slots the trace covers only in part are dropped, so every value is
        a mean over the same number of source values. Upsampling repeats each value.

        Args:
            slot_minutes: New slot length; must be a multiple or a divisor of the step.

        Raises:
            TraceError: If slot_minutes is not a positive integer, does not fit the step, or
                the trace does not cover one whole slot.
        """
        if isinstance(slot_minutes, bool) or not isinstance(slot_minutes, int | np.integer):
            raise TraceError(f"slot length must be a whole number of minutes, not {slot_minutes!r}")
        if slot_minutes <= 0:
            raise TraceError(f"slot length must be positive, not {slot_minutes} minutes")
        target = pd.Timedelta(minutes=int(slot_minutes))
        step = self.step
        if target == step:
            return self
        if target < step:
            if step % target:
                raise TraceError(
                    f"cannot split {_minutes(step)}-minute steps into {slot_minutes}-minute slots;"
                    " use a divisor of the step"
                )
            k = step // target
            if len(self) * k > MAX_SLOTS:
                raise TraceError(
                    f"resampling {len(self)} {_minutes(step)}-minute values of {self.source} to"
                    f" {slot_minutes}-minute slots would make {len(self) * k:,} slots, more than"
                    f" the {MAX_SLOTS:,} supported; use longer slots or a shorter trace"
                )
            values = np.repeat(self.series.to_numpy(), k)
            index = pd.date_range(self.start, periods=len(values), freq=target, unit="ns")
        else:
            if target % step:
                raise TraceError(
                    f"cannot average {_minutes(step)}-minute steps into {slot_minutes}-minute"
                    " slots; use a multiple of the step"
                )
            k = target // step
            since_midnight = self.start - self.start.normalize()
            if since_midnight % step:
                raise TraceError(
                    f"trace starts at {_fmt(self.start)}, off the {_minutes(step)}-minute grid"
                    " counted from midnight, so its steps cannot fill whole slots"
                )
            lead = int(-(since_midnight // step) % k)  # values before the first slot boundary
            n_slots = (len(self) - lead) // k
            if n_slots < 1:
                raise TraceError(
                    f"trace {self.source} ({len(self)} values) does not cover one whole"
                    f" {slot_minutes}-minute slot"
                )
            block = self.series.to_numpy()[lead : lead + n_slots * k]
            values = block.reshape(n_slots, k).mean(axis=1)
            index = pd.date_range(self.start + lead * step, periods=n_slots, freq=target, unit="ns")
        return replace(self, series=pd.Series(values, index=index, name=self.series.name))

    def index_of(self, start: datetime | pd.Timestamp | str) -> int:
        """Position of the slot that starts at ``start``.

        Args:
            start: Slot start; naive values are taken as UTC.

        Raises:
            TraceError: If ``start`` is unparsable, outside the trace, or not on a slot start.
        """
        ts = _to_utc(start)
        first, last = self.start, self.end
        if ts < first or ts > last:
            raise TraceError(
                f"{_fmt(ts)} is outside the trace {self.source}, which covers"
                f" {_fmt(first)}..{_fmt(last)}"
            )
        offset = ts - first
        step = self.step
        if offset % step:
            raise TraceError(
                f"{_fmt(ts)} is not a slot start of {self.source}: slots are"
                f" {_minutes(step)} minutes long from {_fmt(first)}"
            )
        return int(offset // step)

    def window(self, start: datetime | pd.Timestamp | str, n_slots: int) -> np.ndarray:
        """The ``n_slots`` values from the slot starting at ``start`` (a copy).

        Args:
            start: First slot start; naive values are taken as UTC.
            n_slots: Number of slots, at least 1.

        Raises:
            TraceError: If ``start`` is not a slot of the trace or the window runs past its end.
        """
        if n_slots < 1:
            raise TraceError(f"a window needs at least one slot, not {n_slots}")
        i = self.index_of(start)
        available = len(self) - i
        if n_slots > available:
            raise TraceError(
                f"a window of {n_slots} slots from {_fmt(_to_utc(start))} runs past the end of"
                f" {self.source}: the trace covers {_fmt(self.start)}..{_fmt(self.end)} and has"
                f" {available} slots from that start"
            )
        return self.series.to_numpy()[i : i + n_slots].copy()

    def stats(self) -> TraceStats:
        """Summary statistics (see :class:`TraceStats`)."""
        v = self.series.to_numpy()
        mean = float(v.mean())
        std = float(v.std())
        step = self.step
        day = pd.Timedelta(days=1)
        swing = ratio = float("nan")
        if step <= day and not day % step:
            per_day = self.series.groupby(self.index.floor("D")).agg(["count", "min", "max"])
            full = per_day[per_day["count"] == day // step]
            if len(full):
                swing = float((full["max"] - full["min"]).mean())
                positive = full[full["min"] > 0]
                if len(positive):
                    ratio = float((positive["max"] / positive["min"]).mean())
        return TraceStats(
            zone=self.zone,
            start=self.start,
            end=self.end,
            n=len(self),
            step_minutes=step.total_seconds() / 60,
            mean=mean,
            min=float(v.min()),
            max=float(v.max()),
            std=std,
            # All values are >= 0, so a zero mean means a flat zero trace: no variation.
            cv=std / mean if mean > 0 else 0.0,
            daily_swing_mean=swing,
            daily_swing_ratio_mean=ratio,
            filled=self.filled,
        )


def load_trace(
    path: str | os.PathLike[str],
    *,
    signal: str = "direct",
    zone: str | None = None,
    max_gap: int | None = DEFAULT_MAX_GAP,
    tz: str | tzinfo | None = None,
) -> CarbonTrace:
    """Load a carbon-intensity CSV file, detecting its format from the header.

    Timestamps become UTC. Offsets and unix times are honoured; naive timestamps are read in
    ``tz``, or else taken as UTC with a note saying so (not when the column's name says UTC,
    as Electricity Maps' ``Datetime (UTC)`` does). Unsorted rows are sorted. Missing
    timestamps and empty values are interpolated in time (edges take the nearest value) as
    long as no run of them is longer than ``max_gap`` values; :attr:`CarbonTrace.notes` and a
    :class:`TraceWarning` say how many were filled and name the longest gap.

    Args:
        path: CSV file in one of the :data:`FORMATS`.
        signal: ``"direct"`` or ``"lca"`` for Electricity Maps exports (case-insensitive).
            The other formats hold one signal, reported as ``"avg"``; ``"avg"`` or the
            default ``"direct"`` select it.
        zone: For files that name their zone(s) (Electricity Maps ``Zone Id``, reference
            ``zone_name``, vessim zone columns) the zone to select; for files that do not
            (EIA, plain) the label to use instead of the one derived from the file name.
        max_gap: Longest run of consecutive missing or empty values (at the file's step) to
            interpolate; ``None`` fills any gap (still noted). A longer gap is an error.
        tz: Time zone of naive timestamps: an IANA name (``"Europe/Berlin"``), ``"UTC"``
            or an offset (``"+05:30"``). Local times are converted to UTC across
            daylight-saving changes; the hour that repeats when clocks go back is read in
            file order (first summer time, then winter time).

    Raises:
        TraceError: If the file is missing, empty or of unknown format, lacks the requested
            signal or zone, has unparsable, duplicate or off-grid timestamps, non-numeric
            or negative values, or a gap longer than ``max_gap``; if ``tz`` is unknown or a
            timestamp does not exist in it. Messages name the line or the time at fault.
    """
    file = Path(path)
    if not file.is_file():
        raise TraceError(f"{file}: no such file")
    wanted = _normalise_signal(signal)
    zone_info = None if tz is None else _zone_info(tz)
    _check_max_gap(max_gap)
    columns = _read_header(file)
    layout = _detect(file, columns, zone)
    column, label = layout.column_for(wanted, file)
    usecols = [layout.time_column, column]
    if layout.zone_column is not None:
        usecols.append(layout.zone_column)
    frame = _read_csv(file, usecols)
    zone_label = layout.zone
    if layout.zone_column is not None:
        frame, zone_label = _select_zone(frame, layout.zone_column, zone, file, layout.zone)
    if frame.empty:
        raise TraceError(f"{file}: the file has a header but no data rows")
    raw_times = frame[layout.time_column]
    declared_utc = "utc" in _norm(layout.time_column)
    times, naive = _parse_times(raw_times, file, None if declared_utc else zone_info)
    values = _parse_values(frame[column], file)

    notes: list[str] = []
    assumed_utc = bool(naive.any()) and zone_info is None and not declared_utc
    if assumed_utc:
        some = "" if naive.all() else f"{int(naive.sum())} of {len(naive)} "
        notes.append(f"{some}timestamps have no time zone and were taken as UTC; {_TZ_HINT}")
    elif zone_info is not None and (declared_utc or not naive.any()):
        why = (
            f"column {layout.time_column!r} says its times are UTC"
            if declared_utc and naive.any()
            else "the timestamps carry their own UTC offsets (or are unix times)"
        )
        notes.append(f"time zone {tz} not applied: {why}")
    _check_duplicates(times, raw_times, file, local_hint=assumed_utc)
    return _assemble(
        pd.Series(values, index=times),
        zone=zone_label,
        signal=label,
        source=str(file),
        fmt=layout.fmt,
        max_gap=max_gap,
        notes=notes,
        local_hint=assumed_utc,
    )


def from_series(
    series: pd.Series,
    *,
    zone: str,
    signal: str = "avg",
    source: str = "<series>",
    fmt: str = "plain",
    max_gap: int | None = DEFAULT_MAX_GAP,
) -> CarbonTrace:
    """Build a trace from a time-indexed series, repairing what can be repaired.

    Missing timestamps and NaN values are interpolated in time (edges take the nearest
    value) when no run of them is longer than ``max_gap``; the trace's
    :attr:`~CarbonTrace.notes` and a :class:`TraceWarning` say what was filled.

    Args:
        series: gCO2eq/kWh on a DatetimeIndex (naive = UTC); may be unsorted, irregular or
            contain NaN.
        zone: Zone label.
        signal: Signal label (see :data:`SIGNALS`).
        source: Where the data came from, for messages and reports.
        fmt: Format label.
        max_gap: Longest run of missing values to interpolate; ``None`` fills any gap
            (still noted).

    Raises:
        TraceError: If the index is not a DatetimeIndex, has duplicates or timestamps off the
            regular step, the values are non-numeric, infinite, negative or all missing, or
            a gap is longer than ``max_gap``.
    """
    _check_max_gap(max_gap)
    return _assemble(
        series,
        zone=zone,
        signal=signal,
        source=source,
        fmt=fmt,
        max_gap=max_gap,
        notes=[],
        local_hint=False,
    )


def _assemble(
    series: pd.Series,
    *,
    zone: str,
    signal: str,
    source: str,
    fmt: str,
    max_gap: int | None,
    notes: list[str],
    local_hint: bool,
) -> CarbonTrace:
    """:func:`from_series`, with the notes loading made so far; ``local_hint``: the index
    holds naive wall-clock times taken as UTC (so a missing Sunday-night hour may be a
    daylight-saving change)."""
    if not isinstance(series.index, pd.DatetimeIndex):
        raise TraceError(f"{source}: the series needs a DatetimeIndex, not {type(series.index)}")
    index = series.index
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    try:
        values = series.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TraceError(f"{source}: values must be numeric ({exc})") from exc
    try:
        ns_index = index.as_unit("ns")
    except (OverflowError, pd.errors.OutOfBoundsDatetime):
        outside = (index < _TIME_RANGE[0]) | (index > _TIME_RANGE[1])
        first = index[int(np.asarray(outside).argmax())]
        raise TraceError(
            f"{source}: timestamp {first} is outside the supported range {_TIME_RANGE_TEXT}"
        ) from None
    s = pd.Series(values, index=ns_index, name="carbon_intensity")
    if not s.index.is_monotonic_increasing:
        s = s.sort_index(kind="stable")
    index = cast(pd.DatetimeIndex, s.index)
    duplicated = index.duplicated()
    if duplicated.any():
        first = index[int(duplicated.argmax())]
        raise TraceError(
            f"{source}: duplicate timestamp {_fmt(first)} (and {int(duplicated.sum()) - 1} more);"
            " keep one row per timestamp"
        )
    v = s.to_numpy()
    if np.isinf(v).any():
        raise TraceError(f"{source}: infinite value at {_fmt(index[int(np.isinf(v).argmax())])}")
    negative = v < 0
    if negative.any():
        i = int(negative.argmax())
        raise TraceError(
            f"{source}: negative carbon intensity {v[i]} at {_fmt(s.index[i])};"
            " values must be gCO2eq/kWh >= 0"
        )
    if np.isnan(v).all():
        raise TraceError(f"{source}: no values (all rows are empty)")
    if len(s) < 2:
        raise TraceError(f"{source}: one row is not a time series; the step cannot be inferred")
    step = _common_step(index)
    if step < MIN_STEP:
        raise TraceError(
            f"{source}: the step is {step.total_seconds():g} s; the shortest supported step is"
            f" {MIN_STEP.total_seconds() / 60:g} minute: average the file to 1-minute or longer"
            " steps first"
        )
    n_slots = (index[-1] - index[0]) // step + 1
    if n_slots > MAX_SLOTS:
        raise TraceError(
            f"{source}: {_fmt(index[0])} .. {_fmt(index[-1])} at {_minutes(step)}-minute steps"
            f" is {n_slots:,} slots, more than the {MAX_SLOTS:,} supported; check the timestamps"
            " (a wrong year?) or split the file"
        )
    off_grid = (index - index[0]) % step != pd.Timedelta(0)
    if off_grid.any():
        raise TraceError(
            f"{source}: timestamp {_fmt(index[int(off_grid.argmax())])} is off the"
            f" {_minutes(step)}-minute grid starting at {_fmt(index[0])}; resample the file"
            " to a regular step first"
        )
    full = pd.date_range(index[0], index[-1], freq=step, unit="ns")
    s = s.reindex(full)
    missing = s.isna().to_numpy()
    filled = int(missing.sum())
    longest: Gap | None = None
    if filled:
        starts, lengths = _runs(missing)
        gaps = [
            Gap(pd.Timestamp(full[a]), int(n), step) for a, n in zip(starts, lengths, strict=True)
        ]
        longest = max(gaps, key=lambda g: g.values)  # the first of the longest
        clock_change = next((g for g in gaps if local_hint and _spring_forward(g)), None)
        if max_gap is not None and longest.values > max_gap:
            raise TraceError(_gap_error(source, gaps, max_gap, full, clock_change))
        s = s.interpolate(method="time").ffill().bfill()
        note = (
            f"interpolated {filled} of {len(s)} values ({100 * filled / len(s):.3g} %) that"
            f" were empty or missing; longest gap: {longest.describe()}"
        )
        if clock_change is not None:
            note += f"; {_spring_forward_hint(clock_change)}"
        notes.append(note)
    trace = CarbonTrace(
        series=s,
        zone=zone,
        signal=signal,
        source=source,
        fmt=fmt,
        filled=filled,
        notes=tuple(notes),
        longest_gap=longest,
    )
    for note in notes:
        # stacklevel 3: the caller of load_trace / from_series.
        warnings.warn(f"{source}: {note}", TraceWarning, stacklevel=3)
    return trace


def _check_max_gap(max_gap: int | None) -> None:
    if max_gap is None:
        return
    if isinstance(max_gap, bool) or not isinstance(max_gap, int | np.integer) or max_gap < 0:
        raise TraceError(
            f"the longest gap to fill must be a whole number of values >= 0, not {max_gap!r}"
        )


def _gap_error(
    source: str,
    gaps: list[Gap],
    max_gap: int,
    full: pd.DatetimeIndex,
    clock_change: Gap | None,
) -> str:
    """The message for gaps longer than ``max_gap``: the longest, how to proceed."""
    over = [g for g in gaps if g.values > max_gap]
    longest = max(over, key=lambda g: g.values)
    text = f"{source}: no data for {longest.describe()}"
    if len(over) > 1:
        text += (
            f" (the longest of {len(over)} gaps over {max_gap} values; the first starts"
            f" {_fmt(over[0].start)})"
        )
    if max_gap:
        text += f"; loading interpolates gaps of up to {max_gap} values, not longer ones"
    else:
        text += "; loading was told to interpolate no gaps (a limit of 0)"
    if clock_change is not None and clock_change.values > max_gap:
        text += f"; {_spring_forward_hint(clock_change)}"
    # The longest stretch free of long gaps, to cut the file to.
    blocked = np.zeros(len(full), dtype=bool)
    step = full[1] - full[0]
    for g in over:
        i = int((g.start - full[0]) // step)
        blocked[i : i + g.values] = True
    starts, lengths = _runs(~blocked)
    stretch = ""
    if len(lengths):
        j = int(lengths.argmax())
        a, n = int(starts[j]), int(lengths[j])
        stretch = (
            f", e.g. the longest stretch without one, {_fmt(full[a])} .. {_fmt(full[a + n - 1])}"
            f" ({n} values)"
        )
    return (
        f"{text}. To interpolate it anyway, pass --fill-gaps {longest.values}"
        f" (carbon: fill_gaps: {longest.values} in a job spec, max_gap={longest.values} in"
        f" Python); or use data without such a gap{stretch}"
    )


def _spring_forward(gap: Gap) -> bool:
    """Whether a gap in wall-clock times is one missing hour on a Sunday night, as when
    clocks go forward (Europe 02:00, North America 02:00, Australia 02:00 ...)."""
    start = gap.start
    return gap.duration == pd.Timedelta(hours=1) and start.day_of_week == 6 and start.hour <= 3


def _spring_forward_hint(gap: Gap) -> str:
    return (
        f"the missing hour {_wall(gap.start)} (a Sunday night) looks like clocks going forward,"
        " so the timestamps may be local time (then pass --tz ZONE)"
    )


def _check_duplicates(
    times: pd.DatetimeIndex, raw: pd.Series, file: Path, *, local_hint: bool
) -> None:
    """A timestamp that occurs twice is an error naming its lines; with naive times that
    repeat one Sunday-night hour, the message says the file looks like local time."""
    repeated = np.asarray(times.duplicated(keep=False))
    if not repeated.any():
        return
    dups = times[repeated]
    first = dups.min()
    at = np.flatnonzero(np.asarray(times == first))
    lines = [str(int(raw.index[i]) + 2) for i in at[:5]]
    shown = ", ".join(lines[:-1]) + f" and {lines[-1]}" + (" ..." if len(at) > 5 else "")
    others = int(np.asarray(times.duplicated()).sum()) - (len(at) - 1)
    more = f" (and {others} more repeated rows)" if others else ""
    if not local_hint:
        hint = "keep one row per timestamp"
    elif (
        (dups.day_of_week == 6) & (dups.hour <= 3)
    ).all() and dups.max() - dups.min() < pd.Timedelta(hours=1):
        hint = (
            f"the file looks like local time: the hour from {_wall(first)} (a Sunday night)"
            " repeats, as when clocks go back; pass --tz ZONE (carbon: tz: in a job spec,"
            " tz= in Python), e.g. --tz Europe/Berlin, to read it as local time"
        )
    else:
        hint = f"keep one row per timestamp; {_TZ_HINT}"
    when = _wall(first) if local_hint else _fmt(first)
    raise TraceError(f"{file}: duplicate timestamp {when} on lines {shown}{more}; {hint}")


def _zone_info(tz: str | tzinfo) -> tzinfo:
    """An IANA zone name, UTC or a fixed offset (``+05:30``, ``UTC-3``) as a tzinfo."""
    if isinstance(tz, tzinfo):
        return tz
    text = str(tz).strip()
    if text.upper() in ("UTC", "Z", "GMT", "ETC/UTC", "ZULU"):
        return UTC
    match = _OFFSET.fullmatch(text)
    if match:
        sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
        if hours < 24 and minutes < 60:
            delta = timedelta(hours=hours, minutes=minutes)
            return timezone(-delta if sign == "-" else delta)
    try:
        if text:
            return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    raise TraceError(
        f"unknown time zone {tz!r}; use an IANA name such as Europe/Berlin or"
        " America/New_York, UTC, or an offset such as +01:00"
    )


def from_values(
    values: Sequence[float] | np.ndarray,
    *,
    start: str | pd.Timestamp = "2022-01-01",
    step_minutes: int = 60,
    zone: str = "synthetic",
) -> CarbonTrace:
    """Build a trace from plain numbers, e.g. for tests and what-if studies.

    Args:
        values: gCO2eq/kWh, one per slot.
        start: First slot start; naive values are taken as UTC.
        step_minutes: Slot length in minutes.
        zone: Zone label.

    Raises:
        TraceError: If values is empty, not 1-D, or holds non-finite or negative numbers, or
            step_minutes is not positive.
    """
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TraceError(f"values must be numbers ({exc})") from exc
    if arr.ndim != 1 or arr.size == 0:
        raise TraceError(f"values must be a non-empty 1-D sequence, got shape {arr.shape}")
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        i = int(bad.argmax())
        raise TraceError(f"values must be finite and >= 0; value {i} is {arr[i]}")
    if step_minutes <= 0:
        raise TraceError(f"step_minutes must be positive, not {step_minutes}")
    try:
        index = pd.date_range(
            _to_utc(start), periods=arr.size, freq=pd.Timedelta(minutes=step_minutes), unit="ns"
        )
    except (OverflowError, pd.errors.OutOfBoundsDatetime):
        raise TraceError(
            f"{arr.size} slots of {step_minutes} minutes from {start} leave the supported range"
            f" {_TIME_RANGE_TEXT}"
        ) from None
    return CarbonTrace(
        series=pd.Series(arr, index=index, name="carbon_intensity"),
        zone=zone,
        signal="avg",
        source="<values>",
        fmt="plain",
    )


@dataclass(frozen=True)
class _Layout:
    """Where a detected format keeps its data."""

    fmt: str
    time_column: str
    signal_columns: dict[str, str]
    """Signal name -> column."""
    zone: str
    """Zone label; with a zone column, the label used when that column is empty."""
    zone_column: str | None = None

    def column_for(self, signal: str, file: Path) -> tuple[str, str]:
        """The column holding ``signal`` and the signal label to report."""
        if signal in self.signal_columns:
            return self.signal_columns[signal], signal
        if len(self.signal_columns) == 1 and signal in ("direct", "avg"):
            # Single-signal formats: the default "direct" means "the file's signal".
            ((label, column),) = self.signal_columns.items()
            return column, label
        available = ", ".join(f"{k!r} (column {v!r})" for k, v in self.signal_columns.items())
        raise TraceError(
            f"{file}: this {self.fmt} file has no {signal!r} signal; available: {available}"
        )


def _normalise_signal(signal: str) -> str:
    wanted = signal.strip().lower()
    if wanted not in SIGNALS:
        raise TraceError(f"unknown signal {signal!r}; use one of {', '.join(SIGNALS)}")
    return wanted


def _norm(name: str) -> str:
    """Header cell normalised for matching: ASCII CO2, trimmed, lower case."""
    return name.replace("₂", "2").strip().lower()


def _read_header(file: Path) -> list[str]:
    try:
        header = pd.read_csv(file, nrows=0, encoding="utf-8-sig")
    except pd.errors.EmptyDataError as exc:
        raise TraceError(f"{file}: the file is empty") from exc
    except (OSError, ValueError) as exc:  # ValueError covers parser and UTF-8 decoding errors
        raise TraceError(f"{file}: not a readable UTF-8 CSV file ({exc})") from exc
    return [str(c) for c in header.columns]


def _read_csv(file: Path, usecols: list[str]) -> pd.DataFrame:
    try:
        return pd.read_csv(file, usecols=usecols, encoding="utf-8-sig")
    except (OSError, ValueError) as exc:
        raise TraceError(f"{file}: cannot read columns {usecols} ({exc})") from exc


def _is_index_column(name: str) -> bool:
    """An empty header cell, which pandas names 'Unnamed: N' (a saved DataFrame index)."""
    return not name.strip() or name.startswith("Unnamed: ")


def _detect(file: Path, columns: list[str], zone: str | None) -> _Layout:
    norm: dict[str, str] = {}
    for column in columns:
        norm.setdefault(_norm(column), column)

    if "datetime (utc)" in norm:
        signals = {}
        for key, column in norm.items():
            match = _EM_SIGNAL.fullmatch(key)
            if match:
                signals[match.group(1)] = column
        if signals:
            return _Layout(
                "electricitymaps",
                norm["datetime (utc)"],
                signals,
                zone=zone or file.stem.split("_")[0],  # "NL_2022_hourly.csv" -> NL
                zone_column=norm.get("zone id"),
            )
    if "carbon_intensity_avg" in norm and ("datetime" in norm or "timestamp" in norm):
        return _Layout(
            "reference",
            norm.get("datetime") or norm["timestamp"],
            {"avg": norm["carbon_intensity_avg"]},
            zone=zone or file.stem,
            zone_column=norm.get("zone_name"),
        )
    if "avg_ci" in norm and "timestamp" in norm:
        # SustainDC names its files like "PJM_NG_&_avgCI.csv": the zone comes first.
        return _Layout(
            "eia",
            norm["timestamp"],
            {"avg": norm["avg_ci"]},
            zone=zone or file.stem.split("_NG_")[0],
        )

    time_column = next((c for c in columns if _norm(c) in _TIME_NAMES), None)
    rest = [c for c in columns if c != time_column and not _is_index_column(c)]
    if time_column is None and len(rest) == 2 and _looks_like_time_series(file, rest):
        time_column, rest = rest[0], rest[1:]
    if time_column is not None and rest:
        generic = [c for c in rest if _norm(c) in _VALUE_NAMES]
        if len(generic) == 1:
            return _Layout("plain", time_column, {"avg": generic[0]}, zone=zone or file.stem)
        if not generic:
            column = _pick_zone_column(file, rest, zone)
            return _Layout("vessim", time_column, {"avg": column}, zone=column)
    shown = ", ".join(repr(c) for c in columns[:12]) + (" ..." if len(columns) > 12 else "")
    accepted = "; ".join(f"{name}: {header}" for name, header in _FORMAT_HEADERS.items())
    raise TraceError(
        f"{file}: unknown trace format (columns found: {shown}). Accepted formats: {accepted}"
    )


def _looks_like_time_series(file: Path, columns: list[str]) -> bool:
    """Whether a headed two-column file with unusual names holds time, value rows."""
    try:
        sample = pd.read_csv(file, usecols=columns, nrows=5, encoding="utf-8-sig")
        pd.to_datetime(sample[columns[0]].astype(str), format="ISO8601")
        pd.to_numeric(sample[columns[1]])
    except (TypeError, ValueError):
        return False
    return not sample.empty


def _pick_zone_column(file: Path, columns: list[str], zone: str | None) -> str:
    if zone is not None:
        for column in columns:
            if _norm(column) == zone.strip().lower():
                return column
        raise TraceError(f"{file}: no column for zone {zone!r}; zone columns: {columns}")
    if len(columns) > 1:
        raise TraceError(f"{file}: holds several zones {columns}; choose one with zone=")
    return columns[0]


def _select_zone(
    frame: pd.DataFrame, column: str, zone: str | None, file: Path, fallback: str
) -> tuple[pd.DataFrame, str]:
    """Keep the rows of one zone when the file names zones per row."""
    names = frame[column].dropna().astype(str).str.strip()
    zones = list(dict.fromkeys(names))
    if not zones:  # the column is there but empty: the file names no zone after all
        return frame, fallback
    if zone is not None:
        match = next((z for z in zones if z.lower() == zone.strip().lower()), None)
        if match is None:
            raise TraceError(f"{file}: has no rows for zone {zone!r}; zones in the file: {zones}")
        return frame[names.reindex(frame.index) == match], match
    if len(zones) > 1:
        raise TraceError(f"{file}: holds several zones {zones}; choose one with zone=")
    return frame, zones[0]


def _parse_times(
    raw: pd.Series, file: Path, zone_info: tzinfo | None
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Parse a timestamp column to UTC, and say which rows had no zone.

    Offsets and unix times are honoured; naive times are read in ``zone_info``, or taken as
    UTC when it is None. Returns the UTC times and a boolean mask of the naive rows.
    """
    if raw.isna().any():
        line = int(raw.index[int(raw.isna().to_numpy().argmax())]) + 2  # + header, 1-based
        raise TraceError(f"{file}: line {line} has no timestamp in column {raw.name!r}")
    text = raw.astype(str).str.strip()
    try:
        if pd.api.types.is_numeric_dtype(raw):
            # Unix epoch; values this large can only be milliseconds.
            unit: Literal["s", "ms"] = "ms" if float(raw.abs().max()) > 1e11 else "s"
            parsed = pd.to_datetime(raw, unit=unit, utc=True)
            naive = np.zeros(len(raw), dtype=bool)
        else:
            parsed, naive = _parse_iso(text)
    except (TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, OverflowError | pd.errors.OutOfBoundsDatetime):
            raise TraceError(
                f"{file}: a timestamp in column {raw.name!r} is outside the supported range"
                f" {_TIME_RANGE_TEXT} ({exc})"
            ) from None
        coerced = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        bad = coerced.isna().to_numpy()
        if bad.any():
            label = raw.index[int(bad.argmax())]
            raise TraceError(
                f"{file}: line {int(label) + 2}: cannot parse timestamp {text[label]!r} in"
                f" column {raw.name!r}; use ISO 8601 such as 2022-01-01 00:00:00 (with Z or"
                " +01:00 for a zone) or unix seconds"
            ) from None
        raise TraceError(
            f"{file}: cannot parse timestamps in column {raw.name!r} ({exc}); use ISO 8601 such"
            " as 2022-01-01 00:00:00 or unix seconds"
        ) from exc
    outside = np.asarray((parsed < _TIME_RANGE[0]) | (parsed > _TIME_RANGE[1]))
    if outside.any():
        label = raw.index[int(outside.argmax())]
        raise TraceError(
            f"{file}: line {int(label) + 2}: timestamp {str(raw[label]).strip()!r} is outside"
            f" the supported range {_TIME_RANGE_TEXT}"
        )
    index = pd.DatetimeIndex(parsed)
    if zone_info is not None and naive.any():
        index = _localise(index, naive, zone_info, text, file)
    return index, naive


def _parse_iso(text: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """ISO 8601 strings as UTC times, and which of them carried no zone."""
    try:
        parsed = pd.to_datetime(text, format="ISO8601")
    except pd.errors.OutOfBoundsDatetime:
        raise
    except ValueError:
        # Rows with different offsets, or some with a zone and some without: parse as UTC
        # and look at each row for its zone (or re-raise what cannot be parsed at all).
        parsed = pd.to_datetime(text, format="ISO8601", utc=True)
        naive = np.fromiter(
            (pd.Timestamp(value).tzinfo is None for value in text), dtype=bool, count=len(text)
        )
        return parsed, naive
    if parsed.dt.tz is None:
        return parsed.dt.tz_localize("UTC"), np.ones(len(text), dtype=bool)
    return parsed.dt.tz_convert("UTC"), np.zeros(len(text), dtype=bool)


def _localise(
    index: pd.DatetimeIndex, naive: np.ndarray, zone_info: tzinfo, text: pd.Series, file: Path
) -> pd.DatetimeIndex:
    """Read the naive rows of ``index`` (wall-clock times parsed as UTC) in ``zone_info``."""
    wall = index[naive].tz_localize(None)
    # The hour that repeats when clocks go back: its first rows are summer time (DST).
    first_seen = ~np.asarray(wall.duplicated(keep="first"))
    local = wall.tz_localize(zone_info, ambiguous=first_seen, nonexistent="NaT")
    skipped = np.asarray(local.isna())
    if skipped.any():
        row = int(np.flatnonzero(naive)[int(skipped.argmax())])
        label = text.index[row]
        raise TraceError(
            f"{file}: line {int(label) + 2}: {text[label]!r} does not exist in {zone_info}"
            " (the clocks skip it when they go forward); are the timestamps really in that"
            " time zone?"
        )
    stamps = index.asi8.copy()
    stamps[naive] = local.tz_convert("UTC").as_unit(index.unit).asi8
    return pd.DatetimeIndex(pd.to_datetime(stamps, unit=index.unit, utc=True))


def _parse_values(raw: pd.Series, file: Path) -> np.ndarray:
    """Values as float64, empty cells as NaN; any other non-number is an error."""
    if pd.api.types.is_numeric_dtype(raw):
        return raw.to_numpy(dtype=np.float64)
    numbers = pd.to_numeric(raw, errors="coerce")
    text = raw.astype("string").str.strip()
    bad = numbers.isna() & raw.notna() & (text != "")
    if bad.any():
        label = raw.index[int(bad.to_numpy().argmax())]
        raise TraceError(
            f"{file}: line {int(label) + 2}: {raw[label]!r} in column {raw.name!r} is not a number"
        )
    return numbers.to_numpy(dtype=np.float64)


def _common_step(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The most common spacing (the smallest one on ties); gaps make the others larger."""
    diffs, counts = np.unique(np.diff(index.asi8), return_counts=True)
    return pd.Timedelta(int(diffs[counts.argmax()]), unit=index.unit)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of True in a boolean vector."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    return starts, np.flatnonzero(edges == -1) - starts


def _to_utc(value: datetime | pd.Timestamp | str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise TraceError(f"cannot read {value!r} as a time ({exc})") from exc
    if pd.isna(ts):
        raise TraceError(f"{value!r} is not a time")
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _fmt(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%d %H:%M UTC")


def _minutes(delta: pd.Timedelta) -> str:
    return f"{delta.total_seconds() / 60:g}"


def _wall(ts: pd.Timestamp) -> str:
    """A wall-clock time read from a file without a zone (shown without one)."""
    return ts.strftime("%Y-%m-%d %H:%M")


def _duration(delta: pd.Timedelta) -> str:
    """E.g. ``45 min``, ``22 h``, ``720 h = 30 days``."""
    hours = delta.total_seconds() / 3600
    if hours < 1:
        return f"{delta.total_seconds() / 60:g} min"
    if hours < 48:
        return f"{hours:g} h"
    return f"{hours:g} h = {hours / 24:.3g} days"
