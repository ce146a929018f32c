"""``ModelInferRequest`` → numpy (or shared-memory references) and numpy → response.

The request path's only copies are the ones protobuf forces: ``raw_input_contents`` bytes are
viewed with ``np.frombuffer`` (no copy), and outputs are written once into
``raw_output_contents``. Every mismatch is an ``InvalidArgument`` naming the tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edged import errors as e
from edged.datatypes import CONTENTS_FIELD, numpy_dtype, oip_datatype
from edged.oip import grpc_service_pb2 as oip

SHM_KEYS = ("shared_memory_region", "shared_memory_offset", "shared_memory_byte_size")


@dataclass(frozen=True)
class ShmParams:
    region: str
    offset: int
    byte_size: int


@dataclass
class DecodedRequest:
    inputs: dict[str, Any]  # name -> ndarray, or (ShmParams, datatype, shape) for shm inputs
    outputs: list[str] | None
    output_shm: dict[str, ShmParams]


def _param(params: Any, key: str) -> Any:
    p = params[key]
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def shm_params(params: Any, where: str) -> ShmParams | None:
    if "shared_memory_region" not in params:
        return None
    try:
        region = str(_param(params, "shared_memory_region"))
        size = int(_param(params, "shared_memory_byte_size"))
        offset = int(_param(params, "shared_memory_offset")) if (
            "shared_memory_offset" in params) else 0
    except (KeyError, TypeError, ValueError):
        raise e.InvalidArgument("shared memory needs shared_memory_region and "
                                "shared_memory_byte_size", field=where) from None
    if offset < 0 or size < 0:
        raise e.InvalidArgument("shared memory offset and size must be >= 0", field=where)
    return ShmParams(region, offset, size)


def decode(req: oip.ModelInferRequest) -> DecodedRequest:
    raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        raise e.InvalidArgument(
            f"{len(raw)} raw_input_contents for {len(req.inputs)} inputs: send raw contents "
            "for every input or for none", field="raw_input_contents")
    inputs: dict[str, Any] = {}
    for i, t in enumerate(req.inputs):
        where = f"inputs[{i}]"
        if not t.name:
            raise e.InvalidArgument("input without a name", field=where)
        if t.name in inputs:
            raise e.InvalidArgument(f"input '{t.name}' given twice", field=where)
        shape = tuple(int(d) for d in t.shape)
        if any(d < 0 for d in shape):
            raise e.InvalidArgument(f"input '{t.name}': negative dimension in {list(shape)}",
                                    field=f"{where}.shape")
        try:
            dtype = numpy_dtype(t.datatype)
        except ValueError as exc:
            raise e.InvalidArgument(f"input '{t.name}': {exc}", field=f"{where}.datatype") from None
        shm = shm_params(t.parameters, where)
        if shm is not None:
            inputs[t.name] = (shm, t.datatype, shape)
            continue
        count = math.prod(shape)
        if raw:
            buf = raw[i]
            expected = count * dtype.itemsize
            if len(buf) != expected:
                raise e.InvalidArgument(
                    f"input '{t.name}': {len(buf)} bytes of raw contents but shape {list(shape)} "
                    f"of {t.datatype} needs {expected}", field=f"raw_input_contents[{i}]")
            arr = np.frombuffer(buf, dtype=dtype)
        else:
            values = getattr(t.contents, CONTENTS_FIELD.get(t.datatype, ""), None)
            if values is None or len(values) != count:
                got = 0 if values is None else len(values)
                raise e.InvalidArgument(
                    f"input '{t.name}': {got} values in contents but shape {list(shape)} needs "
                    f"{count}", field=f"{where}.contents")
            arr = np.asarray(values, dtype=dtype)
        inputs[t.name] = arr.reshape(shape)
    outputs = [o.name for o in req.outputs] or None
    output_shm = {}
    for j, o in enumerate(req.outputs):
        shm = shm_params(o.parameters, f"outputs[{j}]")
        if shm is not None:
            output_shm[o.name] = shm
    return DecodedRequest(inputs, outputs, output_shm)


def encode(req: oip.ModelInferRequest, name: str, version: int,
           results: Mapping[str, Any]) -> oip.ModelInferResponse:
    resp = oip.ModelInferResponse(model_name=name, model_version=str(version), id=req.id)
    for oname, value in results.items():
        if isinstance(value, np.ndarray):
            out = resp.outputs.add(name=oname, datatype=oip_datatype(value.dtype),
                                   shape=list(value.shape))
            resp.raw_output_contents.append(np.require(value, requirements="C").tobytes())
        else:  # written into the client's shared-memory region: (ShmParams, datatype, shape)
            shm, datatype, shape = value
            out = resp.outputs.add(name=oname, datatype=datatype, shape=list(shape))
            out.parameters["shared_memory_region"].string_param = shm.region
            out.parameters["shared_memory_byte_size"].int64_param = shm.byte_size
            if shm.offset:
                out.parameters["shared_memory_offset"].int64_param = shm.offset
    return resp
