"""The gate in front of every AnyMoLe RPC: bearer-token auth and the protocol-version handshake.

`GateInterceptor` answers UNAUTHENTICATED when the server has a token and the call's
``authorization: Bearer <token>`` metadata is missing or wrong (compared in constant time), and
FAILED_PRECONDITION when ``anymole-protocol-version`` metadata names another major version. Health checks and
reflection pass without a token, so that load balancers and grpcurl work against a locked server; so does
GetServerInfo (protocol 1.2), so that a client learns the server's version and that it wants a token
(`Capabilities.auth_required`) before it has one. A token sent with GetServerInfo is still checked, so the
handshake also tells a client whether its token is right.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from anymole.wire.version import METADATA_KEY, VersionMismatch, check_client_version, parse_version

__all__ = ["GateInterceptor"]


def _abort_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that fails with ``code``."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # makes this an async generator

    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(stream, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(stream, **kw)
    return grpc.unary_unary_rpc_method_handler(unary, **kw)


class GateInterceptor(grpc.aio.ServerInterceptor):
    """Checks ``authorization: Bearer <token>`` (when a token is set) and ``anymole-protocol-version``.

    Health checks and reflection pass without a token.
    """

    _OPEN_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
    _HANDSHAKE = "/anymole.v1.AnyMoLeService/GetServerInfo"

    def __init__(self, token: str | None) -> None:
        self._expected = f"Bearer {token}".encode() if token else None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or method.startswith(self._OPEN_PREFIXES):
            return handler
        metadata = {k: v for k, v in (handler_call_details.invocation_metadata or ())}
        if self._expected is not None and not (method == self._HANDSHAKE and "authorization" not in metadata):
            got = str(metadata.get("authorization", "")).encode()
            if not hmac.compare_digest(got, self._expected):
                return _abort_handler(
                    handler,
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or wrong bearer token: send 'authorization: Bearer <token>' metadata with the token "
                    "the server was started with (anymole serve --token, or ANYMOLE_TOKEN)",
                )
        version = metadata.get(METADATA_KEY)
        if version is not None:
            try:
                check_client_version(parse_version(str(version)))
            except VersionMismatch as exc:
                return _abort_handler(handler, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return handler

