"""Schemathesis from the app's own OpenAPI document, in-process, with every default check.

The app runs with an API key configured, so that the ``ignored_auth`` check proves the
bearer scheme the document declares is enforced; the key is supplied through an auth
provider (schemathesis then also probes each operation without it and with a wrong one).
Each operation gets at least 200 examples, in both positive and negative modes.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck

from service.api.app import create_app
from service.api.settings import Settings

KEY = "contract-key"
MiB = 1 << 20

# Small limits keep every generated request cheap; the contract is the same at any size.
SETTINGS = Settings(
    api_keys=KEY,
    max_elements=1 << 16,
    max_response_bytes=4 * MiB,
    max_batch_tensors=16,
    max_orthogonal_elements=1 << 12,
    max_histogram_bins=64,
    max_body_bytes=64 * 1024,
    max_concurrent_generations=64,
    admission_timeout_seconds=5,
)

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(SETTINGS), headers={"Authorization": f"Bearer {KEY}"})


@schema.auth()
class BearerKey:
    """The configured API key as ``Authorization: Bearer``."""

    def get(self, case: Any, ctx: Any) -> str:
        return KEY

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


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
