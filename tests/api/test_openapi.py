"""The committed OpenAPI document is the application's, and documents every answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.api.openapi_export import TARGET, document, render
from service.core import SCHEMES

OPERATIONS = {
    ("/init", "post"): "init_post",
    ("/init", "get"): "init_get",
    ("/init", "head"): "init_head",
    ("/stats", "get"): "stats_get",
    ("/stats", "post"): "stats_post",
    ("/schemes", "get"): "schemes_list",
    ("/schemes/{name}", "get"): "schemes_get",
    ("/healthz", "get"): "healthz",
    ("/readyz", "get"): "readyz",
    ("/version", "get"): "version",
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def test_committed_document_is_up_to_date() -> None:
    assert TARGET.read_text(encoding="utf-8") == render(), "openapi/openapi.json is stale: run `make openapi`"


def test_operation_ids_are_stable(doc: dict[str, Any]) -> None:
    found = {(path, method): op["operationId"] for path, ops in doc["paths"].items() for method, op in ops.items()}
    for key, op_id in OPERATIONS.items():
        assert found[key] == op_id


@pytest.mark.parametrize(
    ("method", "codes"),
    [("post", ["200", "206", "304", "400", "413", "415", "416", "422"]), ("get", ["200", "206", "304", "400", "413", "416", "422"])],
)
def test_init_documents_every_answer(doc: dict[str, Any], method: str, codes: list[str]) -> None:
    responses = doc["paths"]["/init"][method]["responses"]
    assert set(codes) <= set(responses)
    assert "application/octet-stream" in responses["200"]["content"]
    assert "application/json" not in responses["200"]["content"]
    for code in ("400", "413", "416", "422"):
        assert responses[code]["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}


def test_each_scheme_has_its_own_model_in_a_discriminated_union(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    single = schemas["InitRequest"]["oneOf"][0]
    assert single["discriminator"]["propertyName"] == "scheme"
    assert set(single["discriminator"]["mapping"]) == set(SCHEMES)
    he = schemas["HeNormal"]
    assert he["additionalProperties"] is False
    assert {"gain", "mode", "nonlinearity", "negative_slope", "truncated", "shape", "in_axes"} <= set(he["properties"])
    assert "value" not in he["properties"]
    assert schemas["Constant"]["required"] == ["shape", "scheme", "value"] or set(schemas["Constant"]["required"]) == {
        "shape",
        "scheme",
        "value",
    }
    assert schemas["HeNormal"]["properties"]["shape"]["type"] == "array"


def test_document_is_json_serializable(doc: dict[str, Any]) -> None:
    assert json.loads(json.dumps(doc)) == doc
