"""Requests in flight on one worker channel, and who reads the replies.

Several requests can be in flight on one worker; replies come back in any order and carry their
request id. There is no reader thread: a caller waiting for its reply takes the *reader role*
(a lock) and reads the socket itself, completing other callers' replies as they pass; when its
own arrives it hands the role to another waiting caller. A reply thus wakes exactly one thread,
the one that needed it (a reader thread would add a thread hand-off, ~20 us on the 2-core dev
box, to every request). When nobody waits, nobody reads: the pool's monitor reaps then.

A call whose caller gave up (deadline) stays pending until its reply or the worker's end, so
that what it holds (a lane, a concurrency slot: released by ``on_done``) is released exactly
once, by whoever completes it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from edged import errors as e
from edged.engines import channel as ch
from edged.engines.worker_protocol import ERR, Cancel, ErrorReply, Wire

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Call(Generic[T_co]):
    """One request in flight, whose reply makes a ``T``: either ``on_done`` sets ``result``
    (it runs on whichever thread reads the reply, and also when the call fails: inference.py
    releases what the request held there), or the waiter decodes ``reply`` with ``decode``.
    ``lock`` is a binary semaphore: released to wake the waiter (its reply came, or it should
    take the reader role)."""

    __slots__ = ("abandoned", "data", "decode", "done", "error", "exempt", "key", "lock",
                 "on_done", "reply", "result", "rid", "sent_at", "signaled", "waiting")

    result: T_co  # (set by ``on_done``)

    def __init__(self, rid: int, key: str, decode: Callable[[Wire], T_co] | None,
                 on_done: Callable[[Call[T_co]], None] | None, exempt: bool) -> None:
        self.rid, self.key, self.decode, self.on_done, self.exempt = (
            rid, key, decode, on_done, exempt)
        self.lock = threading.Lock()
        self.lock.acquire()
        self.done = self.abandoned = self.signaled = self.waiting = False
        self.reply: Wire = ()
        self.data: memoryview | None = None
        self.error: e.EdgedError | None = None
        self.sent_at = time.monotonic()


class CallTable:
    def __init__(self, chan: ch.Channel, *, gone: Callable[[str], e.EdgedError],
                 on_end: Callable[[], None], exited: Callable[[], bool],
                 nudge: Callable[[], None] = lambda: None) -> None:
        """``gone(key)``: the error for a call on a worker that is gone; ``on_end()``: called
        once, with the reader role held, when the channel reaches its end; ``nudge()``: tell
        the worker that a message arrived while a request is in flight (worker_main.py)."""
        self.chan = chan
        self._nudge = nudge
        self.open = True
        self.sent = 0
        self._gone, self._on_end, self._exited = gone, on_end, exited
        self._pending: dict[int, Call[object]] = {}
        self._rids = itertools.count(1)
        self._reader = threading.Lock()  # the reader role
        self._sig = threading.Lock()  # guards Call.signaled

    def expect(self, rid: int, key: str, decode: Callable[[Wire], T]) -> Call[T]:
        """A call for a message the worker sends unasked (its "ready")."""
        call = Call(rid, key, decode, None, exempt=True)
        self._pending[rid] = call
        return call

    def send(self, wire: Wire, buffers: Sequence[ch.Buffer] = (), *, key: str,
             decode: Callable[[Wire], T] | None = None,
             on_done: Callable[[Call[T]], None] | None = None,
             exempt: bool = False) -> Call[T]:
        """Send a request; the returned call completes when its reply (or the end) comes.
        One of ``decode`` and ``on_done`` makes the result (see Call)."""
        call = Call(next(self._rids), key, decode, on_done, exempt)
        if not self.open:
            raise e.NotDelivered.of(self._gone(key))
        busy = bool(self._pending)
        self._pending[call.rid] = call
        try:
            self.chan.send(call.rid, wire, buffers)
        except OSError:  # the peer is gone (its socket closed with it): nothing was sent
            self._pending.pop(call.rid, None)
            raise e.NotDelivered.of(self._gone(key)) from None
        if busy:
            self._nudge()
        self.sent += 1
        return call

    def wait(self, call: Call[T], timeout_s: float | None, what: str = "request",
             budget_s: float | None = None) -> T:
        """The decoded reply; raises the worker's error (or the decoder's, as Internal),
        Unavailable if it died, DeadlineExceeded when ``timeout_s`` passes first.
        ``budget_s`` is the caller's whole deadline (``timeout_s`` may be what is left of it),
        named in that error so that the client recognises the deadline it set."""
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
                f"{what} on model '{call.key}' took longer than "
                f"{timeout_s if budget_s is None else budget_s:.3g} s")
        if call.error is not None:
            raise call.error
        if call.on_done is not None or call.decode is None:
            return call.result
        try:
            return call.decode(call.reply)
        except Exception as exc:  # noqa: BLE001 - the caller must hear of it
            raise e.Internal(f"decoding the reply failed: {exc}") from None

    def cancel(self, rid: int) -> None:
        if self.open:
            try:
                self.chan.send(0, Cancel(rid).wire())
            except OSError:
                return
            self._nudge()  # the run to cancel may hold the worker's reader role

    def oldest(self) -> Call[object] | None:
        calls = [c for c in list(self._pending.values()) if not c.exempt]
        return min(calls, key=lambda c: c.sent_at) if calls else None

    def __len__(self) -> int:
        return len(self._pending)

    def reap(self, block: bool = False) -> None:
        """Read what has arrived while no caller is reading (replies of callers that gave up,
        the end of a dead worker)."""
        if not self.open or not self._reader.acquire(blocking=block):
            return
        try:
            while self.open:
                frame = self.chan.recv(timeout=0)
                if frame is None:
                    break
                self._dispatch(*frame)
            if self.open and self._exited():
                self._drain_to_end()
        except (EOFError, OSError):
            self._end()
        finally:
            self._reader.release()
            self._pass_reader_role()

    def fail_all(self, error_for: Callable[[Call[object]], e.EdgedError]) -> None:
        for rid in list(self._pending):
            call = self._pending.pop(rid, None)
            if call is not None:
                call.error = error_for(call)
                self._complete(call)

    # -- the reader role -------------------------------------------------------------------
    def _read_until(self, call: Call[T], deadline: float | None) -> None:
        if not self.open:  # it ended between our send and now
            if self._pending.pop(call.rid, None) is not None:
                call.error = self._gone(call.key)
                self._complete(call)
            return
        try:
            while not call.done:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                frame = self.chan.recv(timeout=left)
                if frame is None:
                    return
                self._dispatch(*frame)
        except (EOFError, OSError):
            self._end()

    def _drain_to_end(self) -> None:
        try:
            while True:
                frame = self.chan.recv(timeout=1.0)
                if frame is None:  # exited, yet the socket is open: nothing more will come
                    break
                self._dispatch(*frame)
        except (EOFError, OSError):
            pass
        self._end()

    def _end(self) -> None:
        if self.open:
            self.open = False
            self._on_end()

    def _dispatch(self, rid: int, wire: Wire, data: memoryview) -> None:
        call = self._pending.pop(rid, None)
        if call is None:
            return
        if wire[0] == ERR:
            call.error = ErrorReply.of(wire).error()
        else:
            call.reply, call.data = wire, data
        self._complete(call)

    def _complete(self, call: Call[T]) -> None:
        if call.on_done is not None:
            try:
                call.on_done(call)
            except Exception as exc:  # noqa: BLE001 - the caller must hear of it
                call.error = e.Internal(f"decoding the reply failed: {exc}")
        call.done = True
        self._signal(call)

    def _signal(self, call: Call[T]) -> None:
        with self._sig:
            if not call.signaled:
                call.signaled = True
                call.lock.release()

    def _pass_reader_role(self) -> None:
        """Wake one waiting caller when nobody is reading, so that replies keep flowing."""
        if not self._pending or self._reader.locked():
            return
        for call in list(self._pending.values()):
            if call.waiting and not call.done:
                self._signal(call)
                return
