"""The typed seams that both rooms of the manager, and the glue between them, are built on.

Only what more than one part consumes lives here (the event sink, the telemetry sampler); a
seam with a single consumer is declared beside it (the pool as the residency uses it in
``memory/residency.py``, as serving uses it in ``serving.py``; the catalog as serving and
installs use it in those modules). This module imports neither ``catalog`` nor ``memory``, so
both may import it without importing each other (the independence contract in pyproject).
"""

from __future__ import annotations

from typing import Protocol

from edged.telemetry.snapshot import Snapshot


class EventSink(Protocol):
    """Where a part reports what happened (``events.EventBus`` in the daemon)."""

    def publish(self, kind: str, model: str = "", version: int = 0, message: str = "",
                **details: object) -> object: ...


class Sampler(Protocol):
    """The device's telemetry as the manager reads it (``telemetry.sampler.Sampler``)."""

    def snapshot(self) -> Snapshot: ...

    def sample_now(self) -> Snapshot: ...
