"""Spare workers: idle engine workers started ahead of loads.

A load into a fresh worker waits for an interpreter to start and import numpy and the runtime
(~0.3 s on the dev box); the SPEC wants loads within 10% of creating the session directly. A
spare has done all that already (``prepare`` imports the runtime), so a load only pays for the
session. Each spare costs an idle worker's memory (~24 MiB with onnxruntime): opt-in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from edged import errors as e
from edged.engines.worker_proc import WorkerProcess
from edged.engines.worker_protocol import Prepare

log = logging.getLogger("edged.engines")


class Spares:
    def __init__(self, *, target: int, fmt: str, start: Callable[[], WorkerProcess],
                 retire: Callable[[WorkerProcess], None], timeout_s: float) -> None:
        """``start()`` starts a worker (counted by the pool), ``retire(w)`` forgets one."""
        self._target, self._fmt, self._timeout = target, fmt, timeout_s
        self._start, self._retire = start, retire
        self._ready: list[WorkerProcess] = []
        self._cv = threading.Condition()
        self._busy = False  # a thread is starting spares
        self._closed = False

    @property
    def ready(self) -> int:
        with self._cv:
            return len(self._ready)

    def take(self) -> WorkerProcess | None:
        """A ready spare (waiting for one on its way: sooner than starting anew), or None."""
        with self._cv:
            if not self._ready and self._busy:
                self._cv.wait_for(lambda: self._ready or not self._busy, self._timeout)
            spare = self._ready.pop() if self._ready else None
        self.refill()
        return spare if spare is not None and spare.alive else None

    def refill(self) -> None:
        with self._cv:
            if self._closed or self._busy or len(self._ready) >= self._target:
                return
            self._busy = True
        threading.Thread(target=self._fill, name="edged-spares", daemon=True).start()

    def discard(self, worker: WorkerProcess) -> None:
        with self._cv:
            if worker in self._ready:
                self._ready.remove(worker)

    def close(self) -> None:
        """No more spares; the pool stops the ready ones with its other workers."""
        with self._cv:
            self._closed = True
            self._ready.clear()
            self._cv.notify_all()

    def _fill(self) -> None:
        worker = None
        try:
            while True:
                with self._cv:
                    if self._closed or len(self._ready) >= self._target:
                        return
                try:
                    worker = self._start()
                except e.EdgedError as exc:
                    log.warning("starting a spare engine worker: %s", exc)
                    return
                try:
                    worker.wait(worker.request(Prepare(self._fmt), exempt=True),
                                self._timeout, what="prepare")
                except e.EdgedError as exc:
                    log.warning("spare engine worker %d: %s", worker.pid, exc)
                    break
                with self._cv:
                    if self._closed:
                        break
                    self._ready.append(worker)
                    self._cv.notify_all()
                worker = None
        finally:
            with self._cv:
                self._busy = False
                self._cv.notify_all()
            if worker is not None:  # failed, or the pool closed meanwhile
                self._retire(worker)
                worker.stop()
