"""API keys: configuration, constant-time verification, the 401 answer, and secrecy."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from service.api.security import ApiKeys, bearer_token

from .conftest import StubSettings, small_app

KEY = "s3cret-key-one"
OTHER = "another-key-two"


def client(settings: StubSettings) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=small_app(settings)), base_url="http://test")


def test_keys_from_string_and_file(tmp_path: Path) -> None:
    digest_file = tmp_path / "keys.sha256"
    digest_file.write_text(f"# deploy keys\n\nsha256:{hashlib.sha256(OTHER.encode()).hexdigest().upper()}  # ci\n")
    keys = ApiKeys.from_config(f" {KEY} ,, ", digest_file)
    assert len(keys) == 2
    assert keys.verify(KEY)
    assert keys.verify(OTHER.encode())
    assert not keys.verify("s3cret-key-on")
    assert not keys.verify("")
    assert KEY not in repr(keys)
    assert not ApiKeys.from_config("").enabled


def test_bad_digest_file_names_line_not_content(tmp_path: Path) -> None:
    digest_file = tmp_path / "keys"
    digest_file.write_text("\nplain-text-key-by-mistake\n")
    with pytest.raises(ValueError, match=r"keys:2: expected a sha256") as info:
        ApiKeys.from_config("", digest_file)
    assert "plain-text-key-by-mistake" not in str(info.value)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (b"Bearer abc", b"abc"),
        (b"bearer   abc ", b"abc"),
        (b"BEARER abc", b"abc"),
        (b"Basic abc", None),
        (b"Bearer", None),
        (b"Bearer ", None),
        (b"", None),
        (None, None),
    ],
)
def test_bearer_token(header: bytes | None, token: bytes | None) -> None:
    assert bearer_token(header) == token


async def _get(settings: StubSettings, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with client(settings) as c:
        return await c.get(path, headers=headers)


@pytest.mark.anyio
async def test_open_when_no_keys() -> None:
    response = await _get(StubSettings(), "/items/a")
    assert response.status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_need_no_key(path: str) -> None:
    response = await _get(StubSettings(api_keys=KEY), path)
    assert response.status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "invalid_token"),
    [
        ({}, False),
        ({"Authorization": "Basic czNjcmV0"}, False),
        ({"Authorization": "Bearer"}, False),
        ({"Authorization": "Bearer wrong"}, True),
        ({"Authorization": f"Bearer {KEY}x"}, True),
        ({"Authorization": f"Bearer {KEY[:-1]}"}, True),
    ],
)
@pytest.mark.parametrize("path", ["/items/a", "/metrics", "/openapi.json", "/no/such/path"])
async def test_refused_without_valid_key(headers: dict[str, str], invalid_token: bool, path: str) -> None:
    response = await _get(StubSettings(api_keys=KEY), path, headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert ('error="invalid_token"' in response.headers["www-authenticate"]) is invalid_token
    body = response.json()
    assert body["type"] == "https://tensorinit.dev/problems/unauthorized"
    assert body["status"] == 401
    assert body["request_id"] == response.headers["x-request-id"]
    assert KEY not in response.text


@pytest.mark.anyio
@pytest.mark.parametrize("key", [KEY, OTHER])
async def test_any_configured_key_is_accepted(key: str) -> None:
    response = await _get(StubSettings(api_keys=f"{KEY},{OTHER}"), "/items/a", {"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.json() == {"name": "a"}


@pytest.mark.anyio
async def test_refusals_are_counted_and_keys_never_logged(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    app = small_app(StubSettings(api_keys=KEY, access_log=str(log)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        for header in (f"Bearer {KEY}", "Bearer guess-1", "Bearer guess-2"):
            await c.post("/echo", json={"secret_field": 1}, headers={"Authorization": header})
        metrics = await c.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
    app.state.hardening.access_log.close()
    assert 'tensorinit_rejected_requests_total{reason="unauthorized"} 2.0' in metrics.text
    logged = log.read_text()
    assert logged.count('"status":401') == 2
    for secret in (KEY, "guess-1", "Bearer", "secret_field"):
        assert secret not in logged
