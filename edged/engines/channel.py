"""The daemon <-> worker wire: frames over one Unix socketpair.

A frame is a 20-byte header (payload length, metadata length, request id), a ``marshal``-ed
message (worker_protocol.py: tuples of names, shapes, offsets; a few microseconds, and both
ends run the same interpreter) and the raw tensor bytes. Tensors are never pickled: ``send``
hands numpy buffers to one ``sendmsg`` call (scatter-gather, no concatenation), and ``recv``
reads whatever the kernel has into a reusable buffer, so a small request costs one syscall
each way. Why not ``multiprocessing.connection``: it reads the length and the body in two
syscalls and copies on send; on the 2-core dev box a ping-pong through it costs ~45 us against
~20 us for a raw socket, and the worker hop must stay well under 100 us.

Several request ids can be in flight on one channel; replies carry the id of their request.
"""

from __future__ import annotations

import marshal
import math
import select
import socket
import struct
import threading
import time
from collections.abc import Sequence

import numpy as np

from edged.engines.worker_protocol import Wire

_HDR = struct.Struct("<QIQ")  # payload bytes (metadata + data), metadata bytes, request id
HEADER_BYTES = _HDR.size
DEFAULT_BUFFER_BYTES = 256 << 10
SMALL_FRAME_BYTES = 16 << 10


# A tensor's bytes as the channel sends them (numpy arrays, or views of their bytes).
Buffer = np.ndarray | memoryview
# A received frame: (request id, message, the data after the message).
Frame = tuple[int, Wire, memoryview]


def raw(arr: np.ndarray) -> memoryview:
    """A C-contiguous array's bytes, flat, without a copy (for slab copies and sendmsg)."""
    return memoryview(arr).cast("B")  # type: ignore[arg-type]  # ndarray has the buffer API


class Channel:
    """One end of the socketpair. ``send`` is thread-safe; ``recv`` needs one reader at a time
    (the caller serialises it: see the reader role in worker_proc.py and worker_main.py)."""

    def __init__(self, sock: socket.socket, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                 recv_tick_s: float | None = None) -> None:
        """``recv_tick_s``: a kernel receive timeout (SO_RCVTIMEO, which leaves sends alone),
        so that ``recv`` can honour deadlines with one blocking syscall per read instead of a
        poll before each; deadlines are then kept to within a tick."""
        self._sock = sock
        self._tick = recv_tick_s
        if recv_tick_s is not None:
            usec = max(1, int(recv_tick_s * 1e6))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                            struct.pack("ll", usec // 1_000_000, usec % 1_000_000))
        self._send_lock = threading.Lock()
        self._buf = bytearray(buffer_bytes)
        self._view = memoryview(self._buf)
        self._start = self._end = 0
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN)

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, rid: int, wire: Wire, buffers: Sequence[Buffer] = ()) -> None:
        m = marshal.dumps(wire)
        size = len(m) + sum(b.nbytes for b in buffers) if buffers else len(m)
        head = _HDR.pack(size, len(m), rid)
        if size < SMALL_FRAME_BYTES:  # one small copy beats sendmsg's per-buffer overhead
            # (ndarray has the buffer API; numpy's stubs say so for Python 3.12 on)
            frame = b"".join((head, m, *buffers)) if buffers else head + m  # type: ignore[arg-type]
            with self._send_lock:
                self._sock.sendall(frame)
            return
        with self._send_lock:
            _sendall(self._sock, [head, m, *buffers])

    def recv(self, timeout: float | None = None) -> Frame | None:
        """The next frame as (request id, message, data), or None if ``timeout`` passed first.

        The data is a fresh buffer owned by the caller (arrays made on it stay valid and
        writable). EOFError when the peer is gone. Only complete frames are consumed, so a
        timeout never loses bytes.
        """
        buf, view = self._buf, self._view
        deadline: float | None = None
        while True:
            avail = self._end - self._start
            if avail >= HEADER_BYTES:
                total, mlen, rid = _HDR.unpack_from(buf, self._start)
                body_at = self._start + HEADER_BYTES
                if avail >= HEADER_BYTES + total:
                    body = buf[body_at:body_at + total]
                    self._start = body_at + total
                    if self._start == self._end:
                        self._start = self._end = 0
                    return rid, marshal.loads(body[:mlen]), memoryview(body)[mlen:]
                if HEADER_BYTES + total > len(buf):
                    return self._recv_large(rid, total, mlen, body_at)
            if self._end == len(buf):  # compact: move the partial frame to the front
                buf[:avail] = buf[self._start:self._end]
                self._start, self._end = 0, avail
            try:
                if timeout is None or (self._tick is not None and timeout > 0):
                    n = self._sock.recv_into(view[self._end:])
                elif timeout == 0:
                    n = self._sock.recv_into(view[self._end:], 0, socket.MSG_DONTWAIT)
                elif self._poller.poll(math.ceil(timeout * 1e3)):
                    n = self._sock.recv_into(view[self._end:])
                else:
                    return None
            except BlockingIOError:  # the tick (or MSG_DONTWAIT) passed with nothing to read
                if timeout is None:
                    continue
                if deadline is None:
                    deadline = time.monotonic() + timeout - (self._tick or 0)
                if timeout == 0 or time.monotonic() >= deadline:
                    return None
                continue
            if not n:
                raise EOFError("the other end of the worker channel closed")
            self._end += n

    def _recv_large(self, rid: int, total: int, mlen: int, body_at: int) -> Frame:
        """A frame bigger than the buffer: read it straight into its own buffer (one copy)."""
        body = bytearray(total)
        have = self._end - body_at
        body[:have] = self._buf[body_at:self._end]
        self._start = self._end = 0
        bview = memoryview(body)
        while have < total:
            try:
                n = self._sock.recv_into(bview[have:])
            except BlockingIOError:  # a tick passed mid-frame: the rest is on its way
                continue
            if not n:
                raise EOFError("the other end of the worker channel closed")
            have += n
        return rid, marshal.loads(bview[:mlen]), bview[mlen:]

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def _sendall(sock: socket.socket, parts: list[bytes | Buffer]) -> None:
    """``sendmsg`` until every part is out (a large frame can be sent in pieces)."""
    views = [memoryview(p).cast("B") for p in parts]  # type: ignore[arg-type]  # (see send)
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= views[0].nbytes:
            sent -= views[0].nbytes
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]

