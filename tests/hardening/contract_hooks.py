"""Schemathesis hooks for a run from outside (``SCHEMATHESIS_HOOKS=tests.hardening.contract_hooks``).

The server under test runs with the settings of this process's environment
(``TENSORINIT_*``, default when unset); see :mod:`tests.hardening.contract` for why
some positive cases are set aside.
"""

from __future__ import annotations

from typing import Any

import schemathesis

from service.api.settings import Settings

from .contract import positive_only_if_accepted

SETTINGS = Settings()
MAX_BYTES = 64 << 20
"""Positive cases that would generate more are not sent (see ``positive_only_if_accepted``)."""


@schemathesis.hook
def filter_case(context: Any, case: schemathesis.Case[Any]) -> bool:
    return positive_only_if_accepted(case, SETTINGS, max_bytes=MAX_BYTES)
