"""``/docs``: Swagger UI from the installed package, under a strict Content-Security-Policy, nothing from outside.

FastAPI's own ``/docs`` loads Swagger UI from a CDN and starts it with an inline script:
blank on a machine without internet, and refused by a policy without ``'unsafe-inline'``.
Here the page, its starter script and Swagger UI's bundle and stylesheet all come from
this server. The bundle is swagger-ui-dist's, as fastapi-offline ships it (a maintained
package whose only job is to carry those files; its licence, MIT, covers the copy, and
swagger-ui's own, Apache-2.0, is named in the bundle's header). Every URL is relative,
so the page works behind a proxy that serves the app under a prefix.
"""

from __future__ import annotations

import functools
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from starlette.responses import Response

from ..problems import ProblemError

router = APIRouter(include_in_schema=False)

_ASSETS = Path(fastapi_offline.__file__).parent / "static"
# Swagger UI's stylesheet draws its icons from data: URIs; everything else is this origin's.
POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tensorinit · API</title>
<link rel="icon" href="static/favicon.svg">
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/start.js"></script>
</body>
</html>
""".encode()

# validatorUrl null: Swagger UI would otherwise send the document to an online validator for a badge.
_START = b"""window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
});
"""

_TYPES = {
    "start.js": "text/javascript; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}


@functools.cache
def _asset(name: str) -> bytes:
    """One of the package's files, read on first use (1.7 MB the service need not hold until someone opens /docs)."""
    return _START if name == "start.js" else (_ASSETS / name).read_bytes()


def _answer(body: bytes, media_type: str) -> Response:
    return Response(body, media_type=media_type, headers={"Content-Security-Policy": POLICY, "Cache-Control": "no-cache"})


@router.get("/docs")
async def docs() -> Response:
    return _answer(_PAGE, "text/html; charset=utf-8")


@router.get("/docs/{name}")
async def asset(name: str) -> Response:
    if name not in _TYPES:
        raise ProblemError("not-found", f"/docs/{name[:80]}: no such file")
    return _answer(_asset(name), _TYPES[name])
