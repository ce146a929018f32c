"""What a version needs from the device, decided before any worker starts: GPU models are
planned as GPU models, a TensorRT engine is refused on another TensorRT, a missing artifact is
DATA_LOSS. TensorRT and CUDA cannot run here: the TensorRT version is injected, the engine
entries are what an install records from ``TensorRTBackend.inspect``'s details."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import modelgen
import pytest

from edged import errors as e
from edged.config import Budgets
from edged.engines.base import EngineOptions, detect_format, inspect
from edged.manager.catalog import engine_compat as ec
from edged.manager.catalog.catalog import Catalog
from edged.manager.catalog.manifests import Manifests
from edged.manager.catalog.store import Store
from edged.manager.events import EventBus
from edged.manager.manager import ModelManager


@pytest.mark.parametrize(("built", "installed", "same"), [
    ("10.3.0", "10.3.0", True), ("10.3.0", "10.3.0.30", True), ("10.3", "10.3.0", True),
    ("8.6.2", "10.3.0", False), ("10.3.0", "10.4.0", False), ("10.3.0", "10.3.1", False),
])
def test_tensorrt_release_comparison(built: str, installed: str, same: bool) -> None:
    assert ec.same_release(built, installed) is same


def test_a_different_tensorrt_is_refused_naming_both() -> None:
    info = {"tensorrt_version": "8.6.2", "gpu": "Orin (sm_87)"}
    with pytest.raises(e.FailedPrecondition) as exc:
        ec.check_tensorrt("det", 3, info, "10.3.0")
    assert "8.6.2" in str(exc.value) and "10.3.0" in str(exc.value)
    assert "Orin (sm_87)" in str(exc.value)
    ec.check_tensorrt("det", 3, info, "8.6.2.3")  # the same release: fine
    ec.check_tensorrt("det", 3, info, None)  # no TensorRT here: the backend says so itself
    ec.check_tensorrt("det", 3, {}, "10.3.0")  # nothing recorded: deserialisation decides


def test_install_records_the_tensorrt_version_and_the_gpu() -> None:
    details = {"tensorrt_version": "10.3.0", "gpu": "true", "layers": "12"}
    assert ec.install_info("tensorrt", details, {"gpu": "Jetson Orin Nano"}) == {
        "tensorrt_version": "10.3.0", "gpu": "Jetson Orin Nano"}
    assert ec.install_info("tensorrt", {**details, "gpu_name": "Orin"}, None)["gpu"] == "Orin"
    assert ec.install_info("onnx", details, None) == {}


@pytest.mark.parametrize(("fmt", "providers", "gpu"), [
    ("tensorrt", (), True), ("onnx", ("CUDAExecutionProvider",), True),
    ("onnx", ("TensorrtExecutionProvider", "CPUExecutionProvider"), True),
    ("onnx", ("CPUExecutionProvider",), False), ("onnx", (), False),
])
def test_gpu_from_format_and_providers(fmt: str, providers: tuple[str, ...], gpu: bool) -> None:
    assert ec.uses_gpu(fmt, providers) is gpu


@pytest.fixture
def manager(tmp_path: Path) -> ModelManager:
    state = tmp_path / "state"
    store = Store(state, detect_format=detect_format)
    manifests = Manifests(state, blob_exists=store.has)
    manifests.load()
    catalog = Catalog(store, manifests, inspect=lambda p, f: inspect(p, f))
    catalog.install("m", store.put_file(modelgen.add_model(tmp_path / "m.onnx")),
                    providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    catalog.install("cpu", store.put_file(modelgen.add_model(tmp_path / "c.onnx", offset=3.0)))
    budgets = Budgets(memory_total=8 << 30, reserve=1 << 30, ram=1 << 30, swap=1 << 30,
                      storage=1 << 30)
    return ModelManager(state_dir=state, budgets=budgets,
                        sampler=None, events=EventBus(100), catalog=catalog, store=store,
                        engine_options=lambda v: EngineOptions(providers=tuple(v.providers)),
                        tensorrt_version=lambda: "10.3.0")


def test_load_spec_plans_cuda_models_as_gpu_models(manager: ModelManager) -> None:
    m, cpu = manager.catalog.get("m"), manager.catalog.get("cpu")
    assert manager.load_spec(m, 1).gpu is True  # EngineOptions has no say: the version has
    assert manager.load_spec(cpu, 1).gpu is False


def test_load_spec_refuses_an_engine_for_another_tensorrt(manager: ModelManager) -> None:
    m = manager.catalog.get("m")
    v = replace(m.versions[1], format="tensorrt",
                engine_info={"tensorrt_version": "8.6.2", "gpu": "Orin"})
    trt = replace(m, versions={1: v})
    with pytest.raises(e.FailedPrecondition, match="TensorRT 8.6.2.*TensorRT 10.3.0"):
        manager.load_spec(trt, 1)
    ok = replace(m, versions={1: replace(v, engine_info={"tensorrt_version": "10.3.0"})})
    assert manager.load_spec(ok, 1).gpu is True


def test_load_spec_refuses_a_missing_artifact(manager: ModelManager) -> None:
    m = manager.catalog.get("cpu")
    manager.store.remove(m.versions[1].store_id)
    with pytest.raises(e.DataLoss, match="missing from the store"):
        manager.load_spec(m, 1)
    shown, _ = manager.get_model("cpu")
    assert "ARTIFACT MISSING" in shown.versions[1].notes
    assert "ARTIFACT MISSING" not in (manager.catalog.get("cpu").versions[1].notes or "")
