"""Direct lanes, daemon side: grant, count, collect and revoke (the worker side is lane.py).

The daemon stays in charge of lanes it does not carry: it asks a model's worker to open one
for a client pid (at an unguessable path in a directory nobody but the daemon may list, with
the daemon socket's group and mode), keeps the book of open lanes per model, collects each
worker's records of lane requests about once a second (the pool's monitor tick) and hands
them on as ``lane_requests`` events, so that the preloader, the metrics and the trace file
see them; and before a model's worker lets go of the model (unload, eviction, version
switch, tier move, daemon stop) it revokes the model's lanes, which waits for their running
requests (lane.py). Clients retry revoked requests through gRPC or a new lane.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edged import errors as e
from edged.engines.worker_proc import WorkerProcess
from edged.engines.worker_protocol import GetLaneReport, LaneOpen, LaneRevoke, LaneRow

log = logging.getLogger("edged.engines")
REPORT_TIMEOUT_S = 5.0


MAX_OPEN_PER_MODEL = 64  # open lanes per model (all clients together)


@dataclass
class LaneInfo:
    id: int
    key: str
    pid: int
    worker: WorkerProcess
    opened_at: float
    requests: int = 0
    connected: bool = False


@dataclass(frozen=True)
class LaneGrant:
    id: int
    path: Path
    size: int


class LaneBook:
    def __init__(self, lane_dir: Path | None, *, mode: int = 0o660, gid: int = -1,
                 emit: Callable[[str, Mapping[str, object]], None],
                 timeout_s: float = 30.0) -> None:
        """``lane_dir``: where lane sockets are bound (None: lanes are off, e.g. a daemon
        without a Unix socket); ``mode``/``gid``: the daemon socket's."""
        self._dir, self._mode, self._gid = lane_dir, mode, gid
        self._emit, self._timeout = emit, timeout_s
        self._lanes: dict[int, LaneInfo] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._dir_ready = False

    def open(self, key: str, worker: WorkerProcess, pid: int, size: int) -> LaneGrant:
        if self._dir is None:
            raise e.FailedPrecondition("direct lanes need the daemon's Unix socket "
                                       "(listen.unix)", reason="NO_LANES")
        if pid <= 0:
            raise e.InvalidArgument("client_pid must be the calling process's pid",
                                    field="client_pid")
        self._ensure_dir()
        with self._lock:
            # each lane is a thread and shared memory in the worker: a client that opens
            # lanes without end must not take the worker down (it falls back to gRPC)
            if sum(1 for ln in self._lanes.values() if ln.key == key) >= MAX_OPEN_PER_MODEL:
                raise e.ResourceExhausted(
                    f"model '{key}' has {MAX_OPEN_PER_MODEL} direct lanes open, the most a "
                    "model takes: use ModelInfer", reason="QUEUE_FULL")
            self._next += 1
            lane_id = self._next
        path = self._dir / f"{secrets.token_hex(16)}.lane"
        call = worker.request(LaneOpen(lane_id, key, pid, str(path), size, self._mode,
                                       self._gid), key=key, exempt=True)
        granted = worker.wait(call, self._timeout, what="lane open").size
        with self._lock:
            self._lanes[lane_id] = LaneInfo(lane_id, key, pid, worker, time.time())
        return LaneGrant(lane_id, path, granted)

    def revoke(self, worker: WorkerProcess, key: str | None, collect: bool = True) -> int:
        """Revoke ``key``'s lanes on ``worker`` (all of its lanes if None) and wait for their
        running requests; returns how many there were. A worker that is gone has none.
        ``collect``: collect their last records now (else the caller polls, e.g. once for
        every worker at daemon stop, so the records stay in time order)."""
        with self._lock:
            mine = [ln for ln in self._lanes.values()
                    if ln.worker is worker and (key is None or ln.key == key)]
        if not worker.alive:
            return 0
        # (sent even when the book lists none: a lane being opened right now is not in the
        # book yet; the worker revokes it too, and opens no more for ``key``)
        try:
            worker.wait(worker.request(LaneRevoke(key), key=key or worker.name, exempt=True),
                        self._timeout, what="lane revoke")
        except e.EdgedError as exc:
            log.warning("revoking lanes of %s on worker %d: %s", key or "all", worker.pid, exc)
        if not collect:
            return len(mine)
        self.poll([worker])  # their last records, before the lanes are forgotten
        with self._lock:
            for ln in mine:
                self._lanes.pop(ln.id, None)
        return len(mine)

    def forget(self, worker: WorkerProcess) -> None:
        """The worker is gone: so are its lanes."""
        with self._lock:
            for lane_id in [i for i, ln in self._lanes.items() if ln.worker is worker]:
                del self._lanes[lane_id]

    def count(self, key: str) -> int:
        with self._lock:
            return sum(1 for ln in self._lanes.values() if ln.key == key)

    def lanes(self) -> list[LaneInfo]:
        with self._lock:
            return list(self._lanes.values())

    def poll(self, workers: Iterable[WorkerProcess] | None = None) -> None:
        """Collect the lane records of ``workers`` (default: every worker with lanes) and emit
        them as one ``lane_requests`` event: (time, key, seconds, ok), in time order."""
        with self._lock:
            targets = {ln.worker for ln in self._lanes.values()}
        if workers is not None:
            targets &= set(workers)
        records: list[tuple[float, str, float, bool]] = []
        for w in targets:
            if not w.alive:
                continue
            try:
                report = w.wait(w.request(GetLaneReport(), exempt=True), REPORT_TIMEOUT_S,
                                what="lane report")
            except e.EdgedError:
                continue
            records += self._take(w, report.lanes)
        if records:  # one event, in time order across models (the trace file keeps order)
            records.sort()
            self._emit("lane_requests", {"records": records})

    def _take(self, worker: WorkerProcess, rows: Iterable[LaneRow]
              ) -> list[tuple[float, str, float, bool]]:
        """``rows``: the lanes the worker still knows; a lane it no longer knows, or reports
        closed, is forgotten here."""
        out: list[tuple[float, str, float, bool]] = []
        live = set()
        with self._lock:
            for row in rows:
                ln = self._lanes.get(row.lane_id)
                if ln is not None:
                    ln.requests = row.requests
                    ln.connected = ln.connected or row.requests > 0
                    if not row.closed:
                        live.add(row.lane_id)
                out += [(t, row.key, seconds, ok) for t, seconds, ok in row.records]
                if row.dropped:
                    log.warning("lane %d of %s: %d request records dropped", row.lane_id,
                                row.key, row.dropped)
            for i in [i for i, ln in self._lanes.items()
                      if ln.worker is worker and i not in live]:
                del self._lanes[i]
        return out

    def _ensure_dir(self) -> None:
        """The lane directory, emptied of sockets a previous daemon left behind."""
        assert self._dir is not None
        if self._dir_ready:
            return
        try:
            self._dir.mkdir(mode=0o711, exist_ok=True)
            os.chmod(self._dir, 0o711)  # enter, never list: lane paths are the secret
            for stale in self._dir.glob("*.lane"):
                stale.unlink(missing_ok=True)
            self._dir_ready = True
        except OSError as exc:
            raise e.Unavailable(f"cannot create the lane directory {self._dir}: {exc}") from None
