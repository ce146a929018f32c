"""Device memory an engine worker holds that its RSS does not show, for measured footprints.

A CUDA or TensorRT worker allocates outside its anonymous RSS: on a Jetson from NvMap (the GPU
takes it from the same RAM; ``/proc/meminfo``'s ``NvMapMemUsed`` counts it, system-wide), on a
discrete GPU in device memory (NVML reports it per process). ``WorkerPool.load`` reads a meter
before and after a load and adds the growth to the model's footprint when the session runs on
a GPU, so the planner accounts what the GPU really took, not just the worker's RSS.

NvMap is system-wide: two GPU loads that overlap both count the other's growth (too much, never
too little). NVML is per process and exact. Neither is imported or read on a CPU-only device.
The engines may not import edged.telemetry (sibling layers), so the one meminfo line is read
here; the root is the telemetry root, so a recorded Jetson tree stands in for a real one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

log = logging.getLogger("edged.engines")

CPU_PROVIDERS = ("CPUExecutionProvider",)


class Meter(Protocol):
    """Bytes of device memory as the meter sees them for a worker pid (None: cannot tell now).
    ``per_process``: whether it tells one process's device memory (NVML, NvMap clients) rather
    than the system's (NvMap's meminfo line)."""

    per_process: bool

    def __call__(self, pid: int) -> int | None: ...


class NvmlProcess(Protocol):
    """A row of ``nvmlDeviceGetComputeRunningProcesses`` (pynvml's ``c_nvmlProcessInfo_t``)."""

    pid: int
    usedGpuMemory: int | None  # noqa: N815 - NVML's name; None: not available (e.g. MIG)


class Nvml(Protocol):
    """The pynvml functions the meter calls, on an initialised NVML (pynvml has no types)."""

    def nvmlDeviceGetCount(self) -> int: ...  # noqa: N802 - NVML's names

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object: ...  # noqa: N802

    def nvmlDeviceGetComputeRunningProcesses(  # noqa: N802
            self, handle: object) -> Sequence[NvmlProcess]: ...


def read_nvmap(meminfo: Path) -> int | None:
    """``NvMapMemUsed`` in bytes, or None where there is no such line (not a Jetson)."""
    try:
        with meminfo.open() as f:
            for line in f:
                if line.startswith("NvMapMemUsed:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class NvmapMeter:
    """NvMap's meminfo line: system-wide, good for the growth over one load, not for telling
    workers apart."""

    per_process = False

    def __init__(self, meminfo: Path) -> None:
        self._meminfo = meminfo

    def __call__(self, pid: int) -> int | None:
        return read_nvmap(self._meminfo)


def nvmap_meter(root: Path) -> NvmapMeter | None:
    """The Jetson meter, if ``root``'s meminfo has NvMap lines."""
    meminfo = root / "proc" / "meminfo"
    return NvmapMeter(meminfo) if read_nvmap(meminfo) is not None else None


NVMAP_CLIENTS = Path("sys/kernel/debug/nvmap/iovmm/clients")


def read_nvmap_clients(path: Path) -> dict[int, int] | None:
    """NvMap's per-process allocations (debugfs, root only): ``CLIENT PROCESS PID SIZE`` rows,
    sizes in KiB with a ``K`` suffix, a process's several clients summed; None if unreadable."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    out: dict[int, int] = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) < 4 or parts[0] == "total":
            continue
        try:
            pid, size = int(parts[-2]), parts[-1]
            kib = int(size[:-1]) if size[-1:] in "Kk" else int(size) // 1024
        except (ValueError, IndexError):
            continue
        out[pid] = out.get(pid, 0) + kib * 1024
    return out


class NvmapClientsMeter:
    """A Jetson worker's own NvMap bytes (debugfs clients file): per process, so growth after
    real inferences can be told apart per worker, like NVML's on a discrete GPU."""

    per_process = True

    def __init__(self, path: Path) -> None:
        self._path = path

    def __call__(self, pid: int) -> int | None:
        clients = read_nvmap_clients(self._path)
        return None if clients is None else clients.get(pid, 0)


def nvmap_clients_meter(root: Path) -> NvmapClientsMeter | None:
    path = root / NVMAP_CLIENTS
    return NvmapClientsMeter(path) if read_nvmap_clients(path) is not None else None


def per_process(meter: Meter | None) -> bool:
    """Whether ``meter`` tells one process's device memory (NVML, NvMap clients) rather than
    the system's (NvMap's meminfo line)."""
    return meter is not None and meter.per_process


class NvmlMeter:
    """Device memory of one process over every GPU, through an initialised NVML (``pynvml``
    or a stand-in with the same functions)."""

    per_process = True

    def __init__(self, nvml: Nvml) -> None:
        self._nvml = nvml

    def __call__(self, pid: int) -> int | None:
        n = self._nvml
        try:
            total = 0
            for i in range(int(n.nvmlDeviceGetCount())):
                handle = n.nvmlDeviceGetHandleByIndex(i)
                for p in n.nvmlDeviceGetComputeRunningProcesses(handle):
                    if p.pid == pid and p.usedGpuMemory is not None:
                        total += int(p.usedGpuMemory)
            return total
        except Exception as exc:  # noqa: BLE001 - NVMLError and friends: no reading now
            log.debug("NVML process memory: %s", exc)
            return None


def open_nvml_meter() -> NvmlMeter | None:
    """NVML's meter when nvidia-ml-py, a driver and a GPU are all there; else None."""
    try:
        import pynvml  # optional extra (nvml)
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        if int(pynvml.nvmlDeviceGetCount()) == 0:
            return None
    except Exception:  # noqa: BLE001 - no driver / no library: a CPU device
        return None
    return NvmlMeter(pynvml)


def open_meter(root: Path, use_nvml: bool = True) -> Meter | None:
    """The device's meter: on a Jetson NvMap per process (debugfs, when readable) else NvMap
    system-wide; else NVML (when allowed and present); else None."""
    return (nvmap_clients_meter(root) or nvmap_meter(root)
            or (open_nvml_meter() if use_nvml else None))


def gpu_growth(providers: Sequence[str], before: int | None, after: int | None) -> int:
    """What a load added on the GPU: the meter's growth, for a session that runs on a GPU
    (any provider but the CPU one); 0 on the CPU, or when the meter could not tell."""
    if all(p in CPU_PROVIDERS for p in providers) or before is None or after is None:
        return 0
    return max(0, after - before)


def nvml_driver_version() -> str:
    """The NVIDIA driver's version through NVML, or "" where it cannot tell (a calibration is
    keyed by it: a driver upgrade changes what a CUDA context costs)."""
    try:
        import pynvml  # optional extra (nvml)

        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:  # noqa: BLE001 - no library / driver: no version
        return ""
