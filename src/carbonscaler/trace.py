"""Grid carbon-intensity traces: loading, validation, resampling and slicing.

Every format quirk (non-ASCII headers, CRLF line endings, naive timestamps, empty rows,
gaps) is handled here, at the edge. Everything downstream sees a :class:`CarbonTrace`: a
regular, gap-free series in gCO2eq/kWh on a tz-aware UTC index.

Example:
    >>> trace = load_trace("NL_2022_hourly.csv", signal="direct")  # doctest: +SKIP
    >>> trace.window("2022-06-01", 24)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Literal, cast

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import Tick

__all__ = [
    "FORMATS",
    "MAX_SLOTS",
    "MIN_STEP",
    "SIGNALS",
    "CarbonTrace",
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
    """A trace was loaded, but with repairs (e.g. interpolated gaps) the user should know of."""


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

    Raises:
        TraceError: If the series breaks any of the rules above.
    """

    series: pd.Series
    zone: str
    signal: str
    source: str
    fmt: str
    filled: int = 0

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
    path: str | os.PathLike[str], *, signal: str = "direct", zone: str | None = None
) -> CarbonTrace:
    """Load a carbon-intensity CSV file, detecting its format from the header.

    Timestamps become UTC (naive ones are taken as UTC); unsorted rows are sorted; missing
    timestamps and empty values are interpolated in time (edges take the nearest value), and
    a :class:`TraceWarning` says how many.

    Args:
        path: CSV file in one of the :data:`FORMATS`.
        signal: ``"direct"`` or ``"lca"`` for Electricity Maps exports (case-insensitive).
            The other formats hold one signal, reported as ``"avg"``; ``"avg"`` or the
            default ``"direct"`` select it.
        zone: For files that name their zone(s) (Electricity Maps ``Zone Id``, reference
            ``zone_name``, vessim zone columns) the zone to select; for files that do not
            (EIA, plain) the label to use instead of the one derived from the file name.

    Raises:
        TraceError: If the file is missing, empty or of unknown format, lacks the requested
            signal or zone, has unparsable, duplicate or off-grid timestamps, non-numeric
            or negative values.
    """
    file = Path(path)
    if not file.is_file():
        raise TraceError(f"{file}: no such file")
    wanted = _normalise_signal(signal)
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
    times = _parse_times(frame[layout.time_column], file)
    values = _parse_values(frame[column], file)
    return from_series(
        pd.Series(values, index=times),
        zone=zone_label,
        signal=label,
        source=str(file),
        fmt=layout.fmt,
    )


def from_series(
    series: pd.Series,
    *,
    zone: str,
    signal: str = "avg",
    source: str = "<series>",
    fmt: str = "plain",
) -> CarbonTrace:
    """Build a trace from a time-indexed series, repairing what can be repaired.

    Args:
        series: gCO2eq/kWh on a DatetimeIndex (naive = UTC); may be unsorted, irregular or
            contain NaN.
        zone: Zone label.
        signal: Signal label (see :data:`SIGNALS`).
        source: Where the data came from, for messages and reports.
        fmt: Format label.

    Raises:
        TraceError: If the index is not a DatetimeIndex, has duplicates or timestamps off the
            regular step, or the values are non-numeric, infinite, negative or all missing.
    """
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
    if filled:
        s = s.interpolate(method="time").ffill().bfill()
        run_start, run_length = _longest_run(missing)
        warnings.warn(
            f"{source}: interpolated {filled} of {len(s)} values ({100 * filled / len(s):.3g} %)"
            f" that were empty or missing; longest gap {run_length} steps from"
            f" {_fmt(full[run_start])}",
            TraceWarning,
            stacklevel=2,
        )
    return CarbonTrace(series=s, zone=zone, signal=signal, source=source, fmt=fmt, filled=filled)


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


def _parse_times(raw: pd.Series, file: Path) -> pd.DatetimeIndex:
    """Parse a timestamp column to UTC: offsets are honoured, naive times taken as UTC."""
    if raw.isna().any():
        line = int(raw.index[int(raw.isna().to_numpy().argmax())]) + 2  # + header, 1-based
        raise TraceError(f"{file}: line {line} has no timestamp in column {raw.name!r}")
    try:
        if pd.api.types.is_numeric_dtype(raw):
            # Unix epoch; values this large can only be milliseconds.
            unit: Literal["s", "ms"] = "ms" if float(raw.abs().max()) > 1e11 else "s"
            parsed = pd.to_datetime(raw, unit=unit, utc=True)
        else:
            parsed = pd.to_datetime(raw.astype(str).str.strip(), format="ISO8601", utc=True)
    except (TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, OverflowError | pd.errors.OutOfBoundsDatetime):
            raise TraceError(
                f"{file}: a timestamp in column {raw.name!r} is outside the supported range"
                f" {_TIME_RANGE_TEXT} ({exc})"
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
    return pd.DatetimeIndex(parsed)


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


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """Start and length of the longest run of True in a non-empty boolean mask."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    lengths = np.flatnonzero(edges == -1) - starts
    i = int(lengths.argmax())
    return int(starts[i]), int(lengths[i])


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
