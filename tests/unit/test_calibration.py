"""Per-device fixed costs: kept per device key, used by estimates, the config's override
winning; measured for real on this box's CPU (there is no GPU here: the GPU term is computed
from recorded numbers in ``from_load``, and ``measure`` runs its GPU half only where the CUDA
EP and a GPU exist)."""

from __future__ import annotations

from pathlib import Path

from edged.engines import calibration as cal
from edged.engines import estimate
from edged.engines.base import EngineOptions, inspect
from edged.engines.workers import WorkerPool

MiB = 1 << 20


def test_store_keeps_one_entry_per_device(tmp_path: Path) -> None:
    store = cal.CalibrationStore(tmp_path)
    assert store.get("a") is None
    store.put(cal.FixedCosts("a", 30 * MiB, 0, 1.0, "first load"))
    store.put(cal.FixedCosts("b", 31 * MiB, 1200 * MiB, 2.0, "edged calibrate"))
    again = cal.CalibrationStore(tmp_path)  # another process (edged calibrate) reads it
    assert again.get("a") == cal.FixedCosts("a", 30 * MiB, 0, 1.0, "first load")
    assert again.get("b").gpu_context_bytes == 1200 * MiB  # type: ignore[union-attr]
    (tmp_path / cal.FILE_NAME).write_text("{not json")
    assert cal.CalibrationStore(tmp_path).get("a") is None  # damaged: measure again


def test_device_key_names_gpu_driver_and_runtime() -> None:
    k = cal.device_key("nvidia-gpu", "NVIDIA H200", "570.124.06", "Xeon", runtime="1.31.1")
    assert k == "nvidia-gpu: NVIDIA H200 driver 570.124.06; onnxruntime 1.31.1"
    assert cal.device_key("cpu", "", "?", "Xeon", runtime="1.32.0") == \
        "cpu: Xeon; onnxruntime 1.32.0"


def test_apply_uses_the_measurement_and_the_override_wins() -> None:
    costs = cal.FixedCosts("d", 40 * MiB, 1200 * MiB, 1.0, "edged calibrate")
    o = cal.apply(EngineOptions(), costs, None)
    assert (o.worker_fixed_bytes, o.cuda_context_bytes) == (40 * MiB, 1200 * MiB)
    assert cal.apply(EngineOptions(), costs, 500 * MiB).cuda_context_bytes == 500 * MiB
    none = cal.apply(EngineOptions(), None, None)
    assert (none.worker_fixed_bytes, none.cuda_context_bytes) == (
        0, cal.DEFAULT_CUDA_CONTEXT_BYTES)


def test_from_load_on_recorded_gpu_numbers() -> None:
    """The issue's H200 reading: ppocr-det's first CUDA load measured 1478 MB with ~3 MB of
    weights and ~70 MB of activations, in a worker of 27 MB before its session."""
    c = cal.from_load("h200", footprint=1478_000_000, model_bytes=73 * MiB, gpu=True,
                      default_worker=27 * MiB, previous=None)
    assert c.worker_bytes == 27 * MiB
    assert c.gpu_context_bytes == 1478_000_000 - 27 * MiB - 73 * MiB
    cpu = cal.from_load("h200", 40 * MiB, 10 * MiB, False, 27 * MiB, previous=c)
    assert cpu.worker_bytes == 30 * MiB
    assert cpu.gpu_context_bytes == c.gpu_context_bytes  # a CPU load keeps the GPU term
    gpu2 = cal.from_load("h200", 1400 * MiB, 100 * MiB, True, 27 * MiB, previous=cpu)
    assert gpu2.gpu_context_bytes == 1400 * MiB - 30 * MiB - 100 * MiB


def test_calibrated_estimate_uses_the_measured_worker(demo_models: dict[str, Path]) -> None:
    base = inspect(demo_models["ppocr-cls"], options=EngineOptions())
    more = inspect(demo_models["ppocr-cls"],
                   options=EngineOptions(worker_fixed_bytes=estimate.worker_fixed(
                       EngineOptions()) + 10 * MiB))
    assert more.estimate_bytes - base.estimate_bytes == 10 * MiB
    assert more.details["fixed_costs"] == "calibrated"


def test_measure_on_this_cpu() -> None:
    pool = WorkerPool()
    try:
        c = cal.measure(pool, "here", gpu=False)
    finally:
        pool.close()
    # An idle worker with onnxruntime and a one-node session: 20-60 MB on any box we know.
    assert 20 * MiB < c.worker_bytes < 60 * MiB
    assert c.gpu_context_bytes == 0 and c.source == "edged calibrate"
