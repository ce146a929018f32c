"""Immutable telemetry values.

A snapshot is shared between the sampler thread, the capacity checks and the status call without
a lock, so every value here is frozen, and mappings are read-only views: nobody can change a
number another thread is about to decide on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


def frozen_map(values: Mapping[str, float]) -> Mapping[str, float]:
    """A read-only copy, so a snapshot's mappings cannot be changed after it is published."""
    return MappingProxyType(dict(values))


@dataclass(frozen=True)
class MemoryInfo:
    """Memory as the capacity planner must see it (``/proc/meminfo``, never CUDA's free query).

    ``nvmap_used_bytes`` is set on Jetson only: GPU allocations come out of the same RAM there.
    ``simulated`` is True when a configured ``memory_total`` stands in for the real one (to
    behave like an 8 GB Orin Nano on a bigger machine).
    """

    total_bytes: int
    available_bytes: int
    swap_total_bytes: int
    swap_free_bytes: int
    nvmap_used_bytes: int | None
    simulated: bool


@dataclass(frozen=True)
class GpuInfo:
    """One GPU; any number it cannot read is None rather than a made-up zero."""

    name: str
    load_percent: float | None
    freq_hz: int | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    source: str


@dataclass(frozen=True)
class DeviceInfo:
    """What the device is (read once) and its sensors (read each sample)."""

    kind: str  # "jetson" | "nvidia-gpu" | "cpu"
    model: str
    l4t_release: str | None
    jetpack: str | None
    cpu_model: str
    cpu_count: int
    gpus: tuple[GpuInfo, ...]
    temperatures_c: Mapping[str, float]
    power_mw: Mapping[str, float]


@dataclass(frozen=True)
class Snapshot:
    """One consistent sample. ``errors`` names each source that failed and why: sampling never
    raises, so a broken sensor shows up in ``edgectl status`` instead of killing the daemon."""

    taken_at: float
    memory: MemoryInfo
    device: DeviceInfo
    cpu_percent: float
    process_rss_bytes: int
    sources: tuple[str, ...]
    errors: tuple[str, ...]


def discrete_gpu_memory(device: DeviceInfo) -> int:
    """Device memory of a discrete GPU (the first NVML device; edged's CUDA sessions run on
    device 0), or 0 on a Jetson (its GPU allocates from RAM) and on CPU-only devices."""
    if device.kind != "nvidia-gpu":
        return 0
    totals = [g.memory_total_bytes for g in device.gpus if g.memory_total_bytes]
    return int(totals[0]) if totals else 0
