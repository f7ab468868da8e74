"""NVIDIA GPU power through NVML (the ``nvidia-ml-py`` package, module ``pynvml``).

Per GPU we prefer the board's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``,
mJ since the driver loaded; Volta and newer), which integrates power exactly between our
reads. GPUs without it report instantaneous power (``nvmlDeviceGetPowerUsage``, mW); we
average the value at the start and the end of each interval (trapezoid), the best we can
do with point samples. Both are measurements (``measured:nvml``).

Without the package or the driver (this machine, VMs, CPU nodes) the meter raises
:class:`MeterUnavailable` at creation, so a :class:`CompositeMeter` falls back cleanly.
Install with ``pip install carbonscaler[gpu]``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from carbonscaler.power.meter import (
    MeterError,
    MeterUnavailable,
    Monotonic,
    PowerReading,
    _IntervalMeter,
)

__all__ = ["NvmlMeter"]


def _load() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise MeterUnavailable(
            "NVML bindings are not installed; `pip install carbonscaler[gpu]` (nvidia-ml-py)"
        ) from None


class _Gpu:
    """One device and its last counter (mJ) or power (W) value."""

    def __init__(self, nvml: Any, index: int) -> None:
        self.nvml = nvml
        self.index = index
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        try:
            self.last: float = float(nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
            self.has_counter = True
        except nvml.NVMLError:
            self.has_counter = False
            self.last = self._power_w()

    def _power_w(self) -> float:
        return float(self.nvml.nvmlDeviceGetPowerUsage(self.handle)) / 1000.0

    def energy_j(self, elapsed_s: float) -> float:
        """Energy since the previous call."""
        if not self.has_counter:
            now_w = self._power_w()
            energy = (self.last + now_w) / 2 * elapsed_s
            self.last = now_w
            return energy
        now_mj = float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        before, self.last = self.last, now_mj
        if now_mj < before:
            raise MeterError(
                f"GPU {self.index}: the NVML energy counter went back ({before:.0f} ->"
                f" {now_mj:.0f} mJ): the driver was reloaded; reading again"
            )
        return (now_mj - before) / 1000.0


class NvmlMeter(_IntervalMeter):
    """Total power of the node's NVIDIA GPUs (or of the ones listed).

    Args:
        indices: GPU indices to count; default all.
        module: The NVML bindings; default ``pynvml``. Tests pass a double.
        monotonic: Clock for the intervals, replaceable in tests.

    Raises:
        MeterUnavailable: If the bindings, the driver or any GPU is missing.
    """

    source = "measured:nvml"

    def __init__(
        self,
        indices: Sequence[int] | None = None,
        *,
        module: ModuleType | None = None,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        nvml: Any = module if module is not None else _load()
        self._nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise MeterUnavailable(f"NVML cannot start (no NVIDIA driver?): {exc}") from None
        try:
            count = int(nvml.nvmlDeviceGetCount())
            wanted = list(range(count)) if indices is None else list(indices)
            missing = [i for i in wanted if not 0 <= i < count]
            if missing:
                raise MeterUnavailable(f"no NVIDIA GPU {missing} here; this node has {count}")
            if not wanted:
                raise MeterUnavailable("no NVIDIA GPU on this node")
            self.gpus = [_Gpu(nvml, i) for i in wanted]
        except nvml.NVMLError as exc:
            nvml.nvmlShutdown()
            raise MeterUnavailable(f"NVML cannot read the GPUs: {exc}") from None
        except MeterUnavailable:
            nvml.nvmlShutdown()
            raise
        super().__init__(monotonic)
        self._closed = False

    @property
    def uses_counters(self) -> list[bool]:
        """Per GPU: True when read from the energy counter, False from sampled power."""
        return [g.has_counter for g in self.gpus]

    def read(self) -> PowerReading:
        elapsed_s = self._interval_s()
        total_j = 0.0
        failures: list[str] = []
        # Every GPU is read even if one fails, so all restart from the same instant.
        for gpu in self.gpus:
            try:
                total_j += gpu.energy_j(elapsed_s)
            except MeterError as exc:
                failures.append(str(exc))
            except self._nvml.NVMLError as exc:
                failures.append(f"GPU {gpu.index}: NVML read failed: {exc}")
        if failures:
            raise MeterError("; ".join(failures))
        watts = total_j / elapsed_s if elapsed_s > 0 else 0.0
        return PowerReading(watts, elapsed_s, self.source)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._nvml.nvmlShutdown()
