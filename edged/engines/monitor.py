"""The pool's one background thread: notices deaths, reaps orphaned replies, kills hung workers.

Callers read their own replies (worker_proc.py), so when nobody is waiting nobody reads: this
thread covers that. It watches a pidfd per worker (readable when the process exits), so a crash
between requests is reported at once, not at the next request; it reads replies whose callers
gave up (their lanes and slots are released then); and it kills a worker whose oldest request
has had no reply for the hang timeout; and about once a second it lets the pool re-measure
the footprints of busy workers (``on_tick``, footprint.py). It wakes at most 4 times a second
(well under 1% CPU).
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable, Mapping

from edged.engines.worker_proc import WorkerProcess

log = logging.getLogger("edged.engines")


class Monitor:
    def __init__(self, *, workers: Callable[[], set[WorkerProcess] | None],
                 hang_timeout_s: float,
                 emit: Callable[[str, Mapping[str, object]], None],
                 on_tick: Callable[[], object] = lambda: None,
                 tick_interval_s: float = 1.0) -> None:
        """``workers()`` returns the live workers, or None once the pool is closed;
        ``on_tick()`` runs every ``tick_interval_s`` or so."""
        self._workers = workers
        self._hang = hang_timeout_s
        self._emit = emit
        self._on_tick, self._tick_every = on_tick, tick_interval_s
        self._tick = min(1.0, hang_timeout_s / 4)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edged-engine-monitor",
                                            daemon=True)
            self._thread.start()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        pidfds: dict[WorkerProcess, int] = {}
        poller = select.poll()
        ticked = time.monotonic()
        try:
            while True:
                workers = self._workers()
                if workers is None:
                    return
                _sync(poller, pidfds, workers)
                exited = {fd for fd, _ev in poller.poll(self._tick * 1e3)}
                for w in workers:
                    if pidfds.get(w) in exited or (w not in pidfds and w.exited()):
                        w.reap(block=True)  # deliver what it sent, fail the rest
                    else:
                        self._check(w)
                if time.monotonic() - ticked >= self._tick_every:
                    ticked = time.monotonic()
                    try:
                        self._on_tick()
                    except Exception:  # noqa: BLE001 - the monitor must keep watching
                        log.exception("engine monitor tick")
        finally:
            _sync(poller, pidfds, set())

    def _check(self, w: WorkerProcess) -> None:
        oldest = w.oldest_pending()
        if oldest is None:
            return
        age = time.monotonic() - oldest.sent_at
        if age > self._hang:
            self._emit("worker_hang", {"pid": w.pid, "key": oldest.key, "seconds": round(age, 3)})
            w.kill(f"hung: no reply in {age:.1f} s; killed")
        else:
            w.reap()  # replies of callers that gave up


def _sync(poller: select.poll, pidfds: dict[WorkerProcess, int],
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
