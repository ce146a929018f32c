"""Byte sizes as people write them in configs and on command lines.

"512MiB", "2GB", "1.5 GiB", "123" (bytes) and percentages ("40%") of a base the caller supplies.
Binary (KiB, MiB, GiB, TiB) and decimal (KB, MB, GB, TB) units are both accepted because operators
write both; "K"/"M"/"G" alone are binary, as in `free -h`.
"""

from __future__ import annotations

import re

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 1000,
    "m": 1 << 20, "mib": 1 << 20, "mb": 1000**2,
    "g": 1 << 30, "gib": 1 << 30, "gb": 1000**3,
    "t": 1 << 40, "tib": 1 << 40, "tb": 1000**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_size(text: str | int, percent_of: int | None = None) -> int:
    """Parse a size; raises ValueError with the reason. Percentages need ``percent_of``."""
    if isinstance(text, bool):
        raise ValueError("expected a size like 512MiB, got a boolean")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    if not isinstance(text, str):
        raise ValueError(f"expected a size like 512MiB, got {type(text).__name__}")
    pct = _PERCENT_RE.match(text)
    if pct:
        value = float(pct.group(1))
        if value > 100:
            raise ValueError(f"percentage {text!r} is over 100%")
        if percent_of is None:
            raise ValueError(f"a percentage ({text!r}) is not allowed here")
        return int(percent_of * value / 100)
    m = _SIZE_RE.match(text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot parse size {text!r} (examples: 1073741824, 512MiB, 2GB, 40%)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def is_percent(text: object) -> bool:
    return isinstance(text, str) and bool(_PERCENT_RE.match(text))


def format_size(n: int | float) -> str:
    """1536 -> '1.5 KiB'; for tables and messages."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover
