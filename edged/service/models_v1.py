"""``edged.v1.Models``: translation only — protos in, manager calls, protos out."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from edged import errors as e
from edged.lanewire import MAX_LANE_BYTES
from edged.manager.manager import ModelManager
from edged.service import messages
from edged.service.auth import Transport, transport_of
from edged.v1 import models_pb2 as mpb
from edged.v1 import models_pb2_grpc
from edged.views import InstallSpec

PRIORITY = {mpb.PRIORITY_UNSPECIFIED: "balanced", mpb.PRIORITY_BALANCED: "balanced",
            mpb.PRIORITY_SPEED: "speed", mpb.PRIORITY_QUALITY: "quality"}


def _tier(value: int, field: str = "tier", default: str | None = None) -> str | None:
    if value == mpb.TIER_UNSPECIFIED:
        return default
    if value not in messages.TIER_FROM_PB:
        raise e.InvalidArgument(f"unknown tier {value}", field=field)
    return messages.TIER_FROM_PB[value]


def _shape(text: str, field: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        raise e.InvalidArgument(f"expected a shape like 1x3x64x64, got {text!r}",
                                field=field) from None
    if not dims or any(d <= 0 for d in dims):
        raise e.InvalidArgument(f"dimensions must be positive, got {text!r}", field=field)
    return dims


def spec_from(h: mpb.InstallHeader) -> InstallSpec:
    return InstallSpec(
        name=h.name, version=h.version or None, tier=_tier(h.tier, "header.tier", "") or "",
        tasks=tuple(h.tasks), quality=h.quality, providers=tuple(h.providers),
        precision=h.precision, notes=h.notes, inherit=not h.no_inherit,
        warmup_shapes={k: _shape(v, f"header.warmup_shapes[{k}]")
                       for k, v in h.warmup_shapes.items()},
        group=h.group or None, activate=h.activate, engine_info=dict(h.engine_info),
        allow_signature_change=h.allow_signature_change, variant=h.variant)


def _install_parts(first: mpb.InstallRequest,
                   rest: Iterator[mpb.InstallRequest]) -> Iterator[tuple[mpb.InstallFile,
                                                                         Iterator[bytes]]]:
    """Regroup the flat request stream into (file header, its chunks) pairs, lazily."""
    pending: list[mpb.InstallRequest] = []

    def next_msg() -> mpb.InstallRequest | None:
        return pending.pop() if pending else next(rest, None)

    msg = next_msg()
    while msg is not None:
        if msg.WhichOneof("part") != "file":
            raise e.InvalidArgument("expected a file header before chunks", field="file")
        header = msg.file

        def chunks() -> Iterator[bytes]:
            while True:
                m = next_msg()
                if m is None:
                    return
                if m.WhichOneof("part") != "chunk":
                    pending.append(m)
                    return
                yield m.chunk

        it = chunks()
        yield header, it
        for _ in it:  # drain what the consumer did not read
            pass
        msg = next_msg()


class ModelsServicer(models_pb2_grpc.ModelsServicer):
    def __init__(self, manager: ModelManager) -> None:
        self._m = manager

    def _model(self, name: str) -> mpb.Model:
        return messages.model_pb(*self._m.get_model(name))

    def ListModels(self, request: mpb.ListModelsRequest,
                   context: grpc.ServicerContext) -> mpb.ListModelsResponse:
        rows = self._m.list_models(tier=_tier(request.tier), task=request.task or None)
        return mpb.ListModelsResponse(models=[messages.model_pb(m, loaded) for m, loaded in rows])

    def GetModel(self, request: mpb.GetModelRequest, context: grpc.ServicerContext) -> mpb.Model:
        return self._model(request.name)

    def Install(self, request_iterator: Iterator[mpb.InstallRequest],
                context: grpc.ServicerContext) -> mpb.InstallResponse:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise e.InvalidArgument("the first install message must be the header",
                                    field="header")
        spec = spec_from(first.header)
        result = self._m.install_stream(spec, _install_parts(first, request_iterator))
        return messages.install_pb(result)

    def InstallFrom(self, request: mpb.InstallFromRequest,
                    context: grpc.ServicerContext) -> Iterator[mpb.InstallProgress]:
        spec = spec_from(request.header)
        updates: queue.Queue[Any] = queue.Queue()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["result"] = self._m.install_from(
                    spec, request.source, request.sha256 or None, request.size_bytes or None,
                    progress=lambda done, total, stage: updates.put((done, total, stage)))
            except BaseException as exc:
                outcome["error"] = exc
            finally:
                updates.put(None)

        threading.Thread(target=work, name="install-from", daemon=True).start()
        while (item := updates.get()) is not None:
            done, total, stage = item
            yield mpb.InstallProgress(bytes_done=done, bytes_total=total, stage=stage)
        if "error" in outcome:
            raise outcome["error"]
        res = messages.install_pb(outcome["result"])
        yield mpb.InstallProgress(bytes_done=res.size_bytes, bytes_total=res.size_bytes,
                                  stage="done", result=res)

    def Remove(self, request: mpb.RemoveRequest,
               context: grpc.ServicerContext) -> mpb.RemoveResponse:
        removed = self._m.remove(request.name, request.version or None, force=request.force)
        return mpb.RemoveResponse(removed_versions=removed)

    def SetTier(self, request: mpb.SetTierRequest, context: grpc.ServicerContext) -> mpb.Model:
        tier = _tier(request.tier)
        if tier is None:
            raise e.InvalidArgument("tier is required (ram, swap, storage)", field="tier")
        return messages.model_pb(*self._m.set_tier(request.name, tier))

    def Activate(self, request: mpb.ActivateRequest, context: grpc.ServicerContext) -> mpb.Model:
        return messages.model_pb(*self._m.activate(
            request.name, request.version, allow_signature_change=request.allow_signature_change))

    def Rollback(self, request: mpb.RollbackRequest, context: grpc.ServicerContext) -> mpb.Model:
        return messages.model_pb(*self._m.rollback(request.name))

    def Load(self, request: mpb.LoadRequest, context: grpc.ServicerContext) -> mpb.LoadResponse:
        view, evicted, seconds = self._m.load(request.name, request.version or None)
        return mpb.LoadResponse(model=messages.loaded_pb(view), evicted=list(evicted),
                                seconds=seconds)

    def Unload(self, request: mpb.UnloadRequest,
               context: grpc.ServicerContext) -> mpb.UnloadResponse:
        return mpb.UnloadResponse(freed_bytes=self._m.unload(request.name, request.version or None))

    def Check(self, request: mpb.CheckRequest,
              context: grpc.ServicerContext) -> mpb.CheckResponse:
        which = request.WhichOneof("target")
        if which is None:
            raise e.InvalidArgument("give a model name or an artifact path", field="target")
        view = self._m.check(name=request.name if which == "name" else None,
                             artifact_path=request.artifact_path if which == "artifact_path"
                             else None, tier=_tier(request.tier))
        return messages.check_pb(view)

    def Select(self, request: mpb.SelectRequest,
               context: grpc.ServicerContext) -> mpb.SelectResponse:
        if not request.task:
            raise e.InvalidArgument("task is required", field="task")
        if request.mode and request.mode not in ("auto", "manual", "hybrid"):
            raise e.InvalidArgument(f"mode must be auto, manual or hybrid, not {request.mode!r}",
                                    field="mode")
        sel = self._m.select(request.task, PRIORITY.get(request.priority, "balanced"),
                             max_bytes=request.max_bytes or None,
                             max_latency_ms=request.max_latency_ms or None,
                             mode=request.mode or None, pinned=request.pinned or None)
        return messages.select_pb(sel)

    # -- variants ------------------------------------------------------------------------
    def MakeVariant(self, request: mpb.MakeVariantRequest,
                    context: grpc.ServicerContext) -> Iterator[mpb.MakeVariantProgress]:
        updates: queue.Queue[str | None] = queue.Queue()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["result"] = self._m.make_variant(
                    request.name, request.version or None, request.kind,
                    accept_change=request.accept_change if request.accept else None,
                    quality=request.quality or None, progress=updates.put)
            except BaseException as exc:
                outcome["error"] = exc
            finally:
                updates.put(None)

        threading.Thread(target=work, name="make-variant", daemon=True).start()
        while (stage := updates.get()) is not None:
            yield mpb.MakeVariantProgress(stage=stage)
        if "error" in outcome:
            raise outcome["error"]
        report, entry = outcome["result"]
        why = "" if entry is not None else (
            f"output change {report.worst_rel:.4g} is more than the accepted "
            f"{request.accept_change:g}" if request.accept else "report only (not accepted)")
        yield messages.variant_report_pb(report, entry, why)

    def SetVariant(self, request: mpb.SetVariantRequest,
                   context: grpc.ServicerContext) -> mpb.Model:
        self._m.set_variant(request.name, request.version or None, request.variant)
        return self._model(request.name)

    def RemoveVariant(self, request: mpb.RemoveVariantRequest,
                      context: grpc.ServicerContext) -> mpb.Model:
        if not request.variant:
            raise e.InvalidArgument("variant is required", field="variant")
        self._m.remove_variant(request.name, request.version or None, request.variant)
        return self._model(request.name)

    def Recommend(self, request: mpb.RecommendRequest,
                  context: grpc.ServicerContext) -> mpb.RecommendResponse:
        if bool(request.name) == bool(request.artifact_path):
            raise e.InvalidArgument("give a model name or an artifact path", field="name")
        shapes = {k: _shape(v, f"warmup_shapes[{k}]") for k, v in request.warmup_shapes.items()}
        return messages.recommend_pb(self._m.recommend(
            name=request.name or None, artifact_path=request.artifact_path or None,
            shapes=shapes))

    def OpenLane(self, request: mpb.OpenLaneRequest,
                 context: grpc.ServicerContext) -> mpb.OpenLaneResponse:
        if transport_of(context.peer()) is not Transport.UNIX:
            raise e.FailedPrecondition("direct lanes are for clients on the daemon's Unix "
                                       "socket; use ModelInfer", reason="NOT_LOCAL")
        if not request.name:
            raise e.InvalidArgument("name is required", field="name")
        if request.size_bytes > MAX_LANE_BYTES:
            raise e.InvalidArgument(f"size_bytes: at most {MAX_LANE_BYTES} bytes",
                                    field="size_bytes")
        left = context.time_remaining()
        version, grant = self._m.open_lane(request.name, request.version or None,
                                           request.client_pid, request.size_bytes,
                                           timeout_s=left)
        return mpb.OpenLaneResponse(path=str(grant.path), version=version, lane_id=grant.id,
                                    size_bytes=grant.size)
