"""``edged.v1.System``: status, events, reload — translation only."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc

from edged.manager.manager import ModelManager
from edged.service import messages
from edged.v1 import system_pb2, system_pb2_grpc


class SystemServicer(system_pb2_grpc.SystemServicer):
    def __init__(self, manager: ModelManager, reload: Callable[[], tuple[bool, str, int]]) -> None:
        self._m = manager
        self._reload = reload

    def Status(self, request: system_pb2.StatusRequest,
               context: grpc.ServicerContext) -> system_pb2.StatusResponse:
        return messages.status_pb(self._m.status())

    def Events(self, request: system_pb2.EventsRequest,
               context: grpc.ServicerContext) -> Iterator[system_pb2.Event]:
        stream = self._m.events.subscribe(
            since_seq=request.since_seq, kinds=frozenset(request.kinds), follow=request.follow,
            is_active=context.is_active)
        for ev in stream:
            yield messages.event_pb(ev)

    def Reload(self, request: system_pb2.ReloadRequest,
               context: grpc.ServicerContext) -> system_pb2.ReloadResponse:
        ok, error, models = self._reload()
        return system_pb2.ReloadResponse(ok=ok, error=error, models=models)
