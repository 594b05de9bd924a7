"""The page at ``/``: static HTML, CSS and one small script, read once from the package, nothing from outside."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import Response

from ..problems import ProblemError

router = APIRouter(include_in_schema=False)

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_FILES = {
    path.name: (path.read_bytes(), _TYPES[path.suffix])
    for path in (Path(__file__).parent.parent / "static").iterdir()
    if path.suffix in _TYPES
}
PAGE_PATHS = frozenset({"/", *(f"/static/{name}" for name in _FILES if name != "index.html")})
"""The page and its files: public when API keys are configured (the calls the page makes still need a key)."""
# Self-contained on purpose: the page fetches only from its own origin, images only from blobs it made.
_POLICY = "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'"


def _file(name: str) -> Response:
    body, media_type = _FILES[name]
    return Response(body, media_type=media_type, headers={"Content-Security-Policy": _POLICY, "Cache-Control": "no-cache"})


@router.get("/")
async def page() -> Response:
    return _file("index.html")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in _FILES or name == "index.html":
        raise ProblemError("not-found", f"/static/{name[:80]}: no such file")
    return _file(name)
