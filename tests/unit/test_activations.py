"""The activation reader against the ``onnx`` package's shape inference, and its liveness and
arena model on graphs whose answer is known by hand."""

from __future__ import annotations

from pathlib import Path

import modelgen
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper, shape_inference

from edged.engines import activations as act
from edged.engines.base import EngineOptions, inspect

MiB = 1 << 20


def _onnx_shapes(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    m = onnx.load(str(path))
    for i in m.graph.input:
        if i.name in shapes:
            for d, v in zip(i.type.tensor_type.shape.dim, shapes[i.name], strict=True):
                d.ClearField("dim_param")
                d.dim_value = v
    m = shape_inference.infer_shapes(m, data_prop=True)
    out = {}
    for v in list(m.graph.value_info) + list(m.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims):
            out[v.name] = tuple(d.dim_value for d in dims)
    return out


@pytest.mark.parametrize("name,shapes", [
    ("ppocr-det", {"x": (1, 3, 640, 640)}), ("ppocr-det", {"x": (2, 3, 320, 480)}),
    ("ppocr-rec", {"x": (1, 3, 48, 320)}), ("ppocr-cls", {"x": (4, 3, 48, 192)})])
def test_shapes_match_onnx_shape_inference(demo_models: dict[str, Path], name: str,
                                           shapes: dict[str, tuple[int, ...]]) -> None:
    """Every tensor that onnx's own inference can size gets the same shape here, and this
    reader sizes every tensor of these graphs (onnx loses some of rec's after a Reshape)."""
    ir = act.read_graph(demo_models[name])
    mine = act.infer(ir, shapes)
    ref = _onnx_shapes(demo_models[name], shapes)
    assert len(ref) > 100
    wrong = {k: (v, mine[k].shape) for k, v in ref.items() if mine[k].shape != v}
    assert wrong == {}
    assert act.peak_activations(ir, shapes).unknown == 0


def test_generated_models_match_onnx(tmp_path: Path) -> None:
    for path, shapes in ((modelgen.conv_net_model(tmp_path / "c.onnx"), {"x": (8, 3, 96, 64)}),
                         (modelgen.mlp_model(tmp_path / "m.onnx"), {"x": (4, 1024)})):
        mine = act.infer(act.read_graph(path), shapes)
        ref = _onnx_shapes(path, shapes)
        assert ref and all(mine[k].shape == v for k, v in ref.items())


def test_liveness_and_arena_on_a_chain(tmp_path: Path) -> None:
    """x -> Relu a (4 MiB) -> Sigmoid b (4 MiB) -> Reshape c (alias of b) -> Neg y.

    Each node's output is allocated before its dying input is released: at most two 4 MiB
    tensors are live (8 MiB). The arena serves a from a new region, b from another, frees a;
    y (4 MiB) then reuses a's chunk: 8 MiB reserved."""
    n = MiB // 4  # floats in 1 MiB
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])
    shape = numpy_helper.from_array(np.array([-1, n], dtype=np.int64), "shape")
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["a"], ["b"]),
             helper.make_node("Reshape", ["b", "shape"], ["c"]),
             helper.make_node("Neg", ["c"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "chain", [x], [y], [shape]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "chain.onnx"
    onnx.save(model, str(path))
    a = act.peak_activations(act.read_graph(path), {"x": (4, n)})
    assert (a.peak_bytes, a.arena_bytes, a.tensors, a.unknown) == (8 * MiB, 8 * MiB, 3, 0)


def test_arena_does_not_merge_across_regions_or_split_small_remainders() -> None:
    arena = act.BfcArena()
    arena.alloc("a", 1000 * 256)
    arena.alloc("b", 1000 * 256)
    arena.free("a")
    arena.free("b")
    arena.alloc("c", 1500 * 256)  # two free 1000-chunks in two regions: neither fits
    assert arena.reserved == 3500 * 256
    arena.alloc("d", 600 * 256)  # served by a 1000-chunk, not split (1000 < 2 x 600)
    arena.alloc("e", 600 * 256)
    assert arena.reserved == 3500 * 256 and arena.live == 3500 * 256


def test_estimate_uses_the_warmup_shapes(demo_models: dict[str, Path]) -> None:
    small = inspect(demo_models["ppocr-det"], options=EngineOptions())
    big = inspect(demo_models["ppocr-det"],
                  options=EngineOptions(warmup_shapes={"x": (1, 3, 640, 640)}))
    assert big.details["activation_shapes"] == "x=1x3x640x640"
    assert int(big.details["activation_bytes"]) > 40 * MiB
    assert big.estimate_bytes - small.estimate_bytes > 40 * MiB
    # An override naming no input is the load's error to report; the estimate just skips it.
    odd = inspect(demo_models["ppocr-det"], options=EngineOptions(warmup_shapes={"nope": (1,)}))
    assert odd.details["activation_bytes"] == "0"
