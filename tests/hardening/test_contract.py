"""Schemathesis from the app's own OpenAPI document, in-process, with every default check.

The app runs with an API key configured, so that the ``ignored_auth`` check proves the
bearer scheme the document declares is enforced; the key is supplied through an auth
provider (schemathesis then also probes each operation without it and with a wrong one).
Every operation gets up to 200 examples per phase, positive and negative, and every
default check runs with its default configuration; of the 57 per-scheme forms, which
share their code, GET /init/<scheme> is run, with 20 examples each.

Which positive cases are set aside, and why, is said in :mod:`tests.hardening.contract`;
the run from outside (test_contract_outside.py) sends them, and counts each refusal by
the documented rule it is for.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck

from service.api.app import create_app
from service.api.openapi_export import document
from service.api.settings import Settings

from .contract import keep_case, operation_kinds

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

# The filter's table of operations, read off the document now, at collection: schemathesis makes its
# cases lazily, after other tests have run, and the document is then built in whatever state they left.
operation_kinds()
APP = create_app(SETTINGS)
APP.openapi()  # the app keeps the document it builds: built here too, for the same reason
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, headers={"Authorization": f"Bearer {KEY}"})


@schema.auth()
class BearerKey:
    """The configured API key as ``Authorization: Bearer``."""

    def get(self, case: Any, ctx: Any) -> str:
        return KEY

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.hook
def filter_case(context: Any, case: schemathesis.Case[Any]) -> bool:
    return keep_case(case, SETTINGS)


PER_SCHEME = r"^/(init|stats)/[a-z_]+$"
"""The per-scheme GET forms: 57 operations that share their code and differ in their parameters."""

SUPPRESSED = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]


@schema.exclude(path_regex=PER_SCHEME).parametrize()
@hypothesis.settings(max_examples=200, deadline=None, derandomize=True, database=None, suppress_health_check=SUPPRESSED)
def test_contract(case: schemathesis.Case[Any]) -> None:
    if keep_case(case, SETTINGS):  # also here: the coverage phase's cases do not all pass through filter_case
        case.call_and_validate()


@schema.include(path_regex=r"^/init/[a-z_]+$", method="GET").parametrize()
@hypothesis.settings(max_examples=20, deadline=None, derandomize=True, database=None, suppress_health_check=SUPPRESSED)
def test_contract_per_scheme(case: schemathesis.Case[Any]) -> None:
    """GET /init/<scheme> only: HEAD and /stats/<scheme> take the same parameters to the same code (the outside run has them all)."""
    if keep_case(case, SETTINGS):
        case.call_and_validate()


def test_the_filter_knows_every_operation_refused_beyond_the_schema() -> None:
    # Read off the document, so that a renamed operation cannot escape the filter or the
    # outside run's budget: every operation answering bytes is one it sizes.
    operations = operation_kinds()
    served = {
        (method.upper(), path)
        for path, ops in document()["paths"].items()
        for method, op in ops.items()
        if "application/octet-stream" in op["responses"].get("200", {}).get("content", {})
    }
    # A checkpoint's operations answer its plan (JSON) or one of its files (bytes).
    files = {key for key, op in operations.items() if op.kind == "checkpoint" and key[1].endswith("/{file}")}
    assert served == {key for key, op in operations.items() if op.kind == "tensors"} | files
    assert {op.kind for op in operations.values()} == {"tensors", "stats", "plan", "network", "manifest", "checkpoint"}
    assert operations["GET", "/init/he_normal"].scheme == "he_normal" and operations["GET", "/init"].scheme is None
