"""``ModelInferRequest`` decoding: where each input's data is (shared memory, typed contents,
raw contents), with Triton's rules, and a clear InvalidArgument for every mismatch."""

from __future__ import annotations

import numpy as np
import pytest

from edged import errors as e
from edged.oip import grpc_service_pb2 as oip
from edged.service.tensors import ShmParams, decode


def _shm(t: oip.ModelInferRequest.InferInputTensor, region: str, size: int) -> None:
    t.parameters["shared_memory_region"].string_param = region
    t.parameters["shared_memory_byte_size"].int64_param = size


def test_raw_contents_belong_to_the_inputs_not_in_shared_memory() -> None:
    """What tritonclient sends with one input in shared memory: raw contents for the others."""
    req = oip.ModelInferRequest(model_name="vad")
    _shm(req.inputs.add(name="input", datatype="FP32", shape=[1, 512]), "in0", 2048)
    req.inputs.add(name="state", datatype="FP32", shape=[2, 1, 128])
    req.inputs.add(name="sr", datatype="INT64", shape=[])
    state = np.arange(256, dtype=np.float32).reshape(2, 1, 128)
    req.raw_input_contents.extend([state.tobytes(), np.int64(16000).tobytes()])
    d = decode(req)
    assert d.inputs["input"] == (ShmParams("in0", 0, 2048), "FP32", (1, 512))
    np.testing.assert_array_equal(d.inputs["state"], state)
    assert d.inputs["sr"].shape == () and d.inputs["sr"] == 16000
    assert d.uses_shm


def test_typed_contents_and_their_mistakes() -> None:
    req = oip.ModelInferRequest(model_name="m")
    t = req.inputs.add(name="a", datatype="INT16", shape=[3])
    t.contents.int_contents.extend([1, -2, 3])
    d = decode(req)
    assert d.inputs["a"].dtype == np.int16 and list(d.inputs["a"]) == [1, -2, 3]
    assert not d.uses_shm
    t.contents.int_contents[1] = 70000  # does not fit INT16
    with pytest.raises(e.InvalidArgument, match="input 'a': contents.int_contents do not fit"):
        decode(req)
    half = oip.ModelInferRequest(model_name="m")
    half.inputs.add(name="h", datatype="FP16", shape=[1]).contents.fp32_contents.append(1.0)
    with pytest.raises(e.InvalidArgument, match="input 'h': FP16 has no typed contents field"):
        decode(half)


@pytest.mark.parametrize("build, message", [
    (lambda r: r.raw_input_contents.extend([b"\0" * 16, b"\0" * 16]),
     "2 raw_input_contents but only 1 inputs take raw contents"),
    (lambda r: r.raw_input_contents.append(b"\0" * 15),
     "input 'x': 15 bytes of raw contents but shape \\[2, 2\\] of FP32 needs 16"),
    (lambda r: None, "input 'x': no data"),
])
def test_raw_contents_mismatches(build, message) -> None:  # type: ignore[no-untyped-def]
    req = oip.ModelInferRequest(model_name="m")
    req.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    build(req)
    with pytest.raises(e.InvalidArgument, match=message):
        decode(req)


def test_bytes_inputs_are_refused_clearly() -> None:
    req = oip.ModelInferRequest(model_name="m")
    req.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"hi")
    with pytest.raises(e.InvalidArgument, match="input 'text': BYTES \\(string\\) tensors are "
                                                "not supported") as info:
        decode(req)
    assert info.value.field == "inputs[0].datatype"
