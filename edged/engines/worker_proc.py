"""The daemon's handle on one worker process: start, stop, kill, and the end of it.

Requests go through its ``CallTable`` (calls.py). When the worker ends, every call still
pending fails at once with ``Unavailable`` naming the model, the pid and the cause (signal,
exit code, or "hung ... killed"), and the pool hears of it (``on_death``) unless the end was
asked for.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import edged
from edged import errors as e
from edged.engines import channel as ch
from edged.engines.calls import Call, CallTable
from edged.engines.shm import SHM_DIR, LanePool
from edged.engines.worker_protocol import Exit, Ok, Ready, Request, Wire

R = TypeVar("R")

RECV_TICK_S = 0.02  # how late a caller reading the socket may notice its deadline

Spawner = Callable[[Callable[[], subprocess.Popen[bytes]]], subprocess.Popen[bytes]]

__all__ = ["Call", "WorkerProcess"]


class WorkerProcess:
    def __init__(self, name: str, *, spawner: Spawner, shm_threshold: int,
                 oom_score_adj: int | None, on_death: Callable[[WorkerProcess, str], None],
                 shm_dir: Path = SHM_DIR) -> None:
        self.name = name
        self.keys: set[str] = set()
        self.pid = 0
        self.lanes = LanePool(f"edged-{os.getpid()}-{name}", shm_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.loads = 0  # loads under way into this worker (the pool counts them)
        self.calls: CallTable | None = None
        self._spawner, self._threshold = spawner, shm_threshold
        self._oom, self._on_death, self._shm_dir = oom_score_adj, on_death, shm_dir
        self._cause: str | None = None  # set when we end it on purpose (hang kill)
        self._stopping = False
        self._ready = False

    @property
    def alive(self) -> bool:
        return self.calls is not None and self.calls.open

    @property
    def requests(self) -> int:
        return self.calls.sent if self.calls is not None else 0

    @property
    def in_flight(self) -> int:
        return len(self.calls) if self.calls is not None else 0

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
        self.calls = CallTable(ch.Channel(parent, recv_tick_s=RECV_TICK_S), gone=self.gone_error,
                               on_end=self._ended, exited=self.exited, nudge=self._nudge)
        try:
            self.calls.wait(self.calls.expect(0, self.name, Ready.of), timeout_s, what="start")
            self._ready = True  # nudges from now on (before, SIGUSR1 could still kill it)
        except e.EdgedError:
            self._stopping = True
            self.kill("did not start in time")
            self.calls.reap(block=True)
            raise

    def _nudge(self) -> None:
        """SIGUSR1: see worker_main.py. Only while our child is unreaped (no pid reuse)."""
        if self._ready and self.proc is not None and self.proc.returncode is None:
            try:
                os.kill(self.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass

    def kill(self, cause: str) -> None:
        """SIGKILL; whoever reads next (or the monitor) fails what is pending with ``cause``."""
        if self._cause is None:
            self._cause = cause
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    def request_exit(self) -> Call[Ok] | None:
        """Ask the worker to exit, without waiting (``stop`` waits)."""
        if self._stopping:
            return None
        self._stopping = True
        try:
            return self.request(Exit(), exempt=True)
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

    # -- requests (see calls.py) -----------------------------------------------------------
    def request(self, msg: Request[R], *, key: str = "", exempt: bool = False) -> Call[R]:
        """Send ``msg``; ``wait`` returns its reply. ``exempt``: not watched for hangs (loads
        and other requests that may take long)."""
        return self.send(msg.wire(), key=key, decode=msg.reply, exempt=exempt)

    def send(self, wire: Wire, buffers: Sequence[ch.Buffer] = (), *, key: str = "",
             decode: Callable[[Wire], R] | None = None,
             on_done: Callable[[Call[R]], None] | None = None,
             exempt: bool = False) -> Call[R]:
        """``request`` for a caller that decodes the reply itself, in ``on_done``
        (inference.py)."""
        if self.calls is None:
            raise e.NotDelivered.of(self.gone_error(key or self.name))
        return self.calls.send(wire, buffers, key=key or self.name, decode=decode,
                               on_done=on_done, exempt=exempt)

    def wait(self, call: Call[R], timeout_s: float | None, what: str = "request",
             budget_s: float | None = None) -> R:
        assert self.calls is not None
        return self.calls.wait(call, timeout_s, what, budget_s)

    def oldest_pending(self) -> Call[object] | None:
        return self.calls.oldest() if self.calls is not None else None

    def reap(self, block: bool = False) -> None:
        if self.calls is not None:
            self.calls.reap(block)

    # -- the end ---------------------------------------------------------------------------
    def _ended(self) -> None:
        """The channel reached its end (called with the reader role): fail what is pending."""
        rc = None
        if self.proc is not None:
            try:
                rc = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        cause = self._cause or ("was stopped" if self._stopping else _describe_exit(rc))
        assert self.calls is not None
        self.calls.fail_all(lambda call: self.gone_error(call.key, cause))
        self.calls.chan.close()
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
