"""Daemon side of a request: check tensors against the signature, then describe them for the wire.

Every mistake a client can make is caught here, before anything is sent to the worker, with
an ``InvalidArgument`` whose ``field`` is the tensor's name and whose message says what was
expected ("input 'x': expected FP32, got INT64"). The worker re-checks shared-memory bounds
(a region can change between the two checks) but never sees an unvalidated tensor.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edged import errors as e
from edged.datatypes import NUMPY_TO_OIP, OIP_TO_NUMPY
from edged.engines.base import (
    UNSUPPORTED_DATATYPES,
    ShmRef,
    Signature,
    TensorSpec,
    datatype_of_numpy,
    numpy_of_datatype,
)
from edged.engines.shm import SHM_DIR
from edged.engines.worker_protocol import INLINE, LANE, SHM, ShmWindow, TensorDesc

_ALIGN = 64


def _bad(tensor: str, message: str) -> e.InvalidArgument:
    return e.InvalidArgument(message, field=tensor, reason="BAD_TENSOR",
                             metadata={"tensor": tensor})


class Prepared:
    """A validated request: descriptors for the worker, inline buffers, lane-bound arrays."""

    __slots__ = ("buffers", "descs", "lane_bytes", "lane_inputs", "out_shm", "outputs")

    def __init__(self) -> None:
        self.descs: list[TensorDesc] = []
        self.buffers: list[np.ndarray] = []
        self.lane_inputs: list[tuple[int, np.ndarray]] = []  # (offset in the lane, array)
        self.lane_bytes = 0
        self.outputs: tuple[str, ...] | None = None
        self.out_shm: dict[str, ShmWindow] = {}


class Checker:
    """One model's request checks, with the lookups built once at load (this runs on every
    request: it must cost a few microseconds)."""

    def __init__(self, sig: Signature, threshold: int, shm_dir: Path = SHM_DIR) -> None:
        self.sig = sig
        self._specs = {t.name: t for t in sig.inputs}
        self._outputs = frozenset(t.name for t in sig.outputs)
        self._threshold = threshold
        self._shm_dir = shm_dir

    def prepare(self, inputs: Mapping[str, np.ndarray | ShmRef], outputs: Sequence[str] | None,
                output_shm: Mapping[str, ShmRef] | None) -> Prepared:
        p = Prepared()
        specs = self._specs
        if len(inputs) != len(specs) or not specs.keys() >= inputs.keys():
            self._names(inputs)
        inline_at = 0
        for name, value in inputs.items():
            spec = specs[name]
            if type(value) is np.ndarray and NUMPY_TO_OIP.get(value.dtype) == spec.datatype \
                    and value.nbytes < self._threshold and value.flags.c_contiguous:
                _check_shape(spec, value.shape)  # the common case: a small array, inline
                n = value.nbytes
                p.descs.append((name, spec.datatype, value.shape, INLINE, "", inline_at, n))
                p.buffers.append(value)
                inline_at += n
                continue
            if isinstance(value, ShmRef):
                _check_ref(spec, value, self._shm_dir)
                p.descs.append((name, spec.datatype, tuple(value.shape), SHM,
                                value.name.lstrip("/"), value.offset, value.byte_size))
                continue
            arr = _array(spec, value)
            n = arr.nbytes
            if n >= self._threshold:
                p.lane_inputs.append((p.lane_bytes, arr))
                p.descs.append((name, spec.datatype, arr.shape, LANE, "", p.lane_bytes, n))
                p.lane_bytes += -(-n // _ALIGN) * _ALIGN
            else:
                p.descs.append((name, spec.datatype, arr.shape, INLINE, "", inline_at, n))
                p.buffers.append(arr)
                inline_at += n
        if outputs or output_shm:
            self._wanted(p, outputs or (), output_shm or {})
        return p

    def _names(self, inputs: Mapping[str, object]) -> None:
        for name in inputs:
            if name not in self._specs:
                raise _bad(name, f"unknown input '{name}' (the model's inputs: "
                                 f"{', '.join(self._specs) or 'none'})")
        for spec in self.sig.inputs:
            if spec.name not in inputs:
                raise _bad(spec.name, f"missing input '{spec.name}' ({spec.describe()})")

    def _wanted(self, p: Prepared, outputs: Sequence[str],
                output_shm: Mapping[str, ShmRef]) -> None:
        for name in (*outputs, *output_shm):
            if name not in self._outputs:
                raise _bad(name, f"unknown output '{name}' (the model's outputs: "
                                 f"{', '.join(sorted(self._outputs)) or 'none'})")
        for name, ref in output_shm.items():
            _check_window(name, "output", ref, self._shm_dir)
            p.out_shm[name] = (ref.name.lstrip("/"), ref.offset, ref.byte_size)
        if outputs:
            p.outputs = tuple(dict.fromkeys([*outputs, *p.out_shm]))


def _array(spec: TensorSpec, value: npt.ArrayLike) -> np.ndarray:
    """The input as a C-contiguous array of the right datatype and shape."""
    arr = value if type(value) is np.ndarray else np.asarray(value)
    if NUMPY_TO_OIP.get(arr.dtype) == spec.datatype and len(arr.shape) == len(spec.shape):
        _check_shape(spec, arr.shape)
        return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    if spec.datatype in UNSUPPORTED_DATATYPES:
        raise _bad(spec.name, f"input '{spec.name}': {spec.datatype} inputs are not supported: "
                              f"{UNSUPPORTED_DATATYPES[spec.datatype]}")
    try:
        got = datatype_of_numpy(arr.dtype)
    except e.InvalidArgument:
        got = str(arr.dtype)
    if got != spec.datatype:
        raise _bad(spec.name, f"input '{spec.name}': expected {spec.datatype}, got {got}")
    _check_shape(spec, tuple(arr.shape))
    return np.ascontiguousarray(arr)


def _check_shape(spec: TensorSpec, shape: tuple[int, ...]) -> None:
    want = spec.shape
    if len(shape) == len(want):
        for w, got in zip(want, shape):  # noqa: B905 - lengths checked just above
            if w >= 0 and w != got:
                break
        else:
            return
    raise _bad(spec.name, f"input '{spec.name}': shape {tuple(shape)} does not match "
                          f"{list(spec.shape)}")


def _check_ref(spec: TensorSpec, ref: ShmRef, shm_dir: Path) -> None:
    if ref.datatype != spec.datatype:
        raise _bad(spec.name, f"input '{spec.name}': expected {spec.datatype}, "
                              f"got {ref.datatype or 'no datatype'}")
    _check_shape(spec, tuple(ref.shape))
    try:
        needed = math.prod(ref.shape) * numpy_of_datatype(ref.datatype).itemsize
    except e.InvalidArgument as exc:
        raise _bad(spec.name, f"input '{spec.name}': {exc.message}") from None
    if ref.byte_size != needed:
        raise _bad(spec.name, f"input '{spec.name}': byte_size {ref.byte_size} does not match "
                              f"shape {list(ref.shape)} of {ref.datatype} ({needed} bytes)")
    _check_window(spec.name, "input", ref, shm_dir)


def _check_window(name: str, kind: str, ref: ShmRef, shm_dir: Path) -> None:
    """Bounds against the object's current size (the worker checks again when it maps)."""
    bare = ref.name.lstrip("/")
    if not bare or "/" in bare or bare in (".", ".."):
        raise _bad(name, f"{kind} '{name}': {ref.name!r} is not a POSIX shared memory name")
    try:
        size = os.stat(shm_dir / bare).st_size
    except OSError:
        raise _bad(name, f"{kind} '{name}': shared memory {ref.name!r} does not "
                         "exist") from None
    if ref.offset < 0 or ref.byte_size <= 0 or ref.offset + ref.byte_size > size:
        raise _bad(name, f"{kind} '{name}': offset {ref.offset} + byte_size {ref.byte_size} is "
                         f"outside shared memory {ref.name!r} ({size} bytes)")


def decode_outputs(descs: Sequence[TensorDesc], data: memoryview, lane_mm: mmap.mmap | None
                   ) -> dict[str, np.ndarray | ShmRef]:
    """The worker's reply as arrays (inline ones are views on the reply's own buffer; lane
    ones are copied out, since the lane is lent to the next request) and ShmRefs."""
    out: dict[str, np.ndarray | ShmRef] = {}
    for name, datatype, shape, where, region, offset, nbytes in descs:
        if where == SHM:
            out[name] = ShmRef(region, offset, nbytes, datatype, tuple(shape))
            continue
        dtype = OIP_TO_NUMPY.get(datatype) or numpy_of_datatype(datatype)
        if where == INLINE:
            out[name] = np.ndarray(shape, dtype, data, offset)
        else:
            out[name] = np.ndarray(shape, dtype, lane_mm, offset).copy()
    return out
