"""Direct lanes, worker side: clients' requests served straight from their shared memory.

The daemon grants a lane (``lane_open`` on the worker channel) to one client process, named by
its pid. The worker binds a fresh Unix seqpacket socket at the path the daemon chose (beside
the daemon's own socket, with that socket's group and mode: whoever may call the daemon there
may connect) and waits for that client. A connection from any other process (SO_PEERCRED) is
closed unanswered and the wait goes on; the first one from the right pid gets the lane's memory
(a memfd, passed with SCM_RIGHTS, so it never has a name anyone else could open) and the path
is unlinked. See ``edged.lanewire`` for the messages and the layout.

Each lane has its own thread, which reads a request, runs it inline (ONNX Runtime releases the
GIL, so lanes of one model run concurrently, up to the cores) and replies. Inputs are numpy
views on the lane's memory, never copied; outputs are written into it once.

Revocation (the daemon unloads, evicts or switches the model): the lane's header word is set,
the running request (if any) completes, then the connection is shut. A request read after
that is answered ``revoked`` without running. The client retries such requests elsewhere, so
no request fails. Deadlines: a request whose deadline has passed is not run; a running one
is cancelled by a watcher thread (ticks every ``WATCH_TICK_S`` while lanes run) through the
session's run handle. Finished requests are kept as (time, seconds, ok) records that the
daemon collects about once a second (``report``), so that the policy, the metrics and the
trace file see lane traffic as they see gRPC traffic.
"""

from __future__ import annotations

import array
import logging
import math
import mmap
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edged import errors as e
from edged import lanewire as lw
from edged.datatypes import NUMPY_TO_OIP, OIP_TO_NUMPY
from edged.engines import estimate as est
from edged.engines import validate
from edged.engines.base import datatype_of_numpy, numpy_of_datatype
from edged.engines.session import BoundRun, RunHandle, Session
from edged.engines.worker_protocol import LaneRecord, LaneRow

log = logging.getLogger("edged.lane")

WATCH_TICK_S = 0.05
ACCEPT_TIMEOUT_S = 30.0  # a granted lane nobody connects to within this is dropped
MAX_RECORDS = 100_000  # per lane, between two reports (older ones are dropped, counted)
_NO_VALIDATION_THRESHOLD = 1 << 62  # (the checker's inline fast path: checks only)


@dataclass(eq=False)
class _Lane:
    id: int
    key: str
    pid: int
    path: Path
    size: int
    listener: socket.socket
    conn: socket.socket | None = None
    mm: mmap.mmap | None = None
    revoked: bool = False
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)  # held while a request runs
    handle: RunHandle | None = None
    deadline: float = 0.0  # of the running request (0: none running / no deadline)
    requests: int = 0
    records: list[LaneRecord] = field(default_factory=list)
    dropped: int = 0
    # The last request's input layout and feeds, and the last outputs' layout (views in the
    # lane and the reply's encoded descriptors): a stream of like requests (a camera's frames)
    # is checked and laid out once.
    last_ins: object = None  # (as decoded: compared only)
    last_outputs: object = None
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    out_key: tuple[object, ...] | None = None
    out_views: dict[str, np.ndarray] = field(default_factory=dict)
    out_descs: bytes = b""
    # Once a layout has repeated with its outputs' layout known, the session is bound to the
    # lane's memory (session.bind): runs read and write the lane in place. ``unbound``: this
    # layout cannot be bound (the session cannot, or the outputs' shapes changed).
    bound: BoundRun | None = None
    unbound: bool = False


Models = Callable[[str], Session | None]


# Which sessions run bound to their lanes' memory (ONNX Runtime IO binding, ``_run_bound``):
# "device": those on a GPU execution provider, where it saves a host copy of every output
# (the device-to-host copy lands in the lane); "always"; "never". Not CPU sessions by
# default: measured on the dev box (bench/lane_bind.py), a bound run there is 30-80 us
# *slower* than a plain run plus the copy into the lane (silero-vad, ppocr-cls), and no
# faster for det's 1.6 MB output (1.63 vs 1.66 ms).
BIND_WHEN = ("device", "always", "never")


class LaneHost:
    """Every lane of one worker process."""

    def __init__(self, session_of: Models, bind: str = "device") -> None:
        if bind not in BIND_WHEN:
            raise ValueError(f"bind must be one of {BIND_WHEN}, not {bind!r}")
        self._session_of = session_of
        self._bind = bind
        self._lanes: dict[int, _Lane] = {}
        self._checkers: dict[str, validate.Checker] = {}
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._closed_keys: set[str] = set()  # revoked: no new lanes until loaded again

    # -- daemon's requests (worker channel) ---------------------------------------------
    def open(self, lane_id: int, key: str, pid: int, path: str, size: int, mode: int,
             gid: int) -> int:
        """Listen for the one client at ``path``; returns the lane's size in bytes."""
        session = self._session_of(key)
        if session is None or key in self._closed_keys:
            raise e.Unavailable(f"model '{key}' is not loaded in this worker")
        size = lw.lane_size(min(max(size, 0), lw.MAX_LANE_BYTES))
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            listener.bind(path)
            os.chmod(path, mode)
            if gid >= 0:
                os.chown(path, -1, gid)
            listener.listen(4)
            listener.settimeout(ACCEPT_TIMEOUT_S)
        except OSError as exc:
            listener.close()
            raise e.Unavailable(f"cannot open a lane socket at {path}: {exc}") from None
        lane = _Lane(lane_id, key, pid, Path(path), size, listener)
        with self._lock:
            self._lanes[lane_id] = lane
            self._checkers.setdefault(key, validate.Checker(
                session.signature, _NO_VALIDATION_THRESHOLD))
        threading.Thread(target=self._serve, args=(lane,), name=f"edged-lane-{lane_id}",
                         daemon=True).start()
        return size

    def revoke(self, key: str | None) -> int:
        """Revoke ``key``'s lanes (every lane if None): running requests complete, the rest
        are answered ``revoked``; returns how many lanes were revoked."""
        with self._lock:
            if key is not None:
                self._closed_keys.add(key)
            lanes = [ln for ln in self._lanes.values()
                     if (key is None or ln.key == key) and not ln.closed]
        for lane in lanes:
            lane.revoked = True
            if lane.mm is not None:
                struct.pack_into("<I", lane.mm, lw.REVOKED_AT, 1)
        for lane in lanes:
            with lane.lock:  # waits for the request running on it, if any
                self._shut(lane)
        if key is not None:  # (closed lanes stay listed until their last report)
            with self._lock:
                self._checkers.pop(key, None)
        return len(lanes)

    def report(self) -> list[LaneRow]:
        """Each lane's requests since the last report; lanes that ended (client gone, revoked,
        never connected) are reported one last time, closed."""
        out = []
        with self._lock:
            lanes = list(self._lanes.values())
            for lane in lanes:
                if lane.closed:
                    self._lanes.pop(lane.id, None)
        for lane in lanes:
            records, lane.records = lane.records, []
            dropped, lane.dropped = lane.dropped, 0
            out.append(LaneRow(lane.id, lane.key, lane.pid, lane.requests, lane.closed, records,
                               dropped))
        return out

    def reopen(self, key: str) -> None:
        """``key`` was loaded (again) in this worker: lanes may be opened to it."""
        with self._lock:
            self._closed_keys.discard(key)

    # -- one lane ------------------------------------------------------------------------
    def _serve(self, lane: _Lane) -> None:
        try:
            conn = self._accept(lane)
            if conn is None:
                return
            self._hello(lane, conn)
            self._watch()
            while not lane.closed:
                try:
                    msg = conn.recv(lw.MAX_MESSAGE)
                except OSError:
                    break
                if not msg:
                    break
                with lane.lock:
                    reply = self._handle(lane, msg)
                    try:
                        conn.send(reply)
                    except OSError:
                        break
                    if lane.revoked:
                        break
        except Exception:  # noqa: BLE001 - a broken lane must not take the worker down
            log.exception("lane %d", lane.id)
        finally:
            with lane.lock:
                self._shut(lane)

    def _accept(self, lane: _Lane) -> socket.socket | None:
        deadline = time.monotonic() + ACCEPT_TIMEOUT_S
        try:
            while not lane.revoked:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                lane.listener.settimeout(left)
                try:
                    conn, _ = lane.listener.accept()
                except (TimeoutError, OSError):
                    return None
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
                peer_pid = struct.unpack("3i", creds)[0]
                if peer_pid != lane.pid:
                    log.warning("lane %d (%s) granted to pid %d: refused a connection from "
                                "pid %d", lane.id, lane.key, lane.pid, peer_pid)
                    conn.close()
                    continue
                lane.conn = conn
                return conn
            return None
        finally:
            _unlink(lane.path)
            lane.listener.close()

    def _hello(self, lane: _Lane, conn: socket.socket) -> None:
        fd = os.memfd_create(f"edged-lane-{lane.id}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, lane.size)
            lane.mm = mmap.mmap(fd, lane.size)
            lw.HEADER.pack_into(lane.mm, 0, lw.MAGIC, 1, int(lane.revoked), 0, 0)
            conn.sendmsg([lw.encode(["hello", lane.size, lane.key])],
                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        finally:
            os.close(fd)

    def _shut(self, lane: _Lane) -> None:
        """(lane.lock held) End the connection; the client's next read sees the end."""
        if lane.closed:
            return
        lane.closed = True
        if lane.conn is not None:
            try:
                lane.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            lane.conn.close()
        else:
            lane.listener.close()
            _unlink(lane.path)

    def _handle(self, lane: _Lane, msg: bytes) -> bytes:
        seq = -1
        t_wall, t0 = time.time(), time.perf_counter()
        ok = False
        try:
            req = lw.decode(msg)
            if req[0] != "infer" or len(req) != 6:
                raise e.InvalidArgument(f"unknown lane request {req[0]!r}")
            _, seq, deadline, outputs, ins, out_at = req
            if lane.revoked:
                return lw.encode(["revoked", seq])
            if deadline and time.monotonic() >= deadline:
                raise e.DeadlineExceeded(f"request on model '{lane.key}' reached its deadline "
                                         "before it ran")
            session = self._session_of(lane.key)
            if session is None:  # (unload revokes lanes first: a race lost to it)
                return lw.encode(["revoked", seq])
            assert lane.mm is not None
            if ins == lane.last_ins and outputs == lane.last_outputs:
                feeds = lane.feeds
            else:
                lane.last_ins = lane.last_outputs = lane.bound = lane.out_key = None
                lane.unbound = False
                feeds = self._feeds(lane, ins)
                self._checkers[lane.key].prepare(feeds, outputs, None)
                lane.feeds, lane.last_ins, lane.last_outputs = feeds, ins, outputs
            handle = lane.handle
            if handle is None or handle.cancelled:
                handle = lane.handle = session.run_handle()
            lane.deadline = float(deadline or 0.0)
            try:
                if self._run_bound(lane, session, handle, int(out_at)):
                    ok = True
                    return b'["ok",%d,%s]' % (seq, lane.out_descs)
                results = session.run(feeds, outputs, handle)
            finally:
                lane.deadline = 0.0
            reply, ok = self._outputs(lane, seq, results, int(out_at))
            return reply
        except Exception as exc:  # noqa: BLE001 - every failure goes back as a domain error
            err = exc if isinstance(exc, e.EdgedError) else e.Internal(
                f"{type(exc).__name__}: {exc}")
            return lw.encode(["err", seq, type(err).__name__, err.message, err.field,
                              err.reason, err.metadata])
        finally:
            lane.requests += 1
            if len(lane.records) < MAX_RECORDS:
                lane.records.append((t_wall, time.perf_counter() - t0, ok))
            else:
                lane.dropped += 1

    def _run_bound(self, lane: _Lane, session: Session, handle: RunHandle | None,
                   out_at: int) -> bool:
        """Run with inputs and outputs bound to the lane's memory when this request repeats
        the last one's layout and that one's outputs fit the lane (a camera's frames: from
        the second one on); False: run it unbound. A bound run that fails is not reported:
        the outputs' shapes may have changed with the inputs' values (data-dependent shapes),
        so the request runs unbound, and the layout is not bound again."""
        if (lane.unbound or lane.out_key is None or lane.out_key[0] != out_at
                or lane.last_ins is None):
            return False
        if lane.bound is None:
            if self._bind == "never" or (self._bind == "device"
                                         and set(session.providers) <= {est.CPU}):
                lane.unbound = True
                return False
            lane.bound = session.bind(lane.feeds, lane.out_views)
            if lane.bound is None:
                lane.unbound = True
                return False
        try:
            lane.bound.run(handle)
        except e.EdgedError:
            if handle is not None and handle.cancelled:
                raise  # (its deadline passed: running it again would not help)
            lane.bound, lane.unbound = None, True
            log.debug("lane %d (%s): a bound run failed; running unbound", lane.id, lane.key)
            return False
        return True

    @staticmethod
    def _feeds(lane: _Lane, ins: Any) -> dict[str, np.ndarray]:
        mm, size = lane.mm, lane.size
        feeds = {}
        for name, datatype, shape, offset, nbytes in ins:
            dtype = OIP_TO_NUMPY.get(datatype)
            if dtype is None:
                numpy_of_datatype(datatype)  # raises the reason (BYTES, unknown)
                raise e.InvalidArgument(f"input '{name}': {datatype} is not supported",
                                        field=name)
            shape = tuple(int(d) for d in shape)
            need = math.prod(shape) * dtype.itemsize
            if (nbytes != need or offset < lw.HEADER_BYTES or any(d < 0 for d in shape)
                    or offset + need > size):
                raise e.InvalidArgument(f"input '{name}': {nbytes} bytes at offset {offset} do "
                                        f"not fit shape {list(shape)} of {datatype} inside the "
                                        f"{size}-byte lane", field=name, reason="BAD_TENSOR")
            arr = np.ndarray(shape, dtype, mm, offset)
            arr.flags.writeable = False
            feeds[name] = arr
        return feeds

    @staticmethod
    def _outputs(lane: _Lane, seq: int, results: dict[str, np.ndarray],
                 out_at: int) -> tuple[bytes, bool]:
        mm, size = lane.mm, lane.size
        assert mm is not None
        key = (out_at, *((n, a.shape, a.dtype) for n, a in results.items()))
        if key == lane.out_key:  # like the last outputs: copy them into the same places
            for view, arr in zip(lane.out_views.values(), results.values()):  # noqa: B905
                view[...] = arr
            return b'["ok",%d,%s]' % (seq, lane.out_descs), True
        lane.out_key, lane.bound = None, None
        at = lw.align(max(out_at, lw.HEADER_BYTES))
        arrays = []
        for name, value in results.items():
            arr = value if value.flags.c_contiguous else np.ascontiguousarray(value)
            datatype = NUMPY_TO_OIP.get(arr.dtype) or datatype_of_numpy(arr.dtype)
            if datatype not in OIP_TO_NUMPY:
                numpy_of_datatype(datatype)  # refuses BYTES outputs, with the reason
            arrays.append((name, datatype, arr, at))
            at = lw.align(at + arr.nbytes)
        if at > size:
            return lw.encode(["small", seq, at]), False
        descs, views = [], {}
        for name, datatype, arr, offset in arrays:
            view = np.ndarray(arr.shape, arr.dtype, mm, offset)
            view[...] = arr
            views[name] = view
            descs.append([name, datatype, list(arr.shape), offset, arr.nbytes])
        lane.out_key, lane.out_views, lane.out_descs = key, views, lw.encode(descs)
        return b'["ok",%d,%s]' % (seq, lane.out_descs), True

    # -- deadlines -----------------------------------------------------------------------
    def _watch(self) -> None:
        with self._lock:
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch_loop,
                                                 name="edged-lane-watch", daemon=True)
                self._watcher.start()

    def _watch_loop(self) -> None:
        """Cancel lane runs past their deadline; ends when no lane is left."""
        while True:
            time.sleep(WATCH_TICK_S)
            now = time.monotonic()
            with self._lock:
                lanes = list(self._lanes.values())
                if not lanes:
                    self._watcher = None
                    return
            for lane in lanes:
                d, handle = lane.deadline, lane.handle
                if d and now >= d and handle is not None and not handle.cancelled:
                    handle.cancel()


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
