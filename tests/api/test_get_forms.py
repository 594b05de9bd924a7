"""The two GET forms, per scheme (``/init/he_normal?...``) and flat (``/init?scheme=...``): same answers, exact documents."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.api.docs import flat_schemes
from service.api.models import SCHEME_MODELS
from service.api.openapi_export import document
from service.core import SCHEMES

pytestmark = pytest.mark.anyio

# (scheme name or alias, query without the scheme): the flat form takes both, the per-scheme
# form the canonical name.
REQUESTS: list[tuple[str, dict[str, str]]] = [
    ("he_normal", {"shape": "64,32", "seed": "7", "dtype": "float16", "mode": "fan_out"}),
    ("kaiming_uniform", {"shape": "32,16,3,3", "nonlinearity": "relu", "convention": "keras"}),
    ("constant", {"shape": "300", "value": "0.5", "name": "bias"}),
    ("dirac", {"shape": "8,4,3,3", "groups": "2"}),
    ("glorot_uniform", {"shape": "8,16", "in_axes": "1", "out_axes": "0"}),
    ("zeros", {"shape": ""}),
]
SAME = ("etag", "cache-control", "content-length", "content-disposition", "accept-ranges", "content-type")


def per_scheme_path(resource: str, name: str) -> str:
    return (
        f"/{resource}/{SCHEMES[name].name}"
        if name in SCHEMES
        else f"/{resource}/" + next(s.name for s in SCHEMES.values() if name in s.aliases)
    )


@pytest.mark.parametrize(("name", "query"), REQUESTS, ids=[r[0] for r in REQUESTS])
async def test_both_forms_give_the_same_answers(api: httpx.AsyncClient, name: str, query: dict[str, str]) -> None:
    flat, path = {"scheme": name, **query}, per_scheme_path("init", name)
    whole = await api.get("/init", params=flat)
    assert whole.status_code == 200, whole.text
    etag = whole.headers["etag"]
    for method, headers, status in (
        ("GET", {}, 200),
        ("HEAD", {}, 200),
        ("GET", {"Range": "bytes=5-99"}, 206),
        ("GET", {"If-None-Match": etag}, 304),
        ("GET", {"Range": "bytes=5-99", "If-Range": '"other"'}, 200),
    ):
        a = await api.request(method, "/init", params=flat, headers=headers)
        b = await api.request(method, path, params=query, headers=headers)
        assert a.status_code == b.status_code == status, (method, headers)
        assert a.content == b.content
        assert {k: a.headers.get(k) for k in (*SAME, "content-range")} == {k: b.headers.get(k) for k in (*SAME, "content-range")}
    stats_flat = await api.get("/stats", params={**flat, "bins": "8"})
    stats_path = await api.get(per_scheme_path("stats", name), params={**query, "bins": "8"})
    assert stats_flat.status_code == stats_path.status_code == 200
    assert stats_flat.json() == stats_path.json()
    assert stats_path.json()["etag"] == etag


ERRORS: list[tuple[str, dict[str, str], int, str, list[str]]] = [
    ("/init/he_normal", {"shape": "4,4", "scheme": "he_normal"}, 422, "unknown-parameter", ["scheme"]),
    ("/stats/he_normal", {"shape": "4,4", "scheme": "zeros"}, 422, "unknown-parameter", ["scheme"]),
    ("/init/zeros", {"shape": "4,4", "gain": "2"}, 422, "unknown-parameter", ["gain"]),  # another scheme's parameter
    ("/init/zeros", {"shape": "4,4", "in_axes": "0"}, 422, "unknown-parameter", ["in_axes"]),  # zeros has no fans
    ("/init/constant", {"shape": "4"}, 422, "validation-error", ["value"]),
    ("/init/kaiming_normal", {"shape": "4,4"}, 404, "not-found", []),  # aliases: the flat form
]


@pytest.mark.parametrize(("path", "query", "status", "kind", "where"), ERRORS, ids=[f"{e[0]}-{sorted(e[1])}" for e in ERRORS])
async def test_per_scheme_errors(
    api: httpx.AsyncClient, path: str, query: dict[str, str], status: int, kind: str, where: list[str]
) -> None:
    r = await api.get(path, params=query)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"].endswith("/" + kind)
    if where:
        assert where in [e["path"] for e in problem["errors"]], problem


def _parameters(operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in operation["parameters"]}


TENSOR_FIELDS = {"shape", "seed", "dtype", "name", "convention", "algorithm"}


@pytest.mark.parametrize("name", list(SCHEMES))
def test_each_per_scheme_form_documents_exactly_that_schemes_fields(name: str) -> None:
    paths = document()["paths"]
    model = SCHEME_MODELS[name]
    fields = set(model.model_fields) - {"scheme", "slice"}  # slice: syntax JSON Schema does not state (docs/api.md)
    for path, method in ((f"/init/{name}", "get"), (f"/init/{name}", "head"), (f"/stats/{name}", "get")):
        params = _parameters(paths[path][method])
        assert set(params) == fields | ({"bins"} if path.startswith("/stats") else set())
        required = {p for p, info in params.items() if info["required"]}
        assert required == {"shape"} | {p.name for p in SCHEMES[name].params if p.required}


def test_the_flat_form_documents_only_what_every_scheme_takes() -> None:
    paths = document()["paths"]
    for path, method, extra in (("/init", "get", set()), ("/init", "head", set()), ("/stats", "get", {"bins"})):
        params = _parameters(paths[path][method])
        assert set(params) == {"scheme"} | TENSOR_FIELDS | extra
        assert params["scheme"]["schema"]["enum"] == flat_schemes()
    documented = set(flat_schemes())
    for scheme in SCHEMES.values():
        needs = any(p.required for p in scheme.params)
        assert (scheme.name in documented) is not needs
        assert all((alias in documented) is not needs for alias in scheme.aliases)
