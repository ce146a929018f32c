"""Assemble the gRPC server from the config and the manager (called by the daemon only)."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from edged import errors as e
from edged.config import Config
from edged.manager.manager import ModelManager
from edged.oip import grpc_service_pb2, grpc_service_pb2_grpc
from edged.service.auth import AuthInterceptor, load_token_file, server_credentials
from edged.service.errormap import ErrorMappingInterceptor
from edged.service.inference_v2 import InferenceServicer
from edged.service.models_v1 import ModelsServicer
from edged.service.server import Server, ServiceBinding
from edged.service.system_v1 import SystemServicer
from edged.v1 import models_pb2, models_pb2_grpc, system_pb2, system_pb2_grpc

# Calls that change what is installed or loaded: the admin scope when tokens are in force.
MANAGEMENT_METHODS = frozenset(
    [f"/edged.v1.Models/{m}" for m in ("Install", "InstallFrom", "Remove", "SetTier",
                                       "Activate", "Rollback", "Load", "Unload")]
    + ["/edged.v1.System/Reload",
       "/inference.GRPCInferenceService/RepositoryModelLoad",
       "/inference.GRPCInferenceService/RepositoryModelUnload"])


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
                 reload: Callable[[], tuple[bool, str, int]]) -> Server:
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
            grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server),
    ]
    interceptors: list[grpc.ServerInterceptor] = []
    auth = access_interceptor(cfg)
    if auth is not None:
        interceptors.append(auth)
    interceptors.append(ErrorMappingInterceptor())
    creds = None
    if cfg.listen.tcp:
        assert cfg.listen.tls_cert is not None and cfg.listen.tls_key is not None
        try:
            creds = server_credentials(cfg.listen.tls_cert, cfg.listen.tls_key,
                                       cfg.listen.tls_client_ca)
        except (OSError, ValueError) as exc:
            raise e.FailedPrecondition(f"listen.tls: {exc}") from None
    return Server(cfg.listen, bindings, interceptors=interceptors, tcp_credentials=creds)
