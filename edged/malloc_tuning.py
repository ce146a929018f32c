"""glibc malloc settings that keep the daemon small under large plain requests.

Measured (bench/daemon_rss.py, 2-core box, 1000 requests carrying PP-OCR det's tensors through
gRPC): with glibc's defaults the daemon grew by 41 MB from one client and by 103 MB from four.
Two defaults cause it:

- one malloc arena per thread (up to 8 x cores): gRPC's and the handlers' threads each keep
  their own heap with freed megabytes in it that no other thread reuses;
- the dynamic mmap threshold: a freed mmap'd chunk (a 4.9 MB request) raises the threshold to
  its size, so every later large buffer comes from an arena, whose top is rarely free enough
  to be trimmed: the memory stays with the process.

So the daemon caps the arenas (``M_ARENA_MAX``) and fixes the mmap threshold (``M_MMAP_THRESHOLD``,
which also turns the dynamic adjustment off): a buffer of 1 MiB or more is its own mapping and
goes back to the kernel when freed. It does so for itself, at start, before any thread runs
(``apply``), so that a daemon started by hand or by a unit without these settings is bounded
too; the unit sets the same through glibc's environment (systemd/edged.service), which also
covers the engine workers it starts. A variable already in the environment wins: glibc applied
it before Python started, and an operator who set it meant it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Mapping

log = logging.getLogger("edged")

M_MMAP_THRESHOLD = -3  # glibc malloc.h
M_ARENA_MAX = -8
ARENA_MAX = 2
MMAP_THRESHOLD = 1 << 20
# (mallopt parameter, value, the glibc environment variable that sets the same)
SETTINGS = ((M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX"),
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"))


def apply(environ: Mapping[str, str], libc: ctypes.CDLL | None = None) -> dict[str, int]:
    """Set what the environment does not; return what was set (empty where not glibc)."""
    if libc is None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name or "libc.so.6")
        except OSError:
            return {}
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return {}  # musl and friends: no such knobs (and no such growth)
    done = {}
    for param, value, env in SETTINGS:
        if env in environ:
            continue
        if mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:
            done[env] = value
        else:
            log.warning("mallopt(%d, %d) refused", param, value)
    return done


class Trimmer:
    """Gives freed heap pages back to the kernel (``malloc_trim(0)``) once the RSS has grown
    since the last look: what the two arenas hold free in their middle after a burst of
    concurrent large requests (gRPC assembles a message from many small slices, below the
    mmap threshold). Called from the daemon's main loop about once a second; a look is one
    read of /proc/self/statm, a trim a few hundred microseconds on a small heap."""

    def __init__(self, libc: ctypes.CDLL | None = None, min_growth: int = 2 << 20,
                 statm: str = "/proc/self/statm") -> None:
        if libc is None:
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            except OSError:
                libc = None
        self._trim = getattr(libc, "malloc_trim", None)
        self._min_growth = min_growth
        self._statm = statm
        self._page = 4096
        try:
            import os

            self._page = os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            pass
        self._floor = self.rss()
        self.trims = 0

    def rss(self) -> int:
        try:
            with open(self._statm) as f:
                return int(f.read().split()[1]) * self._page
        except (OSError, ValueError, IndexError):
            return 0

    def __call__(self) -> bool:
        """Trim if the RSS grew by ``min_growth`` since the last trim; say whether it did."""
        if self._trim is None:
            return False
        now = self.rss()
        if now - self._floor < self._min_growth:
            self._floor = min(self._floor, now)
            return False
        self._trim(ctypes.c_size_t(0))
        self.trims += 1
        self._floor = self.rss()
        return True
