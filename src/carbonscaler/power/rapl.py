"""RAPL energy counters through the Linux powercap sysfs tree.

Layout (``/sys/class/powercap``, or the same tree anywhere for tests)::

    intel-rapl:0/name                   package-0
    intel-rapl:0/energy_uj              cumulative energy, µJ
    intel-rapl:0/max_energy_range_uj    the counter wraps to 0 after this value
    intel-rapl:0/intel-rapl:0:0/name    core     (inside the package)
    intel-rapl:0/intel-rapl:0:1/name    uncore   (inside the package)
    intel-rapl:0/intel-rapl:0:2/name    dram
    intel-rapl:1/name                   package-1 (second socket) or psys (platform)

The class folder also lists every subzone flat (``intel-rapl:0:0`` beside ``intel-rapl:0``),
as links into the device tree; AMD's driver uses the same names. We read each *package*
zone once and sum the packages. Core and uncore are parts of their package, so adding them
would count that energy twice — the reference summed every zone it found. DRAM is the
exception: Intel documents the package domain as excluding memory, so ``include_dram``
adds the DRAM subzones explicitly; it is off by default to match the package-only figure
Kepler reports as ``zone="package"``. ``psys`` (whole platform, includes the packages)
and ``intel-rapl-mmio`` (a second interface to package-0) are never added.

Counters wrap at ``max_energy_range_uj``; a counter that went down is taken as one wrap
when the implied power is plausible (below ``max_package_w``), otherwise as a reset (the
driver reloaded), in which case this read raises :class:`MeterError` and the next one
starts afresh. Sampling must be faster than one wrap period (max range / power, typically
tens of minutes); the power server samples every second.

Since Linux 5.10 ``energy_uj`` is readable by root only (CVE-2020-8694): run the power
server as root, or grant read access to the files.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from carbonscaler.power.meter import (
    MeterError,
    MeterUnavailable,
    Monotonic,
    PowerReading,
    _IntervalMeter,
)

__all__ = ["DEFAULT_POWERCAP_ROOT", "RaplDomain", "RaplMeter", "find_domains"]

DEFAULT_POWERCAP_ROOT = Path("/sys/class/powercap")
_ZONE = re.compile(r"^intel-rapl:(\d+)$")


@dataclass(frozen=True)
class RaplDomain:
    """One counter: a package, or a DRAM subzone when asked for."""

    name: str
    """The zone's ``name``, e.g. ``package-0`` or ``dram``."""
    path: Path
    """The zone's folder."""
    max_energy_uj: int
    """The counter wraps after this value."""


def _read_int(path: Path) -> int:
    text = path.read_text().strip()
    try:
        return int(text)
    except ValueError:
        raise MeterError(f"{path} holds {text[:40]!r}, not a whole number of µJ") from None


def _domain(path: Path) -> RaplDomain:
    name = (path / "name").read_text().strip()
    return RaplDomain(name, path, _read_int(path / "max_energy_range_uj"))


def find_domains(
    root: str | os.PathLike[str] = DEFAULT_POWERCAP_ROOT, *, include_dram: bool = False
) -> list[RaplDomain]:
    """The package zones under a powercap root (and their DRAM subzones if asked).

    Args:
        root: ``/sys/class/powercap`` or a tree laid out like it (the device tree's
            ``.../powercap`` with an ``intel-rapl`` folder works too).
        include_dram: Add DRAM subzones, which the package counter does not contain.

    Raises:
        MeterUnavailable: If there is no package zone, or the files cannot be read.
    """
    base = Path(root)
    folders = [base, base / "intel-rapl"]
    zones: dict[Path, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for entry in folder.iterdir():
                if _ZONE.match(entry.name) and entry.is_dir():
                    zones.setdefault(entry.resolve(), entry)
    domains: list[RaplDomain] = []
    try:
        for path in sorted(zones.values(), key=lambda p: int(p.name.split(":")[1])):
            domain = _domain(path)
            if not domain.name.startswith("package"):
                continue  # psys contains the packages; counting it too would double count
            domains.append(domain)
            if include_dram:
                for sub in sorted(path.glob(f"{path.name}:*")):
                    subdomain = _domain(sub)
                    if subdomain.name == "dram":
                        domains.append(subdomain)
    except PermissionError as exc:
        raise MeterUnavailable(
            f"cannot read {exc.filename}: RAPL counters are root-only since Linux 5.10; run"
            " the power server as root or grant read access to the energy_uj files"
        ) from None
    except (OSError, MeterError) as exc:
        raise MeterUnavailable(f"cannot read the RAPL zones under {base}: {exc}") from None
    if not domains:
        raise MeterUnavailable(
            f"no RAPL package zone under {base} (no intel-rapl:N with a package-N name); this"
            " is usual in VMs, containers and on CPUs without RAPL"
        )
    return domains


class RaplMeter(_IntervalMeter):
    """Node power from the RAPL package counters (sum over sockets).

    Args:
        root: The powercap root; tests point it at a tree they lay out.
        include_dram: Also count the DRAM subzones (see the module docs).
        max_package_w: Above this implied power per counter, a counter that went down is
            taken as a reset rather than a wrap.
        monotonic: Clock for the intervals, replaceable in tests.

    Raises:
        MeterUnavailable: If there is no readable package zone.
    """

    source = "measured:rapl"

    def __init__(
        self,
        root: str | os.PathLike[str] = DEFAULT_POWERCAP_ROOT,
        *,
        include_dram: bool = False,
        max_package_w: float = 1000.0,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.domains = find_domains(root, include_dram=include_dram)
        self.max_package_w = max_package_w
        self._last_uj = self._counters()
        super().__init__(monotonic)

    def _counters(self) -> list[int]:
        try:
            return [_read_int(d.path / "energy_uj") for d in self.domains]
        except PermissionError as exc:
            raise MeterUnavailable(
                f"cannot read {exc.filename}: RAPL counters are root-only since Linux 5.10"
            ) from None
        except OSError as exc:
            raise MeterError(f"cannot read a RAPL counter: {exc}") from None

    def read(self) -> PowerReading:
        counters = self._counters()
        elapsed_s = self._interval_s()
        previous, self._last_uj = self._last_uj, counters
        total_uj = 0
        for domain, before, now in zip(self.domains, previous, counters, strict=True):
            delta_uj = now - before
            if delta_uj < 0:
                wrapped_uj = now + domain.max_energy_uj - before
                if elapsed_s <= 0 or wrapped_uj / 1e6 / elapsed_s > self.max_package_w:
                    raise MeterError(
                        f"RAPL counter {domain.name} at {domain.path} went from {before} to"
                        f" {now} µJ: a reset (driver reload), not a wrap; reading again"
                    )
                delta_uj = wrapped_uj
            total_uj += delta_uj
        watts = total_uj / 1e6 / elapsed_s if elapsed_s > 0 else 0.0
        return PowerReading(watts, elapsed_s, self.source)
