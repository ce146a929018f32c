"""Free memory from ``/proc/meminfo``, the one number capacity decisions trust.

The SPEC forbids CUDA's free-memory query (it ignores swap and the rest of the system); on a
Jetson the GPU allocates from the same RAM, and ``NvMapMemUsed`` says how much of it the GPU holds.
A configured ``memory_total`` simulates a smaller device: the real usage is carried over onto the
simulated total, so a busy 24 GB box behaves like an 8 GB Orin Nano with the same load.
"""

from __future__ import annotations

from pathlib import Path

from edged.telemetry.snapshot import MemoryInfo
from edged.telemetry.sysfs import under

_KIB = 1024


def parse_meminfo(text: str) -> dict[str, int]:
    """``Key: value kB`` lines -> bytes. Unit-less lines (``HugePages_Total``) are page counts,
    not sizes, and are left out. A line that does not parse raises: a half-read meminfo must
    never pass for a valid one in a capacity decision."""
    values: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not key.strip() or not 1 <= len(parts) <= 2:
            raise ValueError(f"/proc/meminfo line {lineno}: cannot parse {line[:60]!r}")
        try:
            number = int(parts[0])
        except ValueError:
            raise ValueError(
                f"/proc/meminfo line {lineno}: not a number: {line[:60]!r}"
            ) from None
        if len(parts) == 2:
            if parts[1] != "kB":
                raise ValueError(f"/proc/meminfo line {lineno}: unknown unit {parts[1]!r}")
            values[key.strip()] = number * _KIB
    return values


def read_meminfo(root: Path = Path("/")) -> dict[str, int]:
    """``root/proc/meminfo`` in bytes (see :func:`parse_meminfo`)."""
    return parse_meminfo(under(root, "/proc/meminfo").read_text(errors="replace"))


def memory_info(root: Path, memory_total_override: int | None) -> MemoryInfo:
    """Memory as the planner sees it; raises OSError/ValueError when meminfo cannot be trusted.

    With an override, ``available = clamp(override - (real_total - real_available), 0,
    override)``: what is in use stays in use, only the ceiling moves. Swap is left as it is.
    """
    info = read_meminfo(root)
    for key in ("MemTotal", "MemAvailable"):
        if key not in info:
            raise ValueError(f"/proc/meminfo: no {key} line")
    total, available = info["MemTotal"], info["MemAvailable"]
    simulated = memory_total_override is not None
    if memory_total_override is not None:
        if memory_total_override <= 0:
            raise ValueError(f"memory_total override must be positive, not {memory_total_override}")
        used = total - available
        total = memory_total_override
        available = min(max(memory_total_override - used, 0), memory_total_override)
    return MemoryInfo(
        total_bytes=total,
        available_bytes=available,
        swap_total_bytes=info.get("SwapTotal", 0),
        swap_free_bytes=info.get("SwapFree", 0),
        nvmap_used_bytes=info.get("NvMapMemUsed"),
        simulated=simulated,
    )
