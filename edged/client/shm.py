"""Zero-copy inference for local clients: tensors travel through POSIX shared memory.

When the daemon is on a local Unix socket, ``EdgedClient`` keeps one shared-memory arena per
thread, registered once with Triton's system shared-memory extension, and for tensors above a
threshold writes inputs into it and asks for outputs in it: only the references cross the
socket, and the engine worker maps the arena itself. Output windows are sized from the previous
answer of the same model to the same input shapes (the first call of a shape gets its outputs
over gRPC), so no output size has to be guessed.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from edged.datatypes import numpy_dtype, oip_datatype
from edged.oip import grpc_service_pb2 as oip

ALIGN = 64


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class Arena:
    """One registered shared-memory object, reused call after call by one thread."""

    def __init__(self, register: Any, unregister: Any, size: int) -> None:
        self.region = f"edged-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.shm = shared_memory.SharedMemory(name=self.region, create=True, size=size)
        self.size = size
        self._unregister = unregister
        try:
            register(self.region, "/" + self.shm.name, size)
        except BaseException:
            self._destroy()
            raise

    def _destroy(self) -> None:
        self.shm.close()
        try:
            self.shm.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        try:
            self._unregister(self.region)
        except Exception:  # noqa: BLE001 - the daemon may be gone already
            pass
        self._destroy()


class ShmTransport:
    def __init__(self, register: Any, unregister: Any, threshold: int) -> None:
        self._register, self._unregister = register, unregister
        self.threshold = threshold
        self._local = threading.local()
        self._arenas: list[Arena] = []
        self._lock = threading.Lock()
        self._out_sizes: dict[tuple[Any, ...], dict[str, int]] = {}

    def wants(self, inputs: Mapping[str, np.ndarray]) -> bool:
        return sum(a.nbytes for a in inputs.values()) >= self.threshold

    def _arena(self, size: int) -> Arena:
        arena: Arena | None = getattr(self._local, "arena", None)
        if arena is None or arena.size < size:
            if arena is not None:
                arena.close()
                with self._lock:
                    self._arenas.remove(arena)
            arena = Arena(self._register, self._unregister, max(size, 1 << 20))
            with self._lock:
                self._arenas.append(arena)
            self._local.arena = arena
        return arena

    def request(self, name: str, inputs: Mapping[str, np.ndarray],
                outputs: Sequence[str] | None, version: str
                ) -> tuple[oip.ModelInferRequest, Arena, dict[str, tuple[int, int]], Any]:
        key = (name, version, tuple((k, a.shape, a.dtype.str) for k, a in inputs.items()))
        out_sizes = self._out_sizes.get(key, {})
        wanted = list(outputs) if outputs else list(out_sizes)
        total = sum(_align(a.nbytes) for a in inputs.values()) + sum(
            _align(out_sizes[o]) for o in wanted if o in out_sizes)
        arena = self._arena(total)
        req = oip.ModelInferRequest(model_name=name, model_version=version)
        offset = 0
        for tname, arr in inputs.items():
            a = np.require(arr, requirements="C")
            view = np.ndarray(a.shape, a.dtype, buffer=arena.shm.buf, offset=offset)
            view[...] = a
            t = req.inputs.add(name=tname, datatype=oip_datatype(a.dtype), shape=list(a.shape))
            _refer(t.parameters, arena.region, offset, a.nbytes)
            offset += _align(a.nbytes)
        windows: dict[str, tuple[int, int]] = {}
        for oname in wanted:
            o = req.outputs.add(name=oname)
            if oname in out_sizes:
                _refer(o.parameters, arena.region, offset, out_sizes[oname])
                windows[oname] = (offset, out_sizes[oname])
                offset += _align(out_sizes[oname])
        return req, arena, windows, key

    def outputs(self, resp: oip.ModelInferResponse, arena: Arena, key: Any
                ) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        sizes: dict[str, int] = {}
        raw = iter(resp.raw_output_contents)
        for t in resp.outputs:
            dt = numpy_dtype(t.datatype)
            shape = tuple(t.shape)
            nbytes = math.prod(shape) * dt.itemsize
            sizes[t.name] = nbytes
            if "shared_memory_region" in t.parameters:
                off = t.parameters["shared_memory_offset"].int64_param if (
                    "shared_memory_offset" in t.parameters) else 0
                out[t.name] = np.ndarray(shape, dt, buffer=arena.shm.buf, offset=off).copy()
            else:
                out[t.name] = np.frombuffer(next(raw), dtype=dt).reshape(shape)
        self._out_sizes[key] = sizes
        return out

    def close(self) -> None:
        with self._lock:
            arenas, self._arenas = self._arenas, []
        for a in arenas:
            a.close()


def _refer(params: Any, region: str, offset: int, size: int) -> None:
    params["shared_memory_region"].string_param = region
    params["shared_memory_offset"].int64_param = offset
    params["shared_memory_byte_size"].int64_param = size
