"""Generate small, large and odd ONNX models with ``onnx.helper`` for tests and benchmarks.

Real models come from ``tools/fetch_models.py``; these cover what no small real model does:
any size of weights (to exercise capacity planning), external data files, odd dtypes, a changed
signature, and a deliberately slow model (to keep requests in flight).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime we support


def _save(model: onnx.ModelProto, path: Path, external_data: bool = False) -> Path:
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_data:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))
    return path


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def add_model(path: Path, width: int = 4, offset: float = 1.0, dynamic_batch: bool = True,
              input_name: str = "x", output_name: str = "y") -> Path:
    """``y = x + offset`` over float32 [batch, width]: the smallest useful real model."""
    batch: str | int = "batch" if dynamic_batch else 1
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, width])
    y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, width])
    c = numpy_helper.from_array(np.full((width,), offset, dtype=np.float32), "c")
    node = helper.make_node("Add", [input_name, "c"], [output_name])
    return _save(_model(helper.make_graph([node], "add", [x], [y], [c])), path)


def weights_model(path: Path, weights_bytes: int, external_data: bool = False,
                  seed: int = 0) -> Path:
    """A model with about ``weights_bytes`` of float32 initializers that ORT really allocates.

    ``y = x @ W`` with W of shape [64, n]; the output is reduced to one number per row so that
    inference stays cheap whatever the size.
    """
    cols = max(1, weights_bytes // (64 * 4))
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((64, cols), dtype=np.float32) * 0.01
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("ReduceSum", ["h", "axes"], ["y"], keepdims=1),
    ]
    inits = [numpy_helper.from_array(w, "W"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")]
    graph = helper.make_graph(nodes, "weights", [x], [y], inits)
    return _save(_model(graph), path, external_data=external_data)


def identity_model(path: Path, dtype: int, shape: list[int | str] | None = None) -> Path:
    """``y = Identity(x)`` for any ONNX element type: round-trips odd dtypes."""
    shape = shape or ["batch", 3]
    x = helper.make_tensor_value_info("x", dtype, shape)
    y = helper.make_tensor_value_info("y", dtype, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    return _save(_model(graph), path)


def reduce_model(path: Path, shape: tuple[int, ...] = (1, 3, 640, 640)) -> Path:
    """``y = ReduceMean(x, axis 1)``: PP-OCR det's tensors (a 4.9 MB frame in, a 1.6 MB map
    out at the default shape) with next to no compute, so that what a path adds to moving
    them is not lost in the model's own run-to-run noise."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape[0], 1, *shape[2:]])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["y"], axes=[1],
                                                keepdims=1)], "reduce", [x], [y])
    return _save(_model(graph), path)


def nonzero_model(path: Path) -> Path:
    """``y = NonZero(x)``: an output whose shape depends on the input's values, not only on
    its shape (``[1, count of non-zeros]`` for a 1-D ``x``)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [1, "k"])
    graph = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"])], "nonzero", [x], [y])
    return _save(_model(graph), path)


def slow_model(path: Path, size: int = 256, repeats: int = 64) -> Path:
    """A chain of ``repeats`` float32 MatMuls [1,size]x[size,size]: milliseconds per call."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, size])
    w = np.eye(size, dtype=np.float32)
    nodes, prev = [], "x"
    for i in range(repeats):
        out = "y" if i == repeats - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, "W"], [out]))
        prev = out
    graph = helper.make_graph(nodes, "slow", [x], [y], [numpy_helper.from_array(w, "W")])
    return _save(_model(graph), path)


def loop_feeds(infer: Callable[[dict[str, np.ndarray]], object], seconds: float,
               probe_n: int = 20_000) -> dict[str, np.ndarray]:
    """Inputs that keep one call of a ``loop_model`` (already installed; ``infer`` runs it)
    busy for about ``seconds`` on this box, measured now: a test that needs a request in
    flight gets one whatever the box's load."""
    x = np.ones((1, 64), np.float32)
    infer({"x": x, "n": np.array(1)})
    t0 = time.perf_counter()
    infer({"x": x, "n": np.array(probe_n)})
    n = max(1000, int(probe_n * seconds / max(time.perf_counter() - t0, 1e-3)))
    return {"x": x, "n": np.array(n)}


def two_input_model(path: Path) -> Path:
    """``sum = a + b`` (float32) and ``idx = argmax(a)`` (int64): two inputs, two outputs."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 8])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 8])
    s = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 8])
    i = helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 1])
    nodes = [helper.make_node("Add", ["a", "b"], ["sum"]),
             helper.make_node("ArgMax", ["a"], ["idx"], axis=1, keepdims=1)]
    return _save(_model(helper.make_graph(nodes, "two", [a, b], [s, i])), path)


def loop_model(path: Path, width: int = 64) -> Path:
    """``y = x`` passed ``n`` times through a Loop of Sin(x @ W): the input ``n`` (INT64 scalar)
    sets how long one call takes (~10-30 us per iteration), so a test can keep a request in
    flight for as long as it needs (crash, hang and deadline tests)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])
    n = helper.make_tensor_value_info("n", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])
    w = numpy_helper.from_array(np.eye(width, dtype=np.float32) * 0.5, "W")
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]),
         helper.make_node("MatMul", ["s", "W"], ["h"]),
         helper.make_node("Sin", ["h"], ["s_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [1, width])])
    true = numpy_helper.from_array(np.array(True), "true")
    node = helper.make_node("Loop", ["n", "true", "x"], ["y"], body=body)
    graph = helper.make_graph([node], "loop", [x, n], [y], [w, true])
    return _save(_model(graph), path)


def mixed_weights_model(path: Path, external_data: bool = False, width: int = 64) -> Path:
    """Initializers of several types: FP16 and INT8 weights, a BOOL mask, an FP32 scale.

    ``y = Where(mask, (x @ float(W16)) @ dequantize(W8), 0)`` over float32 [batch, width]; with
    ``external_data`` the larger tensors go to ``<name>.data``.
    """
    rng = np.random.default_rng(1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])
    inits = [
        numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float16), "W16"),
        numpy_helper.from_array(rng.integers(-127, 127, (width, width), dtype=np.int8), "W8"),
        numpy_helper.from_array(np.array(0.01, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array(0, dtype=np.int8), "zero_point"),
        numpy_helper.from_array(np.arange(width) % 3 != 0, "mask"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Cast", ["W16"], ["W16f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "W16f"], ["h1"]),
        helper.make_node("DequantizeLinear", ["W8", "scale", "zero_point"], ["W8f"]),
        helper.make_node("MatMul", ["h1", "W8f"], ["h2"]),
        helper.make_node("Where", ["mask", "h2", "zero"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "mixed", [x], [y], inits)
    return _save(_model(graph), path, external_data=external_data)


def big_weights_model(path: Path, weights_bytes: int) -> Path:
    """``weights_model``'s graph with constant weights written straight to an external data
    file: a 256 MB model in a fraction of a second instead of ~9 s (random numbers, the
    checker's re-serialization and protobuf copies dominate). ORT holds the same bytes."""
    cols = max(1, weights_bytes // (64 * 4))
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + ".data")
    np.full((64, cols), 0.001, dtype=np.float32).tofile(data)
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[64, cols],
                    data_location=TensorProto.EXTERNAL)
    for key, value in (("location", data.name), ("offset", "0"),
                       ("length", str(64 * cols * 4))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("ReduceSum", ["h", "axes"], ["y"], keepdims=1),
    ]
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    model = _model(helper.make_graph(nodes, "weights", [x], [y], [w, axes]))
    onnx.save_model(model, str(path))
    return path


def conv_net_model(path: Path, channels: int = 32, blocks: int = 4, seed: int = 0) -> Path:
    """A small CNN over float32 [batch, 3, height, width] (both dynamic): conv-relu blocks
    that halve the resolution and double the channels, a residual add, a pooled head.
    Its activations, not its weights, set its footprint at realistic shapes and batches:
    the case the estimate's activation term is held to."""
    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])
    nodes, inits, prev, cin = [], [], "x", 3
    for b in range(blocks):
        cout = channels << b
        for k, (cin_k, stride) in enumerate(((cin, 2), (cout, 1))):
            w = f"w{b}_{k}"
            inits.append(numpy_helper.from_array(
                (rng.standard_normal((cout, cin_k, 3, 3)) * 0.1).astype(np.float32), w))
            nodes.append(helper.make_node("Conv", [prev, w], [f"c{b}_{k}"], pads=[1, 1, 1, 1],
                                          strides=[stride, stride]))
            nodes.append(helper.make_node("Relu", [f"c{b}_{k}"], [f"r{b}_{k}"]))
            prev = f"r{b}_{k}"
        nodes.append(helper.make_node("Add", [f"r{b}_0", prev], [f"s{b}"]))
        prev, cin = f"s{b}", cout
    inits.append(numpy_helper.from_array(
        (rng.standard_normal((cin, 10)) * 0.1).astype(np.float32), "head"))
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["gap"]),
              helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("MatMul", ["flat", "head"], ["y"])]
    return _save(_model(helper.make_graph(nodes, "convnet", [x], [y], inits)), path)


def mlp_model(path: Path, width: int = 1024, hidden: int = 4096, seed: int = 0) -> Path:
    """``y = relu(x @ W1) @ W2`` over float32 [batch, width]: a transformer-like MLP block,
    whose activations grow with the batch."""
    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])
    inits = [numpy_helper.from_array((rng.standard_normal((width, hidden)) * 0.01)
                                     .astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((hidden, width)) * 0.01)
                                     .astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("MatMul", ["a", "w2"], ["y"])]
    return _save(_model(helper.make_graph(nodes, "mlp", [x], [y], inits)), path)
