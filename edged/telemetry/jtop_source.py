"""jetson-stats (``jtop``) as an optional, richer source on a Jetson.

jtop is AGPL-3.0 and talks to its own root service over ``/run/jtop.sock``, so it is an optional
extra: imported only here, inside :func:`open_jtop`, and only when that socket exists. Anything
it cannot give falls back to the sysfs readers. Values are converted to edged's units by
:func:`convert_jtop`, a pure function over jtop's documented dict shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias

JTOP_SOCKET = Path("/run/jtop.sock")
# One of jtop's ``gpu`` / ``power`` / ``temperature`` properties: nested dicts of documented
# shapes (see convert_jtop), untyped.
JtopDict: TypeAlias = Mapping[str, Any]
_OFFLINE_C = -256.0


@dataclass(frozen=True)
class JtopReading:
    gpu_load_percent: float | None
    gpu_freq_hz: int | None
    temperatures_c: dict[str, float]
    power_mw: dict[str, float]


def convert_jtop(gpu: JtopDict, power: JtopDict, temperature: JtopDict) -> JtopReading:
    """jtop's ``gpu`` / ``power`` / ``temperature`` properties -> edged units.

    jtop reports GPU load in %, frequency in kHz, rail power in mW (the total rail, e.g.
    ``VDD_IN``, separately under ``tot``) and temperatures in °C with -256 for offline sensors.
    """
    load: float | None = None
    freq: int | None = None
    for info in gpu.values():
        if info.get("type") == "integrated":
            status, freqs = info.get("status", {}), info.get("freq", {})
            load = float(status["load"]) if "load" in status else None
            freq = int(freqs["cur"]) * 1000 if "cur" in freqs else None
            break
    rails: dict[str, float] = {}
    for name, rail in dict(power.get("rail", {})).items():
        if rail.get("online", True) and "power" in rail:
            rails[str(name)] = float(rail["power"])
    total = power.get("tot", {})
    if total.get("name") and "power" in total:
        rails[str(total["name"])] = float(total["power"])
    temps = {
        str(name): float(t["temp"])
        for name, t in temperature.items()
        if t.get("online", True) and "temp" in t and float(t["temp"]) > _OFFLINE_C
    }
    return JtopReading(load, freq, temps, rails)


class JtopClient(Protocol):
    """What the source reads of ``jtop.jtop`` (untyped; its properties are nested dicts)."""

    gpu: JtopDict
    power: JtopDict
    temperature: JtopDict

    def ok(self, spin: bool = False) -> bool: ...

    def close(self) -> None: ...


class JtopSource:
    """An open jtop client; the service pushes a fresh reading every ``interval_s``."""

    def __init__(self, client: JtopClient) -> None:
        self._client = client

    def read(self) -> JtopReading:
        c = self._client
        if not c.ok(spin=True):
            raise RuntimeError("jtop service connection lost")
        return convert_jtop(c.gpu, c.power, c.temperature)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing a dead client must not take the daemon's stop down with it
            pass


def open_jtop(interval_s: float, socket_path: Path = JTOP_SOCKET) -> JtopSource | None:
    """A connected jtop client, or None when jtop or its service is not installed.

    Raises when jtop is installed and its service is there but refuses us (permissions: the
    user must be in the ``jtop`` group), because that is worth telling the operator.
    """
    if not socket_path.exists():
        return None
    try:
        from jtop import jtop  # optional, AGPL, Jetson-only (untyped: see pyproject)
    except ImportError:
        return None
    client = jtop(interval=max(interval_s, 0.5))
    client.start()
    return JtopSource(client)
