"""How EdgedClient tells "no daemon answered" (DaemonUnreachable, exit 3) from errors the
daemon sent, against a real gRPC server on a real Unix socket."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from edged import errors as e
from edged.cli import exitcodes
from edged.client import DaemonUnreachable, EdgedClient
from edged.rpc_errors import to_status
from edged.v1 import system_pb2, system_pb2_grpc


class Scripted(system_pb2_grpc.SystemServicer):
    """Status answers with whatever error the test put in ``error`` (or sleeps)."""

    def __init__(self) -> None:
        self.error: e.EdgedError | None = None
        self.release = threading.Event()

    def Status(self, request: system_pb2.StatusRequest,
               context: grpc.ServicerContext) -> system_pb2.StatusResponse:
        if self.error is not None:
            context.abort_with_status(to_status(self.error))
        self.release.wait(10)
        return system_pb2.StatusResponse(state="serving")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Scripted, str]]:
    servicer = Scripted()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    system_pb2_grpc.add_SystemServicer_to_server(servicer, server)
    path = tmp_path / "s.sock"
    server.add_insecure_port(f"unix:{path}")
    server.start()
    yield servicer, f"unix:{path}"
    servicer.release.set()
    server.stop(0)


def test_an_unavailable_error_from_the_daemon_is_not_unreachable(
        served: tuple[Scripted, str]) -> None:
    servicer, target = served
    servicer.error = e.Unavailable("http://x/m.onnx: download did not complete: connection "
                                   "refused")  # the daemon's words, not the transport's
    with EdgedClient(target, timeout=5) as c, pytest.raises(e.Unavailable) as info:
        c.status()
    assert not isinstance(info.value, DaemonUnreachable)
    assert exitcodes.for_error(info.value) == exitcodes.BY_CODE[e.Code.UNAVAILABLE]


def test_a_deadline_error_from_the_daemon_is_not_unreachable(
        served: tuple[Scripted, str]) -> None:
    servicer, target = served
    servicer.error = e.DeadlineExceeded("model 'm:1' was busy for 2 s")
    with EdgedClient(target, timeout=5) as c, pytest.raises(e.DeadlineExceeded):
        c.status()


def test_a_slow_but_connected_daemon_is_a_deadline_not_unreachable(
        served: tuple[Scripted, str]) -> None:
    _, target = served
    with EdgedClient(target, timeout=0.5) as c, pytest.raises(e.DeadlineExceeded) as info:
        c.status()  # connects (READY), then the servicer sleeps past the deadline
    assert not isinstance(info.value, DaemonUnreachable)


def test_no_socket_at_all_is_unreachable(tmp_path: Path) -> None:
    with EdgedClient(f"unix:{tmp_path}/none.sock", timeout=2) as c, \
            pytest.raises(DaemonUnreachable, match="none.sock"):
        c.status()
