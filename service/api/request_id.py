"""A request id per request: the client's sane ``X-Request-ID`` or a fresh one, echoed on every answer."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import new_request_id


class RequestIdMiddleware:
    """Pure ASGI (it must not buffer streamed bodies): puts the id in ``scope["state"]`` and the response headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None)
        state = scope.setdefault("state", {})
        request_id = state.setdefault("request_id", new_request_id(incoming))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)
