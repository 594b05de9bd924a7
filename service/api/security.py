"""Optional API keys, checked by a pure ASGI middleware.

Keys come from ``TENSORINIT_API_KEYS`` (comma-separated plain keys) and/or from a file
named by ``TENSORINIT_API_KEYS_FILE`` holding one sha256 hex digest of a key per line
(blank lines and ``#`` comments ignored, an optional ``sha256:`` prefix accepted), so
that a deployment need not keep the keys themselves on disk.

Only sha256 digests are kept in memory. A presented token is hashed and compared with
every stored digest by :func:`hmac.compare_digest`, without stopping at the first
match, so the time taken does not depend on which key (if any) matched or on how much
of it was right. Keys and tokens never appear in a log line, an error or a ``repr``.

When no key is configured the middleware lets everything through. When keys are
configured every path except the probes (``/healthz``, ``/readyz``) needs
``Authorization: Bearer <key>``; otherwise the answer is 401 ``unauthorized``
problem+json with ``WWW-Authenticate: Bearer`` (RFC 6750). An answer to a keyed request
never says ``Cache-Control: public``: that directive lets a shared cache give a response
to a request with credentials to anyone (RFC 9111 §3.5), so it is taken out, and the
rest (``max-age``, ``immutable``) stays for the client's own cache and for nginx, which
asks the service about the key before each answer it takes from its cache
(deploy/nginx.conf).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import ProblemError

#: Paths that answer without a key: orchestrators probe them without credentials.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_REALM = 'Bearer realm="tensorinit"'


class ApiKeys:
    """A set of accepted API keys, held as sha256 digests only."""

    __slots__ = ("_digests",)

    def __init__(self, digests: Iterable[bytes] = ()):
        self._digests = tuple(dict.fromkeys(digests))
        if any(len(d) != 32 for d in self._digests):
            raise ValueError("API key digests must be 32-byte sha256 digests")

    @classmethod
    def from_keys(cls, keys: Iterable[str]) -> ApiKeys:
        """Accept these plain keys."""
        return cls(_digest(k) for k in keys)

    @classmethod
    def from_config(cls, api_keys: str = "", api_keys_file: str | os.PathLike[str] | None = None) -> ApiKeys:
        """Keys from the settings: a comma-separated string and/or a file of sha256 digests.

        Raises ``ValueError`` naming the file and line (never the content) when the
        file holds something other than digests, so a bad deployment fails at start.
        """
        digests = [_digest(k) for k in (part.strip() for part in api_keys.split(",")) if k]
        if api_keys_file:
            digests.extend(_read_digest_file(Path(api_keys_file)))
        return cls(digests)

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (no key: access control is off)."""
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"ApiKeys(<{len(self._digests)} keys>)"

    def verify(self, token: str | bytes) -> bool:
        """Whether ``token`` is one of the keys, compared in constant time."""
        presented = _digest(token)
        found = False
        for stored in self._digests:
            # No short-circuit: every stored digest is compared whatever came before.
            found |= hmac.compare_digest(presented, stored)
        return found


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return None
    return token


class ApiKeyMiddleware:
    """Pure ASGI middleware that refuses requests without a valid bearer key.

    Pure ASGI (not ``BaseHTTPMiddleware``) so that streaming bodies and client
    disconnects pass through untouched. ``on_reject`` is called once per refusal
    (the metrics count them).
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: ApiKeys,
        *,
        public_paths: frozenset[str] = PUBLIC_PATHS,
        on_reject: Callable[[], None] | None = None,
    ):
        self.app = app
        self.keys = keys
        self.public_paths = public_paths
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys.enabled or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        token = bearer_token(_header(scope, b"authorization"))
        if token is not None and self.keys.verify(token):
            await self.app(scope, receive, _not_public(send))
            return
        if self.on_reject is not None:
            self.on_reject()
        if token is None:
            detail = "this server requires an API key: send 'Authorization: Bearer <key>'"
            challenge = _REALM
        else:
            detail = "the API key presented is not valid"
            challenge = _REALM + ', error="invalid_token"'
        response = ProblemError("unauthorized", detail, headers={"WWW-Authenticate": challenge}).response(Request(scope))
        await response(scope, receive, send)


def _not_public(send: Send) -> Send:
    """``send`` with the ``public`` directive taken out of the answer's Cache-Control (the header dropped if nothing is left)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = []
            for name, value in message.get("headers", ()):
                if name.lower() != b"cache-control":
                    headers.append((name, value))
                elif kept := [d for d in (part.strip() for part in value.split(b",")) if d and d.lower() != b"public"]:
                    headers.append((name, b", ".join(kept)))
            message = {**message, "headers": headers}
        await send(message)

    return sending


def _digest(key: str | bytes) -> bytes:
    raw = key.encode() if isinstance(key, str) else key
    return hashlib.sha256(raw).digest()


def _read_digest_file(path: Path) -> list[bytes]:
    digests = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.split("#", 1)[0].strip().lower().removeprefix("sha256:")
        if not text:
            continue
        if not _HEX_DIGEST.fullmatch(text):
            raise ValueError(f"{path}:{number}: expected a sha256 hex digest of an API key (64 hex digits)")
        digests.append(bytes.fromhex(text))
    return digests


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None
