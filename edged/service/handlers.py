"""Wrapping a gRPC method handler's behaviour, for all four kinds of call, in one place.

Interceptors (access checks, the drain gate) need to run code on the call's RPC thread, where
the ``ServicerContext`` exists, rather than in ``intercept_service``: only there can they
abort with a status, and only there does a call that grpc admits but never runs leave nothing
behind. ``around`` is entered before the behaviour and left after it — for a streamed
response, after its last message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import grpc

Around = Callable[[grpc.ServicerContext], AbstractContextManager[Any]]

_KINDS = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def wrap(handler: Any, around: Around) -> Any:
    """``handler`` with its behaviour run inside ``around(context)``."""
    attr, make = _KINDS[(bool(handler.request_streaming), bool(handler.response_streaming))]
    inner = getattr(handler, attr)

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        with around(context):
            return inner(request, context)

    def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with around(context):
            yield from inner(request, context)

    return make(streamed if handler.response_streaming else unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class PerMethod:
    """An interceptor's wrapped handlers, made once per method rather than on every call.

    grpc looks a call's handler up through the interceptors on every call, and the services'
    generic handlers return the same handler object for every call of a method; wrapping it
    anew each time built a handler (and, for the gates, a context manager) per request: in
    a yappi profile of the daemon under 3000 ModelInfer calls, 3004 ``contextmanager``
    decorations and 3002 ``unary_unary_rpc_method_handler`` calls, 0.24 s of CPU under the
    profiler (bench/RESULTS.md, "The gRPC path": p50 2-3% lower for the small models after).
    A wrapper is reused only while the handler it
    wrapped is the one given (``is``), so a handler that changes is wrapped again; only
    methods with a handler are kept (grpc has none for unknown methods), so the table is
    bounded by the services' methods. What a wrapper does must depend on the method only."""

    def __init__(self) -> None:
        self._by_method: dict[str, tuple[Any, Any]] = {}

    def get(self, method: str, handler: Any, make: Callable[[], Any]) -> Any:
        hit = self._by_method.get(method)
        if hit is not None and hit[0] is handler:
            return hit[1]
        wrapped = make()
        self._by_method[method] = (handler, wrapped)  # (a race makes two: both are right)
        return wrapped

