"""systemd's notify protocol (sd_notify) and a watchdog heartbeat that only beats while healthy.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the ``AF_UNIX``/``SOCK_DGRAM``
socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace); systemd
reads the sender's pid from the socket credentials. That is small enough to write by hand, and
doing so avoids the ``systemd`` Python bindings, which wrap libsystemd's C library (a compiler
and ``libsystemd-dev`` to build on the device, nothing usable on a plain pip install).

Everything is a no-op without ``$NOTIFY_SOCKET`` (a shell, a test, a container), so the daemon
calls these unconditionally. A failed send is logged and swallowed: telling systemd about our
state must never be what takes the daemon down.

Why the heartbeat checks before it beats: a watchdog ping from a thread that merely exists
proves nothing (a deadlocked daemon keeps its timer threads). ``Heartbeat`` pings only while
the daemon's liveness check passes — in edged, a timestamp its main loop refreshes (see
``Liveness``) — so a daemon whose main loop hangs goes quiet, and systemd restarts it after
``WatchdogSec=``.

Start-up can outlast ``TimeoutStartSec=`` when the resident tier is large (TensorRT engines on
a Jetson take tens of seconds each): ``extending_start_timeout`` keeps asking for more time
(``EXTEND_TIMEOUT_USEC``) while that work runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping

log = logging.getLogger("edged.sdnotify")

# The variables systemd passes for notify and watchdog. A process the daemon spawns (an engine
# worker) should not inherit them: it is not the service's main process and must not speak for
# it (``NotifyAccess=main`` makes systemd ignore it anyway).
NOTIFY_ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

# systemd reads at most a few KiB per datagram; keep STATUS= readable in `systemctl status`.
_MAX_STATUS_CHARS = 512


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the notify/watchdog variables, for processes the daemon spawns."""
    return {k: v for k, v in env.items() if k not in NOTIFY_ENV_KEYS}


def _one_line(text: str) -> str:
    """A value must not contain a newline: it would start a new (forged) field."""
    flat = " ".join(text.split("\n"))
    return flat if len(flat) <= _MAX_STATUS_CHARS else flat[: _MAX_STATUS_CHARS - 1] + "…"


def _address(raw: str) -> str | None:
    if raw.startswith("@"):
        return "\0" + raw[1:]  # Linux abstract namespace
    if raw.startswith("/"):
        return raw
    return None  # e.g. vsock: (systemd >= 253, VMs): not used on a device


class Notifier:
    """Sends state changes to systemd; every method is a no-op when not run under systemd."""

    def __init__(self, env: Mapping[str, str] | None = None,
                 *, monotonic_ns: Callable[[], int] = time.monotonic_ns) -> None:
        env = os.environ if env is None else env
        self._monotonic_ns = monotonic_ns
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _address(raw) if raw else None
        if raw and self._address is None:
            log.warning("NOTIFY_SOCKET=%r is not a Unix socket address; not notifying", raw)
        self._watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *fields: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` fields; False when disabled or the send failed."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:  # systemd gone or socket full: log, never raise
            log.warning("sd_notify %s failed: %s", fields[0].split("=", 1)[0], exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) finished: systemd marks the unit active, starts its watchdog."""
        fields = ["READY=1"]
        if status:
            fields.append(f"STATUS={_one_line(status)}")
        return self.notify(*fields)

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status edged``."""
        return self.notify(f"STATUS={_one_line(text)}")

    def reloading(self) -> bool:
        """SIGHUP received; ``ready()`` ends the reload.

        systemd >= 253 wants ``MONOTONIC_USEC`` (CLOCK_MONOTONIC) with ``RELOADING=1`` to tell
        this reload from an older one; earlier versions ignore the unknown field.
        """
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={self._monotonic_ns() // 1000}")

    def stopping(self) -> bool:
        """SIGTERM received: draining. The unit shows "deactivating" instead of a hung service."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before the start/stop timeout fires (systemd >= 236).

        For slow but progressing work: loading a large resident tier at start-up, or
        waiting for in-flight requests and workers while stopping.
        """
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1e6))}")

    def watchdog_interval_s(self) -> float | None:
        """``WatchdogSec=`` in seconds, or None when no watchdog is set for this process."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 1e6

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@contextlib.contextmanager
def extending_start_timeout(notifier: Notifier, status: str, *, window_s: float = 30.0,
                            every_s: float = 5.0) -> Iterator[None]:
    """While the block runs, send ``EXTEND_TIMEOUT_USEC`` (``window_s``) every ``every_s``.

    EXTEND_TIMEOUT_USEC is a rolling window, not a sum: systemd fails the start if no new one
    comes within it. So the block may run as long as it needs (the daemon bounds each model
    load by ``engines.start_timeout_s``), and a daemon that dies in it is noticed within
    ``window_s``. The first one is sent before the block starts, after ``STATUS=status``."""
    if not notifier.enabled:
        yield
        return
    notifier.status(status)
    done = threading.Event()

    def keep_extending() -> None:
        while True:
            notifier.extend_timeout(window_s)
            if done.wait(every_s):
                return

    thread = threading.Thread(target=keep_extending, name="sd-extend", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is for another process (we were forked or exec'd from it)
    return usec if usec > 0 else None


class Liveness:
    """A liveness check made of a timestamp: the serving path calls ``beat()``; the check passes
    while the last beat is younger than ``max_age_s``.

    The daemon beats from the place whose hang it wants detected (its main loop, or after a
    health call it makes to itself over its own socket), and gives this to ``Heartbeat``.
    """

    def __init__(self, max_age_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_age_s = max_age_s
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        self._last = self._clock()

    def __call__(self) -> bool:
        return self._clock() - self._last <= self._max_age_s


class Heartbeat:
    """A thread that sends ``WATCHDOG=1`` every ``interval_s`` while ``check()`` returns True.

    By default the interval is half of ``WatchdogSec=`` (what sd_watchdog_enabled(3) advises),
    so one missed beat is tolerated. While the check fails (or raises) no ping is sent, and
    pings resume if it recovers in time. Without a watchdog configured, ``start()`` does nothing.
    """

    def __init__(self, notifier: Notifier, check: Callable[[], bool],
                 interval_s: float | None = None) -> None:
        period = notifier.watchdog_interval_s()
        self.interval_s = interval_s if interval_s is not None else (
            period / 2 if period is not None else None)
        self._notifier = notifier
        self._check = check
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Heartbeat:
        if self.interval_s is None or not self._notifier.enabled or self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def beat_once(self) -> bool:
        """Ping if healthy; returns whether a ping was sent. One step of the thread's loop."""
        try:
            healthy = bool(self._check())
        except Exception:  # a broken check is an unhealthy daemon, not a dead heartbeat thread
            log.exception("liveness check raised")
            healthy = False
        if not healthy:
            log.warning("liveness check failed: not pinging the systemd watchdog")
            return False
        return self._notifier.watchdog()

    def _run(self) -> None:
        assert self.interval_s is not None
        while True:
            self.beat_once()
            if self._stop.wait(self.interval_s):
                return
