"""Assemble the gRPC server from the config and the manager (called by the daemon only)."""

from __future__ import annotations

import grp
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from edged import errors as e
from edged.config import Config, ConfigError
from edged.manager.manager import ModelManager
from edged.oip import grpc_service_pb2, grpc_service_pb2_grpc
from edged.service.auth import (
    AuthInterceptor,
    load_token_file,
    read_pem,
    read_private,
    server_credentials,
)
from edged.service.errormap import ErrorHook, ErrorMappingInterceptor
from edged.service.inference_v2 import InferenceServicer
from edged.service.models_v1 import ModelsServicer
from edged.service.server import Server, ServiceBinding
from edged.service.system_v1 import SystemServicer
from edged.v1 import models_pb2, models_pb2_grpc, system_pb2, system_pb2_grpc

log = logging.getLogger("edged.server")

# Calls that change what is installed or loaded: the admin scope when tokens are in force.
MANAGEMENT_METHODS = frozenset(
    [f"/edged.v1.Models/{m}" for m in ("Install", "InstallFrom", "Remove", "SetTier",
                                       "Activate", "Rollback", "Load", "Unload",
                                       "MakeVariant", "SetVariant", "RemoveVariant")]
    + ["/edged.v1.System/Reload",
       "/inference.GRPCInferenceService/RepositoryModelLoad",
       "/inference.GRPCInferenceService/RepositoryModelUnload"])


def check_files(cfg: Config) -> None:
    """What the config names outside itself — token files, TLS files, the socket's group —
    checked before the daemon touches anything, as ``ConfigError`` (the daemon exits 2, which
    the unit's RestartPreventExitStatus= keeps from restarting in a loop; restarting cannot
    fix a file's mode). ``edged config check`` runs the same checks."""
    for i, t in enumerate(cfg.auth.tokens):
        _as_config_error(f"auth.tokens[{i}].file", load_token_file, t.file)
    listen = cfg.listen
    if listen.tcp:
        if listen.tls_key is not None:
            key = _as_config_error("listen.tls_key", read_private, listen.tls_key, "TLS key")
            if b"PRIVATE KEY-----" not in key:
                raise ConfigError("listen.tls_key", f"{listen.tls_key} is not a PEM private key")
        if listen.tls_cert is not None:
            _as_config_error("listen.tls_cert", read_pem, listen.tls_cert, "TLS certificate")
        if listen.tls_client_ca is not None:
            _as_config_error("listen.tls_client_ca", read_pem, listen.tls_client_ca,
                             "client CA")
    if listen.unix_group:
        try:
            grp.getgrnam(listen.unix_group)
        except KeyError:
            raise ConfigError("listen.unix_group", f"group {listen.unix_group!r} does not "
                              f"exist (create it with `groupadd --system "
                              f"{listen.unix_group}`, or unset it)") from None


def _as_config_error(key: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except e.EdgedError as exc:
        raise ConfigError(key, str(exc)) from None


def access_interceptor(cfg: Config) -> AuthInterceptor | None:
    """Token scopes from the config; None when no token is configured and TCP is off."""
    tokens: dict[str, str] = {}
    for t in cfg.auth.tokens:
        try:
            tokens[load_token_file(t.file)] = t.scope
        except (OSError, ValueError) as exc:
            raise e.FailedPrecondition(f"auth.tokens: {t.file}: {exc}") from None
    if not tokens and cfg.listen.tcp is None:
        return None
    return AuthInterceptor(tokens=tokens, management_methods=MANAGEMENT_METHODS,
                           require_admin_token_on_socket=cfg.auth.require_admin_token_on_socket)


def build_server(cfg: Config, manager: ModelManager,
                 reload: Callable[[], tuple[bool, str, int]], metrics: Any = None,
                 env: Mapping[str, str] | None = None) -> Server:
    """``metrics`` (``edged.metrics.Metrics`` or None) counts the rejections decided here:
    full queues and the concurrent-call limit (capacity rejections are the residency's)."""
    bindings = [
        ServiceBinding(system_pb2.DESCRIPTOR.services_by_name["System"].full_name,
                       SystemServicer(manager, reload),
                       system_pb2_grpc.add_SystemServicer_to_server),
        ServiceBinding(models_pb2.DESCRIPTOR.services_by_name["Models"].full_name,
                       ModelsServicer(manager),
                       models_pb2_grpc.add_ModelsServicer_to_server),
        ServiceBinding(
            grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            InferenceServicer(manager),
            grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
            grpc_service_pb2.DESCRIPTOR),
    ]
    interceptors: list[grpc.ServerInterceptor] = []
    auth = access_interceptor(cfg)
    if auth is not None:
        interceptors.append(auth)
    interceptors.append(ErrorMappingInterceptor(
        on_error=_queue_full_counter(manager, metrics) if metrics is not None else None))
    fault = (os.environ if env is None else env).get(FAULT_ENV, "")
    if fault:
        interceptors.append(FaultInjection(fault))
    creds = None
    if cfg.listen.tcp:
        assert cfg.listen.tls_cert is not None and cfg.listen.tls_key is not None
        try:
            creds = server_credentials(cfg.listen.tls_cert, cfg.listen.tls_key,
                                       cfg.listen.tls_client_ca)
        except (OSError, ValueError) as exc:
            raise e.FailedPrecondition(f"listen.tls: {exc}") from None
    on_limit = ((lambda: metrics.rejection("", "concurrency_limit"))
                if metrics is not None else None)
    return Server(cfg.listen, bindings, interceptors=interceptors, tcp_credentials=creds,
                  on_concurrency_reject=on_limit)


def _queue_full_counter(manager: ModelManager, metrics: Any) -> ErrorHook:
    def on_error(method: str, request: Any, err: e.EdgedError) -> None:
        if isinstance(err, e.ResourceExhausted) and err.reason == "QUEUE_FULL":
            metrics.rejection(_tier_of(manager, getattr(request, "model_name", "")),
                              "queue_full")
    return on_error


def _tier_of(manager: ModelManager, name: str) -> str:
    try:
        return str(manager.get_model(name)[0].tier) if name else ""
    except e.EdgedError:
        return ""


# Tests only: EDGED_TEST_FAULT=/pkg.Service/Method makes that method raise an unexpected
# exception, to see it answered INTERNAL with an error id that is also in the log (no real
# call can be counted on to fail unexpectedly for long). Unset, nothing is installed.
FAULT_ENV = "EDGED_TEST_FAULT"


class FaultInjection(grpc.ServerInterceptor):
    def __init__(self, method: str) -> None:
        self.method = method
        log.warning("%s is set: %s will fail with an unexpected error", FAULT_ENV, method)

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method != self.method \
                or handler.unary_unary is None:
            return handler

        def fail(request: Any, context: grpc.ServicerContext) -> Any:
            raise RuntimeError(f"fault injected by {FAULT_ENV}")

        return handler._replace(unary_unary=fail)
