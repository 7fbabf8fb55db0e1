"""Requests that are not the message they claim to be get INVALID_ARGUMENT, on every RPC.

gRPC answers bytes it cannot parse with INTERNAL ("Exception deserializing request!"), which
reads like a server bug. A server interceptor wraps each method's deserializer: bytes that do not
parse become a marker, and the method answers it with INVALID_ARGUMENT naming the message type,
before the servicer sees anything. One interceptor for the coordinator (grpc.aio) and one for the
scheduler (thread pool); both leave well-formed requests untouched. (Request streams with
response streams do not occur in our services and are not wrapped.)
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError


class Malformed:
    """What a request that did not parse becomes; carries the expected type's name."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def explain(self) -> str:
        return f"the request is not a valid {self.type_name} message"


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    owner = getattr(deserializer, "__self__", None)
    type_name = owner.DESCRIPTOR.full_name if owner is not None else "request"

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, TypeError, RuntimeError):
            return Malformed(type_name)

    return parse


def _replace(
    handler: grpc.RpcMethodHandler, behaviour: Callable[..., Any]
) -> grpc.RpcMethodHandler:
    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return factory(
        behaviour,
        request_deserializer=_tolerant(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


def _behaviour(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    if handler.request_streaming:
        return handler.stream_stream or handler.stream_unary  # type: ignore[return-value]
    return handler.unary_stream or handler.unary_unary  # type: ignore[return-value]


def _wrap_aio(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    inner = _behaviour(handler)
    if handler.request_streaming:

        async def checked(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, Malformed):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.explain())
                yield request

        async def stream_unary(requests: AsyncIterator[Any], context: Any) -> Any:
            return await inner(checked(requests, context), context)

        return _replace(handler, stream_unary)

    async def refuse(request: Any, context: Any) -> None:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.explain())

    if inspect.isasyncgenfunction(inner):  # a response stream written by yielding

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            await refuse(request, context)
            async for response in inner(request, context):
                yield response

        return _replace(handler, unary_stream)

    async def unary(request: Any, context: Any) -> Any:  # or one by context.write()
        await refuse(request, context)
        return await inner(request, context)

    return _replace(handler, unary)


def _wrap_sync(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    inner = _behaviour(handler)
    if handler.request_streaming:

        def checked(requests: Iterator[Any], context: Any) -> Iterator[Any]:
            for request in requests:
                if isinstance(request, Malformed):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.explain())
                yield request

        return _replace(
            handler, lambda requests, context: inner(checked(requests, context), context)
        )

    def unary(request: Any, context: Any) -> Any:
        if isinstance(request, Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.explain())
        return inner(request, context)

    return _replace(handler, unary)


class RejectMalformedAio(grpc.aio.ServerInterceptor):
    """For grpc.aio servers (the coordinator). Each method's wrapped handler is built once."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        wrapped = self._wrapped.get(details.method)
        if wrapped is None:
            handler = await continuation(details)
            if handler is None:
                return handler
            wrapped = self._wrapped[details.method] = _wrap_aio(handler)
        return wrapped


class RejectMalformed(grpc.ServerInterceptor):
    """For thread-pool servers (the scheduler). Each method's wrapped handler is built once."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        wrapped = self._wrapped.get(details.method)
        if wrapped is None:
            handler = continuation(details)
            if handler is None:
                return handler
            wrapped = self._wrapped[details.method] = _wrap_sync(handler)
        return wrapped
