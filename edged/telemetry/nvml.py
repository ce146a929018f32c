"""Discrete NVIDIA GPUs through NVML (``nvidia-ml-py``), an optional extra.

``pynvml`` is imported only inside :func:`open_nvml`; no library, no driver or no GPU all mean
"no NVML", which is the normal state of a CPU box or a Jetson before Thor, and is not an error.
GPU memory from NVML is reported for the operator only: capacity decisions read
``/proc/meminfo`` and the tier budgets, as the SPEC requires.
"""

from __future__ import annotations

from typing import Protocol

from edged.telemetry.snapshot import GpuInfo


class _Utilization(Protocol):
    gpu: int  # percent


class _Memory(Protocol):
    total: int
    used: int


class Nvml(Protocol):
    """The pynvml names the source uses (pynvml has no types; tests pass a stand-in)."""

    NVMLError: type[Exception]
    NVML_CLOCK_GRAPHICS: int

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object: ...  # noqa: N802 - NVML's

    def nvmlDeviceGetName(self, handle: object) -> str | bytes: ...  # noqa: N802

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> _Utilization: ...  # noqa: N802

    def nvmlDeviceGetClockInfo(self, handle: object, clock: int) -> int: ...  # noqa: N802

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> _Memory: ...  # noqa: N802

    def nvmlShutdown(self) -> None: ...  # noqa: N802


class NvmlSource:
    """An initialised NVML with at least one device; :meth:`close` shuts it down."""

    def __init__(self, nvml: Nvml, count: int) -> None:
        self._nvml = nvml
        self._count = count

    def read(self) -> tuple[GpuInfo, ...]:
        return tuple(self._device(i) for i in range(self._count))

    def _device(self, index: int) -> GpuInfo:
        n = self._nvml
        handle = n.nvmlDeviceGetHandleByIndex(index)
        name = n.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else str(name)
        load = freq = total = used = None
        try:
            load = float(n.nvmlDeviceGetUtilizationRates(handle).gpu)
        except n.NVMLError:  # not supported on some boards (and MIG slices)
            pass
        try:
            freq = int(n.nvmlDeviceGetClockInfo(handle, n.NVML_CLOCK_GRAPHICS)) * 1_000_000
        except n.NVMLError:
            pass
        try:
            mem = n.nvmlDeviceGetMemoryInfo(handle)
            total, used = int(mem.total), int(mem.used)
        except n.NVMLError:  # unified-memory GPUs (Thor, GB10) have no separate framebuffer
            pass
        return GpuInfo(name=name, load_percent=load, freq_hz=freq, memory_total_bytes=total,
                       memory_used_bytes=used, source="nvml")

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # shutting down a broken NVML must not break the daemon's stop
            pass


def open_nvml() -> NvmlSource | None:
    """An NVML session, or None when there is no library, driver or GPU."""
    try:
        import pynvml  # optional extra: nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded / ...: no NVIDIA driver here
        return None
    try:
        count = int(pynvml.nvmlDeviceGetCount())
    except Exception:
        count = 0
    if count == 0:
        pynvml.nvmlShutdown()
        return None
    return NvmlSource(pynvml, count)
