"""The rules the OpenAPI document states (issue 17, item 7) are the engine's: the document and the service agree on each.

One table of requests at the edge of each rule: the served document's own schema
(validated with jsonschema_rs, as schemathesis does) calls each valid or not, and the
service accepts exactly the valid ones and refuses the others with a 422 naming the field.
"""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema_rs
import pytest
from fastapi import FastAPI

from service.api.app import create_app
from service.api.settings import Settings

pytestmark = pytest.mark.anyio

# (body, valid, the refused field's path when not)
BODIES: list[tuple[dict[str, Any], bool, list[Any] | None]] = [
    ({"scheme": "dirac", "shape": [4, 4, 3]}, True, None),
    ({"scheme": "dirac", "shape": [4, 4]}, False, ["shape"]),
    ({"scheme": "dirac", "shape": [2, 2, 1, 1, 1, 1]}, False, ["shape"]),
    ({"scheme": "sparse", "shape": [4], "sparsity": 0.5}, False, ["shape"]),
    ({"scheme": "identity", "shape": [2, 3, 3]}, True, None),
    ({"scheme": "orthogonal", "shape": [5]}, False, ["shape"]),
    ({"scheme": "zeros", "shape": [1] * 8}, True, None),
    ({"scheme": "zeros", "shape": [1] * 9}, False, ["shape"]),
    ({"scheme": "he_normal", "shape": [4, 4], "gain": 1.5, "nonlinearity": "relu"}, False, ["gain"]),
    ({"scheme": "he_normal", "shape": [4, 4], "gain": 1.5, "negative_slope": 0.1}, False, ["gain"]),
    ({"scheme": "he_normal", "shape": [4, 4], "gain": None, "nonlinearity": "relu"}, True, None),
    ({"scheme": "he_normal", "shape": [4, 4], "gain": 1.5, "nonlinearity": None}, True, None),
    ({"scheme": "glorot_normal", "shape": [4, 4], "in_axes": [0]}, False, ["out_axes"]),
    ({"scheme": "glorot_normal", "shape": [4, 4], "in_axes": [0], "out_axes": None}, False, ["out_axes"]),
    ({"scheme": "glorot_normal", "shape": [4, 4, 2], "batch_axes": [2]}, False, ["in_axes"]),
    ({"scheme": "glorot_normal", "shape": [4, 4], "in_axes": [], "out_axes": [1]}, False, ["in_axes"]),
    ({"scheme": "glorot_normal", "shape": [4, 4, 2], "in_axes": [0], "out_axes": [1], "batch_axes": [2]}, True, None),
    ({"scheme": "uniform_scaling", "shape": [4, 4], "convention": "haiku", "in_axes": [0]}, False, ["out_axes"]),
    ({"scheme": "zeros", "shape": [4], "name": ""}, False, ["name"]),
    ({"scheme": "zeros", "shape": [4], "name": "n" * 256}, True, None),
    ({"scheme": "zeros", "shape": [4], "name": "n" * 257}, False, ["name"]),
    ({"scheme": "zeros", "shape": [4], "name": "__metadata__"}, False, ["name"]),
    ({"scheme": "zeros", "shape": [4], "name": "a\u202eb"}, False, ["name"]),
    ({"scheme": "zeros", "shape": [4], "name": "a\U000e0041"}, False, ["name"]),
    ({"scheme": "zeros", "shape": [4], "name": "a\x7f"}, False, ["name"]),
    ({"scheme": "zeros", "shape": [4], "name": "层.权重"}, True, None),
    ({"scheme": "zeros", "shape": [4, 4], "slice": " 0 : 2 , : "}, True, None),
    ({"scheme": "zeros", "shape": [4, 4], "slice": "0:2:0"}, False, ["slice"]),
    ({"scheme": "zeros", "shape": [4, 4], "slice": "1"}, False, ["slice"]),
    ({"scheme": "zeros", "shape": [4, 4], "slice": "0:2,\u3000:"}, False, ["slice"]),
    ({"scheme": "zeros", "shape": [4, 4], "slice": ["0:2:+01", ":"]}, True, None),
    ({"tensors": {}}, False, ["tensors"]),
    ({"tensors": {"a\u2066": {"scheme": "zeros", "shape": [1]}}}, False, ["tensors", "a\u2066", "name"]),
    ({"tensors": {"a": {"scheme": "zeros", "shape": [1], "name": "b"}}}, False, ["tensors", "a", "name"]),
    ({"tensors": {"a": {"scheme": "zeros", "shape": [1], "name": None}}}, True, None),
    ({"recipe": "gpt2", "tensors": {"fc.weight": {"shape": [4, 4], "kind": "linear"}}}, False, ["recipe_params", "n_layer"]),
    (
        {"recipe": "gpt2", "recipe_params": {"n_layer": None}, "tensors": {"fc.weight": {"shape": [4, 4], "kind": "linear"}}},
        False,
        ["recipe_params", "n_layer"],
    ),
    ({"recipe": "gpt2", "recipe_params": {"n_layer": 2}, "tensors": {"fc.weight": {"shape": [4, 4], "kind": "linear"}}}, True, None),
    (
        {"recipe": "gpt2", "recipe_params": {"n_layer": 0}, "tensors": {"fc.weight": {"shape": [4, 4], "kind": "linear"}}},
        False,
        ["recipe_params", "n_layer"],
    ),
    (
        {"recipe": "torch", "recipe_params": {"n_layer": 2}, "tensors": {"fc.weight": {"shape": [4, 4], "kind": "linear"}}},
        False,
        ["recipe_params", "n_layer"],
    ),
    ({"recipe": "torch", "recipe_params": None, "tensors": {"fc.weight": {"shape": [4, 4], "kind": "linear"}}}, True, None),
]


@pytest.fixture(scope="module")
def served() -> tuple[FastAPI, jsonschema_rs.Validator]:
    app = create_app(Settings())
    document = app.openapi()
    schema = {"$ref": "#/components/schemas/InitRequest", "components": document["components"]}
    return app, jsonschema_rs.Draft202012Validator(schema)


@pytest.mark.parametrize(("body", "valid", "path"), BODIES, ids=[repr(b)[:70] for b, _, _ in BODIES])
async def test_the_document_and_the_service_agree(
    served: tuple[FastAPI, Any], body: dict[str, Any], valid: bool, path: list[Any] | None
) -> None:
    app, validator = served
    assert validator.is_valid(body) is valid
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/init", json=body)
    if valid:
        assert response.status_code == 200, response.text[:300]
    else:
        assert response.status_code == 422, response.text[:300]
        assert response.json()["errors"][0]["path"] == path, response.text[:300]


@pytest.mark.parametrize(
    ("body", "valid", "path"),
    [
        ({"depth": 2, "width": 8, "init": "he_normal", "batch": 8}, True, None),
        ({"layers": [{"width": 8}], "init": "he_normal", "batch": 8}, True, None),
        ({"layers": [{"width": 8, "init": "he_normal"}], "batch": 8}, True, None),
        ({"layers": [{"width": 8}], "depth": 2, "init": "he_normal"}, False, ["layers"]),
        ({"depth": 2, "init": "he_normal"}, False, ["width"]),
        ({"depth": 2, "width": 8}, False, ["layers", 0, "init"]),
        ({"depth": 2, "width": 8, "init": "he_normal", "convention": "flax"}, False, ["convention"]),
    ],
)
async def test_propagation_states_its_form(served: tuple[FastAPI, Any], body: dict[str, Any], valid: bool, path: list[Any] | None) -> None:
    app, _ = served
    schema = app.openapi()["paths"]["/propagation"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert jsonschema_rs.Draft202012Validator(schema).is_valid(body) is valid
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/propagation", json={**body, "measure": False})
    if valid:
        assert response.status_code == 200, response.text[:300]
    else:
        assert response.status_code == 422, response.text[:300]
        assert response.json()["errors"][0]["path"] == path, response.text[:300]


def test_the_served_document_states_the_servers_own_limits() -> None:
    app = create_app(Settings(max_dims=3, max_name_length=10))
    document = app.openapi()
    body = document["components"]["schemas"]["Zeros"]["properties"]
    assert body["shape"]["maxItems"] == 3 and body["name"]["maxLength"] == 10
    dirac = {p["name"]: p["schema"] for p in document["paths"]["/init/dirac"]["get"]["parameters"]}
    assert (dirac["shape"]["minItems"], dirac["shape"]["maxItems"]) == (3, 3)  # the scheme's 3 to 5, under max_dims


@pytest.mark.parametrize("shape", [[2**70, 4], [2**63, 2], [2**64 + 5]])
async def test_a_slice_of_a_huge_shape_is_a_limit_not_a_500(served: tuple[FastAPI, Any], shape: list[int]) -> None:
    # Found by the in-process contract run once the document stated the slice syntax:
    # len(range(...)) overflows past 2^63 (OverflowError, a 500).
    app, validator = served
    body = {"scheme": "zeros", "shape": shape, "slice": "0:2"}
    assert validator.is_valid(body)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/init", json=body)
    assert response.status_code == 413, response.text[:300]


def test_one_apps_limits_stay_its_own() -> None:
    # The routes' query forms are shared by every app: stating one app's limits must not change another's document.
    small = create_app(Settings(max_dims=2)).openapi()
    default = create_app(Settings()).openapi()
    for document, dims in ((small, 2), (default, 8)):
        zeros = {p["name"]: p["schema"] for p in document["paths"]["/init/zeros"]["get"]["parameters"]}
        assert zeros["shape"]["maxItems"] == dims
