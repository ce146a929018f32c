"""An engine worker process: ``python -m edged.engines.worker_main --fd N --parent PID ...``.

Started by ``WorkerPool`` as a fresh interpreter (never forked from the daemon, so it inherits
no gRPC threads or locks). It holds one or more sessions and serves the daemon over one socket.

Threads: ``1 + sum(max_concurrency)`` identical threads take turns reading the socket
(leader/follower): the reader hands the socket to the next thread just before it runs an
inference (the GIL is free while ORT runs), so a request is handled by the thread that read it,
without a hand-off between threads; the spare thread keeps reading cancels and loads while every
model is busy. The worker exits when the socket closes, when the daemon dies (PR_SET_PDEATHSIG,
and a parent check at start), or when told to; it ignores SIGINT (the daemon handles stop) and
raises its own oom_score_adj so that the kernel picks a worker before the daemon.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
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
from edged.engines.session import Session, warm_up
from edged.engines.shm import SHM_DIR, RegionCache, open_map

PR_SET_PDEATHSIG = 1
_ALIGN = 64
# Inferences shorter than this (moving average) run while their thread keeps the reader role:
# a concurrent request waits at most this long, and no thread is woken per request.
INLINE_RUN_S = 0.001


def read_status(pid: int | str = "self") -> dict[str, int]:
    """RssAnon / VmRSS / VmHWM of a process in bytes, from /proc (cheap, no psutil)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "VmRSS:", "VmHWM:", "RssShmem:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0]) * 1024
    return out


def _trim() -> None:
    """Give freed heap back to the kernel: ORT's load-time copies (the parsed protobuf, the
    tensors before pre-packing) are freed into glibc's heap and would otherwise stay resident,
    inflating the footprint by up to the weights' size."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def harden(parent: int, oom_score_adj: int | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the daemon died before prctl took effect
        os._exit(0)
    if oom_score_adj is not None:
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(oom_score_adj))
        except OSError:  # EPERM/EACCES without CAP_SYS_RESOURCE when lowering: keep going
            pass


class _Turn:
    """A thread's hold on the reader role. It keeps the role through short inferences (no
    thread wake-up per request) and hands it off before anything long, so that the other
    threads keep reading requests, cancels and loads meanwhile."""

    __slots__ = ("held", "lock")

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        lock.acquire()
        self.held = True

    def hand_off(self) -> None:
        if self.held:
            self.held = False
            self.lock.release()

    def take(self) -> None:
        if not self.held:
            self.lock.acquire()
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
        self._load_lock = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._lanes: dict[int, Any] = {}
        self._regions = RegionCache(shm_dir)
        self._runs: dict[int, Any] = {}
        self._threads = 0
        self._loads = 0
        self._handlers: dict[str, Callable[..., Any]] = {
            "infer": self._infer, "load": self._load, "unload": self._unload,
            "stats": self._stats, "ping": self._ping}

    def serve(self) -> None:
        self._chan.send(0, ("ready", os.getpid(), read_status()["RssAnon"]))
        self._grow(1)
        self._loop()

    def _grow(self, n: int) -> None:
        for _ in range(n):
            self._threads += 1
            threading.Thread(target=self._loop, name=f"edged-worker-{self._threads}",
                             daemon=True).start()

    def _loop(self) -> None:
        turn = _Turn(self._read_lock)
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
            _trim()
            try:
                warm_up(session, options.warmup_shapes)
            except BaseException:
                session.close()
                _trim()
                raise
            t2 = time.perf_counter()
            _trim()
            status = read_status()
            self._models[key] = _Model(session, max_concurrency, t2 - t1)
            self._loads += 1
            self._grow(max_concurrency)
        reply = ("ok", session.signature.to_wire(), session.providers, t1 - t0, t2 - t1,
                 before, status["RssAnon"], status["VmHWM"])
        return reply, ()

    def _unload(self, rid: int, meta: Any, data: memoryview, handoff: Any) -> tuple[Any, Any]:
        model = self._models.pop(meta[1], None)
        if model is not None:
            model.session.close()
            del model
            _trim()
        return ("ok", read_status()["RssAnon"]), ()

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
            count = math.prod(shape)
            if where == ch.INLINE:
                arr = np.frombuffer(data, dtype, count, a)
            elif where == ch.LANE:
                arr = np.frombuffer(lane_mm, dtype, count, b)  # type: ignore[arg-type]
            else:
                arr = np.frombuffer(self._regions.window(a, b, c, name), dtype, count)
            feeds[name] = arr.reshape(shape)
        session = model.session
        handle = session.run_handle()
        self._runs[rid] = handle
        if model.run_s > INLINE_RUN_S:
            turn.hand_off()
        t0 = time.perf_counter()
        try:
            results = session.run(feeds, outs, handle)
        finally:
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
                window[:] = memoryview(arr).cast("B")
                descs.append((name, datatype, arr.shape, ch.SHM, shm_name, offset, n))
            elif lane_mm is not None and n >= self._threshold and lane_at + n <= lane[2]:
                lane_mm[lane_at:lane_at + n] = memoryview(arr).cast("B")
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
