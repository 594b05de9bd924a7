"""Schemathesis from the app's own OpenAPI document, in-process, with every default check.

The app runs with an API key configured, so that the ``ignored_auth`` check proves the
bearer scheme the document declares is enforced; the key is supplied through an auth
provider (schemathesis then also probes each operation without it and with a wrong one).
Every operation gets up to 200 examples per phase, positive and negative, and every
default check runs with its default configuration.

What "positive" means here. JSON Schema states types, enums and bounds, and the
document states them exactly; it cannot state the engine's rules that tie fields
together (``low < high``, ``groups`` dividing the output channels, axes within the
rank, the rank a scheme needs under a convention), nor the size limits, which bound
a product of dimensions and are configuration (413). A schema-valid request that the
service refuses for one of those reasons alone is not a positive example, so
:func:`refused_beyond_schema` takes it out of the positive set; it asks the service's
own resolution, never the response. Anything the request models refuse stays in (a
document that promises more than the models accept is a contract bug), with one
exception that the flat GET query form cannot express: a parameter of another scheme.
Negative examples are never filtered.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck
from pydantic import ValidationError

from service.api.app import create_app
from service.api.models import INIT_ADAPTER
from service.api.problems import ProblemError
from service.api.resolution import plan_for, query_document, resolve_document, validate
from service.api.routes.propagation import networks_of
from service.api.settings import Settings

KEY = "contract-key"
MiB = 1 << 20

# Limits small enough that every accepted request is cheap in-process, and large
# enough for the document's own examples (a 512 x 784 batch member).
SETTINGS = Settings(
    api_keys=KEY,
    max_elements=1 << 19,
    max_response_bytes=8 * MiB,
    max_orthogonal_elements=1 << 14,
    max_concurrent_generations=64,
    admission_timeout_seconds=5,
    max_propagation_depth=16,
    max_propagation_width_batch=1 << 12,
    max_propagation_cells=1 << 16,
    max_propagation_compare=2,
)

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(SETTINGS), headers={"Authorization": f"Bearer {KEY}"})


@schema.auth()
class BearerKey:
    """The configured API key as ``Authorization: Bearer``."""

    def get(self, case: Any, ctx: Any) -> str:
        return KEY

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _query_items(query: dict[str, Any]) -> list[tuple[str, str]]:
    """The query as the server receives it (lists comma-joined: ``style: form, explode: false``)."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if value is None:
            return ""
        return str(value)

    return [(k, ",".join(map(text, v)) if isinstance(v, list) else text(v)) for k, v in query.items()]


def refused_beyond_schema(case: schemathesis.Case[Any]) -> bool:
    """Whether the service refuses this request for a reason JSON Schema cannot state (see the module doc)."""
    path, method = case.operation.path, case.method.upper()
    if path == "/propagation":
        try:
            networks_of(case.body, SETTINGS, "application/json")
        except ProblemError:
            return True  # how layers fit together, kernels' oddness, the scheme's own rules, the limits
        return False
    if path not in ("/init", "/stats", "/plan"):
        return False
    query_form = method in ("GET", "HEAD")
    document = query_document(_query_items(dict(case.query or {}))) if query_form else case.body
    bins = None
    if path == "/stats" and isinstance(document, dict):
        document = dict(document)
        bins = document.pop("bins", None)
    if query_form:
        try:
            INIT_ADAPTER.validate_python(document)
        except ValidationError as err:
            # Which parameters a scheme requires or takes, the flat query form cannot say.
            if {e["type"] for e in err.errors()} <= {"missing", "extra_forbidden"}:
                return True
    try:
        parsed = validate(document)
    except ProblemError:
        return False
    try:
        plan_for(resolve_document(parsed, SETTINGS), SETTINGS)
    except ProblemError:
        return True
    return isinstance(bins, int) and bins > SETTINGS.max_histogram_bins


@schema.hook
def filter_case(context: Any, case: schemathesis.Case[Any]) -> bool:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return True
    return not refused_beyond_schema(case)


@schema.parametrize()
@hypothesis.settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_contract(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate()
