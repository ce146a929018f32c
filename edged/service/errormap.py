"""Turn exceptions escaping a servicer into gRPC statuses, in one place.

Domain errors become their status code with an ``ErrorInfo`` detail (``edged.rpc_errors``);
anything unexpected becomes ``INTERNAL`` with a short error id that is also logged with the
traceback — never a stack trace to the client, never a crashed daemon. Done as a server
interceptor so that servicers stay thin and cannot forget it, for unary and streaming calls.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from edged import errors as e
from edged.rpc_errors import to_status
from edged.service import handlers

log = logging.getLogger("edged.service")


# Told about every domain error a call ends with: (method, request, error). For metrics.
ErrorHook = Callable[[str, Any, e.EdgedError], None]


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str,
           request: Any = None, on_error: ErrorHook | None = None) -> None:
    if isinstance(exc, e.EdgedError) and on_error is not None:
        try:
            on_error(method, request, exc)
        except Exception:  # a broken hook must not change the client's answer
            log.exception("error hook failed for %s", method)
    if isinstance(exc, e.EdgedError):
        if isinstance(exc, e.Internal):
            error_id = uuid.uuid4().hex[:12]
            log.error("%s failed: %s [error_id=%s]", method, exc, error_id)
        else:
            error_id = ""
            log.debug("%s: %s %s", method, exc.code.value, exc)
        context.abort_with_status(to_status(exc, error_id))
    error_id = uuid.uuid4().hex[:12]
    log.error("%s: unexpected error [error_id=%s]", method, error_id, exc_info=exc)
    err = e.Internal(f"internal error (error_id {error_id}; see the daemon log)")
    context.abort_with_status(to_status(err, error_id))


def _is_grpc_abort(exc: BaseException) -> bool:
    # context.abort() raises a bare Exception subclass internal to grpc; let it pass.
    return type(exc).__module__.startswith("grpc")


def _wrap_unary(fn: Callable[..., Any], method: str,
                on_error: ErrorHook | None) -> Callable[..., Any]:
    def handler(request_or_iter: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(request_or_iter, context)
        except Exception as exc:
            if _is_grpc_abort(exc) or context.code() is not None:
                raise
            _abort(context, exc, method, request_or_iter, on_error)
            raise  # pragma: no cover - abort raises
    return handler


def _wrap_stream(fn: Callable[..., Iterator[Any]], method: str,
                 on_error: ErrorHook | None) -> Callable[..., Iterator[Any]]:
    def handler(request_or_iter: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(request_or_iter, context)
        except Exception as exc:
            if _is_grpc_abort(exc) or context.code() is not None:
                raise
            _abort(context, exc, method, request_or_iter, on_error)
    return handler


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    """``on_error`` hears of every domain error a call ends with (e.g. to count rejections)."""

    def __init__(self, on_error: ErrorHook | None = None) -> None:
        self._on_error = on_error
        self._wrapped = handlers.PerMethod()

    def intercept_service(self, continuation: Callable[..., Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        return self._wrapped.get(method, handler, lambda: self._wrap(handler, method))

    def _wrap(self, handler: Any, method: str) -> Any:
        hook = self._on_error
        if handler.unary_unary:
            return handler._replace(unary_unary=_wrap_unary(handler.unary_unary, method, hook))
        if handler.stream_unary:
            return handler._replace(stream_unary=_wrap_unary(handler.stream_unary, method, hook))
        if handler.unary_stream:
            return handler._replace(unary_stream=_wrap_stream(handler.unary_stream, method,
                                                              hook))
        if handler.stream_stream:
            return handler._replace(stream_stream=_wrap_stream(handler.stream_stream, method,
                                                               hook))
        return handler
