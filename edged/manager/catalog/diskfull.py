"""A full disk is the client's problem to solve, not a bug: ``RESOURCE_EXHAUSTED`` / ``DISK_FULL``.

Checking free space before a write (``Store.check_disk``) cannot see everything: an upload that
announces no size, another process filling the disk meanwhile, a manifest commit on a disk
already at 100%. Then a write fails with ``ENOSPC`` (or ``EDQUOT`` past a quota), which would
reach the client as ``INTERNAL``. Every store and manifest write runs under ``guard``, which
turns those two errnos into the domain error with the free bytes of that file system in the
message; the caller's own cleanup (abort the upload, drop the temporary generation) still runs,
since the error propagates through it.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Iterator
from pathlib import Path

from edged import errors as e

ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in ERRNOS


def free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def error(path: Path, what: str) -> e.ResourceExhausted:
    """The error for a write of ``what`` under ``path`` that found the disk full (the free
    bytes are the file system's own: the write that failed was real)."""
    free = free_bytes(path)
    room = f"{free} bytes free" if free is not None else "free space unknown"
    return e.ResourceExhausted(
        f"disk full while writing {what}: {room} on the file system of {path}; nothing was "
        "changed (free some space and retry)", reason="DISK_FULL",
        metadata={"path": str(path), **({"free_bytes": str(free)} if free is not None else {})})


@contextlib.contextmanager
def guard(path: Path, what: str) -> Iterator[None]:
    """Run a write; ``ENOSPC``/``EDQUOT`` leave it as ``ResourceExhausted(DISK_FULL)``."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise error(path, what) from None
