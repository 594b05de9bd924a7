"""Structured JSON access logs, one line per request, keyed by the request id.

The request id itself is made and echoed by :mod:`service.api.request_id` (outermost
layer) and put into problem bodies by :mod:`service.api.problems`;
:class:`AccessLogMiddleware` reads it from ``scope["state"]`` (making one the same way
if it runs alone) and also exposes it in :data:`current_request_id` for code that has
no request at hand.

When the answer is complete it writes to the ``tensorinit.access`` logger: method,
path, query (truncated), route template, status, bytes sent, duration, client address,
user agent (truncated) and request id. It never logs a request body, nor any header
other than the user agent, so neither ``Authorization`` nor an API key can reach a log.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any, TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import route_template
from .problems import new_request_id

ACCESS_LOGGER = "tensorinit.access"

#: The id of the request being served in this task (empty outside a request).
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("tensorinit_request_id", default="")

_MAX_TEXT = 512
_MAX_AGENT = 256


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"), default=str)


def configure_access_log(stream: TextIO | None = None) -> logging.Logger:
    """Give the access logger a JSON handler (once) and keep it off the root logger."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class AccessLogMiddleware:
    """Pure ASGI middleware writing one JSON access-log line when each answer ends."""

    def __init__(self, app: ASGIApp, logger: logging.Logger | None = None):
        self.app = app
        self.logger = logger if logger is not None else logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        if "request_id" not in state:
            incoming = _header(scope, b"x-request-id")
            state["request_id"] = new_request_id(incoming.decode("latin-1") if incoming is not None else None)
        request_id = str(state["request_id"])
        token = current_request_id.set(request_id)
        status = 0
        sent = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            failed = True
            raise
        finally:
            current_request_id.reset(token)
            self._log(scope, request_id, status or (500 if failed else 0), sent, time.perf_counter() - start)

    def _log(self, scope: Scope, request_id: str, status: int, sent: int, seconds: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        query = scope.get("query_string", b"").decode("latin-1")
        client = scope.get("client")
        fields = {
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"][:_MAX_TEXT],
            "query": query[:_MAX_TEXT] + ("…" if len(query) > _MAX_TEXT else ""),
            "route": route_template(scope),
            "status": status,
            "bytes": sent,
            "duration_ms": round(seconds * 1000, 3),
            "client": f"{client[0]}:{client[1]}" if client else None,
            "user_agent": (_header(scope, b"user-agent") or b"").decode("latin-1")[:_MAX_AGENT],
        }
        self.logger.info("request", extra={"fields": fields})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None
