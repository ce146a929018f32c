"""Client-registered POSIX shared-memory regions (Triton's system shared-memory extension).

The daemon only checks and remembers regions; the engine worker maps them itself, so tensor
bytes never pass through the daemon. What is checked, and why:

- the key is a plain name under ``/dev/shm`` naming a regular file, never a symlink (else a
  client could have the worker map any file it may read);
- names the daemon uses itself are refused: its lanes (``edged-<pid>-…``) and POSIX semaphores
  (``sem.…``);
- the file is not world-writable, and is owned by the daemon's user *or* shared with the
  socket's group (group = that group, mode g+rw). gRPC tells a Unix-socket servicer nothing
  about its peer (``context.peer()`` is ``unix:``, no SO_PEERCRED, no auth context), so the
  owner cannot be compared with the caller; the rule keeps the daemon from touching anything a
  member of the socket's group could not already read and write itself — except objects owned
  by the daemon's own user, which same-user clients (and tests) need. Residual risk: when the
  daemon's user also runs other programs, a socket client can name their shm objects;
- every reference stays inside the registered window and matches the tensor's size.

Isolation between clients: the servicer lets only Unix-socket peers use shared memory at all
(a TCP client could otherwise read a local client's frames). Peers on the socket cannot be told
apart (see above), so region names are one namespace shared by the socket's clients, as in
Triton: unregistering with an empty name drops every region, and ``edged.client`` re-registers
its arena when that happened.

Cleanup: a region is dropped when its file is unlinked or replaced, and — for clients that hold
a shared ``flock`` on the file while they live, as ``edged.client`` does — when no process holds
that lock any more (the kernel releases it when the client dies, even by SIGKILL); such an
abandoned file is also unlinked when the daemon may (same user), so its memory is freed. A
sweeper thread runs this every ``sweep_s`` while anything is registered.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from edged import errors as e
from edged.datatypes import numpy_dtype

log = logging.getLogger(__name__)

_KEY_RE = re.compile(r"^/?[A-Za-z0-9._-]{1,200}$")
# (the daemon's lanes are edged-<daemon pid>-<worker>-<n>; any edged daemon's, not only ours)
RESERVED_RE = re.compile(r"^(edged-\d+-|sem\.)")


@dataclass(frozen=True)
class Region:
    name: str
    key: str
    offset: int
    byte_size: int
    ino: int = 0  # the file registered: a replaced file is not the region any more
    leased: bool = False  # its creator held a shared flock at registration
    peer: str = ""

    @property
    def shm_name(self) -> str:
        return self.key.lstrip("/")


@dataclass(frozen=True)
class ShmTensor:
    """A resolved reference: the POSIX shm name and the absolute window of one tensor."""

    shm_name: str
    offset: int
    byte_size: int
    datatype: str
    shape: tuple[int, ...]


def lease_held(path: Path) -> bool | None:
    """Whether some process holds a flock on ``path`` (None: the file is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class ShmRegistry:
    def __init__(self, *, shm_dir: Path = Path("/dev/shm"), allowed_gid: int | None = None,
                 uid: int | None = None, sweep_s: float | None = 2.0) -> None:
        """``allowed_gid``: the socket's group (None: the daemon's group, which is what the
        socket gets when ``listen.unix_group`` is unset). ``sweep_s`` None: no sweeper thread
        (``sweep()`` still runs on every status call)."""
        self._dir = shm_dir
        self._gid = os.getegid() if allowed_gid is None else allowed_gid
        self._uid = os.geteuid() if uid is None else uid
        self._sweep_s = sweep_s
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    def _path(self, key: str) -> Path:
        if not _KEY_RE.match(key) or key.strip("/") in (".", ".."):
            raise e.InvalidArgument(f"shared memory key {key!r} is not a plain POSIX shm name",
                                    field="key")
        if RESERVED_RE.match(key.lstrip("/")):
            raise e.PermissionDenied(f"shared memory key {key!r} is reserved for the daemon's "
                                     "own objects (edged-<pid>-*, sem.*)", field="key")
        return self._dir / key.lstrip("/")

    def _check_file(self, path: Path, key: str) -> os.stat_result:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise e.InvalidArgument(f"shared memory region {key!r} does not exist",
                                    field="key") from None
        if not stat.S_ISREG(st.st_mode):
            raise e.InvalidArgument(f"shared memory key {key!r} is not a shared memory object",
                                    field="key")
        mode = stat.S_IMODE(st.st_mode)
        if mode & stat.S_IWOTH:
            raise e.PermissionDenied(f"shared memory region {key!r} is writable by every local "
                                     f"user (mode {mode:04o}); use 0600 or 0660", field="key")
        group_ok = st.st_gid == self._gid and mode & stat.S_IRGRP and mode & stat.S_IWGRP
        if st.st_uid != self._uid and not group_ok:
            raise e.PermissionDenied(
                f"shared memory region {key!r} belongs to another user and is not shared with "
                f"the socket's group (gid {self._gid}); give it that group and mode 0660 to "
                "register it", field="key")
        return st

    def register(self, name: str, key: str, offset: int, byte_size: int,
                 peer: str = "") -> Region:
        if not name:
            raise e.InvalidArgument("a region needs a name", field="name")
        path = self._path(key)
        st = self._check_file(path, key)
        if byte_size <= 0 or offset < 0 or offset + byte_size > st.st_size:
            raise e.InvalidArgument(
                f"region {name!r}: offset {offset} + byte_size {byte_size} is outside the "
                f"{st.st_size}-byte shared memory object {key!r}", field="byte_size")
        region = Region(name, key, offset, byte_size, st.st_ino, bool(lease_held(path)), peer)
        with self._lock:
            if name in self._regions:
                raise e.AlreadyExists(f"shared memory region {name!r} is already registered",
                                      field="name")
            self._regions[name] = region
            self._start_sweeper()
        return region

    def unregister(self, name: str = "") -> None:
        """Drop ``name`` (every region if empty). An unknown name is not an error: Triton
        answers success too, and a client's cleanup must not fail because a sweep or another
        client got there first."""
        with self._lock:
            if not name:
                self._regions.clear()
            else:
                self._regions.pop(name, None)

    def status(self, name: str = "") -> list[Region]:
        self.sweep()
        with self._lock:
            if name:
                if name not in self._regions:
                    raise e.NotFound(f"shared memory region {name!r} is not registered",
                                     field="name")
                return [self._regions[name]]
            return list(self._regions.values())

    def sweep(self) -> list[str]:
        """Drop regions whose file was unlinked or replaced, or whose client is gone."""
        with self._lock:
            regions = list(self._regions.values())
        dropped = [r for r in regions if self._stale(r)]
        with self._lock:
            for r in dropped:
                if self._regions.get(r.name) is r:
                    del self._regions[r.name]
        for r in dropped:
            log.info("shared memory region %r dropped: its file %r is gone, replaced, or its "
                     "client ended", r.name, r.key)
        return [r.name for r in dropped]

    def _stale(self, r: Region) -> bool:
        path = self._dir / r.shm_name
        try:
            if os.lstat(path).st_ino != r.ino:
                return True
        except OSError:
            return True
        if not r.leased or lease_held(path) is True:
            return False
        try:  # its creator is dead: free the memory too, when the file is ours to unlink
            path.unlink()
        except OSError:
            pass
        return True

    def close(self) -> None:
        self._stop.set()

    def _start_sweeper(self) -> None:
        """(lock held) A thread that sweeps while anything is registered, then ends."""
        if self._sweep_s is None or self._sweeper is not None or self._stop.is_set():
            return
        self._sweeper = threading.Thread(target=self._sweep_loop, name="edged-shm-sweep",
                                         daemon=True)
        self._sweeper.start()

    def _sweep_loop(self) -> None:
        assert self._sweep_s is not None
        while not self._stop.wait(self._sweep_s):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a sweep must never end the sweeper
                log.exception("shared memory sweep failed")
            with self._lock:
                if not self._regions:
                    self._sweeper = None
                    return

    def resolve_output(self, region_name: str, offset: int, byte_size: int,
                       tensor: str) -> ShmTensor:
        """An output window: its shape is known only after inference, so only bounds here; the
        worker refuses an output larger than the window."""
        region = self._region(region_name, tensor)
        if offset + byte_size > region.byte_size:
            raise e.InvalidArgument(
                f"output '{tensor}': offset {offset} + {byte_size} bytes is outside region "
                f"{region_name!r} ({region.byte_size} bytes)", field=tensor)
        return ShmTensor(region.shm_name, region.offset + offset, byte_size, "", ())

    def _region(self, region_name: str, tensor: str) -> Region:
        with self._lock:
            region = self._regions.get(region_name)
        # metadata shm_region: lets edged.client see that *its* registration is gone
        facts = {"tensor": tensor, "shm_region": region_name}
        if region is None:
            raise e.InvalidArgument(f"tensor '{tensor}': shared memory region {region_name!r} is "
                                    "not registered", field=tensor, metadata=facts)
        try:
            same = os.lstat(self._dir / region.shm_name).st_ino == region.ino
        except OSError:
            same = False
        if not same:
            with self._lock:
                if self._regions.get(region_name) is region:
                    del self._regions[region_name]
            raise e.InvalidArgument(f"tensor '{tensor}': shared memory region {region_name!r} "
                                    "was unlinked (or replaced) since it was registered",
                                    field=tensor, metadata=facts)
        return region

    def resolve(self, region_name: str, offset: int, byte_size: int, datatype: str,
                shape: tuple[int, ...], tensor: str) -> ShmTensor:
        """Check one tensor reference against its region; returns the absolute window."""
        region = self._region(region_name, tensor)
        if offset + byte_size > region.byte_size:
            raise e.InvalidArgument(
                f"tensor '{tensor}': offset {offset} + {byte_size} bytes is outside region "
                f"{region_name!r} ({region.byte_size} bytes)", field=tensor)
        try:
            needed = math.prod(shape) * numpy_dtype(datatype).itemsize
        except ValueError as exc:
            raise e.InvalidArgument(f"tensor '{tensor}': {exc}", field=tensor) from None
        if needed != byte_size:
            raise e.InvalidArgument(
                f"tensor '{tensor}': shared_memory_byte_size {byte_size} does not match shape "
                f"{list(shape)} of {datatype} ({needed} bytes)", field=tensor)
        return ShmTensor(region.shm_name, region.offset + offset, byte_size, datatype, shape)
