"""JSON endpoints and small files, in-process: contract, errors, batch == single, /stats digests."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
from fastapi import FastAPI

from service import __version__
from service.api.app import create_app
from service.api.settings import Settings
from service.core import ALGORITHM_VERSION, SCHEMES, generate, resolve

pytestmark = pytest.mark.anyio

PROBLEM = "https://tensorinit.dev/problems/"


def tensors_of(data: bytes) -> dict[str, Any]:
    loaded: dict[str, Any] = safetensors.torch.load(data)
    return loaded


def data_bytes(data: bytes, name: str) -> bytes:
    """The raw bytes of one tensor inside a safetensors file, via its header."""
    n = int.from_bytes(data[:8], "little")
    begin, end = json.loads(data[8 : 8 + n])[name]["data_offsets"]
    return data[8 + n + begin : 8 + n + end]


# -- files: same bytes whatever the form -----------------------------------------------


async def test_post_and_get_give_the_same_bytes_and_etag(api: httpx.AsyncClient) -> None:
    post = await api.post("/init", json={"scheme": "kaiming_normal", "shape": [64, 32], "seed": 7, "dtype": "float16", "mode": "fan_out"})
    get = await api.get("/init", params={"scheme": "he_normal", "shape": "64,32", "seed": "7", "dtype": "float16", "mode": "fan_out"})
    assert post.status_code == get.status_code == 200
    assert post.content == get.content
    assert post.headers["etag"] == get.headers["etag"]
    assert get.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "cache-control" not in post.headers
    assert post.headers["content-type"] == "application/octet-stream"
    assert post.headers["content-disposition"] == 'attachment; filename="weight.safetensors"'
    assert int(post.headers["content-length"]) == len(post.content)
    spec = resolve("he_normal", [64, 32], seed=7, dtype="float16", params={"mode": "fan_out"})
    np.testing.assert_array_equal(safetensors.numpy.load(post.content)["weight"], generate(spec))


async def test_metadata_is_the_canonical_spec_json_and_the_etag_its_digest(api: httpx.AsyncClient) -> None:
    r = await api.get("/init", params={"scheme": "orthogonal", "shape": "8,8", "name": "q"})
    n = int.from_bytes(r.content[:8], "little")
    meta = json.loads(r.content[8 : 8 + n])["__metadata__"]["tensorinit"]
    assert json.loads(meta) == {"algorithm": ALGORITHM_VERSION, "specs": [resolve("orthogonal", [8, 8], name="q").to_dict()]}
    assert r.headers["etag"] == '"' + hashlib.sha256(meta.encode()).hexdigest() + '"'


BATCH: dict[str, Any] = {
    "seed": 3,
    "dtype": "bfloat16",
    "convention": "keras",
    "tensors": {
        "fc1.weight": {"scheme": "he_uniform", "shape": [64, 48]},
        "fc1.bias": {"scheme": "zeros", "shape": [48]},
        "fc2.weight": {"scheme": "glorot_normal", "shape": [48, 10], "dtype": "float32", "seed": 11},
        "conv": {"scheme": "orthogonal", "shape": [3, 3, 4, 8], "dtype": "float64"},
    },
}


async def test_a_tensor_in_a_batch_has_the_bytes_it_has_alone(api: httpx.AsyncClient) -> None:
    batch = await api.post("/init", json=BATCH)
    assert batch.status_code == 200
    assert batch.headers["content-disposition"] == 'attachment; filename="tensors.safetensors"'
    loaded = tensors_of(batch.content)
    assert set(loaded) == set(BATCH["tensors"])
    for name, item in BATCH["tensors"].items():
        alone_request = {"seed": 3, "dtype": "bfloat16", "convention": "keras", **item, "name": name}
        alone = await api.post("/init", json=alone_request)
        assert alone.status_code == 200
        assert data_bytes(batch.content, name) == data_bytes(alone.content, name)
        spec = resolve(alone_request.pop("scheme"), alone_request.pop("shape"), **alone_request)
        assert data_bytes(batch.content, name) == generate(spec).tobytes()


async def test_batch_order_of_keys_does_not_change_the_bytes(api: httpx.AsyncClient) -> None:
    reordered = {**BATCH, "tensors": dict(reversed(list(BATCH["tensors"].items())))}
    a, b = await api.post("/init", json=BATCH), await api.post("/init", json=reordered)
    assert a.content == b.content and a.headers["etag"] == b.headers["etag"]


# -- /stats ------------------------------------------------------------------------------


async def test_stats_sha256_is_the_digest_of_the_served_bytes(api: httpx.AsyncClient) -> None:
    served = await api.post("/init", json=BATCH)
    stats = await api.post("/stats", json={**BATCH, "bins": 16})
    assert stats.status_code == 200
    body = stats.json()
    assert body["algorithm"] == ALGORITHM_VERSION and body["etag"] == served.headers["etag"]
    for name, entry in body["tensors"].items():
        assert entry["sha256"] == hashlib.sha256(data_bytes(served.content, name)).hexdigest()
        assert set(entry) == {"spec", "empirical", "theory", "sha256"}
        assert set(entry["empirical"]) == {"count", "mean", "std", "min", "max", "histogram", "ks", "orthogonality_error"}
        assert len(entry["empirical"]["histogram"]["counts"]) == 16
        assert set(entry["theory"]) == {"mean", "std", "support"}
    assert body["tensors"]["conv"]["empirical"]["orthogonality_error"] < 1e-12


async def test_stats_get_matches_post(api: httpx.AsyncClient) -> None:
    get = await api.get("/stats", params={"scheme": "he_normal", "shape": "128,64", "bins": "8"})
    post = await api.post("/stats", json={"scheme": "he_normal", "shape": [128, 64], "bins": 8})
    assert get.json() == post.json()
    ks = get.json()["tensors"]["weight"]["empirical"]["ks"]
    assert ks["sample_size"] == 128 * 64 and ks["pvalue"] > 1e-4


@pytest.mark.parametrize(
    ("accept", "kind"),
    [(None, "json"), ("*/*", "json"), ("text/plain", "text"), ("application/json, text/plain;q=0.5", "json"), ("text/*", "text")],
)
async def test_stats_content_negotiation(api: httpx.AsyncClient, accept: str | None, kind: str) -> None:
    headers = {"accept": accept} if accept else {}
    r = await api.get("/stats", params={"scheme": "he_uniform", "shape": "64,64"}, headers=headers)
    assert r.status_code == 200
    assert r.headers["vary"] == "Accept"
    if kind == "text":
        assert r.headers["content-type"].startswith("text/plain")
        lines = r.text.splitlines()
        assert lines[0].startswith("tensorinit stats")
        assert "he_uniform" in r.text and "empirical" in r.text and "theory" in r.text and "sha256" in r.text
        assert len(lines) < 10
    else:
        assert r.headers["content-type"] == "application/json"


# -- errors ------------------------------------------------------------------------------

ERRORS: list[tuple[str, dict[str, Any], int, str, list[Any]]] = [
    ("shape a number", {"scheme": "he_normal", "shape": 5}, 422, "validation-error", ["shape"]),
    ("shape item a string", {"scheme": "he_normal", "shape": [2, "3"]}, 422, "validation-error", ["shape", 1]),
    ("negative dim", {"scheme": "he_normal", "shape": [2, -3]}, 422, "validation-error", ["shape", 1]),
    ("gain a string", {"scheme": "he_normal", "shape": [2, 2], "gain": "2"}, 422, "validation-error", ["gain"]),
    ("gain a bool", {"scheme": "he_normal", "shape": [2, 2], "gain": True}, 422, "validation-error", ["gain"]),
    ("seed a string", {"scheme": "zeros", "shape": [2], "seed": "1"}, 422, "validation-error", ["seed"]),
    ("seed negative", {"scheme": "zeros", "shape": [2], "seed": -1}, 422, "validation-error", ["seed"]),
    ("bad mode", {"scheme": "he_normal", "shape": [2, 2], "mode": "fan_x"}, 422, "validation-error", ["mode"]),
    ("bad dtype", {"scheme": "zeros", "shape": [2], "dtype": "int8"}, 422, "validation-error", ["dtype"]),
    ("bad convention", {"scheme": "zeros", "shape": [2], "convention": "mxnet"}, 422, "validation-error", ["convention"]),
    ("typo in a parameter", {"scheme": "he_normal", "shape": [2, 2], "gian": 1.0}, 422, "unknown-parameter", ["gian"]),
    ("parameter of another scheme", {"scheme": "zeros", "shape": [2], "gain": 1.0}, 422, "unknown-parameter", ["gain"]),
    ("unknown scheme", {"scheme": "he_nromal", "shape": [2]}, 422, "unknown-scheme", ["scheme"]),
    ("no scheme", {"shape": [2]}, 422, "validation-error", ["scheme"]),
    ("missing required", {"scheme": "constant", "shape": [2]}, 422, "validation-error", ["value"]),
    (
        "truncation without mass",
        {"scheme": "truncated_normal", "shape": [2], "lower": 50.0, "upper": 60.0},
        422,
        "validation-error",
        ["lower"],
    ),
    ("rank too low", {"scheme": "orthogonal", "shape": [4]}, 422, "validation-error", ["shape"]),
    ("too many elements", {"scheme": "zeros", "shape": [1 << 20, 1 << 20]}, 413, "limit-exceeded", ["shape"]),
    ("too many dims", {"scheme": "zeros", "shape": [1] * 9}, 422, "validation-error", ["shape"]),  # max_dims: the document states it
    ("orthogonal too big", {"scheme": "orthogonal", "shape": [8192, 8192]}, 413, "limit-exceeded", ["shape"]),
    (
        "batch item error",
        {"tensors": {"a": {"scheme": "zeros", "shape": [2]}, "b": {"scheme": "he_normal", "shape": [2, 2], "mode": 3}}},
        422,
        "validation-error",
        ["tensors", "b", "mode"],
    ),
    ("batch unknown scheme", {"tensors": {"b": {"scheme": "nope", "shape": [1]}}}, 422, "unknown-scheme", ["tensors", "b", "scheme"]),
    (
        "batch engine error",
        {"tensors": {"b": {"scheme": "he_normal", "shape": [2, 2], "gain": 1.0, "nonlinearity": "relu"}}},
        422,
        "validation-error",
        ["tensors", "b", "gain"],
    ),
    ("batch default error", {"seed": -2, "tensors": {"b": {"scheme": "zeros", "shape": [1]}}}, 422, "validation-error", ["seed"]),
    ("batch top-level typo", {"sed": 1, "tensors": {"b": {"scheme": "zeros", "shape": [1]}}}, 422, "unknown-parameter", ["sed"]),
    (
        "batch name field",
        {"tensors": {"b": {"scheme": "zeros", "shape": [1], "name": "x"}}},
        422,
        "unknown-parameter",
        ["tensors", "b", "name"],
    ),
    ("batch empty", {"tensors": {}}, 422, "validation-error", ["tensors"]),
    ("bins on /init", {"scheme": "zeros", "shape": [1], "bins": 3}, 422, "unknown-parameter", ["bins"]),
    ("not an object", [1, 2], 422, "validation-error", []),  # type: ignore[list-item]
    ("reserved name", {"scheme": "zeros", "shape": [1], "name": "__metadata__"}, 422, "validation-error", ["name"]),
]


@pytest.mark.parametrize(("case", "body", "status", "kind", "path"), ERRORS, ids=[e[0] for e in ERRORS])
async def test_errors_are_problems_naming_the_field(
    api: httpx.AsyncClient, case: str, body: Any, status: int, kind: str, path: list[Any]
) -> None:
    r = await api.post("/init", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == PROBLEM + kind and problem["status"] == status
    assert problem["title"] and problem["detail"]
    assert problem["request_id"] == r.headers["x-request-id"]
    assert problem["errors"][0]["path"] == path
    assert problem["errors"][0]["allowed"]
    # Where is said once: by the path (messages do not repeat the field) and once in the detail.
    for e in problem["errors"]:
        field = next((p for p in reversed(e["path"]) if isinstance(p, str)), None)
        assert field is None or not e["message"].startswith(f"{field}: "), e
    if path:
        field = next(p for p in reversed(path) if isinstance(p, str))
        assert not problem["detail"].startswith(f"{'/'.join(map(str, path))}: {field}: "), problem["detail"]
        assert f"{field}: {field}: " not in problem["detail"]
    if kind == "unknown-scheme":
        assert problem["suggestions"]
    if kind == "limit-exceeded":
        assert problem["limit_name"] in Settings().public_limits()


async def test_unknown_scheme_names_the_closest(api: httpx.AsyncClient) -> None:
    problem = (await api.post("/init", json={"scheme": "kaiming_nromal", "shape": [2]})).json()
    assert "he_normal" in problem["suggestions"]


async def test_all_field_errors_are_listed(api: httpx.AsyncClient) -> None:
    r = await api.post("/init", json={"scheme": "he_normal", "shape": [2, 2], "gain": "x", "seed": "y", "gian": 1})
    assert {tuple(e["path"]) for e in r.json()["errors"]} == {("gain",), ("seed",), ("gian",)}


GET_ERRORS = [
    ({"scheme": "he_normal", "shape": "2,x"}, 422, ["shape", 1]),
    ({"scheme": "he_normal", "shape": "2,2", "gain": "abc"}, 422, ["gain"]),
    ({"scheme": "he_normal", "shape": "2,2", "gain": "nan"}, 422, ["gain"]),
    ({"scheme": "he_normal", "shape": "2,2", "seed": "1.5"}, 422, ["seed"]),
    ({"scheme": "he_normal", "shape": "2,2", "truncated": "maybe"}, 422, ["truncated"]),
    ({"scheme": "he_nrmal", "shape": "2,2"}, 422, ["scheme"]),
    ({"scheme": "zeros", "shape": "2", "bogus": "1"}, 422, ["bogus"]),
]


@pytest.mark.parametrize(("params", "status", "path"), GET_ERRORS)
async def test_get_errors(api: httpx.AsyncClient, params: dict[str, str], status: int, path: list[Any]) -> None:
    r = await api.get("/init", params=params)
    assert r.status_code == status and r.json()["errors"][0]["path"] == path


async def test_get_query_forms(api: httpx.AsyncClient) -> None:
    scalar = await api.get("/init", params={"scheme": "ones", "shape": ""})
    assert safetensors.numpy.load(scalar.content)["weight"].shape == ()
    repeated = await api.get("/init?scheme=zeros&shape=2&shape=3")
    assert repeated.status_code == 422 and repeated.json()["errors"][0]["path"] == ["shape"]
    typed = await api.get("/init", params={"scheme": "orthogonal", "shape": "4,6", "convention": "jax", "column_axis": "0", "gain": "2"})
    post = await api.post("/init", json={"scheme": "orthogonal", "shape": [4, 6], "convention": "jax", "column_axis": 0, "gain": 2.0})
    assert typed.content == post.content


PLAN_BODY = {"recipe": "torch", "tensors": {"fc.weight": {"shape": [4, 4], "kind": "linear"}}}


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "kind"),
    [
        ("POST", "/init", {"content": b'{"scheme": ', "headers": {"content-type": "application/json"}}, 400, "malformed-json"),
        (
            "POST",
            "/init",
            {"content": b'{"scheme": "zeros", "shape": [1], "value": NaN}', "headers": {"content-type": "application/json"}},
            400,
            "malformed-json",
        ),
        ("POST", "/init", {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, 400, "malformed-json"),
        (
            "POST",
            "/init",
            {"content": b"scheme=zeros", "headers": {"content-type": "application/x-www-form-urlencoded"}},
            415,
            "unsupported-media-type",
        ),
        ("GET", "/nowhere", {}, 404, "not-found"),
        ("DELETE", "/init", {}, 405, "method-not-allowed"),
        ("PUT", "/schemes", {}, 405, "method-not-allowed"),
        ("GET", "/schemes/xavir_uniform", {}, 404, "not-found"),
        ("GET", "/recipes/gtp2", {}, 404, "not-found"),
        ("GET", "/stats?scheme=zeros&shape=2&bins=0", {}, 422, "validation-error"),
        ("GET", "/stats?scheme=zeros&shape=2&bins=100000", {}, 413, "limit-exceeded"),
        ("GET", "/stats?scheme=zeros&shape=2", {"headers": {"accept": "application/xml"}}, 406, "not-acceptable"),
        ("POST", "/plan", {"json": PLAN_BODY, "headers": {"accept": "image/png"}}, 406, "not-acceptable"),
        ("POST", "/plan", {"json": PLAN_BODY, "headers": {"accept": "application/json;q=0, text/plain;q=0"}}, 406, "not-acceptable"),
    ],
)
async def test_protocol_errors_are_problems(
    api: httpx.AsyncClient, method: str, url: str, kwargs: dict[str, Any], status: int, kind: str
) -> None:
    r = await api.request(method, url, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == PROBLEM + kind
    if status == 405:
        assert r.headers["allow"]


async def test_request_id_is_echoed_or_made(api: httpx.AsyncClient) -> None:
    mine = await api.get("/healthz", headers={"x-request-id": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    hostile = await api.get("/nowhere", headers={"x-request-id": "x" * 500})
    assert hostile.headers["x-request-id"] != "x" * 500 and len(hostile.headers["x-request-id"]) == 32
    assert hostile.json()["request_id"] == hostile.headers["x-request-id"]


# -- limits from the environment -----------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "body", "kind", "limit_name"),
    [
        (
            {"TENSORINIT_MAX_BATCH_TENSORS": "2"},
            {"tensors": {k: {"scheme": "zeros", "shape": [1]} for k in "abc"}},
            "limit-exceeded",
            "max_batch_tensors",
        ),
        ({"TENSORINIT_MAX_RESPONSE_BYTES": "1000"}, {"scheme": "zeros", "shape": [300]}, "limit-exceeded", "max_response_bytes"),
        ({"TENSORINIT_MAX_ELEMENTS": "10"}, {"scheme": "zeros", "shape": [11]}, "limit-exceeded", "max_elements"),
        (
            {"TENSORINIT_MAX_ORTHOGONAL_ELEMENTS": "10"},
            {"scheme": "orthogonal", "shape": [4, 4]},
            "limit-exceeded",
            "max_orthogonal_elements",
        ),
        ({"TENSORINIT_MAX_BODY_BYTES": "64"}, {"scheme": "zeros", "shape": [1], "name": "n" * 100}, "body-too-large", "max_body_bytes"),
    ],
)
async def test_limits_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], body: Any, kind: str, limit_name: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = create_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.post("/init", json=body)
        assert r.status_code == 413, r.text
        assert r.json()["type"] == PROBLEM + kind and r.json()["limit_name"] == limit_name
        version = (await client.get("/version")).json()
        assert version["limits"][limit_name] == int(next(iter(env.values())))


async def test_body_limit_is_enforced_while_reading(app: FastAPI) -> None:
    small = create_app(Settings(max_body_bytes=100))

    async def chunks() -> Any:
        for _ in range(1000):
            yield b" " * 50

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=small), base_url="http://t") as client:
        r = await client.post("/init", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["type"] == PROBLEM + "body-too-large"


def test_issue_5_settings_are_declared(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.api_keys, defaults.api_keys_file, defaults.cors_origins) == ("", None, "")
    assert (defaults.max_concurrent_generations, defaults.max_bytes_in_flight, defaults.admission_timeout_seconds) == (4, 256 << 20, 2.0)
    monkeypatch.setenv("TENSORINIT_API_KEYS", "a,b")
    monkeypatch.setenv("TENSORINIT_ADMISSION_TIMEOUT_SECONDS", "0.5")
    assert Settings().api_keys == "a,b" and Settings().admission_timeout_seconds == 0.5


# -- catalogue, health, version -----------------------------------------------------------


async def test_schemes_catalogue(api: httpx.AsyncClient) -> None:
    body = (await api.get("/schemes")).json()
    assert [s["name"] for s in body["schemes"]] == list(SCHEMES)
    assert body["limits"] == Settings().public_limits()
    assert body["conventions"] == ["torch", "keras", "jax", "haiku"]
    he = next(s for s in body["schemes"] if s["name"] == "he_normal")
    assert "kaiming_normal" in he["aliases"] and he["formula"] and he["source"]
    truncated = next(p for p in he["parameters"] if p["name"] == "truncated")
    assert truncated["default"] == {"torch": False, "keras": True, "jax": True, "haiku": True}


@pytest.mark.parametrize("alias", ["kaiming_uniform_", "Xavier-Uniform", "glorot_uniform"])
async def test_one_scheme_by_alias(api: httpx.AsyncClient, alias: str) -> None:
    r = await api.get(f"/schemes/{alias}")
    assert r.status_code == 200
    assert r.json()["name"] == ("he_uniform" if "kaiming" in alias else "glorot_uniform")


async def test_health_ready_version(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    # Ready once the kernels are compiled or loaded from numba's cache (in the background).
    for _ in range(1200):
        if (await api.get("/readyz")).status_code == 200:
            break
        await anyio.sleep(0.1)
    assert (await api.get("/readyz")).json() == {"status": "ready"}
    version = (await api.get("/version")).json()
    assert version["service"] == __version__ and version["algorithm"] == ALGORITHM_VERSION and version["numpy"] == np.__version__


async def test_readyz_is_503_outside_the_lifespan(app: FastAPI) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/readyz")).status_code == 503
