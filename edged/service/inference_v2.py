"""``inference.GRPCInferenceService`` (Open Inference Protocol v2): translation only.

Health, metadata, ModelInfer, the repository extension (mapped onto edged's load/unload) and the
system shared-memory extension. Decisions — whether a model may load, which version answers —
are the manager's.
"""

from __future__ import annotations

import grpc

from edged import __version__
from edged import errors as e
from edged.manager.manager import ModelManager
from edged.oip import grpc_service_pb2 as oip
from edged.oip import grpc_service_pb2_grpc as oip_grpc
from edged.service import tensors
from edged.service.auth import Transport, transport_of

EXTENSIONS = ["model_repository", "system_shared_memory", "edged"]


def _version(text: str, field: str = "version") -> int | None:
    if not text:
        return None
    try:
        v = int(text)
    except ValueError:
        raise e.InvalidArgument(f"version must be an integer, got {text!r}", field=field) from None
    if v <= 0:
        raise e.InvalidArgument(f"version must be positive, got {v}", field=field)
    return v


def _local_only(context: grpc.ServicerContext) -> None:
    """System shared memory is for processes on this device, over the Unix socket: a TCP peer
    could otherwise register, read or drop the regions of local clients."""
    if transport_of(context.peer()) is not Transport.UNIX:
        raise e.PermissionDenied("system shared memory is only available to clients on the "
                                 "daemon's local Unix socket")


class InferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    def __init__(self, manager: ModelManager) -> None:
        self._m = manager

    def ServerLive(self, request: oip.ServerLiveRequest,
                   context: grpc.ServicerContext) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    def ServerReady(self, request: oip.ServerReadyRequest,
                    context: grpc.ServicerContext) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self._m.state == "serving")

    def ServerMetadata(self, request: oip.ServerMetadataRequest,
                       context: grpc.ServicerContext) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(name="edged", version=__version__,
                                          extensions=EXTENSIONS)

    def ModelReady(self, request: oip.ModelReadyRequest,
                   context: grpc.ServicerContext) -> oip.ModelReadyResponse:
        return oip.ModelReadyResponse(
            ready=self._m.is_ready(request.name, _version(request.version)))

    def ModelMetadata(self, request: oip.ModelMetadataRequest,
                      context: grpc.ServicerContext) -> oip.ModelMetadataResponse:
        md = self._m.model_metadata(request.name, _version(request.version))
        resp = oip.ModelMetadataResponse(name=md.name, versions=[str(v) for v in md.versions],
                                         platform=md.platform)
        for spec in md.signature.inputs:
            resp.inputs.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
        for spec in md.signature.outputs:
            resp.outputs.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
        return resp

    def ModelInfer(self, request: oip.ModelInferRequest,
                   context: grpc.ServicerContext) -> oip.ModelInferResponse:
        if not request.model_name:
            raise e.InvalidArgument("model_name is required", field="model_name")
        decoded = tensors.decode(request)
        if decoded.uses_shm:
            _local_only(context)
        remaining = context.time_remaining()
        version, results = self._m.infer(
            request.model_name, _version(request.model_version, "model_version"),
            decoded.inputs, decoded.outputs, decoded.output_shm,
            timeout_s=remaining if remaining is not None and remaining < 1e6 else None)
        return tensors.encode(request, request.model_name, version, results)

    def RepositoryIndex(self, request: oip.RepositoryIndexRequest,
                        context: grpc.ServicerContext) -> oip.RepositoryIndexResponse:
        resp = oip.RepositoryIndexResponse()
        for row in self._m.repository_index(ready_only=request.ready):
            resp.models.add(name=row.name, version=str(row.version), state=row.state,
                            reason=row.reason)
        return resp

    def RepositoryModelLoad(self, request: oip.RepositoryModelLoadRequest,
                            context: grpc.ServicerContext) -> oip.RepositoryModelLoadResponse:
        self._m.load(request.model_name)
        return oip.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request: oip.RepositoryModelUnloadRequest,
                              context: grpc.ServicerContext) -> oip.RepositoryModelUnloadResponse:
        self._m.unload(request.model_name)
        return oip.RepositoryModelUnloadResponse()

    def SystemSharedMemoryRegister(
            self, request: oip.SystemSharedMemoryRegisterRequest,
            context: grpc.ServicerContext) -> oip.SystemSharedMemoryRegisterResponse:
        _local_only(context)
        self._m.shm_register(request.name, request.key, request.offset, request.byte_size,
                             peer=context.peer())
        return oip.SystemSharedMemoryRegisterResponse()

    def SystemSharedMemoryUnregister(
            self, request: oip.SystemSharedMemoryUnregisterRequest,
            context: grpc.ServicerContext) -> oip.SystemSharedMemoryUnregisterResponse:
        _local_only(context)
        self._m.shm_unregister(request.name)
        return oip.SystemSharedMemoryUnregisterResponse()

    def SystemSharedMemoryStatus(
            self, request: oip.SystemSharedMemoryStatusRequest,
            context: grpc.ServicerContext) -> oip.SystemSharedMemoryStatusResponse:
        _local_only(context)
        resp = oip.SystemSharedMemoryStatusResponse()
        for r in self._m.shm_status(request.name):
            resp.regions[r.name].CopyFrom(oip.SystemSharedMemoryStatusResponse.RegionStatus(
                name=r.name, key=r.key, offset=r.offset, byte_size=r.byte_size))
        return resp
