"""gRPC server wiring: listeners, health, reflection, interceptors.

The servicers only translate; this module only assembles. The Unix socket is the main door:
a stale socket left by a crash is removed, but a socket another live daemon is serving on is
never stolen — the second daemon refuses to start with a message naming the path.
"""

from __future__ import annotations

import logging
import socket
import stat
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edged import errors as e
from edged.config import ListenConfig

log = logging.getLogger("edged.server")


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer and the function that adds it, plus its full service name for reflection."""

    name: str
    servicer: Any
    add: Any


def prepare_unix_socket(path: Path) -> None:
    """Make ``path`` bindable: remove a stale socket, refuse when a daemon is live on it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise e.FailedPrecondition(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale socket %s", path)
        path.unlink(missing_ok=True)
        return
    except OSError as exc:
        raise e.FailedPrecondition(f"cannot probe existing socket {path}: {exc}") from exc
    finally:
        probe.close()
    raise e.AlreadyExists(f"another edged is already serving on {path}")


class Server:
    """Owns the grpc.Server and the health service; started and stopped by the daemon."""

    def __init__(self, listen: ListenConfig, bindings: Sequence[ServiceBinding],
                 interceptors: Sequence[grpc.ServerInterceptor] = (),
                 tcp_credentials: grpc.ServerCredentials | None = None) -> None:
        self.listen = listen
        opts = [
            ("grpc.max_receive_message_length", listen.max_message_bytes),
            ("grpc.max_send_message_length", listen.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=listen.threads, thread_name_prefix="rpc"),
            options=opts,
            interceptors=list(interceptors),
            maximum_concurrent_rpcs=listen.max_concurrent_rpcs,
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        self._names = [b.name for b in bindings]
        for b in bindings:
            b.add(b.servicer, self._grpc)
        reflection.enable_server_reflection(
            [*self._names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME], self._grpc)
        self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        prepare_unix_socket(listen.unix)
        if not self._grpc.add_insecure_port(f"unix:{listen.unix}"):
            raise e.FailedPrecondition(f"cannot listen on unix socket {listen.unix}")
        self.tcp_port: int | None = None
        if listen.tcp:
            if tcp_credentials is None:
                raise e.FailedPrecondition("listen.tcp is set but TLS credentials are missing")
            self.tcp_port = self._grpc.add_secure_port(listen.tcp, tcp_credentials)
            if not self.tcp_port:
                raise e.FailedPrecondition(f"cannot listen on {listen.tcp}")

    def _set_all(self, state: Any) -> None:
        self.health.set("", state)
        for name in self._names:
            self.health.set(name, state)

    def start(self) -> None:
        from edged.service.auth import apply_socket_permissions

        self._grpc.start()
        try:
            apply_socket_permissions(self.listen.unix, self.listen.unix_mode,
                                     self.listen.unix_group)
        except BaseException:
            self._grpc.stop(0)
            raise

    def set_serving(self, serving: bool) -> None:
        self._set_all(health_pb2.HealthCheckResponse.SERVING if serving
                      else health_pb2.HealthCheckResponse.NOT_SERVING)

    def stop(self, grace_s: float) -> None:
        """Stop accepting, let in-flight calls finish within ``grace_s``, then close."""
        self.set_serving(False)
        self._grpc.stop(grace_s).wait(grace_s + 5)
        try:
            self.listen.unix.unlink()
        except FileNotFoundError:
            pass

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._grpc.wait_for_termination(timeout))
