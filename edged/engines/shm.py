"""POSIX shared memory for the worker hop: client regions (worker side) and lanes (daemon side).

*Client regions* are the objects a client registered with Triton's system shared-memory
extension. The worker maps ``/dev/shm/<name>`` itself, reads inputs from it and writes outputs
into it, so those bytes never pass through the daemon. Mappings are cached per name and
re-made when the object was replaced (inode or size changed); every window is bounds-checked.
A mapping is the last thing that keeps an unlinked object's memory alive, so the cache lets go
of it on its own, with no message from the daemon: a sweeper thread (running only while
something is mapped) drops mappings whose file is gone or replaced within ``sweep_s``, and
mappings unused for ``idle_s`` (a region unregistered but not unlinked).

*Lanes* carry large tensors that arrived inline (gRPC bytes) across the hop instead of the
socket: the daemon copies an input into a lane once, the worker reads it in place, large
outputs come back the same way. One lane per in-flight request, reused, grown by powers of two.

We use plain files under /dev/shm rather than ``multiprocessing.shared_memory``: the latter
starts a resource-tracker process and, on Python < 3.13, unlinks objects it merely attached to.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edged import errors as e

SHM_DIR = Path("/dev/shm")
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,250}$")
MIN_LANE_BYTES = 1 << 20


def _path(shm_dir: Path, name: str, tensor: str) -> Path:
    bare = name.lstrip("/")
    if not _NAME_RE.match(bare) or bare in (".", ".."):
        raise e.InvalidArgument(f"tensor '{tensor}': {name!r} is not a plain POSIX shared "
                                "memory name", field=tensor, reason="BAD_TENSOR")
    return shm_dir / bare


def create(path: Path, size: int) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def open_map(path: Path) -> tuple[mmap.mmap, os.stat_result]:
    """Map an existing object read-write (read-only if that is all we may do). Never through a
    symlink: a client could otherwise point a region name at any file the worker may read."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        prot = mmap.PROT_READ | mmap.PROT_WRITE
    except PermissionError:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        prot = mmap.PROT_READ
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            raise OSError(f"{path} is not a non-empty shared memory object")
        return mmap.mmap(fd, st.st_size, prot=prot), st
    finally:
        os.close(fd)


def unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


@dataclass(eq=False)
class _Mapping:
    mm: mmap.mmap
    ino: int
    size: int
    used: float


class RegionCache:
    """Worker side: client regions mapped once, re-mapped if the object was replaced, and let
    go of once the object is gone, replaced or idle (see the module docstring)."""

    def __init__(self, shm_dir: Path = SHM_DIR, max_regions: int = 64, *, idle_s: float = 60.0,
                 sweep_s: float | None = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``sweep_s``: how often the sweeper looks (None: only when ``sweep()`` is called)."""
        self._dir = shm_dir
        self._max = max_regions
        self._idle_s, self._sweep_s, self._clock = idle_s, sweep_s, clock
        self._maps: OrderedDict[str, _Mapping] = OrderedDict()
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None
        self._paths: dict[str, Path] = {}  # names already checked (the check is pure)

    def window(self, name: str, offset: int, nbytes: int, tensor: str,
               writable: bool = False) -> memoryview:
        """The ``nbytes`` at ``offset`` of region ``name``; InvalidArgument if outside it."""
        path = self._paths.get(name)
        if path is None:
            path = _path(self._dir, name, tensor)
            if len(self._paths) > 4 * self._max:
                self._paths.clear()
            self._paths[name] = path
        try:
            st = os.lstat(path)
        except OSError:
            raise e.InvalidArgument(f"tensor '{tensor}': shared memory {name!r} does not exist",
                                    field=tensor, reason="BAD_TENSOR") from None
        if not stat.S_ISREG(st.st_mode):
            raise e.InvalidArgument(f"tensor '{tensor}': {name!r} is not a shared memory object",
                                    field=tensor, reason="BAD_TENSOR")
        now = self._clock()
        with self._lock:
            cached = self._maps.get(name)
            if cached is None or (cached.ino, cached.size) != (st.st_ino, st.st_size):
                if cached is not None:
                    _close(cached.mm)
                cached = _Mapping(self._map(path, name, tensor), st.st_ino, st.st_size, now)
                self._maps[name] = cached
                while len(self._maps) > self._max:
                    _close(self._maps.popitem(last=False)[1].mm)
                self._start_sweeper()
            cached.used = now
            self._maps.move_to_end(name)
            size = len(cached.mm)
            if offset < 0 or nbytes < 0 or offset + nbytes > size:
                raise e.InvalidArgument(
                    f"tensor '{tensor}': offset {offset} + {nbytes} bytes is outside shared "
                    f"memory {name!r} ({size} bytes)", field=tensor, reason="BAD_TENSOR")
            # the view is taken under the lock: once it exists, no sweep can unmap under it
            view = memoryview(cached.mm)[offset:offset + nbytes]
        if writable and view.readonly:
            raise e.InvalidArgument(f"tensor '{tensor}': shared memory {name!r} is read-only "
                                    "for the engine worker", field=tensor, reason="BAD_TENSOR")
        return view

    def mapped(self) -> list[str]:
        with self._lock:
            return list(self._maps)

    def sweep(self) -> list[str]:
        """Drop the mappings whose object is gone or replaced, or that were idle too long."""
        now = self._clock()
        with self._lock:
            entries = list(self._maps.items())
        stale = []
        for name, m in entries:
            try:
                st = os.lstat(self._dir / name)
                gone = (st.st_ino, st.st_size) != (m.ino, m.size)
            except OSError:
                gone = True
            if gone or now - m.used > self._idle_s:
                stale.append((name, m))
        with self._lock:
            for name, m in stale:
                if self._maps.get(name) is m:
                    del self._maps[name]
                    _close(m.mm)
        return [name for name, _ in stale]

    def close(self) -> None:
        with self._lock:
            maps, self._maps = self._maps, OrderedDict()
        for m in maps.values():
            _close(m.mm)

    def _start_sweeper(self) -> None:
        """(lock held) A thread that sweeps while anything is mapped, then ends."""
        if self._sweep_s is None or self._sweeper is not None:
            return
        self._sweeper = threading.Thread(target=self._sweep_loop, name="edged-shm-sweep",
                                         daemon=True)
        self._sweeper.start()

    def _sweep_loop(self) -> None:
        assert self._sweep_s is not None
        while True:
            time.sleep(self._sweep_s)
            self.sweep()
            with self._lock:
                if not self._maps:
                    self._sweeper = None
                    return

    def _map(self, path: Path, name: str, tensor: str) -> mmap.mmap:
        try:
            return open_map(path)[0]
        except OSError as exc:
            raise e.InvalidArgument(f"tensor '{tensor}': cannot map shared memory {name!r}: "
                                    f"{exc}", field=tensor, reason="BAD_TENSOR") from None


def _close(mm: mmap.mmap) -> None:
    """Unmap now; if a view of it is still alive (a running inference), the mapping goes when
    the last view does."""
    try:
        mm.close()
    except BufferError:
        pass


@dataclass(eq=False)
class Lane:
    id: int
    path: Path
    size: int
    mm: mmap.mmap
    announced: bool = False  # the worker has been told its name (and has mapped it)
    unlinked: bool = False


class LanePool:
    """Daemon side, one per worker: lanes to lend to in-flight requests with large tensors.

    A lane's file is unlinked as soon as the worker has mapped it (after the first reply that
    used it), so a crash of either process leaves nothing behind in /dev/shm for long."""

    def __init__(self, prefix: str, shm_dir: Path = SHM_DIR) -> None:
        self._prefix = prefix
        self._dir = shm_dir
        self._free: list[Lane] = []
        self._all: dict[int, Lane] = {}
        self._dropped: list[int] = []
        self._next = 0
        self._lock = threading.Lock()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(lane.size for lane in self._all.values())

    def acquire(self, nbytes: int) -> Lane:
        with self._lock:
            for i, lane in enumerate(self._free):
                if lane.size >= nbytes:
                    return self._free.pop(i)
            if self._free:  # grow the largest free lane instead of adding one more
                old = max(self._free, key=lambda lane: lane.size)
                self._free.remove(old)
                self._retire(old)
            self._next += 1
            lane_id = self._next
        size = max(MIN_LANE_BYTES, 1 << (max(nbytes, 1) - 1).bit_length())
        path = self._dir / f"{self._prefix}-{lane_id}"
        lane = Lane(lane_id, path, size, create(path, size))
        with self._lock:
            self._all[lane_id] = lane
        return lane

    def release(self, lane: Lane) -> None:
        if lane.announced and not lane.unlinked:
            unlink(lane.path)
            lane.unlinked = True
        with self._lock:
            if lane.id in self._all:
                self._free.append(lane)

    def take_dropped(self) -> tuple[int, ...]:
        """Lane ids retired since the last call: the worker unmaps them."""
        if not self._dropped:  # (no lock: a list's truth value is read atomically)
            return ()
        with self._lock:
            out, self._dropped = tuple(self._dropped), []
            return out

    def _retire(self, lane: Lane) -> None:
        self._all.pop(lane.id, None)
        self._dropped.append(lane.id)
        unlink(lane.path)
        try:
            lane.mm.close()
        except BufferError:  # a view is still alive somewhere: the GC closes it later
            pass

    def close(self) -> None:
        with self._lock:
            for lane in list(self._all.values()):
                self._retire(lane)
            self._free.clear()
