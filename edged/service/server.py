"""gRPC server wiring: listeners, health, reflection, interceptors, the drain on stop.

The servicers only translate; this module only assembles. The Unix socket is the main door:
a stale socket left by a crash is removed, but a socket another live daemon is serving on is
never stolen — the second daemon refuses to start with a message naming the path. The socket
is bound under a umask that leaves it private until its configured mode and group are set.

Stopping is a drain (``Server.drain``), not ``grpc.Server.stop(grace)``, which closes the
listeners at once: health would never be seen NOT_SERVING, and new calls would get a bare
connection error. Instead health turns NOT_SERVING, new calls (health checks excepted) get
``UNAVAILABLE`` with reason ``STOPPING``, and the calls in flight get the grace period to
finish; only then are the listeners closed.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from edged import errors as e
from edged.config import ListenConfig
from edged.rpc_errors import to_status
from edged.service import handlers

log = logging.getLogger("edged.server")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
# Open-ended streams (``edgectl events --follow``): refused once draining, but not waited for
# (they would hold the stop for the whole grace period); closing the server ends them.
UNCOUNTED = frozenset({"/edged.v1.System/Events"})


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer and the function that adds it, plus its full service name for reflection."""

    name: str
    servicer: Any
    add: Any
    file: Any = None  # its FileDescriptor, when not in protobuf's default pool (OIP)


def reflection_pool(files: Sequence[Any]) -> descriptor_pool.DescriptorPool:
    """One pool with ``files`` and what they import, for server reflection: edged's OIP
    messages live in a pool of their own (see ``tools/gen_protos.py``), not the default one."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(fd: Any) -> None:
        if fd.name in added:
            return
        for dep in fd.dependencies:
            add(dep)
        pool.AddSerializedFile(fd.serialized_pb)
        added.add(fd.name)

    for fd in files:
        add(fd)
    return pool


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


class DrainGate(grpc.ServerInterceptor):
    """Counts the calls in flight and, once ``drain()`` began, refuses new ones.

    The check and the count happen inside the call's behaviour (on its RPC thread), never in
    ``intercept_service``: a call that grpc admits but never runs (cancelled before its request
    arrived) must not leave a count behind that a drain would wait for in vain."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._draining = False
        self._in_flight = 0
        self._wrapped = handlers.PerMethod()

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        return self._wrapped.get(method, handler, lambda: self._wrap(handler, method))

    def _wrap(self, handler: Any, method: str) -> Any:
        counted = method not in UNCOUNTED

        @contextmanager
        def gate(context: grpc.ServicerContext) -> Iterator[None]:
            self.enter(context, counted)
            try:
                yield
            finally:
                if counted:
                    self.exit()

        return handlers.wrap(handler, gate)

    def enter(self, context: grpc.ServicerContext, counted: bool) -> None:
        with self._cond:
            refused = self._draining
            if not refused and counted:
                self._in_flight += 1
        if refused:
            context.abort_with_status(to_status(e.Unavailable(
                "edged is stopping; retry on another instance or after it restarts",
                reason="STOPPING")))

    def exit(self) -> None:
        with self._cond:
            self._in_flight -= 1
            if self._in_flight <= 0:
                self._cond.notify_all()

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def drain(self, grace_s: float) -> int:
        """Refuse new calls from now on; wait up to ``grace_s`` for the admitted ones.
        Returns how many are still running."""
        with self._cond:
            self._draining = True
            self._cond.wait_for(lambda: self._in_flight <= 0, timeout=grace_s)
            return self._in_flight


class ConcurrencyWatch(grpc.ServerInterceptor):
    """Tells ``on_reject`` about each call grpc refuses for ``maximum_concurrent_rpcs``.

    grpc refuses those itself (RESOURCE_EXHAUSTED) without running any handler, but it looks
    the handler up through the interceptors first, under the server's lock, right after
    comparing its count of active calls with the limit — so the same comparison here, on the
    same state, tells which calls it is about to refuse. That state is grpc's private
    ``_state``; without it (another grpc version) nothing is counted and nothing breaks."""

    def __init__(self, on_reject: Callable[[], None]) -> None:
        self._on_reject = on_reject
        self.server: Any = None

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        state = getattr(self.server, "_state", None)
        limit = getattr(state, "maximum_concurrent_rpcs", None)
        active = getattr(state, "active_rpc_count", None)
        if isinstance(limit, int) and isinstance(active, int) and active >= limit:
            try:
                self._on_reject()
            except Exception:  # counting must never change what the client gets
                log.exception("concurrency rejection hook failed")
        return continuation(handler_call_details)


class Server:
    """Owns the grpc.Server and the health service; started and stopped by the daemon.

    ``on_concurrency_reject`` is called for each call refused because
    ``listen.max_concurrent_rpcs`` calls are running (for the rejections metric)."""

    def __init__(self, listen: ListenConfig, bindings: Sequence[ServiceBinding],
                 interceptors: Sequence[grpc.ServerInterceptor] = (),
                 tcp_credentials: grpc.ServerCredentials | None = None,
                 on_concurrency_reject: Callable[[], None] | None = None) -> None:
        self.listen = listen
        opts = [
            ("grpc.max_receive_message_length", listen.max_message_bytes),
            ("grpc.max_send_message_length", listen.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self._gate = DrainGate()
        watch = ConcurrencyWatch(on_concurrency_reject) if on_concurrency_reject else None
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=listen.threads, thread_name_prefix="rpc"),
            options=opts,
            interceptors=[*([watch] if watch else []), self._gate, *interceptors],
            maximum_concurrent_rpcs=listen.max_concurrent_rpcs,
        )
        if watch is not None:
            watch.server = self._grpc
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        self._names = [b.name for b in bindings]
        for b in bindings:
            b.add(b.servicer, self._grpc)
        default = descriptor_pool.Default()
        files = [b.file or default.FindServiceByName(b.name).file for b in bindings]
        reflection.enable_server_reflection(
            [*self._names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME], self._grpc,
            pool=reflection_pool([*files, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR]))
        self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        prepare_unix_socket(listen.unix)
        # bind() creates the socket file with 0777 & ~umask: keep it private (owner only)
        # until start() gives it the configured mode and group. The umask is process-wide,
        # but nothing else writes files this early in the daemon's start.
        old_umask = os.umask(0o177)
        try:
            bound = self._grpc.add_insecure_port(f"unix:{listen.unix}")
        finally:
            os.umask(old_umask)
        if not bound:
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

    def drain(self, grace_s: float) -> int:
        """Health NOT_SERVING at once, new calls refused (UNAVAILABLE, reason STOPPING), and
        up to ``grace_s`` for the calls in flight; returns how many did not finish."""
        self.set_serving(False)
        return self._gate.drain(grace_s)

    @property
    def in_flight(self) -> int:
        return self._gate.in_flight

    def stop(self, grace_s: float = 1.0) -> None:
        """Close the listeners; calls still running after ``grace_s`` are cancelled. After
        ``drain()`` only open-ended streams (events --follow) are left."""
        self.set_serving(False)
        self._grpc.stop(grace_s).wait(grace_s + 5)
        try:
            self.listen.unix.unlink()
        except FileNotFoundError:
            pass

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._grpc.wait_for_termination(timeout))
