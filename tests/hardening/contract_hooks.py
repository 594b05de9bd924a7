"""Schemathesis hooks for a run from outside (``SCHEMATHESIS_HOOKS=tests.hardening.contract_hooks``).

The server under test runs with the settings of this process's environment
(``TENSORINIT_*``, default when unset); see :mod:`tests.hardening.contract` for why
some positive cases are set aside.
"""

from __future__ import annotations

from typing import Any

import schemathesis

from service.api.settings import Settings

from .contract import keep_case

SETTINGS = Settings()
MAX_BYTES = 64 << 20
"""Cases that would generate more are not sent (see ``keep_case``)."""


@schemathesis.hook
def filter_case(context: Any, case: schemathesis.Case[Any]) -> bool:
    return keep_case(case, SETTINGS, max_bytes=MAX_BYTES)
