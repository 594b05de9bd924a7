"""POST /propagation by Accept, the /stats pictures, the page's files, and every refusal before work starts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.api.app import create_app
from service.api.settings import Settings

pytestmark = pytest.mark.anyio

MINIMAL = {"depth": 20, "width": 512, "activation": "relu", "init": {"scheme": "he_normal"}, "seed": 0, "batch": 512}
SMALL = {"depth": 6, "width": 32, "activation": "tanh", "init": "glorot_normal", "batch": 16}


@pytest.fixture
async def small() -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of an app with small limits (for the 413s)."""
    settings = Settings(
        max_propagation_depth=50,
        max_propagation_width_batch=4096,
        max_propagation_cells=20_000,
        max_propagation_compare=2,
        max_plot_points=400,
        max_histogram_bins=256,
    )
    app: FastAPI = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_minimal_body_as_written(api: httpx.AsyncClient) -> None:
    r = await api.post("/propagation", json=MINIMAL)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["verdict"] == "stable"
    assert len(body["layers"]) == 20
    for i, layer in enumerate(body["layers"]):
        assert layer["index"] == i
        assert layer["forward"]["theory"] == pytest.approx(2.0)  # He + ReLU: q = σ_w²·v/2·… = 2 at every layer
        assert layer["backward"]["theory"] == pytest.approx(0.5)
        assert layer["forward"]["measured"] > 0
        assert layer["backward"]["measured"] > 0
    assert body["layers"][0]["forward"]["measured"] == pytest.approx(2.0, rel=0.02)
    assert body["summary"]["gain_for_unit_chi"] == pytest.approx(1.0)


async def test_text_table_with_sparklines(api: httpx.AsyncClient) -> None:
    r = await api.post("/propagation", json={**SMALL, "activation": "relu"}, headers={"Accept": "text/plain"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    lines = r.text.splitlines()
    assert lines[0] == "tensorinit propagation · glorot_normal · 6 layers · VANISHING"
    spark = lines[2].split()[3]
    # log variance halving at every layer: a straight descent, levels ⌊8·(5 − l)/5⌋ capped at 7
    assert spark == "█▇▅▄▂▁"
    rows = [line for line in lines if line.strip()[:1].isdigit()]
    assert len(rows) == 6


@pytest.mark.parametrize(("accept", "magic"), [("image/svg+xml", b"<?xml"), ("image/png", b"\x89PNG\r\n\x1a\n")])
async def test_pictures(api: httpx.AsyncClient, accept: str, magic: bytes) -> None:
    body = {**SMALL, "compare": ["he_normal", "orthogonal"]}
    r = await api.post("/propagation", json=body, headers={"Accept": accept})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == accept
    assert r.content.startswith(magic)
    if accept == "image/svg+xml":
        verdicts = [n["verdict"]["verdict"] for n in (await api.post("/propagation", json={**body, "measure": False})).json()["networks"]]
        for label, kind in zip(("glorot_normal", "he_normal", "orthogonal"), verdicts, strict=True):
            assert f"{label} · {kind}" in r.text  # matplotlib keeps each text as a comment beside its glyphs


async def test_compare_runs_every_scheme_on_the_same_network(api: httpx.AsyncClient) -> None:
    r = await api.post("/propagation", json={**SMALL, "compare": ["he_normal", {"scheme": "orthogonal", "gain": 2.0}], "measure": False})
    body = r.json()
    assert [n["label"] for n in body["networks"]] == ["glorot_normal", "he_normal", "orthogonal (gain=2.0)"]
    assert [n["layers"][0]["sigma_w2"] for n in body["networks"]] == pytest.approx([1.0, 2.0, 4.0])
    assert body["measured"] is False
    assert body["layers"][0]["forward"]["measured"] is None


async def test_same_tensors_as_init(api: httpx.AsyncClient) -> None:
    # The measurement reads /init's bytes: its first layer's E[h²] for unit input follows ‖W_0‖²_F from /stats.
    body = {"depth": 1, "width": 64, "activation": "linear", "init": "he_uniform", "seed": 9, "batch": 4096}
    prop = (await api.post("/propagation", json=body)).json()
    stats = (await api.post("/stats", json={"scheme": "he_uniform", "shape": [64, 64], "seed": 9, "name": "layers.0.weight"})).json()
    std = stats["tensors"]["layers.0.weight"]["empirical"]["std"]
    mean = stats["tensors"]["layers.0.weight"]["empirical"]["mean"]
    assert prop["layers"][0]["forward"]["measured"] == pytest.approx(64 * (std**2 + mean**2), rel=0.05)


@pytest.mark.parametrize("path", ["/stats?scheme=he_normal&shape=64,32&bins=32", "/stats?scheme=orthogonal&shape=16,16"])
@pytest.mark.parametrize(("accept", "magic"), [("image/svg+xml", b"<?xml"), ("image/png", b"\x89PNG")])
async def test_stats_pictures(api: httpx.AsyncClient, path: str, accept: str, magic: bytes) -> None:
    r = await api.get(path, headers={"Accept": accept})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == accept
    assert r.content.startswith(magic)


async def test_stats_post_picture_of_a_batch(api: httpx.AsyncClient) -> None:
    body = {"tensors": {"a": {"scheme": "he_normal", "shape": [32, 16]}, "b": {"scheme": "uniform", "shape": [100]}}, "bins": 16}
    r = await api.post("/stats", json=body, headers={"Accept": "image/svg+xml"})
    assert r.status_code == 200
    assert "a: he_normal 32×16" in r.text
    assert "b: uniform 100" in r.text


SVG_IS_REPRODUCIBLE = {**SMALL, "measure": False}


async def test_svg_is_reproducible(api: httpx.AsyncClient) -> None:
    one = await api.post("/propagation", json=SVG_IS_REPRODUCIBLE, headers={"Accept": "image/svg+xml"})
    two = await api.post("/propagation", json=SVG_IS_REPRODUCIBLE, headers={"Accept": "image/svg+xml"})
    assert one.content == two.content


TOO_LARGE: list[tuple[dict[str, Any], dict[str, str], str]] = [
    ({**SMALL, "depth": 51}, {}, "max_propagation_depth"),
    ({**SMALL, "layers": [{"width": 4}] * 51, "depth": None, "width": None}, {}, "max_propagation_depth"),
    ({**SMALL, "width": 512, "batch": 16}, {}, "max_propagation_width_batch"),
    ({**SMALL, "depth": 50, "width": 64, "batch": 16}, {}, "max_propagation_cells"),
    ({**SMALL, "compare": ["he_normal", "lecun_normal", "orthogonal"]}, {}, "max_propagation_compare"),
    ({**SMALL, "depth": 40, "measure": False, "compare": ["he_normal", "lecun_normal"]}, {"Accept": "image/png"}, "max_plot_points"),
]


@pytest.mark.parametrize(("body", "headers", "limit"), TOO_LARGE)
async def test_limits_are_413(small: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str], limit: str) -> None:
    body = {k: v for k, v in body.items() if v is not None}
    r = await small.post("/propagation", json=body, headers=headers)
    assert r.status_code == 413, r.text
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert problem["limit_name"] == limit


async def test_plot_points_count_only_for_pictures(small: httpx.AsyncClient) -> None:
    body = {**SMALL, "depth": 40, "measure": False, "compare": ["he_normal", "lecun_normal"]}
    assert (await small.post("/propagation", json=body)).status_code == 200


async def test_stats_picture_points_are_413(small: httpx.AsyncClient) -> None:
    body = {"tensors": {"a": {"scheme": "zeros", "shape": [4]}, "b": {"scheme": "zeros", "shape": [4]}}, "bins": 256}
    r = await small.post("/stats", json=body, headers={"Accept": "image/png"})
    assert r.status_code == 413
    assert r.json()["limit_name"] == "max_plot_points"
    assert (await small.post("/stats", json=body)).status_code == 200


INVALID: list[tuple[Any, str, str]] = [
    ({**SMALL, "wdith": 3}, "unknown-parameter", "wdith"),
    ({**SMALL, "activation": "swish"}, "validation-error", "layers"),
    ({**SMALL, "width": "wide"}, "validation-error", "width"),
    ({**SMALL, "init": "he_nromal"}, "unknown-scheme", "layers"),
    ({**SMALL, "init": {"scheme": "he_normal", "gain": "big"}}, "validation-error", "layers"),
    ({**SMALL, "measure": "yes"}, "validation-error", "measure"),
    ({**SMALL, "compare": []}, "validation-error", "compare"),
    ([1, 2], "validation-error", ""),
    ({"depth": 3, "width": 8}, "validation-error", "layers"),
]


@pytest.mark.parametrize(("body", "slug", "where"), INVALID)
async def test_invalid_is_422(api: httpx.AsyncClient, body: Any, slug: str, where: str) -> None:
    r = await api.post("/propagation", json=body)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"].endswith(slug)
    path = problem["errors"][0]["path"]
    assert (path[0] if path else "") == where


DEEP = [{"width": 4}] * 51  # one layer past the small app's max_propagation_depth
COMPARED = ["he_normal", "lecun_normal", "orthogonal"]  # one entry past its max_propagation_compare
# Wrong before too large: a request malformed anywhere, past a limit too, is the 422 naming
# the field; only a well-formed one is the 413 (limit_name given instead of a path).
WRONG_AND_TOO_LARGE: list[tuple[dict[str, Any], int, list[Any] | str]] = [
    ({**SMALL, "depth": 10_000, "init": "nope"}, 422, ["layers", 0, "init"]),
    ({**SMALL, "width": 512, "activation": "swish"}, 422, ["layers", 0, "activation"]),
    ({**SMALL, "bias": [1], "compare": ["he_normal"] * 5}, 422, ["layers", 0, "bias"]),
    # a malformed layer past max_depth: its activation, its init's parameter, its width
    ({**SMALL, "depth": None, "width": None, "layers": [*DEEP, {"width": 4, "activation": "swish"}]}, 422, ["layers", 51, "activation"]),
    (
        {**SMALL, "depth": None, "width": None, "layers": [*DEEP, {"width": 4, "init": {"scheme": "he_normal", "gain": "big"}}]},
        422,
        ["layers", 51, "init", "gain"],
    ),
    ({**SMALL, "depth": None, "width": None, "layers": [*DEEP, {"width": 0}]}, 422, ["layers", 51, "width"]),
    # a malformed compare entry past max_compare: an unknown scheme, a scheme this network's layers cannot take
    ({**SMALL, "compare": [*COMPARED, "he_nromal"]}, 422, ["layers", 0, "init"]),
    ({**SMALL, "compare": [*COMPARED, {"scheme": "dirac"}]}, 422, ["layers", 0, "init", "shape"]),
    # well-formed but too large
    ({**SMALL, "depth": None, "width": None, "layers": [*DEEP, {"width": 4, "activation": "selu"}]}, 413, "max_propagation_depth"),
    ({**SMALL, "depth": 10_000}, 413, "max_propagation_depth"),
    ({**SMALL, "compare": [*COMPARED, {"scheme": "he_normal", "gain": 2}]}, 413, "max_propagation_compare"),
    ({**SMALL, "compare": ["he_normal"] * 5}, 413, "max_propagation_compare"),
    ({**SMALL, "compare": [{"scheme": "he_normal", "gain": 1 + i / 1000} for i in range(5000)]}, 413, "max_propagation_compare"),
]


@pytest.mark.parametrize(("body", "status", "where"), WRONG_AND_TOO_LARGE)
async def test_wrong_before_too_large(small: httpx.AsyncClient, body: dict[str, Any], status: int, where: list[Any] | str) -> None:
    body = {k: v for k, v in body.items() if v is not None}
    r = await small.post("/propagation", json=body)
    assert r.status_code == status, r.text
    problem = r.json()
    if status == 422:
        assert problem["errors"][0]["path"][: len(where)] == where
    else:
        assert problem["limit_name"] == where


@pytest.mark.parametrize(
    ("accept", "status"),
    [("application/xml", 406), ("text/plain;q=0, application/json;q=0", 406), ("image/*", 200), ("*/*", 200)],
)
async def test_accept(api: httpx.AsyncClient, accept: str, status: int) -> None:
    r = await api.post("/propagation", json={**SMALL, "measure": False}, headers={"Accept": accept})
    assert r.status_code == status
    if accept == "image/*":
        assert r.headers["content-type"] == "image/svg+xml"
    if accept == "*/*":
        assert r.headers["content-type"] == "application/json"


async def test_not_json_is_415(api: httpx.AsyncClient) -> None:
    r = await api.post("/propagation", content=json.dumps(SMALL), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/", 200, "text/html"),
        ("/static/page.js", 200, "text/javascript"),
        ("/static/page.css", 200, "text/css"),
        ("/static/index.html", 404, "application/problem+json"),
        ("/static/..%2Fapp.py", 404, "application/problem+json"),
    ],
)
async def test_page_files(api: httpx.AsyncClient, path: str, status: int, kind: str) -> None:
    r = await api.get(path)
    assert r.status_code == status
    assert r.headers["content-type"].startswith(kind)
    if status == 200:
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert "http://" not in r.text
        assert "https://" not in r.text


RECIPE_INITS = [
    ({"recipe": "gpt2", "recipe_params": {"n_layer": 4}}, {"n_layer": 4}),
    ({"recipe": "fixup", "recipe_params": {"num_layers": 2}}, {"num_layers": 2}),
    ({"recipe": "torch"}, None),
]


@pytest.mark.parametrize(("init", "params"), RECIPE_INITS, ids=lambda v: v["recipe"] if isinstance(v, dict) and "recipe" in v else "")
async def test_a_recipe_s_specs_are_those_of_post_plan(api: httpx.AsyncClient, init: dict[str, Any], params: dict[str, Any] | None) -> None:
    body = {"depth": 3, "width": 48, "activation": "relu", "init": init, "seed": 4, "batch": 8}
    r = await api.post("/propagation", json=body)
    assert r.status_code == 200, r.text
    layers = r.json()["layers"]
    tensors = {
        f"layers.{i}.{role}": {"shape": shape, "kind": "linear"} for i in range(3) for role, shape in (("weight", [48, 48]), ("bias", [48]))
    }
    plan = await api.post("/plan", json={"recipe": init["recipe"], "recipe_params": params, "tensors": tensors, "seed": 4})
    assert plan.status_code == 200, plan.text
    planned = {s["name"]: s for s in plan.json()["specs"]}
    for i, layer in enumerate(layers):
        assert layer["weight"] == planned[f"layers.{i}.weight"]
        assert layer["bias"] == planned[f"layers.{i}.bias"]
        assert layer["recipe"] == init["recipe"]
        var = layer["weight"]["distribution"]
        second = var["std"] ** 2 if "std" in var else (var["high"] - var["low"]) ** 2 / 12
        assert layer["sigma_w2"] == pytest.approx(48 * second, rel=1e-9)  # theory's σ_w² is the recipe's


async def test_a_recipe_and_schemes_side_by_side(api: httpx.AsyncClient) -> None:
    body = {**SMALL, "init": None, "compare": ["he_normal", {"recipe": "gpt2", "recipe_params": {"n_layer": 3}}]}
    r = await api.post("/propagation", json=body)
    assert r.status_code == 200, r.text
    results = r.json()["networks"]
    assert [res["label"] for res in results] == ["he_normal", "recipe gpt2 (n_layer=3)"]
    assert results[1]["layers"][0]["weight"]["distribution"]["std"] == pytest.approx(0.02)
    svg = await api.post("/propagation", json=body, headers={"Accept": "image/svg+xml"})
    assert svg.status_code == 200
    assert "recipe gpt2" in svg.text


RECIPE_REFUSALS = [
    ({"recipe": "gpt2"}, ["layers", 0, "init", "recipe_params", "n_layer"]),
    ({"recipe": "nope"}, ["layers", 0, "init", "recipe"]),
    ({"recipe": "gpt2", "recipe_params": {"n_layer": 2}, "scheme": "he_normal"}, None),  # the schema: one or the other
]


@pytest.mark.parametrize(("init", "path"), RECIPE_REFUSALS)
async def test_recipe_refusals_name_the_field(api: httpx.AsyncClient, init: dict[str, Any], path: list[Any] | None) -> None:
    r = await api.post("/propagation", json={**SMALL, "init": init})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    if path is not None:
        assert r.json()["errors"][0]["path"] == path


async def test_a_recipe_that_cannot_cover_a_convolution_is_refused(api: httpx.AsyncClient) -> None:
    body = {
        "layers": [{"width": 8, "kernel": [3]}],
        "spatial": [8],
        "init": {"recipe": "gpt2", "recipe_params": {"n_layer": 1}},
        "batch": 2,
    }
    r = await api.post("/propagation", json=body)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["errors"][0]["path"] == ["layers", 0, "init"]
    assert "layers.0.weight" in problem["errors"][0]["allowed"]


PAGE_KEY = "page-test-key-1"


@pytest.fixture
async def keyed() -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of an app that requires an API key."""
    app: FastAPI = create_app(Settings(api_keys=PAGE_KEY))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


KEYED = [
    # (method, path, with the key, status): the page and its files are public, the API it calls is not
    ("GET", "/", False, 200),
    ("GET", "/static/page.js", False, 200),
    ("GET", "/static/page.css", False, 200),
    ("GET", "/static/favicon.svg", False, 200),
    ("GET", "/static/index.html", False, 401),  # not a page file: a 404 only for whoever has a key
    ("GET", "/static/nope.js", False, 401),
    ("GET", "/static/nope.js", True, 404),
    ("POST", "/propagation", False, 401),
    ("POST", "/propagation", True, 200),
    ("POST", "/stats", False, 401),
    ("GET", "/schemes", False, 401),
]


@pytest.mark.parametrize(("method", "path", "with_key", "status"), KEYED)
async def test_with_api_keys_the_page_is_public_and_its_calls_are_not(
    keyed: httpx.AsyncClient, method: str, path: str, with_key: bool, status: int
) -> None:
    headers = {"Authorization": f"Bearer {PAGE_KEY}"} if with_key else {}
    body = {**SMALL, "measure": False} if path == "/propagation" else {"scheme": "he_normal", "shape": [8, 8]}
    r = await keyed.request(method, path, headers=headers, json=body if method == "POST" else None)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    if path == "/" and status == 200:
        assert 'name="key"' in r.text  # the field the page takes the key from
