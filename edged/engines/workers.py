"""The daemon side of the engines: models in worker processes, behind one small interface.

ONNX Runtime and CUDA give memory back only when their process ends, and a crashing engine must
take down a worker, never the daemon: so every model runs in a worker process (a fresh
interpreter, see worker_main.py), one per model unless models share a ``group``. Unloading the
last model of a worker ends the process, so its memory really returns.

``footprint_bytes`` of a load is what unloading that model gives back to ``MemAvailable``: for
a model alone in its worker, the worker's whole anonymous RSS after the warm-up (the process
ends on unload); for a model joining a running group worker, the growth of that worker's
anonymous RSS over the load. Anonymous RSS, not VmRSS: shared-library pages stay in the page
cache when a worker ends and are already counted as available.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edged import errors as e
from edged.engines import channel as ch
from edged.engines import validate
from edged.engines.base import EngineOptions, LoadResult, ShmRef, Signature
from edged.engines.shm import SHM_DIR
from edged.engines.worker_proc import Call, WorkerProcess

__all__ = ["LoadResult", "ShmRef", "WorkerPool", "WorkerStats"]

log = logging.getLogger("edged.engines")
EventSink = Callable[[str, Mapping[str, object]], None]


class _Model:
    """A loaded model: its checks, and its request counts under one condition variable
    (``in_flight`` counts queued + running requests, ``running`` those sent to the worker)."""

    def __init__(self, key: str, worker: WorkerProcess, checker: validate.Checker,
                 providers: tuple[str, ...], max_concurrency: int, footprint: int) -> None:
        self.key, self.worker, self.checker = key, worker, checker
        self.providers, self.max_concurrency, self.footprint = providers, max_concurrency, \
            footprint
        self.cond = threading.Condition(threading.Lock())
        self.in_flight = self.running = 0
        self.draining = False
        self.out_hint = 0  # bytes of large outputs seen: reserved in the next request's lane

    @property
    def signature(self) -> Signature:
        return self.checker.sig


@dataclass(frozen=True)
class WorkerStats:
    pid: int
    name: str
    keys: tuple[str, ...]
    in_flight: int
    requests: int
    rss_anon_bytes: int
    lane_bytes: int


class WorkerPool:
    def __init__(self, *, start_timeout_s: float = 60, request_timeout_s: float = 30,
                 hang_timeout_s: float = 60, shm_threshold_bytes: int = 64 * 1024,
                 on_event: EventSink | None = None, oom_score_adj: int | None = 500,
                 queue_depth: int = 64, shm_dir: Path = SHM_DIR) -> None:
        self._start_timeout = start_timeout_s
        self._request_timeout = request_timeout_s
        self._hang_timeout = hang_timeout_s
        self._threshold = shm_threshold_bytes
        self._on_event = on_event
        self._oom = oom_score_adj
        self._queue_depth = queue_depth
        self._shm_dir = shm_dir
        self._models: dict[str, _Model] = {}
        self._loading: set[str] = set()
        self._groups: dict[str, WorkerProcess] = {}
        self._workers: set[WorkerProcess] = set()
        self._cv = threading.Condition()
        self._group_locks: dict[str, threading.Lock] = {}
        self._spawner: ThreadPoolExecutor | None = None
        self._monitor: threading.Thread | None = None
        self._seq = 0
        self._closed = False

    # -- queries ---------------------------------------------------------------------------
    def is_loaded(self, key: str) -> bool:
        m = self._models.get(key)
        return m is not None and m.worker.alive and not m.draining

    def pid(self, key: str) -> int | None:
        m = self._models.get(key)
        return m.worker.pid if m is not None else None

    def signature(self, key: str) -> Signature | None:
        m = self._models.get(key)
        return m.signature if m is not None else None

    def stats(self) -> list[WorkerStats]:
        from edged.engines.worker_main import read_status

        with self._cv:
            workers = list(self._workers)
        out = []
        for w in workers:
            try:
                rss = read_status(w.pid)["RssAnon"]
            except (OSError, KeyError):
                rss = 0
            out.append(WorkerStats(w.pid, w.name, tuple(sorted(w.keys)), w.in_flight,
                                   w.requests, rss, w.lanes.total_bytes))
        return out

    # -- load ------------------------------------------------------------------------------
    def load(self, key: str, artifact: Path, fmt: str, options: EngineOptions | None = None,
             group: str | None = None, max_concurrency: int = 2) -> LoadResult:
        """Start (or join) a worker, open the session, warm it up, measure it."""
        options = options or EngineOptions()
        with self._cv:
            if self._closed:
                raise e.Unavailable("the engine pool is closed", reason="STOPPING")
            if key in self._models or key in self._loading:
                raise e.AlreadyExists(f"model '{key}' is already loaded")
            self._loading.add(key)
        started = time.monotonic()
        try:
            worker, fresh = self._worker_for(key, group)
            try:
                call = worker.send(("load", key, str(artifact), fmt, options.to_wire(),
                                    max_concurrency), key=key, exempt=True)
                reply = worker.wait(call, self._start_timeout, what="load")
            except BaseException:
                if fresh:
                    worker.stop()
                    self._forget(worker)
                raise
            _, sig_wire, providers, session_s, warmup_s, before, after, hwm = reply
            footprint = after if fresh else max(0, after - before)
            checker = validate.Checker(Signature.from_wire(sig_wire), self._threshold,
                                       self._shm_dir)
            model = _Model(key, worker, checker, tuple(providers), max_concurrency, footprint)
            with self._cv:
                if not worker.alive:
                    raise worker.gone_error(key)
                worker.keys.add(key)
                self._models[key] = model
        finally:
            with self._cv:
                self._loading.discard(key)
        return LoadResult(key, worker.pid, time.monotonic() - started, footprint,
                          model.signature, model.providers, session_s, warmup_s, hwm, fresh)

    def _worker_for(self, key: str, group: str | None) -> tuple[WorkerProcess, bool]:
        if group is None:
            return self._spawn(key), True
        with self._cv:
            lock = self._group_locks.setdefault(group, threading.Lock())
        with lock:
            worker = self._groups.get(group)
            if worker is not None and worker.alive:
                return worker, False
            worker = self._spawn(f"group-{group}")
            with self._cv:
                self._groups[group] = worker
            return worker, True

    def _spawn(self, label: str) -> WorkerProcess:
        with self._cv:
            self._seq += 1
            name = f"w{self._seq}"
            if self._spawner is None:
                # Workers are forked from this one long-lived thread: PR_SET_PDEATHSIG fires
                # when the *thread* that forked a child exits, not only the process.
                self._spawner = ThreadPoolExecutor(1, thread_name_prefix="edged-spawner")
            spawner = self._spawner
        worker = WorkerProcess(name, spawner=lambda f: spawner.submit(f).result(),
                               shm_threshold=self._threshold, oom_score_adj=self._oom,
                               on_death=self._worker_died, shm_dir=self._shm_dir)
        worker.start(self._start_timeout)
        with self._cv:
            self._workers.add(worker)
            self._start_monitor()
        log.debug("started engine worker %s (pid %d) for %s", name, worker.pid, label)
        return worker

    # -- inference -------------------------------------------------------------------------
    def infer(self, key: str, inputs: Mapping[str, np.ndarray | ShmRef],
              outputs: Sequence[str] | None = None,
              output_shm: Mapping[str, ShmRef] | None = None,
              timeout_s: float | None = None) -> dict[str, np.ndarray | ShmRef]:
        """Run one inference on ``key``'s worker; several may run at once (up to the model's
        ``max_concurrency``, then they queue here, up to ``queue_depth``)."""
        timeout = self._request_timeout if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        m = self._models.get(key)
        if m is None or m.draining or not m.worker.alive:
            raise e.Unavailable(f"model '{key}' is not loaded", metadata={"model": key})
        req = m.checker.prepare(inputs, outputs, output_shm)
        with m.cond:
            if m.in_flight >= self._queue_depth:
                raise e.ResourceExhausted(f"model '{key}' has {m.in_flight} requests queued "
                                          f"(limit {self._queue_depth})", reason="QUEUE_FULL")
            m.in_flight += 1
            while m.running >= m.max_concurrency:
                left = deadline - time.monotonic()
                if left <= 0 or not m.cond.wait(left):
                    self._release(m, running=False)
                    raise e.DeadlineExceeded(f"model '{key}' was busy for {timeout:.3g} s")
            m.running += 1
        call = self._send(m, req)  # releases the slot itself if it fails
        return m.worker.wait(call, deadline - time.monotonic())  # type: ignore[no-any-return]

    def _send(self, m: _Model, req: validate.Prepared) -> Call:
        worker, lane = m.worker, None
        try:
            if req.lane_bytes or m.out_hint:
                lane = worker.lanes.acquire(req.lane_bytes + m.out_hint)
                for offset, arr in req.lane_inputs:
                    lane.mm[offset:offset + arr.nbytes] = memoryview(arr).cast("B")
            lane_desc = None if lane is None else (
                lane.id, "" if lane.announced else lane.path.name, lane.size, req.lane_bytes)
            meta = ("infer", m.key, req.descs, req.outputs, req.out_shm, lane_desc,
                    worker.lanes.take_dropped())
            if lane is not None:
                lane.announced = True
            return worker.send(meta, req.buffers, key=m.key,
                               on_done=lambda call: self._done(m, call, lane))
        except BaseException:
            if lane is not None:
                worker.lanes.release(lane)
            with m.cond:
                self._release(m)
            raise

    def _done(self, m: _Model, call: Call, lane: Any) -> None:
        """Runs on whichever thread reads the reply (or notices the worker's end)."""
        try:
            if call.error is None:
                descs = call.meta[1]
                call.result = validate.decode_outputs(descs, call.data,  # type: ignore[arg-type]
                                                      lane.mm if lane is not None else None)
                large = 0
                for _name, _dt, _shape, where, _a, b, c in descs:
                    n = b if where == ch.INLINE else c
                    if where != ch.SHM and n >= self._threshold:
                        large += -(-n // 64) * 64
                if large > m.out_hint:
                    m.out_hint = large  # the next lane has room for them
        finally:
            if lane is not None:
                m.worker.lanes.release(lane)
            with m.cond:
                self._release(m)

    @staticmethod
    def _release(m: _Model, running: bool = True) -> None:
        """(with ``m.cond`` held) one request of ``m`` is over: wake a queued one / a drain."""
        m.in_flight -= 1
        if running:
            m.running -= 1
        if m.in_flight == 0:
            m.cond.notify_all()
        else:
            m.cond.notify()

    # -- unload / drain / close ------------------------------------------------------------
    def drain(self, key: str, timeout_s: float | None = None) -> bool:
        """Wait until ``key`` has no request in flight (new ones are not refused: the manager
        stops routing them); False if ``timeout_s`` passed first."""
        m = self._models.get(key)
        if m is None:
            return True
        with m.cond:
            return m.cond.wait_for(lambda: m.in_flight == 0, timeout_s)

    def unload(self, key: str, timeout_s: float | None = None) -> None:
        """Refuse new requests for ``key``, wait for those in flight, then end its worker (or
        close its session in a group worker). A request whose reply never comes is bounded by
        the hang timeout: the monitor kills the worker, which ends the wait."""
        with self._cv:
            m = self._models.get(key)
            if m is None:
                raise e.NotFound(f"model '{key}' is not loaded")
            m.draining = True
        with m.cond:
            if not m.cond.wait_for(lambda: m.in_flight == 0, timeout_s):
                m.draining = False
                raise e.Unavailable(f"model '{key}' still has {m.in_flight} requests in flight")
        with self._cv:
            if self._models.get(key) is not m:
                return  # its worker died meanwhile: nothing left to unload
            del self._models[key]
            worker = m.worker
            worker.keys.discard(key)
            last = not worker.keys
        if last:
            worker.stop()
            self._forget(worker)
            return
        try:
            worker.wait(worker.send(("unload", key), key=key, exempt=True), self._start_timeout,
                        what="unload")
        except e.EdgedError as exc:
            log.warning("unloading %s from worker %d: %s", key, worker.pid, exc)

    def _forget(self, worker: WorkerProcess) -> None:
        with self._cv:
            self._workers.discard(worker)
            for g, w in list(self._groups.items()):
                if w is worker:
                    del self._groups[g]

    def close(self) -> None:
        """End every worker and wait for them (used at daemon stop: no orphans)."""
        with self._cv:
            self._closed = True
            workers = list(self._workers)
            self._models.clear()
            self._cv.notify_all()
        for w in workers:  # ask them all first, then wait: stops run in parallel
            w.request_exit()
        for w in workers:
            w.stop(timeout_s=2.0)
            self._forget(w)
        if self._spawner is not None:
            self._spawner.shutdown(wait=True)

    # -- crashes and hangs -----------------------------------------------------------------
    def _worker_died(self, worker: WorkerProcess, cause: str) -> None:
        with self._cv:
            keys = [k for k, m in self._models.items() if m.worker is worker]
            for k in keys:
                del self._models[k]
            self._cv.notify_all()
        self._forget(worker)
        log.warning("engine worker %d (%s) %s", worker.pid, ", ".join(keys) or "idle", cause)
        for k in keys:
            self._emit("worker_crash", {"key": k, "pid": worker.pid, "cause": cause,
                                        "message": f"engine worker for '{k}' (pid "
                                                   f"{worker.pid}) {cause}"})

    def _start_monitor(self) -> None:
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._watch, name="edged-engine-monitor",
                                             daemon=True)
            self._monitor.start()

    def _watch(self) -> None:
        """Notice deaths (pidfd readable), reap replies nobody waits for, kill hung workers.

        Wakes ``tick`` times a second at most (well under 1% CPU when idle)."""
        tick = min(1.0, self._hang_timeout / 4)
        pidfds: dict[WorkerProcess, int] = {}
        poller = select.poll()
        try:
            while True:
                with self._cv:
                    if self._closed:
                        return
                    workers = set(self._workers)
                _sync_pidfds(poller, pidfds, workers)
                ready = {fd for fd, _ev in poller.poll(tick * 1e3)}
                now = time.monotonic()
                for w in workers:
                    if pidfds.get(w) in ready or (w not in pidfds and w.exited()):
                        w.reap(block=True)  # it died: deliver what it sent, fail the rest
                        continue
                    oldest = w.oldest_pending()
                    if oldest is not None and now - oldest.sent_at > self._hang_timeout:
                        age = now - oldest.sent_at
                        self._emit("worker_hang", {"pid": w.pid, "key": oldest.key,
                                                   "seconds": round(age, 3)})
                        w.kill(f"hung: no reply in {age:.1f} s; killed")
                    elif oldest is not None:
                        w.reap()
        finally:
            _sync_pidfds(poller, pidfds, set())

    def _emit(self, kind: str, details: Mapping[str, object]) -> None:
        if self._on_event is not None:
            try:
                self._on_event(kind, details)
            except Exception:  # noqa: BLE001 - a broken listener must not break the pool
                log.exception("engine event listener failed on %s", kind)


def _sync_pidfds(poller: select.poll, pidfds: dict[WorkerProcess, int],
                 workers: set[WorkerProcess]) -> None:
    """Watch a pidfd per live worker (readable when it exits); close the others'."""
    for w in list(pidfds):
        if w not in workers:
            fd = pidfds.pop(w)
            poller.unregister(fd)
            os.close(fd)
    for w in workers - pidfds.keys():
        try:
            fd = os.pidfd_open(w.pid)
        except (AttributeError, OSError):  # no pidfd (old kernel/Python): poll exit status
            continue
        pidfds[w] = fd
        poller.register(fd, select.POLLIN)
