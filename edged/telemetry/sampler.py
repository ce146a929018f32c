"""The background sampler: status calls read the last snapshot, capacity decisions take a new one.

Reading a snapshot is one attribute load, so the status call stays cheap with any number of
clients; sampling happens on one daemon thread every ``interval_s`` and on demand through
:meth:`Sampler.sample_now`, serialised by a lock so the CPU meter sees consistent intervals.
Optional clients (jtop, NVML) talk to this machine's services, so they are opened only when
``root`` is the real ``/``; a fixture root is read through files alone.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

from edged.telemetry.collect import Probes, StaticFacts, collect, guarded, read_static
from edged.telemetry.jtop_source import open_jtop
from edged.telemetry.nvml import open_nvml
from edged.telemetry.snapshot import Snapshot

log = logging.getLogger("edged.telemetry")


class Sampler:
    """Owns telemetry sampling for one daemon; see the module docstring for why it is shaped so."""

    def __init__(
        self,
        *,
        root: Path = Path("/"),
        interval_s: float = 2.0,
        memory_total_override: int | None = None,
        use_jtop: bool = True,
        use_nvml: bool = True,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self._root = Path(root)
        self._interval_s = interval_s
        self._override = memory_total_override
        self._use_jtop = use_jtop
        self._use_nvml = use_nvml
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._static: StaticFacts | None = None
        self._probes: Probes | None = None
        self._last: Snapshot | None = None

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def start(self) -> None:
        """Open the optional sources, take the first sample now, then sample in the background.

        The first sample is synchronous so that the daemon sizes its budgets from real numbers.
        Calling start() on a running sampler does nothing.
        """
        if self._thread is not None:
            return
        with self._lock:
            self._open_sources()
        self.sample_now()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edged-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (it wakes at once: it waits on an Event) and close jtop/NVML."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10.0)
            if thread.is_alive():
                log.warning("telemetry thread did not stop within 10 s")
        with self._lock:
            probes = self._probes
            if probes is not None:
                for source in (probes.jtop, probes.nvml):
                    if source is not None:
                        source.close()
                probes.jtop = probes.nvml = None

    def snapshot(self) -> Snapshot:
        """The last snapshot (one attribute read); samples once if there has never been one."""
        last = self._last
        return last if last is not None else self.sample_now()

    def sample_now(self) -> Snapshot:
        """Take a fresh snapshot now and publish it; used before every capacity decision."""
        with self._lock:
            static = self._ensure_static()
            if self._probes is None:
                self._probes = Probes()
            snap = collect(self._root, static, self._override, self._probes)
            self._last = snap
            return snap

    def _ensure_static(self) -> StaticFacts:
        if self._static is None:
            self._static = read_static(self._root)
        return self._static

    def _open_sources(self) -> None:
        """Connect to jtop / NVML where they apply; a failure is kept as a standing error."""
        static = self._ensure_static()
        if self._probes is None:
            self._probes = Probes()
        if self._root != Path("/"):
            return
        errors: list[str] = []
        if self._use_jtop and static.jetson is not None and self._probes.jtop is None:
            self._probes.jtop = guarded("jtop", errors, lambda: open_jtop(self._interval_s), None)
        if self._use_nvml and self._probes.nvml is None:
            self._probes.nvml = guarded("nvml", errors, open_nvml, None)
        if errors:
            merged = tuple(e for e in static.errors if e not in errors) + tuple(errors)
            self._static = dataclasses.replace(static, errors=merged)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.sample_now()
            except Exception:  # collect() already guards each source; this is the last net
                log.exception("telemetry sample failed")
