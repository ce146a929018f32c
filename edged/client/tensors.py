"""numpy <-> ``ModelInferRequest``/``ModelInferResponse`` on the client side (raw contents)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edged.datatypes import numpy_dtype, oip_datatype
from edged.oip import grpc_service_pb2 as oip


def infer_request(name: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None,
                  version: str = "") -> oip.ModelInferRequest:
    req = oip.ModelInferRequest(model_name=name, model_version=version)
    for tname, arr in inputs.items():
        a = np.require(arr, requirements="C")
        req.inputs.add(name=tname, datatype=oip_datatype(a.dtype), shape=list(a.shape))
        req.raw_input_contents.append(a.tobytes())
    for oname in outputs or ():
        req.outputs.add(name=oname)
    return req


def infer_outputs(resp: oip.ModelInferResponse) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for i, t in enumerate(resp.outputs):
        dt = numpy_dtype(t.datatype)
        if i < len(resp.raw_output_contents):
            arr = np.frombuffer(resp.raw_output_contents[i], dtype=dt)
        else:  # typed contents (other servers); edged always answers raw
            from edged.datatypes import CONTENTS_FIELD

            arr = np.asarray(getattr(t.contents, CONTENTS_FIELD[t.datatype]), dtype=dt)
        out[t.name] = arr.reshape(tuple(t.shape))
    return out
