"""NvmlSource.read and JtopSource.read over fake ``pynvml`` / ``jtop`` modules.

Both libraries are optional hardware extras that cannot run here (no NVIDIA driver, no jtop
service), so these are the one place fakes stand in: small stand-ins with the libraries'
documented call shapes, injected through ``sys.modules`` the way ``open_nvml``/``open_jtop``
import them. What is asserted is edged's side: units, the per-field fallbacks, bytes names."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.telemetry.jtop_source import JtopSource, open_jtop
from edged.telemetry.nvml import NvmlSource, open_nvml


class NVMLError(Exception):
    pass


def fake_pynvml(devices: list[dict[str, Any]]) -> types.ModuleType:
    """pynvml's calls as nvidia-ml-py has them; a key missing from a device dict raises
    NVMLError for that query (what NVML does for unsupported fields)."""
    m = types.ModuleType("pynvml")
    m.NVMLError = NVMLError  # type: ignore[attr-defined]
    m.NVML_CLOCK_GRAPHICS = 0  # type: ignore[attr-defined]
    m.shutdowns = 0  # type: ignore[attr-defined]

    def need(i: int, key: str) -> Any:
        if key not in devices[i]:
            raise NVMLError(f"{key}: not supported")
        return devices[i][key]

    def shutdown() -> None:
        m.shutdowns += 1  # type: ignore[attr-defined]

    m.nvmlInit = lambda: None  # type: ignore[attr-defined]
    m.nvmlShutdown = shutdown  # type: ignore[attr-defined]
    m.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    m.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    m.nvmlDeviceGetName = lambda h: devices[h]["name"]  # type: ignore[attr-defined]
    m.nvmlDeviceGetUtilizationRates = (  # type: ignore[attr-defined]
        lambda h: types.SimpleNamespace(gpu=need(h, "util"), memory=0))
    m.nvmlDeviceGetClockInfo = lambda h, kind: need(h, "mhz")  # type: ignore[attr-defined]
    m.nvmlDeviceGetMemoryInfo = (  # type: ignore[attr-defined]
        lambda h: types.SimpleNamespace(total=need(h, "mem")[0], used=need(h, "mem")[1],
                                        free=need(h, "mem")[0] - need(h, "mem")[1]))
    return m


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    module = fake_pynvml([
        {"name": b"NVIDIA RTX A2000", "util": 37, "mhz": 1560, "mem": (12 << 30, 3 << 30)},
        {"name": "NVIDIA GB10"},  # unified memory: no framebuffer, no clocks, no utilisation
    ])
    monkeypatch.setitem(sys.modules, "pynvml", module)
    yield module


def test_nvml_read_converts_units_and_tolerates_unsupported_fields(
        nvml: types.ModuleType) -> None:
    source = open_nvml()
    assert isinstance(source, NvmlSource)
    a2000, gb10 = source.read()
    assert a2000.name == "NVIDIA RTX A2000"  # bytes from older bindings are decoded
    assert a2000.load_percent == 37.0
    assert a2000.freq_hz == 1_560_000_000  # MHz -> Hz
    assert (a2000.memory_total_bytes, a2000.memory_used_bytes) == (12 << 30, 3 << 30)
    assert a2000.source == "nvml"
    assert gb10.name == "NVIDIA GB10"
    assert (gb10.load_percent, gb10.freq_hz, gb10.memory_total_bytes,
            gb10.memory_used_bytes) == (None, None, None, None)
    source.close()
    assert nvml.shutdowns == 1


def test_nvml_without_devices_is_none_and_shut_down(monkeypatch: pytest.MonkeyPatch) -> None:
    module = fake_pynvml([])
    monkeypatch.setitem(sys.modules, "pynvml", module)
    assert open_nvml() is None
    assert module.shutdowns == 1  # type: ignore[attr-defined]


class FakeJtop:
    """jtop.jtop as jetson-stats 4.x has it: start(), ok(spin), the gpu/power/temperature
    properties, close()."""

    def __init__(self, interval: float) -> None:
        self.interval, self.started, self.closed, self.alive = interval, False, False, True

    def start(self) -> None:
        self.started = True

    def ok(self, spin: bool = False) -> bool:
        return self.alive

    def close(self) -> None:
        self.closed = True

    @property
    def gpu(self) -> dict[str, Any]:
        return {"gpu": {"type": "integrated",
                        "status": {"load": 41.5, "railgate": False},
                        "freq": {"cur": 624750, "max": 1020000, "min": 306000}}}

    @property
    def power(self) -> dict[str, Any]:
        return {"rail": {"VDD_CPU_GPU_CV": {"online": True, "power": 2104, "volt": 5000},
                         "VDD_SOC": {"online": True, "power": 1303},
                         "VDD_OFF": {"online": False, "power": 9}},
                "tot": {"name": "VDD_IN", "power": 5210}}

    @property
    def temperature(self) -> dict[str, Any]:
        return {"cpu": {"online": True, "temp": 48.2}, "gpu": {"online": True, "temp": 46.9},
                "cv0": {"online": True, "temp": -256}, "soc2": {"online": False, "temp": 40}}


@pytest.fixture
def jtop_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    module = types.ModuleType("jtop")
    module.jtop = FakeJtop  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jtop", module)
    sock = tmp_path / "jtop.sock"
    sock.touch()
    return sock


def test_jtop_read_converts_units_and_drops_offline_sensors(jtop_socket: Path) -> None:
    source = open_jtop(0.1, socket_path=jtop_socket)
    assert isinstance(source, JtopSource)
    client = source._client
    assert client.started and client.interval == 0.5  # jtop's own floor
    r = source.read()
    assert r.gpu_load_percent == 41.5
    assert r.gpu_freq_hz == 624_750_000  # kHz -> Hz
    assert r.power_mw == {"VDD_CPU_GPU_CV": 2104.0, "VDD_SOC": 1303.0, "VDD_IN": 5210.0}
    assert r.temperatures_c == {"cpu": 48.2, "gpu": 46.9}
    source.close()
    assert client.closed


def test_jtop_lost_service_raises_for_the_sampler_to_fall_back(jtop_socket: Path) -> None:
    source = open_jtop(1.0, socket_path=jtop_socket)
    assert source is not None
    source._client.alive = False
    with pytest.raises(RuntimeError, match="jtop service connection lost"):
        source.read()
