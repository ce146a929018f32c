"""The event stream: loads, evictions, preloads, rejections, crashes, version switches.

A bounded history (so a late ``edgectl events`` still sees what just happened) plus blocking
subscription by sequence number. Subscribers never slow the publisher down: they read from the
history under a condition variable, and one that falls behind the history skips ahead and is
told so by an ``events_dropped`` event (seq 0) saying how many it missed.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from edged.errors import InvalidArgument

log = logging.getLogger("edged.events")

# Every kind the daemon publishes (tests/unit/test_events.py checks the publishers against it):
# a filter naming another kind is a typo, refused rather than answered with silence.
KINDS = frozenset({
    "artifact_missing", "calibrated", "corrupt", "events_dropped", "evict", "footprint",
    "install", "load", "load_failed",
    "manifest_dropped", "manifest_reload", "preload", "preload_cancelled", "preload_hit",
    "preload_wasted", "reject", "remove", "repaired", "tier", "unload", "variant",
    "variant_job", "variant_made", "version_switch", "worker_crash"})


def check_kinds(kinds: frozenset[str]) -> None:
    unknown = sorted(kinds - KINDS)
    if unknown:
        raise InvalidArgument(f"unknown event kind {', '.join(map(repr, unknown))} (kinds: "
                              f"{', '.join(sorted(KINDS))})", field="kinds")


@dataclass(frozen=True)
class Event:
    seq: int
    time: float
    kind: str
    model: str = ""
    version: int = 0
    message: str = ""
    details: Mapping[str, str] = field(default_factory=dict)


class EventBus:
    def __init__(self, history: int = 1000, clock: object = time.time) -> None:
        self._history: deque[Event] = deque(maxlen=max(1, history))
        self._cond = threading.Condition()
        self._seq = itertools.count(1)
        self._clock = clock
        self._closed = False

    def publish(self, kind: str, model: str = "", version: int = 0, message: str = "",
                **details: object) -> Event:
        with self._cond:
            ev = Event(next(self._seq), self._clock(), kind, model, version, message,  # type: ignore[operator]
                       {k: str(v) for k, v in details.items()})
            self._history.append(ev)
            self._cond.notify_all()
        log.info("%s%s%s", kind, f" {model}:{version}" if model else "",
                 f" {message}" if message else "")
        return ev

    def recent(self, since_seq: int = 0, kinds: frozenset[str] = frozenset()) -> list[Event]:
        check_kinds(kinds)
        with self._cond:
            return [e for e in self._history
                    if e.seq > since_seq and (not kinds or e.kind in kinds)]

    def subscribe(self, since_seq: int = 0, kinds: frozenset[str] = frozenset(),
                  follow: bool = True, is_active: object = lambda: True,
                  poll_s: float = 0.5) -> Iterator[Event]:
        """Yield history after ``since_seq``, then (with ``follow``) new events as they come.

        ``is_active`` is polled every ``poll_s`` so a cancelled RPC ends its stream promptly.
        Unknown ``kinds`` are refused here, before the stream starts.
        """
        check_kinds(kinds)
        return self._stream(since_seq, kinds, follow, is_active, poll_s)

    def _stream(self, since_seq: int, kinds: frozenset[str], follow: bool, is_active: object,
                poll_s: float) -> Iterator[Event]:
        last = since_seq
        while True:
            with self._cond:
                batch = [e for e in self._history if e.seq > last]
                if not batch and follow and not self._closed:
                    self._cond.wait(poll_s)
                    batch = [e for e in self._history if e.seq > last]
            if batch and last and batch[0].seq > last + 1:  # fell behind the history
                skipped = batch[0].seq - last - 1
                yield Event(0, batch[0].time, "events_dropped",
                            message=f"{skipped} events were dropped while this subscriber "
                                    f"was behind (the history keeps {self._history.maxlen})",
                            details={"dropped": str(skipped)})
            for ev in batch:
                last = ev.seq
                if not kinds or ev.kind in kinds:
                    yield ev
            if not follow or self._closed or not is_active():  # type: ignore[operator]
                return

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
