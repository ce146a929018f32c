"""Client-registered POSIX shared-memory regions (Triton's system shared-memory extension).

The daemon only checks and remembers regions; the engine worker maps them itself, so tensor
bytes never pass through the daemon. Checks: the shm file exists under ``/dev/shm`` (no path
tricks in its key), is owned by the daemon's user or shared with the socket's group, and every
reference stays inside the registered window and matches the tensor's size. A region whose file
was unlinked is dropped, so a client that vanished does not leave a registration behind.
"""

from __future__ import annotations

import math
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from edged import errors as e
from edged.datatypes import numpy_dtype

_KEY_RE = re.compile(r"^/?[A-Za-z0-9._-]{1,200}$")


@dataclass(frozen=True)
class Region:
    name: str
    key: str
    offset: int
    byte_size: int

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


class ShmRegistry:
    def __init__(self, *, shm_dir: Path = Path("/dev/shm"), allowed_gid: int | None = None,
                 uid: int | None = None) -> None:
        self._dir = shm_dir
        self._gid = allowed_gid
        self._uid = os.getuid() if uid is None else uid
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        if not _KEY_RE.match(key) or key.strip("/") in (".", ".."):
            raise e.InvalidArgument(f"shared memory key {key!r} is not a plain POSIX shm name",
                                    field="key")
        return self._dir / key.lstrip("/")

    def _check_owner(self, path: Path, key: str) -> os.stat_result:
        try:
            st = path.stat()
        except FileNotFoundError:
            raise e.InvalidArgument(f"shared memory region {key!r} does not exist",
                                    field="key") from None
        if not stat.S_ISREG(st.st_mode):
            raise e.InvalidArgument(f"shared memory key {key!r} is not a region", field="key")
        group_ok = (self._gid is not None and st.st_gid == self._gid
                    and st.st_mode & stat.S_IRGRP and st.st_mode & stat.S_IWGRP)
        if st.st_uid != self._uid and not group_ok:
            raise e.PermissionDenied(
                f"shared memory region {key!r} belongs to another user; share it with the "
                "daemon's group (mode g+rw) to register it")
        return st

    def register(self, name: str, key: str, offset: int, byte_size: int) -> Region:
        if not name:
            raise e.InvalidArgument("a region needs a name", field="name")
        path = self._path(key)
        st = self._check_owner(path, key)
        if byte_size <= 0 or offset < 0 or offset + byte_size > st.st_size:
            raise e.InvalidArgument(
                f"region {name!r}: offset {offset} + byte_size {byte_size} is outside the "
                f"{st.st_size}-byte shared memory object {key!r}", field="byte_size")
        region = Region(name, key, offset, byte_size)
        with self._lock:
            if name in self._regions:
                raise e.AlreadyExists(f"shared memory region {name!r} is already registered",
                                      field="name")
            self._regions[name] = region
        return region

    def unregister(self, name: str = "") -> None:
        with self._lock:
            if not name:
                self._regions.clear()
            elif self._regions.pop(name, None) is None:
                raise e.NotFound(f"shared memory region {name!r} is not registered",
                                 field="name")

    def status(self, name: str = "") -> list[Region]:
        self._drop_unlinked()
        with self._lock:
            if name:
                if name not in self._regions:
                    raise e.NotFound(f"shared memory region {name!r} is not registered",
                                     field="name")
                return [self._regions[name]]
            return list(self._regions.values())

    def _drop_unlinked(self) -> None:
        with self._lock:
            for name, r in list(self._regions.items()):
                if not (self._dir / r.shm_name).exists():
                    del self._regions[name]

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
        if region is None:
            raise e.InvalidArgument(f"tensor '{tensor}': shared memory region {region_name!r} is "
                                    "not registered", field=tensor)
        if not (self._dir / region.shm_name).exists():
            with self._lock:
                self._regions.pop(region_name, None)
            raise e.InvalidArgument(f"tensor '{tensor}': shared memory region {region_name!r} "
                                    "was unlinked", field=tensor)
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
