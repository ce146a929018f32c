"""Zero-copy inference for local clients: tensors travel through POSIX shared memory.

When the daemon is on a local Unix socket, ``EdgedClient`` keeps one shared-memory arena per
thread, registered once with Triton's system shared-memory extension, and for tensors above a
threshold writes inputs into it and asks for outputs in it: only the references cross the
socket, and the engine worker maps the arena itself. Output windows are sized from the previous
answer of the same model to the same input shapes (the first call of a shape gets its outputs
over gRPC), so no output size has to be guessed.

The daemon usually runs as its own user: the arena is created mode 0660 with the socket's group
(the group every client of the socket is in), which is what the daemon accepts from another
user. If the daemon still refuses it (PERMISSION_DENIED: e.g. this process is not in that group;
INVALID_ARGUMENT: e.g. a container with its own /dev/shm) or does not offer the extension, the
client says so once in its log and sends plain gRPC from then on. While the arena lives, its
creator holds a shared ``flock`` on it: the kernel drops the lock when the process dies, however
it dies, which tells the daemon (and later clients, which unlink such leftovers) that the arena
is abandoned.
"""

from __future__ import annotations

import fcntl
import logging
import math
import mmap
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edged import errors as e
from edged.datatypes import numpy_dtype, oip_datatype
from edged.oip import grpc_service_pb2 as oip

log = logging.getLogger(__name__)

ALIGN = 64
SHM_DIR = Path("/dev/shm")
PREFIX = "edged-client-"  # (never edged-<digits>-: those are the daemon's own lanes)
# The client's default threshold (inputs totalling at least this many bytes go through shared
# memory), from `python -m bench.grpc_path` (bench/RESULTS.md, "The gRPC path"): on the 2-core
# dev box, with an equal output, shared memory cost 1.09-1.12x plain gRPC at 16-32 KB (its
# fixed cost: registering a region, a second message), 0.93-1.00x at 64 KB, 0.66x at 128 KB,
# 0.63x at rec's 184 KB (which the old 256 KB threshold sent the slow way) and 0.05x at 8 MB.
# The crossover is at 64 KB; at it the two paths are equal, so above it shared memory wins.
DEFAULT_THRESHOLD = 64 << 10
STALE_AFTER_S = 60.0  # an unlocked arena older than this belongs to a client that died


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _share(fd: int, gid: int | None) -> None:
    """Mode 0660 with the socket's group, when this process may give the file that group;
    otherwise it stays 0600 (the daemon accepts that only from its own user)."""
    if gid is None:
        return
    try:
        if os.fstat(fd).st_gid != gid:
            os.fchown(fd, -1, gid)
        os.fchmod(fd, 0o660)
    except PermissionError:
        pass


def sweep_stale(shm_dir: Path = SHM_DIR, older_than_s: float = STALE_AFTER_S) -> list[str]:
    """Unlink this user's arenas that no live process holds (their client died)."""
    removed = []
    now = time.time()
    for path in shm_dir.glob(f"{PREFIX}*"):
        try:
            st = os.lstat(path)
            if st.st_uid != os.geteuid() or now - st.st_ctime < older_than_s:
                continue
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
            removed.append(path.name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


class Arena:
    """One registered shared-memory object, reused call after call by one thread."""

    def __init__(self, register: Callable[[str, str, int], None],
                 unregister: Callable[[str], None], size: int, *, gid: int | None = None,
                 shm_dir: Path = SHM_DIR) -> None:
        self.region = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.path = shm_dir / self.region
        self.size = size
        self._register, self._unregister = register, unregister
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH)  # held for the arena's life (module docstring)
            _share(self._fd, gid)
            os.ftruncate(self._fd, size)
            self.buf = mmap.mmap(self._fd, size)
        except BaseException:
            self._destroy(mapped=False)
            raise
        try:
            self.register()
        except BaseException:
            self._destroy()
            raise

    def register(self) -> None:
        self._register(self.region, "/" + self.region, self.size)

    def _destroy(self, mapped: bool = True) -> None:
        if mapped:
            try:
                self.buf.close()
            except BufferError:  # an array still views it: unmapped when that one goes
                pass
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)

    def close(self) -> None:
        try:
            self._unregister(self.region)
        except Exception:  # noqa: BLE001 - the daemon may be gone already
            pass
        self._destroy()


class ShmTransport:
    def __init__(self, register: Callable[[str, str, int], None],
                 unregister: Callable[[str], None], threshold: int, *,
                 socket_path: Path | None = None, shm_dir: Path = SHM_DIR) -> None:
        self._register, self._unregister = register, unregister
        self.threshold = threshold
        self._shm_dir = shm_dir
        self._gid = _socket_gid(socket_path)
        self._local = threading.local()
        self._arenas: list[Arena] = []
        self._lock = threading.Lock()
        self._out_sizes: dict[tuple[Any, ...], dict[str, int]] = {}
        self._pid = os.getpid()
        self._swept = False  # leftovers of dead clients are unlinked once, at the first arena
        self.disabled: str | None = None  # why this client sends plain gRPC from now on

    def wants(self, inputs: Mapping[str, np.ndarray]) -> bool:
        return self.disabled is None and sum(a.nbytes for a in inputs.values()) >= self.threshold

    def infer(self, call: Callable[[oip.ModelInferRequest], oip.ModelInferResponse], name: str,
              inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None, version: str,
              output_names: Callable[[], list[str]] | None = None
              ) -> dict[str, np.ndarray] | None:
        """One inference through the arena; None when shared memory cannot be used (then the
        caller sends plain gRPC, and so does every later call). ``output_names``: the model's
        outputs, asked for only if a first answer is too large to come back over gRPC."""
        try:
            req, arena, windows, key = self.request(name, inputs, outputs, version)
        except (e.PermissionDenied, e.Unimplemented, e.InvalidArgument, OSError) as exc:
            # (InvalidArgument at register: e.g. a container with its own /dev/shm)
            self.disabled = str(exc)
            log.warning("edged: shared memory is not usable (%s); sending tensors over gRPC",
                        exc)
            return None
        try:
            resp = self._send(call, req, arena)
        except e.ResourceExhausted as exc:
            # The first answer for these shapes (outputs not yet in windows) is larger than a
            # gRPC message may be: ask again with a window for every output, each as large as
            # that whole answer; the next calls use the exact sizes learned from this one.
            size = _too_large(exc)
            names = list(outputs) if outputs else output_names() if output_names else []
            if size is None or not names or all(n in windows for n in names):
                raise
            self._out_sizes[key] = {n: size[1] for n in names}
            req, arena, _, key = self.request(name, inputs, outputs, version)
            resp = self._send(call, req, arena)
        return self.outputs(resp, arena, key)

    @staticmethod
    def _send(call: Callable[[oip.ModelInferRequest], oip.ModelInferResponse],
              req: oip.ModelInferRequest, arena: Arena) -> oip.ModelInferResponse:
        try:
            return call(req)
        except e.InvalidArgument as exc:
            if exc.metadata.get("shm_region") != arena.region:
                raise
            # Our registration is gone (another client unregistered every region: names are
            # shared on the socket). Register again, once.
            arena.register()
            return call(req)

    def _arena(self, size: int) -> Arena:
        if os.getpid() != self._pid:  # forked: the parent's arenas are the parent's
            self._pid, self._local, self._arenas = os.getpid(), threading.local(), []
        arena: Arena | None = getattr(self._local, "arena", None)
        if arena is None or arena.size < size:
            if arena is not None:
                arena.close()
                with self._lock:
                    self._arenas.remove(arena)
            if not self._swept:
                self._swept = True
                sweep_stale(self._shm_dir)
            arena = Arena(self._register, self._unregister, max(size, 1 << 20), gid=self._gid,
                          shm_dir=self._shm_dir)
            with self._lock:
                self._arenas.append(arena)
            self._local.arena = arena
        return arena

    def request(self, name: str, inputs: Mapping[str, np.ndarray],
                outputs: Sequence[str] | None, version: str
                ) -> tuple[oip.ModelInferRequest, Arena, dict[str, tuple[int, int]], Any]:
        key = (name, version, tuple((k, a.shape, a.dtype.str) for k, a in inputs.items()))
        out_sizes = self._out_sizes.get(key, {})
        wanted = list(outputs) if outputs else list(out_sizes)
        total = sum(_align(a.nbytes) for a in inputs.values()) + sum(
            _align(out_sizes[o]) for o in wanted if o in out_sizes)
        arena = self._arena(total)
        req = oip.ModelInferRequest(model_name=name, model_version=version)
        offset = 0
        for tname, arr in inputs.items():
            a = np.require(arr, requirements="C")
            np.ndarray(a.shape, a.dtype, buffer=arena.buf, offset=offset)[...] = a
            t = req.inputs.add(name=tname, datatype=oip_datatype(a.dtype), shape=list(a.shape))
            _refer(t.parameters, arena.region, offset, a.nbytes)
            offset += _align(a.nbytes)
        windows: dict[str, tuple[int, int]] = {}
        for oname in wanted:
            o = req.outputs.add(name=oname)
            if oname in out_sizes:
                _refer(o.parameters, arena.region, offset, out_sizes[oname])
                windows[oname] = (offset, out_sizes[oname])
                offset += _align(out_sizes[oname])
        return req, arena, windows, key

    def outputs(self, resp: oip.ModelInferResponse, arena: Arena, key: Any
                ) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        sizes: dict[str, int] = {}
        raw = iter(resp.raw_output_contents)
        for t in resp.outputs:
            dt = numpy_dtype(t.datatype)
            shape = tuple(t.shape)
            nbytes = math.prod(shape) * dt.itemsize
            sizes[t.name] = nbytes
            if "shared_memory_region" in t.parameters:
                off = t.parameters["shared_memory_offset"].int64_param if (
                    "shared_memory_offset" in t.parameters) else 0
                out[t.name] = np.ndarray(shape, dt, buffer=arena.buf, offset=off).copy()
            else:
                out[t.name] = np.frombuffer(next(raw), dtype=dt).reshape(shape)
        self._out_sizes[key] = sizes
        return out

    def close(self) -> None:
        with self._lock:
            arenas, self._arenas = self._arenas, []
        if os.getpid() != self._pid:
            return
        for a in arenas:
            a.close()


def _socket_gid(path: Path | None) -> int | None:
    try:
        return os.stat(path).st_gid if path is not None else None
    except OSError:
        return None


def _refer(params: Any, region: str, offset: int, size: int) -> None:
    params["shared_memory_region"].string_param = region
    params["shared_memory_offset"].int64_param = offset
    params["shared_memory_byte_size"].int64_param = size


_TOO_LARGE = re.compile(r"(Sent|Received) message larger than max \((\d+) vs\. (\d+)\)")


def _too_large(err: e.EdgedError) -> tuple[str, int, int] | None:
    """gRPC's own "Sent|Received message larger than max (N vs. M)", parsed."""
    m = _TOO_LARGE.search(err.message) if isinstance(err, e.ResourceExhausted) else None
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def message_size_hint(err: e.EdgedError, request_bytes: int, shm_possible: bool
                      ) -> e.EdgedError | None:
    """gRPC's bare RESOURCE_EXHAUSTED for an oversized message, turned into one that says which
    message, which limit, and what to do about it (None if ``err`` is something else)."""
    parsed = _too_large(err)
    if parsed is None:
        return None
    way, n, limit = parsed
    fix = ("use shared memory (automatic for local sockets above the threshold)"
           if shm_possible else "send smaller tensors (shared memory needs a local socket)")
    if n == request_bytes:
        whose = "this client's max_message_bytes" if way == "Sent" else (
            "the daemon's max message size")
        text = f"request of {n} bytes exceeds {whose} {limit}; {fix}"
    else:
        whose = "this client's max_message_bytes" if way == "Received" else (
            "the daemon's max message size")
        text = (f"response of {n} bytes exceeds {whose} {limit}; ask for the outputs in "
                "shared memory, or raise the limit")
    return e.ResourceExhausted(text, field=err.field, reason=err.reason,
                               metadata={**err.metadata, "message_bytes": str(n),
                                         "max_message_bytes": str(limit)})
