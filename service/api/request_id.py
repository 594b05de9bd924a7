"""Request ids: the client's sane ``X-Request-ID``, or a fresh one.

:class:`service.api.edge.EdgeMiddleware` gives every request its id (in
``scope["state"]["request_id"]``) and echoes it as ``X-Request-ID``; problem bodies
and access-log lines carry the same id.
"""

from __future__ import annotations

import os
import random
import re

_SANE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestIds:
    """Fresh ids of 32 hex digits: 128 random bits, as many as a ``uuid4`` holds (122).

    Drawn from a per-process Mersenne Twister seeded from the kernel, which costs a
    fraction of ``uuid4`` (that reads the kernel's randomness on every call). An id is
    an identifier, not a secret: it need not be unpredictable, only distinct, and it
    says nothing about the process or how many requests it served. A forked child
    draws from a fresh seed.
    """

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(32))
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._random.seed(os.urandom(32))

    def new(self) -> str:
        return f"{self._random.getrandbits(128):032x}"


_IDS = RequestIds()


def new_request_id(incoming: str | None = None) -> str:
    """The client's X-Request-ID if it is sane (at most 128 plain characters), else a fresh one."""
    if incoming and _SANE.fullmatch(incoming):
        return incoming
    return _IDS.new()
