"""The one error table, both ways: every domain error survives a real gRPC round trip with its
code, reason, field and numbers (a tiny real server on a Unix socket raises each one)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_status import rpc_status

from edged import errors as e
from edged.rpc_errors import CODES, from_rpc_error
from edged.service.errormap import ErrorMappingInterceptor
from edged.v1 import errors_pb2

EDGED = Path(__file__).resolve().parents[2] / "edged"

NUMBERS = e.CapacityNumbers("swap", 3 << 30, 2 << 30, 1 << 30, 512 << 20, 1 << 30, ("a:1", "b:2"))
CASES: list[e.EdgedError] = [
    e.InvalidArgument("shape (3,) does not match [-1, 4]", field="inputs[0].shape"),
    e.NotFound("model 'nope' is not installed", field="name"),
    e.AlreadyExists("model 'm' version 2 exists"),
    e.ResourceExhausted("disk would fill", reason="DISK_FULL"),
    e.ResourceExhausted("disk full while writing the tier manifests: 0 bytes free",
                        reason="DISK_FULL", metadata={"path": "/var/lib/edged",
                                                      "free_bytes": "0"}),
    e.Aborted("http://x/m.onnx: download failed after 5 attempts: HTTP 503", field="source",
              reason="DOWNLOAD_FAILED"),
    e.CapacityExceeded("model 'big:1' does not fit", NUMBERS),
    e.FailedPrecondition("model 'm' is in the storage tier", reason="STORAGE_TIER"),
    e.SignatureChanged("signature differs", ["input x: FP32 -> FP16"]),
    e.DataLoss("sha256 mismatch"),
    e.Unavailable("stopping", reason="STOPPING"),
    e.Unauthenticated("missing token"),
    e.PermissionDenied("admin token required"),
    e.DeadlineExceeded("took too long"),
    e.Unimplemented("not yet"),
    e.Aborted("preload cancelled"),
    e.Internal("boom"),
]


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    sock = Path(tmp_path_factory.mktemp("s")) / "e.sock"

    def raise_case(request: bytes, context: grpc.ServicerContext) -> bytes:
        idx = int(request.decode())
        if idx < 0:
            raise RuntimeError("an unexpected bug")
        raise CASES[idx]

    handler = grpc.method_handlers_generic_handler("t.T", {
        "Raise": grpc.unary_unary_rpc_method_handler(raise_case)})
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[ErrorMappingInterceptor()])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix:{sock}")
    server.start()
    with grpc.insecure_channel(f"unix:{sock}") as ch:
        yield ch
    server.stop(0)


def _call(channel: grpc.Channel, idx: int) -> grpc.RpcError:
    fn = channel.unary_unary("/t.T/Raise")
    with pytest.raises(grpc.RpcError) as info:
        fn(str(idx).encode(), timeout=5)
    return info.value  # type: ignore[return-value]


@pytest.mark.parametrize("idx", range(len(CASES)), ids=[type(c).__name__ for c in CASES])
def test_round_trip(channel: grpc.Channel, idx: int) -> None:
    original = CASES[idx]
    rpc_err = _call(channel, idx)
    assert rpc_err.code() == CODES[original.code]
    back = from_rpc_error(rpc_err)
    assert type(back) is type(original)
    assert back.reason == original.reason
    assert back.field == original.field
    assert str(back) == str(original)
    assert back.metadata == original.metadata
    info = _wire_info(rpc_err)  # the reason is the enum's value, for clients in any language
    assert errors_pb2.ErrorReason.Name(info.reason) == f"ERROR_REASON_{original.reason}"
    if isinstance(original, e.CapacityExceeded):
        assert back.numbers == original.numbers  # type: ignore[attr-defined]
        assert back.needed_bytes == 3 << 30  # type: ignore[attr-defined]
    if isinstance(original, e.SignatureChanged):
        assert back.diff == original.diff  # type: ignore[attr-defined]


def _wire_info(rpc_err: grpc.RpcError) -> errors_pb2.ErrorInfo:
    status = rpc_status.from_call(rpc_err)  # type: ignore[arg-type]
    assert status is not None
    info = errors_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def test_every_reason_edged_raises_is_in_the_enum() -> None:
    """A reason missing from ``edged.v1.ErrorReason`` reaches clients as UNSPECIFIED. (The
    client's and the CLI's own errors, e.g. UNREACHABLE, never travel: not scanned.)"""
    text = "\n".join(p.read_text() for p in EDGED.rglob("*.py")
                     if p.relative_to(EDGED).parts[0] not in ("v1", "oip", "client", "cli"))
    used = set(re.findall(r'reason="([A-Z_]+)"', text)) | set(
        re.findall(r'default_reason(?:: ClassVar\[str\])? = "([A-Z_]+)"', text))
    assert {"DOWNLOAD_FAILED", "DISK_FULL", "CAPACITY", "STOPPING"} <= used  # the scan works
    known = {n.removeprefix("ERROR_REASON_") for n in errors_pb2.ErrorReason.keys()}  # noqa: SIM118
    assert used - known == set()


def test_unexpected_exception_is_internal_with_an_error_id(channel: grpc.Channel) -> None:
    rpc_err = _call(channel, -1)
    assert rpc_err.code() == grpc.StatusCode.INTERNAL
    assert "Traceback" not in (rpc_err.details() or "")
    assert "an unexpected bug" not in (rpc_err.details() or "")
    back = from_rpc_error(rpc_err)
    assert isinstance(back, e.Internal)
    assert len(back.error_id) == 12 and back.error_id in str(back)  # type: ignore[attr-defined]


def test_every_code_has_exactly_one_row() -> None:
    assert set(CODES) == set(e.Code)
    assert len(set(CODES.values())) == len(CODES)
