"""What install() adds to an app: CORS only when configured, and the OpenAPI security."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.api.hardening import cors_origins

from .conftest import StubSettings, small_app

pytestmark = pytest.mark.anyio

ORIGIN = "https://notebook.example"


def client(settings: StubSettings | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=small_app(settings)), base_url="http://test")


async def test_cors_off_by_default() -> None:
    async with client() as c:
        simple = await c.get("/items/a", headers={"Origin": ORIGIN})
        preflight = await c.options(
            "/items/a",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"},
        )
    assert simple.status_code == 200
    for response in (simple, preflight):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    assert preflight.status_code == 405


async def test_cors_when_configured() -> None:
    settings = StubSettings(cors_origins=f"{ORIGIN}, https://other.example", api_keys="k")
    async with client(settings) as c:
        preflight = await c.options(
            "/items/a",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"},
        )
        simple = await c.get("/items/a", headers={"Origin": ORIGIN, "Authorization": "Bearer k"})
        stranger = await c.get("/items/a", headers={"Origin": "https://evil.example", "Authorization": "Bearer k"})
        refused = await c.get("/items/a", headers={"Origin": ORIGIN})
    # The preflight carries no credentials; it is answered before access control.
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in stranger.headers
    # A refusal still tells the browser's script why.
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.parametrize(
    ("value", "origins"),
    [("", []), (" , ", []), ("https://a.example", ["https://a.example"]), ("a, b ,", ["a", "b"]), (["a", " "], ["a"])],
)
def test_cors_origins(value: str | list[str], origins: list[str]) -> None:
    assert cors_origins(value) == origins


async def test_openapi_declares_no_security_without_keys() -> None:
    async with client() as c:
        doc: dict[str, Any] = (await c.get("/openapi.json")).json()
    assert "securitySchemes" not in doc["components"]
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            assert "security" not in operation and "401" not in operation["responses"], (path, method)
    assert "Retry-After" in doc["paths"]["/stream"]["get"]["responses"]["503"]["headers"]  # admission is on all the same


async def test_openapi_declares_bearer_security_with_keys() -> None:
    async with client(StubSettings(api_keys="k")) as c:
        doc: dict[str, Any] = (await c.get("/openapi.json", headers={"Authorization": "Bearer k"})).json()
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    paths = doc["paths"]
    for public in ("/healthz", "/readyz"):
        assert "security" not in paths[public]["get"]
        assert "401" not in paths[public]["get"]["responses"]
    for path, method in (("/items/{name}", "get"), ("/echo", "post"), ("/metrics", "get"), ("/stream", "get")):
        operation = paths[path][method]
        assert operation["security"] == [{"bearerAuth": []}]
        assert "401" in operation["responses"]
    assert "503" in paths["/stream"]["get"]["responses"]
    assert "Retry-After" in paths["/stream"]["get"]["responses"]["503"]["headers"]
    assert "503" not in paths["/items/{name}"]["get"]["responses"]
    assert paths["/metrics"]["get"]["operationId"] == "metrics"
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
