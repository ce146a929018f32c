"""Assemble the gRPC server from the config and the manager (called by the daemon only)."""

from __future__ import annotations

from collections.abc import Callable

from edged.config import Config
from edged.manager.manager import ModelManager
from edged.oip import grpc_service_pb2, grpc_service_pb2_grpc
from edged.service.errormap import ErrorMappingInterceptor
from edged.service.inference_v2 import InferenceServicer
from edged.service.models_v1 import ModelsServicer
from edged.service.server import Server, ServiceBinding
from edged.service.system_v1 import SystemServicer
from edged.v1 import models_pb2, models_pb2_grpc, system_pb2, system_pb2_grpc


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
    return Server(cfg.listen, bindings, interceptors=[ErrorMappingInterceptor()])
