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
