"""The daemon's handle on one worker process: start, request/reply, crash and hang handling.

Several requests can be in flight on one worker; replies come back in any order and carry their
request id. There is no reader thread: a caller waiting for its reply takes the *reader role*
(a lock) and reads the socket itself, completing other callers' replies as they pass; when its
own arrives it hands the role to another waiting caller. A reply thus wakes exactly one thread,
the one that needed it (a reader thread would add a thread hand-off, ~20 us on the 2-core dev
box, to every request). The pool's monitor thread covers the rest: it notices a worker's
death from its pidfd even when nobody is reading, reaps replies of callers that gave up, and
kills a worker whose oldest request has waited longer than the hang timeout.

When a worker ends, every call still pending fails at once with ``Unavailable`` naming the
model, the pid and the cause (signal, exit code, or "hung ... killed"). A call whose caller gave
up stays pending until its reply or the worker's end, so the resources it holds (a lane, a
concurrency slot) are released exactly once, by whoever completes it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import edged
from edged import errors as e
from edged.engines import channel as ch
from edged.engines.shm import SHM_DIR, LanePool

Spawner = Callable[[Callable[[], subprocess.Popen[bytes]]], subprocess.Popen[bytes]]


class Call:
    """One request in flight. ``lock`` is a binary semaphore: released to wake the waiter
    (its reply came, or it should take the reader role)."""

    __slots__ = ("abandoned", "data", "done", "error", "exempt", "key", "lock", "meta",
                 "on_done", "result", "rid", "sent_at", "signaled", "waiting")

    def __init__(self, rid: int, key: str, on_done: Callable[[Call], None] | None,
                 exempt: bool) -> None:
        self.rid, self.key, self.on_done, self.exempt = rid, key, on_done, exempt
        self.lock = threading.Lock()
        self.lock.acquire()
        self.done = self.abandoned = self.signaled = self.waiting = False
        self.meta: Any = None
        self.data: memoryview | None = None
        self.error: e.EdgedError | None = None
        self.result: Any = None
        self.sent_at = time.monotonic()


class WorkerProcess:
    def __init__(self, name: str, *, spawner: Spawner, shm_threshold: int,
                 oom_score_adj: int | None, on_death: Callable[[WorkerProcess, str], None],
                 shm_dir: Path = SHM_DIR) -> None:
        self.name = name
        self.keys: set[str] = set()
        self.pid = 0
        self.lanes = LanePool(f"edged-{os.getpid()}-{name}", shm_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.alive = False
        self.requests = 0
        self._spawner, self._threshold = spawner, shm_threshold
        self._oom, self._on_death, self._shm_dir = oom_score_adj, on_death, shm_dir
        self._pending: dict[int, Call] = {}
        self._next_rid = 0
        self._rid_lock = threading.Lock()
        self._reader = threading.Lock()  # the reader role
        self._sig = threading.Lock()  # guards Call.signaled
        self._chan: ch.Channel | None = None
        self._cause: str | None = None  # set when we end it on purpose (hang kill)
        self._stopping = False
        self._ended = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout_s: float) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [sys.executable, "-m", "edged.engines.worker_main", "--fd", str(child.fileno()),
               "--parent", str(os.getpid()), "--shm-threshold", str(self._threshold),
               "--shm-dir", str(self._shm_dir), "--name", self.name]
        if self._oom is not None:
            cmd += ["--oom-score-adj", str(self._oom)]
        env = dict(os.environ)
        root = str(Path(edged.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            self.proc = self._spawner(lambda: subprocess.Popen(
                cmd, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, env=env,
                close_fds=True))
        finally:
            child.close()
        self.pid = self.proc.pid
        self._chan = ch.Channel(parent)
        ready = Call(0, self.name, None, exempt=True)
        self._pending[0] = ready
        self.alive = True
        try:
            self.wait(ready, timeout_s, what="start")
        except e.EdgedError:
            self._stopping = True
            self.kill("did not start in time")
            self.reap(block=True)
            raise

    def kill(self, cause: str) -> None:
        """SIGKILL; whoever reads next (or the monitor) fails what is pending with ``cause``."""
        if self._cause is None:
            self._cause = cause
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    def request_exit(self) -> Call | None:
        """Ask the worker to exit, without waiting (``stop`` waits)."""
        if self._stopping:
            return None
        self._stopping = True
        try:
            return self.send(("exit",), exempt=True)
        except e.EdgedError:
            return None

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the worker on purpose (unload / close); returns once the process is gone, so
        that its memory is back."""
        call = self.request_exit()
        if call is not None:
            try:
                self.wait(call, timeout_s, what="exit")
            except e.EdgedError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill("stopped")
                self.proc.wait(timeout_s)
        self.reap(block=True)

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    # -- requests --------------------------------------------------------------------------
    def send(self, meta: Any, buffers: Sequence[memoryview] = (), *, key: str = "",
             on_done: Callable[[Call], None] | None = None, exempt: bool = False) -> Call:
        """Send a request; the returned call completes when its reply (or the end) comes."""
        with self._rid_lock:
            self._next_rid += 1
            rid = self._next_rid
        call = Call(rid, key or self.name, on_done, exempt)
        if not self.alive or self._chan is None:
            raise self.gone_error(call.key)
        self._pending[rid] = call
        try:
            self._chan.send(rid, meta, buffers)
        except OSError:
            self._pending.pop(rid, None)
            raise self.gone_error(call.key) from None
        self.requests += 1
        return call

    def wait(self, call: Call, timeout_s: float | None, what: str = "request") -> Any:
        """The reply's metadata (or ``call.result`` if ``on_done`` set it); raises the worker's
        error, Unavailable if it died, DeadlineExceeded when ``timeout_s`` passes first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        call.waiting = True
        try:
            while not call.done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                if self._reader.acquire(blocking=False):
                    try:
                        self._read_until(call, deadline)
                    finally:
                        self._reader.release()
                elif call.lock.acquire(timeout=-1 if left is None else left):
                    with self._sig:
                        call.signaled = False
        finally:
            call.waiting = False
            self._pass_reader_role()
        if not call.done:
            call.abandoned = True
            if what == "request":
                self.cancel(call.rid)
            raise e.DeadlineExceeded(
                f"{what} on model '{call.key}' took longer than {timeout_s:.3g} s")
        if call.error is not None:
            raise call.error
        return call.result if call.on_done is not None else call.meta

    def cancel(self, rid: int) -> None:
        if self.alive and self._chan is not None:
            try:
                self._chan.send(0, ("cancel", rid))
            except OSError:
                pass

    def oldest_pending(self) -> Call | None:
        calls = [c for c in list(self._pending.values()) if not c.exempt]
        return min(calls, key=lambda c: c.sent_at) if calls else None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def reap(self, block: bool = False) -> None:
        """Read what has arrived when no caller is reading (replies of callers that gave up,
        the end of a dead worker). Used by the monitor, and by ``stop``."""
        if self._ended or not self._reader.acquire(blocking=block):
            return
        try:
            if self._ended or self._chan is None:
                return
            while True:
                frame = self._chan.recv(timeout=0)
                if frame is None:
                    break
                self._dispatch(*frame)
            if self.exited():
                self._drain_to_end()
        except (EOFError, OSError):
            self._end()
        finally:
            self._reader.release()
            self._pass_reader_role()

    # -- the reader role -------------------------------------------------------------------
    def _read_until(self, call: Call, deadline: float | None) -> None:
        chan = self._chan
        if chan is None or self._ended:  # it ended between our send and now
            if self._pending.pop(call.rid, None) is not None:
                call.error = self.gone_error(call.key)
                self._complete(call)
            return
        try:
            while not call.done:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                frame = chan.recv(timeout=left)
                if frame is None:
                    return
                self._dispatch(*frame)
        except (EOFError, OSError):
            self._end()

    def _drain_to_end(self) -> None:
        assert self._chan is not None
        try:
            while True:
                frame = self._chan.recv(timeout=1.0)
                if frame is None:  # exited, yet the socket is open: nothing more will come
                    break
                self._dispatch(*frame)
        except (EOFError, OSError):
            pass
        self._end()

    def _dispatch(self, rid: int, meta: Any, data: memoryview) -> None:
        call = self._pending.pop(rid, None)
        if call is None:
            return
        if meta[0] == "err":
            call.error = ch.decode_error(meta)
        else:
            call.meta, call.data = meta, data
        self._complete(call)

    def _complete(self, call: Call) -> None:
        if call.on_done is not None:
            try:
                call.on_done(call)
            except Exception as exc:  # noqa: BLE001 - the caller must hear of it
                call.error = e.Internal(f"decoding the reply failed: {exc}")
        call.done = True
        self._signal(call)

    def _signal(self, call: Call) -> None:
        with self._sig:
            if not call.signaled:
                call.signaled = True
                call.lock.release()

    def _pass_reader_role(self) -> None:
        """Wake one waiting caller when nobody is reading, so that replies keep flowing."""
        if self._reader.locked():
            return
        for call in list(self._pending.values()):
            if call.waiting and not call.done:
                self._signal(call)
                return

    def _end(self) -> None:
        """The worker is gone (called with the reader role): fail what is pending."""
        if self._ended:
            return
        self._ended = True
        self.alive = False
        rc = None
        if self.proc is not None:
            try:
                rc = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        cause = self._cause or _describe_exit(rc)
        for rid in list(self._pending):
            call = self._pending.pop(rid, None)
            if call is not None:
                call.error = self.gone_error(call.key, cause)
                self._complete(call)
        if self._chan is not None:
            self._chan.close()
        self.lanes.close()
        if not self._stopping:
            self._on_death(self, cause)

    def gone_error(self, key: str, cause: str | None = None) -> e.Unavailable:
        cause = cause or self._cause or "is not running"
        return e.Unavailable(f"engine worker for '{key}' (pid {self.pid}) {cause}",
                             reason="WORKER_CRASHED", metadata={"pid": str(self.pid)})


def _describe_exit(rc: int | None) -> str:
    if rc is None:
        return "died (exit status unknown)"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = "unknown"
        return f"died: signal {-rc} ({name})"
    return f"died: exit code {rc}"
