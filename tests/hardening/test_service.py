"""The hardening as wired into the real service: access control, CORS, documents, admission."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api.app import create_app
from service.api.settings import Settings
from tests.metrics import sample

from .live import LiveProcess

ROOT = Path(__file__).resolve().parents[2]
KEY = "service-key"
AUTH = {"Authorization": f"Bearer {KEY}"}

pytestmark = pytest.mark.anyio


def client(**settings: Any) -> httpx.AsyncClient:
    app = create_app(Settings(**settings))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_are_open_with_keys(path: str) -> None:
    async with client(api_keys=KEY) as c:
        response = await c.get(path)
    assert response.status_code in (200, 503)  # in-process the lifespan does not run: not ready
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize(
    "path", ["/version", "/schemes", "/schemes/he_normal", "/metrics", "/openapi.json", "/docs", "/init?scheme=zeros&shape=2"]
)
async def test_everything_else_needs_the_key(path: str) -> None:
    async with client(api_keys=KEY) as c:
        refused = await c.get(path)
        wrong = await c.get(path, headers={"Authorization": "Bearer nope"})
        allowed = await c.get(path, headers=AUTH)
    for response in (refused, wrong):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["type"] == "https://tensorinit.dev/problems/unauthorized"
        assert response.json()["request_id"] == response.headers["x-request-id"]
    assert allowed.status_code == 200


async def test_keys_from_a_file_of_digests(tmp_path: Path) -> None:
    digests = tmp_path / "keys.sha256"
    digests.write_text("# ops\n" + __import__("hashlib").sha256(KEY.encode()).hexdigest() + "\n")
    async with client(api_keys_file=str(digests)) as c:
        assert (await c.get("/version")).status_code == 401
        assert (await c.get("/version", headers=AUTH)).status_code == 200


async def test_open_and_cors_off_by_default() -> None:
    origin = {"Origin": "https://evil.example"}
    async with client() as c:
        simple = await c.get("/version", headers=origin)
        preflight = await c.options("/init", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert simple.status_code == 200
    assert preflight.status_code == 405
    for response in (simple, preflight):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]


async def test_cors_for_configured_origins() -> None:
    async with client(cors_origins="https://notebook.example") as c:
        preflight = await c.options(
            "/init",
            headers={
                "Origin": "https://notebook.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://notebook.example"


def test_committed_document_is_a_keyless_servers_and_declares_no_security() -> None:
    doc = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    assert "securitySchemes" not in doc["components"]
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            assert "security" not in operation and "401" not in operation["responses"], (path, method)
    for path, method in (("/init", "get"), ("/init", "post"), ("/stats", "get"), ("/stats", "post"), ("/init/he_normal", "get")):
        assert "Retry-After" in doc["paths"][path][method]["responses"]["503"]["headers"]
    assert doc["paths"]["/metrics"]["get"]["operationId"] == "metrics"


def test_a_server_with_keys_declares_the_bearer_scheme_and_answers() -> None:
    doc = create_app(Settings(api_keys="k")).openapi()
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    for path in ("/healthz", "/readyz"):
        assert "security" not in doc["paths"][path]["get"]
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            if path in ("/healthz", "/readyz"):
                continue
            assert operation["security"] == [{"bearerAuth": []}], (path, method)
            assert "401" in operation["responses"], (path, method)


async def test_metrics_count_requests_by_route_and_streams() -> None:
    async with client() as c:
        await c.get("/init", params={"scheme": "he_normal", "shape": "64,64"})
        await c.get("/schemes/he_normal")
        await c.get("/schemes/nope")
        text = (await c.get("/metrics")).text
    assert sample(text, "tensorinit_http_requests_total", method="GET", route="/init", status="200") == 1
    assert sample(text, "tensorinit_http_requests_total", method="GET", route="/schemes/{name}", status="200") == 1
    assert sample(text, "tensorinit_http_requests_total", method="GET", route="/schemes/{name}", status="404") == 1
    assert sample(text, "tensorinit_streams_total", outcome="completed") >= 0
    assert sample(text, "tensorinit_generations_in_flight") == 0


@pytest.fixture
def one_slot(tmp_path: Path) -> Iterator[LiveProcess]:
    env = {"TENSORINIT_MAX_CONCURRENT_GENERATIONS": "1", "TENSORINIT_ADMISSION_TIMEOUT_SECONDS": "0.3"}
    with LiveProcess(tmp_path / "server.log", env) as live:
        yield live


def test_admission_on_a_real_server(one_slot: LiveProcess) -> None:
    live = one_slot
    # A client that does not read holds the only generation slot (its stream is stuck on the
    # socket). Only streamed answers are admitted: tiny ones are served from memory at once.
    hog = socket.create_connection(("127.0.0.1", live.port))
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.sendall(b"GET /init?scheme=he_normal&shape=8192,8192 HTTP/1.1\r\nHost: x\r\n\r\n")
    deadline = time.monotonic() + 10
    while sample(httpx.get(live.url + "/metrics").text, "tensorinit_generations_in_flight") != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    refused = httpx.get(live.url + "/init", params={"scheme": "zeros", "shape": "1024,1024"}, timeout=10)
    waited = time.monotonic() - started
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["type"] == "https://tensorinit.dev/problems/overloaded"
    assert 0.25 <= waited < 5
    # /healthz is never blocked by generation or admission.
    assert httpx.get(live.url + "/healthz", timeout=2).status_code == 200
    hog.close()
    deadline = time.monotonic() + 10
    while sample(httpx.get(live.url + "/metrics").text, "tensorinit_generations_in_flight") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert httpx.get(live.url + "/init", params={"scheme": "zeros", "shape": "1024,1024"}, timeout=10).status_code == 200
    text = httpx.get(live.url + "/metrics").text
    assert sample(text, "tensorinit_rejected_requests_total", reason="overloaded") == 1
    assert sample(text, "tensorinit_http_requests_total", method="GET", route="/init", status="503") == 1


def test_client_honours_retry_after_and_succeeds(one_slot: LiveProcess) -> None:
    tensorinit = pytest.importorskip("tensorinit")
    live = one_slot
    hog = socket.create_connection(("127.0.0.1", live.port))
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.sendall(b"GET /init?scheme=he_normal&shape=8192,8192 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.5)
    threading.Timer(1.5, hog.close).start()  # the slot frees while the client is backing off
    policy = tensorinit.RetryPolicy(max_retries=6, initial_delay=0.2, max_delay=1.0)
    with tensorinit.Client(live.url, max_retries=policy, timeout=30) as c:
        array = c.init("he_uniform", (1024, 1024), name="weight", seed=3)
    assert array.shape == (1024, 1024)
    text = httpx.get(live.url + "/metrics").text
    assert sample(text, "tensorinit_rejected_requests_total", reason="overloaded") >= 1
    assert sample(text, "tensorinit_http_requests_total", method="POST", route="/init", status="200") == 1


def _flood(live: LiveProcess, shape: str, count: int) -> list[socket.socket]:
    hogs = []
    for _ in range(count):  # asked for, never read
        s = socket.create_connection(("127.0.0.1", live.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET /init?scheme=he_normal&shape={shape} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        hogs.append(s)
    time.sleep(2.0)
    return hogs


def test_a_flood_of_huge_requests_keeps_memory_bounded(tmp_path: Path) -> None:
    env = {"TENSORINIT_ADMISSION_TIMEOUT_SECONDS": "0.5"}
    with LiveProcess(tmp_path / "server.log", env) as live:
        idle = live.rss()
        # 40 x 1 GiB: each counts for its client's whole share of the bytes in flight (half of
        # 256 MiB), so one runs at a time.
        hogs = _flood(live, "16384,16384", 40)
        text = httpx.get(live.url + "/metrics", timeout=5).text
        assert sample(text, "tensorinit_generations_in_flight") == 1
        assert sample(text, "tensorinit_rejected_requests_total", reason="overloaded") == 39
        for s in hogs:
            s.close()
        # 40 x 62.5 MiB: all from one client address, which holds at most half of the four
        # slots and of the bytes in flight (TENSORINIT_MAX_CLIENT_SHARE, issue 17): two run.
        hogs = _flood(live, "4096,4000", 40)
        text = httpx.get(live.url + "/metrics", timeout=5).text
        assert sample(text, "tensorinit_generations_in_flight") == 2
        assert sample(text, "tensorinit_rejected_requests_total", reason="overloaded") == 39 + 38
        assert httpx.get(live.url + "/healthz", timeout=2).status_code == 200
        grown = live.peak_rss() - idle
        for s in hogs:
            s.close()
    assert grown < 200 * (1 << 20), f"RSS grew by {grown / (1 << 20):.0f} MiB"


# (keys configured, method, path, headers, status, Cache-Control): GET /auth for nginx's
# auth_request, and no "public" in an answer to a keyed request (RFC 9111 §3.5).
KEY_CHECKS = [
    (False, "GET", "/auth", {}, 204, None),
    (False, "GET", "/auth", {"Authorization": "Bearer anything"}, 204, None),
    (False, "GET", "/init?scheme=zeros&shape=2", {}, 200, "public, max-age=31536000, immutable"),
    (False, "GET", "/stats?scheme=zeros&shape=2", {}, 200, "public, max-age=86400"),
    (True, "GET", "/auth", {}, 401, None),
    (True, "GET", "/auth", {"Authorization": "Bearer nope"}, 401, None),
    (True, "GET", "/auth", AUTH, 204, None),
    (True, "GET", "/init?scheme=zeros&shape=2", AUTH, 200, "max-age=31536000, immutable"),
    (True, "HEAD", "/init/zeros?shape=2", AUTH, 200, "max-age=31536000, immutable"),
    (True, "GET", "/init?scheme=zeros&shape=2", {**AUTH, "Range": "bytes=0-3"}, 206, "max-age=31536000, immutable"),
    (True, "GET", "/stats/zeros?shape=2", AUTH, 200, "max-age=86400"),
    (True, "GET", "/version", AUTH, 200, None),
]


@pytest.mark.parametrize(("keys", "method", "path", "headers", "status", "cache_control"), KEY_CHECKS)
async def test_the_key_check_and_no_public_cache_control_with_keys(
    keys: bool, method: str, path: str, headers: dict[str, str], status: int, cache_control: str | None
) -> None:
    async with client(api_keys=KEY if keys else "") as c:
        response = await c.request(method, path, headers=headers)
    assert response.status_code == status
    assert response.headers.get("cache-control") == cache_control
    if status == 204:
        assert response.content == b""
