"""Scaling profiles: throughput R(k) and power P(k) of a job on k servers.

A profile is the only thing the planner knows about a job's elasticity. It is read from the
reference CSV format (``nodes,throughput,power``, one row per server count, an optional leading
``0,0.0,0.0`` row) or built from a parametric shape for what-if work ("scales like Amdahl with a
5 % serial part").
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from carbonscaler.outputs import atomic_path

__all__ = [
    "MAX_SERVERS",
    "ProfileError",
    "ProfileWarning",
    "ScalingProfile",
    "amdahl_profile",
    "linear_profile",
    "load_profile",
    "parse_parametric_spec",
    "parse_profile_csv",
    "parse_profile_spec",
    "power_law_profile",
]

FloatArray = NDArray[np.float64]

MAX_SERVERS = 10_000
"""Most servers a parametric profile (``amdahl:0.05,servers=N``) may have: bounds the work
a command line can ask for."""


class ProfileError(ValueError):
    """A scaling profile that cannot be used; the message says which row and how to fix it."""


class ProfileWarning(UserWarning):
    """A profile that is valid but unusual (non-concave, throughput falling with more servers)."""


@dataclass(frozen=True, eq=False)
class ScalingProfile:
    """Throughput and power of one job for 1..N servers.

    Index ``k`` of :attr:`throughput` and :attr:`power_w` is the value at ``k`` servers; index 0
    is always 0 (a suspended job does no work and draws nothing).

    Args:
        throughput: work units per hour at 0..N servers (length N + 1, first element 0).
        power_w: average power in watts at 0..N servers (length N + 1, first element 0).
        name: label used in reports.

    Raises:
        ProfileError: if the arrays are malformed (see :func:`validate_profile_arrays`).
    """

    throughput: FloatArray
    power_w: FloatArray
    name: str = "profile"

    def __post_init__(self) -> None:
        tp = np.asarray(self.throughput, dtype=np.float64)
        pw = np.asarray(self.power_w, dtype=np.float64)
        _validate(tp, pw, self.name)
        tp.setflags(write=False)
        pw.setflags(write=False)
        object.__setattr__(self, "throughput", tp)
        object.__setattr__(self, "power_w", pw)

    @property
    def max_servers(self) -> int:
        """The largest server count the profile describes."""
        return len(self.throughput) - 1

    def marginal_capacity(self) -> FloatArray:
        """R(k) - R(k-1) for k = 1..N (index 0 is the first server)."""
        return np.diff(self.throughput)

    def marginal_power_w(self) -> FloatArray:
        """P(k) - P(k-1) for k = 1..N (index 0 is the first server)."""
        return np.diff(self.power_w)

    def increments(self, min_servers: int, max_servers: int) -> tuple[FloatArray, FloatArray]:
        """Work and power of the planner's per-slot increments for bounds ``m..M``.

        The first increment takes a slot from 0 to ``m`` servers as one block; each further
        one adds a single server.

        Returns:
            ``(d_work, d_power_w)``, each of length ``M - m + 1``.

        Raises:
            ProfileError: if the bounds are outside the profile.
        """
        self.check_bounds(min_servers, max_servers)
        levels = np.arange(min_servers, max_servers + 1)
        d_work = np.diff(self.throughput[levels], prepend=0.0)
        d_power = np.diff(self.power_w[levels], prepend=0.0)
        return d_work, d_power

    def is_concave(self, min_servers: int = 1, max_servers: int | None = None) -> bool:
        """Whether marginal work per marginal watt never rises with ``k`` within ``m..M``.

        This is the condition under which the greedy planner is provably optimal (the paper's
        Theorem); the first block ``0 -> m`` counts as one increment.
        """
        top = self.max_servers if max_servers is None else max_servers
        d_work, d_power = self.increments(min_servers, top)
        efficiency = _efficiency(d_work, d_power)
        return bool(np.all(np.diff(efficiency) <= 1e-12 * np.maximum(1.0, np.abs(efficiency[:-1]))))

    def check_bounds(self, min_servers: int, max_servers: int) -> None:
        """Raise :class:`ProfileError` unless ``1 <= m <= M <= N``."""
        if min_servers < 1:
            raise ProfileError(f"min servers must be at least 1, got {min_servers}")
        if max_servers < min_servers:
            raise ProfileError(
                f"max servers ({max_servers}) is below min servers ({min_servers}); "
                "set --max to at least --min"
            )
        if max_servers > self.max_servers:
            raise ProfileError(
                f"profile {self.name!r} describes 1..{self.max_servers} servers but max servers "
                f"is {max_servers}; lower --max to {self.max_servers} or profile the job at "
                "more servers"
            )

    def truncated(self, max_servers: int) -> ScalingProfile:
        """The same profile limited to ``1..max_servers``."""
        self.check_bounds(1, max_servers)
        return ScalingProfile(
            self.throughput[: max_servers + 1].copy(),
            self.power_w[: max_servers + 1].copy(),
            self.name,
        )

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the profile in the reference CSV format (to a temporary file, then renamed).

        Raises:
            OutputError: If the file cannot be written.
        """
        with atomic_path(path, "profile") as tmp, tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["nodes", "throughput", "power"])
            for k in range(self.max_servers + 1):
                writer.writerow([k, repr(float(self.throughput[k])), repr(float(self.power_w[k]))])


def _efficiency(d_work: FloatArray, d_power: FloatArray) -> FloatArray:
    """Marginal work per marginal watt; a free increment is infinitely efficient."""
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = np.where(d_power > 0, d_work / np.where(d_power > 0, d_power, 1.0), np.inf)
    return np.where((d_power <= 0) & (d_work <= 0), 0.0, eff)


def _validate(tp: FloatArray, pw: FloatArray, name: str) -> None:
    if tp.ndim != 1 or pw.ndim != 1 or len(tp) != len(pw):
        raise ProfileError(f"profile {name!r}: throughput and power must be 1-D of equal length")
    if len(tp) < 2:
        raise ProfileError(f"profile {name!r} has no server rows; add at least the 1-server row")
    if not (np.all(np.isfinite(tp)) and np.all(np.isfinite(pw))):
        raise ProfileError(f"profile {name!r} contains non-finite values")
    if tp[0] != 0.0 or pw[0] != 0.0:
        raise ProfileError(f"profile {name!r}: the 0-server entry must be 0 work and 0 W")
    for k in range(1, len(tp)):
        if tp[k] <= 0:
            raise ProfileError(
                f"profile {name!r}, row nodes={k}: throughput must be positive, got {tp[k]}"
            )
        if pw[k] <= 0:
            raise ProfileError(
                f"profile {name!r}, row nodes={k}: power must be positive, got {pw[k]}"
            )
        if pw[k] < pw[k - 1]:
            raise ProfileError(
                f"profile {name!r}, row nodes={k}: power {pw[k]} W is below the {pw[k - 1]} W "
                f"at {k - 1} servers; power must not decrease with more servers"
            )


def _warn_shape(profile: ScalingProfile) -> None:
    d_work = profile.marginal_capacity()
    falling = [k + 1 for k in range(len(d_work)) if d_work[k] < 0]
    if falling:
        warnings.warn(
            f"profile {profile.name!r}: throughput falls when going to {falling} servers "
            "(communication overhead); the planner will not use those counts unless it must",
            ProfileWarning,
            stacklevel=3,
        )
    elif not profile.is_concave():
        warnings.warn(
            f"profile {profile.name!r} is not concave (marginal work per watt rises somewhere); "
            "greedy is not guaranteed optimal, use the 'exact' policy to check",
            ProfileWarning,
            stacklevel=3,
        )


def load_profile(path: str | os.PathLike[str]) -> ScalingProfile:
    """Read a profile in the reference CSV format (see :func:`parse_profile_csv`).

    Args:
        path: CSV file.

    Raises:
        ProfileError: naming the file and row that is wrong.
        FileNotFoundError: if the file does not exist.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"profile file not found: {p}")
    with p.open(newline="", encoding="utf-8-sig") as fh:
        text = fh.read()
    return parse_profile_csv(text, name=p.stem, where=str(p))


def parse_profile_csv(text: str, *, name: str, where: str | None = None) -> ScalingProfile:
    """A profile from CSV text in the reference format (a file's contents, an upload).

    The header must name ``nodes``, ``throughput`` and ``power`` (any order, extra columns
    ignored). Node counts must run 1..N without gaps or duplicates; a leading 0 row is allowed.

    Args:
        text: the CSV, header first.
        name: the profile's name.
        where: how messages name the text (a file path); default ``name``.

    Raises:
        ProfileError: naming ``where`` and the row that is wrong.
    """
    where = where or name
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    missing = {"nodes", "throughput", "power"} - set(fields)
    if missing:
        raise ProfileError(
            f"{where}: header must contain nodes,throughput,power; missing {sorted(missing)} "
            f"(found {fields})"
        )
    rows: dict[int, tuple[float, float]] = {}
    for line_no, raw in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        try:
            nodes_f = float(row["nodes"])
            tp = float(row["throughput"])
            pw = float(row["power"])
        except ValueError as exc:
            raise ProfileError(f"{where}, line {line_no}: not a number ({exc})") from None
        if not nodes_f.is_integer() or nodes_f < 0:
            raise ProfileError(f"{where}, line {line_no}: nodes must be a whole number >= 0")
        nodes = int(nodes_f)
        if nodes in rows:
            raise ProfileError(f"{where}, line {line_no}: duplicate row for nodes={nodes}")
        if nodes == 0 and (tp != 0.0 or pw != 0.0):
            raise ProfileError(f"{where}, line {line_no}: the nodes=0 row must be 0,0.0,0.0")
        rows[nodes] = (tp, pw)
    rows.pop(0, None)
    if not rows:
        raise ProfileError(f"{where}: no rows with nodes >= 1")
    top = max(rows)
    gaps = [k for k in range(1, top + 1) if k not in rows]
    if gaps:
        raise ProfileError(f"{where}: node counts must run 1..{top} without gaps; missing {gaps}")
    tp_arr = np.array([0.0] + [rows[k][0] for k in range(1, top + 1)])
    pw_arr = np.array([0.0] + [rows[k][1] for k in range(1, top + 1)])
    try:
        profile = ScalingProfile(tp_arr, pw_arr, name=name)
    except ProfileError as exc:
        raise ProfileError(f"{where}: {exc}") from None
    _warn_shape(profile)
    return profile


def _parametric(
    speedup: FloatArray, base_throughput: float, power_per_server_w: float, name: str
) -> ScalingProfile:
    if base_throughput <= 0 or power_per_server_w <= 0:
        raise ProfileError("base throughput and power per server must be positive")
    tp = np.concatenate([[0.0], base_throughput * speedup])
    pw = np.concatenate([[0.0], power_per_server_w * np.arange(1, len(speedup) + 1)])
    return ScalingProfile(tp, pw, name=name)


def linear_profile(
    max_servers: int, *, base_throughput: float = 1.0, power_per_server_w: float = 60.0
) -> ScalingProfile:
    """Perfect scaling: R(k) = k · R(1)."""
    _check_n(max_servers)
    k = np.arange(1, max_servers + 1, dtype=np.float64)
    return _parametric(k, base_throughput, power_per_server_w, f"linear{max_servers}")


def amdahl_profile(
    max_servers: int,
    serial_fraction: float,
    *,
    base_throughput: float = 1.0,
    power_per_server_w: float = 60.0,
) -> ScalingProfile:
    """Amdahl's law: speedup(k) = 1 / (s + (1 - s) / k) for serial fraction ``s``."""
    _check_n(max_servers)
    if not 0.0 <= serial_fraction < 1.0:
        raise ProfileError(f"serial fraction must be in [0, 1), got {serial_fraction}")
    k = np.arange(1, max_servers + 1, dtype=np.float64)
    speedup = 1.0 / (serial_fraction + (1.0 - serial_fraction) / k)
    return _parametric(
        speedup, base_throughput, power_per_server_w, f"amdahl{serial_fraction:g}x{max_servers}"
    )


def power_law_profile(
    max_servers: int,
    exponent: float,
    *,
    base_throughput: float = 1.0,
    power_per_server_w: float = 60.0,
) -> ScalingProfile:
    """Power-law scaling: speedup(k) = k ** alpha, 0 < alpha <= 1 (1 is linear)."""
    _check_n(max_servers)
    if not 0.0 < exponent <= 1.0:
        raise ProfileError(f"power-law exponent must be in (0, 1], got {exponent}")
    k = np.arange(1, max_servers + 1, dtype=np.float64)
    return _parametric(
        k**exponent, base_throughput, power_per_server_w, f"powerlaw{exponent:g}x{max_servers}"
    )


def _check_n(max_servers: int) -> None:
    if max_servers < 1:
        raise ProfileError(f"a profile needs at least 1 server, got {max_servers}")


def parse_profile_spec(spec: str, *, default_servers: int = 8) -> ScalingProfile:
    """A profile from a file path or a parametric spec (:func:`parse_parametric_spec`).

    Raises:
        ProfileError: on a malformed spec (the message lists the accepted forms).
        FileNotFoundError: if ``spec`` looks like a path that does not exist.
    """
    if os.path.exists(spec) or spec.endswith(".csv") or os.sep in spec:
        return load_profile(spec)
    return parse_parametric_spec(spec, default_servers=default_servers)


def parse_parametric_spec(spec: str, *, default_servers: int = 8) -> ScalingProfile:
    """A profile from a parametric spec alone; never reads a file (for specs from a web form).

    Specs: ``linear``, ``amdahl:0.05``, ``powerlaw:0.8``, each optionally followed by
    ``,servers=N,power=W,throughput=R`` (e.g. ``amdahl:0.05,servers=16,power=210``).

    Args:
        spec: the spec.
        default_servers: servers when the spec names none.

    Raises:
        ProfileError: on a malformed spec (the message lists the accepted forms).
    """
    head, *opts = [part.strip() for part in spec.split(",")]
    kind, _, arg = head.partition(":")
    options: dict[str, float] = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep or key not in {"servers", "power", "throughput"}:
            raise ProfileError(f"unknown profile option {opt!r}; use servers=, power=, throughput=")
        try:
            options[key] = float(value)
        except ValueError:
            raise ProfileError(f"profile option {key} needs a number, got {value!r}") from None
    wanted = options.get("servers", default_servers)
    if not (math.isfinite(wanted) and wanted == int(wanted) and 1 <= wanted <= MAX_SERVERS):
        raise ProfileError(
            f"a parametric profile has 1 to {MAX_SERVERS} servers (servers= or --max),"
            f" not {wanted:g}"
        )
    servers = int(wanted)
    power = options.get("power", 60.0)
    base = options.get("throughput", 1.0)
    try:
        if kind == "linear" and not arg:
            return linear_profile(servers, base_throughput=base, power_per_server_w=power)
        if kind == "amdahl" and arg:
            return amdahl_profile(
                servers, float(arg), base_throughput=base, power_per_server_w=power
            )
        if kind in {"powerlaw", "power-law"} and arg:
            return power_law_profile(
                servers, float(arg), base_throughput=base, power_per_server_w=power
            )
    except ValueError as exc:
        if isinstance(exc, ProfileError):
            raise
        raise ProfileError(f"bad number in profile spec {spec!r}: {exc}") from None
    raise ProfileError(
        f"profile {spec!r} is neither an existing CSV file nor a known shape; use a path, "
        "'linear', 'amdahl:SERIAL_FRACTION' or 'powerlaw:EXPONENT', optionally with "
        "',servers=N,power=W,throughput=R'"
    )
