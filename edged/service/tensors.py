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

    @property
    def uses_shm(self) -> bool:
        return bool(self.output_shm) or any(isinstance(v, tuple) for v in self.inputs.values())


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


def _dtype(t: Any, where: str) -> np.dtype:
    if t.datatype == "BYTES":
        raise e.InvalidArgument(f"input '{t.name}': BYTES (string) tensors are not supported by "
                                "edged's engines yet", field=f"{where}.datatype")
    try:
        return numpy_dtype(t.datatype)
    except ValueError as exc:
        raise e.InvalidArgument(f"input '{t.name}': {exc}", field=f"{where}.datatype") from None


def _typed(t: Any, dtype: np.dtype, shape: tuple[int, ...], where: str) -> np.ndarray:
    """An input given in ``contents`` (the typed repeated fields)."""
    field = CONTENTS_FIELD.get(t.datatype)
    if field is None:
        raise e.InvalidArgument(f"input '{t.name}': {t.datatype} has no typed contents field in "
                                "the Open Inference Protocol; send it in raw_input_contents",
                                field=f"{where}.contents")
    values = getattr(t.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise e.InvalidArgument(
            f"input '{t.name}': {len(values)} values in contents.{field} but shape "
            f"{list(shape)} needs {count}", field=f"{where}.contents")
    try:
        return np.asarray(values, dtype=dtype)
    except (OverflowError, ValueError) as exc:
        raise e.InvalidArgument(f"input '{t.name}': contents.{field} do not fit {t.datatype}: "
                                f"{exc}", field=f"{where}.contents") from None


MAX_ELEMENTS = 1 << 40  # far beyond any tensor a device holds; numpy's own limit is lower


def check_shape(name: str, shape: tuple[int, ...], field: str) -> tuple[int, ...]:
    """A shape numpy can build: no negative dimension and, per dimension and in all, at most
    ``MAX_ELEMENTS`` elements (a zero dimension does not make ``[0, 2**63-1]`` a valid
    shape: numpy refuses it, and that is the client's mistake, not an internal error)."""
    if any(d < 0 for d in shape):
        raise e.InvalidArgument(f"input '{name}': negative dimension in {list(shape)}",
                                field=field)
    if any(d > MAX_ELEMENTS for d in shape) or math.prod(d for d in shape if d) > MAX_ELEMENTS:
        raise e.InvalidArgument(f"input '{name}': shape {list(shape)} is too large (at most "
                                f"{MAX_ELEMENTS} elements per dimension and in all)",
                                field=field)
    return shape


def decode(req: oip.ModelInferRequest) -> DecodedRequest:
    """Triton's rules for where an input's data is: shared memory if it has the parameters,
    else typed ``contents`` if set, else the next ``raw_input_contents`` entry. So the raw
    entries belong, in order, to the inputs that have neither — tritonclient sends raw
    contents only for the inputs that are not in shared memory."""
    raw = req.raw_input_contents
    next_raw = 0
    inputs: dict[str, Any] = {}
    for i, t in enumerate(req.inputs):
        where = f"inputs[{i}]"
        if not t.name:
            raise e.InvalidArgument("input without a name", field=where)
        if t.name in inputs:
            raise e.InvalidArgument(f"input '{t.name}' given twice", field=where)
        shape = check_shape(t.name, tuple(int(d) for d in t.shape), f"{where}.shape")
        dtype = _dtype(t, where)
        shm = shm_params(t.parameters, where)
        if shm is not None:
            inputs[t.name] = (shm, t.datatype, shape)
            continue
        if t.HasField("contents"):
            if raw:
                raise e.InvalidArgument(
                    f"input '{t.name}': contents must not be set when the request uses "
                    "raw_input_contents", field=f"{where}.contents")
            arr = _typed(t, dtype, shape, where)
        elif next_raw < len(raw):
            buf = raw[next_raw]
            expected = math.prod(shape) * dtype.itemsize
            if len(buf) != expected:
                raise e.InvalidArgument(
                    f"input '{t.name}': {len(buf)} bytes of raw contents but shape {list(shape)} "
                    f"of {t.datatype} needs {expected}", field=f"raw_input_contents[{next_raw}]")
            next_raw += 1
            arr = np.frombuffer(buf, dtype=dtype)
        elif math.prod(shape) == 0:
            arr = np.empty(0, dtype)
        else:
            raise e.InvalidArgument(f"input '{t.name}': no data (no shared memory, contents or "
                                    "raw_input_contents for it)", field=where)
        inputs[t.name] = arr.reshape(shape)
    if next_raw != len(raw):
        raise e.InvalidArgument(
            f"{len(raw)} raw_input_contents but only {next_raw} inputs take raw contents (the "
            "ones not in shared memory, in order)", field="raw_input_contents")
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
