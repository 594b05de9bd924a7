"""Request ids: the client's sane ``X-Request-ID``, or a fresh one.

:class:`service.api.edge.EdgeMiddleware` gives every request its id (in
``scope["state"]["request_id"]``) and echoes it as ``X-Request-ID``; problem bodies
and access-log lines carry the same id.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets

_SANE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestIds:
    """Fresh ids of 32 hex digits: a random per-process prefix, then a counter.

    As unique as ``uuid4().hex`` across processes and replicas (64 random bits per
    process, and a counter that cannot repeat within it) at a fraction of the cost:
    ``uuid4`` asks the kernel for randomness on every request.
    """

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._counter = itertools.count()

    def new(self) -> str:
        if self._pid != os.getpid():  # a forked worker must not repeat its parent's ids
            self._pid = os.getpid()
            self._prefix = secrets.token_hex(8)
            self._counter = itertools.count()
        return f"{self._prefix}{next(self._counter):016x}"


_IDS = RequestIds()


def new_request_id(incoming: str | None = None) -> str:
    """The client's X-Request-ID if it is sane (at most 128 plain characters), else a fresh one."""
    if incoming and _SANE.fullmatch(incoming):
        return incoming
    return _IDS.new()
