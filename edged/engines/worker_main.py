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
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edged import errors as e
from edged.datatypes import NUMPY_TO_OIP, OIP_TO_NUMPY
from edged.engines import channel as ch
from edged.engines.base import EngineOptions, datatype_of_numpy, get_backend, numpy_of_datatype
from edged.engines.procfs import anon_peak, harden, read_status, reset_peak, trim
from edged.engines.session import Session, warm_up
from edged.engines.shm import SHM_DIR, RegionCache, open_map

_ALIGN = 64
LONG_RUN_S = 0.05  # inferences longer than this (moving average) hand the reader role off


class _Turn:
    """A thread's hold on the reader role. It keeps the role through short inferences (no
    thread wakes per request) and hands it off before anything long, so that the other threads
    keep reading requests, cancels and loads meanwhile. ``state`` (shared by all turns) guards
    ``held``: a nudge (SIGUSR1) may hand off a turn on its thread's behalf."""

    __slots__ = ("handles", "held", "lock", "state")

    def __init__(self, lock: threading.Lock, state: threading.Lock) -> None:
        self.lock, self.state = lock, state
        self.handles: dict[str, Any] = {}  # this thread's run handle per model
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
        self._lanes: dict[int, Any] = {}
        self._regions = RegionCache(shm_dir)
        self._runs: dict[int, Any] = {}
        self._threads = 0
        self._direct: Any = None  # direct lanes to clients (lane.py), from the first one on
        self._handlers: dict[str, Callable[..., Any]] = {
            "infer": self._infer, "load": self._load, "unload": self._unload,
            "stats": self._stats, "ping": self._ping, "prepare": self._prepare,
            "lane_open": self._lane_open, "lane_revoke": self._lane_revoke,
            "lane_report": self._lane_report}

    def serve(self) -> None:
        """Reply "ready", then leave the main thread to the daemon's nudges (SIGUSR1).

        The nudge is acted on here, in plain code, not in a signal handler: a Python handler
        can be re-entered by the next signal and must not take a lock. The C-level handler
        writes to a wakeup pipe (no nudge is lost, unlike with pause())."""
        r, w = os.pipe()
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        signal.signal(signal.SIGUSR1, lambda signum, frame: None)
        self._chan.send(0, ("ready", os.getpid(), read_status()["RssAnon"]))
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
                rid, meta, data = self._chan.recv()  # type: ignore[misc]
            except (EOFError, OSError):
                os._exit(0)  # the daemon closed the channel or died
            self._dispatch(rid, meta, data, turn)
            turn.take()

    def _dispatch(self, rid: int, meta: Any, data: memoryview, turn: _Turn) -> None:
        op = meta[0]
        if op == "cancel":
            run = self._runs.get(meta[1])
            if run is not None:
                run.cancel()
            return
        if op == "exit":
            self._chan.send(rid, ("ok",))
            os._exit(0)
        if op not in ("infer", "ping"):
            turn.hand_off()  # loads take seconds: let another thread read meanwhile
        try:
            reply, buffers = self._handlers[op](rid, meta, data, turn)
        except Exception as exc:  # noqa: BLE001 - every failure goes back as a domain error
            reply, buffers = ch.encode_error(exc), ()
        try:
            self._chan.send(rid, reply, buffers)
        except OSError:
            os._exit(0)

    # -- load / unload ---------------------------------------------------------------------
    def _load(self, rid: int, meta: Any, data: memoryview, handoff: Any) -> tuple[Any, Any]:
        _, key, artifact, fmt, options_wire, max_concurrency = meta
        options = EngineOptions.from_wire(options_wire)
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
        reply = ("ok", session.signature.to_wire(), session.providers, t1 - t0, t2 - t1,
                 before, status["RssAnon"], peak)
        return reply, ()

    def _unload(self, rid: int, meta: Any, data: memoryview, handoff: Any) -> tuple[Any, Any]:
        if self._direct is not None:  # (the daemon revoked them already: a safety net)
            self._direct.revoke(meta[1])
        model = self._models.pop(meta[1], None)
        if model is not None:
            model.session.close()
            del model
            trim()
        return ("ok", read_status()["RssAnon"]), ()

    def _prepare(self, rid: int, meta: Any, data: memoryview, handoff: Any) -> tuple[Any, Any]:
        """A spare worker imports its runtime ahead of any load (onnxruntime: ~0.1 s)."""
        backend = get_backend(meta[1])
        getattr(backend, "preload", lambda: None)()
        return ("ok", read_status()["RssAnon"]), ()

    # -- direct lanes (lane.py) --------------------------------------------------------------
    def _session_of(self, key: str) -> Session | None:
        model = self._models.get(key)
        return model.session if model is not None else None

    def _lane_open(self, rid: int, meta: Any, data: memoryview, handoff: Any
                   ) -> tuple[Any, Any]:
        _, lane_id, key, pid, path, size, mode, gid = meta
        with self._load_lock:  # (lane opens run on several threads: one host for them all)
            if self._direct is None:  # imported only here: a worker without lanes stays small
                from edged.engines.lane import LaneHost

                self._direct = LaneHost(self._session_of)
        return ("ok", self._direct.open(lane_id, key, pid, path, size, mode, gid)), ()

    def _lane_revoke(self, rid: int, meta: Any, data: memoryview, handoff: Any
                     ) -> tuple[Any, Any]:
        return ("ok", self._direct.revoke(meta[1]) if self._direct is not None else 0), ()

    def _lane_report(self, rid: int, meta: Any, data: memoryview, handoff: Any
                     ) -> tuple[Any, Any]:
        return ("ok", tuple(self._direct.report()) if self._direct is not None else ()), ()

    def _ping(self, rid: int, meta: Any, data: memoryview, handoff: Any) -> tuple[Any, Any]:
        return ("ok",), ()

    def _stats(self, rid: int, meta: Any, data: memoryview, handoff: Any) -> tuple[Any, Any]:
        return ("ok", {"pid": os.getpid(), "models": sorted(self._models),
                       "threads": self._threads, **read_status()}), ()

    # -- inference -------------------------------------------------------------------------
    def _infer(self, rid: int, meta: Any, data: memoryview, turn: _Turn) -> tuple[Any, Any]:
        _, key, ins, outs, out_shm, lane, dropped = meta
        for lane_id in dropped:
            self._lanes.pop(lane_id, None)
        lane_mm = self._lane(lane) if lane else None  # first: the daemon unlinks it after this
        model = self._models.get(key)
        if model is None:
            raise e.Unavailable(f"model '{key}' is not loaded in this worker")
        feeds = {}
        for name, datatype, shape, where, a, b, c in ins:
            dtype = OIP_TO_NUMPY[datatype]  # checked by the daemon
            if where == ch.INLINE:
                feeds[name] = np.ndarray(shape, dtype, data, a)
            elif where == ch.LANE:
                feeds[name] = np.ndarray(shape, dtype, lane_mm, b)
            else:
                feeds[name] = np.ndarray(shape, dtype, self._regions.window(a, b, c, name))
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

    def _outputs(self, results: dict[str, np.ndarray], out_shm: dict[str, Any], lane: Any,
                 lane_mm: Any) -> tuple[Any, list[np.ndarray]]:
        descs, buffers = [], []
        inline_at = 0
        lane_at = lane[3] if lane else 0
        for name, value in results.items():
            arr = value if value.flags.c_contiguous else np.ascontiguousarray(value)
            datatype = NUMPY_TO_OIP.get(arr.dtype) or datatype_of_numpy(arr.dtype)
            n = arr.nbytes
            if datatype not in OIP_TO_NUMPY:
                numpy_of_datatype(datatype)  # refuses BYTES outputs, with the reason
            if name in out_shm:
                shm_name, offset, capacity = out_shm[name]
                if n > capacity:
                    raise e.InvalidArgument(
                        f"output '{name}': {n} bytes ({datatype}{list(arr.shape)}) do not fit "
                        f"the {capacity}-byte shared memory window", field=name,
                        reason="BAD_TENSOR")
                window = self._regions.window(shm_name, offset, n, name, writable=True)
                window[:] = ch.raw(arr)
                descs.append((name, datatype, arr.shape, ch.SHM, shm_name, offset, n))
            elif lane_mm is not None and n >= self._threshold and lane_at + n <= lane[2]:
                lane_mm[lane_at:lane_at + n] = ch.raw(arr)
                descs.append((name, datatype, arr.shape, ch.LANE, 0, lane_at, n))
                lane_at = -(-(lane_at + n) // _ALIGN) * _ALIGN
            else:
                descs.append((name, datatype, arr.shape, ch.INLINE, inline_at, n, 0))
                buffers.append(arr)
                inline_at += n
        return ("ok", tuple(descs)), buffers

    def _lane(self, lane: Any) -> Any:
        lane_id, name, _size, _out_at = lane
        mm = self._lanes.get(lane_id)
        if mm is None:
            mm = open_map(self._shm_dir / name)[0]
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
