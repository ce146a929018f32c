"""The sampler's lifecycle and snapshots, on fixture roots, broken copies, and this machine."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path

import pytest

from edged.telemetry.sampler import Sampler
from edged.telemetry.snapshot import Snapshot

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sysfs"
NANO, AGX, X86 = FIXTURES / "orin-nano-8gb", FIXTURES / "agx-orin-64gb", FIXTURES / "x86-cpu"
KIB, GIB = 1024, 1 << 30


def _telemetry_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "edged-telemetry"]


def _wait_for_new(sampler: Sampler, old: Snapshot, timeout_s: float = 10.0) -> Snapshot:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        snap = sampler.snapshot()
        if snap is not old:
            return snap
        time.sleep(0.01)
    raise AssertionError("the background thread took no new sample")


@pytest.fixture
def nano_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "nano"
    shutil.copytree(NANO, dst, symlinks=True)
    return dst


def test_orin_nano_snapshot() -> None:
    sampler = Sampler(root=NANO, interval_s=3600)
    sampler.start()
    try:
        snap = sampler.snapshot()
    finally:
        sampler.stop()
    assert snap.errors == ()
    assert snap.sources == ("procfs", "psutil", "sysfs-jetson")
    assert snap.memory.available_bytes == 5632140 * KIB
    assert snap.memory.nvmap_used_bytes == 412380 * KIB
    dev = snap.device
    assert (dev.kind, dev.l4t_release, dev.jetpack) == ("jetson", "36.4.0", "6.1")
    assert dev.model == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit"
    assert (dev.cpu_model, dev.cpu_count) == ("ARM Cortex-A78AE", 6)
    (gpu,) = dev.gpus
    assert (gpu.load_percent, gpu.freq_hz, gpu.source) == (14.3, 306_000_000, "sysfs-jetson")
    assert (gpu.memory_total_bytes, gpu.memory_used_bytes) == (7763700 * KIB, 412380 * KIB)
    assert dev.temperatures_c["tj-thermal"] == 47.531
    assert dev.power_mw["VDD_IN"] == pytest.approx(983 * 5056 / 1000)
    assert snap.process_rss_bytes > 0 and 0.0 <= snap.cpu_percent <= 100.0


def test_x86_fixture_is_a_cpu_device() -> None:
    snap = Sampler(root=X86).sample_now()
    assert snap.device.kind == "cpu" and snap.device.gpus == ()
    assert snap.device.model == "OptiPlex 7050"
    assert snap.device.temperatures_c == {"acpitz": 27.8, "x86_pkg_temp": 38.0}
    assert snap.memory.nvmap_used_bytes is None
    assert snap.sources == ("procfs", "psutil", "sysfs-thermal") and snap.errors == ()


def test_simulated_8gb_device() -> None:
    snap = Sampler(root=AGX, memory_total_override=8 * GIB).sample_now()
    assert snap.memory.simulated and snap.memory.total_bytes == 8 * GIB
    assert snap.memory.available_bytes == 8 * GIB - (64335248 - 58123456) * KIB
    assert snap.device.gpus[0].memory_total_bytes == 8 * GIB  # the GPU shares the same RAM


def test_start_samples_synchronously_and_snapshot_returns_the_same_object() -> None:
    sampler = Sampler(root=NANO, interval_s=3600)
    sampler.start()
    after_start = time.time()
    try:
        first = sampler.snapshot()
        assert first.taken_at <= after_start  # taken inside start(), not by snapshot()
        assert sampler.snapshot() is first  # no sampling between samples: one attribute read
        fresh = sampler.sample_now()
        assert fresh is not first and fresh.taken_at >= first.taken_at
        assert sampler.snapshot() is fresh
    finally:
        sampler.stop()


def test_snapshot_before_start_samples_once() -> None:
    before = _telemetry_threads()
    sampler = Sampler(root=X86)
    snap = sampler.snapshot()
    assert snap is sampler.snapshot()
    assert _telemetry_threads() == before  # no thread without start()


def test_background_thread_samples_and_stops_promptly() -> None:
    before = set(_telemetry_threads())
    sampler = Sampler(root=NANO, interval_s=0.05)
    sampler.start()
    sampler.start()  # idempotent: still one thread
    try:
        (ours,) = set(_telemetry_threads()) - before
        assert ours.daemon
        first = sampler.snapshot()
        second = _wait_for_new(sampler, first)
        assert second.taken_at >= first.taken_at
    finally:
        sampler.stop()
    assert not ours.is_alive()
    sampler.stop()  # a second stop is harmless


def test_stop_does_not_wait_for_the_interval() -> None:
    before = set(_telemetry_threads())
    sampler = Sampler(root=NANO, interval_s=3600)
    sampler.start()
    (ours,) = set(_telemetry_threads()) - before
    sampler.stop()  # would block for the join timeout if the thread slept instead of waiting
    assert not ours.is_alive()


def test_snapshots_are_immutable() -> None:
    snap = Sampler(root=NANO).sample_now()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.memory.available_bytes = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.device.temperatures_c["cpu-thermal"] = 0.0  # type: ignore[index]


def test_this_machine() -> None:
    sampler = Sampler(interval_s=3600)
    sampler.start()
    try:
        snap = sampler.sample_now()
    finally:
        sampler.stop()
    assert snap.memory.total_bytes > 0
    assert 0 <= snap.memory.available_bytes <= snap.memory.total_bytes
    assert not snap.memory.simulated
    assert {"procfs", "psutil"} <= set(snap.sources)
    assert snap.device.kind in ("cpu", "nvidia-gpu", "jetson")
    assert snap.device.cpu_count >= 1 and snap.device.cpu_model
    assert 0.0 <= snap.cpu_percent <= 100.0 and snap.process_rss_bytes > 1 << 20
    assert not [e for e in snap.errors if e.startswith(("procfs", "psutil"))]


def test_unreadable_meminfo_is_an_error_and_nothing_available(nano_copy: Path) -> None:
    meminfo = nano_copy / "proc" / "meminfo"
    meminfo.unlink()
    meminfo.mkdir()  # reading fails with EISDIR, like an unreadable file
    snap = Sampler(root=nano_copy, memory_total_override=8 * GIB).sample_now()
    assert "procfs" not in snap.sources
    assert any(e.startswith("procfs: ") for e in snap.errors)
    assert (snap.memory.total_bytes, snap.memory.available_bytes) == (8 * GIB, 0)
    assert snap.device.power_mw["VDD_SOC"] == pytest.approx(279 * 5048 / 1000)  # rest still read


def test_garbled_files_never_raise_out_of_the_thread(nano_copy: Path) -> None:
    (nano_copy / "proc" / "meminfo").write_text("MemTotal:  lots kB\n")
    (nano_copy / "etc" / "nv_tegra_release").write_text("\0\0\0")
    (nano_copy / "sys/devices/virtual/thermal/thermal_zone8/temp").write_text("hot\n")
    sampler = Sampler(root=nano_copy, interval_s=0.05)
    sampler.start()
    try:
        first = sampler.snapshot()
        later = _wait_for_new(sampler, first)
    finally:
        sampler.stop()
    for snap in (first, later):
        joined = "\n".join(snap.errors)
        assert "procfs: /proc/meminfo line 1: not a number" in joined
        assert "sysfs-jetson: /etc/nv_tegra_release: no release line" in joined
        assert "sysfs-jetson: /sys/class/thermal/thermal_zone8/temp: not an integer" in joined
        assert snap.device.l4t_release is None
        assert "tj-thermal" not in snap.device.temperatures_c
        assert snap.device.gpus[0].load_percent == 14.3


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Sampler(interval_s=0)
