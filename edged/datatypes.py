"""Open Inference Protocol datatype names <-> numpy dtypes, shared by both sides of the wire.

Neutral ground: the client, the service layer and the engines all need this one table, and the
client may not import the daemon's layers.
"""

from __future__ import annotations

import numpy as np

OIP_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_OIP: dict[np.dtype, str] = {v: k for k, v in OIP_TO_NUMPY.items()}

# Which InferTensorContents field carries each datatype when a client sends typed contents.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def numpy_dtype(datatype: str) -> np.dtype:
    """OIP name -> numpy dtype; ValueError names the unsupported type."""
    try:
        return OIP_TO_NUMPY[datatype]
    except KeyError:
        known = ", ".join(OIP_TO_NUMPY)
        raise ValueError(f"unsupported datatype {datatype!r} (supported: {known})") from None


def oip_datatype(dtype: np.dtype | type) -> str:
    dt = np.dtype(dtype)
    try:
        return NUMPY_TO_OIP[dt]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no Open Inference Protocol datatype") from None
