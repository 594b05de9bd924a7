"""Problem+json answers given by the hardening layer itself (401 and 503).

These are sent from pure ASGI middleware before any route runs, or from an exception
handler, so they cannot lean on the routes' problem machinery; they follow the same
RFC 9457 shape as every other error of the service (see docs/api.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Scope, Send

PROBLEM_BASE = "https://tensorinit.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


def request_id_of(scope: Scope) -> str | None:
    """The request id that :mod:`service.api.logging` stored in the scope, if any."""
    state = scope.get("state")
    if isinstance(state, Mapping):
        value = state.get("request_id")
        if isinstance(value, str):
            return value
    return None


def problem_body(status: int, code: str, title: str, detail: str, request_id: str | None, **extra: Any) -> bytes:
    """The JSON bytes of one problem document."""
    doc: dict[str, Any] = {"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": detail}
    if request_id is not None:
        doc["request_id"] = request_id
    doc.update(extra)
    return json.dumps(doc, separators=(",", ":")).encode()


def problem_response(scope: Scope, status: int, code: str, title: str, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    """A Starlette response carrying one problem document (for exception handlers)."""
    body = problem_body(status, code, title, detail, request_id_of(scope))
    return Response(body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE)


async def send_problem(
    scope: Scope, send: Send, status: int, code: str, title: str, detail: str, headers: Mapping[str, str] | None = None
) -> None:
    """Answer an HTTP request with one problem document straight through ASGI ``send``."""
    await problem_response(scope, status, code, title, detail, headers)(scope, _no_receive, send)


async def _no_receive() -> dict[str, Any]:  # pragma: no cover - a plain Response never reads
    return {"type": "http.disconnect"}
