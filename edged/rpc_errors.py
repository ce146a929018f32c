"""The one error table, used both ways.

Server side: ``to_status(err)`` turns a domain error into a ``grpc.Status`` whose
``grpc-status-details-bin`` trailer carries an ``edged.v1.ErrorInfo`` (reason, field, numbers).
Client side: ``from_rpc_error(exc)`` turns the ``grpc.RpcError`` back into the same domain class
with the same fields, so ``except CapacityExceeded as e: e.needed_bytes`` works after a round
trip. It lives outside ``edged.service`` because the client may not import the service layer.
"""

from __future__ import annotations

from typing import cast

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from edged import errors as e
from edged.v1 import errors_pb2

# Domain code <-> gRPC status code: one row each, read in both directions.
CODES: dict[e.Code, grpc.StatusCode] = {
    code: getattr(grpc.StatusCode, code.value) for code in e.Code}
_BY_GRPC: dict[grpc.StatusCode, e.Code] = {v: k for k, v in CODES.items()}

# Special reasons that map back to a more specific class than the code's default one.
_SPECIAL: dict[str, type[e.EdgedError]] = {
    "CAPACITY": e.CapacityExceeded,
    "SIGNATURE_CHANGED": e.SignatureChanged,
}


_REASONS: dict[str, int] = {
    name.removeprefix("ERROR_REASON_"): number for name, number in errors_pb2.ErrorReason.items()}
_REASON_NAMES: dict[int, str] = {number: name for name, number in _REASONS.items()}


def reason_enum(reason: str) -> int:
    """'CAPACITY' -> ERROR_REASON_CAPACITY; unknown reasons fall back to UNSPECIFIED."""
    return _REASONS.get(reason, 0)


def reason_name(value: int) -> str:
    return _REASON_NAMES.get(value, "UNSPECIFIED")


# An error travels in trailing metadata (grpc-message and the details), which clients cap at
# 8 KiB by default: a message that echoes a huge value (a 10,000-character model name) would
# turn the real error into RESOURCE_EXHAUSTED on the client. So every text is kept short.
MAX_TEXT = 1024


def bounded(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut in the middle to at most about ``limit`` characters, saying so."""
    if len(text) <= limit:
        return text
    keep = limit - 40
    head, tail = text[: keep * 3 // 4], text[len(text) - keep // 4:]
    return f"{head}...({len(text) - len(head) - len(tail)} characters cut)...{tail}"


def error_info(err: e.EdgedError, error_id: str = "") -> errors_pb2.ErrorInfo:
    """Every reason edged raises is a value of ``edged.v1.ErrorReason`` (a test checks the
    sources), so clients in any language read it from ``reason``."""
    info = errors_pb2.ErrorInfo(
        reason=cast(errors_pb2.ErrorReason, reason_enum(err.reason)),
        message=bounded(str(err)),
        field=bounded(err.field or "", 256),
        error_id=error_id,
        metadata={bounded(k, 128): bounded(v, 256) for k, v in err.metadata.items()},
    )
    if isinstance(err, e.CapacityExceeded):
        n = err.numbers
        info.capacity.CopyFrom(errors_pb2.CapacityRejection(
            tier=n.tier, needed_bytes=n.needed_bytes, budget_bytes=n.budget_bytes,
            used_bytes=n.used_bytes, free_bytes=max(0, n.free_bytes),
            reserve_bytes=n.reserve_bytes, evict_candidates=list(n.evict_candidates)))
    if isinstance(err, e.SignatureChanged):
        info.signature_diff.extend(err.diff)
    return info


def to_status(err: e.EdgedError, error_id: str = "") -> grpc.Status:
    info = error_info(err, error_id)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=CODES[err.code].value[0], message=info.message,
                               details=[detail])
    return rpc_status.to_status(status)


def numbers_from(msg: errors_pb2.CapacityRejection) -> e.CapacityNumbers:
    return e.CapacityNumbers(
        tier=msg.tier, needed_bytes=msg.needed_bytes, budget_bytes=msg.budget_bytes,
        used_bytes=msg.used_bytes, free_bytes=msg.free_bytes, reserve_bytes=msg.reserve_bytes,
        evict_candidates=tuple(msg.evict_candidates))


def from_rpc_error(exc: grpc.RpcError) -> e.EdgedError:
    """Rebuild the domain error from a failed call (works for errors without details too)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = exc.details() if hasattr(exc, "details") else str(exc)
    info = _info_of(exc)
    domain_code = _BY_GRPC.get(code, e.Code.INTERNAL)
    reason = reason_name(info.reason) if info is not None else ""
    field = (info.field or None) if info is not None else None
    metadata = dict(info.metadata) if info is not None else {}
    text = info.message if info is not None and info.message else (message or code.name)
    if field and text.startswith(field + ": "):
        text = text[len(field) + 2:]
    cls = _SPECIAL.get(reason) or e.BY_CODE.get(domain_code, e.Internal)
    kw: dict[str, object] = {"field": field, "metadata": metadata}
    if reason and reason != "UNSPECIFIED":
        kw["reason"] = reason
    err: e.EdgedError
    if cls is e.CapacityExceeded and info is not None:
        err = e.EdgedError.__new__(e.CapacityExceeded)
        e.ResourceExhausted.__init__(err, text, **kw)  # type: ignore[arg-type]
        err.numbers = numbers_from(info.capacity)
    elif cls is e.SignatureChanged and info is not None:
        err = e.EdgedError.__new__(e.SignatureChanged)
        e.FailedPrecondition.__init__(err, text, **kw)  # type: ignore[arg-type]
        err.diff = list(info.signature_diff)
    else:
        err = cls(text, **kw)  # type: ignore[arg-type]
    err.grpc_code = code  # type: ignore[attr-defined]
    err.error_id = info.error_id if info is not None else ""  # type: ignore[attr-defined]
    return err


def _info_of(exc: grpc.RpcError) -> errors_pb2.ErrorInfo | None:
    try:
        status = rpc_status.from_call(exc)
    except (ValueError, AttributeError):
        return None
    if status is None:
        return None
    for detail in status.details:
        info = errors_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None
