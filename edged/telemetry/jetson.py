"""The Jetson sysfs fallback: needs nothing installed, reads what L4T publishes.

Paths are those of L4T 35 (JetPack 5) and 36 (JetPack 6) on Orin, as jetson-stats reads them:
the integrated GPU is found through ``/sys/class/devfreq`` (its node is ``ga10b`` on JetPack 5,
``gpu`` on JetPack 6, where it moved under ``/sys/devices/platform/bus@0/17000000.gpu``), its
``load`` is in per-mille, ``cur_freq`` in Hz; INA3221 rails are hwmon channels with a label,
``in*_input`` in mV and ``curr*_input`` in mA. Static facts and sensors are read apart because
the sampler reads the former once and the latter every interval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edged.telemetry.sysfs import (
    numbered,
    read_strings,
    read_text,
    read_thermal_zones,
    rel,
    try_int,
    under,
)

# NVIDIA's JetPack archive (L4T release -> JetPack). An unlisted release maps to None, not to a
# guess: the status call shows the L4T release either way.
JETPACK_FOR_L4T: dict[str, str] = {
    "38.2.0": "7.0",
    "36.4.4": "6.2.1", "36.4.3": "6.2", "36.4.0": "6.1", "36.3.0": "6.0", "36.2.0": "6.0 DP",
    "35.6.1": "5.1.5", "35.6.0": "5.1.4", "35.5.0": "5.1.3", "35.4.1": "5.1.2", "35.3.1": "5.1.1",
    "35.2.1": "5.1", "35.1.0": "5.0.2",
    "32.7.6": "4.6.6", "32.7.5": "4.6.5", "32.7.4": "4.6.4", "32.7.3": "4.6.3", "32.7.2": "4.6.2",
    "32.7.1": "4.6.1", "32.6.1": "4.6",
}
# SoC (from the device-tree ``compatible``) -> its integrated GPU, for a readable GPU name.
_SOC_GPU = {"tegra264": "gb10b", "tegra234": "ga10b", "tegra194": "gv11b", "tegra186": "gp10b",
            "tegra210": "gm20b"}
_GPU_NODES = frozenset({"gpu", "gb10b", "ga10b", "gv11b", "gp10b", "gm20b"})
# Where the load file lives when devfreq does not lead to it (older kernels, symlinks missing).
_GPU_LOAD_PATHS = (
    "/sys/devices/platform/bus@0/17000000.gpu/load",
    "/sys/devices/platform/gpu.0/load",
    "/sys/devices/platform/17000000.ga10b/load",
    "/sys/devices/17000000.ga10b/load",
    "/sys/devices/17000000.gv11b/load",
    "/sys/devices/gpu.0/load",
)
_INA_DRIVERS = ("/sys/bus/i2c/drivers/ina3221", "/sys/bus/i2c/drivers/ina3221x")
_L4T = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)\.(\d+)")


@dataclass(frozen=True)
class JetsonStatic:
    """Facts that do not change while the daemon runs."""

    model: str | None
    l4t_release: str | None
    jetpack: str | None
    gpu_name: str
    errors: tuple[str, ...]


@dataclass(frozen=True)
class JetsonSensors:
    """One reading of the sensors; errors name the files that could not be read."""

    gpu_load_percent: float | None
    gpu_freq_hz: int | None
    temperatures_c: dict[str, float]
    power_mw: dict[str, float]
    errors: tuple[str, ...]


def detect_jetson(root: Path) -> bool:
    """A Tegra device tree or an L4T release file; either is enough (containers often lack one)."""
    if under(root, "/etc/nv_tegra_release").is_file():
        return True
    try:
        return any(s.startswith("nvidia,tegra") for s in _compatible(root))
    except OSError:
        return False


def _compatible(root: Path) -> list[str]:
    return read_strings(under(root, "/proc/device-tree/compatible"))


def parse_l4t_release(text: str) -> str:
    """``# R36 (release), REVISION: 4.0, ...`` -> ``"36.4.0"``."""
    m = _L4T.search(text)
    if not m:
        raise ValueError(f"/etc/nv_tegra_release: no release line in {text[:60]!r}")
    return ".".join(m.groups())


def jetpack_for(l4t_release: str | None) -> str | None:
    """No file on the device states the JetPack version; it is derived from the L4T release."""
    return JETPACK_FOR_L4T.get(l4t_release) if l4t_release else None


def read_jetson_static(root: Path) -> JetsonStatic:
    """Model, L4T/JetPack and GPU name. A garbled release file is an error, a missing one is not
    (containers built on l4t-base have it, a bare board with a custom rootfs may not)."""
    errors: list[str] = []
    model: str | None = None
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            model = read_text(under(root, path)) or None
            break
        except OSError:
            continue
    l4t: str | None = None
    release = under(root, "/etc/nv_tegra_release")
    try:
        l4t = parse_l4t_release(release.read_text(errors="replace"))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        errors.append(str(exc) if isinstance(exc, ValueError) else f"{rel(root, release)}: {exc}")
    try:
        socs = [s.split(",", 1)[1] for s in _compatible(root) if s.startswith("nvidia,tegra")]
    except OSError:
        socs = []
    gpu = next((_SOC_GPU[s] for s in socs if s in _SOC_GPU), None)
    name = f"NVIDIA {gpu} (integrated)" if gpu else "NVIDIA integrated GPU"
    return JetsonStatic(model, l4t, jetpack_for(l4t), name, tuple(errors))


def _gpu_devfreq(root: Path) -> Path | None:
    """The devfreq entry whose device-tree node is the GPU (``17000000.gpu``, ``....ga10b``)."""
    for entry in sorted(under(root, "/sys/class/devfreq").glob("*")):
        try:
            node = read_text(entry / "device" / "of_node" / "name")
        except OSError:
            node = entry.name.rpartition(".")[2]
        if node in _GPU_NODES:
            return entry
    return None


def read_gpu(root: Path) -> tuple[float | None, int | None, list[str]]:
    """(load %, current frequency in Hz, errors); None where the file is not there."""
    errors: list[str] = []
    devfreq = _gpu_devfreq(root)
    freq: int | None = None
    candidates = [under(root, p) for p in _GPU_LOAD_PATHS]
    if devfreq is not None:
        candidates.insert(0, devfreq / "device" / "load")
        freq = try_int(root, devfreq / "cur_freq", errors)
    path = next((p for p in candidates if p.is_file()), None)
    permille = try_int(root, path, errors) if path is not None else None
    return (None if permille is None else permille / 10.0), freq, errors


def read_rails(root: Path) -> tuple[dict[str, float], list[str]]:
    """INA3221 rail label -> mW (mA * mV / 1000). Channels labelled ``NC`` are not connected;
    channel 7 (``sum of shunt voltages``) is not a rail."""
    power: dict[str, float] = {}
    errors: list[str] = []
    for driver in _INA_DRIVERS:
        for hwmon in numbered(list(under(root, driver).glob("*/hwmon/hwmon*"))):
            for ch in (1, 2, 3):
                try:
                    label = read_text(hwmon / f"in{ch}_label")
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    errors.append(f"{rel(root, hwmon)}/in{ch}_label: {exc}")
                    continue
                if not label or label == "NC":
                    continue
                mv = try_int(root, hwmon / f"in{ch}_input", errors, f" ({label})")
                ma = try_int(root, hwmon / f"curr{ch}_input", errors, f" ({label})")
                if mv is not None and ma is not None:
                    power[label] = ma * mv / 1000.0
    return power, errors


def read_jetson_sensors(root: Path) -> JetsonSensors:
    load, freq, gpu_errors = read_gpu(root)
    temps, temp_errors = read_thermal_zones(root)
    power, power_errors = read_rails(root)
    return JetsonSensors(load, freq, temps, power, tuple(gpu_errors + temp_errors + power_errors))


def read_jetson(root: Path) -> tuple[JetsonStatic, JetsonSensors]:
    """Everything the sysfs fallback knows about a Jetson, in one call."""
    return read_jetson_static(root), read_jetson_sensors(root)
