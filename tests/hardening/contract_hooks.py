"""Schemathesis hooks for a run from outside (``SCHEMATHESIS_HOOKS=tests.hardening.contract_hooks``).

The server under test runs with the settings of this process's environment
(``TENSORINIT_*``, default when unset). Every case is sent but those whose answer would
exceed :data:`MAX_BYTES` (:func:`tests.hardening.contract.within_budget`); every refusal
(4xx) of a positive case is written, with the problem the server answered, as one JSON
line to the file ``CONTRACT_REJECTIONS`` names, for the test to count by rule.
"""

from __future__ import annotations

import json
import os
from typing import Any

import requests
import schemathesis

from service.api.settings import Settings

from .contract import within_budget

SETTINGS = Settings()
MAX_BYTES = 64 << 20
"""Cases that would generate more are not sent."""


@schemathesis.hook
def filter_case(context: Any, case: schemathesis.Case[Any]) -> bool:
    return within_budget(case, SETTINGS, MAX_BYTES)


@schemathesis.hook
def after_call(context: Any, case: schemathesis.Case[Any], response: Any) -> None:
    meta = case.meta
    if not (400 <= response.status_code < 500) or (meta is not None and not meta.generation.mode.is_positive):
        return
    method = case.method.upper()
    if method == "HEAD":  # no body: the same request as GET says why
        problem = requests.get(response.request.url, timeout=60).json()
    else:
        try:
            problem = response.json()
        except ValueError:
            problem = response.text[:500]
    line = {"method": method, "path": case.operation.path, "status": response.status_code, "problem": problem}
    with open(os.environ["CONTRACT_REJECTIONS"], "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")
