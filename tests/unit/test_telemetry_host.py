"""Host facts (CPU model/count, load, RSS) and the optional jtop / NVML sources."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edged.telemetry.host import CpuMeter, ProcessMeter, cpu_count, cpu_model, dmi_product
from edged.telemetry.jtop_source import convert_jtop, open_jtop
from edged.telemetry.nvml import open_nvml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sysfs"
NANO, AGX, X86 = FIXTURES / "orin-nano-8gb", FIXTURES / "agx-orin-64gb", FIXTURES / "x86-cpu"


def test_cpu_model_decodes_arm_parts_and_reads_x86_model_name() -> None:
    assert cpu_model(NANO) == "ARM Cortex-A78AE"  # Orin's cpuinfo has no "model name"
    assert cpu_model(AGX) == "ARM Cortex-A78AE"
    assert cpu_model(X86) == "Intel(R) Core(TM) i5-7500 CPU @ 3.40GHz"


def test_cpu_model_falls_back_to_the_device_tree(tmp_path: Path) -> None:
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "cpuinfo").write_text("processor\t: 0\nCPU part\t: 0xfff\n\n")
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(b"Some ARM Board\0")
    assert cpu_model(tmp_path) == "Some ARM Board"


def test_cpu_count_and_product() -> None:
    assert (cpu_count(NANO), cpu_count(AGX), cpu_count(X86)) == (6, 12, 4)
    assert dmi_product(X86) == "OptiPlex 7050"
    assert dmi_product(NANO) is None


def test_cpu_meter_and_rss_on_this_machine() -> None:
    meter = CpuMeter()
    first = meter.percent()
    sum(i * i for i in range(200_000))  # some work between the two readings
    second = meter.percent()
    assert 0.0 <= first <= 100.0 and 0.0 <= second <= 100.0
    rss = ProcessMeter().rss_bytes()
    assert 1 << 20 < rss < 1 << 34  # a Python process: more than 1 MiB, less than 16 GiB


def test_jtop_absent_is_none_not_an_error(tmp_path: Path) -> None:
    assert open_jtop(1.0, socket_path=tmp_path / "jtop.sock") is None
    (tmp_path / "jtop.sock").touch()  # a socket without the package: still quietly None
    if importlib.util.find_spec("jtop") is None:
        assert open_jtop(1.0, socket_path=tmp_path / "jtop.sock") is None


def test_convert_jtop_units() -> None:
    """jtop's documented shapes (jetson-stats 4.x): load %, freq kHz, power mW, temps °C."""
    gpu = {"gpu": {"type": "integrated",
                   "status": {"railgate": False, "3d_scaling": True, "load": 37.5},
                   "freq": {"governor": "nvhost_podgov", "cur": 306000, "max": 624750,
                            "min": 306000}}}
    power = {"rail": {"VDD_CPU_GPU_CV": {"online": True, "volt": 5048, "curr": 119,
                                         "power": 600, "avg": 598},
                      "VDD_SOC": {"online": False, "power": 0}},
             "tot": {"name": "VDD_IN", "volt": 5056, "curr": 983, "power": 4970, "avg": 4960}}
    temperature = {"cpu": {"online": True, "temp": 47.5}, "cv0": {"online": False, "temp": -256},
                   "tj": {"online": True, "temp": 48.1}}
    r = convert_jtop(gpu, power, temperature)
    assert (r.gpu_load_percent, r.gpu_freq_hz) == (37.5, 306_000_000)
    assert r.power_mw == {"VDD_CPU_GPU_CV": 600.0, "VDD_IN": 4970.0}
    assert r.temperatures_c == {"cpu": 47.5, "tj": 48.1}


def test_nvml_is_none_without_library_or_gpu() -> None:
    source = open_nvml()
    if source is None:  # the normal case here: no nvidia-ml-py or no NVIDIA driver
        has_lib = importlib.util.find_spec("pynvml") is not None
        assert not has_lib or not Path("/dev/nvidiactl").exists()
        return
    try:
        gpus = source.read()
        assert gpus and all(g.source == "nvml" and g.name for g in gpus)
    finally:
        source.close()
