"""Runtime caps from the budget, device-memory meters, footprint growth and the TensorRT
built-for check: the pure parts, with recorded Jetson trees and a stand-in NVML (no GPU here:
nothing in this file claims TensorRT, CUDA or NVML ran)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from edged import errors as e
from edged.engines import estimate as est
from edged.engines import footprint, gpumem
from edged.engines.base import EngineOptions
from edged.engines.onnxruntime import _provider_list
from edged.engines.procfs import anon_peak
from edged.engines.tensorrt import check_built_for

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sysfs"
MiB = 1 << 20


def test_runtime_cap_is_what_the_tier_has_left_and_at_least_the_model() -> None:
    assert est.runtime_cap(1000 * MiB, 300 * MiB, 50 * MiB) == 700 * MiB
    assert est.runtime_cap(1000 * MiB, 980 * MiB, 50 * MiB) == 50 * MiB  # never below itself
    assert est.runtime_cap(1000 * MiB, 0, 2000 * MiB) == 2000 * MiB


def test_ort_provider_caps_follow_the_limit() -> None:
    """CUDA's gpu_mem_limit is the cap; the TensorRT EP's workspace what it leaves after the
    weights (not a fixed 256 MiB), at least 32 MiB."""
    opts = EngineOptions(tensorrt_ep=True)
    chosen = (est.TENSORRT_EP, est.CUDA, est.CPU)
    trt, cuda, cpu = _provider_list(chosen, opts, 2048 * MiB, 100 * MiB)
    assert trt[1]["trt_max_workspace_size"] == str(1948 * MiB)
    assert cuda[1]["gpu_mem_limit"] == str(2048 * MiB) and cpu == est.CPU
    trt, _, _ = _provider_list(chosen, opts, 120 * MiB, 100 * MiB)
    assert trt[1]["trt_max_workspace_size"] == str(32 * MiB)
    assert est.tensorrt_ep_workspace(16 * MiB, 100 * MiB) == 16 * MiB


def test_nvmap_meter_reads_the_jetson_tree() -> None:
    meter = gpumem.nvmap_meter(FIXTURES / "orin-nano-8gb")
    assert meter is not None and meter(1234) == 412380 * 1024
    assert gpumem.nvmap_meter(FIXTURES / "x86-cpu") is None  # no NvMap lines: no meter
    assert gpumem.open_meter(FIXTURES / "orin-nano-8gb", use_nvml=False) is not None
    assert gpumem.open_meter(FIXTURES / "x86-cpu", use_nvml=False) is None


def test_nvmap_growth_over_a_load_is_added_for_gpu_sessions(tmp_path: Path) -> None:
    root = tmp_path / "jetson"
    (root / "proc").mkdir(parents=True)
    meminfo = root / "proc" / "meminfo"
    meminfo.write_text("MemTotal: 7999999 kB\nNvMapMemUsed:   100000 kB\n")
    meter = gpumem.nvmap_meter(root)
    assert meter is not None
    before = meter(1)
    meminfo.write_text("MemTotal: 7999999 kB\nNvMapMemUsed:   400000 kB\n")
    after = meter(1)
    gpu = ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert gpumem.gpu_growth(gpu, before, after) == 300000 * 1024
    assert gpumem.gpu_growth(("TensorRT",), before, after) == 300000 * 1024
    assert gpumem.gpu_growth(("CPUExecutionProvider",), before, after) == 0
    assert gpumem.gpu_growth(gpu, None, after) == 0
    assert gpumem.gpu_growth(gpu, after, before) == 0  # (freed meanwhile: never negative)


@dataclass
class _Proc:
    pid: int
    usedGpuMemory: int | None  # noqa: N815 - NVML's own name


class _FakeNvml:
    """The few pynvml functions the meter calls (NVML cannot run here)."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices: list[list[_Proc]], broken: bool = False) -> None:
        self.devices, self.broken = devices, broken

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        if self.broken:
            raise self.NVMLError("GPU is lost")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        return i

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[_Proc]:  # noqa: N802
        return self.devices[handle]


def test_nvml_meter_sums_one_process_over_devices() -> None:
    nvml = _FakeNvml([[_Proc(10, 300 * MiB), _Proc(11, 5 * MiB)], [_Proc(10, 20 * MiB)],
                      [_Proc(10, None)]])
    meter = gpumem.NvmlMeter(nvml)
    assert meter(10) == 320 * MiB and meter(11) == 5 * MiB and meter(12) == 0
    assert gpumem.NvmlMeter(_FakeNvml([], broken=True))(10) is None


@dataclass
class _M:
    key: str
    footprint: int
    gpu_bytes: int = 0
    served: int = 0
    sampled: int = 0


def _status(rss_anon: int, hwm: int, file_pages: int = 10 * MiB):  # type: ignore[no-untyped-def]
    return lambda: {"RssAnon": rss_anon, "VmRSS": rss_anon + file_pages, "VmHWM": hwm,
                    "RssShmem": 0}


def test_regrow_gives_growth_to_the_busiest_model() -> None:
    a, b = _M("a", 60 * MiB, served=5, sampled=5), _M("b", 20 * MiB, served=9, sampled=2)
    # worker: 80 MiB accounted; now 85 MiB anon, and a peak of 140 MiB (incl. 10 MiB files)
    hit = footprint.regrow([a, b], _status(85 * MiB, 140 * MiB), anon_peak)
    assert hit == (b, 50 * MiB) and b.footprint == 70 * MiB and a.footprint == 60 * MiB
    assert a.sampled == a.served and b.sampled == b.served
    assert footprint.regrow([a, b], _status(200 * MiB, 200 * MiB), anon_peak) is None  # idle


def test_regrow_ignores_noise_and_counts_device_memory() -> None:
    m = _M("m", 400 * MiB, gpu_bytes=300 * MiB, served=1)
    # anon 101 MiB + 300 MiB on the GPU vs 400 accounted: 1 MiB is noise
    assert footprint.regrow([m], _status(101 * MiB, 101 * MiB), anon_peak) is None
    m.served += 1
    assert footprint.regrow([m], _status(150 * MiB, 150 * MiB), anon_peak) == (m, 50 * MiB)
    m.served += 1

    def gone() -> dict[str, int]:
        raise FileNotFoundError("/proc/1/status")

    assert footprint.regrow([m], gone, anon_peak) is None


@pytest.mark.parametrize(("info", "installed", "cc", "message"), [
    ({"tensorrt_version": "8.6.2"}, "10.3.0", (8, 7),
     "built with TensorRT 8.6.2 but this device has TensorRT 10.3.0"),
    ({"tensorrt_version": "10.3.0.26"}, "10.7.0.23", (8, 7),
     "built with TensorRT 10.3.0.26 but this device has TensorRT 10.7.0.23"),
    ({"compute_capability": "sm_87"}, "10.3.0", (9, 0),
     "compute capability 8.7 but this device's GPU is 9.0"),
    ({"tensorrt_version": "10.3", "compute_capability": "8.6"}, "10.3.0.30", (8, 7),
     "compute capability 8.6"),
])
def test_an_engine_built_elsewhere_is_refused_naming_both(
        info: dict[str, str], installed: str, cc: tuple[int, int], message: str) -> None:
    with pytest.raises(e.FailedPrecondition, match=message) as exc:
        check_built_for(info, installed, cc, "det.engine")
    assert "rebuild it on this device" in exc.value.message and exc.value.field == "artifact"


@pytest.mark.parametrize("info", [
    {}, {"tensorrt_version": "10.3.0.26"}, {"tensorrt_version": "10.3.0.99"},
    {"tensorrt_version": "unknown"}, {"compute_capability": "87"},
    {"compute_capability": "8.7", "gpu": "Orin"},
])
def test_an_engine_built_here_or_unknown_passes(info: dict[str, str]) -> None:
    check_built_for(info, "10.3.0.26", (8, 7), "det.engine")  # the build number may differ


def test_cuda_cap_is_the_admitted_bytes_plus_headroom_with_bounded_cudnn() -> None:
    from edged.engines.estimate import gpu_mem_limit
    from edged.engines.onnxruntime import cuda_options

    limit = gpu_mem_limit(400 * MiB, "25%")
    assert limit == 500 * MiB and gpu_mem_limit(400 * MiB, 64 * MiB) == 464 * MiB
    opts = EngineOptions(gpu_mem_limit_bytes=limit)
    cuda = cuda_options(opts, 40 << 30)  # the tier's remainder (40 GB) is not the cap
    assert cuda["gpu_mem_limit"] == str(500 * MiB)
    assert cuda["cudnn_conv_algo_search"] == "HEURISTIC"
    assert cuda["cudnn_conv_use_max_workspace"] == "0"
    assert cuda["arena_extend_strategy"] == "kSameAsRequested"
    wide = cuda_options(EngineOptions(cudnn_conv_algo_search="EXHAUSTIVE",
                                      cudnn_conv_use_max_workspace=True), 300 * MiB)
    assert wide["gpu_mem_limit"] == str(300 * MiB)  # no admitted bytes: the runtime cap
    assert (wide["cudnn_conv_algo_search"], wide["cudnn_conv_use_max_workspace"]) == (
        "EXHAUSTIVE", "1")
    _, (_, from_list), _ = _provider_list((est.TENSORRT_EP, est.CUDA, est.CPU),
                                          EngineOptions(tensorrt_ep=True,
                                                        gpu_mem_limit_bytes=limit),
                                          40 << 30, 100 * MiB)
    assert from_list["gpu_mem_limit"] == str(500 * MiB)


class _OrtFail(Exception):
    pass


@pytest.mark.parametrize("message", [
    # recorded from onnxruntime-gpu runs that outgrew gpu_mem_limit / the device
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running "
    "Conv node. Name:'p2o.Conv.58' Status Message: /onnxruntime_src/onnxruntime/core/framework/"
    "bfc_arena.cc:376 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, "
    "onnxruntime::Stream*, bool, onnxruntime::WaitNotificationFn) Failed to allocate memory for "
    "requested buffer of size 88473600",
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running "
    "Conv node. Name:'conv1' Status Message: CUDA failure 2: out of memory ; GPU=0 ; "
    "hostname=h200 ; file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_allocator.cc ; "
    "line=47 ; expr=cudaMalloc((void**)&p, size);",
    "[ONNXRuntimeError] : 1 : FAIL : CUDNN failure 9: CUDNN_STATUS_ALLOC_FAILED ; GPU=0",
])
def test_running_out_of_the_gpu_cap_is_resource_exhausted(message: str) -> None:
    from edged.engines.onnxruntime import run_error

    err = run_error(_OrtFail(message))
    assert isinstance(err, e.ResourceExhausted)


NVMAP_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvmap"


def test_nvmap_clients_give_each_worker_its_own_bytes() -> None:
    """The debugfs clients file (recorded format): a process's clients summed, the total row
    and the header skipped; a pid that holds nothing reads 0, a missing file None."""
    meter = gpumem.open_meter(NVMAP_FIXTURES / "orin-nano-8gb", use_nvml=False)
    assert isinstance(meter, gpumem.NvmapClientsMeter) and gpumem.per_process(meter)
    assert meter(4242) == (295604 + 1024) * 1024 and meter(4243) == 81920 * 1024
    assert meter(7) == 0
    assert gpumem.read_nvmap_clients(NVMAP_FIXTURES / "nope") is None
    # the meminfo meter is system-wide: not used to tell workers apart
    assert not gpumem.per_process(gpumem.nvmap_meter(FIXTURES / "orin-nano-8gb"))
    assert gpumem.per_process(gpumem.NvmlMeter(_FakeNvml([])))


def test_regrow_re_measures_device_memory_after_inferences() -> None:
    """The issue's silero-vad on the H200: accounted 1656 MB at load (of which ~1300 MiB on
    the GPU), its worker held 2700 MiB of device memory after 200 inferences (NVML, per
    process, as nvidia-ml-py returns it). The re-measure accounts the device growth."""
    nvml = _FakeNvml([[_Proc(77, 2700 * MiB), _Proc(78, 900 * MiB)]])
    meter = gpumem.NvmlMeter(nvml)
    m = _M("silero", 1656_000_000, gpu_bytes=1300 * MiB, served=200)
    anon = 1656_000_000 - 1300 * MiB  # the host side did not grow
    hit = footprint.regrow([m], _status(anon, anon), anon_peak, lambda: meter(77))
    assert hit is not None and hit[0] is m
    assert m.gpu_bytes == 2700 * MiB and m.footprint == anon + 2700 * MiB
    m.served += 10  # no reading this time (NVML busy): nothing is lost, nothing invented
    assert footprint.regrow([m], _status(anon, anon), anon_peak, lambda: None) is None


def test_shared_worker_counts_the_context_once_and_attributes_growth() -> None:
    """share_worker: one, four models (the issue: 2627 MB accounted after loading, 8364 MiB
    of device memory after 50 inferences each). Each look gives what grew to the model that
    served most since the previous look; the sum then matches the device's number."""
    host = 200 * MiB
    models = [_M("vad", 1200 * MiB, gpu_bytes=1100 * MiB), _M("cls", 500 * MiB, 460 * MiB),
              _M("rec", 500 * MiB, 470 * MiB), _M("det", 427 * MiB, 397 * MiB)]
    assert sum(m.footprint for m in models) - sum(m.gpu_bytes for m in models) == host - 0
    readings = iter([3000 * MiB, 5200 * MiB, 7000 * MiB, 8364 * MiB])
    for m in models:  # one model busy between two looks, in turn
        m.served += 50
        footprint.regrow(models, _status(host, host), anon_peak, lambda: next(readings))
    accounted = sum(m.footprint for m in models)
    device = host + 8364 * MiB
    assert abs(accounted / device - 1) <= 0.15 and accounted == device
    assert all(m.gpu_bytes >= 397 * MiB for m in models)
    assert models[0].footprint == 1200 * MiB + (3000 * MiB - 2427 * MiB)
