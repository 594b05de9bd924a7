"""The one retry policy shared by the sync and async clients.

Retried: connection failures and timeouts, and the statuses that mean "later"
(429, 502, 503, 504). Never retried: any other 4xx, since the same request would be
refused again, and 500, which is a bug to report, not a hiccup. Delays grow
exponentially with jitter ("equal jitter": half fixed, half random, so concurrent
clients spread out without ever retrying immediately), and a ``Retry-After`` from the
server is honoured as a floor.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass, field

import httpx

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    ``max_retries`` counts consecutive failed attempts; a download cut mid-body that
    still brought new bytes resumes without spending one, so a long transfer over a
    flaky link is not doomed by its length. A ``Retry-After`` above ``max_retry_after``
    seconds is not waited for: the error is raised with ``retry_after`` set.
    """

    max_retries: int = 3
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    statuses: frozenset[int] = field(default=RETRY_STATUSES)

    def backoff(self, failures: int) -> float:
        """Delay before retry number ``failures`` (1-based): capped exponential, equal jitter."""
        ceiling = min(self.max_delay, self.initial_delay * 2.0 ** max(0, failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def delay_for_status(self, status: int, retry_after: float | None, failures: int) -> float | None:
        """Seconds to wait before retrying after ``failures`` failures, or None to give up."""
        if status not in self.statuses or failures > self.max_retries:
            return None
        if retry_after is None:
            return self.backoff(failures)
        if retry_after > self.max_retry_after:
            return None
        return retry_after

    def delay_for_transport(self, failures: int) -> float | None:
        """Seconds to wait after a connection failure, or None to give up."""
        return None if failures > self.max_retries else self.backoff(failures)


def parse_retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
