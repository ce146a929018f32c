"""One sample: every source read once, assembled into a :class:`Snapshot`, never raising.

Each source is guarded on its own, so a garbled thermal zone costs the temperatures and an
entry in ``errors``, not the memory numbers a capacity decision is waiting for. Memory that
cannot be read is reported as nothing available: a refused load is recoverable, an OOM kill of
the robot is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from edged.telemetry.host import CpuMeter, ProcessMeter, cpu_count, cpu_model, dmi_product
from edged.telemetry.jetson import (
    JetsonStatic,
    detect_jetson,
    read_jetson_sensors,
    read_jetson_static,
)
from edged.telemetry.jtop_source import JtopSource
from edged.telemetry.meminfo import memory_info
from edged.telemetry.nvml import NvmlSource
from edged.telemetry.snapshot import DeviceInfo, GpuInfo, MemoryInfo, Snapshot, frozen_map
from edged.telemetry.sysfs import read_thermal_zones

T = TypeVar("T")


@dataclass(frozen=True)
class StaticFacts:
    """Read once per sampler: what the device is does not change while the daemon runs."""

    jetson: JetsonStatic | None
    model: str
    cpu_model: str
    cpu_count: int
    errors: tuple[str, ...]


@dataclass
class Probes:
    """The stateful parts of sampling, owned by one sampler: meters and optional clients."""

    cpu: CpuMeter = field(default_factory=CpuMeter)
    process: ProcessMeter = field(default_factory=ProcessMeter)
    jtop: JtopSource | None = None
    nvml: NvmlSource | None = None


def guarded(source: str, errors: list[str], fn: Callable[[], T], default: T) -> T:
    """``fn()``, or ``default`` with ``"source: reason"`` appended to ``errors``."""
    try:
        return fn()
    except Exception as exc:  # a sensor must never take the sampler down
        errors.append(f"{source}: {exc}")
        return default


def read_static(root: Path) -> StaticFacts:
    errors: list[str] = []
    jetson = None
    if guarded("sysfs-jetson", errors, lambda: detect_jetson(root), False):
        jetson = guarded("sysfs-jetson", errors, lambda: read_jetson_static(root), None)
        errors.extend(f"sysfs-jetson: {e}" for e in (jetson.errors if jetson else ()))
    cpu = guarded("procfs", errors, lambda: cpu_model(root), "unknown")
    model = (jetson.model if jetson else None) or dmi_product(root) or cpu
    return StaticFacts(jetson, model, cpu, cpu_count(root), tuple(errors))


def _unknown_memory(override: int | None) -> MemoryInfo:
    return MemoryInfo(total_bytes=override or 0, available_bytes=0, swap_total_bytes=0,
                      swap_free_bytes=0, nvmap_used_bytes=None, simulated=override is not None)


def collect(root: Path, static: StaticFacts, override: int | None, probes: Probes) -> Snapshot:
    """Read every source once; failures become entries in ``Snapshot.errors``."""
    used: list[str] = []
    errors: list[str] = list(static.errors)
    memory = guarded("procfs", errors, lambda: memory_info(root, override), None)
    if memory is None:
        memory = _unknown_memory(override)
    else:
        used.append("procfs")
    n_err = len(errors)
    cpu = guarded("psutil", errors, probes.cpu.percent, 0.0)
    rss = guarded("psutil", errors, probes.process.rss_bytes, 0)
    if len(errors) == n_err:
        used.append("psutil")

    nvml_gpus: tuple[GpuInfo, ...] = ()
    if probes.nvml is not None:
        nvml_gpus = guarded("nvml", errors, probes.nvml.read, ())
        if nvml_gpus:
            used.append("nvml")
    temps: dict[str, float] = {}
    power: dict[str, float] = {}
    gpus = nvml_gpus
    if static.jetson is not None:
        load, freq, temps, power, source = _jetson_sensors(root, probes, errors)
        if source:
            used.append(source)
        if not gpus:  # Thor's GPU answers NVML; earlier Jetsons only through sysfs/jtop
            gpus = (GpuInfo(static.jetson.gpu_name, load, freq, memory.total_bytes,
                            memory.nvmap_used_bytes, source or "sysfs-jetson"),)
    else:
        no_zones: tuple[dict[str, float], list[str]] = ({}, [])
        temps, zone_errors = guarded("sysfs-thermal", errors,
                                     lambda: read_thermal_zones(root), no_zones)
        errors.extend(f"sysfs-thermal: {e}" for e in zone_errors)
        if temps:
            used.append("sysfs-thermal")

    jet = static.jetson
    device = DeviceInfo(
        kind="jetson" if jet else ("nvidia-gpu" if gpus else "cpu"),
        model=static.model,
        l4t_release=jet.l4t_release if jet else None,
        jetpack=jet.jetpack if jet else None,
        cpu_model=static.cpu_model,
        cpu_count=static.cpu_count,
        gpus=gpus,
        temperatures_c=frozen_map(temps),
        power_mw=frozen_map(power),
    )
    return Snapshot(taken_at=time.time(), memory=memory, device=device, cpu_percent=cpu,
                    process_rss_bytes=rss, sources=tuple(used), errors=tuple(errors))


def _jetson_sensors(
    root: Path, probes: Probes, errors: list[str]
) -> tuple[float | None, int | None, dict[str, float], dict[str, float], str]:
    """(GPU load, GPU Hz, temperatures, rails, source): jtop when it answers, else sysfs."""
    reading = guarded("jtop", errors, probes.jtop.read, None) if probes.jtop else None
    if reading is not None:
        return (reading.gpu_load_percent, reading.gpu_freq_hz, reading.temperatures_c,
                reading.power_mw, "jtop")
    sensors = guarded("sysfs-jetson", errors, lambda: read_jetson_sensors(root), None)
    if sensors is None:
        return None, None, {}, {}, ""
    errors.extend(f"sysfs-jetson: {e}" for e in sensors.errors)
    return (sensors.gpu_load_percent, sensors.gpu_freq_hz, sensors.temperatures_c,
            sensors.power_mw, "sysfs-jetson")
