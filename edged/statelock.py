"""One daemon per state directory: an exclusive ``flock`` on ``STATE/edged.lock``.

Why a lock and not only the socket probe: two daemons with the same state dir but different
sockets would each repair (``fsck --repair``) and write the other's store — the second one's
start-up repair alone deletes the first one's uploads in progress. The lock is taken before
anything touches the state dir, and the kernel drops it when the process dies (even by
SIGKILL), so a crash never leaves a stale lock behind. The file holds the owner's pid, for the
refusal message only: the lock, not the file's content, is what counts.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edged import errors as e

LOCK_NAME = "edged.lock"


class StateDirBusy(e.AlreadyExists):
    """Another process holds the state directory."""

    default_reason = "ALREADY_EXISTS"


class StateLock:
    """The held lock; ``release()`` (or the process ending) lets the next daemon in."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def lock_state_dir(state_dir: Path) -> StateLock:
    """Take the state dir's lock, or raise ``StateDirBusy`` naming the pid that holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_pid(fd)
        os.close(fd)
        who = f"pid {owner}" if owner else "another process"
        raise StateDirBusy(f"state dir {state_dir} is in use by another edged ({who}); stop "
                           "it first, or give this one its own --state-dir") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return StateLock(fd, path)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
