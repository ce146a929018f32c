"""The gRPC server's own pieces on a real socket: the socket is never looser than 0600 before
its configured mode is set, and the drain gate refuses new calls while counting the old."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edged.config import ListenConfig
from edged.rpc_errors import from_rpc_error
from edged.service.server import Server, ServiceBinding
from edged.v1 import system_pb2, system_pb2_grpc


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)  # the worst case: a process whose umask lets everyone in
    yield
    os.umask(old)


class SlowSystem(system_pb2_grpc.SystemServicer):
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def Status(self, request: system_pb2.StatusRequest,
               context: grpc.ServicerContext) -> system_pb2.StatusResponse:
        self.entered.set()
        self.release.wait(30)
        return system_pb2.StatusResponse(state="done")


def _server(path: Path, servicer: SlowSystem | None = None) -> Server:
    bindings = []
    if servicer is not None:
        bindings.append(ServiceBinding("edged.v1.System", servicer,
                                       system_pb2_grpc.add_SystemServicer_to_server))
    return Server(ListenConfig(unix=path, unix_mode=0o660, threads=4), bindings)


def test_the_socket_is_private_until_its_mode_is_set(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "s.sock"
    server = _server(path)  # bound here, not yet started
    try:
        assert stat.S_IMODE(path.lstat().st_mode) & 0o077 == 0  # not 0777 under umask 0
        assert os.umask(0) == 0  # and the process's umask is back as it was
        server.start()
        assert stat.S_IMODE(path.lstat().st_mode) == 0o660
    finally:
        server.stop(0)


def test_drain_refuses_new_calls_and_waits_for_those_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    slow = SlowSystem()
    server = _server(path, slow)
    server.start()
    server.set_serving(True)
    channel = grpc.insecure_channel(f"unix:{path}")
    try:
        stub = system_pb2_grpc.SystemStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        in_flight = stub.Status.future(system_pb2.StatusRequest(), timeout=30)
        assert slow.entered.wait(10)
        assert server.in_flight == 1
        result: list[int] = []
        drainer = threading.Thread(target=lambda: result.append(server.drain(20)))
        drainer.start()
        deadline = time.monotonic() + 5
        while health.Check(health_pb2.HealthCheckRequest()).status != \
                health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Status(system_pb2.StatusRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert from_rpc_error(refused.value).reason == "STOPPING"
        assert drainer.is_alive()  # still waiting for the call in flight
        slow.release.set()
        assert in_flight.result(timeout=10).state == "done"
        drainer.join(10)
        assert result == [0]
    finally:
        slow.release.set()
        channel.close()
        server.stop(0)
    assert not path.exists()


def test_drain_gives_up_after_the_grace_period(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    slow = SlowSystem()
    server = _server(path, slow)
    server.start()
    channel = grpc.insecure_channel(f"unix:{path}")
    try:
        call = system_pb2_grpc.SystemStub(channel).Status.future(system_pb2.StatusRequest(),
                                                                 timeout=30)
        assert slow.entered.wait(10)
        t0 = time.monotonic()
        assert server.drain(0.3) == 1  # one call still running
        assert 0.25 < time.monotonic() - t0 < 5
    finally:
        slow.release.set()
        call.result(timeout=10)
        channel.close()
        server.stop(0)
