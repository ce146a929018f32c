"""inspect / detect_format: the protobuf reader against the ``onnx`` package, bad artifacts,
the TensorRT guard, signatures and datatypes. No worker processes here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import modelgen
import numpy as np
import onnx
import pytest
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from edged import errors as e
from edged.engines import base
from edged.engines.base import EngineOptions, Signature, TensorSpec
from edged.engines.onnx_inspect import summarize


def _datatype(elem: int) -> str:
    return base.datatype_of_numpy(helper.tensor_dtype_to_np_dtype(elem))


def _weights(graph: onnx.GraphProto) -> int:
    """Initializer + Constant-node bytes, subgraphs included, as the onnx package sees them."""
    total = sum(numpy_helper.to_array(t).nbytes for t in graph.initializer)
    for node in graph.node:
        for a in node.attribute:
            if a.type == AttributeProto.TENSOR:
                total += numpy_helper.to_array(a.t).nbytes
            elif a.type == AttributeProto.GRAPH:
                total += _weights(a.g)
            elif a.type == AttributeProto.GRAPHS:
                total += sum(_weights(g) for g in a.graphs)
    return total


def _truth(path: Path) -> tuple[Signature, int]:
    model = onnx.load(str(path))  # loads external data too
    g = model.graph
    inits = {t.name for t in g.initializer}

    def spec(vi: onnx.ValueInfoProto) -> TensorSpec:
        t = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorSpec(vi.name, _datatype(t.elem_type), dims)

    sig = Signature(tuple(spec(v) for v in g.input if v.name not in inits),
                    tuple(spec(v) for v in g.output))
    return sig, _weights(g)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gen")
    return {
        "weights-inline": modelgen.weights_model(d / "w.onnx", 1 << 20),
        "weights-external": modelgen.weights_model(d / "wx" / "w.onnx", 1 << 20,
                                                   external_data=True),
        "mixed": modelgen.mixed_weights_model(d / "mixed.onnx"),
        "mixed-external": modelgen.mixed_weights_model(d / "mx" / "m.onnx", external_data=True),
        "fp16": modelgen.identity_model(d / "fp16.onnx", TensorProto.FLOAT16),
        "int8": modelgen.identity_model(d / "int8.onnx", TensorProto.INT8, ["n", 2, 3]),
        "bool": modelgen.identity_model(d / "bool.onnx", TensorProto.BOOL, [4]),
        "two": modelgen.two_input_model(d / "two.onnx"),
        "loop": modelgen.loop_model(d / "loop.onnx"),
        "slow": modelgen.slow_model(d / "slow.onnx", size=32, repeats=4),
    }


def test_reader_matches_onnx_on_demo_models(demo_models: dict[str, Path]) -> None:
    for name, path in demo_models.items():
        sig, weights = _truth(path)
        s = summarize(path)
        assert s.signature == sig, name
        assert s.weights_bytes == weights, name
        assert s.nodes > 100, name


@pytest.mark.parametrize("name", ["weights-inline", "weights-external", "mixed",
                                  "mixed-external", "fp16", "int8", "bool", "two", "loop",
                                  "slow"])
def test_reader_matches_onnx_on_generated_models(generated: dict[str, Path], name: str) -> None:
    sig, weights = _truth(generated[name])
    s = summarize(generated[name])
    assert s.signature == sig
    assert s.weights_bytes == weights
    if "external" in name:
        assert s.external_files and s.external_bytes > 0


def test_inspect_reports_estimate_and_details(demo_models: dict[str, Path]) -> None:
    info = base.inspect(demo_models["ppocr-rec"])
    assert info.format == "onnx"
    assert info.estimate_bytes == info.weights_bytes + info.overhead_bytes
    assert info.details["providers"] == "CPUExecutionProvider"
    assert int(info.details["nodes"]) > 100
    gpu = base.inspect(demo_models["ppocr-rec"], options=EngineOptions(
        providers=("CUDAExecutionProvider",)))
    assert gpu.details["providers"] == "none available"  # CPU-only onnxruntime here


def test_subgraph_weights_are_counted(generated: dict[str, Path]) -> None:
    s = summarize(generated["loop"])
    assert s.subgraphs == 1 and s.nodes == 4  # Loop + its three body nodes


def test_detect_format(tmp_path: Path, demo_models: dict[str, Path]) -> None:
    assert base.detect_format(demo_models["ppocr-cls"]) == "onnx"
    plan = tmp_path / "m.engine"
    plan.write_bytes(b"ftrt" + bytes(64))
    assert base.detect_format(plan) == "tensorrt"
    ultra = tmp_path / "u.bin"  # Ultralytics-style JSON prefix before the plan
    meta = b'{"imgsz": [640, 640]}'
    ultra.write_bytes(len(meta).to_bytes(4, "little") + meta + b"ftrt" + bytes(64))
    assert base.detect_format(ultra) == "tensorrt"


@pytest.mark.parametrize("content, why", [
    (b"", "empty"),
    (b"hello, this is not a model at all\n" * 10, "not a valid ONNX model"),
    (b"\x00\x01\x02garbage", "not a valid ONNX model"),
])
def test_detect_format_refuses_garbage(tmp_path: Path, content: bytes, why: str) -> None:
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(e.InvalidArgument, match=why) as exc:
        base.detect_format(p)
    assert exc.value.field == "artifact"


def test_truncated_onnx_is_invalid_argument(tmp_path: Path,
                                            demo_models: dict[str, Path]) -> None:
    data = demo_models["ppocr-det"].read_bytes()
    for cut in (len(data) // 2, len(data) - 3, 40):
        p = tmp_path / f"cut{cut}.onnx"
        p.write_bytes(data[:cut])
        with pytest.raises(e.InvalidArgument, match="truncated|overruns"):
            base.detect_format(p)
        with pytest.raises(e.InvalidArgument):
            base.inspect(p)


def test_tensorrt_suffix_without_plan_header(tmp_path: Path) -> None:
    p = tmp_path / "model.plan"
    p.write_bytes(b"PK\x03\x04 not an engine")
    with pytest.raises(e.InvalidArgument, match="no TensorRT plan header"):
        base.detect_format(p)


def test_missing_artifact(tmp_path: Path) -> None:
    with pytest.raises(e.InvalidArgument, match="does not exist"):
        base.detect_format(tmp_path / "nope.onnx")


def test_missing_external_data_is_data_loss(tmp_path: Path) -> None:
    p = modelgen.weights_model(tmp_path / "x" / "w.onnx", 1 << 20, external_data=True)
    Path(str(p) + ".data").unlink()
    with pytest.raises(e.DataLoss, match="external data file 'w.onnx.data' is missing"):
        base.inspect(p)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="TensorRT is installed here")
def test_tensorrt_not_installed(tmp_path: Path) -> None:
    plan = tmp_path / "m.engine"
    plan.write_bytes(b"ftrt" + bytes(64))
    with pytest.raises(e.FailedPrecondition, match="TensorRT .* not installed"):
        base.inspect(plan)
    with pytest.raises(e.FailedPrecondition, match="not installed"):
        base.get_backend("tensorrt").open(plan, EngineOptions())


def test_unknown_format() -> None:
    with pytest.raises(e.InvalidArgument, match="unknown model format 'tflite'"):
        base.get_backend("tflite")


def test_signature_diff() -> None:
    a = Signature((TensorSpec("x", "FP32", (-1, 4)), TensorSpec("s", "FP32", (2,))),
                  (TensorSpec("y", "FP32", (-1, 4)),))
    b = Signature((TensorSpec("x", "FP16", (-1, 8)),),
                  (TensorSpec("y", "FP32", (-1, 4)), TensorSpec("z", "INT64", (1,))))
    assert a.diff(a) == []
    assert a.diff(b) == ["input 's' removed", "input 'x': datatype FP32 -> FP16",
                         "input 'x': shape [-1, 4] -> [-1, 8]", "output 'z' added (INT64[1])"]
    assert Signature.from_wire(a.to_wire()) == a


def test_datatypes() -> None:
    for name in base.DATATYPES:
        if name in base.UNSUPPORTED_DATATYPES:
            with pytest.raises(e.InvalidArgument, match=name):
                base.numpy_of_datatype(name)
        else:
            assert base.datatype_of_numpy(base.numpy_of_datatype(name)) == name
    assert base.datatype_of_numpy(np.dtype(object)) == "BYTES"
    with pytest.raises(e.InvalidArgument):
        base.datatype_of_numpy(np.complex64)


def test_options_round_trip_the_wire() -> None:
    o = EngineOptions(providers=("CPUExecutionProvider",), warmup_shapes={"x": (1, 512)},
                      memory_limit_bytes=1 << 30)
    assert EngineOptions.from_wire(o.to_wire()) == o


def test_the_daemon_side_never_imports_onnxruntime(demo_models: dict[str, Path]) -> None:
    code = ("import sys; from pathlib import Path; "
            "from edged.engines import base, workers; "
            f"base.inspect(Path({str(demo_models['ppocr-cls'])!r})); "
            "base.detect_format(Path({!r})); ".format(str(demo_models["silero-vad"])) +
            "print(','.join(m for m in ('onnxruntime', 'onnx', 'tensorrt') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""
