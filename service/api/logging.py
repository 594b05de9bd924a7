"""Request ids and structured JSON access logs.

:class:`RequestContextMiddleware` is the outermost layer of the app. For every HTTP
request it

* takes the caller's ``X-Request-ID`` when it is a sane token (1–128 characters of
  ``[A-Za-z0-9._:-]``, so nothing can be smuggled into a log line), else makes one;
* stores it in ``scope["state"]["request_id"]`` (``request.state.request_id`` for
  routes and exception handlers) and in :data:`current_request_id`;
* echoes it in the ``X-Request-ID`` response header and adds it as ``request_id`` to
  every ``application/problem+json`` body that lacks it (those bodies are small and
  are the only ones it buffers; tensor streams pass through untouched);
* writes one JSON line per request to the ``tensorinit.access`` logger when the
  answer is complete: method, path, query (truncated), route template, status, bytes
  sent, duration, client address, user agent (truncated), request id.

It never logs a request body or a header other than the user agent, so neither the
``Authorization`` header nor an API key can reach the logs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import route_template

ACCESS_LOGGER = "tensorinit.access"
REQUEST_ID_HEADER = "X-Request-ID"

#: The id of the request being served in this task (empty outside a request).
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("tensorinit_request_id", default="")

_VALID_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_PROBLEM = b"application/problem+json"
_MAX_QUERY = 512
_MAX_AGENT = 256


def new_request_id() -> str:
    """A fresh random request id."""
    return uuid.uuid4().hex


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


def configure_access_log(stream: Any = None) -> logging.Logger:
    """Give the access logger a JSON handler (once) and stop it propagating to the root."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class RequestContextMiddleware:
    """Pure ASGI middleware: request id, ``X-Request-ID``, ids in problems, access log."""

    def __init__(self, app: ASGIApp, logger: logging.Logger | None = None):
        self.app = app
        self.logger = logger if logger is not None else logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _incoming_id(scope) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = current_request_id.set(request_id)
        status = 0
        sent = 0
        held: Message | None = None  # the start of a problem answer, held until its body is complete
        held_body = bytearray()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent, held
            kind = message["type"]
            if kind == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
                if scope["method"] != "HEAD" and _content_type(headers).startswith(_PROBLEM):
                    held = message
                    return
            elif kind == "http.response.body" and held is not None:
                held_body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = _with_request_id(bytes(held_body), request_id)
                start_message = {
                    **held,
                    "headers": [(k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
                    + [(b"content-length", str(len(body)).encode())],
                }
                held = None
                sent += len(body)
                await send(start_message)
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            elif kind == "http.response.body":
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
            "path": scope["path"][:_MAX_QUERY],
            "query": query[:_MAX_QUERY] + ("…" if len(query) > _MAX_QUERY else ""),
            "route": route_template(scope),
            "status": status,
            "bytes": sent,
            "duration_ms": round(seconds * 1000, 3),
            "client": f"{client[0]}:{client[1]}" if client else None,
            "user_agent": (_header(scope, b"user-agent") or b"").decode("latin-1")[:_MAX_AGENT],
        }
        self.logger.info("request", extra={"fields": fields})


def _incoming_id(scope: Scope) -> str | None:
    value = _header(scope, b"x-request-id")
    if value is not None and _VALID_ID.fullmatch(value):
        return value.decode("ascii")
    return None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _content_type(headers: list[tuple[bytes, bytes]]) -> bytes:
    for key, value in headers:
        if key.lower() == b"content-type":
            return bytes(value).lower()
    return b""


def _with_request_id(body: bytes, request_id: str) -> bytes:
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if not isinstance(doc, dict) or "request_id" in doc:
        return body
    doc["request_id"] = request_id
    return json.dumps(doc, separators=(",", ":")).encode()
