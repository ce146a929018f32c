"""The daemon side of the engines: models in worker processes, behind one small interface.

ONNX Runtime and CUDA give memory back only when their process ends, and a crashing engine must
take down a worker, never the daemon: so every model runs in a worker process (a fresh
interpreter, see worker_main.py), one per model unless models share a ``group``: a version's
own group (set at install), else the daemon-wide ``worker_groups`` / ``share_worker`` setting.
Unloading the last model of a worker ends the process, so its memory really returns.

``footprint_bytes`` of a load is what unloading that model gives back to ``MemAvailable``: for
a model alone in its worker, the worker's whole anonymous RSS after the warm-up (the process
ends on unload); for a model joining a running group worker, the growth of that worker's
anonymous RSS over the load. Anonymous RSS, not VmRSS: shared-library pages stay in the page
cache when a worker ends and are already counted as available. On a GPU the device memory the
load took (NvMap on a Jetson, NVML elsewhere: gpumem.py) is added. After real inferences the
monitor grows footprints to what the worker reached (footprint.py) and reports each growth as
a ``footprint`` event, which the daemon hands to the planner's accounting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from edged import errors as e
from edged.engines import footprint, gpumem, validate
from edged.engines.base import EngineOptions, LoadResult, ShmRef, Signature
from edged.engines.inference import LoadedModel
from edged.engines.lanes import LaneBook, LaneGrant, LaneInfo
from edged.engines.monitor import Monitor
from edged.engines.procfs import anon_peak, read_status
from edged.engines.shm import SHM_DIR
from edged.engines.spares import Spares
from edged.engines.worker_proc import WorkerProcess
from edged.engines.worker_protocol import Load, Ping, Unload

__all__ = ["LoadResult", "ShmRef", "WorkerPool", "WorkerStats"]

log = logging.getLogger("edged.engines")
EventSink = Callable[[str, Mapping[str, object]], None]
SHARED_GROUP = "edged-shared"  # the one worker of share_worker="one"


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
                 queue_depth: int = 8, spare_workers: int = 0,
                 spare_format: str = "onnx", shm_dir: Path = SHM_DIR,
                 memory_cap: Callable[[str], int] | None = None,
                 gpu_meter: gpumem.Meter | None = None,
                 worker_groups: Mapping[str, str] | None = None,
                 share_worker: str = "per_model", remeasure_interval_s: float = 1.0,
                 lane_dir: Path | None = None, lane_mode: int = 0o660,
                 lane_gid: int = -1) -> None:
        """``spare_workers`` idle workers are kept started, with ``spare_format``'s runtime
        already imported, so that a load does not wait for an interpreter to start (~0.3 s on
        the dev box: the SPEC wants loads within 10% of creating the session directly). Each
        costs an idle worker's memory (~24 MiB with onnxruntime), so the default is none; they
        start in the background as soon as the pool is created.

        ``memory_cap(key)``: the runtime cap for a load that brings none (from the tier budget,
        see onnxruntime.py; 0 = none). ``gpu_meter``: gpumem.py. ``worker_groups`` (model name
        -> group) and ``share_worker`` ("per_model" | "one") pick the worker of a load whose
        version names no group of its own.

        ``lane_dir``, ``lane_mode``, ``lane_gid``: where and how direct lanes' sockets are
        bound (lanes.py; None: no lanes)."""
        self._start_timeout = start_timeout_s
        self._request_timeout = request_timeout_s
        self._threshold = shm_threshold_bytes
        self._on_event = on_event
        self._oom = oom_score_adj
        self._queue_depth = queue_depth
        self._shm_dir = shm_dir
        self._memory_cap, self._gpu_meter = memory_cap, gpu_meter
        self._default_groups = dict(worker_groups or {})
        self._share_all = share_worker == "one"
        self._models: dict[str, LoadedModel] = {}
        self._loading: set[str] = set()
        self._loading_workers: dict[str, WorkerProcess] = {}  # loads in a worker of their own
        self._aborted: dict[str, str] = {}  # loads aborted before their worker was up: cause
        self._groups: dict[str, WorkerProcess] = {}
        self._group_locks: dict[str, threading.Lock] = {}
        self._workers: set[WorkerProcess] = set()
        self._cv = threading.Condition()
        self._spawner: ThreadPoolExecutor | None = None
        self._lanebook = LaneBook(lane_dir, mode=lane_mode, gid=lane_gid,
                                  emit=self._lane_records, timeout_s=start_timeout_s)
        self._monitor = Monitor(workers=self._live_workers, hang_timeout_s=hang_timeout_s,
                                emit=self._emit, on_tick=self._tick,
                                tick_interval_s=remeasure_interval_s)
        self._seq = 0
        self._closed = False
        self._spares = Spares(target=spare_workers, fmt=spare_format,
                              start=lambda: self._start_worker(loads=0), retire=self._retire,
                              timeout_s=start_timeout_s)
        self._spares.refill()  # (starts a thread only if spares were asked for)

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

    def footprint(self, key: str) -> int:
        """``key``'s footprint now: its load's measurement, grown by what real inferences
        reached (0 if it is not loaded)."""
        m = self._models.get(key)
        return m.footprint if m is not None else 0

    def in_flight(self, key: str) -> int:
        """``key``'s requests queued or running here (0 if it is not loaded)."""
        m = self._models.get(key)
        return m.in_flight if m is not None else 0

    @property
    def spares_ready(self) -> int:
        """Idle workers started ahead of loads (see ``spare_workers``)."""
        return self._spares.ready

    def stats(self) -> list[WorkerStats]:
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
        options = self._capped(key, options or EngineOptions())
        group = group or self._default_group(key)
        with self._cv:
            if self._closed:
                raise e.Unavailable("the engine pool is closed", reason="STOPPING")
            if key in self._models or key in self._loading:
                raise e.AlreadyExists(f"model '{key}' is already loaded")
            self._loading.add(key)
        started = time.monotonic()
        worker = None
        try:
            worker, fresh = self._worker_for(group)
            if fresh:
                with self._cv:
                    self._loading_workers[key] = worker
                    aborted = self._aborted.pop(key, None)
                if aborted is not None:  # aborted while its worker was starting
                    self._retire(worker)
                    worker.stop()
                    raise e.Aborted(f"load of '{key}' aborted: {aborted}")
            try:
                gpu_before = self._gpu(worker.pid)
                call = worker.request(Load(key, str(artifact), fmt, options, max_concurrency),
                                      key=key, exempt=True)
                loaded = worker.wait(call, self._start_timeout, what="load")
            except BaseException:
                if fresh:
                    self._retire(worker)
                    worker.stop()
                raise
            providers = loaded.providers
            gpu = gpumem.gpu_growth(providers, gpu_before, self._gpu(worker.pid))
            measured = (loaded.rss_after if fresh else
                        max(0, loaded.rss_after - loaded.rss_before)) + gpu
            if fresh:  # a fresh worker's own cost, for this device's calibration
                self._emit("worker_measured", {"key": key, "worker_bytes": loaded.rss_before,
                                               "footprint": measured, "gpu_bytes": gpu,
                                               "providers": providers})
            checker = validate.Checker(loaded.signature, self._threshold, self._shm_dir)
            model = LoadedModel(key, worker, checker, providers, max_concurrency,
                                measured, self._threshold, gpu_bytes=gpu)
            with self._cv:
                if not worker.alive:
                    raise worker.gone_error(key)
                worker.keys.add(key)
                self._models[key] = model
        finally:
            with self._cv:
                self._loading.discard(key)
                self._loading_workers.pop(key, None)
                self._aborted.pop(key, None)
                if worker is not None:
                    worker.loads -= 1
        return LoadResult(key, worker.pid, time.monotonic() - started, measured,
                          model.signature, model.providers, loaded.session_s, loaded.warmup_s,
                          loaded.peak, fresh,
                          options.memory_limit_bytes, gpu)

    def _capped(self, key: str, options: EngineOptions) -> EngineOptions:
        """``options`` with the budget's runtime cap, unless they bring their own."""
        if options.memory_limit_bytes or self._memory_cap is None:
            return options
        try:
            cap = int(self._memory_cap(key))
        except Exception:  # noqa: BLE001 - the runtime's own fallback cap then applies
            log.exception("memory cap for %s", key)
            return options
        return replace(options, memory_limit_bytes=cap) if cap > 0 else options

    def _default_group(self, key: str) -> str | None:
        """The daemon-wide sharing setting for a model (``key`` is ``name:version``)."""
        group = self._default_groups.get(key.rpartition(":")[0] or key)
        return group or (SHARED_GROUP if self._share_all else None)

    def _gpu(self, pid: int) -> int | None:
        if self._gpu_meter is None:
            return None
        try:
            return self._gpu_meter(pid)
        except Exception:  # noqa: BLE001 - a meter failing must not fail the load
            log.exception("GPU memory meter")
            return None

    def abort_load(self, key: str, cause: str) -> bool:
        """Kill the worker of a load in progress (a cancelled preload whose memory a demand
        load needs now: waiting for it to finish would make the demand wait behind it).
        Only a load in a worker of its own can be aborted; ``load`` then raises."""
        with self._cv:
            if key not in self._loading:
                return False
            worker = self._loading_workers.get(key)
            if worker is None:  # still starting its worker: ``load`` stops it once it is up
                self._aborted[key] = cause
                return True
        worker.kill(cause)
        return True

    def _worker_for(self, group: str | None) -> tuple[WorkerProcess, bool]:
        """A worker for one more load (counted in ``loads`` until the load is over, so that an
        unload of the group's last model does not end it meanwhile)."""
        if group is None:
            return self._spawn(), True
        with self._cv:
            lock = self._group_locks.setdefault(group, threading.Lock())
        with lock:
            with self._cv:
                worker = self._groups.get(group)
                if worker is not None and worker.alive:
                    worker.loads += 1
                    return worker, False
            worker = self._spawn()
            with self._cv:
                self._groups[group] = worker
            return worker, True

    def _spawn(self) -> WorkerProcess:
        spare = self._spares.take()
        if spare is None:
            return self._start_worker()
        with self._cv:
            spare.loads += 1
        return spare

    def _start_worker(self, loads: int = 1) -> WorkerProcess:
        with self._cv:
            if self._closed:
                raise e.Unavailable("the engine pool is closed", reason="STOPPING")
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
            worker.loads += loads
            self._workers.add(worker)
        self._monitor.start()
        log.debug("started engine worker %s (pid %d)", name, worker.pid)
        return worker

    # -- direct lanes (lanes.py, lane.py) -------------------------------------------------
    def open_lane(self, key: str, pid: int, size: int) -> LaneGrant:
        """Ask ``key``'s worker for a lane to client ``pid``; the model must be loaded."""
        m = self._models.get(key)
        if m is None or m.draining or not m.worker.alive:
            raise e.NotDelivered(f"model '{key}' is not loaded", metadata={"model": key})
        try:
            return self._lanebook.open(key, m.worker, pid, size)
        except e.NotDelivered:
            m.worker.reap(block=True)  # (as infer: the caller's retry reloads it)
            raise

    def lanes(self) -> list[LaneInfo]:
        return self._lanebook.lanes()

    def lane_count(self, key: str) -> int:
        return self._lanebook.count(key)

    def poll_lanes(self) -> None:
        """Collect lane request records now (the monitor does it about once a second)."""
        self._lanebook.poll()

    def _lane_records(self, kind: str, details: Mapping[str, object]) -> None:
        """Lane requests count as served for the footprint's re-measurement, then go on."""
        for _t, key, _s, _ok in details["records"]:  # type: ignore[attr-defined]
            m = self._models.get(key)
            if m is not None:
                m.served += 1
        self._emit(kind, details)

    def _tick(self) -> None:
        self.remeasure()
        self._lanebook.poll()

    # -- footprints after real inferences (footprint.py) ---------------------------------
    def remeasure(self) -> list[tuple[str, int]]:
        """Grow the footprints of models whose workers grew since their load; each growth is
        also a ``footprint`` event. Called by the monitor about once a second."""
        with self._cv:
            by_worker: dict[WorkerProcess, list[LoadedModel]] = {}
            for m in self._models.values():
                if m.worker.alive and not m.worker.loads:  # (a load's growth is its own)
                    by_worker.setdefault(m.worker, []).append(m)
        grown = []
        for w, models in by_worker.items():
            device = (partial(self._gpu, w.pid) if gpumem.per_process(self._gpu_meter)
                      and any(m.gpu_bytes for m in models) else None)
            gpu_before = sum(m.gpu_bytes for m in models)
            hit = footprint.regrow(models, partial(read_status, w.pid), anon_peak, device)
            if hit is None:
                continue
            model, growth = hit
            grown.append((model.key, model.footprint))
            log.info("model %s grew by %d bytes after real inferences: footprint now %d",
                     model.key, growth, model.footprint)
            self._emit("footprint", {"key": model.key, "pid": w.pid, "bytes": model.footprint,
                                     "growth": growth, "gpu_bytes": model.gpu_bytes,
                                     "gpu_growth": sum(m.gpu_bytes for m in models)
                                     - gpu_before})
        return grown

    # -- inference -------------------------------------------------------------------------
    def infer(self, key: str, inputs: Mapping[str, np.ndarray | ShmRef],
              outputs: Sequence[str] | None = None,
              output_shm: Mapping[str, ShmRef] | None = None,
              timeout_s: float | None = None) -> dict[str, np.ndarray | ShmRef]:
        """One inference on ``key``'s worker. Several may run at once (up to the model's
        ``max_concurrency``); up to ``queue_depth`` more wait here; beyond them:
        ResourceExhausted (QUEUE_FULL) at once."""
        m = self._models.get(key)
        if m is None or m.draining or not m.worker.alive:
            raise e.NotDelivered(f"model '{key}' is not loaded", metadata={"model": key})
        timeout = self._request_timeout if timeout_s is None else timeout_s
        try:
            return m.infer(inputs, outputs, output_shm, timeout, self._queue_depth)
        except e.NotDelivered:
            # its worker died before the request could be sent: hear of the death now (the
            # residency forgets the model), so that the caller's retry reloads it
            m.worker.reap(block=True)
            raise

    def ping(self, key: str, timeout_s: float = 5.0) -> float:
        """Seconds for a bare round trip to ``key``'s worker (no inference): a health probe."""
        m = self._models.get(key)
        if m is None or not m.worker.alive:
            raise e.Unavailable(f"model '{key}' is not loaded", metadata={"model": key})
        t0 = time.perf_counter()
        m.worker.wait(m.worker.request(Ping(), key=key), timeout_s)
        return time.perf_counter() - t0

    # -- unload / drain / close ------------------------------------------------------------
    def drain(self, key: str, timeout_s: float | None = None) -> bool:
        """Wait until ``key`` has no request in flight (new ones are not refused: the manager
        stops routing them); False if ``timeout_s`` passed first."""
        m = self._models.get(key)
        return m is None or m.wait_idle(timeout_s)

    def unload(self, key: str, timeout_s: float | None = None) -> None:
        """Refuse new requests for ``key``, wait for those in flight, then end its worker (or
        close its session in a group worker). A request whose reply never comes is bounded by
        the hang timeout: the monitor kills the worker, which ends the wait."""
        with self._cv:
            m = self._models.get(key)
            if m is None:
                raise e.NotFound(f"model '{key}' is not loaded")
            m.draining = True
        self._lanebook.revoke(m.worker, key)  # waits for their running requests
        if not m.wait_idle(timeout_s):
            m.draining = False
            raise e.Unavailable(f"model '{key}' still has {m.in_flight} requests in flight")
        with self._cv:
            if self._models.get(key) is not m:
                return  # its worker died meanwhile: nothing left to unload
            del self._models[key]
            worker = m.worker
            worker.keys.discard(key)
            last = not worker.keys and not worker.loads
            if last:
                self._retire(worker)  # new loads of its group start a new worker
        if last:
            worker.stop()
            return
        try:
            worker.wait(worker.request(Unload(key), key=key, exempt=True), self._start_timeout,
                        what="unload")
        except e.EdgedError as exc:
            log.warning("unloading %s from worker %d: %s", key, worker.pid, exc)

    def close(self) -> None:
        """End every worker and wait for them (used at daemon stop: no orphans)."""
        with self._cv:
            self._closed = True
            workers = list(self._workers)
            self._models.clear()
        self._spares.close()
        for w in workers:  # clients of lanes retry elsewhere (a stopping daemon: UNAVAILABLE)
            self._lanebook.revoke(w, None, collect=False)
        self._lanebook.poll(workers)
        for w in workers:  # ask them all first, then wait: the stops run in parallel
            w.request_exit()
        for w in workers:
            w.stop(timeout_s=2.0)
            self._retire(w)
        self._monitor.join(2.0)
        if self._spawner is not None:
            self._spawner.shutdown(wait=True)

    def _retire(self, worker: WorkerProcess) -> None:
        self._spares.discard(worker)
        with self._cv:
            self._workers.discard(worker)
            for g, w in list(self._groups.items()):
                if w is worker:
                    del self._groups[g]

    def _live_workers(self) -> set[WorkerProcess] | None:
        with self._cv:
            return None if self._closed else set(self._workers)

    # -- crashes ---------------------------------------------------------------------------
    def _worker_died(self, worker: WorkerProcess, cause: str) -> None:
        with self._cv:
            keys = [k for k, m in self._models.items() if m.worker is worker]
            for k in keys:
                del self._models[k]
        self._retire(worker)
        self._lanebook.forget(worker)
        log.warning("engine worker %d (%s) %s", worker.pid, ", ".join(keys) or "idle", cause)
        for k in keys:
            self._emit("worker_crash", {"key": k, "pid": worker.pid, "cause": cause,
                                        "message": f"engine worker for '{k}' (pid "
                                                   f"{worker.pid}) {cause}"})

    def _emit(self, kind: str, details: Mapping[str, object]) -> None:
        if self._on_event is not None:
            try:
                self._on_event(kind, details)
            except Exception:  # noqa: BLE001 - a broken listener must not break the pool
                log.exception("engine event listener failed on %s", kind)
