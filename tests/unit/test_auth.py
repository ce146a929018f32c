"""Access control over real gRPC: one server listening on a Unix socket, on TCP with TLS and on
plain TCP, plus an mTLS server; health service plus fake management / streaming methods.

Every denial is checked for its status code, its ``ErrorInfo`` detail (through the client's
error table) and for never having reached the servicer."""

from __future__ import annotations

import errno
import functools
import grp
import os
import secrets
import socket
import stat
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest_certs import Pki, make_pki
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edged import errors as e
from edged.rpc_errors import from_rpc_error
from edged.service.auth import (
    AccessPolicy,
    AuthInterceptor,
    Transport,
    apply_socket_permissions,
    load_token_file,
    server_credentials,
    transport_of,
)

INSTALL = "/edged.v1.Models/Install"  # management, unary-unary
WATCH = "/edged.v1.Models/Watch"  # management, unary-stream
UPLOAD = "/edged.v1.Models/Upload"  # management, stream-unary
STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"  # inference, stream-stream
MANAGEMENT = frozenset({INSTALL, WATCH, UPLOAD})
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
INSTALLED = {b"existing-model"}

ADMIN = secrets.token_hex(16)
INFER = secrets.token_hex(16)
TOKENS = {ADMIN: "admin", INFER: "infer"}


@dataclass
class Served:
    server: grpc.Server
    unix: str
    tls_port: int = 0
    plain_port: int = 0
    calls: list[str] = field(default_factory=list)


def _handlers(calls: list[str]) -> grpc.GenericRpcHandler:
    def install(req: bytes, ctx: grpc.ServicerContext) -> bytes:
        calls.append(INSTALL)
        if req not in INSTALLED:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"model {req.decode()} is not installed")
        return b"installed " + req

    def watch(req: bytes, ctx: grpc.ServicerContext) -> Iterator[bytes]:
        calls.append(WATCH)
        yield from (b"event-1", b"event-2")

    def upload(reqs: Iterator[bytes], ctx: grpc.ServicerContext) -> bytes:
        calls.append(UPLOAD)
        return b"".join(reqs)

    def stream_infer(reqs: Iterator[bytes], ctx: grpc.ServicerContext) -> Iterator[bytes]:
        calls.append(STREAM_INFER)
        for r in reqs:
            yield r.upper()

    models = grpc.method_handlers_generic_handler("edged.v1.Models", {
        "Install": grpc.unary_unary_rpc_method_handler(install),
        "Watch": grpc.unary_stream_rpc_method_handler(watch),
        "Upload": grpc.stream_unary_rpc_method_handler(upload)})
    oip = grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(stream_infer)})
    return [models, oip]  # type: ignore[return-value]


def _serve(sock: Path, interceptor: AuthInterceptor, *, tls: grpc.ServerCredentials | None = None,
           plain_tcp: bool = False) -> Served:
    calls: list[str] = []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[interceptor])
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers(_handlers(calls))  # type: ignore[arg-type]
    served = Served(server, f"unix:{sock}", calls=calls)
    assert server.add_insecure_port(served.unix)
    if tls is not None:
        served.tls_port = server.add_secure_port("127.0.0.1:0", tls)
    if plain_tcp:
        served.plain_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return served


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def served(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    sock = tmp_path_factory.mktemp("sock") / "edged.sock"
    s = _serve(sock, AuthInterceptor(tokens=TOKENS, management_methods=MANAGEMENT),
               tls=server_credentials(pki.server_cert, pki.server_key), plain_tcp=True)
    yield s
    s.server.stop(None)


@pytest.fixture
def calls(served: Served) -> list[str]:
    served.calls.clear()
    return served.calls


def _tls(pki: Pki, port: int, *, client: bool = False,
         root: bytes | None = None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=root if root is not None else pki.read("ca_cert"),
        private_key=pki.read("client_key") if client else None,
        certificate_chain=pki.read("client_cert") if client else None)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds)


def _md(token: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")] if token else []


def _health(ch: grpc.Channel, token: str | None = None) -> int:
    stub = health_pb2_grpc.HealthStub(ch)
    return stub.Check(health_pb2.HealthCheckRequest(), timeout=10, metadata=_md(token)).status


def _install(ch: grpc.Channel, token: str | None = None, model: bytes = b"existing-model") -> bytes:
    return ch.unary_unary(INSTALL)(model, timeout=10, metadata=_md(token))  # type: ignore[no-any-return]


def _denied(fn: Callable[[], Any]) -> tuple[grpc.StatusCode, e.EdgedError]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), from_rpc_error(info.value)  # type: ignore[attr-defined]


SERVING = health_pb2.HealthCheckResponse.SERVING


# -- the Unix socket ---------------------------------------------------------------------------
def test_socket_needs_no_token_for_anything(served: Served, calls: list[str]) -> None:
    with grpc.insecure_channel(served.unix) as ch:
        assert _health(ch) == SERVING
        assert _install(ch) == b"installed existing-model"
    assert calls == [INSTALL]


def test_socket_rejects_a_wrong_token_even_though_none_is_needed(served: Served,
                                                                  calls: list[str]) -> None:
    with grpc.insecure_channel(served.unix) as ch:
        code, err = _denied(lambda: _health(ch, "not-a-token"))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert isinstance(err, e.Unauthenticated) and err.reason == "UNAUTHENTICATED"
    assert calls == []


# -- TCP + TLS -----------------------------------------------------------------------------------
def test_tcp_without_token_is_unauthenticated(pki: Pki, served: Served, calls: list[str]) -> None:
    with _tls(pki, served.tls_port) as ch:
        for call in (lambda: _health(ch), lambda: _install(ch)):
            code, err = _denied(call)
            assert code is grpc.StatusCode.UNAUTHENTICATED
            assert isinstance(err, e.Unauthenticated)
            assert "Bearer" in err.message
    assert calls == []


def test_tcp_infer_token_may_infer_but_not_manage(pki: Pki, served: Served,
                                                   calls: list[str]) -> None:
    with _tls(pki, served.tls_port) as ch:
        assert _health(ch, INFER) == SERVING
        code, err = _denied(lambda: _install(ch, INFER))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert isinstance(err, e.PermissionDenied) and err.reason == "PERMISSION_DENIED"
    assert "admin" in err.message
    assert calls == []


def test_tcp_admin_token_may_do_everything(pki: Pki, served: Served, calls: list[str]) -> None:
    with _tls(pki, served.tls_port) as ch:
        assert _health(ch, ADMIN) == SERVING
        assert _install(ch, ADMIN) == b"installed existing-model"
    assert calls == [INSTALL]


def test_each_call_is_judged_by_its_own_token(pki: Pki, served: Served, calls: list[str]) -> None:
    """The interceptors wrap a method's handler once (handlers.PerMethod): the token checked
    must still be each call's own, never one seen by an earlier call of the same method."""
    with _tls(pki, served.tls_port) as ch:
        for token, allowed in ((ADMIN, True), (INFER, False), (None, False), (ADMIN, True),
                               ("not-a-token", False)):
            if allowed:
                assert _install(ch, token) == b"installed existing-model"
            else:
                code, _ = _denied(functools.partial(_install, ch, token))
                assert code in (grpc.StatusCode.PERMISSION_DENIED,
                                grpc.StatusCode.UNAUTHENTICATED), token
    assert calls == [INSTALL, INSTALL]


def test_standard_access_token_call_credentials_work(pki: Pki, served: Served,
                                                      calls: list[str]) -> None:
    """What other gRPC clients use: call credentials sending ``authorization: Bearer``."""
    creds = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(root_certificates=pki.read("ca_cert")),
        grpc.access_token_call_credentials(ADMIN))
    with grpc.secure_channel(f"localhost:{served.tls_port}", creds) as ch:
        assert _install(ch) == b"installed existing-model"
    assert calls == [INSTALL]


def test_bad_or_malformed_tokens_are_unauthenticated(pki: Pki, served: Served,
                                                     calls: list[str]) -> None:
    stub_md = [[("authorization", f"Bearer {ADMIN}x")], [("authorization", f"Basic {ADMIN}")],
               [("authorization", "Bearer")],
               [("authorization", f"Bearer {INFER}"), ("authorization", f"Bearer {ADMIN}")]]
    with _tls(pki, served.tls_port) as ch:
        check = health_pb2_grpc.HealthStub(ch).Check
        for md in stub_md:
            code, _ = _denied(functools.partial(check, health_pb2.HealthCheckRequest(),
                                                timeout=10, metadata=md))
            assert code is grpc.StatusCode.UNAUTHENTICATED, md
        # the scheme is case-insensitive (RFC 7235)
        assert check(health_pb2.HealthCheckRequest(), timeout=10,
                     metadata=[("authorization", f"bearer {INFER}")]).status == SERVING
    assert calls == []


def test_denials_do_not_reveal_which_models_exist(pki: Pki, served: Served,
                                                  calls: list[str]) -> None:
    with _tls(pki, served.tls_port) as ch:
        for token in (None, INFER):
            a = _denied(functools.partial(_install, ch, token, b"existing-model"))
            b = _denied(functools.partial(_install, ch, token, b"no-such-model"))
            assert a[0] == b[0] and a[1].message == b[1].message
            assert "existing-model" not in a[1].message and "no-such" not in b[1].message
        # with the right token the difference shows: auth runs before the servicer, not after
        code, _ = _denied(lambda: _install(ch, ADMIN, b"no-such-model"))
    assert code is grpc.StatusCode.NOT_FOUND
    assert calls == [INSTALL]


def test_streaming_methods_are_guarded_too(pki: Pki, served: Served, calls: list[str]) -> None:
    with _tls(pki, served.tls_port) as ch:
        watch, upload = ch.unary_stream(WATCH), ch.stream_unary(UPLOAD)
        infer = ch.stream_stream(STREAM_INFER)
        code, _ = _denied(lambda: list(watch(b"", timeout=10, metadata=_md(INFER))))
        assert code is grpc.StatusCode.PERMISSION_DENIED
        code, _ = _denied(lambda: upload(iter([b"a", b"b"]), timeout=10, metadata=_md(INFER)))
        assert code is grpc.StatusCode.PERMISSION_DENIED
        code, _ = _denied(lambda: list(infer(iter([b"x"]), timeout=10)))
        assert code is grpc.StatusCode.UNAUTHENTICATED
        assert calls == []
        assert list(watch(b"", timeout=10, metadata=_md(ADMIN))) == [b"event-1", b"event-2"]
        assert upload(iter([b"a", b"b"]), timeout=10, metadata=_md(ADMIN)) == b"ab"
        assert list(infer(iter([b"x", b"y"]), timeout=10, metadata=_md(INFER))) == [b"X", b"Y"]
    assert calls == [WATCH, UPLOAD, STREAM_INFER]


def test_plaintext_tcp_is_refused_even_with_an_admin_token(served: Served,
                                                           calls: list[str]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{served.plain_port}") as ch:
        code, err = _denied(lambda: _install(ch, ADMIN))
    assert code is grpc.StatusCode.UNAUTHENTICATED and "TLS" in err.message
    assert calls == []


def test_tls_client_without_our_ca_cannot_connect(pki: Pki, served: Served, tmp_path: Path,
                                                  calls: list[str]) -> None:
    other = make_pki(tmp_path / "other", "other CA")
    wrong_ca = grpc.ssl_channel_credentials(root_certificates=other.read("ca_cert"))
    system_roots = grpc.ssl_channel_credentials()
    for creds in (wrong_ca, system_roots):
        with grpc.secure_channel(f"127.0.0.1:{served.tls_port}", creds) as ch:
            code, _ = _denied(functools.partial(_health, ch, ADMIN))
        assert code is grpc.StatusCode.UNAVAILABLE
    assert calls == []


# -- mTLS ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mtls(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    sock = tmp_path_factory.mktemp("msock") / "edged.sock"
    s = _serve(sock, AuthInterceptor(tokens=TOKENS, management_methods=MANAGEMENT,
                                     client_cert_scope="infer"),
               tls=server_credentials(pki.server_cert, pki.server_key, client_ca=pki.ca_cert))
    yield s
    s.server.stop(None)


def test_mtls_without_client_certificate_fails(pki: Pki, mtls: Served) -> None:
    with _tls(pki, mtls.tls_port) as ch:
        code, _ = _denied(lambda: _health(ch, ADMIN))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert mtls.calls == []


def test_mtls_client_certificate_from_another_ca_fails(pki: Pki, mtls: Served,
                                                       tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other", "other CA")
    creds = grpc.ssl_channel_credentials(pki.read("ca_cert"), other.read("client_key"),
                                         other.read("client_cert"))
    with grpc.secure_channel(f"127.0.0.1:{mtls.tls_port}", creds) as ch:
        code, _ = _denied(lambda: _health(ch, ADMIN))
    assert code is grpc.StatusCode.UNAVAILABLE


def test_mtls_certificate_grants_its_scope_and_a_token_still_raises_it(pki: Pki,
                                                                       mtls: Served) -> None:
    mtls.calls.clear()
    with _tls(pki, mtls.tls_port, client=True) as ch:
        assert _health(ch) == SERVING  # the certificate alone: infer scope
        code, _ = _denied(lambda: _install(ch))
        assert code is grpc.StatusCode.PERMISSION_DENIED
        assert _install(ch, ADMIN) == b"installed existing-model"
    assert mtls.calls == [INSTALL]


# -- socket options -----------------------------------------------------------------------------
def test_admin_token_on_socket_when_configured(tmp_path: Path) -> None:
    s = _serve(tmp_path / "a.sock", AuthInterceptor(
        tokens=TOKENS, management_methods=MANAGEMENT, require_admin_token_on_socket=True))
    try:
        with grpc.insecure_channel(s.unix) as ch:
            assert _health(ch) == SERVING  # inference stays open to the socket's group
            assert _denied(lambda: _install(ch))[0] is grpc.StatusCode.UNAUTHENTICATED
            assert _denied(lambda: _install(ch, INFER))[0] is grpc.StatusCode.PERMISSION_DENIED
            assert _install(ch, ADMIN) == b"installed existing-model"
        assert s.calls == [INSTALL]
    finally:
        s.server.stop(None)


def test_require_token_applies_to_the_socket_too(tmp_path: Path) -> None:
    s = _serve(tmp_path / "r.sock", AuthInterceptor(
        tokens=TOKENS, management_methods=MANAGEMENT, require_token=True,
        open_methods=frozenset({HEALTH_CHECK})))
    try:
        with grpc.insecure_channel(s.unix) as ch:
            assert _health(ch) == SERVING  # an open method
            infer = ch.stream_stream(STREAM_INFER)
            code, _ = _denied(lambda: list(infer(iter([b"x"]), timeout=10)))
            assert code is grpc.StatusCode.UNAUTHENTICATED
            assert list(infer(iter([b"x"]), timeout=10, metadata=_md(INFER))) == [b"X"]
    finally:
        s.server.stop(None)


# -- the decision table, without a server --------------------------------------------------------
U, T = Transport.UNIX, Transport.TCP
OK, UNAUTH, DENIED = None, e.Unauthenticated, e.PermissionDenied


@pytest.mark.parametrize(("transport", "method", "token", "flags", "expected"), [
    (U, "/x/Infer", None, {}, OK),
    (U, INSTALL, None, {}, OK),
    (U, INSTALL, INFER, {}, OK),
    (U, INSTALL, None, {"require_admin_token_on_socket": True}, UNAUTH),
    (U, INSTALL, INFER, {"require_admin_token_on_socket": True}, DENIED),
    (U, INSTALL, ADMIN, {"require_admin_token_on_socket": True}, OK),
    (U, "/x/Infer", None, {"require_admin_token_on_socket": True}, OK),
    (U, "/x/Infer", None, {"require_token": True}, UNAUTH),
    (U, "/x/Infer", "wrong", {}, UNAUTH),
    (T, "/x/Infer", None, {}, UNAUTH),
    (T, "/x/Infer", INFER, {}, OK),
    (T, INSTALL, INFER, {}, DENIED),
    (T, INSTALL, ADMIN, {}, OK),
    (T, HEALTH_CHECK, None, {"open_methods": frozenset({HEALTH_CHECK})}, OK),
])
def test_policy_table(transport: Transport, method: str, token: str | None,
                      flags: dict[str, Any], expected: type[e.EdgedError] | None) -> None:
    policy = AccessPolicy(tokens=TOKENS, management_methods=MANAGEMENT, **flags)
    got = policy.check(method=method, transport=transport, authorization=[
        f"Bearer {token}"] if token else [], tls=True)
    assert (type(got) if got else None) is expected


def test_client_certificate_counts_only_on_tcp_and_only_when_configured() -> None:
    def check(policy: AccessPolicy, method: str = "/x/Infer") -> e.EdgedError | None:
        return policy.check(method=method, transport=T, authorization=[], tls=True,
                            client_cert=True)

    plain = AccessPolicy(tokens=TOKENS, management_methods=MANAGEMENT)
    mtls = AccessPolicy(tokens=TOKENS, management_methods=MANAGEMENT, client_cert_scope="infer")
    assert isinstance(check(plain), e.Unauthenticated)
    assert check(mtls) is None
    assert isinstance(check(mtls, INSTALL), e.PermissionDenied)


def test_policy_validates_its_inputs() -> None:
    with pytest.raises(ValueError, match="scope"):
        AccessPolicy(tokens={"t" * 32: "root"}, management_methods=MANAGEMENT)
    with pytest.raises(ValueError, match="whitespace"):
        AccessPolicy(tokens={"two words": "admin"}, management_methods=MANAGEMENT)
    with pytest.raises(ValueError, match="client_cert_scope"):
        AccessPolicy(tokens={}, management_methods=MANAGEMENT, client_cert_scope="all")
    policy = AccessPolicy(tokens=TOKENS, management_methods=MANAGEMENT)
    assert (policy.scope_of(ADMIN), policy.scope_of(INFER), policy.scope_of(ADMIN[:-1])) == (
        "admin", "infer", None)


@pytest.mark.parametrize(("peer", "transport"), [
    ("unix:", U), ("unix:/run/edged/edged.sock", U), ("unix-abstract:edged", U),
    ("ipv4:127.0.0.1:5000", T), ("ipv6:[::1]:5000", T), ("vsock:3:5000", T), ("", T)])
def test_transport_of_peer(peer: str, transport: Transport) -> None:
    assert transport_of(peer) is transport


# -- secrets ---------------------------------------------------------------------------------------
def _secret(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_load_token_file_strips_and_accepts_private_modes(tmp_path: Path) -> None:
    for mode in (0o600, 0o640, 0o400):
        assert load_token_file(_secret(tmp_path / "t", f"  {ADMIN}\n", mode)) == ADMIN


@pytest.mark.parametrize(("text", "mode", "match"), [
    (ADMIN, 0o644, r"accessible to every user \(mode 0644\).*chmod o-rwx"),
    (ADMIN, 0o602, "accessible to every user"),
    ("\n  \n", 0o600, "is empty"),
    ("two tokens\n", 0o600, "without whitespace"),
])
def test_load_token_file_refuses(tmp_path: Path, text: str, mode: int, match: str) -> None:
    path = _secret(tmp_path / "t", text, mode)
    with pytest.raises(e.FailedPrecondition, match=match) as info:
        load_token_file(path)
    assert str(path) in str(info.value)


def test_load_token_file_missing_or_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(e.FailedPrecondition, match="cannot read token file"):
        load_token_file(tmp_path / "absent")
    with pytest.raises(e.FailedPrecondition, match="not a regular file"):
        load_token_file(tmp_path)


def test_server_credentials_checks_its_files(pki: Pki, tmp_path: Path) -> None:
    assert isinstance(server_credentials(pki.server_cert, pki.server_key, pki.ca_cert),
                      grpc.ServerCredentials)
    open_key = _secret(tmp_path / "k.pem", pki.read("server_key").decode(), 0o644)
    with pytest.raises(e.FailedPrecondition, match="accessible to every user"):
        server_credentials(pki.server_cert, open_key)
    with pytest.raises(e.FailedPrecondition, match="not a PEM certificate"):
        server_credentials(pki.server_key, pki.server_key)
    with pytest.raises(e.FailedPrecondition, match="not a PEM private key"):
        server_credentials(pki.server_cert, _secret(tmp_path / "c", pki.read(
            "server_cert").decode(), 0o600))


# -- the socket's permissions ---------------------------------------------------------------------
def _bound_socket(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    return s


def test_apply_socket_permissions_sets_group_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "edged.sock"
    with _bound_socket(path):
        group = grp.getgrgid(os.getegid()).gr_name
        apply_socket_permissions(path, 0o660, group)
        st = path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == os.getegid()


def test_apply_socket_permissions_unknown_group_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "edged.sock"
    with _bound_socket(path), pytest.raises(e.FailedPrecondition,
                                            match="group 'no-such-group-x' does not exist"):
        apply_socket_permissions(path, 0o660, "no-such-group-x")


def test_apply_socket_permissions_group_the_user_is_not_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chgrp to a group the (unprivileged) daemon user is not in fails with EPERM; the error
    says how to fix it. EPERM is simulated: these tests may run as root, who is never refused."""
    path = tmp_path / "edged.sock"

    def chown(*_: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "chown", chown)
    with _bound_socket(path), pytest.raises(e.FailedPrecondition) as info:
        apply_socket_permissions(path, 0o660, grp.getgrgid(os.getegid()).gr_name)
    assert "is not a member" in str(info.value) and "SupplementaryGroups=" in str(info.value)


# -- next to the error-mapping interceptor ---------------------------------------------------------
@pytest.mark.parametrize("auth_first", [True, False])
def test_works_with_the_error_mapping_interceptor_in_either_order(tmp_path: Path,
                                                                  auth_first: bool) -> None:
    from edged.service.errormap import ErrorMappingInterceptor

    def lookup(req: bytes, ctx: grpc.ServicerContext) -> bytes:
        raise e.NotFound("model 'x' is not installed", field="name")

    auth = AuthInterceptor(tokens=TOKENS, management_methods=frozenset({"/t.M/Lookup"}),
                           require_admin_token_on_socket=True)
    chain = [auth, ErrorMappingInterceptor()] if auth_first else [ErrorMappingInterceptor(), auth]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=chain)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "t.M", {"Lookup": grpc.unary_unary_rpc_method_handler(lookup)})])
    server.add_insecure_port(f"unix:{tmp_path / 'm.sock'}")
    server.start()
    try:
        with grpc.insecure_channel(f"unix:{tmp_path / 'm.sock'}") as ch:
            call = ch.unary_unary("/t.M/Lookup")
            _, err = _denied(functools.partial(call, b"", timeout=10))
            assert isinstance(err, e.Unauthenticated)
            _, err = _denied(functools.partial(call, b"", timeout=10, metadata=_md(ADMIN)))
            assert isinstance(err, e.NotFound) and err.field == "name"
    finally:
        server.stop(None)
