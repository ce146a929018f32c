"""Domain errors with structured fields.

Every layer below the service raises these; ``edged.service.status`` maps them to gRPC status
codes plus an ``edged.v1.ErrorInfo`` detail, and ``edged.client`` maps them back, so that a caller
can ``except CapacityExceeded as e: e.needed_bytes`` after a round trip. No grpc import here: the
manager and the engines must stay usable (and testable) without a server.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar


class Code(enum.Enum):
    """The gRPC status code names we use (values match ``grpc.StatusCode`` names)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    DATA_LOSS = "DATA_LOSS"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"
    ABORTED = "ABORTED"


class EdgedError(Exception):
    """Base of every error edged reports to a client.

    ``reason`` is a stable machine-readable string (the name of an ``edged.v1.ErrorReason``
    value without its prefix); ``field`` names the offending request field when there is one;
    ``metadata`` carries extra string facts (model name, tensor name, ...).
    """

    code: ClassVar[Code] = Code.INTERNAL
    default_reason: ClassVar[str] = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        if self.field:
            return f"{self.field}: {self.message}"
        return self.message


class InvalidArgument(EdgedError):
    code = Code.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(EdgedError):
    code = Code.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(EdgedError):
    code = Code.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class ResourceExhausted(EdgedError):
    """A limit other than model memory: disk space, upload size, queue depth."""

    code = Code.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


@dataclass(frozen=True)
class CapacityNumbers:
    """The numbers behind a capacity decision, all in bytes."""

    tier: str
    needed_bytes: int
    budget_bytes: int
    used_bytes: int
    free_bytes: int
    reserve_bytes: int
    evict_candidates: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        return (
            f"tier {self.tier}: needs {_fmt(self.needed_bytes)}, budget {_fmt(self.budget_bytes)}, "
            f"used {_fmt(self.used_bytes)}, free {_fmt(self.free_bytes)}, "
            f"reserve {_fmt(self.reserve_bytes)}"
        )


class CapacityExceeded(ResourceExhausted):
    """A model does not fit its tier budget or the device's free memory, even after evicting."""

    default_reason = "CAPACITY"

    def __init__(self, message: str, numbers: CapacityNumbers, **kw: Any) -> None:
        super().__init__(f"{message} ({numbers.describe()})", **kw)
        self.numbers = numbers

    @property
    def needed_bytes(self) -> int:
        return self.numbers.needed_bytes

    @property
    def budget_bytes(self) -> int:
        return self.numbers.budget_bytes

    @property
    def free_bytes(self) -> int:
        return self.numbers.free_bytes

    @property
    def reserve_bytes(self) -> int:
        return self.numbers.reserve_bytes


class FailedPrecondition(EdgedError):
    code = Code.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class SignatureChanged(FailedPrecondition):
    """Activating a version whose input/output signature differs, without consent."""

    default_reason = "SIGNATURE_CHANGED"

    def __init__(self, message: str, diff: list[str], **kw: Any) -> None:
        super().__init__(message + ": " + "; ".join(diff), **kw)
        self.diff = list(diff)


class DataLoss(EdgedError):
    """Checksum mismatch or a corrupt artifact."""

    code = Code.DATA_LOSS
    default_reason = "CHECKSUM_MISMATCH"


class Unavailable(EdgedError):
    """Stopping, or an engine worker died under the request."""

    code = Code.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class NotDelivered(Unavailable):
    """The request never reached an engine worker: the worker had already died (a moment
    before the daemon heard of it). Nothing ran, so the daemon retries it on a reload; a
    client only sees it (as UNAVAILABLE) if the retries fail too."""

    @classmethod
    def of(cls, gone: EdgedError) -> NotDelivered:
        """``gone`` (the worker's "is not running" error), as not delivered."""
        return cls(gone.message, field=gone.field, reason=gone.reason, metadata=gone.metadata)


class Unauthenticated(EdgedError):
    code = Code.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(EdgedError):
    code = Code.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class DeadlineExceeded(EdgedError):
    code = Code.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unimplemented(EdgedError):
    code = Code.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"


class Aborted(EdgedError):
    """An operation was cancelled (e.g. a preload giving way to a demand load)."""

    code = Code.ABORTED
    default_reason = "ABORTED"


class Internal(EdgedError):
    code = Code.INTERNAL
    default_reason = "INTERNAL"


def _fmt(n: int) -> str:
    """Human size for messages: 1536 -> '1.5 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


# Every error class by its code, for the client's reverse mapping.
BY_CODE: dict[Code, type[EdgedError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        ResourceExhausted,
        FailedPrecondition,
        DataLoss,
        Unavailable,
        Unauthenticated,
        PermissionDenied,
        DeadlineExceeded,
        Unimplemented,
        Aborted,
        Internal,
    )
}
