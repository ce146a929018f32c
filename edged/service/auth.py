"""Access control: who may call what, decided per call, on every listener of one server.

The rules (SPEC "Access"):

* Unix socket: the socket's group and mode 0660 are the gate, so no token is needed — unless
  ``require_admin_token_on_socket`` is set, then management calls need an admin token there.
* TCP: TLS, and every call carries ``authorization: Bearer <token>`` (or, if configured, a
  verified client certificate stands in for it). Plain-text TCP is refused outright: a bearer
  token must never cross a network in the clear.
* Management methods need the ``admin`` scope; everything else needs ``infer`` or ``admin``.
* A token that is sent is checked everywhere: a wrong one is UNAUTHENTICATED even on the socket
  (a client with a stale token learns so at once, not when it moves to TCP).

One interceptor serves a server that listens on both: gRPC only tells the transport to the
handler (``context.peer()`` is ``unix:…`` or ``ipv4:…``/``ipv6:…``), not to the interceptor,
so the interceptor wraps each method handler — unary and streaming alike — with a check that
runs before the servicer. A denied call never reaches the servicer, so its error is the same
whether the model it names exists or not, and the message never names the request's content.

Tokens are compared as SHA-256 digests with ``hmac.compare_digest`` over all configured tokens,
so neither the time to answer nor an early exit tells how much of a guess was right.
"""

from __future__ import annotations

import enum
import errno
import grp
import hashlib
import hmac
import logging
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from edged import errors as e
from edged.rpc_errors import to_status
from edged.service import handlers

log = logging.getLogger("edged.auth")

SCOPE_ADMIN = "admin"
SCOPE_INFER = "infer"
SCOPES = (SCOPE_ADMIN, SCOPE_INFER)


class Transport(enum.Enum):
    UNIX = "unix"
    TCP = "tcp"


def transport_of(peer: str) -> Transport:
    """The transport of a call from ``context.peer()``; anything not a Unix socket counts as
    TCP, the stricter case (an unknown transport must not inherit the socket's openness)."""
    return Transport.UNIX if peer.startswith(("unix:", "unix-abstract:")) else Transport.TCP


class AccessPolicy:
    """The decision alone, without grpc plumbing: ``check`` returns the error to send, or None.

    ``require_token`` demands a token for every call on every transport (TCP always needs one).
    ``open_methods`` need no token anywhere (e.g. ``/grpc.health.v1.Health/Check`` for a
    fleet's probes); keep it empty unless such a probe needs it.
    ``client_cert_scope`` is the scope a verified TLS client certificate grants on TCP when the
    call carries no token (mTLS instead of a token); None: certificates grant nothing.
    """

    def __init__(self, *, tokens: Mapping[str, str], management_methods: frozenset[str],
                 require_token: bool = False, require_admin_token_on_socket: bool = False,
                 open_methods: frozenset[str] = frozenset(),
                 client_cert_scope: str | None = None) -> None:
        for token, scope in tokens.items():
            if scope not in SCOPES:
                raise ValueError(f"token scope must be one of {SCOPES}, not {scope!r}")
            if not token or token != token.strip() or any(c.isspace() for c in token):
                raise ValueError("a token must be non-empty and contain no whitespace")
        if client_cert_scope is not None and client_cert_scope not in SCOPES:
            raise ValueError(f"client_cert_scope must be one of {SCOPES} or None")
        self._digests = [(_digest(t), s) for t, s in tokens.items()]
        self.management_methods = frozenset(management_methods)
        self.require_token = require_token
        self.require_admin_token_on_socket = require_admin_token_on_socket
        self.open_methods = frozenset(open_methods)
        self.client_cert_scope = client_cert_scope

    def scope_of(self, token: str) -> str | None:
        """The scope of ``token``, in time independent of which token (if any) matches."""
        digest = _digest(token)
        found = None
        for known, scope in self._digests:
            if hmac.compare_digest(digest, known):  # no early exit: every token is compared
                found = scope
        return found

    def check(self, *, method: str, transport: Transport, authorization: Sequence[str],
              tls: bool = False, client_cert: bool = False) -> e.EdgedError | None:
        """The error for this call, or None to let it through.

        ``authorization`` holds the call's ``authorization`` metadata values; ``tls`` and
        ``client_cert`` say whether the connection is TLS and presented a verified certificate.
        """
        if method in self.open_methods:
            return None
        if transport is Transport.TCP and not tls:
            return e.Unauthenticated("TCP connections must use TLS")
        management = method in self.management_methods
        granted: str | None = None
        if authorization:
            token = _bearer(authorization)
            granted = self.scope_of(token) if token is not None else None
            if granted is None:  # a wrong credential is an error even where none is needed
                return e.Unauthenticated("the bearer token is not valid")
        elif transport is Transport.TCP and client_cert:
            granted = self.client_cert_scope
        gated = (transport is Transport.TCP or self.require_token
                 or (management and self.require_admin_token_on_socket))
        if not gated:
            return None
        if granted is None:
            return e.Unauthenticated(
                "this call needs a bearer token (metadata 'authorization: Bearer <token>')")
        if management and granted != SCOPE_ADMIN:
            return e.PermissionDenied("this call needs a token with the admin scope")
        return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _bearer(values: Sequence[str]) -> str | None:
    """The token of a single well-formed ``Bearer`` header; None for anything else."""
    if len(values) != 1:
        return None
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class AuthInterceptor(grpc.ServerInterceptor):
    """Applies an ``AccessPolicy`` to every call; put it first in the server's interceptors.

    The keyword arguments are ``AccessPolicy``'s. One instance serves a server listening on the
    Unix socket and on TCP at once: the transport is read per call from ``context.peer()``.
    """

    def __init__(self, *, tokens: Mapping[str, str], management_methods: frozenset[str],
                 require_token: bool = False, require_admin_token_on_socket: bool = False,
                 open_methods: frozenset[str] = frozenset(),
                 client_cert_scope: str | None = None) -> None:
        self.policy = AccessPolicy(
            tokens=tokens, management_methods=management_methods, require_token=require_token,
            require_admin_token_on_socket=require_admin_token_on_socket,
            open_methods=open_methods, client_cert_scope=client_cert_scope)
        self._wrapped = handlers.PerMethod()

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        return self._wrapped.get(method, handler, lambda: self._wrap(handler, method))

    def _wrap(self, handler: Any, method: str) -> Any:
        def guard(context: grpc.ServicerContext) -> None:
            # (the call's own metadata, as handler_call_details has it: the wrapper is per
            # method, made once, see handlers.PerMethod)
            authorization = [str(v) for k, v in context.invocation_metadata() or ()
                             if k == "authorization"]
            auth = context.auth_context()
            denial = self.policy.check(
                method=method, transport=transport_of(context.peer()),
                authorization=authorization,
                tls=auth.get("transport_security_type") == [b"ssl"],
                client_cert=context.peer_identities() is not None)
            if denial is not None:
                log.info("%s from %s denied: %s", method, context.peer(), denial)
                context.abort_with_status(to_status(denial))

        @contextmanager
        def guarded(context: grpc.ServicerContext) -> Iterator[None]:
            guard(context)  # aborts (raises) when denied; for streams, before the first message
            yield

        return handlers.wrap(handler, guarded)


def read_private(path: Path | str, what: str) -> bytes:
    """Read a secret, refusing one that every local user could read or replace."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise e.FailedPrecondition(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise e.FailedPrecondition(f"{what} {path} is not a regular file")
        if st.st_mode & 0o007:
            raise e.FailedPrecondition(
                f"{what} {path} is accessible to every user (mode {stat.S_IMODE(st.st_mode):04o});"
                f" make it private with: chmod o-rwx {path}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def load_token_file(path: Path | str) -> str:
    """The token in ``path`` (surrounding whitespace stripped); refuses world-accessible files."""
    token = read_private(path, "token file").decode("utf-8", errors="replace").strip()
    if not token:
        raise e.FailedPrecondition(f"token file {path} is empty")
    if any(c.isspace() for c in token):
        raise e.FailedPrecondition(f"token file {path} must hold one token without whitespace")
    return token


def server_credentials(cert: Path | str, key: Path | str,
                       client_ca: Path | str | None = None) -> grpc.ServerCredentials:
    """TLS credentials for the TCP listener; with ``client_ca``, clients must present a
    certificate it signed (mTLS). The private key must not be readable by every user."""
    key_pem = read_private(key, "TLS key")
    cert_pem = read_pem(cert, "TLS certificate")
    ca_pem = read_pem(client_ca, "client CA") if client_ca is not None else None
    if b"PRIVATE KEY-----" not in key_pem:
        raise e.FailedPrecondition(f"TLS key {key} is not a PEM private key")
    return grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=ca_pem,
                                       require_client_auth=ca_pem is not None)


def read_pem(path: Path | str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise e.FailedPrecondition(f"cannot read {what} {path}: {exc.strerror}") from exc
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise e.FailedPrecondition(f"{what} {path} is not a PEM certificate")
    return data


def apply_socket_permissions(path: Path | str, mode: int, group: str | None) -> None:
    """Give the socket to ``group`` (by name) and set ``mode``: the group is who may connect.

    The daemon runs unprivileged, so it can only hand the socket to a group its user is in
    (its own, or one of ``SupplementaryGroups=``); both failures get a message that says so.
    """
    if not 0 <= mode <= 0o777:
        raise ValueError(f"socket mode must be within 0o777, not {mode:o}")
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise e.FailedPrecondition(
                f"listen.unix_group: group {group!r} does not exist (create it with "
                f"`groupadd --system {group}`, or unset listen.unix_group)") from None
        try:
            os.chown(path, -1, gid)
        except OSError as exc:
            why = (f"the daemon's user is not a member of it (add the group to "
                   f"SupplementaryGroups= or `usermod -aG {group} edged`)"
                   if exc.errno == errno.EPERM else exc.strerror)
            raise e.FailedPrecondition(f"cannot give {path} to group {group!r}: {why}") from exc
    if mode & 0o007:
        log.warning("socket %s is open to every local user (mode %04o)", path, mode)
    os.chmod(path, mode)
