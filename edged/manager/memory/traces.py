"""Request traces: the JSONL format the daemon records and the replay tool reads.

One request per line, in time order::

    {"t": 1732.25, "model": "asr", "duration": 0.41, "version": 3}

``t`` is seconds (the daemon writes wall-clock epoch seconds; generated traces start at their
simulated hour of day so that time-of-day buckets mean the same thing), ``duration`` (optional)
is how long the inference ran, ``version`` (optional) the model version used. The reader is
strict: a line that is not such an object is an error naming the line, because a replay over a
silently half-read trace would report numbers that mean nothing.

The daemon records its live traffic with :class:`TraceRecorder`, bounded so it can run forever
on a robot: when the file reaches ``max_bytes`` it is rotated to ``path.1`` (replacing the previous
``.1``), so at most about twice ``max_bytes`` is ever on disk.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class TraceError(ValueError):
    """A trace that cannot be trusted; the message names the file and line."""


@dataclass(frozen=True)
class TraceEntry:
    t: float
    model: str
    duration: float | None = None
    version: int | None = None

    def to_json(self) -> str:
        obj: dict[str, Any] = {"t": round(self.t, 6), "model": self.model}
        if self.duration is not None:
            obj["duration"] = round(self.duration, 6)
        if self.version is not None:
            obj["version"] = self.version
        return json.dumps(obj, separators=(",", ":"))


def _number(obj: dict[str, Any], key: str, where: str, *, required: bool) -> float | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise TraceError(f"{where}: missing {key!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TraceError(f"{where}: {key!r} must be a finite number, not {value!r}")
    if value < 0:
        raise TraceError(f"{where}: {key!r} must not be negative, got {value!r}")
    return float(value)


def parse_line(line: str, where: str) -> TraceEntry:
    """One JSONL line -> entry; ``where`` (e.g. ``"trace.jsonl line 7"``) prefixes errors."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise TraceError(f"{where}: expected an object like {{\"t\": 1.5, \"model\": \"asr\"}}")
    unknown = set(obj) - {"t", "model", "duration", "version"}
    if unknown:
        raise TraceError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    model = obj.get("model")
    if not isinstance(model, str) or not _NAME_RE.match(model):
        raise TraceError(f"{where}: 'model' must be a model name, not {model!r}")
    t = _number(obj, "t", where, required=True)
    assert t is not None
    version = obj.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 1):
        raise TraceError(f"{where}: 'version' must be a positive integer, not {version!r}")
    return TraceEntry(t, model, _number(obj, "duration", where, required=False), version)


def iter_trace(path: Path) -> Iterator[TraceEntry]:
    """Entries of a JSONL trace; blank lines are skipped, time must not go backwards."""
    last = -math.inf
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            entry = parse_line(line, where)
            if entry.t < last:
                raise TraceError(f"{where}: time goes backwards ({entry.t} after {last})")
            last = entry.t
            yield entry


def read_trace(path: Path) -> list[TraceEntry]:
    return list(iter_trace(path))


def write_trace(path: Path, entries: Iterable[TraceEntry]) -> int:
    """Write entries as JSONL (atomically: temp file then rename); returns the count."""
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(entry.to_json() + "\n")
            n += 1
    os.replace(tmp, path)
    return n


class TraceRecorder:
    """Appends the daemon's requests to a JSONL trace, rotating to ``path.1`` when full.

    Thread-safe: request threads call ``start`` when a request arrives and ``finish`` when it
    is done. Lines are stamped with the arrival time and written in arrival order — a request
    that finishes early waits in a small heap until every request that arrived before it has
    finished — because the reader (and the replay tool) refuse a trace whose time goes
    backwards. Lines are written whole and flushed, so a crash loses at most the lines in
    flight and the reader sees only complete lines (a torn last line is an error it names).
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._fh: IO[str] | None = None
        self._size = 0
        self._lock = threading.Lock()
        self._tickets = itertools.count()
        self._in_flight: dict[int, float] = {}  # ticket -> arrival time
        self._done: list[tuple[float, int, str]] = []  # heap of (t, ticket, line)
        self._last_t = -math.inf

    def start(self, t: float) -> int:
        """A request arrived at ``t``; returns the ticket to ``finish`` it with."""
        with self._lock:
            ticket = next(self._tickets)
            self._in_flight[ticket] = max(t, self._last_t)
            self._last_t = self._in_flight[ticket]
            return ticket

    def finish(self, ticket: int, model: str, version: int | None,
               duration: float | None = None) -> None:
        with self._lock:
            t = self._in_flight.pop(ticket, None)
            if t is None:
                return
            line = TraceEntry(t, model, duration, version).to_json() + "\n"
            heapq.heappush(self._done, (t, ticket, line))
            oldest = min(self._in_flight.values(), default=math.inf)
            while self._done and self._done[0][0] <= oldest:
                self._write(heapq.heappop(self._done)[2])

    def record(self, model: str, version: int | None, t: float,
               duration: float | None = None) -> None:
        """One finished request at once (callers that know nothing runs concurrently)."""
        self.finish(self.start(t), model, version, duration)

    def _write(self, line: str) -> None:
        if self._fh is None:
            self._open()
        if self._size > 0 and self._size + len(line) > self.max_bytes:
            self._rotate()
        assert self._fh is not None
        self._fh.write(line)
        self._fh.flush()
        self._size += len(line)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        self._size = self._fh.tell()

    def _rotate(self) -> None:
        self._close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._open()

    def close(self) -> None:
        with self._lock:
            while self._done:  # requests that never finished do not hold back the others
                self._write(heapq.heappop(self._done)[2])
            self._close()

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> TraceRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ModelCost:
    """What a replay needs to know about a model: its footprint and how long it takes to load."""

    size_bytes: int
    load_s: float


def read_models(path: Path) -> dict[str, ModelCost]:
    """``models.json``: ``{"asr": {"size_bytes": 303038464, "load_s": 1.2}, ...}``."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path} line {exc.lineno}: not JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise TraceError(f"{path}: expected an object mapping model names to sizes")
    out: dict[str, ModelCost] = {}
    for name, spec in raw.items():
        where = f"{path}: model {name!r}"
        if not _NAME_RE.match(str(name)) or not isinstance(spec, dict):
            raise TraceError(f"{where}: expected a name mapping to {{size_bytes, load_s}}")
        size, load = spec.get("size_bytes"), spec.get("load_s")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise TraceError(f"{where}: size_bytes must be a positive integer, not {size!r}")
        if (isinstance(load, bool) or not isinstance(load, int | float)
                or not math.isfinite(load) or load < 0):
            raise TraceError(f"{where}: load_s must be a non-negative number, not {load!r}")
        out[name] = ModelCost(size, float(load))
    return out


def write_models(path: Path, models: dict[str, ModelCost]) -> None:
    body = {n: {"size_bytes": m.size_bytes, "load_s": round(m.load_s, 4)}
            for n, m in sorted(models.items())}
    Path(path).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
