"""The worker protocol: every message between the daemon and a worker process, defined once.

The daemon side (workers.py, inference.py, lanes.py, spares.py, worker_proc.py, calls.py)
builds requests and reads replies; the worker side (worker_main.py, lane.py) reads requests and
builds replies, both with the definitions here.

On the wire (channel.py) a message is a plain tuple that ``marshal`` carries: a request is
``(op, *fields)``, a reply ``("ok", *fields)`` or ``("err", *ErrorReply fields)``. ``marshal``
takes exact tuples only (not their subclasses), so each message is a NamedTuple whose fields
are its wire tuple's: ``wire()`` adds the tag (and flattens what is nested), ``of(wire)``
rebuilds the message, and a request's ``reply(wire)`` decodes its reply. pickle would cost
several times marshal; the hop is tens of microseconds (bench/worker_hop.py).

The exception is the inference request and its reply (``InferRequest``, ``InferReply``): typed
tuples, checked by mypy at every literal and unpacking, because message classes on that path
cost ~10% of the hop (see the comment there).

Both ends run the same code (the worker is started from the daemon's own interpreter and
package), so the wire needs no versioning.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple, Protocol, TypeAlias, TypeVar

from edged import errors as e
from edged.engines.base import EngineOptions, Signature

# The untyped form of a message, as marshal carries it; only this module looks inside one.
Wire: TypeAlias = tuple[Any, ...]

OK: Final = "ok"
ERR: Final = "err"
READY: Final = "ready"  # the worker is up (sent unasked, request id 0)

# Where a tensor's bytes are (``TensorDesc.where``):
INLINE: Final = 0  # in the frame's data, at ``offset``
LANE: Final = 1  # in the request's lane (a shared-memory slab of the worker), at ``offset``
SHM: Final = 2  # in a client's shared-memory object ``region``, at ``offset``

R_co = TypeVar("R_co", covariant=True)


class Request(Protocol[R_co]):
    """A daemon -> worker message whose reply decodes to ``R_co``."""

    def wire(self) -> Wire: ...

    def reply(self, wire: Wire) -> R_co: ...


# -- the inference request and its reply --------------------------------------------------
# Typed tuples, not NamedTuples: they are made and read on every inference, and NamedTuples
# there (for the request, the reply and the tensor records) cost ~7 us a request on the 2-core
# dev box (p50 of a 1x4 add model through WorkerPool.infer, median of 10 alternating runs:
# 61 -> 69 us; daemon and worker CPU each +5 us a request), far more than their construction
# alone measures in a loop. mypy checks every literal and every unpacking of them against
# these aliases.

# One tensor: (name, datatype, shape, where, region, offset, nbytes). Its ``nbytes`` bytes are
# at ``offset`` in the place ``where`` (INLINE | LANE | SHM) names; ``region`` is the client's
# shared-memory object for SHM, else ""; ``datatype`` is an OIP datatype name.
TensorDesc: TypeAlias = tuple[str, str, tuple[int, ...], int, str, int, int]
# An output the client wants in its shared memory: (region, offset, capacity).
ShmWindow: TypeAlias = tuple[str, int, int]
# The lane (a shared-memory slab of the worker) a request's large tensors travel in:
# (lane id, file name in the shm directory, sent until the worker has mapped it (then ""),
# size, where large outputs go from).
LaneDesc: TypeAlias = tuple[int, str, int, int]
# Op.INFER: (Op.INFER, key, inputs, outputs wanted (None: all), outputs to write into client
# shared memory, lane, lanes the daemon let go of since the last request (the worker unmaps
# them)).
InferRequest: TypeAlias = tuple[str, str, Sequence[TensorDesc], tuple[str, ...] | None,
                                dict[str, ShmWindow], LaneDesc | None, tuple[int, ...]]
# Its reply: (OK, outputs); inline outputs are in the reply frame's data, in order.
InferReply: TypeAlias = tuple[str, Sequence[TensorDesc]]


# -- records inside other messages --------------------------------------------------------
# (wall time, seconds, ok) of one request on a direct lane. A plain tuple, not a record
# class: lane.py appends one per lane request (its hot path) and a report may carry 100k.
LaneRecord: TypeAlias = tuple[float, float, bool]


class LaneRow(NamedTuple):
    """One lane in a worker's ``LaneReport``."""

    lane_id: int
    key: str
    pid: int
    requests: int
    closed: bool
    records: list[LaneRecord]  # since the last report
    dropped: int  # records dropped since the last report (over lane.MAX_RECORDS)


def _flat(records: Iterable[tuple[object, ...]]) -> tuple[tuple[object, ...], ...]:
    return tuple(map(tuple, records))


# -- replies ------------------------------------------------------------------------------
class Ok(NamedTuple):
    """A reply with nothing to say (ping, exit)."""

    def wire(self) -> Wire:
        return (OK,)

    @classmethod
    def of(cls, wire: Wire) -> Ok:
        return cls()


class Rss(NamedTuple):
    """The worker's anonymous RSS after the request (unload, prepare)."""

    rss_anon: int

    def wire(self) -> Wire:
        return (OK, self.rss_anon)

    @classmethod
    def of(cls, wire: Wire) -> Rss:
        return cls(wire[1])


class Ready(NamedTuple):
    """Sent unasked, with request id 0, once the worker is up."""

    pid: int
    rss_anon: int

    def wire(self) -> Wire:
        return (READY, self.pid, self.rss_anon)

    @classmethod
    def of(cls, wire: Wire) -> Ready:
        return cls._make(wire[1:])


class Loaded(NamedTuple):
    """The load's measurements: RSS before and after (the worker's anonymous RSS), the
    load's own peak, and the session's signature and providers."""

    signature: Signature
    providers: tuple[str, ...]
    session_s: float
    warmup_s: float
    rss_before: int
    rss_after: int
    peak: int

    def wire(self) -> Wire:
        return (OK, self.signature.to_wire(), tuple(self.providers), *self[2:])

    @classmethod
    def of(cls, wire: Wire) -> Loaded:
        _, sig, providers, session_s, warmup_s, before, after, peak = wire
        return cls(Signature.from_wire(sig), tuple(providers), session_s, warmup_s, before,
                   after, peak)


class Stats(NamedTuple):
    stats: dict[str, object]  # pid, models, threads and the worker's /proc status fields

    def wire(self) -> Wire:
        return (OK, self.stats)

    @classmethod
    def of(cls, wire: Wire) -> Stats:
        return cls(wire[1])


class LaneOpened(NamedTuple):
    size: int  # the lane's size in bytes (the request's, bounded and rounded)

    def wire(self) -> Wire:
        return (OK, self.size)

    @classmethod
    def of(cls, wire: Wire) -> LaneOpened:
        return cls(int(wire[1]))


class LanesRevoked(NamedTuple):
    revoked: int  # how many lanes

    def wire(self) -> Wire:
        return (OK, self.revoked)

    @classmethod
    def of(cls, wire: Wire) -> LanesRevoked:
        return cls(wire[1])


class LaneReport(NamedTuple):
    lanes: tuple[LaneRow, ...]

    def wire(self) -> Wire:
        return (OK, _flat(self.lanes))

    @classmethod
    def of(cls, wire: Wire) -> LaneReport:
        return cls(tuple(map(LaneRow._make, wire[1])))


class ErrorReply(NamedTuple):
    """A failed request: the domain error's class name and fields (errors.py)."""

    kind: str
    message: str
    field: str | None
    reason: str
    metadata: dict[str, str]

    def wire(self) -> Wire:
        return (ERR, *self)

    @classmethod
    def of(cls, wire: Wire) -> ErrorReply:
        return cls._make(wire[1:])

    @classmethod
    def of_exception(cls, exc: BaseException) -> ErrorReply:
        if isinstance(exc, e.EdgedError):
            return cls(type(exc).__name__, exc.message, exc.field, exc.reason, exc.metadata)
        return cls("Internal", f"{type(exc).__name__}: {exc}", None, "INTERNAL", {})

    def error(self) -> e.EdgedError:
        """The same domain error class (Internal for anything unknown, or for the two that
        carry more than these fields)."""
        cls = getattr(e, self.kind, None)
        if not (isinstance(cls, type) and issubclass(cls, e.EdgedError)) or self.kind in (
                "CapacityExceeded", "SignatureChanged"):
            cls = e.Internal
        return cls(self.message, field=self.field, reason=self.reason, metadata=self.metadata)


class Op:
    """The request tags on the wire (a request's first field)."""

    LOAD: Final = "load"
    UNLOAD: Final = "unload"
    PREPARE: Final = "prepare"
    INFER: Final = "infer"
    CANCEL: Final = "cancel"
    PING: Final = "ping"
    EXIT: Final = "exit"
    STATS: Final = "stats"
    LANE_OPEN: Final = "lane_open"
    LANE_REVOKE: Final = "lane_revoke"
    LANE_REPORT: Final = "lane_report"


# -- requests -----------------------------------------------------------------------------
class Load(NamedTuple):
    """Open ``artifact`` as ``key``, warm it up, measure it."""

    key: str
    artifact: str
    fmt: str
    options: EngineOptions
    max_concurrency: int

    def wire(self) -> Wire:
        return (Op.LOAD, self.key, self.artifact, self.fmt, self.options.to_wire(),
                self.max_concurrency)

    @classmethod
    def of(cls, wire: Wire) -> Load:
        _, key, artifact, fmt, options, max_concurrency = wire
        return cls(key, artifact, fmt, EngineOptions.from_wire(options), max_concurrency)

    def reply(self, wire: Wire) -> Loaded:
        return Loaded.of(wire)


class Unload(NamedTuple):
    key: str

    def wire(self) -> Wire:
        return (Op.UNLOAD, self.key)

    @classmethod
    def of(cls, wire: Wire) -> Unload:
        return cls(wire[1])

    def reply(self, wire: Wire) -> Rss:
        return Rss.of(wire)


class Prepare(NamedTuple):
    """A spare worker imports ``fmt``'s runtime ahead of any load."""

    fmt: str

    def wire(self) -> Wire:
        return (Op.PREPARE, self.fmt)

    @classmethod
    def of(cls, wire: Wire) -> Prepare:
        return cls(wire[1])

    def reply(self, wire: Wire) -> Rss:
        return Rss.of(wire)


class Cancel(NamedTuple):
    """Cancel request ``rid``'s inference if it runs (no reply)."""

    rid: int

    def wire(self) -> Wire:
        return (Op.CANCEL, self.rid)

    @classmethod
    def of(cls, wire: Wire) -> Cancel:
        return cls(wire[1])


class Ping(NamedTuple):
    def wire(self) -> Wire:
        return (Op.PING,)

    @classmethod
    def of(cls, wire: Wire) -> Ping:
        return cls()

    def reply(self, wire: Wire) -> Ok:
        return Ok.of(wire)


class Exit(NamedTuple):
    """Reply, then exit."""

    def wire(self) -> Wire:
        return (Op.EXIT,)

    @classmethod
    def of(cls, wire: Wire) -> Exit:
        return cls()

    def reply(self, wire: Wire) -> Ok:
        return Ok.of(wire)


class GetStats(NamedTuple):
    def wire(self) -> Wire:
        return (Op.STATS,)

    @classmethod
    def of(cls, wire: Wire) -> GetStats:
        return cls()

    def reply(self, wire: Wire) -> Stats:
        return Stats.of(wire)


class LaneOpen(NamedTuple):
    """Bind a lane socket at ``path`` for client ``pid`` (lane.py)."""

    lane_id: int
    key: str
    pid: int
    path: str
    size: int
    mode: int
    gid: int

    def wire(self) -> Wire:
        return (Op.LANE_OPEN, *self)

    @classmethod
    def of(cls, wire: Wire) -> LaneOpen:
        return cls._make(wire[1:])

    def reply(self, wire: Wire) -> LaneOpened:
        return LaneOpened.of(wire)


class LaneRevoke(NamedTuple):
    key: str | None  # None: every lane of the worker

    def wire(self) -> Wire:
        return (Op.LANE_REVOKE, self.key)

    @classmethod
    def of(cls, wire: Wire) -> LaneRevoke:
        return cls(wire[1])

    def reply(self, wire: Wire) -> LanesRevoked:
        return LanesRevoked.of(wire)


class GetLaneReport(NamedTuple):
    def wire(self) -> Wire:
        return (Op.LANE_REPORT,)

    @classmethod
    def of(cls, wire: Wire) -> GetLaneReport:
        return cls()

    def reply(self, wire: Wire) -> LaneReport:
        return LaneReport.of(wire)
