"""The host everywhere: CPU model and count from procfs, CPU load and our own RSS from psutil.

ARM kernels (a Jetson's among them) print no ``model name`` in ``/proc/cpuinfo``, only the
implementer and part numbers, so those are decoded here; that is how an Orin reads as
"ARM Cortex-A78AE" rather than as nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from edged.telemetry.sysfs import read_text, under

# (implementer, part) -> core name, from the Arm/NVIDIA MIDR values the kernel prints.
_ARM_PARTS: dict[tuple[int, int], str] = {
    (0x41, 0xD03): "ARM Cortex-A53",
    (0x41, 0xD05): "ARM Cortex-A55",
    (0x41, 0xD07): "ARM Cortex-A57",
    (0x41, 0xD08): "ARM Cortex-A72",
    (0x41, 0xD0B): "ARM Cortex-A76",
    (0x41, 0xD0C): "ARM Neoverse-N1",
    (0x41, 0xD40): "ARM Neoverse-V1",
    (0x41, 0xD41): "ARM Cortex-A78",
    (0x41, 0xD42): "ARM Cortex-A78AE",
    (0x41, 0xD4F): "ARM Neoverse-V2",
    (0x4E, 0x004): "NVIDIA Carmel",
}


def parse_cpuinfo(text: str) -> list[dict[str, str]]:
    """``/proc/cpuinfo`` as one dict per ``processor`` block."""
    blocks: list[dict[str, str]] = [{}]
    for line in text.splitlines():
        if not line.strip():
            if blocks[-1]:
                blocks.append({})
            continue
        key, _, value = line.partition(":")
        blocks[-1][key.strip()] = value.strip()
    return [b for b in blocks if "processor" in b]


def _arm_core(block: dict[str, str]) -> str | None:
    try:
        ident = (int(block["CPU implementer"], 16), int(block["CPU part"], 16))
    except (KeyError, ValueError):
        return None
    return _ARM_PARTS.get(ident)


def cpu_model(root: Path) -> str:
    """x86: ``model name``; ARM: the decoded core, else ``model name``, else the device-tree
    model. Raises OSError when ``/proc/cpuinfo`` cannot be read."""
    blocks = parse_cpuinfo(under(root, "/proc/cpuinfo").read_text(errors="replace"))
    first = blocks[0] if blocks else {}
    name = _arm_core(first) or first.get("model name") or first.get("Hardware")
    if name:
        return name
    try:
        return read_text(under(root, "/proc/device-tree/model")) or "unknown"
    except OSError:
        return "unknown"


def cpu_count(root: Path) -> int:
    """Processors listed in ``root/proc/cpuinfo``; falls back to this machine's count."""
    try:
        blocks = parse_cpuinfo(under(root, "/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        blocks = []
    return len(blocks) or os.cpu_count() or 1


def dmi_product(root: Path) -> str | None:
    """The board/product name on x86 (``/sys/class/dmi/id/product_name``), if there is one."""
    try:
        return read_text(under(root, "/sys/class/dmi/id/product_name")) or None
    except OSError:
        return None


class CpuMeter:
    """CPU utilisation since the previous call, kept per instance.

    ``psutil.cpu_percent(None)`` keeps its "previous" reading in module state shared with every
    other caller in the process; this meter owns its own, so the metrics exporter or a test
    cannot skew the sampler's number. The first call measures since boot.
    """

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None

    def percent(self) -> float:
        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        # Linux counts guest time inside user/nice already; psutil does the same subtraction.
        total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        if self._last is None:
            busy_d, total_d = total - idle, total
        else:
            busy_d = (total - idle) - (self._last[1] - self._last[0])
            total_d = total - self._last[1]
        self._last = (idle, total)
        if total_d <= 0:
            return 0.0
        return round(min(max(100.0 * busy_d / total_d, 0.0), 100.0), 1)


class ProcessMeter:
    """This process's resident set size; the daemon's own footprint is part of its budget."""

    def __init__(self) -> None:
        self._proc = psutil.Process()

    def rss_bytes(self) -> int:
        return int(self._proc.memory_info().rss)
