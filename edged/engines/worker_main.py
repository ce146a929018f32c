"""An engine worker process: ``python -m edged.engines.worker_main --fd N --parent PID ...``.

Started by ``WorkerPool`` as a fresh interpreter (never forked from the daemon, so it inherits
no gRPC threads or locks). It holds one or more sessions and serves the daemon over one socket.

Threads: ``2 + sum(max_concurrency)`` identical threads take turns reading the socket
(leader/follower): a request is handled by the thread that read it. While it runs an inference
that thread keeps the reader role, so a lone client's request wakes no other thread (a
hand-off costs ~20 us of wake-up plus GIL traffic per request on the dev box); the daemon
*nudges* the worker (SIGUSR1, handled by the otherwise idle main thread) whenever it sends a
message while a request is in flight there, and the nudge hands the reader role to the next
thread, which reads the new request (or cancel, or load) and runs it concurrently. Loads and
inferences longer than LONG_RUN_S hand the role off up front.

The worker exits when the socket closes, when the daemon dies (PR_SET_PDEATHSIG, and a parent
check at start), or when told to; it ignores SIGINT (the daemon handles stop) and raises its
own oom_score_adj so that the kernel picks a worker before the daemon.
"""

from __future__ import annotations

import argparse
import mmap
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edged import errors as e
from edged.datatypes import NUMPY_TO_OIP, OIP_TO_NUMPY
from edged.engines import channel as ch
from edged.engines.base import datatype_of_numpy, get_backend, numpy_of_datatype
from edged.engines.procfs import anon_peak, harden, read_status, reset_peak, trim
from edged.engines.session import RunHandle, Session, warm_up
from edged.engines.shm import SHM_DIR, RegionCache, open_map
from edged.engines.worker_protocol import (
    INLINE,
    LANE,
    OK,
    SHM,
    Cancel,
    ErrorReply,
    InferReply,
    InferRequest,
    LaneDesc,
    LaneOpen,
    LaneOpened,
    LaneReport,
    LaneRevoke,
    LanesRevoked,
    Load,
    Loaded,
    Ok,
    Op,
    Prepare,
    Ready,
    Rss,
    ShmWindow,
    Stats,
    TensorDesc,
    Unload,
    Wire,
)

if TYPE_CHECKING:  # pragma: no cover - imported when the first lane opens (see _lane_open)
    from edged.engines.lane import LaneHost

_ALIGN = 64
LONG_RUN_S = 0.05  # inferences longer than this (moving average) hand the reader role off
_SHORT = (Op.INFER, Op.PING)  # requests that keep the reader role (the rest take long)


class _Turn:
    """A thread's hold on the reader role. It keeps the role through short inferences (no
    thread wakes per request) and hands it off before anything long, so that the other threads
    keep reading requests, cancels and loads meanwhile. ``state`` (shared by all turns) guards
    ``held``: a nudge (SIGUSR1) may hand off a turn on its thread's behalf."""

    __slots__ = ("handles", "held", "lock", "state")

    def __init__(self, lock: threading.Lock, state: threading.Lock) -> None:
        self.lock, self.state = lock, state
        self.handles: dict[str, RunHandle | None] = {}  # this thread's run handle per model
        lock.acquire()
        self.held = True

    def hand_off(self) -> None:
        with self.state:
            if self.held:
                self.held = False
                self.lock.release()

    def take(self) -> None:
        if not self.held:
            self.lock.acquire()
            with self.state:
                self.held = True


class _Model:
    def __init__(self, session: Session, max_concurrency: int, run_s: float) -> None:
        self.session = session
        self.max_concurrency = max_concurrency
        self.run_s = run_s  # moving average of an inference's duration


# A handler's reply and the buffers sent after it (inline output tensors).
Replied = tuple[Wire, Sequence[np.ndarray]]
Handler = Callable[[int, Wire, memoryview, _Turn], Replied]


class Worker:
    def __init__(self, chan: ch.Channel, shm_threshold: int, shm_dir: Path = SHM_DIR) -> None:
        self._chan = chan
        self._threshold = shm_threshold
        self._shm_dir = shm_dir
        self._read_lock = threading.Lock()
        self._turn_state = threading.Lock()
        self._inline: _Turn | None = None  # the turn running an inference, reader role held
        self._nudged = False  # a nudge came while no inference ran: the next one hands off
        self._load_lock = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._lanes: dict[int, mmap.mmap] = {}  # the daemon's lanes (shm.LanePool), mapped
        self._regions = RegionCache(shm_dir)
        self._runs: dict[int, RunHandle | None] = {}  # running inferences, by request id
        self._threads = 0
        self._direct: LaneHost | None = None  # direct lanes to clients, from the first one
        self._handlers: dict[str, Handler] = {
            Op.INFER: self._infer, Op.LOAD: self._load, Op.UNLOAD: self._unload,
            Op.STATS: self._stats, Op.PING: self._ping, Op.PREPARE: self._prepare,
            Op.LANE_OPEN: self._lane_open, Op.LANE_REVOKE: self._lane_revoke,
            Op.LANE_REPORT: self._lane_report}

    def serve(self) -> None:
        """Reply "ready", then leave the main thread to the daemon's nudges (SIGUSR1).

        The nudge is acted on here, in plain code, not in a signal handler: a Python handler
        can be re-entered by the next signal and must not take a lock. The C-level handler
        writes to a wakeup pipe (no nudge is lost, unlike with pause())."""
        r, w = os.pipe()
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        signal.signal(signal.SIGUSR1, lambda signum, frame: None)
        self._chan.send(0, Ready(os.getpid(), read_status()["RssAnon"]).wire())
        self._grow(2)
        while True:
            os.read(r, 512)  # one or more nudges
            self._nudge()

    def _nudge(self) -> None:
        """The daemon sent something while a request is in flight here: if a thread runs an
        inference with the reader role, hand the role off for it, so the message is read."""
        with self._turn_state:
            turn = self._inline
            if turn is not None and turn.held:
                turn.held = False
                turn.lock.release()
            else:
                self._nudged = True

    def _grow(self, n: int) -> None:
        for _ in range(n):
            self._threads += 1
            threading.Thread(target=self._loop, name=f"edged-worker-{self._threads}",
                             daemon=True).start()

    def _loop(self) -> None:
        # Nudges must reach the main thread, the one that handles them (and it only wakes from
        # pause() for a signal delivered to itself): this thread, and the runtime's threads it
        # starts, never take SIGUSR1.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        turn = _Turn(self._read_lock, self._turn_state)
        while True:
            try:
                frame = self._chan.recv()
            except (EOFError, OSError):
                os._exit(0)  # the daemon closed the channel or died
            assert frame is not None  # (no timeout: a frame, or the end)
            self._dispatch(*frame, turn)
            turn.take()

    def _dispatch(self, rid: int, wire: Wire, data: memoryview, turn: _Turn) -> None:
        op = wire[0]
        if op == Op.CANCEL:
            run = self._runs.get(Cancel.of(wire).rid)
            if run is not None:
                run.cancel()
            return
        if op == Op.EXIT:
            self._chan.send(rid, Ok().wire())
            os._exit(0)
        if op not in _SHORT:
            turn.hand_off()  # loads take seconds: let another thread read meanwhile
        try:
            reply, buffers = self._handlers[op](rid, wire, data, turn)
        except Exception as exc:  # noqa: BLE001 - every failure goes back as a domain error
            reply, buffers = ErrorReply.of_exception(exc).wire(), ()
        try:
            self._chan.send(rid, reply, buffers)
        except OSError:
            os._exit(0)

    # -- load / unload ---------------------------------------------------------------------
    def _load(self, rid: int, wire: Wire, data: memoryview, turn: _Turn) -> Replied:
        key, artifact, fmt, options, max_concurrency = Load.of(wire)
        with self._load_lock:  # one at a time, so the RSS delta belongs to this model
            if key in self._models:
                raise e.AlreadyExists(f"model '{key}' is already loaded in this worker")
            before = read_status()["RssAnon"]
            t0 = time.perf_counter()
            session = get_backend(fmt).open(Path(artifact), options)
            t1 = time.perf_counter()
            trim()
            try:
                warm_up(session, options.warmup_shapes)
            except BaseException:
                session.close()
                trim()
                raise
            t2 = time.perf_counter()
            trim()
            status = read_status()
            reset_peak()  # from now on VmHWM shows what inferences reach
            self._models[key] = _Model(session, max_concurrency, t2 - t1)
            if self._direct is not None:
                self._direct.reopen(key)
            self._grow(max_concurrency)
        peak = anon_peak(status)  # the load's own peak (its transient copies)
        return Loaded(session.signature, tuple(session.providers), t1 - t0, t2 - t1, before,
                      status["RssAnon"], peak).wire(), ()

    def _unload(self, rid: int, wire: Wire, data: memoryview, turn: _Turn) -> Replied:
        key = Unload.of(wire).key
        if self._direct is not None:  # (the daemon revoked them already: a safety net)
            self._direct.revoke(key)
        model = self._models.pop(key, None)
        if model is not None:
            model.session.close()
            del model
            trim()
        return Rss(read_status()["RssAnon"]).wire(), ()

    def _prepare(self, rid: int, wire: Wire, data: memoryview, turn: _Turn) -> Replied:
        """A spare worker imports its runtime ahead of any load (onnxruntime: ~0.1 s)."""
        get_backend(Prepare.of(wire).fmt).preload()
        return Rss(read_status()["RssAnon"]).wire(), ()

    # -- direct lanes (lane.py) --------------------------------------------------------------
    def _session_of(self, key: str) -> Session | None:
        model = self._models.get(key)
        return model.session if model is not None else None

    def _lane_open(self, rid: int, wire: Wire, data: memoryview, turn: _Turn) -> Replied:
        msg = LaneOpen.of(wire)
        with self._load_lock:  # (lane opens run on several threads: one host for them all)
            if self._direct is None:  # imported only here: a worker without lanes stays small
                from edged.engines.lane import LaneHost

                self._direct = LaneHost(self._session_of)
        return LaneOpened(self._direct.open(msg.lane_id, msg.key, msg.pid, msg.path, msg.size,
                                            msg.mode, msg.gid)).wire(), ()

    def _lane_revoke(self, rid: int, wire: Wire, data: memoryview, turn: _Turn) -> Replied:
        key = LaneRevoke.of(wire).key
        return LanesRevoked(self._direct.revoke(key) if self._direct is not None else 0).wire(), ()

    def _lane_report(self, rid: int, wire: Wire, data: memoryview, turn: _Turn) -> Replied:
        return LaneReport(tuple(self._direct.report()) if self._direct is not None
                          else ()).wire(), ()

    def _ping(self, rid: int, wire: Wire, data: memoryview, turn: _Turn) -> Replied:
        return Ok().wire(), ()

    def _stats(self, rid: int, wire: Wire, data: memoryview, turn: _Turn) -> Replied:
        return Stats({"pid": os.getpid(), "models": sorted(self._models),
                      "threads": self._threads, **read_status()}).wire(), ()

    # -- inference -------------------------------------------------------------------------
    def _infer(self, rid: int, wire: Wire, data: memoryview, turn: _Turn) -> Replied:
        msg: InferRequest = wire
        _, key, ins, outs, out_shm, lane, dropped = msg
        for lane_id in dropped:
            self._lanes.pop(lane_id, None)
        lane_mm = self._lane(lane) if lane else None  # first: the daemon unlinks it after this
        model = self._models.get(key)
        if model is None:
            raise e.Unavailable(f"model '{key}' is not loaded in this worker")
        feeds = {}
        for name, datatype, shape, where, region, offset, nbytes in ins:
            dtype = OIP_TO_NUMPY[datatype]  # checked by the daemon
            if where == INLINE:
                feeds[name] = np.ndarray(shape, dtype, data, offset)
            elif where == LANE:
                feeds[name] = np.ndarray(shape, dtype, lane_mm, offset)
            else:
                feeds[name] = np.ndarray(shape, dtype, self._regions.window(
                    region, offset, nbytes, name))
        session = model.session
        handle = turn.handles.get(key)
        if handle is None or handle.cancelled:  # one per thread and model, reused
            handle = turn.handles[key] = session.run_handle()
        self._runs[rid] = handle
        with self._turn_state:
            keep = model.run_s <= LONG_RUN_S and not self._nudged
            self._nudged = False
            self._inline = turn if keep else None
        if not keep:
            turn.hand_off()
        t0 = time.perf_counter()
        try:
            results = session.run(feeds, outs, handle)
        finally:
            if keep:
                with self._turn_state:
                    if self._inline is turn:  # (another may hold the role by now)
                        self._inline = None
            self._runs.pop(rid, None)
            model.run_s = 0.8 * model.run_s + 0.2 * (time.perf_counter() - t0)
        return self._outputs(results, out_shm, lane, lane_mm)

    def _outputs(self, results: dict[str, np.ndarray], out_shm: dict[str, ShmWindow],
                 lane: LaneDesc | None, lane_mm: mmap.mmap | None) -> Replied:
        descs: list[TensorDesc] = []
        buffers: list[np.ndarray] = []
        inline_at = 0
        _lane_id, _path, lane_size, lane_at = lane if lane else (0, "", 0, 0)
        for name, value in results.items():
            arr = value if value.flags.c_contiguous else np.ascontiguousarray(value)
            datatype = NUMPY_TO_OIP.get(arr.dtype) or datatype_of_numpy(arr.dtype)
            n = arr.nbytes
            if datatype not in OIP_TO_NUMPY:
                numpy_of_datatype(datatype)  # refuses BYTES outputs, with the reason
            if name in out_shm:
                region, offset, capacity = out_shm[name]
                if n > capacity:
                    raise e.InvalidArgument(
                        f"output '{name}': {n} bytes ({datatype}{list(arr.shape)}) do not fit "
                        f"the {capacity}-byte shared memory window", field=name,
                        reason="BAD_TENSOR")
                window = self._regions.window(region, offset, n, name, writable=True)
                window[:] = ch.raw(arr)
                descs.append((name, datatype, arr.shape, SHM, region, offset, n))
            elif lane_mm is not None and n >= self._threshold and lane_at + n <= lane_size:
                lane_mm[lane_at:lane_at + n] = ch.raw(arr)
                descs.append((name, datatype, arr.shape, LANE, "", lane_at, n))
                lane_at = -(-(lane_at + n) // _ALIGN) * _ALIGN
            else:
                descs.append((name, datatype, arr.shape, INLINE, "", inline_at, n))
                buffers.append(arr)
                inline_at += n
        reply: InferReply = (OK, tuple(descs))
        return reply, buffers

    def _lane(self, lane: LaneDesc) -> mmap.mmap:
        lane_id, path, _size, _outputs_at = lane
        mm = self._lanes.get(lane_id)
        if mm is None:
            mm = open_map(self._shm_dir / path)[0]
            self._lanes[lane_id] = mm
        return mm


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edged-worker")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--oom-score-adj", type=int, default=None)
    p.add_argument("--shm-threshold", type=int, default=64 << 10)
    p.add_argument("--shm-dir", default=str(SHM_DIR))
    p.add_argument("--name", default="")
    args = p.parse_args(argv)
    harden(args.parent, args.oom_score_adj)
    chan = ch.Channel(socket.socket(fileno=args.fd))
    Worker(chan, args.shm_threshold, Path(args.shm_dir)).serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
