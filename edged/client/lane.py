"""Direct lanes, client side: inference straight to the engine worker, no gRPC call.

``EdgedClient`` on a local socket opens lanes (``Models/OpenLane``) and keeps them per model,
one per concurrent caller (a lane carries one request at a time). Wire and layout:
``edged.lanewire``. Two ways to use them:

* ``EdgedClient.infer`` uses a lane transparently: inputs are copied into the lane once, the
  outputs copied out once (they are the caller's to keep).
* ``EdgedClient.lane(name)`` lends a ``LaneHandle``: ``inputs()`` gives writable numpy arrays
  in the lane's memory (write a camera frame there once), ``run()`` gives read-only arrays in
  it (valid until the next ``run`` on that handle). Nothing is copied on either side.

A revoked lane (the daemon unloads, evicts or switches the model) is not an error: the
request is retried through gRPC (``ModelInfer``) and the next one opens a new lane. A lane
whose worker died raises ``Unavailable`` (reason WORKER_CRASHED) at once; the next request
opens a new lane, which loads the model again.
"""

from __future__ import annotations

import array
import errno
import logging
import math
import mmap
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from edged import errors as e
from edged import lanewire as lw
from edged.datatypes import numpy_dtype, oip_datatype

log = logging.getLogger(__name__)

RECV_TICK_S = 0.05  # how late a waiting caller may notice its deadline
MAX_LANES_PER_MODEL = 32
RETRY_OPEN_AFTER_S = 1.0  # after a failed open, gRPC for this long before trying again


class LaneRevoked(Exception):
    """The daemon took the lane back before the request ran: retry it elsewhere."""


class LaneTooSmall(Exception):
    """The outputs need a bigger lane (``needed`` bytes); nothing was written."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"the outputs need a lane of {needed} bytes")
        self.needed = needed


def _error(meta: Sequence[Any]) -> e.EdgedError:
    _, _seq, cls_name, message, field, reason, metadata = meta
    cls = getattr(e, str(cls_name), None)
    if not (isinstance(cls, type) and issubclass(cls, e.EdgedError)) or cls_name in (
            "CapacityExceeded", "SignatureChanged"):
        cls = e.Internal
    return cls(str(message), field=field, reason=reason, metadata=dict(metadata or {}))


class Lane:
    """One connected lane (one request at a time: the caller holds it exclusively)."""

    def __init__(self, model: str, version: int, path: str, *, connect_timeout_s: float = 10.0
                 ) -> None:
        self.model, self.version = model, version
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.settimeout(connect_timeout_s)
            sock.connect(path)
            msg, anc, _flags, _addr = sock.recvmsg(lw.MAX_MESSAGE, socket.CMSG_SPACE(4))
            fds = array.array("i")
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            if not msg or not fds:
                raise e.Unavailable(f"the lane to '{model}' was refused (it is granted to "
                                    "the process that asked for it)", reason="LANE_REFUSED")
            hello = lw.decode(msg)
            try:
                self.size = int(hello[1])
                self.mm = mmap.mmap(fds[0], self.size)
            finally:
                for fd in fds:
                    os.close(fd)
            if lw.HEADER.unpack_from(self.mm, 0)[0] != lw.MAGIC:
                raise e.Internal("the lane's memory has no lane header")
        except OSError as exc:
            sock.close()
            raise e.Unavailable(f"cannot connect the lane to '{model}': {exc}",
                                reason="LANE_REFUSED") from None
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        usec = int(RECV_TICK_S * 1e6)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, usec))
        self._sock = sock
        self._seq = 0
        self._descs: list[list[Any]] = []
        self._in_end = lw.HEADER_BYTES
        self._in_key: Any = None  # the last inputs' specs, and their arrays
        self._in_views: dict[str, np.ndarray] = {}
        self._request = (b"[]", lw.HEADER_BYTES)  # (encoded input descriptors, their end)
        self._out_key = b""  # the last reply's descriptors, and their arrays
        self._out_views: dict[str, np.ndarray] = {}
        self.out_bytes = 0  # what the last outputs took (sizes the next lane)
        self.broken = False

    # -- zero-copy use ---------------------------------------------------------------------
    def fits(self, in_bytes: int, out_bytes: int) -> bool:
        return lw.HEADER_BYTES + lw.align(in_bytes) + lw.align(out_bytes) + 4 * lw.ALIGN \
            <= self.size

    def inputs(self, specs: Mapping[str, tuple[Sequence[int], Any]]) -> dict[str, np.ndarray]:
        """Writable arrays in the lane for ``{name: (shape, dtype)}``: write the inputs there,
        then ``run``."""
        key = tuple((k, tuple(s), d) for k, (s, d) in specs.items())
        if key == self._in_key:
            return self._in_views
        at = lw.HEADER_BYTES
        descs, views = [], {}
        for name, (shape, dtype) in specs.items():
            dt = np.dtype(dtype)
            shape = tuple(int(d) for d in shape)
            n = math.prod(shape) * dt.itemsize
            if at + n > self.size:
                raise LaneTooSmall(lw.lane_size(at + n + self.out_bytes))
            views[name] = np.ndarray(shape, dt, self.mm, at)
            descs.append([name, oip_datatype(dt), list(shape), at, n])
            at = lw.align(at + n)
        self._descs, self._in_end = descs, at
        self._in_key, self._in_views = key, views
        self._request = lw.encode(descs), at
        return views

    def run(self, outputs: Sequence[str] | None = None, timeout: float | None = None
            ) -> dict[str, np.ndarray]:
        """Run on the inputs written in the arrays from ``inputs``; read-only arrays in the
        lane, valid until the next ``inputs``/``run``."""
        if self.broken:
            raise LaneRevoked()
        if struct.unpack_from("<I", self.mm, lw.REVOKED_AT)[0]:
            raise LaneRevoked()
        self._seq += 1
        seq = self._seq
        deadline = time.monotonic() + timeout if timeout else 0.0
        descs, in_end = self._request
        msg = b'["infer",%d,%r,%s,%s,%d]' % (seq, deadline, lw.encode(list(outputs)) if outputs
                                             else b"null", descs, in_end)
        try:
            self._sock.send(msg)
        except OSError:
            raise self._ended() from None
        data = self._wait(seq, deadline, timeout)
        if data.startswith(b'["ok",'):
            descs_json = data[data.index(b",", 6) + 1:-1]
            if descs_json == self._out_key:
                return self._out_views
            self._out_key = b""
            self._out_views = self._ok(lw.decode(data))
            self._out_key = descs_json
            return self._out_views
        reply = lw.decode(data)
        kind = reply[0]
        if kind == "err":
            raise _error(reply)
        if kind == "small":
            self.out_bytes = max(self.out_bytes, int(reply[2]) - self._in_end)
            raise LaneTooSmall(lw.lane_size(int(reply[2])))
        self.broken = True
        raise LaneRevoked()

    def _ok(self, reply: list[Any]) -> dict[str, np.ndarray]:
        out = {}
        total = 0
        for name, datatype, shape, offset, nbytes in reply[2]:
            arr = np.ndarray(tuple(shape), numpy_dtype(datatype), self.mm, offset)
            arr.flags.writeable = False
            out[name] = arr
            total += lw.align(nbytes)
        self.out_bytes = max(self.out_bytes, total)
        return out

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
              timeout: float | None = None) -> dict[str, np.ndarray]:
        """Copy ``inputs`` in, run, copy the outputs out (the caller keeps them)."""
        views = self.inputs({k: (v.shape, v.dtype) for k, v in inputs.items()})
        for k, v in inputs.items():
            np.copyto(views[k], v)
        return {k: np.array(v) for k, v in self.run(outputs, timeout).items()}

    def _wait(self, seq: int, deadline: float, timeout: float | None) -> bytes:
        while True:
            try:
                data = self._sock.recv(lw.MAX_MESSAGE)
            except BlockingIOError:  # a tick passed
                if deadline and time.monotonic() >= deadline:
                    self.broken = True  # its reply is owed: this lane is done (see close)
                    self.close()
                    raise e.DeadlineExceeded(f"request on model '{self.model}' took longer "
                                             f"than {timeout:.3g} s") from None
                continue
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.EBADF):
                    raise self._ended() from None
                raise
            if not data:
                raise self._ended()
            if int(data[data.index(b",") + 1:].split(b",", 1)[0].rstrip(b"]")) == seq:
                return data

    def _ended(self) -> Exception:
        """The connection ended: revoked (the header says so) or the worker died."""
        self.broken = True
        if struct.unpack_from("<I", self.mm, lw.REVOKED_AT)[0]:
            return LaneRevoked()
        return e.Unavailable(f"the engine worker for '{self.model}' v{self.version} died "
                             f"(its lane closed mid-request)", reason="WORKER_CRASHED",
                             metadata={"model": self.model})

    @property
    def revoked(self) -> bool:
        return self.broken or bool(struct.unpack_from("<I", self.mm, lw.REVOKED_AT)[0])

    def close(self) -> None:
        self.broken = True
        try:
            self._sock.close()
        except OSError:
            pass
        try:
            self.mm.close()
        except BufferError:  # arrays from run() still alive: unmapped with the last of them
            pass


Opener = Callable[[str, int], tuple[str, int]]  # (model, size) -> (path, version)


class Lanes:
    """A client's lanes, per model: lent to one caller at a time, kept for the next."""

    def __init__(self, opener: Opener) -> None:
        self._open = opener
        self._free: dict[str, list[Lane]] = {}
        self._count: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._out_hint: dict[str, int] = {}
        self._lock = threading.Lock()
        self.disabled: str | None = None  # why lanes are off for good (e.g. an old daemon)
        self.opened = 0
        self.fallbacks = 0  # requests retried through gRPC (revoked, too small)

    def borrow(self, model: str, in_bytes: int) -> Lane | None:
        """A lane with room for ``in_bytes`` of inputs, or None (use gRPC this time)."""
        if self.disabled is not None:
            return None
        out_bytes = self._out_hint.get(model, in_bytes)
        with self._lock:
            free = self._free.get(model, [])
            while free:
                lane = free.pop()
                if not lane.revoked and lane.fits(in_bytes, out_bytes):
                    return lane
                self._drop(lane)
            if time.monotonic() < self._retry_at.get(model, 0.0) or \
                    self._count.get(model, 0) >= MAX_LANES_PER_MODEL:
                return None
            self._count[model] = self._count.get(model, 0) + 1
        try:
            path, version = self._open(model, lw.lane_size(in_bytes + out_bytes + 4 * lw.ALIGN))
            lane = Lane(model, version, path)
        except e.EdgedError as exc:
            with self._lock:
                self._count[model] -= 1
                self._retry_at[model] = time.monotonic() + RETRY_OPEN_AFTER_S
            if isinstance(exc, e.Unimplemented) or exc.reason == "NOT_LOCAL":
                self.disabled = exc.message
            log.debug("no lane to %s (%s): gRPC instead", model, exc)
            return None
        self.opened += 1
        return lane

    def give_back(self, lane: Lane) -> None:
        with self._lock:
            if lane.out_bytes:
                self._out_hint[lane.model] = max(self._out_hint.get(lane.model, 0),
                                                 lane.out_bytes)
            if lane.revoked:
                self._drop(lane)
            else:
                self._free.setdefault(lane.model, []).append(lane)

    def grow(self, model: str, needed: int) -> None:
        """The model's outputs need ``needed`` bytes of lane: the next lane gets room."""
        with self._lock:
            self._out_hint[model] = max(self._out_hint.get(model, 0), needed)

    def _drop(self, lane: Lane) -> None:
        """(lock held)"""
        self._count[lane.model] = max(0, self._count.get(lane.model, 1) - 1)
        lane.close()

    def open_count(self) -> int:
        with self._lock:
            return sum(self._count.values())

    def close(self) -> None:
        with self._lock:
            lanes = [ln for free in self._free.values() for ln in free]
            self._free.clear()
            self._count.clear()
        for lane in lanes:
            lane.close()


class LaneHandle:
    """A lane lent to one caller for zero-copy use (``EdgedClient.lane``). If no lane can be
    had, or the lane is revoked, it works the same through gRPC (with copies)."""

    def __init__(self, lanes: Lanes, model: str,
                 grpc_infer: Callable[[Mapping[str, np.ndarray], Sequence[str] | None,
                                       float | None], dict[str, np.ndarray]]) -> None:
        self._lanes, self._model, self._grpc = lanes, model, grpc_infer
        self._lane: Lane | None = None
        self._arrays: dict[str, np.ndarray] = {}

    @property
    def direct(self) -> bool:
        """Whether the inputs given last live in a lane (else they go through gRPC)."""
        return self._lane is not None

    def inputs(self, specs: Mapping[str, tuple[Sequence[int], Any]]) -> dict[str, np.ndarray]:
        need = sum(math.prod(s) * np.dtype(d).itemsize for s, d in specs.values()) \
            + lw.ALIGN * len(specs)
        lane = self._lane
        if lane is not None and (lane.revoked or not lane.fits(need, lane.out_bytes)):
            self._lanes.give_back(lane)
            lane = self._lane = None
        if lane is None:
            lane = self._lane = self._lanes.borrow(self._model, need)
        if lane is not None:
            try:
                self._arrays = lane.inputs(specs)
                return self._arrays
            except LaneTooSmall as exc:
                self._lanes.grow(self._model, exc.needed)
                self._lanes.give_back(lane)
                self._lane = None
        self._arrays = {k: np.empty(tuple(s), np.dtype(d)) for k, (s, d) in specs.items()}
        return self._arrays

    def run(self, outputs: Sequence[str] | None = None, timeout: float | None = None
            ) -> dict[str, np.ndarray]:
        lane = self._lane
        if lane is not None:
            try:
                return lane.run(outputs, timeout)
            except LaneRevoked:
                self._lanes.fallbacks += 1
            except LaneTooSmall as exc:
                self._lanes.fallbacks += 1
                self._lanes.grow(self._model, exc.needed)
            except e.EdgedError as exc:
                if lane.broken:  # (crash, deadline: that lane is done)
                    self._lanes.give_back(lane)
                    self._lane = None
                raise exc from None
        out = self._grpc(self._arrays, outputs, timeout)  # (the lane's arrays still mapped)
        for arr in out.values():
            arr.flags.writeable = False
        return out

    def close(self) -> None:
        if self._lane is not None:
            self._lanes.give_back(self._lane)
            self._lane = None


@contextmanager
def lent(lanes: Lanes, model: str, grpc_infer: Any) -> Iterator[LaneHandle]:
    handle = LaneHandle(lanes, model, grpc_infer)
    try:
        yield handle
    finally:
        handle.close()
