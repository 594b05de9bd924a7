"""Everything the client raises, in one tree::

    TensorinitError                     base of everything below
    ├── APIError                        the server answered with an error status (problem+json)
    │   ├── BadRequestError             400 malformed-json, invalid-request
    │   ├── AuthenticationError         401 unauthorized
    │   ├── NotFound                    404 not-found (e.g. an unknown /schemes/{name})
    │   ├── PayloadTooLarge             413 limit-exceeded, body-too-large
    │   ├── ValidationError             422 validation-error, unknown-scheme, unknown-parameter
    │   ├── RateLimitError              429 (retried first)
    │   └── ServerError                 500 and any other 5xx (502, 504 retried first)
    │       └── ServiceUnavailable      503 overloaded (retried first, honouring Retry-After)
    ├── APIConnectionError              no answer: refused, reset, cut mid-body (also a builtin ConnectionError)
    │   └── APITimeoutError             connect or read timeout (also a builtin TimeoutError)
    ├── IntegrityError                  a body that is truncated, malformed or fails its sha256 check
    └── NoMatchingRuleError             init_state_dict / init_module: a name that no rule matches

Errors are raised ``from None``: the traceback ends at the client call and shows the
server's own sentence, not httpx internals.
"""

from __future__ import annotations

import builtins
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import httpx


class TensorinitError(Exception):
    """Base class of every error raised by the tensorinit client."""


@dataclass(frozen=True)
class FieldError:
    """One entry of a problem's ``errors`` list: where, what went wrong, what is allowed."""

    path: tuple[str | int, ...]
    message: str
    allowed: str | None = None

    @property
    def location(self) -> str:
        """The path joined with dots, e.g. ``tensors.fc1.weight.gain``."""
        return ".".join(str(p) for p in self.path)

    def __str__(self) -> str:
        allowed = f" (allowed: {self.allowed})" if self.allowed else ""
        return f"{self.location or '<body>'}: {self.message}{allowed}"


class APIError(TensorinitError):
    """The server answered with an error status; fields mirror its problem+json body."""

    def __init__(
        self,
        status_code: int,
        *,
        title: str,
        detail: str | None = None,
        problem_type: str | None = None,
        request_id: str | None = None,
        errors: tuple[FieldError, ...] = (),
        suggestions: tuple[str, ...] = (),
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        self.status_code = status_code
        self.title = title
        self.detail = detail
        self.problem_type = problem_type
        self.request_id = request_id
        self.errors = errors
        self.suggestions = suggestions
        self.retry_after = retry_after
        self.body = body
        super().__init__(self._message())

    @property
    def code(self) -> str | None:
        """The problem type's last path segment, e.g. ``validation-error``."""
        return self.problem_type.rstrip("/").rsplit("/", 1)[-1] if self.problem_type else None

    def _message(self) -> str:
        lines = [f"{self.status_code} {self.title}" + (f": {self.detail}" if self.detail else "")]
        for e in self.errors:
            # The detail usually repeats the first error's sentence: then add only where and what is allowed.
            repeated = bool(self.detail and e.message and e.message in self.detail)
            lines.append(f"  {e.location or '<body>'}: allowed: {e.allowed}" if repeated and e.allowed else "" if repeated else f"  {e}")
        lines = [line for line in lines if line]
        if self.suggestions:
            lines.append(f"  did you mean: {', '.join(self.suggestions)}?")
        if self.request_id:
            lines.append(f"  (request id {self.request_id})")
        return "\n".join(lines)


class BadRequestError(APIError):
    """400: the body is not JSON, or not a request at all."""


class AuthenticationError(APIError):
    """401: a missing or wrong API key."""


class NotFound(APIError):  # noqa: N818 -- names fixed by issue 4
    """404: no such path or catalogue entry."""


class PayloadTooLarge(APIError):  # noqa: N818
    """413: valid, but beyond a configured limit (elements, tensors, body size)."""


class ValidationError(APIError):
    """422: a parameter outside what is allowed; ``errors`` holds each field path and what is allowed."""


class RateLimitError(APIError):
    """429: too many requests (raised only once retries are exhausted)."""


class ServerError(APIError):
    """5xx: the server failed (502 and 504 are retried first)."""


class ServiceUnavailable(ServerError):  # noqa: N818
    """503: overloaded; ``retry_after`` holds the server's hint in seconds."""


class APIConnectionError(TensorinitError, builtins.ConnectionError):
    """No usable answer: connection refused or reset, or the body cut off, after every retry."""


class APITimeoutError(APIConnectionError, builtins.TimeoutError):
    """Connecting, or waiting for the next chunk, took longer than the timeout."""


class IntegrityError(TensorinitError):
    """A body that is not the file announced: wrong length, malformed header, sha256 mismatch."""


class NoMatchingRuleError(TensorinitError, ValueError):
    """A parameter name that no (pattern → spec) rule matches."""

    def __init__(self, name: str, patterns: list[str]) -> None:
        self.name = name
        self.patterns = patterns
        super().__init__(f"no rule matches {name!r}; patterns tried in order: {patterns} (map it to None to skip it)")


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFound,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimitError,
    503: ServiceUnavailable,
}


def error_class(status: int) -> type[APIError]:
    """The class raised for an HTTP status (one class per status)."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else APIError


def _field_errors(raw: object) -> tuple[FieldError, ...]:
    if not isinstance(raw, list):
        return ()
    out = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        path = item.get("path") or item.get("loc") or ()
        if isinstance(path, str):
            path = (path,)
        allowed = item.get("allowed")
        out.append(
            FieldError(
                path=tuple(p if isinstance(p, int | str) else str(p) for p in path) if isinstance(path, list | tuple) else (),
                message=str(item.get("message") or item.get("msg") or ""),
                allowed=None if allowed is None else str(allowed),
            )
        )
    return tuple(out)


def from_response(response: httpx.Response, body: bytes, retry_after: float | None) -> APIError:
    """Map an error response to its class, reading problem+json when the server sent it."""
    status = response.status_code
    problem: Any = None
    if body:
        try:
            problem = json.loads(body)
        except ValueError:
            problem = None
    if isinstance(problem, dict):
        suggestions = problem.get("suggestions")
        return error_class(status)(
            status,
            title=str(problem.get("title") or response.reason_phrase),
            detail=None if problem.get("detail") is None else str(problem["detail"]),
            problem_type=None if problem.get("type") is None else str(problem["type"]),
            request_id=None if problem.get("request_id") is None else str(problem["request_id"]),
            errors=_field_errors(problem.get("errors")),
            suggestions=tuple(str(s) for s in suggestions) if isinstance(suggestions, list) else (),
            retry_after=retry_after,
            body=problem,
        )
    # Not problem+json (a proxy's page, say): keep a bounded excerpt as the detail.
    text = body[:500].decode("utf-8", "replace").strip() or None
    return error_class(status)(status, title=response.reason_phrase or "error", detail=text, retry_after=retry_after, body=text)


def from_transport(exc: httpx.TransportError) -> APIConnectionError:
    """Map an httpx transport failure to the client's connection or timeout error."""
    kind = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
    url = ""
    with contextlib.suppress(RuntimeError):  # the exception may carry no request (custom transports)
        url = f" ({exc.request.method} {exc.request.url})"
    return kind(f"{type(exc).__name__}: {exc or 'connection failed'}{url}")
