"""Small readers for sysfs/procfs files under an injectable root.

Every reader resolves paths under ``root`` so that recorded fixture trees (``tests/fixtures/
sysfs/<device>/``) stand in for a real Jetson. Errors carry the path relative to the root, so a
message means the same on the device and in a test.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

# A sensor that is powered down or not wired answers with one of these instead of a value
# (e.g. the cv*-thermal zones of an Orin Nano, which has no DLA). That is a state, not a fault.
OFFLINE_ERRNOS = frozenset({errno.ENODATA, errno.EINVAL, errno.EAGAIN, errno.ENODEV})
# jtop and the BPMP report a switched-off Jetson thermal zone as -256 °C.
_OFFLINE_C = -256.0
_TRAILING_NUMBER = re.compile(r"(\d+)$")


def under(root: Path, path: str) -> Path:
    """``path`` (absolute, as on the device) resolved under ``root``."""
    return root / path.lstrip("/")


def rel(root: Path, path: Path) -> str:
    """``path`` as it would read on the device, for error messages."""
    try:
        return "/" + str(path.relative_to(root))
    except ValueError:
        return str(path)


def read_text(path: Path) -> str:
    """The file's text, stripped, with device-tree NUL terminators removed."""
    return path.read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()


def read_strings(path: Path) -> list[str]:
    """A device-tree string list (``compatible``): NUL-separated, NUL-terminated."""
    raw = path.read_bytes().decode("utf-8", "replace")
    return [s.strip() for s in raw.split("\x00") if s.strip()]


def read_int(path: Path) -> int:
    """An integer file (the first word: some drivers append a unit)."""
    text = read_text(path)
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        raise ValueError(f"not an integer: {text[:40]!r}") from None


def try_int(root: Path, path: Path, errors: list[str], note: str = "") -> int | None:
    """:func:`read_int`, or None: silently for an offline sensor, else with an entry in
    ``errors`` naming the device path, so one bad file costs one value, not the whole sample."""
    try:
        return read_int(path)
    except OSError as exc:
        if exc.errno not in OFFLINE_ERRNOS:
            errors.append(f"{rel(root, path)}{note}: {exc.strerror or exc}")
    except ValueError as exc:
        errors.append(f"{rel(root, path)}{note}: {exc}")
    return None


def numbered(paths: list[Path]) -> list[Path]:
    """Sort ``thermal_zone10`` after ``thermal_zone9``."""

    def key(p: Path) -> tuple[str, int]:
        m = _TRAILING_NUMBER.search(p.name)
        return (p.name[: m.start()] if m else p.name, int(m.group(1)) if m else -1)

    return sorted(paths, key=key)


def read_thermal_zones(root: Path) -> tuple[dict[str, float], list[str]]:
    """Thermal zone type -> °C from ``/sys/class/thermal/thermal_zone*`` (files in m°C).

    Offline sensors are left out silently; a zone whose file is garbled or unreadable for another
    reason is reported in the error list and the other zones are still returned.
    """
    temps: dict[str, float] = {}
    errors: list[str] = []
    for zone in numbered(list(under(root, "/sys/class/thermal").glob("thermal_zone*"))):
        try:
            name = read_text(zone / "type") or zone.name
        except OSError as exc:
            errors.append(f"{rel(root, zone)}/type: {exc.strerror or exc}")
            continue
        millic = try_int(root, zone / "temp", errors)
        if millic is None or millic / 1000.0 <= _OFFLINE_C:
            continue
        celsius = millic / 1000.0
        temps[name if name not in temps else f"{name}#{zone.name.removeprefix('thermal_zone')}"] = (
            celsius
        )
    return temps, errors
