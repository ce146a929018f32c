"""The Jetson sysfs readers against recorded L4T 36 / L4T 35 trees, and broken copies of them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edged.telemetry.jetson import (
    detect_jetson,
    jetpack_for,
    parse_l4t_release,
    read_gpu,
    read_jetson,
    read_rails,
)
from edged.telemetry.sysfs import read_thermal_zones

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sysfs"
NANO, AGX, X86 = FIXTURES / "orin-nano-8gb", FIXTURES / "agx-orin-64gb", FIXTURES / "x86-cpu"


@pytest.fixture
def nano_copy(tmp_path: Path) -> Path:
    """A writable copy of the Orin Nano tree (symlinks kept) to break on purpose."""
    dst = tmp_path / "nano"
    shutil.copytree(NANO, dst, symlinks=True)
    return dst


def test_detection() -> None:
    assert detect_jetson(NANO) and detect_jetson(AGX)
    assert not detect_jetson(X86)


def test_detection_needs_only_one_of_the_two_signs(tmp_path: Path) -> None:
    assert not detect_jetson(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.0\n")
    assert detect_jetson(tmp_path)
    dt_only = tmp_path / "dt"
    (dt_only / "proc" / "device-tree").mkdir(parents=True)
    (dt_only / "proc" / "device-tree" / "compatible").write_bytes(b"nvidia,tegra234\0")
    assert detect_jetson(dt_only)
    (dt_only / "proc" / "device-tree" / "compatible").write_bytes(b"raspberrypi,4-model-b\0")
    assert not detect_jetson(dt_only)


def test_orin_nano_static_facts() -> None:
    static, _ = read_jetson(NANO)
    assert static.model == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit"
    assert "\0" not in static.model
    assert static.l4t_release == "36.4.0"
    assert static.jetpack == "6.1"
    assert static.gpu_name == "NVIDIA ga10b (integrated)"
    assert static.errors == ()


def test_agx_orin_static_facts() -> None:
    static, _ = read_jetson(AGX)
    assert static.model == "NVIDIA Jetson AGX Orin Developer Kit"
    assert (static.l4t_release, static.jetpack) == ("35.4.1", "5.1.2")


def test_orin_nano_sensors() -> None:
    _, s = read_jetson(NANO)
    assert s.errors == ()
    assert s.gpu_load_percent == pytest.approx(14.3)  # "143" per-mille
    assert s.gpu_freq_hz == 306_000_000  # devfreq of the GPU, not of the VIC next to it
    assert s.temperatures_c == {
        "cpu-thermal": 47.531, "gpu-thermal": 46.968, "soc0-thermal": 45.343,
        "soc1-thermal": 46.406, "soc2-thermal": 45.25, "tj-thermal": 47.531,
    }  # cv0..cv2 read -256 °C: the Orin Nano has no DLA, the zones are offline
    assert s.power_mw == pytest.approx({
        "VDD_IN": 983 * 5056 / 1000, "VDD_CPU_GPU_CV": 119 * 5048 / 1000,
        "VDD_SOC": 279 * 5048 / 1000,
    })


def test_agx_orin_sensors_skip_unconnected_channels() -> None:
    _, s = read_jetson(AGX)
    assert s.errors == ()
    assert s.gpu_load_percent == pytest.approx(87.2)
    assert s.gpu_freq_hz == 1_300_500_000
    assert s.power_mw == pytest.approx({
        "VDD_GPU_SOC": 556 * 4976 / 1000, "VDD_CPU_CV": 80 * 4976 / 1000,
        "VIN_SYS_5V0": 528 * 4968 / 1000, "VDDQ_VDD2_1V8AO": 101 * 4984 / 1000,
    })  # "NC" channels and "sum of shunt voltages" are not rails
    assert len(s.temperatures_c) == 11
    assert s.temperatures_c["GPU-therm"] == 55.812
    assert s.temperatures_c["Tboard_tegra"] == 38.0


@pytest.mark.parametrize("text, release", [
    ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64", "36.4.0"),
    ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64", "35.4.1"),
    ("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64", "32.7.1"),
])
def test_l4t_release_lines(text: str, release: str) -> None:
    assert parse_l4t_release(text + "\n") == release


def test_jetpack_mapping_is_exact_or_none() -> None:
    assert jetpack_for("36.4.3") == "6.2"
    assert jetpack_for("36.4.4") == "6.2.1"
    assert jetpack_for("35.6.0") == "5.1.4"
    assert jetpack_for("36.9.9") is None
    assert jetpack_for(None) is None


def test_gpu_load_without_devfreq_falls_back_to_the_platform_path(nano_copy: Path) -> None:
    shutil.rmtree(nano_copy / "sys" / "class" / "devfreq")
    load, freq, errors = read_gpu(nano_copy)
    assert (load, freq, errors) == (pytest.approx(14.3), None, [])


def test_no_gpu_files_means_none_not_an_error() -> None:
    assert read_gpu(X86) == (None, None, [])
    assert read_rails(X86) == ({}, [])


def test_garbled_files_are_reported_and_the_rest_still_read(nano_copy: Path) -> None:
    (nano_copy / "sys/devices/virtual/thermal/thermal_zone1/temp").write_text("garbage\n")
    hwmon = nano_copy / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"
    (hwmon / "curr2_input").write_text("")
    (nano_copy / "sys/devices/platform/bus@0/17000000.gpu/load").write_bytes(b"\xff\xfe")
    (nano_copy / "etc/nv_tegra_release").write_text("corrupted\n")
    static, s = read_jetson(nano_copy)
    assert static.l4t_release is None and static.jetpack is None
    assert any("nv_tegra_release" in e for e in static.errors)
    assert "gpu-thermal" not in s.temperatures_c
    assert s.temperatures_c["cpu-thermal"] == 47.531
    assert set(s.power_mw) == {"VDD_IN", "VDD_SOC"}
    assert s.gpu_load_percent is None and s.gpu_freq_hz == 306_000_000
    joined = "\n".join(s.errors)
    assert "thermal_zone1/temp: not an integer: 'garbage'" in joined
    assert "hwmon1/curr2_input (VDD_CPU_GPU_CV): not an integer: ''" in joined
    assert "/sys/class/devfreq/17000000.gpu/device/load: not an integer" in joined
    assert len(s.errors) == 3


def test_unreadable_thermal_zone_is_an_error(nano_copy: Path) -> None:
    temp = nano_copy / "sys/devices/virtual/thermal/thermal_zone0/temp"
    temp.unlink()
    temp.mkdir()  # reading a directory fails with EISDIR, as an unreadable file would
    temps, errors = read_thermal_zones(nano_copy)
    assert "cpu-thermal" not in temps and "tj-thermal" in temps
    assert len(errors) == 1 and "thermal_zone0" in errors[0]


def test_x86_thermal_zones() -> None:
    assert read_thermal_zones(X86) == ({"acpitz": 27.8, "x86_pkg_temp": 38.0}, [])


def _tree(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            key = str(p.relative_to(root))
            if p.is_symlink():
                out[key] = "-> " + os.readlink(p)
            elif p.is_file():
                out[key] = p.read_bytes()
    return out


def test_committed_fixtures_match_their_generator(tmp_path: Path) -> None:
    script = FIXTURES / "make_fixtures.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True)
    for device in ("orin-nano-8gb", "agx-orin-64gb", "x86-cpu"):
        assert _tree(tmp_path / device) == _tree(FIXTURES / device), device
