"""Every numeric Open Inference Protocol datatype through the real daemon, in raw and in typed
contents, compared with numpy. One generated model computes ``y_t = x_t + 1`` for each type
(``Not`` for BOOL): arithmetic, not Identity, so a tensor read with the wrong dtype or byte
order cannot come back unchanged and pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edged import errors as e
from edged.datatypes import CONTENTS_FIELD, OIP_TO_NUMPY
from edged.oip import grpc_service_pb2 as oip

DATATYPES = list(OIP_TO_NUMPY)  # the 12 numeric ones: BOOL, UINT8..64, INT8..64, FP16/32/64
TYPED = [dt for dt in DATATYPES if dt != "FP16"]  # the protocol has no typed field for FP16
SHAPE = (2, 3)


def _model(path: Path, datatypes: list[str]) -> Path:
    inputs, outputs, nodes, inits = [], [], [], []
    for dt in datatypes:
        np_dtype = OIP_TO_NUMPY[dt]
        t = helper.np_dtype_to_tensor_dtype(np_dtype)
        x, y = f"x_{dt.lower()}", f"y_{dt.lower()}"
        inputs.append(helper.make_tensor_value_info(x, t, ["batch", SHAPE[1]]))
        outputs.append(helper.make_tensor_value_info(y, t, ["batch", SHAPE[1]]))
        if dt == "BOOL":
            nodes.append(helper.make_node("Not", [x], [y]))
        else:
            inits.append(numpy_helper.from_array(np.array(1, dtype=np_dtype), f"one_{dt}"))
            nodes.append(helper.make_node("Add", [x, f"one_{dt}"], [y]))
    model = helper.make_model(helper.make_graph(nodes, "dtypes", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def _values(dt: str, rng: np.random.Generator) -> np.ndarray:
    np_dtype = OIP_TO_NUMPY[dt]
    if dt == "BOOL":
        return rng.random(SHAPE) < 0.5
    if np_dtype.kind == "f":
        return rng.standard_normal(SHAPE).astype(np_dtype) * 100
    info = np.iinfo(np_dtype)
    arr = rng.integers(info.min, info.max, SHAPE, dtype=np_dtype, endpoint=False)
    arr.flat[0], arr.flat[1] = info.min, info.max - 1  # the extremes (no overflow: + 1 fits)
    return arr


def _expected(x: np.ndarray) -> np.ndarray:
    return ~x if x.dtype == np.bool_ else x + x.dtype.type(1)


@pytest.fixture
def feeds(client, tmp_path) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    client.install("dtypes", _model(tmp_path / "dtypes.onnx", DATATYPES), group="dtypes")
    client.install("typed", _model(tmp_path / "typed.onnx", TYPED), group="dtypes")
    rng = np.random.default_rng(12)
    return {f"x_{dt.lower()}": _values(dt, rng) for dt in DATATYPES}


def _check(resp: oip.ModelInferResponse, feeds: dict[str, np.ndarray],
           datatypes: list[str]) -> None:
    got = {o.name: np.frombuffer(raw, OIP_TO_NUMPY[o.datatype]).reshape(tuple(o.shape))
           for o, raw in zip(resp.outputs, resp.raw_output_contents, strict=True)}
    assert sorted(got) == sorted(f"y_{dt.lower()}" for dt in datatypes)
    for dt in datatypes:
        x, y = feeds[f"x_{dt.lower()}"], got[f"y_{dt.lower()}"]
        assert y.dtype == x.dtype, dt
        np.testing.assert_array_equal(y, _expected(x), err_msg=dt)


def test_raw_contents_of_every_datatype(client, feeds) -> None:  # type: ignore[no-untyped-def]
    req = oip.ModelInferRequest(model_name="dtypes")
    for dt in DATATYPES:
        arr = feeds[f"x_{dt.lower()}"]
        req.inputs.add(name=f"x_{dt.lower()}", datatype=dt, shape=list(arr.shape))
        req.raw_input_contents.append(arr.tobytes())
    _check(client._call(client.oip.ModelInfer, req), feeds, DATATYPES)  # noqa: SLF001
    got = client.infer("dtypes", feeds)  # and edged.client's own encoding of each type
    for dt in DATATYPES:
        np.testing.assert_array_equal(got[f"y_{dt.lower()}"], _expected(feeds[f"x_{dt.lower()}"]))


def test_typed_contents_of_every_datatype(client, feeds) -> None:  # type: ignore[no-untyped-def]
    def request(model: str, datatypes: list[str]) -> oip.ModelInferRequest:
        req = oip.ModelInferRequest(model_name=model)
        for dt in datatypes:
            arr = feeds[f"x_{dt.lower()}"]
            t = req.inputs.add(name=f"x_{dt.lower()}", datatype=dt, shape=list(arr.shape))
            values = arr.astype(np.float32) if dt == "FP16" else arr  # (FP16: no such field)
            getattr(t.contents, CONTENTS_FIELD.get(dt, "fp32_contents")).extend(
                values.ravel().tolist())
        return req

    resp = client._call(client.oip.ModelInfer, request("typed", TYPED))  # noqa: SLF001
    _check(resp, feeds, TYPED)
    with pytest.raises(e.InvalidArgument) as info:
        client._call(client.oip.ModelInfer, request("dtypes", DATATYPES))  # noqa: SLF001
    assert "input 'x_fp16': FP16 has no typed contents field" in str(info.value)
    mixed = request("typed", TYPED)  # typed contents and raw contents in one request
    mixed.raw_input_contents.append(b"")
    with pytest.raises(e.InvalidArgument, match="contents must not be set when the request "
                                                "uses raw_input_contents"):
        client._call(client.oip.ModelInfer, mixed)  # noqa: SLF001
