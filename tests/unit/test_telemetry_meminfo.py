"""/proc/meminfo parsing and the simulated-total arithmetic, against recorded fixture trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.telemetry.meminfo import memory_info, parse_meminfo, read_meminfo

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sysfs"
NANO, AGX, X86 = FIXTURES / "orin-nano-8gb", FIXTURES / "agx-orin-64gb", FIXTURES / "x86-cpu"
KIB, GIB = 1024, 1 << 30


def test_orin_nano_meminfo_in_bytes_with_nvmap() -> None:
    info = read_meminfo(NANO)
    assert info["MemTotal"] == 7763700 * KIB
    assert 7.3 * GIB < info["MemTotal"] < 7.5 * GIB  # what an 8 GB Orin Nano really shows
    assert info["MemAvailable"] == 5632140 * KIB
    assert info["NvMapMemUsed"] == 412380 * KIB
    assert info["NvMapMemFree"] == 0
    assert info["SwapTotal"] == info["SwapFree"] == 3881840 * KIB
    assert info["Hugepagesize"] == 2048 * KIB
    assert "HugePages_Total" not in info  # a page count, not a size


def test_memory_info_per_fixture() -> None:
    nano = memory_info(NANO, None)
    assert nano == nano.__class__(
        total_bytes=7763700 * KIB, available_bytes=5632140 * KIB,
        swap_total_bytes=3881840 * KIB, swap_free_bytes=3881840 * KIB,
        nvmap_used_bytes=412380 * KIB, simulated=False)
    agx = memory_info(AGX, None)
    assert (agx.total_bytes, agx.available_bytes) == (64335248 * KIB, 58123456 * KIB)
    assert agx.nvmap_used_bytes == 1843200 * KIB
    x86 = memory_info(X86, None)
    assert (x86.total_bytes, x86.available_bytes) == (32617820 * KIB, 27514036 * KIB)
    assert x86.nvmap_used_bytes is None  # no NvMap line off a Jetson
    assert x86.swap_free_bytes == 2097148 * KIB


def test_override_carries_real_usage_onto_the_simulated_total() -> None:
    real_used = (32617820 - 27514036) * KIB
    sim = memory_info(X86, 8 * GIB)
    assert sim.simulated is True
    assert sim.total_bytes == 8 * GIB
    assert sim.available_bytes == 8 * GIB - real_used
    assert (sim.swap_total_bytes, sim.swap_free_bytes) == (2097148 * KIB, 2097148 * KIB)


def test_override_clamps_at_zero_and_at_the_total() -> None:
    nano_used = (7763700 - 5632140) * KIB  # ~2.03 GiB in use
    tiny = memory_info(NANO, 1 * GIB)
    assert (tiny.total_bytes, tiny.available_bytes) == (1 * GIB, 0)
    exact = memory_info(NANO, nano_used)
    assert exact.available_bytes == 0
    big = memory_info(NANO, 64 * GIB)
    assert big.available_bytes == 64 * GIB - nano_used <= big.total_bytes
    assert tiny.nvmap_used_bytes == 412380 * KIB  # NvMap is what the GPU holds: unchanged


def test_override_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        memory_info(NANO, 0)


def test_real_proc_meminfo_is_plausible() -> None:
    mem = memory_info(Path("/"), None)
    assert mem.total_bytes > 0
    assert 0 <= mem.available_bytes <= mem.total_bytes
    assert 0 <= mem.swap_free_bytes <= mem.swap_total_bytes or mem.swap_total_bytes == 0


@pytest.mark.parametrize("text, message", [
    ("MemTotal:       abc kB\n", "not a number"),
    ("MemTotal        7763700 kB\n", "cannot parse"),
    ("MemTotal:       7763700 MB\n", "unknown unit"),
    ("MemTotal:\n", "cannot parse"),
])
def test_garbled_meminfo_raises_with_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        parse_meminfo("MemFree: 1 kB\n" + text)
    assert "line 2" in str(err.value)


def test_missing_memavailable_is_an_error_not_a_zero(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text("MemTotal:  1000 kB\nMemFree:  500 kB\n")
    with pytest.raises(ValueError, match="MemAvailable"):
        memory_info(tmp_path, None)
